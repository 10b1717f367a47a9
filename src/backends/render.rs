//! Command rendering: from a backend, a version and a placement to the argv and environment of the
//! process or container that serves the model.
//!
//! The command template is split into words first and placeholders are substituted inside each
//! word, so a value (a model path with spaces, a model name) is always exactly one argument and can
//! never inject flags. GPUStack substitutes before splitting; for values without spaces or quotes
//! the result is the same. An unknown `{{name}}` is an error, never a literal.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use thiserror::Error;

use super::params::{ParamError, normalize_params};
use super::shell::{SplitError, split_words};
use crate::api::backend::{InferenceBackendSpec, VersionConfig};

/// The placeholders every command may use, besides environment variables.
pub const BUILT_IN_PLACEHOLDERS: &[&str] = &["model_path", "model_name", "port", "worker_ip", "gpu_count", "gpu_ids"];

/// Where the instance was placed: the values of the built-in placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderContext<'a> {
    /// Absolute path of the downloaded model file or directory.
    pub model_path: &'a str,
    pub model_name: &'a str,
    pub port: u16,
    pub worker_ip: &'a str,
    /// Indexes of the GPUs assigned on the worker.
    pub gpu_ids: &'a [u32],
}

/// What the deployment asks for on top of the backend definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeploymentOverrides<'a> {
    /// The version to run; the backend's default (or its highest version) when `None`.
    pub version: Option<&'a str>,
    /// Replaces the version's and the backend's run command.
    pub run_command: Option<&'a str>,
    /// Overrides the version's and the backend's environment.
    pub env: Option<&'a BTreeMap<String, String>>,
    /// The user's backend parameters, appended after the command.
    pub backend_parameters: &'a [String],
}

/// The rendered launch: what to run and with which environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedCommand {
    /// The version that was resolved.
    pub version: String,
    /// Replaces the image's ENTRYPOINT when not empty.
    pub entrypoint: Vec<String>,
    /// The rendered run command followed by the backend parameters.
    pub args: Vec<String>,
    /// default_env, then the version's env, then the deployment's (later wins).
    pub env: BTreeMap<String, String>,
}

impl RenderedCommand {
    /// The full argv for a host process: entrypoint then args.
    pub fn process_argv(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.args).cloned().collect()
    }

    /// The program a host process runs: the entrypoint's first word, else the command's.
    pub fn program(&self) -> Option<&str> {
        self.entrypoint.first().or_else(|| self.args.first()).map(String::as_str)
    }
}

/// Why a command could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RenderError {
    #[error("backend {backend:?} has no versions")]
    NoVersions { backend: String },
    #[error("version: backend {backend:?} has no version {version:?} (known: {})", known.join(", "))]
    UnknownVersion { backend: String, version: String, known: Vec<String> },
    #[error(
        "{field}: unknown placeholder {{{{{placeholder}}}}}; use one of {} or a variable from the environment ({})",
        BUILT_IN_PLACEHOLDERS.join(", "),
        if env.is_empty() { "none set".to_owned() } else { env.join(", ") }
    )]
    UnknownPlaceholder { field: String, placeholder: String, env: Vec<String> },
    #[error("{field}: cannot be split into words: {source}")]
    Split {
        field: String,
        #[source]
        source: SplitError,
    },
    #[error(transparent)]
    Params(#[from] ParamError),
}

/// Renders the launch command of `spec` for one placement.
pub fn render_command(
    spec: &InferenceBackendSpec,
    overrides: &DeploymentOverrides<'_>,
    ctx: &RenderContext<'_>,
) -> Result<RenderedCommand, RenderError> {
    let (version, config) = resolve_version(spec, overrides.version)?;
    let env = merged_env(spec, config, overrides.env);
    let vars = Placeholders { ctx, env: &env };

    let (command_field, command) = pick_run_command(spec, config, overrides.run_command);
    let (entrypoint_field, entrypoint) = pick_entrypoint(spec, config);
    let mut args = render_words(command_field, command, &vars)?;
    args.extend(normalize_params(overrides.backend_parameters, spec.parameter_format)?);
    Ok(RenderedCommand {
        version: version.to_owned(),
        entrypoint: render_words(entrypoint_field, entrypoint, &vars)?,
        args,
        env,
    })
}

