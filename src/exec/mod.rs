//! Action executors: run one attempt of a firing's action (HTTP webhook, command, no-op)
//! and report what happened as an [`Outcome`].
//!
//! Owns the shared HTTP client, process handling, per-attempt timeouts, cancellation
//! and the bounded output tail. It must not decide retries, record runs or read the
//! schedule: the worker that calls it does, from the [`Status`] it returns.

mod command;
mod http;
#[cfg(test)]
mod test_server;

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::core::action::Action;

/// Most bytes of output (command stdout+stderr, HTTP response body) kept per attempt:
/// the last ones, where errors usually are.
pub const OUTPUT_TAIL_BYTES_MAX: usize = 4 * 1024;

/// The `User-Agent` of webhook calls.
pub const USER_AGENT: &str = concat!("meridian/", env!("CARGO_PKG_VERSION"));

/// One attempt of one firing, as the executor needs it.
#[derive(Clone, Copy, Debug)]
pub struct Attempt<'a> {
    /// The job's resource name, `regions/{region}/jobs/{job}`.
    pub job: &'a str,
    /// The firing id: the idempotency key sent to the target.
    pub firing_id: &'a str,
    /// The firing's scheduled instant (not when this attempt started).
    pub scheduled_at: DateTime<Utc>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Budget of the whole attempt: connect, request, response body; or the process's
    /// whole life.
    pub timeout: Duration,
    /// W3C trace context to propagate, if the attempt is traced.
    pub traceparent: Option<&'a str>,
}

impl Attempt<'_> {
    /// The scheduled instant as sent to targets: RFC 3339, UTC with `Z`, milliseconds.
    pub fn scheduled_at_rfc3339(&self) -> String {
        self.scheduled_at
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Status {
    /// 2xx, exit status 0, or a no-op.
    Succeeded,
    /// The action ran (or could not start) and failed; `retryable` says whether
    /// trying again could help (5xx, 429, 408, connection errors, non-zero exit) or
    /// not (other 4xx, a program that does not exist).
    Failed { retryable: bool },
    /// The attempt's timeout ran out; the request was dropped or the process group
    /// killed.
    TimedOut,
    /// The caller's cancellation token fired; same clean-up as a timeout.
    Cancelled,
}

impl Status {
    /// Whether the retry policy may schedule another attempt: retryable failures and
    /// timeouts, never a success, a permanent failure or a cancellation.
    pub fn may_retry(self) -> bool {
        matches!(self, Status::Failed { retryable: true } | Status::TimedOut)
    }
}

/// What one attempt did, for the run log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: Status,
    /// One line for people: `http 503`, `exit 2`, `timed out after 5s`,
    /// `program "x" not found`.
    pub summary: String,
    /// The last bytes of output, at most [`OUTPUT_TAIL_BYTES_MAX`], UTF-8 (lossy).
    pub output_tail: String,
    /// The exit code of a command that exited (not one killed by a signal).
    pub exit_code: Option<i32>,
    /// The response status of an HTTP call that got one.
    pub http_status: Option<u16>,
}

impl Outcome {
    fn new(status: Status, summary: impl Into<String>) -> Self {
        Self {
            status,
            summary: summary.into(),
            output_tail: String::new(),
            exit_code: None,
            http_status: None,
        }
    }

    fn timed_out(timeout: Duration) -> Self {
        Self::new(
            Status::TimedOut,
            format!("timed out after {}", fmt_duration(timeout)),
        )
    }

    fn cancelled() -> Self {
        Self::new(Status::Cancelled, "cancelled")
    }
}

/// Why the shared HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot build the http client")]
    HttpClient(#[source] reqwest::Error),
}

/// The executors of one process. Build it once and share it: it holds the HTTP
/// client's connection pool. Cloning is cheap (the client is reference-counted).
#[derive(Clone, Debug)]
pub struct Executors {
    http: reqwest::Client,
}

