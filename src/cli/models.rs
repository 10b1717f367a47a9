//! `ferrostack deploy`, `ps`, `scale`, `undeploy`: deployments from the command line, with a
//! progress bar (downloads, then replicas) while waiting for replicas to run.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;

use super::ClientArgs;
use super::messages::{Outlook, headline, pending_outlook};
use super::output::print_table;
use crate::api::{Model, ModelInstance, ModelSpec};
use crate::client::Client;

/// `ferrostack deploy`.
#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    /// Deployment name (also the `model` clients send).
    pub name: String,
    /// A GGUF file or a model directory on the workers.
    #[arg(long, conflicts_with_all = ["huggingface", "model_scope"])]
    pub local_path: Option<String>,
    /// Hugging Face repository id.
    #[arg(long)]
    pub huggingface: Option<String>,
    /// ModelScope model id.
    #[arg(long)]
    pub model_scope: Option<String>,
    /// Backend name [default: chosen from the model type].
    #[arg(long)]
    pub backend: Option<String>,
    /// Backend version [default: the backend's default version].
    #[arg(long)]
    pub backend_version: Option<String>,
    /// Replicas to run.
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    /// Backend parameter, e.g. --param=--ctx-size=4096 (repeatable).
    #[arg(long = "param", allow_hyphen_values = true)]
    pub params: Vec<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env")]
    pub env: Vec<String>,
    #[command(flatten)]
    pub autoscaling: AutoscaleFlags,
    /// GPU memory policy: reserve (an engine's fraction of each GPU, GPUStack's rule) or fit (what a
    /// replica needs, and its engine is told so; docs/gpu-memory.md) [default: the cluster's].
    #[arg(long, value_parser = ["reserve", "fit"])]
    pub gpu_memory: Option<String>,
    /// With --gpu-memory fit: how many full contexts the KV cache holds at once [default: 1].
    #[arg(long)]
    pub fit_concurrency: Option<u32>,
    /// Return at once instead of waiting for the replicas to run.
    #[arg(long)]
    pub no_wait: bool,
    /// Seconds to wait for the replicas before giving up (exit status 1).
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A deployment's `autoscaling` (docs/autoscaling.md); `--max-replicas` turns it on.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AutoscaleFlags {
    /// Autoscale up to this many replicas (turns autoscaling on).
    #[arg(long)]
    pub max_replicas: Option<u32>,
    /// Fewest replicas while autoscaling; 0 sleeps when idle and wakes on the first request [default: 1].
    #[arg(long)]
    pub min_replicas: Option<u32>,
    /// Requests in flight per replica the autoscaler aims at [default: 4].
    #[arg(long)]
    pub target_requests: Option<u32>,
    /// Seconds of lower demand before the autoscaler removes replicas [default: 300].
    #[arg(long)]
    pub scale_down_delay: Option<u32>,
    /// With --min-replicas 0: park the last replica this many seconds (engine kept, vLLM asleep)
    /// before it stops; a request wakes it in place. 0 turns parking off.
    #[arg(long)]
    pub park_seconds: Option<u32>,
}

impl AutoscaleFlags {
    /// The `autoscaling` object these flags describe, over `current` (what the deployment has).
    fn apply(&self, current: Option<crate::api::Autoscaling>) -> Option<crate::api::Autoscaling> {
        let max = self.max_replicas.or(current.as_ref().map(|a| a.max_replicas))?;
        let base = current.unwrap_or(crate::api::Autoscaling {
            min_replicas: 1,
            max_replicas: max,
            target_requests: 4,
            scale_down_delay_seconds: 300,
            park_seconds: None,
        });
        Some(crate::api::Autoscaling {
            min_replicas: self.min_replicas.unwrap_or(base.min_replicas),
            max_replicas: max,
            target_requests: self.target_requests.unwrap_or(base.target_requests),
            scale_down_delay_seconds: self.scale_down_delay.unwrap_or(base.scale_down_delay_seconds),
            park_seconds: match self.park_seconds {
                Some(0) => None,
                Some(p) => Some(p),
                None => base.park_seconds,
            },
        })
    }
}

fn client(args: &ClientArgs) -> Client {
    args.client()
}

