//! Lists and watch streams, written once for every resource.
//!
//! `GET /v2/<resource>` answers the paginated envelope; with `?watch=true` it answers an SSE stream
//! that starts with a CREATED replay of the current rows (all carrying the snapshot's change id),
//! then one event per committed change. Each event has an SSE `id:`; a client that reconnects with
//! `Last-Event-ID` (or `?since=`) receives exactly the changes after it. If that point is no longer
//! retained, it receives a RESET event followed by a fresh replay.
//!
//! That SSE framing is for clients that ask for it (`Accept: text/event-stream`, as a browser's
//! `EventSource` and our own client do, or a `Last-Event-ID` resume). Every other client gets
//! GPUStack's framing, which its SDK (`ClientSet(...).models.watch()`) reads: one JSON object per
//! line, `{"type": 1, "data": {...}, "id": <row id>}` with GPUStack's integer event types
//! (CREATED 1, UPDATED 2, DELETED 3), a blank line every 15 s while nothing happens, no resume.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{ListParams, int_param};
use super::list::ListFilters;
use crate::api::{EventType, ListResponse, Record, WatchEvent};
use crate::db::{Db, Resource};

/// How many change-log entries a watcher reads per query.
const BATCH: i64 = 500;
/// How long a GPUStack-framed watch stays silent before a blank line (GPUStack's SDK gives up
/// after 45 s without a line).
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(15);

/// How a watch stream is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Server-Sent Events with `id:` (resumable with `Last-Event-ID`).
    Sse,
    /// GPUStack's: one JSON object per line, integer event types.
    GpuStack,
}

/// The framing a watch request gets: SSE when the client accepts `text/event-stream` or resumes
/// with `Last-Event-ID`, GPUStack's otherwise (its SDK sends `Accept: */*`).
pub fn framing(headers: &HeaderMap) -> Framing {
    let wants_sse = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"));
    if wants_sse || headers.contains_key("last-event-id") { Framing::Sse } else { Framing::GpuStack }
}

/// GPUStack's `EventType` number for an event; `None` for RESET, which GPUStack has no word for
/// (its clients never resume, so they never see one).
pub fn gpustack_event_type(event_type: EventType) -> Option<u8> {
    match event_type {
        EventType::Created => Some(1),
        EventType::Updated => Some(2),
        EventType::Deleted => Some(3),
        EventType::Reset => None,
    }
}

/// One line of a GPUStack-framed watch: `{"type", "data", "id"}` (`id`: the row's, as GPUStack's
/// `Event` has it), newline-terminated; `None` for an event GPUStack's clients do not know.
pub fn gpustack_line(event_type: EventType, data: Option<serde_json::Value>) -> Option<String> {
    let code = gpustack_event_type(event_type)?;
    let id = data.as_ref().and_then(|d| d.get("id")).cloned().unwrap_or(serde_json::Value::Null);
    let line = serde_json::json!({"type": code, "data": data, "id": id});
    Some(format!("{line}\n"))
}

/// One event a watch stream carries, before framing.
struct Item<V> {
    event_type: EventType,
    /// The change number (SSE `id:`).
    seq: i64,
    data: Option<V>,
}

/// Answers a list request: the page, or a watch stream when `watch=true`. `filters` (the list's
/// [`ListFilters`]) select rows in SQL and in the stream alike; `view` maps a record to its wire form.
pub async fn list_or_watch<T, V, F, M>(
    state: &AppState,
    headers: &HeaderMap,
    raw: &HashMap<String, String>,
    mut params: ListParams,
    filters: F,
    view: M,
) -> ApiResult<Response>
where
    T: Resource,
    V: serde::Serialize + Send + 'static,
    F: ListFilters<T>,
    M: Fn(Record<T>) -> V + Send + Sync + 'static,
{
    let exact = filters.sql_is_exact();
    let sql = filters.sql();
    let visible = move |r: &Record<T>| filters.matches(r);
    if params.watch {
        let resume = resume_point(headers, raw)?;
        let slot = state.watches.open(&credential_id(headers))?;
        let stream = watch_stream::<T, V, _, M>(state.clone(), resume, params.worker_scope, visible, view, slot);
        return Ok(match framing(headers) {
            Framing::Sse => {
                let events = stream.map(|i| Ok::<_, Infallible>(event(i.event_type, i.seq, i.data)));
                Sse::new(events).keep_alive(KeepAlive::default()).into_response()
            }
            Framing::GpuStack => {
                let mut res = Body::from_stream(gpustack_lines(stream)).into_response();
                res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
                res
            }
        });
    }
    params.query.filters = sql;
    // Sorted by fields that are not columns, or selected by a superset in SQL: filtered, sorted
    // and paged in memory.
    if !params.field_sort.is_empty() || !exact {
        let page = params.query.page.take();
        let (rows, _) = state.db.list::<T>(&params.query).await?;
        let items: Vec<V> = rows.into_iter().filter(|r| visible(r)).map(view).collect();
        let mut items: Vec<serde_json::Value> =
            items.iter().map(serde_json::to_value).collect::<Result<_, _>>().map_err(|e| ApiError::internal(&e))?;
        let keys: Vec<(String, bool)> = params
            .field_sort
            .iter()
            .map(|(k, d)| (if k == "name" { T::NAME_FIELD.to_string() } else { k.clone() }, *d))
            .collect();
        sort_by_fields(&mut items, &keys)?;
        let total = items.len() as i64;
        let items = page_of(items, page, params.query.per_page);
        let pagination = params.pagination(total, items.len());
        return Ok(axum::Json(ListResponse { items, pagination }).into_response());
    }
    let (items, total) = state.db.list::<T>(&params.query).await?;
    let items: Vec<V> = items.into_iter().filter(|r| visible(r)).map(view).collect();
    let pagination = params.pagination(total, items.len());
    Ok(axum::Json(ListResponse { items, pagination }).into_response())
}

