//! Mesh mode with real processes (issue 3, "Tests"): a real etcd, a real Redis (AOF,
//! `appendfsync always`) and several `meridian serve --etcd ... --redis ...` nodes per
//! test. Jobs fire every second and append their firing id to a file; the faults are
//! real signals (SIGKILL, SIGSTOP/SIGCONT) and real server restarts. From the file and
//! the run records: no firing runs twice, every firing due is run or recorded with a
//! reason, a new owner takes over within the lease TTL plus slack, and jobs of a dead
//! region follow their `region_loss` policy.
//!
//! Each test starts its own etcd and Redis and uses its own cluster prefix, so the
//! tests are isolated and may run in parallel; each is bounded in time.

#![allow(clippy::disallowed_methods)] // tests measure against the real clock

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::mesh::{
    Mesh, TickJob, account, attempts, bounded, cli_create_tick_job, create_tick_jobs, fate_between,
    read_fired, refused_stale_epoch, run_at, runs_of, sleep_until, state_name, unix_s,
    wait_all_fired, whole_second_after,
};

/// The lease TTL every test's mesh runs with.
const LEASE_TTL: Duration = Duration::from_secs(2);
/// The target is TTL + 1 s (DESIGN.md, guarantee 4); 2 s more of slack for a loaded
/// 2-core test machine. The measured figure is printed.
const TAKEOVER_WITHIN: Duration = Duration::from_secs(LEASE_TTL.as_secs() + 3);
/// A whole test, setup included.
const TEST_WITHIN: Duration = Duration::from_secs(150);
/// After the jobs' end, time for the last attempts to finish and be recorded.
const SETTLE_S: i64 = 5;

fn secs(s: i64) -> chrono::Duration {
    chrono::Duration::seconds(s)
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:02}")).collect()
}

fn ms(d: chrono::Duration) -> i64 {
    d.num_milliseconds()
}

/// Blocking harness calls (process start, server restart) inside the async test.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// When the first line was written for a firing that ran under an epoch newer than
/// `epoch_old` (the new owner's first firing, as the target saw it).
fn first_line_under_newer_epoch(
    out: &std::path::Path,
    runs: &HashMap<String, Vec<meridian::api::pb::Run>>,
    epoch_old: u64,
) -> Option<f64> {
    let newer: std::collections::HashSet<(String, DateTime<Utc>)> = attempts(runs)
        .into_iter()
        .filter(|a| a.epoch > epoch_old)
        .map(|a| (a.job, a.scheduled))
        .collect();
    read_fired(out)
        .into_iter()
        .filter(|f| newer.contains(&(f.job.clone(), f.scheduled)))
        .map(|f| f.written_s)
        .reduce(f64::min)
}

// ------------------------------------------------------------------ 1. failover

