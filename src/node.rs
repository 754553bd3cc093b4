//! Wiring: builds one node (store or mesh adapters, ports, actors, gRPC server) from its
//! settings and runs it until shutdown. Embedded mode: a redb store, in-process queues,
//! a local election. Mesh mode: the catalog, elections and membership in etcd; runs,
//! claims, cursors and dispatch streams in Redis. Must not hold scheduling logic; it
//! only connects parts.

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
use crate::actors::{Config, Deps, LatenessProbe, clock_guardian};
use crate::adapters::clock::SystemClock;
use crate::adapters::embedded::{LocalElection, LocalQueues, Options, Store};
use crate::api;
use crate::core::clock_guard::GuardConfig;
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
    /// Mesh mode when set; embedded otherwise.
    pub mesh: Option<Mesh>,
    /// The clock guard's limits (`max_skew` and the rest).
    pub guard: GuardConfig,
}

/// How a mesh node reaches etcd and Redis.
#[derive(Clone, Debug)]
pub struct Mesh {
    pub etcd: Vec<String>,
    pub redis: String,
    /// Key prefix of this cluster in etcd and Redis: several clusters may share both.
    pub cluster: String,
    /// Election and membership lease TTL.
    pub lease_ttl: Duration,
    /// The API endpoint other nodes and tools reach this node at (default: the bound
    /// address).
    pub advertise: Option<String>,
    /// How long a dispatch may stay unacknowledged before another node takes it over.
    pub visibility_timeout: Duration,
}

/// The ports of one node, as the mode builds them.
struct Ports {
    catalog: Arc<dyn crate::ports::Catalog>,
    runs: Arc<dyn crate::ports::RunLog>,
    election: Arc<dyn crate::ports::Election>,
    queues: Arc<dyn crate::ports::DispatchQueue>,
    membership: Option<Arc<dyn crate::ports::Membership>>,
    /// Clocks the guard compares this node's with (none in embedded mode).
    time_sources: Vec<Arc<dyn crate::ports::TimeSource>>,
}

async fn mesh_ports(settings: &Settings, mesh: &Mesh) -> anyhow::Result<Ports> {
    use crate::adapters::{etcd, redis};
    let prefix = format!("/{}", mesh.cluster.trim_matches('/'));
    let conn = etcd::Connection::connect(&etcd::Config::new(mesh.etcd.clone(), prefix))
        .await
        .with_context(|| format!("connecting to etcd at {}", mesh.etcd.join(",")))?;
    let catalog = etcd::Catalog::connect(conn.clone(), etcd::CatalogOptions::default())
        .await
        .context("opening the etcd catalog")?;
    let election = etcd::Election::new(
        conn.clone(),
        etcd::ElectionOptions {
            ttl: mesh.lease_ttl,
            ..Default::default()
        },
    );
    let membership = etcd::Membership::new(
        conn,
        etcd::MembershipOptions {
            ttl: mesh.lease_ttl,
        },
    );
    let rconf = redis::Config::new(mesh.redis.clone(), mesh.cluster.clone());
    let runs = redis::RunLog::open(
        &rconf,
        redis::RunLogOptions {
            runs_per_job_max: settings.store.runs_per_job_max,
            ..Default::default()
        },
    )
    .context("opening the Redis run log")?;
    match runs.persists_every_write().await {
        Ok(Some(true)) => {}
        Ok(Some(false)) => warn!(
            "Redis does not persist every write (appendonly yes + appendfsync always): a Redis crash may lose acknowledged claims and starts, and so run a firing twice"
        ),
        Ok(None) => info!("Redis does not say how it persists writes (CONFIG is disabled)"),
        Err(e) => warn!(error = %e, "Redis is not answering yet"),
    }
    let mut qopts = redis::QueueOptions::new(settings.node.to_string());
    qopts.queue_max = settings.actors.region_pending_max.min(1 << 20);
    qopts.visibility_timeout = mesh.visibility_timeout;
    let queues = redis::Queue::open(&rconf, qopts).context("opening the Redis queues")?;
    let redis_time = redis::RedisTime::open(&rconf).context("opening Redis as a time source")?;
    Ok(Ports {
        time_sources: vec![Arc::new(redis_time)],
        catalog: Arc::new(catalog),
        runs: Arc::new(runs),
        election: Arc::new(election),
        queues: Arc::new(queues),
        membership: Some(Arc::new(membership)),
    })
}

