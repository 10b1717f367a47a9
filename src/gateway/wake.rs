//! Scale from zero on the first request: a request for an autoscaled route with no ready
//! instance is held here, in a bounded queue per route, until a snapshot shows an instance
//! (then it is sent, streamed or not, as any other), or until the wait limit (503 with
//! `Retry-After`). Held requests count as demand for the route's autoscaled deployments: here
//! for the leader on this server (it is woken at once), and for the others through the shares
//! every server writes each second (`server::rate_share`, `gateway::drain::Share::queued`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::sync::Arc;

use super::{Gateway, GatewayError, Route};

/// `Retry-After` (seconds) on a full queue or a wait that ran out.
pub const RETRY_AFTER: u64 = 5;

/// The wake queues of one gateway.
#[derive(Debug)]
pub struct Wakes {
    size: AtomicUsize,
    wait_ms: AtomicU64,
    /// Requests held per route.
    per_route: Mutex<HashMap<i64, usize>>,
    /// Requests held per deployment (what the leader counts as demand).
    per_model: Mutex<BTreeMap<i64, u64>>,
    /// Bumped on every published snapshot: held requests look again.
    published: tokio::sync::watch::Sender<u64>,
    /// Wakes the autoscaler on this server when a request starts waiting.
    pub asked: tokio::sync::Notify,
    /// The autoscaler's last inputs and answer per deployment name (on the leader): demand,
    /// desired replicas, ready replicas; for `/metrics`.
    scaler: Mutex<BTreeMap<String, (u64, u32, u32)>>,
}

impl Default for Wakes {
    fn default() -> Self {
        Wakes {
            size: AtomicUsize::new(256),
            wait_ms: AtomicU64::new(600_000),
            per_route: Mutex::default(),
            per_model: Mutex::default(),
            published: tokio::sync::watch::channel(0).0,
            asked: tokio::sync::Notify::new(),
            scaler: Mutex::default(),
        }
    }
}

/// A place in a wake queue; dropping it gives the place back.
#[derive(Debug)]
pub struct Place<'a> {
    wakes: &'a Wakes,
    route: i64,
    models: Vec<i64>,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut routes = self.wakes.per_route.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = routes.get_mut(&self.route) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                routes.remove(&self.route);
            }
        }
        drop(routes);
        let mut models = self.wakes.per_model.lock().unwrap_or_else(|e| e.into_inner());
        for m in &self.models {
            if let Some(n) = models.get_mut(m) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    models.remove(m);
                }
            }
        }
    }
}

