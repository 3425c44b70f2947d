//! Listings that end (CONTRACT §6): a listing that reads more records than
//! the MDM's own announced total, or the same page twice, fails with an error
//! that says so, instead of paging forever (an MDM that ignores `skip`,
//! `offset` or `page` answers its first page to every request).
//!
//! Each page is remembered by a 64-bit hash of its records' ids in order, so
//! the memory is 16 bytes a page, however long the listing. Empty pages are
//! not compared (a page of only skipped records has no ids to compare).
//! Each adapter wraps its paged listings in [`guard_listing`], and the sync
//! wraps whatever an adapter returns once more.

use crate::{AdapterError, Page, PageStream};
use futures::StreamExt;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// The checks of one listing, page by page.
#[derive(Debug)]
pub struct ListingGuard {
    /// What is listed, for the message ("MobiControl devices").
    what: String,
    pages: u64,
    /// Records read so far, mapped and skipped.
    read: u64,
    /// Hash of each non-empty page's ids → its page number (from 1).
    seen: HashMap<u64, u64>,
}

impl ListingGuard {
    pub fn new(what: impl Into<String>) -> Self {
        ListingGuard {
            what: what.into(),
            pages: 0,
            read: 0,
            seen: HashMap::new(),
        }
    }

    /// Checks the next page; `key` is a record's id at the MDM.
    pub fn check<T>(
        &mut self,
        page: &Page<T>,
        key: impl Fn(&T) -> &str,
    ) -> Result<(), AdapterError> {
        self.pages += 1;
        let n = self.pages;
        self.read = self
            .read
            .saturating_add(page.items.len() as u64)
            .saturating_add(page.skipped);
        // A repeat first: it is the cause when it also overruns the total.
        if !page.items.is_empty() {
            // DefaultHasher::new() has fixed keys: the same ids give the same hash.
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            page.items.len().hash(&mut hasher);
            for item in &page.items {
                key(item).hash(&mut hasher);
            }
            if let Some(earlier) = self.seen.insert(hasher.finish(), n) {
                return Err(AdapterError::Listing(format!(
                    "{}: page {n} is the same page as page {earlier} ({} records): the MDM ignores paging, so the listing would never end",
                    self.what,
                    page.items.len()
                )));
            }
        }
        // The latest total: records added or removed while listing change it,
        // and offset paging never reads past the total of its last page.
        if let Some(total) = page.total {
            if self.read > total {
                return Err(AdapterError::Listing(format!(
                    "{}: the MDM announced {total} records, but {} came by page {n}: more than it announced",
                    self.what, self.read
                )));
            }
        }
        Ok(())
    }
}

/// `inner`, ended with an [`AdapterError::Listing`] at the first page that
/// fails a [`ListingGuard`] check; `inner` is dropped then, so no further
/// page is requested.
pub fn guard_listing<'a, T: Send + 'a>(
    inner: PageStream<'a, T>,
    what: impl Into<String>,
    key: fn(&T) -> &str,
) -> PageStream<'a, T> {
    let guard = ListingGuard::new(what);
    futures::stream::unfold(Some((inner, guard)), move |state| async move {
        let (mut inner, mut guard) = state?;
        match inner.next().await? {
            Ok(page) => match guard.check(&page, key) {
                Ok(()) => Some((Ok(page), Some((inner, guard)))),
                Err(e) => Some((Err(e), None)),
            },
            Err(e) => Some((Err(e), None)),
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    fn page(ids: &[&str], total: Option<u64>) -> Page<String> {
        Page {
            total,
            ..Page::of(ids.iter().map(|s| s.to_string()).collect())
        }
    }

    fn key(s: &String) -> &str {
        s
    }

    #[test]
    fn distinct_pages_up_to_the_total_pass() {
        let mut g = ListingGuard::new("devices");
        assert!(g.check(&page(&["a", "b"], Some(5)), key).is_ok());
        assert!(g.check(&page(&["c", "d"], Some(5)), key).is_ok());
        assert!(g.check(&page(&["e"], Some(5)), key).is_ok());
        assert!(g.check(&page(&[], Some(5)), key).is_ok());
    }

    #[test]
    fn a_repeated_page_fails_even_when_not_the_previous_one() {
        let mut g = ListingGuard::new("devices");
        g.check(&page(&["a", "b"], None), key).unwrap();
        g.check(&page(&["c", "d"], None), key).unwrap();
        let e = g.check(&page(&["a", "b"], None), key).unwrap_err();
        assert_eq!(e.class(), "listing");
        assert!(
            e.to_string().contains("page 3 is the same page as page 1"),
            "{e}"
        );
        // The same records in another order, or one more, is another page.
        let mut g = ListingGuard::new("devices");
        g.check(&page(&["a", "b"], None), key).unwrap();
        g.check(&page(&["b", "a"], None), key).unwrap();
        g.check(&page(&["a", "b", "c"], None), key).unwrap();
        // Empty pages are not compared.
        g.check(&page(&[], None), key).unwrap();
        g.check(&page(&[], None), key).unwrap();
    }

    #[test]
    fn more_records_than_the_latest_announced_total_fail() {
        let mut g = ListingGuard::new("users");
        g.check(&page(&["a", "b"], Some(3)), key).unwrap();
        // A record added meanwhile: the total grows with it.
        g.check(&page(&["c", "d"], Some(4)), key).unwrap();
        let e = g.check(&page(&["e"], Some(4)), key).unwrap_err();
        assert!(e.to_string().contains("announced 4"), "{e}");
        assert!(e.to_string().contains("but 5 came by page 3"), "{e}");
        // Skipped records count as read.
        let mut g = ListingGuard::new("devices");
        let mut p = page(&["a"], Some(2));
        p.skipped = 2;
        assert!(g.check(&p, key).is_err());
    }

    #[tokio::test]
    async fn a_guarded_stream_ends_at_the_first_failed_check_and_drops_its_source() {
        let polled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = polled.clone();
        // A source that serves the same page forever.
        let forever: PageStream<'static, String> = futures::stream::repeat_with(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(page(&["a"], None))
        })
        .boxed();
        let mut guarded = guard_listing(forever, "devices", key);
        assert!(guarded.next().await.unwrap().is_ok());
        assert!(guarded.next().await.unwrap().is_err());
        assert!(guarded.next().await.is_none());
        assert_eq!(polled.load(std::sync::atomic::Ordering::SeqCst), 2);
        let all: Result<Vec<_>, _> = guard_listing(
            futures::stream::iter(vec![Ok(page(&["a"], Some(2))), Ok(page(&["b"], Some(2)))])
                .boxed(),
            "devices",
            key,
        )
        .try_collect()
        .await;
        assert_eq!(all.unwrap().len(), 2);
    }
}
