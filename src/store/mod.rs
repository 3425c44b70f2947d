//! The store: the connector's one SQLite database and every query against it.
//!
//! It owns the tenants and MDM integrations written from the configuration,
//! the inventory the sync engine mirrors from each MDM (users, groups,
//! devices, group memberships, sync runs), the threat events the agents send
//! and the actions they cause, with an audit row per state change. Nothing
//! else in the daemon speaks SQL: callers get typed methods and plain records.
//!
//! Why it looks the way it does:
//! - **WAL, `synchronous = NORMAL`, 5 s busy timeout.** Readers (admin API)
//!   never block the single writer, a commit is durable against a process
//!   crash, and short write contention waits instead of failing. Write
//!   transactions start with `BEGIN IMMEDIATE`, so two writers queue on the
//!   busy timeout instead of one failing when it upgrades a read lock.
//! - **One write gate for the process.** Before `BEGIN IMMEDIATE`, every
//!   write transaction takes a FIFO async mutex shared by the store and its
//!   writer handles (`WriteHealth::enter`), so the ingest, dispatch and sync
//!   writers queue in order instead of sleeping in SQLite's busy handler
//!   (its 1–25 ms steps were the p99 of event → action; BENCHMARKS.md).
//! - **Runtime-checked queries** (`sqlx::query` / `query_as` with `FromRow`),
//!   never the `query!` macros: a fresh machine builds without a database or
//!   `DATABASE_URL`. Every query is exercised by a test on a temporary file.
//! - **Migrations are embedded** (`migrations/`, applied at [`Store::open`]);
//!   a shipped migration is never edited, a change is a new file.
//! - **Soft delete for inventory.** A device or user the MDM stops listing
//!   gets `removed_at`, not a `DELETE`, so the threat events and actions that
//!   name it keep pointing at it; events also keep the identifiers the agent
//!   sent, and every reference from events and actions is `ON DELETE SET
//!   NULL`, so even a real delete loses no record.
//! - **Durable work is a row.** Actions carry their state, attempts and due
//!   time; the dispatcher claims due rows with `UPDATE … RETURNING`.
//!
//! - **Files private to the service user.** The database holds the PII
//!   masking key: it is created `0600` before SQLite opens it (SQLite gives
//!   its `-wal` and `-shm` files the database's mode), and an older file
//!   readable by others is narrowed at open.
//! - **Readiness without the write lock.** `/readyz` is unauthenticated and
//!   may be polled hard: [`Store::readiness`] counts a write transaction that
//!   took the lock after the check began as proof, and only when none does
//!   (an idle store, or one whose lock is held elsewhere) probes the lock
//!   itself, on its own connection, one probe at a time for every caller.
//!
//! Timestamps are RFC 3339 UTC text written through sqlx's chrono encoding
//! (see the header of `migrations/0001_init.sql`); always bind
//! `DateTime<Utc>`, never SQL's `datetime('now')`.

mod actions;
mod admin;
mod dispatch;
mod error;
mod events;
mod ids;
mod ingest;
mod inventory;
mod ise;
mod keys;
mod kinds;
mod resolve;
mod sync_runs;
mod tenants;
mod threats;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use sqlx::{Sqlite, Transaction};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Mutex, OwnedMutexGuard};
use tokio::time::Instant;

pub use actions::{
    ActionAudit, ActionRecordKind, ActionState, ActionSummary, CancelWhich, NewAction, SendGate,
    StoredAction, Transition,
};
pub use admin::{
    ActionFilter, AdminAction, AdminDevice, AdminSyncRun, AdminUser, DeviceFilter, EventFilter,
    MdmHealth, MdmMetrics, Page, Paged, UserFilter,
};
pub use dispatch::{DispatchDone, DispatchOp};
pub use error::StoreError;
pub use events::{EventIdentifiers, NewEvent, StoredEvent};
pub use ids::{ActionId, DeviceId, DeviceRef, MdmId};
pub use ingest::WriterConn;
pub use inventory::{
    Activation, ActivationInput, DeviceUpsert, MaskedUser, Pii, PiiMasker, RemovalCounts,
    RiskLevel, StoredDevice, StoredUser, SyncWriter, UpsertCounts, SYNC_CACHE_KIB,
    SYNC_CONTENDED_CHUNK, SYNC_TX_MAX_AGE, SYNC_TX_MAX_RECORDS,
};
pub use ise::{IseCriterion, IseDeviceRow};
pub use resolve::Resolution;
pub use sync_runs::{RunCounts, SyncOutcome, SyncRun, SyncTrigger};
pub use tenants::{IntegrationRef, MdmRecord, StoredIntegration, StoredTenant, TenantRecord};
pub use threats::{
    ClosedBy, RiskChange, Signalled, StoredThreat, ThreatEvent, ThreatKey, ThreatStatus,
};

