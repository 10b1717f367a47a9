//! Leadership of the control loops. Every server tries to hold the `control` lease in the
//! database; the one that holds it runs the scheduler, the model controller and the worker monitor,
//! writing through a handle fenced by the lease's token (`db::lease`). A follower takes over within
//! `TTL + TRY_EVERY` of the leader's last renewal; a leader that cannot renew stops leading before
//! its lease can expire in the database. On SQLite the one server leads.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::db::Db;
use crate::db::lease::{CONTROL, Fence};

/// How long a lease lasts without renewal.
pub const TTL: Duration = Duration::from_secs(6);
/// How often the leader renews and followers try to take over.
pub const TRY_EVERY: Duration = Duration::from_millis(1500);
/// How long one try to take or renew the lease may take.
const ATTEMPT: Duration = Duration::from_secs(3);
/// A leader stops acting this long before its lease would expire (the database's clock and ours
/// may drift by a little while a renewal is in flight).
const MARGIN: Duration = Duration::from_secs(1);

/// What this server knows of leadership, as `/healthz` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LeaderView {
    /// This server's id in the lease.
    pub server: String,
    /// Whether this server leads now.
    pub leading: bool,
    /// The leading server's id, as last read (None while nobody holds the lease).
    pub leader: Option<String>,
    /// The fencing token of the current leadership.
    pub token: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    token: i64,
    /// Until when this server may act on it.
    until: Instant,
}

/// This server's side of leadership; cheap to clone.
#[derive(Clone)]
pub struct Leadership {
    id: Arc<str>,
    held: watch::Sender<Option<Held>>,
    view: Arc<std::sync::Mutex<LeaderView>>,
}

impl Leadership {
    pub fn new(id: &str) -> Leadership {
        let view = LeaderView { server: id.to_string(), ..LeaderView::default() };
        Leadership { id: id.into(), held: watch::channel(None).0, view: Arc::new(std::sync::Mutex::new(view)) }
    }

    /// A server id unique to this process: host name (the kernel's, as the worker's default name;
    /// in a container or pod it is what `HOSTNAME` says), process id and a random suffix.
    pub fn process_id() -> String {
        let host = sysinfo::System::host_name()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "server".into());
        let suffix = crate::server::auth::random_token(3);
        format!("{host}-{}-{suffix}", std::process::id())
    }

    /// Leads for the life of the process, with no lease (SQLite: one server per database).
    pub fn lead_alone(&self) {
        let forever = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        self.held.send_replace(Some(Held { token: 0, until: forever }));
        if let Ok(mut view) = self.view.lock() {
            view.leader = Some(self.id.to_string());
            view.token = Some(0);
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The fence to write under while this server leads; None when it does not (or no longer may).
    pub fn fence(&self) -> Option<Fence> {
        let held = (*self.held.borrow())?;
        (Instant::now() < held.until).then(|| Fence { lease: CONTROL, holder: self.id.to_string(), token: held.token })
    }

    /// Waits until this server leads (or `shutdown`); returns its fence, None on shutdown.
    pub async fn lead(&self, shutdown: &mut watch::Receiver<bool>) -> Option<Fence> {
        let mut held = self.held.subscribe();
        loop {
            if let Some(fence) = self.fence() {
                return Some(fence);
            }
            tokio::select! {
                // A lease renewed just too late for `fence` is caught on the next try.
                _ = held.changed() => {}
                _ = tokio::time::sleep(TRY_EVERY) => {}
                _ = shutdown.wait_for(|s| *s) => return None,
            }
        }
    }

    pub fn view(&self) -> LeaderView {
        let mut view = self.view.lock().map(|v| v.clone()).unwrap_or_default();
        view.leading = self.fence().is_some();
        view
    }

    /// One try: takes or renews the lease, then records what it learned.
    pub async fn try_once(&self, db: &Db) {
        let started = Instant::now();
        let ttl_ms = i64::try_from(TTL.as_millis()).unwrap_or(i64::MAX);
        // A call on a link that went dead mid-statement would wait for TCP to give up (minutes):
        // it is given up after `ATTEMPT`, and tried again on the next turn.
        let Ok(attempt) = tokio::time::timeout(ATTEMPT, db.acquire_lease(CONTROL, &self.id, ttl_ms)).await else {
            tracing::warn!(seconds = ATTEMPT.as_secs(), "the database did not answer the control lease in time");
            return;
        };
        let held = match attempt {
            Ok(held) => held,
            Err(e) => {
                // Keep what is held until it runs out: `fence` stops at `until` on its own.
                tracing::warn!(error = %e, "cannot renew or take the control lease");
                return;
            }
        };
        let was = self.held.borrow().map(|h| h.token);
        let now = held.map(|token| Held { token, until: started + TTL - MARGIN });
        match (was, now) {
            (None, Some(h)) => tracing::info!(server = %self.id, token = h.token, "leading the control loops"),
            (Some(t), None) => tracing::warn!(server = %self.id, token = t, "another server leads now"),
            (Some(a), Some(h)) if a != h.token => tracing::info!(server = %self.id, token = h.token, "leading again"),
            _ => {}
        }
        let leader = match now {
            Some(_) => Some(self.id.to_string()),
            None => tokio::time::timeout(ATTEMPT, db.lease_holder(CONTROL))
                .await
                .ok()
                .and_then(|h| h.ok().flatten())
                .map(|h| h.holder),
        };
        if let Ok(mut view) = self.view.lock() {
            view.leader = leader;
            view.token = now.map(|h| h.token);
        }
        self.held.send_replace(now);
    }

    /// Tries every `TRY_EVERY` until shutdown, then gives the lease up for the next leader.
    pub fn spawn(&self, db: Db, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.try_once(&db).await;
                tokio::select! {
                    _ = tokio::time::sleep(TRY_EVERY) => {}
                    _ = shutdown.wait_for(|s| *s) => break,
                }
            }
            me.held.send_replace(None);
            if let Err(e) = db.release_lease(CONTROL, &me.id).await {
                tracing::warn!(error = %e, "cannot release the control lease; the next leader waits for it to expire");
            }
        })
    }
}
