//! First-start setup (admin user, default cluster, built-in and community inference backends),
//! idempotent when several servers start at once on one empty database, and periodic housekeeping.

use std::sync::LazyLock;
use std::time::Duration;

use super::auth::{digest, hash_password, random_token};
use crate::api::{ClusterSpec, UserSpec};
use crate::backends::{Catalog, CatalogError, admission};
use crate::config::Config;
use crate::db::{Db, DbError, Val};

/// File in the data dir holding the generated admin password (when none was given).
pub const ADMIN_PASSWORD_FILE: &str = "initial_admin_password";
/// File in the data dir holding the default cluster's first registration token.
pub const CLUSTER_TOKEN_FILE: &str = "cluster_token";
/// Change-log entries kept for resuming watches.
const CHANGES_KEPT: i64 = 100_000;

pub async fn run(db: &Db, config: &Config, server_secret: &str) -> anyhow::Result<()> {
    if db.count::<UserSpec>().await? == 0 {
        let (password, generated) = match &config.bootstrap_password {
            Some(p) => (p.clone(), false),
            None => (random_token(20), true),
        };
        let hash = tokio::task::spawn_blocking(move || hash_password(&password).map(|h| (h, password)))
            .await?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let admin = UserSpec {
            username: "admin".into(),
            full_name: Some("Default admin".into()),
            is_admin: true,
            is_active: true,
            require_password_change: generated,
        };
        let inserted = db.insert(&admin, &[("password_hash", Val::Text(hash.0))]).await;
        if lost_race(inserted)? {
            tracing::info!("user \"admin\" was created by another server starting at the same time");
        } else if generated {
            let path = config.data_dir.join(ADMIN_PASSWORD_FILE);
            super::secrets::write_secret(&path, &hash.1)?;
            tracing::info!(
                file = %path.display(),
                "created user \"admin\" with a generated password (this is said once): {}",
                hash.1
            );
        } else {
            tracing::info!("created user \"admin\" with the bootstrap password");
        }
    }
    seed_backends(db).await?;
    if db.count::<ClusterSpec>().await? == 0 {
        let nonce = random_token(16);
        let token = super::auth::cluster_token(server_secret, &nonce);
        let cluster = ClusterSpec {
            name: "default".into(),
            description: Some("The cluster workers join unless told otherwise".into()),
            is_default: true,
            token_hint: token[..4].to_string(),
            token_nonce: Some(nonce),
            gpu_memory: Default::default(),
        };
        let inserted = db.insert(&cluster, &[("token_digest", Val::Text(digest(&token)))]).await;
        if lost_race(inserted)? {
            tracing::info!("the default cluster was created by another server starting at the same time");
        } else {
            super::secrets::write_secret(&config.data_dir.join(CLUSTER_TOKEN_FILE), &token)?;
        }
    }
    Ok(())
}

/// Whether a first-start insert found its row already made by another server that started at the
/// same moment on the same database (servers sharing PostgreSQL): that is not an error, the row
/// is there. Any other failure is.
fn lost_race<T>(inserted: Result<T, DbError>) -> Result<bool, DbError> {
    match inserted {
        Ok(_) => Ok(false),
        Err(DbError::Duplicate { .. }) => Ok(true),
        Err(e) => Err(e),
    }
}

/// The embedded backend catalog, parsed once. It is validated by the unit tests, so an error here
/// is a build defect; the server refuses to start on it and handlers answer 500.
pub fn catalog() -> Result<&'static Catalog, &'static CatalogError> {
    static CATALOG: LazyLock<Result<Catalog, CatalogError>> = LazyLock::new(Catalog::load);
    CATALOG.as_ref()
}

/// Inserts the built-in backends (enabled) and the community catalog (disabled until an operator
/// enables it) that are not stored yet. Idempotent; a stored row, edited or not, is never touched.
async fn seed_backends(db: &Db) -> anyhow::Result<()> {
    let catalog = catalog().map_err(|e| anyhow::anyhow!("embedded backend catalog: {e}"))?;
    for spec in catalog.built_in().iter().chain(catalog.community()) {
        let stored = admission::seed_form(catalog, spec)
            .map_err(|e| anyhow::anyhow!("embedded backend {:?}: {e}", spec.backend_name))?;
        if db.insert_backend_if_missing(&stored).await? {
            tracing::info!(backend = %stored.backend_name, enabled = stored.enabled, "added inference backend");
        }
    }
    Ok(())
}

/// Prunes expired sessions and old change-log entries now and then.
pub fn spawn_housekeeping(db: Db, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            if let Err(e) = db.prune_sessions().await {
                tracing::warn!(error = %e, "pruning sessions failed");
            }
            if let Err(e) = db.prune_changes(CHANGES_KEPT).await {
                tracing::warn!(error = %e, "pruning the change log failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(600)) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    });
}
