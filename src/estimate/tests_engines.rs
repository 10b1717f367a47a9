//! Every command line the server can produce for a built-in engine, parsed with that engine's own
//! flag definitions (tests/fixtures/engines: read from the engine's source at a pinned version,
//! provenance in its README). An unknown flag, a value of the wrong type, a missing value, a flag
//! given twice or a placeholder left unrendered fails the test.

// FERROSTACK_BLESS rewrites the pinned tables.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;

use serde::Deserialize;

use super::tests_calc::{GIB, llm, strings};
use super::*;
use crate::backends::catalog::Catalog;
use crate::backends::distributed::{Launch, Role, Topology, adapt};
use crate::backends::{DeploymentOverrides, RenderContext, render_command};

#[derive(Debug, Deserialize)]
struct EngineCli {
    engine: String,
    version: String,
    #[serde(default)]
    positional: Vec<String>,
    flags: Vec<FlagDef>,
}

#[derive(Debug, Clone, Deserialize)]
struct FlagDef {
    names: Vec<String>,
    kind: String,
    #[serde(default)]
    choices: Vec<String>,
    #[serde(default)]
    nargs: Option<serde_json::Value>,
    #[serde(default)]
    append: bool,
}

fn load(text: &str) -> EngineCli {
    serde_json::from_str(text).expect("engine fixture is valid JSON")
}

fn vllm_cli() -> EngineCli {
    load(include_str!("../../tests/fixtures/engines/vllm-0.11.0.json"))
}

fn sglang_cli() -> EngineCli {
    load(include_str!("../../tests/fixtures/engines/sglang-0.5.4.json"))
}

fn voxbox_cli() -> EngineCli {
    load(include_str!("../../tests/fixtures/engines/voxbox-0.0.20.json"))
}

/// How many values a flag takes: (at least, at most).
fn arity(def: &FlagDef) -> (usize, usize) {
    if matches!(def.kind.as_str(), "store_true" | "store_false" | "bool_optional") {
        return (0, 0);
    }
    match &def.nargs {
        None => (1, 1),
        Some(serde_json::Value::String(s)) if s == "+" => (1, usize::MAX),
        Some(serde_json::Value::String(s)) if s == "*" => (0, usize::MAX),
        Some(serde_json::Value::String(s)) if s == "?" => (0, 1),
        Some(serde_json::Value::Number(n)) => {
            let n = n.as_u64().unwrap_or(1) as usize;
            (n, n)
        }
        Some(other) => panic!("unknown nargs {other}"),
    }
}

fn check_value(def: &FlagDef, value: &str) -> Result<(), String> {
    let ok = match def.kind.as_str() {
        "int" => value.parse::<i64>().is_ok(),
        "float" => value.parse::<f64>().is_ok(),
        "json" => serde_json::from_str::<serde_json::Value>(value).is_ok_and(|v| v.is_object()),
        "choice" => def.choices.iter().any(|c| c == value),
        "bool_value" => matches!(value.to_ascii_lowercase().as_str(), "true" | "false" | "1" | "0" | "yes" | "no"),
        _ => true,
    };
    if ok { Ok(()) } else { Err(format!("{}: {value:?} is not a valid {}", def.names[0], def.kind)) }
}

/// A word argparse reads as an option (not a negative number).
fn is_option(word: &str) -> bool {
    word.starts_with('-') && word.len() > 1 && word.parse::<f64>().is_err()
}

