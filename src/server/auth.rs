//! Authentication: password hashing (argon2), API keys and session tokens (random, stored as
//! SHA-256 digests), and the middleware that turns a request's credentials into a [`Principal`].
//!
//! API keys and session tokens are 160+ bits of randomness, so a fast digest is the right hash for
//! them (argon2 is for low-entropy passwords) and a lookup costs one indexed query.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::policy::{Access, Role, access};
use crate::api::{ApiKey, Scope, User};

pub const SESSION_COOKIE: &str = "ferrostack_session";
pub const API_KEY_PREFIX: &str = "fs";

/// Who is calling, and through what credential.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    /// The API key used, if any; a session (cookie) has every scope of its user.
    pub api_key: Option<ApiKey>,
}

impl Principal {
    pub fn has_scope(&self, wanted: Scope) -> bool {
        match &self.api_key {
            None => true,
            Some(key) => key.spec.scope.iter().any(|s| *s == Scope::All || *s == wanted),
        }
    }

    pub fn require_admin(&self) -> ApiResult<()> {
        if self.user.spec.is_admin { Ok(()) } else { Err(ApiError::forbidden("this operation needs an administrator")) }
    }
}

/// A worker, authenticated by its own credential (`fsw_<id>_<secret>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerIdentity {
    pub worker_id: i64,
}

/// Whoever called a `/v2` route: a user (session or API key), a worker, or a machine presenting a
/// cluster registration token (which may only register a worker).
#[derive(Debug, Clone)]
pub enum Caller {
    User(Box<Principal>),
    Worker(WorkerIdentity),
    Registrant { cluster_id: i64 },
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| ApiError::unauthorized("authentication required"))
    }
}

/// Extracts the principal put in place by [`require_management`].
pub struct Auth(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Caller>() {
            Some(Caller::User(p)) => Ok(Auth(p.as_ref().clone())),
            Some(_) => Err(ApiError::forbidden("this operation needs a user (session or API key)")),
            None => Err(ApiError::unauthorized("authentication required")),
        }
    }
}

/// Middleware for `/v2`: a valid session, an API key with the `management` scope, a user name and
/// password (HTTP Basic, `basic.rs`), a worker credential, or a cluster registration token (each
/// route decides what it accepts).
pub async fn require_management(State(state): State<AppState>, mut req: Request, next: Next) -> ApiResult<Response> {
    let caller = match presented_api_key(req.headers()) {
        Some(token) if token.starts_with(WORKER_CREDENTIAL_PREFIX) => {
            Caller::Worker(authenticate_worker(&state, token).await?)
        }
        Some(token) if split_api_key(token).is_none() => {
            match state.db.cluster_by_token_digest(&digest(token)).await? {
                Some(cluster) => Caller::Registrant { cluster_id: cluster.id },
                None => return Err(ApiError::unauthorized("invalid API key or token")),
            }
        }
        _ => {
            // HTTP Basic (GPUStack's SDK with a user name and password) on `/v2` only.
            let principal = match super::basic::basic_credentials(req.headers()) {
                Some(Ok((name, password))) => {
                    match super::basic::authenticate_basic(&state, req.extensions(), req.headers(), &name, &password)
                        .await
                    {
                        Ok(principal) => principal,
                        Err(answer) => return Ok(answer),
                    }
                }
                Some(Err(e)) => return Err(e),
                None => authenticate(&state, req.headers()).await?,
            };
            if !principal.has_scope(Scope::Management) {
                return Err(ApiError::forbidden("this API key lacks the \"management\" scope"));
            }
            Caller::User(Box::new(principal))
        }
    };
    // The policy table decides, before any handler runs (`server::policy`).
    let role = match &caller {
        Caller::User(p) if p.user.spec.is_admin => Role::Admin,
        Caller::User(_) => Role::User,
        Caller::Worker(_) => Role::Worker,
        Caller::Registrant { .. } => Role::Registrant,
    };
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_default();
    if access(req.method(), &route, role) == Access::Deny {
        let what = match role {
            Role::Registrant => "a registration token may only register a worker".to_owned(),
            Role::Worker => "a worker may only read and report what is placed on it".to_owned(),
            _ => format!("{} may not {} {route}", role.name(), req.method()),
        };
        return Err(ApiError::forbidden(what));
    }
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// Prefix of worker credentials.
pub const WORKER_CREDENTIAL_PREFIX: &str = "fsw_";

/// A new worker credential: (secret, full value).
pub fn new_worker_credential(worker_id: i64) -> (String, String) {
    let secret = random_token(40);
    let value = format!("{WORKER_CREDENTIAL_PREFIX}{worker_id}_{secret}");
    (secret, value)
}

async fn authenticate_worker(state: &AppState, token: &str) -> ApiResult<WorkerIdentity> {
    let invalid = || ApiError::unauthorized("invalid worker credential; re-register the worker");
    let rest = token.strip_prefix(WORKER_CREDENTIAL_PREFIX).ok_or_else(invalid)?;
    let (id, secret) = rest.split_once('_').ok_or_else(invalid)?;
    let worker_id: i64 = id.parse().map_err(|_| invalid())?;
    let stored = state.db.worker_token_digest(worker_id).await?.ok_or_else(invalid)?;
    if !bool::from(digest(secret).as_bytes().ct_eq(stored.as_bytes())) {
        return Err(invalid());
    }
    Ok(WorkerIdentity { worker_id })
}

/// A cluster's registration token, from the server secret and the cluster's nonce (never stored).
pub fn cluster_token(server_secret: &str, nonce: &str) -> String {
    digest(&format!("{server_secret}:cluster:{nonce}"))
}

/// The token the server presents to worker `worker_id` (derived, never stored).
pub fn server_token(server_secret: &str, worker_id: i64) -> String {
    digest(&format!("{server_secret}:worker:{worker_id}"))
}

/// Resolves the caller from `Authorization: Bearer`, `X-API-Key` or the session cookie.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> ApiResult<Principal> {
    if let Some(key) = presented_api_key(headers) {
        return authenticate_key(state, key).await;
    }
    if let Some(token) = session_cookie(headers) {
        let user_id = state
            .db
            .session_user(&digest(token))
            .await?
            .ok_or_else(|| ApiError::unauthorized("session expired or logged out; log in again"))?;
        let user = state.db.get::<crate::api::UserSpec>(user_id).await?;
        return active(user).map(|user| Principal { user, api_key: None });
    }
    Err(ApiError::unauthorized(
        "authentication required: send an API key as \"Authorization: Bearer <key>\" or \"X-API-Key\", or log in",
    ))
}

