//! The gRPC API, black-box: an in-process node on 127.0.0.1:0 with a temporary data
//! dir, driven through the generated client (and stock health and reflection
//! clients). Covers the standard methods, pagination and its tamper-evident tokens,
//! pause/resume, triggers that run, previews across a DST gap, idempotent creates,
//! and a table of bad inputs that must be refused naming the field and store nothing.
#![allow(clippy::disallowed_methods)] // tests measure deadlines with the real clock

use std::future::Future;
use std::time::{Duration, Instant};

use meridian::actors::Config;
use meridian::adapters::embedded::Options;
use meridian::api::pb;
use meridian::api::pb::scheduler_client::SchedulerClient;
use meridian::core::action::{BODY_BYTES_MAX, HEADERS_MAX};
use meridian::core::ids::NodeId;
use meridian::node::{Node, Settings};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

/// Longest any one test may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

struct Harness {
    node: Node,
    channel: Channel,
    client: SchedulerClient<Channel>,
    _dir: tempfile::TempDir,
}

async fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        node: NodeId::from("api-test"),
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        actors: Config::default(),
        store: Options::default(),
        mesh: None,
        guard: Default::default(),
    };
    let node = Node::start(settings, None).await.expect("node starts");
    let channel = Endpoint::from_shared(format!("http://{}", node.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("connect");
    Harness {
        node,
        client: SchedulerClient::new(channel.clone()),
        channel,
        _dir: dir,
    }
}

impl Harness {
    async fn stop(self) {
        self.node.shutdown().await.expect("clean shutdown");
    }
}

/// Run a test body on a fresh node, bounded in time.
async fn with_node<F, Fut>(body: F)
where
    F: FnOnce(Harness) -> Fut,
    Fut: Future<Output = Harness>,
{
    let h = tokio::time::timeout(TEST_TIMEOUT, async { body(start().await).await })
        .await
        .expect("test finished in time");
    h.stop().await;
}

fn ts(s: &str) -> prost_types::Timestamp {
    let t: chrono::DateTime<chrono::Utc> = s.parse().unwrap();
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

fn rfc3339(t: Option<&prost_types::Timestamp>) -> String {
    let t = t.expect("a timestamp");
    chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn cron(expr: &str, zone: &str) -> pb::Schedule {
    pb::Schedule {
        kind: Some(pb::schedule::Kind::Cron(expr.into())),
        time_zone: zone.into(),
        ..Default::default()
    }
}

fn noop() -> pb::Action {
    pb::Action {
        kind: Some(pb::action::Kind::Noop(pb::NoopAction {})),
    }
}

fn command(argv: &[&str]) -> pb::Action {
    pb::Action {
        kind: Some(pb::action::Kind::Command(pb::CommandAction {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })),
    }
}

fn http(url: &str) -> pb::HttpAction {
    pb::HttpAction {
        url: url.into(),
        ..Default::default()
    }
}

fn job(schedule: pb::Schedule, action: pb::Action) -> pb::Job {
    pb::Job {
        schedule: Some(schedule),
        action: Some(action),
        ..Default::default()
    }
}

fn create(id: &str, job: pb::Job) -> pb::CreateJobRequest {
    pb::CreateJobRequest {
        parent: "regions/local".into(),
        job_id: id.into(),
        job: Some(job),
        ..Default::default()
    }
}

/// The field of the first BadRequest violation of a status.
fn violation(s: &tonic::Status) -> String {
    s.get_details_bad_request()
        .and_then(|b| b.field_violations.into_iter().next())
        .map(|v| v.field)
        .unwrap_or_else(|| panic!("no BadRequest field violation in {s:?}"))
}

async fn list_all(client: &mut SchedulerClient<Channel>) -> Vec<pb::Job> {
    client
        .list_jobs(pb::ListJobsRequest {
            parent: "regions/-".into(),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_list_paginate_delete() {
    with_node(|mut h| async move {
        let c = &mut h.client;
        let mut names = Vec::new();
        for i in 0..5 {
            let created = c
                .create_job(create(
                    &format!("job-{i}"),
                    job(cron("0 9 * * MON-FRI", "Europe/Paris"), noop()),
                ))
                .await
                .expect("create")
                .into_inner();
            assert_eq!(created.name, format!("regions/local/jobs/job-{i}"));
            assert!(created.uid.parse::<uuid::Uuid>().is_ok());
            assert!(!created.etag.is_empty());
            assert!(!created.tzdb_version.is_empty());
            assert!(created.next_firing.is_some(), "next firing shown");
            names.push(created.name);
        }

        let got = c
            .get_job(pb::GetJobRequest {
                name: names[2].clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.name, names[2]);
        let s = got.schedule.unwrap();
        assert_eq!(s.time_zone, "Europe/Paris");
        assert_eq!(
            s.kind,
            Some(pb::schedule::Kind::Cron("0 9 * * MON-FRI".into()))
        );
        let next = got.next_firing.expect("next firing").time.unwrap();
        assert_eq!(next.time_zone, "Europe/Paris");
        assert!(next.local.contains("T09:00:00+0"), "{}", next.local);
        // Effective policies are shown, defaults included.
        assert_eq!(got.policy.unwrap().overlap, pb::Overlap::Skip as i32);

        // Three pages of 2, 2 and 1, in creation order.
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        let mut first_token = String::new();
        loop {
            let page = c
                .list_jobs(pb::ListJobsRequest {
                    parent: "regions/local".into(),
                    page_size: 2,
                    page_token: token.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            pages += 1;
            seen.extend(page.jobs.into_iter().map(|j| j.name));
            if pages == 1 {
                first_token = page.next_page_token.clone();
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
            assert!(pages < 10, "pagination ends");
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, names);

        // A tampered token, or one for another listing, is refused.
        let mut bytes = first_token.into_bytes();
        let mid = bytes.len() / 2;
        bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        let e = c
            .list_jobs(pb::ListJobsRequest {
                parent: "regions/local".into(),
                page_size: 2,
                page_token: tampered,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(violation(&e), "page_token");
        let e = c
            .list_jobs(pb::ListJobsRequest {
                parent: "regions/-".into(),
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap_err();
        assert_eq!(violation(&e), "page_token");

        // Delete: a stale etag is refused, then the delete goes through.
        let e = c
            .delete_job(pb::DeleteJobRequest {
                name: names[0].clone(),
                etag: "\"stale-1\"".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Aborted);
        let current = c
            .get_job(pb::GetJobRequest {
                name: names[0].clone(),
            })
            .await
            .unwrap()
            .into_inner();
        c.delete_job(pb::DeleteJobRequest {
            name: names[0].clone(),
            etag: current.etag,
        })
        .await
        .expect("delete at the current etag");
        let e = c
            .get_job(pb::GetJobRequest {
                name: names[0].clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        let e = c
            .delete_job(pb::DeleteJobRequest {
                name: names[0].clone(),
                etag: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        assert_eq!(list_all(c).await.len(), 4);
        h
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume() {
    with_node(|mut h| async move {
        let c = &mut h.client;
        let created = c
            .create_job(create("pausable", job(cron("*/5 * * * *", "UTC"), noop())))
            .await
            .unwrap()
            .into_inner();
        let name = created.name.clone();
        let paused = c
            .pause_job(pb::PauseJobRequest {
                name: name.clone(),
                etag: created.etag.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(paused.paused);
        assert_ne!(paused.etag, created.etag, "the etag changes with the job");
        // Pausing a paused job is a no-op success.
        let again = c
            .pause_job(pb::PauseJobRequest {
                name: name.clone(),
                etag: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(again.paused);
        assert_eq!(again.etag, paused.etag);
        // A paused job cannot be triggered.
        let e = c
            .trigger_job(pb::TriggerJobRequest {
                name: name.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        // A stale etag is refused.
        let e = c
            .resume_job(pb::ResumeJobRequest {
                name: name.clone(),
                etag: created.etag.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Aborted);
        let resumed = c
            .resume_job(pb::ResumeJobRequest {
                name: name.clone(),
                etag: paused.etag,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!resumed.paused);
        let got = c
            .get_job(pb::GetJobRequest { name })
            .await
            .unwrap()
            .into_inner();
        assert!(!got.paused);
        h
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_runs_to_success_and_request_ids_are_idempotent() {
    with_node(|mut h| async move {
        let c = &mut h.client;
        // Due once a year: only the manual trigger runs in this test.
        let created = c
            .create_job(create(
                "manual",
                job(cron("0 0 1 1 *", "UTC"), command(&["true"])),
            ))
            .await
            .unwrap()
            .into_inner();
        // The node may still be taking its owner term: UNAVAILABLE says retry.
        let deadline = Instant::now() + Duration::from_secs(10);
        let run = loop {
            let r = c
                .trigger_job(pb::TriggerJobRequest {
                    name: created.name.clone(),
                    override_overlap: false,
                    request_id: "trigger-1".into(),
                })
                .await;
            match r {
                Err(e) if e.code() == Code::Unavailable && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                r => break r.expect("trigger").into_inner(),
            }
        };
        assert_eq!(run.trigger, "manual");
        assert_eq!(run.job, created.name);
        assert!(run.name.starts_with(&format!("{}/runs/", created.name)));

        let deadline = Instant::now() + Duration::from_secs(30);
        let done = loop {
            let r = c
                .get_run(pb::GetRunRequest {
                    name: run.name.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            if r.state == pb::RunState::Succeeded as i32 {
                break r;
            }
            assert!(
                Instant::now() < deadline,
                "run did not succeed in time: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(done.attempts.len(), 1);
        let a = &done.attempts[0];
        assert_eq!(a.status, pb::AttemptStatus::Succeeded as i32);
        assert_eq!(a.exit_code, Some(0));
        assert!(a.end_time.is_some());
        let sched = done.scheduled_time.unwrap();
        assert_eq!(sched.time_zone, "UTC");
        assert!(sched.local.ends_with("+00:00"), "{}", sched.local);

        // The same request id returns the same run; another places another run.
        let again = c
            .trigger_job(pb::TriggerJobRequest {
                name: created.name.clone(),
                override_overlap: false,
                request_id: "trigger-1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.name, run.name);
        let other = c
            .trigger_job(pb::TriggerJobRequest {
                name: created.name.clone(),
                override_overlap: true,
                request_id: "trigger-2".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_ne!(other.name, run.name);

        let runs = c
            .list_runs(pb::ListRunsRequest {
                parent: created.name.clone(),
                page_size: 1,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(runs.runs.len(), 1);
        assert!(!runs.next_page_token.is_empty(), "two runs, pages of one");
        let rest = c
            .list_runs(pb::ListRunsRequest {
                parent: created.name.clone(),
                page_size: 10,
                page_token: runs.next_page_token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rest.runs.len(), 1);
        assert_ne!(rest.runs[0].name, runs.runs[0].name);
        assert!(rest.next_page_token.is_empty());
        // A run token does not continue a job listing.
        let e = c
            .list_jobs(pb::ListJobsRequest {
                parent: "regions/-".into(),
                page_size: 1,
                page_token: runs.next_page_token,
            })
            .await
            .unwrap_err();
        assert_eq!(violation(&e), "page_token");

        let e = c
            .get_run(pb::GetRunRequest {
                name: format!("{}/runs/{}", created.name, uuid::Uuid::nil()),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        let e = c
            .trigger_job(pb::TriggerJobRequest {
                name: "regions/local/jobs/nope".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        h
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_across_the_new_york_spring_gap() {
    with_node(|mut h| async move {
        let resp = h
            .client
            .preview_schedule(pb::PreviewScheduleRequest {
                source: Some(pb::preview_schedule_request::Source::Schedule(cron(
                    "30 2 * * *",
                    "America/New_York",
                ))),
                start_time: Some(ts("2026-03-07T00:00:00Z")),
                count: 3,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!resp.tzdb_version.is_empty());
        let got: Vec<(String, String, i32)> = resp
            .firings
            .iter()
            .map(|f| {
                let t = f.time.as_ref().unwrap();
                assert_eq!(t.time_zone, "America/New_York");
                (rfc3339(t.utc.as_ref()), t.local.clone(), f.dst_decision)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "2026-03-07T07:30:00Z".into(),
                    "2026-03-07T02:30:00-05:00".into(),
                    pb::DstDecision::None as i32
                ),
                (
                    "2026-03-08T07:00:00Z".into(),
                    "2026-03-08T03:00:00-04:00".into(),
                    pb::DstDecision::GapShifted as i32
                ),
                (
                    "2026-03-09T06:30:00Z".into(),
                    "2026-03-09T02:30:00-04:00".into(),
                    pb::DstDecision::None as i32
                ),
            ]
        );

        // An existing job's schedule previews the same way; bad input names the field.
        h.client
            .create_job(create(
                "nightly",
                job(cron("30 2 * * *", "America/New_York"), noop()),
            ))
            .await
            .unwrap();
        let resp = h
            .client
            .preview_schedule(pb::PreviewScheduleRequest {
                source: Some(pb::preview_schedule_request::Source::Job(
                    "regions/local/jobs/nightly".into(),
                )),
                start_time: Some(ts("2026-03-07T00:00:00Z")),
                count: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.firings.len(), 10, "count defaults to 10");
        let e = h
            .client
            .preview_schedule(pb::PreviewScheduleRequest {
                source: Some(pb::preview_schedule_request::Source::Schedule(cron(
                    "30 2 * * *",
                    "Nowhere/City",
                ))),
                start_time: None,
                count: 3,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(violation(&e), "schedule.time_zone");
        h
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_is_idempotent_with_a_request_id() {
    with_node(|mut h| async move {
        let c = &mut h.client;
        let mut req = create("once-only", job(cron("0 * * * *", "UTC"), noop()));
        req.request_id = "4a1c8b9e-0d6f-4f0e-9d3b-5b0b7c1d2e3f".into();
        let first = c.create_job(req.clone()).await.unwrap().into_inner();
        let second = c.create_job(req.clone()).await.unwrap().into_inner();
        assert_eq!(first.uid, second.uid, "the retry returns the first job");
        req.request_id.clear();
        let e = c.create_job(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists);
        // validate_only checks and stores nothing.
        let mut dry = create("dry-run", job(cron("0 * * * *", "UTC"), noop()));
        dry.validate_only = true;
        let shown = c.create_job(dry).await.unwrap().into_inner();
        assert_eq!(shown.name, "regions/local/jobs/dry-run");
        let e = c
            .get_job(pb::GetJobRequest {
                name: "regions/local/jobs/dry-run".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        assert_eq!(list_all(c).await.len(), 1);
        h
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_node_status() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    with_node(|mut h| async move {
        let mut health = HealthClient::new(h.channel.clone());
        for service in ["", "meridian.v1.Scheduler"] {
            let r = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
        }

        let mut reflection = ServerReflectionClient::new(h.channel.clone());
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = reflection
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let resp = stream.message().await.unwrap().expect("a response");
        let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
            panic!("unexpected reflection response {resp:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(
            names.iter().any(|n| n == "meridian.v1.Scheduler"),
            "{names:?}"
        );

        let status = h
            .client
            .get_node_status(pb::GetNodeStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.node, "api-test");
        assert_eq!(status.regions, vec!["local".to_string()]);
        assert!(!status.version.is_empty());
        h
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_field_and_stores_nothing() {
    let interval = |seconds: i64| pb::Schedule {
        kind: Some(pb::schedule::Kind::Interval(prost_types::Duration {
            seconds,
            nanos: 0,
        })),
        ..Default::default()
    };
    let once_utc = |at: &str| pb::Schedule {
        kind: Some(pb::schedule::Kind::Once(pb::Once {
            at: Some(pb::once::At::UtcTime(ts(at))),
        })),
        ..Default::default()
    };
    let with_http = |h: pb::HttpAction| pb::Action {
        kind: Some(pb::action::Kind::Http(h)),
    };
    let ok_schedule = || cron("0 * * * *", "UTC");
    let mut big_body = http("https://example.com/hook");
    big_body.body = "x".repeat(BODY_BYTES_MAX + 1);
    let mut many_headers = http("https://example.com/hook");
    many_headers.headers = (0..=HEADERS_MAX)
        .map(|i| pb::Header {
            name: format!("X-H{i}"),
            value: "v".into(),
        })
        .collect();
    let mut bounded = cron("0 * * * *", "UTC");
    bounded.start_time = Some(ts("2031-01-02T00:00:00Z"));
    bounded.end_time = Some(ts("2031-01-01T00:00:00Z"));
    let bad_policy = pb::Job {
        policy: Some(pb::Policy {
            retry: Some(pb::RetryPolicy {
                attempts_max: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..job(ok_schedule(), noop())
    };

    // (case, request, expected code, expected field or ErrorInfo reason)
    let cases: Vec<(&str, pb::CreateJobRequest, Code, &str)> = vec![
        (
            "malformed cron",
            create("a", job(cron("61 * * * *", "UTC"), noop())),
            Code::InvalidArgument,
            "job.schedule.cron",
        ),
        (
            "unknown zone",
            create("a", job(cron("0 * * * *", "Mars/Olympus_Mons"), noop())),
            Code::InvalidArgument,
            "job.schedule.time_zone",
        ),
        (
            "zero interval",
            create("a", job(interval(0), noop())),
            Code::InvalidArgument,
            "job.schedule.interval",
        ),
        (
            "negative interval",
            create("a", job(interval(-30), noop())),
            Code::InvalidArgument,
            "job.schedule.interval",
        ),
        (
            "once in the past",
            create("a", job(once_utc("2001-01-01T00:00:00Z"), noop())),
            Code::InvalidArgument,
            "job.schedule.once",
        ),
        (
            "end before start",
            create("a", job(bounded, noop())),
            Code::InvalidArgument,
            "job.schedule.end_time",
        ),
        (
            "invalid url",
            create("a", job(ok_schedule(), with_http(http("not a url")))),
            Code::InvalidArgument,
            "job.action.http.url",
        ),
        (
            "empty argv",
            create("a", job(ok_schedule(), command(&[]))),
            Code::InvalidArgument,
            "job.action.command.argv",
        ),
        (
            "oversized body",
            create("a", job(ok_schedule(), with_http(big_body))),
            Code::InvalidArgument,
            "job.action.http.body",
        ),
        (
            "too many headers",
            create("a", job(ok_schedule(), with_http(many_headers))),
            Code::InvalidArgument,
            "job.action.http.headers",
        ),
        (
            "missing action",
            create(
                "a",
                pb::Job {
                    schedule: Some(ok_schedule()),
                    ..Default::default()
                },
            ),
            Code::InvalidArgument,
            "job.action",
        ),
        (
            "missing schedule",
            create(
                "a",
                pb::Job {
                    action: Some(noop()),
                    ..Default::default()
                },
            ),
            Code::InvalidArgument,
            "job.schedule",
        ),
        (
            "missing job",
            pb::CreateJobRequest {
                parent: "regions/local".into(),
                job_id: "a".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "job",
        ),
        (
            "bad policy",
            create("a", bad_policy),
            Code::InvalidArgument,
            "job.policy.retry.attempts_max",
        ),
        (
            "bad job_id",
            create("Bad_Id", job(ok_schedule(), noop())),
            Code::InvalidArgument,
            "job_id",
        ),
        (
            "malformed parent",
            pb::CreateJobRequest {
                parent: "local".into(),
                ..create("a", job(ok_schedule(), noop()))
            },
            Code::InvalidArgument,
            "parent",
        ),
        (
            "parent region not served",
            pb::CreateJobRequest {
                parent: "regions/mars".into(),
                ..create("a", job(ok_schedule(), noop()))
            },
            Code::FailedPrecondition,
            "REGION_NOT_SERVED",
        ),
    ];

    with_node(|mut h| async move {
        for (case, req, code, expected) in cases {
            let e = h
                .client
                .create_job(req)
                .await
                .expect_err(&format!("{case}: refused"));
            assert_eq!(e.code(), code, "{case}: {e:?}");
            if code == Code::InvalidArgument {
                assert_eq!(violation(&e), expected, "{case}: {}", e.message());
                assert!(
                    e.message().starts_with(&format!("{expected}: ")),
                    "{case}: the message names the field: {}",
                    e.message()
                );
            } else {
                let info = e.get_error_details();
                let info = info.error_info().expect("ErrorInfo");
                assert_eq!(info.reason, expected, "{case}");
                assert_eq!(info.domain, "meridian.dev");
            }
        }
        assert!(list_all(&mut h.client).await.is_empty(), "nothing stored");
        h
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_jobs_make_short_pages_not_refused_responses() {
    with_node(|mut h| async move {
        // 20 jobs of ~200 KiB: about 4 MiB in all, more than one response may carry.
        for i in 0..20 {
            let mut action = http("https://example.com/hook");
            action.body = "x".repeat(200 * 1024);
            let a = pb::Action {
                kind: Some(pb::action::Kind::Http(action)),
            };
            h.client
                .create_job(create(
                    &format!("big-{i}"),
                    job(cron("0 * * * *", "UTC"), a),
                ))
                .await
                .expect("create");
        }
        let mut token = String::new();
        let mut seen = 0;
        let mut pages = 0;
        loop {
            let page = h
                .client
                .list_jobs(pb::ListJobsRequest {
                    parent: "regions/local".into(),
                    page_size: 1000,
                    page_token: token,
                })
                .await
                .expect("a page within the response limit")
                .into_inner();
            seen += page.jobs.len();
            pages += 1;
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
            assert!(pages < 20, "pagination ends");
        }
        assert_eq!(seen, 20);
        assert!(pages >= 2, "the listing was split");
        h
    })
    .await;
}