/// Parses `args` (the engine's own arguments, after its program and subcommand) the way the
/// engine's argparse would, and says what it would refuse.
fn parse(cli: &EngineCli, args: &[String]) -> Result<(), String> {
    let mut by_name: BTreeMap<String, &FlagDef> = BTreeMap::new();
    for def in &cli.flags {
        for name in &def.names {
            by_name.insert(name.clone(), def);
        }
    }
    // vLLM's FlexibleArgumentParser reads `--max_model_len` as `--max-model-len`.
    let lookup = |name: &str| {
        by_name
            .get(name)
            .copied()
            .or_else(|| (cli.engine == "vllm").then(|| by_name.get(&name.replace('_', "-")).copied()).flatten())
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut positional = 0;
    let mut i = 0;
    while i < args.len() {
        let word = &args[i];
        if word.contains("{{") {
            return Err(format!("unrendered placeholder in {word:?}"));
        }
        i += 1;
        if !is_option(word) {
            if positional >= cli.positional.len() {
                return Err(format!("unrecognized argument {word:?}"));
            }
            positional += 1;
            continue;
        }
        let (name, inline) = match word.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (word.as_str(), None),
        };
        let def = lookup(name).ok_or_else(|| format!("unrecognized argument {name}"))?;
        let count = seen.entry(def.names[0].clone()).or_default();
        *count += 1;
        if *count > 1 && !def.append {
            return Err(format!("{} given twice", def.names[0]));
        }
        let (min, max) = arity(def);
        let mut values: Vec<String> = inline.into_iter().collect();
        if values.is_empty() {
            while values.len() < max && i < args.len() && !is_option(&args[i]) {
                values.push(args[i].clone());
                i += 1;
            }
        }
        if values.len() < min {
            return Err(format!("{name}: expected {min} value(s), got {}", values.len()));
        }
        if max == 0 && !values.is_empty() {
            return Err(format!("{name}: takes no value, got {values:?}"));
        }
        for v in &values {
            if v.contains("{{") {
                return Err(format!("unrendered placeholder in {name} {v:?}"));
            }
            check_value(def, v)?;
        }
    }
    Ok(())
}

/// The engine's own arguments in a full argv: what follows its program (and subcommand).
fn engine_args(engine: &str, argv: &[String]) -> Vec<String> {
    let marker: &[&str] = match engine {
        "vllm" => &["vllm", "serve"],
        "sglang" => &["-m", "sglang.launch_server"],
        "voxbox" => &["vox-box", "start"],
        _ => unreachable!(),
    };
    let at = argv.windows(2).position(|w| w[0] == marker[0] && w[1] == marker[1]);
    let at = at.unwrap_or_else(|| panic!("{engine}: {marker:?} not in {argv:?}"));
    argv[at + 2..].to_vec()
}

/// One way the server launches a replica.
struct Scenario {
    name: &'static str,
    n_gpus: u32,
    nodes: u32,
    user: &'static [&'static str],
    extended_kv: Option<ExtendedKv>,
    policy: Policy,
}

const FIT: Policy = Policy::Fit { contexts: 1 };
const FIT4: Policy = Policy::Fit { contexts: 4 };

const KV: Option<ExtendedKv> = Some(ExtendedKv { ram_ratio: Some(2.0), ram_size_gib: None, chunk_size: Some(256) });

