//! Storage: one sqlx pool over SQLite (embedded default) or PostgreSQL, versioned migrations per
//! dialect, a generic resource store with optimistic concurrency, and the change log that feeds
//! watch streams. SQL here is dialect-neutral (`$n` placeholders work on both engines).

mod auth;
mod backends;
mod changes;
mod gateway;
pub(crate) mod health;
pub mod lease;
pub(crate) mod mirror;
mod models;
pub(crate) mod notify;
mod store;
mod workers;

pub use auth::*;
pub use changes::*;
pub use gateway::*;
pub use models::*;
pub use store::*;
pub use workers::*;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Row};

/// Which SQL engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Errors from the storage layer, each naming what it is about.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error(
        "{kind} {id} was changed by someone else: you sent version {expected}, the current version is {actual}; reload and retry"
    )]
    VersionConflict { kind: &'static str, id: i64, expected: i64, actual: i64 },
    #[error("{kind} named {name:?} already exists")]
    Duplicate { kind: &'static str, name: String },
    #[error(
        "database schema version {found} is newer than this binary supports ({supported}); run a newer ferrostack or point --database-url elsewhere"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("this server no longer holds the {lease} lease (token {token}): another server leads now")]
    Deposed { lease: &'static str, token: i64 },
    #[error("the database is busy with another writer (SQLite); try again in a moment")]
    Busy,
    #[error("unsupported database url {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("stored {kind} {id} cannot be read: {message}")]
    Corrupt { kind: &'static str, id: i64, message: String },
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type DbResult<T> = Result<T, DbError>;

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    pub(crate) pool: AnyPool,
    pub(crate) dialect: Dialect,
    /// Counts commits per kind; watchers wake on the kinds they follow and read the change log.
    pub(crate) notifier: Arc<notify::Notifier>,
    /// Database calls made through this handle (statements outside a transaction, and
    /// transactions): what a test compares to prove a request's cost does not grow with the cluster.
    calls: Arc<AtomicU64>,
    /// Set on the handle the control loops write through: the lease their writes must prove.
    fence: Option<Arc<lease::Fence>>,
    /// Where it connects (PostgreSQL's change notifications need a connection of their own).
    url: Arc<str>,
    /// Whether the database answered the latest probe (`health.rs`).
    health: Arc<health::Health>,
}

impl Db {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) and applies pending migrations.
    pub async fn open(url: &str) -> DbResult<Db> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else {
            return Err(DbError::UnsupportedUrl(url.to_string()));
        };
        let options = AnyConnectOptions::from_str(url)?.disable_statement_logging();
        let max_connections = match dialect {
            Dialect::Sqlite => 8,
            Dialect::Postgres => 16,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(match dialect {
                Dialect::Sqlite => Duration::from_secs(30),
                // A cut-off database answers 503 soon (`health.rs`), not after half a minute.
                Dialect::Postgres => Duration::from_secs(10),
            })
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                    }
                    if dialect == Dialect::Postgres {
                        sqlx::query(health::PG_SESSION).execute(&mut *conn).await?;
                        if let Err(e) = sqlx::query(health::PG_CLIENT_CHECK).execute(&mut *conn).await {
                            tracing::debug!(error = %e, "client_connection_check_interval needs PostgreSQL 14 or later");
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        if dialect == Dialect::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await?;
        }
        let db = Db {
            pool,
            dialect,
            notifier: Arc::default(),
            calls: Arc::default(),
            fence: None,
            url: url.into(),
            health: health::new_health(),
        };
        db.migrate().await?;
        Ok(db)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The pool, counting the call (see [`Db::calls`]).
    pub(crate) fn pool(&self) -> &AnyPool {
        self.calls.fetch_add(1, Ordering::Relaxed);
        &self.pool
    }

    /// This handle with a call counter of its own: for loops that run on a timer (leadership,
    /// sharing heartbeats and rate counts, the change-log poller, the worker monitor), so that
    /// [`Db::calls`] on the server's handle counts what requests cost.
    pub fn counted_apart(&self) -> Db {
        Db { calls: Arc::default(), ..self.clone() }
    }

    /// Database calls (statements outside a transaction, and transactions) made so far through
    /// this handle and its clones.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn migrator(&self) -> sqlx::migrate::Migrator {
        match self.dialect {
            Dialect::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Dialect::Postgres => sqlx::migrate!("./migrations/postgres"),
        }
    }

    /// The newest schema version this binary knows.
    pub fn supported_schema_version(&self) -> i64 {
        self.migrator().iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// The newest schema version applied to the database, 0 for a fresh one.
    pub async fn schema_version(&self) -> DbResult<i64> {
        let applied =
            sqlx::query("SELECT MAX(version) FROM _sqlx_migrations WHERE success = TRUE").fetch_one(self.pool()).await;
        match applied {
            Ok(row) => Ok(row.try_get::<Option<i64>, _>(0)?.unwrap_or(0)),
            // No migrations table yet: a fresh database.
            Err(sqlx::Error::Database(_)) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Applies pending migrations; refuses a database written by a newer binary. Safe to re-run.
    async fn migrate(&self) -> DbResult<()> {
        let found = self.schema_version().await?;
        let supported = self.supported_schema_version();
        if found > supported {
            return Err(DbError::SchemaTooNew { found, supported });
        }
        if self.dialect == Dialect::Postgres {
            // On a connection of its own, without the session limits: a migration may run long,
            // and a server starting beside another waits for the other's migrations under
            // PostgreSQL's migration lock.
            let options = AnyConnectOptions::from_str(&self.url)?.disable_statement_logging();
            let pool = AnyPoolOptions::new().max_connections(1).connect_with(options).await?;
            let migrated = self.migrator().run(&pool).await;
            pool.close().await;
            migrated?;
            return Ok(());
        }
        self.migrator().run(self.pool()).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A waiter for commits to any of `kinds` (table names, e.g. `Resource::TABLE`).
    pub fn subscribe(&self, kinds: &[&str]) -> notify::Changes {
        self.notifier.subscribe(kinds)
    }

    /// A waiter for commits to the instances worker `worker_id` takes part in.
    pub fn subscribe_worker(&self, worker_id: i64) -> notify::Changes {
        self.notifier.subscribe_worker(worker_id)
    }
}

/// Milliseconds since the Unix epoch, the storage form of every timestamp.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(crate) fn from_ms(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
