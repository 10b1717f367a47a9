//! The API's one error-code table and the single place inner errors become HTTP responses.
//!
//! Every error leaves as `{code, reason, message[, field]}` where `code` is the HTTP status and
//! `reason` a stable identifier from [`ErrorCode`]. Internal failures are logged here and answered
//! with a generic message, never with the inner text.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::ErrorBody;
use crate::backends::{ValidationError, YamlError};
use crate::db::DbError;
use crate::gateway::GatewayError;

macro_rules! error_codes {
    ($($variant:ident => ($status:expr, $reason:literal),)*) => {
        /// Every error the API can answer with: its HTTP status and stable `reason`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode { $($variant,)* }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn status(self) -> StatusCode {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            pub fn reason(self) -> &'static str {
                match self { $(ErrorCode::$variant => $reason,)* }
            }
        }
    };
}

error_codes! {
    InvalidInput => (StatusCode::BAD_REQUEST, "InvalidInput"),
    MalformedJson => (StatusCode::BAD_REQUEST, "MalformedJson"),
    MalformedYaml => (StatusCode::BAD_REQUEST, "MalformedYaml"),
    InvalidQuery => (StatusCode::BAD_REQUEST, "InvalidQuery"),
    RuleViolation => (StatusCode::BAD_REQUEST, "RuleViolation"),
    Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized"),
    Forbidden => (StatusCode::FORBIDDEN, "Forbidden"),
    NotFound => (StatusCode::NOT_FOUND, "NotFound"),
    MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
    AlreadyExists => (StatusCode::CONFLICT, "AlreadyExists"),
    VersionConflict => (StatusCode::CONFLICT, "VersionConflict"),
    InUse => (StatusCode::CONFLICT, "InUse"),
    TokenNotShowable => (StatusCode::CONFLICT, "TokenNotShowable"),
    PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge"),
    UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType"),
    UnprocessableEntity => (StatusCode::UNPROCESSABLE_ENTITY, "UnprocessableEntity"),
    TooManyRequests => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests"),
    Internal => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
    Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
    BadGateway => (StatusCode::BAD_GATEWAY, "BadGateway"),
    GatewayTimeout => (StatusCode::GATEWAY_TIMEOUT, "GatewayTimeout"),
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), field: None }
    }

    /// A 400 about one named input field.
    pub fn field(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let field = field.into();
        ApiError { code: ErrorCode::InvalidInput, message: format!("{field}: {message}"), field: Some(field) }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// Logs the cause and answers with a generic 500.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "internal error; see the server log")
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code.status().as_u16(),
            reason: self.code.reason().to_string(),
            message: self.message.clone(),
            field: self.field.clone(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code.status().as_u16(), self.code.reason(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.code.status(), axum::Json(self.body())).into_response();
        if matches!(self.code, ErrorCode::TooManyRequests | ErrorCode::Unavailable) {
            // Every refusal for load says when to come back (a handler may set a longer one).
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        res
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match &e {
            DbError::NotFound { .. } => ApiError::new(ErrorCode::NotFound, e.to_string()),
            DbError::VersionConflict { .. } => {
                ApiError::new(ErrorCode::VersionConflict, e.to_string()).with_field("version")
            }
            DbError::Duplicate { .. } => ApiError::new(ErrorCode::AlreadyExists, e.to_string()).with_field("name"),
            DbError::SchemaTooNew { .. } | DbError::UnsupportedUrl(_) => ApiError::internal(&e),
            DbError::Deposed { .. } | DbError::Busy => ApiError::new(ErrorCode::Unavailable, e.to_string()),
            // The database is unreachable or ended the statement (a timeout): try again shortly.
            _ if e.is_unavailable() => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::new(ErrorCode::Unavailable, "the database is not available; retry shortly")
            }
            DbError::Corrupt { .. } | DbError::Sqlx(_) | DbError::Migrate(_) => ApiError::internal(&e),
        }
    }
}

/// A broken backend rule: 400 naming the field (409 for a name already taken). The message is the
/// rule's own, which starts with the field.
impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        use ValidationError::*;
        let code = match &e {
            DuplicateName { .. } => ErrorCode::AlreadyExists,
            MissingCustomSuffix { .. }
            | MissingVersionSuffix { .. }
            | ShadowsBuiltIn { .. }
            | NameChanged { .. }
            | NotDeletable { .. }
            | SourceMismatch
            | CatalogVersionOnCustom { .. }
            | CatalogVersionEdited { .. }
            | ServerOwned { .. }
            | ReadOnlyOnBuiltIn { .. } => ErrorCode::RuleViolation,
            _ => ErrorCode::InvalidInput,
        };
        ApiError { code, message: e.to_string(), field: Some(e.field()) }
    }
}

/// A backend YAML document that cannot be read: 400 naming the key path (or `content`, the request
/// field holding the document, for syntax errors) with the line and column.
impl From<YamlError> for ApiError {
    fn from(e: YamlError) -> Self {
        let (code, field) = match &e {
            YamlError::UnknownKey { field, key, .. } => {
                let path = if field == "." { key.clone() } else { format!("{field}.{key}") };
                (ErrorCode::InvalidInput, path)
            }
            YamlError::InvalidValue { field, .. } | YamlError::Unsupported { field, .. } => {
                (ErrorCode::InvalidInput, field.clone())
            }
            YamlError::Empty | YamlError::Syntax { .. } | YamlError::Other { .. } => {
                (ErrorCode::MalformedYaml, "content".to_owned())
            }
            YamlError::Export { .. } => return ApiError::internal(&e),
        };
        ApiError { code, message: e.to_string(), field: Some(field) }
    }
}

