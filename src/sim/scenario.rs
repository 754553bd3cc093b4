//! Scenario files (`simulations/*.toml`): the topology, the jobs (listed, or drawn by a
//! generator), the target's behaviour, the fault schedule, and swarm mode, which draws
//! faults and their timing from the seed. Parsing and validation only, with errors that
//! name the field; must not run anything.

use std::path::Path;

use anyhow::{Context as _, bail, ensure};
use serde::Deserialize;

/// Regions a scenario may declare at most.
pub const REGIONS_MAX: usize = 16;
/// Nodes per region at most.
pub const NODES_PER_REGION_MAX: usize = 16;
/// Jobs a scenario may generate at most.
pub const JOBS_MAX: usize = 100_000;
/// Faults a scenario (or swarm) may schedule at most.
pub const FAULTS_MAX: usize = 1_000;
/// Longest simulated span (chaos + convergence), in seconds of virtual time.
pub const DURATION_S_MAX: u64 = 7 * 24 * 3600;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Virtual start instant (UTC, RFC 3339). Default 2026-01-05T00:00:00Z.
    #[serde(default = "default_start")]
    pub start: String,
    /// Chaos phase, virtual seconds: faults happen in it.
    pub duration_s: u64,
    /// Convergence phase after every fault healed, virtual seconds.
    #[serde(default = "default_converge")]
    pub converge_s: u64,
    #[serde(default = "one")]
    pub shards: u32,
    #[serde(default = "default_ttl")]
    pub lease_ttl_s: u64,
    #[serde(default = "default_skew")]
    pub max_skew_ms: u64,
    #[serde(default = "default_visibility")]
    pub visibility_timeout_s: u64,
    #[serde(default = "default_workers")]
    pub workers: usize,
    pub regions: Vec<RegionSpec>,
    #[serde(default)]
    pub jobs: Vec<JobSpec>,
    #[serde(default)]
    pub generate: Option<Generator>,
    #[serde(default)]
    pub target: TargetSpec,
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    #[serde(default)]
    pub swarm: Option<Swarm>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSpec {
    pub name: String,
    #[serde(default = "one_usize")]
    pub nodes: usize,
}

/// One job, as a user would create it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub id: String,
    pub region: String,
    /// One of `every_s` or `cron`.
    #[serde(default)]
    pub every_s: Option<u64>,
    #[serde(default)]
    pub cron: Option<String>,
    #[serde(default = "utc")]
    pub tz: String,
    /// `skip` (default), `allow`, `buffer_one`, `cancel_previous`.
    #[serde(default)]
    pub overlap: Option<String>,
    /// `pause` (default) or `failover:REGION`.
    #[serde(default)]
    pub region_loss: Option<String>,
    #[serde(default)]
    pub attempts: Option<u32>,
}

/// N jobs drawn from the seed: a schedule mix, zones and policies.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generator {
    pub count: usize,
    /// Interval periods to draw from (seconds).
    #[serde(default)]
    pub every_s: Vec<u64>,
    /// Cron expressions to draw from.
    #[serde(default)]
    pub cron: Vec<String>,
    #[serde(default = "utc_list")]
    pub zones: Vec<String>,
    #[serde(default)]
    pub overlap: Vec<String>,
    #[serde(default)]
    pub region_loss: Vec<String>,
    #[serde(default)]
    pub attempts: Vec<u32>,
}

/// How the jobs' target behaves.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// Latency drawn uniformly from [min, max] milliseconds.
    #[serde(default)]
    pub latency_ms: Option<[u64; 2]>,
    /// Share of attempts that fail (retryable).
    #[serde(default)]
    pub failure_rate: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGKILL-like: the node vanishes; restarted after `for_s`.
    Crash,
    /// The node cannot reach etcd for `for_s`.
    PartitionEtcd,
    /// The node cannot reach Redis for `for_s`.
    PartitionRedis,
    /// The process is stopped for `for_s` (its calls hang, its leases lapse).
    Pause,
    /// The node's clock is off by `offset_ms` for `for_s`.
    Skew,
    /// The node's wall clock steps by `offset_ms` and stays there.
    Jump,
    /// Workers of the node panic mid-attempt, `rate` of attempts, for `for_s`.
    WorkerCrash,
    /// The target fails `rate` of attempts and answers slowly for `for_s`.
    Brownout,
    /// Every node of `region` crashes; restarted after `for_s`.
    RegionOutage,
}

