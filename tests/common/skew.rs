//! Test harness for the clock-skew tests (issue 4): `meridian serve` processes whose
//! wall clock is shifted by libfaketime (a fixed offset, or an offset file rewritten
//! while they run), the real etcd and Redis they mesh through, and a tiny HTTP/1.1
//! webhook target that records when each request arrived by the *test's* clock, which
//! no faking touches: the true time the run started.
//!
//! libfaketime is preloaded directly (`LD_PRELOAD`, `FAKETIME` or
//! `FAKETIME_TIMESTAMP_FILE`) rather than through the `faketime` wrapper, which forks:
//! killing the wrapper by PID would leave the node running. The monotonic clock is
//! never faked (`FAKETIME_DONT_FAKE_MONOTONIC=1`), so a node can tell a wall-clock jump
//! from elapsed time.
//!
//! Must not decide anything for the product: it only starts processes, kills the ones
//! it started (by PID), reads files and calls the public CLI (the helpers it shares
//! with the mesh tests live in `mesh.rs`).
#![allow(dead_code, clippy::disallowed_methods)] // tests measure against the real clock

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::etcd::Etcd;
#[allow(unused_imports)] // each test crate uses some of them
pub use super::mesh::{
    bounded, cli, cli_json, meridian_bin, sleep_until, tail, whole_second_after,
};
use super::process::log_tail;
use super::redis::Redis;

/// How long a node may take to print its address.
const READY_WITHIN_MAX: Duration = Duration::from_secs(30);
/// How long the webhook target waits for a request's head and body.
const REQUEST_WITHIN_MAX: Duration = Duration::from_secs(5);
/// Longest request head the webhook target accepts.
const HEAD_MAX: usize = 64 * 1024;
/// Bytes of each node's log printed when a test fails.
const LOG_TAIL_BYTES: usize = 3000;

/// Where Debian (and a local build) put libfaketime.
const FAKETIME_LIBS: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
];

/// The libfaketime shared object (`$MERIDIAN_TEST_LIBFAKETIME` first).
pub fn libfaketime() -> PathBuf {
    if let Ok(p) = std::env::var("MERIDIAN_TEST_LIBFAKETIME") {
        return PathBuf::from(p);
    }
    FAKETIME_LIBS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("libfaketime not found in {FAKETIME_LIBS:?} (Debian package `faketime`)")
        })
}

/// How a node's wall clock is shifted.
#[derive(Clone, Debug)]
pub enum Faking {
    /// Not at all.
    Real,
    /// A fixed libfaketime offset, e.g. `+5` or `-0.1` (seconds; beware that `m` means
    /// minutes to libfaketime).
    Fixed(String),
    /// An offset read from this file on every clock read (see [`OffsetFile`]).
    File(PathBuf),
}

/// A libfaketime offset file: rewrite it to step a running node's wall clock.
pub struct OffsetFile {
    pub path: PathBuf,
}

impl OffsetFile {
    pub fn create(path: PathBuf, offset: &str) -> OffsetFile {
        let f = OffsetFile { path };
        f.set(offset);
        f
    }

    /// Replace the offset atomically (a reader never sees a half-written file).
    pub fn set(&self, offset: &str) {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, format!("{offset}\n")).expect("write offset file");
        std::fs::rename(&tmp, &self.path).expect("rename offset file");
    }
}

/// One `meridian serve` process, killed on drop.
pub struct SkewNode {
    pub name: String,
    child: Option<Child>,
    pub addr: String,
    pub endpoint: String,
    pub pid: i32,
    pub log: PathBuf,
}

