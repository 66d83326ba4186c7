//! The SQLite database of the store: schema, migrations, and the connection settings that let several
//! processes share it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::Error;

/// Schema migrations; entry `i` takes the database from version `i` to `i + 1`. Append only.
const MIGRATIONS: &[&str] = &[
    // 1: tags, cache records and their references, base-image memo, snapshots, cache mounts.
    "CREATE TABLE tags (
        name TEXT PRIMARY KEY,
        descriptor TEXT NOT NULL,
        updated INTEGER NOT NULL
    );
    CREATE TABLE cache_records (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL,
        created INTEGER NOT NULL,
        last_used INTEGER NOT NULL
    );
    CREATE TABLE cache_refs (
        key TEXT NOT NULL REFERENCES cache_records(key) ON DELETE CASCADE,
        digest TEXT NOT NULL,
        PRIMARY KEY (key, digest)
    ) WITHOUT ROWID;
    CREATE INDEX cache_refs_digest ON cache_refs(digest);
    CREATE TABLE bases (
        reference TEXT PRIMARY KEY,
        descriptor TEXT NOT NULL,
        updated INTEGER NOT NULL
    );
    CREATE TABLE snapshots (
        diff_id TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        created INTEGER NOT NULL,
        last_used INTEGER NOT NULL
    );
    CREATE TABLE mounts (
        hash TEXT PRIMARY KEY,
        id TEXT NOT NULL,
        created INTEGER NOT NULL,
        last_used INTEGER NOT NULL
    );",
    // 2: base-image resolutions get a last use, for LRU pruning.
    "ALTER TABLE bases ADD COLUMN last_used INTEGER NOT NULL DEFAULT 0;
     UPDATE bases SET last_used = updated;",
    // 3: the build-context stat cache: (context root, path) + stat fields -> content digest.
    "CREATE TABLE stat_cache (
        root TEXT NOT NULL,
        path TEXT NOT NULL,
        ino INTEGER NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ctime_ns INTEGER NOT NULL,
        digest TEXT NOT NULL,
        last_used INTEGER NOT NULL,
        PRIMARY KEY (root, path)
    ) WITHOUT ROWID;",
    // 4: where blobs were pulled from or pushed to (registry, repository), for cross-repository mounts.
    "CREATE TABLE blob_sources (
        digest TEXT NOT NULL,
        registry TEXT NOT NULL,
        repository TEXT NOT NULL,
        updated INTEGER NOT NULL,
        PRIMARY KEY (digest, registry, repository)
    ) WITHOUT ROWID;",
];

