//! Tables: each list's filters select in SQL what their row test passes, and parse as before.

use super::*;
use crate::db::{instance_columns, target_columns};

/// Whether SQL equality filters select a row with these extra columns (NULL equals nothing).
fn sql_selects(filters: &[(&'static str, Val)], columns: &[(&'static str, Val)]) -> bool {
    let int = |v: &Val| match v {
        Val::Int(i) => Some(*i),
        Val::OptInt(i) => *i,
        _ => None,
    };
    filters.iter().all(|(col, want)| {
        let have = columns.iter().find(|(c, _)| c == col).map(|(_, v)| v);
        match (want, have) {
            (Val::Text(w), Some(Val::Text(h))) => w == h,
            (w, Some(h)) => int(w).is_some() && int(w) == int(h),
            (_, None) => panic!("no column {col}"),
        }
    })
}

fn record<T: DeserializeOwned>(id: i64, spec: serde_json::Value) -> Record<T> {
    let mut value = serde_json::json!({
        "id": id, "version": 1,
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
    });
    if let (Some(obj), Some(fields)) = (value.as_object_mut(), spec.as_object()) {
        obj.extend(fields.clone());
    }
    serde_json::from_value(value).expect("a valid row")
}

/// Query parameters as a table row writes them.
type Query = &'static [(&'static str, &'static str)];

