//! Test harness for mesh mode: a real etcd and a real Redis per test, several real
//! `meridian serve --etcd ... --redis ...` nodes on loopback, each with its own data dir
//! and its log in a file; the cluster status read through the `meridian` CLI as JSON;
//! jobs that append one line per attempt to a shared file; and the accounting that
//! holds the file against the run records (no firing twice, none silently lost).
//!
//! Must not decide anything for the product: it only starts processes, sends signals
//! to the processes it started (by PID), reads files and calls the public API and CLI.
#![allow(dead_code, clippy::disallowed_methods)] // tests measure against the real clock

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use meridian::api::pb;
use meridian::api::pb::scheduler_client::SchedulerClient;
use serde_json::Value;
use tonic::transport::Channel;

use super::Server;
use super::etcd::Etcd;
use super::process::log_tail;
use super::redis::Redis;

/// How long a node may take to print its address.
const READY_WITHIN_MAX: Duration = Duration::from_secs(30);
/// How long one CLI call may take.
const CLI_WITHIN_MAX: Duration = Duration::from_secs(15);
/// Bytes of each node's log printed when a test fails.
const LOG_TAIL_BYTES: usize = 2000;

/// The `meridian` binary under test.
pub fn meridian_bin() -> &'static str {
    env!("CARGO_BIN_EXE_meridian")
}

/// One `meridian serve` of the mesh.
pub struct Node {
    pub name: String,
    pub regions: Vec<String>,
    /// None once killed (SIGKILL or SIGTERM).
    pub server: Option<Server>,
    pub log: PathBuf,
    pub endpoint: String,
    pub pid: i32,
    stopped: bool,
}

impl Node {
    pub fn alive(&self) -> bool {
        self.server.is_some()
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(s) = self.server.take() {
            if self.stopped {
                unsafe { libc::kill(self.pid, libc::SIGCONT) };
            }
            s.kill9();
        }
    }

    /// SIGSTOP: the process freezes with its sockets open (a paused owner).
    pub fn sigstop(&mut self) {
        assert!(self.server.is_some(), "{} is running", self.name);
        unsafe { libc::kill(self.pid, libc::SIGSTOP) };
        self.stopped = true;
    }

    /// SIGCONT after `sigstop`.
    pub fn sigcont(&mut self) {
        unsafe { libc::kill(self.pid, libc::SIGCONT) };
        self.stopped = false;
    }

    /// SIGTERM and wait (bounded); the exit code.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        if self.stopped {
            self.sigcont();
        }
        self.server.take().and_then(|s| s.terminate(within))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn client(&self) -> SchedulerClient<Channel> {
        connect(&self.endpoint).await
    }
}

/// A node spawned but not yet known to be listening.
struct Spawned {
    name: String,
    regions: Vec<String>,
    child: Child,
    log: PathBuf,
    addr: mpsc::Receiver<String>,
}

impl Spawned {
    fn wait(self) -> Node {
        let addr = match self.addr.recv_timeout(READY_WITHIN_MAX) {
            Ok(a) => a,
            Err(e) => {
                let mut child = self.child;
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                let status = child.wait();
                panic!(
                    "node {} did not print its address ({e:?}, {status:?}); log tail:\n{}",
                    self.name,
                    log_tail(&self.log)
                );
            }
        };
        let pid = self.child.id() as i32;
        let server = Server {
            child: self.child,
            addr: addr.clone(),
        };
        Node {
            name: self.name,
            regions: self.regions,
            server: Some(server),
            log: self.log,
            endpoint: format!("http://{addr}"),
            pid,
            stopped: false,
        }
    }
}

/// etcd, Redis and the nodes of one test's mesh; every process is killed on drop, and
/// when the test is failing the nodes' log tails are printed and the temp dir kept.
pub struct Mesh {
    pub etcd: Etcd,
    pub redis: Redis,
    pub cluster: String,
    pub shards: u32,
    pub lease_ttl: Duration,
    /// Extra `serve` flags of every node started from now on.
    pub node_args: Vec<String>,
    pub nodes: Vec<Node>,
    dir: Option<tempfile::TempDir>,
}

