//! The HTTP webhook executor: one request per attempt, with Meridian's headers, the
//! whole exchange (connect, request, response body) under the attempt's timeout.
//!
//! Classifies the response (2xx success; 5xx, 429, 408 and transport errors retryable;
//! other statuses permanent) and keeps the response body's tail. It must not follow
//! redirects, retry, or log the URL (it may carry credentials).

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Attempt, OUTPUT_TAIL_BYTES_MAX, Outcome, Status, Tail, error_chain};
use crate::core::action::{
    HEADER_ATTEMPT, HEADER_IDEMPOTENCY_KEY, HEADER_JOB, HEADER_SCHEDULED_AT, HEADER_TRACEPARENT,
    Http,
};

/// Longest `Location` quoted in the summary of a redirect.
const LOCATION_SHOWN_BYTES_MAX: usize = 256;

pub(super) async fn execute(
    client: &reqwest::Client,
    http: &Http,
    attempt: &Attempt<'_>,
    cancel: &CancellationToken,
) -> Outcome {
    let request = match build(client, http, attempt) {
        Ok(request) => request,
        // Validation should have caught it; the same input would fail again.
        Err(message) => return Outcome::new(Status::Failed { retryable: false }, message),
    };
    tokio::select! {
        biased;
        () = cancel.cancelled() => Outcome::cancelled(),
        // Dropping the exchange on timeout or cancel closes its connection.
        r = tokio::time::timeout(attempt.timeout, exchange(client, request)) => match r {
            Ok(outcome) => outcome,
            Err(_) => Outcome::timed_out(attempt.timeout),
        },
    }
}

/// The request, or a message saying which part of the action is unusable.
fn build(
    client: &reqwest::Client,
    http: &Http,
    attempt: &Attempt<'_>,
) -> Result<reqwest::Request, String> {
    let method = Method::from_bytes(http.method.as_bytes())
        .map_err(|_| format!("invalid http method {:?}", http.method))?;
    let url = reqwest::Url::parse(&http.url).map_err(|e| format!("invalid url: {e}"))?;
    let mut headers = HeaderMap::with_capacity(http.headers.len() + 5);
    for (name, value) in &http.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("invalid value for header {name:?}"))?;
        // `append`: a name may legitimately repeat.
        headers.append(name, value);
    }
    // `insert` after the user's: Meridian's headers win even if validation was bypassed.
    let ours = [
        (HEADER_IDEMPOTENCY_KEY, attempt.firing_id.to_owned()),
        (HEADER_SCHEDULED_AT, attempt.scheduled_at_rfc3339()),
        (HEADER_ATTEMPT, attempt.attempt.to_string()),
        (HEADER_JOB, attempt.job.to_owned()),
    ];
    for (name, value) in ours {
        let value = HeaderValue::from_str(&value)
            .map_err(|_| format!("invalid value for header {name:?}: {value:?}"))?;
        headers.insert(header_name(name), value);
    }
    if let Some(traceparent) = attempt.traceparent {
        // Tracing is best effort: a bad context must not fail the user's call.
        match HeaderValue::from_str(traceparent) {
            Ok(value) => {
                headers.insert(header_name(HEADER_TRACEPARENT), value);
            }
            Err(_) => warn!(firing = %attempt.firing_id, "invalid traceparent not sent"),
        }
    }
    let mut request = client.request(method.clone(), url).headers(headers);
    // An empty body on GET and HEAD is no body (no `Content-Length: 0`); elsewhere it
    // is sent, since some servers want a length on every POST (411 otherwise).
    if !(http.body.is_empty() && matches!(method, Method::GET | Method::HEAD)) {
        request = request.body(http.body.clone());
    }
    request.build().map_err(|e| {
        format!(
            "cannot build the request: {}",
            error_chain(&e.without_url())
        )
    })
}

/// Send the request and read the whole response body, keeping its tail.
async fn exchange(client: &reqwest::Client, request: reqwest::Request) -> Outcome {
    let mut response = match client.execute(request).await {
        Ok(response) => response,
        Err(e) => {
            let what = if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            // `without_url`: the URL may hold a token; the run log must not.
            return Outcome::new(
                Status::Failed { retryable: true },
                format!("{what}: {}", error_chain(&e.without_url())),
            );
        }
    };
    let status = response.status();
    let mut summary = format!("http {}", status.as_u16());
    if status.is_redirection() {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned());
        if let Some(mut location) = location {
            if location.len() > LOCATION_SHOWN_BYTES_MAX {
                let mut cut = LOCATION_SHOWN_BYTES_MAX;
                while !location.is_char_boundary(cut) {
                    cut -= 1;
                }
                location.truncate(cut);
                location.push('…');
            }
            summary.push_str(&format!(" (redirect to {location:?} not followed)"));
        } else {
            summary.push_str(" (redirect not followed)");
        }
    }
    let mut tail = Tail::new(OUTPUT_TAIL_BYTES_MAX);
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => tail.push(&chunk),
            Ok(None) => break,
            // The status decides the outcome: the target has answered. A cut body
            // only loses diagnostics, so say so and keep what arrived.
            Err(e) => {
                summary.push_str(&format!(
                    ", response body cut: {}",
                    error_chain(&e.without_url())
                ));
                break;
            }
        }
    }
    Outcome {
        output_tail: tail.into_string(),
        http_status: Some(status.as_u16()),
        ..Outcome::new(classify(status), summary)
    }
}

