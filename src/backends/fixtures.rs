//! The YAML examples of GPUStack's documentation (tests/fixtures/backends): each one imports and
//! validates unchanged, or is refused with the message of the rule it breaks.

use std::collections::BTreeMap;

use super::render::{DeploymentOverrides, RenderContext, render_command};
use super::validate::{check_name_available, validate_backend};
use super::yaml::{parse_backend_yaml, to_backend_yaml};
use crate::api::backend::InferenceBackendSpec;

macro_rules! fixture {
    ($name:literal) => {
        ($name, include_str!(concat!("../../tests/fixtures/backends/", $name, ".yaml")))
    };
}

const VALID: &[(&str, &str)] = &[
    fixture!("tensorrt-llm-custom"),
    fixture!("environment-variables"),
    fixture!("environment-variables-user-guide"),
    fixture!("custom-entrypoint"),
    fixture!("llama-cpp-custom-cpu"),
    fixture!("llama-cpp-custom"),
    fixture!("llama-cpp-custom-vulkan"),
    fixture!("llama-cpp-custom-rocm"),
    fixture!("kokoro-custom"),
    fixture!("tokenspeed-custom"),
    fixture!("community-spec-template"),
];

const NO_SUFFIX: &str = "backend_name: custom backend names must end with \"-custom\" (got \"TensorRT-LLM\")";

const REFUSED: &[((&str, &str), &str)] = &[
    (fixture!("tensorrt-llm"), NO_SUFFIX),
    (fixture!("tensorrt-llm-port-only"), NO_SUFFIX),
    (fixture!("community-tensorrt-llm"), NO_SUFFIX),
    (
        fixture!("community-llama-cpp"),
        "default_version: \"v1-custom\" is not one of the versions in version_configs (v1-cpu, v1-cuda); set \
         default_version to one of them, or add a version_configs entry named \"v1-custom\"",
    ),
];

const CTX: RenderContext<'static> = RenderContext {
    model_path: "/data/models/m",
    model_name: "m",
    port: 40000,
    worker_ip: "10.1.2.3",
    gpu_ids: &[0, 1],
    data_dir: "/data/cache",
    api_key: "key",
    api_key_file: "/run/key",
};

fn load(name: &str, text: &str) -> InferenceBackendSpec {
    match parse_backend_yaml(text) {
        Ok(spec) => spec,
        Err(err) => panic!("{name}: {err}"),
    }
}

fn render(spec: &InferenceBackendSpec, version: &str) -> (Vec<String>, Vec<String>) {
    let overrides = DeploymentOverrides { version: Some(version), ..DeploymentOverrides::default() };
    match render_command(spec, &overrides, &CTX) {
        Ok(rendered) => (rendered.entrypoint, rendered.args),
        Err(err) => panic!("{} {version}: {err}", spec.backend_name),
    }
}

#[test]
fn valid_examples_import_validate_render_and_round_trip() {
    for (name, text) in VALID {
        let spec = load(name, text);
        if let Err(err) = validate_backend(&spec) {
            panic!("{name}: {err}");
        }
        check_name_available(&spec.backend_name, []).unwrap();
        for version in spec.version_configs.keys() {
            render(&spec, version);
        }
        let exported = to_backend_yaml(&spec).unwrap();
        assert_eq!(load(name, &exported), spec, "{name} round trip");
    }
}

#[test]
fn refused_examples_name_the_rule() {
    for ((name, text), message) in REFUSED {
        let spec = load(name, text);
        let err = validate_backend(&spec).expect_err(name);
        assert_eq!(err.to_string(), *message, "{name}");
    }
}

#[test]
fn environment_variable_examples_render_with_version_overrides() {
    let (_, args) = render(&load("env", VALID[1].1), "v1");
    let joined = args.join(" ");
    assert!(joined.contains("--log-level debug"), "{joined}");
    assert!(joined.contains("--cache /models/cache"), "{joined}");

    let (_, args) = render(&load("env-guide", VALID[2].1), "v1");
    let joined = args.join(" ");
    assert!(joined.contains("--cache /custom-cache --log-level info"), "{joined}");
}

#[test]
fn entrypoint_example_uses_the_version_entrypoint_when_set() {
    let spec = load("entrypoint", VALID[3].1);
    let expected = BTreeMap::from([("v1", "/usr/local/bin/default-init"), ("v2", "/usr/local/bin/v2-init")]);
    for (version, entrypoint) in expected {
        let (rendered, args) = render(&spec, version);
        assert_eq!(rendered, [entrypoint], "{version}");
        assert_eq!(args, ["serve", "/data/models/m", "--port", "40000"]);
    }
}

#[test]
fn folded_scalars_and_null_fields_read_as_expected() {
    let template = load("template", VALID[10].1);
    assert_eq!(template.default_entrypoint.as_deref(), Some("vllm serve\n"));
    let (entrypoint, args) = render(&template, "nightly");
    assert_eq!(entrypoint, ["vllm", "serve"]);
    assert_eq!(args[..3], ["/data/models/m", "--port", "40000"]);

    let tokenspeed = load("tokenspeed", VALID[9].1);
    assert!(tokenspeed.default_backend_param.is_empty());
    assert!(tokenspeed.version_configs["0.1.3-sm90"].env.is_empty());
    let (_, args) = render(&tokenspeed, "0.1.3-sm90");
    assert!(args.join(" ").contains("--world-size 2"));
}