/// One fault at a virtual instant.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    pub at_s: u64,
    pub kind: FaultKind,
    /// A node name (`us-east-1`), `owner` (the owner of shard 0 at that moment) or
    /// `any` (drawn from the seed). Ignored by `brownout` and `region_outage`.
    #[serde(default = "owner")]
    pub node: String,
    /// For `region_outage`.
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default = "default_for")]
    pub for_s: u64,
    #[serde(default)]
    pub offset_ms: i64,
    #[serde(default)]
    pub rate: f64,
}

/// Faults drawn from the seed.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Swarm {
    /// How many faults to draw over the chaos phase.
    pub faults: usize,
    /// Kinds to draw from (default: all but jump).
    #[serde(default)]
    pub kinds: Vec<FaultKind>,
    /// Longest a drawn fault lasts, seconds.
    #[serde(default = "default_swarm_for")]
    pub for_s_max: u64,
}

fn default_start() -> String {
    "2026-01-05T00:00:00Z".into()
}
fn default_converge() -> u64 {
    30
}
fn one() -> u32 {
    1
}
fn one_usize() -> usize {
    1
}
fn default_ttl() -> u64 {
    3
}
fn default_skew() -> u64 {
    250
}
fn default_visibility() -> u64 {
    10
}
fn default_workers() -> usize {
    32
}
fn utc() -> String {
    "UTC".into()
}
fn utc_list() -> Vec<String> {
    vec![utc()]
}
fn owner() -> String {
    "owner".into()
}
fn default_for() -> u64 {
    10
}
fn default_swarm_for() -> u64 {
    15
}

impl Scenario {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let s: Scenario = toml::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    /// Every node name, in start order: `{region}-{n}`.
    pub fn nodes(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for r in &self.regions {
            for i in 1..=r.nodes {
                out.push((format!("{}-{i}", r.name), r.name.clone()));
            }
        }
        out
    }

    pub fn start(&self) -> anyhow::Result<crate::core::Timestamp> {
        Ok(chrono::DateTime::parse_from_rfc3339(&self.start)
            .context("start: not an RFC 3339 instant")?
            .with_timezone(&chrono::Utc))
    }