/// The version to run: the requested one, else `default_version`, else the highest version.
pub fn resolve_version<'s>(
    spec: &'s InferenceBackendSpec,
    requested: Option<&str>,
) -> Result<(&'s str, &'s VersionConfig), RenderError> {
    let wanted = requested.or(spec.default_version.as_deref());
    let found = match wanted {
        Some(name) => spec.version_configs.get_key_value(name),
        None => spec.version_configs.iter().max_by(|a, b| compare_versions(a.0, b.0)),
    };
    match (found, wanted) {
        (Some((name, config)), _) => Ok((name.as_str(), config)),
        (None, Some(name)) => Err(RenderError::UnknownVersion {
            backend: spec.backend_name.clone(),
            version: name.to_owned(),
            known: spec.version_configs.keys().cloned().collect(),
        }),
        (None, None) => Err(RenderError::NoVersions { backend: spec.backend_name.clone() }),
    }
}

/// The environment: backend `default_env` < version `env` < deployment env.
pub fn merged_env(
    spec: &InferenceBackendSpec,
    version: &VersionConfig,
    deployment: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let layers = [Some(&spec.default_env), Some(&version.env), deployment];
    layers.into_iter().flatten().flat_map(|layer| layer.iter()).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Orders versions by their numeric parts (`0.10.0` > `0.9.2`); a letter suffix marks a
/// pre-release (`0.10.0rc1` < `0.10.0`); ties are broken by the text.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (pa, pb) = (version_parts(a), version_parts(b));
    let common = pa.iter().zip(&pb).map(|(x, y)| x.cmp(y)).find(|o| o.is_ne());
    common
        .unwrap_or_else(|| match (pa.get(pb.len()), pb.get(pa.len())) {
            (Some(extra), None) => suffix_order(extra),
            (None, Some(extra)) => suffix_order(extra).reverse(),
            _ => Ordering::Equal,
        })
        .then_with(|| a.cmp(b))
}

/// How a version with an extra trailing part compares with the same version without it.
fn suffix_order(extra: &VersionPart) -> Ordering {
    match extra {
        VersionPart::Text(text) if text.starts_with(|c: char| c.is_ascii_alphabetic()) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum VersionPart {
    Text(String),
    Number(u64),
}

fn version_parts(version: &str) -> Vec<VersionPart> {
    let mut parts = Vec::new();
    let mut rest = version.trim_start_matches(['v', 'V']);
    while let Some(c) = rest.chars().next() {
        let digits = c.is_ascii_digit();
        let end = rest.find(|ch: char| ch.is_ascii_digit() != digits).unwrap_or(rest.len());
        let (chunk, tail) = rest.split_at(end);
        parts.push(match chunk.parse::<u64>() {
            Ok(n) if digits => VersionPart::Number(n),
            _ => VersionPart::Text(chunk.to_owned()),
        });
        rest = tail;
    }
    parts
}

/// Deployment override, then the version's command, then the backend's default.
fn pick_run_command<'s>(
    spec: &'s InferenceBackendSpec,
    version: &'s VersionConfig,
    deployment: Option<&'s str>,
) -> (&'static str, Option<&'s str>) {
    let deployment = deployment.filter(|c| !c.trim().is_empty());
    match (deployment, &version.run_command, &spec.default_run_command) {
        (Some(command), _, _) => ("run_command", Some(command)),
        (None, Some(command), _) => ("version_configs.run_command", Some(command)),
        (None, None, default) => ("default_run_command", default.as_deref()),
    }
}

/// The version's entrypoint, else the backend's default.
fn pick_entrypoint<'s>(spec: &'s InferenceBackendSpec, version: &'s VersionConfig) -> (&'static str, Option<&'s str>) {
    match &version.entrypoint {
        Some(entrypoint) => ("version_configs.entrypoint", Some(entrypoint)),
        None => ("default_entrypoint", spec.default_entrypoint.as_deref()),
    }
}

struct Placeholders<'a> {
    ctx: &'a RenderContext<'a>,
    env: &'a BTreeMap<String, String>,
}

impl Placeholders<'_> {
    fn get(&self, name: &str) -> Option<String> {
        let ctx = self.ctx;
        let value = match name {
            "model_path" => ctx.model_path.to_owned(),
            "model_name" => ctx.model_name.to_owned(),
            "port" => ctx.port.to_string(),
            "worker_ip" => ctx.worker_ip.to_owned(),
            "gpu_count" => ctx.gpu_ids.len().to_string(),
            "gpu_ids" => gpu_id_list(ctx.gpu_ids),
            _ => return self.env.get(name).cloned(),
        };
        Some(value)
    }
}

