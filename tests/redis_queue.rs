//! The Redis Streams dispatch queue on a real redis-server: push, pull and acknowledge;
//! entries a dead consumer held are reclaimed by another after the visibility timeout;
//! the bounded stream hands back what does not fit; a Redis crash (SIGKILL) and restart
//! loses no push Redis acknowledged; a cancelled pull returns at once.
#![allow(clippy::disallowed_methods)] // tests may read the real clock

mod common;

use common::retry;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeZone;
use meridian::adapters::redis::{Config, Delivery, Queue, QueueOptions};
use meridian::core::Timestamp;
use meridian::core::action::Action;
use meridian::core::ids::{Epoch, FiringId, JobName, RegionId};
use meridian::core::job::Job;
use meridian::core::policy::Policies;
use meridian::core::run::{Run, Trigger};
use meridian::core::schedule::{Kind, ScheduleSpec};
use meridian::ports::{Dispatch, DispatchQueue};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use common::redis::Redis;

/// Every test finishes within this.
const TEST_WITHIN: Duration = Duration::from_secs(30);
fn t(s: i64) -> Timestamp {
    chrono::Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(s)
}

fn region() -> RegionId {
    RegionId::from("eu-west")
}

fn job() -> Arc<Job> {
    Arc::new(Job {
        name: JobName::new("eu-west", "ping"),
        uid: Uuid::new_v4(),
        description: "ping the target".into(),
        labels: vec![("team".into(), "core".into())],
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
        revision: 3,
        tzdb_version: "2025b".into(),
    })
}

fn dispatches(job: &Arc<Job>, n: usize) -> Vec<Dispatch> {
    (0..n)
        .map(|i| Dispatch {
            run: Run::queued(
                FiringId(Uuid::new_v4()),
                job.name.clone(),
                job.uid,
                t(i as i64),
                t(i as i64),
                Trigger::Schedule,
                Epoch(4),
                t(0),
            ),
            job: job.clone(),
            epoch: Epoch(4),
            shard: 0,
        })
        .collect()
}

fn firings(ds: &[Dispatch]) -> Vec<FiringId> {
    ds.iter().map(|d| d.run.firing).collect()
}

fn delivered(ds: &[Delivery]) -> Vec<FiringId> {
    ds.iter().map(|d| d.dispatch.run.firing).collect()
}

fn options(consumer: &str) -> QueueOptions {
    let mut o = QueueOptions::new(consumer);
    o.visibility_timeout = Duration::from_millis(500);
    o.block = Duration::from_millis(200);
    o
}

