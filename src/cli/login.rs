//! `ferrostack login` / `logout`: an API key made for this machine through a password login and
//! kept in the user's config (`$XDG_CONFIG_HOME/ferrostack/credentials`, else
//! `~/.config/ferrostack/credentials`, 0600), which client commands use when neither `--api-key`
//! nor `FERROSTACK_API_KEY` gives one.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::ClientArgs;
use crate::api::{ApiKeyCreate, ApiKeyCreated};
use crate::client::{Client, server_urls};

/// Where client commands connect when nothing says otherwise.
pub const DEFAULT_SERVER_URL: &str = "http://127.0.0.1:8080";
/// Overrides where the credentials file is (tests, several identities).
pub const ENV_CREDENTIALS: &str = "FERROSTACK_CREDENTIALS";

/// What `ferrostack login` keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credentials {
    /// The server logged in to (its key is sent only there).
    pub server_url: String,
    pub username: String,
    pub api_key: String,
    /// The key's id, so `logout` can revoke it.
    pub api_key_id: i64,
}

/// `ferrostack login`.
#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// User name [default: asked on the terminal].
    #[arg(long, short = 'u')]
    pub username: Option<String>,
    /// Read the password from the first line of standard input instead of asking on the terminal.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The credentials file: `$FERROSTACK_CREDENTIALS`, `$XDG_CONFIG_HOME/ferrostack/credentials` or
/// `~/.config/ferrostack/credentials`.
#[allow(clippy::disallowed_methods)] // the CLI's edge: where the user keeps the file
pub fn credentials_path() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    credentials_path_from(var(ENV_CREDENTIALS), var("XDG_CONFIG_HOME"), var("HOME"))
}

fn credentials_path_from(explicit: Option<PathBuf>, xdg: Option<PathBuf>, home: Option<PathBuf>) -> Option<PathBuf> {
    explicit
        .or_else(|| xdg.filter(|p| p.is_absolute()).map(|x| x.join("ferrostack/credentials")))
        .or_else(|| home.map(|h| h.join(".config/ferrostack/credentials")))
}

/// The stored credentials, if any (an unreadable file counts as none, with a warning).
pub fn load() -> Option<Credentials> {
    let path = credentials_path()?;
    let text = std::fs::read_to_string(&path).ok()?;
    match serde_json::from_str(&text) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("warning: ignoring {}: {e} (`ferrostack login` writes it again)", path.display());
            None
        }
    }
}

/// Writes `creds` to `path`: the directory 0700 when created, the file 0600 from its first byte,
/// replaced whole (a reader never sees half a file).
fn store(path: &Path, creds: &Credentials) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = path.parent().context("credentials path has no directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    crate::server::secrets::write_private(path, serde_json::to_string_pretty(creds)?.as_bytes())
}

/// Where a client command connects and with which key: a flag or variable first; the stored
/// login's server when none is named; the stored key only for the server it was made on.
pub fn resolve(url: Option<&str>, key: Option<&str>, stored: Option<&Credentials>) -> (String, Option<String>) {
    let url = url
        .map(str::to_string)
        .or_else(|| stored.map(|c| c.server_url.clone()))
        .unwrap_or_else(|| DEFAULT_SERVER_URL.to_string());
    let key = key.map(str::to_string).or_else(|| {
        let c = stored?;
        let home = server_urls(&c.server_url);
        // Every server the client may call must be the one the key was made on (the client sends
        // its one key to each server of the list in turn).
        server_urls(&url).iter().all(|u| home.contains(u)).then(|| c.api_key.clone())
    });
    (url, key)
}

impl ClientArgs {
    /// The client these arguments (and a stored login) describe.
    pub fn client(&self) -> Client {
        let stored = if self.api_key.is_none() { load() } else { None };
        let (url, key) = resolve(self.server_url.as_deref(), self.api_key.as_deref(), stored.as_ref());
        Client::new(&url, key)
    }
}

/// The name of the key a login makes: who, from which machine, when.
fn key_name(username: &str, host: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    format!("ferrostack login: {username}@{host} {}", now.format("%Y-%m-%d %H:%M:%S"))
}

