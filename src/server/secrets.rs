//! Secrets at rest: the data dir is the server's alone (0700), the SQLite database and every secret
//! file are 0600, and the server secret (from which the tokens the server presents to workers are
//! derived) lives in its own file, never in the database, so a copy of the database does not hold it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;

use crate::db::Db;

/// The file that holds the server secret.
pub const SERVER_SECRET_FILE: &str = "server_secret";

/// Makes `dir` (created if missing) private to this user.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create data dir {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private (0700)", dir.display()))
}

/// Makes the SQLite database of `url` (and its WAL and shared-memory files) 0600; other URLs name
/// no local file.
pub fn private_database(url: &str) -> anyhow::Result<()> {
    let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) else { return Ok(()) };
    let path = path.split('?').next().unwrap_or_default();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let file = format!("{path}{suffix}");
        if Path::new(&file).exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot make {file} private (0600)"))?;
        }
    }
    Ok(())
}

/// Writes `value` and a newline to `path`, readable by this user only ([`write_private`]).
pub fn write_secret(path: &Path, value: &str) -> anyhow::Result<()> {
    write_private(path, format!("{value}\n").as_bytes())
}

/// Writes `bytes` to `path`, readable by this user only from its first byte (0600): written whole
/// to a temporary file, synced, then renamed over `path`, so a crash or a reader never sees an
/// empty or half-written file.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    file.sync_all().with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The database setting that holds the server secret's digest (never the secret).
const SECRET_DIGEST: &str = "server_secret_digest";

/// The server secret: read from `data_dir/server_secret`; on the first start after an upgrade,
/// moved there from the database (where earlier versions kept it); on a first start, made anew.
/// The database keeps its digest, so a server whose file is missing or differs (a data dir that
/// was not kept, a second server without a copy) refuses to start instead of deriving keys that
/// no worker or engine knows. Servers that share one database must share this file.
pub async fn server_secret(db: &Db, data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(SERVER_SECRET_FILE);
    let on_disk = std::fs::read_to_string(&path).ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    let digest = db.setting(SECRET_DIGEST).await?;
    let secret = match (on_disk, db.setting(SERVER_SECRET_FILE).await?) {
        (Some(secret), _) => secret,
        // Earlier versions kept it in the database: move it out.
        (None, Some(old)) => old,
        (None, None) if digest.is_some() => anyhow::bail!(
            "{} is missing, but this database was set up with a server secret: restore the file \
             (servers sharing a database share it), or every worker's and engine's key stops working",
            path.display()
        ),
        (None, None) => super::auth::random_token(48),
    };
    let own = super::auth::digest(&secret);
    // Two servers starting at once: the first digest stored wins, the other refuses.
    let stored = match digest {
        Some(d) => d,
        None => db.setting_or_insert(SECRET_DIGEST, &own).await?,
    };
    if stored != own {
        anyhow::bail!(
            "{} does not hold the server secret this database was set up with; restore the right file",
            path.display()
        );
    }
    write_secret(&path, &secret)?;
    db.delete_setting(SERVER_SECRET_FILE).await?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn dirs_databases_and_secrets_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let db = dir.join("x.db");
        std::fs::write(&db, "").unwrap();
        std::fs::write(dir.join("x.db-wal"), "").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        private_database(&format!("sqlite://{}?mode=rwc", db.display())).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&dir.join("x.db-wal")), 0o600);
        private_database("postgres://u@h/db").unwrap();
        let secret = dir.join("s");
        std::fs::write(&secret, "old").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_secret(&secret, "new").unwrap();
        assert_eq!(mode(&secret), 0o600);
        assert!(!dir.join("s.tmp").exists());
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "new\n");
    }
}
