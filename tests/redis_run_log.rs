//! The Redis run log on a real redis-server, past what the shared contract
//! (`contract_run_log.rs`) covers: a Redis crash (SIGKILL) and restart loses no claim,
//! start or end and keeps the fence; requests meanwhile fail as retryable; two nodes
//! racing to start the same attempts get exactly one start each; fences are per shard;
//! deleting a job's runs.
#![allow(clippy::disallowed_methods)] // tests may read the real clock

mod common;

use common::retry;

use std::collections::HashMap;
use std::time::Duration;

use chrono::TimeZone;
use meridian::adapters::redis::{Config, RunLog as RedisRunLog, RunLogOptions};
use meridian::core::Timestamp;
use meridian::core::ids::{Epoch, FiringId, JobName, NodeId};
use meridian::core::run::{AttemptStatus, Run, State, Trigger};
use meridian::ports::{AttemptEnd, AttemptStart, Claim, Error, Refusal, RunLog};
use uuid::Uuid;

use common::redis::Redis;

/// Every test finishes within this.
const TEST_WITHIN: Duration = Duration::from_secs(30);
fn t(s: i64) -> Timestamp {
    chrono::Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(s)
}

fn config(redis: &Redis) -> Config {
    let mut c = Config::new(redis.url(), "runs");
    // Fail fast while Redis is down, so the test sees `Unavailable` quickly.
    c.request_timeout = Duration::from_secs(2);
    c
}

fn open(redis: &Redis) -> RedisRunLog {
    RedisRunLog::open(&config(redis), RunLogOptions::default()).expect("open run log")
}

fn queued(job_uid: Uuid, scheduled: Timestamp, epoch: Epoch) -> Run {
    Run::queued(
        FiringId(Uuid::new_v4()),
        JobName::new("eu-west", "job"),
        job_uid,
        scheduled,
        scheduled,
        Trigger::Schedule,
        epoch,
        t(0),
    )
}

fn start(run: &Run, number: u32, epoch: Epoch, node: &str) -> AttemptStart {
    AttemptStart {
        firing: run.firing,
        number,
        epoch,
        node: NodeId::from(node),
        started_at: t(100),
        lateness_us: 10,
    }
}

