//! The etcd catalog's change feed across etcd trouble: it resumes from the last revision
//! it saw after etcd restarts (changes made while it was away arrive, in order, with no
//! full re-read), and re-reads everything after that revision was compacted away
//! (announcing exactly the difference). Must not depend on adapter internals beyond the
//! public API (`watch_stats` tells which path the feed took).
#![allow(clippy::disallowed_methods)] // tests may read the real clock

mod common;

use std::time::Duration;

use chrono::TimeZone;
use meridian::adapters::etcd::{Catalog as EtcdCatalog, CatalogOptions, Config, Connection};
use meridian::core::Timestamp;
use meridian::core::action::Action;
use meridian::core::ids::JobName;
use meridian::core::job::Job;
use meridian::core::policy::Policies;
use meridian::core::schedule::{Kind, ScheduleSpec};
use meridian::ports::{Catalog, CatalogEvent};
use tokio::sync::broadcast;

use common::etcd::Etcd;

const TEST_WITHIN: Duration = Duration::from_secs(40);
const EVENT_WITHIN: Duration = Duration::from_secs(15);
const PREFIX: &str = "/watch-test";

fn t(s: i64) -> Timestamp {
    chrono::Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(s)
}

fn job(id: &str) -> Job {
    Job {
        name: JobName::new("us-east", id),
        uid: uuid::Uuid::new_v4(),
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

/// A catalog whose feed waits `retry` before re-opening a broken watch, so the test
/// can make changes while it is away.
async fn catalog(endpoint: &str, retry: Duration) -> EtcdCatalog {
    let conn = Connection::connect(&Config::new(vec![endpoint.to_string()], PREFIX))
        .await
        .unwrap();
    let options = CatalogOptions {
        watch_retry_min: retry,
        watch_retry_max: retry,
        ..CatalogOptions::default()
    };
    EtcdCatalog::connect(conn, options).await.unwrap()
}

/// A short description of an event, for comparing sequences.
fn describe(ev: &CatalogEvent) -> String {
    match ev {
        CatalogEvent::Upserted(j) => format!("upsert {} r{}", j.name.job, j.revision),
        CatalogEvent::Deleted { name, .. } => format!("delete {}", name.job),
    }
}

async fn next(rx: &mut broadcast::Receiver<CatalogEvent>) -> CatalogEvent {
    tokio::time::timeout(EVENT_WITHIN, rx.recv())
        .await
        .expect("an event in time")
        .expect("no lag, not closed")
}

async fn restart(etcd: &mut Etcd) {
    tokio::task::block_in_place(|| etcd.restart());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_resumes_from_its_last_revision_after_an_etcd_restart() {
    let mut etcd = tokio::task::spawn_blocking(Etcd::start).await.unwrap();
    tokio::time::timeout(TEST_WITHIN, async {
        // The feed waits 3 s before re-opening a broken watch.
        let watched = catalog(&etcd.endpoint(), Duration::from_secs(3)).await;
        let mut rx = watched.watch();
        let j1 = watched.create_job(job("one"), None).await.unwrap();
        assert_eq!(describe(&next(&mut rx).await), "upsert one r1");

        restart(&mut etcd).await;
        // While the feed is away, another node changes the catalog.
        let writer = catalog(&etcd.endpoint(), Duration::from_millis(100)).await;
        writer.create_job(job("two"), None).await.unwrap();
        writer.update_job(j1.clone(), Some(1)).await.unwrap();
        writer.delete_job(&j1.name).await.unwrap();

        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(describe(&next(&mut rx).await));
        }
        assert_eq!(seen, ["upsert two r1", "upsert one r2", "delete one"]);
        let stats = watched.watch_stats();
        println!("feed after restart: {stats:?}");
        assert!(stats.reconnects >= 1, "the watch was re-opened");
        assert_eq!(
            stats.resyncs, 0,
            "resumed from its revision, no full re-read"
        );
    })
    .await
    .expect("test within time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_rereads_everything_after_a_compaction_and_emits_the_difference() {
    let mut etcd = tokio::task::spawn_blocking(Etcd::start).await.unwrap();
    tokio::time::timeout(TEST_WITHIN, async {
        let watched = catalog(&etcd.endpoint(), Duration::from_secs(4)).await;
        let mut rx = watched.watch();
        let one = watched.create_job(job("one"), None).await.unwrap();
        let two = watched.create_job(job("two"), None).await.unwrap();
        let three = watched.create_job(job("three"), None).await.unwrap();
        for _ in 0..3 {
            next(&mut rx).await;
        }

        restart(&mut etcd).await;
        // While the feed is away: delete one, update two, replace three (a new uid under
        // the same name), create five, and compact the history the feed would resume
        // from.
        let writer = catalog(&etcd.endpoint(), Duration::from_millis(100)).await;
        writer.delete_job(&one.name).await.unwrap();
        writer.update_job(two.clone(), None).await.unwrap();
        writer.delete_job(&three.name).await.unwrap();
        let three_again = writer.create_job(job("three"), None).await.unwrap();
        writer.create_job(job("five"), None).await.unwrap();
        let mut client = writer_client(&etcd.endpoint()).await;
        let rev = client
            .get("/", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        client
            .compact(
                rev,
                Some(etcd_client::CompactionOptions::new().with_physical()),
            )
            .await
            .unwrap();

        // Deletions first (one; three's old uid), then upserts in key order.
        let mut seen = Vec::new();
        let mut deleted_uids = Vec::new();
        for _ in 0..5 {
            let ev = next(&mut rx).await;
            if let CatalogEvent::Deleted { uid, .. } = &ev {
                deleted_uids.push(*uid);
            }
            seen.push(describe(&ev));
        }
        let (deletes, upserts) = seen.split_at(2);
        let mut deletes = deletes.to_vec();
        deletes.sort();
        assert_eq!(deletes, ["delete one", "delete three"]);
        assert_eq!(
            upserts,
            ["upsert five r1", "upsert three r1", "upsert two r2"]
        );
        assert!(
            deleted_uids.contains(&three.uid),
            "the replaced job's old uid goes"
        );
        assert!(!deleted_uids.contains(&three_again.uid));
        let stats = watched.watch_stats();
        println!("feed after compaction: {stats:?}");
        assert_eq!(stats.resyncs, 1, "one full re-read");
        // Nothing more: the re-read emitted only the difference.
        assert!(
            tokio::time::timeout(Duration::from_millis(500), rx.recv())
                .await
                .is_err()
        );
    })
    .await
    .expect("test within time");
}

async fn writer_client(endpoint: &str) -> etcd_client::Client {
    etcd_client::Client::connect([endpoint], None)
        .await
        .unwrap()
}
