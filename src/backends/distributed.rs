//! How each worker of a distributed instance launches its part, from the rendered command of
//! the main worker's server. Pure: the worker supplies the topology (ranks, addresses and the
//! rendezvous port the main worker picked) and runs what comes back.
//!
//! - vLLM (Ray, GPUStack's default): the main worker starts a Ray head on the rendezvous port and
//!   then execs its `vllm serve` (parallelism flags were injected by the scheduler); followers run
//!   `ray start --block --address=<main>:<port>` instead of vLLM.
//! - SGLang: every worker runs the same server command with `--nnodes`, its own `--node-rank` and
//!   `--dist-init-addr <main>:<port>`.
//! - Everything else (community and custom backends): every worker runs the same command, told
//!   its place through the environment (`FERROSTACK_NNODES`, `FERROSTACK_NODE_RANK`,
//!   `FERROSTACK_DIST_INIT_ADDR`, and torchrun's `NNODES`, `NODE_RANK`, `MASTER_ADDR`,
//!   `MASTER_PORT`).

use std::collections::BTreeMap;

use super::kind::{Kind, kind_of};

/// Which part of the instance this worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Main,
    /// Subordinate `rank` (1-based: the main worker is rank 0).
    Follower {
        rank: u32,
    },
}

impl Role {
    pub fn rank(self) -> u32 {
        match self {
            Role::Main => 0,
            Role::Follower { rank } => rank,
        }
    }
}

/// Where the parts meet.
#[derive(Debug, Clone, Copy)]
pub struct Topology<'a> {
    /// Workers in the instance, main included.
    pub nodes: u32,
    pub main_ip: &'a str,
    /// The rendezvous port on the main worker (Ray GCS, torch distributed init).
    pub port: u16,
    /// This worker's address.
    pub own_ip: &'a str,
}

/// A command to run: entrypoint (may be empty for a container image's own), arguments, env.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Launch {
    pub entrypoint: Vec<String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// The shell line that starts the Ray head and then execs the server given as arguments.
pub const RAY_HEAD: &str = "ray start --head --port=\"$FERROSTACK_RAY_PORT\" --node-ip-address=\"$VLLM_HOST_IP\" \
                            --include-dashboard=false --disable-usage-stats && exec \"$@\"";

/// What the Ray head execs when the backend leaves the entrypoint to its image.
const VLLM_SERVE: [&str; 2] = ["vllm", "serve"];

/// The launch of `role`'s part, from the main server's rendered `launch`.
pub fn adapt(backend: &str, role: Role, topo: &Topology<'_>, launch: Launch) -> Launch {
    let rendezvous = format!("{}:{}", topo.main_ip, topo.port);
    match kind_of(backend) {
        Kind::Vllm => {
            let mut env = launch.env;
            env.insert("VLLM_HOST_IP".into(), topo.own_ip.to_string());
            match role {
                Role::Main => {
                    env.insert("FERROSTACK_RAY_PORT".into(), topo.port.to_string());
                    let mut args: Vec<String> = vec!["ray-head".into()];
                    if launch.entrypoint.is_empty() {
                        // `exec "$@"` needs a program: the image's own entrypoint is out of reach.
                        args.extend(VLLM_SERVE.map(String::from));
                    }
                    args.extend(launch.entrypoint);
                    args.extend(launch.args);
                    Launch { entrypoint: vec!["sh".into(), "-c".into(), RAY_HEAD.into()], args, env }
                }
                Role::Follower { .. } => Launch {
                    entrypoint: vec!["ray".into()],
                    args: vec![
                        "start".into(),
                        "--block".into(),
                        format!("--address={rendezvous}"),
                        format!("--node-ip-address={}", topo.own_ip),
                        "--disable-usage-stats".into(),
                    ],
                    env,
                },
            }
        }
        Kind::Sglang => {
            let mut args = without_flags(launch.args, &["--node-rank", "--dist-init-addr", "--nnodes"]);
            args.extend([
                "--nnodes".into(),
                topo.nodes.to_string(),
                "--node-rank".into(),
                role.rank().to_string(),
                "--dist-init-addr".into(),
                rendezvous,
            ]);
            Launch { entrypoint: launch.entrypoint, args, env: launch.env }
        }
        Kind::LlamaCpp | Kind::Voxbox | Kind::Mindie | Kind::Other => {
            let mut env = launch.env;
            let rank = role.rank().to_string();
            let nodes = topo.nodes.to_string();
            for (k, v) in [
                ("FERROSTACK_NNODES", nodes.clone()),
                ("FERROSTACK_NODE_RANK", rank.clone()),
                ("FERROSTACK_DIST_INIT_ADDR", rendezvous),
                ("NNODES", nodes),
                ("NODE_RANK", rank),
                ("MASTER_ADDR", topo.main_ip.to_string()),
                ("MASTER_PORT", topo.port.to_string()),
            ] {
                env.insert(k.into(), v);
            }
            Launch { entrypoint: launch.entrypoint, args: launch.args, env }
        }
    }
}