/// Three nodes (two in us-east, one in eu-west), one shard, 50 jobs every second;
/// SIGKILL the owner (a us-east node, so its region stays live): a new owner appears
/// and fires within the TTL plus slack, the firings due meanwhile run late, and across
/// the whole run no firing runs twice and none is silently lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_after_owner_sigkill_runs_every_firing_once() {
    bounded(TEST_WITHIN, async {
        let mut mesh = blocking(|| Mesh::start("failover", 1, LEASE_TTL));
        let out = mesh.path("fired.txt");
        // The us-east nodes first, so the owner is in us-east and its region survives
        // its death with the other us-east node.
        blocking(|| mesh.start_nodes(&[("n1", &["us-east"]), ("n2", &["us-east"])]));
        let (first, _) = mesh.wait_owner("n1", 0, Duration::from_secs(20)).await;
        assert!(first == "n1" || first == "n2", "owner {first}");
        blocking(|| mesh.start_nodes(&[("n3", &["eu-west"])]));

        let anchor = whole_second_after(Duration::from_secs(3));
        let end = anchor + secs(22);
        let mut jobs = create_tick_jobs(
            &mesh.endpoint("n1"),
            "us-east",
            &ids("u", 40),
            &out,
            anchor,
            end,
        )
        .await;
        jobs.extend(
            create_tick_jobs(
                &mesh.endpoint("n3"),
                "eu-west",
                &ids("e", 10),
                &out,
                anchor,
                end,
            )
            .await,
        );
        wait_all_fired(&out, &jobs, 2, Duration::from_secs(20)).await;

        let status = mesh.status("n3").await.expect("cluster status through n3");
        let (owner, epoch_old) = status.owner(0).expect("shard 0 has an owner");
        assert!(
            owner == "n1" || owner == "n2",
            "the owner is a us-east node: {}",
            status.brief()
        );
        let survivor = if owner == "n1" { "n2" } else { "n1" };
        eprintln!("[failover] before the kill: {}", status.brief());

        let killed_at = Utc::now();
        let killed = Instant::now();
        eprintln!("[failover] SIGKILL {owner} at {killed_at}");
        mesh.node_mut(&owner).kill9();
        let (after, seen, _) = mesh
            .wait_status(survivor, LEASE_TTL + Duration::from_secs(15), |s| {
                s.owner(0).is_some_and(|(n, e)| n != owner && e > epoch_old)
            })
            .await
            .unwrap_or_else(|| panic!("no new owner of shard 0 after killing {owner}"));
        let takeover = seen - killed;
        let (new_owner, epoch_new) = after.owner(0).expect("checked");
        eprintln!(
            "[failover] killed {owner} (epoch {epoch_old}); {new_owner} owns shard 0 at epoch \
             {epoch_new} after {} ms (status polled every 100 ms)",
            takeover.as_millis()
        );

        // Keep firing until the jobs end, then let the last attempts finish.
        sleep_until(end + secs(SETTLE_S)).await;
        let fired = read_fired(&out);
        let runs = runs_of(&mesh.endpoint(survivor), &jobs).await;
        let acc = account(&jobs, &fired, &runs, end, &[owner.as_str()]);
        eprintln!("[failover] {}", acc.summary());

        let first_new = attempts(&runs)
            .into_iter()
            .filter(|a| a.epoch > epoch_old)
            .filter_map(|a| a.start)
            .min()
            .expect("some attempt ran under the new owner's epoch");
        let gap = first_new - killed_at;
        let gap_target = first_line_under_newer_epoch(&out, &runs, epoch_old)
            .map(|w| ((w - unix_s(killed_at)) * 1000.0) as i64);
        let gap_fates = fate_between(&jobs, &fired, &runs, killed_at, killed_at + secs(4));
        eprintln!(
            "[failover] MEASURED: takeover seen in status after {} ms; first attempt under \
             the new epoch started {} ms after SIGKILL (first line at the target {:?} ms); \
             firings due in the 4 s after the kill: {gap_fates:?}",
            takeover.as_millis(),
            ms(gap),
            gap_target
        );

        acc.assert_once_and_complete();
        assert!(
            takeover <= TAKEOVER_WITHIN,
            "a new owner within {TAKEOVER_WITHIN:?}, took {takeover:?}"
        );
        assert!(
            gap <= chrono::Duration::from_std(TAKEOVER_WITHIN).expect("small"),
            "the new owner fired within {TAKEOVER_WITHIN:?} of the kill, took {} ms",
            ms(gap)
        );
        // Guarantee 4: what fell due during the failover runs late, not never (a
        // `failed` attempt is one whose worker died with the killed node).
        for state in gap_fates.keys() {
            assert!(
                state == "ran" || state == "failed",
                "firings due during the failover ended {gap_fates:?}"
            );
        }
    })
    .await;
}

// ------------------------------------------------------------------ 2. paused owner

