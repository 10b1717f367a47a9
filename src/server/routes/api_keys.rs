//! `/v2/api-keys`: each user manages their own keys; the full value is shown once, on create.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{ApiKey, ApiKeyCreate, ApiKeyCreated, ApiKeySpec, ApiKeyUpdate, Scope};
use crate::db::Val;
use crate::server::AppState;
use crate::server::auth::{API_KEY_PREFIX, Auth, Principal, digest, new_api_key};

use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{RawQuery, Tolerant};
use crate::server::list::{self, ApiKeyFilters, CommonListParams};
use crate::server::watch::list_or_watch;

/// Longest allowed key lifetime: ten years.
const MAX_EXPIRES_IN: i64 = 10 * 365 * 24 * 3600;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_keys, create_key)).routes(routes!(get_key, update_key, delete_key))
}

/// Lists the caller's API keys.
#[utoipa::path(get, path = "/v2/api-keys", tag = "api-keys",
    params(CommonListParams, ApiKeyFilters),
    responses((status = 200, body = crate::api::ListResponse<ApiKey>)))]
async fn list_keys(
    State(state): State<AppState>,
    Auth(p): Auth,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let (params, mut filters) = list::parse::<ApiKeyFilters>(&raw)?;
    filters.user_id = p.user.id;
    list_or_watch::<ApiKeySpec, _, _, _>(&state, &headers, &raw, params, filters, |k| k).await
}

fn check_name(name: &str) -> ApiResult<()> {
    if name.trim().is_empty() || name.len() > 128 {
        return Err(ApiError::field("name", "must be 1-128 characters"));
    }
    Ok(())
}

/// A key can't give more than the key it is used with has: whatever a key creates or edits
/// (itself included) must end no wider than the calling key in scope, models, limits and expiry.
/// A session (the user's own login) may set anything on the user's keys. Checked on the key as it
/// would be stored, so an edit that keeps a wider key wide is refused too.
fn within_callers_bounds(caller: Option<&ApiKeySpec>, result: &ApiKeySpec) -> ApiResult<()> {
    let Some(k) = caller else { return Ok(()) };
    if !result.scope.iter().all(|s| k.scope.contains(s) || k.scope.contains(&Scope::All)) {
        return Err(ApiError::forbidden("a key cannot give a key a wider scope than its own"));
    }
    if let Some(own) = &k.allowed_model_names {
        match &result.allowed_model_names {
            None => {
                return Err(ApiError::forbidden(
                    "a key restricted to some models cannot make or keep a key for every model (set allowed_model_names)",
                ));
            }
            Some(names) if !names.iter().all(|n| own.contains(n)) => {
                return Err(ApiError::forbidden("a key cannot allow models its own allowed_model_names leave out"));
            }
            Some(_) => {}
        }
    }
    let wider = |own: Option<u64>, new: Option<u64>| own.is_some_and(|o| new.is_none_or(|n| n > o));
    if wider(k.rpm_limit.map(u64::from), result.rpm_limit.map(u64::from)) {
        return Err(ApiError::forbidden("a key cannot give a key a higher rpm_limit than its own"));
    }
    if wider(k.tpm_limit, result.tpm_limit) {
        return Err(ApiError::forbidden("a key cannot give a key a higher tpm_limit than its own"));
    }
    if k.expires_at.is_some_and(|own| result.expires_at.is_none_or(|e| e > own)) {
        return Err(ApiError::forbidden("a key cannot make or keep a key that outlives its own expiry"));
    }
    Ok(())
}

fn check_scope(scope: &[Scope]) -> ApiResult<()> {
    if scope.is_empty() {
        return Err(ApiError::field("scope", "must list at least one of \"*\", \"management\", \"inference\""));
    }
    Ok(())
}

/// Creates a key for the caller. The answer's `value` is the only time the secret is shown.
#[utoipa::path(post, path = "/v2/api-keys", tag = "api-keys", request_body = ApiKeyCreate,
    responses((status = 200, body = ApiKeyCreated), (status = 400, body = crate::api::ErrorBody)))]
async fn create_key(
    State(state): State<AppState>,
    Auth(p): Auth,
    Tolerant(body, _): Tolerant<ApiKeyCreate>,
) -> ApiResult<(StatusCode, axum::Json<ApiKeyCreated>)> {
    check_name(&body.name)?;
    let scope = body.scope.unwrap_or_else(|| vec![Scope::All]);
    check_scope(&scope)?;
    let expires_at = match body.expires_in {
        // GPUStack: 0 (or null) means the key never expires.
        None | Some(0) => None,
        Some(secs) if (1..=MAX_EXPIRES_IN).contains(&secs) => {
            Some(chrono::Utc::now() + chrono::Duration::seconds(secs))
        }
        Some(secs) => {
            return Err(ApiError::field(
                "expires_in",
                format!("must be between 1 and {MAX_EXPIRES_IN} seconds (0 or null for no expiry), got {secs}"),
            ));
        }
    };
    let (access_key, secret, value) = new_api_key();
    let spec = ApiKeySpec {
        name: body.name,
        description: body.description,
        user_id: p.user.id,
        masked_value: format!("{API_KEY_PREFIX}_{access_key}_****"),
        access_key: access_key.clone(),
        scope,
        allowed_model_names: body.allowed_model_names,
        expires_at,
        rpm_limit: body.rpm_limit,
        tpm_limit: body.tpm_limit,
        is_custom: false,
    };
    within_callers_bounds(p.api_key.as_ref().map(|k| &k.spec), &spec)?;
    let key = state
        .db
        .insert(
            &spec,
            &[
                ("user_id", Val::Int(p.user.id)),
                ("access_key", Val::Text(access_key)),
                ("secret_digest", Val::Text(digest(&secret))),
                ("expires_at", Val::OptInt(expires_at.map(|t| t.timestamp_millis()))),
            ],
        )
        .await?;
    Ok((StatusCode::OK, axum::Json(ApiKeyCreated { key, value })))
}

