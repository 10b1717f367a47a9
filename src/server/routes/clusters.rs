//! `/v2/clusters`: groups of workers and their registration tokens (stored as digests; the plain
//! token is shown on create and on regenerate only).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{
    Cluster, ClusterCreate, ClusterSpec, ClusterUpdate, ClusterWithToken, ModelSpec, WorkerSpec, WorkerState,
};
use crate::db::Val;
use crate::server::AppState;
use crate::server::auth::{Auth, cluster_token, digest, random_token};
use crate::server::error::{ApiError, ApiResult, ErrorCode};
use crate::server::extract::{RawQuery, Tolerant};
use crate::server::list::{self, CommonListParams, Since};
use crate::server::watch::list_or_watch;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_clusters, create_cluster))
        .routes(routes!(get_cluster, update_cluster, delete_cluster))
        .routes(routes!(regenerate_token, registration_token))
}

#[utoipa::path(get, path = "/v2/clusters", tag = "clusters",
    params(CommonListParams, Since),
    responses((status = 200, body = crate::api::ListResponse<Cluster>)))]
async fn list_clusters(
    State(state): State<AppState>,
    Auth(_p): Auth,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let (params, filters) = list::parse::<Since>(&raw)?;
    let counts = Counts::read(&state).await?;
    list_or_watch::<ClusterSpec, _, _, _>(&state, &headers, &raw, params, filters, move |c| counts.view(c)).await
}

/// A cluster as answered: GPUStack's `ClusterPublic` counts and state with it. In a watch stream the
/// counts are those of when the stream opened (watch workers and models for live ones).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ClusterView {
    #[serde(flatten)]
    pub cluster: Cluster,
    /// `ready`: a Ferrostack cluster needs no provisioning; workers join with its token.
    pub state: &'static str,
    pub provider: &'static str,
    pub workers: usize,
    pub ready_workers: usize,
    pub gpus: usize,
    pub models: usize,
}

/// Workers, ready workers, GPUs and deployments per cluster id.
#[derive(Default)]
struct Counts(std::collections::HashMap<i64, [usize; 4]>);

impl Counts {
    async fn read(state: &AppState) -> ApiResult<Counts> {
        let mut counts = Counts::default();
        for w in state.db.all::<WorkerSpec>().await? {
            let c = counts.0.entry(w.spec.cluster_id).or_default();
            c[0] += 1;
            c[1] += usize::from(w.spec.state == WorkerState::Ready);
            c[2] += w.spec.status.gpu_devices.len();
        }
        for m in state.db.all::<ModelSpec>().await? {
            if let Some(id) = m.spec.cluster_id {
                counts.0.entry(id).or_default()[3] += 1;
            }
        }
        Ok(counts)
    }

    fn view(&self, cluster: Cluster) -> ClusterView {
        let [workers, ready_workers, gpus, models] = self.0.get(&cluster.id).copied().unwrap_or_default();
        ClusterView { cluster, state: "ready", provider: "Docker", workers, ready_workers, gpus, models }
    }
}

fn check_name(name: &str) -> ApiResult<()> {
    let valid =
        !name.is_empty() && name.len() <= 63 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid { Ok(()) } else { Err(ApiError::field("name", "must be 1-63 characters of letters, digits, '-', '_'")) }
}

/// A new registration token: (nonce to store, token, its digest column).
fn new_token(server_secret: &str) -> (String, String, Vec<(&'static str, Val)>) {
    let nonce = random_token(16);
    let token = cluster_token(server_secret, &nonce);
    let extra = vec![("token_digest", Val::Text(digest(&token)))];
    (nonce, token, extra)
}

/// Creates a cluster; the answer carries its registration token, shown this once.
#[utoipa::path(post, path = "/v2/clusters", tag = "clusters", request_body = ClusterCreate,
    responses((status = 200, body = ClusterWithToken), (status = 409, body = crate::api::ErrorBody)))]
async fn create_cluster(
    State(state): State<AppState>,
    Auth(p): Auth,
    Tolerant(body, _): Tolerant<ClusterCreate>,
) -> ApiResult<(StatusCode, axum::Json<ClusterWithToken>)> {
    p.require_admin()?;
    check_name(&body.name)?;
    let (nonce, token, extra) = new_token(&state.server_secret);
    let spec = ClusterSpec {
        name: body.name,
        description: body.description,
        is_default: false,
        token_hint: token[..4].to_string(),
        token_nonce: Some(nonce),
        gpu_memory: body.gpu_memory,
    };
    let cluster = state.db.insert(&spec, &extra).await?;
    Ok((StatusCode::OK, axum::Json(ClusterWithToken { cluster, registration_token: token })))
}