/// SIGSTOP the owner for 3× its lease: the other node takes over; after SIGCONT the old
/// owner learns it lost, dispatches nothing under its old epoch for firings it could
/// not have handed out before it froze, and nothing runs twice or goes missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_owner_is_fenced_after_sigcont() {
    bounded(TEST_WITHIN, async {
        let mut mesh = blocking(|| Mesh::start("paused", 1, LEASE_TTL));
        let out = mesh.path("fired.txt");
        blocking(|| mesh.start_nodes(&[("p1", &["us-east"]), ("p2", &["us-east"])]));
        mesh.wait_owner("p1", 0, Duration::from_secs(20)).await;

        let anchor = whole_second_after(Duration::from_secs(3));
        let end = anchor + secs(24);
        let jobs = create_tick_jobs(
            &mesh.endpoint("p1"),
            "us-east",
            &ids("j", 20),
            &out,
            anchor,
            end,
        )
        .await;
        wait_all_fired(&out, &jobs, 2, Duration::from_secs(20)).await;

        let status = mesh.status("p1").await.expect("cluster status");
        let (owner, epoch_old) = status.owner(0).expect("shard 0 has an owner");
        let other = if owner == "p1" { "p2" } else { "p1" };
        eprintln!("[paused] before SIGSTOP: {}", status.brief());

        let stopped_at = Utc::now();
        eprintln!("[paused] SIGSTOP {owner} at {stopped_at}");
        let stopped = Instant::now();
        mesh.node_mut(&owner).sigstop();
        let (after, seen, _) = mesh
            .wait_status(other, LEASE_TTL + Duration::from_secs(15), |s| {
                s.owner(0).is_some_and(|(n, e)| n != owner && e > epoch_old)
            })
            .await
            .unwrap_or_else(|| panic!("no new owner while {owner} is stopped"));
        let takeover = seen - stopped;
        let (new_owner, epoch_new) = after.owner(0).expect("checked");
        eprintln!(
            "[paused] stopped {owner} (epoch {epoch_old}); {new_owner} owns shard 0 at epoch \
             {epoch_new} after {} ms",
            takeover.as_millis()
        );

        tokio::time::sleep((stopped + LEASE_TTL * 3).saturating_duration_since(Instant::now()))
            .await;
        mesh.node_mut(&owner).sigcont();
        let resumed_at = Utc::now();
        eprintln!(
            "[paused] SIGCONT {owner} after {} ms stopped",
            stopped.elapsed().as_millis()
        );
        // The resumed node sees (and reports) the new owner, not itself.
        let seen_by_old = mesh
            .wait_status(&owner, Duration::from_secs(10), |s| {
                s.owner(0)
                    .is_some_and(|(n, e)| n != owner && e >= epoch_new)
            })
            .await;
        let status_old = mesh.status(&owner).await;

        sleep_until(end + secs(SETTLE_S)).await;
        let fired = read_fired(&out);
        let runs = runs_of(&mesh.endpoint(other), &jobs).await;
        let acc = account(&jobs, &fired, &runs, end, &[owner.as_str()]);
        let all = attempts(&runs);
        let old_epoch_max_scheduled = all
            .iter()
            .filter(|a| a.epoch == epoch_old)
            .map(|a| a.scheduled)
            .max();
        let old_after_cont: Vec<String> = all
            .iter()
            .filter(|a| a.epoch == epoch_old && a.start.is_some_and(|s| s > resumed_at))
            .map(|a| {
                format!(
                    "{} at {} on {} started {:?}",
                    a.job, a.scheduled, a.node, a.start
                )
            })
            .collect();
        let refused_other = refused_stale_epoch(&mesh.endpoint(other)).await;
        let refused_old = refused_stale_epoch(&mesh.endpoint(&owner)).await;
        let log_refusals: usize = mesh
            .nodes
            .iter()
            .map(|n| {
                n.log_text()
                    .lines()
                    .filter(|l| {
                        let l = l.to_ascii_lowercase();
                        l.contains("stale") || l.contains("refus")
                    })
                    .count()
            })
            .sum();
        for n in &mesh.nodes {
            let text = n.log_text();
            let sample: Vec<&str> = text
                .lines()
                .filter(|l| {
                    let l = l.to_ascii_lowercase();
                    l.contains("stale") || l.contains("refus")
                })
                .take(2)
                .collect();
            if !sample.is_empty() {
                eprintln!("[paused] {} log, refusals (first 2): {sample:#?}", n.name);
            }
        }
        eprintln!(
            "[paused] {}; takeover {} ms; latest firing under the old epoch scheduled {:?} \
             ms after SIGSTOP; old-epoch attempts started after SIGCONT: {old_after_cont:?}; \
             refused_stale_epoch {other}={refused_other:?} {owner}={refused_old:?}; log lines \
             mentioning stale/refus: {log_refusals}; status through {owner} after SIGCONT: {}",
            acc.summary(),
            takeover.as_millis(),
            old_epoch_max_scheduled.map(|t| ms(t - stopped_at)),
            status_old.map(|s| s.brief()).unwrap_or_default()
        );

        acc.assert_once_and_complete();
        assert!(
            takeover <= TAKEOVER_WITHIN,
            "a new owner within {TAKEOVER_WITHIN:?} of SIGSTOP, took {takeover:?}"
        );
        assert!(
            seen_by_old.is_some(),
            "after SIGCONT, {owner} reports another node at epoch {epoch_new} or later as the owner"
        );
        // Frozen at `stopped_at`, the old owner could have handed out only firings due
        // within its dispatch lead (1 s) of it; 2 s more of slack. Anything later under
        // its epoch was dispatched after SIGCONT and should have been fenced.
        let stale: Vec<String> = all
            .iter()
            .filter(|a| a.epoch == epoch_old && a.scheduled > stopped_at + secs(3))
            .map(|a| {
                format!(
                    "{} at {} on {} (attempt {})",
                    a.job, a.scheduled, a.node, a.number
                )
            })
            .collect();
        assert!(
            stale.is_empty(),
            "the old owner's dispatches after SIGCONT ran: {stale:#?}"
        );
    })
    .await;
}

