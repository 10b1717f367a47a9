//! Build script: records the git commit the binary is built from as `FERROSTACK_GIT_COMMIT`
//! (`/version`, `ferrostack version`). A value already in the environment wins (packagers building
//! outside a checkout set it); without git or a checkout the server says `unknown`.

use std::path::{Path, PathBuf};
use std::process::Command;

const VAR: &str = "FERROSTACK_GIT_COMMIT";

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_string())
}

/// Reruns when HEAD moves: HEAD itself, the branch it names and the packed refs. Only files that
/// exist are named (a missing one would rerun the script, and rebuild the crate, on every build).
fn watch_head() {
    let Some(git_dir) = git(&["rev-parse", "--git-dir"]).map(PathBuf::from) else {
        // git did not answer (not installed, or failed this once): still rerun when a checkout's
        // HEAD moves, so one failure is not kept in the build cache for good.
        if Path::new(".git/HEAD").is_file() {
            println!("cargo:rerun-if-changed=.git/HEAD");
        }
        return;
    };
    let common = git(&["rev-parse", "--git-common-dir"]).map(PathBuf::from).unwrap_or_else(|| git_dir.clone());
    let mut files = vec![git_dir.join("HEAD"), common.join("packed-refs")];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        files.push(common.join(&branch));
        files.push(git_dir.join(&branch));
    }
    for file in files.iter().filter(|f| Path::new(f).is_file()) {
        println!("cargo:rerun-if-changed={}", file.display());
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed={VAR}");
    // A build script's input is its environment (cargo's and the packager's).
    #[allow(clippy::disallowed_methods)]
    let preset = std::env::var_os(VAR).is_some();
    if preset {
        return;
    }
    watch_head();
    if let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) {
        println!("cargo:rustc-env={VAR}={commit}");
    }
}