/// How long a statement waits for another writer before failing as busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections in the pool. SQLite has one writer at a time anyway; the rest
/// serve concurrent readers (admin API, lookups) under WAL.
const MAX_CONNECTIONS: u32 = 8;

/// How long [`Store::readiness`] waits for a write transaction of the daemon
/// to take the lock, when writes were going on as the check began.
const WRITER_EVIDENCE_WAIT: Duration = Duration::from_millis(250);

/// The connector's database. Cheap to clone: clones share one pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    /// Shared by every handle on the database (also [`Store::open_writer`]'s).
    health: Arc<WriteHealth>,
}

/// What readiness knows of SQLite's write lock.
#[derive(Debug)]
pub(crate) struct WriteHealth {
    /// When a write transaction of this process last took the write lock.
    taken: watch::Sender<Option<Instant>>,
    /// The probe's own connection, one probe at a time.
    probe: Mutex<Probe>,
    /// Probes finished; a caller that waited for a running probe shares its answer.
    probes: std::sync::atomic::AtomicU64,
    /// Held by the write transaction of this process that has SQLite's write
    /// lock or is about to take it (see [`WriteHealth::enter`]).
    gate: Arc<Mutex<()>>,
    /// Writers waiting for the gate, and readiness probes waiting for
    /// SQLite's lock: a long transaction (a sync's) commits early for them
    /// ([`WriteHealth::wanted`]).
    waiting: std::sync::atomic::AtomicUsize,
    /// When a writer last found the gate held (see [`WriteHealth::contended_within`]).
    contended_at: std::sync::Mutex<Option<Instant>>,
}

/// Counts its holder among [`WriteHealth`]'s waiters until dropped.
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

#[derive(Debug, Default)]
struct Probe {
    conn: Option<SqliteConnection>,
    /// The last probe's failure, shared with the callers that waited for it.
    last: Option<Arc<StoreError>>,
}

impl WriteHealth {
    pub(crate) fn new() -> Arc<WriteHealth> {
        Arc::new(WriteHealth {
            taken: watch::Sender::new(None),
            probe: Mutex::new(Probe::default()),
            probes: std::sync::atomic::AtomicU64::new(0),
            gate: Arc::new(Mutex::new(())),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            contended_at: std::sync::Mutex::new(None),
        })
    }

    /// Waits (at most the busy timeout) for this process's other write
    /// transactions to end, first come first served. The ingest writer, the
    /// dispatcher's writer and a sync's writer each have a connection of
    /// their own; without this queue they met in SQLite's busy handler,
    /// which sleeps 1, 2, 5, 10, 15, 20, 25 … ms between tries whenever the
    /// lock is released (measured: 928 of 930 sleeps of the event-to-action
    /// bench at 1,000 events/s were there, and its p99 was 179 ms).
    pub(crate) async fn enter(&self) -> Result<OwnedMutexGuard<()>, StoreError> {
        if let Ok(free) = self.gate.clone().try_lock_owned() {
            return Ok(free);
        }
        if let Ok(mut at) = self.contended_at.lock() {
            *at = Some(Instant::now());
        }
        let _waiting = Waiting::new(&self.waiting);
        tokio::time::timeout(BUSY_TIMEOUT, self.gate.clone().lock_owned())
            .await
            .map_err(|_| StoreError::WriteBusy(BUSY_TIMEOUT))
    }

