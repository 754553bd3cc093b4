//! `ScheduleOwner`: the owner of one shard of the schedule for one term (the node
//! supervisor starts one when this node wins the shard's election).
//!
//! It raises the run log's fence to its epoch, loads the shard's active jobs into the
//! core's timer index, recovers runs a previous term left unfinished, then on each tick
//! plans the firings due within the dispatch lead, claims them durably in one batch
//! (runs + advanced cursors, fenced by its epoch) and hands the queued ones to their
//! region (or, when the home region has no live node, applies the job's region-loss
//! policy). It follows the catalog through its watch. Before every claim and every
//! dispatch it checks that its term still holds (synchronously, against the lease
//! deadline), so a process resumed after a pause cannot slip one through. Must not
//! start attempts (regions do) nor compute schedules (the core does).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::Deps;
use crate::core::Timestamp;
use crate::core::firing::{Cause, firing_id};
use crate::core::ids::{Epoch, JobName, RegionId};
use crate::core::job::Job;
use crate::core::owner::{Index, Plan, shard_of};
use crate::core::policy::region_loss;
use crate::core::policy::retry::{self, Decision as RetryDecision, Failure};
use crate::core::run::{AttemptStatus, Run, State, Trigger};
use crate::ports::{AttemptEnd, CatalogEvent, Claim, Dispatch, Error, JobFilter, Term};

/// Longest the owner sleeps between ticks, even with nothing due (it re-checks its
/// pending dispatches and term).
const TICK_MAX: Duration = Duration::from_secs(1);
/// Back-off after a failed claim or a full region queue.
const RETRY_AFTER: Duration = Duration::from_millis(20);
/// Claimed dispatches the owner holds while regions are full; past it, it stops
/// claiming until they drain.
const PENDING_MAX: usize = 100_000;
/// Jobs read per page while loading the index.
const LOAD_PAGE_MAX: usize = 10_000;
/// Full jobs the owner keeps at hand (mesh mode, where each catalog read is a network
/// round trip): filled by the load and kept current by the catalog watch; a miss reads
/// the catalog.
const JOB_CACHE_MAX: usize = 100_000;
/// How often a closed clock gate is looked at again.
const GATE_RECHECK: Duration = Duration::from_millis(100);
/// How long the owner trusts its view of which regions have a live node.
const LIVE_REGIONS_TTL: Duration = Duration::from_secs(1);

pub enum ScheduleOwnerMsg {
    /// Time to plan and claim what is due. Carries the timer's sequence number.
    Tick(u64),
    /// A catalog change seen through the watch.
    Catalog(CatalogEvent),
    /// The watch lagged: reload every job.
    Resync,
    /// Fire a job now (a manual trigger).
    Trigger {
        job: JobName,
        override_overlap: bool,
        nonce: u64,
        reply: RpcReplyPort<Result<Run, String>>,
    },
    Status(RpcReplyPort<Status>),
    /// The term ended (lease lost, resigned, newer epoch): stop at once.
    TermEnded,
}

/// What the owner shows about itself.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub shard: u32,
    pub epoch: Epoch,
    /// Time left on the term's lease when asked (None: no lease, embedded mode).
    pub lease_left: Option<Duration>,
    pub jobs_indexed: usize,
    pub next_due: Option<Timestamp>,
    pub pending_dispatches: usize,
    pub claimed: u64,
    pub missed: u64,
    pub gated: u64,
    pub dispatched: u64,
    pub recovered: u64,
}

pub struct ScheduleOwner;

pub struct OwnerState {
    deps: Arc<Deps>,
    shard: u32,
    term: Term,
    /// Regions with a live node, and when that was read (mesh mode).
    live: Option<(Timestamp, Vec<RegionId>)>,
    /// Full jobs by uid (mesh mode only; bounded by `JOB_CACHE_MAX`).
    jobs: HashMap<uuid::Uuid, Arc<Job>>,
    term_watch: Option<JoinHandle<()>>,
    jump_watch: Option<JoinHandle<()>>,
    index: Index,
    pending: VecDeque<Dispatch>,
    timer: Option<JoinHandle<()>>,
    timer_at: Option<Timestamp>,
    timer_seq: u64,
    watch: Option<JoinHandle<()>>,
    stats: Status,
}

impl Drop for OwnerState {
    fn drop(&mut self) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
        if let Some(w) = self.watch.take() {
            w.abort();
        }
        if let Some(w) = self.term_watch.take() {
            w.abort();
        }
        if let Some(w) = self.jump_watch.take() {
            w.abort();
        }
    }
}

