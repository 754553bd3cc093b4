//! The schedule owner's pure half: the timer index over every active job and the
//! planning of due firings into claims (queued runs, or runs recorded as missed or
//! paused with a reason).
//!
//! Next firings are always computed from the previous *scheduled* instant (the job's
//! cursor), never from now. This module must not do IO or read a clock: `now` is an
//! argument, and the actor shell turns plans into claims and dispatches.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use uuid::Uuid;

use super::Timestamp;
use super::firing::{Cause, firing_id};
use super::ids::{Epoch, JobName};
use super::job::Job;
use super::policy::catchup::{self, Catchup, Decision};
use super::policy::spread;
use super::run::{Run, State, Trigger};
use super::schedule::Schedule;

/// Most firings of one job planned in one pass; the rest wait for the next pass.
pub const SCAN_MAX: usize = 100_000;
/// Most schedule shards a cluster may be split into.
pub const SHARDS_MAX: u32 = 1_024;

/// The schedule shard a job belongs to: a stable hash of its uid, so every node
/// computes the same answer and a job stays in its shard for life.
pub fn shard_of(uid: &Uuid, shards: u32) -> u32 {
    super::policy::hash::below(
        super::policy::hash::fnv1a64(uid.as_bytes()),
        u64::from(shards.max(1)),
    ) as u32
}

/// What planning needs of a job, and no more: the index holds one per active job
/// (a million of them within the memory budget), and the full job is read from the
/// catalog only when one of its firings is claimed.
#[derive(Clone, Debug)]
pub struct JobRef {
    pub uid: Uuid,
    pub name: JobName,
    catchup: Catchup,
    /// The last pause window [paused_at, resumed_at), if any.
    pause: Option<(Timestamp, Timestamp)>,
}

impl JobRef {
    pub fn of(job: &Job) -> Self {
        Self {
            uid: job.uid,
            name: job.name.clone(),
            catchup: job.policy.catchup.clone(),
            pause: job.paused_at.zip(job.resumed_at),
        }
    }
}

/// An indexed job: its compiled schedule, where it stands, and its next firing.
#[derive(Debug)]
struct Slot {
    job: JobRef,
    schedule: Schedule,
    /// Last scheduled instant handled (claimed or recorded).
    cursor: Timestamp,
    /// Next scheduled instant after `cursor`, if any.
    next_at: Option<Timestamp>,
    spread: Duration,
    /// Bumped on every change, so stale heap entries are recognised and dropped.
    generation: u32,
}

/// Heap entry: (due instant in ns, slot, generation).
type Entry = Reverse<(i64, u32, u32)>;

/// Timer index over all active jobs: a min-heap keyed by each job's next due
/// instant (scheduled + spread), with lazy deletion by generation.
#[derive(Debug, Default)]
pub struct Index {
    heap: BinaryHeap<Entry>,
    slots: Vec<Option<Slot>>,
    by_uid: HashMap<Uuid, u32>,
    free: Vec<u32>,
}

/// What the owner must do for one job whose firing came due.
#[derive(Debug)]
pub struct Plan {
    pub job: JobRef,
    /// Runs to claim, in scheduled order: queued ones are dispatched after the claim
    /// commits; terminal ones (missed, paused) are only recorded.
    pub runs: Vec<Run>,
    /// The job's cursor before this plan (to restore it if the claim fails).
    pub from: Timestamp,
    /// The job's cursor after this plan.
    pub cursor: Timestamp,
}

fn nanos(t: Timestamp) -> i64 {
    t.timestamp_nanos_opt()
        .expect("instants are within 1677..2262")
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    t + chrono::Duration::from_std(d).expect("spread is bounded to 24 h")
}

fn sub(t: Timestamp, d: Duration) -> Timestamp {
    t - chrono::Duration::from_std(d).expect("spread is bounded to 24 h")
}