/// Loads a key the caller owns (administrators may see any).
async fn owned(state: &AppState, p: &Principal, id: i64) -> ApiResult<ApiKey> {
    let key = state.db.get::<ApiKeySpec>(id).await?;
    if key.spec.user_id != p.user.id && !p.user.spec.is_admin {
        return Err(ApiError::not_found(format!("api key {id} not found")));
    }
    Ok(key)
}

#[utoipa::path(get, path = "/v2/api-keys/{id}", tag = "api-keys", params(("id" = i64, Path)),
    responses((status = 200, body = ApiKey), (status = 404, body = crate::api::ErrorBody)))]
async fn get_key(State(state): State<AppState>, Auth(p): Auth, Path(id): Path<i64>) -> ApiResult<axum::Json<ApiKey>> {
    Ok(axum::Json(owned(&state, &p, id).await?))
}

/// Updates description, scope or allowed models. Send `version` to get 409 on a concurrent change.
#[utoipa::path(put, path = "/v2/api-keys/{id}", tag = "api-keys", params(("id" = i64, Path)), request_body = ApiKeyUpdate,
    responses((status = 200, body = ApiKey), (status = 409, body = crate::api::ErrorBody)))]
async fn update_key(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Tolerant(body, _): Tolerant<ApiKeyUpdate>,
) -> ApiResult<axum::Json<ApiKey>> {
    owned(&state, &p, id).await?;
    if let Some(scope) = &body.scope {
        check_scope(scope)?;
    }
    let caller = p.api_key.as_ref().map(|k| &k.spec);
    let key = state
        .db
        .modify::<ApiKeySpec, ApiError, _>(id, body.version, |k| {
            if let Some(v) = &body.description {
                k.description = Some(v.clone());
            }
            if let Some(v) = &body.scope {
                k.scope = v.clone();
            }
            if let Some(v) = &body.allowed_model_names {
                k.allowed_model_names = Some(v.clone());
            }
            if let Some(v) = body.rpm_limit {
                k.rpm_limit = Some(v);
            }
            if let Some(v) = body.tpm_limit {
                k.tpm_limit = Some(v);
            }
            // The key as it would be stored; when the caller edits itself, its own bounds are
            // the stored ones (it cannot widen itself by the edit it makes).
            within_callers_bounds(caller, k)?;
            Ok(vec![])
        })
        .await?;
    Ok(axum::Json(key))
}

/// Revokes a key: it stops working at once.
#[utoipa::path(delete, path = "/v2/api-keys/{id}", tag = "api-keys", params(("id" = i64, Path)),
    responses((status = 200), (status = 404, body = crate::api::ErrorBody)))]
async fn delete_key(State(state): State<AppState>, Auth(p): Auth, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    owned(&state, &p, id).await?;
    state.db.delete::<ApiKeySpec>(id).await?;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(
        scope: &[Scope],
        models: Option<&[&str]>,
        rpm: Option<u32>,
        tpm: Option<u64>,
        days: Option<i64>,
    ) -> ApiKeySpec {
        let base = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        ApiKeySpec {
            name: "k".into(),
            description: None,
            user_id: 1,
            access_key: "a".into(),
            masked_value: "m".into(),
            scope: scope.to_vec(),
            allowed_model_names: models.map(|m| m.iter().map(|s| s.to_string()).collect()),
            expires_at: days.map(|d| base + chrono::Duration::days(d)),
            rpm_limit: rpm,
            tpm_limit: tpm,
            is_custom: false,
        }
    }

    #[test]
    fn a_key_makes_keys_only_within_its_own_bounds() {
        use Scope::{All, Inference, Management};
        let narrow = key(&[All], Some(&["a"]), Some(10), Some(1000), Some(30));
        let management = key(&[Management], None, None, None, None);
        let unrestricted = key(&[All], None, None, None, None);
        let cases: Vec<(&str, Option<&ApiKeySpec>, ApiKeySpec, bool)> = vec![
            ("session: anything", None, key(&[All], None, None, None, None), true),
            ("same bounds", Some(&narrow), narrow.clone(), true),
            ("narrower everywhere", Some(&narrow), key(&[Inference], Some(&["a"]), Some(5), Some(10), Some(1)), true),
            ("every model", Some(&narrow), key(&[All], None, Some(10), Some(1000), Some(30)), false),
            ("another model", Some(&narrow), key(&[All], Some(&["a", "b"]), Some(10), Some(1000), Some(30)), false),
            ("no rpm limit", Some(&narrow), key(&[All], Some(&["a"]), None, Some(1000), Some(30)), false),
            ("higher rpm", Some(&narrow), key(&[All], Some(&["a"]), Some(11), Some(1000), Some(30)), false),
            ("no tpm limit", Some(&narrow), key(&[All], Some(&["a"]), Some(10), None, Some(30)), false),
            ("never expires", Some(&narrow), key(&[All], Some(&["a"]), Some(10), Some(1000), None), false),
            ("expires later", Some(&narrow), key(&[All], Some(&["a"]), Some(10), Some(1000), Some(31)), false),
            ("management key, inference scope", Some(&management), key(&[Inference], None, None, None, None), false),
            ("unrestricted key: anything", Some(&unrestricted), unrestricted.clone(), true),
        ];
        for (name, caller, result, ok) in cases {
            assert_eq!(within_callers_bounds(caller, &result).is_ok(), ok, "{name}");
        }
    }
}