fn std_to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).expect("durations are bounded")
}

impl Actor for ScheduleOwner {
    type Msg = ScheduleOwnerMsg;
    type State = OwnerState;
    /// The node's deps, the shard, and the term this node won for it.
    type Arguments = (Arc<Deps>, u32, Term);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (deps, shard, term): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        if !term.is_live() {
            return Err("the term ended before the owner started".into());
        }
        info!(node = %deps.node, shard, epoch = %term.epoch, "schedule owner term started");
        let ended = term.ended.clone();
        let end_to = myself.clone();
        let term_watch = tokio::spawn(async move {
            ended.cancelled().await;
            let _ = end_to.cast(ScheduleOwnerMsg::TermEnded);
        });
        // Raise the run log's fence to this epoch before reading what earlier terms
        // left: from here on, their claims are refused.
        deps.runs
            .claim_in_shard(shard, term.epoch, Vec::new())
            .await?;
        // Subscribe before loading, so no change between the load and the watch is lost
        // (upserts are idempotent).
        // A wall-clock jump: rebuild the index from the scheduled instants (cursors).
        let mut jumps = deps.guard.jumps();
        let jump_to = myself.clone();
        let jump_watch = tokio::spawn(async move {
            while jumps.changed().await.is_ok() {
                if jump_to.cast(ScheduleOwnerMsg::Resync).is_err() {
                    return;
                }
            }
        });
        let mut rx = deps.catalog.watch();
        let watch_to = myself.clone();
        let watch = tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        if watch_to.cast(ScheduleOwnerMsg::Catalog(ev)).is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        warn!(missed = n, "catalog watch lagged; reloading");
                        if watch_to.cast(ScheduleOwnerMsg::Resync).is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        let mut state = OwnerState {
            deps,
            shard,
            term,
            live: None,
            jobs: HashMap::new(),
            term_watch: Some(term_watch),
            jump_watch: Some(jump_watch),
            index: Index::default(),
            pending: VecDeque::new(),
            timer: None,
            timer_at: None,
            timer_seq: 0,
            watch: Some(watch),
            stats: Status::default(),
        };
        state.load().await?;
        state.recover().await?;
        state.stats.epoch = state.term.epoch;
        state.stats.shard = shard;
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.arm(&myself, state.deps.clock.now());
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if !state.term_live() {
            warn!(shard = state.shard, epoch = %state.term.epoch, "owner term ended; stopping");
            myself.stop(Some("term ended".into()));
            return Ok(());
        }
        match msg {
            ScheduleOwnerMsg::Tick(seq) => {
                if seq == state.timer_seq {
                    state.timer_at = None;
                    state.tick(&myself).await?;
                }
            }
            ScheduleOwnerMsg::Catalog(ev) => {
                state.apply(ev).await?;
                state.rearm_if_earlier(&myself);
            }
            ScheduleOwnerMsg::Resync => {
                state.index = Index::default();
                state.jobs.clear();
                state.load().await?;
                state.arm(&myself, state.deps.clock.now());
            }
            ScheduleOwnerMsg::Trigger {
                job,
                override_overlap,
                nonce,
                reply,
            } => {
                let res = state.trigger(&job, override_overlap, nonce).await;
                let _ = reply.send(res);
            }
            ScheduleOwnerMsg::Status(reply) => {
                let mut s = state.stats.clone();
                s.jobs_indexed = state.index.len();
                s.next_due = state.index.next_due();
                s.pending_dispatches = state.pending.len();
                s.lease_left = state.term.left();
                let _ = reply.send(s);
            }
            // Handled by the liveness check above; a race where the message outlives
            // its cause is harmless.
            ScheduleOwnerMsg::TermEnded => {}
        }
        Ok(())
    }
}

