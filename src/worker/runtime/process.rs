//! The process runtime: runs the rendered command on the host in its own process group, output
//! appended to the instance's log file, and records `pid start-time` in a pid file so a restarted
//! worker can find (and tell apart from a recycled pid) what it started.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use super::{Handle, LaunchSpec, Liveness, RuntimeError};

pub struct ProcessRuntime {
    /// `<data>/instances`: one directory per instance, holding `pid` and `logs/`.
    root: PathBuf,
    /// Children started by this worker process, so they can be reaped.
    children: Mutex<HashMap<u32, Child>>,
}

/// The kernel's start time of a process (clock ticks since boot), from `/proc/<pid>/stat`.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).and_then(|(state, start)| (state != 'Z' && state != 'X').then_some(start))
}

/// (state, start time) from a `/proc/<pid>/stat` line.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    // The command name may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state come fields 4..; the start time is field 22.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

impl ProcessRuntime {
    pub fn new(root: PathBuf) -> ProcessRuntime {
        ProcessRuntime { root, children: Mutex::new(HashMap::new()) }
    }

    fn pid_file(&self, instance_id: i64) -> PathBuf {
        self.root.join(instance_id.to_string()).join("pid")
    }

    pub async fn start(&self, spec: &LaunchSpec) -> Result<Handle, RuntimeError> {
        let argv: Vec<&String> = spec.program.iter().chain(&spec.args).collect();
        let program = argv.first().map(|s| s.to_string()).unwrap_or_default();
        let fail = |message: String| RuntimeError::Start { program: program.clone(), message };
        if program.is_empty() {
            return Err(fail("the rendered command is empty".into()));
        }
        if let Some(dir) = spec.log_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&spec.log_path)?;
        let mut cmd = Command::new(&program);
        cmd.args(&argv[1..])
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own group: a terminal's Ctrl-C does not reach it, and stop() signals the group.
            .process_group(0)
            .kill_on_drop(false);
        // The launch names the devices to its vendor's runtime (`visible_devices_var`); when the
        // vendor is unknown, every vendor's variable gets the same devices.
        if !spec.gpu_indexes.is_empty() && !super::VISIBLE_DEVICES_VARS.iter().any(|v| spec.env.contains_key(*v)) {
            let ids: Vec<String> = spec.gpu_indexes.iter().map(u32::to_string).collect();
            for var in super::VISIBLE_DEVICES_VARS {
                cmd.env(var, ids.join(","));
            }
        }
        let child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
        let pid = child.id().ok_or_else(|| fail("exited at once".into()))?;
        let start = process_start_time(pid).unwrap_or(0);
        let pid_file = self.pid_file(spec.instance_id);
        if let Some(dir) = pid_file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&pid_file, format!("{pid} {start}\n"))?;
        self.children.lock().await.insert(pid, child);
        Ok(Handle::Process { pid })
    }

    pub async fn liveness(&self, handle: &Handle) -> Liveness {
        let Handle::Process { pid } = handle else {
            return Liveness::Exited("not a process".into());
        };
        let mut children = self.children.lock().await;
        if let Some(child) = children.get_mut(pid) {
            return match child.try_wait() {
                Ok(None) => Liveness::Running,
                Ok(Some(status)) => {
                    children.remove(pid);
                    Liveness::Exited(describe_exit(status))
                }
                Err(e) => Liveness::Exited(format!("cannot wait for pid {pid}: {e}")),
            };
        }
        // Adopted after a worker restart: not our child, so look at /proc.
        match process_start_time(*pid) {
            Some(_) => Liveness::Running,
            None => Liveness::Exited("the process is gone".into()),
        }
    }

    pub async fn stop(&self, handle: &Handle, grace: Duration) {
        let Handle::Process { pid } = handle else { return };
        let group = Pid::from_raw(*pid as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if matches!(self.liveness(handle).await, Liveness::Exited(_)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::warn!(pid, "process ignored SIGTERM: killing it");
        let _ = killpg(group, Signal::SIGKILL);
        if let Some(mut child) = self.children.lock().await.remove(pid) {
            let _ = child.wait().await;
        }
    }

    pub async fn managed(&self) -> Vec<(i64, Handle)> {
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.root) else { return found };
        for entry in entries.flatten() {
            let Some(id) = entry.file_name().to_str().and_then(|s| s.parse::<i64>().ok()) else { continue };
            if let Some(pid) = live_pid(&entry.path().join("pid")) {
                found.push((id, Handle::Process { pid }));
            }
        }
        found
    }

    pub async fn release(&self, instance_id: i64) {
        let _ = std::fs::remove_file(self.pid_file(instance_id));
    }
}

/// The pid in a pid file, if that process still runs and is the same process (start time matches).
fn live_pid(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut parts = text.split_whitespace();
    let pid: u32 = parts.next()?.parse().ok()?;
    let recorded: u64 = parts.next()?.parse().ok()?;
    (process_start_time(pid)? == recorded).then_some(pid)
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "exited".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let line = "1234 (llama (server) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 4 0 98765 1000 50";
        assert_eq!(parse_stat(line), Some(('S', 98765)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) Z"), None);
    }

    #[tokio::test]
    async fn runs_stops_and_finds_processes_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = ProcessRuntime::new(dir.path().to_path_buf());
        let spec = LaunchSpec {
            instance_id: 7,
            instance_name: "t".into(),
            program: vec!["sh".into()],
            args: vec!["-c".into(), "echo started; exec sleep 30".into()],
            env: Default::default(),
            image: None,
            model_path: dir.path().to_path_buf(),
            port: 0,
            gpu_indexes: vec![],
            log_path: dir.path().join("7/logs/0.log"),
            files: vec![],
        };
        let handle = rt.start(&spec).await.expect("start");
        assert_eq!(rt.liveness(&handle).await, Liveness::Running);
        // A second runtime over the same directory (a restarted worker) finds it.
        let again = ProcessRuntime::new(dir.path().to_path_buf());
        assert_eq!(again.managed().await, vec![(7, handle.clone())]);
        // Its output reaches the log file.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&spec.log_path).unwrap_or_default().contains("started") {
            assert!(tokio::time::Instant::now() < deadline, "the log never showed the output");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rt.stop(&handle, Duration::from_secs(5)).await;
        assert!(matches!(rt.liveness(&handle).await, Liveness::Exited(_)));
        assert!(again.managed().await.is_empty());
    }
}