impl SkewNode {
    /// Spawn `meridian serve --listen 127.0.0.1:0 --data-dir DATA EXTRA...` with its
    /// clock faked as asked, its log in `log`; wait (bounded) for its address.
    pub fn spawn(
        name: &str,
        faking: &Faking,
        data_dir: &Path,
        extra: &[String],
        log: &Path,
    ) -> SkewNode {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("node log file");
        let mut cmd = Command::new(meridian_bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("MERIDIAN_LOG", "info")
            .env_remove("FAKETIME")
            .env_remove("FAKETIME_TIMESTAMP_FILE")
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        match faking {
            Faking::Real => {}
            Faking::Fixed(offset) => {
                cmd.env("LD_PRELOAD", libfaketime())
                    .env("FAKETIME", offset)
                    .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
            }
            Faking::File(path) => {
                cmd.env("LD_PRELOAD", libfaketime())
                    .env("FAKETIME_TIMESTAMP_FILE", path)
                    .env("FAKETIME_NO_CACHE", "1")
                    .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
            }
        }
        let mut child = cmd.spawn().expect("spawn meridian serve");
        let pid = child.id() as i32;
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
        let addr = match rx.recv_timeout(READY_WITHIN_MAX) {
            Ok(a) => a,
            Err(e) => {
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let status = child.wait();
                panic!(
                    "node {name} did not print its address ({e:?}, {status:?}); log tail:\n{}",
                    log_tail(log)
                );
            }
        };
        eprintln!("node {name} ({faking:?}) pid {pid} at {addr}");
        SkewNode {
            name: name.to_string(),
            child: Some(child),
            endpoint: format!("http://{addr}"),
            addr,
            pid,
            log: log.to_path_buf(),
        }
    }

    pub fn alive(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines of the log that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for SkewNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The node flags every mesh node of these tests gets (the brief's: one shard, a 2 s
/// lease, max skew 250 ms, resign after 3 s closed, 30 s grace at the gate).
pub const LEASE_TTL_S: u64 = 2;
pub const MAX_SKEW_MS: u64 = 250;
pub const RESIGN_AFTER_S: u64 = 3;
pub const GATE_GRACE_S: u64 = 30;
pub const REGION: &str = "us-east";

/// A real etcd and Redis and the mesh nodes of one test; every process is killed on
/// drop, and when the test is failing the nodes' log tails are printed and the temp
/// dir kept.
pub struct SkewMesh {
    pub etcd: Etcd,
    pub redis: Redis,
    pub cluster: String,
    pub nodes: Vec<SkewNode>,
    dir: Option<tempfile::TempDir>,
}

impl SkewMesh {
    pub fn start(test: &str) -> SkewMesh {
        let dir = tempfile::Builder::new()
            .prefix(&format!("meridian-skew-{test}-"))
            .tempdir()
            .expect("temp dir");
        SkewMesh {
            etcd: Etcd::start(),
            redis: Redis::start(),
            cluster: format!("{test}-{}", std::process::id()),
            nodes: Vec::new(),
            dir: Some(dir),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("mesh dir").path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// Start mesh node `name` in region us-east with its clock faked as asked.
    pub fn start_node(&mut self, name: &str, faking: Faking) {
        let args: Vec<String> = [
            "--node",
            name,
            "--region",
            REGION,
            "--etcd",
            &self.etcd.endpoint(),
            "--redis",
            &self.redis.url(),
            "--cluster",
            &self.cluster,
            "--shards",
            "1",
            "--lease-ttl-s",
            &LEASE_TTL_S.to_string(),
            "--max-skew-ms",
            &MAX_SKEW_MS.to_string(),
            "--clock-resign-after-s",
            &RESIGN_AFTER_S.to_string(),
            "--gate-grace-s",
            &GATE_GRACE_S.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let node = SkewNode::spawn(
            name,
            &faking,
            &self.path(&format!("data-{name}")),
            &args,
            &self.path(&format!("{name}.log")),
        );
        self.nodes.push(node);
    }

    pub fn node(&self, name: &str) -> &SkewNode {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    pub fn endpoint(&self, name: &str) -> String {
        self.node(name).endpoint.clone()
    }

    /// Poll the cluster status through `via` every 100 ms until `check` holds
    /// (bounded); the status then.
    pub async fn wait_status(
        &self,
        via: &str,
        within: Duration,
        check: impl FnMut(&Value) -> bool,
    ) -> Option<Value> {
        wait_cluster_status(&self.endpoint(via), within, check).await
    }

    pub fn dump_logs(&self) {
        for n in &self.nodes {
            eprintln!(
                "----- {} log ({}), tail:\n{}",
                n.name,
                n.log.display(),
                tail(&n.log_text(), LOG_TAIL_BYTES)
            );
        }
    }
}

impl Drop for SkewMesh {
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

// ------------------------------------------------------------------ CLI

/// `meridian cluster status --output json` through `endpoint` (None when it fails).
pub async fn cluster_status(endpoint: &str) -> Option<Value> {
    cli_json(endpoint, &["cluster", "status"]).await.ok()
}

/// `meridian status --output json` through `endpoint` (None when it fails).
pub async fn node_status(endpoint: &str) -> Option<Value> {
    cli_json(endpoint, &["status"]).await.ok()
}

/// Poll the cluster status every 100 ms until `check` holds (bounded).
pub async fn wait_cluster_status(
    endpoint: &str,
    within: Duration,
    mut check: impl FnMut(&Value) -> bool,
) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(s) = cluster_status(endpoint).await
            && check(&s)
        {
            return Some(s);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A JSON number or a string holding one.
pub fn as_i64(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str()?.parse().ok())
}

/// The owner of `shard` in a cluster status (None: unowned).
pub fn shard_owner(status: &Value, shard: u64) -> Option<String> {
    status
        .get("shards")?
        .as_array()?
        .iter()
        .find(|s| s.get("shard").and_then(as_i64) == Some(shard as i64))?
        .get("node")?
        .as_str()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// A node's `clock` object in a cluster status.
pub fn node_clock<'a>(status: &'a Value, node: &str) -> Option<&'a Value> {
    status
        .get("nodes")?
        .as_array()?
        .iter()
        .find(|n| n.get("node").and_then(Value::as_str) == Some(node))?
        .get("clock")
}

/// A node's gate (`open`/`closed`) in a cluster status.
pub fn node_gate(status: &Value, node: &str) -> Option<String> {
    node_clock(status, node)?
        .get("gate")?
        .as_str()
        .map(str::to_string)
}

/// A clock object in one line: gate, reason, offset and bound in ms, jumps.
pub fn clock_brief(clock: Option<&Value>) -> String {
    let Some(c) = clock else {
        return "no clock".into();
    };
    let ms = |k: &str| c.get(k).and_then(as_i64).map(|us| us as f64 / 1000.0);
    format!(
        "gate {} ({}) offset {:?} ms bound {:?} ms sources {} jumps {}",
        c.get("gate").and_then(Value::as_str).unwrap_or("?"),
        c.get("reason").and_then(Value::as_str).unwrap_or(""),
        ms("offset_us"),
        ms("bound_us"),
        c.get("sources").map(Value::to_string).unwrap_or_default(),
        c.get("jumps").map(Value::to_string).unwrap_or_default(),
    )
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Create an every-second job with an HTTP action through the CLI; its name.
pub async fn create_http_job(
    endpoint: &str,
    region: &str,
    id: &str,
    hook_url: &str,
    anchor: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
) -> String {
    let anchor_s = rfc3339(anchor);
    let end_s = end.map(rfc3339);
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
        "--overlap",
        "allow",
        "--http",
        hook_url,
    ];
    if let Some(e) = &end_s {
        args.extend(["--end", e]);
    }
    let v = cli_json(endpoint, &args)
        .await
        .unwrap_or_else(|e| panic!("create {region}/{id}: {e}"));
    v["name"].as_str().expect("job name").to_string()
}

/// Every run of a job (newest first), through the CLI.
pub async fn list_runs(endpoint: &str, job: &str) -> Vec<Value> {
    let v = cli_json(
        endpoint,
        &["runs", "list", "--job", job, "--limit", "100000"],
    )
    .await
    .unwrap_or_else(|e| panic!("runs list {job}: {e}"));
    v.as_array().cloned().unwrap_or_default()
}

/// A run's scheduled instant.
pub fn run_scheduled(r: &Value) -> Option<DateTime<Utc>> {
    parse_ts(r.get("scheduled_time")?.as_str()?)
}

pub fn run_state(r: &Value) -> String {
    r.get("state")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string()
}

/// The nodes a run's attempts ran on.
pub fn run_nodes(r: &Value) -> Vec<String> {
    r.get("attempts")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|a| a.get("node")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

// ------------------------------------------------------------------ webhook target

/// One request the webhook target received.
#[derive(Clone, Debug)]
pub struct Hit {
    /// The test's clock when the request's first bytes arrived.
    pub arrived: DateTime<Utc>,
    /// `idempotency-key`: the firing id.
    pub firing_id: String,
    /// `x-meridian-scheduled-at`.
    pub scheduled: Option<DateTime<Utc>>,
    /// `x-meridian-job`.
    pub job: String,
    /// `x-meridian-attempt`.
    pub attempt: String,
}

impl Hit {
    /// Arrival minus scheduled instant, in ms (negative: early).
    pub fn lateness_ms(&self) -> Option<f64> {
        let s = self.scheduled?;
        Some((self.arrived - s).num_microseconds()? as f64 / 1000.0)
    }
}

/// A tiny HTTP/1.1 server on 127.0.0.1:0 answering 200 to everything and recording
/// each request's arrival (by this process's clock) and Meridian's headers.
pub struct Hook {
    pub url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    task: JoinHandle<()>,
}

impl Hook {
    pub async fn start() -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind webhook target");
        let port = listener.local_addr().expect("local addr").port();
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let h = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    continue;
                };
                let h = h.clone();
                tokio::spawn(async move {
                    if let Ok(Some(hit)) =
                        tokio::time::timeout(REQUEST_WITHIN_MAX, serve_one(conn)).await
                    {
                        h.lock().expect("hits").push(hit);
                    }
                });
            }
        });
        Hook {
            url: format!("http://127.0.0.1:{port}/hook"),
            hits,
            task,
        }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("hits").clone()
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Read one request (head and body), answer 200 and close; the hit.
async fn serve_one(mut conn: TcpStream) -> Option<Hit> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut arrived = None;
    let head_end = loop {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        arrived.get_or_insert_with(Utc::now);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > HEAD_MAX {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    // Read the body too, so closing never resets a request still being sent.
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let _ = conn
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await;
    let _ = conn.shutdown().await;
    let get = |k: &str| headers.get(k).cloned().unwrap_or_default();
    Some(Hit {
        arrived: arrived?,
        firing_id: get("idempotency-key"),
        scheduled: headers
            .get("x-meridian-scheduled-at")
            .and_then(|s| parse_ts(s)),
        job: get("x-meridian-job"),
        attempt: get("x-meridian-attempt"),
    })
}

// ------------------------------------------------------------------ evidence

/// Firing ids that arrived more than once, with how often.
pub fn repeated_firings(hits: &[Hit]) -> Vec<String> {
    let mut n: HashMap<&str, usize> = HashMap::new();
    for h in hits {
        *n.entry(h.firing_id.as_str()).or_default() += 1;
    }
    let mut out: Vec<String> = n
        .into_iter()
        .filter(|(_, c)| *c > 1)
        .map(|(id, c)| format!("{id} ×{c}"))
        .collect();
    out.sort();
    out
}

/// (job, scheduled instant) pairs that arrived more than once.
pub fn repeated_instants(hits: &[Hit]) -> Vec<String> {
    let mut n: HashMap<(String, Option<DateTime<Utc>>), usize> = HashMap::new();
    for h in hits {
        *n.entry((h.job.clone(), h.scheduled)).or_default() += 1;
    }
    let mut out: Vec<String> = n
        .into_iter()
        .filter(|(_, c)| *c > 1)
        .map(|((j, t), c)| format!("{j} at {t:?} ×{c}"))
        .collect();
    out.sort();
    out
}

/// Requests that arrived before their scheduled instant (true time), or without one.
pub fn early_hits(hits: &[Hit]) -> Vec<String> {
    hits.iter()
        .filter(|h| h.scheduled.is_none_or(|s| h.arrived < s))
        .map(|h| {
            format!(
                "{} {} scheduled {:?} arrived {} ({:?} ms)",
                h.job,
                h.firing_id,
                h.scheduled,
                h.arrived,
                h.lateness_ms()
            )
        })
        .collect()
}

/// The hit of `job` (full name) scheduled at `t`.
pub fn hit_at<'a>(hits: &'a [Hit], job: &str, t: DateTime<Utc>) -> Option<&'a Hit> {
    hits.iter().find(|h| h.job == job && h.scheduled == Some(t))
}

/// p-th percentile (0..=100) of sorted values, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Lateness figures of hits, sorted, and a one-line summary.
pub fn lateness_summary(hits: &[&Hit]) -> (Vec<f64>, String) {
    let mut l: Vec<f64> = hits.iter().filter_map(|h| h.lateness_ms()).collect();
    l.sort_by(f64::total_cmp);
    let s = format!(
        "n {} min {:.3} ms p50 {:.3} ms p99 {:.3} ms max {:.3} ms",
        l.len(),
        l.first().copied().unwrap_or(f64::NAN),
        percentile(&l, 50.0),
        percentile(&l, 99.0),
        l.last().copied().unwrap_or(f64::NAN)
    );
    (l, s)
}

/// Statuses seen, with the test's clock when each was read.
type Seen = Arc<Mutex<Vec<(DateTime<Utc>, Value)>>>;

/// Polls the cluster status through `endpoint` every `every` in the background and
/// keeps what it saw: (test clock, status). Stopped on drop.
pub struct StatusLog {
    seen: Seen,
    task: JoinHandle<()>,
}

impl StatusLog {
    pub fn start(endpoint: String, every: Duration) -> StatusLog {
        let seen: Seen = Arc::default();
        let s = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Some(v) = cluster_status(&endpoint).await {
                    s.lock().expect("status log").push((Utc::now(), v));
                }
                tokio::time::sleep(every).await;
            }
        });
        StatusLog { seen, task }
    }

    pub fn seen(&self) -> Vec<(DateTime<Utc>, Value)> {
        self.seen.lock().expect("status log").clone()
    }
}

impl Drop for StatusLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}
