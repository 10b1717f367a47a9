//! The change log: every write records its change in the writing transaction; change numbers
//! (`seq`) follow commit order, so a watcher that has read up to `seq` never finds an older one later.
//!
//! SQLite has one writer at a time: the log's autoincrement is already in commit order. PostgreSQL
//! commits concurrently: writers insert their change unnumbered (no lock held by the writing
//! transaction), and a short sequencing step after each commit numbers every committed, unnumbered
//! change under an advisory lock. Numbers are given only to committed rows and one sequencer runs at
//! a time, so numbers are handed out in the order changes become visible; a change of a row written
//! twice keeps its order because the second writer waited for the first's row lock, so its change's
//! `id` is larger. A server that stops between commit and sequencing leaves its change unnumbered
//! until the next sequencing by any server (the poller runs one every few seconds).

use std::sync::Arc;

use serde::Serialize;
use sqlx::{Any, Row, Transaction};

use super::notify::{EXTERNAL_POLL, ForeignChange};
use super::{Db, DbError, DbResult, Dialect, now_ms};
use crate::api::EventType;

/// One entry of the change log.
#[derive(Debug, Clone)]
pub struct Change {
    pub seq: i64,
    pub event: EventType,
    /// The resource's wire JSON as of this change.
    pub data: String,
}

/// The PostgreSQL notification channel a server signals after numbering changes.
pub const CHANGES_CHANNEL: &str = "ferrostack_changes";

