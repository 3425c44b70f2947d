//! A full sync's writes, on a connection of the run's own (issue 19).
//!
//! What a page of 500 devices costs is mostly SQLite's index maintenance:
//! the identifier indexes (the device's key, udid, serial, imei, mac, and
//! the user's key) have random keys, so every row of a page lands on another
//! leaf of each, and every leaf a transaction touches is written to the WAL
//! again at its commit. Three things make that cheaper, and all are here:
//!
//! - **A page cache that holds the indexes being written**
//!   ([`SYNC_CACHE_KIB`]), on this connection only: the pool's connections
//!   keep SQLite's default (2 MiB), so readers do not grow, and the cache is
//!   freed when the run ends ([`SyncWriter::close`]).
//! - **Several pages per transaction**, so a leaf touched by many pages is
//!   written once per commit rather than once per page. The transaction
//!   yields to everyone else: it commits after the page it is writing as
//!   soon as another write transaction of the process (event ingest, the
//!   dispatcher, an on-demand lookup) or the readiness probe waits for the
//!   write lock (`WriteHealth::wanted`), so they wait for one write call,
//!   not for a time bound (and while they are active, a call is a chunk of
//!   [`SYNC_CONTENDED_CHUNK`] records, not a page: [`SyncWriter::chunk_len`]);
//!   and whenever the caller has no page ready to
//!   write ([`SyncWriter::commit`]), so the lock is never held while the MDM
//!   is answering. Left alone, it commits after [`SYNC_TX_MAX_RECORDS`]
//!   records or [`SYNC_TX_MAX_AGE`], for writers of other processes.
//! - **Statement journals in memory** (`temp_store = memory`): a bulk
//!   statement inside a longer transaction keeps its own undo, which SQLite
//!   otherwise writes to a temporary file (measured: 17 % of a 100,000-device
//!   sync).
//!
//! What is written, and how, is exactly what the store's one-shot
//! `upsert_*` methods write: the same bulk statements, in the same order,
//! tagged with the run.

use super::devices::write_devices;
use super::groups::write_groups;
use super::users::write_users;
use super::{scope, Pii, UpsertCounts};
use crate::store::{Store, StoreError, WriteHealth};
use mtd_adapter::{Device, Group, User};
use sqlx::sqlite::SqlitePool;
use sqlx::{Sqlite, Transaction};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The page cache of a sync's connection, in KiB: enough for the identifier
/// indexes of about 300,000 devices of one tenant (SQLite allocates it as
/// pages are read, so a small MDM's sync does not use it all).
pub const SYNC_CACHE_KIB: u32 = 64 * 1024;

/// Records (devices, users or groups) one transaction of a sync writes at
/// most: 100 pages of 500. Bounds what a failed commit rolls back.
pub const SYNC_TX_MAX_RECORDS: usize = 50_000;

/// How long a sync's transaction stays open at most before it commits (it
/// finishes the page it is writing first), when no other writer of the
/// process waits for it: well under the busy timeout that writers of other
/// processes (the command line) wait for SQLite's lock.
pub const SYNC_TX_MAX_AGE: Duration = Duration::from_secs(2);

/// How long after another writer last had to wait for the write lock a
/// sync keeps writing in small chunks ([`SyncWriter::chunk_len`]).
const CONTENDED_WINDOW: Duration = Duration::from_secs(1);

/// Records per store call while other writers are active: they then wait
/// for one such chunk (about 10 ms measured) rather than a whole page.
pub const SYNC_CONTENDED_CHUNK: usize = 100;

/// A full sync's writer: pages written through it share a transaction until
/// it commits (see the module's header). Dropping it rolls back what is not
/// committed.
#[derive(Debug)]
pub struct SyncWriter {
    /// One connection, with its own page cache and prepared statements.
    pool: SqlitePool,
    health: Arc<WriteHealth>,
    run_id: i64,
    mdm_id: i64,
    /// The open transaction and when it began.
    tx: Option<(Transaction<'static, Sqlite>, Instant)>,
    /// The process's write gate, held while `tx` is open. Declared after
    /// `tx`: a dropped writer queues its rollback before the gate opens.
    gate: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// Records written in the open transaction.
    records: usize,
}

impl Store {
    /// A writer for the pages of sync run `run_id` of `mdm_id`, on a
    /// connection of its own.
    pub async fn sync_writer(&self, mdm_id: i64, run_id: i64) -> Result<SyncWriter, StoreError> {
        let options = (*self.pool.connect_options())
            .clone()
            .pragma("cache_size", format!("-{SYNC_CACHE_KIB}"))
            // Statement journals (a multi-row statement's undo inside the
            // transaction) in memory, not in a temporary file.
            .pragma("temp_store", "memory");
        let pool = crate::store::ingest::one_connection(options).await?;
        Ok(SyncWriter {
            pool,
            health: self.health.clone(),
            run_id,
            mdm_id,
            tx: None,
            gate: None,
            records: 0,
        })
    }
}

impl SyncWriter {
    /// The open transaction, begun (`BEGIN IMMEDIATE`) if there is none.
    async fn tx(&mut self) -> Result<&mut Transaction<'static, Sqlite>, StoreError> {
        if self.tx.is_none() {
            // The process's write gate first (`WriteHealth::begin`), held until
            // the commit, so the ingest and dispatch writers queue instead of
            // sleeping in SQLite's busy handler.
            let crate::store::WriteTransaction { tx, _gate: gate } = self
                .health
                .begin(self.pool.begin_with("BEGIN IMMEDIATE"))
                .await?;
            self.records = 0;
            self.gate = Some(gate);
            self.tx = Some((tx, Instant::now()));
        }
        // Set just above when it was not.
        Ok(&mut self.tx.as_mut().expect("a transaction is open").0)
    }

