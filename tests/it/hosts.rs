//! Test hosts with their own addresses: Linux network namespaces joined by a bridge (veth pairs),
//! in 198.18.0.0/15 (reserved for benchmarking; only these hosts use it). The root namespace is one
//! more host on the bridge (`.1`): the test's in-process server listens there and reaches
//! PostgreSQL on its loopback. Each namespace host (`.2`, `.3`, …) runs real `ferrostack` processes.
//! A host's link can be cut and restored like a network fault. Everything is torn down on drop.
//!
//! Needs root and iproute2 (as here and in CI); elsewhere the tests that use it skip and say why,
//! and under `CI` they fail instead.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A bridge and the namespace hosts on it.
pub struct Hosts {
    tag: String,
    bridge: String,
    /// `198.18.N` or `198.19.N`: the /24 of this set of hosts.
    prefix: String,
    hosts: Vec<String>,
    children: Vec<Child>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Whether this machine can make namespace hosts; under CI it must.
pub fn available() -> bool {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let has_ip = Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success());
    if root && has_ip {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI is set but network-namespace hosts cannot be made (root: {root}, ip: {has_ip})"
    );
    eprintln!("skipped: network-namespace hosts need root and iproute2");
    false
}

impl Hosts {
    /// A bridge at `.1` (the root namespace) and `n` namespace hosts at `.2`, `.3`, ….
    pub fn new(n: usize) -> Hosts {
        sweep_stale();
        let pid = std::process::id();
        let seq = NEXT.fetch_add(1, Ordering::SeqCst);
        let net = (pid.wrapping_mul(7).wrapping_add(seq * 131)) % 500;
        let prefix = format!("198.{}.{}", 18 + net / 250, net % 250 + 1);
        // Interface names have at most 15 bytes: fs<pid>x<seq>{b,hN,vN}.
        let tag = format!("fs{pid}x{seq}");
        let mut hosts = Hosts { bridge: format!("{tag}b"), tag, prefix, hosts: Vec::new(), children: Vec::new() };
        hosts.setup(n).unwrap_or_else(|e| panic!("cannot make namespace hosts: {e}"));
        hosts
    }

    fn setup(&mut self, n: usize) -> Result<(), String> {
        let bridge = self.bridge.clone();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{}.1/24", self.prefix), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..n {
            let ns = format!("{}h{i}", self.tag);
            let veth = format!("{}v{i}", self.tag);
            ip(&["netns", "add", &ns])?;
            self.hosts.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["link", "set", &veth, "master", &bridge])?;
            ip(&["link", "set", &veth, "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", self.addr(i)), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "route", "add", "default", "via", &format!("{}.1", self.prefix)])?;
        }
        Ok(())
    }

    /// The root namespace's address on the bridge (where the test's server listens).
    pub fn root_addr(&self) -> String {
        format!("{}.1", self.prefix)
    }

    /// Host `i`'s address.
    pub fn addr(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, i + 2)
    }

    /// Runs `program args` on host `i`, stderr and stdout to `log`; killed on drop.
    pub fn spawn(&mut self, i: usize, program: &Path, args: &[&str], env: &[(&str, &str)], log: &Path) -> u32 {
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hosts[i]]).arg(program).args(args).stdout(out).stderr(err);
        cmd.stdin(Stdio::null()).env_remove("DOCKER_HOST");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn in namespace");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Cuts (`true`) or restores (`false`) the path between host `i` and the root namespace only
    /// (where PostgreSQL is reached): a permanent neighbour entry to an unused MAC on both ends, so
    /// packets between them go nowhere while host `i` still reaches the other hosts.
    pub fn cut_from_root(&self, i: usize, cut: bool) {
        let bogus = "02:00:5e:00:53:fe";
        let (root, host) = (self.root_addr(), self.addr(i));
        if cut {
            ip(&["-n", &self.hosts[i], "neigh", "replace", &root, "lladdr", bogus, "dev", "eth0", "nud", "permanent"])
                .expect("cut host side");
            ip(&["neigh", "replace", &host, "lladdr", bogus, "dev", &self.bridge, "nud", "permanent"])
                .expect("cut root side");
        } else {
            ip(&["-n", &self.hosts[i], "neigh", "del", &root, "dev", "eth0"]).expect("heal host side");
            ip(&["neigh", "del", &host, "dev", &self.bridge]).expect("heal root side");
        }
    }

    /// Runs `program args` on host `i` and waits for it; its stdout.
    pub fn run(&self, i: usize, program: &str, args: &[&str]) -> String {
        let out = Command::new("ip").args(["netns", "exec", &self.hosts[i], program]).args(args).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
    }

    /// Cuts (`false`) or restores (`true`) host `i`'s link to the bridge: a network fault, the
    /// processes on the host keep running.
    pub fn set_link(&self, i: usize, up: bool) {
        let veth = format!("{}v{i}", self.tag);
        ip(&["link", "set", &veth, if up { "up" } else { "down" }]).expect("set link");
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in &self.hosts {
            kill_inside(ns);
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// Kills whatever still runs inside namespace `ns` (engines the workers started).
fn kill_inside(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else { return };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Removes hosts left by a test process that was killed before it could clean up.
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let ns = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = ns.strip_prefix("fs") else { continue };
        let Some((pid, tail)) = rest.split_once('x') else { continue };
        let (Ok(pid), true) = (pid.parse::<u32>(), tail.contains('h')) else { continue };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        kill_inside(ns);
        let _ = ip(&["netns", "del", ns]);
        let seq = tail.split('h').next().unwrap_or_default();
        let _ = ip(&["link", "del", &format!("fs{pid}x{seq}b")]);
    }
}
