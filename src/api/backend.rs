//! Inference backend wire types: GPUStack's `InferenceBackend` shape, field for field.
//!
//! The same types carry the backend YAML (`/from-yaml`, `ferrostack backend apply`) and the JSON
//! of the `/v2/inference-backends` API, so a GPUStack export imports unchanged. Unknown keys are
//! refused (a misspelled field is named, never silently dropped). `null` and empty strings read as
//! "not set", because GPUStack's own examples write `env:` and `default_backend_param:` with no
//! value.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// The health path a backend gets when its definition does not name one (OpenAI-compatible).
pub const DEFAULT_HEALTH_CHECK_PATH: &str = "/v1/models";

/// How `--key value` pairs are written when the launch command is assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParameterFormat {
    /// `--key value` (two argv items).
    Space,
    /// `--key=value` (one argv item).
    Equal,
}

/// Where a backend definition comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackendSource {
    /// Maintained by Ferrostack (vLLM, SGLang, MindIE, VoxBox); cannot be deleted.
    BuiltIn,
    /// From the embedded community catalog.
    Community,
    /// Written by an operator; the name must end with `-custom`.
    #[default]
    Custom,
}

/// One runnable version of a backend.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionConfig {
    /// Container image for this version (required for every version the operator defines).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "blank_as_none")]
    pub image_name: Option<String>,
    /// Version-specific command; `default_run_command` when not set.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "blank_as_none")]
    pub run_command: Option<String>,
    /// Version-specific entrypoint override; `default_entrypoint` when not set.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "blank_as_none")]
    pub entrypoint: Option<String>,
    /// The framework this version runs on (`cuda`, `rocm`, `cann`, `cpu`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "blank_as_none")]
    pub custom_framework: Option<String>,
    /// Frameworks a catalog-provided (built-in) version has images for.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub built_in_frameworks: Vec<String>,
    /// Environment for this version; overrides the backend's `default_env`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "null_as_default")]
    pub env: BTreeMap<String, String>,
}

impl VersionConfig {
    /// Whether this version comes from the built-in catalog rather than from an operator.
    pub fn is_catalog_version(&self) -> bool {
        !self.built_in_frameworks.is_empty()
    }

    /// The frameworks this version can run on: the operator's one, or the catalog's list.
    pub fn frameworks(&self) -> Vec<String> {
        match &self.custom_framework {
            Some(framework) => vec![framework.clone()],
            None => self.built_in_frameworks.clone(),
        }
    }
}

/// An inference backend definition, exactly as GPUStack's YAML and JSON spell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InferenceBackendSpec {
    /// Unique name; custom backends end with `-custom`. Cannot change after creation.
    pub backend_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "blank_as_none")]
    pub description: Option<String>,
    /// Path polled for readiness; `/v1/models` when not given, `null` for "always ready".
    #[serde(default = "default_health_check_path", deserialize_with = "blank_as_none")]
    pub health_check_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "blank_as_none")]
    pub default_version: Option<String>,
    /// Pre-filled backend parameters in the deploy form.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub default_backend_param: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "blank_as_none")]
    pub default_run_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "blank_as_none")]
    pub default_entrypoint: Option<String>,
    /// Environment for every version; a version's `env` overrides it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "null_as_default")]
    pub default_env: BTreeMap<String, String>,
    /// `space`, `equal`, or not set (parameters kept as entered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_format: Option<ParameterFormat>,
    /// Suggestions for the deploy form; no runtime effect.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub common_parameters: Vec<String>,
    #[serde(default = "yes", deserialize_with = "null_as_true")]
    pub enabled: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub backend_source: BackendSource,
    #[serde(default, deserialize_with = "null_as_default")]
    pub is_built_in: bool,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "blank_as_none")]
    pub icon: Option<String>,
    /// Versions by name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub version_configs: BTreeMap<String, VersionConfig>,
}

impl InferenceBackendSpec {
    /// A custom backend with nothing but a name; the starting point for tests and forms.
    pub fn named(backend_name: impl Into<String>) -> Self {
        Self {
            backend_name: backend_name.into(),
            description: None,
            health_check_path: default_health_check_path(),
            default_version: None,
            default_backend_param: Vec::new(),
            default_run_command: None,
            default_entrypoint: None,
            default_env: BTreeMap::new(),
            parameter_format: None,
            common_parameters: Vec::new(),
            enabled: true,
            backend_source: BackendSource::Custom,
            is_built_in: false,
            icon: None,
            version_configs: BTreeMap::new(),
        }
    }
}

/// A stored inference backend: metadata plus [`InferenceBackendSpec`]'s fields.
pub type InferenceBackend = crate::api::Record<InferenceBackendSpec>;

/// What creating or updating a backend answers: the backend, and `warnings` the operator should
/// read (each version whose engine answers anyone on the worker's network without a key). GPUStack
/// answers the backend alone; its clients ignore the extra field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InferenceBackendSaved {
    #[serde(flatten)]
    pub backend: InferenceBackend,
    pub warnings: Vec<String>,
}

/// Body of `POST /v2/inference-backends/from-yaml` and `PUT /v2/inference-backends/{id}/from-yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendYaml {
    /// The backend definition in GPUStack's YAML format.
    pub content: String,
}

/// Answer of `GET /v2/inference-backends/list`: the enabled backends in compact form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackendList {
    pub items: Vec<BackendListItem>,
}

/// One version in a [`BackendListItem`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VersionListItem {
    pub version: String,
    /// The frameworks this version runs on (`custom_framework`, or the catalog's list).
    pub frameworks: Vec<String>,
    #[serde(default)]
    pub is_deprecated: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// The compact form served by `GET /v2/inference-backends/list` (GPUStack's
/// `InferenceBackendListItem`, plus the health path and each version's frameworks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackendListItem {
    pub backend_name: String,
    pub is_built_in: bool,
    pub backend_source: BackendSource,
    pub enabled: bool,
    pub default_version: Option<String>,
    pub default_backend_param: Vec<String>,
    pub default_env: BTreeMap<String, String>,
    pub parameter_format: Option<ParameterFormat>,
    pub common_parameters: Vec<String>,
    pub health_check_path: Option<String>,
    pub versions: Vec<VersionListItem>,
}

impl From<&InferenceBackendSpec> for BackendListItem {
    fn from(spec: &InferenceBackendSpec) -> Self {
        let versions = spec
            .version_configs
            .iter()
            .map(|(version, config)| VersionListItem {
                version: version.clone(),
                frameworks: config.frameworks(),
                is_deprecated: false,
                env: config.env.clone(),
            })
            .collect();
        Self {
            backend_name: spec.backend_name.clone(),
            is_built_in: spec.is_built_in,
            backend_source: spec.backend_source,
            enabled: spec.enabled,
            default_version: spec.default_version.clone(),
            default_backend_param: spec.default_backend_param.clone(),
            default_env: spec.default_env.clone(),
            parameter_format: spec.parameter_format,
            common_parameters: spec.common_parameters.clone(),
            health_check_path: spec.health_check_path.clone(),
            versions,
        }
    }
}

fn default_health_check_path() -> Option<String> {
    Some(DEFAULT_HEALTH_CHECK_PATH.to_owned())
}

fn yes() -> bool {
    true
}

/// `null`, a missing value and `""` all mean "not set".
fn blank_as_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let value = Option::<String>::deserialize(d)?;
    Ok(value.filter(|s| !s.trim().is_empty()))
}

/// `null` reads as the type's default (an empty list or map).
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn null_as_true<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(true))
}
