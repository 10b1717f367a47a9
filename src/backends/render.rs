//! Command rendering: from a backend, a version and a placement to the argv and environment of the
//! process or container that serves the model.
//!
//! The command template is split into words first and placeholders are substituted inside each
//! word, so a value (a model path with spaces, a model name) is always exactly one argument and can
//! never inject flags. GPUStack substitutes before splitting; for values without spaces or quotes
//! the result is the same. An unknown `{{name}}` is an error, never a literal.

use std::cell::Cell;
use std::cmp::Ordering;
use std::collections::BTreeMap;

use thiserror::Error;

use super::kind::{KeyDelivery, Kind, kind_of};
use super::params::{Param, ParamError, parse_params, parse_words};
use super::shell::{SplitError, split_words};
use crate::api::backend::{InferenceBackendSpec, ParameterFormat, VersionConfig};

/// The placeholders every command may use, besides environment variables.
/// GPUStack's six, plus `data_dir` (a directory on the worker the engine may keep files in),
/// `api_key` (the instance's engine key, which only the gateway presents) and `api_key_file` (a
/// file holding that key and a newline, 0600: an engine that reads its key from a file keeps it
/// out of the process list, where `{{api_key}}` on the command line shows it to every local user).
pub const BUILT_IN_PLACEHOLDERS: &[&str] =
    &["model_path", "model_name", "port", "worker_ip", "gpu_count", "gpu_ids", "data_dir", "api_key", "api_key_file"];

/// Where a container sees the instance's key file (`{{api_key_file}}`), mounted read-only.
pub const API_KEY_FILE_IN_CONTAINER: &str = "/run/ferrostack/engine-api-key";

/// What the worker shows instead of an engine key in a reported command line.
pub const API_KEY_MASK: &str = "<engine-api-key>";

/// The engine key of an instance: derived from the token the server presents to the instance's
/// worker (`server::auth::server_token`), so the worker that starts the engine and the gateway
/// that calls it both know it without it being stored or sent anywhere.
pub fn engine_api_key(server_token: &str, instance_id: i64) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(format!("{server_token}:engine:{instance_id}").as_bytes()))
}

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
    /// A directory on the worker the engine may keep its own files in (VoxBox's `--data-dir`).
    pub data_dir: &'a str,
    /// The instance's engine key (`engine_api_key`).
    pub api_key: &'a str,
    /// Where the engine reads the file that holds `api_key` (written by the worker only when the
    /// command uses it: `RenderedCommand::uses_key_file`).
    pub api_key_file: &'a str,
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
    /// What the server injects for this placement (`estimate::injected_parameters`), placeholders
    /// allowed. A flag the run command or the user already sets is not injected.
    pub injected_parameters: &'a [String],
    /// The user's backend parameters, placeholders allowed. A flag the run command also sets takes
    /// the user's value in its place.
    pub backend_parameters: &'a [String],
}

/// The rendered launch: what to run and with which environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedCommand {
    /// The version that was resolved.
    pub version: String,
    /// Replaces the image's ENTRYPOINT when not empty.
    pub entrypoint: Vec<String>,
    /// The rendered run command, then the injected parameters, then the user's: every placeholder
    /// rendered, no flag twice.
    pub args: Vec<String>,
    /// default_env, then the version's env, then the deployment's (later wins); then the engine's
    /// key variable for an engine that reads its key from the environment (`Kind::key_delivery`).
    pub env: BTreeMap<String, String>,
    /// Whether `{{api_key_file}}` was rendered: the worker must write the key file.
    pub uses_key_file: bool,
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
    let kind = kind_of(&spec.backend_name);
    let mut env = merged_env(spec, config, overrides.env);
    let vars = Placeholders { ctx, env: &env, key_file_used: Cell::new(false) };

    let (command_field, command) = pick_run_command(spec, config, overrides.run_command);
    let (entrypoint_field, entrypoint) = pick_entrypoint(spec, config);
    let template = parse_words(render_words(command_field, command, &vars)?);
    let injected_items = key_delivered(kind, overrides.injected_parameters);
    let injected = render_params("injected_backend_parameters", &injected_items, &vars)?;
    let user = render_params("backend_parameters", overrides.backend_parameters, &vars)?;
    let args = assemble(kind, template, injected, user, spec.parameter_format);
    let entrypoint = render_words(entrypoint_field, entrypoint, &vars)?;
    let uses_key_file = vars.key_file_used.get();
    if let Some(KeyDelivery::Env(var)) = kind.key_delivery()
        && !ctx.api_key.is_empty()
    {
        env.insert(var.to_owned(), ctx.api_key.to_owned());
    }
    Ok(RenderedCommand { version: version.to_owned(), entrypoint, args, env, uses_key_file })
}

/// The injected parameters with the engine key where the engine reads it. Instances scheduled
/// before keys left the command line carry `--api-key={{api_key}}`: for an engine that reads its
/// key from a file that item becomes the file flag, for one that reads the environment it goes.
fn key_delivered(kind: Kind, items: &[String]) -> Vec<String> {
    const ON_THE_COMMAND_LINE: &str = "--api-key={{api_key}}";
    items
        .iter()
        .filter_map(|item| match (item.as_str(), kind.key_delivery()) {
            (ON_THE_COMMAND_LINE, Some(KeyDelivery::File(flag))) => Some(format!("--{flag}={{{{api_key_file}}}}")),
            (ON_THE_COMMAND_LINE, Some(KeyDelivery::Env(_))) => None,
            _ => Some(item.clone()),
        })
        .collect()
}