    fn validate(&self) -> anyhow::Result<()> {
        use crate::core::ids::validate_id;
        self.start()?;
        ensure!(
            (1..=DURATION_S_MAX).contains(&(self.duration_s + self.converge_s)),
            "duration_s + converge_s: must be between 1 and {DURATION_S_MAX}"
        );
        ensure!(
            (1..=crate::core::owner::SHARDS_MAX).contains(&self.shards),
            "shards: must be between 1 and {}",
            crate::core::owner::SHARDS_MAX
        );
        ensure!(
            (2..=600).contains(&self.lease_ttl_s),
            "lease_ttl_s: must be between 2 and 600"
        );
        ensure!(
            (1..=60_000).contains(&self.max_skew_ms),
            "max_skew_ms: must be between 1 and 60000"
        );
        ensure!(
            (1..=3600).contains(&self.visibility_timeout_s),
            "visibility_timeout_s: must be between 1 and 3600"
        );
        ensure!(
            (1..=4096).contains(&self.workers),
            "workers: must be between 1 and 4096"
        );
        ensure!(
            (1..=REGIONS_MAX).contains(&self.regions.len()),
            "regions: between 1 and {REGIONS_MAX}"
        );
        for (i, r) in self.regions.iter().enumerate() {
            validate_id(&format!("regions[{i}].name"), &r.name)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            ensure!(
                (1..=NODES_PER_REGION_MAX).contains(&r.nodes),
                "regions[{i}].nodes: between 1 and {NODES_PER_REGION_MAX}"
            );
        }
        let region_known = |r: &str| self.regions.iter().any(|x| x.name == r);
        for (i, j) in self.jobs.iter().enumerate() {
            validate_id(&format!("jobs[{i}].id"), &j.id).map_err(|e| anyhow::anyhow!("{e}"))?;
            ensure!(
                region_known(&j.region),
                "jobs[{i}].region: {:?} is not a region of the scenario",
                j.region
            );
            ensure!(
                j.every_s.is_some() != j.cron.is_some(),
                "jobs[{i}]: give exactly one of every_s and cron"
            );
        }
        let generated = self.generate.as_ref().map_or(0, |g| g.count);
        ensure!(
            self.jobs.len() + generated <= JOBS_MAX,
            "jobs: at most {JOBS_MAX} in all"
        );
        if let Some(g) = &self.generate {
            ensure!(
                !(g.every_s.is_empty() && g.cron.is_empty()),
                "generate: give every_s or cron to draw schedules from"
            );
            ensure!(!g.zones.is_empty(), "generate.zones: empty");
        }
        ensure!(
            (0.0..=1.0).contains(&self.target.failure_rate),
            "target.failure_rate: between 0 and 1"
        );
        if let Some([lo, hi]) = self.target.latency_ms {
            ensure!(lo <= hi, "target.latency_ms: [min, max] with min <= max");
        }
        ensure!(
            self.faults.len() <= FAULTS_MAX,
            "faults: at most {FAULTS_MAX}"
        );
        let nodes = self.nodes();
        for (i, f) in self.faults.iter().enumerate() {
            ensure!(
                f.at_s < self.duration_s,
                "faults[{i}].at_s: must fall in the chaos phase (< duration_s)"
            );
            if f.kind == FaultKind::RegionOutage {
                match &f.region {
                    Some(r) if region_known(r) => {}
                    _ => bail!("faults[{i}].region: a region of the scenario is required"),
                }
            } else if !matches!(f.node.as_str(), "owner" | "any")
                && !nodes.iter().any(|(n, _)| *n == f.node)
                && f.kind != FaultKind::Brownout
            {
                bail!(
                    "faults[{i}].node: {:?} is not a node (nodes are named REGION-N)",
                    f.node
                );
            }
            ensure!(
                (0.0..=1.0).contains(&f.rate),
                "faults[{i}].rate: between 0 and 1"
            );
        }
        if let Some(s) = &self.swarm {
            ensure!(s.faults <= FAULTS_MAX, "swarm.faults: at most {FAULTS_MAX}");
            ensure!(s.for_s_max >= 1, "swarm.for_s_max: at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
name = "t"
duration_s = 60
[[regions]]
name = "us-east"
nodes = 2
[[jobs]]
id = "a"
region = "us-east"
every_s = 1
"#;

    #[test]
    fn a_minimal_scenario_parses_with_defaults() {
        let s = Scenario::parse(MIN).unwrap();
        assert_eq!(s.lease_ttl_s, 3);
        assert_eq!(s.converge_s, 30);
        assert_eq!(
            s.nodes(),
            vec![
                ("us-east-1".to_string(), "us-east".to_string()),
                ("us-east-2".to_string(), "us-east".to_string())
            ]
        );
    }

    #[test]
    fn errors_name_the_field() {
        let bad = MIN.replace("region = \"us-east\"", "region = \"mars\"");
        let e = format!("{:#}", Scenario::parse(&bad).unwrap_err());
        assert!(e.contains("jobs[0].region"), "{e}");
        let bad = format!("{MIN}\n[[faults]]\nat_s = 99\nkind = \"crash\"\n");
        let e = format!("{:#}", Scenario::parse(&bad).unwrap_err());
        assert!(e.contains("faults[0].at_s"), "{e}");
        let bad = MIN.replace("duration_s = 60", "duration_s = 60\nbogus = 1");
        assert!(Scenario::parse(&bad).is_err());
    }
}