impl Executors {
    /// Install the TLS crypto provider (if no one has) and build the HTTP client.
    ///
    /// Fails when the system has no CA certificates (`/etc/ssl/certs`, or
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR`): better at startup than at the first https
    /// webhook. Honours `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY`.
    pub fn new() -> Result<Self, BuildError> {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            // Never follow redirects: the idempotency key, job name and the user's
            // headers (often credentials) must reach the configured target only, and a
            // redirect to another URL is a configuration the user should see and fix.
            // A 3xx is reported as a permanent failure naming the Location.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(BuildError::HttpClient)?;
        Ok(Self { http })
    }

    /// Run one attempt of `action`. Never panics on user input and never returns an
    /// error: everything that can go wrong is an [`Outcome`]. Returns within
    /// `attempt.timeout` (plus a short clean-up bound for a killed process group),
    /// or soon after `cancel` fires.
    pub async fn execute(
        &self,
        action: &Action,
        attempt: &Attempt<'_>,
        cancel: CancellationToken,
    ) -> Outcome {
        if cancel.is_cancelled() {
            return Outcome::new(Status::Cancelled, "cancelled before start");
        }
        let outcome = match action {
            Action::Http(h) => http::execute(&self.http, h, attempt, &cancel).await,
            Action::Command(c) => command::execute(c, attempt, &cancel).await,
            Action::Noop => Outcome::new(Status::Succeeded, "noop"),
        };
        debug!(
            firing = %attempt.firing_id,
            job = %attempt.job,
            attempt = attempt.attempt,
            status = ?outcome.status,
            summary = %outcome.summary,
            "attempt executed"
        );
        outcome
    }
}

/// Make ring rustls's process-wide crypto provider, unless one is installed already.
/// reqwest (built with `rustls-no-provider`) panics when building a client without
/// one; call this early in `main` too if anything else builds rustls configs.
pub fn install_crypto_provider() {
    // Err means a provider is installed already (ours or someone else's): either way
    // there is one, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The last `max` bytes written to it, in bounded memory whatever is written.
struct Tail {
    bytes: VecDeque<u8>,
    max: usize,
}

impl Tail {
    fn new(max: usize) -> Self {
        Self {
            bytes: VecDeque::with_capacity(max),
            max,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        let chunk = &chunk[chunk.len().saturating_sub(self.max)..];
        let excess = (self.bytes.len() + chunk.len()).saturating_sub(self.max);
        self.bytes.drain(..excess);
        self.bytes.extend(chunk);
    }

    /// The tail as UTF-8, at most `max` bytes: a character cut at the front is
    /// dropped rather than replaced, and invalid bytes become U+FFFD.
    fn into_string(self) -> String {
        let max = self.max;
        let bytes = Vec::from(self.bytes);
        // Skip the continuation bytes of a character whose start fell off the front.
        let start = bytes
            .iter()
            .take(3)
            .take_while(|b| (0x80..0xC0).contains(*b))
            .count();
        let text = String::from_utf8_lossy(&bytes[start..]).into_owned();
        if text.len() <= max {
            return text;
        }
        // Replacement characters (3 bytes for 1 invalid byte) made it longer: keep
        // the last `max` bytes, at a character boundary.
        let mut cut = text.len() - max;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text[cut..].to_owned()
    }
}

/// `5s`, `1500ms`, `2m`: short and exact, for summaries.
fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 && !d.is_zero() {
        format!("{}us", d.as_micros())
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// `f`'s output, failing the test if it takes longer than `limit` (tests bound their
/// time without reading the clock, which clippy.toml reserves for the Clock port).
#[cfg(test)]
async fn within<F: std::future::Future>(limit: Duration, f: F) -> F::Output {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("took longer than {limit:?}"))
}

/// An error and its sources, `: `-joined (reqwest's own message alone says little).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        // Some layers repeat their source's message; say it once.
        if !text.ends_with(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn attempt() -> Attempt<'static> {
        Attempt {
            job: "regions/r/jobs/j",
            firing_id: "f",
            scheduled_at: Utc.with_ymd_and_hms(2026, 3, 29, 1, 30, 0).unwrap(),
            attempt: 1,
            timeout: Duration::from_secs(1),
            traceparent: None,
        }
    }

    #[test]
    fn scheduled_at_is_rfc3339_utc_millis() {
        let mut a = attempt();
        assert_eq!(a.scheduled_at_rfc3339(), "2026-03-29T01:30:00.000Z");
        a.scheduled_at += chrono::Duration::microseconds(1_234_567);
        assert_eq!(a.scheduled_at_rfc3339(), "2026-03-29T01:30:01.234Z");
    }

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut t = Tail::new(8);
        t.push(b"hello ");
        t.push(b"world");
        assert_eq!(t.into_string(), "lo world");
        let mut t = Tail::new(4);
        t.push(&[b'x'; 1000]);
        t.push(b"ab");
        assert_eq!(t.into_string(), "xxab");
    }

    #[test]
    fn tail_never_exceeds_max_even_with_cut_or_invalid_utf8() {
        let mut t = Tail::new(4);
        t.push("aé€".as_bytes()); // 1 + 2 + 3 bytes: the tail starts inside é
        assert_eq!(t.into_string(), "€");
        let mut t = Tail::new(6);
        t.push(&[0xFF; 6]);
        let s = t.into_string();
        assert!(s.len() <= 6, "{s:?}");
        assert_eq!(s, "\u{FFFD}\u{FFFD}");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(fmt_duration(Duration::from_secs(5)), "5s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(fmt_duration(Duration::from_secs(120)), "2m");
        assert_eq!(fmt_duration(Duration::ZERO), "0s");
        assert_eq!(fmt_duration(Duration::from_micros(20)), "20us");
    }

    #[test]
    fn may_retry_only_retryable_failures_and_timeouts() {
        assert!(Status::Failed { retryable: true }.may_retry());
        assert!(Status::TimedOut.may_retry());
        assert!(!Status::Failed { retryable: false }.may_retry());
        assert!(!Status::Succeeded.may_retry());
        assert!(!Status::Cancelled.may_retry());
    }

    #[tokio::test]
    async fn noop_succeeds_and_a_cancelled_token_stops_before_start() {
        let ex = Executors::new().unwrap();
        let o = ex
            .execute(&Action::Noop, &attempt(), CancellationToken::new())
            .await;
        assert_eq!(o.status, Status::Succeeded);
        let cancel = CancellationToken::new();
        cancel.cancel();
        let o = ex.execute(&Action::Noop, &attempt(), cancel).await;
        assert_eq!(o.status, Status::Cancelled);
    }

    #[test]
    fn outcome_serializes_with_a_state_tag() {
        let o = Outcome {
            http_status: Some(503),
            ..Outcome::new(Status::Failed { retryable: true }, "http 503")
        };
        let json = serde_json::to_value(&o).unwrap();
        assert_eq!(
            json["status"],
            serde_json::json!({"state": "failed", "retryable": true})
        );
        assert_eq!(serde_json::from_value::<Outcome>(json).unwrap(), o);
    }
}
