//! The rules a backend definition must follow. Each broken rule is its own error, whose message
//! names the field and the rule, so the API can answer 4xx with something a user can act on
//! (GPUStack answers a nameless 500 for some of these).

use thiserror::Error;

use super::catalog::RESERVED_NAMES;
use super::params::{ParamError, parse_params};
use super::shell::{SplitError, split_words};
use crate::api::backend::{BackendSource, InferenceBackendSpec, VersionConfig};

/// The suffix custom backends, and custom versions of built-in backends, must carry.
pub const CUSTOM_SUFFIX: &str = "-custom";

/// The frameworks a version may run on (GPUStack's list).
pub const FRAMEWORKS: &[&str] = &["cuda", "rocm", "cann", "dtk", "musa", "corex", "maca", "neuware", "hggc", "cpu"];

/// A broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValidationError {
    #[error("backend_name: must not be empty")]
    EmptyName,
    #[error("backend_name: may contain only letters, digits, '.', '_' and '-', at most 64 characters (got {name:?})")]
    InvalidName { name: String },
    #[error("backend_name: custom backend names must end with \"-custom\" (got {name:?})")]
    MissingCustomSuffix { name: String },
    #[error("is_built_in: must be true exactly when backend_source is built_in")]
    SourceMismatch,
    #[error("backend_name: {name:?} is already used by {existing:?} (names are unique regardless of case)")]
    DuplicateName { name: String, existing: String },
    #[error("backend_name: {name:?} is reserved by the built-in backend {built_in:?}")]
    ShadowsBuiltIn { name: String, built_in: String },
    #[error("backend_name: cannot change after creation (was {old:?}, got {new:?})")]
    NameChanged { old: String, new: String },
    #[error("backend {name:?}: {} backends cannot be deleted", source_label(*backend_source))]
    NotDeletable { name: String, backend_source: BackendSource },
    #[error("health_check_path: must start with \"/\" (got {path:?})")]
    InvalidHealthPath { path: String },
    #[error("version_configs: a backend needs at least one version")]
    NoVersions,
    #[error("version_configs: version names must not be blank")]
    BlankVersionName,
    #[error(
        "version_configs.{version}: versions added to a built-in backend must end with \"-custom\" (got {version:?})"
    )]
    MissingVersionSuffix { version: String },
    #[error(
        "version_configs.{version}.built_in_frameworks: only the built-in catalog provides versions with built_in_frameworks"
    )]
    CatalogVersionOnCustom { version: String },
    #[error("version_configs.{version}.image_name: every version needs an image_name")]
    MissingImage { version: String },
    #[error(
        "version_configs.{version}.custom_framework: every version needs a framework (one of {})",
        FRAMEWORKS.join(", ")
    )]
    MissingFramework { version: String },
    #[error(
        "version_configs.{version}.custom_framework: unknown framework {framework:?} (one of {})",
        FRAMEWORKS.join(", ")
    )]
    UnknownFramework { version: String, framework: String },
    #[error(
        "default_version: {version:?} is not one of the versions in version_configs ({}); set default_version to \
         one of them, or add a version_configs entry named {version:?}",
        known.join(", ")
    )]
    UnknownDefaultVersion { version: String, known: Vec<String> },
    #[error(
        "{field}: environment variable names must be letters, digits and '_', not starting with a digit (got {name:?})"
    )]
    InvalidEnvName { field: String, name: String },
    #[error("{field}: cannot be split into words: {source}")]
    InvalidCommand {
        field: String,
        #[source]
        source: SplitError,
    },
    #[error("default_backend_param: {0}")]
    InvalidParameter(#[source] ParamError),
    #[error(
        "{field}: set by the server (custom for backends created through the API; built_in or community for the catalog's) and cannot be changed"
    )]
    ServerOwned { field: &'static str },
    #[error(
        "{field}: maintained by the built-in catalog and cannot be changed on a built-in backend (editable: {})",
        BUILT_IN_EDITABLE.join(", ")
    )]
    ReadOnlyOnBuiltIn { field: &'static str },
    #[error(
        "version_configs.{version}: catalog versions of a built-in backend cannot be edited; add a version ending in \"-custom\" instead"
    )]
    CatalogVersionEdited { version: String },
}

