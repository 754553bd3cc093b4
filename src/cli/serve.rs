//! `meridian serve`: runs a node until SIGTERM or Ctrl-C, then shuts down gracefully
//! (stop claiming, let running attempts finish up to the grace period, exit 0).
//! Must not hold scheduling logic.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tracing::info;

use crate::actors::Config;
use crate::adapters::embedded::Options;
use crate::core::clock_guard::GuardConfig;
use crate::core::ids::{NodeId, RegionId, validate_id};
use crate::core::owner::SHARDS_MAX;
use crate::node::{Mesh, Node, Settings};

/// Jobs planned (and so claimed in one Redis script call) per owner tick in mesh mode.
const MESH_OWNER_BATCH_MAX: usize = 512;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address of the gRPC API.
    #[arg(long, env = "MERIDIAN_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Directory of the embedded store.
    #[arg(long, env = "MERIDIAN_DATA_DIR", default_value = "./meridian-data")]
    pub data_dir: PathBuf,
    /// A region this node hosts (repeatable). Default: one region named `local`.
    #[arg(long = "region", env = "MERIDIAN_REGIONS", value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Region config files (`regions/<name>.toml`) to host, repeatable.
    #[arg(long = "region-file")]
    pub region_files: Vec<PathBuf>,
    /// This node's name. Default: the host name.
    #[arg(long, env = "MERIDIAN_NODE")]
    pub node: Option<String>,
    /// Attempts that run at once per region.
    #[arg(long, default_value_t = 64)]
    pub workers: usize,
    /// Runs kept per job (older finished runs are deleted).
    #[arg(long, default_value_t = 100)]
    pub runs_retained: u64,
    /// Seconds running attempts may go on after SIGTERM before they are cancelled.
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace_s: u64,
    /// Milliseconds ahead of its instant a firing is claimed and handed to its region.
    #[arg(long, default_value_t = 1000)]
    pub dispatch_lead_ms: u64,

    /// Mesh mode: etcd client URLs (comma-separated). The catalog, elections and
    /// membership live there; needs --redis.
    #[arg(long, env = "MERIDIAN_ETCD", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Mesh mode: the Redis URL for runs, claims and dispatch streams (or `redis` in a
    /// region file). Run it with `appendonly yes` and `appendfsync always`.
    #[arg(long, env = "MERIDIAN_REDIS", requires = "etcd")]
    pub redis: Option<String>,
    /// Mesh mode: the cluster's name, the key prefix in etcd and Redis.
    #[arg(long, env = "MERIDIAN_CLUSTER", default_value = "meridian")]
    pub cluster: String,
    /// Mesh mode: schedule shards, each with its own elected owner. Every node of a
    /// cluster must use the same number.
    #[arg(long, env = "MERIDIAN_SHARDS", default_value_t = 1)]
    pub shards: u32,
    /// Mesh mode: lease TTL in seconds of owner terms and memberships; an owner that
    /// dies is replaced within about this long (etcd grants at least 2).
    #[arg(long, env = "MERIDIAN_LEASE_TTL_S", default_value_t = 3)]
    pub lease_ttl_s: u64,
    /// Mesh mode: the API endpoint other nodes and tools use for this node (default:
    /// http://LISTEN-ADDRESS).
    #[arg(long, env = "MERIDIAN_ADVERTISE")]
    pub advertise: Option<String>,
    /// Mesh mode: seconds a dispatch may stay unacknowledged (its run not settled)
    /// before another node of its region takes it over.
    #[arg(long, default_value_t = 10)]
    pub visibility_timeout_s: u64,

    /// Clock guard: the gate closes when this node's clock may be off by more than
    /// this many milliseconds (|offset| + bound, measured against Redis TIME in mesh
    /// mode). Smaller catches worse clocks sooner; larger tolerates slower time
    /// sources.
    #[arg(long, env = "MERIDIAN_MAX_SKEW_MS", default_value_t = 250)]
    pub max_skew_ms: u64,
    /// Clock guard: an owner whose gate stays closed this long hands its shards over.
    #[arg(long, default_value_t = 30)]
    pub clock_resign_after_s: u64,
    /// Clock guard: due firings wait at a closed gate this long, then are recorded
    /// `gated`.
    #[arg(long, default_value_t = 30)]
    pub gate_grace_s: u64,
}

/// A region file: `regions/<name>.toml`.
#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RegionFile {
    name: String,
    #[serde(default)]
    workers: Option<usize>,
    /// The Redis of this region (mesh mode). One Redis serves the whole cluster
    /// today: when set, it must equal `--redis` (or be the only one named).
    #[serde(default)]
    redis: Option<String>,
}