#[utoipa::path(get, path = "/v2/clusters/{id}", tag = "clusters", params(("id" = i64, Path)),
    responses((status = 200, body = Cluster), (status = 404, body = crate::api::ErrorBody)))]
async fn get_cluster(
    State(state): State<AppState>,
    Auth(_p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<ClusterView>> {
    let cluster = state.db.get::<ClusterSpec>(id).await?;
    Ok(axum::Json(Counts::read(&state).await?.view(cluster)))
}

#[utoipa::path(put, path = "/v2/clusters/{id}", tag = "clusters", params(("id" = i64, Path)), request_body = ClusterUpdate,
    responses((status = 200, body = Cluster), (status = 409, body = crate::api::ErrorBody)))]
async fn update_cluster(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Tolerant(body, _): Tolerant<ClusterUpdate>,
) -> ApiResult<axum::Json<Cluster>> {
    p.require_admin()?;
    if let Some(name) = &body.name {
        check_name(name)?;
    }
    let cluster = state
        .db
        .modify::<ClusterSpec, ApiError, _>(id, body.version, |c| {
            if let Some(v) = &body.name {
                c.name = v.clone();
            }
            if let Some(v) = &body.description {
                c.description = Some(v.clone());
            }
            if let Some(v) = body.gpu_memory {
                c.gpu_memory = v;
            }
            Ok(vec![])
        })
        .await?;
    Ok(axum::Json(cluster))
}

/// Deletes a cluster; the default cluster stays.
#[utoipa::path(delete, path = "/v2/clusters/{id}", tag = "clusters", params(("id" = i64, Path)),
    responses((status = 200), (status = 400, body = crate::api::ErrorBody)))]
async fn delete_cluster(State(state): State<AppState>, Auth(p): Auth, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    p.require_admin()?;
    if state.db.get::<ClusterSpec>(id).await?.spec.is_default {
        return Err(ApiError::new(ErrorCode::RuleViolation, "the default cluster cannot be deleted"));
    }
    state.db.delete::<ClusterSpec>(id).await?;
    Ok(StatusCode::OK)
}

/// Replaces the cluster's registration token; the old one stops working. The new one is shown once.
#[utoipa::path(post, path = "/v2/clusters/{id}/registration-token", tag = "clusters", params(("id" = i64, Path)),
    responses((status = 200, body = ClusterWithToken)))]
async fn regenerate_token(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<ClusterWithToken>> {
    p.require_admin()?;
    let (nonce, token, extra) = new_token(&state.server_secret);
    let hint = token[..4].to_string();
    let cluster = state
        .db
        .modify::<ClusterSpec, ApiError, _>(id, None, |c| {
            c.token_hint = hint.clone();
            c.token_nonce = Some(nonce.clone());
            Ok(extra.clone())
        })
        .await?;
    Ok(axum::Json(ClusterWithToken { cluster, registration_token: token }))
}

/// How a worker joins this cluster (GPUStack's `ClusterRegistrationTokenPublic`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RegistrationInfo {
    pub token: String,
    /// The server's URL as this request reached it.
    pub server_url: String,
    /// No container image: Ferrostack's worker is the same binary (`args`).
    pub image: String,
    pub env: std::collections::BTreeMap<String, String>,
    /// The command line that joins a worker: `ferrostack` followed by these, with `env` set.
    pub args: Vec<String>,
}

/// The cluster's current registration token and how to use it. Tokens made before they could be
/// shown again (no nonce stored) answer 409: regenerate once with `POST` on this path.
#[utoipa::path(get, path = "/v2/clusters/{id}/registration-token", tag = "clusters", params(("id" = i64, Path)),
    responses((status = 200, body = RegistrationInfo), (status = 409, body = crate::api::ErrorBody)))]
async fn registration_token(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<RegistrationInfo>> {
    p.require_admin()?;
    let cluster = state.db.get::<ClusterSpec>(id).await?;
    let Some(nonce) = cluster.spec.token_nonce.as_deref() else {
        return Err(ApiError::new(
            ErrorCode::TokenNotShowable,
            "this cluster's token was made before tokens could be shown again; regenerate it once \
             (POST /v2/clusters/{id}/registration-token)",
        ));
    };
    let token = cluster_token(&state.server_secret, nonce);
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    let server_url = format!("http://{host}");
    // The token goes in the environment, not on a command line that `ps` shows.
    let args = ["worker", "--server-url", &server_url].map(str::to_string).to_vec();
    let env = [(crate::api::ENV_WORKER_TOKEN.to_string(), token.clone())].into();
    Ok(axum::Json(RegistrationInfo { token, server_url, image: String::new(), env, args }))
}