/// What an operator may change on a built-in backend; everything else comes from the catalog.
pub const BUILT_IN_EDITABLE: &[&str] = &[
    "enabled",
    "description",
    "default_backend_param",
    "default_env",
    "common_parameters",
    "versions ending in \"-custom\"",
];

impl ValidationError {
    /// The offending field, as a path into the definition (`version_configs.v1.image_name`).
    pub fn field(&self) -> String {
        use ValidationError::*;
        match self {
            EmptyName
            | InvalidName { .. }
            | MissingCustomSuffix { .. }
            | DuplicateName { .. }
            | ShadowsBuiltIn { .. }
            | NameChanged { .. }
            | NotDeletable { .. } => "backend_name".to_owned(),
            SourceMismatch => "is_built_in".to_owned(),
            InvalidHealthPath { .. } => "health_check_path".to_owned(),
            NoVersions | BlankVersionName => "version_configs".to_owned(),
            MissingVersionSuffix { version } => format!("version_configs.{version}"),
            CatalogVersionOnCustom { version } => {
                format!("version_configs.{version}.built_in_frameworks")
            }
            MissingImage { version } => format!("version_configs.{version}.image_name"),
            MissingFramework { version } | UnknownFramework { version, .. } => {
                format!("version_configs.{version}.custom_framework")
            }
            UnknownDefaultVersion { .. } => "default_version".to_owned(),
            InvalidEnvName { field, .. } | InvalidCommand { field, .. } => field.clone(),
            InvalidParameter(_) => "default_backend_param".to_owned(),
            ServerOwned { field } | ReadOnlyOnBuiltIn { field } => (*field).to_owned(),
            CatalogVersionEdited { version } => format!("version_configs.{version}"),
        }
    }
}

fn source_label(source: BackendSource) -> &'static str {
    match source {
        BackendSource::BuiltIn => "built_in",
        BackendSource::Community => "community",
        BackendSource::Custom => "custom",
    }
}

/// Checks every rule that needs only the definition itself; the first broken one is returned.
pub fn validate_backend(spec: &InferenceBackendSpec) -> Result<(), ValidationError> {
    check_name(spec)?;
    if spec.is_built_in != (spec.backend_source == BackendSource::BuiltIn) {
        return Err(ValidationError::SourceMismatch);
    }
    if let Some(path) = &spec.health_check_path
        && !path.starts_with('/')
    {
        return Err(ValidationError::InvalidHealthPath { path: path.clone() });
    }
    check_versions(spec)?;
    check_default_version(spec)?;
    check_env("default_env", spec.default_env.keys())?;
    check_command("default_run_command", spec.default_run_command.as_deref())?;
    check_command("default_entrypoint", spec.default_entrypoint.as_deref())?;
    parse_params(&spec.default_backend_param).map_err(ValidationError::InvalidParameter)?;
    Ok(())
}

/// A new backend's name must not collide, regardless of case, with a stored backend's or a
/// built-in's. `existing` holds the names already stored (leave out the one being updated).
pub fn check_name_available<'a>(
    name: &str,
    existing: impl IntoIterator<Item = &'a str>,
) -> Result<(), ValidationError> {
    if let Some(built_in) = RESERVED_NAMES.iter().find(|b| b.eq_ignore_ascii_case(name)) {
        return Err(ValidationError::ShadowsBuiltIn { name: name.to_owned(), built_in: (*built_in).to_owned() });
    }
    match existing.into_iter().find(|e| e.eq_ignore_ascii_case(name)) {
        Some(existing) => Err(ValidationError::DuplicateName { name: name.to_owned(), existing: existing.to_owned() }),
        None => Ok(()),
    }
}

