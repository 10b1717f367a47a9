//! The generic resource store every table uses: insert, get, list (page, sort, search, filters),
//! compare-and-swap update, delete, and the change log that watch streams read.
//!
//! Architecture Invariant: every write to a resource table records its change in `changes` in the
//! same transaction, so a watcher never misses or reorders an event (how change numbers follow
//! commit order: `changes.rs`).

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row, Transaction};

use super::{Db, DbError, DbResult, Dialect, from_ms, now_ms};
use crate::api::{EventType, Record};

/// A stored resource kind: its table and how to name an instance.
pub trait Resource: Serialize + DeserializeOwned + Clone + Send + Sync + Unpin + 'static {
    /// Table name, also the kind name in errors and in the change log.
    const TABLE: &'static str;
    /// The singular noun used in messages ("user 3 not found").
    const NOUN: &'static str;
    /// The JSON field that holds `name()` (what `sort_by=name` sorts in the answered JSON).
    const NAME_FIELD: &'static str = "name";
    /// Whether commits to this kind concern particular workers (see `involved_workers`).
    const PER_WORKER: bool = false;
    fn name(&self) -> &str;
    /// The workers a row concerns: their watches wake when it changes.
    fn involved_workers(&self) -> Vec<i64> {
        Vec::new()
    }
}

/// A value for an extra (resource-specific) column.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Int(i64),
    OptInt(Option<i64>),
    Text(String),
    OptText(Option<String>),
}

fn bind<'q>(q: Query<'q, Any, AnyArguments<'q>>, v: &Val) -> Query<'q, Any, AnyArguments<'q>> {
    match v {
        Val::Int(x) => q.bind(*x),
        Val::OptInt(x) => q.bind(*x),
        Val::Text(s) => q.bind(s.clone()),
        Val::OptText(s) => q.bind(s.clone()),
    }
}

/// Columns a list may be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Id,
    Name,
    CreatedAt,
    UpdatedAt,
}

impl SortKey {
    pub const ALL: [(&'static str, SortKey); 4] = [
        ("id", SortKey::Id),
        ("name", SortKey::Name),
        ("created_at", SortKey::CreatedAt),
        ("updated_at", SortKey::UpdatedAt),
    ];

    /// The name `sort_by` uses.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, k)| *k == self).map_or("id", |(n, _)| n)
    }

    fn column(self) -> &'static str {
        match self {
            SortKey::Id => "id",
            SortKey::Name => "name_key",
            SortKey::CreatedAt => "created_at",
            SortKey::UpdatedAt => "updated_at",
        }
    }
}

/// What a list asks for. `page = None` means everything.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub page: Option<i64>,
    pub per_page: i64,
    /// (key, descending)
    pub sort: Vec<(SortKey, bool)>,
    pub search: Option<String>,
    /// Equality filters on extra columns: (column, value).
    pub filters: Vec<(&'static str, Val)>,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery { page: None, per_page: 100, sort: vec![(SortKey::Id, false)], search: None, filters: Vec::new() }
    }
}

/// One row of [`Db::update_many_guarded`]: id, expected version, new spec, extra columns.
pub type Update<'a, T> = (i64, i64, T, Vec<(&'a str, Val)>);

/// What a write left for after its commit: its change number (SQLite) and who it concerns.
pub(crate) struct Written {
    pub seq: i64,
    pub workers: Vec<i64>,
}

/// Moves the counter `key` in `settings` from `value` to `value + 1`, or fails with a conflict.
async fn bump_guard(tx: &mut Transaction<'_, Any>, key: &str, value: i64) -> DbResult<()> {
    let bumped = sqlx::query("UPDATE settings SET value = $1 WHERE key = $2 AND value = $3")
        .bind((value + 1).to_string())
        .bind(key.to_string())
        .bind(value.to_string())
        .execute(&mut **tx)
        .await?;
    if bumped.rows_affected() != 1 {
        return Err(DbError::VersionConflict { kind: "scheduling epoch", id: 0, expected: value, actual: -1 });
    }
    Ok(())
}

