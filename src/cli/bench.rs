//! `meridian bench fire`: runs the real owner, region supervisors and workers with a
//! no-op action on a temporary store, and prints one JSON object with throughput,
//! lateness percentiles and memory. A command, not a timed test.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;
use uuid::Uuid;

use crate::actors::{Config, LatenessProbe};
use crate::adapters::embedded::Options;
use crate::core::Timestamp;
use crate::core::action::Action;
use crate::core::ids::{JobName, NodeId, RegionId};
use crate::core::job::Job;
use crate::core::policy::Policies;
use crate::core::schedule::{DstFold, DstGap, Kind, ScheduleSpec, TZDB_VERSION};
use crate::node::{Node, Settings};

use crate::ports::Clock as _;

#[derive(clap::Subcommand, Debug, Clone)]
pub enum BenchCmd {
    /// Fire no-op jobs and measure lateness (start - due).
    Fire(FireArgs),
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Schedules spread evenly: jobs / period firings per second.
    Spread,
    /// Every job due in the same second.
    Herd,
}

#[derive(clap::Args, Debug, Clone)]
pub struct FireArgs {
    /// Active jobs to load and index.
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    /// Seconds of firing to measure.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    #[arg(long, value_enum, default_value_t = Pattern::Spread)]
    pub pattern: Pattern,
    /// Each job's interval in seconds (spread pattern): firings/s = jobs / period.
    #[arg(long, default_value_t = 10)]
    pub period: u64,
    /// Workers per region.
    #[arg(long, default_value_t = 64)]
    pub workers: usize,
}

pub async fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Fire(args) => fire(args).await,
    }
}

/// Jobs written to the store per bulk operation.
const LOAD_BATCH_MAX: usize = 50_000;
/// Lateness samples kept at most.
const SAMPLES_MAX: usize = 50_000_000;

fn rss_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

fn bench_job(i: usize, anchor: Timestamp, every: Duration, created: Timestamp) -> Job {
    Job {
        name: JobName::new("bench", format!("j{i}")),
        uid: Uuid::from_u128(0xbe0c_0000_0000_0000_0000_0000_0000_0000 | i as u128),
        description: String::new(),
        labels: Vec::new(),
        schedule: ScheduleSpec {
            kind: Kind::Interval { every, anchor },
            time_zone: "UTC".into(),
            dst_gap: DstGap::Shift,
            dst_fold: DstFold::First,
            start_time: None,
            end_time: None,
        },
        action: Action::Noop,
        policy: Policies::default(),
        paused: false,
        paused_at: None,
        resumed_at: None,
        create_time: created,
        update_time: created,
        revision: 1,
        tzdb_version: TZDB_VERSION.to_string(),
    }
}

async fn fire(args: FireArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.jobs >= 1, "--jobs must be at least 1");
    anyhow::ensure!(args.period >= 1, "--period must be at least 1");
    let dir = tempfile::tempdir().context("creating a temporary store directory")?;
    let clock = crate::adapters::clock::SystemClock;
    let t0 = clock.now();
    // Firing starts after a warm-up long enough to load and index every job, so no
    // firing falls due during the load (that would measure catch-up, not steady state).
    let warmup = Duration::from_secs(5) + Duration::from_micros(30 * args.jobs as u64);
    let start = t0 + chrono::Duration::from_std(warmup)?;
    let every = match args.pattern {
        Pattern::Spread => Duration::from_secs(args.period),
        // A herd fires once within the measurement.
        Pattern::Herd => Duration::from_secs(args.duration.max(1) * 10),
    };
    let settings = Settings {
        node: NodeId::from("bench"),
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse()?,
        actors: Config {
            regions: vec![RegionId::from("bench")],
            workers_max: args.workers,
            ..Config::default()
        },
        store: Options {
            runs_per_job_max: 10,
            ..Options::default()
        },
        mesh: None,
        guard: Default::default(),
    };
    // Load straight into the store (as an import would), then start the node, whose
    // owner indexes everything at start.
    let store = crate::adapters::embedded::Store::open(dir.path(), settings.store.clone())?;
    let period_ns = every.as_nanos() as u64;
    let mut batch = Vec::with_capacity(LOAD_BATCH_MAX);
    for i in 0..args.jobs {
        let offset = match args.pattern {
            Pattern::Spread => (period_ns as u128 * i as u128 / args.jobs as u128) as i64,
            Pattern::Herd => 0,
        };
        let anchor = start + chrono::Duration::nanoseconds(offset);
        batch.push(bench_job(i, anchor, every, t0));
        if batch.len() == LOAD_BATCH_MAX {
            store.bulk_load(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        store.bulk_load(batch).await?;
    }
    let probe = Arc::new(LatenessProbe::new(SAMPLES_MAX));
    let node = Node::start_on(settings, store, Some(probe.clone())).await?;
    // Wait until the owner has indexed every job.
    loop {
        let status = node
            .supervisor
            .call(
                crate::actors::node_supervisor::NodeSupervisorMsg::Status,
                Some(Duration::from_secs(30)),
            )
            .await;
        if let Ok(ractor::rpc::CallResult::Success(s)) = status
            && s.jobs_indexed() >= args.jobs
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let loaded = clock.now();
    let load_s = (loaded - t0).num_milliseconds() as f64 / 1000.0;
    if loaded > start {
        eprintln!("warning: loading took longer than the warm-up; early firings run late");
    }
    let end = start + chrono::Duration::seconds(args.duration as i64);
    // Let the last firings of the window start, then stop.
    clock
        .sleep_until(end + chrono::Duration::milliseconds(500))
        .await;
    let rss = rss_bytes("VmHWM:");
    let mut samples = std::mem::take(&mut *probe.samples.lock().expect("probe lock"));
    node.shutdown().await?;
    samples.sort_unstable();
    let early = samples.iter().filter(|&&l| l < 0).count();
    let firings = samples.len();
    let out = json!({
        "bench": "fire",
        "pattern": match args.pattern { Pattern::Spread => "spread", Pattern::Herd => "herd" },
        "jobs": args.jobs,
        "period_s": every.as_secs(),
        "workers": args.workers,
        "duration_s": args.duration,
        "load_s": load_s,
        "firings": firings,
        "firings_per_s": firings as f64 / args.duration.max(1) as f64,
        "lateness_ms": {
            "p50": percentile(&samples, 0.50),
            "p99": percentile(&samples, 0.99),
            "max": samples.last().map_or(0.0, |&m| m as f64 / 1000.0),
        },
        "early": early,
        "rss_bytes": rss,
    });
    println!("{out}");
    Ok(())
}
