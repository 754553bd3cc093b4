//! The run log contract: one suite, `run_log_contract`, run against every `RunLog`
//! adapter (the embedded redb store, the Redis run log on a real redis-server, and the
//! simulator's in-memory log), so they cannot drift. It checks only what the port
//! promises (idempotent claims, fencing, one start per attempt, first end stands, only
//! the latest attempt sets the state, terminal runs never change, retention, listing
//! order and pages, the unfinished index, max-only cursors); it must not reach into an
//! adapter.

#![allow(clippy::disallowed_methods)] // tests may read the real clock

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::TimeZone;
use meridian::adapters::embedded::{Options, Store};
use meridian::adapters::redis::{Config, RunLog as RedisRunLog, RunLogOptions};
use meridian::adapters::sim::World;
use meridian::core::Timestamp;
use meridian::core::action::Action;
use meridian::core::ids::{Epoch, FiringId, JobName, NodeId};
use meridian::core::job::Job;
use meridian::core::policy::Policies;
use meridian::core::run::{AttemptStatus, Run, State, Trigger};
use meridian::core::schedule::{Kind, ScheduleSpec};
use meridian::ports::{AttemptEnd, AttemptStart, Catalog, Claim, Error, Refusal, RunLog};
use uuid::Uuid;

use common::redis::Redis;

/// Every test finishes within this.
const TEST_WITHIN: Duration = Duration::from_secs(30);
/// Runs kept per job by the logs under test: more than the suite gives any job but the
/// retention one.
const KEEP: u64 = 10;
/// The owner epoch the suite claims with first; a fixture's log must accept it.
const EPOCH: Epoch = Epoch(5);

fn t(s: i64) -> Timestamp {
    chrono::Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(s)
}

fn job(id: &str) -> Job {
    Job {
        name: JobName::new("eu-west", id),
        uid: Uuid::new_v4(),
        description: String::new(),
        labels: Vec::new(),
        schedule: ScheduleSpec::new(Kind::Interval {
            every: Duration::from_secs(60),
            anchor: t(0),
        }),
        action: Action::Noop,
        policy: Policies::default(),
        paused: false,
        paused_at: None,
        resumed_at: None,
        create_time: t(0),
        update_time: t(0),
        revision: 1,
        tzdb_version: String::new(),
    }
}

/// What a log under test needs from the suite, and what it is known to do differently.
struct Fixture {
    /// Jobs the log knows (the embedded store checks its catalog at start): [0] start
    /// and end rules, [1] retention, [2] listing, [3] cursors.
    jobs: [Job; 4],
}

fn queued(j: &Job, scheduled: Timestamp, epoch: Epoch) -> Run {
    Run::queued(
        FiringId(Uuid::new_v4()),
        j.name.clone(),
        j.uid,
        scheduled,
        scheduled,
        Trigger::Schedule,
        epoch,
        t(0),
    )
}

fn missed(j: &Job, scheduled: Timestamp, epoch: Epoch) -> Run {
    queued(j, scheduled, epoch).not_run(State::Missed, "outside the catch-up window")
}

fn claim(run: &Run) -> Claim {
    Claim {
        run: run.clone(),
        cursor: None,
    }
}

fn start(run: &Run, number: u32, epoch: Epoch, node: &str) -> AttemptStart {
    AttemptStart {
        firing: run.firing,
        number,
        epoch,
        node: NodeId::from(node),
        started_at: t(1000 + number as i64),
        lateness_us: 250,
    }
}

fn end(number: u32, status: AttemptStatus, next: State, summary: &str) -> AttemptEnd {
    AttemptEnd {
        number,
        status,
        finished_at: t(2000 + number as i64),
        summary: summary.into(),
        exit_code: Some(if status == AttemptStatus::Succeeded {
            0
        } else {
            1
        }),
        http_status: None,
        output_tail: format!("tail of {number}"),
        next_state: next,
        next_attempt_at: (next == State::RetryWait).then(|| t(3000)),
    }
}

async fn get(log: &dyn RunLog, run: &Run) -> Run {
    log.get_run(run.firing)
        .await
        .expect("get_run")
        .unwrap_or_else(|| panic!("run {} exists", run.firing))
}

fn firings(runs: &[Run]) -> Vec<FiringId> {
    runs.iter().map(|r| r.firing).collect()
}

