//! Meridian: a multi-region job scheduler.
//!
//! Layout, from the inside out:
//!
//! - [`core`]: pure and synchronous: schedules and DST rules, firing ids, policies,
//!   the owner's timer index, the run model. No IO, no clock reads.
//! - [`ports`]: the capabilities the actors need (clock, catalog, run log, election,
//!   dispatch queues, executors), as traits.
//! - [`adapters`]: one implementation of the ports per technology (`embedded`: redb +
//!   in-process queues + local election; `etcd` and `redis` for the mesh; `sim`: in
//!   memory, virtual time, fault hooks; the system clock).
//! - [`actors`]: the ractor shell: node supervisor, schedule owner, region
//!   supervisors with their worker pools, workers.
//! - [`exec`]: action executors: HTTP webhook and command.
//! - [`api`]: the gRPC edge (tonic): validation, UTC/local conversion, errors,
//!   pagination. The only module that sees generated proto types.
//! - [`cli`]: the `meridian` command: the server (`serve`), the client commands, the
//!   benchmark.
//! - [`node`]: wiring: builds a node from its settings and runs it until shutdown.
//! - [`sim`]: `meridian simulate`: seeded chaos runs over the `sim` adapters, with the
//!   guarantees checked as invariants.

pub mod actors;
pub mod adapters;
pub mod api;
pub mod cli;
pub mod core;
pub mod exec;
pub mod node;
pub mod ports;
pub mod sim;