/// Listens on [`CHANGES_CHANNEL`] (a connection of its own) and signals `heard` per notification
/// until shutdown; reconnects after a lost connection. Without it the poller still runs on its
/// timer.
fn listen_for_changes(url: String, heard: Arc<tokio::sync::Notify>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            let connect = async {
                let mut l = sqlx::postgres::PgListener::connect(&url).await?;
                l.listen(CHANGES_CHANNEL).await?;
                Ok::<_, sqlx::Error>(l)
            };
            let connected = tokio::select! {
                l = connect => l,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            match connected {
                Ok(mut listener) => loop {
                    tokio::select! {
                        n = listener.recv() => match n {
                            Ok(_) => heard.notify_one(),
                            Err(e) => {
                                tracing::debug!(error = %e, "change notifications lost; listening again");
                                break;
                            }
                        },
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                },
                Err(e) => {
                    tracing::debug!(error = %e, "cannot listen for change notifications; the poller's timer still runs")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    });
}

/// The advisory lock key that serialises sequencing (PostgreSQL), "FSCHANGE" in ASCII.
const SEQUENCER_LOCK: i64 = 0x4653_4348_414e_4745;
/// How long a request's own numbering waits for the sequencer's lock before leaving it to the poller.
const REQUEST_LOCK_WAIT: &str = "500ms";
/// How long the poller waits for it (below the control lease's 6 s, like every lock wait).
const POLLER_LOCK_WAIT: &str = "2s";

/// The `workers` column: `,1,7,` names workers 1 and 7, `,` none ("" is a change written before
/// the column existed, which every worker's watch reads).
fn workers_column(workers: &[i64]) -> String {
    workers.iter().map(|w| format!(",{w}")).collect::<String>() + ","
}

fn parse_workers(column: &str) -> Vec<i64> {
    column.split(',').filter_map(|w| w.parse().ok()).collect()
}

impl Db {
    /// Records a change in the writing transaction. Returns its number on SQLite; on PostgreSQL the
    /// number comes after commit (see [`Db::committed`]), and this returns 0.
    pub(crate) async fn record_change<R: Serialize>(
        &self,
        tx: &mut Transaction<'_, Any>,
        kind: &str,
        resource_id: i64,
        event: EventType,
        record: &R,
        workers: &[i64],
    ) -> DbResult<i64> {
        let data = serde_json::to_string(record).map_err(|e| DbError::Corrupt {
            kind: "change",
            id: resource_id,
            message: e.to_string(),
        })?;
        let insert = sqlx::query(match self.dialect {
            Dialect::Sqlite => {
                "INSERT INTO changes (kind, resource_id, event, data, created_at, workers) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq"
            }
            Dialect::Postgres => {
                "INSERT INTO changes (kind, resource_id, event, data, created_at, workers) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING 0::BIGINT"
            }
        })
        .bind(kind.to_string())
        .bind(resource_id)
        .bind(event.as_str().to_string())
        .bind(data)
        .bind(now_ms())
        .bind(workers_column(workers));
        Ok(insert.fetch_one(&mut **tx).await?.try_get(0)?)
    }

    /// After a write's commit: numbers it (PostgreSQL) and wakes whoever follows its kind or workers.
    pub(crate) async fn committed(&self, kind: &str, seq: i64, workers: &[i64]) {
        match self.dialect {
            Dialect::Sqlite => self.notifier.committed(kind, seq, workers),
            Dialect::Postgres => {
                // The write is committed whatever happens here; a failed numbering is redone by the
                // next sequencing (any write's, or the poller's) and the wake-up comes with it.
                // A request waits for numbering half a second at most (a sequencer of a stalled
                // or cut-off server holds the lock until its session is ended): then the poller
                // numbers this change on its next pass.
                match self.sequence(REQUEST_LOCK_WAIT).await {
                    Ok(_) => {}
                    Err(e) if e.is_unavailable() => {
                        tracing::debug!(error = %e, "numbering committed changes deferred to the poller")
                    }
                    Err(e) => tracing::warn!(error = %e, "numbering committed changes failed; the poller retries"),
                }
            }
        }
    }

    /// [`Db::committed`] for the changes of one transaction.
    pub(crate) async fn committed_many(&self, kind: &str, changes: &[super::store::Written]) {
        match self.dialect {
            Dialect::Sqlite => {
                for c in changes {
                    self.notifier.committed(kind, c.seq, &c.workers);
                }
            }
            Dialect::Postgres if changes.is_empty() => {}
            Dialect::Postgres => self.committed(kind, 0, &[]).await,
        }
    }

    /// Numbers every committed, unnumbered change in id order and wakes their followers
    /// (PostgreSQL; a no-op elsewhere). Returns how many it numbered.
    pub async fn sequence_changes(&self) -> DbResult<usize> {
        self.sequence(POLLER_LOCK_WAIT).await
    }

    /// [`Db::sequence_changes`], waiting at most `lock_wait` (a PostgreSQL interval) for the lock.
    async fn sequence(&self, lock_wait: &str) -> DbResult<usize> {
        if self.dialect != Dialect::Postgres {
            return Ok(0);
        }
        let mut tx = self.pool().begin().await?;
        // Its own statement: the numbering below then reads a snapshot taken after the previous
        // sequencer committed (READ COMMITTED takes one per statement). The wait is set in the
        // same statement, before the lock is asked for (a projection is evaluated left to right).
        sqlx::query("SELECT set_config('lock_timeout', $2, true), pg_advisory_xact_lock($1)::TEXT")
            .bind(SEQUENCER_LOCK)
            .bind(lock_wait.to_string())
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(
            "WITH pending AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM changes WHERE seq IS NULL), \
                  top AS (SELECT COALESCE(MAX(seq), 0) AS seq FROM changes) \
             UPDATE changes SET seq = top.seq + pending.n FROM pending, top WHERE changes.id = pending.id \
             RETURNING changes.seq, changes.kind, changes.workers",
        )
        .fetch_all(&mut *tx)
        .await?;
        if !rows.is_empty() {
            // Delivered at commit: other servers' pollers read the log now instead of at their next tick.
            sqlx::query("SELECT pg_notify($1, '')").bind(CHANGES_CHANNEL).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        let mut numbered: Vec<(i64, String, String)> = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        numbered.sort_by_key(|(seq, _, _)| *seq);
        for (seq, kind, workers) in &numbered {
            self.notifier.committed(kind, *seq, &parse_workers(workers));
        }
        Ok(numbered.len())
    }

    /// Changes of `kind` after `since`, oldest first, at most `limit`; with `worker`, only those
    /// that concern that worker (and those written before changes named their workers).
    pub async fn changes_since(
        &self,
        kind: &str,
        since: i64,
        limit: i64,
        worker: Option<i64>,
    ) -> DbResult<Vec<Change>> {
        let rows = match worker {
            None => {
                sqlx::query("SELECT seq, event, data FROM changes WHERE kind = $1 AND seq > $2 ORDER BY seq LIMIT $3")
                    .bind(kind.to_string())
                    .bind(since)
                    .bind(limit)
                    .fetch_all(self.pool())
                    .await?
            }
            Some(w) => {
                sqlx::query(
                    "SELECT seq, event, data FROM changes WHERE kind = $1 AND seq > $2 \
                     AND (workers = '' OR workers LIKE $3) ORDER BY seq LIMIT $4",
                )
                .bind(kind.to_string())
                .bind(since)
                .bind(format!("%,{w},%"))
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter()
            .map(|row| {
                let seq: i64 = row.try_get(0)?;
                let event: String = row.try_get(1)?;
                Ok(Change {
                    seq,
                    event: EventType::parse(&event).ok_or_else(|| DbError::Corrupt {
                        kind: "change",
                        id: seq,
                        message: format!("unknown event {event:?}"),
                    })?,
                    data: row.try_get(2)?,
                })
            })
            .collect()
    }

    /// Who each numbered change after `since` concerns (kind and workers), oldest first, at most
    /// `limit`: what the poller reads to wake this process for other servers' commits.
    pub async fn change_heads_since(&self, since: i64, limit: i64) -> DbResult<Vec<ForeignChange>> {
        let rows = sqlx::query("SELECT seq, kind, workers FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(since)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                let workers: String = r.try_get(2)?;
                Ok(ForeignChange { seq: r.try_get(0)?, kind: r.try_get(1)?, workers: parse_workers(&workers) })
            })
            .collect()
    }

    /// The newest change number (0 when the log is empty).
    pub async fn newest_change(&self) -> DbResult<i64> {
        let row = sqlx::query("SELECT MAX(seq) FROM changes").fetch_one(self.pool()).await?;
        Ok(row.try_get::<Option<i64>, _>(0)?.unwrap_or(0))
    }

    /// The oldest retained change sequence number (None when the log is empty).
    pub async fn oldest_change(&self) -> DbResult<Option<i64>> {
        let row = sqlx::query("SELECT MIN(seq) FROM changes").fetch_one(self.pool()).await?;
        Ok(row.try_get::<Option<i64>, _>(0)?)
    }

    /// On PostgreSQL, where other servers commit too: whenever a server numbers changes (it
    /// notifies [`CHANGES_CHANNEL`], which this process listens to) and at least every
    /// [`EXTERNAL_POLL`], number stragglers and read the log's new entries once for the whole
    /// process, waking exactly who other servers' changes concern, until shutdown.
    pub fn spawn_external_poller(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        if self.dialect != Dialect::Postgres {
            return;
        }
        const BATCH: i64 = 10_000;
        let db = self.counted_apart();
        db.notifier.start_polling();
        let heard = Arc::new(tokio::sync::Notify::new());
        listen_for_changes(db.url.to_string(), heard.clone(), shutdown.clone());
        tokio::spawn(async move {
            // What came before is in every reader's snapshot already.
            let mut cursor = db.newest_change().await.unwrap_or(0);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(EXTERNAL_POLL) => {}
                    _ = heard.notified() => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                if let Err(e) = db.sequence_changes().await {
                    tracing::warn!(error = %e, "numbering committed changes failed");
                }
                match db.change_heads_since(cursor, BATCH).await {
                    Ok(heads) => {
                        if heads.len() as i64 == BATCH {
                            db.notifier.wake_all();
                        }
                        db.notifier.seen_in_log(&heads);
                        cursor = heads.last().map_or(cursor, |h| h.seq);
                    }
                    Err(e) => tracing::warn!(error = %e, "reading the change log failed"),
                }
            }
        });
    }

    /// Drops change-log entries beyond the newest `keep`, returning how many went.
    pub async fn prune_changes(&self, keep: i64) -> DbResult<u64> {
        let res = sqlx::query("DELETE FROM changes WHERE seq <= (SELECT MAX(seq) FROM changes) - $1")
            .bind(keep)
            .execute(self.pool())
            .await?;
        Ok(res.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_column_round_trips() {
        for workers in [vec![], vec![7], vec![1, 7, 12]] {
            assert_eq!(parse_workers(&workers_column(&workers)), workers, "{workers:?}");
        }
        assert_eq!(workers_column(&[3, 4]), ",3,4,");
        assert_eq!(workers_column(&[]), ",");
        assert_eq!(parse_workers(""), Vec::<i64>::new());
    }
}