fn active(user: User) -> ApiResult<User> {
    if user.spec.is_active { Ok(user) } else { Err(ApiError::unauthorized("this user is deactivated")) }
}

async fn authenticate_key(state: &AppState, presented: &str) -> ApiResult<Principal> {
    let invalid = || ApiError::unauthorized("invalid API key");
    let (access_key, secret) = split_api_key(presented).ok_or_else(invalid)?;
    let found = state.db.api_key_by_access_key(access_key).await?.ok_or_else(invalid)?;
    if !bool::from(digest(secret).as_bytes().ct_eq(found.secret_digest.as_bytes())) {
        return Err(invalid());
    }
    if let Some(expires_at) = found.key.spec.expires_at
        && expires_at <= chrono::Utc::now()
    {
        return Err(ApiError::unauthorized("API key expired"));
    }
    let user = active(state.db.get::<crate::api::UserSpec>(found.key.spec.user_id).await?)?;
    Ok(Principal { user, api_key: Some(found.key) })
}

/// The API key a request authenticates with: `Authorization: Bearer <key>` when that header is
/// a bearer token, else `X-API-Key`. Everything that caches by credential keys on this value (never
/// on a header that was not used to authenticate).
pub fn presented_api_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") {
            return Some(v[7..].trim());
        }
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)
}

/// The session token from the `Cookie` header, if present.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, SESSION_COOKIE)
}

fn cookie<'h>(headers: &'h HeaderMap, wanted: &str) -> Option<&'h str> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == wanted).then_some(value)
    })
}

/// Splits `fs_<access>_<secret>` into its halves.
pub fn split_api_key(value: &str) -> Option<(&str, &str)> {
    let rest = value.strip_prefix(API_KEY_PREFIX)?.strip_prefix('_')?;
    let (access, secret) = rest.split_once('_')?;
    (!access.is_empty() && !secret.is_empty()).then_some((access, secret))
}

/// A new API key: (access key, secret, full value).
pub fn new_api_key() -> (String, String, String) {
    let access = random_token(16).to_lowercase();
    let secret = random_token(40);
    let value = format!("{API_KEY_PREFIX}_{access}_{secret}");
    (access, secret, value)
}

