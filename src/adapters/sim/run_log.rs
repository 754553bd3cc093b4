//! The simulated run log: the Redis run log's rules (`adapters/redis/run_log.rs` and
//! its Lua scripts) on in-memory B-trees: claims idempotent by firing id and fenced per
//! shard (a newer epoch raises the fence, an empty claim too), cursors that only move
//! forward, one start per (firing, attempt) also within a batch, the first end of an
//! attempt stands, only the latest attempt sets the state, terminal runs never change,
//! retention of the newest terminal runs per job on claim, the unfinished index.
//! Records `Claim` and `Started` trace events with the calling node's id.
//!
//! As in Redis, a start is refused `JobDeleted` only when the run record is gone, never
//! `JobPaused` (the catalog is elsewhere), and a job has a cursor only once a claim
//! advanced it. Writes are applied at once (durable); `record_end` while Redis is
//! unreachable is queued on the node and applied when the link is back (lost in a
//! crash). Must not decide anything about schedules, read a clock other than the
//! world's, or iterate anything but B-trees.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use uuid::Uuid;

use super::{Ctx, END_QUEUE_MAX, Link, State, TraceEvent};
use crate::core::Timestamp;
use crate::core::ids::{Epoch, FiringId};
use crate::core::run::{OUTPUT_TAIL_BYTES_MAX, Run, State as RunState};
use crate::ports::{AttemptEnd, AttemptStart, Claim, Error, Refusal, Result};

/// Runs kept per job by default (the Redis run log's default).
pub const RUNS_PER_JOB_MAX: u64 = 100;

/// (scheduled instant, firing): a run's place in its job's indexes.
type JobKey = (Timestamp, FiringId);

/// The run log's data, shared by every node of the world.
#[derive(Default)]
pub(crate) struct Store {
    runs: BTreeMap<FiringId, Run>,
    /// Every run of a job.
    by_job: BTreeMap<Uuid, BTreeSet<JobKey>>,
    /// The terminal runs of a job: what retention may delete.
    done: BTreeMap<Uuid, BTreeSet<JobKey>>,
    /// Runs not yet terminal, by (due instant, firing).
    unfinished: BTreeSet<(Timestamp, FiringId)>,
    cursors: BTreeMap<Uuid, Timestamp>,
    /// The newest epoch seen per shard.
    fences: BTreeMap<u32, Epoch>,
}

fn truncate_tail(s: &mut String) {
    if s.len() > OUTPUT_TAIL_BYTES_MAX {
        let mut cut = s.len() - OUTPUT_TAIL_BYTES_MAX;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        s.drain(..cut);
    }
}

impl Store {
    pub(crate) fn all(&self) -> Vec<Run> {
        self.runs.values().cloned().collect()
    }

    fn close(&mut self, run: &Run) {
        self.unfinished.remove(&(run.due_at, run.firing));
        self.done
            .entry(run.job_uid)
            .or_default()
            .insert((run.scheduled_at, run.firing));
    }

    fn claim(
        &mut self,
        shard: u32,
        epoch: Epoch,
        claims: Vec<Claim>,
        keep: u64,
    ) -> Result<Vec<bool>> {
        match self.fences.get(&shard) {
            Some(&current) if epoch < current => {
                return Err(Error::Fenced {
                    stale: epoch,
                    current,
                });
            }
            _ => {
                self.fences.insert(shard, epoch);
            }
        }
        let mut out = Vec::with_capacity(claims.len());
        for c in claims {
            let run = c.run;
            if let Some(at) = c.cursor {
                let cur = self.cursors.entry(run.job_uid).or_insert(at);
                if *cur < at {
                    *cur = at;
                }
            }
            if self.runs.contains_key(&run.firing) {
                out.push(false);
                continue;
            }
            let key = (run.scheduled_at, run.firing);
            self.by_job.entry(run.job_uid).or_default().insert(key);
            if run.state.is_terminal() {
                self.done.entry(run.job_uid).or_default().insert(key);
            } else {
                self.unfinished.insert((run.due_at, run.firing));
            }
            let uid = run.job_uid;
            self.runs.insert(run.firing, run);
            self.retain(uid, keep);
            out.push(true);
        }
        Ok(out)
    }

