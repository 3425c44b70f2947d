//! Users: the write path of the MDM's user listing and of the users
//! embedded in device records, PII masking on the way in, and reads.
//!
//! A listed user says all the MDM knows of it and replaces the stored
//! values; a user embedded in a device record often says less and only adds
//! to them ([`UserSource`]).

use super::{json_rows, scope, Change, RowState, Scope, UpsertCounts};
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use mtd_adapter::User;
use serde::Serialize;
use sqlx::{FromRow, SqliteConnection};
use std::collections::HashMap;
use std::fmt;

/// A user as one MDM's `mask_pii = true` allows it to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedUser {
    /// The user with names, e-mail (and `mdm_user_id`, where the MDM keys
    /// users by e-mail or name) replaced by masked forms.
    pub user: User,
    /// A keyed hash of the clear values, so the same person matches across syncs.
    pub pii_hash: String,
}

/// Masks user PII before it reaches the store. Implemented by the sync
/// engine, which holds the key; the store never sees clear values or the key.
pub trait PiiMasker: Send + Sync {
    fn mask(&self, user: &User) -> MaskedUser;
}

/// Whether users are written in clear or through a masker (per MDM: `mask_pii`).
/// The masker is applied inside the store, to listed users and to the users
/// embedded in devices alike, so no path can write a clear value by mistake.
#[derive(Clone, Copy)]
pub enum Pii<'a> {
    Clear,
    Masked(&'a dyn PiiMasker),
}

impl fmt::Debug for Pii<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pii::Clear => "Pii::Clear",
            Pii::Masked(_) => "Pii::Masked",
        })
    }
}

/// A user as stored (masked forms where the MDM masks PII).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct StoredUser {
    pub id: i64,
    pub tenant_id: String,
    pub mdm_id: i64,
    pub mdm_user_id: String,
    pub username: Option<String>,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub display_name: String,
    pub first_seen_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub removed_at: Option<DateTime<Utc>>,
}

/// The name admins see for a user: "First Last", else the user name, the
/// e-mail, or the MDM's key.
fn display_name(u: &User) -> String {
    let full = [u.first_name.as_deref(), u.last_name.as_deref()]
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if !full.is_empty() {
        return full;
    }
    [u.username.as_deref(), u.email.as_deref()]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .unwrap_or(&u.mdm_user_id)
        .to_string()
}

#[derive(PartialEq, serde::Deserialize)]
pub(super) struct UserValues {
    username: Option<String>,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    display_name: String,
    pii_hash: Option<String>,
}

// The bulk statements of users: one bound JSON array each (see
// [`json_rows`]), every one checked for its query plan by a test.
pub(super) const USERS_STORED: &str =
    "SELECT json_group_array(json_array(u.id, u.mdm_user_id, u.removed_at IS NOT NULL,
     json_array(u.username, u.email, u.first_name, u.last_name, u.display_name, u.pii_hash)))
     FROM json_each(?2) AS j CROSS JOIN users AS u
     ON u.mdm_id = ?1 AND u.mdm_user_id = j.value";

pub(super) const USERS_INSERT: &str =
    "INSERT INTO users (tenant_id, mdm_id, mdm_user_id, username, email, first_name,
     last_name, display_name, pii_hash, first_seen_at, updated_at, last_seen_at,
     last_sync_run_id)
     SELECT ?1, ?2, j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3,
     j.value ->> 4, j.value ->> 5, j.value ->> 6, ?3, ?3, ?3, ?4
     FROM json_each(?5) AS j WHERE true
     RETURNING id, mdm_user_id";

pub(super) const USERS_UPDATE: &str =
    "UPDATE users SET username = j.value ->> 1, email = j.value ->> 2,
     first_name = j.value ->> 3, last_name = j.value ->> 4,
     display_name = j.value ->> 5, pii_hash = j.value ->> 6,
     updated_at = ?1, last_seen_at = ?1,
     last_sync_run_id = COALESCE(?2, last_sync_run_id), removed_at = NULL
     FROM json_each(?3) AS j WHERE users.id = j.value ->> 0";

