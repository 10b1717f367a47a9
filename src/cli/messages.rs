//! Reading an instance's `state_message` for the terminal: the one line that explains it (for
//! `ferrostack ps`), and whether a pending instance may still be placed by waiting (for
//! `deploy --wait`). Pure functions over the texts the scheduler and the worker write.

/// The scheduler's first line when no worker can take a replica; one `- reason` line follows per
/// worker, GPU or strategy that was considered.
const NO_FIT: &str = "No suitable workers.";
/// What the worker writes before an engine's last log lines.
const LOG_TAIL: &str = "last log lines:";

/// The reasons of a "No suitable workers." message, without the `- ` bullets.
fn reasons(message: &str) -> Vec<&str> {
    message.lines().filter_map(|l| l.trim().strip_prefix("- ")).map(str::trim).filter(|l| !l.is_empty()).collect()
}

/// Words that mark an engine's log line as the one saying what went wrong.
const ERROR_WORDS: [&str; 8] = ["error", "fatal", "failed", "invalid", "unknown", "panic", "cannot", "not found"];

/// One line for a table: a "No suitable workers." message with its first reason (and how many
/// more there are); a failure followed by log lines with the last log line that names an error
/// (else the last one); anything else by its first non-empty line. At most `width` characters.
pub fn headline(message: &str, width: usize) -> String {
    let first = message.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    let line = if first == NO_FIT {
        let why = reasons(message);
        match why.as_slice() {
            [] => first.to_string(),
            [one] => format!("No suitable workers: {one}"),
            [one, rest @ ..] => format!("No suitable workers: {one} (+{} more)", rest.len()),
        }
    } else if let Some((head, tail)) = message.split_once(LOG_TAIL) {
        let lines: Vec<&str> = tail.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let telling = lines.iter().rev().find(|l| {
            let lower = l.to_lowercase();
            ERROR_WORDS.iter().any(|w| lower.contains(w))
        });
        let head = head.trim().trim_end_matches(';').trim();
        match telling.or(lines.last()) {
            Some(line) => format!("{head}: {line}"),
            None => head.to_string(),
        }
    } else {
        first.to_string()
    };
    shorten(&line, width)
}

fn shorten(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_string();
    }
    let mut out: String = line.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Whether waiting can get a pending instance placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outlook {
    /// Something that changes by itself stands in the way (memory in use, a worker not ready, no
    /// worker yet), or the reason is not known: keep waiting.
    MayChange,
    /// Only a change to the cluster (a worker that fits joins) or to the deployment can place it.
    Stuck,
}

/// Reasons that change without anyone acting: memory other instances hold, a worker that is
/// not ready (yet, or again).
const TRANSIENT: [&str; 5] = [" free", "not ready", "qualifying workers give", "split evenly does not fit", "… "];
/// Reasons that say nothing by themselves (a summary of the others).
const NEUTRAL: [&str; 2] = ["no worker passed the filters", "no worker can take this replica"];

/// What a pending instance's message says about waiting. A placement refusal is stuck when
/// every reason is fixed by what the workers are (GPU types, labels, cluster, total memory) or
/// by the deployment (backend, GPU selection, CPU offloading, distributed inference), and none is
/// about what is in use now; a backend that does not exist is stuck too.
pub fn pending_outlook(message: &str) -> Outlook {
    let first = message.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    if first.starts_with("backend ") && first.ends_with("does not exist") {
        return Outlook::Stuck;
    }
    if first != NO_FIT {
        return Outlook::MayChange;
    }
    let why = reasons(message);
    let transient = why.iter().any(|r| TRANSIENT.iter().any(|t| r.contains(t)));
    let fixed = why.iter().any(|r| !NEUTRAL.contains(r) && !TRANSIENT.iter().any(|t| r.contains(t)));
    if fixed && !transient { Outlook::Stuck } else { Outlook::MayChange }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_that_explains_is_shown() {
        let cases = [
            ("", ""),
            ("scheduled on w1", "scheduled on w1"),
            ("\n  first\nsecond", "first"),
            (
                "No suitable workers.\n- worker w1: backend runs on cuda, worker has no GPU",
                "No suitable workers: worker w1: backend runs on cuda, worker has no GPU",
            ),
            (
                "No suitable workers.\n- worker a: not ready\n- worker b: not ready\n- no worker passed the filters",
                "No suitable workers: worker a: not ready (+2 more)",
            ),
            ("No suitable workers.", "No suitable workers."),
            (
                "the inference server exited with status 1; last log lines:\nloading model\nerror: unknown argument: --no-such-flag\nbye",
                "the inference server exited with status 1: error: unknown argument: --no-such-flag",
            ),
            (
                "not healthy within the startup deadline (600 s); last log lines:\nstep 1\nstep 2\n",
                "not healthy within the startup deadline (600 s): step 2",
            ),
            (
                "the inference server exited with status 1; last log lines:\n",
                "the inference server exited with status 1",
            ),
            ("rank 1 exited; last log lines:\nFATAL: cannot bind port\nok", "rank 1 exited: FATAL: cannot bind port"),
        ];
        for (message, want) in cases {
            assert_eq!(headline(message, 200), want, "{message:?}");
        }
        assert_eq!(headline("abcdef", 4), "abc…");
        assert_eq!(headline("abcd", 4), "abcd");
    }

    #[test]
    fn waiting_stops_only_when_nothing_can_change_by_itself() {
        use Outlook::*;
        let cases = [
            // vLLM on a CPU-only machine (the README's example): only a new worker helps.
            (
                "No suitable workers.\n- worker w1: backend runs on cuda, rocm, worker has no GPU\n- no worker passed the filters",
                Stuck,
            ),
            ("No suitable workers.\n- worker w1: the backend needs a GPU (cuda or rocm); this worker has none", Stuck),
            ("No suitable workers.\n- worker w1: label gpu=a100 does not match (no gpu label)", Stuck),
            (
                "No suitable workers.\n- w1:cuda:0: 0.9 × 24.0 GiB = 21.6 GiB is less than the 30.0 GiB needed\n- CPU: CPU offloading is off",
                Stuck,
            ),
            ("No suitable workers.\n- across workers: distributed inference is off", Stuck),
            ("backend \"nope\" does not exist", Stuck),
            // Memory in use now, or a worker that may become ready: it may still come.
            ("No suitable workers.\n- w1:cuda:0: needs 8.0 GiB, 4.0 GiB free", MayChange),
            (
                "No suitable workers.\n- worker w1: needs 2.0 GiB RAM, 1.0 GiB free\n- CPU: CPU offloading is off",
                MayChange,
            ),
            ("No suitable workers.\n- worker w1: not ready\n- no worker passed the filters", MayChange),
            ("No suitable workers.\n- w2:cuda:0: backend does not run on cuda\n- … 25 more", MayChange),
            // No worker at all yet, no reasons, or a message this does not know.
            ("No suitable workers.\n- no worker passed the filters", MayChange),
            ("No suitable workers.", MayChange),
            ("", MayChange),
            ("waiting for the model to download", MayChange),
        ];
        for (message, want) in cases {
            assert_eq!(pending_outlook(message), want, "{message:?}");
        }
    }
}
