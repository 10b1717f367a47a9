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

/// Writes `value` to `path`, readable by this user only.
pub fn write_secret(path: &Path, value: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // An existing file keeps its mode on open: make sure.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    writeln!(file, "{value}").with_context(|| format!("cannot write {}", path.display()))
}

/// The server secret: read from `data_dir/server_secret`; on the first start after an upgrade,
/// moved there from the database (where earlier versions kept it); else made anew. Servers that
/// share one database must share this file.
pub async fn server_secret(db: &Db, data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(SERVER_SECRET_FILE);
    if let Ok(text) = std::fs::read_to_string(&path)
        && !text.trim().is_empty()
    {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        return Ok(text.trim().to_owned());
    }
    let secret = match db.setting(SERVER_SECRET_FILE).await? {
        Some(old) => old,
        None => super::auth::random_token(48),
    };
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
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "new\n");
    }
}
