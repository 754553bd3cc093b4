//! The report of one simulation run: counts by outcome, lateness percentiles, failover
//! gaps, owner changes, and the trace hash (a stable hash of everything that happened,
//! so the same seed must give the same hash). Pure; must not run anything.

use std::collections::BTreeMap;

use serde::Serialize;

use super::check::Violation;
use super::runner::Outcome;
use crate::adapters::sim::TraceEvent;
use crate::core::policy::hash::{fnv1a64, fnv1a64_extend};
use crate::core::run::State;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub jobs: usize,
    /// Run records (firings that fell due and were claimed).
    pub firings: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub missed: usize,
    pub skipped: usize,
    pub paused: usize,
    pub gated: usize,
    pub cancelled: usize,
    /// Runs not settled at the end (queued, running, retry_wait).
    pub open: usize,
    /// Executions (attempts that reached the target).
    pub executions: usize,
    /// (firing, attempt) pairs that executed more than once.
    pub duplicated: usize,
    pub lateness_p50_ms: f64,
    pub lateness_p99_ms: f64,
    pub lateness_max_ms: f64,
    /// Per owner change: from the old owner's last sign of life (lease renewal or
    /// resignation) to the grant to the next owner, milliseconds.
    pub failover_gaps_ms: Vec<i64>,
    pub owner_changes: usize,
    pub faults: Vec<String>,
    pub trace_hash: String,
    pub violations: Vec<ViolationOut>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ViolationOut {
    pub invariant: String,
    pub at: String,
    pub detail: String,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn build(scenario: &str, lease_ttl_s: u64, o: &Outcome, violations: &[Violation]) -> Report {
    let count = |s: State| o.runs.iter().filter(|r| r.state == s).count();
    let due: BTreeMap<String, crate::core::Timestamp> = o
        .runs
        .iter()
        .map(|r| (r.firing.to_string(), r.due_at))
        .collect();
    let mut lateness: Vec<f64> = o
        .execs
        .iter()
        .filter(|e| e.attempt == 1)
        .filter_map(|e| {
            due.get(&e.firing)
                .map(|d| (e.start - *d).num_microseconds().unwrap_or(0) as f64 / 1000.0)
        })
        .collect();
    lateness.sort_by(|a, b| a.total_cmp(b));
    let mut seen = BTreeMap::new();
    for e in &o.execs {
        *seen.entry((&e.firing, e.attempt)).or_insert(0usize) += 1;
    }
    let duplicated = seen.values().filter(|n| **n > 1).count();
    // A failover gap: from the moment the previous owner of a shard was last known
    // alive (its lease's last renewal: the expiry minus the TTL; or its resignation) to
    // the grant to the next owner.
    let ttl = chrono::Duration::seconds(lease_ttl_s as i64);
    let mut gaps = Vec::new();
    let mut ended: BTreeMap<u32, crate::core::Timestamp> = BTreeMap::new();
    let mut grants = 0;
    for e in &o.trace {
        match e {
            TraceEvent::TermEnded { at, shard, why, .. } => {
                let alive_until = if why == "expired" { *at - ttl } else { *at };
                ended.insert(*shard, alive_until);
            }
            TraceEvent::TermGranted { at, shard, .. } => {
                grants += 1;
                if let Some(from) = ended.remove(shard) {
                    gaps.push((*at - from).num_milliseconds().max(0));
                }
            }
            _ => {}
        }
    }
    Report {
        scenario: scenario.to_owned(),
        seed: o.seed,
        jobs: o.jobs.len(),
        firings: o.runs.len(),
        succeeded: count(State::Succeeded),
        failed: count(State::Failed) + count(State::DeadLettered),
        missed: count(State::Missed),
        skipped: count(State::Skipped),
        paused: count(State::Paused),
        gated: count(State::Gated),
        cancelled: count(State::Cancelled),
        open: o.runs.iter().filter(|r| !r.state.is_terminal()).count(),
        executions: o.execs.len(),
        duplicated,
        lateness_p50_ms: pct(&lateness, 0.50),
        lateness_p99_ms: pct(&lateness, 0.99),
        lateness_max_ms: lateness.last().copied().unwrap_or(0.0),
        failover_gaps_ms: gaps,
        owner_changes: grants,
        faults: o
            .faults
            .iter()
            .map(|(at, f)| format!("{} {f}", at.format("%H:%M:%S%.3f")))
            .collect(),
        trace_hash: format!("{:016x}", trace_hash(o)),
        violations: violations
            .iter()
            .map(|v| ViolationOut {
                invariant: v.invariant.to_owned(),
                at: v.at.to_rfc3339(),
                detail: v.detail.clone(),
            })
            .collect(),
    }
}

/// A stable hash of what happened: the trace (in order), every execution and every run
/// record (sorted), with true times.
pub fn trace_hash(o: &Outcome) -> u64 {
    let mut h = fnv1a64(b"meridian-sim-trace-v1");
    for e in &o.trace {
        h = fnv1a64_extend(h, format!("{e:?}\n").as_bytes());
    }
    let mut execs: Vec<String> = o
        .execs
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {} {:?}\n",
                e.firing, e.attempt, e.node, e.start, e.end
            )
        })
        .collect();
    execs.sort();
    for e in execs {
        h = fnv1a64_extend(h, e.as_bytes());
    }
    for r in &o.runs {
        h = fnv1a64_extend(
            h,
            format!(
                "{} {} {} {:?}\n",
                r.firing,
                r.state.as_str(),
                r.scheduled_at,
                r.attempts
                    .iter()
                    .map(|a| (a.number, a.node.to_string(), a.started_at, a.status))
                    .collect::<Vec<_>>()
            )
            .as_bytes(),
        );
    }
    h
}

/// The report as a table for people.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        s,
        "scenario {}  seed {}  trace {}",
        r.scenario, r.seed, r.trace_hash
    );
    let _ = writeln!(
        s,
        "jobs {}  firings {}  executions {}  duplicated {}",
        r.jobs, r.firings, r.executions, r.duplicated
    );
    let _ = writeln!(
        s,
        "succeeded {}  failed {}  missed {}  skipped {}  paused {}  gated {}  cancelled {}  open {}",
        r.succeeded, r.failed, r.missed, r.skipped, r.paused, r.gated, r.cancelled, r.open
    );
    let _ = writeln!(
        s,
        "lateness p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        r.lateness_p50_ms, r.lateness_p99_ms, r.lateness_max_ms
    );
    let _ = writeln!(
        s,
        "owner changes {}  failover gaps (ms) {:?}",
        r.owner_changes, r.failover_gaps_ms
    );
    if r.violations.is_empty() {
        let _ = writeln!(s, "invariants: all held");
    }
    s
}
