//! Election, fencing and cursors against a real etcd: one owner per shard, strictly
//! increasing epochs, failover after a crash within TTL + 1 s (measured and printed), a
//! cut-off owner ending its term by itself, and stale epochs refused by etcd.
//!
//! Each node runs on its own tokio runtime, so "crash" can be simulated faithfully:
//! shutting the runtime down stops its keep-alives without any goodbye (no revoke), as
//! a SIGKILL would. Must not depend on adapter internals beyond the public API.
#![allow(clippy::disallowed_methods)] // tests may read the real clock

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::TimeZone;
use meridian::adapters::etcd::{
    Config, Connection, Cursors, Election, ElectionOptions, fenced_put,
};
use meridian::core::Timestamp;
use meridian::core::ids::{Epoch, NodeId};
use meridian::ports::{Cursors as _, Election as _, Error, Term};
use tokio::runtime::Runtime;

use common::etcd::Etcd;

const TTL: Duration = Duration::from_secs(2);
const MARGIN: Duration = Duration::from_millis(500);
/// Longest any single wait in these tests may take.
const WAIT_MAX: Duration = Duration::from_secs(15);

fn options() -> ElectionOptions {
    ElectionOptions {
        ttl: TTL,
        safety_margin: MARGIN,
    }
}

fn t(s: i64) -> Timestamp {
    chrono::Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(s)
}

/// One simulated node: its own runtime, etcd connection and election.
struct Node {
    name: NodeId,
    rt: Option<Runtime>,
    election: Option<Election>,
}

impl Node {
    fn start(endpoint: &str, name: &str) -> Node {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let config = Config::new(vec![endpoint.to_string()], "/meridian-test");
        let election = rt.block_on(async {
            Election::new(Connection::connect(&config).await.unwrap(), options())
        });
        Node {
            name: NodeId::from(name),
            rt: Some(rt),
            election: Some(election),
        }
    }

    fn election(&self) -> &Election {
        self.election.as_ref().expect("node is alive")
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.as_ref().expect("node is alive").block_on(f)
    }

    /// Campaign in the background; the term (or error) arrives on the receiver.
    fn campaign(&self, shard: u32) -> mpsc::Receiver<meridian::ports::Result<Term>> {
        let (tx, rx) = mpsc::channel();
        let election = self.election().clone();
        let node = self.name.clone();
        self.rt.as_ref().unwrap().spawn(async move {
            let _ = tx.send(election.campaign(&node, shard).await);
        });
        rx
    }