impl Index {
    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }

    pub fn contains(&self, uid: &Uuid) -> bool {
        self.by_uid.contains_key(uid)
    }

    /// Insert or replace a job. `cursor` is the last scheduled instant handled for it.
    /// Paused jobs are not indexed: their firings are accounted for on resume.
    pub fn upsert(&mut self, job: &Job, schedule: Schedule, cursor: Timestamp) {
        if job.paused {
            self.remove(&job.uid);
            return;
        }
        let spread = spread::offset(job.uid.as_bytes(), job.policy.spread.window);
        let next_at = schedule.next_after(cursor).map(|f| f.at);
        let slot_id = match self.by_uid.get(&job.uid) {
            Some(&id) => id,
            None => {
                let id = self.free.pop().unwrap_or_else(|| {
                    self.slots.push(None);
                    u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 jobs")
                });
                self.by_uid.insert(job.uid, id);
                id
            }
        };
        let generation = self.slots[slot_id as usize]
            .as_ref()
            .map_or(0, |s| s.generation.wrapping_add(1));
        if let Some(at) = next_at {
            self.heap
                .push(Reverse((nanos(add(at, spread)), slot_id, generation)));
        }
        self.slots[slot_id as usize] = Some(Slot {
            job: JobRef::of(job),
            schedule,
            cursor,
            next_at,
            spread,
            generation,
        });
    }

    pub fn remove(&mut self, uid: &Uuid) {
        if let Some(id) = self.by_uid.remove(uid) {
            self.slots[id as usize] = None;
            self.free.push(id);
        }
    }

    /// The cursor the index holds for a job.
    pub fn cursor(&self, uid: &Uuid) -> Option<Timestamp> {
        let id = *self.by_uid.get(uid)?;
        self.slots[id as usize].as_ref().map(|s| s.cursor)
    }

    /// The earliest due instant (scheduled + spread) of any indexed job.
    pub fn next_due(&mut self) -> Option<Timestamp> {
        while let Some(&Reverse((ns, id, generation))) = self.heap.peek() {
            if self.live(id, generation) {
                return Some(Timestamp::from_timestamp_nanos(ns));
            }
            self.heap.pop();
        }
        None
    }

    fn live(&self, id: u32, generation: u32) -> bool {
        matches!(self.slots.get(id as usize), Some(Some(s)) if s.generation == generation && s.next_at.is_some())
    }

    /// Plan every job whose due instant is at or before `horizon`, at most
    /// `jobs_max` jobs. Each plan holds all of that job's firings scheduled up to
    /// `horizon` (bounded by SCAN_MAX), decided by its catch-up policy as of `now`.
    /// The index advances past the planned firings at once: a plan the caller cannot
    /// claim must be given back with [`Index::restore`].
    pub fn take_due(
        &mut self,
        horizon: Timestamp,
        now: Timestamp,
        late_grace: Duration,
        epoch: Epoch,
        jobs_max: usize,
    ) -> Vec<Plan> {
        let horizon_ns = nanos(horizon);
        let mut plans = Vec::new();
        while plans.len() < jobs_max {
            let Some(&Reverse((ns, id, generation))) = self.heap.peek() else {
                break;
            };
            if !self.live(id, generation) {
                self.heap.pop();
                continue;
            }
            if ns > horizon_ns {
                break;
            }
            self.heap.pop();
            let slot = self.slots[id as usize]
                .as_mut()
                .expect("live slots are occupied");
            let plan = plan_slot(slot, horizon, now, late_grace, epoch);
            slot.cursor = plan.cursor;
            slot.next_at = slot.schedule.next_after(slot.cursor).map(|f| f.at);
            slot.generation = slot.generation.wrapping_add(1);
            if let Some(at) = slot.next_at {
                self.heap
                    .push(Reverse((nanos(add(at, slot.spread)), id, slot.generation)));
            }
            plans.push(plan);
        }
        plans
    }

    /// Put a job back at `cursor` (its plan was not claimed); it is planned again.
    pub fn restore(&mut self, uid: &Uuid, cursor: Timestamp) {
        let Some(&id) = self.by_uid.get(uid) else {
            return;
        };
        let slot = self.slots[id as usize]
            .as_mut()
            .expect("indexed uids have slots");
        slot.cursor = cursor;
        slot.next_at = slot.schedule.next_after(cursor).map(|f| f.at);
        slot.generation = slot.generation.wrapping_add(1);
        if let Some(at) = slot.next_at {
            self.heap
                .push(Reverse((nanos(add(at, slot.spread)), id, slot.generation)));
        }
    }
}