impl OwnerState {
    /// Load every job and cursor into a fresh index, a page at a time (a million jobs
    /// must not sit in memory twice).
    async fn load(&mut self) -> Result<(), ActorProcessingErr> {
        let cursors: HashMap<_, _> = self.deps.runs.cursors().await?.into_iter().collect();
        let filter = JobFilter::default();
        let mut after = None;
        let mut total = 0usize;
        loop {
            let page = self
                .deps
                .catalog
                .list_jobs(&filter, after.take(), LOAD_PAGE_MAX)
                .await?;
            let full = page.len() == LOAD_PAGE_MAX;
            let n = page.len();
            if let Some(last) = page.last() {
                after = Some((last.create_time, last.name.clone()));
            }
            let (shards, shard) = (self.deps.config.shards, self.shard);
            for job in page
                .into_iter()
                .filter(|j| shard_of(&j.uid, shards) == shard)
            {
                let cursor = cursors.get(&job.uid).copied().unwrap_or(job.create_time);
                self.index_job(&job, cursor);
                self.cache(Arc::new(job));
            }
            total += n;
            if !full {
                break;
            }
        }
        info!(jobs = total, indexed = self.index.len(), "jobs loaded");
        Ok(())
    }

    /// Whether this owner's term still holds (the planted bug of the simulator's tests
    /// says yes regardless).
    fn term_live(&self) -> bool {
        self.deps.config.planted_stale_owner || self.term.is_live()
    }

    /// Whether a job belongs to this owner's shard.
    fn mine(&self, uid: &uuid::Uuid) -> bool {
        shard_of(uid, self.deps.config.shards) == self.shard
    }

    fn index_job(&mut self, job: &Job, cursor: Timestamp) {
        match job.schedule.compile() {
            Ok(schedule) => self.index.upsert(job, schedule, cursor),
            // Validated at the API; a stored schedule that no longer compiles (e.g. a
            // zone removed from the tz database) is logged, not fired.
            Err(e) => error!(job = %job.name, error = %e, "stored schedule does not compile"),
        }
    }

    /// Keep a full job at hand (mesh mode, while there is room).
    fn cache(&mut self, job: Arc<Job>) {
        if self.deps.membership.is_some()
            && (self.jobs.len() < JOB_CACHE_MAX || self.jobs.contains_key(&job.uid))
        {
            self.jobs.insert(job.uid, job);
        }
    }

    /// The job a run belongs to, as the catalog has it now; None if it was deleted or
    /// replaced by a new job of the same name.
    async fn job_of(&mut self, name: &JobName, uid: uuid::Uuid) -> Result<Option<Arc<Job>>, Error> {
        if let Some(j) = self.jobs.get(&uid)
            && j.name == *name
        {
            return Ok(Some(j.clone()));
        }
        let job = self
            .deps
            .catalog
            .get_job(name)
            .await?
            .filter(|j| j.uid == uid)
            .map(Arc::new);
        if let Some(j) = &job {
            self.cache(j.clone());
        }
        Ok(job)
    }

    /// Runs a previous term left unfinished: queued or waiting ones are dispatched
    /// again (or recorded missed, past their catch-up window); an attempt that was
    /// running has an unknown outcome: it is recorded `worker_lost` and retried only
    /// if its retry policy allows, as a new attempt.
    async fn recover(&mut self) -> Result<(), ActorProcessingErr> {
        let now = self.deps.clock.now();
        // Mesh mode: attempts running on live nodes are theirs to finish (and their
        // region's queue hands them to a peer if that node dies).
        // Embedded mode: the owner starts with the process, so every attempt found
        // running was cut off by a stop.
        let mut live_nodes = std::collections::HashSet::new();
        if let Some(m) = &self.deps.membership {
            for region in m.live_regions().await? {
                live_nodes.extend(m.members(&region).await?.into_iter().map(|m| m.node));
            }
        }
        for mut run in self.deps.runs.unfinished().await? {
            if !self.mine(&run.job_uid) {
                continue;
            }
            let Some(job) = self.job_of(&run.job, run.job_uid).await? else {
                self.deps
                    .runs
                    .end_run(run.firing, State::Cancelled, "job was deleted".into())
                    .await?;
                continue;
            };
            if run.state == State::Running {
                let last = run.attempts.last().expect("running runs have an attempt");
                // Mesh mode: a live node (this one included: a new term is not a
                // restart) finishes its own attempts; what a restarted node left is
                // adopted by its region supervisor, what a dead one left by its
                // region's queue redelivery.
                if self.deps.membership.is_some() && live_nodes.contains(&last.node) {
                    continue;
                }
                let number = last.number;
                let decision = retry::after_attempt(
                    &job.policy.retry,
                    number,
                    Failure::Retryable,
                    retry::jitter_seed(&run.firing.to_string(), number),
                );
                let (next_state, next_at) = next_after_failure(decision, now);
                warn!(job = %job.name, firing = %run.firing, attempt = number, "attempt was running when the node stopped: outcome unknown");
                run = self
                    .deps
                    .runs
                    .finish_attempt(
                        run.firing,
                        AttemptEnd {
                            number,
                            status: AttemptStatus::WorkerLost,
                            finished_at: now,
                            summary:
                                "the node stopped while this attempt ran; its outcome is unknown"
                                    .into(),
                            exit_code: None,
                            http_status: None,
                            output_tail: String::new(),
                            next_state,
                            next_attempt_at: next_at,
                        },
                    )
                    .await?;
                if run.state.is_terminal() {
                    continue;
                }
            }
            if run.state == State::Queued
                && run.attempts.is_empty()
                && now - run.due_at > std_to_chrono(job.policy.catchup.window)
            {
                self.deps
                    .runs
                    .end_run(
                        run.firing,
                        State::Missed,
                        "due while the node was down, outside the catch-up window".into(),
                    )
                    .await?;
                self.stats.missed += 1;
                continue;
            }
            self.stats.recovered += 1;
            self.pending.push_back(Dispatch {
                run,
                job,
                epoch: self.term.epoch,
                shard: self.shard,
            });
        }
        if self.stats.recovered > 0 {
            info!(runs = self.stats.recovered, "recovered unfinished runs");
        }
        Ok(())
    }

