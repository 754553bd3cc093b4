//! The gRPC edge (tonic). The only module that sees generated proto types: it
//! validates requests, converts local times to UTC and back, maps errors to
//! `google.rpc.Status` with details, and paginates. Must not make scheduling decisions.

/// Generated types of `proto/meridian/v1/meridian.proto`.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("meridian.v1");

    /// The encoded file descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("meridian_descriptor");
}

mod convert;
mod errors;
mod page;
pub mod peer_clock;
mod service;

use std::sync::Arc;

use ractor::ActorRef;

use crate::actors::node_supervisor::NodeSupervisorMsg;
use crate::core::ids::{NodeId, RegionId};
use crate::ports::{Catalog, Clock, DispatchQueue, Election, Membership, RunLog};

pub use service::Service;

/// What the API needs from the node it serves.
#[derive(Clone)]
pub struct Context {
    pub node: NodeId,
    /// Regions this endpoint owns writes for (and answers reads of).
    pub regions: Vec<RegionId>,
    pub catalog: Arc<dyn Catalog>,
    pub runs: Arc<dyn RunLog>,
    pub clock: Arc<dyn Clock>,
    /// The node's root actor: reaches the owner (TriggerJob) and statuses.
    pub supervisor: ActorRef<NodeSupervisorMsg>,
    /// Key that signs page tokens (tamper-evident cursors); persisted per data dir so
    /// tokens survive restarts.
    pub page_key: [u8; 32],
    /// Dispatch queues: a manual trigger on a node that does not own the job's shard
    /// is claimed and dispatched from here.
    pub queues: Arc<dyn DispatchQueue>,
    pub election: Arc<dyn Election>,
    /// Mesh mode: who is alive where (None in embedded mode).
    pub membership: Option<Arc<dyn Membership>>,
    /// Schedule shards of the cluster.
    pub shards: u32,
    /// This node's clock guard.
    pub guard: Arc<crate::actors::clock_guardian::GuardHandle>,
}

/// Largest request accepted (a job's body and headers are capped far below it by
/// the core's limits).
pub const REQUEST_BYTES_MAX: usize = 1024 * 1024;
/// Largest response sent: the 4 MiB most gRPC clients accept by default (list pages
/// stop short of it, see `page::PAGE_BYTES_MAX`).
pub const RESPONSE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Serve the Scheduler service, gRPC health (`""` and `meridian.v1.Scheduler`) and
/// server reflection (v1 and v1alpha) on `listener` until `stop` is cancelled.
pub async fn serve(
    ctx: Context,
    listener: tokio::net::TcpListener,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    use pb::scheduler_server::SchedulerServer;

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<SchedulerServer<Service>>().await;
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let scheduler = SchedulerServer::new(Service::new(ctx))
        .max_decoding_message_size(REQUEST_BYTES_MAX)
        .max_encoding_message_size(RESPONSE_BYTES_MAX);
    // Small request/response pairs: Nagle's delay would dominate their latency.
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |conn| {
            let conn = conn?;
            conn.set_nodelay(true)?;
            Ok::<_, std::io::Error>(conn)
        },
    );
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(scheduler)
        .serve_with_incoming_shutdown(incoming, stop.cancelled())
        .await?;
    Ok(())
}