async fn find(client: &Client, name: &str) -> anyhow::Result<Model> {
    let list = client.list::<Model>(&format!("/v2/models?search={name}")).await?;
    list.items
        .into_iter()
        .find(|m| m.spec.name == name)
        .with_context(|| format!("no deployment named {name:?}; `ferrostack ps` lists them"))
}

pub async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let (source, local_path, hf, ms) = match (&args.local_path, &args.huggingface, &args.model_scope) {
        (Some(p), _, _) => ("local_path", Some(p.clone()), None, None),
        (_, Some(r), _) => ("huggingface", None, Some(r.clone()), None),
        (_, _, Some(m)) => ("model_scope", None, None, Some(m.clone())),
        _ => anyhow::bail!("say where the model is: --local-path, --huggingface or --model-scope"),
    };
    let env: BTreeMap<String, String> = args
        .env
        .iter()
        .map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect::<Option<_>>()
        .context("--env must be KEY=VALUE")?;
    let body = serde_json::json!({
        "name": args.name, "source": source, "local_path": local_path, "huggingface_repo_id": hf,
        "model_scope_model_id": ms, "backend": args.backend, "backend_version": args.backend_version,
        "replicas": args.replicas, "backend_parameters": args.params, "env": env,
        "autoscaling": args.autoscaling.apply(None),
        "gpu_memory": args.gpu_memory, "fit_concurrency": args.fit_concurrency,
    });
    let c = client(&args.client);
    let model: Model = c.post("/v2/models", &body).await?;
    println!("deployed {} (id {})", model.spec.name, model.id);
    // With autoscaling the server clamps replicas into the bounds: wait for what it kept.
    if !args.no_wait && model.spec.replicas > 0 {
        wait_ready(&c, model.id, model.spec.replicas, Duration::from_secs(args.timeout)).await?;
    }
    Ok(())
}

/// `ferrostack autoscale`: turns a deployment's autoscaling on or changes it (`--off`: off; its
/// replicas stay where the autoscaler left them).
pub async fn autoscale(args: &ClientArgs, name: &str, flags: &AutoscaleFlags, off: bool) -> anyhow::Result<()> {
    let c = client(args);
    let model = find(&c, name).await?;
    let autoscaling = if off {
        None
    } else {
        let a = flags.apply(model.spec.autoscaling.clone());
        anyhow::ensure!(a.is_some(), "{name} is not autoscaled: say --max-replicas");
        a
    };
    let spec = ModelSpec { autoscaling, ..model.spec };
    let updated: Model = c.put(&format!("/v2/models/{}?version={}", model.id, model.version), &spec).await?;
    match &updated.spec.autoscaling {
        Some(a) => println!(
            "{} autoscales between {} and {} replicas at {} request(s) per replica, down after {} s",
            updated.spec.name, a.min_replicas, a.max_replicas, a.target_requests, a.scale_down_delay_seconds
        ),
        None => println!("{} no longer autoscales ({} replicas)", updated.spec.name, updated.spec.replicas),
    }
    Ok(())
}