    /// Delete the oldest terminal runs of a job while it has more than `keep`.
    fn retain(&mut self, uid: Uuid, keep: u64) {
        let Some(all) = self.by_job.get_mut(&uid) else {
            return;
        };
        let Some(done) = self.done.get_mut(&uid) else {
            return;
        };
        while all.len() as u64 > keep {
            let Some(oldest) = done.pop_first() else {
                return;
            };
            all.remove(&oldest);
            self.runs.remove(&oldest.1);
        }
    }

    fn start(&mut self, s: &AttemptStart) -> std::result::Result<(), Refusal> {
        let Some(run) = self.runs.get_mut(&s.firing) else {
            return Err(Refusal::JobDeleted);
        };
        if s.epoch < run.epoch {
            return Err(Refusal::Fenced);
        }
        if run.state.is_terminal() {
            return Err(Refusal::Terminal(run.state));
        }
        if run.attempts.last().is_some_and(|a| a.number >= s.number) {
            return Err(Refusal::AlreadyStarted);
        }
        run.state = RunState::Running;
        run.epoch = s.epoch;
        run.next_attempt_at = None;
        run.update_time = s.started_at;
        run.attempts.push(s.attempt());
        Ok(())
    }

    pub(crate) fn finish(&mut self, firing: FiringId, mut e: AttemptEnd) -> Result<Run> {
        let Some(run) = self.runs.get_mut(&firing) else {
            return Err(Error::NotFound(format!("run {firing}")));
        };
        let latest = run.attempts.last().map_or(0, |a| a.number);
        let Some(attempt) = run.attempts.iter_mut().find(|a| a.number == e.number) else {
            return Err(Error::Conflict(format!(
                "run {firing} has no attempt {}",
                e.number
            )));
        };
        if attempt.status.is_some() {
            // The first end stands.
            return Ok(run.clone());
        }
        truncate_tail(&mut e.output_tail);
        attempt.finished_at = Some(e.finished_at);
        attempt.status = Some(e.status);
        attempt.summary = e.summary.clone();
        attempt.exit_code = e.exit_code;
        attempt.http_status = e.http_status;
        attempt.output_tail = e.output_tail;
        let mut closed = false;
        if !run.state.is_terminal() && latest == e.number {
            run.state = e.next_state;
            run.next_attempt_at = e.next_attempt_at;
            run.update_time = e.finished_at;
            if e.next_state.is_terminal() && e.next_state != RunState::Succeeded {
                run.reason = e.summary;
            }
            closed = e.next_state.is_terminal();
        }
        let out = run.clone();
        if closed {
            self.close(&out);
        }
        Ok(out)
    }

    fn end_run(&mut self, firing: FiringId, state: RunState, reason: String) -> Result<Run> {
        let Some(run) = self.runs.get_mut(&firing) else {
            return Err(Error::NotFound(format!("run {firing}")));
        };
        if run.state.is_terminal() {
            return Ok(run.clone());
        }
        run.state = state;
        run.reason = reason;
        run.next_attempt_at = None;
        let out = run.clone();
        self.close(&out);
        Ok(out)
    }

    fn list(&self, uid: Uuid, before: Option<JobKey>, limit: usize) -> Vec<Run> {
        let Some(keys) = self.by_job.get(&uid) else {
            return Vec::new();
        };
        let range = match before {
            Some(b) => keys.range(..b),
            None => keys.range(..),
        };
        range
            .rev()
            .filter_map(|k| self.runs.get(&k.1).cloned())
            .take(limit)
            .collect()
    }

    fn unfinished(&self) -> Vec<Run> {
        self.unfinished
            .iter()
            .filter_map(|k| self.runs.get(&k.1).cloned())
            .collect()
    }

    fn forget_job(&mut self, uid: Uuid) {
        for (_, firing) in self.by_job.remove(&uid).unwrap_or_default() {
            if let Some(run) = self.runs.remove(&firing) {
                self.unfinished.remove(&(run.due_at, run.firing));
            }
        }
        self.done.remove(&uid);
        self.cursors.remove(&uid);
    }
}

/// One node's handle on the run log.
pub(crate) struct SimRunLog {
    ctx: Ctx,
    keep: u64,
}

impl SimRunLog {
    pub(crate) fn new(ctx: Ctx, keep: u64) -> Self {
        Self { ctx, keep }
    }

    async fn call<T>(&self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        self.ctx.call(Link::Redis, f).await
    }
}

