//! Wire types for users, API keys, clusters and login.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Record;

/// A user as stored and shown. The password hash is never part of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UserSpec {
    pub username: String,
    #[serde(default)]
    pub full_name: Option<String>,
    #[serde(default)]
    pub is_admin: bool,
    #[serde(default = "yes")]
    pub is_active: bool,
    #[serde(default)]
    pub require_password_change: bool,
}

pub type User = Record<UserSpec>;

fn yes() -> bool {
    true
}

/// `POST /v2/users`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserCreate {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub full_name: Option<String>,
    #[serde(default)]
    pub is_admin: bool,
    #[serde(default = "yes")]
    pub is_active: bool,
    /// Ask the user to choose a new password at their next login.
    #[serde(default)]
    pub require_password_change: bool,
}

/// `PUT /v2/users/{id}`: every field optional; `version` guards against lost updates.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    /// Renames the user (unique, case-insensitive).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub full_name: Option<String>,
    #[serde(default)]
    pub is_admin: Option<bool>,
    #[serde(default)]
    pub is_active: Option<bool>,
    /// Sets a new password (admins only, or the user through `/auth/update-password`).
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub require_password_change: Option<bool>,
    #[serde(default)]
    pub version: Option<i64>,
}

/// `PUT /v2/users/me`: what a user may change about themselves. A new password needs the current one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserSelfUpdate {
    #[serde(default)]
    pub full_name: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Required with `password`.
    #[serde(default)]
    pub current_password: Option<String>,
    #[serde(default)]
    pub version: Option<i64>,
}

/// `POST /auth/update-password`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePassword {
    pub current_password: String,
    pub new_password: String,
}

/// `POST /auth/login` form fields.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginForm {
    pub username: String,
    pub password: String,
}

/// What an API key may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum Scope {
    #[serde(rename = "*")]
    All,
    #[serde(rename = "management")]
    Management,
    #[serde(rename = "inference")]
    Inference,
}

/// An API key as stored and shown; the secret is stored only as a digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKeySpec {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub user_id: i64,
    /// The public half of the key, used to find it.
    pub access_key: String,
    /// How the key looks, for recognising it: prefix and access key, secret hidden.
    pub masked_value: String,
    pub scope: Vec<Scope>,
    /// Model names this key may call; `None` means all.
    #[serde(default)]
    pub allowed_model_names: Option<Vec<String>>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Requests per minute this key may make through the gateway; null = no limit.
    #[serde(default)]
    pub rpm_limit: Option<u32>,
    /// Tokens (prompt + completion) per minute; null = no limit.
    #[serde(default)]
    pub tpm_limit: Option<u64>,
    /// GPUStack's flag for keys whose value the user chose; Ferrostack always generates them.
    #[serde(default)]
    pub is_custom: bool,
}

pub type ApiKey = Record<ApiKeySpec>;

/// `POST /v2/api-keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyCreate {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Lifetime in seconds from now; absent or null means no expiry.
    #[serde(default)]
    pub expires_in: Option<i64>,
    /// Defaults to `["*"]`.
    #[serde(default)]
    pub scope: Option<Vec<Scope>>,
    #[serde(default)]
    pub allowed_model_names: Option<Vec<String>>,
    #[serde(default)]
    pub rpm_limit: Option<u32>,
    #[serde(default)]
    pub tpm_limit: Option<u64>,
}

/// `PUT /v2/api-keys/{id}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyUpdate {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub scope: Option<Vec<Scope>>,
    #[serde(default)]
    pub allowed_model_names: Option<Vec<String>>,
    #[serde(default)]
    pub rpm_limit: Option<u32>,
    #[serde(default)]
    pub tpm_limit: Option<u64>,
    #[serde(default)]
    pub version: Option<i64>,
}

/// The answer to creating a key: the only time its full value is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyCreated {
    #[serde(flatten)]
    pub key: ApiKey,
    pub value: String,
}

/// A cluster: a group of workers that join with the cluster's registration token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterSpec {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub is_default: bool,
    /// The first characters of the registration token, to tell tokens apart.
    #[serde(default)]
    pub token_hint: String,
    /// The registration token is derived from the server secret and this value, so it can be
    /// shown again (`GET …/registration-token`) without being stored. Useless without the secret.
    #[serde(default)]
    pub token_nonce: Option<String>,
    /// The GPU memory policy of deployments that set none (`reserve` unless an admin sets `fit`).
    #[serde(default)]
    pub gpu_memory: super::GpuMemoryPolicy,
}

pub type Cluster = Record<ClusterSpec>;

/// `POST /v2/clusters`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterCreate {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The default GPU memory policy of the cluster's deployments (`reserve` unless set).
    #[serde(default)]
    pub gpu_memory: super::GpuMemoryPolicy,
}

/// `PUT /v2/clusters/{id}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterUpdate {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// The default GPU memory policy of the cluster's deployments (`reserve` or `fit`).
    #[serde(default)]
    pub gpu_memory: Option<super::GpuMemoryPolicy>,
    #[serde(default)]
    pub version: Option<i64>,
}

/// A cluster together with its plain registration token: shown on create and on regenerate only.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterWithToken {
    #[serde(flatten)]
    pub cluster: Cluster,
    pub registration_token: String,
}