fn scenarios(engine: &str) -> Vec<Scenario> {
    let s = |name, n_gpus, nodes, user, extended_kv| Scenario {
        name,
        n_gpus,
        nodes,
        user,
        extended_kv,
        policy: Policy::Reserve,
    };
    let fit = |name, n_gpus, nodes, user, policy| Scenario { name, n_gpus, nodes, user, extended_kv: None, policy };
    match engine {
        "vllm" => vec![
            s("single GPU", 1, 1, &[], None),
            s("tensor parallel", 4, 1, &[], None),
            s("distributed over Ray", 2, 2, &[], None),
            s("user --k=v", 1, 1, &["--max-model-len=4096", "--chat-template={{model_path}}/t.jinja"], None),
            s("user --k v", 1, 1, &["--max-model-len 4096 --enable-prefix-caching --trust-remote-code"], None),
            s("user lone words", 1, 1, &["--max_model_len", "4096", "--dtype", "half"], None),
            s("user tp wins", 2, 1, &["-tp 2"], None),
            s("extended KV cache", 1, 1, &[], KV),
            s("CPU offloading", 1, 1, &["--cpu-offload-gb 8", "--enforce-eager"], None),
            s("parked: sleep mode", 1, 1, &[], None),
            fit("fit", 1, 1, &[], FIT),
            fit("fit, 4 contexts", 1, 1, &[], FIT4),
            fit("fit, tensor parallel", 2, 1, &[], FIT),
            fit("fit, user KV bytes", 1, 1, &["--kv-cache-memory-bytes=2147483648"], FIT),
            fit("fit, user fraction wins", 1, 1, &["--gpu-memory-utilization 0.3"], FIT),
            fit("fit, user batch", 1, 1, &["--max-num-batched-tokens 2048", "--max-model-len 4096"], FIT4),
        ],
        "sglang" => vec![
            s("single GPU", 1, 1, &[], None),
            s("tensor parallel", 4, 1, &[], None),
            s("distributed", 2, 2, &[], None),
            s("user --k=v", 1, 1, &["--context-length=4096", "--chat-template={{model_path}}/t.jinja"], None),
            s("user --k v", 1, 1, &["--context-length 4096 --trust-remote-code"], None),
            s("user lone words", 1, 1, &["--mem-fraction-static", "0.7"], None),
            s("extended KV cache", 1, 1, &[], KV),
            s("CPU offloading", 1, 1, &["--cpu-offload-gb 8"], None),
            fit("fit", 1, 1, &[], FIT),
            fit("fit, 4 contexts", 1, 1, &[], FIT4),
            fit("fit, tensor parallel", 2, 1, &[], FIT),
            fit("fit, user tokens", 1, 1, &["--max-total-tokens 65536"], FIT),
            fit("fit, user fraction wins", 1, 1, &["--mem-fraction-static", "0.3"], FIT),
        ],
        "voxbox" => vec![s("one GPU", 1, 1, &[], None), s("CPU", 0, 1, &[], None)],
        _ => unreachable!(),
    }
}

/// Every argv (main, then each follower) the server produces for `backend` in `sc`.
fn produce(backend: &str, sc: &Scenario) -> Vec<(String, Vec<String>)> {
    let catalog = Catalog::load().expect("catalog");
    let spec = catalog.find(backend).expect("built-in backend").clone();
    let mut meta = llm();
    if backend == "VoxBox" {
        meta.category = Category::TextToSpeech;
        meta.architecture = "CosyVoice".into();
    }
    let user = strings(sc.user);
    let gpu = Some(80 * GIB);
    let input = EstimateInput {
        backend,
        backend_parameters: &user,
        gpu_total_memory: gpu,
        n_gpus: sc.n_gpus,
        extended_kv: sc.extended_kv,
        policy: sc.policy,
    };
    let est = estimate(&meta, &input).expect("estimate");
    let inject = InjectInput {
        backend,
        meta: &meta,
        estimate: &est,
        n_gpus: sc.n_gpus,
        nodes: sc.nodes,
        model_name: "{{model_name}}",
        port: "{{port}}",
        user_parameters: &user,
        extended_kv: sc.extended_kv,
        gpu_total_memory: gpu,
        backend_version: spec.default_version.as_deref(),
        gpu_taken: if sc.policy == Policy::Reserve { 0 } else { 20 * GIB },
        // Parking (`autoscaling.park_seconds`) starts vLLM with its sleep mode.
        sleep_mode: sc.name == "parked: sleep mode",
    };
    let injection = injected_parameters(&inject).expect("injection");
    let overrides = DeploymentOverrides {
        injected_parameters: &injection.args,
        backend_parameters: &user,
        ..DeploymentOverrides::default()
    };
    let gpu_ids: Vec<u32> = (0..sc.n_gpus).collect();
    let ctx = RenderContext {
        model_path: "/data/models/m",
        model_name: "m",
        port: 40000,
        worker_ip: "198.18.7.2",
        gpu_ids: &gpu_ids,
        data_dir: "/var/lib/ferrostack/worker/cache",
        api_key: "0123abcd",
        api_key_file: "/run/engine-key",
    };
    let rendered = render_command(&spec, &overrides, &ctx).expect("render");
    let launch = Launch { entrypoint: rendered.entrypoint, args: rendered.args, env: rendered.env };
    let argv = |l: &Launch| l.entrypoint.iter().chain(&l.args).cloned().collect::<Vec<String>>();
    if sc.nodes <= 1 {
        return vec![("main".into(), argv(&launch))];
    }
    let topo = |own| Topology { nodes: sc.nodes, main_ip: "198.18.7.2", port: 41000, own_ip: own };
    let mut out = vec![("main".into(), argv(&adapt(backend, Role::Main, &topo("198.18.7.2"), launch.clone())))];
    if backend != "vLLM" {
        // vLLM's followers run `ray start`, not the engine.
        out.push(("follower".into(), argv(&adapt(backend, Role::Follower { rank: 1 }, &topo("198.18.7.3"), launch))));
    }
    out
}

