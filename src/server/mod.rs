//! The server: router assembly, shared state, first-start bootstrap and the serve loop.

pub mod auth;
pub(crate) mod basic;
pub(crate) mod bootstrap;
pub(crate) mod browser;
pub(crate) mod cache;
pub mod error;
pub(crate) mod extract;
pub(crate) mod list;
pub mod policy;
pub(crate) mod rate_share;
mod routes;
pub mod routing;
pub(crate) mod secrets;
pub mod streams;
pub mod throttle;
pub(crate) mod ui;
pub(crate) mod watch;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::response::IntoResponse;
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Config;
use crate::control::{autoscaler, controller, leader, monitor};
use crate::db::Db;
use error::{ApiError, ErrorCode};

/// State shared by every handler. One `Arc`: axum clones the state for every request, and a
/// clone is one atomic increment however many handles it holds (cloning the fields one by one
/// was over a tenth of the gateway's CPU per request under load: docs/benchmarks.md, round 5).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    pub db: Db,
    pub config: Arc<Config>,
    /// Flips to `true` when the server shuts down; long-lived streams end on it.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Worker heartbeats, in memory.
    pub leases: monitor::Leases,
    /// Workers' latest fast-moving figures, kept in memory beside the leases.
    pub live: monitor::LiveStatus,
    /// Secret from which the tokens the server presents to workers are derived.
    pub server_secret: Arc<String>,
    /// Where model metadata is read from the hub (`Config::hub`).
    pub hub: Arc<crate::config::HubAccess>,
    /// The inference gateway (`/v1`, `/model/proxy`) and its key cache.
    pub gateway: Arc<routing::GatewayState>,
    /// Failed logins per user name and client address.
    pub logins: Arc<throttle::LoginThrottle>,
    /// Turns at password hashing, a few at a time.
    pub hashing: Arc<auth::HashSlots>,
    /// Passwords recently proven by HTTP Basic calls on `/v2` (`basic.rs`).
    pub basic: Arc<basic::Proven>,
    /// `/v2/gpu-devices`' list, rebuilt when workers or instances change.
    pub gpu_devices: Arc<routes::gpu_devices::DeviceCache>,
    /// What `/v2/dashboard` counts, re-read when workers, instances or deployments change.
    pub cluster_rows: Arc<cache::ByGeneration<cache::ClusterRows>>,
    /// Copies of workers, instances and deployments the cluster-wide views are built from.
    pub mirrors: Arc<cache::Mirrors>,
    /// Whether this server leads the control loops.
    pub leader: leader::Leadership,
    /// Open watch streams, bounded per credential and in all.
    pub watches: streams::WatchSlots,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ferrostack API",
        description = "Management (/v2), auth and probes. GPUStack-compatible paths and fields."
    ),
    components(schemas(crate::api::ErrorBody, crate::api::Pagination, crate::api::EventType, crate::api::UserSpec))
)]
struct ApiDoc;

