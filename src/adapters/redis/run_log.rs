//! The run log on Redis: idempotent claims fenced by epoch, exactly one start per
//! (firing, attempt), first end stands, only the latest attempt sets a run's state,
//! terminal runs never change, retention of the last N runs per job, the unfinished
//! index for recovery, and progress cursors. The same rules as the embedded store
//! (`adapters/embedded/store.rs`), checked by the shared contract suite
//! (`tests/contract_run_log.rs`).
//!
//! Every rule that reads and then writes runs inside one Lua script (`scripts/*.lua`,
//! sent with `EVALSHA`), so it is atomic and costs one round trip per batch. A run is a
//! hash `{p}:run:{firing}`:
//!
//! | field | value |
//! | --- | --- |
//! | `run` | the run as claimed (JSON, attempts left out); the fields below override it |
//! | `state`, `reason` | the run's state (snake case) and reason |
//! | `open` | `1` while not terminal, `0` after: the scripts' terminal check |
//! | `epoch` | `epoch20` of the claim, then of the latest start |
//! | `next`, `updated` | next attempt instant (JSON, or empty) and update time (JSON) |
//! | `latest` | the highest attempt number started (`0`: none) |
//! | `um` | the run's member in `{p}:unfinished` (empty once terminal at claim) |
//! | `job`, `jm` | the job uid, and the run's member in the job's indexes |
//! | `a:{n}` | attempt `n` as started (JSON) |
//! | `e:{n}` | attempt `n`'s end (JSON); written once (`HSETNX`): the first end stands |
//!
//! Attempts are fields of their own, so no script parses JSON: Lua only compares
//! strings and small integers, and every JSON value is made and read in Rust.
//!
//! Mesh-mode differences from the embedded store (which reads its own catalog):
//! - a start is refused `JobDeleted` only when the run record is gone (deleted by
//!   retention or by `delete_job_runs`); whether the job is paused, deleted or replaced
//!   in the catalog (etcd) is the caller's check, so `JobPaused` is never returned here;
//! - a job's cursor exists only once a claim advanced it (the embedded store sets it to
//!   the job's creation time when the job is created);
//! - a claim with a newer epoch raises the fence, so the log itself knows the newest
//!   owner; the embedded store raises it only with `bump_epoch`;
//! - the fence is per shard (`{p}:epoch:{shard}`): owners of different shards have
//!   unrelated epochs, and one shard's newer term must not fence another's claims. The
//!   port's `claim` has no shard and uses shard 0; `claim_in_shard` takes one.
//!
//! Durability: with `appendfsync always` a script's writes are on disk when Redis
//! answers. `record_end` only queues the end: one writer task applies queued ends in
//! order, up to `END_BATCH_MAX` per script call (one round trip and one fsync for many
//! ends), retrying while Redis is away. Every other write (claim, start, finish,
//! end_run) and `flush` first waits until the ends queued before it are applied, so
//! writes land in the order this process made them. Reads do not wait. Ends still
//! queued when the process dies are lost, and recovery records those attempts
//! `worker_lost`, as the port allows. A request that times out may still have been
//! applied: a retried start then answers `AlreadyStarted` and the attempt does not run
//! (recovery records it `worker_lost`), which keeps "at most once per attempt".
//!
//! Must not decide anything about schedules, and must not read the clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use redis::{Script, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tracing::{error, warn};
use uuid::Uuid;

use super::{Config, Connection, epoch20, instant20, parse_epoch20, parse_instant20, sortable_hex};
use crate::core::Timestamp;
use crate::core::ids::{Epoch, FiringId};
use crate::core::run::{Attempt, AttemptStatus, OUTPUT_TAIL_BYTES_MAX, Run, State};
use crate::ports::{AttemptEnd, AttemptStart, Claim, Error, Refusal, Result};

