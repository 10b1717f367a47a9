//! Repository for model routes, their targets and daily token usage.

use sqlx::Row;

use super::{Db, DbResult, ListQuery, Resource, Val};
use crate::api::{ModelRouteSpec, ModelRouteTargetSpec, Record, UsageRow};

impl Resource for ModelRouteSpec {
    const TABLE: &'static str = "model_routes";
    const NOUN: &'static str = "model route";
    fn name(&self) -> &str {
        &self.name
    }
}

impl Resource for ModelRouteTargetSpec {
    const TABLE: &'static str = "model_route_targets";
    const NOUN: &'static str = "model route target";
    fn name(&self) -> &str {
        &self.name
    }
}

/// The extra columns of a route row.
pub fn route_columns(spec: &ModelRouteSpec) -> Vec<(&'static str, Val)> {
    vec![("created_model_id", Val::OptInt(spec.created_model_id))]
}

/// The extra columns of a target row.
pub fn target_columns(spec: &ModelRouteTargetSpec) -> Vec<(&'static str, Val)> {
    vec![("route_id", Val::Int(spec.route_id)), ("model_id", Val::OptInt(spec.model_id))]
}

/// What `GET /v2/usage` may filter on; dates are `YYYY-MM-DD`, inclusive.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageFilter {
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub route_name: Option<String>,
    pub api_key_id: Option<i64>,
    pub user_id: Option<i64>,
}

