//! HTTP Basic authentication on `/v2` (never on `/v1`), as GPUStack's SDK sends it with
//! `ClientSet(base_url, username=, password=)` and `curl -u user:password` does.
//!
//! A password is checked like the login form's: throttled per (name, address), address and name
//! (`server::throttle`, the same counters as `/auth/login`), in a turn at password hashing
//! (`auth::HashSlots`). A script sends its password with every call, so a password once proven is
//! remembered (keyed by a digest of the server secret, the name and the password, next to the
//! stored hash it was proven against) for [`REMEMBER`]: later calls cost one read of the user's row
//! and no argon2, and they stop counting once the stored hash changes (a new password).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::AppState;
use super::auth::{Principal, begin_password_check, blocking, digest, dummy_hash, verify_password};
use super::error::ApiError;

/// How long a proven password is remembered.
pub const REMEMBER: Duration = Duration::from_secs(600);
/// How many proven passwords are remembered at most.
const REMEMBERED: usize = 1024;

/// `(name, password)` from `Authorization: Basic <base64(name:password)>`; `None` when the header
/// is absent or another scheme. A Basic header that does not decode is `Some(Err)`.
pub fn basic_credentials(headers: &HeaderMap) -> Option<Result<(String, String), ApiError>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let bad = || ApiError::unauthorized("Authorization: Basic needs base64 of \"username:password\"");
    let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).map_err(|_| bad());
    Some(decoded.and_then(|bytes| {
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let (name, password) = text.split_once(':').ok_or_else(bad)?;
        if name.is_empty() {
            return Err(bad());
        }
        Ok((name.to_string(), password.to_string()))
    }))
}

/// Passwords proven recently: digest of (server secret, name, password) → the stored hash it was
/// proven against, and when.
#[derive(Debug, Default)]
pub struct Proven(Mutex<HashMap<String, (String, Instant)>>);

impl Proven {
    fn holds(&self, key: &str, stored_hash: &str, now: Instant) -> bool {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).is_some_and(|(hash, at)| hash == stored_hash && now.duration_since(*at) < REMEMBER)
    }

    fn remember(&self, key: String, stored_hash: String, now: Instant) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (_, at)| now.duration_since(*at) < REMEMBER);
        while map.len() >= REMEMBERED {
            let oldest = map.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| k.clone());
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(key, (stored_hash, now));
    }
}

/// Authenticates `name:password` for a `/v2` call. `Err` is the answer to send (401, or 429 with
/// `Retry-After` while the login throttle holds the name or address back).
pub async fn authenticate_basic(
    state: &AppState,
    extensions: &axum::http::Extensions,
    headers: &HeaderMap,
    name: &str,
    password: &str,
) -> Result<Principal, Response> {
    let invalid = || ApiError::unauthorized("invalid username or password").into_response();
    let key = digest(&format!("{}:basic:{}:{password}", state.server_secret, name.to_lowercase()));
    let now = Instant::now();
    // A password proven against the hash stored now: one read, no argon2, nothing counted.
    let found = state.db.user_credentials(name).await.map_err(|e| ApiError::from(e).into_response())?;
    if let Some((user, hash)) = &found
        && state.basic.holds(&key, hash, now)
    {
        return if user.spec.is_active {
            Ok(Principal { user: user.clone(), api_key: None })
        } else {
            Err(ApiError::unauthorized("this user is deactivated").into_response())
        };
    }
    let keys = begin_password_check(state, extensions, headers, name).map_err(IntoResponse::into_response)?;
    let _turn = match state.hashing.turn().await {
        Ok(turn) => turn,
        Err(busy) => {
            // Refused for load, not for the password: not a failed login.
            state.logins.not_attempted(&keys);
            return Err(busy.into_response());
        }
    };
    let (user, hash) = match found {
        Some((user, hash)) => (Some(user), hash),
        None => (None, dummy_hash().to_string()),
    };
    let checked = hash.clone();
    let presented = password.to_string();
    let ok = blocking(move || verify_password(&presented, &checked)).await.map_err(IntoResponse::into_response)?;
    match user {
        Some(user) if ok && user.spec.is_active => {
            state.logins.succeeded(&keys);
            state.basic.remember(key, hash, now);
            Ok(Principal { user, api_key: None })
        }
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `basic_credentials` answers: not Basic, a bad header, or the name and password.
    type Read<'a> = Option<Option<(&'a str, &'a str)>>;

    #[test]
    fn basic_credentials_are_read_from_the_header() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let cases: [(Option<String>, Read<'_>); 8] = [
            (None, None),
            (Some("Bearer abc".into()), None),
            (Some(format!("Basic {}", b64("admin:pw:with:colons"))), Some(Some(("admin", "pw:with:colons")))),
            (Some(format!("basic {}", b64("u:"))), Some(Some(("u", "")))),
            (Some(format!("Basic {}", b64(":pw"))), Some(None)),
            (Some(format!("Basic {}", b64("no-colon"))), Some(None)),
            (Some("Basic !!!".into()), Some(None)),
            (Some("Basic".into()), None),
        ];
        for (value, want) in cases {
            let mut headers = HeaderMap::new();
            if let Some(v) = &value {
                headers.insert(header::AUTHORIZATION, axum::http::HeaderValue::from_str(v).expect("header"));
            }
            let got = basic_credentials(&headers).map(|r| r.ok());
            let got = got.as_ref().map(|o| o.as_ref().map(|(a, b)| (a.as_str(), b.as_str())));
            assert_eq!(got, want, "{value:?}");
        }
    }

    #[test]
    fn a_proven_password_holds_only_against_the_same_hash_and_for_a_while() {
        let proven = Proven::default();
        let t0 = Instant::now();
        proven.remember("k".into(), "hash-1".into(), t0);
        let cases = [
            ("k", "hash-1", t0, true),
            ("k", "hash-2", t0, false),
            ("other", "hash-1", t0, false),
            ("k", "hash-1", t0 + REMEMBER, false),
        ];
        for (key, hash, at, want) in cases {
            assert_eq!(proven.holds(key, hash, at), want, "{key} {hash}");
        }
        for i in 0..REMEMBERED + 10 {
            proven.remember(format!("k{i}"), "h".into(), t0);
        }
        assert!(proven.0.lock().expect("lock").len() <= REMEMBERED);
    }
}