fn queue(redis: &Redis, o: QueueOptions) -> Queue {
    let mut c = Config::new(redis.url(), "q");
    c.request_timeout = Duration::from_secs(2);
    Queue::open(&c, o).expect("open queue")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_pull_ack() {
    let redis = Redis::start();
    tokio::time::timeout(TEST_WITHIN, async {
        let q = queue(&redis, options("node-a"));
        let r = region();
        let never = CancellationToken::new();
        let job = job();
        let batch = dispatches(&job, 3);
        assert!(q.push(&r, batch.clone()).await.unwrap().is_empty());
        assert_eq!(q.len(&r).await.unwrap(), 3);

        let got = q.pull_deliveries(&r, 10, &never).await.unwrap();
        assert_eq!(delivered(&got), firings(&batch), "in push order");
        for (d, sent) in got.iter().zip(&batch) {
            assert_eq!(d.dispatch.run, sent.run, "the run comes back as sent");
            assert_eq!(*d.dispatch.job, *sent.job, "the job comes back as sent");
            assert_eq!(d.dispatch.epoch, sent.epoch);
        }
        // Pending until acknowledged; acknowledged entries leave the stream.
        assert_eq!(q.len(&r).await.unwrap(), 3);
        let ids: Vec<String> = got.iter().map(|d| d.id.clone()).collect();
        assert_eq!(q.ack(&r, &ids).await.unwrap(), 3);
        assert_eq!(
            q.ack(&r, &ids).await.unwrap(),
            0,
            "acknowledging twice is harmless"
        );
        assert!(q.is_empty(&r).await.unwrap());

        // The port's pull: takes at most `max`, acknowledges what it hands over.
        let batch = dispatches(&job, 5);
        q.push(&r, batch.clone()).await.unwrap();
        let first = q.pull(&r, 2, &never).await.unwrap();
        let rest = q.pull(&r, 10, &never).await.unwrap();
        assert_eq!(firings(&first), firings(&batch[..2]));
        assert_eq!(firings(&rest), firings(&batch[2..]));
        assert!(q.is_empty(&r).await.unwrap());
        // Another region's stream is separate.
        let other = RegionId::from("us-east");
        q.push(&other, dispatches(&job, 1)).await.unwrap();
        assert_eq!(q.len(&other).await.unwrap(), 1);
        assert!(q.is_empty(&r).await.unwrap());
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_a_dead_consumer_held_are_reclaimed() {
    let redis = Redis::start();
    tokio::time::timeout(TEST_WITHIN, async {
        let r = region();
        let never = CancellationToken::new();
        let job = job();
        let batch = dispatches(&job, 4);
        let a = queue(&redis, options("node-a"));
        let b = queue(&redis, options("node-b"));
        a.push(&r, batch.clone()).await.unwrap();

        // node-a reads everything and dies without acknowledging.
        let held = a.pull_deliveries(&r, 10, &never).await.unwrap();
        assert_eq!(held.len(), 4);
        let held_at = Instant::now();
        drop(a);

        // node-b sees nothing new, and cannot take them before the visibility timeout.
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            c2.cancel();
        });
        assert!(b.pull_deliveries(&r, 10, &cancel).await.unwrap().is_empty());
        let early = b.reclaim(&r, Duration::from_millis(500), 10).await.unwrap();
        if held_at.elapsed() < Duration::from_millis(450) {
            assert!(early.is_empty(), "not idle long enough yet: {early:?}");
        }

        tokio::time::sleep(Duration::from_millis(600)).await;
        let mut got = early;
        got.extend(b.reclaim(&r, Duration::from_millis(500), 10).await.unwrap());
        assert_eq!(
            delivered(&got),
            firings(&batch),
            "the same entries, in order"
        );
        let ids: Vec<String> = held.iter().map(|d| d.id.clone()).collect();
        assert_eq!(got.iter().map(|d| d.id.clone()).collect::<Vec<_>>(), ids);
        assert_eq!(b.ack(&r, &ids).await.unwrap(), 4);
        assert!(b.is_empty(&r).await.unwrap());

        // The port's pull reclaims on its own: a third node's pull gets what node-b
        // read and left.
        let batch = dispatches(&job, 2);
        b.push(&r, batch.clone()).await.unwrap();
        let left = b.pull_deliveries(&r, 10, &never).await.unwrap();
        assert_eq!(left.len(), 2);
        tokio::time::sleep(Duration::from_millis(600)).await;
        let c = queue(&redis, options("node-c"));
        assert_eq!(
            firings(&c.pull(&r, 10, &never).await.unwrap()),
            firings(&batch)
        );
        assert!(c.is_empty(&r).await.unwrap(), "pull acknowledged them");
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_hands_back_the_overflow() {
    let redis = Redis::start();
    tokio::time::timeout(TEST_WITHIN, async {
        let mut o = options("node-a");
        o.queue_max = 5;
        let q = queue(&redis, o);
        let r = region();
        let never = CancellationToken::new();
        let batch = dispatches(&job(), 8);
        let back = q.push(&r, batch.clone()).await.unwrap();
        assert_eq!(
            firings(&back),
            firings(&batch[5..]),
            "the tail comes back, in order"
        );
        assert_eq!(q.len(&r).await.unwrap(), 5);
        assert_eq!(
            firings(&q.push(&r, back.clone()).await.unwrap()),
            firings(&back)
        );

        // Pulled but not acknowledged still counts: it is in flight.
        let got = q.pull_deliveries(&r, 2, &never).await.unwrap();
        assert_eq!(
            firings(&q.push(&r, back.clone()).await.unwrap()),
            firings(&back)
        );
        q.ack(&r, &got.iter().map(|d| d.id.clone()).collect::<Vec<_>>())
            .await
            .unwrap();
        let again = q.push(&r, back.clone()).await.unwrap();
        assert_eq!(firings(&again), firings(&back[2..]), "room for two more");
        // Nothing was dropped: the stream holds the first five minus the two done, then
        // the two re-offered, in order.
        let mut all = Vec::new();
        while all.len() < 5 {
            let got = q.pull_deliveries(&r, 10, &never).await.unwrap();
            all.extend(delivered(&got));
        }
        let mut expect = firings(&batch[2..5]);
        expect.extend(firings(&back[..2]));
        assert_eq!(all, expect);
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_pushes_survive_a_redis_crash() {
    let mut redis = Redis::start();
    tokio::time::timeout(TEST_WITHIN, async {
        let q = queue(&redis, options("node-a"));
        let r = region();
        let never = CancellationToken::new();
        let job = job();
        let sent = dispatches(&job, 50);
        for chunk in sent.chunks(10) {
            assert!(q.push(&r, chunk.to_vec()).await.unwrap().is_empty());
        }
        // 20 done (acknowledged), 5 in flight (read, not acknowledged), 25 waiting.
        let mut done = Vec::new();
        while done.len() < 20 {
            let got = q
                .pull_deliveries(&r, 20 - done.len(), &never)
                .await
                .unwrap();
            let ids: Vec<String> = got.iter().map(|d| d.id.clone()).collect();
            q.ack(&r, &ids).await.unwrap();
            done.extend(delivered(&got));
        }
        let in_flight = q.pull_deliveries(&r, 5, &never).await.unwrap();
        assert_eq!(in_flight.len(), 5);

        redis.kill9();
        let down = q.push(&r, dispatches(&job, 1)).await;
        assert!(
            matches!(&down, Err(e) if e.retryable()),
            "a push while Redis is down fails retryable: {down:?}"
        );
        redis.restart();

        // The in-flight ones come back through reclaim; the waiting ones through reads.
        let mut after: Vec<FiringId> = Vec::new();
        let back = retry(|| q.reclaim(&r, Duration::ZERO, 100)).await;
        assert_eq!(delivered(&back), delivered(&in_flight));
        let ids: Vec<String> = back.iter().map(|d| d.id.clone()).collect();
        retry(|| q.ack(&r, &ids)).await;
        after.extend(delivered(&back));
        let deadline = Instant::now() + Duration::from_secs(10);
        while after.len() < 30 && Instant::now() < deadline {
            let got = retry(|| q.pull(&r, 100, &never)).await;
            after.extend(firings(&got));
        }
        let before: BTreeSet<FiringId> = done.iter().copied().collect();
        let after_set: BTreeSet<FiringId> = after.iter().copied().collect();
        assert_eq!(after.len(), 30, "each remaining entry exactly once");
        assert!(
            before.is_disjoint(&after_set),
            "acknowledged entries stay done"
        );
        let all: BTreeSet<FiringId> = before.union(&after_set).copied().collect();
        assert_eq!(all, firings(&sent).into_iter().collect(), "nothing lost");
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_pull_returns_at_once() {
    let redis = Redis::start();
    tokio::time::timeout(TEST_WITHIN, async {
        let mut o = options("node-a");
        o.block = Duration::from_secs(1);
        let q = queue(&redis, o);
        let r = region();
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            c2.cancel();
        });
        let began = Instant::now();
        assert!(q.pull(&r, 10, &cancel).await.unwrap().is_empty());
        assert!(
            began.elapsed() < Duration::from_millis(900),
            "returned {:?} after the pull began",
            began.elapsed()
        );
        // The cancelled read (COUNT 10) is kept: what it takes is handed out by the next
        // pulls, no more than each asks for, in order.
        let batch = dispatches(&job(), 5);
        q.push(&r, batch.clone()).await.unwrap();
        let never = CancellationToken::new();
        let two = q.pull_deliveries(&r, 2, &never).await.unwrap();
        assert_eq!(delivered(&two), firings(&batch[..2]));
        q.ack(&r, &two.iter().map(|d| d.id.clone()).collect::<Vec<_>>())
            .await
            .unwrap();
        assert_eq!(
            firings(&q.pull(&r, 10, &never).await.unwrap()),
            firings(&batch[2..])
        );
        assert!(q.is_empty(&r).await.unwrap());
    })
    .await
    .expect("within the time limit");
}