/// Who holds a watch, for its per-credential bound: a digest of the API key or worker credential
/// that authenticated, else of the session cookie, else of the `Authorization` header (Basic).
fn credential_id(headers: &HeaderMap) -> String {
    use super::auth::{digest, presented_api_key, session_cookie, split_api_key};
    // The same order `auth::require_management` authenticates in: a worker credential or a
    // registration token, then HTTP Basic, then a user's key, then the session. Keyed by what
    // authenticated, so headers that played no part cannot spread one caller over many counts.
    let key = presented_api_key(headers);
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|_| super::basic::basic_credentials(headers).is_some());
    let machine = key.filter(|k| split_api_key(k).is_none());
    machine.or(basic).or(key).or_else(|| session_cookie(headers)).map(digest).unwrap_or_default()
}

/// One page of an in-memory list (`None`: all of it).
pub fn page_of<V>(items: Vec<V>, page: Option<i64>, per_page: i64) -> Vec<V> {
    match page {
        None => items,
        Some(p) => {
            let skip = usize::try_from((p - 1).saturating_mul(per_page)).unwrap_or(usize::MAX);
            items.into_iter().skip(skip).take(usize::try_from(per_page).unwrap_or(0)).collect()
        }
    }
}

/// Sorts answered items by fields of their JSON (`a.b` reaches into objects): numbers and strings
/// in their natural order, nulls and missing values last. A field no item has is a 400 (a typo).
pub fn sort_by_fields(items: &mut [serde_json::Value], keys: &[(String, bool)]) -> ApiResult<()> {
    use std::cmp::Ordering;
    let lookup = |v: &serde_json::Value, path: &str| -> Option<serde_json::Value> {
        path.split('.').try_fold(v, |v, k| v.get(k)).filter(|v| !v.is_null()).cloned()
    };
    for (key, _) in keys {
        if !items.is_empty() && items.iter().all(|i| i.pointer(&format!("/{}", key.replace('.', "/"))).is_none()) {
            return Err(ApiError::new(
                crate::server::error::ErrorCode::InvalidQuery,
                format!("sort_by: cannot sort by {key:?}: the items have no such field"),
            )
            .with_field("sort_by"));
        }
    }
    let compare = |a: &serde_json::Value, b: &serde_json::Value| -> Ordering {
        use serde_json::Value::*;
        match (a, b) {
            (Number(x), Number(y)) => x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal),
            (String(x), String(y)) => x.to_lowercase().cmp(&y.to_lowercase()).then_with(|| x.cmp(y)),
            (Bool(x), Bool(y)) => x.cmp(y),
            (x, y) => x.to_string().cmp(&y.to_string()),
        }
    };
    items.sort_by(|a, b| {
        keys.iter()
            .map(|(key, desc)| match (lookup(a, key), lookup(b, key)) {
                (Some(x), Some(y)) if *desc => compare(&y, &x),
                (Some(x), Some(y)) => compare(&x, &y),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            })
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    });
    Ok(())
}

fn resume_point(headers: &HeaderMap, raw: &HashMap<String, String>) -> ApiResult<Option<i64>> {
    if let Some(v) = headers.get("last-event-id") {
        let text = v.to_str().unwrap_or("");
        return text
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ApiError::field("Last-Event-ID", format!("must be an event id (integer), got {text:?}")));
    }
    int_param(raw, "since")
}

fn event<V: serde::Serialize>(event_type: EventType, id: i64, data: Option<V>) -> Event {
    let body = WatchEvent { event_type, id, data };
    let json = serde_json::to_string(&body).unwrap_or_else(|_| "{}".into());
    Event::default().id(id.to_string()).data(json)
}