/// Runs read per script call when listing (a bounded amount of work inside Redis per
/// step, which blocks other clients while it runs).
pub const RANGE_PAGE_MAX: usize = 1_000;
/// Queued ends applied per script call.
pub const END_BATCH_MAX: usize = 1_000;
/// First and longest wait between tries of a batch of queued ends while Redis is away.
const END_RETRY_DELAY_MIN: std::time::Duration = std::time::Duration::from_millis(50);
const END_RETRY_DELAY_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Run log settings.
#[derive(Clone, Debug)]
pub struct RunLogOptions {
    /// Runs kept per job; older terminal runs are deleted as new ones arrive.
    pub runs_per_job_max: u64,
    /// Ends `record_end` holds before its callers wait (backpressure).
    pub end_queue_max: usize,
}

impl Default for RunLogOptions {
    fn default() -> Self {
        Self {
            runs_per_job_max: 100,
            end_queue_max: 65_536,
        }
    }
}

struct Scripts {
    claim: Script,
    start: Script,
    finish: Script,
    end_run: Script,
    range: Script,
    forget_job: Script,
}

/// The Redis run log. Cheap to clone.
#[derive(Clone)]
pub struct RunLog {
    conn: Connection,
    options: RunLogOptions,
    scripts: Arc<Scripts>,
    ends: Arc<EndQueue>,
}

/// An attempt's end as stored in `e:{n}`; merged into the attempt when read.
#[derive(Serialize, Deserialize)]
struct EndRecord {
    finished_at: Option<Timestamp>,
    status: AttemptStatus,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    http_status: Option<u16>,
    #[serde(default)]
    output_tail: String,
}

fn storage<E: std::fmt::Display>(e: E) -> Error {
    Error::Storage(e.to_string())
}

fn json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(storage)
}

fn unjson<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Storage(format!("redis run {what}: {e}")))
}

fn parse_state(s: &str) -> Result<State> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| Error::Storage(format!("redis run: bad state {s:?}")))
}

fn truncate_tail(s: &mut String) {
    if s.len() > OUTPUT_TAIL_BYTES_MAX {
        let mut cut = s.len() - OUTPUT_TAIL_BYTES_MAX;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        s.drain(..cut);
    }
}

/// The member of a run in its job's index: scheduled instant, then firing id, so byte
/// order is (scheduled_at, firing) order, as the embedded store's.
fn job_member(scheduled: Timestamp, firing: FiringId) -> String {
    format!("{}{}", sortable_hex(scheduled), firing.0.hyphenated())
}

/// The member of a run in the unfinished index: due instant, then firing id.
fn unfinished_member(run: &Run) -> String {
    format!("{}{}", sortable_hex(run.due_at), run.firing.0.hyphenated())
}

/// The hash fields of a run as claimed.
fn run_fields(run: &Run) -> Result<Vec<(String, String)>> {
    let open = !run.state.is_terminal();
    let mut base = run.clone();
    base.attempts.clear();
    let mut fields = vec![
        ("run".to_owned(), json(&base)?),
        ("state".to_owned(), run.state.as_str().to_owned()),
        ("open".to_owned(), if open { "1" } else { "0" }.to_owned()),
        ("epoch".to_owned(), epoch20(run.epoch)),
        ("reason".to_owned(), run.reason.clone()),
        (
            "next".to_owned(),
            match run.next_attempt_at {
                Some(t) => json(&t)?,
                None => String::new(),
            },
        ),
        ("updated".to_owned(), json(&run.update_time)?),
        ("job".to_owned(), run.job_uid.hyphenated().to_string()),
        ("jm".to_owned(), job_member(run.scheduled_at, run.firing)),
        (
            "latest".to_owned(),
            run.attempts.last().map_or(0, |a| a.number).to_string(),
        ),
        (
            "um".to_owned(),
            if open {
                unfinished_member(run)
            } else {
                String::new()
            },
        ),
    ];
    // Claims carry fresh runs, but a run with attempts (an import) keeps them.
    for a in &run.attempts {
        let (started, end) = split_attempt(a);
        fields.push((format!("a:{}", a.number), json(&started)?));
        if let Some(end) = end {
            fields.push((format!("e:{}", a.number), json(&end)?));
        }
    }
    Ok(fields)
}

