//! Ports: the capabilities the actors need, named by what they do, not by technology.
//!
//! Each port has one adapter per technology under `adapters/` (embedded today; etcd,
//! Redis and the simulator's in-memory ones share these traits). Errors say whether a
//! retry makes sense. This module must not contain an implementation.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::core::Timestamp;
use crate::core::ids::{Epoch, FiringId, JobName, NodeId, RegionId};
use crate::core::job::Job;
use crate::core::run::{AttemptStatus, Run, State};

/// An operating error of a port: what went wrong and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// An optimistic-concurrency check failed (etag, revision).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A write carried an epoch older than one already seen: the writer is no longer owner.
    #[error("fenced: epoch {stale} is older than {current}")]
    Fenced { stale: Epoch, current: Epoch },
    /// A bounded queue or table is full; retry later.
    #[error("full: {0}")]
    Full(String),
    /// The backend is unreachable or timed out; retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Storage is corrupt or a record cannot be decoded: a retry will not help.
    #[error("storage: {0}")]
    Storage(String),
}

impl Error {
    /// Whether the same call may succeed if tried again later.
    pub fn retryable(&self) -> bool {
        matches!(self, Error::Full(_) | Error::Unavailable(_))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The time the node believes it is, and precise waiting for an instant.
#[async_trait]
pub trait Clock: Send + Sync + 'static {
    /// Now in UTC by this node's clock.
    fn now(&self) -> Timestamp;
    /// The monotonic clock: time since an arbitrary origin fixed for the life of the
    /// process. Never steps; the clock guard compares it with the wall clock.
    fn monotonic(&self) -> std::time::Duration;
    /// Resolve no earlier than `t` by `now()`, as soon after as the platform allows.
    async fn sleep_until(&self, t: Timestamp);
}

/// A clock to compare this node's with (Redis `TIME`, a peer): the clock guard asks it
/// for the time and measures the round trip itself.
#[async_trait]
pub trait TimeSource: Send + Sync + 'static {
    /// A stable name for reports (`redis`, `peer:n2`).
    fn name(&self) -> String;
    /// The source's time now.
    async fn time(&self) -> Result<Timestamp>;
}

/// The clocks of the other live nodes, as time sources for the clock guard.
#[async_trait]
pub trait PeerClocks: Send + Sync + 'static {
    /// Up to `max` live peers (never this node), in a stable order.
    async fn peers(&self, max: usize) -> Vec<Arc<dyn TimeSource>>;
}

/// A change to the catalog, in commit order.
#[derive(Clone, Debug)]
pub enum CatalogEvent {
    Upserted(Arc<Job>),
    Deleted { name: JobName, uid: Uuid },
}

/// Which jobs a listing wants.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    /// `None` lists every region (`regions/-/jobs`).
    pub region: Option<RegionId>,
}

/// Position after which a job listing continues: (create_time, name).
pub type JobCursor = (Timestamp, JobName);

/// The job catalog, with a change feed.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// Store a new job. With `request_id`, a retried create returns the job the first
    /// call created instead of `AlreadyExists`.
    async fn create_job(&self, job: Job, request_id: Option<String>) -> Result<Job>;
    async fn get_job(&self, name: &JobName) -> Result<Option<Job>>;
    /// Jobs ordered by (create_time, name), strictly after `after`.
    async fn list_jobs(
        &self,
        filter: &JobFilter,
        after: Option<JobCursor>,
        limit: usize,
    ) -> Result<Vec<Job>>;
    /// Replace a job; `expected_revision` makes it conditional. Bumps the revision.
    async fn update_job(&self, job: Job, expected_revision: Option<u64>) -> Result<Job>;
    /// Delete a job and its runs and progress.
    async fn delete_job(&self, name: &JobName) -> Result<Job>;
    /// Every job, for an owner's full (re)load.
    async fn all_jobs(&self) -> Result<Vec<Job>>;
    /// Subscribe to changes made after this call. A lagged receiver must reload.
    fn watch(&self) -> broadcast::Receiver<CatalogEvent>;
}

