//! Command rendering tests: placeholders, splitting, precedence, the final argv, owned flags.
use proptest::prelude::*;

use super::*;
use crate::backends::yaml::parse_backend_yaml;

const CTX: RenderContext<'static> = RenderContext {
    model_path: "/data/models/qwen",
    model_name: "qwen",
    port: 40123,
    worker_ip: "10.0.0.7",
    gpu_ids: &[3, 1],
    data_dir: "/var/lib/fs/cache",
    api_key: "key",
    api_key_file: "/run/key",
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
    let cases = [("serve {{model}}", "model"), ("serve {{MODEL_PATH}}", "MODEL_PATH"), ("serve {{ CACHE }}", "CACHE")];
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

/// Backend, run command, injected, user, wanted argv (space-joined).
type AssembleCase = (&'static str, &'static str, &'static [&'static str], &'static [&'static str], &'static str);

#[test]
fn one_argv_every_placeholder_rendered_no_flag_twice() {
    let cases: &[AssembleCase] = &[
        // The bug this replaces: injected flags were appended unrendered after the template's.
        (
            "vLLM",
            "{{model_path}} --host {{worker_ip}} --port {{port}} --served-model-name {{model_name}}",
            &["--max-model-len=8192", "--served-model-name={{model_name}}", "--host={{worker_ip}}", "--port={{port}}"],
            &[],
            "/data/models/qwen --host 10.0.0.7 --port 40123 --served-model-name qwen --max-model-len 8192",
        ),
        // The user's value wins over the injected one; placeholders in user values render.
        (
            "vLLM",
            "{{model_path}} --port {{port}}",
            &["--max-model-len=8192", "--gpu-memory-utilization=0.9"],
            &["--max_model_len=4096", "--chat-template={{model_path}}/t.jinja"],
            "/data/models/qwen --port 40123 --gpu-memory-utilization 0.9 --max_model_len 4096 \
                 --chat-template /data/models/qwen/t.jinja",
        ),
        // Aliases are one flag: -tp from the user drops the injected --tensor-parallel-size.
        ("vLLM", "{{model_path}}", &["--tensor-parallel-size=2"], &["-tp 4"], "/data/models/qwen -tp 4"),
        (
            "SGLang",
            "--model-path {{model_path}}",
            &["--tp-size=2"],
            &["--tensor-parallel-size 4"],
            "--model-path /data/models/qwen --tensor-parallel-size 4",
        ),
        // A user flag the run command sets replaces it in place.
        (
            "x-custom",
            "serve {{model_path}} -c 2048 --port {{port}}",
            &[],
            &["-c 4096"],
            "serve /data/models/qwen -c 4096 --port 40123",
        ),
        (
            "llama.cpp",
            "-m {{model_path}} --ctx-size 2048",
            &["--ctx-size=8192"],
            &["-c 1024"],
            "-m /data/models/qwen -c 1024",
        ),
        // A bare user flag the command has before a positional word keeps the word.
        (
            "x-custom",
            "python3 -m vox_box --verbose start --model {{model_path}}",
            &[],
            &["--verbose"],
            "python3 -m vox_box --verbose start --model /data/models/qwen",
        ),
        // Injected flags the run command already has are dropped.
        ("llama.cpp", "-m {{model_path}} -c 2048", &["--ctx-size=8192"], &[], "-m /data/models/qwen -c 2048"),
        // Repeated user flags (argparse `append`) are kept as given.
        (
            "vLLM",
            "{{model_path}}",
            &[],
            &["--middleware a", "--middleware b"],
            "/data/models/qwen --middleware a --middleware b",
        ),
        // `{{ name }}` with spaces is one placeholder in parameters too.
        (
            "vLLM",
            "{{model_path}}",
            &[],
            &["--download-dir {{ data_dir }}"],
            "/data/models/qwen --download-dir /var/lib/fs/cache",
        ),
        // Environment placeholders render in parameters too; JSON stays whole.
        (
            "vLLM",
            "{{model_path}}",
            &[r#"--kv-transfer-config={"kv_role":"kv_both"}"#],
            &["--download-dir={{CACHE}}"],
            r#"/data/models/qwen --kv-transfer-config {"kv_role":"kv_both"} --download-dir /cache"#,
        ),
    ];
    for (name, command, injected, user, want) in cases {
        let mut spec = backend(command);
        spec.backend_name = (*name).to_owned();
        spec.parameter_format = Some(ParameterFormat::Space);
        spec.default_env.insert("CACHE".to_owned(), "/cache".to_owned());
        let (injected, user) = (strings(injected), strings(user));
        let overrides = DeploymentOverrides {
            injected_parameters: &injected,
            backend_parameters: &user,
            ..DeploymentOverrides::default()
        };
        let args = render_command(&spec, &overrides, &CTX).unwrap().args;
        let want: Vec<&str> = want.split_whitespace().collect();
        assert_eq!(args, want, "{name}: {command} + {injected:?} + {user:?}");
        assert!(!args.iter().any(|a| a.contains("{{")), "unrendered: {args:?}");
    }
}

#[test]
fn unknown_placeholders_in_parameters_name_the_field() {
    let spec = backend("serve");
    let user = strings(&["--x={{nope}}"]);
    let overrides = DeploymentOverrides { backend_parameters: &user, ..DeploymentOverrides::default() };
    let err = render_command(&spec, &overrides, &CTX).unwrap_err();
    assert!(err.to_string().starts_with("backend_parameters: unknown placeholder {{nope}}"), "{err}");
}

#[test]
fn parameters_the_manager_owns_are_named() {
    let cases: &[(&str, &str, &[&str], Option<&str>)] = &[
        ("vLLM", "{{model_path}}", &["--port=9999"], Some("--port")),
        ("vLLM", "{{model_path}}", &["--host 0.0.0.0"], Some("--host")),
        ("vLLM", "{{model_path}}", &["--served-model-name x"], Some("--served-model-name")),
        ("SGLang", "--model-path {{model_path}}", &["--model /other"], Some("--model")),
        ("llama.cpp", "-m {{model_path}}", &["-a other"], Some("-a")),
        // A flag whose value in the run command is a manager placeholder.
        ("x-custom", "serve --weights {{model_path}}", &["--weights /x"], Some("--weights")),
        ("x-custom", "serve --weights {{model_path}}", &["--threads 4"], None),
        ("vLLM", "{{model_path}}", &["--max-model-len 4096", "--trust-remote-code"], None),
    ];
    for (name, command, user, want) in cases {
        let mut spec = backend(command);
        spec.backend_name = (*name).to_owned();
        let user = strings(user);
        let overrides = DeploymentOverrides { backend_parameters: &user, ..DeploymentOverrides::default() };
        let got = owned_parameter(&spec, &overrides).unwrap();
        assert_eq!(got.as_ref().map(|(flag, _)| flag.as_str()), *want, "{name} {user:?}");
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
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
    assert_eq!(err.to_string(), "version: backend \"t-custom\" has no version \"9\" (known: 0.10.0, 0.10.0rc1, 0.9.2)");
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

/// Where each engine finds its key: (backend, run command, injected, argv wanted, key variable,
/// whether the key file is used). Only SGLang (no other way) and a custom command that asks for
/// `{{api_key}}` put the key itself on the command line.
#[test]
fn the_engine_key_goes_where_the_engine_reads_it() {
    type Case =
        (&'static str, &'static str, &'static [&'static str], &'static [&'static str], Option<&'static str>, bool);
    let cases: &[Case] = &[
        ("vLLM", "serve /m", &[], &["serve", "/m"], Some("VLLM_API_KEY"), false),
        // Scheduled before the key left the command line: the stored item is dropped.
        ("vLLM", "serve /m", &["--api-key={{api_key}}"], &["serve", "/m"], Some("VLLM_API_KEY"), false),
        (
            "llama.cpp",
            "-m /m",
            &["--api-key-file={{api_key_file}}"],
            &["-m", "/m", "--api-key-file=/run/key"],
            None,
            true,
        ),
        ("llama.cpp", "-m /m", &["--api-key={{api_key}}"], &["-m", "/m", "--api-key-file=/run/key"], None, true),
        (
            "SGLang",
            "--model-path /m",
            &["--api-key={{api_key}}"],
            &["--model-path", "/m", "--api-key=key"],
            None,
            false,
        ),
        ("t-custom", "run --key {{api_key}}", &[], &["run", "--key", "key"], None, false),
        ("t-custom", "run --key-file {{api_key_file}}", &[], &["run", "--key-file", "/run/key"], None, true),
        ("t-custom", "run", &["--api-key={{api_key}}"], &["run", "--api-key=key"], None, false),
        ("VoxBox", "start", &[], &["start"], None, false),
    ];
    for (name, command, injected, argv, var, file) in cases {
        let mut spec = backend(command);
        spec.backend_name = (*name).to_owned();
        let injected: Vec<String> = injected.iter().map(|s| (*s).to_owned()).collect();
        let overrides = DeploymentOverrides { injected_parameters: &injected, ..DeploymentOverrides::default() };
        let rendered = render_command(&spec, &overrides, &CTX).unwrap();
        assert_eq!(rendered.args, *argv, "{name}: {command} {injected:?}");
        let keyed: Vec<&String> =
            rendered.env.iter().filter(|(_, v)| v.as_str() == CTX.api_key).map(|(k, _)| k).collect();
        assert_eq!(keyed, var.iter().collect::<Vec<_>>(), "{name}: {command} {injected:?}");
        assert_eq!(rendered.uses_key_file, *file, "{name}: {command} {injected:?}");
    }
}

#[test]
fn users_cannot_set_the_key_flags_of_a_keyed_engine() {
    for (name, param, refused) in [
        ("llama.cpp", "--api-key-file /tmp/mine", true),
        ("llama.cpp", "--api-key mine", true),
        ("vLLM", "--api-key mine", true),
        ("SGLang", "--api-key mine", true),
        ("t-custom", "--api-key mine", false),
    ] {
        let mut spec = backend("x");
        spec.backend_name = name.to_owned();
        let params = [param.to_owned()];
        let overrides = DeploymentOverrides { backend_parameters: &params, ..DeploymentOverrides::default() };
        assert_eq!(owned_parameter(&spec, &overrides).unwrap().is_some(), refused, "{name} {param}");
    }
}

#[test]
fn a_frozen_backend_renders_as_the_backend_did_when_it_was_frozen() {
    let mut spec = backend("serve {{model_path}} --port {{port}}");
    spec.default_version = Some("v1".to_owned());
    spec.version_configs.insert(
        "v2".to_owned(),
        VersionConfig {
            image_name: Some("img:v2".to_owned()),
            run_command: Some("v2 {{port}}".to_owned()),
            ..VersionConfig::default()
        },
    );
    // (requested version, the version kept, the argv it renders)
    let cases: [(Option<&str>, &[&str], &str); 3] = [
        (None, &["v1"], "serve /data/models/qwen --port 40123"),
        (Some("v2"), &["v2"], "v2 40123"),
        (Some("v9"), &["v1", "v2"], ""),
    ];
    for (requested, kept, argv) in cases {
        let frozen = frozen(&spec, requested);
        assert_eq!(frozen.version_configs.keys().map(String::as_str).collect::<Vec<_>>(), kept, "{requested:?}");
        let overrides = DeploymentOverrides { version: requested, ..DeploymentOverrides::default() };
        let before = render_command(&spec, &overrides, &CTX);
        // The stored backend changes afterwards: the frozen copy does not.
        let mut edited = spec.clone();
        edited.default_run_command = Some("changed {{port}}".to_owned());
        for v in edited.version_configs.values_mut() {
            v.run_command = Some("changed too".to_owned());
        }
        let after = render_command(&frozen, &overrides, &CTX);
        match (before, after) {
            (Ok(b), Ok(a)) => {
                assert_eq!(a.args.join(" "), argv, "{requested:?}");
                assert_eq!((a.args, a.version, a.entrypoint), (b.args, b.version, b.entrypoint));
            }
            (Err(b), Err(a)) => assert_eq!((a.to_string(), argv), (b.to_string(), "")),
            (b, a) => panic!("{requested:?}: before {b:?}, frozen {a:?}"),
        }
    }
}