/// An attempt as started, and its end if it has one.
fn split_attempt(a: &Attempt) -> (Attempt, Option<EndRecord>) {
    let end = a.status.map(|status| EndRecord {
        finished_at: a.finished_at,
        status,
        summary: a.summary.clone(),
        exit_code: a.exit_code,
        http_status: a.http_status,
        output_tail: a.output_tail.clone(),
    });
    let started = Attempt {
        finished_at: None,
        status: None,
        summary: String::new(),
        exit_code: None,
        http_status: None,
        output_tail: String::new(),
        ..a.clone()
    };
    (started, end)
}

/// A run from its hash; `None` for an empty hash (no such run).
fn decode_run(h: &HashMap<String, String>) -> Result<Option<Run>> {
    let Some(base) = h.get("run") else {
        return Ok(None);
    };
    let field = |name: &str| {
        h.get(name)
            .map(String::as_str)
            .ok_or_else(|| Error::Storage(format!("redis run: no field {name:?}")))
    };
    let mut run: Run = unjson("record", base)?;
    run.state = parse_state(field("state")?)?;
    run.epoch = parse_epoch20(field("epoch")?)?;
    run.reason = field("reason")?.to_owned();
    run.next_attempt_at = match field("next")? {
        "" => None,
        s => Some(unjson("next", s)?),
    };
    run.update_time = unjson("updated", field("updated")?)?;
    let mut attempts = Vec::new();
    for (k, v) in h {
        let Some(n) = k.strip_prefix("a:") else {
            continue;
        };
        let mut a: Attempt = unjson("attempt", v)?;
        if let Some(e) = h.get(&format!("e:{n}")) {
            let e: EndRecord = unjson("attempt end", e)?;
            a.finished_at = e.finished_at;
            a.status = Some(e.status);
            a.summary = e.summary;
            a.exit_code = e.exit_code;
            a.http_status = e.http_status;
            a.output_tail = e.output_tail;
        }
        attempts.push(a);
    }
    attempts.sort_by_key(|a| a.number);
    run.attempts = attempts;
    Ok(Some(run))
}

/// A flat field/value array (`HGETALL` inside a script) as a map.
fn hash_of(v: Value) -> Result<HashMap<String, String>> {
    let items = match v {
        Value::Array(items) => items,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        Value::Nil => Vec::new(),
        other => return Err(Error::Storage(format!("redis: not a hash: {other:?}"))),
    };
    let mut out = HashMap::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.insert(text(k)?, text(v)?);
    }
    Ok(out)
}

fn text(v: Value) -> Result<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).map_err(storage),
        Value::SimpleString(s) => Ok(s),
        Value::Int(i) => Ok(i.to_string()),
        other => Err(Error::Storage(format!("redis: not a string: {other:?}"))),
    }
}

/// A script's `{status, ...}` answer.
fn status_of(v: Value) -> Result<(String, std::vec::IntoIter<Value>)> {
    let Value::Array(items) = v else {
        return Err(Error::Storage(format!("redis: unexpected answer {v:?}")));
    };
    let mut it = items.into_iter();
    let status = text(
        it.next()
            .ok_or_else(|| Error::Storage("redis: empty answer".into()))?,
    )?;
    Ok((status, it))
}

/// One end as the finish script takes it: firing, attempt number, the end (JSON),
/// next state, whether it is open, next attempt instant, whether it sets the reason,
/// the reason, finished_at.
fn end_args(firing: FiringId, mut e: AttemptEnd) -> Result<[String; 9]> {
    truncate_tail(&mut e.output_tail);
    let sets_reason = e.next_state.is_terminal() && e.next_state != State::Succeeded;
    let end = EndRecord {
        finished_at: Some(e.finished_at),
        status: e.status,
        summary: e.summary,
        exit_code: e.exit_code,
        http_status: e.http_status,
        output_tail: e.output_tail,
    };
    Ok([
        firing.0.hyphenated().to_string(),
        e.number.to_string(),
        json(&end)?,
        e.next_state.as_str().to_owned(),
        if e.next_state.is_terminal() { "0" } else { "1" }.to_owned(),
        match e.next_attempt_at {
            Some(t) => json(&t)?,
            None => String::new(),
        },
        if sets_reason { "1" } else { "0" }.to_owned(),
        end.summary,
        json(&e.finished_at)?,
    ])
}