fn raw(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn instance(id: i64, model_id: i64, worker_id: i64, subordinates: &[i64], state: &str) -> Record<ModelInstanceSpec> {
    let subs: Vec<_> = subordinates.iter().map(|w| serde_json::json!({"worker_id": w})).collect();
    record(
        id,
        serde_json::json!({
            "name": format!("i{id}"), "model_id": model_id, "model_name": "m", "model_path": "/m",
            "backend": "llama.cpp", "worker_id": worker_id, "state": state,
            "distributed_servers": {"subordinate_workers": subs},
        }),
    )
}

#[test]
fn instance_filters_agree_with_sql() {
    let rows = [
        instance(1, 10, 1, &[], "running"),
        instance(2, 10, 2, &[1], "running"),
        instance(3, 11, 2, &[], "pending"),
        instance(4, 11, 3, &[2, 1], "error"),
    ];
    let cases: &[(Query, &[i64])] = &[
        (&[], &[1, 2, 3, 4]),
        // A worker's instances include those it runs a part of.
        (&[("worker_id", "1")], &[1, 2, 4]),
        (&[("worker_id", "2")], &[2, 3, 4]),
        (&[("worker_id", "9")], &[]),
        (&[("model_id", "10")], &[1, 2]),
        (&[("state", "running")], &[1, 2]),
        (&[("model_id", "11"), ("state", "error")], &[4]),
        (&[("worker_id", "2"), ("model_id", "11")], &[3, 4]),
    ];
    for (query, want) in cases {
        let (_, f) = parse::<InstanceFilters>(&raw(query)).expect("valid");
        let matched: Vec<i64> = rows.iter().filter(|r| f.matches(r)).map(|r| r.id).collect();
        assert_eq!(&matched, want, "{query:?}");
        let selected: Vec<i64> =
            rows.iter().filter(|r| sql_selects(&f.sql(), &instance_columns(&r.spec))).map(|r| r.id).collect();
        if f.sql_is_exact() {
            assert_eq!(selected, matched, "{query:?}: SQL selects the matching rows");
        } else {
            assert!(matched.iter().all(|id| selected.contains(id)), "{query:?}: SQL selects a superset");
        }
    }
}

#[test]
fn route_target_filters_agree_with_sql() {
    let target = |id: i64, route_id: i64| -> Record<ModelRouteTargetSpec> {
        record(id, serde_json::json!({"name": format!("t{id}"), "route_id": route_id, "route_name": "r"}))
    };
    let rows = [target(1, 5), target(2, 6), target(3, 5)];
    let cases: &[(Query, &[i64])] = &[
        (&[], &[1, 2, 3]),
        (&[("route_id", "5")], &[1, 3]),
        (&[("route_id", " 6 ")], &[2]),
        (&[("route_id", "7")], &[]),
    ];
    for (query, want) in cases {
        let (_, f) = parse::<RouteTargetFilters>(&raw(query)).expect("valid");
        assert!(f.sql_is_exact());
        let matched: Vec<i64> = rows.iter().filter(|r| f.matches(r)).map(|r| r.id).collect();
        let selected: Vec<i64> =
            rows.iter().filter(|r| sql_selects(&f.sql(), &target_columns(&r.spec))).map(|r| r.id).collect();
        assert_eq!(&matched, want, "{query:?}");
        assert_eq!(selected, matched, "{query:?}");
    }
}

#[test]
fn api_key_filters_agree_with_sql() {
    let key = |id: i64, user_id: i64| -> Record<ApiKeySpec> {
        record(
            id,
            serde_json::json!({"name": "k", "user_id": user_id, "access_key": "a", "masked_value": "m", "scope": []}),
        )
    };
    let rows = [key(1, 1), key(2, 2), key(3, 1)];
    for (user_id, want) in [(1, vec![1, 3]), (2, vec![2]), (3, vec![])] {
        let f = ApiKeyFilters { since: None, user_id };
        let matched: Vec<i64> = rows.iter().filter(|r| f.matches(r)).map(|r| r.id).collect();
        let selected: Vec<i64> = rows
            .iter()
            .filter(|r| sql_selects(&f.sql(), &[("user_id", Val::Int(r.spec.user_id))]))
            .map(|r| r.id)
            .collect();
        assert_eq!(matched, want);
        assert_eq!(selected, matched);
    }
}

#[test]
fn since_and_worker_filters_pass_every_row_they_may_see() {
    let rows = [instance(1, 10, 1, &[], "running"), instance(2, 11, 2, &[], "error")];
    let (_, f) = parse::<Since>(&raw(&[("since", "4")])).expect("valid");
    assert_eq!(f.since, Some(4));
    assert!(ListFilters::<ModelInstanceSpec>::sql(&f).is_empty());
    assert!(rows.iter().all(|r| f.matches(r)));
    let admin = WorkerFilters { since: None, admin: true };
    assert!(admin.sql().is_empty() && admin.sql_is_exact());
    let user = WorkerFilters { since: None, admin: false };
    assert!(!user.sql_is_exact(), "a regular user's rows are filtered after SQL: to none");
}

#[test]
fn gpu_device_filters_parse_and_match() {
    let (_, f) = parse::<GpuDeviceFilters>(&raw(&[("cluster_id", "2"), ("worker_id", "7")])).expect("valid");
    assert_eq!((f.cluster_id, f.worker_id), (Some(2), Some(7)));
    assert_eq!(param_names::<GpuDeviceFilters>(), vec!["cluster_id", "worker_id"]);
}

#[test]
fn bad_values_and_unknown_parameters_name_the_field() {
    let cases: &[(Query, &str, &str)] = &[
        (&[("worker_id", "x")], "worker_id", "worker_id: must be an integer, got \"x\""),
        (&[("model_id", "1.5")], "model_id", "model_id: must be an integer, got \"1.5\""),
        (&[("state", "sleeping")], "state", "state: unknown instance state \"sleeping\""),
        (&[("since", "later")], "since", "since: must be an integer, got \"later\""),
        (&[("route_id", "1")], "route_id", "route_id: unknown query parameter"),
        (&[("page", "0")], "page", "page: must be -1 (all) or an integer >= 1, got \"0\""),
    ];
    for (query, field, message) in cases {
        let err = parse::<InstanceFilters>(&raw(query)).expect_err("must fail");
        assert_eq!(err.field.as_deref(), Some(*field), "{query:?}");
        assert_eq!(err.message, *message, "{query:?}");
        assert_eq!(err.code.status().as_u16(), 400);
    }
    let err = parse::<GpuDeviceFilters>(&raw(&[("since", "1")])).expect_err("gpu-devices take no since");
    assert_eq!(err.field.as_deref(), Some("since"));
}