    /// Writes a page of listed groups (as [`Store::upsert_groups`]).
    pub async fn upsert_groups(&mut self, groups: &[Group]) -> Result<UpsertCounts, StoreError> {
        let (run_id, mdm_id) = (self.run_id, self.mdm_id);
        let tx = self.tx().await?;
        let s = scope(tx, mdm_id, Some(run_id)).await?;
        let counts = write_groups(tx, &s, groups).await?;
        self.records += groups.len();
        Ok(counts)
    }

    /// Writes a page of listed users (as [`Store::upsert_users`]).
    pub async fn upsert_users(
        &mut self,
        users: &[User],
        pii: Pii<'_>,
    ) -> Result<UpsertCounts, StoreError> {
        let (run_id, mdm_id) = (self.run_id, self.mdm_id);
        let tx = self.tx().await?;
        let s = scope(tx, mdm_id, Some(run_id)).await?;
        let counts = write_users(tx, &s, users, pii).await?;
        self.records += users.len();
        Ok(counts)
    }

    /// Writes a page of listed devices (as [`Store::upsert_devices`]).
    pub async fn upsert_devices(
        &mut self,
        devices: &[Device],
        pii: Pii<'_>,
    ) -> Result<UpsertCounts, StoreError> {
        let (run_id, mdm_id) = (self.run_id, self.mdm_id);
        let tx = self.tx().await?;
        let s = scope(tx, mdm_id, Some(run_id)).await?;
        let counts = write_devices(tx, &s, devices, pii).await?;
        self.records += devices.len();
        Ok(counts)
    }

    /// How many records of a page to write in the next call: the whole page
    /// (`usize::MAX`) while nobody else writes, since each call has its
    /// fixed cost (a 100,000-device sync in chunks of 100 was about 15 %
    /// slower); [`SYNC_CONTENDED_CHUNK`] when another writer of the process
    /// had to wait in the last second, so that it waits for a chunk, not a
    /// page, at its next turn.
    pub fn chunk_len(&self) -> usize {
        if self.health.contended_within(CONTENDED_WINDOW) {
            SYNC_CONTENDED_CHUNK
        } else {
            usize::MAX
        }
    }

    /// Whether the open transaction has reached its bound
    /// ([`SYNC_TX_MAX_RECORDS`], [`SYNC_TX_MAX_AGE`]) and should commit now.
    pub fn due(&self) -> bool {
        self.tx.as_ref().is_some_and(|(_, began)| {
            self.records >= SYNC_TX_MAX_RECORDS
                || began.elapsed() >= SYNC_TX_MAX_AGE
                || self.health.wanted()
        })
    }

    /// Commits what is written (nothing to do without an open transaction).
    pub async fn commit(&mut self) -> Result<(), StoreError> {
        let committed = match self.tx.take() {
            Some((tx, _)) => tx.commit().await,
            None => Ok(()),
        };
        // Open the gate whatever the commit did: a failed commit rolled back.
        self.gate = None;
        committed?;
        Ok(())
    }