/// One claim in an owner's batch: a run to record (queued, or already terminal for a
/// missed/paused firing) and the job progress cursor to advance with it.
#[derive(Clone, Debug)]
pub struct Claim {
    pub run: Run,
    /// Advance the job's cursor (last scheduled instant handled) to at least this.
    pub cursor: Option<Timestamp>,
}

/// The start of an attempt, as a region supervisor asks for it.
#[derive(Clone, Debug)]
pub struct AttemptStart {
    pub firing: FiringId,
    pub number: u32,
    pub epoch: Epoch,
    pub node: NodeId,
    pub started_at: Timestamp,
    pub lateness_us: i64,
}

impl AttemptStart {
    /// The attempt record this start creates (not yet ended).
    pub fn attempt(&self) -> crate::core::run::Attempt {
        crate::core::run::Attempt {
            number: self.number,
            epoch: self.epoch,
            node: self.node.clone(),
            started_at: self.started_at,
            lateness_us: self.lateness_us,
            finished_at: None,
            status: None,
            summary: String::new(),
            exit_code: None,
            http_status: None,
            output_tail: String::new(),
        }
    }
}

/// Why a start was refused: the attempt must not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// That attempt (or a later one) already started: running it would run it twice.
    AlreadyStarted,
    /// The run is already terminal (cancelled, skipped, ...).
    Terminal(State),
    /// The run's job was paused since the claim.
    JobPaused,
    /// The run's job was deleted (or replaced) since the claim.
    JobDeleted,
    /// The starter's epoch is older than the run's.
    Fenced,
}

/// How an attempt ended, and what the run becomes.
#[derive(Clone, Debug)]
pub struct AttemptEnd {
    pub number: u32,
    pub status: AttemptStatus,
    pub finished_at: Timestamp,
    pub summary: String,
    pub exit_code: Option<i32>,
    pub http_status: Option<u16>,
    pub output_tail: String,
    /// The run's next state: terminal, or RetryWait with `next_attempt_at`.
    pub next_state: State,
    pub next_attempt_at: Option<Timestamp>,
}

/// Runs and the idempotent claims that guard them.
#[async_trait]
pub trait RunLog: Send + Sync + 'static {
    /// Durably record a batch of claims by the owner of `shard`. A run whose firing id
    /// exists already is left as it is (`false` in the result): the firing was claimed
    /// before. Refused whole with `Fenced` if `epoch` is older than the newest epoch the
    /// log has seen for that shard (a log with one fence for all shards, like the
    /// embedded store, compares against that one). An empty batch raises the fence: a
    /// new owner does that before it reads what earlier terms left unfinished.
    async fn claim_in_shard(
        &self,
        shard: u32,
        epoch: Epoch,
        claims: Vec<Claim>,
    ) -> Result<Vec<bool>>;
    /// `claim_in_shard` for shard 0 (a schedule with one shard).
    async fn claim(&self, epoch: Epoch, claims: Vec<Claim>) -> Result<Vec<bool>> {
        self.claim_in_shard(0, epoch, claims).await
    }
    /// Delete every run and the progress cursor of a deleted job. Logs whose catalog
    /// deletes them in the same transaction (the embedded store) have nothing left to do.
    async fn delete_job_runs(&self, _job_uid: Uuid) -> Result<()> {
        Ok(())
    }
    /// Every job's progress cursor.
    async fn cursors(&self) -> Result<Vec<(Uuid, Timestamp)>>;
    /// One job's progress cursor: the last scheduled instant handled.
    async fn cursor(&self, job_uid: Uuid) -> Result<Option<Timestamp>>;
    /// Durably mark a batch of attempts started, in one commit; only then may they run.
    /// Exactly one start wins per (firing, attempt number), also within one batch. The
    /// answer holds one entry per start, in order: `Ok` (started, may run now) or why
    /// it must not run. A run that no longer exists is refused as `JobDeleted`.
    async fn start_attempts(
        &self,
        starts: Vec<AttemptStart>,
    ) -> Result<Vec<std::result::Result<(), Refusal>>>;
    /// Durably record an attempt's end, and answer with the run as recorded.
    ///
    /// Rules for every end (also queued ones): the first end recorded for an attempt
    /// stands; only the run's latest attempt sets the run's state, so a late end of an
    /// earlier attempt fills in that attempt and nothing else; a terminal run keeps its
    /// state.
    async fn finish_attempt(&self, firing: FiringId, end: AttemptEnd) -> Result<Run>;
    /// Queue an attempt's end without waiting for it to be durable: it is applied after
    /// every write this process queued before it and before every write it queues
    /// after, and becomes durable with the next durable write (a start, a claim, a
    /// `flush`) or soon after on its own. Lost in a crash before that, the attempt is
    /// recorded `worker_lost` by recovery: an honest "outcome unknown". Waits only
    /// while the log's bounded write queue is full.
    async fn record_end(&self, firing: FiringId, end: AttemptEnd) -> Result<()>;
    /// Wait until every write queued before this call is durable.
    async fn flush(&self) -> Result<()>;
    /// End a non-terminal run without (another) attempt: skipped, cancelled, ...
    async fn end_run(&self, firing: FiringId, state: State, reason: String) -> Result<Run>;
    async fn get_run(&self, firing: FiringId) -> Result<Option<Run>>;
    /// Runs of one job, newest scheduled first, strictly before `before`.
    async fn list_runs(
        &self,
        job_uid: Uuid,
        before: Option<(Timestamp, FiringId)>,
        limit: usize,
    ) -> Result<Vec<Run>>;
    /// Every run not yet terminal, for recovery after a restart or failover.
    async fn unfinished(&self) -> Result<Vec<Run>>;
}