/// Every rule of the `RunLog` port, on a fresh log holding the fixture's jobs.
async fn run_log_contract(log: &dyn RunLog, fx: &Fixture) {
    let [j, jr, jl, jc] = &fx.jobs;
    let e = EPOCH;
    // Every firing claimed, to check the unfinished index at the end.
    let mut claimed: Vec<Run> = Vec::new();

    // --- Claims are idempotent: an existing firing is left as it is (false). ---------
    let a = queued(j, t(60), e);
    let b = queued(j, t(120), e);
    assert_eq!(
        log.claim(e, vec![claim(&a), claim(&b), claim(&a)])
            .await
            .expect("claim"),
        vec![true, true, false],
        "a firing claimed twice in one batch is new once"
    );
    let mut a_again = a.clone();
    a_again.reason = "claimed again".into();
    let c = queued(j, t(180), e);
    assert_eq!(
        log.claim(e, vec![claim(&a_again), claim(&c)])
            .await
            .expect("claim"),
        vec![false, true]
    );
    assert_eq!(
        get(log, &a).await,
        a,
        "a repeated claim leaves the run as it was"
    );
    claimed.extend([a.clone(), b.clone(), c.clone()]);

    // --- Fencing: a claim older than the newest epoch is refused whole. ---------------
    let stale = queued(j, t(240), Epoch(e.0 - 1));
    let mut stale_claim = claim(&stale);
    stale_claim.cursor = Some(t(10_000));
    match log.claim(Epoch(e.0 - 1), vec![stale_claim]).await {
        Err(Error::Fenced { stale, current }) => {
            assert_eq!(stale, Epoch(e.0 - 1));
            assert!(current >= e, "current epoch {current} is at least {e}");
        }
        other => panic!("a stale claim must be fenced, got {other:?}"),
    }
    assert!(
        log.get_run(stale.firing).await.unwrap().is_none(),
        "a fenced claim writes nothing"
    );
    assert_ne!(
        log.cursor(j.uid).await.unwrap(),
        Some(t(10_000)),
        "a fenced claim advances no cursor"
    );

    // A claim with a newer epoch is "seen": later claims older than it are fenced.
    let e2 = Epoch(e.0 + 1);
    let d = queued(j, t(300), e2);
    assert_eq!(
        log.claim(e2, vec![claim(&d)]).await.expect("claim"),
        vec![true]
    );
    claimed.push(d.clone());
    let late = queued(j, t(360), e);
    let res = log.claim(e, vec![claim(&late)]).await;
    assert!(
        matches!(res, Err(Error::Fenced { current, .. }) if current == e2),
        "a claim older than a claim already seen is fenced, got {res:?}"
    );

    // --- Cursors only move forward. ----------------------------------------------------
    let cur = |at: i64| {
        let r = missed(jc, t(400 + at), e2);
        Claim {
            run: r,
            cursor: Some(t(at)),
        }
    };
    for (at, expect) in [(5_000, 5_000), (4_000, 5_000), (6_000, 6_000)] {
        let c = cur(at);
        claimed.push(c.run.clone());
        log.claim(e2, vec![c]).await.expect("claim with cursor");
        assert_eq!(
            log.cursor(jc.uid).await.unwrap(),
            Some(t(expect)),
            "cursor after {at}"
        );
    }
    assert!(
        log.cursors().await.unwrap().contains(&(jc.uid, t(6_000))),
        "cursors() lists the job's cursor"
    );
    assert_eq!(
        log.cursor(Uuid::new_v4()).await.unwrap(),
        None,
        "no cursor for an unknown job"
    );

    // --- Starts: exactly one per (firing, attempt), also within a batch. --------------
    let missed_run = missed(j, t(420), e2);
    log.claim(e2, vec![claim(&missed_run)])
        .await
        .expect("claim");
    claimed.push(missed_run.clone());
    assert_eq!(
        log.start_attempts(vec![start(&b, 1, e2, "n1")])
            .await
            .expect("start b"),
        vec![Ok(())]
    );
    let ghost = queued(j, t(999), e2); // never claimed
    let answers = log
        .start_attempts(vec![
            start(&a, 1, e2, "n1"),
            start(&a, 1, e2, "n2"), // duplicate in the same batch
            start(&b, 1, e2, "n2"), // started before
            start(&ghost, 1, e2, "n1"),
            start(&missed_run, 1, e2, "n1"),
            start(&d, 1, e, "n1"), // older than the run's epoch
        ])
        .await
        .expect("start batch");
    assert_eq!(
        answers,
        vec![
            Ok(()),
            Err(Refusal::AlreadyStarted),
            Err(Refusal::AlreadyStarted),
            Err(Refusal::JobDeleted),
            Err(Refusal::Terminal(State::Missed)),
            Err(Refusal::Fenced),
        ]
    );
    assert_eq!(
        log.start_attempts(vec![]).await.expect("empty batch"),
        vec![]
    );
    let got = get(log, &a).await;
    assert_eq!(got.state, State::Running);
    assert_eq!(got.attempts.len(), 1);
    assert_eq!(
        got.attempts[0].node,
        NodeId::from("n1"),
        "the first start in the batch won"
    );
    assert_eq!(got.attempts[0].number, 1);
    assert_eq!(got.attempts[0].started_at, t(1001));
    assert_eq!(got.attempts[0].lateness_us, 250);
    assert_eq!(got.attempts[0].status, None);
    assert_eq!(got.update_time, t(1001));
    // A claim of a started firing leaves it started.
    assert_eq!(log.claim(e2, vec![claim(&a)]).await.unwrap(), vec![false]);
    assert_eq!(get(log, &a).await.state, State::Running);

    // --- Ends: the first end recorded stands. ------------------------------------------
    let got = log
        .finish_attempt(
            a.firing,
            end(1, AttemptStatus::Failed, State::RetryWait, "HTTP 503"),
        )
        .await
        .expect("finish a#1");
    assert_eq!(got.state, State::RetryWait);
    assert_eq!(got.next_attempt_at, Some(t(3000)));
    assert_eq!(got.attempts[0].status, Some(AttemptStatus::Failed));
    assert_eq!(got.attempts[0].finished_at, Some(t(2001)));
    assert_eq!(got.attempts[0].summary, "HTTP 503");
    assert_eq!(got.attempts[0].output_tail, "tail of 1");
    assert_eq!(
        got,
        get(log, &a).await,
        "finish answers with the run as recorded"
    );
    let again = log
        .finish_attempt(
            a.firing,
            end(1, AttemptStatus::Succeeded, State::Succeeded, "ok"),
        )
        .await
        .expect("finish a#1 again");
    assert_eq!(again.state, State::RetryWait, "the first end stands");
    assert_eq!(again.attempts[0].status, Some(AttemptStatus::Failed));
    // The retry is a new attempt; it may start once.
    assert_eq!(
        log.start_attempts(vec![start(&a, 2, e2, "n2"), start(&a, 1, e2, "n2")])
            .await
            .unwrap(),
        vec![Ok(()), Err(Refusal::AlreadyStarted)]
    );
    let got = get(log, &a).await;
    assert_eq!((got.state, got.next_attempt_at), (State::Running, None));
    let got = log
        .finish_attempt(
            a.firing,
            end(2, AttemptStatus::Succeeded, State::Succeeded, "ok"),
        )
        .await
        .unwrap();
    assert_eq!(got.state, State::Succeeded);
    assert_eq!(got.attempts.len(), 2);
    assert_eq!(got.reason, "", "a success sets no reason");

    // --- Only the latest attempt sets the state: a late end of an earlier one fills in
    // that attempt and nothing else. -------------------------------------------------------
    assert_eq!(
        log.start_attempts(vec![start(&c, 1, e2, "n1")])
            .await
            .unwrap(),
        vec![Ok(())]
    );
    // Attempt 1's worker was lost (no end yet); attempt 2 starts.
    assert_eq!(
        log.start_attempts(vec![start(&c, 2, e2, "n2")])
            .await
            .unwrap(),
        vec![Ok(())]
    );
    let got = log
        .finish_attempt(
            c.firing,
            end(1, AttemptStatus::Succeeded, State::Succeeded, "late"),
        )
        .await
        .unwrap();
    assert_eq!(
        got.state,
        State::Running,
        "a late end of attempt 1 leaves attempt 2's state"
    );
    assert_eq!(
        got.attempts[0].status,
        Some(AttemptStatus::Succeeded),
        "it fills attempt 1"
    );
    assert_eq!(got.attempts[1].status, None);
    let got = log
        .finish_attempt(
            c.firing,
            end(2, AttemptStatus::Failed, State::DeadLettered, "exit 1"),
        )
        .await
        .unwrap();
    assert_eq!(got.state, State::DeadLettered);
    assert_eq!(
        got.reason, "exit 1",
        "a failed terminal end gives its summary as reason"
    );
    assert_eq!(
        log.start_attempts(vec![start(&c, 3, e2, "n1")])
            .await
            .unwrap(),
        vec![Err(Refusal::Terminal(State::DeadLettered))]
    );

    // --- Terminal runs never change. ---------------------------------------------------
    let got = log
        .end_run(c.firing, State::Skipped, "too late".into())
        .await
        .expect("end_run on a terminal run");
    assert_eq!(
        (got.state, got.reason.as_str()),
        (State::DeadLettered, "exit 1")
    );
    // b: cancelled while attempt 1 runs; attempt 1's end then fills in, state stays.
    let got = log
        .end_run(b.firing, State::Cancelled, "cancel_previous".into())
        .await
        .unwrap();
    assert_eq!(
        (got.state, got.reason.as_str()),
        (State::Cancelled, "cancel_previous")
    );
    let got = log
        .finish_attempt(
            b.firing,
            end(1, AttemptStatus::Succeeded, State::Succeeded, "ok"),
        )
        .await
        .unwrap();
    assert_eq!(
        got.state,
        State::Cancelled,
        "a terminal run keeps its state"
    );
    assert_eq!(got.attempts[0].status, Some(AttemptStatus::Succeeded));
    // A queued run ends without an attempt.
    let got = log
        .end_run(d.firing, State::Skipped, "overlap".into())
        .await
        .unwrap();
    assert_eq!(
        (got.state, got.reason.as_str()),
        (State::Skipped, "overlap")
    );
    assert!(got.attempts.is_empty());
    assert!(matches!(
        log.end_run(ghost.firing, State::Skipped, "x".into()).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        log.finish_attempt(
            ghost.firing,
            end(1, AttemptStatus::Failed, State::Failed, "x")
        )
        .await,
        Err(Error::NotFound(_))
    ));
    let f = queued(j, t(480), e2);
    log.claim(e2, vec![claim(&f)]).await.unwrap();
    claimed.push(f.clone());
    assert!(
        matches!(
            log.finish_attempt(f.firing, end(1, AttemptStatus::Failed, State::Failed, "x"))
                .await,
            Err(Error::Conflict(_))
        ),
        "an end for an attempt that never started is a conflict"
    );

    // --- record_end + flush: durable and applied in order. -------------------------------
    assert_eq!(
        log.start_attempts(vec![start(&f, 1, e2, "n1")])
            .await
            .unwrap(),
        vec![Ok(())]
    );
    log.record_end(
        f.firing,
        end(1, AttemptStatus::Succeeded, State::Succeeded, "ok"),
    )
    .await
    .expect("record_end");
    log.flush().await.expect("flush");
    let got = get(log, &f).await;
    assert_eq!(got.state, State::Succeeded);
    assert_eq!(got.attempts[0].status, Some(AttemptStatus::Succeeded));

    // A start with a newer epoch takes the run over; an older one is then fenced.
    let g = queued(j, t(540), e2);
    log.claim(e2, vec![claim(&g)]).await.unwrap();
    claimed.push(g.clone());
    let e3 = Epoch(e2.0 + 1);
    assert_eq!(
        log.start_attempts(vec![start(&g, 1, e3, "n1")])
            .await
            .unwrap(),
        vec![Ok(())]
    );
    assert_eq!(get(log, &g).await.epoch, e3);
    assert_eq!(
        log.start_attempts(vec![start(&g, 2, e2, "n1")])
            .await
            .unwrap(),
        vec![Err(Refusal::Fenced)]
    );

    // --- The unfinished index holds exactly the runs not yet terminal. ------------------
    let mut open = BTreeSet::new();
    for r in &claimed {
        if let Some(now) = log.get_run(r.firing).await.unwrap()
            && !now.state.is_terminal()
        {
            open.insert(r.firing);
        }
    }
    let listed = log.unfinished().await.expect("unfinished");
    assert!(listed.iter().all(|r| !r.state.is_terminal()));
    assert_eq!(
        listed.iter().map(|r| r.firing).collect::<BTreeSet<_>>(),
        open
    );
    assert_eq!(listed.len(), open.len(), "each unfinished run once");
    assert!(open.contains(&g.firing) && !open.contains(&a.firing));

    // --- Retention: the newest KEEP runs per job; runs not yet terminal stay. -----------
    // One queued run, then KEEP + 1 missed ones after it: one claim at a time, and
    // then a batch.
    let q1 = queued(jr, t(1), e2);
    log.claim(e2, vec![claim(&q1)]).await.unwrap();
    let ms: Vec<Run> = (0..=KEEP as i64)
        .map(|s| missed(jr, t(2 + s), e2))
        .collect();
    let (one_by_one, batch) = ms.split_at(ms.len() / 2);
    for m in one_by_one {
        log.claim(e2, vec![claim(m)]).await.unwrap();
    }
    log.claim(e2, batch.iter().map(claim).collect())
        .await
        .unwrap();
    let kept = log.list_runs(jr.uid, None, 100).await.unwrap();
    let mut expect: Vec<FiringId> = ms[2..].iter().rev().map(|r| r.firing).collect();
    expect.push(q1.firing);
    assert_eq!(
        firings(&kept),
        expect,
        "the oldest terminal runs go first; the queued one stays"
    );
    for gone in &ms[..2] {
        assert!(
            log.get_run(gone.firing).await.unwrap().is_none(),
            "deleted runs are gone"
        );
    }
    log.end_run(q1.firing, State::Skipped, "overlap".into())
        .await
        .unwrap();
    let last = missed(jr, t(1_000), e2);
    log.claim(e2, vec![claim(&last)]).await.unwrap();
    let kept = log.list_runs(jr.uid, None, 100).await.unwrap();
    let mut expect: Vec<FiringId> = vec![last.firing];
    expect.extend(ms[2..].iter().rev().map(|r| r.firing));
    assert_eq!(
        firings(&kept),
        expect,
        "once terminal, the oldest run goes too"
    );
    assert!(log.get_run(q1.firing).await.unwrap().is_none());
    assert_eq!(kept.len() as u64, KEEP);
    assert!(
        log.unfinished()
            .await
            .unwrap()
            .iter()
            .all(|r| r.job_uid != jr.uid),
        "deleted runs leave the unfinished index"
    );

    // --- Listing: newest scheduled first, ties by firing id, pages strictly before. -----
    let mut runs: Vec<Run> = [10, 20, 20, 30]
        .iter()
        .map(|&s| queued(jl, t(s), e2))
        .collect();
    runs[2].trigger = Trigger::Manual {
        override_overlap: false,
    };
    log.claim(e2, runs.iter().map(claim).collect())
        .await
        .unwrap();
    let mut expect = runs.clone();
    expect.sort_by_key(|r| std::cmp::Reverse((r.scheduled_at, r.firing)));
    let all = log.list_runs(jl.uid, None, 100).await.unwrap();
    assert_eq!(
        all, expect,
        "newest first, then by firing id, runs as recorded"
    );
    for page in 1..=3 {
        let mut got: Vec<Run> = Vec::new();
        loop {
            let before = got.last().map(|r| (r.scheduled_at, r.firing));
            let p = log.list_runs(jl.uid, before, page).await.unwrap();
            assert!(p.len() <= page);
            let done = p.len() < page;
            got.extend(p);
            if done {
                break;
            }
        }
        assert_eq!(firings(&got), firings(&expect), "pages of {page}");
    }
    assert!(log.list_runs(jl.uid, None, 0).await.unwrap().is_empty());
    assert!(
        log.list_runs(Uuid::new_v4(), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn embedded_fixture(dir: &std::path::Path) -> (Store, Fixture) {
    let store = Store::open(
        dir,
        Options {
            runs_per_job_max: KEEP,
            ..Options::default()
        },
    )
    .expect("open store");
    // The embedded store's fence is its persisted counter.
    while store.bump_epoch().await.expect("bump") < EPOCH {}
    let jobs = [
        job("rules"),
        job("retention"),
        job("listing"),
        job("cursors"),
    ];
    for j in &jobs {
        store.create_job(j.clone(), None).await.expect("create job");
    }
    let fx = Fixture { jobs };
    (store, fx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_keeps_the_run_log_contract() {
    let dir = tempfile::tempdir().unwrap();
    tokio::time::timeout(TEST_WITHIN, async {
        let (store, fx) = embedded_fixture(dir.path()).await;
        run_log_contract(&store, &fx).await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_run_log_keeps_the_run_log_contract() {
    let redis = Redis::start();
    tokio::time::timeout(TEST_WITHIN, async {
        let log = RedisRunLog::open(
            &Config::new(redis.url(), "contract"),
            RunLogOptions {
                runs_per_job_max: KEEP,
                ..RunLogOptions::default()
            },
        )
        .expect("open redis run log");
        let fx = Fixture {
            jobs: [
                job("rules"),
                job("retention"),
                job("listing"),
                job("cursors"),
            ],
        };
        run_log_contract(&log, &fx).await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(start_paused = true)]
async fn sim_run_log_keeps_the_run_log_contract() {
    tokio::time::timeout(TEST_WITHIN, async {
        let world = World::new(t(0));
        let log = world.node(&NodeId::from("n1")).run_log_with_retention(KEEP);
        let fx = Fixture {
            jobs: [
                job("rules"),
                job("retention"),
                job("listing"),
                job("cursors"),
            ],
        };
        run_log_contract(log.as_ref(), &fx).await;
    })
    .await
    .expect("within the time limit");
}
