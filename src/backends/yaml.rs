//! Backend definitions as YAML: GPUStack's format in, a deterministic rendering out.
//!
//! Parsing only checks the shape (known keys, types, YAML syntax); the rules live in
//! [`super::validate`]. Every error says where: the key path and the line/column.

use std::fmt;

use thiserror::Error;

use crate::api::backend::InferenceBackendSpec;

/// A position in the YAML text (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a YAML backend definition could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum YamlError {
    #[error("the YAML document is empty; expected a backend definition with backend_name")]
    Empty,
    #[error("{field}: unknown key {key:?} ({position}); allowed keys: {allowed}")]
    UnknownKey {
        /// Where the key sits (`.` for the top level, e.g. `version_configs.v1`).
        field: String,
        key: String,
        position: Position,
        allowed: String,
    },
    #[error("{field}: {message} ({position})")]
    InvalidValue { field: String, message: String, position: Position },
    #[error("YAML syntax error at {position}: {message}")]
    Syntax { message: String, position: Position },
    #[error("YAML: {message}")]
    Other { message: String },
    #[error("{message}")]
    Unsupported { field: String, message: String },
    #[error("cannot render the backend as YAML: {message}")]
    Export { message: String },
}

/// Parses one backend definition in GPUStack's YAML format.
pub fn parse_backend_yaml(text: &str) -> Result<InferenceBackendSpec, YamlError> {
    if is_blank_document(text) {
        return Err(YamlError::Empty);
    }
    let mut failed_at: Option<String> = None;
    let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|err| {
            failed_at = Some(err.path().to_string());
            err.into_inner()
        })
    });
    parsed.map_err(|err| classify(&err, failed_at))
}

/// Parses a backend definition as GPUStack writes it, exported from its API included: read-only and
/// neutral GPUStack fields (`source_name`, `id`, …) are dropped and nulls mean defaults
/// ([`crate::api::compat`]). A definition the strict parser refuses and this one cannot read
/// either is answered with the strict parser's error, which says where.
pub fn parse_gpustack_backend_yaml(text: &str) -> Result<InferenceBackendSpec, YamlError> {
    let strict = match parse_backend_yaml(text) {
        Ok(spec) => return Ok(spec),
        Err(e) => e,
    };
    let Ok(mut value) = serde_saphyr::from_str::<serde_json::Value>(text) else { return Err(strict) };
    if let Err(refused) = crate::api::compat::normalize::<InferenceBackendSpec>(&mut value) {
        return Err(YamlError::Unsupported { field: refused.field, message: refused.message });
    }
    serde_json::from_value(value).map_err(|_| strict)
}

/// Renders a backend definition as YAML: fixed key order, maps sorted, unset fields left out.
pub fn to_backend_yaml(spec: &InferenceBackendSpec) -> Result<String, YamlError> {
    serde_saphyr::to_string(spec).map_err(|err| YamlError::Export { message: err.to_string() })
}

fn is_blank_document(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---" || line == "..."
    })
}

/// Turns the parser's error into one that names the field, or the position of a syntax error.
fn classify(err: &serde_saphyr::Error, path: Option<String>) -> YamlError {
    let plain = err.without_snippet();
    let position = plain.location().map(|l| Position { line: l.line(), column: l.column() });
    let message = strip_location(&plain.to_string());
    let path = path.filter(|_| !is_syntax_error(plain));
    match (path, position) {
        (Some(field), Some(position)) => {
            if let Some(key) = quoted_after(&message, "missing field `") {
                YamlError::InvalidValue {
                    field: join_path(&field, &key),
                    message: "required key is missing".to_owned(),
                    position,
                }
            } else if let Some(key) = message.strip_prefix("duplicate mapping key: ") {
                let key = key.split(',').next().unwrap_or_default();
                YamlError::InvalidValue { field: key.to_owned(), message: "duplicate key".to_owned(), position }
            } else if let Some((key, allowed)) = unknown_key(&message) {
                YamlError::UnknownKey { field: parent_of(&field, &key), key, position, allowed }
            } else {
                YamlError::InvalidValue { field: display_path(&field), message: friendly(message), position }
            }
        }
        (None, Some(position)) => YamlError::Syntax { message, position },
        (_, None) => YamlError::Other { message },
    }
}

fn is_syntax_error(err: &serde_saphyr::Error) -> bool {
    matches!(
        err,
        serde_saphyr::Error::ExternalMessage { source, .. }
            if matches!(**source, serde_saphyr::ExternalMessageSource::Parser(_))
    )
}

/// The text between `prefix` and the next backtick, e.g. the key of "missing field `x`".
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    rest.split_once('`').map(|(key, _)| key.to_owned())
}

/// Plain words for the parser's event names.
fn friendly(message: String) -> String {
    match message.as_str() {
        "expected string scalar" => "expected a string".to_owned(),
        "expected sequence start" => "expected a list".to_owned(),
        "expected mapping start" => "expected a mapping".to_owned(),
        _ => message,
    }
}