    async fn apply(&mut self, ev: CatalogEvent) -> Result<(), ActorProcessingErr> {
        match ev {
            CatalogEvent::Upserted(job) if !self.mine(&job.uid) => {}
            CatalogEvent::Deleted { uid, .. } if !self.mine(&uid) => {}
            CatalogEvent::Upserted(job) => {
                let cursor = match self.index.cursor(&job.uid) {
                    Some(c) => c,
                    None => self
                        .deps
                        .runs
                        .cursor(job.uid)
                        .await?
                        .unwrap_or(job.create_time),
                };
                debug!(job = %job.name, paused = job.paused, "job changed");
                self.index_job(&job, cursor);
                self.cache(job);
            }
            CatalogEvent::Deleted { uid, name } => {
                debug!(job = %name, "job deleted");
                self.index.remove(&uid);
                self.jobs.remove(&uid);
                self.pending.retain(|d| d.job.uid != uid);
            }
        }
        Ok(())
    }

    /// Plan, claim and dispatch everything due within the lead.
    async fn tick(
        &mut self,
        myself: &ActorRef<ScheduleOwnerMsg>,
    ) -> Result<(), ActorProcessingErr> {
        if !self.flush().await {
            self.arm(myself, self.deps.clock.now() + std_to_chrono(RETRY_AFTER));
            return Ok(());
        }
        let cfg = self.deps.config.clone();
        let now = self.deps.clock.now();
        if !self.deps.guard.is_open() {
            return self.tick_gated(myself, now).await;
        }
        let horizon = now + std_to_chrono(cfg.dispatch_lead);
        let plans = self.index.take_due(
            horizon,
            now,
            cfg.late_grace,
            self.term.epoch,
            cfg.owner_batch_max,
        );
        let full_batch = plans.len() >= cfg.owner_batch_max;
        if !plans.is_empty() {
            if !self.term_live() {
                for plan in &plans {
                    self.index.restore(&plan.job.uid, plan.from);
                }
                warn!(shard = self.shard, epoch = %self.term.epoch, "term over before the claim; stopping");
                myself.stop(Some("term ended".into()));
                return Ok(());
            }
            match self.claim(plans).await {
                Ok(()) => {}
                Err(Error::Fenced { stale, current }) => {
                    warn!(%stale, %current, "claim fenced: a newer owner exists; stopping");
                    self.term.ended.cancel();
                    myself.stop(Some("fenced".into()));
                    return Ok(());
                }
                Err(e) => {
                    warn!(error = %e, "claim failed; retrying");
                    self.arm(myself, now + std_to_chrono(RETRY_AFTER));
                    return Ok(());
                }
            }
        }
        let flushed = self.flush().await;
        let next = if full_batch && flushed {
            // More is due right now: go again at once (after other messages).
            now
        } else if !flushed {
            now + std_to_chrono(RETRY_AFTER)
        } else {
            let due = self
                .index
                .next_due()
                .map(|t| t - std_to_chrono(cfg.dispatch_lead));
            let cap = now + std_to_chrono(TICK_MAX);
            due.map_or(cap, |t| t.min(cap))
        };
        self.arm(myself, next);
        Ok(())
    }

