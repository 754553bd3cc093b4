//! Validation errors of the core: which field of a user's input is wrong and why.
//! Owns only the error type; it must not format gRPC or CLI messages (the edges do).

use std::fmt;

/// A user-input error that names the offending field, e.g. `schedule.cron`.
///
/// `field` is a dotted path relative to the job (`schedule.time_zone`,
/// `action.http.url`, `policy.retry.attempts_max`); the API edge prefixes it with
/// the request field (`job.`) when it builds a `BadRequest` field violation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error, with `prefix.` put before its field path.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}
