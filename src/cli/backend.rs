//! `ferrostack backend …`: list, show, apply (create or update from YAML), export, delete, enable
//! and disable inference backends on a running server.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::output::{print_json, print_table};
use super::{ClientArgs, client};
use crate::api::backend::{BackendYaml, InferenceBackend};
use crate::backends::parse_backend_yaml;
use crate::client::Client;

const BASE: &str = "/v2/inference-backends";

#[derive(Subcommand, Debug)]
pub enum BackendCmd {
    /// List every backend: built-in, community (enable to use) and custom.
    List(ClientArgs),
    /// Show one backend as JSON.
    Get {
        /// Backend name (e.g. vLLM, llama.cpp, my-backend-custom).
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create or update a backend from a GPUStack-format YAML file (matched by backend_name).
    Apply {
        /// The YAML file; `-` reads standard input.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a backend as YAML (`apply -f` takes it back unchanged).
    Export {
        /// Backend name (e.g. vLLM, llama.cpp, my-backend-custom).
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a custom backend (built-in and community ones can only be disabled).
    Delete {
        /// Backend name (e.g. vLLM, llama.cpp, my-backend-custom).
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Enable a backend (e.g. a community one) so deployments can use it.
    Enable {
        /// Backend name (e.g. vLLM, llama.cpp, my-backend-custom).
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Disable a backend: it leaves the deploy form.
    Disable {
        /// Backend name (e.g. vLLM, llama.cpp, my-backend-custom).
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(cmd: BackendCmd) -> anyhow::Result<()> {
    match cmd {
        BackendCmd::List(args) => {
            let list = client(&args).list::<InferenceBackend>(BASE).await?;
            let rows = list.items.iter().map(|b| {
                vec![
                    b.id.to_string(),
                    b.spec.backend_name.clone(),
                    source(&b.spec.backend_source),
                    b.spec.enabled.to_string(),
                    b.spec.default_version.clone().unwrap_or_default(),
                    b.spec.version_configs.keys().cloned().collect::<Vec<_>>().join(","),
                ]
            });
            print_table(&["ID", "NAME", "SOURCE", "ENABLED", "DEFAULT", "VERSIONS"], rows);
            Ok(())
        }
        BackendCmd::Get { name, client: args } => print_json(&by_name(&client(&args), &name).await?),
        BackendCmd::Apply { file, client: args } => apply(&client(&args), &file).await,
        BackendCmd::Export { name, client: args } => {
            let c = client(&args);
            let backend = by_name(&c, &name).await?;
            print!("{}", c.get_text(&format!("{BASE}/{}/yaml", backend.id)).await?);
            Ok(())
        }
        BackendCmd::Delete { name, client: args } => {
            let c = client(&args);
            let backend = by_name(&c, &name).await?;
            c.delete(&format!("{BASE}/{}", backend.id)).await?;
            println!("deleted backend {}", backend.spec.backend_name);
            Ok(())
        }
        BackendCmd::Enable { name, client: args } => set_enabled(&client(&args), &name, "enable").await,
        BackendCmd::Disable { name, client: args } => set_enabled(&client(&args), &name, "disable").await,
    }
}

async fn apply(c: &Client, file: &std::path::Path) -> anyhow::Result<()> {
    let content = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    // Read locally only to learn the name; the server checks everything and says what is wrong.
    let local = parse_backend_yaml(&content).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let body = BackendYaml { content };
    let existing = match c
        .get::<InferenceBackend>(&format!("{BASE}/backend_name/{}", crate::client::urlencode(&local.backend_name)))
        .await
    {
        Ok(b) => Some(b),
        Err(e) if e.status() == Some(404) => None,
        Err(e) => return Err(e.into()),
    };
    // A document for a custom backend never lands on a built-in or community one of the same
    // name: it is created, and the server names the rule it breaks (the `-custom` suffix).
    let existing = existing.filter(|b| b.spec.backend_source == local.backend_source);
    let (verb, saved): (&str, InferenceBackend) = match existing {
        Some(b) => {
            let saved: InferenceBackend =
                c.put(&format!("{BASE}/{}/from-yaml?version={}", b.id, b.version), &body).await?;
            // The server writes nothing when the document changes nothing.
            (if saved.version == b.version { "unchanged" } else { "updated" }, saved)
        }
        None => ("created", c.post(&format!("{BASE}/from-yaml"), &body).await?),
    };
    println!("{verb} backend {} (id {}, version {})", saved.spec.backend_name, saved.id, saved.version);
    Ok(())
}

async fn set_enabled(c: &Client, name: &str, action: &str) -> anyhow::Result<()> {
    let backend = by_name(c, name).await?;
    let saved: InferenceBackend = c.post(&format!("{BASE}/{}/{action}", backend.id), &serde_json::json!({})).await?;
    println!("backend {} {action}d", saved.spec.backend_name);
    Ok(())
}

async fn by_name(c: &Client, name: &str) -> anyhow::Result<InferenceBackend> {
    Ok(c.get(&format!("{BASE}/backend_name/{}", crate::client::urlencode(name))).await?)
}

fn source(s: &crate::api::backend::BackendSource) -> String {
    serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

#[cfg(test)]
mod tests {

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(crate::client::urlencode("llama.cpp-custom"), "llama.cpp-custom");
        assert_eq!(crate::client::urlencode("a/b c"), "a%2Fb%20c");
    }
}