pub(super) const USERS_SEEN: &str =
    "UPDATE users SET last_seen_at = ?1, last_sync_run_id = COALESCE(?2, last_sync_run_id)
     WHERE id IN (SELECT value FROM json_each(?3))";

impl UserValues {
    /// The row `USERS_INSERT` (keyed by `mdm_user_id`) and `USERS_UPDATE`
    /// (keyed by id) read: the key, then the values in column order.
    fn json_row<'v, K: Serialize + 'v>(&'v self, key: K) -> impl Serialize + 'v {
        (
            key,
            &self.username,
            &self.email,
            &self.first_name,
            &self.last_name,
            &self.display_name,
            &self.pii_hash,
        )
    }
}

/// Where a batch of users comes from: the MDM's user listing says all it
/// knows of a user; the user embedded in a device record often says less
/// (BCDM: the id alone; AirWatch: login and e-mail, no names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UserSource {
    Listing,
    Embedded,
}

impl UserValues {
    /// An embedded user's values over a stored user's: a value the device
    /// record gives wins, one it does not give keeps the stored value, so a
    /// device may add to a user but never erase what a listing gave.
    fn added_to(self, stored: &UserValues) -> UserValues {
        let username = self.username.or_else(|| stored.username.clone());
        let email = self.email.or_else(|| stored.email.clone());
        let first_name = self.first_name.or_else(|| stored.first_name.clone());
        let last_name = self.last_name.or_else(|| stored.last_name.clone());
        let same = username == stored.username
            && email == stored.email
            && first_name == stored.first_name
            && last_name == stored.last_name;
        if same {
            // Nothing new: the stored row, hash included, stands as it is.
            return UserValues {
                username,
                email,
                first_name,
                last_name,
                display_name: stored.display_name.clone(),
                pii_hash: stored.pii_hash.clone(),
            };
        }
        let display_name = display_name(&User {
            mdm_user_id: String::new(),
            username: username.clone(),
            email: email.clone(),
            first_name: first_name.clone(),
            last_name: last_name.clone(),
        });
        UserValues {
            display_name: if display_name.is_empty() {
                stored.display_name.clone()
            } else {
                display_name
            },
            username,
            email,
            first_name,
            last_name,
            // The listing's hash, made from the fuller record, stays the key.
            pii_hash: stored.pii_hash.clone().or(self.pii_hash),
        }
    }
}

/// A user's values as they will be stored (masked where the MDM masks PII),
/// and its key (masked too where the MDM keys users by e-mail or name).
pub(super) fn user_values(user: &User, pii: Pii<'_>) -> (String, UserValues) {
    let (user, pii_hash) = match pii {
        Pii::Clear => (user.clone(), None),
        Pii::Masked(m) => {
            let masked = m.mask(user);
            (masked.user, Some(masked.pii_hash))
        }
    };
    let values = UserValues {
        display_name: display_name(&user),
        username: user.username,
        email: user.email,
        first_name: user.first_name,
        last_name: user.last_name,
        pii_hash,
    };
    (user.mdm_user_id, values)
}

