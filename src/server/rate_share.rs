//! API-key rate limits across servers (PostgreSQL): every second each server writes what its
//! gateway counted per key in the last 60 s (one statement) and reads what the others counted, which
//! its limiter adds to its own. A key's limit holds across servers to within what the others
//! admitted since their last share (about one second of traffic).
//!
//! The same round shares what draining needs (`gateway::drain`): requests in flight per instance
//! and the draining instances this server's gateway has withdrawn; the leader stops a draining
//! instance once every fresh share says it is withdrawn and idle.

use std::collections::HashMap;
use std::time::Duration;

use crate::db::Db;
use crate::gateway::Gateway;
use crate::gateway::limits::Counted;

/// How often counts are shared and read.
pub const SHARE_EVERY: Duration = Duration::from_secs(1);
/// A share older than this no longer counts (its server stopped sharing).
const FRESH_MS: i64 = 5_000;
/// Shares older than this are removed.
const PRUNE_MS: i64 = 120_000;

/// One round: share ours, take in theirs.
pub async fn share_once(db: &Db, gateway: &Gateway, server: &str) -> crate::db::DbResult<()> {
    let here: Vec<(i64, u64, u64)> =
        gateway.rate_counted_here().into_iter().map(|(key, c)| (key, c.requests, c.tokens)).collect();
    db.share_rate_counts(server, &here).await?;
    let others: HashMap<i64, Counted> = db
        .others_rate_counts(server, FRESH_MS)
        .await?
        .into_iter()
        .map(|(key, requests, tokens)| (key, Counted { requests, tokens }))
        .collect();
    gateway.set_rate_counted_elsewhere(others);
    share_drains(db, gateway, server).await
}

/// Shares this gateway's in-flight counts and withdrawn instances; takes in the others'.
async fn share_drains(db: &Db, gateway: &Gateway, server: &str) -> crate::db::DbResult<()> {
    let here = serde_json::to_string(&gateway.drain_share()).unwrap_or_default();
    db.share_gateway(server, &here).await?;
    let fresh_ms = crate::gateway::drain::SHARE_FRESH.as_millis() as i64;
    let others = db.others_gateway_shares(server, fresh_ms).await?;
    let shares = others.iter().filter_map(|data| serde_json::from_str(data).ok()).collect();
    gateway.set_drain_shares_elsewhere(shares);
    Ok(())
}

/// Shares every `SHARE_EVERY` until shutdown.
pub fn spawn(db: Db, gateway: Gateway, server: String, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    gateway.expect_drain_shares();
    tokio::spawn(async move {
        for round in 0u64.. {
            if let Err(e) = share_once(&db, &gateway, &server).await {
                tracing::warn!(error = %e, "cannot share rate-limit counts with the other servers");
            }
            if round % 60 == 0
                && let Err(e) = db.prune_rate_counts(PRUNE_MS).await
            {
                tracing::warn!(error = %e, "cannot prune old rate-limit shares");
            }
            tokio::select! {
                _ = tokio::time::sleep(SHARE_EVERY) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    });
}
