//! `RegionSupervisor`: one per hosted region. Owns the region's bounded worker pool and
//! consumes its dispatch queue.
//!
//! Dispatches wait in a heap until their instant (a precise clock wake-up, so firings
//! start on time however early they were claimed), pass the job's overlap policy, and
//! are started: as many as there are idle workers, marked started in the run log in one
//! durable batch (one commit for all of them), each reserved for its worker meanwhile.
//! Only the starts the log accepted go to their workers; refused ones never run.
//! Dispatches stamped with an epoch older than one already seen are refused. A worker
//! that crashes is replaced and its attempt recorded `worker_lost` (then retried if
//! the job's retry policy allows). Retries and the overlap policy follow the next state
//! a worker reports, without waiting for its end record to be durable. Must not claim
//! firings or compute schedules.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use super::Deps;
use super::schedule_owner::next_after_failure;
use super::worker::{Done, Worker, WorkerMsg};
use crate::core::Timestamp;
use crate::core::clock_guard::Decision;
use crate::core::ids::{Epoch, FiringId, RegionId};
use crate::core::policy::overlap;
use crate::core::policy::retry::{self, Failure};
use crate::core::run::{AttemptStatus, State, Trigger};
use crate::ports::{AttemptEnd, AttemptStart, Delivery, Dispatch, Refusal};

/// Dispatches pulled from the queue per read.
const PULL_BATCH_MAX: usize = 1_024;
/// Gate waits longer than this are noted on the attempt's record.
const GATE_NOTE_MIN: std::time::Duration = std::time::Duration::from_millis(5);
/// How soon an item held at a closed clock gate is looked at again.
const GATE_RECHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// One attempt to start: a dispatch, which attempt, and when.
#[derive(Debug)]
pub struct Item {
    pub dispatch: Dispatch,
    pub attempt: u32,
    pub start_at: Timestamp,
    /// The clock guard held its start back (the attempt's record says so).
    pub gate_waited: bool,
}

pub enum RegionSupervisorMsg {
    /// Dispatches read from the region's queue.
    Pulled(Vec<Delivery>),
    /// The precise timer fired (sequence number).
    Wake(u64),
    /// The run log answered a batch of starts (one answer per start, in order; `Err`
    /// if the whole batch failed).
    Started {
        batch: Vec<Reserved>,
        answers: Result<Vec<Result<(), Refusal>>, String>,
    },
    /// A worker finished an assignment.
    AttemptDone {
        worker: ActorId,
        item: Box<Item>,
        done: Done,
    },
    /// Stop taking new work; let running attempts finish until `grace` passes, then
    /// cancel them; answer when no attempt runs.
    Drain(std::time::Duration, RpcReplyPort<()>),
    Status(RpcReplyPort<Status>),
    /// Mesh mode, right after start: take back the runs this node held in its previous
    /// life (same node name), which no other node will adopt while it is a member.
    AdoptLeftovers,
}

/// What a region supervisor shows about itself.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub region: RegionId,
    pub workers: usize,
    pub busy: usize,
    pub waiting: usize,
    pub ready: usize,
    pub started: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub skipped: u64,
    pub refused_stale_epoch: u64,
    pub workers_lost: u64,
    /// Deliveries of a firing this region already held (redelivery, recovery).
    pub duplicates: u64,
    /// Attempts found running on a node that is gone, recorded `worker_lost` here.
    pub orphans: u64,
    /// Starts the clock guard held back (early by the corrected clock, or gate closed).
    pub gate_waits: u64,
    /// Items handed back to the region's queue because this node's clock gate was
    /// closed.
    pub handed_back: u64,
    /// The highest epoch seen per shard.
    pub epoch_seen: HashMap<u32, Epoch>,
}

pub struct RegionSupervisor;

struct InFlight {
    item: Box<Item>,
    cancel: CancellationToken,
    /// The start is durable and the worker has the item (false while the start is
    /// being recorded).
    running: bool,
}

/// What a region does with a run whose holder is gone.
enum Adoption {
    /// The attempt was running: record it lost, retry per policy.
    Lost { why: String, attempt: u32 },
    /// The run waits for a retry: schedule it here.
    Resume(crate::core::run::Run),
}

