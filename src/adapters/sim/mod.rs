//! The simulator's in-memory adapters: one shared `World` (an etcd-like catalog,
//! elections and membership; a Redis-like run log, dispatch streams and `TIME`), seen
//! by each simulated node through `SimNode` handles that implement the ports. Time is
//! tokio's clock only (virtual under a paused current-thread runtime); faults (links to
//! etcd and Redis, pauses, crashes, restarts, clock skew) take effect at once; the
//! world records a trace of ownership terms, claims and starts for the checkers.
//!
//! This module owns the world state, the fault switches, the gate every port call goes
//! through, the clock and the time source. Submodules own one port each.
//!
//! Must not: spawn threads, do real IO, read the wall clock (only
//! `adapters::clock::monotonic_now`, virtual in a simulation), draw random numbers, hold
//! the world lock across an await, or iterate a hash map where order can matter (all
//! state is in B-trees and deques, so one sequence of calls gives one trace). Must not
//! make scheduling decisions: those are the core's and the actors'.

mod catalog;
mod election;
mod membership;
mod queue;
mod run_log;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, broadcast};

use crate::adapters::clock::monotonic_now;
use crate::core::Timestamp;
use crate::core::ids::{Epoch, FiringId, NodeId};
use crate::core::run::Run;
use crate::ports::{
    AttemptEnd, Catalog, CatalogEvent, Clock, DispatchQueue, Election, Error, Membership, Result,
    RunLog, TimeSource,
};

pub use run_log::RUNS_PER_JOB_MAX;

/// Trace events the world keeps; past this, events are counted in `trace_dropped` and
/// not kept (a simulation's duration bounds the trace long before).
pub const TRACE_EVENTS_MAX: usize = 50_000_000;
/// Catalog events buffered per node incarnation (in the channel its watchers read, and
/// held back while it cannot hear etcd) before its watchers lag and must reload.
pub const WATCH_BUFFER_MAX: usize = 16_384;
/// Attempt ends one node holds while Redis is unreachable (`record_end` queues them as
/// the Redis run log's writer does); past it, `record_end` fails `Unavailable`.
pub const END_QUEUE_MAX: usize = 65_536;

/// What happened in the world, in order of occurrence (true time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// `node` became the first candidate of `shard` (owner in etcd's eyes).
    TermGranted {
        at: Timestamp,
        shard: u32,
        node: NodeId,
        epoch: Epoch,
    },
    /// The owner's key left the world: `why` is `expired` (lease not renewed within its
    /// TTL), `resigned`, or `revoked` (the node cancelled the term's `ended` itself, or
    /// dropped its `Election` or a campaign, while it could reach etcd).
    TermEnded {
        at: Timestamp,
        shard: u32,
        node: NodeId,
        epoch: Epoch,
        why: String,
    },
    /// A claim batch reached the run log (`accepted`: not fenced).
    Claim {
        at: Timestamp,
        shard: u32,
        node: NodeId,
        epoch: Epoch,
        runs: usize,
        accepted: bool,
    },
    /// The run log accepted the start of an attempt.
    Started {
        at: Timestamp,
        firing: FiringId,
        attempt: u32,
        node: NodeId,
        epoch: Epoch,
    },
}

/// One simulated node as the world sees it.
struct NodeState {
    /// Bumped at every restart; handles of older incarnations fail from then on.
    incarnation: u64,
    /// False from a crash until the restart.
    alive: bool,
    etcd_up: bool,
    redis_up: bool,
    paused: bool,
    /// This node's wall clock = true time + skew.
    skew: chrono::Duration,
    /// Catalog events for this incarnation's watchers.
    watch: broadcast::Sender<CatalogEvent>,
    /// Catalog events held back while the node cannot hear etcd (link down, paused).
    held: VecDeque<CatalogEvent>,
    /// Ends `record_end` queued while Redis was unreachable (lost in a crash).
    ends: VecDeque<(FiringId, AttemptEnd)>,
}

impl NodeState {
    fn new(incarnation: u64) -> Self {
        Self {
            incarnation,
            alive: true,
            etcd_up: true,
            redis_up: true,
            paused: false,
            skew: chrono::Duration::zero(),
            watch: broadcast::channel(WATCH_BUFFER_MAX).0,
            held: VecDeque::new(),
            ends: VecDeque::new(),
        }
    }

    fn hears_etcd(&self) -> bool {
        self.alive && self.etcd_up && !self.paused
    }
}

/// Which backend a call goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Link {
    Etcd,
    Redis,
}

/// Everything in the world, behind one lock.
pub(crate) struct State {
    nodes: BTreeMap<NodeId, NodeState>,
    trace: Vec<TraceEvent>,
    trace_dropped: u64,
    /// etcd's revision: bumped by every catalog, election and membership write.
    revision: u64,
    catalog: catalog::Store,
    runs: run_log::Store,
    election: election::Store,
    queues: queue::Store,
    members: membership::Store,
}