/// Only custom backends can be deleted.
pub fn check_deletable(spec: &InferenceBackendSpec) -> Result<(), ValidationError> {
    match spec.backend_source {
        BackendSource::Custom if !spec.is_built_in => Ok(()),
        source => Err(ValidationError::NotDeletable {
            name: spec.backend_name.clone(),
            backend_source: if spec.is_built_in { BackendSource::BuiltIn } else { source },
        }),
    }
}

/// An update keeps the backend's name.
pub fn check_update(old: &InferenceBackendSpec, new: &InferenceBackendSpec) -> Result<(), ValidationError> {
    if old.backend_name == new.backend_name {
        Ok(())
    } else {
        Err(ValidationError::NameChanged { old: old.backend_name.clone(), new: new.backend_name.clone() })
    }
}

fn check_name(spec: &InferenceBackendSpec) -> Result<(), ValidationError> {
    let name = &spec.backend_name;
    if name.trim().is_empty() {
        return Err(ValidationError::EmptyName);
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.len() > 64 || !name.chars().all(allowed) {
        return Err(ValidationError::InvalidName { name: name.clone() });
    }
    if spec.backend_source == BackendSource::Custom && !name.ends_with(CUSTOM_SUFFIX) {
        return Err(ValidationError::MissingCustomSuffix { name: name.clone() });
    }
    Ok(())
}

fn check_versions(spec: &InferenceBackendSpec) -> Result<(), ValidationError> {
    if spec.version_configs.is_empty() {
        return Err(ValidationError::NoVersions);
    }
    let built_in = spec.backend_source == BackendSource::BuiltIn;
    for (version, config) in &spec.version_configs {
        if version.trim().is_empty() {
            return Err(ValidationError::BlankVersionName);
        }
        match (config.is_catalog_version(), built_in) {
            (true, true) => {}
            (true, false) => {
                return Err(ValidationError::CatalogVersionOnCustom { version: version.clone() });
            }
            (false, true) if !version.ends_with(CUSTOM_SUFFIX) => {
                return Err(ValidationError::MissingVersionSuffix { version: version.clone() });
            }
            (false, _) => check_operator_version(version, config)?,
        }
    }
    Ok(())
}

/// A version written by an operator: image, known framework, env names, splittable commands.
fn check_operator_version(version: &str, config: &VersionConfig) -> Result<(), ValidationError> {
    if config.image_name.is_none() {
        return Err(ValidationError::MissingImage { version: version.to_owned() });
    }
    let Some(framework) = &config.custom_framework else {
        return Err(ValidationError::MissingFramework { version: version.to_owned() });
    };
    if !FRAMEWORKS.contains(&framework.as_str()) {
        return Err(ValidationError::UnknownFramework { version: version.to_owned(), framework: framework.clone() });
    }
    let field = |name: &str| format!("version_configs.{version}.{name}");
    check_env(&field("env"), config.env.keys())?;
    check_command(&field("run_command"), config.run_command.as_deref())?;
    check_command(&field("entrypoint"), config.entrypoint.as_deref())
}

fn check_default_version(spec: &InferenceBackendSpec) -> Result<(), ValidationError> {
    match &spec.default_version {
        Some(version) if !spec.version_configs.contains_key(version) => Err(ValidationError::UnknownDefaultVersion {
            version: version.clone(),
            known: spec.version_configs.keys().cloned().collect(),
        }),
        _ => Ok(()),
    }
}

/// An environment variable name: a letter or `_`, then letters, digits and `_`.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_env<'a>(field: &str, names: impl IntoIterator<Item = &'a String>) -> Result<(), ValidationError> {
    match names.into_iter().find(|name| !is_env_name(name)) {
        Some(name) => Err(ValidationError::InvalidEnvName { field: field.to_owned(), name: name.clone() }),
        None => Ok(()),
    }
}