/// A watch's events as GPUStack frames them, with a blank line after [`HEARTBEAT`] of silence.
fn gpustack_lines<V: serde::Serialize>(
    items: impl Stream<Item = Item<V>> + Send + 'static,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    async_stream::stream! {
        let mut items = std::pin::pin!(items);
        loop {
            match tokio::time::timeout(HEARTBEAT, items.next()).await {
                Ok(Some(item)) => {
                    let data = item.data.and_then(|d| serde_json::to_value(d).ok());
                    if let Some(line) = gpustack_line(item.event_type, data) {
                        yield Ok(Bytes::from(line));
                    }
                }
                Ok(None) => break,
                Err(_) => yield Ok(Bytes::from_static(b"\n")),
            }
        }
    }
}

fn watch_stream<T, V, F, M>(
    state: AppState,
    resume: Option<i64>,
    worker_scope: Option<i64>,
    visible: F,
    view: M,
    slot: super::streams::WatchSlot,
) -> impl Stream<Item = Item<V>> + Send + 'static
where
    T: Resource,
    V: serde::Serialize + Send + 'static,
    F: Fn(&Record<T>) -> bool + Send + Sync + 'static,
    M: Fn(Record<T>) -> V + Send + Sync + 'static,
{
    async_stream::stream! {
        // Held for as long as the stream lives; given back when the client goes away.
        let _slot = slot;
        let db: Db = state.db.clone();
        let mut changed = match worker_scope {
            Some(worker) => db.subscribe_worker(worker),
            None => db.subscribe(&[T::TABLE]),
        };
        let mut shutdown = state.shutdown.clone();
        let retained = match (resume, db.oldest_change().await) {
            (Some(id), Ok(oldest)) => oldest.is_none_or(|o| o <= id + 1),
            _ => false,
        };
        let mut cursor = match resume {
            Some(id) if retained => id,
            _ => {
                if resume.is_some() {
                    yield Item::<V> { event_type: EventType::Reset, seq: resume.unwrap_or(0), data: None };
                }
                match db.snapshot::<T>(&[]).await {
                    Ok((seq, rows)) => {
                        for row in rows.into_iter().filter(|r| visible(r)) {
                            yield Item { event_type: EventType::Created, seq, data: Some(view(row)) };
                        }
                        seq
                    }
                    Err(e) => {
                        tracing::error!(error = %e, kind = T::TABLE, "watch snapshot failed");
                        return;
                    }
                }
            }
        };
        loop {
            let changes = match db.changes_since(T::TABLE, cursor, BATCH, worker_scope).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, kind = T::TABLE, "watch read failed");
                    return;
                }
            };
            let full = changes.len() as i64 == BATCH;
            for change in changes {
                cursor = change.seq;
                let record: Record<T> = match serde_json::from_str(&change.data) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, seq = change.seq, "skipping unreadable change");
                        continue;
                    }
                };
                if visible(&record) {
                    yield Item { event_type: change.event, seq: change.seq, data: Some(view(record)) };
                }
            }
            if full {
                continue;
            }
            // Woken by this process's commits of this kind, and (PostgreSQL) by the one poller
            // that notices other servers' commits: no watcher polls on its own.
            tokio::select! {
                res = changed.changed() => if res.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_follows_accept_and_resume() {
        let cases: [(&[(&str, &str)], Framing); 6] = [
            (&[], Framing::GpuStack),
            (&[("accept", "*/*")], Framing::GpuStack),
            (&[("accept", "application/json")], Framing::GpuStack),
            (&[("accept", "text/event-stream")], Framing::Sse),
            (&[("accept", "application/json, Text/Event-Stream;q=0.9")], Framing::Sse),
            (&[("accept", "*/*"), ("last-event-id", "7")], Framing::Sse),
        ];
        for (headers, want) in cases {
            let mut map = HeaderMap::new();
            for (k, v) in headers {
                map.insert(*k, HeaderValue::from_static(v));
            }
            assert_eq!(framing(&map), want, "{headers:?}");
        }
    }

    #[test]
    fn gpustack_lines_carry_int_types_and_the_row_id() {
        let row = serde_json::json!({"id": 5, "name": "m"});
        let cases = [
            (EventType::Created, Some(row.clone()), Some(r#"{"data":{"id":5,"name":"m"},"id":5,"type":1}"#)),
            (EventType::Updated, Some(row.clone()), Some(r#"{"data":{"id":5,"name":"m"},"id":5,"type":2}"#)),
            (EventType::Deleted, Some(row), Some(r#"{"data":{"id":5,"name":"m"},"id":5,"type":3}"#)),
            (EventType::Deleted, None, Some(r#"{"data":null,"id":null,"type":3}"#)),
            (EventType::Reset, None, None),
        ];
        for (event_type, data, want) in cases {
            let got = gpustack_line(event_type, data);
            assert_eq!(got.as_deref().map(str::trim_end), want, "{event_type:?}");
            if let Some(line) = got {
                assert!(line.ends_with('\n') && !line.trim_end().contains('\n'), "one line: {line:?}");
            }
        }
    }
}
