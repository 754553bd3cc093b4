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
use crate::core::ids::{NodeId, RegionId, validate_id};
use crate::node::{Node, Settings};

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
}

/// A region file: `regions/<name>.toml`.
#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RegionFile {
    name: String,
    #[serde(default)]
    workers: Option<usize>,
    /// Mesh settings (etcd, Redis) are read by mesh mode; embedded mode ignores them.
    #[serde(default)]
    #[allow(dead_code)]
    redis: Option<String>,
}

impl ServeArgs {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let mut regions: Vec<RegionId> = Vec::new();
        let mut workers = self.workers;
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
        Ok(Settings {
            node: NodeId(node),
            data_dir: self.data_dir.clone(),
            listen: self.listen,
            actors: Config {
                regions,
                workers_max: workers,
                shutdown_grace: Duration::from_secs(self.shutdown_grace_s),
                dispatch_lead: Duration::from_millis(self.dispatch_lead_ms.clamp(1, 60_000)),
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
