//! `GET /metrics`: Prometheus text. The gateway's request metrics, plus worker and instance
//! states and GPU memory read from the database at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::api::{ModelInstanceSpec, ModelSpec, WorkerSpec};
use crate::server::AppState;
use crate::server::error::ApiResult;

fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn state_name<T: serde::Serialize>(state: &T) -> String {
    serde_json::to_value(state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

pub async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let mut out = state.gateway.gateway.render_metrics();
    let workers = state.db.all::<WorkerSpec>().await?;
    let instances = state.db.all::<ModelInstanceSpec>().await?;
    let models = state.db.all::<ModelSpec>().await?;
    let mut by_state: BTreeMap<String, i64> = BTreeMap::new();
    for w in &workers {
        *by_state.entry(state_name(&w.spec.state)).or_default() += 1;
    }
    let _ = writeln!(out, "# HELP ferrostack_workers Workers by state.\n# TYPE ferrostack_workers gauge");
    for (s, n) in &by_state {
        let _ = writeln!(out, "ferrostack_workers{{state=\"{s}\"}} {n}");
    }
    let mut by_state: BTreeMap<String, i64> = BTreeMap::new();
    for i in &instances {
        *by_state.entry(i.spec.status.state.as_str().to_string()).or_default() += 1;
    }
    let _ = writeln!(out, "# HELP ferrostack_model_instances Model instances by state.");
    let _ = writeln!(out, "# TYPE ferrostack_model_instances gauge");
    for (s, n) in &by_state {
        let _ = writeln!(out, "ferrostack_model_instances{{state=\"{s}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP ferrostack_model_replicas Desired and running replicas per deployment.");
    let _ = writeln!(out, "# TYPE ferrostack_model_replicas gauge");
    for m in &models {
        let name = label(&m.spec.name);
        let _ = writeln!(out, "ferrostack_model_replicas{{model=\"{name}\",kind=\"desired\"}} {}", m.spec.replicas);
        let _ = writeln!(out, "ferrostack_model_replicas{{model=\"{name}\",kind=\"ready\"}} {}", m.spec.ready_replicas);
    }
    for (metric, help) in [
        ("ferrostack_gpu_memory_total_bytes", "GPU memory per device."),
        ("ferrostack_gpu_memory_used_bytes", "GPU memory in use per device."),
        ("ferrostack_gpu_utilization_ratio", "GPU core utilization per device (0-1)."),
    ] {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
        for w in &workers {
            for g in &w.spec.status.gpu_devices {
                let value = match metric {
                    "ferrostack_gpu_memory_total_bytes" => g.memory_total as f64,
                    "ferrostack_gpu_memory_used_bytes" => g.memory_used as f64,
                    _ => match g.core_utilization_rate {
                        Some(r) => r / 100.0,
                        None => continue,
                    },
                };
                let _ = writeln!(
                    out,
                    "{metric}{{worker=\"{}\",gpu=\"{}\",name=\"{}\"}} {value}",
                    label(&w.spec.name),
                    g.index,
                    label(&g.name)
                );
            }
        }
    }
    let lead = state.leader.view();
    let _ = writeln!(out, "# HELP ferrostack_leader 1 on the server that runs the control loops, 0 on the others.");
    let _ = writeln!(out, "# TYPE ferrostack_leader gauge");
    let _ = writeln!(out, "ferrostack_leader{{server=\"{}\"}} {}", label(&lead.server), u8::from(lead.leading));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response())
}
