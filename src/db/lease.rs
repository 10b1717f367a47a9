//! Leases in the database: which server leads the control loops, with a fencing token that grows
//! with every change of holder. A handle made by [`Db::fenced`] proves its token inside each write
//! transaction before writing; on PostgreSQL the proof holds a share lock on the lease row until
//! commit, so a takeover waits for the writes already proven, and every write after it fails with
//! [`DbError::Deposed`]. Times are the database's clock, so servers' clocks need not agree.

use std::sync::Arc;

use sqlx::{Any, Row, Transaction};

use super::{Db, DbError, DbResult, Dialect};

/// The lease the control loops (scheduler, model controller, worker monitor) run under.
pub const CONTROL: &str = "control";

/// How many times a SQLite write transaction tries to take the write lock (each try waits up to
/// the busy timeout) before its caller gets the busy error.
const SQLITE_BEGIN_TRIES: u32 = 3;

/// Whether a SQLite result code (as sqlx gives it: the extended code in decimal) is one of
/// SQLITE_BUSY's: another connection holds the lock.
pub(crate) fn sqlite_busy(code: &str) -> bool {
    code.parse::<i32>().is_ok_and(|c| c & 0xff == 5)
}

/// What a fenced handle proves before each write: `holder` still holds `lease` with `token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub lease: &'static str,
    pub holder: String,
    pub token: i64,
}

/// Who holds a lease now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub holder: String,
    pub token: i64,
    /// Milliseconds until it expires unless renewed.
    pub expires_in_ms: i64,
}

impl Db {
    /// The database's clock in milliseconds since the Unix epoch, as SQL.
    pub(crate) fn clock_sql(&self) -> &'static str {
        match self.dialect {
            Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
        }
    }

    /// Takes or renews `lease` for `holder` for `ttl_ms`. Returns the token while `holder` holds
    /// it: the same token as before on a renewal (also of a lapsed lease nobody took), the next
    /// one on a takeover; None while another holder's lease runs. The expiry of an update is read
    /// from the clock after the row lock is taken (`excluded`'s was read when the statement began,
    /// so a renewal that waited for the lock would be written already expired).
    pub async fn acquire_lease(&self, lease: &str, holder: &str, ttl_ms: i64) -> DbResult<Option<i64>> {
        let now = self.clock_sql();
        let sql = format!(
            "INSERT INTO leases (name, holder, token, expires_at) VALUES ($1, $2, 1, {now} + $3) \
             ON CONFLICT (name) DO UPDATE SET \
             token = CASE WHEN leases.holder = excluded.holder THEN leases.token ELSE leases.token + 1 END, \
             holder = excluded.holder, expires_at = {now} + $3 \
             WHERE leases.holder = excluded.holder OR leases.expires_at < {now} \
             RETURNING token"
        );
        let row = sqlx::query(&sql)
            .bind(lease.to_string())
            .bind(holder.to_string())
            .bind(ttl_ms)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?)
    }

    /// Gives `lease` up (a clean shutdown), so the next holder need not wait for it to expire.
    pub async fn release_lease(&self, lease: &str, holder: &str) -> DbResult<()> {
        sqlx::query("UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2")
            .bind(lease.to_string())
            .bind(holder.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Who holds `lease` now; None when nobody does (never taken, released or expired).
    pub async fn lease_holder(&self, lease: &str) -> DbResult<Option<Holder>> {
        let sql = format!("SELECT holder, token, expires_at - {} FROM leases WHERE name = $1", self.clock_sql());
        let row = sqlx::query(&sql).bind(lease.to_string()).fetch_optional(self.pool()).await?;
        let Some(row) = row else { return Ok(None) };
        let holder = Holder { holder: row.try_get(0)?, token: row.try_get(1)?, expires_in_ms: row.try_get(2)? };
        Ok((holder.expires_in_ms > 0).then_some(holder))
    }

    /// This handle with every write transaction guarded by `fence`.
    pub fn fenced(&self, fence: Fence) -> Db {
        Db { fence: Some(Arc::new(fence)), ..self.clone() }
    }

    /// Begins a write transaction. On SQLite it is `BEGIN IMMEDIATE`: the write lock is taken (or
    /// waited for, up to the busy timeout) at the start, so a transaction that reads before it
    /// writes never fails to upgrade its lock with `SQLITE_BUSY_SNAPSHOT` (code 517) because
    /// another connection committed in between. On a fenced handle (PostgreSQL) it first proves the
    /// fence and keeps the lease row share-locked until the transaction ends. SQLite serves one
    /// server, which leads alone: there the proof is skipped.
    pub(crate) async fn begin_write(&self) -> DbResult<Transaction<'static, Any>> {
        let mut tx = match self.dialect {
            Dialect::Sqlite => {
                // Each try waits up to the busy timeout for the writer before it.
                let mut tries = 1;
                loop {
                    match self.pool().begin_with("BEGIN IMMEDIATE").await {
                        Ok(tx) => break tx,
                        Err(sqlx::Error::Database(e)) if e.code().is_some_and(|c| sqlite_busy(&c)) => {
                            if tries >= SQLITE_BEGIN_TRIES {
                                // Contention, not a fault: the caller answers 503 with Retry-After.
                                return Err(DbError::Busy);
                            }
                            tries += 1;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Dialect::Postgres => self.pool().begin().await?,
        };
        let Some(fence) = self.fence.as_deref().filter(|_| self.dialect == Dialect::Postgres) else { return Ok(tx) };
        let sql = format!(
            "SELECT token FROM leases WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > {} FOR SHARE",
            self.clock_sql()
        );
        let proven = sqlx::query(&sql)
            .bind(fence.lease.to_string())
            .bind(fence.holder.clone())
            .bind(fence.token)
            .fetch_optional(&mut *tx)
            .await?;
        if proven.is_none() {
            tx.rollback().await?;
            return Err(DbError::Deposed { lease: fence.lease, token: fence.token });
        }
        Ok(tx)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sqlite_busy_codes() {
        // SQLITE_BUSY, _RECOVERY, _SNAPSHOT, _TIMEOUT; SQLITE_LOCKED, SQLITE_CONSTRAINT_UNIQUE, SQLSTATEs.
        let cases = [("5", true), ("261", true), ("517", true), ("773", true), ("6", false), ("2067", false)];
        for (code, busy) in cases.into_iter().chain([("08006", false), ("", false), ("busy", false)]) {
            assert_eq!(super::sqlite_busy(code), busy, "{code}");
        }
    }
}