/// Apply ends in order with one script call; per end, the run as recorded (with
/// `reply`) or why it was not recorded (`NotFound`, `Conflict`).
async fn apply_ends(
    conn: &Connection,
    script: &Script,
    ends: Vec<(FiringId, AttemptEnd)>,
    reply: bool,
) -> Result<Vec<Result<Option<Run>>>> {
    let n = ends.len();
    let mut args = Vec::with_capacity(3 + 9 * n);
    args.push(conn.base().to_owned());
    args.push(if reply { "1" } else { "0" }.to_owned());
    args.push(n.to_string());
    let mut who = Vec::with_capacity(n);
    for (firing, e) in ends {
        who.push((firing, e.number));
        args.extend(end_args(firing, e)?);
    }
    let key = conn.key("unfinished");
    let v: Value = conn
        .run("finish attempts", |mut c| async move {
            let mut inv = script.prepare_invoke();
            inv.key(&key).arg(&args[..]);
            inv.invoke_async(&mut c).await
        })
        .await?;
    let Value::Array(answers) = v else {
        return Err(Error::Storage(format!("redis finish: answer {v:?}")));
    };
    if answers.len() != n {
        return Err(Error::Storage(format!(
            "redis finish: {} answers for {n} ends",
            answers.len()
        )));
    }
    let mut out = Vec::with_capacity(n);
    for (answer, (firing, number)) in answers.into_iter().zip(who) {
        let (status, mut rest) = status_of(answer)?;
        out.push(match status.as_str() {
            "ok" if reply => match decode_run(&hash_of(rest.next().unwrap_or(Value::Nil))?)? {
                Some(run) => Ok(Some(run)),
                None => Err(Error::NotFound(format!("run {firing}"))),
            },
            "ok" => Ok(None),
            "missing" => Err(Error::NotFound(format!("run {firing}"))),
            "no_attempt" => Err(Error::Conflict(format!(
                "run {firing} has no attempt {number}"
            ))),
            other => return Err(Error::Storage(format!("redis finish: answer {other:?}"))),
        });
    }
    Ok(out)
}

/// Ends queued by `record_end`, applied in order by one writer task.
struct EndQueue {
    tx: mpsc::Sender<(FiringId, AttemptEnd)>,
    /// The receiving end, until the first `record_end` starts the writer with it.
    writer: std::sync::Mutex<Option<mpsc::Receiver<(FiringId, AttemptEnd)>>>,
    /// Ends queued so far.
    queued: AtomicU64,
    /// Ends applied (or given up on) so far, in queue order.
    applied: Arc<watch::Sender<u64>>,
}

/// The task that applies queued ends: a batch (up to `END_BATCH_MAX`) per script call.
struct EndWriter {
    conn: Connection,
    script: Script,
    applied: Arc<watch::Sender<u64>>,
}

impl EndWriter {
    async fn run(self, mut rx: mpsc::Receiver<(FiringId, AttemptEnd)>) {
        let mut batch = Vec::with_capacity(END_BATCH_MAX);
        while rx.recv_many(&mut batch, END_BATCH_MAX).await > 0 {
            let n = batch.len() as u64;
            let mut delay = END_RETRY_DELAY_MIN;
            loop {
                match apply_ends(&self.conn, &self.script, batch.clone(), false).await {
                    Ok(answers) => {
                        for e in answers.into_iter().filter_map(|a| a.err()) {
                            // As the embedded store does with a queued end it cannot
                            // apply: log it; recovery settles the attempt.
                            warn!(error = %e, "an attempt end was not recorded; recovery will settle it");
                        }
                        break;
                    }
                    // Redis is away: keep the ends (the bounded queue holds the rest
                    // back) unless nobody is left to care.
                    Err(e) if e.retryable() && !rx.is_closed() => {
                        warn!(error = %e, ends = n, "queued attempt ends wait for Redis");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(END_RETRY_DELAY_MAX);
                    }
                    Err(e) => {
                        error!(error = %e, ends = n, "queued attempt ends were not recorded; recovery will settle them");
                        break;
                    }
                }
            }
            batch.clear();
            self.applied.send_modify(|a| *a += n);
        }
    }
}