    /// Whether a writer of this process found the gate held within `window`:
    /// writes are going on that a long writer (a sync) should make room for.
    pub(crate) fn contended_within(&self, window: Duration) -> bool {
        self.contended_at
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() < window)
    }

    /// Whether a write transaction of this process, or the readiness probe,
    /// is waiting for the one that holds the gate: a transaction that may
    /// stay open long (a sync's) commits at its next chance.
    pub(crate) fn wanted(&self) -> bool {
        self.waiting.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    fn lock_taken(&self) {
        self.taken.send_replace(Some(Instant::now()));
    }

    /// A write transaction behind the process's write gate: the gate first
    /// ([`WriteHealth::enter`]), then `begin` (`BEGIN IMMEDIATE` on the pool
    /// or on a writer's own connection); the gate is held until the
    /// transaction commits, rolls back or is dropped. Every writer of the
    /// store begins its transactions here.
    pub(crate) async fn begin<'c>(
        &self,
        begin: impl std::future::Future<Output = Result<Transaction<'c, Sqlite>, sqlx::Error>>,
    ) -> Result<WriteTransaction<'c>, StoreError> {
        let gate = self.enter().await?;
        let tx = begin.await?;
        self.lock_taken();
        Ok(WriteTransaction { tx, _gate: gate })
    }
}

/// Creates the database file readable and writable by its owner only
/// (whatever the umask), or narrows an existing one; the same for its
/// `-wal` and `-shm` files if they exist (SQLite creates them with the
/// database's mode).
#[cfg(unix)]
fn make_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(StoreError::FileMode {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = std::path::PathBuf::from(name);
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if mode & 0o077 == 0 {
            continue;
        }
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode & 0o700)) {
            Ok(()) => tracing::warn!(
                file = %file.display(),
                "The store file was readable by other users; made private to the service user"
            ),
            // Not fatal: the daemon works, the operator has to fix the mode.
            Err(e) => tracing::error!(
                file = %file.display(), error = %e,
                "The store file is readable by other users and its mode cannot be changed; make it 0600"
            ),
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn make_private(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

impl Store {
    /// Opens (creating it and its parent directories if missing) the database
    /// at `path` and applies every migration it does not have yet. The file
    /// is private to the user the daemon runs as (mode 0600).
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let mut dir = std::fs::DirBuilder::new();
            dir.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
            dir.create(parent).map_err(|source| StoreError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        make_private(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Normal);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        kinds::upgrade(&pool).await?;
        kinds::upgrade_actions(&pool).await?;
        // The -wal and -shm files exist now, with the database's mode; a
        // store an older version left readable gets them narrowed here.
        make_private(path)?;
        Ok(Store {
            pool,
            health: WriteHealth::new(),
        })
    }

    /// Waits for the connections in use to be returned, then closes them all
    /// (which also checkpoints the WAL). Later calls on any clone fail.
    pub async fn close(&self) {
        self.pool.close().await;
        if let Some(conn) = self.health.probe.lock().await.conn.take() {
            let _ = conn.close().await;
        }
    }

    /// Whether the database takes writes, for `/readyz`;
    /// [`StoreError::is_unavailable`] on failure.
    ///
    /// It does not take SQLite's write lock when the daemon's own writers
    /// prove the point: when one took the lock recently, the check waits (at
    /// most `WRITER_EVIDENCE_WAIT`) for the next one to take it after the
    /// check began. Otherwise it probes: on its own connection (never one of
    /// the pool's, which serve the API), it takes the lock, writes one row
    /// and rolls back, waiting at most the busy timeout; callers that arrive
    /// during a probe share its answer instead of queueing on the lock.
    pub async fn readiness(&self) -> Result<(), Arc<StoreError>> {
        if self.pool.is_closed() {
            return Err(Arc::new(sqlx::Error::PoolClosed.into()));
        }
        let mut taken = self.health.taken.subscribe();
        let writing = taken
            .borrow_and_update()
            .is_some_and(|at| at.elapsed() < WRITER_EVIDENCE_WAIT);
        if writing
            && tokio::time::timeout(WRITER_EVIDENCE_WAIT, taken.changed())
                .await
                .is_ok_and(|changed| changed.is_ok())
        {
            return Ok(());
        }
        self.probe().await
    }

    /// Takes the write lock on the probe's connection, writes and rolls back.
    async fn probe(&self) -> Result<(), Arc<StoreError>> {
        use std::sync::atomic::Ordering;
        let before = self.health.probes.load(Ordering::Acquire);
        let mut probe = self.health.probe.lock().await;
        if self.health.probes.load(Ordering::Acquire) != before {
            // A probe ran while this caller waited for it: its answer is fresh.
            return probe.last.clone().map_or(Ok(()), Err);
        }
        let result = async {
            let conn = match &mut probe.conn {
                Some(conn) => conn,
                None => probe
                    .conn
                    .insert(self.pool.connect_options().connect().await?),
            };
            // Counted as a waiter: a sync's long transaction commits for it.
            let waiting = Waiting::new(&self.health.waiting);
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            drop(waiting);
            sqlx::query("UPDATE store_heartbeat SET at = ? WHERE id = 1")
                .bind(chrono::Utc::now())
                .execute(&mut *tx)
                .await?;
            tx.rollback().await?;
            Ok::<(), StoreError>(())
        }
        .await
        .map_err(Arc::new);
        if result.is_err() {
            // A broken connection is replaced by the next probe.
            if let Some(conn) = probe.conn.take() {
                let _ = conn.close().await;
            }
        }
        probe.last = result.as_ref().err().cloned();
        self.health.probes.fetch_add(1, Ordering::Release);
        result
    }

    /// A write transaction that takes the write lock at once (`BEGIN
    /// IMMEDIATE`): a deferred transaction that reads first and writes later
    /// can fail with SQLITE_BUSY without waiting when another writer commits
    /// in between; an immediate one waits on the busy timeout instead.
    async fn begin_write(&self) -> Result<WriteTransaction<'static>, StoreError> {
        self.health
            .begin(self.pool.begin_with("BEGIN IMMEDIATE"))
            .await
    }

    /// A write transaction for work that must commit together: an event and
    /// the actions it causes (the agent's 202 goes out only after
    /// [`WriteTx::commit`]). Dropping it without commit rolls everything back.
    pub async fn begin(&self) -> Result<WriteTx<'static>, StoreError> {
        Ok(WriteTx {
            tx: self.begin_write().await?,
        })
    }

    /// The pool, for the store's own submodules and tests.
    #[cfg(test)]
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// A write transaction holding this process's write gate
/// ([`WriteHealth::enter`]) until it commits, rolls back or is dropped. It
/// derefs to the connection, as `Transaction` does.
#[derive(Debug)]
pub(crate) struct WriteTransaction<'c> {
    // Dropped first: the rollback of a dropped transaction is queued before
    // the gate opens.
    tx: Transaction<'c, Sqlite>,
    _gate: OwnedMutexGuard<()>,
}

