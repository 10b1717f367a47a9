//! The routing snapshot: every route the gateway can serve, its targets and their running
//! instances. Built by the server from the database and swapped in whole; never edited in place.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use crate::api::LoadBalancing;

/// One running instance a request can go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub instance_id: i64,
    /// `ip:port`
    pub addr: String,
    /// `Authorization` to present: `Bearer <the instance's engine key>` (the client's credentials
    /// never go upstream).
    pub auth: Option<axum::http::HeaderValue>,
}

/// A weighted target of a route (a deployment) with its running instances.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: String,
    pub weight: u32,
    /// The `model` sent upstream.
    pub served_name: String,
    /// Non-empty: a fallback target, used only when a primary answers one of these classes
    /// (`"4xx"`, `"5xx"`).
    pub fallback_status_codes: Vec<String>,
    /// Only instances that are `running` on a reachable worker.
    pub instances: Vec<Endpoint>,
}

impl Target {
    pub fn is_fallback(&self) -> bool {
        !self.fallback_status_codes.is_empty()
    }

    /// Whether this (fallback) target takes over a primary's answer with `status`.
    pub fn catches(&self, status: u16) -> bool {
        let class = format!("{}xx", status / 100);
        self.fallback_status_codes.iter().any(|c| c.eq_ignore_ascii_case(&class) || *c == status.to_string())
    }
}

/// A route: the public model name and where its requests go.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub id: i64,
    pub name: String,
    pub categories: Vec<String>,
    /// Unix seconds, for `/v1/models`.
    pub created: i64,
    /// How long to wait for the upstream's response headers; `None` = forever.
    pub timeout: Option<Duration>,
    /// Whether `/model/proxy/…` may reach this route (the route's `generic_proxy`).
    pub generic_proxy: bool,
    /// How requests spread over the instances of a target.
    pub load_balancing: LoadBalancing,
    pub targets: Vec<Target>,
}

impl Route {
    /// Whether any target has a running instance.
    pub fn ready(&self) -> bool {
        self.targets.iter().any(|t| !t.instances.is_empty())
    }
}

/// Every servable route, by case-insensitive name and by id.
#[derive(Debug, Default)]
pub struct Snapshot {
    routes: Vec<Arc<Route>>,
    by_name: HashMap<String, usize>,
    by_id: HashMap<i64, usize>,
    /// Instances that are draining: withdrawn from every route (see `gateway::drain`).
    draining: std::collections::HashSet<i64>,
    /// Per route: its autoscaled deployments, which a request wakes when none of its instances
    /// is ready (`gateway::wake`).
    wakeable: HashMap<i64, Vec<i64>>,
}

impl Snapshot {
    pub fn new(routes: Vec<Route>) -> Snapshot {
        let routes: Vec<Arc<Route>> = routes.into_iter().map(Arc::new).collect();
        let by_name = routes.iter().enumerate().map(|(i, r)| (r.name.to_lowercase(), i)).collect();
        let by_id = routes.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
        Snapshot { routes, by_name, by_id, draining: Default::default(), wakeable: Default::default() }
    }

    /// The snapshot with these instances draining: the gateway withdraws them when it publishes it.
    pub fn with_draining(mut self, ids: impl IntoIterator<Item = i64>) -> Snapshot {
        self.draining = ids.into_iter().collect();
        self
    }

    pub fn draining(&self) -> &std::collections::HashSet<i64> {
        &self.draining
    }

    /// The snapshot with these routes' autoscaled deployments (route id → deployment ids).
    pub fn with_wakeable(mut self, wakeable: HashMap<i64, Vec<i64>>) -> Snapshot {
        self.wakeable = wakeable;
        self
    }

    /// Route `id`'s autoscaled deployments: a request wakes them (empty: it cannot wait).
    pub fn wakeable(&self, id: i64) -> &[i64] {
        self.wakeable.get(&id).map(Vec::as_slice).unwrap_or_default()
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Route>> {
        let i = match self.by_name.get(name) {
            Some(i) => *i,
            None => *self.by_name.get(&name.to_lowercase())?,
        };
        self.routes.get(i)
    }

    pub fn by_id(&self, id: i64) -> Option<&Arc<Route>> {
        self.routes.get(*self.by_id.get(&id)?)
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_targets_catch_their_status_classes() {
        let t = Target {
            name: "t".into(),
            weight: 1,
            served_name: "m".into(),
            fallback_status_codes: vec!["5xx".into()],
            instances: vec![],
        };
        assert!(t.catches(503) && t.catches(500));
        assert!(!t.catches(429) && !t.catches(200));
    }

    #[test]
    fn names_are_found_case_insensitively() {
        let route = Route {
            id: 7,
            name: "Smol".into(),
            categories: vec![],
            created: 0,
            timeout: None,
            generic_proxy: true,
            load_balancing: LoadBalancing::default(),
            targets: vec![],
        };
        let s = Snapshot::new(vec![route]);
        assert_eq!(s.by_name("smol").map(|r| r.id), Some(7));
        assert_eq!(s.by_name("SMOL").map(|r| r.id), Some(7));
        assert_eq!(s.by_id(7).map(|r| r.name.as_str()), Some("Smol"));
        assert!(s.by_name("other").is_none() && s.by_id(8).is_none());
    }
}
