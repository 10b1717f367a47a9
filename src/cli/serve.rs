//! `ferrostack start` / `server` / `worker`: resolve config, bind, serve until SIGINT/SIGTERM;
//! and `ferrostack logs`.

use std::path::PathBuf;

use anyhow::Context;
use futures_util::StreamExt;

use crate::client::Client;
use crate::config::{Config, ServerArgs};
use crate::server::bootstrap::CLUSTER_TOKEN_FILE;
use crate::worker::{ENV_TOKEN, WorkerConfig, WorkerOptions};

/// `ferrostack start`: the server plus an embedded worker.
#[derive(clap::Args, Debug)]
pub struct StartArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub worker: WorkerOptions,
    /// Run without the embedded worker.
    #[arg(long)]
    pub no_worker: bool,
}

/// `ferrostack worker`.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// The server to join, e.g. http://10.0.0.1:8080. Servers sharing one database: comma-separated
    /// URLs; the worker moves to the next when one does not answer.
    #[arg(long, env = crate::cli::ENV_SERVER_URL)]
    pub server_url: String,
    /// The cluster's registration token (needed to join the first time).
    #[arg(long, env = ENV_TOKEN, hide_env_values = true)]
    pub token: Option<String>,
    /// Where the worker keeps its credential, instance logs and pid files [default: ~/.local/share/ferrostack-worker].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub options: WorkerOptions,
}

/// The CLI's edge: the home directory the default data dirs are under.
#[allow(clippy::disallowed_methods)]
fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

pub async fn run_worker(args: WorkerArgs) -> anyhow::Result<()> {
    let data_dir = args
        .data_dir
        .or_else(|| home().map(|h| h.join(".local/share/ferrostack-worker")))
        .context("no --data-dir and no home directory")?;
    let cfg = WorkerConfig::new(args.server_url, args.token, data_dir, &args.options).map_err(anyhow::Error::msg)?;
    let worker = crate::worker::agent::start(cfg).await?;
    shutdown_signal().await;
    tracing::info!("worker shutting down");
    drain_unless_signalled(&worker).await;
    worker.shutdown().await;
    Ok(())
}

/// Lets `worker`'s instances drain (`RunningWorker::drain`) unless a second signal says stop now.
async fn drain_unless_signalled(worker: &crate::worker::agent::RunningWorker) {
    tokio::select! {
        _ = worker.drain() => {}
        _ = shutdown_signal() => tracing::warn!("a second signal: stopping the instances now"),
    }
}

pub async fn logs(client: &Client, id: i64, tail: Option<u64>, follow: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut path = format!("/v2/model-instances/{id}/logs?follow={follow}");
    if let Some(t) = tail {
        path.push_str(&format!("&tail={t}"));
    }
    let res = client.stream(&path, None).await?;
    let mut body = res.bytes_stream();
    let mut out = std::io::stdout();
    while let Some(chunk) = body.next().await {
        out.write_all(&chunk?)?;
        out.flush()?;
    }
    Ok(())
}

pub async fn run(args: ServerArgs, worker: Option<WorkerOptions>) -> anyhow::Result<()> {
    let config = Config::load(&args, home().as_deref())?;
    let bind = format!("{}:{}", config.host, config.port);
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .with_context(|| format!("cannot listen on {bind}; pick another with --port"))?;
    let data_dir = config.data_dir.clone();
    let running = crate::server::start(config, listener).await?;
    tracing::info!(addr = %running.addr, data_dir = %data_dir.display(), "ferrostack is serving");
    let embedded = match worker {
        Some(opts) => {
            let token = std::fs::read_to_string(data_dir.join(CLUSTER_TOKEN_FILE)).ok().map(|t| t.trim().to_string());
            let url = format!("http://127.0.0.1:{}", running.addr.port());
            let cfg = WorkerConfig::new(url, token, data_dir.join("worker"), &opts).map_err(anyhow::Error::msg)?;
            Some(crate::worker::agent::start(cfg).await.context("starting the embedded worker")?)
        }
        None => None,
    };
    shutdown_signal().await;
    tracing::info!("shutting down");
    // The embedded worker's instances drain while this server still serves (and may lead).
    if let Some(w) = &embedded {
        drain_unless_signalled(w).await;
    }
    stop(running, embedded).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Stops a server and its embedded worker in the order that lets requests in flight finish:
/// stop accepting and answer what is in flight (up to [`crate::server::DRAIN_GRACE`]), then stop
/// the worker and its engines, then close the server's database.
pub async fn stop(
    mut running: crate::server::Running,
    embedded: Option<crate::worker::agent::RunningWorker>,
) -> anyhow::Result<()> {
    let served = running.stop_serving(crate::server::DRAIN_GRACE).await;
    if let Some(w) = embedded {
        w.shutdown().await;
    }
    running.shutdown().await?;
    Ok(served?)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// The README joins workers with `FERROSTACK_TOKEN=… ferrostack worker …`, keeping the token
    /// off the command line.
    #[test]
    fn the_worker_reads_its_token_from_the_environment() {
        let cli = crate::cli::Cli::command();
        let worker = cli.find_subcommand("worker").expect("worker");
        let token = worker.get_arguments().find(|a| a.get_id() == "token").expect("--token");
        assert_eq!(token.get_env().and_then(|e| e.to_str()), Some("FERROSTACK_TOKEN"));
        let readme = include_str!("../../README.md");
        assert!(readme.contains("FERROSTACK_TOKEN=$(cat data/cluster_token) ferrostack worker"), "README");
        assert!(!readme.contains("--token $("), "README puts the token on a command line");
    }
}