impl WriteTransaction<'_> {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    pub(crate) async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl std::ops::Deref for WriteTransaction<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTransaction<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

/// An open write transaction (see [`Store::begin`]); the methods that must
/// be able to share one transaction are on this type, and the one-shot
/// methods of the same name on [`Store`] wrap them.
#[derive(Debug)]
pub struct WriteTx<'c> {
    tx: WriteTransaction<'c>,
}

impl WriteTx<'_> {
    /// Makes every write of the transaction durable (WAL, `synchronous =
    /// NORMAL`: survives a crash of the process).
    pub async fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit().await?)
    }

    /// Undoes every write of the transaction (also what dropping it does).
    pub async fn rollback(self) -> Result<(), StoreError> {
        Ok(self.tx.rollback().await?)
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Helpers for the store's tests: a store on a temporary file with one
    //! tenant and one MDM integration.

    use super::*;
    use mtd_adapter::MdmKind;

    /// How many threat events the store holds.
    pub async fn event_count(store: &Store) -> i64 {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM threat_events")
            .fetch_one(store.pool())
            .await
            .expect("count the events");
        n
    }

    /// A database file written by the migrations up to `last` (a file name
    /// in `migrations/`) alone, as an older release left it, with `rows`
    /// inserted (each statement gets `2026-01-01T00:00:00Z` as `?1`). Open it
    /// with [`Store::open`] to upgrade it; keep the `TempDir` alive.
    pub async fn old_store(last: &str, rows: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let old = dir.path().join("migrations");
        std::fs::create_dir(&old).unwrap();
        let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(&all)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".sql") && f.as_str() <= last)
            .collect();
        files.sort();
        assert_eq!(files.last().map(String::as_str), Some(last), "{files:?}");
        for file in &files {
            std::fs::copy(all.join(file), old.join(file)).unwrap();
        }
        let path = dir.path().join("old.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query("PRAGMA foreign_keys = ON")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::migrate::Migrator::new(old.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        for sql in rows {
            sqlx::query(sql)
                .bind("2026-01-01T00:00:00Z")
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
        (dir, path)
    }

    /// A store on a fresh file; keep the `TempDir` alive as long as the store.
    pub async fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(&dir.path().join("data/test.db"))
            .await
            .expect("the store opens");
        (dir, store)
    }

    /// A store with tenant `acme` and its MDM `Acme SOTI`; returns the MDM's id.
    pub async fn store_with_mdm() -> (tempfile::TempDir, Store, i64) {
        let (dir, store) = temp_store().await;
        let refs = store
            .sync_tenants(&[TenantRecord {
                id: "acme".into(),
                display_name: "Acme Corp".into(),
                mdms: vec![MdmRecord {
                    name: "Acme SOTI".into(),
                    kind: MdmKind::Soti,
                    url: "https://soti.example/MobiControl".into(),
                }],
            }])
            .await
            .expect("tenants are written");
        (dir, store, refs[0].id)
    }

    /// [`store_with_mdm`] with [`device`] `mdm_device_id` stored by a sync
    /// (its store id is 1 in a fresh store).
    pub async fn store_with_device(mdm_device_id: &str) -> (tempfile::TempDir, Store, i64) {
        let (dir, store, mdm) = store_with_mdm().await;
        let run = store
            .start_sync_run(mdm, crate::store::SyncTrigger::Initial)
            .await
            .expect("a sync run starts");
        store
            .upsert_devices(run, mdm, &[device(mdm_device_id)], crate::store::Pii::Clear)
            .await
            .expect("the device is stored");
        (dir, store, mdm)
    }

    /// A device with a serial, a MAC written with separators, and no user.
    pub fn device(mdm_device_id: &str) -> mtd_adapter::Device {
        mtd_adapter::Device {
            reported_risk: None,
            posture: Default::default(),
            mdm_device_id: mdm_device_id.into(),
            identifiers: mtd_adapter::Identifiers {
                udid: None,
                serial: Some(format!("sn-{mdm_device_id}")),
                imei: None,
                mac: None,
            },
            name: Some(format!("Phone {mdm_device_id}")),
            platform: mtd_adapter::Platform::Ios,
            model: Some("iPhone 15".into()),
            os_version: Some("17.4".into()),
            ownership: mtd_adapter::Ownership::Corporate,
            user: None,
            groups: vec![],
            last_checkin_at: None,
        }
    }

    /// A user with every field set.
    pub fn user(mdm_user_id: &str) -> mtd_adapter::User {
        mtd_adapter::User {
            mdm_user_id: mdm_user_id.into(),
            username: Some(format!("{mdm_user_id}-login")),
            email: Some(format!("{mdm_user_id}@acme.example")),
            first_name: Some("Jane".into()),
            last_name: Some("Doe".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[tokio::test]
    async fn open_creates_the_file_and_its_directory_with_all_migrations() {
        let (dir, store) = temp_store().await;
        assert!(dir.path().join("data/test.db").is_file());
        let tables: Vec<(String,)> =
            sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                .fetch_all(store.pool())
                .await
                .unwrap();
        let tables: Vec<&str> = tables.iter().map(|t| t.0.as_str()).collect();
        for want in [
            "action_audit",
            "actions",
            "device_groups",
            "devices",
            "groups",
            "mdm_integrations",
            "store_heartbeat",
            "sync_runs",
            "tenants",
            "threat_events",
            "users",
        ] {
            assert!(tables.contains(&want), "missing table {want} in {tables:?}");
        }
        let applied: Vec<(i64, bool)> =
            sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
                .fetch_all(store.pool())
                .await
                .unwrap();
        let embedded = sqlx::migrate!("./migrations");
        assert_eq!(applied.len(), embedded.iter().count());
        assert!(applied.iter().all(|(_, ok)| *ok));
    }

    #[tokio::test]
    async fn open_sets_wal_foreign_keys_and_busy_timeout() {
        let (_dir, store) = temp_store().await;
        let mut conn = store.pool().acquire().await.unwrap();
        use sqlx::Row;
        let mut values = Vec::new();
        for name in [
            "journal_mode",
            "foreign_keys",
            "busy_timeout",
            "synchronous",
        ] {
            let row = sqlx::query(&format!("PRAGMA {name}"))
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            let value = row
                .try_get::<String, _>(0)
                .or_else(|_| row.try_get::<i64, _>(0).map(|n| n.to_string()))
                .unwrap();
            values.push(value);
        }
        assert_eq!(
            values,
            ["wal", "1", "5000", "1"],
            "journal_mode, foreign_keys, busy_timeout, synchronous (1 = NORMAL)"
        );
    }

    /// A store written before MaaS360 existed keeps its AirWatch integration
    /// (stored then as `mcms`) as `airwatch`, with its devices: the table
    /// rebuild of 0003 must not cascade.
    #[tokio::test]
    async fn a_store_with_an_mcms_integration_is_migrated_to_airwatch_and_keeps_its_devices() {
        let (_dir, path) = testutil::old_store(
            "0002_action_sending.sql",
            &[
                "INSERT INTO tenants (id, display_name, created_at, updated_at) VALUES ('acme', 'Acme', ?1, ?1)",
                "INSERT INTO mdm_integrations (id, tenant_id, name, kind, url, first_seen_at, updated_at) \
                 VALUES (7, 'acme', 'Acme AirWatch', 'mcms', 'https://aw.example/', ?1, ?1)",
                "INSERT INTO devices (tenant_id, mdm_id, mdm_device_id, platform, first_seen_at, updated_at, last_seen_at) \
                 VALUES ('acme', 7, '42', 'ios', ?1, ?1, ?1)",
            ],
        )
        .await;

        let store = Store::open(&path).await.expect("the old store opens");
        let mdms = store.integrations("acme").await.unwrap();
        assert_eq!(mdms.len(), 1);
        assert_eq!(mdms[0].kind, mtd_adapter::MdmKind::Airwatch);
        let (devices,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM devices WHERE mdm_id = 7")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(devices, 1, "the rebuild did not cascade");
        let (fk,): (i64,) = sqlx::query_as("PRAGMA foreign_keys")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(fk, 1, "foreign keys are on again");
        sqlx::query(
            "INSERT INTO mdm_integrations (tenant_id, name, kind, url, first_seen_at, updated_at) \
             VALUES ('acme', 'Acme MaaS360', 'maas360', 'https://m.example/', ?1, ?1)",
        )
        .bind("2026-01-01T00:00:00Z")
        .execute(store.pool())
        .await
        .expect("maas360 is a kind the table takes");
    }

    /// A store written before `signal_risk` (0004) keeps its actions, their
    /// audit trail and every index of `actions` through the table's rebuild,
    /// and takes `signal_risk` rows afterwards.
    #[tokio::test]
    async fn a_store_from_before_signal_risk_keeps_its_actions_and_their_indexes() {
        let (_dir, path) = testutil::old_store(
            "0004_ise.sql",
            &[
                "INSERT INTO tenants (id, display_name, created_at, updated_at) VALUES ('acme', 'Acme', ?1, ?1)",
                "INSERT INTO mdm_integrations (id, tenant_id, name, kind, url, first_seen_at, updated_at) \
                 VALUES (7, 'acme', 'Acme SOTI', 'soti', 'https://soti.example/', ?1, ?1)",
                "INSERT INTO devices (id, tenant_id, mdm_id, mdm_device_id, platform, first_seen_at, updated_at, last_seen_at) \
                 VALUES (3, 'acme', 7, '42', 'ios', ?1, ?1, ?1)",
                "INSERT INTO actions (id, tenant_id, device_id, mdm_id, kind, state, created_at, updated_at) \
                 VALUES (11, 'acme', 3, 7, 'lock', 'sent', ?1, ?1)",
                "INSERT INTO action_audit (action_id, at, from_state, to_state, note) \
                 VALUES (11, ?1, NULL, 'pending', 'decided')",
            ],
        )
        .await;
        let store = Store::open(&path).await.expect("the old store opens");
        let (kind, device): (String, i64) =
            sqlx::query_as("SELECT kind, device_id FROM actions WHERE id = 11")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!((kind.as_str(), device), ("lock", 3));
        let (audits,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM action_audit WHERE action_id = 11")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(audits, 1, "the audit trail still points at its action");
        let indexes: Vec<(String,)> = sqlx::query_as(
            "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'actions' \
             AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        let indexes: Vec<&str> = indexes.iter().map(|(n,)| n.as_str()).collect();
        for expected in [
            "actions_device",
            "actions_due",
            "actions_event",
            "actions_mdm",
            "actions_parent",
            "actions_tenant_sent",
            "actions_tenant_time",
        ] {
            assert!(
                indexes.contains(&expected),
                "{expected} missing: {indexes:?}"
            );
        }
        sqlx::query(
            "INSERT INTO actions (tenant_id, device_id, mdm_id, kind, state, signal_level, created_at, updated_at) \
             VALUES ('acme', 3, 7, 'signal_risk', 'pending', 'high', ?1, ?1)",
        )
        .bind("2026-01-01T00:00:00Z")
        .execute(store.pool())
        .await
        .expect("signal_risk is a kind the table takes");
    }

    /// A write that waits for the process's write gate longer than the busy
    /// timeout fails as "unavailable" (a 503, a retry), saying the store is
    /// busy, and the gate opens again once the holder commits.
    #[tokio::test]
    async fn a_write_gate_held_past_the_busy_timeout_is_a_busy_store_not_a_pool_error() {
        let (_dir, store, _) = store_with_mdm().await;
        let holder = store.begin().await.unwrap();
        let err = store.begin().await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(err.to_string().contains("the store is busy"), "{err}");
        holder.commit().await.unwrap();
        store
            .begin()
            .await
            .expect("the gate is open again")
            .commit()
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_second_open_of_the_same_file_keeps_its_data() {
        let (dir, store, _) = store_with_mdm().await;
        store.close().await;
        let again = Store::open(&dir.path().join("data/test.db"))
            .await
            .expect("a second open works");
        let tenants = again.list_tenants().await.unwrap();
        assert_eq!(tenants.len(), 1);
        assert_eq!(tenants[0].id, "acme");
        again.close().await;
    }

    #[tokio::test]
    async fn readiness_succeeds_on_an_open_store_and_leaves_no_trace() {
        let (_dir, store) = temp_store().await;
        store.readiness().await.expect("writable");
        let (at,): (Option<String>,) =
            sqlx::query_as("SELECT at FROM store_heartbeat WHERE id = 1")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(at, None, "the probe rolls back");
    }

    #[tokio::test]
    async fn readiness_reports_a_closed_store_as_unavailable() {
        let (_dir, store) = temp_store().await;
        store.close().await;
        let err = store.readiness().await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
    }

    #[tokio::test]
    async fn a_held_write_lock_makes_readiness_report_unavailable_after_the_busy_timeout() {
        let (_dir, store) = temp_store().await;
        let mut blocker = store.begin_write().await.unwrap();
        sqlx::query("UPDATE store_heartbeat SET at = 'x' WHERE id = 1")
            .execute(&mut *blocker)
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let err = store.readiness().await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(started.elapsed() >= Duration::from_secs(4));
        blocker.rollback().await.unwrap();
        store.readiness().await.expect("writable again");
    }

    #[tokio::test]
    async fn readiness_does_not_take_the_write_lock_while_the_daemons_writers_do() {
        use std::sync::atomic::Ordering;
        let (_dir, store) = temp_store().await;
        let probes = || store.health.probes.load(Ordering::Acquire);
        // An idle store: the check probes the lock itself.
        store.readiness().await.expect("writable");
        assert_eq!(probes(), 1);

        // Writers at work: every check is answered by them.
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                loop {
                    let tx = store.begin_write().await.unwrap();
                    tx.commit().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..20 {
            store.readiness().await.expect("writable");
        }
        assert_eq!(probes(), 1, "no check took the write lock");
        writer.abort();
    }

    #[tokio::test]
    async fn concurrent_checks_during_a_held_lock_share_one_probe() {
        use std::sync::atomic::Ordering;
        let (_dir, store) = temp_store().await;
        let mut blocker = store.begin_write().await.unwrap();
        sqlx::query("UPDATE store_heartbeat SET at = 'x' WHERE id = 1")
            .execute(&mut *blocker)
            .await
            .unwrap();
        let checks: Vec<_> = (0..12)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.readiness().await })
            })
            .collect();
        for check in checks {
            assert!(check.await.unwrap().is_err());
        }
        assert!(
            store.health.probes.load(Ordering::Acquire) <= 2,
            "one probe waits on the lock; the others take its answer"
        );
        blocker.rollback().await.unwrap();
    }
}
