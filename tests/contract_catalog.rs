//! The catalog contract: one suite, `catalog_contract`, run against every `Catalog`
//! adapter (the embedded redb store, the etcd catalog on a real etcd, and the simulator's
//! in-memory catalog), so they cannot drift. It checks only what the port promises; it
//! must not reach into an adapter.
#![allow(clippy::disallowed_methods)] // tests may read the real clock

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::TimeZone;
use meridian::adapters::embedded::{Options, Store};
use meridian::adapters::etcd::{Catalog as EtcdCatalog, CatalogOptions, Config, Connection};
use meridian::adapters::sim::World;
use meridian::core::Timestamp;
use meridian::core::action::Action;
use meridian::core::ids::{JobName, NodeId, RegionId};
use meridian::core::job::Job;
use meridian::core::policy::Policies;
use meridian::core::schedule::{Kind, ScheduleSpec};
use meridian::ports::{Catalog, CatalogEvent, Error, JobFilter};
use tokio::sync::broadcast::error::RecvError;

use common::etcd::Etcd;

/// Every test finishes within this.
const TEST_WITHIN: Duration = Duration::from_secs(30);
/// Longest wait for one watch event.
const EVENT_WITHIN: Duration = Duration::from_secs(10);

fn t(s: i64) -> Timestamp {
    chrono::Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(s)
}

fn job(region: &str, id: &str, created: Timestamp) -> Job {
    Job {
        name: JobName::new(region, id),
        uid: uuid::Uuid::new_v4(),
        description: format!("job {id}"),
        labels: vec![("team".into(), "core".into())],
        schedule: ScheduleSpec::new(Kind::Interval {
            every: Duration::from_secs(60),
            anchor: created,
        }),
        action: Action::Noop,
        policy: Policies::default(),
        paused: false,
        paused_at: None,
        resumed_at: None,
        create_time: created,
        update_time: created,
        revision: 1,
        tzdb_version: String::new(),
    }
}

fn names(jobs: &[Job]) -> Vec<String> {
    jobs.iter().map(|j| j.name.to_string()).collect()
}

/// Every page of a listing, `page` jobs at a time, following the (create_time, name)
/// cursor of each page's last job.
async fn list_all(c: &dyn Catalog, filter: &JobFilter, page: usize) -> Vec<Job> {
    let mut out: Vec<Job> = Vec::new();
    loop {
        let after = out.last().map(|j| (j.create_time, j.name.clone()));
        let got = c.list_jobs(filter, after, page).await.expect("list");
        assert!(got.len() <= page, "a page holds at most its limit");
        let done = got.len() < page;
        out.extend(got);
        if done {
            return out;
        }
    }
}

/// Next event about `name`, skipping others (earlier steps' events may still arrive).
async fn next_about(
    rx: &mut tokio::sync::broadcast::Receiver<CatalogEvent>,
    name: &JobName,
) -> CatalogEvent {
    loop {
        let ev = tokio::time::timeout(EVENT_WITHIN, rx.recv())
            .await
            .expect("a watch event in time");
        match ev {
            Ok(ev) => {
                let about = match &ev {
                    CatalogEvent::Upserted(j) => &j.name,
                    CatalogEvent::Deleted { name, .. } => name,
                };
                if about == name {
                    return ev;
                }
            }
            Err(RecvError::Lagged(n)) => panic!("watch lagged by {n} in a tiny test"),
            Err(RecvError::Closed) => panic!("watch closed"),
        }
    }
}