/// Writes the users of a batch in a handful of statements: one `SELECT` of
/// the stored ones, one multi-row `INSERT` of the new ones, one `UPDATE` of
/// the changed ones, and one of the unchanged ones that only stamps them
/// seen by the run. Returns each user's id by its stored key, and the counts.
pub(super) async fn upsert_users_bulk(
    conn: &mut SqliteConnection,
    s: &Scope,
    listed: Vec<(String, UserValues)>,
    source: UserSource,
) -> Result<(HashMap<String, i64>, UpsertCounts), StoreError> {
    let mut counts = UpsertCounts::default();
    if listed.is_empty() {
        return Ok((HashMap::new(), counts));
    }
    let mut keys: Vec<&str> = listed.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    // CROSS JOIN: json_each outside, so each key is one probe of the
    // (mdm_id, mdm_user_id) index instead of a scan of the MDM's users.
    // One JSON array for the whole batch (see [`super::devices`]'s read).
    let (existing,): (String,) = sqlx::query_as(USERS_STORED)
        .bind(s.mdm_id)
        .bind(json_rows(&keys))
        .fetch_one(&mut *conn)
        .await?;
    /// A stored user as `USERS_STORED` reads it (an array, in field order).
    #[derive(serde::Deserialize)]
    struct Existing {
        id: i64,
        mdm_user_id: String,
        #[serde(deserialize_with = "super::devices::sql_bool")]
        removed: bool,
        values: UserValues,
    }
    let existing: Vec<Existing> = serde_json::from_str(&existing)
        .map_err(|e| StoreError::Corrupt(format!("stored users of a batch: {e}")))?;
    let mut state: HashMap<String, RowState<UserValues>> = existing
        .into_iter()
        .map(|e| {
            let row = RowState {
                id: Some(e.id),
                removed: e.removed,
                values: e.values,
                changed: false,
                new: false,
            };
            (e.mdm_user_id, row)
        })
        .collect();
    let mut new_keys = Vec::new();
    for (key, values) in listed {
        match state.get_mut(&key) {
            Some(row) => {
                let values = match source {
                    UserSource::Listing => values,
                    UserSource::Embedded => values.added_to(&row.values),
                };
                counts.count(row.apply(values, false))
            }
            None => {
                counts.count(Change::Added);
                new_keys.push(key.clone());
                let row = RowState {
                    id: None,
                    removed: false,
                    values,
                    changed: true,
                    new: true,
                };
                state.insert(key, row);
            }
        }
    }

    if !new_keys.is_empty() {
        let inserted = {
            let rows: Vec<_> = new_keys
                .iter()
                .map(|k| state[k].values.json_row(k))
                .collect();
            s.insert(conn, USERS_INSERT, &rows).await?
        };
        for (id, key) in inserted {
            if let Some(row) = state.get_mut(&key) {
                row.id = Some(id);
            }
        }
    }

    {
        // A block: the rows borrow `state`, which gives the ids below.
        let mut changed = Vec::new();
        let mut unchanged = Vec::new();
        for row in state.values().filter(|r| !r.new) {
            match row.id {
                Some(id) if row.changed => changed.push(row.values.json_row(id)),
                Some(id) => unchanged.push(id),
                None => {}
            }
        }
        s.update(conn, USERS_UPDATE, &changed).await?;
        s.update(conn, USERS_SEEN, &unchanged).await?;
    }
    let ids = state
        .into_iter()
        .filter_map(|(k, r)| r.id.map(|id| (k, id)))
        .collect();
    Ok((ids, counts))
}

/// Writes a batch of listed users in the caller's transaction (the path of
/// [`Store::upsert_users`] and of a sync's writer).
pub(super) async fn write_users(
    conn: &mut SqliteConnection,
    s: &Scope,
    users: &[User],
    pii: Pii<'_>,
) -> Result<UpsertCounts, StoreError> {
    let listed = users.iter().map(|u| user_values(u, pii)).collect();
    let (_, counts) = upsert_users_bulk(conn, s, listed, UserSource::Listing).await?;
    Ok(counts)
}

impl Store {
    /// Writes a batch of listed users in one transaction, tagged with the run.
    pub async fn upsert_users(
        &self,
        run_id: i64,
        mdm_id: i64,
        users: &[User],
        pii: Pii<'_>,
    ) -> Result<UpsertCounts, StoreError> {
        let mut tx = self.begin_write().await?;
        let s = scope(&mut tx, mdm_id, Some(run_id)).await?;
        let counts = write_users(&mut tx, &s, users, pii).await?;
        tx.commit().await?;
        Ok(counts)
    }

