//! Tests of `apply`: per transition, the fields that change (with their new values) and, by
//! comparing the whole instance, that every other field stays; the draining guard; reading
//! transitions and earlier workers' bodies.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

use super::{ReportBody, apply};
use crate::api::{InstanceState, InstanceTransition, ModelInstanceSpec};

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).single().expect("time")
}

/// An instance with every field a report could touch set, and one subordinate part running.
fn stored(state: &str) -> ModelInstanceSpec {
    serde_json::from_value(json!({
        "name": "m-1", "model_name": "m", "model_path": "/models/m", "backend": "vllm",
        "state": state, "state_message": "before",
        "worker_id": 1, "port": 40000, "ports": [40000, 40001], "pid": 7, "container_id": null,
        "command": ["old", "argv"], "resolved_path": "/old/path",
        "download_progress": 0.5, "downloaded_bytes": 100,
        "restart_count": 2, "last_restart_time": t(1), "next_restart_time": t(2), "backoff_failures": 3,
        "distributed_servers": {"subordinate_workers": [
            {"worker_id": 2, "state": "running", "state_message": "fine", "pid": 9, "container_id": "c9"}
        ]},
    }))
    .expect("instance")
}

fn as_map(i: &ModelInstanceSpec) -> serde_json::Map<String, Value> {
    match serde_json::to_value(i).expect("json") {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// Applies `transition` to `stored(state)` and checks the result is the stored instance with
/// exactly `changes` laid over it.
fn check(state: &str, transition: InstanceTransition, changes: Value) {
    let before = stored(state);
    let mut after = before.clone();
    apply(&transition, &mut after);
    let mut want = as_map(&before);
    for (k, v) in changes.as_object().expect("changes") {
        assert!(want.contains_key(k), "{k} is no field of an instance");
        want.insert(k.clone(), v.clone());
    }
    assert_eq!(Value::Object(as_map(&after)), Value::Object(want), "{transition:?} on a {state} instance");
}

fn running() -> InstanceTransition {
    InstanceTransition::Running {
        ports: vec![41000, 41001],
        pid: None,
        container_id: Some("c1".into()),
        command: vec!["new".into()],
    }
}

fn failed() -> InstanceTransition {
    InstanceTransition::Error {
        message: "it crashed".into(),
        restart_count: 2,
        next_restart_time: None,
        backoff_failures: 4,
    }
}

/// The stored parts, each back to waiting for the main worker with no workload.
fn parts_reset() -> Value {
    let mut parts = as_map(&stored("running"))["distributed_servers"].clone();
    for part in parts["subordinate_workers"].as_array_mut().expect("parts") {
        part["state"] = json!("scheduled");
        part["state_message"] = json!(crate::api::WAITING_FOR_MAIN);
        part["pid"] = Value::Null;
        part["container_id"] = Value::Null;
    }
    parts
}

#[test]
fn each_transition_changes_exactly_its_fields() {
    let cases: Vec<(&str, InstanceTransition, Value)> = vec![
        (
            "initializing",
            InstanceTransition::Downloading { progress: 0.75, bytes: 300, restart_count: 3 },
            json!({"state": "downloading", "state_message": null, "download_progress": 0.75,
                   "downloaded_bytes": 300, "restart_count": 3}),
        ),
        (
            "error",
            InstanceTransition::Initializing {
                restart_count: 3,
                restarted_at: Some(t(9)),
                download_progress: Some(1.0),
            },
            json!({"state": "initializing", "state_message": null, "restart_count": 3, "last_restart_time": t(9),
                   "next_restart_time": null, "download_progress": 1.0, "ports": [],
                   "distributed_servers": parts_reset()}),
        ),
        (
            // A first start: no restart time, and a local model has no download progress.
            "scheduled",
            InstanceTransition::Initializing { restart_count: 2, restarted_at: None, download_progress: None },
            json!({"state": "initializing", "state_message": null, "next_restart_time": null,
                   "download_progress": null, "ports": [], "distributed_servers": parts_reset()}),
        ),
        (
            "initializing",
            InstanceTransition::Starting {
                ports: vec![41000],
                pid: Some(8),
                container_id: None,
                command: vec!["new".into(), "argv".into()],
                resolved_path: "/new/path".into(),
            },
            json!({"state": "starting", "state_message": null, "port": 41000, "ports": [41000], "pid": 8,
                   "container_id": null, "command": ["new", "argv"], "resolved_path": "/new/path"}),
        ),
        (
            "starting",
            running(),
            json!({"state": "running", "state_message": null, "port": 41000, "ports": [41000, 41001],
                   "pid": null, "container_id": "c1", "command": ["new"]}),
        ),
        (
            "running",
            failed(),
            json!({"state": "error", "state_message": "it crashed", "next_restart_time": null,
                   "backoff_failures": 4, "pid": null, "container_id": null, "ports": []}),
        ),
        (
            "running",
            InstanceTransition::Scheduled { message: "stopped with its worker".into() },
            json!({"state": "scheduled", "state_message": "stopped with its worker", "pid": null,
                   "container_id": null, "ports": []}),
        ),
    ];
    for (state, transition, changes) in cases {
        check(state, transition, changes);
    }
}

#[test]
fn a_draining_or_parked_instance_keeps_its_mark_unless_it_fails() {
    // A late `running` (sent before the instance was parked, retried after a 409) does not wake it.
    check(
        "parked",
        running(),
        json!({"port": 41000, "ports": [41000, 41001], "pid": null, "container_id": "c1", "command": ["new"]}),
    );
    check(
        "parked",
        failed(),
        json!({"state": "error", "state_message": "it crashed", "next_restart_time": null,
               "backoff_failures": 4, "pid": null, "container_id": null, "ports": []}),
    );
    // The worker may still say it runs (or stops with its worker): the state and its message stay,
    // what runs where is taken.
    check(
        "draining",
        running(),
        json!({"port": 41000, "ports": [41000, 41001], "pid": null, "container_id": "c1", "command": ["new"]}),
    );
    check(
        "draining",
        InstanceTransition::Scheduled { message: "stopped with its worker".into() },
        json!({"pid": null, "container_id": null, "ports": []}),
    );
    // Its failure ends the drain.
    check(
        "draining",
        failed(),
        json!({"state": "error", "state_message": "it crashed", "next_restart_time": null,
               "backoff_failures": 4, "pid": null, "container_id": null, "ports": []}),
    );
}

fn read(body: Value) -> Result<ReportBody, serde_json::Error> {
    serde_json::from_value(body)
}

#[test]
fn a_transition_reads_and_writes_with_its_state_as_tag() {
    let report = crate::api::InstanceStatusReport { version: 5, transition: running() };
    let wire = serde_json::to_value(&report).expect("json");
    assert_eq!(
        wire,
        json!({"state": "running", "version": 5, "ports": [41000, 41001], "pid": null, "container_id": "c1",
               "command": ["new"]})
    );
    assert_eq!(read(wire).expect("read"), ReportBody::Transition(report));
    // Optional fields may be left out.
    let body = read(json!({"state": "error", "version": 1, "message": "m", "restart_count": 0, "backoff_failures": 1}))
        .expect("read");
    let ReportBody::Transition(r) = body else { panic!("not a transition: {body:?}") };
    assert_eq!(r.transition.state(), InstanceState::Error);
}

#[test]
fn a_body_neither_shape_reads_is_refused_with_the_transitions_error() {
    let cases = [
        (json!({"state": "running", "version": 1, "ports": [1], "command": [], "colour": "red"}), "colour"),
        (json!({"state": "running", "version": 1, "ports": [1]}), "command"),
        (json!({"state": "sleeping", "version": 1}), "sleeping"),
        (json!({"state": "error", "version": 1, "message": "m", "restart_count": 0}), "backoff_failures"),
    ];
    for (body, named) in cases {
        let e = read(body.clone()).expect_err("refused").to_string();
        assert!(e.contains(named), "{body}: {e}");
    }
}

/// What workers before transitions sent: every field, nulls included.
fn legacy(state: &str, fields: Value) -> Value {
    let mut body = json!({
        "state": state, "state_message": null, "port": 40000, "ports": null, "pid": 7, "container_id": null,
        "command": null, "download_progress": 0.5, "downloaded_bytes": null, "resolved_path": null,
        "restart_count": 2, "last_restart_time": t(1), "next_restart_time": t(2), "backoff_failures": null,
        "version": 4,
    });
    for (k, v) in fields.as_object().expect("fields") {
        body[k] = v.clone();
    }
    body
}

#[test]
fn an_earlier_workers_body_reads_as_the_transition_its_state_names() {
    let stored = stored("starting");
    let cases: Vec<(Value, InstanceTransition)> = vec![
        (
            legacy("downloading", json!({"download_progress": 0.25, "downloaded_bytes": 50, "restart_count": 3})),
            InstanceTransition::Downloading { progress: 0.25, bytes: 50, restart_count: 3 },
        ),
        (
            legacy("initializing", json!({"ports": [], "download_progress": 1.0, "last_restart_time": t(9)})),
            InstanceTransition::Initializing {
                restart_count: 2,
                restarted_at: Some(t(9)),
                download_progress: Some(1.0),
            },
        ),
        (
            legacy(
                "starting",
                json!({"port": 41000, "ports": [41000], "pid": 8, "command": ["a"], "resolved_path": "/p"}),
            ),
            InstanceTransition::Starting {
                ports: vec![41000],
                pid: Some(8),
                container_id: None,
                command: vec!["a".into()],
                resolved_path: "/p".into(),
            },
        ),
        (
            // An adopted workload: no command known to the worker, the stored one is kept.
            legacy("running", json!({"port": 41000, "ports": [41000], "pid": 8})),
            InstanceTransition::Running {
                ports: vec![41000],
                pid: Some(8),
                container_id: None,
                command: vec!["old".into(), "argv".into()],
            },
        ),
        (
            // Neither ports nor a new port: the stored ports stay.
            legacy("running", json!({"pid": 8, "command": ["a"]})),
            InstanceTransition::Running {
                ports: vec![40000, 40001],
                pid: Some(8),
                container_id: None,
                command: vec!["a".into()],
            },
        ),
        (
            legacy(
                "error",
                json!({"state_message": "boom", "pid": null, "ports": [], "next_restart_time": null,
                       "backoff_failures": 5}),
            ),
            InstanceTransition::Error {
                message: "boom".into(),
                restart_count: 2,
                next_restart_time: None,
                backoff_failures: 5,
            },
        ),
        (
            // A minimal body sent by hand: what it leaves out is kept.
            json!({"state": "error", "restart_count": 0, "version": 4}),
            InstanceTransition::Error {
                message: String::new(),
                restart_count: 0,
                next_restart_time: None,
                backoff_failures: 3,
            },
        ),
        (
            legacy("scheduled", json!({"state_message": "stopped", "pid": null, "ports": []})),
            InstanceTransition::Scheduled { message: "stopped".into() },
        ),
    ];
    for (body, want) in cases {
        let read = read(body.clone()).unwrap_or_else(|e| panic!("{body}: {e}"));
        assert_eq!(read.version(), 4);
        assert_eq!(read.transition(&stored), Ok(want), "{body}");
    }
    // A state no worker reports.
    let read = read(legacy("draining", json!({}))).expect("read");
    assert!(read.transition(&stored).is_err_and(|e| e.contains("not draining")));
}