/// Leadership: who owns the schedule, and the fencing epoch of its term.
#[async_trait]
pub trait Election: Send + Sync + 'static {
    /// Wait until this node owns `shard` of the schedule; return the term. Epochs are
    /// strictly increasing per shard.
    async fn campaign(&self, node: &NodeId, shard: u32) -> Result<Term>;
    /// Give up this node's term on `shard` now (ends it first), so the next candidate
    /// takes over without waiting for the lease to expire.
    async fn resign(&self, shard: u32) -> Result<()>;
    /// The current owner of `shard` (None: nobody campaigns for it, or the backend has
    /// no notion of other owners).
    async fn owner_of(&self, shard: u32) -> Result<Option<ShardOwner>>;
}

/// Time left in a term, as the election backend measures it (monotonic).
pub type TermLeft = Arc<dyn Fn() -> std::time::Duration + Send + Sync>;

/// One owner term.
#[derive(Clone)]
pub struct Term {
    pub epoch: Epoch,
    /// Cancelled when the term ends (lease lost, newer epoch seen): stop firing at once.
    pub ended: CancellationToken,
    /// When set, the term is over once this reports no time left, whether or not
    /// `ended` was cancelled yet: owners check it synchronously before every claim and
    /// dispatch, so a process resumed after a long pause cannot slip one through before
    /// the task that cancels `ended` runs. Renewals move it forward.
    pub left: Option<TermLeft>,
}

impl std::fmt::Debug for Term {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Term")
            .field("epoch", &self.epoch)
            .field("ended", &self.ended.is_cancelled())
            .field("left", &self.left())
            .finish()
    }
}

impl Term {
    /// A term that lasts until `ended` is cancelled (the embedded store's local term).
    pub fn unbounded(epoch: Epoch) -> Self {
        Self {
            epoch,
            ended: CancellationToken::new(),
            left: None,
        }
    }

    /// Whether the term still holds right now (checked, not assumed).
    pub fn is_live(&self) -> bool {
        !self.ended.is_cancelled() && self.left.as_ref().is_none_or(|l| !l().is_zero())
    }

    /// Time left before the term's deadline (None: no deadline).
    pub fn left(&self) -> Option<std::time::Duration> {
        self.left.as_ref().map(|l| l())
    }
}

/// Who owns a shard, as the election backend sees it.
#[derive(Clone, Debug)]
pub struct ShardOwner {
    pub shard: u32,
    pub node: NodeId,
    pub epoch: Epoch,
    /// How long the owner's lease has left, if the backend has leases.
    pub lease_left: Option<std::time::Duration>,
}