    /// One user by the store's id, removed or not.
    pub async fn get_user(&self, id: i64) -> Result<Option<StoredUser>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, tenant_id, mdm_id, mdm_user_id, username, email, first_name, last_name,
                    display_name, first_seen_at, updated_at, last_seen_at, removed_at
             FROM users WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Users of an MDM that are not removed.
    pub async fn live_user_count(&self, mdm_id: i64) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM users WHERE mdm_id = ? AND removed_at IS NULL",
        )
        .bind(mdm_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sync_runs::testutil::run;
    use crate::store::testutil::*;

    #[tokio::test]
    async fn users_count_added_then_unchanged_then_updated() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let r = run(&store, mdm).await;
        let mut users = vec![user("a"), user("b")];
        let c = store
            .upsert_users(r, mdm, &users, Pii::Clear)
            .await
            .unwrap();
        assert_eq!((c.added, c.updated), (2, 0));
        let c = store
            .upsert_users(r, mdm, &users, Pii::Clear)
            .await
            .unwrap();
        assert_eq!((c.added, c.updated), (0, 0));
        users[1].last_name = Some("Roe".into());
        let c = store
            .upsert_users(r, mdm, &users, Pii::Clear)
            .await
            .unwrap();
        assert_eq!((c.added, c.updated), (0, 1));
    }

    #[tokio::test]
    async fn a_user_without_names_is_displayed_by_login_then_email_then_key() {
        let mut u = User {
            mdm_user_id: "42".into(),
            ..User::default()
        };
        assert_eq!(display_name(&u), "42");
        u.email = Some("j@x.example".into());
        assert_eq!(display_name(&u), "j@x.example");
        u.username = Some("jdoe".into());
        assert_eq!(display_name(&u), "jdoe");
        u.last_name = Some(" Doe ".into());
        assert_eq!(display_name(&u), "Doe");
    }

    #[derive(Debug)]
    struct TestMasker;
    impl PiiMasker for TestMasker {
        fn mask(&self, u: &User) -> MaskedUser {
            MaskedUser {
                user: User {
                    mdm_user_id: u.mdm_user_id.clone(),
                    username: u.username.as_ref().map(|_| "j***".into()),
                    email: u.email.as_ref().map(|_| "j***@***".into()),
                    first_name: u.first_name.as_ref().map(|_| "J.".into()),
                    last_name: u.last_name.as_ref().map(|_| "D.".into()),
                },
                pii_hash: format!("hash-of-{}", u.mdm_user_id),
            }
        }
    }

    #[tokio::test]
    async fn masked_users_never_reach_the_database_file_in_clear() {
        let (dir, store, mdm) = store_with_mdm().await;
        let mut d = device("1");
        d.user = Some(user("secretperson"));
        let r = run(&store, mdm).await;
        store
            .upsert_devices(r, mdm, &[d], Pii::Masked(&TestMasker))
            .await
            .unwrap();
        let c = store
            .upsert_users(r, mdm, &[user("otherperson")], Pii::Masked(&TestMasker))
            .await
            .unwrap();
        assert_eq!(c.added, 1);
        let again = store
            .upsert_users(r, mdm, &[user("otherperson")], Pii::Masked(&TestMasker))
            .await
            .unwrap();
        assert_eq!(again, UpsertCounts::default(), "the masked form is stable");
        let u = store.get_user(1).await.unwrap().unwrap();
        assert_eq!(u.display_name, "J. D.");
        assert_eq!(u.email.as_deref(), Some("j***@***"));
        store.close().await;
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(dir.path().join("data")).unwrap() {
            bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        let text = String::from_utf8_lossy(&bytes);
        for clear in [
            "secretperson@acme.example",
            "secretperson-login",
            "Jane",
            "otherperson@",
        ] {
            assert!(!text.contains(clear), "{clear} is in the file");
        }
        assert!(text.contains("hash-of-secretperson"));
    }
}