/// An item whose start is being recorded, with the worker kept for it.
pub struct Reserved {
    worker: ActorRef<WorkerMsg>,
    item: Box<Item>,
    cancel: CancellationToken,
}

pub struct RegionState {
    deps: Arc<Deps>,
    region: RegionId,
    seq: u64,
    waiting: BinaryHeap<Reverse<(Timestamp, u64)>>,
    /// Waiting items by sequence number; `true` when the item already passed the
    /// overlap policy (held back at the start for the clock) and goes straight to the
    /// ready queue when its time comes.
    items: HashMap<u64, (Item, bool)>,
    ready: VecDeque<Item>,
    buffered: HashMap<FiringId, Item>,
    idle: Vec<ActorRef<WorkerMsg>>,
    busy: HashMap<ActorId, (ActorRef<WorkerMsg>, InFlight)>,
    overlap: HashMap<Uuid, overlap::State<FiringId>>,
    /// Firings held here (from delivery until their run is settled here), with the
    /// queue ids that acknowledge their deliveries then.
    owed: HashMap<FiringId, Vec<String>>,
    /// Items to hand back to the queue (clock gate closed), settled after `assign`.
    handed_back: Vec<Item>,
    /// Items held here (waiting, ready, buffered): the puller stops past the limit.
    held: Arc<AtomicUsize>,
    puller_stop: CancellationToken,
    timer: Option<JoinHandle<()>>,
    timer_at: Option<Timestamp>,
    timer_seq: u64,
    /// Set once a drain began: nothing new starts.
    draining: bool,
    /// Answered when the last running attempt ends.
    drained: Option<RpcReplyPort<()>>,
    stats: Status,
}

impl Drop for RegionState {
    fn drop(&mut self) {
        self.puller_stop.cancel();
        if let Some(t) = self.timer.take() {
            t.abort();
        }
    }
}