/// A firing handed from the owner to a region.
#[derive(Clone, Debug)]
pub struct Dispatch {
    pub run: Run,
    pub job: Arc<Job>,
    pub epoch: Epoch,
    /// The schedule shard whose owner sent it: epochs are compared per shard.
    pub shard: u32,
}

/// A dispatch as a region receives it, with the token that acknowledges it.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Opaque; empty when the queue needs no acknowledgement (in-process queues).
    pub id: String,
    pub dispatch: Dispatch,
}

/// Per-region dispatch queues, bounded.
#[async_trait]
pub trait DispatchQueue: Send + Sync + 'static {
    /// Hand a batch to a region. What the region's bounded queue cannot take now is
    /// handed back, in order, for the caller to offer again later.
    async fn push(&self, region: &RegionId, batch: Vec<Dispatch>) -> Result<Vec<Dispatch>>;
    /// Take the next batch for `region` (up to `max`), waiting until one is there or
    /// `cancel` fires (then an empty batch).
    async fn pull(
        &self,
        region: &RegionId,
        max: usize,
        cancel: &CancellationToken,
    ) -> Result<Vec<Dispatch>>;
    /// At-least-once reading: like `pull`, but each delivery stays owed to the region
    /// (and is handed to another reader after the queue's visibility timeout) until
    /// `ack`ed. A region acknowledges a dispatch once its run is settled there.
    async fn receive(
        &self,
        region: &RegionId,
        max: usize,
        cancel: &CancellationToken,
    ) -> Result<Vec<Delivery>>;
    /// Acknowledge deliveries by id (ids that are empty or already acknowledged are
    /// ignored).
    async fn ack(&self, region: &RegionId, ids: &[String]) -> Result<()>;
}

/// Runs an action for one attempt. Implemented by `exec::Executors` (HTTP, command)
/// and by the simulator's fake targets.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    async fn execute(
        &self,
        action: &crate::core::action::Action,
        attempt: &crate::exec::Attempt<'_>,
        cancel: CancellationToken,
    ) -> crate::exec::Outcome;
}

/// Durable progress cursors (per job: the last scheduled instant handled), written only
/// by the owner of a shard and fenced by its epoch. Mesh mode keeps them apart from the
/// run log (etcd); the embedded store keeps them in `RunLog`.
#[async_trait]
pub trait Cursors: Send + Sync + 'static {
    /// Advance each job's cursor to at least its instant (never backwards). Refused with
    /// `Fenced` when `epoch` is no longer the owner epoch of `shard`. A large batch may
    /// be committed in several fenced parts, so a term ending midway can leave a prefix
    /// applied: advance only after the claims the cursors cover are durable.
    async fn advance(&self, epoch: Epoch, shard: u32, batch: Vec<(Uuid, Timestamp)>) -> Result<()>;
    /// Every job's cursor.
    async fn all(&self) -> Result<Vec<(Uuid, Timestamp)>>;
    /// One job's cursor.
    async fn get(&self, job_uid: Uuid) -> Result<Option<Timestamp>>;
}

/// One node's registration for one region it hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub node: NodeId,
    pub region: RegionId,
    /// The node's API endpoint (e.g. `http://10.0.0.5:7443`).
    pub endpoint: String,
}

/// Which nodes are alive and which regions they host; a registration lives as long as
/// its node keeps its lease.
#[async_trait]
pub trait Membership: Send + Sync + 'static {
    /// Register `node` as hosting `regions`, reachable at `endpoint`, until it stops or
    /// loses its lease. Calling again replaces the registration.
    async fn join(&self, node: &NodeId, regions: &[RegionId], endpoint: &str) -> Result<()>;
    /// Withdraw this node's registration now (graceful shutdown).
    async fn leave(&self) -> Result<()>;
    /// Regions with at least one live member, sorted.
    async fn live_regions(&self) -> Result<Vec<RegionId>>;
    /// Live members of `region`, sorted by node.
    async fn members(&self, region: &RegionId) -> Result<Vec<Member>>;
}