/// How long a dispatch held by a dead node waits before another node of its region
/// takes it over: short, so that what a killed node held is redelivered (and
/// accounted for) within a test's time.
pub const VISIBILITY_TIMEOUT_S: u64 = 5;

impl Mesh {
    /// Start a fresh etcd and Redis for this test (blocking, bounded by the harnesses).
    pub fn start(test: &str, shards: u32, lease_ttl: Duration) -> Mesh {
        let dir = tempfile::Builder::new()
            .prefix(&format!("meridian-mesh-{test}-"))
            .tempdir()
            .expect("temp dir for the mesh");
        let etcd = Etcd::start();
        let redis = Redis::start();
        Mesh {
            etcd,
            redis,
            cluster: format!("{test}-{}", std::process::id()),
            shards,
            lease_ttl,
            node_args: vec![
                "--visibility-timeout-s".into(),
                VISIBILITY_TIMEOUT_S.to_string(),
            ],
            nodes: Vec::new(),
            dir: Some(dir),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("mesh dir").path()
    }

    /// A file in the mesh's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    fn spawn(&self, name: &str, regions: &[&str]) -> Spawned {
        let data = self.path(&format!("data-{name}"));
        let log = self.path(&format!("{name}.log"));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("node log file");
        let mut cmd = Command::new(meridian_bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(["--node", name]);
        for r in regions {
            cmd.args(["--region", r]);
        }
        cmd.args(["--etcd", &self.etcd.endpoint()])
            .args(["--redis", &self.redis.url()])
            .args(["--cluster", &self.cluster])
            .args(["--shards", &self.shards.to_string()])
            .args(["--lease-ttl-s", &self.lease_ttl.as_secs().to_string()])
            .args(&self.node_args)
            .env("MERIDIAN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        let mut child = cmd.spawn().expect("spawn meridian serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // Keeps draining stdout after the address line so the node never blocks on it.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(addr) = line.strip_prefix("meridian listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        Spawned {
            name: name.to_string(),
            regions: regions.iter().map(|r| r.to_string()).collect(),
            child,
            log,
            addr: rx,
        }
    }

    /// Start nodes at once (`(name, regions)`), then wait until each listens.
    pub fn start_nodes(&mut self, specs: &[(&str, &[&str])]) {
        let spawned: Vec<Spawned> = specs.iter().map(|(n, r)| self.spawn(n, r)).collect();
        for s in spawned {
            let node = s.wait();
            eprintln!(
                "[{}] node {} ({}) pid {} at {}",
                self.cluster,
                node.name,
                node.regions.join(","),
                node.pid,
                node.endpoint
            );
            self.nodes.push(node);
        }
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    pub fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    pub fn endpoint(&self, name: &str) -> String {
        self.node(name).endpoint.clone()
    }

    /// The cluster status as seen through `via` (None when the CLI fails).
    pub async fn status(&self, via: &str) -> Option<ClusterStatus> {
        cluster_status(&self.endpoint(via)).await
    }

    /// Poll the status through `via` every 100 ms until `check` holds (bounded); the
    /// status and when it first held.
    pub async fn wait_status(
        &self,
        via: &str,
        within: Duration,
        mut check: impl FnMut(&ClusterStatus) -> bool,
    ) -> Option<(ClusterStatus, Instant, DateTime<Utc>)> {
        let deadline = Instant::now() + within;
        let endpoint = self.endpoint(via);
        loop {
            if let Some(s) = cluster_status(&endpoint).await
                && check(&s)
            {
                return Some((s, Instant::now(), Utc::now()));
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait (bounded) until `shard` has an owner; its name and epoch.
    pub async fn wait_owner(&self, via: &str, shard: u64, within: Duration) -> (String, u64) {
        let (s, _, _) = self
            .wait_status(via, within, |s| s.owner(shard).is_some())
            .await
            .unwrap_or_else(|| panic!("shard {shard} got an owner within {within:?}"));
        s.owner(shard).expect("checked")
    }

    /// Print every node's log tail, and the panics in it (for a failing test).
    pub fn dump_logs(&self) {
        for n in &self.nodes {
            let text = n.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let mut panics: BTreeMap<String, usize> = BTreeMap::new();
            for (i, l) in lines.iter().enumerate() {
                if let Some(at) = l.find("panicked at") {
                    let what = format!("{} {}", &l[at..], lines.get(i + 1).unwrap_or(&""));
                    *panics.entry(what).or_insert(0) += 1;
                }
            }
            eprintln!(
                "----- {} log ({}): panics {panics:#?}; tail:\n{}",
                n.name,
                n.log.display(),
                tail(&text, LOG_TAIL_BYTES)
            );
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill9();
        }
        if std::thread::panicking() {
            self.dump_logs();
            if let Some(dir) = self.dir.take() {
                eprintln!("[{}] kept {}", self.cluster, dir.keep().display());
            }
        }
    }
}

pub fn tail(text: &str, bytes: usize) -> &str {
    let mut start = text.len().saturating_sub(bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Connect a gRPC client (bounded).
pub async fn connect(endpoint: &str) -> SchedulerClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match SchedulerClient::connect(endpoint.to_string()).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("connect {endpoint}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

// ------------------------------------------------------------------ CLI

/// Run the `meridian` CLI (bounded); stdout on exit 0, else why.
pub async fn cli(args: &[&str]) -> Result<String, String> {
    let child = tokio::process::Command::new(meridian_bin())
        .args(args)
        .env("MERIDIAN_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("spawn meridian: {e}"))?;
    let out = tokio::time::timeout(CLI_WITHIN_MAX, child.wait_with_output())
        .await
        .map_err(|_| format!("meridian {args:?} took over {CLI_WITHIN_MAX:?}"))?
        .map_err(|e| format!("meridian {args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "meridian {args:?} exited {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// Run the CLI with `--output json` against `endpoint` and parse its stdout.
pub async fn cli_json(endpoint: &str, args: &[&str]) -> Result<Value, String> {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--endpoint", endpoint, "--output", "json"]);
    let out = cli(&all).await?;
    serde_json::from_str(&out).map_err(|e| format!("meridian {args:?}: not JSON ({e}): {out}"))
}

/// A JSON number or a string holding one.
pub fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

/// `meridian cluster status --output json`, as seen through one node.
#[derive(Clone, Debug)]
pub struct ClusterStatus {
    pub raw: Value,
}

/// `meridian cluster status` through `endpoint` (None when the CLI fails).
pub async fn cluster_status(endpoint: &str) -> Option<ClusterStatus> {
    cli_json(endpoint, &["cluster", "status"])
        .await
        .ok()
        .map(|raw| ClusterStatus { raw })
}

impl ClusterStatus {
    /// Every shard listed: (shard, owner if any, epoch).
    pub fn shards(&self) -> Vec<(u64, Option<String>, u64)> {
        let Some(shards) = self.raw.get("shards").and_then(Value::as_array) else {
            return Vec::new();
        };
        shards
            .iter()
            .map(|s| {
                let shard = s.get("shard").and_then(as_u64).unwrap_or(u64::MAX);
                let node = s
                    .get("node")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .map(str::to_string);
                let epoch = s.get("epoch").and_then(as_u64).unwrap_or(0);
                (shard, node, epoch)
            })
            .collect()
    }

    /// The owner of `shard` and its epoch.
    pub fn owner(&self, shard: u64) -> Option<(String, u64)> {
        self.shards()
            .into_iter()
            .find(|(s, n, _)| *s == shard && n.is_some())
            .map(|(_, n, e)| (n.expect("filtered"), e))
    }

    /// How many shards each node owns.
    pub fn owned_by_node(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (_, n, _) in self.shards() {
            if let Some(n) = n {
                *out.entry(n).or_insert(0) += 1;
            }
        }
        out
    }

    /// Whether `region` is listed live (None when not listed).
    pub fn region_live(&self, region: &str) -> Option<bool> {
        self.raw
            .get("regions")?
            .as_array()?
            .iter()
            .find(|r| r.get("name").and_then(Value::as_str) == Some(region))?
            .get("live")?
            .as_bool()
    }

    /// A one-line summary for the test log.
    pub fn brief(&self) -> String {
        let shards: Vec<String> = self
            .shards()
            .iter()
            .map(|(s, n, e)| format!("{s}:{}@{e}", n.as_deref().unwrap_or("-")))
            .collect();
        let regions: Vec<String> = self
            .raw
            .get("regions")
            .and_then(Value::as_array)
            .map(|rs| {
                rs.iter()
                    .map(|r| {
                        format!(
                            "{}={}",
                            r.get("name").and_then(Value::as_str).unwrap_or("?"),
                            r.get("live").map(Value::to_string).unwrap_or_default()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        format!(
            "shards [{}] regions [{}]",
            shards.join(" "),
            regions.join(" ")
        )
    }
}

/// `refused_stale_epoch` summed over the regions of `meridian status` through one node
/// (None when the CLI fails or the field is absent).
pub async fn refused_stale_epoch(endpoint: &str) -> Option<u64> {
    let v = cli_json(endpoint, &["status"]).await.ok()?;
    let regions = v.get("region_status")?.as_array()?;
    let mut sum = 0;
    for r in regions {
        sum += r.get("refused_stale_epoch").and_then(as_u64)?;
    }
    Some(sum)
}

// ------------------------------------------------------------------ jobs

/// A job that fires every second from `anchor` until before `end`, each attempt
/// appending `FIRING_ID SCHEDULED_AT ATTEMPT JOB_ID WRITTEN_UNIX_S` to one file.
#[derive(Clone, Debug)]
pub struct TickJob {
    /// regions/R/jobs/ID
    pub name: String,
    pub id: String,
    pub region: String,
    pub uid: String,
    pub anchor: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// The shell line of a tick job: bash for `$EPOCHREALTIME` (no fork for the time).
pub const TICK_SCRIPT: &str = r#"echo "$MERIDIAN_FIRING_ID $MERIDIAN_SCHEDULED_AT $MERIDIAN_ATTEMPT $TICK_JOB $EPOCHREALTIME" >> "$OUT""#;

/// The next whole second at least `lead` from now.
pub fn whole_second_after(lead: Duration) -> DateTime<Utc> {
    let t = Utc::now() + chrono::Duration::from_std(lead).expect("small");
    DateTime::<Utc>::from_timestamp(t.timestamp() + 1, 0).expect("in range")
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// The proto of a tick job: overlap `allow` (late firings all run rather than being
/// skipped behind one another), no retry (so a firing id in the file twice is a
/// double execution, never a retry).
pub fn tick_job(id: &str, out: &Path, anchor: DateTime<Utc>, end: DateTime<Utc>) -> pb::Job {
    pb::Job {
        schedule: Some(pb::Schedule {
            kind: Some(pb::schedule::Kind::Interval(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            })),
            interval_anchor: Some(ts(anchor)),
            time_zone: "UTC".into(),
            end_time: Some(ts(end)),
            ..Default::default()
        }),
        policy: Some(pb::Policy {
            overlap: pb::Overlap::Allow as i32,
            retry: Some(pb::RetryPolicy {
                attempts_max: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        }),
        action: Some(pb::Action {
            kind: Some(pb::action::Kind::Command(pb::CommandAction {
                argv: vec!["bash".into(), "-c".into(), TICK_SCRIPT.into()],
                env: [
                    ("OUT".to_string(), out.display().to_string()),
                    ("TICK_JOB".to_string(), id.to_string()),
                ]
                .into(),
                working_dir: String::new(),
            })),
        }),
        ..Default::default()
    }
}

/// Create tick jobs `ids` in `region` through the node at `endpoint`.
pub async fn create_tick_jobs(
    endpoint: &str,
    region: &str,
    ids: &[String],
    out: &Path,
    anchor: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Vec<TickJob> {
    let mut client = connect(endpoint).await;
    let mut jobs = Vec::new();
    for id in ids {
        let created = client
            .create_job(pb::CreateJobRequest {
                parent: format!("regions/{region}"),
                job_id: id.clone(),
                job: Some(tick_job(id, out, anchor, end)),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("create {region}/{id} through {endpoint}: {e}"))
            .into_inner();
        jobs.push(TickJob {
            name: created.name,
            id: id.clone(),
            region: region.to_string(),
            uid: created.uid,
            anchor,
            end,
        });
    }
    jobs
}

/// Create a tick job through the CLI, with extra `jobs create` flags (e.g.
/// `--region-loss pause`).
pub async fn cli_create_tick_job(
    endpoint: &str,
    region: &str,
    id: &str,
    out: &Path,
    anchor: DateTime<Utc>,
    end: DateTime<Utc>,
    extra: &[&str],
) -> TickJob {
    let anchor_s = anchor.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let end_s = end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let out_env = format!("OUT={}", out.display());
    let job_env = format!("TICK_JOB={id}");
    let mut args = vec![
        "jobs",
        "create",
        "--region",
        region,
        "--id",
        id,
        "--every",
        "1s",
        "--anchor",
        &anchor_s,
        "--end",
        &end_s,
        "--overlap",
        "allow",
        "--attempts",
        "1",
        "--env",
        &out_env,
        "--env",
        &job_env,
    ];
    args.extend_from_slice(extra);
    // Global flags before `--`: everything after it is the command.
    args.extend(["--endpoint", endpoint, "--output", "json"]);
    args.extend(["--", "bash", "-c", TICK_SCRIPT]);
    let out = cli(&args)
        .await
        .unwrap_or_else(|e| panic!("create {region}/{id}: {e}"));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    TickJob {
        name: v["name"].as_str().expect("name").to_string(),
        id: id.to_string(),
        region: region.to_string(),
        uid: v["uid"].as_str().unwrap_or_default().to_string(),
        anchor,
        end,
    }
}

// ------------------------------------------------------------------ evidence

/// One line of the tick file: one attempt that ran.
#[derive(Clone, Debug)]
pub struct Fired {
    pub firing_id: String,
    pub scheduled: DateTime<Utc>,
    pub attempt: u32,
    pub job: String,
    /// When the line was written (Unix seconds).
    pub written_s: f64,
}

/// Every well-formed line of the tick file.
pub fn read_fired(path: &Path) -> Vec<Fired> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let firing_id = f.next()?.to_string();
            let scheduled = DateTime::parse_from_rfc3339(f.next()?)
                .ok()?
                .with_timezone(&Utc);
            let attempt = f.next()?.parse().ok()?;
            let job = f.next()?.to_string();
            let written_s = f.next()?.replace(',', ".").parse().ok()?;
            Some(Fired {
                firing_id,
                scheduled,
                attempt,
                job,
                written_s,
            })
        })
        .collect()
}

pub fn unix_s(t: DateTime<Utc>) -> f64 {
    t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9
}

/// Wait (bounded) until every job in `jobs` has at least `times` lines in the file.
pub async fn wait_all_fired(out: &Path, jobs: &[TickJob], times: usize, within: Duration) {
    let ok = super::eventually(within, || async {
        let fired = read_fired(out);
        let mut per_job: HashMap<&str, usize> = HashMap::new();
        for f in &fired {
            *per_job.entry(f.job.as_str()).or_insert(0) += 1;
        }
        jobs.iter()
            .all(|j| per_job.get(j.id.as_str()).copied().unwrap_or(0) >= times)
            .then_some(())
    })
    .await;
    if ok.is_none() {
        let fired = read_fired(out);
        let silent: Vec<&str> = jobs
            .iter()
            .filter(|j| fired.iter().filter(|f| f.job == j.id).count() < times)
            .map(|j| j.id.as_str())
            .collect();
        panic!(
            "within {within:?}, not every job fired {times} times; {} lines; short: {silent:?}",
            fired.len()
        );
    }
}

/// Sleep until the wall clock passes `t`.
pub async fn sleep_until(t: DateTime<Utc>) {
    let left = t - Utc::now();
    if let Ok(d) = left.to_std() {
        tokio::time::sleep(d).await;
    }
}

/// Every run of one job, through the node at `endpoint` (all pages).
pub async fn list_runs(client: &mut SchedulerClient<Channel>, job: &str) -> Vec<pb::Run> {
    let mut runs = Vec::new();
    let mut token = String::new();
    for _ in 0..100 {
        let page = client
            .list_runs(pb::ListRunsRequest {
                parent: job.to_string(),
                page_size: 1000,
                page_token: token,
            })
            .await
            .unwrap_or_else(|e| panic!("list runs of {job}: {e}"))
            .into_inner();
        runs.extend(page.runs);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    runs
}

/// The runs of every job, by job id.
pub async fn runs_of(endpoint: &str, jobs: &[TickJob]) -> HashMap<String, Vec<pb::Run>> {
    let mut client = connect(endpoint).await;
    let mut out = HashMap::new();
    for j in jobs {
        out.insert(j.id.clone(), list_runs(&mut client, &j.name).await);
    }
    out
}

pub fn pb_time(t: Option<&pb::Time>) -> Option<DateTime<Utc>> {
    let t = t?.utc.as_ref()?;
    DateTime::<Utc>::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
}

pub fn state_name(r: &pb::Run) -> String {
    pb::RunState::try_from(r.state).map_or_else(
        |_| r.state.to_string(),
        |s| {
            s.as_str_name()
                .trim_start_matches("RUN_STATE_")
                .to_ascii_lowercase()
        },
    )
}

/// An attempt with where and under which epoch it ran.
#[derive(Clone, Debug)]
pub struct AttemptSeen {
    pub job: String,
    pub scheduled: DateTime<Utc>,
    pub number: u32,
    pub node: String,
    /// The attempt's epoch, or the run's when the attempt has none.
    pub epoch: u64,
    pub start: Option<DateTime<Utc>>,
    pub status: i32,
}

pub fn attempts(runs: &HashMap<String, Vec<pb::Run>>) -> Vec<AttemptSeen> {
    let mut out = Vec::new();
    for (job, rs) in runs {
        for r in rs {
            let Some(scheduled) = pb_time(r.scheduled_time.as_ref()) else {
                continue;
            };
            for a in &r.attempts {
                out.push(AttemptSeen {
                    job: job.clone(),
                    scheduled,
                    number: a.number,
                    node: a.node.clone(),
                    epoch: if a.epoch != 0 { a.epoch } else { r.epoch },
                    start: pb_time(a.start_time.as_ref()),
                    status: a.status,
                });
            }
        }
    }
    out
}

/// What the file and the run records say about every firing due in a span.
#[derive(Debug, Default)]
pub struct Accounting {
    /// Firings due in the span.
    pub due: usize,
    /// Of those, how many ran (a line in the file).
    pub ran: usize,
    /// Not run, but recorded with a reason: count by state.
    pub recorded: BTreeMap<String, usize>,
    /// A few of those, with their reason and attempts (for the test log).
    pub recorded_samples: Vec<String>,
    /// (job, scheduled) or firing ids found more than once in the file.
    pub duplicates: Vec<String>,
    /// Due, not run, and not recorded with an accepted reason: job, time, what the
    /// record says (if any).
    pub lost: Vec<String>,
    /// Lines in the file with no run record.
    pub unrecorded: Vec<String>,
    /// Lines whose firing id differs from another line of the same firing.
    pub id_mismatch: Vec<String>,
}

impl Accounting {
    pub fn summary(&self) -> String {
        format!(
            "due {} ran {} recorded-not-run {:?} (e.g. {:?}) duplicates {} lost {} unrecorded {}",
            self.due,
            self.ran,
            self.recorded,
            self.recorded_samples,
            self.duplicates.len(),
            self.lost.len(),
            self.unrecorded.len()
        )
    }

    /// Panic (with details) on any duplicate, loss, or line without a record.
    pub fn assert_once_and_complete(&self) {
        assert!(
            self.duplicates.is_empty(),
            "ran twice: {:#?}\n{}",
            self.duplicates,
            self.summary()
        );
        assert!(
            self.lost.is_empty(),
            "silently lost: {:#?}\n{}",
            self.lost,
            self.summary()
        );
        assert!(
            self.unrecorded.is_empty(),
            "ran without a run record: {:#?}\n{}",
            self.unrecorded,
            self.summary()
        );
    }
}

/// States that account for a firing that did not run: guarantee 3's reasons.
const ACCOUNTED_STATES: [&str; 4] = ["missed", "skipped", "paused", "gated"];
/// States that account for a firing that did not run only when each of its attempts
/// was on a node the test killed or stopped (e.g. `worker_lost`: the node died before
/// the command started). On a node that lived, such a run is a lost firing.
const FAILED_STATES: [&str; 2] = ["failed", "dead_lettered"];

/// How many recorded-not-run firings an accounting keeps for the log.
const SAMPLES_MAX: usize = 5;

/// A run record in one line: state, reason, epoch, and each attempt's node, epoch,
/// status and summary.
pub fn describe(job: &str, t: DateTime<Utc>, r: &pb::Run) -> String {
    let attempts: Vec<String> = r
        .attempts
        .iter()
        .map(|a| {
            format!(
                "#{} on {} epoch {} status {} {:?}",
                a.number, a.node, a.epoch, a.status, a.summary
            )
        })
        .collect();
    format!(
        "{job} at {t}: {} reason {:?} epoch {} attempts {attempts:?}",
        state_name(r),
        r.reason,
        r.epoch
    )
}

/// Hold the file against the run records for every firing of `jobs` due before
/// `until` (and before each job's end). `faulted` names the nodes the test killed or
/// stopped: a failed attempt there may never have started its command.
pub fn account(
    jobs: &[TickJob],
    fired: &[Fired],
    runs: &HashMap<String, Vec<pb::Run>>,
    until: DateTime<Utc>,
    faulted: &[&str],
) -> Accounting {
    let mut acc = Accounting::default();
    let mut lines: HashMap<(String, DateTime<Utc>), Vec<&Fired>> = HashMap::new();
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for f in fired {
        lines
            .entry((f.job.clone(), f.scheduled))
            .or_default()
            .push(f);
        *by_id.entry(f.firing_id.as_str()).or_insert(0) += 1;
    }
    for (id, n) in &by_id {
        if *n > 1 {
            acc.duplicates.push(format!("firing id {id} ×{n}"));
        }
    }
    for ((job, t), ls) in &lines {
        if ls.len() > 1 {
            let ids: Vec<String> = ls
                .iter()
                .map(|f| format!("{}#{}", f.firing_id, f.attempt))
                .collect();
            acc.duplicates
                .push(format!("{job} at {t}: {} lines {ids:?}", ls.len()));
            if ls.iter().any(|f| f.firing_id != ls[0].firing_id) {
                acc.id_mismatch.push(format!("{job} at {t}: {ids:?}"));
            }
        }
    }
    for j in jobs {
        let empty = Vec::new();
        let rs = runs.get(&j.id).unwrap_or(&empty);
        let by_time: HashMap<DateTime<Utc>, &pb::Run> = rs
            .iter()
            .filter_map(|r| Some((pb_time(r.scheduled_time.as_ref())?, r)))
            .collect();
        // A record may stand for many missed or paused firings, up to `missed_until`.
        let spans: Vec<(DateTime<Utc>, DateTime<Utc>, &pb::Run)> = rs
            .iter()
            .filter(|r| r.missed_count > 1)
            .filter_map(|r| {
                Some((
                    pb_time(r.scheduled_time.as_ref())?,
                    pb_time(r.missed_until.as_ref())?,
                    r,
                ))
            })
            .collect();
        let stop = j.end.min(until);
        let mut t = j.anchor;
        while t < stop {
            acc.due += 1;
            let run = by_time.get(&t).copied().or_else(|| {
                spans
                    .iter()
                    .find(|(from, to, _)| *from <= t && t <= *to)
                    .map(|(_, _, r)| *r)
            });
            if lines.contains_key(&(j.id.clone(), t)) {
                acc.ran += 1;
                if run.is_none() {
                    acc.unrecorded.push(format!("{} at {t}", j.id));
                }
            } else {
                match run {
                    Some(r)
                        if ACCOUNTED_STATES.contains(&state_name(r).as_str())
                            || FAILED_STATES.contains(&state_name(r).as_str())
                                && !r.attempts.is_empty()
                                && r.attempts
                                    .iter()
                                    .all(|a| faulted.contains(&a.node.as_str())) =>
                    {
                        *acc.recorded.entry(state_name(r)).or_insert(0) += 1;
                        if acc.recorded_samples.len() < SAMPLES_MAX {
                            acc.recorded_samples.push(describe(&j.id, t, r));
                        }
                    }
                    Some(r) => acc.lost.push(format!("not run: {}", describe(&j.id, t, r))),
                    None => acc
                        .lost
                        .push(format!("{} at {t}: not run, no record", j.id)),
                }
            }
            t += chrono::Duration::seconds(1);
        }
    }
    acc.duplicates.sort();
    acc.lost.sort();
    acc
}

/// The run record that stands for `job`'s firing at `t`: its own, or one that stands
/// for many missed or paused firings up to `missed_until`.
pub fn run_at(rs: &[pb::Run], t: DateTime<Utc>) -> Option<&pb::Run> {
    rs.iter()
        .find(|r| pb_time(r.scheduled_time.as_ref()) == Some(t))
        .or_else(|| {
            rs.iter().find(|r| {
                r.missed_count > 1
                    && pb_time(r.scheduled_time.as_ref()).is_some_and(|from| from <= t)
                    && pb_time(r.missed_until.as_ref()).is_some_and(|to| t <= to)
            })
        })
}

/// How the firings due in [from, to) ended: ran late, or recorded by state.
pub fn fate_between(
    jobs: &[TickJob],
    fired: &[Fired],
    runs: &HashMap<String, Vec<pb::Run>>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for j in jobs {
        let empty = Vec::new();
        let rs = runs.get(&j.id).unwrap_or(&empty);
        let mut t = j.anchor;
        while t < j.end.min(to) {
            if t >= from {
                let key = if fired.iter().any(|f| f.job == j.id && f.scheduled == t) {
                    "ran".to_string()
                } else {
                    run_at(rs, t).map_or_else(|| "no record".to_string(), state_name)
                };
                *out.entry(key).or_insert(0) += 1;
            }
            t += chrono::Duration::seconds(1);
        }
    }
    out
}

/// Run a test body with an overall bound: a hung test fails instead of hanging CI.
pub async fn bounded<F: std::future::Future<Output = ()>>(within: Duration, body: F) {
    if tokio::time::timeout(within, body).await.is_err() {
        panic!("the test did not finish within {within:?}");
    }
}