    /// Commits, then closes the connection (and frees its page cache).
    pub async fn close(mut self) -> Result<(), StoreError> {
        let committed = self.commit().await;
        self.pool.close().await;
        committed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sync_runs::testutil::run;
    use crate::store::testutil::*;

    #[tokio::test]
    async fn pages_share_one_transaction_that_others_see_only_once_committed() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let r = run(&store, mdm).await;
        let mut writer = store.sync_writer(mdm, r).await.unwrap();
        let groups = [Group {
            mdm_group_id: "g1".into(),
            name: "Sales".into(),
        }];
        let c = writer.upsert_groups(&groups).await.unwrap();
        assert_eq!((c.added, c.updated), (1, 0));
        let c = writer
            .upsert_users(&[user("u1"), user("u2")], Pii::Clear)
            .await
            .unwrap();
        assert_eq!((c.added, c.updated), (2, 0));
        let mut first = device("1");
        first.user = Some(user("u1"));
        first.groups = vec!["g1".into()];
        let c = writer
            .upsert_devices(&[first, device("2")], Pii::Clear)
            .await
            .unwrap();
        assert_eq!((c.added, c.updated), (2, 0));
        // A second page in the same transaction sees the first one's rows.
        let c = writer
            .upsert_devices(&[device("2"), device("3")], Pii::Clear)
            .await
            .unwrap();
        assert_eq!((c.added, c.updated), (1, 0));
        assert!(!writer.due(), "5 records, just begun");
        assert_eq!(
            store.live_device_count(mdm).await.unwrap(),
            0,
            "nothing committed yet"
        );

        writer.commit().await.unwrap();
        assert_eq!(store.live_device_count(mdm).await.unwrap(), 3);
        assert_eq!(store.live_user_count(mdm).await.unwrap(), 2);
        assert!(!writer.due(), "no transaction open");
        // The write lock is free: another writer goes ahead at once.
        store.begin().await.unwrap().rollback().await.unwrap();

        writer
            .upsert_devices(&[device("4")], Pii::Clear)
            .await
            .unwrap();
        writer.close().await.unwrap();
        assert_eq!(store.live_device_count(mdm).await.unwrap(), 4);
        assert_eq!(
            store.unseen_counts(mdm, r).await.unwrap(),
            Default::default(),
            "every row is tagged with the run"
        );
    }

    /// A store with an MDM, and a sync writer of a run of it whose open
    /// transaction holds device "1".
    async fn writer_with_one_device() -> (tempfile::TempDir, Store, i64, SyncWriter) {
        let (dir, store, mdm) = store_with_mdm().await;
        let r = run(&store, mdm).await;
        let mut writer = store.sync_writer(mdm, r).await.unwrap();
        writer
            .upsert_devices(&[device("1")], Pii::Clear)
            .await
            .unwrap();
        (dir, store, mdm, writer)
    }

    #[tokio::test]
    async fn a_writer_dropped_without_commit_rolls_back_and_an_old_transaction_is_due() {
        let (_dir, store, mdm, writer) = writer_with_one_device().await;
        assert!(!writer.due());
        tokio::time::sleep(SYNC_TX_MAX_AGE).await;
        assert!(writer.due(), "open for SYNC_TX_MAX_AGE");
        drop(writer);
        // The dropped connection's transaction is rolled back as it closes.
        store.begin().await.unwrap().rollback().await.unwrap();
        assert_eq!(store.live_device_count(mdm).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn another_writer_or_the_readiness_probe_waiting_makes_the_open_transaction_due() {
        let (_dir, store, mdm, mut writer) = writer_with_one_device().await;
        assert!(!writer.due(), "1 record, just begun, nobody waiting");
        assert_eq!(writer.chunk_len(), usize::MAX, "whole pages while alone");

        // An event group (any write transaction of the process) queues at the gate.
        let waiting = tokio::spawn({
            let store = store.clone();
            async move { store.begin().await.unwrap().rollback().await.unwrap() }
        });
        wait_until_due(&writer).await;
        assert_eq!(
            writer.chunk_len(),
            SYNC_CONTENDED_CHUNK,
            "small chunks once another writer had to wait"
        );
        writer.commit().await.unwrap();
        waiting.await.unwrap();
        assert!(!writer.due(), "committed; the waiter has gone");

        // The readiness probe waits for SQLite's lock itself, not at the gate.
        writer
            .upsert_devices(&[device("2")], Pii::Clear)
            .await
            .unwrap();
        assert!(!writer.due());
        let probing = tokio::spawn({
            let store = store.clone();
            async move { store.readiness().await }
        });
        wait_until_due(&writer).await;
        writer.close().await.unwrap();
        assert!(probing.await.unwrap().is_ok());
        assert_eq!(store.live_device_count(mdm).await.unwrap(), 2);
    }

    /// Waits (well under [`SYNC_TX_MAX_AGE`]) for the writer to be due.
    async fn wait_until_due(writer: &SyncWriter) {
        let began = Instant::now();
        while !writer.due() {
            assert!(
                began.elapsed() < SYNC_TX_MAX_AGE / 2,
                "not due while another waits for the write lock"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn the_writers_connection_has_its_own_page_cache() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let r = run(&store, mdm).await;
        let writer = store.sync_writer(mdm, r).await.unwrap();
        let (cache,): (i64,) = sqlx::query_as("PRAGMA cache_size")
            .fetch_one(&writer.pool)
            .await
            .unwrap();
        assert_eq!(cache, -i64::from(SYNC_CACHE_KIB));
        let (pool_cache,): (i64,) = sqlx::query_as("PRAGMA cache_size")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(pool_cache, -2000, "the pool keeps SQLite's default");
        let (temp,): (i64,) = sqlx::query_as("PRAGMA temp_store")
            .fetch_one(&writer.pool)
            .await
            .unwrap();
        assert_eq!(temp, 2, "statement journals in memory");
        writer.close().await.unwrap();
    }
}
