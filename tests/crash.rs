//! Crash safety, with real processes: a job firing every second appends its firing id
//! to a file; the server is killed with SIGKILL mid-schedule and restarted on the same
//! data dir. From the file and the run records: no firing id ran twice, and every
//! firing due in the whole span (including the downtime) is accounted for.

#![allow(clippy::disallowed_methods)] // tests measure against the real clock

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{Server, eventually};
use meridian::adapters::embedded::{Options, Store};
use meridian::api::pb;
use meridian::core::firing::{Cause, firing_id};
use meridian::core::run::State;
use meridian::ports::RunLog;

fn read_fired(path: &std::path::Path) -> Vec<(String, DateTime<Utc>)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (id, at) = l.split_once(' ')?;
            Some((id.to_string(), at.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_and_restart_runs_nothing_twice_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("fired.txt");

    let server = Server::start(&data, &[]);
    let mut client = server.client().await;
    let now = Utc::now();
    let anchor = DateTime::<Utc>::from_timestamp(now.timestamp() + 2, 0).unwrap();
    let job = pb::Job {
        schedule: Some(pb::Schedule {
            kind: Some(pb::schedule::Kind::Interval(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            })),
            interval_anchor: Some(prost_types::Timestamp {
                seconds: anchor.timestamp(),
                nanos: 0,
            }),
            time_zone: "UTC".into(),
            ..Default::default()
        }),
        // `allow`: the firings due during the downtime all fall due at the restart; the
        // default `skip` would record all but one as skipped (accounted for, but this
        // test proves they run late).
        policy: Some(pb::Policy {
            overlap: pb::Overlap::Allow as i32,
            ..Default::default()
        }),
        action: Some(pb::Action {
            kind: Some(pb::action::Kind::Command(pb::CommandAction {
                argv: vec![
                    "sh".into(),
                    "-c".into(),
                    r#"echo "$MERIDIAN_FIRING_ID $MERIDIAN_SCHEDULED_AT" >> "$OUT""#.into(),
                ],
                env: [("OUT".to_string(), out.display().to_string())].into(),
                working_dir: String::new(),
            })),
        }),
        ..Default::default()
    };
    let created = client
        .create_job(pb::CreateJobRequest {
            parent: "regions/local".into(),
            job_id: "tick".into(),
            job: Some(job),
            ..Default::default()
        })
        .await
        .expect("create job")
        .into_inner();
    let uid: uuid::Uuid = created.uid.parse().expect("uid is a uuid");

    eventually(Duration::from_secs(20), || async {
        (read_fired(&out).len() >= 3).then_some(())
    })
    .await
    .expect("the job fired 3 times before the kill");

    server.kill9();
    let killed_at = Utc::now();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let server = Server::start(&data, &[]);
    let restarted_at = Utc::now();
    eventually(Duration::from_secs(30), || async {
        read_fired(&out)
            .iter()
            .any(|(_, at)| *at > restarted_at + chrono::Duration::seconds(2))
            .then_some(())
    })
    .await
    .expect("firing resumed after the restart");
    assert_eq!(
        server.terminate(Duration::from_secs(30)),
        Some(0),
        "SIGTERM exits 0"
    );

    // --- the evidence ---
    let fired = read_fired(&out);
    let mut seen = HashSet::new();
    for (id, _) in &fired {
        assert!(seen.insert(id.clone()), "firing {id} ran twice");
    }
    let store = Store::open(&data, Options::default()).unwrap();
    let runs = store.list_runs(uid, None, 10_000).await.unwrap();
    let by_id: HashMap<String, _> = runs
        .iter()
        .map(|r| (r.firing.to_string(), r.clone()))
        .collect();
    let last = fired.iter().map(|(_, at)| *at).max().unwrap();
    let mut t = anchor;
    let mut downtime = 0;
    while t <= last {
        let id = firing_id(uid, t, Cause::Schedule).to_string();
        let run = by_id
            .get(&id)
            .unwrap_or_else(|| panic!("firing at {t} has no run record: silently lost"));
        let in_file = fired.iter().filter(|(f, _)| *f == id).count();
        match run.state {
            State::Succeeded => assert_eq!(in_file, 1, "succeeded run {id} at {t} ran once"),
            // Killed mid-attempt: the outcome is unknown, and it never ran twice.
            State::Failed | State::DeadLettered => assert!(in_file <= 1),
            State::Missed => assert_eq!(in_file, 0),
            other => panic!("firing at {t} ended {other:?}: {}", run.reason),
        }
        if t > killed_at && t < restarted_at {
            downtime += 1;
            assert_eq!(
                run.state,
                State::Succeeded,
                "a firing due during the downtime runs late, not never"
            );
        }
        t += chrono::Duration::seconds(1);
    }
    assert!(downtime >= 2, "the downtime spanned firings ({downtime})");
    // Every line in the file belongs to a recorded run.
    for (id, _) in &fired {
        assert!(by_id.contains_key(id), "{id} ran without a run record");
    }
}
