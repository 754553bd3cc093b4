//! Membership through etcd leases against a real etcd: nodes register the regions they
//! host; a crashed node's regions disappear within the TTL; `leave` withdraws at once.
//! Each node runs on its own runtime so a crash stops its keep-alives without a goodbye.
#![allow(clippy::disallowed_methods)] // tests may read the real clock

mod common;

use std::time::{Duration, Instant};

use meridian::adapters::etcd::{Config, Connection, Membership, MembershipOptions};
use meridian::core::ids::{NodeId, RegionId};
use meridian::ports::Membership as _;
use tokio::runtime::Runtime;

use common::etcd::Etcd;

const TTL: Duration = Duration::from_secs(2);

struct Node {
    rt: Option<Runtime>,
    membership: Membership,
}

impl Node {
    fn join(endpoint: &str, name: &str, regions: &[&str]) -> Node {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let config = Config::new(vec![endpoint.to_string()], "/members-test");
        let membership = rt.block_on(async {
            let m = Membership::new(
                Connection::connect(&config).await.unwrap(),
                MembershipOptions { ttl: TTL },
            );
            let regions: Vec<RegionId> = regions.iter().map(|r| RegionId::from(*r)).collect();
            m.join(
                &NodeId::from(name),
                &regions,
                &format!("http://{name}:7443"),
            )
            .await
            .expect("join");
            m
        });
        Node {
            rt: Some(rt),
            membership,
        }
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.as_ref().expect("alive").block_on(f)
    }

    fn crash(&mut self) {
        self.rt.take().expect("alive").shutdown_background();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn regions(v: &[RegionId]) -> Vec<&str> {
    v.iter().map(|r| r.as_str()).collect()
}

#[test]
fn members_come_and_go_with_their_leases() {
    let etcd = Etcd::start();
    let mut a = Node::join(&etcd.endpoint(), "node-a", &["us-east", "eu-west"]);
    let b = Node::join(&etcd.endpoint(), "node-b", &["eu-west"]);

    let live = b.block_on(b.membership.live_regions()).unwrap();
    assert_eq!(regions(&live), ["eu-west", "us-east"]);
    let eu = b
        .block_on(b.membership.members(&RegionId::from("eu-west")))
        .unwrap();
    let nodes: Vec<&str> = eu.iter().map(|m| m.node.as_str()).collect();
    assert_eq!(nodes, ["node-a", "node-b"]);
    assert_eq!(eu[0].endpoint, "http://node-a:7443");

    // Registrations outlive several renewals.
    std::thread::sleep(TTL + Duration::from_millis(500));
    let live = b.block_on(b.membership.live_regions()).unwrap();
    assert_eq!(regions(&live), ["eu-west", "us-east"]);

    // A crashed node's regions go within the TTL (plus etcd's expiry sweep).
    let crashed_at = Instant::now();
    a.crash();
    let gone_after = loop {
        let live = b.block_on(b.membership.live_regions()).unwrap();
        if regions(&live) == ["eu-west"] {
            break crashed_at.elapsed();
        }
        assert!(
            crashed_at.elapsed() < TTL + Duration::from_secs(2),
            "us-east still live {:?} after the crash",
            crashed_at.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("crashed member gone after {gone_after:?} (ttl {TTL:?})");
    let eu = b
        .block_on(b.membership.members(&RegionId::from("eu-west")))
        .unwrap();
    assert_eq!(eu.len(), 1);

    // Leaving withdraws at once.
    b.block_on(b.membership.leave()).unwrap();
    assert!(b.block_on(b.membership.live_regions()).unwrap().is_empty());
}
