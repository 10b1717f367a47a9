//! HTTP routes, one file per resource, each mirroring its URL.

mod api_keys;
mod auth;
mod clusters;
pub(crate) mod gpu_devices;
mod inference_backends;
mod login_throttle;
mod metrics;
pub(crate) mod model_instances;
pub(crate) mod model_routes;
pub(crate) mod models;
pub(crate) mod openai;
pub(crate) mod probes;
mod usage;
mod users;
mod workers;

use utoipa_axum::router::OpenApiRouter;

use super::AppState;

/// Routes that need no authentication: probes and `/auth/*`.
pub fn public() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().merge(probes::routes()).merge(auth::routes())
}

/// The `/v2` management API (the caller wraps it in the auth middleware).
pub fn management() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(users::routes())
        .merge(api_keys::routes())
        .merge(clusters::routes())
        .merge(inference_backends::routes())
        .merge(workers::routes())
        .merge(gpu_devices::routes())
        .merge(model_instances::routes())
        .merge(models::routes())
        .merge(model_routes::routes())
        .merge(usage::routes())
        .merge(login_throttle::routes())
}