fn check_engine(backend: &str, cli: &EngineCli) -> Vec<String> {
    let mut failures = Vec::new();
    let mut checked = 0;
    for sc in scenarios(&cli.engine) {
        for (role, argv) in produce(backend, &sc) {
            let args = engine_args(&cli.engine, &argv);
            checked += 1;
            if let Err(e) = parse(cli, &args) {
                failures.push(format!(
                    "{} {} {} ({role}): {e}\n    argv: {}",
                    cli.engine,
                    cli.version,
                    sc.name,
                    argv.join(" ")
                ));
            }
        }
    }
    assert!(checked >= 2, "{backend}: nothing checked");
    failures
}

#[test]
fn every_command_the_server_produces_parses_with_the_engines_own_flags() {
    let mut failures = check_engine("vLLM", &vllm_cli());
    failures.extend(check_engine("SGLang", &sglang_cli()));
    failures.extend(check_engine("VoxBox", &voxbox_cli()));
    assert!(failures.is_empty(), "{} command line(s) the engine refuses:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn the_checker_refuses_what_argparse_refuses() {
    let cli = vllm_cli();
    let bad: &[&[&str]] = &[
        &["/m", "--no-such-flag"],
        &["/m", "--port", "x"],
        &["/m", "--port"],
        &["/m", "--port", "1", "--port", "2"],
        &["/m", "--served-model-name", "{{model_name}}"],
        &["/m", "--port={{port}}"],
        &["/m", "/extra-positional"],
        &["/m", "--kv-transfer-config", "not-json"],
        &["/m", "--trust-remote-code=yes"],
    ];
    for args in bad {
        assert!(parse(&cli, &strings(args)).is_err(), "accepted {args:?}");
    }
    let good: &[&[&str]] = &[
        &["/m", "--port", "1", "--max_model_len", "4096", "--trust-remote-code"],
        &["/m", "--served-model-name", "a", "b"],
        &["/m", "--kv-transfer-config", r#"{"kv_role":"kv_both"}"#, "-tp", "2"],
    ];
    for args in good {
        assert!(parse(&cli, &strings(args)).is_ok(), "refused {args:?}: {:?}", parse(&cli, &strings(args)));
    }
}

/// The block of docs/backends.md between the rendered-commands markers, as it should read.
fn rendered_block() -> String {
    let mut out = String::from("\n```text\n");
    for (backend, sc) in [
        (
            "vLLM",
            Scenario {
                name: "",
                n_gpus: 1,
                nodes: 1,
                user: &["--max-model-len=4096"],
                extended_kv: None,
                policy: Policy::Reserve,
            },
        ),
        ("SGLang", Scenario { name: "", n_gpus: 2, nodes: 1, user: &[], extended_kv: None, policy: Policy::Reserve }),
        ("VoxBox", Scenario { name: "", n_gpus: 1, nodes: 1, user: &[], extended_kv: None, policy: Policy::Reserve }),
    ] {
        for (_, argv) in produce(backend, &sc) {
            out.push_str(&format!(
                "# {backend}, {} GPU(s){}\n",
                sc.n_gpus,
                if sc.user.is_empty() { String::new() } else { format!(", user: {}", sc.user.join(" ")) }
            ));
            // As the worker reports it: the engine key masked.
            out.push_str(&argv.join(" ").replace("0123abcd", crate::backends::render::API_KEY_MASK));
            out.push('\n');
        }
    }
    out.push_str("```\n");
    out
}

#[test]
fn docs_show_real_rendered_command_lines() {
    const START: &str =
        "<!-- rendered-commands: generated by `FERROSTACK_BLESS=1 cargo test docs_show_real_rendered`; do not edit -->";
    const END: &str = "<!-- /rendered-commands -->";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/backends.md");
    let doc = std::fs::read_to_string(path).expect("docs/backends.md");
    let (head, rest) = doc.split_once(START).expect("start marker");
    let (have, tail) = rest.split_once(END).expect("end marker");
    let want = rendered_block();
    if have != want {
        if std::env::var("FERROSTACK_BLESS").is_ok() {
            std::fs::write(path, format!("{head}{START}{want}{END}{tail}")).expect("write docs");
        } else {
            panic!("docs/backends.md's rendered commands are out of date (FERROSTACK_BLESS=1 rewrites them):\n{want}");
        }
    }
}

/// llama-server's flags (`tools/llama_server_flags.txt`: name and how many values it takes).
fn llama_flags() -> BTreeMap<String, usize> {
    include_str!("../../tools/llama_server_flags.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, n) = l.split_once(' ')?;
            Some((name.to_owned(), n.trim().parse().ok()?))
        })
        .collect()
}

/// Parses llama-server's arguments as its own parser would: every flag known, its values present,
/// no flag twice, nothing positional.
fn parse_llama(flags: &BTreeMap<String, usize>, args: &[String]) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut i = 0;
    while i < args.len() {
        let word = &args[i];
        if word.contains("{{") {
            return Err(format!("unrendered placeholder in {word:?}"));
        }
        let (name, inline) = match word.split_once('=') {
            Some((n, _)) if n.starts_with("--") => (n, true),
            _ => (word.as_str(), false),
        };
        let n = *flags.get(name).ok_or_else(|| format!("unrecognized argument {name}"))?;
        let key = crate::backends::kind::Kind::LlamaCpp.canonical_key(name.trim_start_matches('-'));
        if !seen.insert(key) {
            return Err(format!("{name} given twice"));
        }
        i += 1;
        if !inline {
            if i + n > args.len() {
                return Err(format!("{name}: expected {n} value(s)"));
            }
            i += n;
        }
    }
    Ok(())
}

