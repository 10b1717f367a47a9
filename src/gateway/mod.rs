//! The gateway: OpenAI-compatible routing of inference requests to running model instances.
//!
//! It never reads the database. The server builds a [`Snapshot`] of routes, targets and running
//! instances and [`Gateway::publish`]es it on every committed change; requests read the current
//! snapshot lock-free. Responses stream back chunk by chunk as they arrive, with no idle timeout;
//! usage is read on the way and handed to the server through a channel, in batches.

pub(crate) mod balance;
pub(crate) mod drain;
pub(crate) mod limits;
pub(crate) mod metrics;
pub(crate) mod openai;
pub mod prefix;
mod proxy;
pub mod snapshot;
pub(crate) mod usage;
pub(crate) mod wake;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub use snapshot::{Endpoint, Route, Snapshot, Target};
pub use usage::{Usage, UsageEvent};

/// How many finished requests may wait for the usage writer before new ones are dropped.
pub const USAGE_QUEUE: usize = 65_536;

/// Why the gateway could not serve a request. The server turns these into OpenAI-shaped errors
/// (`server::error`).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    BadRequest(String),
    #[error("model {0:?} not found")]
    UnknownModel(String),
    #[error("model route {0} not found")]
    UnknownRoute(i64),
    #[error("this API key may not use model {0:?}")]
    NotAllowed(String),
    #[error("model {0:?} does not serve the generic proxy (its route's generic_proxy is false)")]
    ProxyDisabled(String),
    #[error("rate limit reached for this API key; retry after {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("no running instance of model {0:?}")]
    NoInstance(String),
    #[error("the model's instances could not be reached: {0}")]
    Upstream(String),
    #[error("the model's instance did not answer within the route's timeout of {0} s")]
    Timeout(u64),
    #[error("model {model:?} is waking up and holds as many requests as it may; retry after {retry_after} s")]
    WakeQueueFull { model: String, retry_after: u64 },
    #[error("model {model:?} did not wake within {waited} s; retry after {retry_after} s")]
    WakeTimeout { model: String, waited: u64, retry_after: u64 },
}

/// Who is calling, as far as the gateway cares (the server authenticates).
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub user_id: i64,
    /// 0 when the call came with a session.
    pub api_key_id: i64,
    /// `None`: every model.
    pub allowed_model_names: Option<Vec<String>>,
    pub rpm_limit: Option<u32>,
    pub tpm_limit: Option<u64>,
}

impl Caller {
    pub fn may_use(&self, route: &str) -> bool {
        self.allowed_model_names.as_ref().is_none_or(|names| names.iter().any(|n| n.eq_ignore_ascii_case(route)))
    }
}

pub(crate) struct Shared {
    snapshot: ArcSwap<Snapshot>,
    pub balancer: balance::Balancer,
    client: Client<HttpConnector, Body>,
    pub limiter: limits::RateLimiter,
    pub metrics: metrics::Metrics,
    /// Draining instances withdrawn here, and what the other servers share about theirs.
    pub drains: drain::Drains,
    /// Requests held for sleeping (autoscaled) routes until they wake.
    pub wakes: wake::Wakes,
    pub usage_tx: tokio::sync::mpsc::Sender<UsageEvent>,
}

/// The gateway; cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

impl Gateway {
    /// What this server's limiter counted per key, to share with other servers.
    pub fn rate_counted_here(&self) -> Vec<(i64, limits::Counted)> {
        self.shared.limiter.counted_here()
    }

    /// What other servers counted per key; the limiter adds it to its own counts.
    pub fn set_rate_counted_elsewhere(&self, others: std::collections::HashMap<i64, limits::Counted>) {
        self.shared.limiter.set_others(others);
    }

