//! A worker that panics mid-attempt is replaced by its region supervisor, and its
//! attempt is recorded `worker_lost` (then retried per the job's retry policy), not
//! lost. Runs the real actors over a real embedded store; only the executor is a test
//! double that panics for one job.
#![allow(clippy::disallowed_methods)] // tests measure against the real clock

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use meridian::actors::node_supervisor::{NodeSupervisor, NodeSupervisorMsg};
use meridian::actors::{Config, Deps};
use meridian::adapters::clock::SystemClock;
use meridian::adapters::embedded::{LocalElection, LocalQueues, Options, Store};
use meridian::core::action::{Action, Command};
use meridian::core::ids::{JobName, NodeId, RegionId};
use meridian::core::job::Job;
use meridian::core::policy::Policies;
use meridian::core::run::{AttemptStatus, State};
use meridian::core::schedule::{Kind, Once, ScheduleSpec};
use meridian::exec::{Attempt, Outcome, Status};
use meridian::ports::{Catalog, Clock, Executor, RunLog};
use tokio_util::sync::CancellationToken;

/// Panics on the first attempt of any command whose argv[0] is "panic"; succeeds
/// otherwise.
struct PanickyExecutor {
    panics: AtomicU32,
}

#[async_trait]
impl Executor for PanickyExecutor {
    async fn execute(
        &self,
        action: &Action,
        attempt: &Attempt<'_>,
        _: CancellationToken,
    ) -> Outcome {
        if let Action::Command(c) = action
            && c.argv[0] == "panic"
            && attempt.attempt == 1
        {
            self.panics.fetch_add(1, Ordering::SeqCst);
            panic!("the action blew up the worker");
        }
        Outcome {
            status: Status::Succeeded,
            summary: "ok".into(),
            output_tail: String::new(),
            exit_code: Some(0),
            http_status: None,
        }
    }
}

fn job(id: &str, argv0: &str, at: chrono::DateTime<chrono::Utc>, attempts: u32) -> Job {
    let mut policy = Policies::default();
    policy.retry.attempts_max = attempts;
    policy.retry.backoff_initial = Duration::from_millis(100);
    Job {
        name: JobName::new("local", id),
        uid: uuid::Uuid::new_v4(),
        description: String::new(),
        labels: Vec::new(),
        schedule: ScheduleSpec::new(Kind::Once(Once::Utc(at))),
        action: Action::Command(Command {
            argv: vec![argv0.into()],
            env: Vec::new(),
            working_dir: None,
        }),
        policy,
        paused: false,
        paused_at: None,
        resumed_at: None,
        create_time: at - chrono::Duration::seconds(1),
        update_time: at - chrono::Duration::seconds(1),
        revision: 1,
        tzdb_version: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_worker_is_replaced_and_its_attempt_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let executor = Arc::new(PanickyExecutor {
        panics: AtomicU32::new(0),
    });
    let regions = vec![RegionId::from("local")];
    let deps = Arc::new(Deps {
        node: NodeId::from("test"),
        clock: Arc::new(SystemClock),
        catalog: Arc::new(store.clone()),
        runs: Arc::new(store.clone()),
        election: Arc::new(LocalElection::new(store.clone())),
        queues: Arc::new(LocalQueues::new(&regions, 1024)),
        executor: executor.clone(),
        membership: None,
        guard: meridian::actors::clock_guardian::spawn(
            Arc::new(SystemClock),
            Vec::new(),
            None,
            Default::default(),
            tokio_util::sync::CancellationToken::new(),
        ),
        config: Config {
            regions,
            // One worker: if the dead one were not replaced, nothing would run again.
            workers_max: 1,
            dispatch_lead: Duration::from_millis(200),
            ..Config::default()
        },
        probe: None,
    });
    let (node, handle) = ractor::Actor::spawn(None, NodeSupervisor, deps.clone())
        .await
        .unwrap();

    let now = SystemClock.now();
    // Dies once, no retry: the run ends failed with a worker_lost attempt.
    let once = job(
        "dies",
        "panic",
        now + chrono::Duration::milliseconds(500),
        1,
    );
    // Dies once, then retried as attempt 2, which succeeds.
    let retried = job(
        "retried",
        "panic",
        now + chrono::Duration::milliseconds(700),
        3,
    );
    // An ordinary job after both: proves the pool was refilled.
    let after = job(
        "after",
        "true",
        now + chrono::Duration::milliseconds(900),
        1,
    );
    for j in [&once, &retried, &after] {
        store.create_job(j.clone(), None).await.unwrap();
    }

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (r_once, r_retried, r_after) = loop {
        let get = |uid| {
            let store = store.clone();
            async move { store.list_runs(uid, None, 10).await.unwrap() }
        };
        let (a, b, c) = (
            get(once.uid).await,
            get(retried.uid).await,
            get(after.uid).await,
        );
        let done =
            |v: &Vec<meridian::core::run::Run>| v.first().is_some_and(|r| r.state.is_terminal());
        if done(&a) && done(&b) && done(&c) {
            break (a[0].clone(), b[0].clone(), c[0].clone());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "runs did not finish: {a:?} {b:?} {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    assert_eq!(executor.panics.load(Ordering::SeqCst), 2);
    assert_eq!(r_once.state, State::Failed);
    assert_eq!(r_once.attempts.len(), 1);
    assert_eq!(r_once.attempts[0].status, Some(AttemptStatus::WorkerLost));
    assert_eq!(r_retried.state, State::Succeeded);
    let statuses: Vec<_> = r_retried.attempts.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        vec![
            Some(AttemptStatus::WorkerLost),
            Some(AttemptStatus::Succeeded)
        ]
    );
    assert_eq!(r_after.state, State::Succeeded);

    let status = node
        .call(NodeSupervisorMsg::Status, Some(Duration::from_secs(5)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.regions[0].workers_lost, 2);
    node.stop(None);
    let _ = handle.await;
}