const CORE_COLUMNS: &str = "id, version, created_at, updated_at, data";

fn decode<T: Resource>(row: &AnyRow) -> DbResult<Record<T>> {
    let id: i64 = row.try_get("id")?;
    let data: String = row.try_get("data")?;
    let spec =
        serde_json::from_str(&data).map_err(|e| DbError::Corrupt { kind: T::NOUN, id, message: e.to_string() })?;
    Ok(Record {
        id,
        version: row.try_get("version")?,
        created_at: from_ms(row.try_get("created_at")?),
        updated_at: from_ms(row.try_get("updated_at")?),
        spec,
    })
}

fn map_unique<T: Resource>(e: sqlx::Error, spec: &T) -> DbError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            DbError::Duplicate { kind: T::NOUN, name: spec.name().to_string() }
        }
        _ => e.into(),
    }
}

fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('%');
    for c in s.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Whether an update moves the resource's version on.
#[derive(Clone, Copy)]
enum Bump {
    Yes,
    No,
}

impl Db {
    /// Inserts a new resource with optional extra column values.
    pub async fn insert<T: Resource>(&self, spec: &T, extra: &[(&str, Val)]) -> DbResult<Record<T>> {
        let mut tx = self.begin_write().await?;
        let (record, change) = self.insert_in(&mut tx, spec, extra).await?;
        tx.commit().await?;
        self.committed(T::TABLE, change.seq, &change.workers).await;
        Ok(record)
    }

    /// Inserts several resources of one kind in one transaction (all or none).
    pub async fn insert_many<T: Resource>(&self, rows: &[(T, Vec<(&str, Val)>)]) -> DbResult<Vec<Record<T>>> {
        let mut tx = self.begin_write().await?;
        let mut records = Vec::with_capacity(rows.len());
        let mut changes = Vec::with_capacity(rows.len());
        for (spec, extra) in rows {
            let (record, change) = self.insert_in(&mut tx, spec, extra).await?;
            records.push(record);
            changes.push(change);
        }
        tx.commit().await?;
        self.committed_many(T::TABLE, &changes).await;
        Ok(records)
    }