/// 2xx succeeds. 5xx, 429 (too many requests) and 408 (request timeout) say "later",
/// so they are retryable. Everything else (other 4xx, 3xx since redirects are not
/// followed, stray 1xx) would get the same answer again: permanent.
fn classify(status: StatusCode) -> Status {
    if status.is_success() {
        Status::Succeeded
    } else if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        Status::Failed { retryable: true }
    } else {
        Status::Failed { retryable: false }
    }
}

/// One of Meridian's header names (`from_bytes` lowers it; HTTP/2 requires lower case).
fn header_name(name: &'static str) -> HeaderName {
    HeaderName::from_bytes(name.as_bytes()).expect("meridian's header names are valid")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::core::action::Action;
    use crate::exec::test_server::{Reply, TestServer};
    use crate::exec::{Executors, within};

    fn attempt(timeout: Duration) -> Attempt<'static> {
        Attempt {
            job: "regions/eu-west/jobs/report",
            firing_id: "0195f0b6-7c1a-5d3e-9a4b-1c2d3e4f5a6b",
            scheduled_at: Utc.with_ymd_and_hms(2026, 3, 29, 1, 30, 0).unwrap()
                + chrono::Duration::milliseconds(250),
            attempt: 3,
            timeout,
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        }
    }

    fn action(url: String) -> Action {
        Action::Http(Http {
            method: "POST".into(),
            url,
            headers: vec![],
            body: String::new(),
        })
    }

    async fn run(action: &Action, timeout: Duration) -> Outcome {
        Executors::new()
            .unwrap()
            .execute(action, &attempt(timeout), CancellationToken::new())
            .await
    }

    #[tokio::test]
    async fn sends_meridian_headers_method_and_body() {
        let server = TestServer::start(|_| Reply::status(201, "created")).await;
        let a = Action::Http(Http {
            method: "PUT".into(),
            url: server.url("/hook?x=1"),
            headers: vec![
                ("Authorization".into(), "Bearer s3cret".into()),
                ("X-Multi".into(), "a".into()),
                ("X-Multi".into(), "b".into()),
            ],
            body: r#"{"hello":"world"}"#.into(),
        });
        let o = run(&a, Duration::from_secs(5)).await;
        assert_eq!(o.status, Status::Succeeded, "{o:?}");
        assert_eq!(o.summary, "http 201");
        assert_eq!(o.http_status, Some(201));
        assert_eq!(o.exit_code, None);
        assert_eq!(o.output_tail, "created");

        let req = server.requests().remove(0);
        assert_eq!(req.method, "PUT");
        assert_eq!(req.target, "/hook?x=1");
        assert_eq!(req.body, br#"{"hello":"world"}"#);
        assert_eq!(
            req.header("idempotency-key"),
            Some("0195f0b6-7c1a-5d3e-9a4b-1c2d3e4f5a6b")
        );
        assert_eq!(
            req.header("x-meridian-scheduled-at"),
            Some("2026-03-29T01:30:00.250Z")
        );
        assert_eq!(req.header("x-meridian-attempt"), Some("3"));
        assert_eq!(
            req.header("x-meridian-job"),
            Some("regions/eu-west/jobs/report")
        );
        assert_eq!(
            req.header("traceparent"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(req.header("authorization"), Some("Bearer s3cret"));
        assert_eq!(req.header_all("x-multi"), vec!["a", "b"]);
        let ua = req.header("user-agent").unwrap();
        assert!(ua.starts_with("meridian/"), "{ua}");
    }

    #[tokio::test]
    async fn no_traceparent_when_none_given() {
        let server = TestServer::start(|_| Reply::status(200, "")).await;
        let ex = Executors::new().unwrap();
        let mut at = attempt(Duration::from_secs(5));
        at.traceparent = None;
        let o = ex
            .execute(&action(server.url("/")), &at, CancellationToken::new())
            .await;
        assert_eq!(o.status, Status::Succeeded);
        assert_eq!(server.requests()[0].header("traceparent"), None);
    }

    #[tokio::test]
    async fn statuses_are_classified() {
        // The reply's status is the request path's number.
        let server = TestServer::start(|req| {
            let code: u16 = req.target.trim_start_matches('/').parse().unwrap();
            Reply::status(code, "because")
        })
        .await;
        let cases = [
            (200, Status::Succeeded),
            (204, Status::Succeeded),
            (500, Status::Failed { retryable: true }),
            (503, Status::Failed { retryable: true }),
            (429, Status::Failed { retryable: true }),
            (408, Status::Failed { retryable: true }),
            (400, Status::Failed { retryable: false }),
            (404, Status::Failed { retryable: false }),
            (410, Status::Failed { retryable: false }),
        ];
        for (code, want) in cases {
            let o = run(
                &action(server.url(&format!("/{code}"))),
                Duration::from_secs(5),
            )
            .await;
            assert_eq!(o.status, want, "{code}: {o:?}");
            assert_eq!(o.summary, format!("http {code}"));
            assert_eq!(o.http_status, Some(code));
        }
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let server = TestServer::start(|req| {
            if req.target == "/moved" {
                Reply::redirect("/elsewhere")
            } else {
                Reply::status(200, "")
            }
        })
        .await;
        let o = run(&action(server.url("/moved")), Duration::from_secs(5)).await;
        assert_eq!(o.status, Status::Failed { retryable: false }, "{o:?}");
        assert_eq!(
            o.summary,
            r#"http 302 (redirect to "/elsewhere" not followed)"#
        );
        let requests = server.requests();
        assert_eq!(requests.len(), 1, "only the configured target was called");
    }

    #[tokio::test]
    async fn times_out_waiting_for_the_response() {
        let server = TestServer::start(|_| Reply::Hang).await;
        let o = within(
            Duration::from_secs(2),
            run(&action(server.url("/")), Duration::from_millis(300)),
        )
        .await;
        assert_eq!(o.status, Status::TimedOut, "{o:?}");
        assert_eq!(o.summary, "timed out after 300ms");
    }

    #[tokio::test]
    async fn times_out_reading_a_stalled_body() {
        let server = TestServer::start(|_| Reply::HeadersThenHang).await;
        let o = within(
            Duration::from_secs(2),
            run(&action(server.url("/")), Duration::from_millis(300)),
        )
        .await;
        assert_eq!(o.status, Status::TimedOut, "{o:?}");
    }

    #[tokio::test]
    async fn cancel_stops_the_request() {
        let server = TestServer::start(|_| Reply::Hang).await;
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            trigger.cancel();
        });
        let executors = Executors::new().unwrap();
        let o = within(
            Duration::from_secs(2),
            executors.execute(
                &action(server.url("/")),
                &attempt(Duration::from_secs(30)),
                cancel,
            ),
        )
        .await;
        assert_eq!(o.status, Status::Cancelled, "{o:?}");
    }

    #[tokio::test]
    async fn connection_refused_is_retryable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let o = run(&action(format!("http://{addr}/")), Duration::from_secs(5)).await;
        assert_eq!(o.status, Status::Failed { retryable: true }, "{o:?}");
        assert!(
            o.summary.starts_with("connection failed: "),
            "{}",
            o.summary
        );
        assert!(
            !o.summary.contains("http://"),
            "no url in summaries: {}",
            o.summary
        );
        assert_eq!(o.http_status, None);
    }

    #[tokio::test]
    async fn response_body_tail_is_bounded() {
        let body = format!("{}END", "x".repeat(100 * 1024));
        let server = TestServer::start(move |_| Reply::status(500, &body)).await;
        let o = run(&action(server.url("/")), Duration::from_secs(5)).await;
        assert_eq!(o.status, Status::Failed { retryable: true });
        assert_eq!(o.output_tail.len(), OUTPUT_TAIL_BYTES_MAX);
        assert!(o.output_tail.ends_with("xxEND"));
    }

    #[tokio::test]
    async fn https_client_is_built_and_a_tls_failure_is_retryable() {
        // Twice: installing the provider again must be harmless.
        Executors::new().unwrap();
        // A server that hangs up at once: the TLS handshake fails, and must not panic.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        });
        let o = run(&action(format!("https://{addr}/")), Duration::from_secs(5)).await;
        assert_eq!(o.status, Status::Failed { retryable: true }, "{o:?}");
        assert!(
            o.summary.starts_with("connection failed: "),
            "{}",
            o.summary
        );
    }

    #[test]
    fn headers_reach_the_wire_in_lower_case() {
        for name in [
            HEADER_IDEMPOTENCY_KEY,
            HEADER_SCHEDULED_AT,
            HEADER_ATTEMPT,
            HEADER_JOB,
        ] {
            assert_eq!(header_name(name).as_str(), name.to_ascii_lowercase());
        }
    }
}