fn gpu_id_list(ids: &[u32]) -> String {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn render_words(field: &str, template: Option<&str>, vars: &Placeholders<'_>) -> Result<Vec<String>, RenderError> {
    let Some(template) = template else {
        return Ok(Vec::new());
    };
    let words = split_words(&tighten_placeholders(template))
        .map_err(|source| RenderError::Split { field: field.to_owned(), source })?;
    words.iter().map(|word| substitute(field, word, vars)).collect()
}

/// Rewrites `{{ name }}` as `{{name}}` so that splitting keeps a placeholder in one word.
fn tighten_placeholders(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        out.push_str(&rest[..start + 2]);
        rest = match after.split_once("}}") {
            Some((inner, tail)) if is_identifier(inner.trim()) => {
                out.push_str(inner.trim());
                out.push_str("}}");
                tail
            }
            _ => after,
        };
    }
    out.push_str(rest);
    out
}

/// Replaces each `{{name}}` (spaces inside the braces allowed) in one word.
fn substitute(field: &str, word: &str, vars: &Placeholders<'_>) -> Result<String, RenderError> {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some((name, tail)) =
            after.split_once("}}").map(|(inner, tail)| (inner.trim(), tail)).filter(|(name, _)| is_identifier(name))
        else {
            // Not a placeholder (e.g. JSON): keep the braces and go on after them.
            out.push_str(&rest[..start + 2]);
            rest = after;
            continue;
        };
        out.push_str(&rest[..start]);
        let value = vars.get(name).ok_or_else(|| RenderError::UnknownPlaceholder {
            field: field.to_owned(),
            placeholder: name.to_owned(),
            env: vars.env.keys().cloned().collect(),
        })?;
        out.push_str(&value);
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::api::backend::ParameterFormat;
    use crate::backends::yaml::parse_backend_yaml;

    const CTX: RenderContext<'static> = RenderContext {
        model_path: "/data/models/qwen",
        model_name: "qwen",
        port: 40123,
        worker_ip: "10.0.0.7",
        gpu_ids: &[3, 1],
    };

    fn backend(command: &str) -> InferenceBackendSpec {
        let mut spec = InferenceBackendSpec::named("t-custom");
        spec.default_run_command = Some(command.to_owned());
        spec.version_configs.insert(
            "v1".to_owned(),
            VersionConfig {
                image_name: Some("img:v1".to_owned()),
                custom_framework: Some("cpu".to_owned()),
                ..VersionConfig::default()
            },
        );
        spec
    }

    fn render(spec: &InferenceBackendSpec) -> Result<RenderedCommand, RenderError> {
        render_command(spec, &DeploymentOverrides::default(), &CTX)
    }

    #[test]
    fn substitutes_each_placeholder() {
        let cases = [
            ("{{model_path}}", "/data/models/qwen"),
            ("{{model_name}}", "qwen"),
            ("{{port}}", "40123"),
            ("{{worker_ip}}", "10.0.0.7"),
            ("{{gpu_count}}", "2"),
            ("{{gpu_ids}}", "1,3"),
            ("{{ port }}", "40123"),
            ("--port={{port}}", "--port=40123"),
            ("{{worker_ip}}:{{port}}", "10.0.0.7:40123"),
            ("{{FOO}}", "bar"),
            ("{}", "{}"),
            ("{{not a name}}", "{{not a name}}"),
            ("{{", "{{"),
            ("}}", "}}"),
            (r#"{"a":{"b":1}}"#, r#"{"a":{"b":1}}"#),
        ];
        for (template, expected) in cases {
            let mut spec = backend(&format!("'{template}'"));
            spec.default_env.insert("FOO".to_owned(), "bar".to_owned());
            let rendered = render(&spec).unwrap();
            assert_eq!(rendered.args, [expected], "{template}");
        }
    }

    #[test]
    fn unknown_placeholders_are_errors() {
        let cases =
            [("serve {{model}}", "model"), ("serve {{MODEL_PATH}}", "MODEL_PATH"), ("serve {{ CACHE }}", "CACHE")];
        for (template, placeholder) in cases {
            let err = render(&backend(template)).unwrap_err();
            assert!(
                matches!(&err, RenderError::UnknownPlaceholder { placeholder: p, field, .. }
                    if p == placeholder && field == "default_run_command"),
                "{template}: {err}"
            );
            let message = err.to_string();
            assert!(message.contains(&format!("{{{{{placeholder}}}}}")), "{message}");
        }
    }

    #[test]
    fn splits_like_a_shell_and_keeps_values_whole() {
        let cases: &[(&str, &[&str])] = &[
            ("a  b", &["a", "b"]),
            ("a 'b c' \"d e\"", &["a", "b c", "d e"]),
            ("a \\\n  b", &["a", "b"]),
            ("serve --cfg '{\"x\": [1, 2]}'", &["serve", "--cfg", "{\"x\": [1, 2]}"]),
            ("a && b", &["a", "&&", "b"]),
            ("serve {{SPACED}}", &["serve", "a b"]),
        ];
        for (template, expected) in cases {
            let mut spec = backend(template);
            spec.default_env.insert("SPACED".to_owned(), "a b".to_owned());
            assert_eq!(render(&spec).unwrap().args, *expected, "{template}");
        }
        let err = render(&backend("serve 'open")).unwrap_err();
        assert!(err.to_string().starts_with("default_run_command: cannot be split"));
    }

    #[test]
    fn run_command_precedence() {
        let mut spec = backend("default");
        let version_only = |spec: &mut InferenceBackendSpec, command: Option<&str>| {
            if let Some(v) = spec.version_configs.get_mut("v1") {
                v.run_command = command.map(str::to_owned);
            }
        };
        let render_with = |spec: &InferenceBackendSpec, deployment: Option<&str>| {
            let overrides = DeploymentOverrides { run_command: deployment, ..DeploymentOverrides::default() };
            render_command(spec, &overrides, &CTX).unwrap().args
        };
        assert_eq!(render_with(&spec, None), ["default"]);
        version_only(&mut spec, Some("version"));
        assert_eq!(render_with(&spec, None), ["version"]);
        assert_eq!(render_with(&spec, Some("deployment")), ["deployment"]);
        assert_eq!(render_with(&spec, Some("  ")), ["version"]);
        spec.default_run_command = None;
        version_only(&mut spec, None);
        assert!(render_with(&spec, None).is_empty());
    }

    #[test]
    fn environment_precedence() {
        let mut spec = backend("serve {{A}} {{B}} {{C}}");
        spec.default_env = [("A", "backend"), ("B", "backend"), ("C", "backend")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        if let Some(v) = spec.version_configs.get_mut("v1") {
            v.env.insert("B".to_owned(), "version".to_owned());
            v.env.insert("C".to_owned(), "version".to_owned());
        }
        let deployment = BTreeMap::from([("C".to_owned(), "deployment".to_owned())]);
        let overrides = DeploymentOverrides { env: Some(&deployment), ..DeploymentOverrides::default() };
        let rendered = render_command(&spec, &overrides, &CTX).unwrap();
        assert_eq!(rendered.args, ["serve", "backend", "version", "deployment"]);
        assert_eq!(rendered.env["C"], "deployment");
        assert_eq!(rendered.env.len(), 3);
    }

    #[test]
    fn built_in_placeholders_win_over_environment() {
        let mut spec = backend("{{port}}");
        spec.default_env.insert("port".to_owned(), "1".to_owned());
        assert_eq!(render(&spec).unwrap().args, ["40123"]);
    }

    #[test]
    fn environment_variable_example() {
        let spec = parse_backend_yaml(
            r"
backend_name: advanced-backend-custom
default_env:
  CACHE_DIR: /models/cache
  LOG_LEVEL: info
version_configs:
  v1:
    image_name: my-backend:v1
    custom_framework: cuda
    run_command: 'serve {{model_path}} --cache {{CACHE_DIR}} --log-level {{LOG_LEVEL}} --port {{port}}'
    env:
      LOG_LEVEL: debug
",
        )
        .unwrap();
        let rendered = render(&spec).unwrap();
        assert_eq!(
            rendered.args,
            ["serve", "/data/models/qwen", "--cache", "/models/cache", "--log-level", "debug", "--port", "40123"]
        );
        assert_eq!(rendered.env["LOG_LEVEL"], "debug");
        assert_eq!(rendered.env["CACHE_DIR"], "/models/cache");
    }

    #[test]
    fn entrypoint_example() {
        let spec = parse_backend_yaml(
            r"
backend_name: custom-entry-backend-custom
default_entrypoint: /usr/local/bin/default-init
version_configs:
  v1:
    image_name: my-backend:v1
    custom_framework: cuda
    run_command: 'serve {{model_path}} --port {{port}}'
  v2:
    image_name: my-backend:v2
    custom_framework: cuda
    entrypoint: /usr/local/bin/v2-init
    run_command: 'serve {{model_path}} --port {{port}}'
",
        )
        .unwrap();
        for (version, entrypoint) in [("v1", "/usr/local/bin/default-init"), ("v2", "/usr/local/bin/v2-init")] {
            let overrides = DeploymentOverrides { version: Some(version), ..DeploymentOverrides::default() };
            let rendered = render_command(&spec, &overrides, &CTX).unwrap();
            assert_eq!(rendered.entrypoint, [entrypoint], "{version}");
            assert_eq!(rendered.program(), Some(entrypoint));
            assert_eq!(rendered.process_argv()[1..], ["serve", "/data/models/qwen", "--port", "40123"]);
        }
    }

    #[test]
    fn without_entrypoint_the_command_names_the_program() {
        let rendered = render(&backend("llama-server -m {{model_path}}")).unwrap();
        assert!(rendered.entrypoint.is_empty());
        assert_eq!(rendered.program(), Some("llama-server"));
        assert_eq!(rendered.process_argv(), ["llama-server", "-m", "/data/models/qwen"]);
    }

    #[test]
    fn appends_backend_parameters_in_the_backend_format() {
        let mut spec = backend("serve");
        spec.parameter_format = Some(ParameterFormat::Equal);
        let params = vec!["--max-model-len 8192".to_owned(), "--trust-remote-code".to_owned()];
        let overrides = DeploymentOverrides { backend_parameters: &params, ..DeploymentOverrides::default() };
        let rendered = render_command(&spec, &overrides, &CTX).unwrap();
        assert_eq!(rendered.args, ["serve", "--max-model-len=8192", "--trust-remote-code"]);
        let bad = vec!["--x 'open".to_owned()];
        let overrides = DeploymentOverrides { backend_parameters: &bad, ..DeploymentOverrides::default() };
        let err = render_command(&spec, &overrides, &CTX).unwrap_err();
        assert!(err.to_string().contains("--x 'open"), "{err}");
    }

    #[test]
    fn resolves_versions() {
        let mut spec = backend("serve");
        for v in ["0.9.2", "0.10.0", "0.10.0rc1"] {
            spec.version_configs.insert(v.to_owned(), VersionConfig::default());
        }
        let resolved =
            |spec: &InferenceBackendSpec, requested| resolve_version(spec, requested).map(|(name, _)| name.to_owned());
        assert_eq!(resolved(&spec, Some("0.9.2")).unwrap(), "0.9.2");
        assert_eq!(resolved(&spec, None).unwrap(), "v1");
        spec.version_configs.remove("v1");
        assert_eq!(resolved(&spec, None).unwrap(), "0.10.0");
        spec.default_version = Some("0.9.2".to_owned());
        assert_eq!(resolved(&spec, None).unwrap(), "0.9.2");
        let err = resolved(&spec, Some("9")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "version: backend \"t-custom\" has no version \"9\" (known: 0.10.0, 0.10.0rc1, 0.9.2)"
        );
        spec.version_configs.clear();
        spec.default_version = None;
        assert!(matches!(resolved(&spec, None), Err(RenderError::NoVersions { .. })));
    }

    #[test]
    fn orders_versions_numerically() {
        let cases = [
            ("0.10.0", "0.9.9", Ordering::Greater),
            ("v1.2", "1.2", Ordering::Greater),
            ("1.2.0", "1.2.0", Ordering::Equal),
            ("2", "10", Ordering::Less),
            ("1.0-custom", "1.0", Ordering::Greater),
            ("0.10.0rc1", "0.10.0", Ordering::Less),
            ("0.10.0rc1", "0.9.0", Ordering::Greater),
            ("1.2.0rc0", "1.2.0rc1", Ordering::Less),
        ];
        for (a, b, expected) in cases {
            assert_eq!(compare_versions(a, b), expected, "{a} vs {b}");
        }
    }

    proptest! {
        #[test]
        fn random_templates_never_panic(
            template in "\\PC{0,80}",
            env_value in "\\PC{0,10}",
            params in proptest::collection::vec("\\PC{0,20}", 0..3),
        ) {
            let mut spec = backend(&template);
            spec.default_env.insert("X".to_owned(), env_value);
            let overrides = DeploymentOverrides {
                backend_parameters: &params,
                ..DeploymentOverrides::default()
            };
            let _ = render_command(&spec, &overrides, &CTX);
        }

        #[test]
        fn bracey_templates_never_panic(template in "[{} a-z_'\"\\\\]{0,40}") {
            let _ = render(&backend(&template));
        }
    }
}
