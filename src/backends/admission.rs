//! What the server stores when an operator creates or edits a backend, and what it shows.
//!
//! Stored form: a built-in backend's row keeps only what an operator may change (its `-custom`
//! versions and the editable fields); the catalog's versions are merged back on every read
//! ([`for_display`]). Custom and community rows are stored whole. Every function here checks the
//! complete result with [`validate_backend`], so what is stored is always valid.

use super::catalog::Catalog;
use super::kind::kind_of;
use super::validate::{ValidationError, check_name_available, check_update, validate_backend};
use crate::api::backend::{BackendSource, DEFAULT_HEALTH_CHECK_PATH, InferenceBackendSpec};

/// A new operator-defined backend, ready to store: `backend_source` is forced to `custom` and
/// `is_built_in` to false (as GPUStack does), then the rules are checked, the name last (so a
/// name without `-custom` is refused for the suffix, even when a community backend has it).
/// `existing` holds the stored backends' names.
pub fn admit_new<'a>(
    mut spec: InferenceBackendSpec,
    existing: impl IntoIterator<Item = &'a str>,
) -> Result<InferenceBackendSpec, ValidationError> {
    spec.backend_source = BackendSource::Custom;
    spec.is_built_in = false;
    validate_backend(&spec)?;
    check_name_available(&spec.backend_name, existing)?;
    Ok(spec)
}

/// An edit of stored backend `stored` (its stored form) into `incoming`; returns the new stored
/// form. The name never changes; `backend_source` and `is_built_in` belong to the server (left out
/// or repeated, they are kept; a different value is refused). On a built-in backend the catalog
/// fields are read-only the same way, catalog versions may be repeated but not edited, and an
/// operator's own versions must end with `-custom`.
pub fn admit_update(
    catalog: &Catalog,
    stored: &InferenceBackendSpec,
    mut incoming: InferenceBackendSpec,
) -> Result<InferenceBackendSpec, ValidationError> {
    check_update(stored, &incoming)?;
    incoming.backend_source =
        server_owned("backend_source", stored.backend_source, incoming.backend_source, BackendSource::Custom)?;
    incoming.is_built_in = server_owned("is_built_in", stored.is_built_in, incoming.is_built_in, false)?;
    if !stored.is_built_in {
        validate_backend(&incoming)?;
        return Ok(incoming);
    }
    incoming.default_version = read_only("default_version", &stored.default_version, incoming.default_version, None)?;
    incoming.default_run_command =
        read_only("default_run_command", &stored.default_run_command, incoming.default_run_command, None)?;
    incoming.default_entrypoint =
        read_only("default_entrypoint", &stored.default_entrypoint, incoming.default_entrypoint, None)?;
    incoming.health_check_path = read_only(
        "health_check_path",
        &stored.health_check_path,
        incoming.health_check_path,
        Some(DEFAULT_HEALTH_CHECK_PATH.to_owned()),
    )?;
    incoming.parameter_format =
        read_only("parameter_format", &stored.parameter_format, incoming.parameter_format, None)?;
    incoming.icon = read_only("icon", &stored.icon, incoming.icon, None)?;
    let catalog_versions =
        catalog.with_catalog_versions(&InferenceBackendSpec { version_configs: Default::default(), ..stored.clone() });
    let mut own = std::collections::BTreeMap::new();
    for (version, config) in incoming.version_configs {
        match catalog_versions.version_configs.get(&version) {
            Some(catalog_config) if *catalog_config == config => {}
            Some(_) => return Err(ValidationError::CatalogVersionEdited { version }),
            None if config.is_catalog_version() => return Err(ValidationError::CatalogVersionOnCustom { version }),
            None => {
                own.insert(version, config);
            }
        }
    }
    incoming.version_configs = own;
    validate_backend(&catalog.with_catalog_versions(&incoming))?;
    Ok(incoming)
}