fn ask(prompt: &str) -> anyhow::Result<String> {
    let mut err = std::io::stderr();
    write!(err, "{prompt}")?;
    err.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Asks for the password on the terminal without echoing it (`stty -echo`).
fn ask_password() -> anyhow::Result<String> {
    let stty = |arg: &str| -> bool {
        std::fs::File::open("/dev/tty")
            .ok()
            .and_then(|tty| std::process::Command::new("stty").arg(arg).stdin(tty).status().ok())
            .is_some_and(|s| s.success())
    };
    if !stty("-echo") {
        anyhow::bail!("cannot turn off echo on this terminal: pipe the password in with --password-stdin");
    }
    let password = ask("Password: ");
    stty("echo");
    eprintln!();
    password
}

pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let url = args.client.server_url.clone().unwrap_or_else(|| DEFAULT_SERVER_URL.to_string());
    let interactive = std::io::stdin().is_terminal();
    let username = match args.username {
        Some(u) => u,
        None if interactive && !args.password_stdin => ask("Username: ")?,
        None => anyhow::bail!("say who logs in with --username"),
    };
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else if interactive {
        ask_password()?
    } else {
        anyhow::bail!("no terminal to ask for the password on: pipe it in with --password-stdin");
    };
    let path = credentials_path().context("no HOME or XDG_CONFIG_HOME to keep the credentials in")?;
    let base = server_urls(&url).into_iter().next().context("--server-url names no server")?;
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{base}/auth/login"))
        .form(&[("username", username.as_str()), ("password", password.as_str())])
        .send()
        .await
        .with_context(|| format!("cannot reach {base}"))?;
    if !res.status().is_success() {
        let status = res.status();
        let body: serde_json::Value = res.json().await.unwrap_or_default();
        let why = body["message"].as_str().unwrap_or("login refused");
        anyhow::bail!("{base}: {why} ({status})");
    }
    let session = res
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|kv| kv.starts_with(&format!("{}=", crate::server::auth::SESSION_COOKIE)))
        .context("the server answered the login without a session")?
        .to_string();
    let body = ApiKeyCreate {
        name: key_name(&username, &crate::worker::hostname(), chrono::Utc::now()),
        description: Some("made by `ferrostack login`; `ferrostack logout` revokes it".into()),
        expires_in: None,
        scope: None,
        allowed_model_names: None,
        rpm_limit: None,
        tpm_limit: None,
    };
    let res = http
        .post(format!("{base}/v2/api-keys"))
        .header(reqwest::header::COOKIE, &session)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach {base}"))?;
    let status = res.status();
    if !status.is_success() {
        let body: serde_json::Value = res.json().await.unwrap_or_default();
        anyhow::bail!("creating an API key: {} ({status})", body["message"].as_str().unwrap_or("refused"));
    }
    let created: ApiKeyCreated = res.json().await.context("reading the new API key")?;
    // The key is what is kept; the session is not needed any more.
    let _ = http.post(format!("{base}/auth/logout")).header(reqwest::header::COOKIE, &session).send().await;
    let creds = Credentials { server_url: url, username, api_key: created.value, api_key_id: created.key.id };
    store(&path, &creds)?;
    println!(
        "logged in to {} as {}; API key {:?} kept in {}",
        creds.server_url,
        creds.username,
        body.name,
        path.display()
    );
    Ok(())
}

pub async fn logout() -> anyhow::Result<()> {
    let path = credentials_path().context("no HOME or XDG_CONFIG_HOME: nothing is stored")?;
    let Some(creds) = load() else {
        if path.exists() {
            std::fs::remove_file(&path)?;
        }
        println!("not logged in");
        return Ok(());
    };
    let client = Client::new(&creds.server_url, Some(creds.api_key.clone()));
    match client.delete(&format!("/v2/api-keys/{}", creds.api_key_id)).await {
        Ok(()) => println!("revoked the API key this login made"),
        Err(e) => eprintln!("warning: could not revoke the API key on {}: {e}", creds.server_url),
    }
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    println!("logged out of {} ({} removed)", creds.server_url, path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(url: &str) -> Credentials {
        Credentials { server_url: url.into(), username: "admin".into(), api_key: "fs_saved".into(), api_key_id: 1 }
    }

    #[test]
    fn flags_win_and_a_stored_key_goes_only_to_its_server() {
        let a = stored("http://a:8080");
        let several = stored("http://a:8080,http://b:8080");
        // --server-url, --api-key, stored login → URL and key used.
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a Credentials>, &'a str, Option<&'a str>);
        let cases: [Case<'_>; 8] = [
            (None, None, None, DEFAULT_SERVER_URL, None),
            (None, None, Some(&a), "http://a:8080", Some("fs_saved")),
            (Some("http://a:8080/"), None, Some(&a), "http://a:8080/", Some("fs_saved")),
            (Some("http://b:8080"), None, Some(&a), "http://b:8080", None),
            (Some("http://b:8080"), None, Some(&several), "http://b:8080", Some("fs_saved")),
            (Some("http://c:1,http://a:8080"), None, Some(&a), "http://c:1,http://a:8080", None),
            (None, Some("fs_flag"), Some(&a), "http://a:8080", Some("fs_flag")),
            (Some("http://b:8080"), Some("fs_flag"), None, "http://b:8080", Some("fs_flag")),
        ];
        for (url, key, creds, want_url, want_key) in cases {
            let got = resolve(url, key, creds);
            assert_eq!((got.0.as_str(), got.1.as_deref()), (want_url, want_key), "{url:?} {key:?}");
        }
    }

    #[test]
    fn the_file_lives_in_the_users_config() {
        let p = |s: &str| Some(PathBuf::from(s));
        let cases = [
            (p("/x/creds"), p("/cfg"), p("/home/u"), p("/x/creds")),
            (None, p("/cfg"), p("/home/u"), p("/cfg/ferrostack/credentials")),
            (None, p("relative"), p("/home/u"), p("/home/u/.config/ferrostack/credentials")),
            (None, None, p("/home/u"), p("/home/u/.config/ferrostack/credentials")),
            (None, None, None, None),
        ];
        for (explicit, xdg, home, want) in cases {
            assert_eq!(credentials_path_from(explicit, xdg, home), want);
        }
    }

    #[test]
    fn stored_credentials_are_private_and_whole() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cfg/ferrostack/credentials");
        store(&path, &stored("http://a:8080")).expect("store");
        let mode = std::fs::metadata(&path).expect("file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().expect("dir")).expect("dir").permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        // Written again (a second login): replaced, still private.
        store(&path, &stored("http://b:8080")).expect("store again");
        let back: Credentials = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        assert_eq!(back, stored("http://b:8080"));
        assert_eq!(std::fs::metadata(&path).expect("file").permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_key_is_named_for_the_machine() {
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        assert_eq!(key_name("admin", "gpu-01", at), "ferrostack login: admin@gpu-01 2027-01-15 08:00:00");
    }
}