/// Parses parameter items and renders the placeholders inside each word.
fn render_params(field: &str, items: &[String], vars: &Placeholders<'_>) -> Result<Vec<Param>, RenderError> {
    // `{{ name }}` with spaces stays one word when the item is split.
    let items: Vec<String> = items.iter().map(|i| tighten_placeholders(i)).collect();
    let mut params = parse_params(&items)?;
    for p in &mut params {
        for value in &mut p.values {
            *value = substitute(field, value, vars)?;
        }
    }
    Ok(params)
}

/// The one place the final argument list is put together: the run command's words, then the
/// injected flags that neither the command nor the user sets, then the user's flags. A user flag
/// the command already sets replaces it in place (when the command gives it at most one value;
/// otherwise the value words cannot be told from positional ones and the user's comes last).
fn assemble(
    kind: Kind,
    template: Vec<Param>,
    injected: Vec<Param>,
    user: Vec<Param>,
    format: Option<ParameterFormat>,
) -> Vec<String> {
    let key = |p: &Param| p.key().map(|k| kind.canonical_key(&k));
    let user_keys: Vec<String> = user.iter().filter_map(key).collect();
    let mut placed: Vec<String> = Vec::new();
    let mut args = Vec::new();
    for p in &template {
        match key(p) {
            Some(k) if user_keys.contains(&k) && p.values.len() <= 1 => {
                let mine: Vec<&Param> = user.iter().filter(|u| key(u).as_deref() == Some(k.as_str())).collect();
                if mine.iter().all(|u| u.values.is_empty()) && !p.joined && !p.values.is_empty() {
                    // A bare user flag (`--verbose`) the command has before a positional word
                    // (`--verbose start`): the word is not the flag's; keep the command as it is.
                    args.extend(p.as_given());
                } else if !placed.contains(&k) {
                    for u in mine {
                        args.extend(u.formatted(format));
                    }
                }
                placed.push(k);
            }
            _ => args.extend(p.as_given()),
        }
    }
    let template_keys: Vec<String> = template.iter().filter_map(key).collect();
    for p in &injected {
        let taken = key(p).is_some_and(|k| template_keys.contains(&k) || user_keys.contains(&k));
        if !taken {
            args.extend(p.formatted(format));
        }
    }
    for u in &user {
        if key(u).is_none_or(|k| !placed.contains(&k)) {
            args.extend(u.formatted(format));
        }
    }
    args
}

/// A user parameter the manager owns: `--port` and `--host` everywhere, the engine's model and
/// served-name flags for built-ins, and any flag whose value in the run command is one of the
/// manager's placeholders. Returns the flag as the user wrote it and why it is refused.
pub fn owned_parameter(
    spec: &InferenceBackendSpec,
    overrides: &DeploymentOverrides<'_>,
) -> Result<Option<(String, String)>, RenderError> {
    let kind = kind_of(&spec.backend_name);
    let (_, config) = resolve_version(spec, overrides.version)?;
    let (field, command) = pick_run_command(spec, config, overrides.run_command);
    let words = match command {
        Some(c) => split_words(&tighten_placeholders(c))
            .map_err(|source| RenderError::Split { field: field.to_owned(), source })?,
        None => Vec::new(),
    };
    let manager_set: Vec<String> = parse_words(words)
        .iter()
        .filter(|p| p.values.iter().any(|v| MANAGER_PLACEHOLDERS.iter().any(|ph| v.contains(&format!("{{{{{ph}}}}}")))))
        .filter_map(|p| p.key().map(|k| kind.canonical_key(&k)))
        .collect();
    let items: Vec<String> = overrides.backend_parameters.iter().map(|i| tighten_placeholders(i)).collect();
    for p in parse_params(&items)? {
        let (Some(flag), Some(k)) = (p.flag.clone(), p.key().map(|k| kind.canonical_key(&k))) else { continue };
        let why = match k.as_str() {
            "port" => "ports are allocated by the server for each instance",
            "host" => "the engine listens on the worker's address, where the worker and the gateway reach it",
            "api-key" | "api-key-file" if kind.takes_api_key() => {
                "the server gives every instance its own key, which only the gateway presents"
            }
            _ if kind.owned_flags().contains(&k.as_str()) || manager_set.contains(&k) => {
                "the server sets it from the deployment (model path and served name)"
            }
            _ => continue,
        };
        return Ok(Some((flag, why.to_owned())));
    }
    Ok(None)
}

/// Placeholders whose flags the manager owns.
const MANAGER_PLACEHOLDERS: &[&str] = &["model_path", "model_name", "port", "worker_ip", "api_key", "api_key_file"];

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

/// The backend as an instance is bound to it: only the version it runs (`requested`, else the
/// one [`resolve_version`] picks), made the default. Rendering from it later gives what rendering
/// from `spec` gives now, whatever happens to the stored backend meanwhile. A version that does
/// not resolve keeps every version, so rendering says why as it would have.
pub fn frozen(spec: &InferenceBackendSpec, requested: Option<&str>) -> InferenceBackendSpec {
    let Ok((name, config)) = resolve_version(spec, requested) else { return spec.clone() };
    InferenceBackendSpec {
        default_version: Some(name.to_owned()),
        version_configs: [(name.to_owned(), config.clone())].into(),
        ..spec.clone()
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
    /// Set when `{{api_key_file}}` is rendered.
    key_file_used: Cell<bool>,
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
            "data_dir" => ctx.data_dir.to_owned(),
            "api_key" => ctx.api_key.to_owned(),
            "api_key_file" => {
                self.key_file_used.set(true);
                ctx.api_key_file.to_owned()
            }
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
mod tests;