/// How long a statement waits for another process's lock on the database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `f` again while SQLite answers SQLITE_BUSY without having waited (a lock upgrade that could
/// deadlock, which the busy handler does not cover), until `limit` has passed.
fn retry_busy<T>(
    limit: Duration,
    mut f: impl FnMut() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let start = std::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && start.elapsed() < limit =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// The newest schema version this build knows.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// One connection per `Store`, shared by its threads.
///
/// rusqlite's `Connection` is `Send` but not `Sync`, hence the mutex; statements are short, so threads of
/// one process wait on the mutex and processes wait on SQLite's own lock (`busy_timeout`).
#[derive(Debug)]
pub(crate) struct Db {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl Db {
    pub(crate) fn open(path: &Path) -> Result<Db, Error> {
        let err = |op: &str| {
            let path = path.to_owned();
            let op = op.to_owned();
            move |source| Error::Db { path, op, source }
        };
        let conn = Connection::open(path).map_err(err("open"))?;
        // busy_timeout first: switching to WAL itself needs a lock another process may hold.
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(err("set busy_timeout"))?;
        // The lock of `Store::open` keeps rbuild openers apart; this covers a process that holds the
        // database for other reasons (an older rbuild, the sqlite3 shell), for as long as busy_timeout.
        retry_busy(BUSY_TIMEOUT, || {
            conn.pragma_update(None, "journal_mode", "WAL")
        })
        .map_err(err("enable WAL"))?;
        // NORMAL in WAL mode: a commit is durable after the next checkpoint, and the database never corrupts.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err("set synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err("enable foreign keys"))?;
        // The last connection to close would checkpoint the WAL into the database and fsync both: a few
        // milliseconds at the end of every command (most of a no-op rebuild on a slow disk). Checkpoints
        // still happen, automatically, when the WAL grows past 1,000 pages during a write.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )
        .map_err(err("disable checkpoint on close"))?;
        let db = Db {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        };
        db.migrate()?;
        Ok(db)
    }

    fn migrate(&self) -> Result<(), Error> {
        // Up to date (every open but the first of a new rbuild): a read, no write transaction.
        let current = self.read("read schema version", |c| {
            c.query_row("SELECT version FROM schema_version", [], |r| {
                r.get::<_, i64>(0)
            })
            .or(Ok(-1))
        })?;
        if current == SCHEMA_VERSION {
            return Ok(());
        }
        self.write_retrying_busy("migrate schema", |tx| {
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
            )?;
            let found: Option<i64> = tx
                .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
                .map(Some)
                .or_else(|e| {
                    if e == rusqlite::Error::QueryReturnedNoRows {
                        Ok(None)
                    } else {
                        Err(e)
                    }
                })?;
            let found = match found {
                Some(v) => v,
                None => {
                    tx.execute("INSERT INTO schema_version (version) VALUES (0)", [])?;
                    0
                }
            };
            if found > SCHEMA_VERSION {
                return Err(Error::SchemaTooNew {
                    path: self.path.clone(),
                    found,
                    supported: SCHEMA_VERSION,
                }
                .into());
            }
            let start = usize::try_from(found).expect("schema versions are non-negative");
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(start) {
                tracing::debug!(version = i + 1, "migrating store schema");
                tx.execute_batch(sql)?;
            }
            tx.execute("UPDATE schema_version SET version = ?1", [SCHEMA_VERSION])?;
            Ok(())
        })
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction and commits it.
    ///
    /// IMMEDIATE takes the write lock up front, so two processes never both read and then fail to upgrade
    /// to writing (which `busy_timeout` cannot resolve and SQLite reports as SQLITE_BUSY at once).
    pub(crate) fn write<T>(
        &self,
        op: &str,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, Fail>,
    ) -> Result<T, Error> {
        let mut conn = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let run = |conn: &mut Connection| -> Result<T, Fail> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        };
        run(&mut conn).map_err(|fail| match fail {
            Fail::Sql(source) => self.error(op, source),
            Fail::Other(e) => e,
        })
    }

    /// [`write`](Self::write) for schema creation: retried while the database is busy, as the switch to
    /// WAL of another connection can make `BEGIN IMMEDIATE` fail without waiting.
    fn write_retrying_busy<T>(
        &self,
        op: &str,
        f: impl Fn(&Transaction<'_>) -> Result<T, Fail>,
    ) -> Result<T, Error> {
        let start = std::time::Instant::now();
        loop {
            match self.write(op, &f) {
                Err(Error::Db {
                    source: rusqlite::Error::SqliteFailure(e, _),
                    ..
                }) if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && start.elapsed() < BUSY_TIMEOUT =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                other => return other,
            }
        }
    }

    /// Runs `f` on the connection outside any explicit transaction (for reads).
    pub(crate) fn read<T>(
        &self,
        op: &str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, Error> {
        let conn = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&conn).map_err(|source| self.error(op, source))
    }

    pub(crate) fn error(&self, op: &str, source: rusqlite::Error) -> Error {
        Error::Db {
            path: self.path.clone(),
            op: op.to_owned(),
            source,
        }
    }
}

/// A failure inside a write transaction: SQL (wrapped with the operation name later) or anything else.
#[derive(Debug)]
pub(crate) enum Fail {
    Sql(rusqlite::Error),
    Other(Error),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sql(e)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Other(e)
    }
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Self {
        Fail::Other(Error::Io(e))
    }
}
