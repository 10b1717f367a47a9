//! Request extractors that turn every kind of bad input into a 4xx naming the field and the rule:
//! JSON bodies (syntax, types, unknown and missing fields, size), list query parameters.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorCode};
use crate::api::compat::{GpuStackBody, normalize};
use crate::db::{ListQuery, SortKey};

/// Largest accepted request body on the management API.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// A JSON body whose errors name the offending field (`replicas: invalid type: string "x", expected i64`).
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| {
                let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "expected a JSON body with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_rejection)?;
        parse_json(&bytes).map(Json)
    }
}

/// A JSON body as GPUStack's clients write it: read-only and neutral GPUStack fields dropped, nulls
/// taken as defaults ([`crate::api::compat`]), then read as strictly as [`Json`]. The second field is
/// a `version` the body carried although the type has none (an update guard, as `If-Match`).
pub struct Tolerant<T>(pub T, pub Option<i64>);

impl<T, S> FromRequest<S> for Tolerant<T>
where
    T: GpuStackBody,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<serde_json::Value>::from_request(req, state).await?;
        tolerant_from_value(value).map(|(body, version)| Tolerant(body, version))
    }
}

/// Reads a normalized GPUStack-shaped value into `T`, naming the offending field as [`parse_json`] does.
pub fn tolerant_from_value<T: GpuStackBody>(mut value: serde_json::Value) -> Result<(T, Option<i64>), ApiError> {
    let normalized = normalize::<T>(&mut value).map_err(|r| ApiError {
        code: ErrorCode::InvalidInput,
        message: r.message,
        field: Some(r.field),
    })?;
    Ok((from_value(value)?, normalized.version))
}

fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        field_error(path, e.into_inner())
    })
}

/// Maps a failure to read the body (usually: over the size limit) to an API error.
pub fn body_rejection(e: BytesRejection) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is larger than the limit of {MAX_BODY_BYTES} bytes"),
        )
    } else {
        ApiError::new(ErrorCode::InvalidInput, format!("cannot read request body: {e}"))
    }
}

/// Parses JSON, reporting the path of the offending field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        field_error(path, e.into_inner())
    })
}

fn field_error(path: String, inner: serde_json::Error) -> ApiError {
    if inner.is_syntax() || inner.is_eof() {
        return ApiError::new(ErrorCode::MalformedJson, format!("malformed JSON: {inner}"));
    }
    let message = inner.to_string();
    // serde names missing/unknown fields in the message; for type errors the path names them.
    let field = if path == "." { field_from_message(&message) } else { Some(path) };
    match field {
        Some(field) => {
            ApiError { code: ErrorCode::InvalidInput, message: format!("{field}: {message}"), field: Some(field) }
        }
        None => ApiError::new(ErrorCode::InvalidInput, message),
    }
}

fn field_from_message(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// Raw query parameters; invalid encodings become a 400.
pub struct RawQuery(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for RawQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(map) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::new(ErrorCode::InvalidQuery, format!("invalid query string: {e}")))?;
        Ok(RawQuery(map))
    }
}

/// Parsed list parameters: `page`, `perPage`, `sort_by`, `search`, `watch`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListParams {
    pub query: ListQuery,
    pub page: i64,
    pub watch: bool,
    /// `sort_by` on fields that are not columns: (field, descending), applied to the answered JSON.
    pub field_sort: Vec<(String, bool)>,
    /// A watch that follows one worker's instances only wakes for those (set by the handler).
    pub worker_scope: Option<i64>,
}

pub const MAX_PER_PAGE: i64 = 1000;