#[async_trait]
impl crate::ports::RunLog for SimRunLog {
    async fn claim_in_shard(
        &self,
        shard: u32,
        epoch: Epoch,
        claims: Vec<Claim>,
    ) -> Result<Vec<bool>> {
        let (world, node, keep) = (self.ctx.world.clone(), self.ctx.node.clone(), self.keep);
        let runs = claims.len();
        self.call(move |st| {
            let at = world.true_now();
            let out = st.runs.claim(shard, epoch, claims, keep);
            st.record(TraceEvent::Claim {
                at,
                shard,
                node,
                epoch,
                runs,
                accepted: out.is_ok(),
            });
            out
        })
        .await
    }

    async fn delete_job_runs(&self, job_uid: Uuid) -> Result<()> {
        self.call(move |st| {
            st.runs.forget_job(job_uid);
            Ok(())
        })
        .await
    }

    async fn cursors(&self) -> Result<Vec<(Uuid, Timestamp)>> {
        self.call(|st| Ok(st.runs.cursors.iter().map(|(u, t)| (*u, *t)).collect()))
            .await
    }

    async fn cursor(&self, job_uid: Uuid) -> Result<Option<Timestamp>> {
        self.call(move |st| Ok(st.runs.cursors.get(&job_uid).copied()))
            .await
    }

    async fn start_attempts(
        &self,
        starts: Vec<AttemptStart>,
    ) -> Result<Vec<std::result::Result<(), Refusal>>> {
        if starts.is_empty() {
            return Ok(Vec::new());
        }
        let (world, node) = (self.ctx.world.clone(), self.ctx.node.clone());
        self.call(move |st| {
            let at = world.true_now();
            let mut out = Vec::with_capacity(starts.len());
            for s in &starts {
                let answer = st.runs.start(s);
                if answer.is_ok() {
                    st.record(TraceEvent::Started {
                        at,
                        firing: s.firing,
                        attempt: s.number,
                        node: node.clone(),
                        epoch: s.epoch,
                    });
                }
                out.push(answer);
            }
            Ok(out)
        })
        .await
    }

    async fn finish_attempt(&self, firing: FiringId, end: AttemptEnd) -> Result<Run> {
        self.call(move |st| st.runs.finish(firing, end)).await
    }

    async fn record_end(&self, firing: FiringId, end: AttemptEnd) -> Result<()> {
        // Like the Redis log's writer: an end waits (on the node) while Redis is away.
        if let Err(e) = self.ctx.enter(Link::Redis).await {
            let current = {
                let st = self.ctx.world.lock();
                st.is_current(&self.ctx.node, self.ctx.incarnation)
            };
            if !current {
                return Err(e);
            }
        }
        let mut st = self.ctx.world.lock();
        if !st.is_current(&self.ctx.node, self.ctx.incarnation) {
            return Err(super::gone(&self.ctx.node));
        }
        let Some(n) = st.nodes.get_mut(&self.ctx.node) else {
            return Err(super::gone(&self.ctx.node));
        };
        if !(n.redis_up && n.ends.is_empty()) {
            if n.ends.len() >= END_QUEUE_MAX {
                return Err(Error::Unavailable(
                    "sim run log: too many attempt ends wait for Redis".into(),
                ));
            }
            n.ends.push_back((firing, end));
            return Ok(());
        }
        // As the Redis writer does with an end it cannot apply: drop it (logged
        // there); recovery settles the attempt.
        let _ = st.runs.finish(firing, end);
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        self.call(|_| Ok(())).await
    }

    async fn end_run(&self, firing: FiringId, state: RunState, reason: String) -> Result<Run> {
        if !state.is_terminal() {
            return Err(Error::Conflict(format!(
                "end_run needs a terminal state, not {}",
                state.as_str()
            )));
        }
        self.call(move |st| st.runs.end_run(firing, state, reason))
            .await
    }

    async fn get_run(&self, firing: FiringId) -> Result<Option<Run>> {
        self.call(move |st| Ok(st.runs.runs.get(&firing).cloned()))
            .await
    }

    async fn list_runs(
        &self,
        job_uid: Uuid,
        before: Option<(Timestamp, FiringId)>,
        limit: usize,
    ) -> Result<Vec<Run>> {
        self.call(move |st| Ok(st.runs.list(job_uid, before, limit)))
            .await
    }

    async fn unfinished(&self) -> Result<Vec<Run>> {
        self.call(|st| Ok(st.runs.unfinished())).await
    }
}