    /// Die without a goodbye: keep-alives stop, the lease is left to expire.
    fn crash(&mut self) {
        let rt = self.rt.take().expect("node is alive");
        // Drop the election on a dead runtime: its revoke tasks cannot run.
        rt.shutdown_background();
        self.election.take();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn won(rx: &mpsc::Receiver<meridian::ports::Result<Term>>, within: Duration) -> Term {
    rx.recv_timeout(within)
        .expect("campaign finished in time")
        .expect("campaign won")
}

fn still_waiting(rx: &mpsc::Receiver<meridian::ports::Result<Term>>, for_: Duration) -> bool {
    matches!(rx.recv_timeout(for_), Err(mpsc::RecvTimeoutError::Timeout))
}

/// Wait (bounded) until a term's `ended` fires; the time it took.
fn ended_within(node: &Node, term: &Term, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let ended = term.ended.clone();
    node.block_on(async { tokio::time::timeout(within, ended.cancelled()).await.ok() })
        .map(|_| start.elapsed())
}

#[test]
fn one_owner_at_a_time_with_increasing_epochs_and_failover_within_ttl() {
    let etcd = Etcd::start();
    let a = Node::start(&etcd.endpoint(), "node-a");
    let b = Node::start(&etcd.endpoint(), "node-b");

    let a1 = won(&a.campaign(0), WAIT_MAX);
    let rx_b = b.campaign(0);
    assert!(
        still_waiting(&rx_b, Duration::from_millis(700)),
        "a second candidate waits while the first owns the shard"
    );

    // A graceful resign hands over at once.
    let start = Instant::now();
    a.block_on(a.election().resign(0)).unwrap();
    assert!(a1.ended.is_cancelled(), "resign ends the term first");
    let b1 = won(&rx_b, WAIT_MAX);
    println!("handover after resign: {:?}", start.elapsed());
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(b1.epoch > a1.epoch, "epochs strictly increase");

    // Crash failover, a few times: the standby wins within TTL + 1 s of the crash.
    let mut leader = b;
    let mut leader_term = b1;
    let mut standby = a;
    let mut gaps = Vec::new();
    for round in 0..3 {
        let rx = standby.campaign(0);
        assert!(still_waiting(&rx, Duration::from_millis(300)));
        let crashed_at = Instant::now();
        leader.crash();
        let term = won(&rx, WAIT_MAX);
        let gap = crashed_at.elapsed();
        println!("failover round {round}: new owner after {gap:?} (ttl {TTL:?})");
        assert!(
            gap <= TTL + Duration::from_secs(1),
            "failover took {gap:?}, more than TTL + 1 s"
        );
        assert!(term.epoch > leader_term.epoch, "epochs strictly increase");
        gaps.push(gap);
        leader = standby;
        leader_term = term;
        standby = Node::start(&etcd.endpoint(), &format!("node-{round}"));
    }
    gaps.sort();
    println!(
        "failover gaps: min {:?}, median {:?}, max {:?}",
        gaps[0],
        gaps[gaps.len() / 2],
        gaps[gaps.len() - 1]
    );
}

#[test]
fn a_cut_off_owner_ends_its_term_by_itself() {
    let etcd = Etcd::start();
    let a = Node::start(&etcd.endpoint(), "node-a");
    let term = won(&a.campaign(0), WAIT_MAX);
    // Let a couple of renewals happen, then cut etcd off silently (no RST, no answer).
    std::thread::sleep(Duration::from_millis(1500));
    etcd.pause();
    let took = ended_within(&a, &term, TTL + Duration::from_secs(2));
    etcd.resume();
    let took = took.expect("the term ended by itself");
    println!("cut-off owner ended its term {took:?} after etcd went silent (ttl {TTL:?})");
    // It ends at its last acknowledged renewal + TTL - margin: at most TTL - margin
    // (plus scheduling) after the cut-off, so by the last renewal + TTL at the latest.
    assert!(
        took <= TTL,
        "ended {took:?} after the cut-off, later than the TTL"
    );
    // Not at once either: a renewal acknowledged shortly before the cut-off still counts
    // (a quarter of the TTL leaves room for a loaded machine's late renewals).
    assert!(
        took >= TTL / 4,
        "ended {took:?} after the cut-off: too early"
    );
    // Once etcd answers again, the next candidate gets the shard.
    let b = Node::start(&etcd.endpoint(), "node-b");
    let b1 = won(&b.campaign(0), TTL + Duration::from_secs(3));
    assert!(b1.epoch > term.epoch);
}

#[test]
fn stale_epochs_are_refused_by_etcd_and_cursors_only_move_forward() {
    let etcd = Etcd::start();
    let a = Node::start(&etcd.endpoint(), "node-a");
    let b = Node::start(&etcd.endpoint(), "node-b");
    let a1 = won(&a.campaign(0), WAIT_MAX);
    let a_cursors = Cursors::new(a.election().clone());
    let fence_a = a.election().fence(0).expect("A holds shard 0");
    assert_eq!(fence_a.epoch, a1.epoch);

    // A big batch goes in (in several fenced transactions), forward only.
    let uids: Vec<uuid::Uuid> = (0..300).map(|_| uuid::Uuid::new_v4()).collect();
    let batch: Vec<_> = uids.iter().map(|u| (*u, t(100))).collect();
    a.block_on(a_cursors.advance(a1.epoch, 0, batch))
        .expect("advance");
    let all = a.block_on(a_cursors.all()).unwrap();
    assert_eq!(all.len(), 300);
    assert!(all.iter().all(|(_, c)| *c == t(100)));
    a.block_on(a_cursors.advance(a1.epoch, 0, vec![(uids[0], t(50)), (uids[1], t(150))]))
        .unwrap();
    assert_eq!(
        a.block_on(a_cursors.get(uids[0])).unwrap(),
        Some(t(100)),
        "never backwards"
    );
    assert_eq!(a.block_on(a_cursors.get(uids[1])).unwrap(), Some(t(150)));

    // Depose A behind its back: delete its key as a lease expiry would.
    let rx_b = b.campaign(0);
    let raw = a.election().connection().clone();
    a.block_on(async {
        let mut client = raw.client().clone();
        client.delete(fence_a.key.clone(), None).await.unwrap();
    });
    let b1 = won(&rx_b, WAIT_MAX);
    assert!(b1.epoch > a1.epoch);

    // etcd itself refuses a write fenced on A's stale epoch, whatever A believes.
    let refused = a.block_on(fenced_put(&raw, &fence_a, "/meridian-test/probe", "x"));
    match refused {
        Err(Error::Fenced { stale, current }) => {
            assert_eq!(stale, a1.epoch);
            assert_eq!(current, b1.epoch, "the refusal names the current epoch");
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
    // A notices it was deposed (its key watch) and ends its term.
    assert!(ended_within(&a, &a1, Duration::from_secs(3)).is_some());
    match a.block_on(a_cursors.advance(a1.epoch, 0, vec![(uids[2], t(500))])) {
        Err(Error::Fenced { stale, current }) => {
            assert_eq!(stale, a1.epoch);
            assert_eq!(current, b1.epoch);
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
    // The new owner advances; its epoch is the only one that works.
    let b_cursors = Cursors::new(b.election().clone());
    assert!(matches!(
        b.block_on(b_cursors.advance(a1.epoch, 0, vec![(uids[2], t(500))])),
        Err(Error::Fenced { .. })
    ));
    b.block_on(b_cursors.advance(b1.epoch, 0, vec![(uids[2], t(500))]))
        .unwrap();
    assert_eq!(b.block_on(b_cursors.get(uids[2])).unwrap(), Some(t(500)));
    assert_eq!(
        b.block_on(b_cursors.get(uuid::Uuid::new_v4())).unwrap(),
        None
    );
}

#[test]
fn four_shards_two_nodes_each_shard_has_exactly_one_owner() {
    const SHARDS: u32 = 4;
    let etcd = Etcd::start();
    let mut a = Node::start(&etcd.endpoint(), "node-a");
    let mut b = Node::start(&etcd.endpoint(), "node-b");
    // Interleave the campaigns so both nodes have a chance at each shard.
    let mut pending = Vec::new();
    for shard in 0..SHARDS {
        if shard % 2 == 0 {
            pending.push((shard, 'a', a.campaign(shard)));
            pending.push((shard, 'b', b.campaign(shard)));
        } else {
            pending.push((shard, 'b', b.campaign(shard)));
            pending.push((shard, 'a', a.campaign(shard)));
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let mut owners: Vec<(u32, char, Epoch)> = Vec::new();
    let mut waiting = Vec::new();
    for (shard, node, rx) in pending {
        match rx.try_recv() {
            Ok(Ok(term)) => owners.push((shard, node, term.epoch)),
            Ok(Err(e)) => panic!("campaign failed: {e}"),
            Err(_) => waiting.push((shard, node, rx)),
        }
    }
    for shard in 0..SHARDS {
        let n = owners.iter().filter(|(s, _, _)| *s == shard).count();
        assert_eq!(n, 1, "shard {shard} has exactly one owner: {owners:?}");
        let (_, _, epoch) = owners.iter().find(|(s, _, _)| *s == shard).unwrap();
        let seen = a.block_on(a.election().current_epoch(shard)).unwrap();
        assert_eq!(seen, Some(*epoch), "etcd agrees on shard {shard}'s owner");
    }
    println!("owners: {owners:?}");
    // Crash a node that owns something; the other ends up owning all four.
    let victim = owners[0].1;
    let crashed_at = Instant::now();
    if victim == 'a' {
        a.crash();
    } else {
        b.crash();
    }
    let survivor = if victim == 'a' { &b } else { &a };
    let survivor_char = if victim == 'a' { 'b' } else { 'a' };
    for (shard, node, rx) in waiting {
        if node != survivor_char {
            continue;
        }
        let term = won(&rx, TTL + Duration::from_secs(3));
        let old = owners.iter().find(|(s, _, _)| *s == shard).unwrap().2;
        assert!(
            term.epoch > old,
            "shard {shard}: epoch increases on takeover"
        );
        owners.retain(|(s, _, _)| *s != shard);
        owners.push((shard, survivor_char, term.epoch));
    }
    println!("after crash: {owners:?} in {:?}", crashed_at.elapsed());
    assert!(crashed_at.elapsed() <= TTL + Duration::from_secs(1) + Duration::from_millis(500));
    for shard in 0..SHARDS {
        assert!(
            survivor.election().fence(shard).is_some(),
            "the survivor owns shard {shard}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_etcd_is_unavailable_in_bounded_time() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = Config::new(vec![format!("http://127.0.0.1:{port}")], "/nowhere");
    config.request_timeout = Duration::from_millis(500);
    let started = Instant::now();
    // Connecting is lazy: a node may start before etcd does.
    let conn = Connection::connect(&config).await.expect("lazy connect");
    let election = Election::new(conn.clone(), options());
    let err = election
        .campaign(&NodeId::from("lonely"), 0)
        .await
        .expect_err("no etcd, no term");
    assert!(err.retryable(), "{err:?} should be retryable");
    let err = meridian::adapters::etcd::Catalog::connect(conn, Default::default())
        .await
        .err()
        .expect("no etcd, no catalog");
    assert!(err.retryable(), "{err:?} should be retryable");
    assert!(started.elapsed() < Duration::from_secs(5));
}
