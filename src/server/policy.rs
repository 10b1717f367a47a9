//! Who may call which `/v2` route: one table, route × role → allow, own rows, or deny, applied by
//! the management middleware before any handler runs. Roles as GPUStack 2.3 has them: an admin
//! manages everything; a regular user sees only what is theirs (API keys, usage, the models they
//! may call, themselves); a worker reads and reports what is placed on it; a cluster registration
//! token registers a new worker and reads nothing. A route missing from the table is denied to
//! all, and `tests/it/policy.rs` fails for every route of the OpenAPI document without a row.

use axum::http::Method;

/// What one role may do on one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The handler runs.
    Allow,
    /// The handler runs and answers with the caller's own rows only (it checks ownership).
    Own,
    /// 403 before the handler runs.
    Deny,
}

/// The roles a `/v2` caller can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    User,
    Worker,
    Registrant,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "an administrator",
            Role::User => "a regular user",
            Role::Worker => "a worker credential",
            Role::Registrant => "a cluster registration token",
        }
    }
}

/// One row: method, path as routed (`{id}` for parameters), then admin, user, worker, registrant.
pub type Rule = (&'static str, &'static str, [Access; 4]);

use Access::{Allow as A, Deny as D, Own as O};

/// The table. Admins are denied only what belongs to workers (their status and heartbeats) and
/// to registrants. A regular user may list what a deploy form needs (backends, clusters), as in
/// GPUStack 2.3; the worker and GPU lists answer them an empty list (`Own`: they own no machine).
pub const POLICY: &[Rule] = &[
    ("GET", "/v2/users", [A, D, D, D]),
    ("POST", "/v2/users", [A, D, D, D]),
    ("GET", "/v2/users/me", [A, A, D, D]),
    ("PUT", "/v2/users/me", [A, A, D, D]),
    ("GET", "/v2/users/{id}", [A, D, D, D]),
    ("PUT", "/v2/users/{id}", [A, D, D, D]),
    ("DELETE", "/v2/users/{id}", [A, D, D, D]),
    ("GET", "/v2/api-keys", [O, O, D, D]),
    ("POST", "/v2/api-keys", [A, A, D, D]),
    ("GET", "/v2/api-keys/{id}", [A, O, D, D]),
    ("PUT", "/v2/api-keys/{id}", [A, O, D, D]),
    ("DELETE", "/v2/api-keys/{id}", [A, O, D, D]),
    ("GET", "/v2/usage", [A, O, D, D]),
    ("DELETE", "/v2/login-throttle", [A, D, D, D]),
    ("GET", "/v2/dashboard", [A, D, D, D]),
    ("GET", "/v2/my-models", [A, A, D, D]),
    ("GET", "/v2/my-models/{id}", [A, A, D, D]),
    ("GET", "/v2/clusters", [A, A, D, D]),
    ("POST", "/v2/clusters", [A, D, D, D]),
    ("GET", "/v2/clusters/{id}", [A, D, D, D]),
    ("PUT", "/v2/clusters/{id}", [A, D, D, D]),
    ("DELETE", "/v2/clusters/{id}", [A, D, D, D]),
    ("POST", "/v2/clusters/{id}/registration-token", [A, D, D, D]),
    ("GET", "/v2/clusters/{id}/registration-token", [A, D, D, D]),
    ("GET", "/v2/inference-backends", [A, A, D, D]),
    ("POST", "/v2/inference-backends", [A, D, D, D]),
    ("GET", "/v2/inference-backends/all", [A, A, D, D]),
    ("GET", "/v2/inference-backends/list", [A, A, D, D]),
    ("GET", "/v2/inference-backends/backend_name/{backend_name}", [A, D, A, D]),
    ("POST", "/v2/inference-backends/from-yaml", [A, D, D, D]),
    ("GET", "/v2/inference-backends/{id}", [A, D, D, D]),
    ("PUT", "/v2/inference-backends/{id}", [A, D, D, D]),
    ("DELETE", "/v2/inference-backends/{id}", [A, D, D, D]),
    ("POST", "/v2/inference-backends/{id}/enable", [A, D, D, D]),
    ("POST", "/v2/inference-backends/{id}/disable", [A, D, D, D]),
    ("PUT", "/v2/inference-backends/{id}/from-yaml", [A, D, D, D]),
    ("GET", "/v2/inference-backends/{id}/yaml", [A, D, D, D]),
    ("GET", "/v2/workers", [A, O, D, D]),
    ("POST", "/v2/workers", [D, D, D, A]),
    ("GET", "/v2/workers/{id}", [A, D, O, D]),
    ("PUT", "/v2/workers/{id}", [A, D, D, D]),
    ("DELETE", "/v2/workers/{id}", [A, D, D, D]),
    ("PUT", "/v2/workers/{id}/status", [D, D, O, D]),
    ("POST", "/v2/workers/{id}/heartbeat", [D, D, O, D]),
    ("PUT", "/v2/workers/{id}/shutdown", [D, D, O, D]),
    ("POST", "/v2/workers/labels", [A, D, D, D]),
    ("GET", "/v2/gpu-devices", [A, O, D, D]),
    ("GET", "/v2/gpu-devices/{id}", [A, D, D, D]),
    ("GET", "/v2/models", [A, D, D, D]),
    ("POST", "/v2/models", [A, D, D, D]),
    ("GET", "/v2/models/{id}", [A, D, D, D]),
    ("PUT", "/v2/models/{id}", [A, D, D, D]),
    ("DELETE", "/v2/models/{id}", [A, D, D, D]),
    ("GET", "/v2/models/{id}/instances", [A, D, D, D]),
    ("POST", "/v2/models/{id}/restart", [A, D, D, D]),
    ("POST", "/v2/model-evaluations", [A, D, D, D]),
    ("GET", "/v2/model-instances", [A, D, O, D]),
    ("POST", "/v2/model-instances", [A, D, D, D]),
    ("GET", "/v2/model-instances/{id}", [A, D, O, D]),
    ("DELETE", "/v2/model-instances/{id}", [A, D, D, D]),
    ("GET", "/v2/model-instances/{id}/logs", [A, D, D, D]),
    ("PUT", "/v2/model-instances/{id}/status", [D, D, O, D]),
    ("PUT", "/v2/model-instances/{id}/subordinate-status", [D, D, O, D]),
    ("GET", "/v2/model-routes", [A, D, D, D]),
    ("POST", "/v2/model-routes", [A, D, D, D]),
    ("GET", "/v2/model-routes/{id}", [A, D, D, D]),
    ("PUT", "/v2/model-routes/{id}", [A, D, D, D]),
    ("DELETE", "/v2/model-routes/{id}", [A, D, D, D]),
    ("GET", "/v2/model-route-targets", [A, D, D, D]),
    ("POST", "/v2/model-route-targets", [A, D, D, D]),
    ("GET", "/v2/model-route-targets/{id}", [A, D, D, D]),
    ("PUT", "/v2/model-route-targets/{id}", [A, D, D, D]),
    ("DELETE", "/v2/model-route-targets/{id}", [A, D, D, D]),
];

