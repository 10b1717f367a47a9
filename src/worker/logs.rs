//! Instance logs on the worker: one file per run (`<instances>/<id>/logs/<restart>.log`), bounded
//! in size, read back as a tail or followed as it grows.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::Stream;

/// Largest a run's log may grow before it is cut back.
pub const MAX_LOG_BYTES: u64 = 16 * 1024 * 1024;
/// Runs whose logs are kept per instance.
const KEEP_RUNS: usize = 5;

/// The log file of an instance's `restart`-th run.
pub fn log_path(root: &Path, instance_id: i64, restart: u32) -> PathBuf {
    root.join(instance_id.to_string()).join("logs").join(format!("{restart}.log"))
}

/// The newest run's log of an instance.
pub fn latest_log(root: &Path, instance_id: i64) -> Option<PathBuf> {
    let dir = root.join(instance_id.to_string()).join("logs");
    let mut runs: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".log")?.parse().ok()?;
            Some((name, e.path()))
        })
        .collect();
    runs.sort();
    runs.pop().map(|(_, p)| p)
}

/// Drops logs of old runs and cuts a log that outgrew the bound (the writer appends, so it
/// simply continues at the new end).
pub fn enforce_bounds(root: &Path, instance_id: i64) {
    let dir = root.join(instance_id.to_string()).join("logs");
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    let mut runs: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.strip_suffix(".log")?.parse().ok()?, e.path())))
        .collect();
    runs.sort();
    let excess = runs.len().saturating_sub(KEEP_RUNS);
    for (_, path) in runs.drain(..excess) {
        let _ = std::fs::remove_file(path);
    }
    if let Some((_, newest)) = runs.last()
        && std::fs::metadata(newest).is_ok_and(|m| m.len() > MAX_LOG_BYTES)
        && let Ok(file) = std::fs::OpenOptions::new().write(true).open(newest)
    {
        let _ = file.set_len(0);
        let _ = std::fs::write(newest, format!("[log cut at {MAX_LOG_BYTES} bytes]\n"));
    }
}

/// The last `n` lines of a file (all of it when `n` is None), reading at most the final 4 MiB.
pub fn tail(path: &Path, n: Option<usize>) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let window = 4 * 1024 * 1024;
    let start = len.saturating_sub(window);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let Some(n) = n else { return Ok((text, len)) };
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[lines.len().saturating_sub(n)..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    Ok((out, len))
}

/// The last lines of an instance's newest log, for error messages.
pub fn last_lines(root: &Path, instance_id: i64, n: usize) -> String {
    latest_log(root, instance_id).and_then(|p| tail(&p, Some(n)).ok()).map(|(t, _)| t).unwrap_or_default()
}

/// Streams what is appended to `path` after `offset`, until `stop` says so.
pub fn follow(path: PathBuf, mut offset: u64) -> impl Stream<Item = std::io::Result<Vec<u8>>> {
    async_stream::stream! {
        loop {
            let chunk = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || -> std::io::Result<(Vec<u8>, u64)> {
                    let mut file = std::fs::File::open(&path)?;
                    let len = file.metadata()?.len();
                    let from = if len < offset { 0 } else { offset }; // cut back: start over
                    file.seek(SeekFrom::Start(from))?;
                    let mut buf = Vec::new();
                    file.take(1024 * 1024).read_to_end(&mut buf)?;
                    Ok((buf, from))
                })
                .await
            };
            match chunk {
                Ok(Ok((buf, from))) => {
                    offset = from + buf.len() as u64;
                    if !buf.is_empty() {
                        yield Ok(buf);
                        continue;
                    }
                }
                Ok(Err(e)) => {
                    yield Err(e);
                    return;
                }
                Err(e) => {
                    yield Err(std::io::Error::other(e));
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_returns_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.log");
        std::fs::write(&path, "a\nb\nc\nd\n").expect("write");
        let cases = [(Some(2), "c\nd\n"), (Some(0), ""), (Some(10), "a\nb\nc\nd\n"), (None, "a\nb\nc\nd\n")];
        for (n, want) in cases {
            assert_eq!(tail(&path, n).expect("tail").0, want, "n = {n:?}");
        }
    }

    #[test]
    fn old_runs_are_dropped_and_the_newest_is_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        for run in 0..8 {
            let p = log_path(dir.path(), 3, run);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, format!("run {run}\n")).expect("write");
        }
        enforce_bounds(dir.path(), 3);
        let left = std::fs::read_dir(dir.path().join("3/logs")).expect("dir").count();
        assert_eq!(left, KEEP_RUNS);
        assert_eq!(latest_log(dir.path(), 3), Some(log_path(dir.path(), 3, 7)));
        assert_eq!(last_lines(dir.path(), 3, 5), "run 7\n");
    }
}