impl Wakes {
    /// Sets the queue size per route and the wait limit.
    pub fn set_limits(&self, size: usize, wait: Duration) {
        self.size.store(size, Ordering::Relaxed);
        self.wait_ms.store(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn wait(&self) -> Duration {
        Duration::from_millis(self.wait_ms.load(Ordering::Relaxed))
    }

    /// A place in `route`'s queue, counted as demand for `models`; `None` when the queue is full.
    pub fn enter(&self, route: i64, models: &[i64]) -> Option<Place<'_>> {
        let mut routes = self.per_route.lock().unwrap_or_else(|e| e.into_inner());
        let n = routes.entry(route).or_default();
        if *n >= self.size.load(Ordering::Relaxed) {
            return None;
        }
        *n += 1;
        drop(routes);
        let mut per_model = self.per_model.lock().unwrap_or_else(|e| e.into_inner());
        for m in models {
            *per_model.entry(*m).or_default() += 1;
        }
        drop(per_model);
        self.asked.notify_one();
        Some(Place { wakes: self, route, models: models.to_vec() })
    }

    /// Requests held here per deployment (non-zero only).
    pub fn queued_here(&self) -> BTreeMap<i64, u64> {
        self.per_model.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Requests held here for route `id`.
    #[cfg(test)]
    pub fn queued_for_route(&self, id: i64) -> usize {
        self.per_route.lock().unwrap_or_else(|e| e.into_inner()).get(&id).copied().unwrap_or(0)
    }

    /// A new snapshot was published.
    pub fn published(&self) {
        self.published.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl Gateway {
    /// Sets how many requests a sleeping route holds and how long each waits.
    pub fn set_wake_limits(&self, size: usize, wait: Duration) {
        self.shared.wakes.set_limits(size, wait);
    }

    /// Waits until `route` has a ready instance (held in its wake queue meanwhile) and returns it
    /// as the newest snapshot has it. A route that is not autoscaled answers `NoInstance` at once.
    pub(crate) async fn wait_for_instance(&self, route: Arc<Route>) -> Result<Arc<Route>, GatewayError> {
        let wakes = &self.shared.wakes;
        let models = self.snapshot().wakeable(route.id).to_vec();
        if models.is_empty() {
            return Err(GatewayError::NoInstance(route.name.clone()));
        }
        // Subscribed before the place is taken: a snapshot published in between is not missed.
        let mut published = wakes.published.subscribe();
        let Some(_place) = wakes.enter(route.id, &models) else {
            self.shared.metrics.error(&route.name, "wake_queue_full");
            return Err(GatewayError::WakeQueueFull { model: route.name.clone(), retry_after: RETRY_AFTER });
        };
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + wakes.wait();
        tracing::debug!(route = %route.name, "request held until the model wakes");
        loop {
            match self.snapshot().by_id(route.id) {
                Some(r) if r.ready() => {
                    tracing::debug!(route = %route.name, waited_ms = started.elapsed().as_millis() as u64,
                        "model awake; sending the held request");
                    return Ok(r.clone());
                }
                Some(_) => {}
                None => return Err(GatewayError::UnknownModel(route.name.clone())),
            }
            match tokio::time::timeout_at(deadline, published.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    self.shared.metrics.error(&route.name, "wake_timeout");
                    return Err(GatewayError::WakeTimeout {
                        model: route.name.clone(),
                        waited: started.elapsed().as_secs(),
                        retry_after: RETRY_AFTER,
                    });
                }
            }
        }
    }

    /// Requests in flight on `instances` and held for deployment `model`, here and on the other
    /// servers (their fresh shares): the demand the autoscaler scales deployment `model` by.
    pub fn demand(&self, model: i64, instances: &[i64]) -> u64 {
        let in_flight: u64 = instances.iter().map(|id| self.in_flight_everywhere(*id)).sum();
        in_flight + self.queued_everywhere(model)
    }

    /// Records what the autoscaler saw and chose for deployment `name` (for `/metrics`).
    pub fn set_scaler_view(&self, name: &str, demand: u64, desired: u32, ready: u32) {
        let mut map = self.shared.wakes.scaler.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(name.to_string(), (demand, desired, ready));
    }

    /// The autoscaler's gauges and the wake queues, in Prometheus text format.
    pub(crate) fn render_autoscaler(&self) -> String {
        let mut out = String::from(
            "# HELP ferrostack_autoscaler_demand Requests in flight or queued per autoscaled deployment, all servers (leader only)\n\
             # TYPE ferrostack_autoscaler_demand gauge\n",
        );
        let scaler = self.shared.wakes.scaler.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (name, (demand, _, _)) in &scaler {
            out.push_str(&format!("ferrostack_autoscaler_demand{{model=\"{}\"}} {demand}\n", escape(name)));
        }
        out.push_str(
            "# HELP ferrostack_autoscaler_desired_replicas Replicas the autoscaler chose (leader only)\n\
             # TYPE ferrostack_autoscaler_desired_replicas gauge\n",
        );
        for (name, (_, desired, _)) in &scaler {
            out.push_str(&format!("ferrostack_autoscaler_desired_replicas{{model=\"{}\"}} {desired}\n", escape(name)));
        }
        out.push_str(
            "# HELP ferrostack_autoscaler_ready_replicas Ready replicas the autoscaler saw (leader only)\n\
             # TYPE ferrostack_autoscaler_ready_replicas gauge\n",
        );
        for (name, (_, _, ready)) in &scaler {
            out.push_str(&format!("ferrostack_autoscaler_ready_replicas{{model=\"{}\"}} {ready}\n", escape(name)));
        }
        out.push_str(
            "# HELP ferrostack_wake_queued Requests held on this server until their deployment wakes\n\
             # TYPE ferrostack_wake_queued gauge\n",
        );
        for (model, n) in self.shared.wakes.queued_here() {
            out.push_str(&format!("ferrostack_wake_queued{{model_id=\"{model}\"}} {n}\n"));
        }
        out
    }

    /// Waits until a request starts waiting for a sleeping model here.
    pub async fn wake_asked(&self) {
        self.shared.wakes.asked.notified().await
    }
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_per_route_and_counted_per_deployment() {
        let w = Wakes::default();
        w.set_limits(2, Duration::from_secs(1));
        let a = w.enter(1, &[10, 11]).expect("first");
        let b = w.enter(1, &[10, 11]).expect("second");
        assert!(w.enter(1, &[10, 11]).is_none(), "the route's queue is full");
        let c = w.enter(2, &[10]).expect("another route has its own queue");
        assert_eq!(w.queued_here(), BTreeMap::from([(10, 3), (11, 2)]));
        assert_eq!(w.queued_for_route(1), 2);
        drop(a);
        assert!(w.enter(1, &[10, 11]).is_some(), "a place given back is free again");
        drop((b, c));
        assert!(w.queued_here().is_empty() && w.queued_for_route(1) == 0, "every place given back");
    }
}
