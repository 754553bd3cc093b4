//! Tests of the simulated adapters' own rules: elections (failover after a crash within
//! the TTL, resign hands over at once, epochs increase, a paused or partitioned owner's
//! term ends by its deadline and the next candidate takes over), queues (redelivery
//! after the visibility timeout, ack, bound), crashes and restarts, and determinism.
//! The port contracts themselves are checked by `tests/contract_*.rs`.
//!
//! They run in virtual time (`start_paused`), as the simulator does; the assertions
//! leave a little room (`SLACK`) for the timer's millisecond grain.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{TraceEvent, World};
use crate::adapters::clock::monotonic_now;
use crate::core::Timestamp;
use crate::core::action::Action;
use crate::core::ids::{Epoch, FiringId, JobName, NodeId, RegionId};
use crate::core::job::Job;
use crate::core::policy::Policies;
use crate::core::run::{Run, Trigger};
use crate::core::schedule::{Kind, ScheduleSpec};
use crate::ports::{AttemptStart, Claim, Dispatch, Election, Error, Term};

/// The lease TTL the election tests use (renewal every 100 ms, margin 150 ms).
const TTL: Duration = Duration::from_millis(300);
/// Room for the timer's grain in assertions about when something happened.
const SLACK: Duration = Duration::from_millis(10);

fn t0() -> Timestamp {
    chrono::Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
}

fn n(id: &str) -> NodeId {
    NodeId::from(id)
}

fn job() -> Job {
    Job {
        name: JobName::new("eu-west", "j"),
        uid: Uuid::from_u128(7),
        description: String::new(),
        labels: Vec::new(),
        schedule: ScheduleSpec::new(Kind::Interval {
            every: Duration::from_secs(60),
            anchor: t0(),
        }),
        action: Action::Noop,
        policy: Policies::default(),
        paused: false,
        paused_at: None,
        resumed_at: None,
        create_time: t0(),
        update_time: t0(),
        revision: 1,
        tzdb_version: String::new(),
    }
}

fn run(i: u128, epoch: Epoch) -> Run {
    let j = job();
    let at = t0() + chrono::Duration::seconds(i as i64);
    Run::queued(
        FiringId(Uuid::from_u128(1000 + i)),
        j.name,
        j.uid,
        at,
        at,
        Trigger::Schedule,
        epoch,
        t0(),
    )
}

fn dispatch(i: u128) -> Dispatch {
    Dispatch {
        run: run(i, Epoch(1)),
        job: Arc::new(job()),
        epoch: Epoch(1),
        shard: 0,
    }
}

fn firings(ds: &[Dispatch]) -> Vec<FiringId> {
    ds.iter().map(|d| d.run.firing).collect()
}

/// Campaign in the background; the term arrives on the returned channel.
fn campaign_later(
    e: Arc<dyn Election>,
    node: &str,
    shard: u32,
) -> tokio::sync::oneshot::Receiver<crate::ports::Result<Term>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let node = n(node);
    tokio::spawn(async move {
        let _ = tx.send(e.campaign(&node, shard).await);
    });
    rx
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