impl RunLog {
    /// A run log on the Redis at `config.url`, keys under `config.prefix`. Connects
    /// lazily: requests fail `Unavailable` until Redis answers.
    pub fn open(config: &Config, options: RunLogOptions) -> Result<Self> {
        let (tx, rx) = mpsc::channel(options.end_queue_max.max(1));
        Ok(Self {
            conn: Connection::open(config)?,
            ends: Arc::new(EndQueue {
                tx,
                writer: std::sync::Mutex::new(Some(rx)),
                queued: AtomicU64::new(0),
                applied: Arc::new(watch::channel(0).0),
            }),
            options,
            scripts: Arc::new(Scripts {
                claim: Script::new(include_str!("scripts/claim.lua")),
                start: Script::new(include_str!("scripts/start.lua")),
                finish: Script::new(include_str!("scripts/finish.lua")),
                end_run: Script::new(include_str!("scripts/end_run.lua")),
                range: Script::new(include_str!("scripts/range.lua")),
                forget_job: Script::new(include_str!("scripts/forget_job.lua")),
            }),
        })
    }

    /// `{p}:epoch:{shard}`: the shard's fence.
    fn epoch_key(&self, shard: u32) -> String {
        self.conn.key(&format!("epoch:{shard}"))
    }

    /// Whether the server persists every write before it answers (`appendonly yes`,
    /// `appendfsync always`), which the run log's guarantees assume. `None` when the
    /// server does not say (`CONFIG` disabled, as on some managed services).
    pub async fn persists_every_write(&self) -> Result<Option<bool>> {
        self.conn.persists_every_write().await
    }