impl Db {
    /// Shares what this server counted per API key (key, requests, tokens in the last 60 s), in one
    /// statement per thousand keys, stamped with the database's clock.
    pub async fn share_rate_counts(&self, server: &str, counts: &[(i64, u64, u64)]) -> DbResult<()> {
        let now = self.clock_sql();
        for chunk in counts.chunks(1000) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("($1, ${}, ${}, ${}, {now})", 3 * i + 2, 3 * i + 3, 3 * i + 4))
                .collect();
            let sql = format!(
                "INSERT INTO rate_usage (server, key_id, requests, tokens, at) VALUES {} \
                 ON CONFLICT (server, key_id) DO UPDATE SET requests = excluded.requests, \
                 tokens = excluded.tokens, at = excluded.at",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql).bind(server.to_string());
            for (key, requests, tokens) in chunk {
                let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                q = q.bind(*key).bind(count(*requests)).bind(count(*tokens));
            }
            q.execute(self.pool()).await?;
        }
        Ok(())
    }

    /// What the other servers counted per API key, from shares newer than `fresh_ms`: key →
    /// (requests, tokens). Shares of a server that stopped go stale and stop counting.
    pub async fn others_rate_counts(&self, server: &str, fresh_ms: i64) -> DbResult<Vec<(i64, u64, u64)>> {
        let sql = format!(
            "SELECT key_id, CAST(SUM(requests) AS BIGINT), CAST(SUM(tokens) AS BIGINT) FROM rate_usage \
             WHERE server <> $1 AND at > {} - $2 GROUP BY key_id",
            self.clock_sql()
        );
        let rows = sqlx::query(&sql).bind(server.to_string()).bind(fresh_ms).fetch_all(self.pool()).await?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        rows.iter().map(|r| Ok((r.try_get(0)?, count(r.try_get(1)?), count(r.try_get(2)?)))).collect()
    }

    /// Removes shares older than `older_ms` (servers that stopped).
    pub async fn prune_rate_counts(&self, older_ms: i64) -> DbResult<()> {
        let sql = format!("DELETE FROM rate_usage WHERE at < {} - $1", self.clock_sql());
        sqlx::query(&sql).bind(older_ms).execute(self.pool()).await?;
        Ok(())
    }

    /// Writes this server's gateway share for draining (JSON, `gateway::drain::Share`), stamped
    /// with the database's clock.
    pub async fn share_gateway(&self, server: &str, data: &str) -> DbResult<()> {
        let sql = format!(
            "INSERT INTO gateway_shares (server, at, data) VALUES ($1, {}, $2) \
             ON CONFLICT (server) DO UPDATE SET at = excluded.at, data = excluded.data",
            self.clock_sql()
        );
        sqlx::query(&sql).bind(server.to_string()).bind(data.to_string()).execute(self.pool()).await?;
        Ok(())
    }

    /// The other servers' gateway shares newer than `fresh_ms`; older ones (of servers that
    /// stopped) are removed on the way.
    pub async fn others_gateway_shares(&self, server: &str, fresh_ms: i64) -> DbResult<Vec<String>> {
        let now = self.clock_sql();
        sqlx::query(&format!("DELETE FROM gateway_shares WHERE at < {now} - $1"))
            .bind(fresh_ms.saturating_mul(10))
            .execute(self.pool())
            .await?;
        let sql = format!("SELECT data FROM gateway_shares WHERE server <> $1 AND at > {now} - $2");
        let rows = sqlx::query(&sql).bind(server.to_string()).bind(fresh_ms).fetch_all(self.pool()).await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Every target of a route.
    pub async fn targets_of_route(&self, route_id: i64) -> DbResult<Vec<Record<ModelRouteTargetSpec>>> {
        let q = ListQuery { filters: vec![("route_id", Val::Int(route_id))], ..Default::default() };
        Ok(self.list::<ModelRouteTargetSpec>(&q).await?.0)
    }

    /// Adds usage rows to the daily aggregates, in one transaction.
    pub async fn add_usage(&self, rows: &[UsageRow]) -> DbResult<()> {
        let mut tx = self.pool().begin().await?;
        for r in rows {
            sqlx::query(
                "INSERT INTO model_usages (date, user_id, api_key_id, route_id, route_name, model_name, operation, \
                 request_count, prompt_token_count, completion_token_count, unmetered_request_count) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (date, user_id, api_key_id, route_id, model_name, operation) DO UPDATE SET \
                 request_count = model_usages.request_count + excluded.request_count, \
                 prompt_token_count = model_usages.prompt_token_count + excluded.prompt_token_count, \
                 completion_token_count = model_usages.completion_token_count + excluded.completion_token_count, \
                 unmetered_request_count = model_usages.unmetered_request_count + excluded.unmetered_request_count, \
                 route_name = excluded.route_name",
            )
            .bind(r.date.clone())
            .bind(r.user_id)
            .bind(r.api_key_id)
            .bind(r.route_id)
            .bind(r.route_name.clone())
            .bind(r.model_name.clone())
            .bind(r.operation.clone())
            .bind(r.request_count)
            .bind(r.prompt_token_count)
            .bind(r.completion_token_count)
            .bind(r.unmetered_request_count)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Usage rows matching `f`, oldest day first.
    pub async fn usage(&self, f: &UsageFilter) -> DbResult<Vec<UsageRow>> {
        let mut conditions = Vec::new();
        let mut values = Vec::new();
        let mut add = |cond: &str, v: Val| {
            values.push(v);
            conditions.push(format!("{cond} ${}", values.len()));
        };
        if let Some(d) = &f.start_date {
            add("u.date >=", Val::Text(d.clone()));
        }
        if let Some(d) = &f.end_date {
            add("u.date <=", Val::Text(d.clone()));
        }
        if let Some(r) = &f.route_name {
            add("u.route_name =", Val::Text(r.clone()));
        }
        if let Some(k) = f.api_key_id {
            add("u.api_key_id =", Val::Int(k));
        }
        if let Some(u) = f.user_id {
            add("u.user_id =", Val::Int(u));
        }
        let where_clause =
            if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
        let sql = format!(
            "SELECT u.date, u.user_id, u.api_key_id, u.route_id, u.route_name, u.model_name, u.operation, \
             u.request_count, u.prompt_token_count, u.completion_token_count, k.name, us.name, \
             u.unmetered_request_count \
             FROM model_usages u LEFT JOIN api_keys k ON k.id = u.api_key_id LEFT JOIN users us ON us.id = u.user_id\
             {where_clause} ORDER BY u.date, u.id"
        );
        let mut q = sqlx::query(&sql);
        for v in &values {
            q = match v {
                Val::Int(x) => q.bind(*x),
                Val::Text(s) => q.bind(s.clone()),
                Val::OptInt(x) => q.bind(*x),
                Val::OptText(s) => q.bind(s.clone()),
            };
        }
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| {
                Ok(UsageRow {
                    date: row.try_get(0)?,
                    user_id: row.try_get(1)?,
                    api_key_id: row.try_get(2)?,
                    route_id: row.try_get(3)?,
                    route_name: row.try_get(4)?,
                    model_name: row.try_get(5)?,
                    operation: row.try_get(6)?,
                    request_count: row.try_get(7)?,
                    prompt_token_count: row.try_get(8)?,
                    completion_token_count: row.try_get(9)?,
                    api_key_name: row.try_get(10)?,
                    user_name: row.try_get(11)?,
                    unmetered_request_count: row.try_get(12)?,
                })
            })
            .collect()
    }
}