impl Actor for RegionSupervisor {
    type Msg = RegionSupervisorMsg;
    type State = RegionState;
    type Arguments = (Arc<Deps>, RegionId);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (deps, region): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut idle = Vec::with_capacity(deps.config.workers_max);
        for _ in 0..deps.config.workers_max {
            let (w, _) = Actor::spawn_linked(
                None,
                Worker,
                (deps.clone(), myself.clone()),
                myself.get_cell(),
            )
            .await?;
            idle.push(w);
        }
        let held = Arc::new(AtomicUsize::new(0));
        let puller_stop = CancellationToken::new();
        spawn_puller(
            deps.clone(),
            region.clone(),
            myself.clone(),
            held.clone(),
            puller_stop.clone(),
        );
        info!(region = %region, workers = idle.len(), "region supervisor started");
        if deps.membership.is_some() {
            let _ = myself.cast(RegionSupervisorMsg::AdoptLeftovers);
        }
        Ok(RegionState {
            stats: Status {
                region: region.clone(),
                workers: idle.len(),
                ..Status::default()
            },
            deps,
            region,
            seq: 0,
            waiting: BinaryHeap::new(),
            items: HashMap::new(),
            ready: VecDeque::new(),
            buffered: HashMap::new(),
            idle,
            busy: HashMap::new(),
            overlap: HashMap::new(),
            owed: HashMap::new(),
            handed_back: Vec::new(),
            held,
            puller_stop,
            timer: None,
            timer_at: None,
            timer_seq: 0,
            draining: false,
            drained: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RegionSupervisorMsg::Pulled(batch) => {
                for d in batch {
                    state.accept(d);
                }
                state.wake(&myself).await;
            }
            RegionSupervisorMsg::Wake(seq) => {
                if seq == state.timer_seq {
                    state.timer_at = None;
                    state.wake(&myself).await;
                }
            }
            RegionSupervisorMsg::Started { batch, answers } => {
                state.started(batch, answers).await;
                state.wake(&myself).await;
                state.check_drained();
            }
            RegionSupervisorMsg::AttemptDone { worker, item, done } => {
                if let Some((w, _)) = state.busy.remove(&worker) {
                    state.idle.push(w);
                }
                state.finished(*item, done).await;
                // A retry may now be the earliest item: wake re-arms the timer (and
                // starts what is ready on the freed worker).
                state.wake(&myself).await;
                state.check_drained();
            }
            RegionSupervisorMsg::Drain(grace, reply) => {
                state.drain(&myself, grace, reply);
            }
            RegionSupervisorMsg::AdoptLeftovers => {
                state.adopt_leftovers().await;
                state.wake(&myself).await;
            }
            RegionSupervisorMsg::Status(reply) => {
                let mut s = state.stats.clone();
                s.busy = state.busy.len();
                s.waiting = state.waiting.len();
                s.ready = state.ready.len();
                let _ = reply.send(s);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Our own policy: a worker that dies is replaced, and its attempt recorded; the
        // region never stops because one action panicked.
        let (cell, why) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        let id = cell.get_id();
        state.idle.retain(|w| w.get_id() != id);
        let lost = state.busy.remove(&id);
        if !state.draining {
            let (w, _) = Actor::spawn_linked(
                None,
                Worker,
                (state.deps.clone(), myself.clone()),
                myself.get_cell(),
            )
            .await?;
            state.idle.push(w);
        }
        // A worker reserved for a start being recorded had no attempt yet: the answer
        // (`Started`) finds it gone and settles its item.
        if let Some((_, inflight)) = lost.filter(|(_, f)| f.running) {
            state.stats.workers_lost += 1;
            error!(region = %state.region, firing = %inflight.item.dispatch.run.firing, reason = %why, "worker died mid-attempt");
            state.worker_lost(*inflight.item, &why).await;
        }
        state.wake(&myself).await;
        state.check_drained();
        Ok(())
    }
}

fn spawn_puller(
    deps: Arc<Deps>,
    region: RegionId,
    to: ActorRef<RegionSupervisorMsg>,
    held: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let held_max = deps.config.region_pending_max;
        while !stop.is_cancelled() {
            let room = held_max.saturating_sub(held.load(Ordering::Relaxed));
            if !deps.guard.is_open() {
                // A clock that cannot be trusted takes no new work: the region's other
                // nodes (and this one, once its gate opens) take it.
                tokio::time::sleep(GATE_RECHECK).await;
                continue;
            }
            if room == 0 {
                // Backpressure: leave work in the queue (and so with the owner).
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                continue;
            }
            match deps
                .queues
                .receive(&region, room.min(PULL_BATCH_MAX), &stop)
                .await
            {
                Ok(batch) if batch.is_empty() => {}
                Ok(batch) => {
                    held.fetch_add(batch.len(), Ordering::Relaxed);
                    if to.cast(RegionSupervisorMsg::Pulled(batch)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    warn!(region = %region, error = %e, "dispatch queue read failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
}

impl RegionState {
    fn accept(&mut self, delivery: Delivery) {
        let Delivery { id, dispatch: d } = delivery;
        if let Some(ids) = self.owed.get_mut(&d.run.firing) {
            // Already held here: a redelivery, or a new owner's recovery. Settled (and
            // acknowledged) with the copy held.
            self.stats.duplicates += 1;
            ids.push(id);
            self.held.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let seen = self.stats.epoch_seen.entry(d.shard).or_default();
        if d.epoch < *seen {
            // Fencing: an older owner's dispatch. The newer owner recovered the run
            // from the log and dispatched it again under its own epoch.
            self.stats.refused_stale_epoch += 1;
            warn!(region = %self.region, firing = %d.run.firing, shard = d.shard, epoch = %d.epoch, seen = %*seen, "refused dispatch from a stale epoch");
            self.held.fetch_sub(1, Ordering::Relaxed);
            self.ack(vec![id]);
            return;
        }
        *seen = d.epoch;
        self.owed.insert(d.run.firing, vec![id]);
        let attempt = d.run.next_attempt_number();
        let start_at = d.run.next_start_at();
        self.push_waiting(Item {
            dispatch: d,
            attempt,
            start_at,
            gate_waited: false,
        });
    }

    fn push_waiting(&mut self, item: Item) {
        let at = item.start_at;
        self.push_waiting_at(item, at);
    }

    /// Wait until `at` by this node's clock (the item's instant, or later when the
    /// clock guard says so).
    fn push_waiting_at(&mut self, item: Item, at: Timestamp) {
        self.wait_until(item, at, false);
    }

    /// Hold back an item that already passed the overlap policy until `at`: it must
    /// not meet the policy again (it holds its place there already).
    fn hold_back(&mut self, item: Item, at: Timestamp) {
        self.wait_until(item, at, true);
    }

    fn wait_until(&mut self, item: Item, at: Timestamp, admitted: bool) {
        self.seq += 1;
        self.waiting.push(Reverse((at, self.seq)));
        self.items.insert(self.seq, (item, admitted));
    }

    /// Move everything due to the overlap check and the workers; arm the timer for the
    /// next instant.
    async fn wake(&mut self, myself: &ActorRef<RegionSupervisorMsg>) {
        if self.draining {
            return;
        }
        let now = self.deps.clock.now();
        while let Some(&Reverse((at, seq))) = self.waiting.peek() {
            if at > now {
                break;
            }
            self.waiting.pop();
            let (item, admitted) = self.items.remove(&seq).expect("waiting items are stored");
            if admitted {
                self.ready.push_back(item);
            } else {
                self.due(item).await;
            }
        }
        self.assign(myself);
        for item in std::mem::take(&mut self.handed_back) {
            self.release(1);
            self.stats.handed_back += 1;
            self.finished(
                item,
                Done::Error(
                    "this node's clock gate is closed: handed back to the region's queue".into(),
                ),
            )
            .await;
        }
        if let Some(&Reverse((at, _))) = self.waiting.peek()
            && self.timer_at != Some(at)
        {
            self.arm(myself, at);
        }
    }

    fn arm(&mut self, myself: &ActorRef<RegionSupervisorMsg>, at: Timestamp) {
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
            let _ = me.cast(RegionSupervisorMsg::Wake(seq));
        }));
    }

    /// An item's instant has come: apply the job's overlap policy.
    async fn due(&mut self, item: Item) {
        let d = &item.dispatch;
        let held_here = self
            .overlap
            .get(&d.job.uid)
            .is_some_and(|s| s.running().contains(&d.run.firing));
        if item.attempt > 1 && held_here {
            // A retry: its run already holds its place under the overlap policy here
            // (the policy counts runs, not attempts). A retry this region took over
            // (recovery, adoption) meets the policy like any due firing.
            self.ready.push_back(item);
            return;
        }
        let override_overlap = matches!(
            d.run.trigger,
            Trigger::Manual {
                override_overlap: true
            }
        );
        let policy = d.job.policy.overlap;
        let actions = self.overlap.entry(d.job.uid).or_default().on_due(
            policy,
            d.run.firing,
            override_overlap,
        );
        self.apply_overlap(Some(item), actions).await;
    }

    async fn apply_overlap(
        &mut self,
        mut item: Option<Item>,
        actions: Vec<overlap::Action<FiringId>>,
    ) {
        for action in actions {
            match action {
                overlap::Action::Start(f) => {
                    if let Some(it) = take_if(&mut item, f) {
                        self.ready.push_back(it);
                    } else if let Some(it) = self.buffered.remove(&f) {
                        self.ready.push_back(it);
                    }
                }
                overlap::Action::Buffer(f) => {
                    if let Some(it) = take_if(&mut item, f) {
                        self.buffered.insert(f, it);
                    }
                }
                overlap::Action::Skip { key, reason } => {
                    let it = take_if(&mut item, key).or_else(|| self.buffered.remove(&key));
                    if it.is_some() {
                        self.release(1);
                    }
                    self.settle(&key, true);
                    self.stats.skipped += 1;
                    if let Err(e) = self
                        .deps
                        .runs
                        .end_run(key, State::Skipped, reason.describe().to_string())
                        .await
                    {
                        warn!(firing = %key, error = %e, "recording a skipped run failed");
                    }
                }
                overlap::Action::SkipBuffered { key, reason } => {
                    if self.buffered.remove(&key).is_some() {
                        self.release(1);
                    }
                    self.settle(&key, true);
                    self.stats.skipped += 1;
                    let _ = self
                        .deps
                        .runs
                        .end_run(key, State::Skipped, reason.describe().to_string())
                        .await;
                }
                overlap::Action::Cancel(key) => {
                    for (_, inflight) in self.busy.values() {
                        if inflight.item.dispatch.run.firing == key {
                            inflight.cancel.cancel();
                        }
                    }
                }
            }
        }
        if let Some(it) = item {
            // The policy already counts this firing as running (it passed the policy
            // once): start it rather than drop it. Tests catch the path that led here.
            error!(region = %self.region, firing = %it.dispatch.run.firing, "the overlap policy decided nothing for a due item; starting it");
            debug_assert!(false, "the overlap policy decided nothing for a due item");
            self.ready.push_back(it);
        }
    }

    fn release(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::Relaxed);
    }

    /// The run of `firing` is settled here (over, or handed back): stop holding it, and
    /// acknowledge its deliveries when `done` (otherwise the queue delivers it again
    /// after its visibility timeout, to this node or another).
    fn settle(&mut self, firing: &FiringId, done: bool) {
        if let Some(ids) = self.owed.remove(firing)
            && done
        {
            self.ack(ids);
        }
    }

    fn ack(&self, ids: Vec<String>) {
        if ids.iter().all(|i| i.is_empty()) {
            return;
        }
        let queues = self.deps.queues.clone();
        let region = self.region.clone();
        tokio::spawn(async move {
            if let Err(e) = queues.ack(&region, &ids).await {
                warn!(region = %region, error = %e, "acknowledging dispatches failed; they come back and are refused as started");
            }
        });
    }

    /// Start ready items, as many as there are idle workers: reserve a worker for each
    /// and record all their starts in one batch; `Started` hands them out.
    fn assign(&mut self, myself: &ActorRef<RegionSupervisorMsg>) {
        if self.draining || self.idle.is_empty() || self.ready.is_empty() {
            return;
        }
        let now = self.deps.clock.now();
        let n = self.idle.len().min(self.ready.len());
        let mut batch = Vec::with_capacity(n);
        let mut starts = Vec::with_capacity(n);
        for item in self.ready.drain(..n).collect::<Vec<_>>() {
            if item.start_at > now {
                // Never early, even if the clock stepped back since the item was due.
                let at = item.start_at;
                self.hold_back(item, at);
                continue;
            }
            // Never early in true time either: the clock guard allows a start only once
            // this clock, corrected by its measured offset and bound, has passed it.
            match self.deps.guard.can_fire(item.start_at) {
                Decision::Fire => {}
                Decision::Wait { until_local } => {
                    self.stats.gate_waits += 1;
                    let mut item = item;
                    // A wait within the usual measurement bound is not worth a note.
                    item.gate_waited |= until_local - now
                        > chrono::Duration::from_std(GATE_NOTE_MIN).expect("small");
                    self.hold_back(item, until_local.max(now));
                    continue;
                }
                Decision::Closed { .. } => {
                    // This clock cannot be trusted now: hand the item back to the
                    // region's queue (unacknowledged) for a node whose clock can.
                    self.stats.gate_waits += 1;
                    self.handed_back.push(item);
                    continue;
                }
            }
            let worker = self.idle.pop().expect("at most as many as idle workers");
            let cancel = CancellationToken::new();
            self.release(1);
            starts.push(AttemptStart {
                firing: item.dispatch.run.firing,
                number: item.attempt,
                epoch: item.dispatch.epoch,
                node: self.deps.node.clone(),
                started_at: now,
                lateness_us: (now - item.start_at).num_microseconds().unwrap_or(i64::MAX),
            });
            let inflight = InFlight {
                item: Box::new(Item {
                    dispatch: item.dispatch.clone(),
                    attempt: item.attempt,
                    start_at: item.start_at,
                    gate_waited: item.gate_waited,
                }),
                cancel: cancel.clone(),
                running: false,
            };
            self.busy
                .insert(worker.get_id(), (worker.clone(), inflight));
            batch.push(Reserved {
                worker,
                item: Box::new(item),
                cancel,
            });
        }
        if batch.is_empty() {
            return;
        }
        // Recorded off the mailbox: timers and finished attempts go on meanwhile, and
        // the next batch joins the same group commit if it is quick enough.
        let runs = self.deps.runs.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let answers = runs.start_attempts(starts).await.map_err(|e| e.to_string());
            let _ = me.cast(RegionSupervisorMsg::Started { batch, answers });
        });
    }

    /// The run log answered a batch of starts: hand the started attempts to their
    /// workers, settle the refused ones.
    async fn started(
        &mut self,
        batch: Vec<Reserved>,
        answers: Result<Vec<Result<(), Refusal>>, String>,
    ) {
        let answers: Vec<Result<(), Done>> = match answers {
            Ok(a) if a.len() == batch.len() => {
                a.into_iter().map(|r| r.map_err(Done::Refused)).collect()
            }
            Ok(a) => {
                let e = format!("{} answers to {} starts", a.len(), batch.len());
                batch.iter().map(|_| Err(Done::Error(e.clone()))).collect()
            }
            Err(e) => {
                warn!(region = %self.region, error = %e, starts = batch.len(), "recording starts failed");
                batch.iter().map(|_| Err(Done::Error(e.clone()))).collect()
            }
        };
        for (r, answer) in batch.into_iter().zip(answers) {
            let id = r.worker.get_id();
            let reserved = self.busy.get(&id).is_some_and(|(_, f)| {
                !f.running && f.item.dispatch.run.firing == r.item.dispatch.run.firing
            });
            match answer {
                Ok(()) if reserved => {
                    self.stats.started += 1;
                    if let Some((_, f)) = self.busy.get_mut(&id) {
                        f.running = true;
                    }
                    if r.worker.cast(WorkerMsg::Run(r.item, r.cancel)).is_err() {
                        // The worker is gone: its supervision event records the attempt
                        // lost (it is marked running).
                        error!(region = %self.region, "worker mailbox closed");
                    }
                }
                Ok(()) => {
                    // Started, but its worker died meanwhile: nobody runs it.
                    self.stats.started += 1;
                    self.stats.workers_lost += 1;
                    self.worker_lost(*r.item, "the worker stopped before the attempt began")
                        .await;
                }
                Err(done) => {
                    if reserved && let Some((w, _)) = self.busy.remove(&id) {
                        self.idle.push(w);
                    }
                    let adoption = if matches!(done, Done::Refused(Refusal::AlreadyStarted)) {
                        self.adopt(&r.item).await
                    } else {
                        None
                    };
                    let mut item = *r.item;
                    match adoption {
                        Some(Adoption::Lost { why, attempt }) => {
                            self.stats.orphans += 1;
                            warn!(region = %self.region, firing = %item.dispatch.run.firing, attempt, %why, "attempt's node is gone");
                            item.attempt = attempt;
                            self.worker_lost(item, &why).await;
                        }
                        Some(Adoption::Resume(run)) => {
                            self.stats.orphans += 1;
                            warn!(region = %self.region, firing = %run.firing, "retry left waiting by a node that is gone; scheduling it here");
                            item.attempt = run.next_attempt_number();
                            item.start_at = run.next_start_at();
                            item.dispatch.run = run;
                            self.held.fetch_add(1, Ordering::Relaxed);
                            self.push_waiting(item);
                        }
                        None => self.finished(item, done).await,
                    }
                }
            }
        }
    }

    async fn finished(&mut self, item: Item, done: Done) {
        let d = &item.dispatch;
        let firing = d.run.firing;
        let policy = d.job.policy.overlap;
        // The overlap policy counts runs: a run waiting for its retry still holds its
        // place.
        let run_over = !matches!(
            &done,
            Done::Ended {
                state: State::RetryWait,
                ..
            }
        );
        // A start or end the log did not record: leave the delivery unacknowledged, so
        // the queue hands it out again (the embedded store's recovery settles it). A
        // start refused as already started: a live node holds the run, and acknowledges
        // the delivery when it is done with it.
        let recorded = !matches!(
            &done,
            Done::Error(_) | Done::Refused(Refusal::AlreadyStarted)
        );
        match done {
            Done::Ended {
                state,
                next_attempt_at,
            } => {
                match state {
                    State::Succeeded => self.stats.succeeded += 1,
                    State::RetryWait => {}
                    _ => self.stats.failed += 1,
                }
                if state == State::RetryWait {
                    let start_at = next_attempt_at.unwrap_or(self.deps.clock.now());
                    let mut run = d.run.clone();
                    run.state = state;
                    run.next_attempt_at = next_attempt_at;
                    self.held.fetch_add(1, Ordering::Relaxed);
                    self.push_waiting(Item {
                        dispatch: Dispatch {
                            run,
                            job: d.job.clone(),
                            epoch: d.epoch,
                            shard: d.shard,
                        },
                        attempt: item.attempt + 1,
                        start_at,
                        gate_waited: false,
                    });
                }
            }
            Done::Refused(refusal) => {
                let ended = match refusal {
                    Refusal::JobPaused => Some((State::Paused, "job was paused before it started")),
                    Refusal::JobDeleted => None, // its runs went with it
                    Refusal::AlreadyStarted | Refusal::Terminal(_) | Refusal::Fenced => {
                        debug!(firing = %firing, ?refusal, "start refused");
                        None
                    }
                };
                if let Some((s, why)) = ended {
                    let _ = self.deps.runs.end_run(firing, s, why.into()).await;
                }
            }
            Done::Error(e) => {
                warn!(firing = %firing, reason = %e, "attempt not started here; its delivery stays unacknowledged for another node or recovery");
            }
        }
        if !run_over {
            return;
        }
        self.settle(&firing, recorded);
        let uid = d.job.uid;
        let actions = self
            .overlap
            .entry(uid)
            .or_default()
            .on_finished(policy, &firing);
        self.apply_overlap(None, actions).await;
        if self.overlap.get(&uid).is_some_and(|s| s.is_idle()) {
            self.overlap.remove(&uid);
        }
    }

    /// A start refused as already started: is the run held by a node that is gone
    /// (this node's earlier life, or a node no longer a live member of this region)?
    /// Then this region adopts it: an attempt left running is recorded lost (and
    /// retried per policy), a retry left waiting is scheduled here.
    async fn adopt(&self, item: &Item) -> Option<Adoption> {
        let run = self
            .deps
            .runs
            .get_run(item.dispatch.run.firing)
            .await
            .ok()??;
        let last = run.attempts.last()?;
        let waiting_retry = run.state == State::RetryWait;
        let running = run.state == State::Running && last.finished_at.is_none();
        if !waiting_retry && !running {
            return None;
        }
        let gone = if last.node == self.deps.node {
            // Nothing here holds it (a region holds a firing once): it was started by
            // this node before it restarted.
            format!("{} restarted while it held the run", last.node)
        } else {
            let membership = self.deps.membership.as_ref()?;
            let members = membership.members(&self.region).await.ok()?;
            if members.iter().any(|m| m.node == last.node) {
                return None;
            }
            format!(
                "{} is no longer a live member of {}",
                last.node, self.region
            )
        };
        Some(if running {
            Adoption::Lost {
                why: gone,
                attempt: last.number,
            }
        } else {
            Adoption::Resume(run)
        })
    }

    /// Runs of this region whose last attempt this node started before it restarted:
    /// an attempt left running is recorded lost (and retried per policy), a retry left
    /// waiting is scheduled here. Their deliveries, if redelivered, fold into these.
    async fn adopt_leftovers(&mut self) {
        let runs = match self.deps.runs.unfinished().await {
            Ok(r) => r,
            Err(e) => {
                warn!(region = %self.region, error = %e, "reading unfinished runs failed; leftovers are adopted by their queue's redelivery");
                return;
            }
        };
        for run in runs {
            if run.job.region != self.region || self.owed.contains_key(&run.firing) {
                continue;
            }
            let Some(last) = run.attempts.last() else {
                continue;
            };
            if last.node != self.deps.node {
                continue;
            }
            let job = match self.deps.catalog.get_job(&run.job).await {
                Ok(Some(j)) if j.uid == run.job_uid => Arc::new(j),
                _ => continue,
            };
            self.stats.orphans += 1;
            let shard = crate::core::owner::shard_of(&job.uid, self.deps.config.shards);
            let number = last.number;
            let running = run.state == State::Running && last.finished_at.is_none();
            let mut item = Item {
                dispatch: Dispatch {
                    epoch: run.epoch,
                    shard,
                    job,
                    run: run.clone(),
                },
                attempt: number,
                start_at: run.next_start_at(),
                gate_waited: false,
            };
            self.owed.insert(run.firing, Vec::new());
            if running {
                warn!(region = %self.region, firing = %run.firing, attempt = number, "attempt was running when this node restarted: outcome unknown");
                self.worker_lost(item, "this node restarted while the attempt ran")
                    .await;
            } else if run.state == State::RetryWait {
                item.attempt = run.next_attempt_number();
                self.held.fetch_add(1, Ordering::Relaxed);
                self.push_waiting(item);
            } else {
                self.owed.remove(&run.firing);
            }
        }
    }

    async fn worker_lost(&mut self, item: Item, why: &str) {
        let d = &item.dispatch;
        let firing = d.run.firing;
        let now = self.deps.clock.now();
        let decision = retry::after_attempt(
            &d.job.policy.retry,
            item.attempt,
            Failure::Retryable,
            retry::jitter_seed(&firing.to_string(), item.attempt),
        );
        let (next_state, next_attempt_at) = next_after_failure(decision, now);
        let end = AttemptEnd {
            number: item.attempt,
            status: AttemptStatus::WorkerLost,
            finished_at: now,
            summary: format!("worker died: {why}"),
            exit_code: None,
            http_status: None,
            output_tail: String::new(),
            next_state,
            next_attempt_at,
        };
        match self.deps.runs.finish_attempt(firing, end).await {
            Ok(run) => {
                let done = Done::Ended {
                    state: run.state,
                    next_attempt_at: run.next_attempt_at,
                };
                self.finished(item, done).await
            }
            // The worker died before the start was recorded: the attempt never ran, and
            // the run is still queued under the same attempt number: hand it out again.
            Err(crate::ports::Error::Conflict(_)) => {
                warn!(firing = %firing, "worker died before the attempt started; dispatching it again");
                self.held.fetch_add(1, Ordering::Relaxed);
                self.ready.push_front(item);
            }
            Err(e) => {
                warn!(firing = %firing, error = %e, "could not record the lost attempt");
                self.finished(item, Done::Error(e.to_string())).await;
            }
        }
    }

    fn drain(
        &mut self,
        myself: &ActorRef<RegionSupervisorMsg>,
        grace: std::time::Duration,
        reply: RpcReplyPort<()>,
    ) {
        info!(region = %self.region, running = self.busy.len(), "draining");
        self.puller_stop.cancel();
        if let Some(t) = self.timer.take() {
            t.abort();
        }
        // Waiting and ready items stay queued in the run log and unacknowledged in the
        // queue: another node (or the next start) takes them over.
        self.owed.clear();
        self.waiting.clear();
        self.items.clear();
        self.ready.clear();
        self.buffered.clear();
        self.draining = true;
        self.drained = Some(reply);
        let cancels: Vec<CancellationToken> =
            self.busy.values().map(|(_, f)| f.cancel.clone()).collect();
        let me = myself.clone();
        let clock = self.deps.clock.clone();
        tokio::spawn(async move {
            clock
                .sleep_until(clock.now() + chrono::Duration::from_std(grace).unwrap_or_default())
                .await;
            for c in cancels {
                c.cancel();
            }
            drop(me);
        });
        self.check_drained();
    }

    /// Once draining and nothing runs: answer after every queued end record is durable.
    fn check_drained(&mut self) {
        if self.busy.is_empty()
            && let Some(reply) = self.drained.take()
        {
            let runs = self.deps.runs.clone();
            let region = self.region.clone();
            tokio::spawn(async move {
                if let Err(e) = runs.flush().await {
                    warn!(region = %region, error = %e, "flushing the run log failed");
                }
                let _ = reply.send(());
            });
        }
    }
}

fn take_if(item: &mut Option<Item>, f: FiringId) -> Option<Item> {
    if item.as_ref().is_some_and(|i| i.dispatch.run.firing == f) {
        item.take()
    } else {
        None
    }
}
