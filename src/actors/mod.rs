//! The actors (ractor): a thin shell around the core that does the IO the core decides.
//!
//! - `NodeSupervisor`: one per process; starts and restarts the others.
//! - `ScheduleOwner`: holds the timer index, claims due firings, dispatches them.
//! - `RegionSupervisor`: one per hosted region; owns its bounded worker pool and the
//!   overlap policy, starts attempts exactly at their instant.
//! - `Worker`: runs one attempt at a time through an executor and records it.
//! - `clock_guardian`: a task (not an actor) sampling time sources into the core's
//!   clock guard; owners and regions read its gate.
//!
//! Actors must not compute schedules or policies themselves (that is `core`), must not
//! read the system clock (the `Clock` port does), and must keep every mailbox and
//! queue bounded.

pub mod clock_guardian;
pub mod node_supervisor;
pub mod region_supervisor;
pub mod schedule_owner;
pub mod worker;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::core::ids::{NodeId, RegionId};
use crate::ports::{Catalog, Clock, DispatchQueue, Election, Executor, Membership, RunLog};

/// Tunables of one node's actors.
#[derive(Clone, Debug)]
pub struct Config {
    /// Regions this node hosts a worker pool for.
    pub regions: Vec<RegionId>,
    /// Workers per region: attempts that can run at once.
    pub workers_max: usize,
    /// Dispatches a region supervisor holds (waiting for their instant, or for a worker).
    pub region_pending_max: usize,
    /// How far ahead of its instant a firing is claimed and handed to its region. The
    /// region starts it exactly at its instant; a larger lead absorbs herds.
    pub dispatch_lead: Duration,
    /// A firing counts as late (for catch-up) only when older than this.
    pub late_grace: Duration,
    /// Jobs planned per owner tick.
    pub owner_batch_max: usize,
    /// On shutdown, how long running attempts may go on before they are cancelled.
    pub shutdown_grace: Duration,
    /// Child restarts a supervisor allows per minute before it gives up.
    pub restarts_per_minute_max: u32,
    /// Schedule shards: each has its own owner term (embedded mode: 1).
    pub shards: u32,
    /// How long due firings wait at a closed clock gate before the owner records them
    /// `gated`.
    pub gate_grace: Duration,
    /// Test-only (the simulator's planted bug): owners ignore the end of their term and
    /// keep firing. Never set outside `meridian::sim` tests.
    #[doc(hidden)]
    pub planted_stale_owner: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            regions: vec![RegionId::from("local")],
            workers_max: 64,
            region_pending_max: 200_000,
            dispatch_lead: Duration::from_secs(1),
            late_grace: Duration::from_secs(5),
            owner_batch_max: 4_096,
            shutdown_grace: Duration::from_secs(30),
            restarts_per_minute_max: 1_000,
            shards: 1,
            gate_grace: Duration::from_secs(30),
            planted_stale_owner: false,
        }
    }
}

/// Everything the actors of one node share: ports and settings.
pub struct Deps {
    pub node: NodeId,
    pub clock: Arc<dyn Clock>,
    pub catalog: Arc<dyn Catalog>,
    pub runs: Arc<dyn RunLog>,
    pub election: Arc<dyn Election>,
    pub queues: Arc<dyn DispatchQueue>,
    pub executor: Arc<dyn Executor>,
    /// Which nodes are alive where (mesh mode); None when this node is the only one.
    pub membership: Option<Arc<dyn Membership>>,
    /// The clock guard: whether this node's clock may fire now.
    pub guard: Arc<clock_guardian::GuardHandle>,
    pub config: Config,
    /// When set, workers push the lateness (microseconds) of every attempt's actual
    /// start here: the benchmark reads it. Bounded by `LatenessProbe::samples_max`.
    pub probe: Option<Arc<LatenessProbe>>,
}

/// Lateness samples for benchmarks: start - due, in microseconds, as the worker saw
/// it right before calling the executor.
#[derive(Default)]
pub struct LatenessProbe {
    pub samples: Mutex<Vec<i64>>,
    pub samples_max: usize,
}

impl LatenessProbe {
    pub fn new(samples_max: usize) -> Self {
        Self {
            samples: Mutex::new(Vec::new()),
            samples_max,
        }
    }

    pub fn record(&self, lateness_us: i64) {
        let mut s = self.samples.lock().expect("probe lock");
        if s.len() < self.samples_max {
            s.push(lateness_us);
        }
    }
}