/// A running node.
pub struct Node {
    pub addr: SocketAddr,
    /// The embedded store (None in mesh mode).
    pub store: Option<Store>,
    membership: Option<Arc<dyn crate::ports::Membership>>,
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
        if let Some(mesh) = settings.mesh.clone() {
            std::fs::create_dir_all(&settings.data_dir)
                .with_context(|| format!("creating {}", settings.data_dir.display()))?;
            let ports = mesh_ports(&settings, &mesh).await?;
            return Self::start_with(settings, ports, None, probe).await;
        }
        let store = Store::open(&settings.data_dir, settings.store.clone())
            .with_context(|| format!("opening the store in {}", settings.data_dir.display()))?;
        Self::start_on(settings, store, probe).await
    }

    /// Start on a store the caller opened (benchmarks load it first).
    pub async fn start_on(
        mut settings: Settings,
        store: Store,
        probe: Option<Arc<LatenessProbe>>,
    ) -> anyhow::Result<Self> {
        // One node owns everything: one shard.
        settings.actors.shards = 1;
        let ports = Ports {
            catalog: Arc::new(store.clone()),
            runs: Arc::new(store.clone()),
            election: Arc::new(LocalElection::new(store.clone())),
            queues: Arc::new(LocalQueues::new(
                &settings.actors.regions,
                settings.actors.region_pending_max,
            )),
            membership: None,
            time_sources: Vec::new(),
        };
        Self::start_with(settings, ports, Some(store), probe).await
    }

    async fn start_with(
        settings: Settings,
        ports: Ports,
        store: Option<Store>,
        probe: Option<Arc<LatenessProbe>>,
    ) -> anyhow::Result<Self> {
        let clock = Arc::new(SystemClock);
        let stop = CancellationToken::new();
        let peers: Option<Arc<dyn crate::ports::PeerClocks>> = ports.membership.as_ref().map(|m| {
            Arc::new(api::peer_clock::MeshPeers::new(
                settings.node.clone(),
                m.clone(),
            )) as Arc<dyn crate::ports::PeerClocks>
        });
        let guard = clock_guardian::spawn(
            clock.clone(),
            ports.time_sources.clone(),
            peers,
            settings.guard.clone(),
            stop.clone(),
        );
        // Bound before anything campaigns, so the advertised endpoint is known.
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("listening on {}", settings.listen))?;
        let addr = listener.local_addr()?;
        if let Some(m) = &ports.membership {
            let endpoint = settings
                .mesh
                .as_ref()
                .and_then(|m| m.advertise.clone())
                .unwrap_or_else(|| format!("http://{addr}"));
            m.join(&settings.node, &settings.actors.regions, &endpoint)
                .await
                .context("joining the mesh (etcd membership)")?;
        }
        let deps = Arc::new(Deps {
            node: settings.node.clone(),
            clock: clock.clone(),
            catalog: ports.catalog.clone(),
            runs: ports.runs.clone(),
            election: ports.election.clone(),
            queues: ports.queues.clone(),
            executor: Arc::new(Executors::new().context("building executors")?),
            membership: ports.membership.clone(),
            guard,
            config: settings.actors.clone(),
            probe,
        });
        let (supervisor, supervisor_handle) = Actor::spawn(None, NodeSupervisor, deps.clone())
            .await
            .map_err(|e| anyhow::anyhow!("starting the node: {e}"))?;
        let ctx = api::Context {
            node: settings.node.clone(),
            regions: settings.actors.regions.clone(),
            catalog: deps.catalog.clone(),
            runs: deps.runs.clone(),
            clock,
            supervisor: supervisor.clone(),
            page_key: page_key(&settings.data_dir)?,
            queues: ports.queues.clone(),
            election: ports.election.clone(),
            membership: ports.membership.clone(),
            shards: settings.actors.shards,
            guard: deps.guard.clone(),
        };
        let server = tokio::spawn(api::serve(ctx, listener, stop.clone()));
        info!(%addr, node = %settings.node, regions = ?settings.actors.regions, "meridian serving");
        Ok(Self {
            addr,
            store,
            membership: ports.membership,
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
        if let Some(m) = &self.membership
            && let Err(e) = m.leave().await
        {
            warn!(error = %e, "leaving the mesh failed; the membership lease will expire");
        }
        self.stop.cancel();
        match self.server.await {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("api server task: {e}")),
        }
    }
}
