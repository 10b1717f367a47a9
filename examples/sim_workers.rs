//! Simulated workers for the control-plane benchmark (`bench/control-plane.sh`): N workers in one
//! process that speak the real worker protocol — register with the cluster token, heartbeat every
//! 5 s, a full status report every 30 s (utilisation moving a little each time, as on a real
//! machine), and the watch on their own instances that a real worker holds open. They run nothing.
//!
//! Usage: cargo run --release --example sim_workers -- SERVER_URL CLUSTER_TOKEN COUNT [GPUS [PREFIX]]
//! (GPUS per worker as `--simulate-gpus` takes it, default 1xH100-80GB; workers are named
//! PREFIX-0000…, default `sim`). Prints `registered N` once every worker has joined, then runs
//! until killed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferrostack::api::{
    CpuStatus, MemoryStatus, OsStatus, RuntimeKind, WorkerRegister, WorkerRegistered, WorkerStatus, WorkerStatusReport,
};
use ferrostack::client::Client;
use ferrostack::worker::gpu::simulate::parse_simulate_spec;

const HEARTBEAT: Duration = Duration::from_secs(5);
const STATUS: Duration = Duration::from_secs(30);

fn status(gpus: &[ferrostack::api::GpuDevice], tick: u64) -> WorkerStatus {
    WorkerStatus {
        cpu: CpuStatus { total: 64, utilization_rate: 3.0 + (tick % 7) as f64 },
        memory: MemoryStatus { total: 512 << 30, used: (40 << 30) + (tick % 5) * (1 << 20), utilization_rate: 8.0 },
        filesystem: Vec::new(),
        os: OsStatus {
            name: "Debian GNU/Linux".into(),
            version: "12".into(),
            kernel: "6.1".into(),
            arch: "x86_64".into(),
        },
        gpu_devices: gpus.to_vec(),
    }
}

async fn run_worker(
    base: String,
    token: String,
    name: String,
    gpus: Vec<ferrostack::api::GpuDevice>,
    joined: Arc<AtomicUsize>,
) {
    let registrant = Client::new(&base, Some(token));
    let body = WorkerRegister {
        name: name.clone(),
        labels: Default::default(),
        hostname: name.clone(),
        ip: "127.0.0.1".into(),
        ifname: "lo".into(),
        port: 1,
        runtime: RuntimeKind::Process,
        status: status(&gpus, 0),
        worker_version: "sim".into(),
    };
    let registered: WorkerRegistered = loop {
        match registrant.post("/v2/workers", &body).await {
            Ok(r) => break r,
            Err(e) => {
                eprintln!("{name}: register: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    joined.fetch_add(1, Ordering::Relaxed);
    let id = registered.worker.id;
    let client = Client::new(&base, Some(registered.credential));

    let beat = client.clone();
    tokio::spawn(async move {
        let path = format!("/v2/workers/{id}/heartbeat");
        loop {
            let _ = beat.post::<_, serde_json::Value>(&path, &serde_json::json!({})).await;
            tokio::time::sleep(HEARTBEAT).await;
        }
    });
    let report = client.clone();
    tokio::spawn(async move {
        let path = format!("/v2/workers/{id}/status");
        for tick in 1.. {
            tokio::time::sleep(STATUS).await;
            let body = WorkerStatusReport { status: status(&gpus, tick), ip: None, ifname: None, port: None };
            let _ = report.put::<_, serde_json::Value>(&path, &body).await;
        }
    });
    // The instance watch a real worker holds: read and drop events, reconnect when it closes.
    loop {
        if let Ok(mut res) = client.stream("/v2/model-instances?watch=true", None).await {
            while let Ok(Some(_chunk)) = res.chunk().await {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, token, count, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: sim_workers SERVER_URL CLUSTER_TOKEN COUNT [GPUS]");
    };
    let count: usize = count.parse()?;
    let gpus = parse_simulate_spec(rest.first().map_or("1xH100-80GB", String::as_str))?;
    let prefix = rest.get(1).map_or("sim", String::as_str);
    let joined = Arc::new(AtomicUsize::new(0));
    for i in 0..count {
        tokio::spawn(run_worker(base.clone(), token.clone(), format!("{prefix}-{i:04}"), gpus.clone(), joined.clone()));
        // Spread the joins (and so the 5 s and 30 s rhythms) over about a second per 200 workers.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while joined.load(Ordering::Relaxed) < count {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("registered {count}");
    std::future::pending::<()>().await;
    Ok(())
}