fn success(number: u32) -> AttemptEnd {
    AttemptEnd {
        number,
        status: AttemptStatus::Succeeded,
        finished_at: t(200),
        summary: "ok".into(),
        exit_code: Some(0),
        http_status: None,
        output_tail: String::new(),
        next_state: State::Succeeded,
        next_attempt_at: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_log_survives_a_redis_crash() {
    let mut redis = Redis::start();
    let log = open(&redis);
    tokio::time::timeout(TEST_WITHIN, async {
        let job = Uuid::new_v4();
        let e = Epoch(7);
        let (a, b, c, d) = (
            queued(job, t(10), e),
            queued(job, t(20), e),
            queued(job, t(30), e),
            queued(job, t(5), e),
        );
        let claims = [&a, &b, &c, &d]
            .iter()
            .map(|r| Claim {
                run: (*r).clone(),
                cursor: Some(r.scheduled_at),
            })
            .collect();
        assert_eq!(log.claim(e, claims).await.unwrap(), vec![true; 4]);
        assert_eq!(
            log.start_attempts(vec![
                start(&a, 1, e, "n1"),
                start(&b, 1, e, "n1"),
                start(&d, 1, e, "n1"),
            ])
            .await
            .unwrap(),
            vec![Ok(()), Ok(()), Ok(())]
        );
        log.record_end(a.firing, success(1)).await.unwrap();
        log.flush().await.expect("flush: a's end is durable");

        // SIGKILL: nothing more is written; everything acknowledged was fsynced.
        redis.kill9();
        let down = log.get_run(a.firing).await;
        assert!(
            matches!(&down, Err(e) if e.retryable()),
            "a request while Redis is down fails retryable: {down:?}"
        );
        // An end queued meanwhile waits for Redis; a flush cannot complete yet.
        log.record_end(d.firing, success(1))
            .await
            .expect("record_end only queues");
        let flushed = log.flush().await;
        assert!(
            matches!(&flushed, Err(e) if e.retryable()),
            "flush while Redis is down fails retryable: {flushed:?}"
        );
        redis.restart();

        retry(|| log.flush()).await;
        let got = log.get_run(d.firing).await.unwrap().unwrap();
        assert_eq!(
            got.state,
            State::Succeeded,
            "the queued end was applied after the restart"
        );
        let got = retry(|| log.get_run(a.firing)).await.expect("a survived");
        assert_eq!(got.state, State::Succeeded);
        assert_eq!(got.attempts[0].status, Some(AttemptStatus::Succeeded));
        assert_eq!(
            log.get_run(b.firing).await.unwrap().unwrap().state,
            State::Running
        );
        assert_eq!(
            log.get_run(c.firing).await.unwrap().unwrap().state,
            State::Queued
        );
        // A redelivered start is refused: the attempt must not run twice.
        assert_eq!(
            log.start_attempts(vec![
                start(&b, 1, e, "n2"),
                start(&a, 1, e, "n2"),
                start(&c, 1, e, "n2"),
            ])
            .await
            .unwrap(),
            vec![
                Err(Refusal::AlreadyStarted),
                Err(Refusal::Terminal(State::Succeeded)),
                Ok(()),
            ]
        );
        // The fence and the cursor survived too.
        assert!(matches!(
            log.claim(Epoch(6), vec![]).await,
            Err(Error::Fenced { current, .. }) if current == e
        ));
        assert_eq!(log.cursor(job).await.unwrap(), Some(t(30)));
        let mut open: Vec<FiringId> = log
            .unfinished()
            .await
            .unwrap()
            .iter()
            .map(|r| r.firing)
            .collect();
        open.sort();
        let mut expect = vec![b.firing, c.firing];
        expect.sort();
        assert_eq!(open, expect);
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_nodes_start_each_attempt_once() {
    let redis = Redis::start();
    tokio::time::timeout(TEST_WITHIN, async {
        let e = Epoch(1);
        let job = Uuid::new_v4();
        let runs: Vec<Run> = (0..50).map(|i| queued(job, t(i), e)).collect();
        let owner = open(&redis);
        owner
            .claim(
                e,
                runs.iter()
                    .map(|r| Claim {
                        run: r.clone(),
                        cursor: None,
                    })
                    .collect(),
            )
            .await
            .unwrap();
        // Eight "nodes", each with its own connection, start every run's attempt 1 in
        // batches of ten, in different orders.
        let mut tasks = Vec::new();
        for n in 0..8 {
            let log = open(&redis);
            let mut mine = runs.clone();
            mine.rotate_left(n * 7);
            tasks.push(tokio::spawn(async move {
                let node = format!("n{n}");
                let mut won = Vec::new();
                for chunk in mine.chunks(10) {
                    let starts = chunk.iter().map(|r| start(r, 1, e, &node)).collect();
                    let answers = log.start_attempts(starts).await.unwrap();
                    for (r, a) in chunk.iter().zip(answers) {
                        match a {
                            Ok(()) => won.push(r.firing),
                            Err(Refusal::AlreadyStarted) => {}
                            Err(other) => panic!("unexpected refusal {other:?}"),
                        }
                    }
                }
                won
            }));
        }
        let mut wins: HashMap<FiringId, usize> = HashMap::new();
        for task in tasks {
            for f in task.await.unwrap() {
                *wins.entry(f).or_default() += 1;
            }
        }
        assert_eq!(wins.len(), runs.len(), "every attempt started");
        assert!(
            wins.values().all(|&n| n == 1),
            "no attempt started twice: {wins:?}"
        );
        for r in &runs {
            let got = owner.get_run(r.firing).await.unwrap().unwrap();
            assert_eq!(got.attempts.len(), 1);
        }
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_jobs_runs_forgets_them() {
    let redis = Redis::start();
    tokio::time::timeout(TEST_WITHIN, async {
        let log = open(&redis);
        let e = Epoch(1);
        let (gone, kept) = (Uuid::new_v4(), Uuid::new_v4());
        let runs: Vec<Run> = (0..5).map(|i| queued(gone, t(i), e)).collect();
        let other = queued(kept, t(1), e);
        let mut claims: Vec<Claim> = runs
            .iter()
            .map(|r| Claim {
                run: r.clone(),
                cursor: Some(r.scheduled_at),
            })
            .collect();
        claims.push(Claim {
            run: other.clone(),
            cursor: Some(t(1)),
        });
        log.claim(e, claims).await.unwrap();
        log.start_attempts(vec![start(&runs[0], 1, e, "n1")])
            .await
            .unwrap();

        log.delete_job_runs(gone).await.expect("delete job runs");

        assert!(log.list_runs(gone, None, 10).await.unwrap().is_empty());
        assert_eq!(log.cursor(gone).await.unwrap(), None);
        assert!(log.get_run(runs[0].firing).await.unwrap().is_none());
        assert_eq!(
            log.start_attempts(vec![start(&runs[1], 1, e, "n1")])
                .await
                .unwrap(),
            vec![Err(Refusal::JobDeleted)]
        );
        let open = log.unfinished().await.unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].firing, other.firing, "other jobs keep their runs");
        assert_eq!(log.cursor(kept).await.unwrap(), Some(t(1)));
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_are_per_shard() {
    let redis = Redis::start();
    tokio::time::timeout(TEST_WITHIN, async {
        let log = open(&redis);
        assert_eq!(
            log.persists_every_write().await.unwrap(),
            Some(true),
            "the harness runs Redis as the mesh needs it"
        );
        let job = Uuid::new_v4();
        let claim = |e: u64| {
            vec![Claim {
                run: queued(job, t(e as i64), Epoch(e)),
                cursor: None,
            }]
        };
        // Shard 1's owner is newer than shard 0's: that fences neither shard's own.
        assert_eq!(
            log.claim_in_shard(1, Epoch(120), claim(120)).await.unwrap(),
            vec![true]
        );
        assert_eq!(
            log.claim_in_shard(0, Epoch(100), claim(100)).await.unwrap(),
            vec![true]
        );
        assert!(matches!(
            log.claim_in_shard(1, Epoch(110), claim(110)).await,
            Err(Error::Fenced { stale, current }) if stale == Epoch(110) && current == Epoch(120)
        ));
        // The port's claim is shard 0's.
        assert!(matches!(
            log.claim(Epoch(99), claim(99)).await,
            Err(Error::Fenced { current, .. }) if current == Epoch(100)
        ));
        assert_eq!(log.epoch(0).await.unwrap(), Epoch(100));
        assert_eq!(log.epoch(1).await.unwrap(), Epoch(120));
        assert_eq!(log.epoch(7).await.unwrap(), Epoch(0));
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_ends_apply_before_later_writes() {
    let redis = Redis::start();
    tokio::time::timeout(TEST_WITHIN, async {
        let log = open(&redis);
        let e = Epoch(1);
        let job = Uuid::new_v4();
        let runs: Vec<Run> = (0..3_000).map(|i| queued(job, t(i), e)).collect();
        log.claim(
            e,
            runs.iter()
                .map(|r| Claim {
                    run: r.clone(),
                    cursor: None,
                })
                .collect(),
        )
        .await
        .unwrap();
        log.start_attempts(runs.iter().map(|r| start(r, 1, e, "n1")).collect())
            .await
            .unwrap();
        // Many queued ends, then an end_run of the last run: the end was queued first,
        // so it lands first and the run is Succeeded; end_run then finds it terminal.
        for r in &runs {
            log.record_end(r.firing, success(1)).await.unwrap();
        }
        let last = runs.last().unwrap();
        let got = log
            .end_run(last.firing, State::Cancelled, "shutdown".into())
            .await
            .unwrap();
        assert_eq!(got.state, State::Succeeded, "the queued end came first");
        for r in &runs {
            assert_eq!(
                log.get_run(r.firing).await.unwrap().unwrap().state,
                State::Succeeded
            );
        }
        assert!(log.unfinished().await.unwrap().is_empty());
    })
    .await
    .expect("within the time limit");
}
