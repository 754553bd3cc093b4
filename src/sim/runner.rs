//! Runs one scenario with one seed: the real actors and core of every node over the
//! `sim` adapters, in virtual time (a current-thread tokio runtime with paused time, so
//! nothing depends on how fast this machine is), with the fault schedule applied at
//! its virtual instants, then a convergence phase with every fault healed. Returns
//! what the checkers need. Must not check anything itself (`check.rs` does) and must
//! not draw randomness from anything but the seed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use ractor::{Actor, ActorRef};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::scenario::{FaultKind, FaultSpec, Scenario};
use super::target::{Exec, Record, Rng, Target};
use crate::actors::node_supervisor::{NodeSupervisor, NodeSupervisorMsg};
use crate::actors::{Config, Deps, clock_guardian};
use crate::adapters::sim::{SimNode, TraceEvent, World};
use crate::core::Timestamp;
use crate::core::action::Action;
use crate::core::clock_guard::GuardConfig;
use crate::core::ids::{JobName, NodeId, RegionId};
use crate::core::job::Job;
use crate::core::policy::{Overlap, Policies, RegionLoss};
use crate::core::run::Run;
use crate::core::schedule::{Kind, ScheduleSpec};

/// Options the scenario file does not hold.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Test-only: plant a known bug (an owner that keeps firing after its term ended),
    /// to show that the checkers catch it.
    pub planted_stale_owner: bool,
}

/// Everything a run produced, for the checkers and the report.
pub struct Outcome {
    pub seed: u64,
    pub start: Timestamp,
    /// When the chaos phase ended and every fault was healed.
    pub healed_at: Timestamp,
    pub end: Timestamp,
    pub jobs: Vec<Job>,
    pub execs: Vec<Exec>,
    pub runs: Vec<Run>,
    pub trace: Vec<TraceEvent>,
    /// Faults applied, for the report and the violation context: (true time, what).
    pub faults: Vec<(Timestamp, String)>,
}

/// One running node incarnation.
struct NodeRun {
    region: String,
    supervisor: Option<ActorRef<NodeSupervisorMsg>>,
    stop: CancellationToken,
    crashed: bool,
}

/// Something to do at a virtual instant.
#[derive(Clone, Debug)]
enum Step {
    Apply(FaultSpec),
    Heal(FaultKind, Vec<String>),
}

/// Run `scenario` with `seed` to its end.
pub fn run(scenario: &Scenario, seed: u64, options: &Options) -> anyhow::Result<Outcome> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .context("building the simulation runtime")?;
    rt.block_on(run_async(scenario, seed, options))
}

struct Sim<'a> {
    scenario: &'a Scenario,
    options: &'a Options,
    world: World,
    record: Arc<Record>,
    nodes: BTreeMap<String, NodeRun>,
    rng: Rng,
    seed: u64,
    faults_log: Vec<(Timestamp, String)>,
}

async fn run_async(scenario: &Scenario, seed: u64, options: &Options) -> anyhow::Result<Outcome> {
    let start = scenario.start()?;
    let world = World::new(start);
    let t0 = crate::adapters::clock::monotonic_now();
    let mut sim = Sim {
        scenario,
        options,
        world: world.clone(),
        record: Arc::new(Record::default()),
        nodes: BTreeMap::new(),
        rng: Rng::new(seed),
        seed,
        faults_log: Vec::new(),
    };
    for (name, region) in scenario.nodes() {
        sim.start_node(&name, &region).await?;
    }
    let jobs = sim.create_jobs().await?;

    // The fault schedule: the file's, plus the swarm's draws.
    let mut queue: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
    let mut actions: BTreeMap<u64, Step> = BTreeMap::new();
    let mut seq = 0u64;
    let mut faults = scenario.faults.clone();
    faults.extend(sim.swarm_faults());
    for f in faults {
        seq += 1;
        queue.push(Reverse((f.at_s * 1000, seq)));
        actions.insert(seq, Step::Apply(f));
    }
    let chaos_end_ms = scenario.duration_s * 1000;
    while let Some(Reverse((at_ms, s))) = queue.pop() {
        if at_ms >= chaos_end_ms {
            break;
        }
        tokio::time::sleep_until(t0 + Duration::from_millis(at_ms)).await;
        match actions.remove(&s).expect("queued actions are stored") {
            Step::Apply(f) => {
                if let Some(heal) = sim.apply(&f).await {
                    seq += 1;
                    let heal_at = (f.at_s + f.for_s.max(1)) * 1000;
                    queue.push(Reverse((heal_at.min(chaos_end_ms), seq)));
                    actions.insert(seq, heal);
                }
            }
            Step::Heal(kind, nodes) => sim.heal(kind, &nodes).await,
        }
    }
    tokio::time::sleep_until(t0 + Duration::from_millis(chaos_end_ms)).await;
    // Heal whatever is still broken.
    for (_, a) in actions {
        if let Step::Heal(kind, nodes) = a {
            sim.heal(kind, &nodes).await;
        }
    }
    let healed_at = world.true_now();
    sim.faults_log
        .push((healed_at, "every fault healed".into()));
    tokio::time::sleep_until(t0 + Duration::from_millis(chaos_end_ms + scenario.converge_s * 1000))
        .await;
    let end = world.true_now();
    let mut runs = world.runs();
    runs.sort_by_key(|r| r.firing);
    let trace = world.trace();
    for (_, n) in std::mem::take(&mut sim.nodes) {
        n.stop.cancel();
        if let Some(s) = n.supervisor {
            s.stop(None);
        }
    }
    let execs = sim.record.execs.lock().expect("execs lock").clone();
    Ok(Outcome {
        seed,
        start,
        healed_at,
        end,
        jobs,
        execs,
        runs,
        trace,
        faults: sim.faults_log,
    })
}

