//! The simulator's target: an `Executor` that records every execution in true
//! (virtual) time, answers after a latency drawn from the seed, fails a share of
//! attempts, and, during a `worker_crash` fault, panics mid-attempt like a crashing
//! worker would. Must not read any clock but the world's, nor draw randomness from
//! anywhere but its seeded generator.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::adapters::sim::World;
use crate::core::Timestamp;
use crate::core::action::Action;
use crate::core::policy::hash::{splitmix64, unit_f64};
use crate::exec::{Attempt, Outcome, Status};
use crate::ports::Executor;

/// Executions recorded at most (a bound on the simulator's memory).
pub const EXECS_MAX: usize = 5_000_000;

/// One execution as the target saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exec {
    pub job: String,
    pub firing: String,
    pub attempt: u32,
    pub node: String,
    pub scheduled: Timestamp,
    /// True time the target was called.
    pub start: Timestamp,
    /// True time it answered (None: the worker crashed, or the run was still going).
    pub end: Option<Timestamp>,
}

/// A deterministic generator (splitmix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn draw(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        splitmix64(self.0)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        unit_f64(self.draw())
    }
    /// Uniform in [lo, hi].
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.draw() % (hi - lo + 1)
    }
}

/// What the scenario's faults do to the target, shared by every node's executor.
#[derive(Default)]
pub struct Faults {
    /// Until when, and how often, the target fails (a brownout).
    pub brownout: Option<(Timestamp, f64)>,
    /// Per node: until when, and how often, workers crash mid-attempt.
    pub worker_crash: BTreeMap<String, (Timestamp, f64)>,
}

/// The shared record of executions, and the faults in force.
#[derive(Default)]
pub struct Record {
    pub execs: Mutex<Vec<Exec>>,
    pub faults: Mutex<Faults>,
}

/// One node's target.
pub struct Target {
    pub world: World,
    pub node: String,
    pub record: Arc<Record>,
    pub rng: Mutex<Rng>,
    pub latency_ms: Option<[u64; 2]>,
    pub failure_rate: f64,
}

#[async_trait]
impl Executor for Target {
    async fn execute(
        &self,
        _action: &Action,
        attempt: &Attempt<'_>,
        cancel: CancellationToken,
    ) -> Outcome {
        let start = self.world.true_now();
        let index = {
            let mut execs = self.record.execs.lock().expect("execs lock");
            if execs.len() < EXECS_MAX {
                execs.push(Exec {
                    job: attempt.job.to_owned(),
                    firing: attempt.firing_id.to_owned(),
                    attempt: attempt.attempt,
                    node: self.node.clone(),
                    scheduled: attempt.scheduled_at,
                    start,
                    end: None,
                });
                Some(execs.len() - 1)
            } else {
                None
            }
        };
        let (latency, fail, crash) = {
            let faults = self.record.faults.lock().expect("faults lock");
            let mut rng = self.rng.lock().expect("rng lock");
            let latency = self.latency_ms.map_or(0, |[lo, hi]| rng.range(lo, hi));
            let mut rate = self.failure_rate;
            let mut latency = latency;
            if let Some((until, r)) = faults.brownout
                && start < until
            {
                rate = rate.max(r);
                latency = latency.saturating_mul(10).max(500);
            }
            let crash = faults
                .worker_crash
                .get(&self.node)
                .is_some_and(|(until, r)| start < *until && rng.unit() < *r);
            (latency, rng.unit() < rate, crash)
        };
        tokio::select! {
            biased;
            _ = tokio::time::sleep(Duration::from_millis(latency / 2)) => {}
            _ = cancel.cancelled() => {}
        }
        if crash {
            // The worker dies mid-attempt; its supervisor must record it `worker_lost`.
            // Unwind without the panic hook: a simulated crash is not a bug report.
            std::panic::resume_unwind(Box::new("simulated worker crash mid-attempt"));
        }
        let status = tokio::select! {
            biased;
            _ = tokio::time::sleep(Duration::from_millis(latency - latency / 2)) => {
                if fail { Status::Failed { retryable: true } } else { Status::Succeeded }
            }
            _ = cancel.cancelled() => Status::Cancelled,
        };
        if let Some(i) = index {
            let end = self.world.true_now();
            self.record.execs.lock().expect("execs lock")[i].end = Some(end);
        }
        Outcome {
            status,
            summary: match status {
                Status::Succeeded => "ok".into(),
                Status::Failed { .. } => "simulated failure".into(),
                _ => "cancelled".into(),
            },
            output_tail: String::new(),
            exit_code: None,
            http_status: None,
        }
    }
}
