//! The invariant checkers: DESIGN.md's guarantees, checked against what a simulation
//! run produced (the target's executions in true time, the run log's records, the
//! election's and run log's trace). Pure functions over the outcome; must not run or
//! change anything.

use std::collections::{BTreeMap, BTreeSet};

use super::runner::Outcome;
use crate::adapters::sim::TraceEvent;
use crate::core::Timestamp;
use crate::core::policy::Overlap;
use crate::core::run::State;

/// Violations reported per invariant at most (the first ones tell the story).
pub const VIOLATIONS_PER_CHECK_MAX: usize = 5;

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    /// True time of the offending event (for the events leading to it).
    pub at: Timestamp,
    pub detail: String,
}

/// How long after its due instant a firing may still be unsettled at the end of the
/// run without counting as lost: the dispatch lead, a lease, a visibility timeout and
/// the target's latency, with room.
pub fn settle_tail(lease_ttl_s: u64, visibility_s: u64) -> chrono::Duration {
    chrono::Duration::seconds((2 * lease_ttl_s + visibility_s + 15) as i64)
}

/// Every check; empty when the run kept every guarantee.
pub fn all(o: &Outcome, lease_ttl_s: u64, visibility_s: u64) -> Vec<Violation> {
    let mut v = Vec::new();
    never_early(o, &mut v);
    once_per_attempt(o, &mut v);
    nothing_lost(o, settle_tail(lease_ttl_s, visibility_s), &mut v);
    one_owner_per_shard(o, &mut v);
    owners_act_within_terms(o, &mut v);
    overlap_held(o, &mut v);
    liveness_after_heal(o, lease_ttl_s, &mut v);
    v
}

fn push(v: &mut Vec<Violation>, invariant: &'static str, at: Timestamp, detail: String) {
    if v.iter().filter(|x| x.invariant == invariant).count() < VIOLATIONS_PER_CHECK_MAX {
        v.push(Violation {
            invariant,
            at,
            detail,
        });
    }
}

/// Guarantee 1: no attempt starts before its firing's due instant in true time (the
/// sim's clocks err only by their injected skew, which the guard measures exactly).
fn never_early(o: &Outcome, v: &mut Vec<Violation>) {
    let due: BTreeMap<String, Timestamp> = o
        .runs
        .iter()
        .map(|r| (r.firing.to_string(), r.due_at))
        .collect();
    for e in &o.execs {
        let limit = due.get(&e.firing).copied().unwrap_or(e.scheduled);
        if e.start < limit {
            push(
                v,
                "never early",
                e.start,
                format!(
                    "{} attempt {} of {} started on {} at {} before it was due at {}",
                    e.firing, e.attempt, e.job, e.node, e.start, limit
                ),
            );
        }
    }
}

/// Guarantee 2: each (firing, attempt) executes at most once across all nodes.
fn once_per_attempt(o: &Outcome, v: &mut Vec<Violation>) {
    let mut seen: BTreeMap<(&str, u32), &str> = BTreeMap::new();
    for e in &o.execs {
        if let Some(first) = seen.insert((&e.firing, e.attempt), &e.node) {
            push(
                v,
                "once per firing attempt",
                e.start,
                format!(
                    "{} attempt {} of {} ran twice: on {first} and on {}",
                    e.firing, e.attempt, e.job, e.node
                ),
            );
        }
    }
}

/// Guarantee 3: every firing due in the run has a run record, and every one due long
/// enough before the end is settled (ran, or recorded with a reason).
fn nothing_lost(o: &Outcome, tail: chrono::Duration, v: &mut Vec<Violation>) {
    let settled_by = o.end - tail;
    let mut covered: BTreeMap<uuid::Uuid, BTreeSet<Timestamp>> = BTreeMap::new();
    let mut folded: BTreeMap<uuid::Uuid, Vec<(Timestamp, Timestamp)>> = BTreeMap::new();
    for r in &o.runs {
        covered.entry(r.job_uid).or_default().insert(r.scheduled_at);
        if let Some(until) = r.missed_until {
            folded
                .entry(r.job_uid)
                .or_default()
                .push((r.scheduled_at, until));
        }
        let open = !r.state.is_terminal();
        if open && r.due_at < settled_by {
            push(
                v,
                "nothing silently lost",
                r.due_at,
                format!(
                    "{} of {} due at {} is still {} at the end (after the convergence phase)",
                    r.firing,
                    r.job,
                    r.due_at,
                    r.state.as_str()
                ),
            );
        }
    }
    for job in &o.jobs {
        let Ok(schedule) = job.schedule.compile() else {
            continue;
        };
        let mut at = job.create_time;
        let have = covered.get(&job.uid);
        let folds = folded.get(&job.uid);
        while let Some(f) = schedule.next_after(at) {
            if f.at >= settled_by {
                break;
            }
            at = f.at;
            let found = have.is_some_and(|h| h.contains(&f.at))
                || folds.is_some_and(|fs| fs.iter().any(|(a, b)| *a <= f.at && f.at <= *b));
            if !found {
                push(
                    v,
                    "nothing silently lost",
                    f.at,
                    format!("{} firing at {} has no run record", job.name, f.at),
                );
            }
        }
    }
}

