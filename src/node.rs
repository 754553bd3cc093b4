//! Wiring: builds one node (store, ports, actors, gRPC server) from its settings and
//! runs it until shutdown. Must not hold scheduling logic; it only connects parts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ractor::Actor;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::actors::node_supervisor::{NodeSupervisor, NodeSupervisorMsg};
use crate::actors::{Config, Deps, LatenessProbe};
use crate::adapters::clock::SystemClock;
use crate::adapters::embedded::{LocalElection, LocalQueues, Options, Store};
use crate::api;
use crate::core::ids::NodeId;
use crate::exec::Executors;

/// Everything `meridian serve` is told.
#[derive(Clone, Debug)]
pub struct Settings {
    pub node: NodeId,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub actors: Config,
    pub store: Options,
}

/// A running node.
pub struct Node {
    pub addr: SocketAddr,
    pub store: Store,
    pub supervisor: ractor::ActorRef<NodeSupervisorMsg>,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    supervisor_done: tokio::task::JoinHandle<()>,
    grace: Duration,
}

/// Load (or create) the key that signs page tokens, kept beside the store.
fn page_key(dir: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    let path = dir.join("page-token.key");
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice())
    {
        return Ok(key);
    }
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    std::fs::write(&path, key).with_context(|| format!("writing {}", path.display()))?;
    Ok(key)
}

impl Node {
    /// Open the store, start the actors and the gRPC server.
    pub async fn start(
        settings: Settings,
        probe: Option<Arc<LatenessProbe>>,
    ) -> anyhow::Result<Self> {
        let store = Store::open(&settings.data_dir, settings.store.clone())
            .with_context(|| format!("opening the store in {}", settings.data_dir.display()))?;
        Self::start_on(settings, store, probe).await
    }

    /// Start on a store the caller opened (benchmarks load it first).
    pub async fn start_on(
        settings: Settings,
        store: Store,
        probe: Option<Arc<LatenessProbe>>,
    ) -> anyhow::Result<Self> {
        let clock = Arc::new(SystemClock);
        let deps = Arc::new(Deps {
            node: settings.node.clone(),
            clock: clock.clone(),
            catalog: Arc::new(store.clone()),
            runs: Arc::new(store.clone()),
            election: Arc::new(LocalElection::new(store.clone())),
            queues: Arc::new(LocalQueues::new(
                &settings.actors.regions,
                settings.actors.region_pending_max,
            )),
            executor: Arc::new(Executors::new().context("building executors")?),
            config: settings.actors.clone(),
            probe,
        });
        let (supervisor, supervisor_handle) = Actor::spawn(None, NodeSupervisor, deps.clone())
            .await
            .map_err(|e| anyhow::anyhow!("starting the node: {e}"))?;
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("listening on {}", settings.listen))?;
        let addr = listener.local_addr()?;
        let ctx = api::Context {
            node: settings.node.clone(),
            regions: settings.actors.regions.clone(),
            catalog: deps.catalog.clone(),
            runs: deps.runs.clone(),
            clock,
            supervisor: supervisor.clone(),
            page_key: page_key(&settings.data_dir)?,
        };
        let stop = CancellationToken::new();
        let server = tokio::spawn(api::serve(ctx, listener, stop.clone()));
        info!(%addr, node = %settings.node, regions = ?settings.actors.regions, "meridian serving");
        Ok(Self {
            addr,
            store,
            supervisor,
            stop,
            server,
            supervisor_done: supervisor_handle,
            grace: settings.actors.shutdown_grace,
        })
    }

    /// Graceful stop: stop claiming, let running attempts finish up to the grace
    /// period, stop the actors and the server.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let grace = self.grace;
        let res = self
            .supervisor
            .call(
                |r| NodeSupervisorMsg::Shutdown(grace, r),
                Some(grace + Duration::from_secs(10)),
            )
            .await;
        if !matches!(res, Ok(ractor::rpc::CallResult::Success(()))) {
            warn!("node did not drain cleanly");
        }
        self.supervisor.stop(None);
        let _ = self.supervisor_done.await;
        self.stop.cancel();
        match self.server.await {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("api server task: {e}")),
        }
    }
}