/// Builds the whole HTTP application and its OpenAPI document.
pub fn router(state: AppState) -> Router {
    let management = routes::management()
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_management))
        .route_layer(middleware::from_fn_with_state(state.clone(), routes::probes::refuse_without_database));
    let (app, mut doc) =
        OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(routes::public()).merge(management).split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let doc = Arc::new(doc);
    app.route(
        "/openapi.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc.as_ref().clone()) }
        }),
    )
    .merge(routes::openai::router())
    .fallback(ui::serve)
    .method_not_allowed_fallback(method_not_allowed)
    .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
    .layer(middleware::from_fn_with_state(state.clone(), browser::guard))
    // A 5xx is an answer, not a fault of the server (a 503 while a model starts): internal errors
    // are logged where they happen (`error::ApiError::internal`).
    .layer(
        tower_http::trace::TraceLayer::new_for_http()
            .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG)),
    )
    .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> impl IntoResponse {
    ApiError::new(ErrorCode::NotFound, format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> impl IntoResponse {
    ApiError::new(ErrorCode::MethodNotAllowed, format!("{method} is not allowed on {}", uri.path()))
}

/// How long a shutdown waits for requests in flight (a chat being answered) before it cuts them
/// off. Watch streams end at once.
pub const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// A running server: its address and the handle that stops it.
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub db: Db,
    stop: tokio::sync::watch::Sender<bool>,
    /// The serve loop; taken when it has been waited for ([`Running::stop_serving`]).
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Told once the last request is done, so the usage of in-flight requests is written too.
    usage_stop: tokio::sync::watch::Sender<bool>,
    usage_task: tokio::task::JoinHandle<()>,
    /// Renews the control lease; gives it up on shutdown (PostgreSQL only).
    leader_task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting connections, ends watch streams and waits up to `grace` for the requests
    /// in flight to be answered (the rest are cut off). The database, the usage writer and the
    /// lease stay until [`Running::shutdown`]; what serves the answers (an embedded worker's
    /// engines) should be stopped only after this. A second call returns at once.
    pub async fn stop_serving(&mut self, grace: std::time::Duration) -> std::io::Result<()> {
        let _ = self.stop.send(true);
        let Some(mut task) = self.task.take() else { return Ok(()) };
        match tokio::time::timeout(grace, &mut task).await {
            Ok(res) => res.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            Err(_) => {
                tracing::warn!(
                    grace_s = grace.as_secs(),
                    "requests still in flight after the grace period; cutting them off"
                );
                task.abort();
                Ok(())
            }
        }
    }

    /// Stops serving (as [`Running::stop_serving`] with [`DRAIN_GRACE`], unless done already),
    /// writes the last usage, gives the lease up and closes the database.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        let res = self.stop_serving(DRAIN_GRACE).await;
        // Every request has ended: write the usage still in memory before the database closes.
        let _ = self.usage_stop.send(true);
        if tokio::time::timeout(std::time::Duration::from_secs(10), self.usage_task).await.is_err() {
            tracing::warn!("gave up writing the last usage records after 10 s");
        }
        if let Some(task) = self.leader_task {
            // Gives the lease up, so another server leads without waiting for it to lapse.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
        self.db.close().await;
        res
    }
}

/// Opens the database, bootstraps a first start, and serves on `listener` in the background.
pub async fn start(config: Config, listener: TcpListener) -> anyhow::Result<Running> {
    secrets::private_dir(&config.data_dir)?;
    let db = Db::open(&config.database_url()).await?;
    secrets::private_database(&config.database_url())?;
    let server_secret = secrets::server_secret(&db, &config.data_dir).await?;
    bootstrap::run(&db, &config, &server_secret).await?;
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    db.spawn_external_poller(shutdown.clone());
    db.spawn_probe(shutdown.clone());
    let leader = leader::Leadership::new(&leader::Leadership::process_id());
    let leader_task = if db.dialect() == crate::db::Dialect::Postgres {
        // Several servers may share this database: the one holding the lease leads.
        leader.try_once(&db).await;
        Some(leader.spawn(db.counted_apart(), shutdown.clone()))
    } else {
        leader.lead_alone();
        None
    };
    let leases = monitor::Leases::default();
    if db.dialect() == crate::db::Dialect::Postgres {
        leases.share_beats(db.counted_apart(), shutdown.clone());
    }
    monitor::WorkerMonitor::new(db.counted_apart(), leases.clone(), config.worker_grace)
        .spawn(leader.clone(), shutdown.clone());
    let (gateway, usage_events) = crate::gateway::Gateway::new()?;
    gateway.set_wake_limits(config.wake_queue, config.wake_timeout);
    let server_secret = Arc::new(server_secret);
    let hub = Arc::new(config.hub.clone());
    gateway.publish(routing::sync(&db, &server_secret).await?);
    routing::spawn_snapshot_loop(db.clone(), gateway.clone(), server_secret.clone(), leader.clone(), shutdown.clone());
    if db.dialect() == crate::db::Dialect::Postgres {
        rate_share::spawn(db.counted_apart(), gateway.clone(), leader.id().to_string(), shutdown.clone());
    }
    let config_watch_limit = config.max_watch_streams;
    let (usage_stop, usage_stopped) = tokio::sync::watch::channel(false);
    let usage_task = routing::spawn_usage_writer(db.clone(), usage_events, usage_stopped);
    let state = AppState(Arc::new(Shared {
        db: db.clone(),
        config: Arc::new(config),
        shutdown: shutdown.clone(),
        leases,
        live: monitor::LiveStatus::default(),
        server_secret: server_secret.clone(),
        hub: hub.clone(),
        gateway: Arc::new(routing::GatewayState::new(gateway.clone(), &db, server_secret.clone(), leader.clone())),
        logins: Arc::default(),
        hashing: Arc::default(),
        basic: Arc::default(),
        gpu_devices: Arc::new(routes::gpu_devices::device_cache(&db)),
        cluster_rows: Arc::new(cache::ByGeneration::new(&db, &["workers", "model_instances", "models"])),
        mirrors: Arc::new(cache::Mirrors::new(&db)),
        leader: leader.clone(),
        watches: streams::WatchSlots::new(streams::total_limit(config_watch_limit, streams::raise_open_file_limit())),
    }));
    bootstrap::spawn_housekeeping(db.counted_apart(), shutdown.clone());
    autoscaler::spawn(db.clone(), gateway.clone(), leader.clone(), shutdown.clone());
    let engines = controller::EngineProbe { http: reqwest::Client::new(), server_secret: server_secret.clone() };
    controller::spawn_loops(db.clone(), gateway.clone(), engines, hub, leader, shutdown.clone());
    let app = router(state);
    let addr = listener.local_addr()?;
    let mut stopped = shutdown;
    let task = tokio::spawn(async move {
        // No Nagle delay: streamed tokens go out as soon as they are written.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
    });
    Ok(Running { addr, db, stop, task: Some(task), usage_stop, usage_task, leader_task })
}
