//! Command line: server roles (`start`, `server`) and client subcommands that talk to a running
//! server with an API key.

mod backend;
mod login;
mod messages;
mod models;
mod output;
mod routes;
mod serve;
mod workers;

use clap::{Parser, Subcommand};

use crate::api::{ApiKey, ApiKeyCreate, ApiKeyCreated, Cluster, User, VersionInfo};
use crate::client::Client;
use crate::config::ServerArgs;
use output::{print_json, print_table};

pub const ENV_SERVER_URL: &str = "FERROSTACK_SERVER_URL";
pub const ENV_API_KEY: &str = "FERROSTACK_API_KEY";

/// Ferrostack: run AI models on a fleet of GPU machines behind one OpenAI-compatible endpoint.
#[derive(Parser, Debug)]
#[command(name = "ferrostack", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where client subcommands connect.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// Server URL (several, comma-separated: the next is tried when one does not answer)
    /// [default: the server of `ferrostack login`, else http://127.0.0.1:8080].
    #[arg(long, env = ENV_SERVER_URL, global = true)]
    pub server_url: Option<String>,
    /// API key [default: the one `ferrostack login` kept for that server].
    #[arg(long, env = ENV_API_KEY, hide_env_values = true, global = true)]
    pub api_key: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// All-in-one for one machine: the server plus an embedded worker, SQLite in the data dir.
    Start(serve::StartArgs),
    /// The server alone: API, UI, gateway, scheduler. Use --database-url for PostgreSQL.
    Server(ServerArgs),
    /// The agent for a GPU machine: joins a server's cluster and runs the instances placed on it.
    Worker(serve::WorkerArgs),
    /// Deploy a model.
    Deploy(models::DeployArgs),
    /// Deployments and their instances, as tables.
    Ps(ClientArgs),
    /// Set a deployment's replicas (0 stops it).
    Scale {
        /// Deployment name.
        name: String,
        /// Replicas to run (0 stops every instance, keeping the deployment).
        replicas: u32,
        /// Wait until the replicas run.
        #[arg(long)]
        wait: bool,
        /// Seconds to wait with --wait before giving up (exit status 1).
        #[arg(long, default_value_t = 900)]
        timeout: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Turn a deployment's autoscaling on or change it (docs/autoscaling.md).
    Autoscale {
        /// Deployment name.
        name: String,
        #[command(flatten)]
        flags: models::AutoscaleFlags,
        /// Turn autoscaling off (replicas stay where the autoscaler left them).
        #[arg(long, conflicts_with_all = ["max_replicas", "min_replicas", "target_requests", "scale_down_delay", "park_seconds"])]
        off: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a deployment and its instances.
    Undeploy {
        /// Deployment name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Model routes and how each spreads requests over its instances (docs/routing.md).
    #[command(subcommand)]
    Routes(routes::RoutesCmd),
    /// Put a worker into maintenance (`on`) or take it out (`off`); with `--drain` its instances
    /// are replaced on other workers first, then drained (docs/draining.md).
    Maintenance {
        /// Worker name.
        worker: String,
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        mode: String,
        /// Move the worker's instances away first (with `on`).
        #[arg(long)]
        drain: bool,
        /// Why, shown with the worker.
        #[arg(long)]
        message: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print (or follow) a model instance's log.
    Logs {
        /// Instance id.
        id: i64,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<u64>,
        /// Keep printing as the log grows.
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Manage users (administrators).
    #[command(subcommand)]
    Users(UsersCmd),
    /// Manage your API keys.
    #[command(subcommand, name = "api-keys")]
    ApiKeys(ApiKeysCmd),
    /// Show clusters.
    #[command(subcommand)]
    Clusters(ClustersCmd),
    /// Failed-login counts (administrators).
    #[command(subcommand)]
    Logins(LoginsCmd),
    /// Manage inference backends (built-in, community, custom; GPUStack YAML).
    #[command(subcommand)]
    Backend(backend::BackendCmd),
    /// Print the server's version (and this binary's).
    Version(ClientArgs),
    /// Log in with a password; keeps an API key for this machine in ~/.config/ferrostack (0600).
    Login(login::LoginArgs),
    /// Revoke the key `login` made and remove it from this machine.
    Logout,
}

#[derive(Subcommand, Debug)]
pub enum UsersCmd {
    /// List users.
    List(ClientArgs),
    /// Show the user the API key belongs to.
    Me(ClientArgs),
}

#[derive(Subcommand, Debug)]
pub enum ApiKeysCmd {
    /// List your API keys.
    List(ClientArgs),
    /// Create an API key; its value is printed once.
    Create {
        /// A name to tell the key by.
        name: String,
        /// Lifetime in seconds.
        #[arg(long)]
        expires_in: Option<i64>,
        /// Scopes: "*", management, inference (repeatable).
        #[arg(long = "scope")]
        scope: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke an API key by id.
    Delete {
        /// The key's id (`ferrostack api-keys list`).
        id: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum LoginsCmd {
    /// Clear failed-login counts so a locked-out user can log in at once (on the server that
    /// answers: each server process keeps its own).
    Clear {
        /// Only this user's counts (from every address); all counts when absent.
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClustersCmd {
    /// List clusters.
    List(ClientArgs),
    /// Set the GPU memory policy of a cluster's deployments that name none (docs/gpu-memory.md).
    GpuMemory {
        /// The cluster's name.
        cluster: String,
        /// reserve (GPUStack's rule) or fit (claim what a replica needs).
        #[arg(value_parser = ["reserve", "fit"])]
        policy: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

impl Command {
    /// Whether this command is a client that prints and exits (not a server or worker role).
    pub fn is_client(&self) -> bool {
        !matches!(self, Command::Start(_) | Command::Server(_) | Command::Worker(_))
    }
}

/// Lets a client command end quietly when its output is closed (`ferrostack ps | head -1`), as
/// every Unix tool does: the default SIGPIPE action instead of Rust's ignored SIGPIPE, which makes
/// `println!` panic on a closed pipe. Server and worker roles keep SIGPIPE ignored (a client that
/// goes away must not end them).
pub fn quiet_on_closed_pipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: called once at start, before any thread is spawned; SIG_DFL installs no handler code.
    if let Err(e) = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) } {
        tracing::debug!(error = %e, "could not restore SIGPIPE's default action");
    }
}

fn client(args: &ClientArgs) -> Client {
    args.client()
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Start(args) => serve::run(args.server, (!args.no_worker).then_some(args.worker)).await,
        Command::Server(args) => serve::run(args, None).await,
        Command::Worker(args) => serve::run_worker(args).await,
        Command::Deploy(args) => models::deploy(args).await,
        Command::Ps(args) => models::ps(&args).await,
        Command::Scale { name, replicas, wait, timeout, client: args } => {
            let wait = wait.then(|| std::time::Duration::from_secs(timeout));
            models::scale(&args, &name, replicas, wait).await
        }
        Command::Autoscale { name, flags, off, client: args } => models::autoscale(&args, &name, &flags, off).await,
        Command::Undeploy { name, client: args } => models::undeploy(&args, &name).await,
        Command::Maintenance { worker, mode, drain, message, client: args } => {
            workers::maintenance(&args, &worker, mode == "on", drain, message).await
        }
        Command::Routes(cmd) => routes::run(cmd).await,
        Command::Logs { id, tail, follow, client: args } => serve::logs(&client(&args), id, tail, follow).await,
        Command::Backend(cmd) => backend::run(cmd).await,
        Command::Login(args) => login::login(args).await,
        Command::Logout => login::logout().await,
        Command::Version(args) => {
            let v: VersionInfo = client(&args).get("/version").await?;
            let commit = option_env!("FERROSTACK_GIT_COMMIT").unwrap_or("unknown");
            println!("server {} ({}), client {} ({commit})", v.version, v.git_commit, env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Users(UsersCmd::List(args)) => {
            let list = client(&args).list::<User>("/v2/users").await?;
            let rows = list.items.iter().map(|u| {
                vec![
                    u.id.to_string(),
                    u.spec.username.clone(),
                    u.spec.is_admin.to_string(),
                    u.spec.is_active.to_string(),
                ]
            });
            print_table(&["ID", "USERNAME", "ADMIN", "ACTIVE"], rows);
            Ok(())
        }
        Command::Users(UsersCmd::Me(args)) => print_json(&client(&args).get::<User>("/v2/users/me").await?),
        Command::ApiKeys(ApiKeysCmd::List(args)) => {
            let list = client(&args).list::<ApiKey>("/v2/api-keys").await?;
            let rows = list.items.iter().map(|k| {
                let scope: Vec<_> = k
                    .spec
                    .scope
                    .iter()
                    .map(|s| serde_json::to_string(s).unwrap_or_default().replace('"', ""))
                    .collect();
                vec![
                    k.id.to_string(),
                    k.spec.name.clone(),
                    k.spec.masked_value.clone(),
                    scope.join(","),
                    k.spec.expires_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "never".into()),
                ]
            });
            print_table(&["ID", "NAME", "KEY", "SCOPE", "EXPIRES"], rows);
            Ok(())
        }
        Command::ApiKeys(ApiKeysCmd::Create { name, expires_in, scope, client: args }) => {
            let scope = if scope.is_empty() {
                None
            } else {
                Some(
                    scope
                        .iter()
                        .map(|s| serde_json::from_value(serde_json::Value::String(s.clone())))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|_| anyhow::anyhow!("--scope must be one of *, management, inference"))?,
                )
            };
            let body = ApiKeyCreate {
                name,
                description: None,
                expires_in,
                scope,
                allowed_model_names: None,
                rpm_limit: None,
                tpm_limit: None,
            };
            let created: ApiKeyCreated = client(&args).post("/v2/api-keys", &body).await?;
            println!("{}", created.value);
            eprintln!("(this is the only time the key is shown; keep it safe)");
            Ok(())
        }
        Command::ApiKeys(ApiKeysCmd::Delete { id, client: args }) => {
            client(&args).delete(&format!("/v2/api-keys/{id}")).await?;
            println!("api key {id} revoked");
            Ok(())
        }
        Command::Logins(LoginsCmd::Clear { user, client: args }) => {
            let path = match &user {
                Some(name) => format!("/v2/login-throttle?username={}", crate::client::urlencode(name)),
                None => "/v2/login-throttle".to_owned(),
            };
            client(&args).delete(&path).await?;
            println!("failed-login counts cleared for {}", user.as_deref().unwrap_or("every user"));
            Ok(())
        }
        Command::Clusters(ClustersCmd::List(args)) => {
            let list = client(&args).list::<Cluster>("/v2/clusters").await?;
            let rows = list.items.iter().map(|c| {
                vec![
                    c.id.to_string(),
                    c.spec.name.clone(),
                    c.spec.is_default.to_string(),
                    c.spec.gpu_memory.as_str().to_owned(),
                    format!("{}…", c.spec.token_hint),
                ]
            });
            print_table(&["ID", "NAME", "DEFAULT", "GPU MEMORY", "TOKEN"], rows);
            Ok(())
        }
        Command::Clusters(ClustersCmd::GpuMemory { cluster, policy, client: args }) => {
            let c = client(&args);
            let list = c.list::<Cluster>("/v2/clusters?page=-1").await?;
            let found = list.items.iter().find(|x| x.spec.name == cluster);
            let Some(found) = found else {
                anyhow::bail!("no cluster named {cluster:?}; `ferrostack clusters list` shows them");
            };
            let updated: Cluster =
                c.put(&format!("/v2/clusters/{}", found.id), &serde_json::json!({"gpu_memory": policy})).await?;
            println!("cluster {}: gpu_memory {}", updated.spec.name, updated.spec.gpu_memory.as_str());
            Ok(())
        }
    }
}