/// What the server launches for a GGUF model on the community llama.cpp backend.
fn produce_llama(policy: Policy, user: &[&str], n_gpus: u32) -> (Estimate, Vec<String>) {
    let catalog = Catalog::load().expect("catalog");
    let spec = catalog.find("llama.cpp").expect("llama.cpp").clone();
    let meta = meta_from_gguf(&gguf::parse_gguf(super::tests::tiny_llama_gguf().as_slice(), "t.gguf").expect("gguf"));
    let user = strings(user);
    let input = EstimateInput {
        backend: "llama.cpp",
        backend_parameters: &user,
        gpu_total_memory: Some(80 * GIB),
        n_gpus,
        extended_kv: None,
        policy,
    };
    let est = estimate(&meta, &input).expect("estimate");
    let injection = injected_parameters(&InjectInput {
        backend: "llama.cpp",
        meta: &meta,
        estimate: &est,
        n_gpus,
        nodes: 1,
        model_name: "{{model_name}}",
        port: "{{port}}",
        user_parameters: &user,
        extended_kv: None,
        gpu_total_memory: Some(80 * GIB),
        backend_version: None,
        gpu_taken: 0,
        sleep_mode: false,
    })
    .expect("injection");
    let overrides =
        DeploymentOverrides { injected_parameters: &injection.args, backend_parameters: &user, ..Default::default() };
    let ctx = RenderContext {
        model_path: "/data/models/m.gguf",
        model_name: "m",
        port: 40000,
        worker_ip: "198.18.7.2",
        gpu_ids: &[0],
        data_dir: "/var/lib/ferrostack/worker/cache",
        api_key: "0123abcd",
        api_key_file: "/run/engine-key",
    };
    let rendered = render_command(&spec, &overrides, &ctx).expect("render");
    (est, rendered.args)
}

