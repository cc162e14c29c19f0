//! The hub's error type: an [`ApiError`] that knows its HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hangar_store::StoreError;
use hangar_types::{ApiError, ErrorCode};

/// Every handler returns this; it renders as `{code, message}` with the code's status.
#[derive(Debug)]
pub struct HubError(pub ApiError);

pub type HubResult<T> = Result<T, HubError>;

impl HubError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        HubError(ApiError::new(code, message))
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        HubError(ApiError::invalid(message))
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        HubError(ApiError::not_found(message))
    }
    pub fn internal(message: impl Into<String>) -> Self {
        HubError(ApiError::internal(message))
    }
}

impl From<ApiError> for HubError {
    fn from(e: ApiError) -> Self {
        HubError(e)
    }
}

impl From<hangar_types::IllegalTransition> for HubError {
    fn from(e: hangar_types::IllegalTransition) -> Self {
        HubError(e.into())
    }
}

impl From<hangar_types::NameError> for HubError {
    fn from(e: hangar_types::NameError) -> Self {
        HubError(e.into())
    }
}

impl From<StoreError> for HubError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists(what) => HubError::new(ErrorCode::AlreadyExists, format!("{what} already exists")),
            StoreError::NotFound(what) => HubError::not_found(format!("{what} not found")),
            StoreError::NetworksExhausted(_) => HubError::new(ErrorCode::NoCapacity, e.to_string()),
            // A compare-and-swap lost to another request (or hub): the caller may retry.
            StoreError::Conflict(_) => HubError::new(ErrorCode::Conflict, e.to_string()),
            // The message names the step, never the cause (which may hold paths or SQL).
            StoreError::Unavailable { .. } => {
                tracing::warn!(error = ?e, "store unavailable");
                HubError::new(ErrorCode::Unavailable, e.to_string())
            }
            other => {
                // The cause may hold paths or SQL: log it, answer generically.
                tracing::error!(error = ?other, "store error");
                HubError::internal(format!("internal store error: {other}"))
            }
        }
    }
}

impl From<hangar_client::ClientError> for HubError {
    fn from(e: hangar_client::ClientError) -> Self {
        match e {
            hangar_client::ClientError::Api(api) => HubError(api),
            other => HubError::new(ErrorCode::Unavailable, format!("host unreachable: {other}")),
        }
    }
}

impl IntoResponse for HubError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if self.0.code == ErrorCode::TooManyRequests {
            // Clients back off by the header; the message says the same in words.
            let secs = retry_after(&self.0.message);
            return (status, [(axum::http::header::RETRY_AFTER, secs.to_string())], axum::Json(self.0)).into_response();
        }
        (status, axum::Json(self.0)).into_response()
    }
}

/// The seconds in a 429's "retry in Ns", else 1.
fn retry_after(message: &str) -> u64 {
    message.rsplit_once("retry in ").and_then(|(_, t)| t.trim_end_matches('s').parse().ok()).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_conflicts_and_outages_keep_their_meaning() {
        let conflict = HubError::from(StoreError::Conflict("instance 'acme/web'".into())).0;
        assert_eq!((conflict.code, conflict.code.http_status()), (ErrorCode::Conflict, 409));
        assert!(conflict.message.starts_with("instance 'acme/web' changed since it was read"), "{}", conflict.message);

        let cause = "database is locked: /var/lib/hangar/hub.db";
        let down = HubError::from(StoreError::Unavailable { context: "list hosts", source: cause.into() }).0;
        assert_eq!((down.code, down.code.http_status()), (ErrorCode::Unavailable, 503));
        // The answer names the step, not the cause: paths and SQL stay in the log.
        assert!(down.message.contains("list hosts") && !down.message.contains("/var/lib"), "{}", down.message);
    }
}
