//! Repositories for users, sessions, API keys and clusters: the secret-bearing columns that never
//! appear in a resource's JSON (password hashes, key and token digests) live here.

use sqlx::Row;

use super::{Db, DbError, DbResult, Resource, Val, now_ms};
use crate::api::{ApiKeySpec, ClusterSpec, Record, UserSpec};

impl Resource for UserSpec {
    const TABLE: &'static str = "users";
    const NOUN: &'static str = "user";
    const NAME_FIELD: &'static str = "username";
    fn name(&self) -> &str {
        &self.username
    }
}

impl Resource for ApiKeySpec {
    const TABLE: &'static str = "api_keys";
    const NOUN: &'static str = "api key";
    fn name(&self) -> &str {
        &self.name
    }
}

impl Resource for ClusterSpec {
    const TABLE: &'static str = "clusters";
    const NOUN: &'static str = "cluster";
    fn name(&self) -> &str {
        &self.name
    }
}

/// An API key's record together with the digest of its secret, for authentication.
#[derive(Debug, Clone)]
pub struct ApiKeyAuth {
    pub key: Record<ApiKeySpec>,
    pub secret_digest: String,
}

impl Db {
    pub async fn count<T: Resource>(&self) -> DbResult<i64> {
        let sql = format!("SELECT COUNT(*) FROM {}", T::TABLE);
        Ok(sqlx::query(&sql).fetch_one(self.pool()).await?.try_get(0)?)
    }

    /// The password hash of a user, by username (case-insensitive).
    pub async fn user_credentials(&self, username: &str) -> DbResult<Option<(Record<UserSpec>, String)>> {
        let row = sqlx::query("SELECT password_hash FROM users WHERE name_key = $1")
            .bind(username.to_lowercase())
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let hash: String = row.try_get(0)?;
        let user = self
            .get_by_name::<UserSpec>(username)
            .await?
            .ok_or_else(|| DbError::NotFound { kind: UserSpec::NOUN, id: username.to_string() })?;
        Ok(Some((user, hash)))
    }

    pub async fn password_hash(&self, user_id: i64) -> DbResult<String> {
        let row = sqlx::query("SELECT password_hash FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| DbError::NotFound { kind: UserSpec::NOUN, id: user_id.to_string() })?;
        Ok(row.try_get(0)?)
    }

    pub async fn create_session(&self, token_digest: &str, user_id: i64, expires_at_ms: i64) -> DbResult<()> {
        sqlx::query("INSERT INTO sessions (token_digest, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(token_digest.to_string())
            .bind(user_id)
            .bind(now_ms())
            .bind(expires_at_ms)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The user id of a live session.
    pub async fn session_user(&self, token_digest: &str) -> DbResult<Option<i64>> {
        let row = sqlx::query("SELECT user_id FROM sessions WHERE token_digest = $1 AND expires_at > $2")
            .bind(token_digest.to_string())
            .bind(now_ms())
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub async fn delete_session(&self, token_digest: &str) -> DbResult<()> {
        sqlx::query("DELETE FROM sessions WHERE token_digest = $1")
            .bind(token_digest.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Ends every session of a user (after a password change or deactivation).
    pub async fn delete_user_sessions(&self, user_id: i64) -> DbResult<()> {
        sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(self.pool()).await?;
        Ok(())
    }

    pub async fn prune_sessions(&self) -> DbResult<u64> {
        let res =
            sqlx::query("DELETE FROM sessions WHERE expires_at <= $1").bind(now_ms()).execute(self.pool()).await?;
        Ok(res.rows_affected())
    }

    /// An API key by its public access key, with its secret digest.
    pub async fn api_key_by_access_key(&self, access_key: &str) -> DbResult<Option<ApiKeyAuth>> {
        let row = sqlx::query("SELECT id, secret_digest FROM api_keys WHERE access_key = $1")
            .bind(access_key.to_string())
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let id: i64 = row.try_get(0)?;
        let secret_digest: String = row.try_get(1)?;
        match self.get::<ApiKeySpec>(id).await {
            Ok(key) => Ok(Some(ApiKeyAuth { key, secret_digest })),
            Err(DbError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The cluster whose registration token has this digest.
    pub async fn cluster_by_token_digest(&self, digest: &str) -> DbResult<Option<Record<ClusterSpec>>> {
        self.find_by("token_digest", Val::Text(digest.to_string())).await
    }
}
