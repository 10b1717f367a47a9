//! Whether the database answers, as this server last saw it: a probe asks `SELECT 1` every half
//! second with a 1 s deadline, so `/readyz` and the API can refuse at once (503) instead of
//! hanging on a database that is cut off or stopped, and so workers move to a server that can
//! reach it. Also the session limits that keep a dead or cut-off server's locks and transactions
//! from outliving its lease (PostgreSQL).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{Db, DbError, Dialect};

/// How often the probe asks.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// How long one probe may take before the database counts as unreachable.
pub const PROBE_DEADLINE: Duration = Duration::from_millis(1000);

/// Limits set on every PostgreSQL session (see `docs/ha.md`), all below the control lease's 6 s,
/// so no lock or transaction of a server that stalls or is cut off outlives its lease: a statement
/// runs at most 5 s, waits at most 2 s for a lock, a transaction may sit idle 3 s; the database
/// notices a vanished client within about 5 s (keepalives 2 s idle, 1 s apart, 3 tries; unacked
/// data 4 s) and checks for one every second while a query runs.
pub const PG_SESSION: &str = "SELECT set_config('statement_timeout', '5s', false), \
     set_config('lock_timeout', '2s', false), set_config('idle_in_transaction_session_timeout', '3s', false), \
     set_config('tcp_keepalives_idle', '2', false), set_config('tcp_keepalives_interval', '1', false), \
     set_config('tcp_keepalives_count', '3', false), set_config('tcp_user_timeout', '4000', false)";
/// Only on PostgreSQL 14 and later (ignored, with a note, elsewhere).
pub const PG_CLIENT_CHECK: &str = "SELECT set_config('client_connection_check_interval', '1s', false)";
/// The probe's latest answer; starts reachable (the server has just connected).
#[derive(Debug)]
pub struct Health(AtomicBool);

impl Default for Health {
    fn default() -> Health {
        Health(AtomicBool::new(true))
    }
}

impl Db {
    /// Whether the database answered the latest probe (always true before the probe runs).
    pub fn reachable(&self) -> bool {
        self.health.0.load(Ordering::Relaxed)
    }

    /// Probes every [`PROBE_EVERY`] until shutdown, over a connection of its own (PostgreSQL: a
    /// busy pool is not an unreachable database); a failed probe drops that connection and the
    /// next one connects anew. SQLite is a local file: always reachable.
    pub fn spawn_probe(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        if self.dialect != Dialect::Postgres {
            return;
        }
        let db = self.clone();
        tokio::spawn(async move {
            let mut conn: Option<sqlx::AnyConnection> = None;
            loop {
                let ok = tokio::time::timeout(PROBE_DEADLINE, ask(&db.url, &mut conn)).await.unwrap_or(false);
                if !ok {
                    conn = None;
                }
                db.record(ok);
                tokio::select! {
                    _ = tokio::time::sleep(PROBE_EVERY) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        });
    }

    /// The value of setting `name` on one of the pool's sessions (PostgreSQL), e.g. to check the
    /// limits this module sets.
    pub async fn session_setting(&self, name: &str) -> Result<String, DbError> {
        use sqlx::Row;
        let row = sqlx::query("SELECT current_setting($1)").bind(name.to_string()).fetch_one(self.pool()).await?;
        Ok(row.try_get(0)?)
    }

    fn record(&self, ok: bool) {
        let was = self.health.0.swap(ok, Ordering::Relaxed);
        match (was, ok) {
            (true, false) => tracing::warn!("the database does not answer: refusing API calls with 503 until it does"),
            (false, true) => tracing::info!("the database answers again"),
            _ => {}
        }
    }
}

/// One probe: `SELECT 1` on `conn`, connecting first when there is none.
async fn ask(url: &str, conn: &mut Option<sqlx::AnyConnection>) -> bool {
    use sqlx::ConnectOptions;
    use std::str::FromStr;
    if conn.is_none() {
        let options = match sqlx::any::AnyConnectOptions::from_str(url) {
            Ok(o) => o.disable_statement_logging(),
            Err(_) => return false,
        };
        match options.connect().await {
            Ok(c) => *conn = Some(c),
            Err(e) => {
                tracing::debug!(error = %e, "database probe cannot connect");
                return false;
            }
        }
    }
    let Some(c) = conn.as_mut() else { return false };
    sqlx::query("SELECT 1").execute(&mut *c).await.is_ok()
}

impl DbError {
    /// Whether this error means the database is unreachable, stopped, or timed a statement out
    /// (a 503 with `Retry-After`, not a 500): the pool found no connection in time, the
    /// connection broke, or PostgreSQL ended the statement or session (SQLSTATE class 08
    /// connection exception, 57 operator intervention, 55P03 lock not available, 25P03 idle in
    /// transaction timeout, 53 insufficient resources).
    pub fn is_unavailable(&self) -> bool {
        if matches!(self, DbError::Busy) {
            return true;
        }
        let DbError::Sqlx(e) = self else { return false };
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => {
                true
            }
            sqlx::Error::Database(db) => db.code().is_some_and(|c| unavailable_sqlstate(&c)),
            _ => false,
        }
    }
}

/// The SQLSTATEs [`DbError::is_unavailable`] counts.
pub fn unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57") || code.starts_with("53") || code == "55P03" || code == "25P03"
}

/// The shared flag, for [`Db::open`].
pub(crate) fn new_health() -> Arc<Health> {
    Arc::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_sqlstates() {
        for (code, unavailable) in [
            ("08006", true),  // connection failure
            ("57014", true),  // statement timeout (query canceled)
            ("57P01", true),  // admin shutdown
            ("55P03", true),  // lock timeout
            ("25P03", true),  // idle-in-transaction timeout
            ("53300", true),  // too many connections
            ("23505", false), // unique violation: the caller's fault
            ("40001", false), // serialization failure
        ] {
            assert_eq!(unavailable_sqlstate(code), unavailable, "{code}");
        }
    }
}