#[test]
fn llama_cpp_commands_parse_with_llama_servers_own_flags() {
    let flags = llama_flags();
    assert!(flags.len() > 100, "flag list read");
    let cases: &[(Policy, &[&str], &[&str])] = &[
        (Policy::Reserve, &[], &["--ctx-size=8192"]),
        (FIT, &[], &["--ctx-size=8192"]),
        (FIT4, &[], &["--ctx-size=32768", "--parallel=4"]),
        (FIT4, &["-np 2"], &["--ctx-size=32768"]),
        // The user's context is the whole cache: not multiplied.
        (FIT4, &["-c 4096"], &[]),
    ];
    for (policy, user, want) in cases {
        let (_, args) = produce_llama(*policy, user, 1);
        parse_llama(&flags, &args).unwrap_or_else(|e| panic!("{policy:?} {user:?}: {e}\n    argv: {}", args.join(" ")));
        for w in *want {
            let (flag, v) = w.split_once('=').expect("flag=value");
            let ok = args.windows(2).any(|p| p[0] == flag && p[1] == v) || args.iter().any(|a| a == w);
            assert!(ok, "{policy:?} {user:?}: {args:?} lacks {w}");
        }
    }
    assert!(parse_llama(&flags, &strings(&["-c", "1", "--ctx-size", "2"])).is_err(), "an alias twice");
    assert!(parse_llama(&flags, &strings(&["--no-such-flag"])).is_err());
    assert!(parse_llama(&flags, &strings(&["--port"])).is_err(), "a missing value");
}

/// The budget each engine is told under `fit` is the claim: vLLM's fraction × the GPU and its KV
/// bytes, SGLang's fraction net of what others hold and its token cap; a user's fraction wins.
#[test]
fn fitted_commands_tell_the_engine_the_claim() {
    let total = 80 * GIB;
    let value = |argv: &[String], flag: &str| -> Option<String> {
        let at = argv.iter().position(|a| a == flag)?;
        argv.get(at + 1).cloned()
    };
    let sc = |user, n_gpus, policy| Scenario { name: "", n_gpus, nodes: 1, user, extended_kv: None, policy };
    for (backend, s, frac_flag) in [
        ("vLLM", sc(&[], 1, FIT), "--gpu-memory-utilization"),
        ("vLLM", sc(&[], 2, FIT4), "--gpu-memory-utilization"),
        ("SGLang", sc(&[], 1, FIT), "--mem-fraction-static"),
    ] {
        let user = strings(s.user);
        let input = EstimateInput {
            backend,
            backend_parameters: &user,
            gpu_total_memory: Some(total),
            n_gpus: s.n_gpus,
            extended_kv: None,
            policy: s.policy,
        };
        let fit = estimate(&llm(), &input).expect("estimate").fit.expect("fitted");
        let argv = &produce(backend, &s)[0].1;
        let told: f64 = value(argv, frac_flag).expect("fraction").parse().expect("number");
        // vLLM's budget leaves out the engine overhead (CUDA context and graphs come on top).
        let told_bytes = if backend == "vLLM" { fit.total - fit.overhead } else { fit.total };
        let per_gpu = told_bytes / u64::from(s.n_gpus);
        let taken = if backend == "SGLang" { 20 * GIB } else { 0 };
        let want = (per_gpu + taken) as f64 / total as f64;
        assert!(told <= want && want - told < 0.0001, "{backend}: told {told}, claim {want}");
        match backend {
            "vLLM" => {
                let kv: u64 = value(argv, "--kv-cache-memory-bytes").expect("kv bytes").parse().expect("int");
                assert_eq!(kv, fit.kv_cache / u64::from(s.n_gpus), "{argv:?}");
            }
            _ => {
                let tokens: u64 = value(argv, "--max-total-tokens").expect("tokens").parse().expect("int");
                assert_eq!(tokens, 8192, "{argv:?}");
            }
        }
    }
    let user_wins = produce("vLLM", &sc(&["--gpu-memory-utilization 0.3"], 1, FIT));
    let argv = &user_wins[0].1;
    assert_eq!(value(argv, "--gpu-memory-utilization").as_deref(), Some("0.3"), "{argv:?}");
    assert!(!argv.iter().any(|a| a == "--kv-cache-memory-bytes"), "{argv:?}");
}
