//! The one place where errors become gRPC statuses: port errors, the core's field
//! errors and the edge's own refusals map to a `google.rpc.Status` code with details
//! (`BadRequest` field violations, `ErrorInfo` with a reason in the `meridian.dev`
//! domain, `RetryInfo` on `RESOURCE_EXHAUSTED` and `UNAVAILABLE`).
//!
//! Must not decide anything: handlers pick the error, this module only renders it.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tracing::error;

use crate::core::FieldError;
use crate::ports;

/// The `ErrorInfo.domain` of every error Meridian returns.
pub const DOMAIN: &str = "meridian.dev";

/// How long a client is told to wait before retrying a retryable error.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Why a request failed, as the edge sees it. Handlers return this; tonic sees only
/// the `Status` it converts into.
#[derive(Debug)]
pub enum Error {
    /// Bad input. `field` is already the request field path (`job.schedule.cron`).
    Field(FieldError),
    /// A port refused or failed.
    Port(ports::Error),
    /// A write (or a job creation) for a region this endpoint does not serve.
    RegionNotServed { region: String, served: Vec<String> },
    /// The request's etag is not the resource's current one.
    EtagMismatch { name: String, current: String },
    /// The job is paused: it cannot be triggered.
    JobPaused { name: String },
    /// A resource named in the request does not exist.
    NotFound { name: String },
    /// This node holds no owner term (yet): a trigger cannot be placed now.
    NoOwner,
    /// The owner failed to place a trigger or did not answer in time. The owner's
    /// reply carries only a message, so this is reported as retryable.
    Owner(String),
    /// A node actor did not answer.
    Actor(String),
}

impl From<FieldError> for Error {
    fn from(e: FieldError) -> Self {
        Error::Field(e)
    }
}

impl From<ports::Error> for Error {
    fn from(e: ports::Error) -> Self {
        Error::Port(e)
    }
}

/// The result of a handler before it reaches tonic.
pub type Result<T> = std::result::Result<T, Error>;

fn info(reason: &str, metadata: HashMap<String, String>) -> ErrorDetails {
    ErrorDetails::with_error_info(reason, DOMAIN, metadata)
}

fn retryable(code: Code, reason: &str, message: String) -> Status {
    let mut details = info(reason, HashMap::new());
    details.set_retry_info(Some(RETRY_DELAY));
    Status::with_error_details(code, message, details)
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::Field(f) => {
                let message = format!("{}: {}", f.field, f.message);
                Status::with_error_details(
                    Code::InvalidArgument,
                    message,
                    ErrorDetails::with_bad_request_violation(f.field, f.message),
                )
            }
            Error::RegionNotServed { region, served } => {
                let message = format!(
                    "region {region:?} is not served by this endpoint (it serves {})",
                    served.join(", ")
                );
                let metadata = HashMap::from([
                    ("region".to_owned(), region),
                    ("served".to_owned(), served.join(",")),
                ]);
                Status::with_error_details(
                    Code::FailedPrecondition,
                    message,
                    info("REGION_NOT_SERVED", metadata),
                )
            }
            Error::EtagMismatch { name, current } => Status::with_error_details(
                Code::Aborted,
                format!("{name} changed: its etag is now {current}"),
                info(
                    "ETAG_MISMATCH",
                    HashMap::from([("name".to_owned(), name), ("etag".to_owned(), current)]),
                ),
            ),
            Error::JobPaused { name } => Status::with_error_details(
                Code::FailedPrecondition,
                format!("{name} is paused: resume it first"),
                info("JOB_PAUSED", HashMap::from([("name".to_owned(), name)])),
            ),
            Error::NotFound { name } => Status::with_error_details(
                Code::NotFound,
                format!("{name} not found"),
                info("NOT_FOUND", HashMap::from([("name".to_owned(), name)])),
            ),
            Error::NoOwner => retryable(
                Code::Unavailable,
                "NO_OWNER",
                "this node holds no owner term yet; retry shortly".to_owned(),
            ),
            Error::Owner(m) => retryable(Code::Unavailable, "OWNER_FAILED", m),
            Error::Actor(m) => retryable(Code::Unavailable, "NODE_BUSY", m),
            Error::Port(p) => port(p),
        }
    }
}

fn port(e: ports::Error) -> Status {
    match e {
        ports::Error::NotFound(what) => Status::with_error_details(
            Code::NotFound,
            format!("{what} not found"),
            info("NOT_FOUND", HashMap::from([("name".to_owned(), what)])),
        ),
        ports::Error::AlreadyExists(what) => Status::with_error_details(
            Code::AlreadyExists,
            format!("{what} already exists"),
            info("ALREADY_EXISTS", HashMap::from([("name".to_owned(), what)])),
        ),
        ports::Error::Conflict(m) => {
            Status::with_error_details(Code::Aborted, m, info("CONFLICT", HashMap::new()))
        }
        ports::Error::Fenced { stale, current } => Status::with_error_details(
            Code::FailedPrecondition,
            format!("fenced: epoch {stale} is older than {current}"),
            info(
                "FENCED",
                HashMap::from([
                    ("stale_epoch".to_owned(), stale.to_string()),
                    ("current_epoch".to_owned(), current.to_string()),
                ]),
            ),
        ),
        ports::Error::Full(m) => retryable(Code::ResourceExhausted, "FULL", m),
        ports::Error::Unavailable(m) => retryable(Code::Unavailable, "UNAVAILABLE", m),
        ports::Error::Storage(m) => {
            // The detail may name files or keys: it goes to the log, not the client.
            error!(error = %m, "storage error answering a request");
            Status::with_error_details(
                Code::Internal,
                "storage error; see the server log",
                info("STORAGE", HashMap::new()),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_carry_a_violation() {
        let s: Status = Error::Field(FieldError::new("job.schedule.cron", "is bad")).into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "job.schedule.cron: is bad");
        let v = s.get_details_bad_request().unwrap().field_violations;
        assert_eq!(v[0].field, "job.schedule.cron");
        assert_eq!(v[0].description, "is bad");
    }

    #[test]
    fn retryable_errors_carry_retry_info() {
        for (e, code) in [
            (ports::Error::Full("q".into()), Code::ResourceExhausted),
            (ports::Error::Unavailable("x".into()), Code::Unavailable),
        ] {
            let s: Status = Error::Port(e).into();
            assert_eq!(s.code(), code);
            let d = s.get_error_details();
            assert_eq!(d.retry_info().unwrap().retry_delay, Some(RETRY_DELAY));
            assert_eq!(d.error_info().unwrap().domain, DOMAIN);
        }
    }

    #[test]
    fn codes() {
        let cases = [
            (ports::Error::NotFound("a".into()), Code::NotFound),
            (ports::Error::AlreadyExists("a".into()), Code::AlreadyExists),
            (ports::Error::Conflict("a".into()), Code::Aborted),
            (
                ports::Error::Fenced {
                    stale: crate::core::ids::Epoch(1),
                    current: crate::core::ids::Epoch(2),
                },
                Code::FailedPrecondition,
            ),
            (ports::Error::Storage("a".into()), Code::Internal),
        ];
        for (e, code) in cases {
            assert_eq!(Status::from(Error::Port(e)).code(), code);
        }
    }
}