/// A random alphanumeric token of `len` characters (~5.95 bits each).
pub fn random_token(len: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// Hex SHA-256 of a high-entropy secret.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// argon2id's cost for new hashes: OWASP's m = 46 MiB, t = 1, p = 1 profile (as strong as the
/// crate's default m = 19 MiB, t = 2). Its working memory is above glibc's largest dynamic mmap
/// threshold (32 MiB on 64-bit), so every hash maps its memory and unmaps it when done: a login
/// leaves the process as small as it was. With 19 MiB the heap kept those pages after the first
/// login (idle RSS 44 MB instead of 25 MB; docs/benchmarks.md).
const HASH_MEMORY_KIB: u32 = 47_104;
const HASH_PASSES: u32 = 1;

fn hasher() -> Argon2<'static> {
    let params = Params::new(HASH_MEMORY_KIB, HASH_PASSES, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password with argon2id (CPU-heavy: call from a blocking task).
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(ApiError::internal)?;
    hasher().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(ApiError::internal)
}

/// Whether a stored hash was made with other parameters than new ones get (then a successful
/// login stores a fresh one).
pub fn needs_rehash(hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else { return true };
    let Ok(params) = Params::try_from(&parsed) else { return true };
    parsed.algorithm.as_str() != Algorithm::Argon2id.as_str()
        || params.m_cost() != HASH_MEMORY_KIB
        || params.t_cost() != HASH_PASSES
        || params.p_cost() != 1
}

/// Checks a password against a stored argon2 hash (CPU-heavy: call from a blocking task).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| hasher().verify_password(password.as_bytes(), &parsed).is_ok())
        .unwrap_or(false)
}

/// A hash to verify against when the user does not exist, so both cases take the same time.
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a password").unwrap_or_default())
}

/// Password rules, checked on every set.
pub fn check_password(field: &str, password: &str) -> ApiResult<()> {
    if password.chars().count() < 8 {
        return Err(ApiError::field(field, "must be at least 8 characters"));
    }
    if password.len() > 256 {
        return Err(ApiError::field(field, "must be at most 256 bytes"));
    }
    Ok(())
}

/// Runs a CPU-heavy closure off the async threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)
}

/// Password hashes computed at once: each takes [`HASH_MEMORY_KIB`] of memory and a core for
/// ~50 ms, so a login flood costs at most this many hashes' memory.
pub const HASH_SLOTS: usize = 2;
/// Password checks allowed to wait for a slot; past that a login is answered 429 at once.
pub const HASH_QUEUE: usize = 64;

/// A server's turns at password hashing (one per server: the memory bound is per process).
#[derive(Debug)]
pub struct HashSlots {
    slots: tokio::sync::Semaphore,
    waiting: std::sync::atomic::AtomicUsize,
}

impl Default for HashSlots {
    fn default() -> Self {
        HashSlots { slots: tokio::sync::Semaphore::new(HASH_SLOTS), waiting: Default::default() }
    }
}

impl HashSlots {
    /// A turn at password hashing: held while a login, a password change or a user's creation
    /// reads and hashes. At most [`HASH_SLOTS`] run and [`HASH_QUEUE`] wait; the rest get 429 with
    /// `Retry-After` (so a flood neither grows memory nor starves the database pool).
    pub async fn turn(&self) -> ApiResult<tokio::sync::SemaphorePermit<'_>> {
        use std::sync::atomic::Ordering;
        if let Ok(permit) = self.slots.try_acquire() {
            return Ok(permit);
        }
        // Counted while waiting, and given back however the wait ends: a client that goes away
        // drops this future mid-wait, and a count left behind would refuse every later login.
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let waiting = Waiting(&self.waiting);
        if waiting.0.fetch_add(1, Ordering::AcqRel) >= HASH_QUEUE {
            return Err(ApiError::new(
                super::error::ErrorCode::TooManyRequests,
                "the server is busy checking other passwords; try again in a second",
            ));
        }
        let permit = self.slots.acquire().await;
        drop(waiting);
        permit.map_err(ApiError::internal)
    }

    /// Runs a password hash or check off the async threads, in its turn.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
        let _turn = self.turn().await?;
        blocking(f).await
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiting.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// A password check the login throttle holds back, for this many seconds (answered 429 with
/// `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled(pub u64);