impl ListParams {
    /// Parses the common list parameters; `extra` names parameters the resource handles itself.
    pub fn parse(params: &HashMap<String, String>, extra: &[&str]) -> Result<ListParams, ApiError> {
        for key in params.keys() {
            let known = ["page", "perPage", "per_page", "sort_by", "search", "watch"];
            if !known.contains(&key.as_str()) && !extra.contains(&key.as_str()) {
                return Err(query_error(key, "unknown query parameter"));
            }
        }
        let page = match params.get("page") {
            None => 1,
            Some(raw) => match raw.trim().parse::<i64>() {
                Ok(-1) => -1,
                Ok(n) if n >= 1 => n,
                _ => return Err(query_error("page", format!("must be -1 (all) or an integer >= 1, got {raw:?}"))),
            },
        };
        let per_page_raw = params.get("perPage").or_else(|| params.get("per_page"));
        let per_page = match per_page_raw {
            None => 100,
            Some(raw) => match raw.trim().parse::<i64>() {
                Ok(n) if (1..=MAX_PER_PAGE).contains(&n) => n,
                _ => {
                    return Err(query_error(
                        "perPage",
                        format!("must be an integer between 1 and {MAX_PER_PAGE}, got {raw:?}"),
                    ));
                }
            },
        };
        let mut sort = Vec::new();
        let mut field_sort = Vec::new();
        if let Some(raw) = params.get("sort_by") {
            for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (name, desc) = match part.strip_prefix('-') {
                    Some(rest) => (rest, true),
                    None => (part, false),
                };
                let valid = !name.is_empty()
                    && name.len() <= 64
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
                if !valid {
                    return Err(query_error(
                        "sort_by",
                        format!("{name:?} is not a field name (letters, digits, '_', '.'; prefix - for descending)"),
                    ));
                }
                match SortKey::ALL.iter().find(|(n, _)| *n == name) {
                    Some((_, key)) if field_sort.is_empty() => sort.push((*key, desc)),
                    _ => field_sort.push((name.to_string(), desc)),
                }
            }
        }
        if !field_sort.is_empty() {
            // Sorted in memory on the answered JSON: every key goes there, in the order given.
            let columns = std::mem::take(&mut sort);
            let mut all: Vec<(String, bool)> = columns.into_iter().map(|(k, d)| (k.name().to_string(), d)).collect();
            all.append(&mut field_sort);
            field_sort = all;
        }
        if sort.is_empty() {
            // GPUStack's default order: newest first.
            sort.push((SortKey::Id, true));
        }
        let watch = match params.get("watch").map(|s| s.as_str()) {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") | Some("") => true,
            Some(other) => return Err(query_error("watch", format!("must be true or false, got {other:?}"))),
        };
        let search = params.get("search").map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        Ok(ListParams {
            query: ListQuery { page: (page != -1).then_some(page), per_page, sort, search, filters: Vec::new() },
            page,
            watch,
            field_sort,
            worker_scope: None,
        })
    }

    /// Builds the list envelope's pagination block.
    pub fn pagination(&self, total: i64, returned: usize) -> crate::api::Pagination {
        let (page, per_page) =
            if self.page == -1 { (-1, returned.max(1) as i64) } else { (self.page, self.query.per_page) };
        crate::api::Pagination {
            page,
            per_page,
            total,
            total_page: if total == 0 { 0 } else { (total + per_page - 1) / per_page },
        }
    }
}

/// A 400 for a bad query parameter: `{field}: {message}`, naming the field.
pub fn query_error(field: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError { code: ErrorCode::InvalidQuery, message: format!("{field}: {message}"), field: Some(field.to_string()) }
}

/// Parses an optional boolean query parameter (`true`/`false`/`1`/`0`).
pub fn bool_param(params: &HashMap<String, String>, name: &str) -> Result<Option<bool>, ApiError> {
    match params.get(name).map(|s| s.trim()) {
        None => Ok(None),
        Some("true" | "1") => Ok(Some(true)),
        Some("false" | "0") => Ok(Some(false)),
        Some(other) => Err(query_error(name, format!("must be true or false, got {other:?}"))),
    }
}

/// Parses an optional integer query parameter.
pub fn int_param(params: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    params
        .get(name)
        .map(|raw| raw.trim().parse::<i64>().map_err(|_| query_error(name, format!("must be an integer, got {raw:?}"))))
        .transpose()
}

/// The expected row version: `If-Match: 3` (quotes and `W/` allowed) or `?version=3`.
pub fn expected_version(
    headers: &axum::http::HeaderMap,
    raw: &HashMap<String, String>,
) -> Result<Option<i64>, ApiError> {
    expected_version_allowing(headers, raw, &[])
}