fn check_command(field: &str, command: Option<&str>) -> Result<(), ValidationError> {
    match command.map(split_words) {
        Some(Err(source)) => Err(ValidationError::InvalidCommand { field: field.to_owned(), source }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::yaml::parse_backend_yaml;

    const VALID: &str = r"
backend_name: demo-custom
default_version: v1
default_run_command: serve {{model_path}} --port {{port}}
default_env: {LOG_LEVEL: info}
version_configs:
  v1:
    image_name: demo:v1
    custom_framework: cuda
";

    fn valid() -> InferenceBackendSpec {
        parse_backend_yaml(VALID).unwrap()
    }

    fn built_in() -> InferenceBackendSpec {
        let mut spec = InferenceBackendSpec::named("vLLM");
        spec.backend_source = BackendSource::BuiltIn;
        spec.is_built_in = true;
        spec.version_configs.insert(
            "0.11.0".to_owned(),
            VersionConfig { built_in_frameworks: vec!["cuda".to_owned()], ..VersionConfig::default() },
        );
        spec
    }

    fn version_mut(spec: &mut InferenceBackendSpec) -> &mut VersionConfig {
        spec.version_configs.values_mut().next().unwrap()
    }

    #[test]
    fn accepts_valid_definitions() {
        validate_backend(&valid()).unwrap();
        validate_backend(&built_in()).unwrap();
        let mut community = valid();
        community.backend_name = "llama.cpp".to_owned();
        community.backend_source = BackendSource::Community;
        validate_backend(&community).unwrap();
        let mut no_health = valid();
        no_health.health_check_path = None;
        validate_backend(&no_health).unwrap();
        let mut custom_version = built_in();
        custom_version.version_configs.insert(
            "0.12.0-custom".to_owned(),
            VersionConfig {
                image_name: Some("vllm/vllm-openai:v0.12.0".to_owned()),
                custom_framework: Some("cuda".to_owned()),
                ..VersionConfig::default()
            },
        );
        validate_backend(&custom_version).unwrap();
    }

    #[test]
    fn each_rule_has_its_own_error() {
        type Break = fn(&mut InferenceBackendSpec);
        let cases: Vec<(Break, &str, &str)> = vec![
            (|s| s.backend_name = " ".to_owned(), "backend_name", "backend_name: must not be empty"),
            (|s| s.backend_name = "a b-custom".to_owned(), "backend_name", "backend_name: may contain only"),
            (
                |s| s.backend_name = "TensorRT-LLM".to_owned(),
                "backend_name",
                "backend_name: custom backend names must end with \"-custom\" (got \"TensorRT-LLM\")",
            ),
            (
                |s| s.is_built_in = true,
                "is_built_in",
                "is_built_in: must be true exactly when backend_source is built_in",
            ),
            (
                |s| s.health_check_path = Some("health".to_owned()),
                "health_check_path",
                "health_check_path: must start with \"/\" (got \"health\")",
            ),
            (|s| s.version_configs.clear(), "version_configs", "version_configs: a backend needs at least one version"),
            (
                |s| {
                    let v = s.version_configs.remove("v1").unwrap();
                    s.version_configs.insert(" ".to_owned(), v);
                    s.default_version = None;
                },
                "version_configs",
                "version names must not be blank",
            ),
            (
                |s| version_mut(s).image_name = None,
                "version_configs.v1.image_name",
                "version_configs.v1.image_name: every version needs an image_name",
            ),
            (
                |s| version_mut(s).custom_framework = None,
                "version_configs.v1.custom_framework",
                "every version needs a framework (one of cuda, rocm,",
            ),
            (
                |s| version_mut(s).custom_framework = Some("CUDA12".to_owned()),
                "version_configs.v1.custom_framework",
                "unknown framework \"CUDA12\"",
            ),
            (
                |s| version_mut(s).built_in_frameworks = vec!["cuda".to_owned()],
                "version_configs.v1.built_in_frameworks",
                "only the built-in catalog provides",
            ),
            (
                |s| s.default_version = Some("v9".to_owned()),
                "default_version",
                "default_version: \"v9\" is not one of the versions in version_configs (v1); set default_version to \
                 one of them, or add a version_configs entry named \"v9\"",
            ),
            (
                |s| {
                    s.default_env.insert("A-B".to_owned(), "x".to_owned());
                },
                "default_env",
                "default_env: environment variable names",
            ),
            (
                |s| {
                    version_mut(s).env.insert("1X".to_owned(), "x".to_owned());
                },
                "version_configs.v1.env",
                "\"1X\"",
            ),
            (
                |s| s.default_run_command = Some("serve 'open".to_owned()),
                "default_run_command",
                "default_run_command: cannot be split into words: unterminated single quote",
            ),
            (
                |s| version_mut(s).entrypoint = Some("\"x".to_owned()),
                "version_configs.v1.entrypoint",
                "unterminated double quote",
            ),
            (
                |s| version_mut(s).run_command = Some("a\\".to_owned()),
                "version_configs.v1.run_command",
                "trailing backslash",
            ),
            (
                |s| s.default_backend_param = vec!["--x='a".to_owned()],
                "default_backend_param",
                "default_backend_param: backend parameter \"--x='a\"",
            ),
        ];
        for (break_rule, field, message) in cases {
            let mut spec = valid();
            break_rule(&mut spec);
            let err = validate_backend(&spec).unwrap_err();
            assert_eq!(err.field(), field, "{err}");
            assert!(err.to_string().contains(message), "{err:?} lacks {message:?}");
        }
    }

    #[test]
    fn built_in_versions_need_the_custom_suffix() {
        let mut spec = built_in();
        spec.version_configs.insert(
            "0.12.0".to_owned(),
            VersionConfig {
                image_name: Some("vllm/vllm-openai:v0.12.0".to_owned()),
                custom_framework: Some("cuda".to_owned()),
                ..VersionConfig::default()
            },
        );
        let err = validate_backend(&spec).unwrap_err();
        assert_eq!(
            err.to_string(),
            "version_configs.0.12.0: versions added to a built-in backend must end with \"-custom\" (got \"0.12.0\")"
        );
        assert_eq!(err.field(), "version_configs.0.12.0");
    }

    #[test]
    fn names_are_unique_regardless_of_case() {
        let existing = ["demo-custom", "llama.cpp"];
        let cases = [
            ("other-custom", None),
            ("DEMO-custom", Some("\"DEMO-custom\" is already used by \"demo-custom\"")),
            ("Llama.CPP", Some("already used by \"llama.cpp\"")),
            ("vllm", Some("\"vllm\" is reserved by the built-in backend \"vLLM\"")),
            ("custom", Some("reserved by the built-in backend \"Custom\"")),
            ("vLLM-custom", None),
        ];
        for (name, expected) in cases {
            let result = check_name_available(name, existing);
            match expected {
                None => assert_eq!(result, Ok(()), "{name}"),
                Some(message) => {
                    let err = result.unwrap_err();
                    assert_eq!(err.field(), "backend_name");
                    assert!(err.to_string().contains(message), "{err}");
                }
            }
        }
    }

    #[test]
    fn only_custom_backends_can_be_deleted() {
        check_deletable(&valid()).unwrap();
        let err = check_deletable(&built_in()).unwrap_err();
        assert_eq!(err.to_string(), "backend \"vLLM\": built_in backends cannot be deleted");
        let mut community = valid();
        community.backend_source = BackendSource::Community;
        assert!(check_deletable(&community).unwrap_err().to_string().contains("community backends cannot be deleted"));
    }

    #[test]
    fn names_cannot_change() {
        let old = valid();
        let mut new = valid();
        new.description = Some("edited".to_owned());
        check_update(&old, &new).unwrap();
        new.backend_name = "renamed-custom".to_owned();
        assert_eq!(
            check_update(&old, &new).unwrap_err().to_string(),
            "backend_name: cannot change after creation (was \"demo-custom\", got \"renamed-custom\")"
        );
    }
}