impl State {
    fn record(&mut self, ev: TraceEvent) {
        if self.trace.len() < TRACE_EVENTS_MAX {
            self.trace.push(ev);
        } else {
            self.trace_dropped += 1;
        }
    }

    fn next_revision(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    /// Whether `node`'s incarnation `inc` is the live one.
    fn is_current(&self, node: &NodeId, inc: u64) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|n| n.alive && n.incarnation == inc)
    }

    /// Whether that incarnation can reach etcd right now (alive, not paused, link up):
    /// what a lease renewal needs.
    fn hears_etcd(&self, node: &NodeId, inc: u64) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|n| n.incarnation == inc && n.hears_etcd())
    }

    /// Send a catalog event to every node incarnation's watchers, or hold it for a node
    /// that cannot hear etcd now.
    fn publish(&mut self, ev: CatalogEvent) {
        for n in self.nodes.values_mut() {
            if !n.alive {
                continue;
            }
            if n.hears_etcd() && n.held.is_empty() {
                let _ = n.watch.send(ev.clone());
            } else {
                if n.held.len() > WATCH_BUFFER_MAX {
                    // Its watchers will lag anyway when these are released.
                    n.held.pop_front();
                }
                n.held.push_back(ev.clone());
            }
        }
    }

    /// Release what `node` held back, once it hears etcd again (a receiver that cannot
    /// take it all lags, as after a long stall).
    fn release_held(&mut self, node: &NodeId) {
        if let Some(n) = self.nodes.get_mut(node)
            && n.hears_etcd()
        {
            while let Some(ev) = n.held.pop_front() {
                let _ = n.watch.send(ev);
            }
        }
    }

    /// Apply the ends `node` queued while Redis was away, once it can reach Redis.
    fn release_ends(&mut self, node: &NodeId) {
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        if !(n.alive && n.redis_up && !n.paused) {
            return;
        }
        let ends: Vec<_> = n.ends.drain(..).collect();
        for (firing, end) in ends {
            // As the Redis writer does with an end it cannot apply: drop it; recovery
            // settles the attempt.
            let _ = self.runs.finish(firing, end);
        }
    }
}

pub(crate) struct Shared {
    start: Timestamp,
    origin: tokio::time::Instant,
    state: Mutex<State>,
    /// Node states changed (links, pauses, crashes, restarts, skew).
    faults: Notify,
    /// An election changed (a candidate came or went).
    elections: Notify,
    /// A dispatch stream changed (push, ack).
    streams: Notify,
}

/// The simulated world: every node's view of etcd and Redis, the faults, the trace.
/// Cheap to clone.
#[derive(Clone)]
pub struct World {
    shared: Arc<Shared>,
}