impl axum::response::IntoResponse for Throttled {
    fn into_response(self) -> Response {
        let secs = self.0;
        let mut res = ApiError::new(
            super::error::ErrorCode::TooManyRequests,
            format!("too many failed logins; try again in {secs} s"),
        )
        .into_response();
        res.headers_mut().insert(header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        res
    }
}

/// Starts a password check for `name` (the login form, HTTP Basic): counts it under the login
/// throttle's keys for the client (`server::throttle`), or refuses while any of them must wait.
/// `Ok` holds the keys to clear when the password proves right.
pub fn begin_password_check(
    state: &super::AppState,
    extensions: &axum::http::Extensions,
    headers: &HeaderMap,
    name: &str,
) -> Result<Vec<super::throttle::Key>, Throttled> {
    let peer = extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let addr = super::throttle::client_addr(peer, headers, state.config.trusted_proxy_header.as_deref());
    let trusted = has_device_cookie(&state.server_secret, headers, name);
    let keys = super::throttle::keys(name, addr, trusted);
    match state.logins.begin(&keys, std::time::Instant::now()) {
        Ok(()) => Ok(keys),
        Err(wait) => Err(Throttled(wait.as_secs().max(1))),
    }
}

/// Name of the cookie that marks a browser where a user logged in before (see `throttle`).
pub const DEVICE_COOKIE: &str = "ferrostack_device";

/// A device cookie's value for `user`: a nonce and a keyed digest of it with the user's name.
pub fn device_cookie_value(server_secret: &str, user: &str) -> String {
    let nonce = random_token(22);
    format!("{nonce}.{}", digest(&format!("{server_secret}:device:{nonce}:{}", user.to_lowercase())))
}

/// Whether the request carries a device cookie made for `user` by this server.
pub fn has_device_cookie(server_secret: &str, headers: &HeaderMap, user: &str) -> bool {
    cookie(headers, DEVICE_COOKIE).and_then(|v| v.split_once('.')).is_some_and(|(nonce, mac)| {
        let want = digest(&format!("{server_secret}:device:{nonce}:{}", user.to_lowercase()));
        bool::from(want.as_bytes().ct_eq(mac.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_split_into_access_and_secret() {
        let (access, secret, value) = new_api_key();
        assert_eq!(split_api_key(&value), Some((access.as_str(), secret.as_str())));
        for bad in ["", "fs_", "fs__x", "fs_abc_", "gpustack_a_b", "fs_abc"] {
            assert_eq!(split_api_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn passwords_verify_only_with_the_right_password() {
        let hash = hash_password("correct horse").expect("hash");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("correct horse", "not-a-hash"));
        assert!(!needs_rehash(&hash), "{hash}");
        // A hash made with the crate's default cost (m = 19 MiB, t = 2) still verifies, and is
        // flagged for a fresh hash at the next login.
        let salt = SaltString::encode_b64(&[7u8; 16]).expect("salt");
        let old = Argon2::default().hash_password(b"correct horse", &salt).expect("hash").to_string();
        assert!(verify_password("correct horse", &old));
        assert!(needs_rehash(&old), "{old}");
    }

    #[test]
    fn session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "a=1; ferrostack_session=tok; b=2".parse().expect("header"));
        assert_eq!(session_cookie(&headers), Some("tok"));
    }

    #[test]
    fn a_device_cookie_is_good_for_its_user_and_secret_only() {
        let value = device_cookie_value("s3cret", "Admin");
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, format!("{DEVICE_COOKIE}={value}").parse().expect("header"));
        let cases =
            [("s3cret", "admin", true), ("s3cret", "ADMIN", true), ("s3cret", "bob", false), ("other", "admin", false)];
        for (secret, user, want) in cases {
            assert_eq!(has_device_cookie(secret, &headers, user), want, "{secret} {user}");
        }
        headers.insert(header::COOKIE, format!("{DEVICE_COOKIE}=forged.00").parse().expect("header"));
        assert!(!has_device_cookie("s3cret", &headers, "admin"));
    }

    #[tokio::test]
    async fn hashing_turns_are_bounded() {
        let slots = std::sync::Arc::new(HashSlots::default());
        let mut held = Vec::new();
        for _ in 0..HASH_SLOTS {
            held.push(slots.turn().await.expect("a free slot"));
        }
        // The queue fills, then the next caller is refused at once.
        let waiting: Vec<_> = (0..HASH_QUEUE)
            .map(|_| {
                let slots = slots.clone();
                tokio::spawn(async move { slots.turn().await.map(drop) })
            })
            .collect();
        while slots.waiting() < HASH_QUEUE {
            tokio::task::yield_now().await;
        }
        let refused = slots.turn().await.expect_err("over the queue");
        assert_eq!(refused.code, crate::server::error::ErrorCode::TooManyRequests);
        // Waiters whose clients went away give their place back.
        for w in &waiting[..4] {
            w.abort();
        }
        while slots.waiting() > HASH_QUEUE - 4 {
            tokio::task::yield_now().await;
        }
        assert_eq!(slots.waiting(), HASH_QUEUE - 4);
        drop(held);
        for w in waiting.into_iter().skip(4) {
            w.await.expect("join").expect("its turn came");
        }
    }
}