/// A catalog backend as first stored: a built-in one without its catalog versions, a community
/// one disabled until an operator enables it.
pub fn seed_form(catalog: &Catalog, spec: &InferenceBackendSpec) -> Result<InferenceBackendSpec, ValidationError> {
    let mut stored = spec.clone();
    if stored.is_built_in {
        stored.version_configs.retain(|_, config| !config.is_catalog_version());
        validate_backend(&catalog.with_catalog_versions(&stored))?;
    } else {
        stored.enabled = false;
        validate_backend(&stored)?;
    }
    Ok(stored)
}

/// A stored backend as the API shows it: built-in ones with the catalog's versions merged in.
pub fn for_display(catalog: &Catalog, stored: &InferenceBackendSpec) -> InferenceBackendSpec {
    if stored.is_built_in { catalog.with_catalog_versions(stored) } else { stored.clone() }
}

/// The versions `old` has and `new` lost (both as displayed).
pub fn removed_versions(old: &InferenceBackendSpec, new: &InferenceBackendSpec) -> Vec<String> {
    old.version_configs.keys().filter(|v| !new.version_configs.contains_key(*v)).cloned().collect()
}

/// What an operator should know about a backend the server just stored (it was accepted): one line
/// per version not from the built-in catalog (theirs, or a community backend's) whose engine
/// nothing protects. The server gives vLLM, SGLang and llama.cpp their instance's key; any other
/// engine is protected only when its command (run command or entrypoint) or its environment uses
/// `{{api_key}}` or `{{api_key_file}}`. Without it the engine answers anyone who can reach the
/// worker's address and the instance's port, past the gateway's keys, limits and usage.
pub fn warnings(spec: &InferenceBackendSpec) -> Vec<String> {
    if kind_of(&spec.backend_name).takes_api_key() {
        return Vec::new();
    }
    spec.version_configs
        .iter()
        .filter(|(_, config)| !config.is_catalog_version())
        .filter(|(_, config)| {
            let command = [&config.run_command, &spec.default_run_command].into_iter().find_map(Option::as_ref);
            let entrypoint = [&config.entrypoint, &spec.default_entrypoint].into_iter().find_map(Option::as_ref);
            let env = spec.default_env.values().chain(config.env.values());
            !command.into_iter().chain(entrypoint).chain(env).any(|text| uses_api_key(text))
        })
        .map(|(version, _)| {
            format!(
                "version_configs.{version}: the command does not use {{{{api_key}}}} (or {{{{api_key_file}}}}), so \
                 the engine answers anyone on the worker's network at its port without a key (bypassing the \
                 gateway's API keys, limits and usage); pass it to the engine's API key option, or keep workers \
                 on a network only the servers reach"
            )
        })
        .collect()
}

/// Whether a template hands the engine its key: the `{{api_key}}` or `{{api_key_file}}`
/// placeholder (spaces inside the braces allowed).
fn uses_api_key(template: &str) -> bool {
    template.split("{{").skip(1).any(|after| {
        after.split_once("}}").is_some_and(|(inner, _)| matches!(inner.trim(), "api_key" | "api_key_file"))
    })
}

fn server_owned<T: PartialEq + Copy>(
    field: &'static str,
    stored: T,
    incoming: T,
    absent: T,
) -> Result<T, ValidationError> {
    if incoming == stored || incoming == absent { Ok(stored) } else { Err(ValidationError::ServerOwned { field }) }
}