impl ServeArgs {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let mut regions: Vec<RegionId> = Vec::new();
        let mut workers = self.workers;
        let mut redis = self.redis.clone();
        for r in &self.regions {
            validate_id("--region", r).map_err(|e| anyhow::anyhow!("{e}"))?;
            regions.push(RegionId(r.clone()));
        }
        for f in &self.region_files {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            let file: RegionFile =
                toml::from_str(&text).with_context(|| format!("parsing {}", f.display()))?;
            validate_id(&format!("{}: name", f.display()), &file.name)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if let Some(w) = file.workers {
                workers = w;
            }
            match (&redis, file.redis) {
                (_, None) => {}
                (None, Some(url)) => redis = Some(url),
                (Some(a), Some(b)) if *a == b => {}
                (Some(a), Some(b)) => anyhow::bail!(
                    "{}: redis = {b:?} differs from {a:?}: one Redis per cluster is supported so far",
                    f.display()
                ),
            }
            regions.push(RegionId(file.name));
        }
        if regions.is_empty() {
            regions.push(RegionId::from("local"));
        }
        regions.sort();
        regions.dedup();
        anyhow::ensure!(
            (1..=4096).contains(&workers),
            "--workers must be between 1 and 4096"
        );
        let node = match &self.node {
            Some(n) => n.clone(),
            None => std::fs::read_to_string("/etc/hostname")
                .map(|s| s.trim().to_owned())
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "node".into()),
        };
        let mesh = if self.etcd.is_empty() {
            None
        } else {
            anyhow::ensure!(
                (1..=SHARDS_MAX).contains(&self.shards),
                "--shards must be between 1 and {SHARDS_MAX}"
            );
            anyhow::ensure!(
                (2..=600).contains(&self.lease_ttl_s),
                "--lease-ttl-s must be between 2 and 600 (etcd grants at least 2 s)"
            );
            anyhow::ensure!(
                (1..=3600).contains(&self.visibility_timeout_s),
                "--visibility-timeout-s must be between 1 and 3600"
            );
            validate_id("--cluster", &self.cluster).map_err(|e| anyhow::anyhow!("{e}"))?;
            Some(Mesh {
                etcd: self.etcd.clone(),
                redis: redis.context("--redis is required with --etcd")?,
                cluster: self.cluster.clone(),
                lease_ttl: Duration::from_secs(self.lease_ttl_s),
                advertise: self.advertise.clone(),
                visibility_timeout: Duration::from_secs(self.visibility_timeout_s),
            })
        };
        let shards = if mesh.is_some() { self.shards } else { 1 };
        let is_mesh = mesh.is_some();
        anyhow::ensure!(
            (1..=60_000).contains(&self.max_skew_ms),
            "--max-skew-ms must be between 1 and 60000"
        );
        anyhow::ensure!(
            (1..=3600).contains(&self.clock_resign_after_s),
            "--clock-resign-after-s must be between 1 and 3600"
        );
        anyhow::ensure!(
            (1..=86_400).contains(&self.gate_grace_s),
            "--gate-grace-s must be between 1 and 86400"
        );
        Ok(Settings {
            mesh,
            guard: GuardConfig {
                skew_max: Duration::from_millis(self.max_skew_ms),
                closed_max: Duration::from_secs(self.clock_resign_after_s),
                ..GuardConfig::default()
            },
            node: NodeId(node),
            data_dir: self.data_dir.clone(),
            listen: self.listen,
            actors: Config {
                regions,
                workers_max: workers,
                shutdown_grace: Duration::from_secs(self.shutdown_grace_s),
                dispatch_lead: Duration::from_millis(self.dispatch_lead_ms.clamp(1, 60_000)),
                shards,
                gate_grace: Duration::from_secs(self.gate_grace_s),
                // A claim is one Redis script call, which blocks Redis while it runs:
                // keep each short in mesh mode.
                owner_batch_max: if is_mesh {
                    MESH_OWNER_BATCH_MAX
                } else {
                    Config::default().owner_batch_max
                },
                ..Config::default()
            },
            store: Options {
                runs_per_job_max: self.runs_retained.max(1),
                ..Options::default()
            },
        })
    }
}

/// Run a node until a termination signal, then stop it gracefully.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let node = Node::start(settings, None).await?;
    // Tests and scripts read this line to learn the bound address.
    println!("meridian listening on {}", node.addr);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => info!("interrupt: shutting down"),
    }
    node.shutdown().await?;
    info!("stopped");
    Ok(())
}