impl Sim<'_> {
    async fn start_node(&mut self, name: &str, region: &str) -> anyhow::Result<()> {
        let s = self.scenario;
        let id = NodeId::from(name);
        let sn: SimNode = self.world.node(&id);
        let clock = sn.clock();
        let stop = CancellationToken::new();
        let ttl = Duration::from_secs(s.lease_ttl_s);
        let guard = clock_guardian::spawn(
            clock.clone(),
            vec![sn.time_source()],
            None,
            GuardConfig {
                skew_max: Duration::from_millis(s.max_skew_ms),
                closed_max: Duration::from_secs(10),
                ..GuardConfig::default()
            },
            stop.clone(),
        );
        let membership = sn.membership(ttl);
        let regions = vec![RegionId::from(region)];
        {
            // Join in the background: the node's etcd link may be down right now.
            let (m, id, regions, stop) = (
                membership.clone(),
                id.clone(),
                regions.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    if m.join(&id, &regions, &format!("sim://{id}")).await.is_ok() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        }
        let node_seed = self.seed ^ crate::core::policy::hash::fnv1a64(name.as_bytes());
        let deps = Arc::new(Deps {
            node: id.clone(),
            clock,
            catalog: sn.catalog(),
            // Keep every run: the checkers look at all of them.
            runs: sn.run_log_with_retention(u64::MAX / 2),
            election: sn.election(ttl),
            queues: sn.queues(Duration::from_secs(s.visibility_timeout_s), 200_000),
            executor: Arc::new(Target {
                world: self.world.clone(),
                node: name.to_owned(),
                record: self.record.clone(),
                rng: Mutex::new(Rng::new(node_seed)),
                latency_ms: s.target.latency_ms,
                failure_rate: s.target.failure_rate,
            }),
            membership: Some(membership),
            guard,
            config: Config {
                regions,
                workers_max: s.workers,
                shards: s.shards,
                planted_stale_owner: self.options.planted_stale_owner,
                restarts_per_minute_max: 100_000,
                ..Config::default()
            },
            probe: None,
        });
        let (supervisor, _) = Actor::spawn(None, NodeSupervisor, deps)
            .await
            .map_err(|e| anyhow::anyhow!("starting node {name}: {e}"))?;
        self.nodes.insert(
            name.to_owned(),
            NodeRun {
                region: region.to_owned(),
                supervisor: Some(supervisor),
                stop,
                crashed: false,
            },
        );
        Ok(())
    }

    fn crash(&mut self, name: &str) {
        let Some(n) = self.nodes.get_mut(name) else {
            return;
        };
        if n.crashed {
            return;
        }
        self.world.crash(&NodeId::from(name));
        n.stop.cancel();
        if let Some(s) = n.supervisor.take() {
            s.kill();
        }
        n.crashed = true;
    }

    async fn restart(&mut self, name: &str) {
        let Some(n) = self.nodes.get(name) else {
            return;
        };
        if !n.crashed {
            return;
        }
        let region = n.region.clone();
        self.world.restart(&NodeId::from(name));
        if let Err(e) = self.start_node(name, &region).await {
            tracing::error!(error = %e, node = name, "restarting a simulated node failed");
        }
    }

    /// The node a fault's `node` field names, now.
    fn resolve(&mut self, which: &str) -> Option<String> {
        match which {
            "owner" => {
                let mut owner: Option<String> = None;
                for e in self.world.trace() {
                    match e {
                        TraceEvent::TermGranted { shard: 0, node, .. } => {
                            owner = Some(node.to_string())
                        }
                        TraceEvent::TermEnded { shard: 0, node, .. }
                            if owner.as_deref() == Some(node.as_str()) =>
                        {
                            owner = None
                        }
                        _ => {}
                    }
                }
                owner.filter(|o| self.nodes.get(o).is_some_and(|n| !n.crashed))
            }
            "any" => {
                let live: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|(_, n)| !n.crashed)
                    .map(|(k, _)| k.clone())
                    .collect();
                if live.is_empty() {
                    return None;
                }
                let i = self.rng.draw() as usize % live.len();
                Some(live[i].clone())
            }
            name => self
                .nodes
                .get(name)
                .filter(|n| !n.crashed)
                .map(|_| name.to_owned()),
        }
    }

    /// Apply a fault; answer how to heal it, if it lasts.
    async fn apply(&mut self, f: &FaultSpec) -> Option<Step> {
        let now = self.world.true_now();
        let until = now + chrono::Duration::seconds(f.for_s as i64);
        let targets: Vec<String> = match f.kind {
            FaultKind::Brownout => Vec::new(),
            FaultKind::RegionOutage => {
                let region = f.region.clone().unwrap_or_default();
                self.nodes
                    .iter()
                    .filter(|(_, n)| n.region == region && !n.crashed)
                    .map(|(k, _)| k.clone())
                    .collect()
            }
            _ => match self.resolve(&f.node) {
                Some(n) => vec![n],
                None => {
                    self.faults_log.push((
                        now,
                        format!("{:?} on {}: no such live node; skipped", f.kind, f.node),
                    ));
                    return None;
                }
            },
        };
        self.faults_log.push((
            now,
            format!("{:?} {} for {} s", f.kind, targets.join(","), f.for_s),
        ));
        for n in &targets {
            let id = NodeId::from(n.as_str());
            match f.kind {
                FaultKind::Crash | FaultKind::RegionOutage => self.crash(n),
                FaultKind::PartitionEtcd => self.world.set_etcd_link(&id, false),
                FaultKind::PartitionRedis => self.world.set_redis_link(&id, false),
                FaultKind::Pause => self.world.set_paused(&id, true),
                FaultKind::Skew | FaultKind::Jump => self
                    .world
                    .set_skew(&id, chrono::Duration::milliseconds(f.offset_ms)),
                FaultKind::WorkerCrash => {
                    self.record
                        .faults
                        .lock()
                        .expect("faults lock")
                        .worker_crash
                        .insert(n.clone(), (until, f.rate.max(0.01)));
                }
                FaultKind::Brownout => {}
            }
        }
        if f.kind == FaultKind::Brownout {
            self.record.faults.lock().expect("faults lock").brownout =
                Some((until, f.rate.max(0.01)));
        }
        match f.kind {
            // A jump stays; the others are healed after `for_s`.
            FaultKind::Jump => None,
            FaultKind::WorkerCrash | FaultKind::Brownout => None,
            kind => Some(Step::Heal(kind, targets)),
        }
    }

    async fn heal(&mut self, kind: FaultKind, nodes: &[String]) {
        let now = self.world.true_now();
        self.faults_log
            .push((now, format!("heal {kind:?} {}", nodes.join(","))));
        for n in nodes {
            let id = NodeId::from(n.as_str());
            match kind {
                FaultKind::Crash | FaultKind::RegionOutage => self.restart(n).await,
                FaultKind::PartitionEtcd => self.world.set_etcd_link(&id, true),
                FaultKind::PartitionRedis => self.world.set_redis_link(&id, true),
                FaultKind::Pause => self.world.set_paused(&id, false),
                FaultKind::Skew => self.world.set_skew(&id, chrono::Duration::zero()),
                _ => {}
            }
        }
    }

    /// Faults drawn from the seed (swarm mode).
    fn swarm_faults(&mut self) -> Vec<FaultSpec> {
        let Some(swarm) = &self.scenario.swarm else {
            return Vec::new();
        };
        let kinds = if swarm.kinds.is_empty() {
            vec![
                FaultKind::Crash,
                FaultKind::PartitionEtcd,
                FaultKind::PartitionRedis,
                FaultKind::Pause,
                FaultKind::Skew,
                FaultKind::WorkerCrash,
                FaultKind::Brownout,
            ]
        } else {
            swarm.kinds.clone()
        };
        let regions: Vec<String> = self
            .scenario
            .regions
            .iter()
            .map(|r| r.name.clone())
            .collect();
        let span = self.scenario.duration_s.max(1);
        let mut out = Vec::new();
        for _ in 0..swarm.faults {
            let kind = kinds[self.rng.draw() as usize % kinds.len()];
            let at_s = self.rng.draw() % span;
            let for_s = self.rng.range(1, swarm.for_s_max);
            let offset_ms = match self.rng.draw() % 3 {
                0 => 100,
                1 => 2_000,
                _ => -3_000,
            };
            out.push(FaultSpec {
                at_s,
                kind,
                node: if self.rng.draw().is_multiple_of(2) {
                    "owner"
                } else {
                    "any"
                }
                .into(),
                region: (kind == FaultKind::RegionOutage)
                    .then(|| regions[self.rng.draw() as usize % regions.len()].clone()),
                for_s,
                offset_ms,
                rate: 0.3,
            });
        }
        out.sort_by_key(|f| f.at_s);
        out
    }

    /// The scenario's jobs, created through the catalog at the start.
    async fn create_jobs(&mut self) -> anyhow::Result<Vec<Job>> {
        let s = self.scenario;
        let start = s.start()?;
        let mut specs: Vec<super::scenario::JobSpec> = s.jobs.clone();
        if let Some(g) = &s.generate {
            let regions: Vec<String> = s.regions.iter().map(|r| r.name.clone()).collect();
            for i in 0..g.count {
                let pick = |rng: &mut Rng, v: &[String]| -> Option<String> {
                    (!v.is_empty()).then(|| v[rng.draw() as usize % v.len()].clone())
                };
                let n_sched = g.every_s.len() + g.cron.len();
                let k = self.rng.draw() as usize % n_sched;
                let (every_s, cron) = if k < g.every_s.len() {
                    (Some(g.every_s[k]), None)
                } else {
                    (None, Some(g.cron[k - g.every_s.len()].clone()))
                };
                specs.push(super::scenario::JobSpec {
                    id: format!("g{i}"),
                    region: regions[self.rng.draw() as usize % regions.len()].clone(),
                    every_s,
                    cron,
                    tz: pick(&mut self.rng, &g.zones).unwrap_or_else(|| "UTC".into()),
                    overlap: pick(&mut self.rng, &g.overlap),
                    region_loss: pick(&mut self.rng, &g.region_loss),
                    attempts: (!g.attempts.is_empty())
                        .then(|| g.attempts[self.rng.draw() as usize % g.attempts.len()]),
                });
            }
        }
        let first = s.nodes().first().map(|(n, _)| n.clone()).expect("a node");
        let catalog = self.world.node(&NodeId::from(first.as_str())).catalog();
        let mut jobs = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let kind = match (&spec.every_s, &spec.cron) {
                (Some(every), None) => Kind::Interval {
                    every: Duration::from_secs((*every).max(1)),
                    anchor: start,
                },
                (None, Some(expr)) => Kind::Cron { expr: expr.clone() },
                _ => anyhow::bail!("jobs[{i}]: exactly one of every_s and cron"),
            };
            let mut schedule = ScheduleSpec::new(kind);
            schedule.time_zone = spec.tz.clone();
            let overlap = match spec.overlap.as_deref() {
                None | Some("skip") => Overlap::Skip,
                Some("allow") => Overlap::Allow,
                Some("buffer_one") => Overlap::BufferOne,
                Some("cancel_previous") => Overlap::CancelPrevious,
                Some(o) => anyhow::bail!("jobs[{i}].overlap: {o:?} is not an overlap policy"),
            };
            let region_loss = match spec.region_loss.as_deref() {
                None | Some("pause") => RegionLoss::Pause,
                Some(r) => match r.strip_prefix("failover:") {
                    Some(to) => RegionLoss::Failover(RegionId::from(to)),
                    None => anyhow::bail!("jobs[{i}].region_loss: pause or failover:REGION"),
                },
            };
            let mut policy = Policies {
                overlap,
                region_loss,
                ..Policies::default()
            };
            if let Some(a) = spec.attempts {
                policy.retry.attempts_max = a;
                policy.retry.backoff_initial = Duration::from_millis(500);
            }
            let job = Job {
                name: JobName::new(spec.region.clone(), spec.id.clone()),
                uid: Uuid::from_u64_pair(self.rng.draw(), self.rng.draw()),
                description: String::new(),
                labels: Vec::new(),
                schedule,
                action: Action::Noop,
                policy,
                paused: false,
                paused_at: None,
                resumed_at: None,
                create_time: start,
                update_time: start,
                revision: 1,
                tzdb_version: crate::core::schedule::TZDB_VERSION.to_owned(),
            };
            job.validate()
                .map_err(|e| anyhow::anyhow!("jobs[{i}] ({}): {e}", spec.id))?;
            // The catalog may be briefly unavailable if the first node is partitioned
            // at start; jobs are created before any fault, so this succeeds at once.
            let created = catalog
                .create_job(job, None)
                .await
                .map_err(|e| anyhow::anyhow!("creating jobs[{i}]: {e}"))?;
            jobs.push(created);
        }
        Ok(jobs)
    }
}