    /// `claim` for the owner of `shard`: fenced against the newest epoch seen for that
    /// shard only.
    async fn claim_shard(&self, shard: u32, epoch: Epoch, claims: Vec<Claim>) -> Result<Vec<bool>> {
        self.barrier().await?;
        let n = claims.len();
        let mut args = vec![
            self.conn.base().to_owned(),
            epoch20(epoch),
            self.options.runs_per_job_max.to_string(),
            n.to_string(),
        ];
        for c in &claims {
            let run = &c.run;
            let fields = run_fields(run)?;
            args.push(run.firing.0.hyphenated().to_string());
            args.push(run.job_uid.hyphenated().to_string());
            args.push(job_member(run.scheduled_at, run.firing));
            args.push(if run.state.is_terminal() {
                String::new()
            } else {
                unfinished_member(run)
            });
            args.push(c.cursor.map(instant20).unwrap_or_default());
            args.push(fields.len().to_string());
            for (k, v) in fields {
                args.push(k);
                args.push(v);
            }
        }
        let keys = [
            self.epoch_key(shard),
            self.conn.key("cursors"),
            self.conn.key("unfinished"),
        ];
        let script = &self.scripts.claim;
        let v: Value = self
            .conn
            .run("claim", |mut c| async move {
                let mut inv = script.prepare_invoke();
                inv.key(&keys[..]).arg(&args[..]);
                inv.invoke_async(&mut c).await
            })
            .await?;
        let (status, rest) = status_of(v)?;
        match status.as_str() {
            "fenced" => {
                let current = rest
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::Storage("redis claim: no epoch".into()))?;
                Err(Error::Fenced {
                    stale: epoch,
                    current: parse_epoch20(&text(current)?)?,
                })
            }
            "ok" => {
                let out: Vec<bool> = rest
                    .map(|v| match v {
                        Value::Int(i) => Ok(i == 1),
                        other => Err(Error::Storage(format!("redis claim: answer {other:?}"))),
                    })
                    .collect::<Result<_>>()?;
                if out.len() != n {
                    return Err(Error::Storage(format!(
                        "redis claim: {} answers for {n} claims",
                        out.len()
                    )));
                }
                Ok(out)
            }
            other => Err(Error::Storage(format!("redis claim: answer {other:?}"))),
        }
    }

    fn run_key(&self, firing: FiringId) -> String {
        self.conn.key(&format!("run:{}", firing.0.hyphenated()))
    }

    /// The newest epoch this log has seen for `shard` (0 before any claim).
    pub async fn epoch(&self, shard: u32) -> Result<Epoch> {
        let key = self.epoch_key(shard);
        let v: Option<String> = self
            .conn
            .run("get epoch", |mut c| async move {
                redis::cmd("GET").arg(&key).query_async(&mut c).await
            })
            .await?;
        v.map_or(Ok(Epoch(0)), |s| parse_epoch20(&s))
    }

    /// Delete every run of a job, its run index and its progress cursor (what the
    /// embedded store's `delete_job` does to runs). Mesh mode keeps the catalog in etcd,
    /// so whoever deletes the job calls this after the catalog delete; a start racing
    /// with it is refused `JobDeleted` once the run is gone. Runs in steps of
    /// `RANGE_PAGE_MAX` runs, each atomic.
    async fn forget_job(&self, job_uid: Uuid) -> Result<()> {
        let uid = job_uid.hyphenated().to_string();
        let keys = [
            self.conn.key(&format!("runs:{uid}")),
            self.conn.key("unfinished"),
            self.conn.key("cursors"),
            self.conn.key(&format!("done:{uid}")),
        ];
        let args = [self.conn.base().to_owned(), uid, RANGE_PAGE_MAX.to_string()];
        loop {
            let script = &self.scripts.forget_job;
            let (keys, args) = (&keys, &args);
            let more: i64 = self
                .conn
                .run("delete job runs", |mut c| async move {
                    let mut inv = script.prepare_invoke();
                    inv.key(&keys[..]).arg(&args[..]);
                    inv.invoke_async(&mut c).await
                })
                .await?;
            if more == 0 {
                return Ok(());
            }
        }
    }

    /// Wait until every end this process queued (`record_end`) before the call is
    /// applied, so a write after it lands after them, as the port promises. Free when
    /// nothing is queued. Bounded by the request timeout (`Unavailable` after it: the
    /// writer cannot reach Redis).
    async fn barrier(&self) -> Result<()> {
        let target = self.ends.queued.load(Ordering::SeqCst);
        let mut applied = self.ends.applied.subscribe();
        if *applied.borrow() >= target {
            return Ok(());
        }
        match tokio::time::timeout(
            self.conn.request_timeout(),
            applied.wait_for(|&a| a >= target),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::Unavailable(
                "redis run log: the attempt-end writer stopped".into(),
            )),
            Err(_) => Err(Error::Unavailable(format!(
                "redis run log: queued attempt ends not applied within {:?}",
                self.conn.request_timeout()
            ))),
        }
    }

    /// Start the writer of queued ends, once, on the caller's runtime.
    fn ensure_writer(&self) {
        let parts = self
            .ends
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(rx) = parts {
            let writer = EndWriter {
                conn: self.conn.clone(),
                script: self.scripts.finish.clone(),
                applied: self.ends.applied.clone(),
            };
            tokio::spawn(writer.run(rx));
        }
    }

    /// Runs through `index`, from `lo`/`hi` (lexicographic bounds in the order the
    /// range command takes them), up to `limit`, a page at a time; with `rev`, newest
    /// first. Each page is one consistent read.
    async fn range(
        &self,
        index: &str,
        rev: bool,
        mut bounds: (String, String),
        limit: usize,
    ) -> Result<Vec<Run>> {
        let mut out = Vec::new();
        while out.len() < limit {
            let page = (limit - out.len()).min(RANGE_PAGE_MAX);
            let args = [
                self.conn.base().to_owned(),
                if rev { "rev" } else { "fwd" }.to_owned(),
                bounds.0.clone(),
                bounds.1.clone(),
                page.to_string(),
            ];
            let script = &self.scripts.range;
            let v: Value = self
                .conn
                .run("list runs", |mut c| async move {
                    let mut inv = script.prepare_invoke();
                    inv.key(index).arg(&args[..]);
                    inv.invoke_async(&mut c).await
                })
                .await?;
            let Value::Array(items) = v else {
                return Err(Error::Storage(format!("redis list runs: answer {v:?}")));
            };
            let got = items.len() / 2;
            let mut last = None;
            let mut it = items.into_iter();
            while let (Some(m), Some(h)) = (it.next(), it.next()) {
                last = Some(text(m)?);
                if let Some(run) = decode_run(&hash_of(h)?)? {
                    out.push(run);
                }
            }
            let Some(last) = last else { break };
            // Continue strictly past the last member read (the first bound is the
            // one the walk moves: the upper one newest first, the lower one oldest first).
            bounds.0 = format!("({last}");
            if got < page {
                break;
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl crate::ports::RunLog for RunLog {
    async fn claim_in_shard(
        &self,
        shard: u32,
        epoch: Epoch,
        claims: Vec<Claim>,
    ) -> Result<Vec<bool>> {
        self.claim_shard(shard, epoch, claims).await
    }

    async fn delete_job_runs(&self, job_uid: Uuid) -> Result<()> {
        self.forget_job(job_uid).await
    }

    async fn cursors(&self) -> Result<Vec<(Uuid, Timestamp)>> {
        let key = self.conn.key("cursors");
        let all: HashMap<String, String> = self
            .conn
            .run("read cursors", |mut c| async move {
                redis::cmd("HGETALL").arg(&key).query_async(&mut c).await
            })
            .await?;
        all.into_iter()
            .map(|(uid, at)| {
                let uid = Uuid::parse_str(&uid)
                    .map_err(|e| Error::Storage(format!("redis cursor key {uid:?}: {e}")))?;
                Ok((uid, parse_instant20(&at)?))
            })
            .collect()
    }

    async fn cursor(&self, job_uid: Uuid) -> Result<Option<Timestamp>> {
        let key = self.conn.key("cursors");
        let field = job_uid.hyphenated().to_string();
        let v: Option<String> = self
            .conn
            .run("read cursor", |mut c| async move {
                redis::cmd("HGET")
                    .arg(&key)
                    .arg(&field)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        v.map(|s| parse_instant20(&s)).transpose()
    }

    async fn start_attempts(
        &self,
        starts: Vec<AttemptStart>,
    ) -> Result<Vec<std::result::Result<(), Refusal>>> {
        if starts.is_empty() {
            return Ok(Vec::new());
        }
        self.barrier().await?;
        let n = starts.len();
        let mut args = Vec::with_capacity(2 + 5 * n);
        args.push(self.conn.base().to_owned());
        args.push(n.to_string());
        for s in &starts {
            let attempt = s.attempt();
            args.push(s.firing.0.hyphenated().to_string());
            args.push(epoch20(s.epoch));
            args.push(s.number.to_string());
            args.push(json(&s.started_at)?);
            args.push(json(&attempt)?);
        }
        let script = &self.scripts.start;
        let key = self.conn.key("unfinished");
        let answers: Vec<String> = self
            .conn
            .run("start attempts", |mut c| async move {
                let mut inv = script.prepare_invoke();
                // Declared for cluster routing: every key shares the hash tag.
                inv.key(&key).arg(&args[..]);
                inv.invoke_async(&mut c).await
            })
            .await?;
        if answers.len() != n {
            return Err(Error::Storage(format!(
                "redis start: {} answers for {n} starts",
                answers.len()
            )));
        }
        answers
            .into_iter()
            .map(|a| match a.as_str() {
                "ok" => Ok(Ok(())),
                "deleted" => Ok(Err(Refusal::JobDeleted)),
                "fenced" => Ok(Err(Refusal::Fenced)),
                "started" => Ok(Err(Refusal::AlreadyStarted)),
                other => match other.strip_prefix("terminal:") {
                    Some(state) => Ok(Err(Refusal::Terminal(parse_state(state)?))),
                    None => Err(Error::Storage(format!("redis start: answer {other:?}"))),
                },
            })
            .collect()
    }

    async fn finish_attempt(&self, firing: FiringId, end: AttemptEnd) -> Result<Run> {
        self.barrier().await?;
        apply_ends(&self.conn, &self.scripts.finish, vec![(firing, end)], true)
            .await?
            .pop()
            .unwrap_or_else(|| Err(Error::Storage("redis finish: no answer".into())))?
            .ok_or_else(|| Error::NotFound(format!("run {firing}")))
    }

    async fn record_end(&self, firing: FiringId, end: AttemptEnd) -> Result<()> {
        self.ensure_writer();
        // Counted before it is sent, so a barrier taken meanwhile waits for it.
        self.ends.queued.fetch_add(1, Ordering::SeqCst);
        if self.ends.tx.send((firing, end)).await.is_err() {
            // Only when the writer is gone; count it as applied so barriers go on.
            self.ends.applied.send_modify(|a| *a += 1);
            return Err(Error::Unavailable(
                "redis run log: the attempt-end writer stopped".into(),
            ));
        }
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        // Queued ends applied means durable: with `appendfsync always` Redis answers a
        // script after its writes are on disk.
        self.barrier().await
    }

    async fn end_run(&self, firing: FiringId, state: State, reason: String) -> Result<Run> {
        if !state.is_terminal() {
            return Err(Error::Conflict(format!(
                "end_run needs a terminal state, not {}",
                state.as_str()
            )));
        }
        self.barrier().await?;
        let keys = [self.run_key(firing), self.conn.key("unfinished")];
        let args = [
            state.as_str().to_owned(),
            reason,
            self.conn.base().to_owned(),
        ];
        let script = &self.scripts.end_run;
        let v: Value = self
            .conn
            .run("end run", |mut c| async move {
                let mut inv = script.prepare_invoke();
                inv.key(&keys[..]).arg(&args[..]);
                inv.invoke_async(&mut c).await
            })
            .await?;
        let (status, mut rest) = status_of(v)?;
        match status.as_str() {
            "ok" => decode_run(&hash_of(rest.next().unwrap_or(Value::Nil))?)?
                .ok_or_else(|| Error::NotFound(format!("run {firing}"))),
            "missing" => Err(Error::NotFound(format!("run {firing}"))),
            other => Err(Error::Storage(format!("redis end run: answer {other:?}"))),
        }
    }

    async fn get_run(&self, firing: FiringId) -> Result<Option<Run>> {
        let key = self.run_key(firing);
        let h: HashMap<String, String> = self
            .conn
            .run("get run", |mut c| async move {
                redis::cmd("HGETALL").arg(&key).query_async(&mut c).await
            })
            .await?;
        decode_run(&h)
    }

    async fn list_runs(
        &self,
        job_uid: Uuid,
        before: Option<(Timestamp, FiringId)>,
        limit: usize,
    ) -> Result<Vec<Run>> {
        let index = self.conn.key(&format!("runs:{}", job_uid.hyphenated()));
        let hi = match before {
            Some((t, f)) => format!("({}", job_member(t, f)),
            None => "+".to_owned(),
        };
        self.range(&index, true, (hi, "-".to_owned()), limit).await
    }

    async fn unfinished(&self) -> Result<Vec<Run>> {
        let index = self.conn.key("unfinished");
        self.range(&index, false, ("-".to_owned(), "+".to_owned()), usize::MAX)
            .await
    }
}