/// serde's wording is "unknown field `x`, expected one of `a`, `b`".
fn unknown_key(message: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let allowed = rest
        .trim_start_matches(", ")
        .trim_start_matches("expected one of ")
        .trim_start_matches("expected ")
        .replace('`', "");
    Some((key.to_owned(), allowed))
}

/// serde_path_to_error ends the path with the unknown key itself; report its parent.
fn parent_of(path: &str, key: &str) -> String {
    let parent = path.strip_suffix(key).map(|p| p.trim_end_matches('.')).unwrap_or(path);
    display_path(parent)
}

fn join_path(parent: &str, key: &str) -> String {
    match display_path(parent).as_str() {
        "." => key.to_owned(),
        parent => format!("{parent}.{key}"),
    }
}

fn display_path(path: &str) -> String {
    if path.is_empty() || path == "." { ".".to_owned() } else { path.to_owned() }
}

/// The parser appends " at line X, column Y"; the position is reported separately.
fn strip_location(message: &str) -> String {
    let first_line = message.lines().next().unwrap_or_default();
    match first_line.rfind(" at line ") {
        Some(index) => first_line[..index].to_owned(),
        None => first_line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::api::backend::{BackendSource, ParameterFormat, VersionConfig};

    const FULL: &str = r#"
backend_name: demo-custom
description: A demo
health_check_path: /health
default_version: v2
default_backend_param:
  - --max-model-len
  - "8192"
default_run_command: 'serve {{model_path}} --port {{port}}'
default_entrypoint: /usr/bin/env
default_env:
  A: "1"
parameter_format: equal
common_parameters: [--ctx-size]
enabled: false
icon: https://example.com/i.png
version_configs:
  v1:
    image_name: demo:v1
    custom_framework: cuda
    env:
      B: two
  v2:
    image_name: demo:v2
    run_command: serve2
    entrypoint: /init
    custom_framework: rocm
"#;

    #[test]
    fn parses_every_field() {
        let spec = parse_backend_yaml(FULL).unwrap();
        assert_eq!(spec.backend_name, "demo-custom");
        assert_eq!(spec.description.as_deref(), Some("A demo"));
        assert_eq!(spec.health_check_path.as_deref(), Some("/health"));
        assert_eq!(spec.default_version.as_deref(), Some("v2"));
        assert_eq!(spec.default_backend_param, ["--max-model-len", "8192"]);
        assert_eq!(spec.default_run_command.as_deref(), Some("serve {{model_path}} --port {{port}}"));
        assert_eq!(spec.default_entrypoint.as_deref(), Some("/usr/bin/env"));
        assert_eq!(spec.default_env["A"], "1");
        assert_eq!(spec.parameter_format, Some(ParameterFormat::Equal));
        assert_eq!(spec.common_parameters, ["--ctx-size"]);
        assert!(!spec.enabled);
        assert_eq!(spec.backend_source, BackendSource::Custom);
        assert!(!spec.is_built_in);
        assert_eq!(spec.icon.as_deref(), Some("https://example.com/i.png"));
        let v1 = &spec.version_configs["v1"];
        assert_eq!(v1.image_name.as_deref(), Some("demo:v1"));
        assert_eq!(v1.custom_framework.as_deref(), Some("cuda"));
        assert_eq!(v1.env["B"], "two");
        let v2 = &spec.version_configs["v2"];
        assert_eq!(v2.run_command.as_deref(), Some("serve2"));
        assert_eq!(v2.entrypoint.as_deref(), Some("/init"));
    }

    #[test]
    fn defaults_and_blank_values() {
        let cases: &[(&str, Option<&str>)] = &[
            ("backend_name: a-custom\n", Some("/v1/models")),
            ("backend_name: a-custom\nhealth_check_path: null\n", None),
            ("backend_name: a-custom\nhealth_check_path: ''\n", None),
            ("backend_name: a-custom\nhealth_check_path:\n", None),
            ("backend_name: a-custom\nhealth_check_path: /info\n", Some("/info")),
        ];
        for (text, health) in cases {
            let spec = parse_backend_yaml(text).unwrap();
            assert_eq!(spec.health_check_path.as_deref(), *health, "{text}");
            assert!(spec.enabled);
            assert!(spec.version_configs.is_empty());
        }
        let spec = parse_backend_yaml(
            "backend_name: a-custom\ndefault_backend_param:\nenabled:\nversion_configs:\n  v1:\n    entrypoint:\n    env:\n",
        )
        .unwrap();
        assert!(spec.default_backend_param.is_empty());
        assert!(spec.enabled);
        assert_eq!(spec.version_configs["v1"], VersionConfig::default());
    }

    #[test]
    fn scalars_that_look_like_numbers_stay_strings() {
        let spec = parse_backend_yaml(
            "backend_name: a-custom\ndefault_version: 1.0\nversion_configs:\n  1.0:\n    image_name: x:1\n    custom_framework: cpu\n",
        )
        .unwrap();
        assert_eq!(spec.default_version.as_deref(), Some("1.0"));
        assert!(spec.version_configs.contains_key("1.0"));
        let spec = parse_backend_yaml("backend_name: a-custom\ndefault_env: {PORT: 8080, ON: true}\n").unwrap();
        assert_eq!(spec.default_env["PORT"], "8080");
        assert_eq!(spec.default_env["ON"], "true");
    }

    #[test]
    fn refuses_bad_documents_naming_the_field() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("# only a comment\n", "empty"),
            ("backend_name: a-custom\nbackend_nam: x\n", ".: unknown key \"backend_nam\" (line 2, column 1)"),
            (
                "backend_name: a-custom\nversion_configs:\n  v1:\n    image: x\n",
                "version_configs.v1: unknown key \"image\" (line 4, column 5)",
            ),
            ("default_version: v1\n", "backend_name: required key is missing"),
            ("backend_name: [a, b]\n", "backend_name: expected a string"),
            ("backend_name: a-custom\nparameter_format: colon\n", "parameter_format: "),
            ("backend_name: a-custom\ndefault_backend_param: --x\n", "default_backend_param: expected a list"),
            ("backend_name: a-custom\nenabled: maybe\n", "enabled: "),
            ("backend_name: a-custom\nversion_configs:\n  v1:\n    env:\n      A: [1]\n", "version_configs.v1.env.A: "),
            ("backend_name: 'a\n", "YAML syntax error at line"),
            ("backend_name: a\n  bad: indent\n", "line 2"),
            ("backend_name: a-custom\nbackend_name: b-custom\n", "backend_name: duplicate key (line 2, column 1)"),
            ("- a\n- b\n", ".: expected a mapping (line 1, column 1)"),
        ];
        for (text, expected) in cases {
            let err = parse_backend_yaml(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err:?} lacks {expected:?}");
        }
    }

    #[test]
    fn export_is_deterministic_and_round_trips() {
        let spec = parse_backend_yaml(FULL).unwrap();
        let first = to_backend_yaml(&spec).unwrap();
        assert_eq!(first, to_backend_yaml(&spec).unwrap());
        let again = parse_backend_yaml(&first).unwrap();
        assert_eq!(again, spec);
        assert_eq!(to_backend_yaml(&again).unwrap(), first);
    }

    #[test]
    fn export_keeps_an_absent_health_path() {
        let mut spec = InferenceBackendSpec::named("quiet-custom");
        spec.health_check_path = None;
        let text = to_backend_yaml(&spec).unwrap();
        assert_eq!(parse_backend_yaml(&text).unwrap(), spec);
    }

    fn text() -> impl Strategy<Value = String> {
        // Printable text including YAML-significant characters, never blank.
        "[ -~]{0,12}[!-~]".prop_map(|s| s)
    }

    fn version() -> impl Strategy<Value = VersionConfig> {
        (
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::collection::btree_map(text(), text(), 0..3),
        )
            .prop_map(|(image_name, run_command, entrypoint, custom_framework, env)| VersionConfig {
                image_name,
                run_command,
                entrypoint,
                custom_framework,
                built_in_frameworks: Vec::new(),
                env,
            })
    }

    fn spec() -> impl Strategy<Value = InferenceBackendSpec> {
        (
            text(),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::collection::vec(text(), 0..3),
            proptest::collection::btree_map(text(), text(), 0..3),
            proptest::option::of(prop_oneof![Just(ParameterFormat::Space), Just(ParameterFormat::Equal)]),
            any::<bool>(),
            proptest::collection::btree_map(text(), version(), 0..3),
        )
            .prop_map(|(name, health, command, params, env, format, enabled, versions)| {
                let mut spec = InferenceBackendSpec::named(name);
                spec.health_check_path = health;
                spec.default_run_command = command;
                spec.default_backend_param = params;
                spec.default_env = env;
                spec.parameter_format = format;
                spec.enabled = enabled;
                spec.version_configs = versions;
                spec
            })
    }

    proptest! {
        #[test]
        fn any_spec_round_trips(spec in spec()) {
            let text = to_backend_yaml(&spec).unwrap();
            let back = parse_backend_yaml(&text);
            prop_assert_eq!(back.as_ref(), Ok(&spec), "exported:\n{}", text);
        }

        #[test]
        fn random_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse_backend_yaml(&text);
        }

        #[test]
        fn random_yamlish_text_never_panics(
            lines in proptest::collection::vec("[ a-z_:{}\\[\\]'\"#|>-]{0,20}", 0..10)
        ) {
            let _ = parse_backend_yaml(&lines.join("\n"));
        }
    }

    #[test]
    fn unknown_key_parsing() {
        assert_eq!(
            unknown_key("unknown field `x`, expected one of `a`, `b`"),
            Some(("x".to_owned(), "a, b".to_owned()))
        );
        assert_eq!(unknown_key("invalid type"), None);
    }
}