// ------------------------------------------------------------------ 3. restarts

/// Run 20 jobs on two us-east nodes, apply `outage` mid-run, and check: firing resumes
/// within a bound after the outage, nothing runs twice, nothing due is lost.
async fn outage_mid_run(test: &str, outage: impl FnOnce(&mut Mesh)) {
    let mut mesh = blocking(|| Mesh::start(test, 1, LEASE_TTL));
    let out = mesh.path("fired.txt");
    blocking(|| mesh.start_nodes(&[("r1", &["us-east"]), ("r2", &["us-east"])]));
    mesh.wait_owner("r1", 0, Duration::from_secs(20)).await;

    let anchor = whole_second_after(Duration::from_secs(3));
    let end = anchor + secs(24);
    let jobs: Vec<TickJob> = create_tick_jobs(
        &mesh.endpoint("r1"),
        "us-east",
        &ids("j", 20),
        &out,
        anchor,
        end,
    )
    .await;
    wait_all_fired(&out, &jobs, 2, Duration::from_secs(20)).await;
    let before = mesh.status("r1").await.map(|s| s.brief());

    let down_at = Utc::now();
    blocking(|| outage(&mut mesh));
    let back_at = Utc::now();
    eprintln!("[{test}] outage from {down_at} to {back_at}");
    let back = Instant::now();
    // Resumed: a line for a firing due after the server came back.
    let resumed = common::eventually(Duration::from_secs(25), || async {
        read_fired(&out)
            .iter()
            .any(|f| f.scheduled >= back_at)
            .then_some(Instant::now())
    })
    .await;
    let after = mesh
        .wait_status("r1", Duration::from_secs(10), |s| s.owner(0).is_some())
        .await
        .map(|(s, _, _)| s.brief());
    eprintln!(
        "[{test}] outage {} ms; first firing due after it ran {:?} ms after it ended; \
         before: {before:?}; after: {after:?}",
        ms(back_at - down_at),
        resumed.map(|r| (r - back).as_millis())
    );
    let resumed = resumed.unwrap_or_else(|| panic!("firing did not resume within 25 s"));

    sleep_until(end + secs(SETTLE_S)).await;
    let fired = read_fired(&out);
    let runs = runs_of(&mesh.endpoint("r1"), &jobs).await;
    let acc = account(&jobs, &fired, &runs, end, &[]);
    let outage_fates = fate_between(&jobs, &fired, &runs, down_at, back_at + secs(1));
    eprintln!(
        "[{test}] {}; firings due during the outage: {outage_fates:?}",
        acc.summary()
    );
    acc.assert_once_and_complete();
    assert!(
        resumed - back <= Duration::from_secs(15),
        "firing resumed within 15 s of the restart, took {:?}",
        resumed - back
    );
}