/// At most one owner per shard at a time, and epochs strictly increase per shard.
fn one_owner_per_shard(o: &Outcome, v: &mut Vec<Violation>) {
    let mut open: BTreeMap<u32, (String, u64)> = BTreeMap::new();
    let mut last_epoch: BTreeMap<u32, u64> = BTreeMap::new();
    for e in &o.trace {
        match e {
            TraceEvent::TermGranted {
                at,
                shard,
                node,
                epoch,
            } => {
                if let Some((other, oe)) = open.get(shard) {
                    push(
                        v,
                        "one owner per shard",
                        *at,
                        format!(
                            "shard {shard} granted to {node} (epoch {epoch}) while {other} (epoch {oe}) still held it"
                        ),
                    );
                }
                if last_epoch.get(shard).is_some_and(|l| epoch.0 <= *l) {
                    push(
                        v,
                        "epochs strictly increase",
                        *at,
                        format!("shard {shard}: epoch {epoch} after {}", last_epoch[shard]),
                    );
                }
                last_epoch.insert(*shard, epoch.0);
                open.insert(*shard, (node.to_string(), epoch.0));
            }
            TraceEvent::TermEnded { shard, epoch, .. }
                if open.get(shard).is_some_and(|(_, e)| *e == epoch.0) =>
            {
                open.remove(shard);
            }
            _ => {}
        }
    }
}

/// An owner claims only within its term: never after the election ended it.
fn owners_act_within_terms(o: &Outcome, v: &mut Vec<Violation>) {
    let mut ended: BTreeMap<(u32, u64), Timestamp> = BTreeMap::new();
    for e in &o.trace {
        match e {
            TraceEvent::TermEnded {
                at, shard, epoch, ..
            } => {
                ended.insert((*shard, epoch.0), *at);
            }
            TraceEvent::Claim {
                at,
                shard,
                node,
                epoch,
                runs,
                accepted,
            } if *runs > 0 => {
                if let Some(end) = ended.get(&(*shard, epoch.0))
                    && at > end
                {
                    push(
                        v,
                        "owner acts only within its term",
                        *at,
                        format!(
                            "{node} claimed {runs} run(s) on shard {shard} with epoch {epoch} at {at}, after that term ended at {end} ({})",
                            if *accepted {
                                "accepted"
                            } else {
                                "refused by the fence"
                            }
                        ),
                    );
                }
            }
            _ => {}
        }
    }
}

/// One execution's span: start, end (if it ended), firing.
type Span<'a> = (Timestamp, Option<Timestamp>, &'a str);

/// The overlap policy `skip` held: two runs of one job never ran at once on one node.
/// (Across the nodes of one region it is not enforced yet: ARCHITECTURE.md.)
fn overlap_held(o: &Outcome, v: &mut Vec<Violation>) {
    let skip: BTreeSet<String> = o
        .jobs
        .iter()
        .filter(|j| j.policy.overlap == Overlap::Skip)
        .map(|j| j.name.to_string())
        .collect();
    let mut by: BTreeMap<(&str, &str), Vec<Span<'_>>> = BTreeMap::new();
    for e in &o.execs {
        if skip.contains(&e.job) {
            by.entry((&e.job, &e.node))
                .or_default()
                .push((e.start, e.end, &e.firing));
        }
    }
    for ((job, node), mut xs) in by {
        xs.sort();
        for w in xs.windows(2) {
            let (s0, e0, f0) = w[0];
            let (s1, _, f1) = w[1];
            if f0 != f1 && e0.is_some_and(|e0| s1 < e0) {
                push(
                    v,
                    "overlap policy held",
                    s1,
                    format!(
                        "{job} on {node}: {f1} started at {s1} while {f0} (from {s0}) still ran"
                    ),
                );
            }
        }
    }
}

/// After every fault healed: every shard has an owner within a lease TTL plus a renewal
/// (and a second of slack), and every job that falls due in the last stretch fires.
fn liveness_after_heal(o: &Outcome, lease_ttl_s: u64, v: &mut Vec<Violation>) {
    let ttl = chrono::Duration::seconds(lease_ttl_s as i64);
    let owned_by = o.healed_at + ttl + ttl / 3 + chrono::Duration::seconds(1);
    let mut open: BTreeMap<u32, bool> = BTreeMap::new();
    let mut shards = BTreeSet::new();
    for e in &o.trace {
        match e {
            TraceEvent::TermGranted { at, shard, .. } => {
                shards.insert(*shard);
                if *at <= owned_by {
                    open.insert(*shard, true);
                }
            }
            TraceEvent::TermEnded { at, shard, .. } if *at <= owned_by => {
                open.insert(*shard, false);
            }
            _ => {}
        }
    }
    for s in shards {
        if !open.get(&s).copied().unwrap_or(false) {
            push(
                v,
                "liveness after heal",
                owned_by,
                format!("shard {s} has no owner {owned_by} (lease TTL + renewal after healing)"),
            );
        }
    }
    // Every job due at least twice in the last half of the convergence phase fires.
    let from = o.healed_at + (o.end - o.healed_at) / 2;
    let fired: BTreeSet<&str> = o
        .execs
        .iter()
        .filter(|e| e.start >= from)
        .map(|e| e.job.as_str())
        .collect();
    for job in &o.jobs {
        let Ok(schedule) = job.schedule.compile() else {
            continue;
        };
        let due_twice = schedule
            .next_after(from)
            .and_then(|f| schedule.next_after(f.at))
            .is_some_and(|f| f.at < o.end - chrono::Duration::seconds(2));
        let paused_home = o
            .runs
            .iter()
            .any(|r| r.job_uid == job.uid && r.state == State::Paused && r.scheduled_at >= from);
        if due_twice && !paused_home && !fired.contains(job.name.to_string().as_str()) {
            push(
                v,
                "liveness after heal",
                from,
                format!(
                    "{} did not fire after the faults healed (from {from})",
                    job.name
                ),
            );
        }
    }
}