/// The rules every catalog keeps.
async fn catalog_contract(c: &dyn Catalog) {
    // create; duplicate name
    let a = job("us-east", "alpha", t(10));
    assert_eq!(c.create_job(a.clone(), None).await.expect("create"), a);
    let again = job("us-east", "alpha", t(11));
    assert!(
        matches!(
            c.create_job(again, None).await,
            Err(Error::AlreadyExists(_))
        ),
        "a second job under the same name is AlreadyExists"
    );

    // request_id makes a retried create idempotent, and is bound to its job
    let b = job("us-east", "bravo", t(20));
    let created = c
        .create_job(b.clone(), Some("req-bravo".into()))
        .await
        .expect("create with request id");
    assert_eq!(created.uid, b.uid);
    let mut retry = b.clone();
    retry.uid = uuid::Uuid::new_v4(); // a retry mints a new uid before calling
    let replayed = c
        .create_job(retry, Some("req-bravo".into()))
        .await
        .expect("a retried create answers with the first job");
    assert_eq!(
        replayed.uid, b.uid,
        "the retry returns the job the first call made"
    );
    let other = job("us-east", "charlie", t(30));
    assert!(
        matches!(
            c.create_job(other, Some("req-bravo".into())).await,
            Err(Error::Conflict(_))
        ),
        "a request id reused for another job is a Conflict"
    );

    // get
    assert_eq!(c.get_job(&a.name).await.unwrap(), Some(a.clone()));
    assert_eq!(
        c.get_job(&JobName::new("us-east", "nope")).await.unwrap(),
        None
    );

    // listing order (create_time, name), across regions and within one, paginated
    let more = [
        job("eu-west", "delta", t(5)),
        job("us-east", "echo", t(40)),
        job("eu-west", "foxtrot", t(40)), // same instant as echo: name breaks the tie
        job("us-east", "golf", t(1)),
        job("eu-west", "hotel", t(50)),
    ];
    for j in &more {
        c.create_job(j.clone(), None).await.expect("create");
    }
    let mut expected: Vec<Job> = vec![a.clone(), b.clone()];
    expected.extend(more.iter().cloned());
    expected.sort_by_key(|j| {
        (
            j.create_time,
            j.name.region.to_string() + "/" + j.name.job.as_str(),
        )
    });
    for page in [1, 2, 3, 100] {
        let all = list_all(c, &JobFilter::default(), page).await;
        assert_eq!(names(&all), names(&expected), "all regions, page {page}");
    }
    assert!(
        c.list_jobs(&JobFilter::default(), None, 0)
            .await
            .expect("list")
            .is_empty(),
        "a page of 0 holds nothing"
    );
    let eu = JobFilter {
        region: Some(RegionId::from("eu-west")),
    };
    let want_eu: Vec<Job> = expected
        .iter()
        .filter(|j| j.name.region.as_str() == "eu-west")
        .cloned()
        .collect();
    for page in [1, 2, 10] {
        assert_eq!(
            names(&list_all(c, &eu, page).await),
            names(&want_eu),
            "one region, page {page}"
        );
    }

    // conditional update
    let mut a2 = a.clone();
    a2.description = "changed".into();
    a2.create_time = t(999); // the catalog keeps the original create time
    let updated = c
        .update_job(a2.clone(), Some(a.revision))
        .await
        .expect("update at the expected revision");
    assert_eq!(updated.revision, a.revision + 1);
    assert_eq!(updated.create_time, a.create_time);
    assert_eq!(updated.description, "changed");
    assert_eq!(c.get_job(&a.name).await.unwrap(), Some(updated.clone()));
    assert!(
        matches!(
            c.update_job(a2.clone(), Some(a.revision)).await,
            Err(Error::Conflict(_))
        ),
        "a stale expected revision is a Conflict"
    );
    let unconditional = c.update_job(a2.clone(), None).await.expect("update");
    assert_eq!(unconditional.revision, a.revision + 2);
    let mut stranger = a2.clone();
    stranger.uid = uuid::Uuid::new_v4();
    assert!(
        matches!(c.update_job(stranger, None).await, Err(Error::Conflict(_))),
        "an update of a replaced job (other uid) is a Conflict"
    );
    assert!(
        matches!(
            c.update_job(job("us-east", "nope", t(1)), None).await,
            Err(Error::NotFound(_))
        ),
        "updating a missing job is NotFound"
    );

    // delete
    let deleted = c.delete_job(&a.name).await.expect("delete");
    assert_eq!(deleted.uid, a.uid);
    assert_eq!(c.get_job(&a.name).await.unwrap(), None);
    assert!(matches!(
        c.delete_job(&a.name).await,
        Err(Error::NotFound(_))
    ));
    expected.retain(|j| j.name != a.name);
    assert_eq!(
        names(&list_all(c, &JobFilter::default(), 2).await),
        names(&expected),
        "a deleted job leaves the listing"
    );
    let all: BTreeSet<String> = c
        .all_jobs()
        .await
        .unwrap()
        .iter()
        .map(|j| j.name.to_string())
        .collect();
    assert_eq!(all, names(&expected).into_iter().collect());

    // the watch sees a create, an update and a delete, in order
    let mut rx = c.watch();
    let w = job("ap-south", "watched", t(60));
    c.create_job(w.clone(), None).await.unwrap();
    let mut w2 = w.clone();
    w2.paused = true;
    let w2 = c.update_job(w2, Some(w.revision)).await.unwrap();
    c.delete_job(&w.name).await.unwrap();
    match next_about(&mut rx, &w.name).await {
        CatalogEvent::Upserted(j) => assert_eq!(*j, w, "first the create"),
        other => panic!("expected the create, got {other:?}"),
    }
    match next_about(&mut rx, &w.name).await {
        CatalogEvent::Upserted(j) => {
            assert_eq!(*j, w2, "then the update");
            assert!(j.paused);
        }
        other => panic!("expected the update, got {other:?}"),
    }
    match next_about(&mut rx, &w.name).await {
        CatalogEvent::Deleted { name, uid } => {
            assert_eq!(name, w.name);
            assert_eq!(uid, w.uid, "then the delete, naming the uid");
        }
        other => panic!("expected the delete, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_keeps_the_catalog_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    tokio::time::timeout(TEST_WITHIN, catalog_contract(&store))
        .await
        .expect("contract within time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_catalog_keeps_the_catalog_contract() {
    let etcd = tokio::task::spawn_blocking(Etcd::start).await.unwrap();
    tokio::time::timeout(TEST_WITHIN, async {
        let conn = Connection::connect(&Config::new(vec![etcd.endpoint()], "/contract"))
            .await
            .expect("connect");
        let catalog = EtcdCatalog::connect(conn, CatalogOptions::default())
            .await
            .expect("catalog");
        catalog_contract(&catalog).await;
    })
    .await
    .expect("contract within time");
}

#[tokio::test(start_paused = true)]
async fn sim_catalog_keeps_the_catalog_contract() {
    let world = World::new(t(0));
    let catalog = world.node(&NodeId::from("n1")).catalog();
    tokio::time::timeout(TEST_WITHIN, catalog_contract(catalog.as_ref()))
        .await
        .expect("contract within time");
}