/// The trace without instants (they are not part of what the election decides).
fn shape(trace: &[TraceEvent]) -> Vec<String> {
    trace
        .iter()
        .map(|e| match e {
            TraceEvent::TermGranted {
                shard, node, epoch, ..
            } => format!("granted {shard} {node} {epoch}"),
            TraceEvent::TermEnded {
                shard,
                node,
                epoch,
                why,
                ..
            } => format!("ended {shard} {node} {epoch} {why}"),
            TraceEvent::Claim {
                shard,
                node,
                epoch,
                runs,
                accepted,
                ..
            } => format!("claim {shard} {node} {epoch} {runs} {accepted}"),
            TraceEvent::Started {
                firing,
                attempt,
                node,
                epoch,
                ..
            } => format!("started {firing} {attempt} {node} {epoch}"),
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn failover_after_a_crash_within_the_ttl() {
    let world = World::new(t0());
    let e1 = world.node(&n("n1")).election(TTL);
    let e2 = world.node(&n("n2")).election(TTL);
    let t1 = e1.campaign(&n("n1"), 0).await.expect("n1 wins");
    assert!(t1.is_live());
    let mut second = campaign_later(e2.clone(), "n2", 0);
    settle().await;
    assert!(second.try_recv().is_err(), "n2 waits behind n1");
    let owner = e2.owner_of(0).await.unwrap().expect("an owner");
    assert_eq!((owner.node.clone(), owner.epoch), (n("n1"), t1.epoch));

    let crashed = monotonic_now();
    world.crash(&n("n1"));
    let t2 = second.await.unwrap().expect("n2 wins");
    let gap = monotonic_now() - crashed;
    assert!(
        gap <= TTL + SLACK,
        "n2 took over within the TTL, took {gap:?}"
    );
    assert!(t2.epoch > t1.epoch, "epochs increase");
    assert!(t1.ended.is_cancelled(), "the crashed owner's term is over");
    assert!(
        matches!(e1.owner_of(0).await, Err(Error::Unavailable(_))),
        "a crashed node's calls fail"
    );
    let shape = shape(&world.trace());
    assert_eq!(
        shape,
        vec![
            format!("granted 0 n1 {}", t1.epoch),
            format!("ended 0 n1 {} expired", t1.epoch),
            format!("granted 0 n2 {}", t2.epoch),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn resign_hands_over_at_once() {
    let world = World::new(t0());
    let e1 = world.node(&n("n1")).election(TTL);
    let e2 = world.node(&n("n2")).election(TTL);
    let t1 = e1.campaign(&n("n1"), 3).await.unwrap();
    let second = campaign_later(e2.clone(), "n2", 3);
    settle().await;
    let before = monotonic_now();
    e1.resign(3).await.expect("resign");
    assert!(t1.ended.is_cancelled(), "resign ends the term first");
    let t2 = second.await.unwrap().expect("n2 wins");
    assert!(monotonic_now() - before < SLACK, "no wait for the lease");
    assert!(t2.epoch > t1.epoch);
    let trace = shape(&world.trace());
    assert_eq!(trace[1], format!("ended 3 n1 {} resigned", t1.epoch));
    assert_eq!(trace[2], format!("granted 3 n2 {}", t2.epoch));
}

#[tokio::test(start_paused = true)]
async fn epochs_increase_and_a_live_term_is_returned_again() {
    let world = World::new(t0());
    let nodes = ["a", "b", "c"];
    let elections: Vec<_> = nodes
        .iter()
        .map(|id| world.node(&n(id)).election(TTL))
        .collect();
    let mut last = Epoch(0);
    for round in 0..6 {
        let i = round % nodes.len();
        let term = elections[i].campaign(&n(nodes[i]), 1).await.unwrap();
        assert!(term.epoch > last, "round {round}: {} > {last}", term.epoch);
        let again = elections[i].campaign(&n(nodes[i]), 1).await.unwrap();
        assert_eq!(again.epoch, term.epoch, "a live term is returned again");
        last = term.epoch;
        elections[i].resign(1).await.unwrap();
    }
    // Shards are independent.
    let a0 = elections[0].campaign(&n("a"), 0).await.unwrap();
    let b2 = elections[1].campaign(&n("b"), 2).await.unwrap();
    assert!(a0.is_live() && b2.is_live());
}

#[tokio::test(start_paused = true)]
async fn a_renewed_term_outlives_its_ttl() {
    let world = World::new(t0());
    let e = world.node(&n("n1")).election(TTL);
    let term = e.campaign(&n("n1"), 0).await.unwrap();
    tokio::time::sleep(TTL * 4).await;
    assert!(term.is_live(), "renewals keep the term");
    let left = term.left().unwrap();
    assert!(left <= TTL - Duration::from_millis(150) && !left.is_zero());
}

/// A paused or partitioned owner: its term ends by its deadline (last renewal + TTL -
/// margin), the lease expires at last renewal + TTL, the next candidate takes over,
/// and the old owner's claims are then fenced.
async fn owner_cut_off(cut: impl Fn(&World, bool)) {
    let world = World::new(t0());
    let (s1, s2) = (world.node(&n("n1")), world.node(&n("n2")));
    let (e1, e2) = (s1.election(TTL), s2.election(TTL));
    let t1 = e1.campaign(&n("n1"), 0).await.unwrap();
    let log1 = s1.run_log();
    log1.claim_in_shard(0, t1.epoch, Vec::new()).await.unwrap();
    let second = campaign_later(e2.clone(), "n2", 0);
    settle().await;

    let since = monotonic_now();
    cut(&world, true);
    // The owner's term ends on its own, before the lease could expire in the world.
    t1.ended.cancelled().await;
    let ended_after = monotonic_now() - since;
    assert!(
        ended_after <= TTL - Duration::from_millis(150) + SLACK,
        "the term ended by its deadline, after {ended_after:?}"
    );
    assert!(!t1.is_live());
    assert_eq!(t1.left(), Some(Duration::ZERO));
    let t2 = second.await.unwrap().expect("n2 takes over");
    let took = monotonic_now() - since;
    assert!(
        took >= ended_after && took <= TTL + SLACK,
        "n2 took over after the lease expired, {took:?}"
    );
    assert!(t2.epoch > t1.epoch);
    let log2 = s2.run_log();
    log2.claim_in_shard(0, t2.epoch, Vec::new()).await.unwrap();

    cut(&world, false);
    let late = log1
        .claim_in_shard(
            0,
            t1.epoch,
            vec![Claim {
                run: run(1, t1.epoch),
                cursor: None,
            }],
        )
        .await;
    assert!(
        matches!(late, Err(Error::Fenced { current, .. }) if current == t2.epoch),
        "the old owner's claim is fenced, got {late:?}"
    );
    let owner = e1.owner_of(0).await.unwrap().unwrap();
    assert_eq!((owner.node, owner.epoch), (n("n2"), t2.epoch));
    let trace = world.trace();
    assert!(trace.iter().any(|e| matches!(e,
        TraceEvent::TermEnded { node, why, .. } if *node == n("n1") && why == "expired")));
    assert!(trace.iter().any(|e| matches!(e,
        TraceEvent::Claim { node, accepted: false, .. } if *node == n("n1"))));
}

#[tokio::test(start_paused = true)]
async fn a_paused_owner_loses_its_term_by_the_deadline() {
    owner_cut_off(|w, on| w.set_paused(&n("n1"), on)).await;
}

#[tokio::test(start_paused = true)]
async fn a_partitioned_owner_loses_its_term_by_the_deadline() {
    owner_cut_off(|w, on| w.set_etcd_link(&n("n1"), !on)).await;
}

#[tokio::test(start_paused = true)]
async fn a_paused_call_waits_and_a_cut_call_fails() {
    let world = World::new(t0());
    let node = world.node(&n("n1"));
    let log = node.run_log();
    world.set_paused(&n("n1"), true);
    let call = tokio::spawn({
        let log = log.clone();
        async move { log.cursors().await }
    });
    settle().await;
    assert!(!call.is_finished(), "a paused node's call waits");
    world.set_paused(&n("n1"), false);
    assert!(call.await.unwrap().is_ok(), "then proceeds");
    world.set_redis_link(&n("n1"), false);
    assert!(matches!(log.cursors().await, Err(Error::Unavailable(_))));
    assert!(
        matches!(node.time_source().time().await, Err(Error::Unavailable(_))),
        "TIME goes through the Redis link"
    );
    assert!(
        node.catalog().all_jobs().await.is_ok(),
        "etcd is still there"
    );
    world.set_etcd_link(&n("n1"), false);
    assert!(matches!(
        node.catalog().all_jobs().await,
        Err(Error::Unavailable(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn crashed_handles_fail_even_after_a_restart() {
    let world = World::new(t0());
    let old = world.node(&n("n1"));
    let old_log = old.run_log();
    let mut watch = old.catalog().watch();
    let q = old.queues(Duration::from_secs(1), 10);
    let stop = CancellationToken::new();
    let waiting = tokio::spawn({
        let q = q.clone();
        let stop = stop.clone();
        async move { q.receive(&RegionId::from("r"), 5, &stop).await }
    });
    settle().await;
    world.crash(&n("n1"));
    assert!(
        matches!(waiting.await.unwrap(), Err(Error::Unavailable(_))),
        "a call in flight fails"
    );
    assert!(
        matches!(
            watch.recv().await,
            Err(tokio::sync::broadcast::error::RecvError::Closed)
        ),
        "its watch closes"
    );
    world.restart(&n("n1"));
    assert!(matches!(
        old_log.cursors().await,
        Err(Error::Unavailable(_))
    ));
    let new = world.node(&n("n1"));
    assert!(
        new.run_log().cursors().await.is_ok(),
        "the new incarnation works"
    );
}

#[tokio::test(start_paused = true)]
async fn queue_redelivers_after_the_visibility_timeout_until_acked() {
    let world = World::new(t0());
    let vt = Duration::from_millis(200);
    let region = RegionId::from("eu-west");
    let q1 = world.node(&n("n1")).queues(vt, 100);
    let q2 = world.node(&n("n2")).queues(vt, 100);
    let none = CancellationToken::new();
    assert!(
        q1.push(&region, (0..3).map(dispatch).collect())
            .await
            .unwrap()
            .is_empty()
    );
    let got = q1.receive(&region, 2, &none).await.unwrap();
    assert_eq!(
        got.iter()
            .map(|d| d.dispatch.run.firing)
            .collect::<Vec<_>>(),
        firings(&[dispatch(0), dispatch(1)]),
        "in push order"
    );
    let third = q2.receive(&region, 10, &none).await.unwrap();
    assert_eq!(third.len(), 1, "n2 gets what is left");
    q2.ack(&region, &[third[0].id.clone()]).await.unwrap();
    // n1 dies holding two; n2, waiting, gets them once the visibility timeout passed.
    world.crash(&n("n1"));
    let since = monotonic_now();
    let again = q2.receive(&region, 10, &none).await.unwrap();
    let waited = monotonic_now() - since;
    assert!(
        waited + SLACK >= vt && waited <= vt + SLACK,
        "redelivered after {waited:?}"
    );
    assert_eq!(
        again
            .iter()
            .map(|d| d.dispatch.run.firing)
            .collect::<Vec<_>>(),
        firings(&[dispatch(0), dispatch(1)]),
        "redelivered in order"
    );
    q2.ack(
        &region,
        &again.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    q2.ack(&region, &[String::new(), "nope".into()])
        .await
        .expect("unknown ids are ignored");
    // Nothing is left: a receive waits until cancelled.
    let stop = CancellationToken::new();
    let waiting = tokio::spawn({
        let (q2, region, stop) = (q2.clone(), region.clone(), stop.clone());
        async move { q2.receive(&region, 10, &stop).await }
    });
    tokio::time::sleep(vt * 2).await;
    assert!(
        !waiting.is_finished(),
        "acknowledged entries do not come back"
    );
    stop.cancel();
    assert!(waiting.await.unwrap().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn queue_is_bounded_and_hands_back_the_overflow_in_order() {
    let world = World::new(t0());
    let region = RegionId::from("r");
    let q = world.node(&n("n1")).queues(Duration::from_secs(30), 3);
    let none = CancellationToken::new();
    let back = q
        .push(&region, (0..5).map(dispatch).collect())
        .await
        .unwrap();
    assert_eq!(firings(&back), firings(&[dispatch(3), dispatch(4)]));
    let got = q.receive(&region, 1, &none).await.unwrap();
    assert_eq!(got.len(), 1);
    let back = q.push(&region, back).await.unwrap();
    assert_eq!(back.len(), 2, "pending entries count against the bound");
    q.ack(&region, &[got[0].id.clone()]).await.unwrap();
    let back = q.push(&region, back).await.unwrap();
    assert_eq!(firings(&back), firings(&[dispatch(4)]), "one freed slot");
    let pulled = q.pull(&region, 10, &none).await.unwrap();
    assert_eq!(
        firings(&pulled),
        firings(&[dispatch(1), dispatch(2), dispatch(3)])
    );
    assert!(
        q.push(&region, back).await.unwrap().is_empty(),
        "pull acknowledges"
    );
}

#[tokio::test(start_paused = true)]
async fn membership_follows_leases() {
    let world = World::new(t0());
    let (m1, m2) = (
        world.node(&n("n1")).membership(TTL),
        world.node(&n("n2")).membership(TTL),
    );
    let (east, west) = (RegionId::from("east"), RegionId::from("west"));
    m1.join(&n("n1"), &[west.clone(), east.clone()], "http://n1")
        .await
        .unwrap();
    m2.join(&n("n2"), std::slice::from_ref(&west), "http://n2")
        .await
        .unwrap();
    assert_eq!(
        m1.live_regions().await.unwrap(),
        vec![east.clone(), west.clone()]
    );
    let members = m2.members(&west).await.unwrap();
    assert_eq!(
        members.iter().map(|m| m.node.clone()).collect::<Vec<_>>(),
        vec![n("n1"), n("n2")]
    );
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(m1.live_regions().await.unwrap().len(), 2, "renewed");
    world.crash(&n("n1"));
    tokio::time::sleep(TTL + SLACK).await;
    assert_eq!(
        m2.live_regions().await.unwrap(),
        vec![west.clone()],
        "a crashed node's regions go after the TTL"
    );
    m2.join(&n("n2"), std::slice::from_ref(&east), "http://n2")
        .await
        .unwrap();
    assert_eq!(
        m2.live_regions().await.unwrap(),
        vec![east.clone()],
        "join replaces"
    );
    m2.leave().await.unwrap();
    assert!(
        m2.live_regions().await.unwrap().is_empty(),
        "leave is at once"
    );
}

#[tokio::test(start_paused = true)]
async fn skew_moves_the_wall_clock_and_sleep_follows_it() {
    let world = World::new(t0());
    let node = world.node(&n("n1"));
    let clock = node.clock();
    world.set_skew(&n("n1"), chrono::Duration::seconds(5));
    let now = clock.now();
    assert!(now - world.true_now() >= chrono::Duration::milliseconds(4_990));
    // A jump forward ends a sleep at once.
    let target = clock.now() + chrono::Duration::seconds(60);
    let sleeper = tokio::spawn({
        let clock = clock.clone();
        async move { clock.sleep_until(target).await }
    });
    settle().await;
    world.set_skew(&n("n1"), chrono::Duration::seconds(120));
    tokio::time::timeout(Duration::from_secs(1), sleeper)
        .await
        .expect("woke after the jump")
        .unwrap();
    assert!(clock.now() >= target);
}

/// One fixed sequence of calls, with faults, over a fresh world.
async fn scenario() -> Vec<TraceEvent> {
    let world = World::new(t0());
    let (a, b) = (world.node(&n("a")), world.node(&n("b")));
    let (ea, eb) = (a.election(TTL), b.election(TTL));
    let ta = ea.campaign(&n("a"), 0).await.unwrap();
    let later = campaign_later(eb.clone(), "b", 0);
    settle().await;
    let log = a.run_log();
    log.claim_in_shard(
        0,
        ta.epoch,
        vec![Claim {
            run: run(1, ta.epoch),
            cursor: None,
        }],
    )
    .await
    .unwrap();
    let start = AttemptStart {
        firing: run(1, ta.epoch).firing,
        number: 1,
        epoch: ta.epoch,
        node: n("a"),
        started_at: t0(),
        lateness_us: 0,
    };
    log.start_attempts(vec![start.clone(), start])
        .await
        .unwrap();
    world.set_etcd_link(&n("a"), false);
    let tb = later.await.unwrap().unwrap();
    let logb = b.run_log();
    logb.claim_in_shard(0, tb.epoch, Vec::new()).await.unwrap();
    world.set_etcd_link(&n("a"), true);
    let _ = log.claim_in_shard(0, ta.epoch, Vec::new()).await;
    eb.resign(0).await.unwrap();
    world.trace()
}

#[tokio::test(start_paused = true)]
async fn the_same_calls_give_the_same_trace() {
    let one = scenario().await;
    let two = scenario().await;
    assert!(one.len() >= 8, "a trace worth comparing: {one:?}");
    assert_eq!(one, two, "instants included: time is virtual");
}

#[tokio::test(start_paused = true)]
async fn a_candidate_paused_past_its_lease_gives_up_when_resumed() {
    let world = World::new(t0());
    let e1 = world.node(&n("n1")).election(TTL);
    let e2 = world.node(&n("n2")).election(TTL);
    let t1 = e1.campaign(&n("n1"), 0).await.unwrap();
    let second = campaign_later(e2.clone(), "n2", 0);
    settle().await;
    world.set_paused(&n("n2"), true);
    tokio::time::sleep(TTL * 2).await;
    world.set_paused(&n("n2"), false);
    assert!(
        matches!(second.await.unwrap(), Err(Error::Unavailable(_))),
        "its lease lapsed while it waited"
    );
    assert!(t1.is_live(), "the owner was never disturbed");
    let again = campaign_later(e2.clone(), "n2", 0);
    settle().await;
    e1.resign(0).await.unwrap();
    let t2 = again.await.unwrap().expect("a new candidacy wins");
    assert!(t2.epoch > t1.epoch);
}

#[tokio::test(start_paused = true)]
async fn ends_wait_for_redis_and_are_lost_in_a_crash() {
    let world = World::new(t0());
    let node = world.node(&n("n1"));
    let log = node.run_log();
    let r = run(1, Epoch(1));
    log.claim(
        Epoch(1),
        vec![Claim {
            run: r.clone(),
            cursor: None,
        }],
    )
    .await
    .unwrap();
    let start = AttemptStart {
        firing: r.firing,
        number: 1,
        epoch: Epoch(1),
        node: n("n1"),
        started_at: t0(),
        lateness_us: 0,
    };
    log.start_attempts(vec![start]).await.unwrap();
    let end = crate::ports::AttemptEnd {
        number: 1,
        status: crate::core::run::AttemptStatus::Succeeded,
        finished_at: t0(),
        summary: String::new(),
        exit_code: Some(0),
        http_status: None,
        output_tail: String::new(),
        next_state: crate::core::run::State::Succeeded,
        next_attempt_at: None,
    };
    world.set_redis_link(&n("n1"), false);
    log.record_end(r.firing, end.clone()).await.expect("queued");
    assert!(matches!(log.flush().await, Err(Error::Unavailable(_))));
    world.set_redis_link(&n("n1"), true);
    log.flush().await.unwrap();
    assert_eq!(
        world.runs()[0].state,
        crate::core::run::State::Succeeded,
        "applied once Redis is back"
    );
    assert_eq!(
        shape(&world.trace()),
        vec![
            "claim 0 n1 1 1 true".to_owned(),
            format!("started {} 1 n1 1", r.firing),
        ]
    );
    // A crash loses what is still queued.
    let r2 = run(2, Epoch(1));
    log.claim(
        Epoch(1),
        vec![Claim {
            run: r2.clone(),
            cursor: None,
        }],
    )
    .await
    .unwrap();
    log.start_attempts(vec![AttemptStart {
        firing: r2.firing,
        ..AttemptStart {
            firing: r.firing,
            number: 1,
            epoch: Epoch(1),
            node: n("n1"),
            started_at: t0(),
            lateness_us: 0,
        }
    }])
    .await
    .unwrap();
    world.set_redis_link(&n("n1"), false);
    log.record_end(r2.firing, end).await.unwrap();
    world.crash(&n("n1"));
    world.restart(&n("n1"));
    world.set_redis_link(&n("n1"), true);
    let got = world.node(&n("n1")).run_log().get_run(r2.firing).await;
    assert_eq!(
        got.unwrap().unwrap().state,
        crate::core::run::State::Running
    );
}
