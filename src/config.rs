//! Server configuration: command-line flags > `FERROSTACK_*` environment > YAML config file > defaults.
//!
//! clap reads flags and their environment variables; [`Config::resolve`] lays those over the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const ENV_CONFIG: &str = "FERROSTACK_CONFIG";
pub const ENV_DATA_DIR: &str = "FERROSTACK_DATA_DIR";
pub const ENV_HOST: &str = "FERROSTACK_HOST";
pub const ENV_PORT: &str = "FERROSTACK_PORT";
pub const ENV_DATABASE_URL: &str = "FERROSTACK_DATABASE_URL";
pub const ENV_BOOTSTRAP_PASSWORD: &str = "FERROSTACK_BOOTSTRAP_PASSWORD";

pub const ENV_WORKER_GRACE: &str = "FERROSTACK_WORKER_GRACE";
pub const ENV_MAX_REQUEST_BODY_MB: &str = "FERROSTACK_MAX_REQUEST_BODY_MB";
pub const ENV_TRUSTED_PROXY_HEADER: &str = "FERROSTACK_TRUSTED_PROXY_HEADER";
pub const ENV_MAX_WATCH_STREAMS: &str = "FERROSTACK_MAX_WATCH_STREAMS";
pub const ENV_WAKE_QUEUE: &str = "FERROSTACK_WAKE_QUEUE";
pub const ENV_WAKE_TIMEOUT: &str = "FERROSTACK_WAKE_TIMEOUT";

pub const DEFAULT_PORT: u16 = 8080;
pub const DEFAULT_WORKER_GRACE_SECS: u64 = 30;
pub const DEFAULT_HOST: &str = "0.0.0.0";
/// The largest `/v1` and `/model/proxy` request: a 1M-token prompt is ~4 MB of JSON, OpenAI's
/// audio uploads stop at 25 MB.
pub const DEFAULT_MAX_REQUEST_BODY_MB: u64 = 32;
/// Open `?watch=true` streams allowed in all (each holds a socket); also capped by half the
/// process's open-file limit.
pub const DEFAULT_MAX_WATCH_STREAMS: usize = 4096;
/// Requests one sleeping deployment may hold while it wakes (per server).
pub const DEFAULT_WAKE_QUEUE: usize = 256;
/// Seconds a request waits for a sleeping deployment to wake: a cold start of a large model on
/// vLLM takes minutes.
pub const DEFAULT_WAKE_TIMEOUT_SECS: u64 = 600;

/// Server flags; every one can also come from the environment or the config file.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServerArgs {
    /// YAML config file with any of: data_dir, host, port, database_url, bootstrap_password.
    #[arg(long, env = ENV_CONFIG)]
    pub config: Option<PathBuf>,
    /// Directory for the SQLite database, generated secrets and logs [default: ~/.local/share/ferrostack].
    #[arg(long, env = ENV_DATA_DIR)]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0].
    #[arg(long, env = ENV_HOST)]
    pub host: Option<String>,
    /// Port for the UI, the /v2 API and the /v1 gateway [default: 8080]. 0 picks a free port.
    #[arg(long, env = ENV_PORT)]
    pub port: Option<u16>,
    /// postgres://user:pass@host:port/db for PostgreSQL [default: SQLite in the data dir].
    #[arg(long, env = ENV_DATABASE_URL)]
    pub database_url: Option<String>,
    /// Password for the "admin" user created on first start [default: random, written to the data dir].
    #[arg(long, env = ENV_BOOTSTRAP_PASSWORD, hide_env_values = true)]
    pub bootstrap_password: Option<String>,
    /// Seconds without a heartbeat before a worker is not_ready and its instances unreachable [default: 30].
    #[arg(long, env = ENV_WORKER_GRACE)]
    pub worker_grace: Option<u64>,
    /// Largest request body accepted on /v1 and /model/proxy, in MiB [default: 32].
    #[arg(long, env = ENV_MAX_REQUEST_BODY_MB)]
    pub max_request_body_mb: Option<u64>,
    /// Header your reverse proxy sets to the client's address (e.g. X-Forwarded-For; its last
    /// entry is used). Only then is a client address taken from a header [default: none: the
    /// connection's peer address].
    #[arg(long, env = ENV_TRUSTED_PROXY_HEADER)]
    pub trusted_proxy_header: Option<String>,
    /// Open watch streams (?watch=true) allowed in all; also at most half the open-file limit
    /// [default: 4096].
    #[arg(long, env = ENV_MAX_WATCH_STREAMS)]
    pub max_watch_streams: Option<usize>,
    /// Requests held per sleeping (autoscaled, no ready replica) model route while it wakes; more
    /// are answered 503 with Retry-After [default: 256].
    #[arg(long, env = ENV_WAKE_QUEUE)]
    pub wake_queue: Option<usize>,
    /// Seconds a held request waits for its model to wake before 503 with Retry-After
    /// [default: 600].
    #[arg(long, env = ENV_WAKE_TIMEOUT)]
    pub wake_timeout: Option<u64>,
}