    /// Inserts `first`, then what `second` makes of it (if anything), then what `third` makes of
    /// both, in one transaction: all or none. A deployment with its route and the route's target
    /// is written this way, so no failure leaves a deployment without the route it asked for.
    pub async fn insert_chain<A, B, C>(
        &self,
        first: (&A, &[(&str, Val)]),
        second: impl FnOnce(&Record<A>) -> Option<(B, Vec<(&'static str, Val)>)>,
        third: impl FnOnce(&Record<A>, &Record<B>) -> (C, Vec<(&'static str, Val)>),
    ) -> DbResult<(Record<A>, Option<(Record<B>, Record<C>)>)>
    where
        A: Resource,
        B: Resource,
        C: Resource,
    {
        let mut tx = self.begin_write().await?;
        let (a, a_change) = self.insert_in(&mut tx, first.0, first.1).await?;
        let mut rest = None;
        if let Some((b_spec, b_cols)) = second(&a) {
            let (b, b_change) = self.insert_in(&mut tx, &b_spec, &b_cols).await?;
            let (c_spec, c_cols) = third(&a, &b);
            let (c, c_change) = self.insert_in(&mut tx, &c_spec, &c_cols).await?;
            rest = Some(((b, b_change), (c, c_change)));
        }
        tx.commit().await?;
        self.committed(A::TABLE, a_change.seq, &a_change.workers).await;
        Ok((
            a,
            match rest {
                Some(((b, b_change), (c, c_change))) => {
                    self.committed(B::TABLE, b_change.seq, &b_change.workers).await;
                    self.committed(C::TABLE, c_change.seq, &c_change.workers).await;
                    Some((b, c))
                }
                None => None,
            },
        ))
    }

    async fn insert_in<T: Resource>(
        &self,
        tx: &mut Transaction<'_, Any>,
        spec: &T,
        extra: &[(&str, Val)],
    ) -> DbResult<(Record<T>, Written)> {
        let now = now_ms();
        let mut columns = String::from("name, name_key, version, created_at, updated_at, data");
        let mut params = String::from("$1, $2, 1, $3, $3, $4");
        for (i, (col, _)) in extra.iter().enumerate() {
            columns.push_str(", ");
            columns.push_str(col);
            params.push_str(&format!(", ${}", i + 5));
        }
        let sql = format!("INSERT INTO {} ({columns}) VALUES ({params}) RETURNING id", T::TABLE);
        let data = serde_json::to_string(spec).map_err(|e| DbError::Corrupt {
            kind: T::NOUN,
            id: 0,
            message: e.to_string(),
        })?;
        let mut q =
            sqlx::query(&sql).bind(spec.name().to_string()).bind(spec.name().to_lowercase()).bind(now).bind(data);
        for (_, v) in extra {
            q = bind(q, v);
        }
        let row = q.fetch_one(&mut **tx).await.map_err(|e| map_unique(e, spec))?;
        let record = Record {
            id: row.try_get(0)?,
            version: 1,
            created_at: from_ms(now),
            updated_at: from_ms(now),
            spec: spec.clone(),
        };
        let workers = spec.involved_workers();
        let seq = self.record_change(tx, T::TABLE, record.id, EventType::Created, &record, &workers).await?;
        Ok((record, Written { seq, workers }))
    }

    /// Reads one resource by id.
    pub async fn get<T: Resource>(&self, id: i64) -> DbResult<Record<T>> {
        let sql = format!("SELECT {CORE_COLUMNS} FROM {} WHERE id = $1", T::TABLE);
        match sqlx::query(&sql).bind(id).fetch_optional(self.pool()).await? {
            Some(row) => decode(&row),
            None => Err(DbError::NotFound { kind: T::NOUN, id: id.to_string() }),
        }
    }

    /// Reads one resource by its name, compared case-insensitively.
    pub async fn get_by_name<T: Resource>(&self, name: &str) -> DbResult<Option<Record<T>>> {
        let sql = format!("SELECT {CORE_COLUMNS} FROM {} WHERE name_key = $1", T::TABLE);
        let row = sqlx::query(&sql).bind(name.to_lowercase()).fetch_optional(self.pool()).await?;
        row.as_ref().map(decode).transpose()
    }

    /// Reads one resource by an extra column's value.
    pub async fn find_by<T: Resource>(&self, column: &str, value: Val) -> DbResult<Option<Record<T>>> {
        let sql = format!("SELECT {CORE_COLUMNS} FROM {} WHERE {column} = $1", T::TABLE);
        let row = bind(sqlx::query(&sql), &value).fetch_optional(self.pool()).await?;
        row.as_ref().map(decode).transpose()
    }

    /// Lists resources: the requested page and the total count.
    pub async fn list<T: Resource>(&self, q: &ListQuery) -> DbResult<(Vec<Record<T>>, i64)> {
        let mut conditions = Vec::new();
        let mut values = Vec::new();
        if let Some(search) = q.search.as_deref().filter(|s| !s.is_empty()) {
            values.push(Val::Text(escape_like(search)));
            conditions.push(format!("name_key LIKE ${} ESCAPE '\\'", values.len()));
        }
        for (col, v) in &q.filters {
            values.push(v.clone());
            conditions.push(format!("{col} = ${}", values.len()));
        }
        let where_clause =
            if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
        let count_sql = format!("SELECT COUNT(*) FROM {}{where_clause}", T::TABLE);
        let mut count_q = sqlx::query(&count_sql);
        for v in &values {
            count_q = bind(count_q, v);
        }
        let total: i64 = count_q.fetch_one(self.pool()).await?.try_get(0)?;

        let mut order: Vec<String> =
            q.sort.iter().map(|(k, desc)| format!("{} {}", k.column(), if *desc { "DESC" } else { "ASC" })).collect();
        if !q.sort.iter().any(|(k, _)| *k == SortKey::Id) {
            order.push("id ASC".into());
        }
        let mut sql = format!("SELECT {CORE_COLUMNS} FROM {}{where_clause} ORDER BY {}", T::TABLE, order.join(", "));
        if let Some(page) = q.page {
            sql.push_str(&format!(" LIMIT {} OFFSET {}", q.per_page, (page - 1).saturating_mul(q.per_page)));
        }
        let mut list_q = sqlx::query(&sql);
        for v in &values {
            list_q = bind(list_q, v);
        }
        let rows = list_q.fetch_all(self.pool()).await?;
        let items = rows.iter().map(decode).collect::<DbResult<Vec<_>>>()?;
        Ok((items, total))
    }

    /// Writes `spec` over resource `id` if its version is still `expected` (compare-and-swap).
    pub async fn update<T: Resource>(
        &self,
        id: i64,
        expected: i64,
        spec: &T,
        extra: &[(&str, Val)],
    ) -> DbResult<Record<T>> {
        self.update_guarded(None, id, expected, spec, extra).await
    }

    /// [`Db::update`] of status a control loop keeps (a deployment's ready replicas and state),
    /// leaving the version as it is: a user's edit made with the version they read does not
    /// conflict with it. The change is logged and watchers see it as usual. A user's edit that
    /// lands in between writes back the status it read; the loop's next pass corrects it.
    pub async fn update_status<T: Resource>(
        &self,
        id: i64,
        expected: i64,
        spec: &T,
        extra: &[(&str, Val)],
    ) -> DbResult<Record<T>> {
        self.update_one(None, id, expected, spec, extra, Bump::No).await
    }

    /// [`Db::update`], plus a compare-and-swap of a counter in `settings` in the same transaction:
    /// the write happens only if `guard = (key, expected value)` still holds, and bumps it.
    /// The scheduler binds instances this way, so two schedulers never book the same memory.
    pub async fn update_guarded<T: Resource>(
        &self,
        guard: Option<(&str, i64)>,
        id: i64,
        expected: i64,
        spec: &T,
        extra: &[(&str, Val)],
    ) -> DbResult<Record<T>> {
        self.update_one(guard, id, expected, spec, extra, Bump::Yes).await
    }

    async fn update_one<T: Resource>(
        &self,
        guard: Option<(&str, i64)>,
        id: i64,
        expected: i64,
        spec: &T,
        extra: &[(&str, Val)],
        bump: Bump,
    ) -> DbResult<Record<T>> {
        let mut tx = self.begin_write().await?;
        if let Some((key, value)) = guard {
            bump_guard(&mut tx, key, value).await?;
        }
        let Some((record, change)) = self.update_in(&mut tx, id, expected, spec, extra, bump).await? else {
            drop(tx);
            let current = self.get::<T>(id).await?;
            return Err(DbError::VersionConflict { kind: T::NOUN, id, expected, actual: current.version });
        };
        tx.commit().await?;
        self.committed(T::TABLE, change.seq, &change.workers).await;
        Ok(record)
    }

    /// Several compare-and-swap updates of one kind in one transaction, under one `guard` (see
    /// [`Db::update_guarded`]; it moves by one for the whole batch). A row whose version moved, or
    /// that is gone, is left alone and answered `None`; a guard that moved writes nothing.
    pub async fn update_many_guarded<T: Resource>(
        &self,
        guard: Option<(&str, i64)>,
        rows: &[Update<'_, T>],
    ) -> DbResult<Vec<Option<Record<T>>>> {
        let mut tx = self.begin_write().await?;
        if let Some((key, value)) = guard {
            bump_guard(&mut tx, key, value).await?;
        }
        let mut records = Vec::with_capacity(rows.len());
        let mut changes = Vec::with_capacity(rows.len());
        for (id, expected, spec, extra) in rows {
            match self.update_in(&mut tx, *id, *expected, spec, extra, Bump::Yes).await? {
                Some((record, change)) => {
                    records.push(Some(record));
                    changes.push(change);
                }
                None => records.push(None),
            }
        }
        tx.commit().await?;
        self.committed_many(T::TABLE, &changes).await;
        Ok(records)
    }

    /// The update itself, in `tx`; `None` when the row is gone or its version is not `expected`.
    async fn update_in<T: Resource>(
        &self,
        tx: &mut Transaction<'_, Any>,
        id: i64,
        expected: i64,
        spec: &T,
        extra: &[(&str, Val)],
        bump: Bump,
    ) -> DbResult<Option<(Record<T>, Written)>> {
        let now = now_ms();
        let version = match bump {
            Bump::Yes => "version + 1",
            Bump::No => "version",
        };
        let mut sets = format!("name = $1, name_key = $2, data = $3, updated_at = $4, version = {version}");
        for (i, (col, _)) in extra.iter().enumerate() {
            sets.push_str(&format!(", {col} = ${}", i + 7));
        }
        let sql =
            format!("UPDATE {} SET {sets} WHERE id = $5 AND version = $6 RETURNING version, created_at", T::TABLE);
        let data =
            serde_json::to_string(spec).map_err(|e| DbError::Corrupt { kind: T::NOUN, id, message: e.to_string() })?;
        let mut q = sqlx::query(&sql)
            .bind(spec.name().to_string())
            .bind(spec.name().to_lowercase())
            .bind(data)
            .bind(now)
            .bind(id)
            .bind(expected);
        for (_, v) in extra {
            q = bind(q, v);
        }
        // The workers the row concerned before this change must hear of it too (an instance
        // taken off a worker), so read them in the same transaction.
        let mut workers = spec.involved_workers();
        if T::PER_WORKER {
            let sql = format!("SELECT data FROM {} WHERE id = $1", T::TABLE);
            if let Some(row) = sqlx::query(&sql).bind(id).fetch_optional(&mut **tx).await? {
                let data: String = row.try_get(0)?;
                if let Ok(old) = serde_json::from_str::<T>(&data) {
                    workers.extend(old.involved_workers());
                }
            }
        }
        let Some(row) = q.fetch_optional(&mut **tx).await.map_err(|e| map_unique(e, spec))? else {
            return Ok(None);
        };
        let record = Record {
            id,
            version: row.try_get(0)?,
            created_at: from_ms(row.try_get(1)?),
            updated_at: from_ms(now),
            spec: spec.clone(),
        };
        let seq = self.record_change(tx, T::TABLE, id, EventType::Updated, &record, &workers).await?;
        Ok(Some((record, Written { seq, workers })))
    }

    /// Read-modify-write of one resource. With `expected = Some(v)` a stale `v` is a conflict;
    /// with `None` a concurrent change is retried on the fresh row (the caller's edit is re-applied).
    pub async fn modify<T, E, F>(&self, id: i64, expected: Option<i64>, mut edit: F) -> Result<Record<T>, E>
    where
        T: Resource,
        E: From<DbError>,
        F: FnMut(&mut T) -> Result<Vec<(&'static str, Val)>, E>,
    {
        let mut attempts = 0;
        loop {
            let current = self.get::<T>(id).await?;
            if let Some(v) = expected
                && v != current.version
            {
                return Err(DbError::VersionConflict { kind: T::NOUN, id, expected: v, actual: current.version }.into());
            }
            let mut spec = current.spec.clone();
            let extra = edit(&mut spec)?;
            match self.update(id, current.version, &spec, &extra).await {
                Err(DbError::VersionConflict { .. }) if expected.is_none() && attempts < 5 => {
                    attempts += 1;
                }
                res => return res.map_err(E::from),
            }
        }
    }

    /// Deletes one resource, returning its last state.
    pub async fn delete<T: Resource>(&self, id: i64) -> DbResult<Record<T>> {
        let mut tx = self.begin_write().await?;
        let Some((record, change)) = self.delete_in::<T>(&mut tx, id).await? else {
            return Err(DbError::NotFound { kind: T::NOUN, id: id.to_string() });
        };
        tx.commit().await?;
        self.committed(T::TABLE, change.seq, &change.workers).await;
        Ok(record)
    }

    /// Deletes those of `ids` that still exist, in one transaction; returns what it deleted.
    /// Rows are taken in id order, as every batch write takes them, so two batches on one database
    /// (two servers) wait for each other instead of deadlocking.
    pub async fn delete_many<T: Resource>(&self, ids: &[i64]) -> DbResult<Vec<Record<T>>> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut tx = self.begin_write().await?;
        let mut records = Vec::with_capacity(ids.len());
        let mut changes = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some((record, change)) = self.delete_in::<T>(&mut tx, *id).await? {
                records.push(record);
                changes.push(change);
            }
        }
        tx.commit().await?;
        self.committed_many(T::TABLE, &changes).await;
        Ok(records)
    }

    async fn delete_in<T: Resource>(
        &self,
        tx: &mut Transaction<'_, Any>,
        id: i64,
    ) -> DbResult<Option<(Record<T>, Written)>> {
        let sql = format!("DELETE FROM {} WHERE id = $1 RETURNING {CORE_COLUMNS}", T::TABLE);
        let Some(row) = sqlx::query(&sql).bind(id).fetch_optional(&mut **tx).await? else { return Ok(None) };
        let record = decode::<T>(&row)?;
        let workers = record.spec.involved_workers();
        let seq = self.record_change(tx, T::TABLE, id, EventType::Deleted, &record, &workers).await?;
        Ok(Some((record, Written { seq, workers })))
    }

    /// Deletes one resource if it still exists; `true` if this call deleted it. For cascades,
    /// where a concurrent delete of the same row is not an error.
    pub async fn delete_if_present<T: Resource>(&self, id: i64) -> DbResult<bool> {
        match self.delete::<T>(id).await {
            Ok(_) => Ok(true),
            Err(DbError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A consistent snapshot for a new watcher: every row of `T` and the last change number it reflects.
    pub async fn snapshot<T: Resource>(&self, filters: &[(&'static str, Val)]) -> DbResult<(i64, Vec<Record<T>>)> {
        // PostgreSQL: number what is committed first, so the rows read below are (nearly always)
        // covered by the number read with them; a change committed in between arrives again
        // after the snapshot, as a repeat of a state the watcher already has.
        self.sequence_changes().await?;
        let mut tx = self.pool().begin().await?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut *tx).await?;
        }
        let last: Option<i64> = sqlx::query("SELECT MAX(seq) FROM changes").fetch_one(&mut *tx).await?.try_get(0)?;
        let mut conditions = Vec::new();
        for (i, (col, _)) in filters.iter().enumerate() {
            conditions.push(format!("{col} = ${}", i + 1));
        }
        let where_clause =
            if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
        let sql = format!("SELECT {CORE_COLUMNS} FROM {}{where_clause} ORDER BY id", T::TABLE);
        let mut q = sqlx::query(&sql);
        for (_, v) in filters {
            q = bind(q, v);
        }
        let rows = q.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let items = rows.iter().map(decode).collect::<DbResult<Vec<_>>>()?;
        Ok((last.unwrap_or(0), items))
    }
}

#[cfg(test)]
mod tests {
    use super::escape_like;

    #[test]
    fn like_patterns_escape_wildcards() {
        let cases = [("abc", "%abc%"), ("A_b", "%a\\_b%"), ("50%", "%50\\%%"), ("a\\b", "%a\\\\b%")];
        for (input, want) in cases {
            assert_eq!(escape_like(input), want, "input {input:?}");
        }
    }
}
