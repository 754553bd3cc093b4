//! The embedded adapters: everything `meridian serve` needs in one process, with
//! nothing else to install. A redb file holds jobs, runs, progress cursors and the
//! epoch; queues are in-process; election is local. Must not depend on actors.

mod election;
mod queue;
mod store;

pub use election::LocalElection;
pub use queue::LocalQueues;
pub use store::{Options, Store};