    /// The clock gate is closed: nothing is claimed to run. Firings due longer ago than
    /// the gate's grace are recorded `gated`; after the gate stayed closed too long the
    /// shard is handed to a node with a good clock.
    async fn tick_gated(
        &mut self,
        myself: &ActorRef<ScheduleOwnerMsg>,
        now: Timestamp,
    ) -> Result<(), ActorProcessingErr> {
        if self.deps.guard.resign_due() {
            warn!(shard = self.shard, epoch = %self.term.epoch, "clock gate closed too long: resigning the shard");
            if let Err(e) = self.deps.election.resign(self.shard).await {
                warn!(error = %e, "resigning failed; the lease will expire");
            }
            self.term.ended.cancel();
            myself.stop(Some("clock gate closed too long".into()));
            return Ok(());
        }
        let cfg = self.deps.config.clone();
        let horizon = now - std_to_chrono(cfg.gate_grace);
        let mut plans = self.index.take_due(
            horizon,
            now,
            cfg.late_grace,
            self.term.epoch,
            cfg.owner_batch_max,
        );
        for plan in &mut plans {
            for run in &mut plan.runs {
                if run.state == State::Queued {
                    *run = run.clone().not_run(
                        State::Gated,
                        format!(
                            "this node's clock could not be trusted for {} s (clock gate closed)",
                            cfg.gate_grace.as_secs()
                        ),
                    );
                }
            }
        }
        if !plans.is_empty() && self.term_live() {
            if let Err(e) = self.claim(plans).await {
                warn!(error = %e, "recording gated firings failed; retrying");
            }
        } else {
            for plan in &plans {
                self.index.restore(&plan.job.uid, plan.from);
            }
        }
        self.arm(myself, now + std_to_chrono(GATE_RECHECK));
        Ok(())
    }

    async fn claim(&mut self, plans: Vec<Plan>) -> Result<(), Error> {
        let mut claims = Vec::new();
        for plan in &plans {
            let last = plan.runs.len().saturating_sub(1);
            for (i, run) in plan.runs.iter().enumerate() {
                claims.push(Claim {
                    run: run.clone(),
                    cursor: (i == last).then_some(plan.cursor),
                });
            }
        }
        match self
            .deps
            .runs
            .claim_in_shard(self.shard, self.term.epoch, claims)
            .await
        {
            Ok(inserted) => {
                let mut i = 0;
                for plan in plans {
                    let mut job = None;
                    for run in plan.runs {
                        let fresh = inserted[i];
                        i += 1;
                        self.stats.claimed += 1;
                        match run.state {
                            State::Missed => self.stats.missed += 1,
                            State::Gated => self.stats.gated += 1,
                            _ => {}
                        }
                        // Not fresh: claimed by an earlier term, which recovery handles.
                        if !fresh || run.state != State::Queued {
                            continue;
                        }
                        // The index holds only what planning needs; the full job is read
                        // now, once per plan, so the dispatch carries its latest version.
                        if job.is_none() {
                            job = Some(self.job_of(&plan.job.name, plan.job.uid).await?);
                        }
                        match job.clone().flatten() {
                            Some(job) => self.pending.push_back(Dispatch {
                                run,
                                job,
                                epoch: self.term.epoch,
                                shard: self.shard,
                            }),
                            None => {
                                self.deps
                                    .runs
                                    .end_run(run.firing, State::Cancelled, "job was deleted".into())
                                    .await?;
                            }
                        }
                    }
                }
                Ok(())
            }
            Err(e) => {
                for plan in &plans {
                    self.index.restore(&plan.job.uid, plan.from);
                }
                Err(e)
            }
        }
    }

    /// Regions with a live node (mesh mode), read at most every `LIVE_REGIONS_TTL`.
    /// None when there is no membership (embedded), or it could not be read yet.
    async fn live_regions(&mut self) -> Option<Vec<RegionId>> {
        let membership = self.deps.membership.clone()?;
        let now = self.deps.clock.now();
        let fresh = self
            .live
            .as_ref()
            .is_some_and(|(at, _)| now - *at < std_to_chrono(LIVE_REGIONS_TTL));
        if !fresh {
            match membership.live_regions().await {
                Ok(live) => self.live = Some((now, live)),
                // Keep the last view; without one, dispatch home.
                Err(e) => warn!(error = %e, "reading live regions failed"),
            }
        }
        self.live.as_ref().map(|(_, l)| l.clone())
    }

