//! `ferrostack start` / `ferrostack server`: resolve config, bind, serve until SIGINT/SIGTERM.

use anyhow::Context;

use crate::config::{Config, ServerArgs};

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let config = Config::load(&args, home.as_deref())?;
    let bind = format!("{}:{}", config.host, config.port);
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .with_context(|| format!("cannot listen on {bind}; pick another with --port"))?;
    let data_dir = config.data_dir.clone();
    let running = crate::server::start(config, listener).await?;
    tracing::info!(addr = %running.addr, data_dir = %data_dir.display(), "ferrostack is serving");
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
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