fn read_only<T: PartialEq + Clone>(
    field: &'static str,
    stored: &T,
    incoming: T,
    absent: T,
) -> Result<T, ValidationError> {
    if incoming == *stored || incoming == absent {
        Ok(stored.clone())
    } else {
        Err(ValidationError::ReadOnlyOnBuiltIn { field })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::backend::{ParameterFormat, VersionConfig};
    use crate::backends::yaml::parse_backend_yaml;

    fn catalog() -> Catalog {
        Catalog::load().unwrap()
    }

    fn stored(catalog: &Catalog, name: &str) -> InferenceBackendSpec {
        seed_form(catalog, catalog.find(name).unwrap()).unwrap()
    }

    fn custom_version(image: &str) -> VersionConfig {
        VersionConfig {
            image_name: Some(image.to_owned()),
            custom_framework: Some("cuda".to_owned()),
            ..VersionConfig::default()
        }
    }

    #[test]
    fn new_backends_are_custom_and_named_freely() {
        let yaml = "backend_name: TensorRT-LLM\nbackend_source: community\nversion_configs:\n  v1:\n    image_name: x\n    custom_framework: cuda\n";
        let err = admit_new(parse_backend_yaml(yaml).unwrap(), ["TensorRT-LLM"]).unwrap_err();
        assert!(err.to_string().contains("-custom"), "{err}");
        let ok = admit_new(parse_backend_yaml(&yaml.replace("LLM\n", "LLM-custom\n")).unwrap(), ["vLLM"]).unwrap();
        assert_eq!(ok.backend_source, BackendSource::Custom);
        let dup = admit_new(ok.clone(), ["tensorrt-llm-CUSTOM"]).unwrap_err();
        assert!(matches!(dup, ValidationError::DuplicateName { .. }), "{dup}");
    }

    #[test]
    fn seeds_drop_catalog_versions_and_disable_community() {
        let catalog = catalog();
        let vllm = stored(&catalog, "vLLM");
        assert!(vllm.version_configs.is_empty());
        assert_eq!(for_display(&catalog, &vllm), *catalog.find("vLLM").unwrap());
        let llama = stored(&catalog, "llama.cpp");
        assert!(!llama.enabled);
        assert_eq!(llama.version_configs.len(), 3);
    }

    #[test]
    fn built_ins_accept_custom_versions_and_editable_fields() {
        let catalog = catalog();
        let vllm = stored(&catalog, "vLLM");
        // The displayed form (catalog versions included) comes back unchanged.
        let mut edit = for_display(&catalog, &vllm);
        edit.version_configs.insert("0.12.0-custom".to_owned(), custom_version("vllm/vllm-openai:v0.12.0"));
        edit.default_env.insert("HF_HOME".to_owned(), "/cache".to_owned());
        edit.enabled = false;
        let saved = admit_update(&catalog, &vllm, edit).unwrap();
        assert_eq!(saved.version_configs.keys().collect::<Vec<_>>(), ["0.12.0-custom"]);
        assert!(!saved.enabled);
        // A partial document (catalog fields left out) keeps them.
        let mut partial = InferenceBackendSpec::named("vLLM");
        partial.version_configs = saved.version_configs.clone();
        let kept = admit_update(&catalog, &vllm, partial).unwrap();
        assert_eq!(kept.default_run_command, vllm.default_run_command);
        assert_eq!(kept.backend_source, BackendSource::BuiltIn);
        assert!(removed_versions(&for_display(&catalog, &saved), &for_display(&catalog, &vllm)) == ["0.12.0-custom"]);
    }

    #[test]
    fn built_in_refusals_name_the_rule() {
        let catalog = catalog();
        let vllm = stored(&catalog, "vLLM");
        type Break = fn(&mut InferenceBackendSpec);
        let cases: Vec<(Break, &str)> = vec![
            (|s| s.backend_name = "vllm".to_owned(), "backend_name"),
            (|s| s.backend_source = BackendSource::Community, "backend_source"),
            (|s| s.default_version = Some("0.10.2".to_owned()), "default_version"),
            (|s| s.default_run_command = Some("x".to_owned()), "default_run_command"),
            (|s| s.health_check_path = Some("/ping".to_owned()), "health_check_path"),
            (|s| s.parameter_format = Some(ParameterFormat::Equal), "parameter_format"),
            (
                |s| {
                    s.version_configs.insert("0.12.0".to_owned(), custom_version("x"));
                },
                "version_configs.0.12.0",
            ),
            (
                |s| {
                    s.version_configs.insert("0.11.0".to_owned(), custom_version("x"));
                },
                "version_configs.0.11.0",
            ),
            (
                |s| {
                    let v = VersionConfig { built_in_frameworks: vec!["cuda".to_owned()], ..VersionConfig::default() };
                    s.version_configs.insert("9.9.9-custom".to_owned(), v);
                },
                "version_configs.9.9.9-custom.built_in_frameworks",
            ),
        ];
        for (break_rule, field) in cases {
            let mut edit = for_display(&catalog, &vllm);
            break_rule(&mut edit);
            let err = admit_update(&catalog, &vllm, edit).unwrap_err();
            assert_eq!(err.field(), field, "{err}");
        }
    }

    #[test]
    fn community_and_custom_edits_are_validated_whole() {
        let catalog = catalog();
        let llama = stored(&catalog, "llama.cpp");
        let mut enable = llama.clone();
        enable.enabled = true;
        enable.backend_source = BackendSource::Custom; // left out of a YAML document
        let saved = admit_update(&catalog, &llama, enable).unwrap();
        assert!(saved.enabled);
        assert_eq!(saved.backend_source, BackendSource::Community);
        let mut broken = llama.clone();
        broken.version_configs.values_mut().for_each(|v| v.image_name = None);
        assert!(matches!(admit_update(&catalog, &llama, broken), Err(ValidationError::MissingImage { .. })));
        let mut promote = llama.clone();
        promote.is_built_in = true;
        assert_eq!(admit_update(&catalog, &llama, promote).unwrap_err().field(), "is_built_in");
    }

    #[test]
    fn warnings_name_the_versions_whose_engine_has_no_key() {
        let catalog = catalog();
        let with = |command: &str| VersionConfig { run_command: Some(command.to_owned()), ..custom_version("x") };
        let backend = |name: &str, versions: Vec<(&str, VersionConfig)>| InferenceBackendSpec {
            version_configs: versions.into_iter().map(|(v, c)| (v.to_owned(), c)).collect(),
            ..InferenceBackendSpec::named(name)
        };
        let in_env =
            VersionConfig { env: [("ENGINE_KEY".to_owned(), "{{api_key}}".to_owned())].into(), ..custom_version("x") };
        let in_entrypoint =
            VersionConfig { entrypoint: Some("serve --key={{ api_key }}".to_owned()), ..custom_version("x") };
        let mut default_command = backend("echo-custom", vec![("v1", custom_version("x"))]);
        default_command.default_run_command = Some("serve --api-key {{api_key}} --port {{port}}".to_owned());
        // (backend, versions warned about)
        let cases: Vec<(InferenceBackendSpec, Vec<&str>)> = vec![
            (backend("echo-custom", vec![("v1", with("serve --port {{port}}"))]), vec!["v1"]),
            (backend("echo-custom", vec![("v1", custom_version("x"))]), vec!["v1"]),
            (
                backend("echo-custom", vec![("v1", with("serve --token {{api_key}}")), ("v2", with("serve"))]),
                vec!["v2"],
            ),
            (backend("echo-custom", vec![("v1", with("serve --token {{ api_key }}"))]), vec![]),
            (backend("echo-custom", vec![("v1", with("serve --token {{api_keys}}"))]), vec!["v1"]),
            (backend("echo-custom", vec![("v1", with("serve --key-file {{api_key_file}}"))]), vec![]),
            (backend("echo-custom", vec![("v1", in_env), ("v2", in_entrypoint)]), vec![]),
            (default_command, vec![]),
            // The server gives these engines their key.
            (backend("vLLM", vec![("0.12.0-custom", with("vllm serve {{model_path}}"))]), vec![]),
            (stored(&catalog, "llama.cpp"), vec![]),
            // Catalog versions are not the operator's; their own versions are.
            (for_display(&catalog, &stored(&catalog, "MindIE")), vec![]),
            (backend("MindIE", vec![("2.0-custom", custom_version("x"))]), vec!["2.0-custom"]),
        ];
        for (spec, want) in cases {
            let got = warnings(&spec);
            let named: Vec<&str> = got
                .iter()
                .filter_map(|w| w.strip_prefix("version_configs.")?.split_once(':').map(|(v, _)| v))
                .collect();
            assert_eq!(named, want, "{}: {got:?}", spec.backend_name);
            assert!(got.iter().all(|w| w.contains("{{api_key}}")), "{got:?}");
        }
    }
}