/// An error on `/v1` and `/model/proxy`: OpenAI's envelope `{"error": {message, type, code}}`,
/// with `Retry-After` on 429. Every gateway error becomes one here and only here.
#[derive(Debug)]
pub struct OpenAiError {
    pub error: ApiError,
    /// OpenAI's machine-readable `code` (`invalid_api_key`, `model_not_found`, …).
    pub code: &'static str,
    pub retry_after: Option<u64>,
}

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        let code = match error.code {
            ErrorCode::Unauthorized => "invalid_api_key",
            ErrorCode::Forbidden => "permission_denied",
            ErrorCode::NotFound => "not_found",
            ErrorCode::TooManyRequests => "rate_limit_exceeded",
            ErrorCode::Unavailable => "service_unavailable",
            ErrorCode::Internal => "internal_error",
            _ => "invalid_request",
        };
        OpenAiError { error, code, retry_after: None }
    }
}

impl From<DbError> for OpenAiError {
    fn from(e: DbError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<GatewayError> for OpenAiError {
    fn from(e: GatewayError) -> Self {
        let (code, openai_code) = match &e {
            GatewayError::BadRequest(_) => (ErrorCode::InvalidInput, "invalid_request"),
            GatewayError::UnknownModel(_) => (ErrorCode::NotFound, "model_not_found"),
            GatewayError::UnknownRoute(_) => (ErrorCode::NotFound, "model_not_found"),
            GatewayError::NotAllowed(_) => (ErrorCode::Forbidden, "model_not_allowed"),
            GatewayError::ProxyDisabled(_) => (ErrorCode::Forbidden, "generic_proxy_disabled"),
            GatewayError::RateLimited { .. } => (ErrorCode::TooManyRequests, "rate_limit_exceeded"),
            GatewayError::NoInstance(_) => (ErrorCode::Unavailable, "no_running_instance"),
            GatewayError::Upstream(_) => (ErrorCode::BadGateway, "upstream_error"),
            GatewayError::Timeout(_) => (ErrorCode::GatewayTimeout, "upstream_timeout"),
            GatewayError::WakeQueueFull { .. } => (ErrorCode::Unavailable, "model_waking_queue_full"),
            GatewayError::WakeTimeout { .. } => (ErrorCode::Unavailable, "model_wake_timeout"),
        };
        let retry_after = match &e {
            GatewayError::RateLimited { retry_after }
            | GatewayError::WakeQueueFull { retry_after, .. }
            | GatewayError::WakeTimeout { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        OpenAiError { error: ApiError::new(code, e.to_string()), code: openai_code, retry_after }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let status = self.error.code.status();
        let kind = match status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        let body = serde_json::json!({"error": {"message": self.error.message, "type": kind, "code": self.code}});
        let mut res = (status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn reasons_are_unique_and_statuses_are_errors() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.reason()), "duplicate reason {}", code.reason());
            assert!(
                code.status().is_client_error() || code.status().is_server_error(),
                "{code:?} is not an error status"
            );
        }
    }

    /// The wire contract of every error, as clients see it: the management API's body per
    /// [`ErrorCode`] and the gateway's OpenAI envelope per [`GatewayError`]. A change here is a change
    /// to what clients parse; review the snapshot diff (`cargo insta review`, or
    /// `INSTA_UPDATE=always cargo test --lib contract`).
    #[test]
    fn error_bodies_contract() {
        let bodies: Vec<serde_json::Value> = ErrorCode::ALL
            .iter()
            .map(|&code| {
                let body = ApiError::new(code, "what went wrong").body();
                serde_json::json!({"status": code.status().as_u16(), "body": body})
            })
            .collect();
        insta::assert_json_snapshot!("error_bodies", bodies);
        let field = ApiError::field("perPage", "must be between 1 and 1000").body();
        insta::assert_json_snapshot!("error_body_with_field", field);
    }

    #[test]
    fn gateway_error_envelopes_contract() {
        let errors = [
            GatewayError::BadRequest("bad".into()),
            GatewayError::UnknownModel("m".into()),
            GatewayError::UnknownRoute(7),
            GatewayError::NotAllowed("m".into()),
            GatewayError::ProxyDisabled("m".into()),
            GatewayError::RateLimited { retry_after: 3 },
            GatewayError::NoInstance("m".into()),
            GatewayError::Upstream("refused".into()),
            GatewayError::Timeout(30),
            GatewayError::WakeQueueFull { model: "m".into(), retry_after: 5 },
            GatewayError::WakeTimeout { model: "m".into(), waited: 600, retry_after: 5 },
        ];
        let envelopes: Vec<serde_json::Value> = errors
            .into_iter()
            .map(|e| {
                let res = OpenAiError::from(e).into_response();
                let retry_after = res.headers().get("retry-after").map(|v| v.to_str().unwrap_or("?").to_string());
                let status = res.status().as_u16();
                let body = futures_util::FutureExt::now_or_never(axum::body::to_bytes(res.into_body(), 1 << 16))
                    .expect("a JSON body is ready at once")
                    .expect("body");
                let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
                serde_json::json!({"status": status, "retry_after": retry_after, "body": body})
            })
            .collect();
        insta::assert_json_snapshot!("gateway_error_envelopes", envelopes);
    }

    #[test]
    fn field_errors_name_the_field() {
        let body = ApiError::field("perPage", "must be between 1 and 1000").body();
        assert_eq!(body.code, 400);
        assert_eq!(body.reason, "InvalidInput");
        assert_eq!(body.field.as_deref(), Some("perPage"));
        assert!(body.message.starts_with("perPage: "), "{}", body.message);
    }
}