/// Waits until `want` replicas run, with a progress bar (model downloads, then instances by
/// state). Why an instance is pending is printed as soon as the scheduler says so (again when
/// the reason changes), and a failure once, with its reason and last log lines. The wait fails
/// (non-zero exit) when an instance cannot be placed by waiting ([`pending_outlook`]), when one
/// is still failing after its first restart, when one fails that will not restart, or after
/// `timeout`.
pub async fn wait_ready(c: &Client, model_id: i64, want: u32, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let bar = indicatif::ProgressBar::new(1000);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {percent:>3}% {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut last_plain = String::new();
    let mut seen = Seen::default();
    loop {
        let list = c.list::<ModelInstance>(&format!("/v2/model-instances?model_id={model_id}")).await?;
        let p = progress(&list.items, want);
        bar.set_prefix(p.prefix);
        bar.set_message(p.message.clone());
        bar.set_position((p.fraction * 1000.0).round() as u64);
        // Without a terminal the bar draws nothing: print each new state once instead.
        let plain = format!("{} {}", p.prefix, p.message);
        if bar.is_hidden() && plain != last_plain {
            eprintln!("{plain} ({:.0} %)", p.fraction * 100.0);
            last_plain = plain;
        }
        match verdict(&list.items, want, &mut seen) {
            Verdict::Ready => {
                bar.finish_and_clear();
                eprintln!("{} of {want} replicas running", p.running);
                return Ok(());
            }
            Verdict::Waiting(news) => {
                for line in news {
                    bar.suspend(|| eprintln!("{line}"));
                }
            }
            Verdict::Failed(why) => {
                bar.abandon();
                anyhow::bail!(why);
            }
        }
        if tokio::time::Instant::now() > deadline {
            bar.abandon();
            anyhow::bail!(
                "not ready after {} s ({}); `ferrostack ps` shows where each instance stands",
                timeout.as_secs(),
                p.message
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Where a wait stands after one look at the instances.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    Ready,
    /// Still waiting; lines to print (each failure once per run of the instance).
    Waiting(Vec<String>),
    Failed(String),
}

/// What a wait has printed already.
#[derive(Debug, Default)]
struct Seen {
    /// Failures, by instance and run.
    failures: Vec<(i64, u32)>,
    /// The pending reason last printed, by instance.
    pending: BTreeMap<i64, String>,
}

fn verdict(items: &[ModelInstance], want: u32, seen: &mut Seen) -> Verdict {
    use crate::api::InstanceState;
    let running = items.iter().filter(|i| i.spec.status.state == InstanceState::Running).count();
    if running >= want as usize {
        return Verdict::Ready;
    }
    let mut news = Vec::new();
    for i in items.iter().filter(|i| i.spec.status.state == InstanceState::Pending) {
        let Some(why) = i.spec.status.state_message.as_deref().map(str::trim).filter(|m| !m.is_empty()) else {
            continue;
        };
        if pending_outlook(why) == Outlook::Stuck {
            return Verdict::Failed(format!(
                "instance {} cannot be placed: {why}\nWaiting does not change that: it stays pending until a worker that \
                 fits joins or the deployment is edited (`ferrostack undeploy {}` removes it).",
                i.spec.name, i.spec.model_name
            ));
        }
        if seen.pending.get(&i.id).map(String::as_str) != Some(why) {
            seen.pending.insert(i.id, why.to_string());
            news.push(format!("instance {} is pending: {why}", i.spec.name));
        }
    }
    for i in items.iter().filter(|i| i.spec.status.state == InstanceState::Error) {
        let why = i.spec.status.state_message.clone().unwrap_or_default();
        let more = format!("`ferrostack logs {}` shows its whole log", i.id);
        // Failing again after a restart, or never restarting: it will not come up by waiting.
        if !i.spec.run.restart_on_error || i.spec.status.restart_count >= 1 {
            let runs = if i.spec.status.restart_count >= 1 { " again after a restart" } else { "" };
            return Verdict::Failed(format!("instance {} failed{runs}: {}\n{more}", i.spec.name, why.trim_end()));
        }
        if !seen.failures.contains(&(i.id, i.spec.status.restart_count)) {
            seen.failures.push((i.id, i.spec.status.restart_count));
            news.push(format!(
                "instance {} failed (it restarts once before this gives up): {}",
                i.spec.name,
                why.trim_end()
            ));
        }
    }
    Verdict::Waiting(news)
}

/// What the progress bar shows.
#[derive(Debug, Clone, PartialEq)]
struct Progress {
    running: usize,
    /// Downloads while any instance downloads, else the share of replicas running.
    fraction: f64,
    prefix: &'static str,
    message: String,
}

fn progress(items: &[ModelInstance], want: u32) -> Progress {
    use crate::api::InstanceState;
    let running = items.iter().filter(|i| i.spec.status.state == InstanceState::Running).count();
    let downloading: Vec<f64> = items
        .iter()
        .filter(|i| i.spec.status.state == InstanceState::Downloading)
        .map(|i| i.spec.status.download_progress.unwrap_or(0.0).clamp(0.0, 1.0))
        .collect();
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for i in items.iter().filter(|i| i.spec.status.state != InstanceState::Running) {
        *by_state.entry(i.spec.status.state.as_str()).or_default() += 1;
    }
    let others: Vec<String> = by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let (prefix, fraction) = if downloading.is_empty() {
        ("replicas", if want == 0 { 1.0 } else { (running as f64 / f64::from(want)).min(1.0) })
    } else {
        ("downloading", downloading.iter().sum::<f64>() / downloading.len() as f64)
    };
    let mut message = format!("{running}/{want} running");
    if !others.is_empty() {
        message.push_str(&format!(", {}", others.join(", ")));
    }
    let bytes: u64 = items
        .iter()
        .filter(|i| i.spec.status.state == InstanceState::Downloading)
        .filter_map(|i| i.spec.status.downloaded_bytes)
        .sum();
    if bytes > 0 {
        message.push_str(&format!(" ({} downloaded)", human_bytes(bytes)));
    }
    Progress { running, fraction, prefix, message }
}

/// `1.5 GiB`, `12.0 MiB`, `512 B`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

pub async fn scale(args: &ClientArgs, name: &str, replicas: u32, wait: Option<Duration>) -> anyhow::Result<()> {
    let c = client(args);
    let model = find(&c, name).await?;
    let spec = ModelSpec { replicas, ..model.spec };
    let updated: Model = c.put(&format!("/v2/models/{}?version={}", model.id, model.version), &spec).await?;
    println!("{} scaled to {replicas}", updated.spec.name);
    if let Some(timeout) = wait.filter(|_| replicas > 0) {
        wait_ready(&c, updated.id, replicas, timeout).await?;
    }
    Ok(())
}

pub async fn undeploy(args: &ClientArgs, name: &str) -> anyhow::Result<()> {
    let c = client(args);
    let model = find(&c, name).await?;
    c.delete(&format!("/v2/models/{}", model.id)).await?;
    println!("deleted {name}");
    Ok(())
}

pub async fn ps(args: &ClientArgs) -> anyhow::Result<()> {
    let c = client(args);
    let models = c.list::<Model>("/v2/models").await?;
    let rows = models.items.iter().map(|m| {
        vec![
            m.id.to_string(),
            m.spec.name.clone(),
            m.spec.backend.clone().unwrap_or_default(),
            format!("{}/{}", m.spec.ready_replicas, m.spec.replicas),
            scaling(&m.spec),
        ]
    });
    print_table(&["ID", "DEPLOYMENT", "BACKEND", "READY", "SCALING"], rows);
    println!();
    let instances = c.list::<ModelInstance>("/v2/model-instances").await?;
    let rows = instances.items.iter().map(|i| {
        vec![
            i.id.to_string(),
            i.spec.name.clone(),
            i.spec.status.state.as_str().to_string(),
            i.spec.binding.worker_name.clone().unwrap_or_else(|| "-".into()),
            i.spec.status.port.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            i.spec.status.restart_count.to_string(),
            headline(i.spec.status.state_message.as_deref().unwrap_or(""), 100),
        ]
    });
    print_table(&["ID", "INSTANCE", "STATE", "WORKER", "PORT", "RESTARTS", "MESSAGE"], rows);
    Ok(())
}

/// The SCALING column: the bounds, whether it sleeps, requests held until it wakes, and why the
/// scaler chose its replicas.
fn scaling(m: &ModelSpec) -> String {
    let mut bounds = match &m.autoscaling {
        Some(a) if m.replicas == 0 => format!("{}-{} asleep", a.min_replicas, a.max_replicas),
        Some(a) => format!("{}-{}", a.min_replicas, a.max_replicas),
        None if m.scaling_schedule.as_ref().is_some_and(|s| s.enabled && !s.paused) => "schedule".into(),
        None => return "-".into(),
    };
    if let Some(n) = m.queued.filter(|n| *n > 0) {
        bounds.push_str(&format!(", {n} queued"));
    }
    match &m.scaling_message {
        Some(why) => format!("{bounds}: {}", headline(why, 80)),
        None => bounds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::InstanceState;

    #[test]
    fn autoscale_flags_fill_in_over_what_the_deployment_has() {
        let none = AutoscaleFlags::default();
        assert_eq!(none.apply(None), None, "no --max-replicas, not autoscaled: stays off");
        let on = AutoscaleFlags { max_replicas: Some(4), min_replicas: Some(0), ..Default::default() };
        let a = on.apply(None).expect("on");
        assert_eq!((a.min_replicas, a.max_replicas, a.target_requests, a.scale_down_delay_seconds), (0, 4, 4, 300));
        let delay = AutoscaleFlags { scale_down_delay: Some(60), ..Default::default() };
        let b = delay.apply(Some(a)).expect("kept");
        assert_eq!((b.min_replicas, b.max_replicas, b.scale_down_delay_seconds), (0, 4, 60));
    }

    #[test]
    fn the_scaling_column_shows_bounds_sleep_queued_and_why() {
        let spec = |extra: serde_json::Value| {
            let mut v = serde_json::json!({"name": "m", "source": "local_path", "local_path": "/m"});
            if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
                v.extend(extra.clone());
            }
            serde_json::from_value::<ModelSpec>(v).expect("spec")
        };
        let auto = serde_json::json!({"min_replicas": 0, "max_replicas": 4});
        let cases = [
            (serde_json::json!({}), "-"),
            (serde_json::json!({"autoscaling": auto, "replicas": 2, "queued": 0}), "0-4"),
            (serde_json::json!({"autoscaling": auto, "replicas": 0}), "0-4 asleep"),
            (serde_json::json!({"autoscaling": auto, "replicas": 0, "queued": 3}), "0-4 asleep, 3 queued"),
            (
                serde_json::json!({"autoscaling": auto, "replicas": 0, "queued": 3,
                                   "scaling_message": "waking: 3 requests held"}),
                "0-4 asleep, 3 queued: waking: 3 requests held",
            ),
            (serde_json::json!({"autoscaling": auto, "replicas": 1, "queued": 1}), "0-4, 1 queued"),
        ];
        for (extra, want) in cases {
            assert_eq!(scaling(&spec(extra.clone())), want, "{extra}");
        }
    }

    #[test]
    fn downloads_show_their_bytes() {
        let mut a = instance(InstanceState::Downloading, Some(0.5));
        a.spec.status.downloaded_bytes = Some(3 << 29);
        let p = progress(&[a], 1);
        assert_eq!(p.message, "0/1 running, 1 downloading (1.5 GiB downloaded)");
        for (n, want) in [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (12 << 20, "12.0 MiB"), (5 << 40, "5.0 TiB")]
        {
            assert_eq!(human_bytes(n), want);
        }
    }

    fn instance(state: InstanceState, download: Option<f64>) -> ModelInstance {
        let record = serde_json::json!({
            "id": 1, "version": 1, "created_at": "2026-11-24T00:00:00Z", "updated_at": "2026-11-24T00:00:00Z",
            "name": "m-1", "model_name": "m", "model_path": "/m", "backend": "b",
            "state": state, "download_progress": download,
        });
        serde_json::from_value(record).expect("instance")
    }

    /// Instances (state, download), replicas wanted, prefix, fraction, message.
    type Case<'a> = (Vec<(InstanceState, Option<f64>)>, u32, &'a str, f64, &'a str);

    #[test]
    fn the_bar_shows_downloads_first_then_instances_by_state() {
        use InstanceState::*;
        let cases: Vec<Case<'_>> = vec![
            (
                vec![(Downloading, Some(0.2)), (Downloading, Some(0.6))],
                2,
                "downloading",
                0.4,
                "0/2 running, 2 downloading",
            ),
            (vec![(Downloading, None), (Running, Some(1.0))], 2, "downloading", 0.0, "1/2 running, 1 downloading"),
            (vec![(Starting, Some(1.0)), (Running, None)], 2, "replicas", 0.5, "1/2 running, 1 starting"),
            (vec![(Running, None), (Running, None)], 2, "replicas", 1.0, "2/2 running"),
            (vec![(Downloading, Some(7.0))], 1, "downloading", 1.0, "0/1 running, 1 downloading"),
            (
                vec![(Pending, None), (Error, None), (Pending, None)],
                3,
                "replicas",
                0.0,
                "0/3 running, 1 error, 2 pending",
            ),
            (vec![], 0, "replicas", 1.0, "0/0 running"),
        ];
        for (states, want, prefix, fraction, message) in cases {
            let items: Vec<ModelInstance> = states.iter().map(|(s, d)| instance(*s, *d)).collect();
            let p = progress(&items, want);
            assert_eq!((p.prefix, p.message.as_str()), (prefix, message), "{states:?}");
            assert!((p.fraction - fraction).abs() < 1e-9, "{states:?}: {}", p.fraction);
        }
    }

    fn failed(id: i64, restarts: u32, restart_on_error: bool) -> ModelInstance {
        let mut i = instance(InstanceState::Error, None);
        i.id = id;
        i.spec.status.restart_count = restarts;
        i.spec.run.restart_on_error = restart_on_error;
        i.spec.status.state_message = Some("exited with status 1; last log lines:\nbad model".into());
        i
    }

    #[test]
    fn a_failure_is_said_once_and_a_second_one_ends_the_wait() {
        let mut seen = Seen::default();
        let first = vec![failed(7, 0, true)];
        let Verdict::Waiting(lines) = verdict(&first, 1, &mut seen) else { panic!("still waiting") };
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("bad model"), "{lines:?}");
        // The same failure seen again (polls are twice a second) prints nothing.
        assert_eq!(verdict(&first, 1, &mut seen), Verdict::Waiting(vec![]));
        // Failing again after its restart: give up, with the reason and where to look.
        let Verdict::Failed(why) = verdict(&[failed(7, 1, true)], 1, &mut seen) else { panic!("failed") };
        assert!(why.contains("again after a restart") && why.contains("ferrostack logs 7"), "{why}");
        // An instance that never restarts fails the wait at once.
        assert!(matches!(verdict(&[failed(8, 0, false)], 1, &mut Seen::default()), Verdict::Failed(_)));
        assert_eq!(verdict(&[instance(InstanceState::Running, None)], 1, &mut Seen::default()), Verdict::Ready);
    }

    fn pending(id: i64, message: Option<&str>) -> ModelInstance {
        let mut i = instance(InstanceState::Pending, None);
        i.id = id;
        i.spec.status.state_message = message.map(str::to_string);
        i
    }

    #[test]
    fn why_an_instance_is_pending_is_said_at_once_and_a_hopeless_wait_ends() {
        let mut seen = Seen::default();
        // Not decided yet: nothing to say.
        assert_eq!(verdict(&[pending(1, None)], 1, &mut seen), Verdict::Waiting(vec![]));
        // Memory in use: said once, and the wait goes on.
        let busy = "No suitable workers.\n- w1:cuda:0: needs 8.0 GiB, 4.0 GiB free";
        let Verdict::Waiting(lines) = verdict(&[pending(1, Some(busy))], 1, &mut seen) else { panic!("waiting") };
        assert_eq!(lines, vec![format!("instance m-1 is pending: {busy}")]);
        assert_eq!(verdict(&[pending(1, Some(busy))], 1, &mut seen), Verdict::Waiting(vec![]));
        // A new reason is said again.
        let not_ready = "No suitable workers.\n- worker w1: not ready";
        let Verdict::Waiting(lines) = verdict(&[pending(1, Some(not_ready))], 1, &mut seen) else { panic!("waiting") };
        assert_eq!(lines.len(), 1, "{lines:?}");
        // The README's vLLM example on a CPU-only machine: no use waiting 900 s.
        let no_gpu = "No suitable workers.\n- worker w1: backend runs on cuda, worker has no GPU\n- no worker passed the filters";
        let Verdict::Failed(why) = verdict(&[pending(1, Some(no_gpu))], 1, &mut seen) else { panic!("failed") };
        assert!(why.contains("worker has no GPU") && why.contains("ferrostack undeploy m"), "{why}");
        // Enough replicas run: the others' reasons do not matter.
        let items = [instance(InstanceState::Running, None), pending(2, Some(no_gpu))];
        assert_eq!(verdict(&items, 1, &mut Seen::default()), Verdict::Ready);
    }
}