/// What `role` may do on `method path` (`path` as routed, with `{…}` parameters). Unknown routes
/// are denied.
pub fn access(method: &Method, path: &str, role: Role) -> Access {
    let column = match role {
        Role::Admin => 0,
        Role::User => 1,
        Role::Worker => 2,
        Role::Registrant => 3,
    };
    POLICY.iter().find(|(m, p, _)| *m == method.as_str() && *p == path).map_or(Access::Deny, |(_, _, row)| row[column])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_and_unknown_routes() {
        let cases = [
            (Method::GET, "/v2/models", Role::Admin, Access::Allow),
            (Method::GET, "/v2/models", Role::User, Access::Deny),
            (Method::GET, "/v2/api-keys", Role::User, Access::Own),
            (Method::GET, "/v2/inference-backends", Role::User, Access::Allow),
            (Method::GET, "/v2/inference-backends/all", Role::User, Access::Allow),
            (Method::GET, "/v2/clusters", Role::User, Access::Allow),
            (Method::GET, "/v2/clusters/{id}", Role::User, Access::Deny),
            (Method::GET, "/v2/workers", Role::User, Access::Own),
            (Method::GET, "/v2/gpu-devices", Role::User, Access::Own),
            (Method::GET, "/v2/gpu-devices/{id}", Role::User, Access::Deny),
            (Method::POST, "/v2/inference-backends", Role::User, Access::Deny),
            (Method::POST, "/v2/workers", Role::Registrant, Access::Allow),
            (Method::POST, "/v2/workers", Role::Admin, Access::Deny),
            (Method::GET, "/v2/model-instances/{id}", Role::Registrant, Access::Deny),
            (Method::GET, "/v2/model-instances/{id}", Role::Worker, Access::Own),
            (Method::GET, "/v2/nothing", Role::Admin, Access::Deny),
            (Method::PATCH, "/v2/models/{id}", Role::Admin, Access::Deny),
        ];
        for (method, path, role, want) in cases {
            assert_eq!(access(&method, path, role), want, "{method} {path} {role:?}");
        }
    }

    #[test]
    fn one_row_per_route() {
        let mut seen = std::collections::BTreeSet::new();
        for (m, p, _) in POLICY {
            assert!(seen.insert((*m, *p)), "{m} {p} twice");
        }
    }
}