/// The config file's shape; unknown keys are refused.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub database_url: Option<String>,
    pub bootstrap_password: Option<String>,
    pub worker_grace: Option<u64>,
    pub max_request_body_mb: Option<u64>,
    pub trusted_proxy_header: Option<String>,
    pub max_watch_streams: Option<usize>,
    pub wake_queue: Option<usize>,
    pub wake_timeout: Option<u64>,
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub data_dir: PathBuf,
    pub host: String,
    pub port: u16,
    pub database_url: Option<String>,
    pub bootstrap_password: Option<String>,
    /// How long a worker may go without a heartbeat before it is not_ready.
    pub worker_grace: std::time::Duration,
    /// Largest request body on the gateway, in bytes.
    pub max_request_body: usize,
    /// The header a trusted reverse proxy sets to the client's address (lowercase), if any.
    pub trusted_proxy_header: Option<String>,
    /// Open watch streams allowed in all.
    pub max_watch_streams: usize,
    /// Requests held per sleeping model route while it wakes.
    pub wake_queue: usize,
    /// How long a held request waits for its model to wake.
    pub wake_timeout: std::time::Duration,
    /// Where the server reads models' metadata from the hub.
    pub hub: HubAccess,
}

/// Where the server reads model metadata from Hugging Face (evaluations and the scheduler's
/// estimates; range requests, never the weights): `HF_ENDPOINT` and `HF_TOKEN`, read once when the
/// configuration loads. Workers have their own (`--hf-endpoint`) for downloads.
#[derive(Debug, Clone, PartialEq)]
pub struct HubAccess {
    pub hf_endpoint: String,
    pub hf_token: Option<String>,
}

impl Default for HubAccess {
    fn default() -> HubAccess {
        HubAccess { hf_endpoint: "https://huggingface.co".into(), hf_token: None }
    }
}

impl HubAccess {
    /// From `HF_ENDPOINT` and `HF_TOKEN`; the public hub when unset.
    #[allow(clippy::disallowed_methods)] // the configuration is where the environment is read
    pub fn from_env() -> HubAccess {
        let endpoint = std::env::var("HF_ENDPOINT").ok().filter(|e| !e.trim().is_empty());
        HubAccess {
            hf_endpoint: endpoint.unwrap_or_else(|| HubAccess::default().hf_endpoint),
            hf_token: std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
}

impl Config {
    /// Reads the config file named by the flags (if any) and resolves.
    pub fn load(args: &ServerArgs, home: Option<&Path>) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => Some(read_file(path)?),
            None => None,
        };
        Ok(Config { hub: HubAccess::from_env(), ..Config::resolve(args, file.unwrap_or_default(), home)? })
    }