/// Redis SIGKILLed mid-run and restarted on the same port and AOF after 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_mid_run_resumes_without_loss_or_duplicates() {
    bounded(TEST_WITHIN, async {
        outage_mid_run("redis-restart", |mesh| {
            mesh.redis.kill9();
            std::thread::sleep(Duration::from_secs(2));
            mesh.redis.restart();
        })
        .await;
    })
    .await;
}

/// The etcd member SIGKILLed mid-run and restarted on the same data dir after 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restart_mid_run_resumes_without_loss_or_duplicates() {
    bounded(TEST_WITHIN, async {
        outage_mid_run("etcd-restart", |mesh| {
            mesh.etcd.kill9();
            std::thread::sleep(Duration::from_secs(1));
            mesh.etcd.restart();
        })
        .await;
    })
    .await;
}

// ------------------------------------------------------------------ 4. shards

/// Two nodes, four shards: both own some; kill one, the other owns all four within
/// the TTL plus slack, and the jobs on every shard keep firing once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_four_shards_and_one_takes_all_when_the_other_dies() {
    bounded(TEST_WITHIN, async {
        let mut mesh = blocking(|| Mesh::start("shards", 4, LEASE_TTL));
        let out = mesh.path("fired.txt");
        let started = Instant::now();
        blocking(|| mesh.start_nodes(&[("s1", &["us-east"]), ("s2", &["us-east"])]));
        let balanced = mesh
            .wait_status("s1", Duration::from_secs(15), |s| {
                let owned = s.owned_by_node();
                s.shards().len() == 4
                    && owned.values().sum::<usize>() == 4
                    && owned.get("s1").is_some_and(|n| *n >= 1)
                    && owned.get("s2").is_some_and(|n| *n >= 1)
            })
            .await;
        let last = mesh.status("s1").await.map(|s| s.brief());
        let (balanced, at, _) = balanced.unwrap_or_else(|| {
            panic!("both nodes did not each own a shard within 15 s of starting; last: {last:?}")
        });
        eprintln!(
            "[shards] balanced {} ms after start: {}",
            (at - started).as_millis(),
            balanced.brief()
        );

        let anchor = whole_second_after(Duration::from_secs(2));
        let end = anchor + secs(14);
        let jobs = create_tick_jobs(
            &mesh.endpoint("s1"),
            "us-east",
            &ids("j", 8),
            &out,
            anchor,
            end,
        )
        .await;
        wait_all_fired(&out, &jobs, 1, Duration::from_secs(15)).await;

        let killed = Instant::now();
        eprintln!("[shards] SIGKILL s1 at {}", Utc::now());
        mesh.node_mut("s1").kill9();
        let all = mesh
            .wait_status("s2", LEASE_TTL + Duration::from_secs(15), |s| {
                s.shards().len() == 4 && s.owned_by_node().get("s2") == Some(&4)
            })
            .await;
        let last = mesh.status("s2").await.map(|s| s.brief());
        let (all, at, _) =
            all.unwrap_or_else(|| panic!("s2 did not take all four shards; last: {last:?}"));
        let took = at - killed;
        eprintln!(
            "[shards] MEASURED: s2 owns all four {} ms after s1's SIGKILL: {}",
            took.as_millis(),
            all.brief()
        );

        sleep_until(end + secs(SETTLE_S)).await;
        let fired = read_fired(&out);
        let runs = runs_of(&mesh.endpoint("s2"), &jobs).await;
        let acc = account(&jobs, &fired, &runs, end, &["s1"]);
        eprintln!("[shards] {}", acc.summary());
        assert!(
            took <= TAKEOVER_WITHIN,
            "s2 owned all four within {TAKEOVER_WITHIN:?}, took {took:?}"
        );
        acc.assert_once_and_complete();
    })
    .await;
}