/// [`expected_version`] on a route that also takes the query parameters named in `extra`.
pub fn expected_version_allowing(
    headers: &axum::http::HeaderMap,
    raw: &HashMap<String, String>,
    extra: &[&str],
) -> Result<Option<i64>, ApiError> {
    if let Some(key) = raw.keys().find(|k| k.as_str() != "version" && !extra.contains(&k.as_str())) {
        return Err(
            ApiError::new(ErrorCode::InvalidQuery, format!("{key}: unknown query parameter")).with_field(key.clone())
        );
    }
    let from_query = int_param(raw, "version")?;
    let from_header = match headers.get(axum::http::header::IF_MATCH) {
        None => None,
        Some(value) => {
            let text = value.to_str().unwrap_or("");
            let bare = text.trim().trim_start_matches("W/").trim_matches('"');
            let parsed = bare.parse::<i64>().map_err(|_| {
                ApiError::field("If-Match", format!("must be the row's version (an integer), got {text:?}"))
            })?;
            Some(parsed)
        }
    };
    match (from_header, from_query) {
        (Some(h), Some(q)) if h != q => {
            Err(ApiError::field("version", format!("If-Match says {h} but ?version= says {q}; send one")))
        }
        (h, q) => Ok(h.or(q)),
    }
}

/// The update guard from the request line (`If-Match`, `?version=`) and from the body, which must agree.
pub fn guard_version(from_request: Option<i64>, from_body: Option<i64>) -> Result<Option<i64>, ApiError> {
    match (from_request, from_body) {
        (Some(a), Some(b)) if a != b => {
            Err(ApiError::field("version", format!("the request asks for version {a} but the body says {b}; send one")))
        }
        (a, b) => Ok(a.or(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn list_params_accept_good_values() {
        let p = ListParams::parse(&params(&[("page", "2"), ("perPage", "10"), ("sort_by", "-created_at,name")]), &[])
            .expect("valid");
        assert_eq!(p.query.page, Some(2));
        assert_eq!(p.query.per_page, 10);
        assert_eq!(p.query.sort, vec![(SortKey::CreatedAt, true), (SortKey::Name, false)]);
        let all = ListParams::parse(&params(&[("page", "-1")]), &[]).expect("valid");
        assert_eq!(all.query.page, None);
        // GPUStack's default order is newest first.
        assert_eq!(all.query.sort, vec![(SortKey::Id, true)]);
        // Fields that are not columns sort the answered JSON; columns before them go there too.
        let fields = ListParams::parse(&params(&[("sort_by", "name,-backend_name")]), &[]).expect("valid");
        assert_eq!(fields.field_sort, vec![("name".to_string(), false), ("backend_name".to_string(), true)]);
    }

    #[test]
    fn list_params_name_the_bad_field() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("page", "0")], "page"),
            (&[("page", "abc")], "page"),
            (&[("page", "-2")], "page"),
            (&[("perPage", "0")], "perPage"),
            (&[("perPage", "100000")], "perPage"),
            (&[("perPage", "x")], "perPage"),
            (&[("sort_by", "name;drop")], "sort_by"),
            (&[("watch", "maybe")], "watch"),
            (&[("bogus", "1")], "bogus"),
        ];
        for (input, field) in cases {
            let err = ListParams::parse(&params(input), &[]).expect_err("must fail");
            assert_eq!(err.field.as_deref(), Some(*field), "{input:?}: {}", err.message);
            assert_eq!(err.code.status().as_u16(), 400);
        }
    }

    #[test]
    fn json_errors_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Body {
            name: String,
            replicas: i64,
        }
        let cases = [
            (r#"{"name":"a","replicas":"x"}"#, Some("replicas"), ErrorCode::InvalidInput),
            (r#"{"name":"a"}"#, Some("replicas"), ErrorCode::InvalidInput),
            (r#"{"name":"a","replicas":1,"extra":2}"#, Some("extra"), ErrorCode::InvalidInput),
            (r#"{"name":"a","#, None, ErrorCode::MalformedJson),
            (r#"[1,2]"#, Some("[0]"), ErrorCode::InvalidInput),
        ];
        for (input, field, code) in cases {
            let err = parse_json::<Body>(input.as_bytes()).expect_err(input);
            assert_eq!(err.code, code, "{input}: {}", err.message);
            assert_eq!(err.field.as_deref(), field, "{input}: {}", err.message);
        }
    }
}