impl World {
    /// True time starts at `start` at the moment of this call (tokio's clock).
    pub fn new(start: Timestamp) -> Self {
        Self {
            shared: Arc::new(Shared {
                start,
                origin: monotonic_now(),
                state: Mutex::new(State {
                    nodes: BTreeMap::new(),
                    trace: Vec::new(),
                    trace_dropped: 0,
                    revision: 0,
                    catalog: catalog::Store::default(),
                    runs: run_log::Store::default(),
                    election: election::Store::default(),
                    queues: queue::Store::default(),
                    members: membership::Store::default(),
                }),
                faults: Notify::new(),
                elections: Notify::new(),
                streams: Notify::new(),
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Virtual time elapsed since the world began.
    fn elapsed(&self) -> Duration {
        monotonic_now().saturating_duration_since(self.shared.origin)
    }

    /// True UTC: `start` plus the virtual time elapsed.
    pub fn true_now(&self) -> Timestamp {
        self.shared.start + chrono::Duration::from_std(self.elapsed()).unwrap_or_default()
    }

    /// A handle on `node` as it is now (its current incarnation); registers the node
    /// the first time (idempotent).
    pub fn node(&self, node: &NodeId) -> SimNode {
        let incarnation = {
            let mut st = self.lock();
            st.nodes
                .entry(node.clone())
                .or_insert_with(|| NodeState::new(1))
                .incarnation
        };
        SimNode {
            ctx: Ctx {
                world: self.clone(),
                node: node.clone(),
                incarnation,
            },
        }
    }

    /// Change one node's state, then wake everything that waits on node states.
    fn with_node(&self, node: &NodeId, f: impl FnOnce(&mut State, &mut NodeState)) {
        {
            let mut st = self.lock();
            let mut n = st.nodes.remove(node).unwrap_or_else(|| NodeState::new(1));
            f(&mut st, &mut n);
            st.nodes.insert(node.clone(), n);
            st.release_held(node);
            st.release_ends(node);
        }
        self.shared.faults.notify_waiters();
        self.shared.elections.notify_waiters();
        self.shared.streams.notify_waiters();
    }

    /// Down: the node's Catalog, Election and Membership calls fail `Unavailable` and its
    /// leases are not renewed (they expire after their TTL); catalog events wait for it.
    pub fn set_etcd_link(&self, node: &NodeId, up: bool) {
        self.with_node(node, |_, n| n.etcd_up = up);
    }

    /// Down: the node's RunLog, DispatchQueue and TimeSource calls fail `Unavailable`
    /// (`record_end` queues, as the Redis log's writer does).
    pub fn set_redis_link(&self, node: &NodeId, up: bool) {
        self.with_node(node, |_, n| n.redis_up = up);
    }

    /// Paused: every port call from the node waits until unpaused (then proceeds as if
    /// just issued), its clock's sleeps do not end, its leases are not renewed.
    pub fn set_paused(&self, node: &NodeId, paused: bool) {
        self.with_node(node, |_, n| n.paused = paused);
    }

    /// The process is gone: its leases stop being renewed (they expire, they are not
    /// revoked), its calls fail `Unavailable` from now on (also calls in flight), its
    /// queue deliveries stay pending until the visibility timeout, its watch receivers
    /// close, the ends it queued are lost.
    pub fn crash(&self, node: &NodeId) {
        self.with_node(node, |_, n| {
            n.alive = false;
            n.paused = false;
            n.held.clear();
            n.ends.clear();
            // Closes every receiver of this incarnation (after what it buffered).
            n.watch = broadcast::channel(1).0;
        });
    }

    /// A new incarnation: calls work again through handles made after this (the ones
    /// from before keep failing).
    pub fn restart(&self, node: &NodeId) {
        self.with_node(node, |_, n| {
            let links = (n.etcd_up, n.redis_up, n.skew);
            *n = NodeState::new(n.incarnation + 1);
            (n.etcd_up, n.redis_up, n.skew) = links;
        });
    }

    /// The node's wall clock = true time + `offset` (a jump if changed while running).
    pub fn set_skew(&self, node: &NodeId, offset: chrono::Duration) {
        self.with_node(node, |_, n| n.skew = offset);
    }

    /// Everything recorded, in order of occurrence.
    pub fn trace(&self) -> Vec<TraceEvent> {
        self.lock().trace.clone()
    }

    /// Events not kept because the trace held `TRACE_EVENTS_MAX` already.
    pub fn trace_dropped(&self) -> u64 {
        self.lock().trace_dropped
    }

    /// Every run record in the run log, sorted by firing id.
    pub fn runs(&self) -> Vec<Run> {
        self.lock().runs.all()
    }
}

/// What every port handle carries: the world, the node and the incarnation it was
/// made for.
#[derive(Clone)]
pub(crate) struct Ctx {
    world: World,
    node: NodeId,
    incarnation: u64,
}

fn gone(node: &NodeId) -> Error {
    Error::Unavailable(format!("sim: node {node} crashed"))
}

fn cut(node: &NodeId, link: Link) -> Error {
    Error::Unavailable(format!("sim: node {node} cannot reach {link:?}"))
}

/// What a call may do now.
enum Gate {
    Go,
    Wait,
    Fail(Error),
}

impl Ctx {
    fn shared(&self) -> &Shared {
        &self.world.shared
    }

    fn gate(&self, st: &State, link: Link) -> Gate {
        match st.nodes.get(&self.node) {
            Some(n) if n.alive && n.incarnation == self.incarnation => {
                if n.paused {
                    Gate::Wait
                } else if match link {
                    Link::Etcd => n.etcd_up,
                    Link::Redis => n.redis_up,
                } {
                    Gate::Go
                } else {
                    Gate::Fail(cut(&self.node, link))
                }
            }
            _ => Gate::Fail(gone(&self.node)),
        }
    }

    /// Wait while the node is paused; fail if its incarnation is gone or `link` is down.
    async fn enter(&self, link: Link) -> Result<()> {
        loop {
            let faults = self.shared().faults.notified();
            tokio::pin!(faults);
            faults.as_mut().enable();
            let gate = {
                let st = self.world.lock();
                self.gate(&st, link)
            };
            match gate {
                Gate::Go => return Ok(()),
                Gate::Fail(e) => return Err(e),
                Gate::Wait => faults.await,
            }
        }
    }

    /// `enter`, then run `f` on the world state if the gate (checked again under the
    /// lock) still lets it through.
    async fn call<T>(&self, link: Link, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let mut f = Some(f);
        loop {
            self.enter(link).await?;
            let mut st = self.world.lock();
            match self.gate(&st, link) {
                Gate::Go => {
                    let f = f.take().expect("called once: the loop ends here");
                    return f(&mut st);
                }
                Gate::Fail(e) => return Err(e),
                // Paused again since `enter` (another thread): wait once more.
                Gate::Wait => {}
            }
        }
    }

    fn now(&self) -> Timestamp {
        self.world.true_now()
    }
}

/// One node's view of the world: its port handles. Handles belong to the incarnation
/// current when this `SimNode` was made.
#[derive(Clone)]
pub struct SimNode {
    ctx: Ctx,
}

impl SimNode {
    /// The node's id.
    pub fn id(&self) -> &NodeId {
        &self.ctx.node
    }

    /// The node's clock: `now()` = true time + skew; `monotonic()` = virtual time since
    /// the world began; `sleep_until(t)` sleeps until `now() >= t` (and never ends for
    /// a crashed incarnation, nor while the node is paused).
    pub fn clock(&self) -> Arc<dyn Clock> {
        Arc::new(SimClock {
            ctx: self.ctx.clone(),
        })
    }

    /// The world's one catalog (etcd-like), through this node's etcd link.
    pub fn catalog(&self) -> Arc<dyn Catalog> {
        Arc::new(catalog::SimCatalog::new(self.ctx.clone()))
    }

    /// The world's one run log (Redis-like), through this node's Redis link; keeps
    /// `RUNS_PER_JOB_MAX` runs per job.
    pub fn run_log(&self) -> Arc<dyn RunLog> {
        self.run_log_with_retention(RUNS_PER_JOB_MAX)
    }

    /// `run_log` keeping `keep` runs per job (claims through this handle trim to it).
    pub fn run_log_with_retention(&self, keep: u64) -> Arc<dyn RunLog> {
        Arc::new(run_log::SimRunLog::new(self.ctx.clone(), keep))
    }

    /// Elections (etcd-like) with leases of `ttl`.
    pub fn election(&self, ttl: Duration) -> Arc<dyn Election> {
        Arc::new(election::SimElection::new(self.ctx.clone(), ttl))
    }

    /// The world's dispatch streams (Redis-streams-like), read as this node's consumer.
    pub fn queues(&self, visibility_timeout: Duration, queue_max: usize) -> Arc<dyn DispatchQueue> {
        Arc::new(queue::SimQueues::new(
            self.ctx.clone(),
            visibility_timeout,
            queue_max,
        ))
    }

    /// Membership (etcd-like) with leases of `ttl`.
    pub fn membership(&self, ttl: Duration) -> Arc<dyn Membership> {
        Arc::new(membership::SimMembership::new(self.ctx.clone(), ttl))
    }

    /// Redis `TIME`: the world's true time, through this node's Redis link.
    pub fn time_source(&self) -> Arc<dyn TimeSource> {
        Arc::new(SimTime {
            ctx: self.ctx.clone(),
        })
    }
}

struct SimClock {
    ctx: Ctx,
}

#[async_trait]
impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        let skew = self
            .ctx
            .world
            .lock()
            .nodes
            .get(&self.ctx.node)
            .map_or_else(chrono::Duration::zero, |n| n.skew);
        self.ctx.now() + skew
    }

    fn monotonic(&self) -> Duration {
        self.ctx.world.elapsed()
    }

    async fn sleep_until(&self, t: Timestamp) {
        loop {
            let faults = self.ctx.shared().faults.notified();
            tokio::pin!(faults);
            faults.as_mut().enable();
            let (skew, paused) = {
                let st = self.ctx.world.lock();
                match st.nodes.get(&self.ctx.node) {
                    Some(n) if n.alive && n.incarnation == self.ctx.incarnation => {
                        (n.skew, n.paused)
                    }
                    // The process is gone: nothing of it wakes up again.
                    _ => (chrono::Duration::zero(), true),
                }
            };
            if !paused {
                let now = self.ctx.now() + skew;
                if now >= t {
                    return;
                }
                let wait = (t - now).to_std().unwrap_or(Duration::ZERO);
                tokio::select! {
                    biased;
                    _ = &mut faults => {}
                    _ = tokio::time::sleep(wait.max(Duration::from_micros(1))) => {}
                }
            } else {
                faults.await;
            }
        }
    }
}

struct SimTime {
    ctx: Ctx,
}

#[async_trait]
impl TimeSource for SimTime {
    fn name(&self) -> String {
        "redis".into()
    }

    async fn time(&self) -> Result<Timestamp> {
        let world = self.ctx.world.clone();
        self.ctx
            .call(Link::Redis, move |_| Ok(world.true_now()))
            .await
    }
}

/// The margin a term keeps before its lease could expire: min(500 ms, TTL / 2).
pub(crate) fn term_margin(ttl: Duration) -> Duration {
    Duration::from_millis(500).min(ttl / 2)
}