// ------------------------------------------------------------------ 5. region loss

/// Jobs homed in eu-west, two with `region_loss pause` and one with
/// `failover:us-east`; every eu-west node SIGKILLed. Once eu-west's membership lease
/// expires, the pause jobs' firings are recorded `paused` with a reason naming the
/// region, and the failover job's firings run in us-east.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_loss_pauses_or_fails_over_per_job() {
    bounded(TEST_WITHIN, async {
        let mut mesh = blocking(|| Mesh::start("region-loss", 1, LEASE_TTL));
        let out = mesh.path("fired.txt");
        // us-east first, so the owner survives the loss of eu-west.
        blocking(|| mesh.start_nodes(&[("u1", &["us-east"])]));
        mesh.wait_owner("u1", 0, Duration::from_secs(20)).await;
        blocking(|| mesh.start_nodes(&[("e1", &["eu-west"]), ("e2", &["eu-west"])]));
        mesh.wait_status("u1", Duration::from_secs(10), |s| {
            s.region_live("eu-west") == Some(true)
        })
        .await
        .expect("eu-west live");

        let anchor = whole_second_after(Duration::from_secs(4));
        let end = anchor + secs(20);
        let e1 = mesh.endpoint("e1");
        let mut pause_jobs = Vec::new();
        for id in ["p1", "p2"] {
            pause_jobs.push(
                cli_create_tick_job(
                    &e1,
                    "eu-west",
                    id,
                    &out,
                    anchor,
                    end,
                    &["--region-loss", "pause"],
                )
                .await,
            );
        }
        let failover_job = cli_create_tick_job(
            &e1,
            "eu-west",
            "f1",
            &out,
            anchor,
            end,
            &["--region-loss", "failover:us-east"],
        )
        .await;
        let mut jobs = pause_jobs.clone();
        jobs.push(failover_job.clone());
        wait_all_fired(&out, &jobs, 2, Duration::from_secs(20)).await;

        let killed_at = Utc::now();
        let killed = Instant::now();
        eprintln!("[region-loss] SIGKILL e1 and e2 at {killed_at}");
        mesh.node_mut("e1").kill9();
        mesh.node_mut("e2").kill9();
        let dead = mesh
            // A region with no live node may be listed `live: false` or not at all.
            .wait_status("u1", LEASE_TTL + Duration::from_secs(15), |s| {
                s.region_live("eu-west") != Some(true)
            })
            .await;
        let last = mesh.status("u1").await.map(|s| s.brief());
        let (_, dead_seen, dead_at) =
            dead.unwrap_or_else(|| panic!("eu-west never reported not live; last: {last:?}"));
        eprintln!(
            "[region-loss] eu-west not live {} ms after killing its nodes",
            (dead_seen - killed).as_millis()
        );

        sleep_until(end + secs(SETTLE_S)).await;
        let fired = read_fired(&out);
        let runs = runs_of(&mesh.endpoint("u1"), &jobs).await;
        let acc = account(&jobs, &fired, &runs, end, &["e1", "e2"]);
        // The owner decides with the dispatch lead (1 s) ahead, on a view of the live
        // regions at most 1 s old; 1 s more of slack.
        let decided = dead_at + secs(3);
        for j in &jobs {
            eprintln!(
                "[region-loss] {}: between the kill and the region's death {:?}; after {:?}",
                j.id,
                fate_between(
                    std::slice::from_ref(j),
                    &fired,
                    &runs,
                    killed_at,
                    dead_at + secs(2)
                ),
                fate_between(std::slice::from_ref(j), &fired, &runs, decided, end)
            );
        }
        assert!(
            acc.duplicates.is_empty(),
            "ran twice: {:#?}",
            acc.duplicates
        );

        let empty = Vec::new();
        for j in &pause_jobs {
            let rs = runs.get(&j.id).unwrap_or(&empty);
            let mut paused = 0;
            let mut t = decided.max(j.anchor);
            t = DateTime::<Utc>::from_timestamp(t.timestamp() + 1, 0).expect("in range");
            while t < j.end {
                assert!(
                    !fired.iter().any(|f| f.job == j.id && f.scheduled == t),
                    "{} (region_loss pause) ran at {t} after eu-west died",
                    j.id
                );
                let r = run_at(rs, t)
                    .unwrap_or_else(|| panic!("{} at {t}: no run record after eu-west died", j.id));
                assert_eq!(
                    state_name(r),
                    "paused",
                    "{} at {t}: reason {:?}",
                    j.id,
                    r.reason
                );
                assert!(
                    r.reason.contains("eu-west"),
                    "{} at {t}: the paused reason names the region: {:?}",
                    j.id,
                    r.reason
                );
                paused += 1;
                t += secs(1);
            }
            assert!(paused >= 3, "{}: {paused} paused firings checked", j.id);
        }

        let rs = runs.get(&failover_job.id).unwrap_or(&empty);
        let mut moved = 0;
        let mut t = DateTime::<Utc>::from_timestamp(decided.timestamp() + 1, 0).expect("range");
        while t < failover_job.end {
            assert!(
                fired
                    .iter()
                    .any(|f| f.job == failover_job.id && f.scheduled == t),
                "f1 (failover:us-east) did not run at {t} after eu-west died: {:?}",
                run_at(rs, t).map(|r| (state_name(r), r.reason.clone()))
            );
            let r = run_at(rs, t).unwrap_or_else(|| panic!("f1 at {t}: no run record"));
            let nodes: Vec<&str> = r.attempts.iter().map(|a| a.node.as_str()).collect();
            assert!(
                !nodes.is_empty() && nodes.iter().all(|n| *n == "u1"),
                "f1 at {t} ran in us-east (u1), attempts on {nodes:?}"
            );
            moved += 1;
            t += secs(1);
        }
        assert!(moved >= 3, "f1: {moved} failed-over firings checked");
        eprintln!("[region-loss] while eu-west is lost: {}", acc.summary());

        // Firings handed to eu-west before its loss was known wait in its queue; a new
        // eu-west node runs them (late), so in the end every firing is run or recorded
        // paused, and none twice.
        let waiting = acc.lost.len();
        blocking(|| mesh.start_nodes(&[("e3", &["eu-west"])]));
        let back = Instant::now();
        let settled = common::eventually(Duration::from_secs(25), || async {
            let fired = read_fired(&out);
            let runs = runs_of(&mesh.endpoint("u1"), &jobs).await;
            let acc = account(&jobs, &fired, &runs, end, &["e1", "e2"]);
            acc.lost.is_empty().then_some(acc)
        })
        .await;
        let fired = read_fired(&out);
        let runs = runs_of(&mesh.endpoint("u1"), &jobs).await;
        let acc = settled.unwrap_or_else(|| account(&jobs, &fired, &runs, end, &["e1", "e2"]));
        eprintln!(
            "[region-loss] {waiting} firings were waiting in eu-west's queue; {} ms after e3 \
             joined: {}",
            back.elapsed().as_millis(),
            acc.summary()
        );
        acc.assert_once_and_complete();
    })
    .await;
}