    /// A gateway with an empty snapshot, and the receiving end of its usage events.
    pub fn new() -> Result<(Gateway, tokio::sync::mpsc::Receiver<UsageEvent>), prometheus::Error> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(connector);
        let (usage_tx, usage_rx) = tokio::sync::mpsc::channel(USAGE_QUEUE);
        let shared = Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            balancer: balance::Balancer::default(),
            client,
            limiter: limits::RateLimiter::default(),
            metrics: metrics::Metrics::new()?,
            drains: drain::Drains::default(),
            wakes: wake::Wakes::default(),
            usage_tx,
        };
        Ok((Gateway { shared: Arc::new(shared) }, usage_rx))
    }

    /// Replaces the routing snapshot; requests in flight keep the one they started with.
    pub fn publish(&self, snapshot: Snapshot) {
        let live = snapshot.routes().iter().flat_map(|r| r.targets.iter()).flat_map(|t| t.instances.iter());
        let live = live.map(|e| e.instance_id).collect();
        self.shared.balancer.retain(&live);
        // Withdrawn before the new snapshot is seen: no request picks a draining instance after this.
        self.shared.drains.set_withdrawn(snapshot.draining(), &live, std::time::Instant::now());
        self.shared.snapshot.store(Arc::new(snapshot));
        self.shared.wakes.published();
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// Outstanding requests on an instance (for tests and metrics).
    pub fn outstanding(&self, instance_id: i64) -> usize {
        self.shared.balancer.instance(instance_id).outstanding()
    }

    /// The gateway's metrics in Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let mut out = self.shared.metrics.render();
        out.push_str(&self.render_in_flight());
        out.push_str(&self.render_autoscaler());
        out
    }

    /// Requests in flight here per instance: every instance of the snapshot and every withdrawn
    /// one (for metrics and the shares; zeros included).
    pub fn in_flight_here(&self) -> std::collections::BTreeMap<i64, u64> {
        let snapshot = self.snapshot();
        let routed = snapshot.routes().iter().flat_map(|r| r.targets.iter()).flat_map(|t| t.instances.iter());
        let ids = routed.map(|e| e.instance_id).chain(self.shared.drains.settled_ids(std::time::Instant::now()));
        let ids = ids.chain(snapshot.draining().iter().copied());
        ids.map(|id| (id, self.shared.balancer.instance(id).outstanding() as u64)).collect()
    }

    /// What this server shares with the others about draining (`server::rate_share`).
    pub fn drain_share(&self) -> drain::Share {
        let mut in_flight = self.in_flight_here();
        in_flight.retain(|_, n| *n > 0);
        let withdrawn = self.shared.drains.settled_ids(std::time::Instant::now());
        drain::Share { in_flight, withdrawn, queued: self.shared.wakes.queued_here() }
    }

    /// The other servers' shares, read just now.
    pub fn set_drain_shares_elsewhere(&self, shares: Vec<drain::Share>) {
        self.shared.drains.set_elsewhere(shares, std::time::Instant::now());
    }

    /// Other servers route too (PostgreSQL): their shares are read and drains wait for them.
    pub fn expect_drain_shares(&self) {
        self.shared.drains.expect_shares();
    }

    /// Every gateway's word on instance `id`, draining for `drained_for`, this server's first:
    /// whether it withdrew it (for [`drain::SETTLE`]) and how many requests are in flight on it
    /// there. Other servers not heard from since the drain began count as still routing.
    pub fn drain_views(&self, id: i64, drained_for: std::time::Duration) -> Vec<drain::View> {
        let now = std::time::Instant::now();
        let here = if self.shared.drains.settled(id, now) {
            drain::View::InFlight(self.shared.balancer.instance(id).outstanding() as u64)
        } else {
            drain::View::Routing
        };
        let others = match self.shared.drains.elsewhere_for(now, drained_for) {
            Some(shares) => shares.iter().map(|s| s.view(id)).collect(),
            None => vec![drain::View::Routing],
        };
        std::iter::once(here).chain(others).collect()
    }

    /// Requests in flight on instance `id` across servers (this one, and the others' fresh shares).
    pub fn in_flight_everywhere(&self, id: i64) -> u64 {
        let here = self.shared.balancer.instance(id).outstanding() as u64;
        let elsewhere = self.shared.drains.elsewhere(std::time::Instant::now());
        here + elsewhere.iter().map(|s| s.in_flight.get(&id).copied().unwrap_or(0)).sum::<u64>()
    }

    /// Requests held for deployment `model` in wake queues across servers (this one, and the
    /// others' fresh shares).
    pub fn queued_everywhere(&self, model: i64) -> u64 {
        let here = self.shared.wakes.queued_here().get(&model).copied().unwrap_or(0);
        let elsewhere = self.shared.drains.elsewhere(std::time::Instant::now());
        here + elsewhere.iter().map(|s| s.queued.get(&model).copied().unwrap_or(0)).sum::<u64>()
    }

    /// `ferrostack_instance_in_flight{instance_id}`: requests in flight per instance on this server.
    fn render_in_flight(&self) -> String {
        let mut out = String::from(
            "# HELP ferrostack_instance_in_flight Requests in flight per model instance on this server's gateway\n\
             # TYPE ferrostack_instance_in_flight gauge\n",
        );
        for (id, n) in self.in_flight_here() {
            out.push_str(&format!("ferrostack_instance_in_flight{{instance_id=\"{id}\"}} {n}\n"));
        }
        out
    }
}
