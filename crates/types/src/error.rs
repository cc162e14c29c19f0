//! The error body every API call returns on failure: `{code, message}`.

use serde::{Deserialize, Serialize};

/// Stable machine-readable error codes. Each maps to exactly one HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidArgument,
    Unauthenticated,
    Forbidden,
    NotFound,
    AlreadyExists,
    IllegalTransition,
    /// The object changed between reading it and writing the decision made from it
    /// (another request or hub got there first): read it again and retry.
    Conflict,
    QuotaExceeded,
    NoCapacity,
    Unavailable,
    Timeout,
    Internal,
    /// A per-object limit of concurrent requests is reached: retry when one finished.
    TooManyRequests,
    /// Every field is well-formed but they contradict each other (say a tenant token
    /// without its tenant): change one of the fields named.
    Unprocessable,
}

impl ErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::AlreadyExists | ErrorCode::IllegalTransition | ErrorCode::Conflict => 409,
            ErrorCode::QuotaExceeded | ErrorCode::Unprocessable => 422,
            // A full fleet is its state, not the hub failing: a conflict the caller can
            // resolve (add a host, free room), like a taken name. 503 stays for a host
            // or service that cannot be reached.
            ErrorCode::NoCapacity => 409,
            ErrorCode::Unavailable => 503,
            ErrorCode::Timeout => 504,
            ErrorCode::Internal => 500,
            ErrorCode::TooManyRequests => 429,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::IllegalTransition => "illegal_transition",
            ErrorCode::Conflict => "conflict",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::NoCapacity => "no_capacity",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::Unprocessable => "unprocessable",
        }
    }
}

/// The JSON body of every 4xx/5xx answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, thiserror::Error)]
#[error("{message} ({})", code.as_str())]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

impl From<crate::IllegalTransition> for ApiError {
    fn from(e: crate::IllegalTransition) -> Self {
        ApiError::new(ErrorCode::IllegalTransition, e.to_string())
    }
}

impl From<crate::NameError> for ApiError {
    fn from(e: crate::NameError) -> Self {
        ApiError::invalid(e.to_string())
    }
}
