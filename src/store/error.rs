//! The store's error type. Its one decision for callers is
//! [`StoreError::is_unavailable`]: "try again later" (a 503, a retry of the
//! sync batch) versus a bug or a refused request.

use super::actions::ActionState;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory for the database file could not be created.
    #[error("cannot create the directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database file could not be created private to its owner, or narrowed to that.
    #[error("cannot make the store file {path} private (mode 0600): {source}")]
    FileMode {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Applying the embedded migrations failed (for example a database from a
    /// newer connector, or a shipped migration that was edited).
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed; [`StoreError::is_unavailable`] tells whether retrying can help.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The row a method was asked to change does not exist.
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// An action was not in the state the caller expected: someone else
    /// (another dispatcher, an admin's cancel) changed it first.
    #[error("action {action_id} is {actual}, not {expected}")]
    ActionStateChanged {
        action_id: i64,
        expected: ActionState,
        actual: ActionState,
    },
    /// Another write transaction of this daemon kept the store's write gate
    /// longer than the busy timeout (`WriteHealth::enter`): try again later.
    #[error("the store is busy: another write of this daemon held it for more than {0:?}; try again shortly (if it lasts, look for a long sync or a slow disk)")]
    WriteBusy(std::time::Duration),
    /// A stored value could not be read back (a column the schema allows but
    /// this code does not know): a bug, never retried.
    #[error("unreadable stored value: {0}")]
    Corrupt(String),
}

/// SQLite primary result codes that mean "the database cannot take this
/// write now" rather than "this statement is wrong".
/// <https://www.sqlite.org/rescode.html>
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_NOMEM: i64 = 7;
const SQLITE_READONLY: i64 = 8;
const SQLITE_IOERR: i64 = 10;
const SQLITE_FULL: i64 = 13;
const SQLITE_CANTOPEN: i64 = 14;
const SQLITE_PROTOCOL: i64 = 15;

impl StoreError {
    /// True when the store cannot be written right now (locked past the busy
    /// timeout, read-only, disk full, I/O error, pool closed or exhausted):
    /// answer 503 and retry later. False for bugs, constraint violations and
    /// missing rows, where a retry would fail the same way.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::CreateDir { .. }
            | StoreError::FileMode { .. }
            | StoreError::WriteBusy(_) => true,
            StoreError::Database(e) => sqlx_is_unavailable(e),
            StoreError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => sqlx_is_unavailable(e),
            StoreError::Migrate(_)
            | StoreError::NotFound { .. }
            | StoreError::ActionStateChanged { .. }
            | StoreError::Corrupt(_) => false,
        }
    }

    /// True when a unique or foreign-key constraint refused the write.
    pub fn is_constraint_violation(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => matches!(
                db.kind(),
                sqlx::error::ErrorKind::UniqueViolation
                    | sqlx::error::ErrorKind::ForeignKeyViolation
                    | sqlx::error::ErrorKind::NotNullViolation
                    | sqlx::error::ErrorKind::CheckViolation
            ),
            _ => false,
        }
    }
}

fn sqlx_is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            // sqlx reports SQLite's extended code; the primary code is its low byte.
            let primary = db
                .code()
                .and_then(|c| c.parse::<i64>().ok())
                .map(|c| c & 0xff);
            matches!(
                primary,
                Some(
                    SQLITE_BUSY
                        | SQLITE_LOCKED
                        | SQLITE_NOMEM
                        | SQLITE_READONLY
                        | SQLITE_IOERR
                        | SQLITE_FULL
                        | SQLITE_CANTOPEN
                        | SQLITE_PROTOCOL
                )
            )
        }
        _ => false,
    }
}