    /// Lays flags/env over the file over the defaults.
    pub fn resolve(args: &ServerArgs, file: FileConfig, home: Option<&Path>) -> Result<Config, ConfigError> {
        let data_dir =
            args.data_dir.clone().or(file.data_dir).or_else(|| home.map(|h| h.join(".local/share/ferrostack"))).ok_or(
                ConfigError::Invalid {
                    field: "data_dir",
                    message: "no --data-dir given and no home directory to default to".into(),
                },
            )?;
        let database_url = args.database_url.clone().or(file.database_url);
        if let Some(url) = &database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://") || url.starts_with("sqlite:"))
        {
            return Err(ConfigError::Invalid {
                field: "database_url",
                message: format!("must start with postgres://, postgresql:// or sqlite:, got {url:?}"),
            });
        }
        Ok(Config {
            data_dir,
            host: args.host.clone().or(file.host).unwrap_or_else(|| DEFAULT_HOST.into()),
            port: args.port.or(file.port).unwrap_or(DEFAULT_PORT),
            database_url,
            bootstrap_password: args.bootstrap_password.clone().or(file.bootstrap_password),
            worker_grace: std::time::Duration::from_secs(
                args.worker_grace.or(file.worker_grace).unwrap_or(DEFAULT_WORKER_GRACE_SECS).max(1),
            ),
            max_request_body: usize::try_from(
                args.max_request_body_mb
                    .or(file.max_request_body_mb)
                    .unwrap_or(DEFAULT_MAX_REQUEST_BODY_MB)
                    .clamp(1, 1 << 20)
                    .saturating_mul(1 << 20),
            )
            .unwrap_or(usize::MAX),
            trusted_proxy_header: match args.trusted_proxy_header.clone().or(file.trusted_proxy_header) {
                Some(h) if axum::http::HeaderName::from_bytes(h.trim().as_bytes()).is_err() => {
                    return Err(ConfigError::Invalid {
                        field: "trusted_proxy_header",
                        message: format!("{h:?} is not a header name"),
                    });
                }
                Some(h) if !h.trim().is_empty() => Some(h.trim().to_ascii_lowercase()),
                _ => None,
            },
            max_watch_streams: args
                .max_watch_streams
                .or(file.max_watch_streams)
                .unwrap_or(DEFAULT_MAX_WATCH_STREAMS)
                .max(1),
            wake_queue: args.wake_queue.or(file.wake_queue).unwrap_or(DEFAULT_WAKE_QUEUE),
            wake_timeout: std::time::Duration::from_secs(
                args.wake_timeout.or(file.wake_timeout).unwrap_or(DEFAULT_WAKE_TIMEOUT_SECS),
            ),
            hub: HubAccess::default(),
        })
    }

    /// The database to open: the configured URL, or SQLite in the data dir.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", self.data_dir.join("ferrostack.db").display()),
        }
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Read { path: path.to_path_buf(), message: e.to_string() })?;
    serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_and_file_over_defaults() {
        let file = FileConfig {
            port: Some(9000),
            host: Some("127.0.0.1".into()),
            data_dir: Some("/file".into()),
            ..Default::default()
        };
        let args = ServerArgs { port: Some(9100), ..Default::default() };
        let cfg = Config::resolve(&args, file, Some(Path::new("/home/u"))).expect("valid");
        assert_eq!(cfg.port, 9100);
        assert_eq!(cfg.host, "127.0.0.1");
        assert_eq!(cfg.data_dir, PathBuf::from("/file"));

        let cfg =
            Config::resolve(&ServerArgs::default(), FileConfig::default(), Some(Path::new("/home/u"))).expect("valid");
        assert_eq!(cfg.port, DEFAULT_PORT);
        assert_eq!(cfg.data_dir, PathBuf::from("/home/u/.local/share/ferrostack"));
        assert!(cfg.database_url().starts_with("sqlite:///home/u/.local/share/ferrostack/ferrostack.db"));
    }

    #[test]
    fn bad_database_url_names_the_field() {
        let args =
            ServerArgs { database_url: Some("mysql://x".into()), data_dir: Some("/d".into()), ..Default::default() };
        let err = Config::resolve(&args, FileConfig::default(), None).expect_err("must fail");
        assert!(err.to_string().starts_with("database_url:"), "{err}");
    }

    #[test]
    fn config_file_rejects_unknown_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "port: 1234\nprot: 5\n").expect("write");
        let err = read_file(&path).expect_err("unknown key");
        assert!(err.to_string().contains("prot"), "{err}");
        std::fs::write(&path, "port: 1234\ndata_dir: /x\n").expect("write");
        assert_eq!(read_file(&path).expect("valid").port, Some(1234));
    }
}