/// Plan one job: collect its firings in (cursor, horizon], decide catch-up, and build
/// the runs. Firings in the job's last pause window are recorded as one `paused` run.
fn plan_slot(
    slot: &Slot,
    horizon: Timestamp,
    now: Timestamp,
    late_grace: Duration,
    epoch: Epoch,
) -> Plan {
    let job = &slot.job;
    let mut due = Vec::new();
    let mut paused = Vec::new();
    let mut after = slot.cursor;
    while due.len() + paused.len() < SCAN_MAX {
        let Some(f) = slot.schedule.next_after(after) else {
            break;
        };
        if add(f.at, slot.spread) > horizon {
            break;
        }
        after = f.at;
        if in_pause(job, f.at) {
            paused.push(f.at);
        } else {
            due.push(f.at);
        }
    }
    let mut runs = Vec::new();
    if let (Some(first), Some(last)) = (paused.first(), paused.last()) {
        let mut run = new_run(job, *first, slot.spread, epoch, now).not_run(
            State::Paused,
            format!(
                "job was paused when {} firing(s) from {} to {} fell due",
                paused.len(),
                first.to_rfc3339(),
                last.to_rfc3339()
            ),
        );
        run.missed_count = paused.len() as u64;
        run.missed_until = Some(*last);
        runs.push(run);
    }
    // Lateness is judged on the due instant (with spread), the one "never early" uses.
    let due_with_spread: Vec<Timestamp> = due.iter().map(|&t| add(t, slot.spread)).collect();
    let decisions = catchup::decide(&job.catchup, &due_with_spread, now, late_grace);
    let (individual, folded) = catchup::fold_missed(&due_with_spread, &decisions);
    let individual: std::collections::HashMap<Timestamp, catchup::MissReason> =
        individual.into_iter().map(|m| (m.at, m.reason)).collect();
    for ((&at, &due_at), decision) in due.iter().zip(&due_with_spread).zip(&decisions) {
        let run = new_run(job, at, slot.spread, epoch, now);
        match decision {
            Decision::Run => runs.push(run),
            Decision::Missed(_) => {
                if let Some(reason) = individual.get(&due_at) {
                    runs.push(run.not_run(State::Missed, reason.describe()));
                }
            }
        }
    }
    if let Some(range) = folded {
        // Back from due instants (with spread) to scheduled ones.
        let first = sub(range.first, slot.spread);
        let last = sub(range.last, slot.spread);
        let count = range.count();
        let why = range.reason().map_or("not run", |r| r.describe());
        let mut run = new_run(job, first, slot.spread, epoch, now).not_run(
            State::Missed,
            format!(
                "{count} firing(s) from {} to {} were not run: {why}",
                first.to_rfc3339(),
                last.to_rfc3339(),
            ),
        );
        run.missed_count = count;
        run.missed_until = Some(last);
        runs.push(run);
    }
    runs.sort_by_key(|r| r.scheduled_at);
    Plan {
        job: job.clone(),
        runs,
        from: slot.cursor,
        cursor: after,
    }
}

fn in_pause(job: &JobRef, at: Timestamp) -> bool {
    job.pause.is_some_and(|(p, r)| p <= at && at < r)
}