/// `args` without the given flags, in either `--flag=value` or `--flag value` form.
fn without_flags(args: Vec<String>, flags: &[&str]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut skip_value = false;
    for arg in args {
        if skip_value {
            skip_value = false;
            if !arg.starts_with("--") {
                continue;
            }
        }
        if flags.contains(&arg.as_str()) {
            skip_value = true;
            continue;
        }
        if flags.iter().any(|f| arg.strip_prefix(f).is_some_and(|rest| rest.starts_with('='))) {
            continue;
        }
        out.push(arg);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn launch(entrypoint: &str, args: &str) -> Launch {
        Launch { entrypoint: words(entrypoint), args: words(args), env: [("A".into(), "1".into())].into() }
    }

    /// Backend, role, entrypoint, arguments, wanted argv, wanted environment.
    type Case<'a> = (&'a str, Role, &'a str, &'a str, &'a str, &'a [(&'a str, &'a str)]);

    #[test]
    fn each_backend_gets_its_own_way_of_meeting() {
        let topo = |own: &'static str| Topology { nodes: 3, main_ip: "10.0.0.1", port: 41000, own_ip: own };
        // (backend, role, entrypoint, args, wanted argv, wanted env)
        let cases: Vec<Case<'_>> = vec![
            (
                "vLLM",
                Role::Main,
                "vllm serve",
                "/m --port 40000 --pipeline-parallel-size 3",
                "sh -c <RAY_HEAD> ray-head vllm serve /m --port 40000 --pipeline-parallel-size 3",
                &[("VLLM_HOST_IP", "10.0.0.1"), ("FERROSTACK_RAY_PORT", "41000"), ("A", "1")],
            ),
            (
                "vLLM",
                Role::Main,
                "",
                "/m --port 40000",
                "sh -c <RAY_HEAD> ray-head vllm serve /m --port 40000",
                &[("FERROSTACK_RAY_PORT", "41000")],
            ),
            (
                "vllm",
                Role::Follower { rank: 2 },
                "vllm serve",
                "/m --port 40000",
                "ray start --block --address=10.0.0.1:41000 --node-ip-address=10.0.0.3 --disable-usage-stats",
                &[("VLLM_HOST_IP", "10.0.0.3"), ("A", "1")],
            ),
            (
                "SGLang",
                Role::Main,
                "python3 -m sglang.launch_server",
                "--model-path /m --nnodes 3 --tp-size 3",
                "python3 -m sglang.launch_server --model-path /m --tp-size 3 --nnodes 3 --node-rank 0 \
                 --dist-init-addr 10.0.0.1:41000",
                &[("A", "1")],
            ),
            (
                "SGLang",
                Role::Follower { rank: 1 },
                "python3 -m sglang.launch_server",
                "--model-path /m --nnodes=3 --node-rank=0 --dist-init-addr 1.2.3.4:5",
                "python3 -m sglang.launch_server --model-path /m --nnodes 3 --node-rank 1 \
                 --dist-init-addr 10.0.0.1:41000",
                &[],
            ),
            (
                "my-backend-custom",
                Role::Follower { rank: 2 },
                "sh -c",
                "serve",
                "sh -c serve",
                &[
                    ("FERROSTACK_NODE_RANK", "2"),
                    ("FERROSTACK_NNODES", "3"),
                    ("FERROSTACK_DIST_INIT_ADDR", "10.0.0.1:41000"),
                    ("MASTER_ADDR", "10.0.0.1"),
                    ("MASTER_PORT", "41000"),
                    ("NODE_RANK", "2"),
                ],
            ),
        ];
        for (backend, role, entrypoint, args, want, env) in cases {
            let own = match role.rank() {
                0 => "10.0.0.1",
                1 => "10.0.0.2",
                _ => "10.0.0.3",
            };
            let got = adapt(backend, role, &topo(own), launch(entrypoint, args));
            let argv: Vec<String> = got.entrypoint.iter().chain(&got.args).cloned().collect();
            let argv = argv.join(" ").replace(RAY_HEAD, "<RAY_HEAD>");
            assert_eq!(argv, want, "{backend} {role:?}");
            for (k, v) in env {
                assert_eq!(got.env.get(*k).map(String::as_str), Some(*v), "{backend} {role:?} env {k}");
            }
        }
    }

    #[test]
    fn flags_are_removed_in_both_spellings_and_nothing_else() {
        let got =
            without_flags(words("--a 1 --node-rank 3 --b --node-rank=4 --nnodes --c x"), &["--node-rank", "--nnodes"]);
        assert_eq!(got, words("--a 1 --b --c x"));
    }
}