    /// Offer pending dispatches to their regions; true when none are left.
    async fn flush(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        if !self.term_live() {
            // Not ours to hand out any more: the next owner recovers them from the log.
            self.pending.clear();
            return true;
        }
        let live = self.live_regions().await;
        let mut by_region: HashMap<RegionId, Vec<Dispatch>> = HashMap::new();
        for d in self.pending.drain(..).collect::<Vec<_>>() {
            let home = &d.job.name.region;
            let to = match &live {
                None => home.clone(),
                Some(live) => match region_loss::decide(&d.job.policy.region_loss, home, live) {
                    region_loss::Decision::Dispatch(r) => r,
                    region_loss::Decision::Pause(why) => {
                        if let Err(e) = self
                            .deps
                            .runs
                            .end_run(d.run.firing, State::Paused, why)
                            .await
                        {
                            warn!(firing = %d.run.firing, error = %e, "recording a paused firing failed; will retry");
                            self.pending.push_back(d);
                        }
                        continue;
                    }
                },
            };
            by_region.entry(to).or_default().push(d);
        }
        for (region, batch) in by_region {
            let n = batch.len();
            match self.deps.queues.push(&region, batch.clone()).await {
                Ok(back) => {
                    self.stats.dispatched += (n - back.len()) as u64;
                    self.pending.extend(back);
                }
                Err(Error::NotFound(msg)) => {
                    // A job homed in a region this node does not host: say so on its runs.
                    for d in batch {
                        let _ = self
                            .deps
                            .runs
                            .end_run(d.run.firing, State::Missed, msg.clone())
                            .await;
                    }
                }
                Err(e) => {
                    warn!(region = %region, error = %e, "dispatch failed; will retry");
                    self.pending.extend(batch);
                }
            }
        }
        if self.pending.len() > PENDING_MAX {
            warn!(pending = self.pending.len(), "regions are not keeping up");
        }
        self.pending.is_empty()
    }

    async fn trigger(
        &mut self,
        name: &JobName,
        override_overlap: bool,
        nonce: u64,
    ) -> Result<Run, String> {
        let job = match self.deps.catalog.get_job(name).await {
            Ok(Some(j)) => Arc::new(j),
            Ok(None) => return Err(format!("{name} not found")),
            Err(e) => return Err(e.to_string()),
        };
        if job.paused {
            return Err(format!("{name} is paused"));
        }
        let now = self.deps.clock.now();
        let run = Run::queued(
            firing_id(job.uid, now, Cause::Manual { nonce }),
            job.name.clone(),
            job.uid,
            now,
            now,
            Trigger::Manual { override_overlap },
            self.term.epoch,
            now,
        );
        let claim = Claim {
            run: run.clone(),
            cursor: None,
        };
        if !self.term_live() {
            return Err("this node's term on the job's shard just ended; retry".into());
        }
        self.deps
            .runs
            .claim_in_shard(self.shard, self.term.epoch, vec![claim])
            .await
            .map_err(|e| e.to_string())?;
        self.pending.push_back(Dispatch {
            run: run.clone(),
            job,
            epoch: self.term.epoch,
            shard: self.shard,
        });
        self.flush().await;
        Ok(run)
    }

    fn arm(&mut self, myself: &ActorRef<ScheduleOwnerMsg>, at: Timestamp) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
        self.timer_seq += 1;
        self.timer_at = Some(at);
        let seq = self.timer_seq;
        let clock = self.deps.clock.clone();
        let me = myself.clone();
        self.timer = Some(tokio::spawn(async move {
            clock.sleep_until(at).await;
            let _ = me.cast(ScheduleOwnerMsg::Tick(seq));
        }));
    }

    /// After a catalog change: wake earlier if the change made something due sooner.
    fn rearm_if_earlier(&mut self, myself: &ActorRef<ScheduleOwnerMsg>) {
        let Some(due) = self.index.next_due() else {
            return;
        };
        let wake = due - std_to_chrono(self.deps.config.dispatch_lead);
        if self.timer_at.is_none_or(|t| wake < t) {
            self.arm(myself, wake);
        }
    }
}

/// Turn a retry decision after a failed attempt into the run's next state.
pub fn next_after_failure(decision: RetryDecision, now: Timestamp) -> (State, Option<Timestamp>) {
    match decision {
        RetryDecision::RetryIn(d) => (State::RetryWait, Some(now + std_to_chrono(d))),
        RetryDecision::DeadLetter => (State::DeadLettered, None),
        RetryDecision::GiveUp => (State::Failed, None),
    }
}