fn new_run(job: &JobRef, at: Timestamp, spread: Duration, epoch: Epoch, now: Timestamp) -> Run {
    Run::queued(
        firing_id(job.uid, at, Cause::Schedule),
        job.name.clone(),
        job.uid,
        at,
        add(at, spread),
        Trigger::Schedule,
        epoch,
        now,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn shards_are_stable_and_spread() {
        let mut counts = [0u32; 4];
        for i in 0..4_000u128 {
            let uid = Uuid::from_u128(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
            let s = shard_of(&uid, 4);
            assert_eq!(s, shard_of(&uid, 4));
            counts[s as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(shard_of(&Uuid::from_u128(7), 1), 0);
        assert_eq!(shard_of(&Uuid::from_u128(7), 0), 0);
    }

    use super::*;
    use crate::core::action::Action;
    use crate::core::ids::JobName;
    use crate::core::policy::Policies;
    use crate::core::schedule::{DstFold, DstGap, Kind, ScheduleSpec};
    use chrono::TimeZone;

    fn t(s: i64) -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(s)
    }

    fn job(id: &str, every_s: u64) -> Job {
        Job {
            name: JobName::new("local", id),
            uid: Uuid::new_v5(&Uuid::nil(), id.as_bytes()),
            description: String::new(),
            labels: Vec::new(),
            schedule: ScheduleSpec {
                kind: Kind::Interval {
                    every: Duration::from_secs(every_s),
                    anchor: t(0),
                },
                time_zone: "UTC".into(),
                dst_gap: DstGap::Shift,
                dst_fold: DstFold::First,
                start_time: None,
                end_time: None,
            },
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

    fn index(jobs: &[Job], cursor: Timestamp) -> Index {
        let mut ix = Index::default();
        for j in jobs {
            ix.upsert(j, j.schedule.compile().unwrap(), cursor);
        }
        ix
    }

    const GRACE: Duration = Duration::from_secs(5);

    #[test]
    fn plans_firings_after_the_cursor_up_to_the_horizon() {
        let mut ix = index(&[job("a", 10)], t(0));
        assert_eq!(ix.next_due(), Some(t(10)));
        let plans = ix.take_due(t(25), t(24), GRACE, Epoch(1), 100);
        assert_eq!(plans.len(), 1);
        let at: Vec<_> = plans[0].runs.iter().map(|r| r.scheduled_at).collect();
        assert_eq!(at, vec![t(10), t(20)]);
        assert!(plans[0].runs.iter().all(|r| r.state == State::Queued));
        assert_eq!((plans[0].from, plans[0].cursor), (t(0), t(20)));
        assert_eq!(ix.next_due(), Some(t(30)));
        // Nothing more is due before 30 s.
        assert!(ix.take_due(t(29), t(29), GRACE, Epoch(1), 100).is_empty());
    }

    #[test]
    fn firing_ids_are_those_of_the_schedule() {
        let j = job("a", 10);
        let mut ix = index(std::slice::from_ref(&j), t(0));
        let plans = ix.take_due(t(10), t(10), GRACE, Epoch(7), 100);
        let run = &plans[0].runs[0];
        assert_eq!(run.firing, firing_id(j.uid, t(10), Cause::Schedule));
        assert_eq!(run.epoch, Epoch(7));
        assert_eq!(run.due_at, t(10));
    }

    #[test]
    fn restore_plans_the_same_firings_again() {
        let mut ix = index(&[job("a", 10)], t(0));
        let first = ix.take_due(t(10), t(10), GRACE, Epoch(1), 100);
        ix.restore(&first[0].job.uid, first[0].from);
        let again = ix.take_due(t(10), t(10), GRACE, Epoch(1), 100);
        assert_eq!(first[0].runs[0].firing, again[0].runs[0].firing);
    }

    #[test]
    fn removed_and_paused_jobs_are_not_planned() {
        let a = job("a", 10);
        let mut b = job("b", 10);
        let mut ix = index(&[a.clone(), b.clone()], t(0));
        ix.remove(&a.uid);
        b.paused = true;
        ix.upsert(&b, b.schedule.compile().unwrap(), t(0));
        assert!(ix.is_empty());
        assert!(ix.take_due(t(100), t(100), GRACE, Epoch(1), 100).is_empty());
        assert_eq!(ix.next_due(), None);
    }

    #[test]
    fn a_pause_window_becomes_one_paused_record() {
        let mut j = job("a", 10);
        j.paused_at = Some(t(15));
        j.resumed_at = Some(t(55));
        let mut ix = index(&[j], t(0));
        let plans = ix.take_due(t(60), t(60), GRACE, Epoch(1), 100);
        let runs = &plans[0].runs;
        // 10 runs (queued, but late: catch-up allows it), 20..50 paused as one record, 60 runs.
        let states: Vec<_> = runs.iter().map(|r| (r.scheduled_at, r.state)).collect();
        assert_eq!(
            states,
            vec![
                (t(10), State::Queued),
                (t(20), State::Paused),
                (t(60), State::Queued)
            ]
        );
        assert_eq!(runs[1].missed_count, 4);
        assert_eq!(runs[1].missed_until, Some(t(50)));
    }

    #[test]
    fn firings_older_than_the_catchup_window_are_missed_and_folded() {
        let mut j = job("a", 1);
        j.policy.catchup.window = Duration::from_secs(60);
        j.policy.catchup.max = 5;
        let mut ix = index(&[j], t(0));
        // Down for 1000 s: 1000 firings due.
        let plans = ix.take_due(t(1000), t(1000), GRACE, Epoch(1), 100);
        let runs = &plans[0].runs;
        let queued = runs.iter().filter(|r| r.state == State::Queued).count();
        let missed: u64 = runs
            .iter()
            .filter(|r| r.state == State::Missed)
            .map(|r| r.missed_count.max(1))
            .sum();
        // The 5 most recent late ones plus the on-time ones (995..=1000 s: within the
        // grace, which is inclusive) run.
        assert_eq!(queued, 5 + 6);
        assert_eq!(
            queued as u64 + missed,
            1000,
            "every firing is accounted for"
        );
        assert!(runs.len() <= 5 + 6 + catchup::MISSED_RECORDS_MAX + 1);
        assert_eq!(plans[0].cursor, t(1000));
    }

    #[test]
    fn jobs_come_due_in_instant_order_with_spread() {
        let mut a = job("a", 10);
        a.policy.spread.window = Duration::from_secs(5);
        let b = job("b", 10);
        let mut ix = index(&[a.clone(), b], t(0));
        let off = spread::offset(a.uid.as_bytes(), a.policy.spread.window);
        assert_eq!(ix.next_due(), Some(t(10)));
        let plans = ix.take_due(t(10), t(10), GRACE, Epoch(1), 100);
        assert_eq!(plans.len(), 1, "only the unspread job is due at 10 s");
        let plans = ix.take_due(add(t(10), off), t(10), GRACE, Epoch(1), 100);
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].runs[0].scheduled_at, t(10));
        assert_eq!(plans[0].runs[0].due_at, add(t(10), off));
    }
}
