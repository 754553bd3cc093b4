//! The job catalog in etcd, with its change feed.
//!
//! Jobs are JSON under `{p}/jobs/{region}/{job}`. Listing order (create time, name)
//! comes from two empty-valued index keys per job, one across regions and one within
//! the job's region, so a page is one range read plus one read transaction, whatever
//! the filter. Every write is one transaction: create compares "name absent" (and
//! "request id unused"), update and delete compare the job key's mod revision read just
//! before (and retry when it moved), so concurrent writers never half-apply. A create
//! also writes the job's progress cursor (its create time); a delete removes the job,
//! its index keys and its cursor (runs live in the run log, elsewhere).
//!
//! Request-id records (`{p}/requests/{id}`) are kept like the embedded store keeps
//! them: forever (one small key per create that carried an id).
//!
//! The feed: one background task watches `{p}/jobs/` and fans events out on a bounded
//! broadcast channel (a receiver that lags must reload, as the port says). It keeps a
//! small map of every job's name -> (uid, mod revision) (about 70 bytes a job) so that a
//! delete event can name the uid, and so that after a disconnect it resumes the watch
//! from the last revision it saw, and after that revision was compacted away it
//! re-reads everything and emits only the difference: `Deleted` for jobs gone (or
//! replaced under the same name), `Upserted` for jobs new or changed.
//!
//! Must not interpret jobs beyond their name, uid and revision.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use super::cursors::cursor_key;
use super::{Backoff, Connection, TXN_OPS_MAX, prefix_end, sortable_ns};
use crate::core::Timestamp;
use crate::core::ids::JobName;
use crate::core::job::Job;
use crate::ports::{CatalogEvent, Error, JobCursor, JobFilter, Result};

/// Tries of a read-compare-write (update, delete, create) that keeps losing races.
const WRITE_RETRIES_MAX: u32 = 8;

/// Catalog settings.
#[derive(Clone, Debug)]
pub struct CatalogOptions {
    /// Events buffered per watcher before it lags and must reload.
    pub watch_buffer_max: usize,
    /// First wait before re-opening a broken etcd watch; doubles up to `watch_retry_max`.
    pub watch_retry_min: Duration,
    pub watch_retry_max: Duration,
}

impl Default for CatalogOptions {
    fn default() -> Self {
        Self {
            watch_buffer_max: 65_536,
            watch_retry_min: Duration::from_millis(100),
            watch_retry_max: Duration::from_secs(2),
        }
    }
}

/// What the feed task has been through (for status and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchStats {
    /// Full re-reads after the watched revision was compacted.
    pub resyncs: u64,
    /// Times the etcd watch was re-opened after it broke.
    pub reconnects: u64,
    /// The last revision the feed has applied.
    pub revision: i64,
}

#[derive(Default)]
struct Stats {
    resyncs: AtomicU64,
    reconnects: AtomicU64,
    revision: AtomicI64,
}

struct Inner {
    conn: Connection,
    events: broadcast::Sender<CatalogEvent>,
    stats: Arc<Stats>,
    stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The etcd job catalog. Cheap to clone; the feed stops with the last clone.
#[derive(Clone)]
pub struct Catalog {
    inner: Arc<Inner>,
}

/// `{region}/{job}`: a job's key below `{p}/jobs/`.
fn name_key(n: &JobName) -> String {
    format!("{}/{}", n.region, n.job)
}

fn parse_name_key(s: &str) -> Result<JobName> {
    let (region, job) = s
        .split_once('/')
        .ok_or_else(|| Error::Storage(format!("bad job key {s:?}")))?;
    Ok(JobName::new(region, job))
}

fn decode(value: &[u8]) -> Result<Job> {
    serde_json::from_slice(value).map_err(|e| Error::Storage(format!("bad job record: {e}")))
}

fn encode(job: &Job) -> Result<Vec<u8>> {
    serde_json::to_vec(job).map_err(|e| Error::Storage(e.to_string()))
}

fn utf8(b: &[u8]) -> Result<&str> {
    std::str::from_utf8(b).map_err(|e| Error::Storage(e.to_string()))
}

impl Catalog {
    /// Read the catalog once (so the feed knows every job) and start the feed.
    pub async fn connect(conn: Connection, options: CatalogOptions) -> Result<Self> {
        let (events, _) = broadcast::channel(options.watch_buffer_max.max(1));
        let stats = Arc::new(Stats::default());
        let stop = CancellationToken::new();
        let mut feed = Feed {
            conn: conn.clone(),
            events: events.clone(),
            stats: stats.clone(),
            known: HashMap::new(),
            revision: 0,
            options,
        };
        feed.load(false).await?;
        tokio::spawn(feed.run(stop.clone()));
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                events,
                stats,
                stop,
            }),
        })
    }

    /// What the feed has been through.
    pub fn watch_stats(&self) -> WatchStats {
        let s = &self.inner.stats;
        WatchStats {
            resyncs: s.resyncs.load(Ordering::Relaxed),
            reconnects: s.reconnects.load(Ordering::Relaxed),
            revision: s.revision.load(Ordering::Relaxed),
        }
    }

    fn conn(&self) -> &Connection {
        &self.inner.conn
    }

    fn job_key(&self, n: &JobName) -> String {
        self.conn().key(&format!("jobs/{}", name_key(n)))
    }

    fn order_all_key(&self, t: Timestamp, n: &JobName) -> String {
        self.conn()
            .key(&format!("job_order/all/{}/{}", sortable_ns(t), name_key(n)))
    }

    fn order_in_key(&self, t: Timestamp, n: &JobName) -> String {
        self.conn().key(&format!(
            "job_order/in/{}/{}/{}",
            n.region,
            sortable_ns(t),
            n.job
        ))
    }

    fn request_key(&self, request_id: &str) -> String {
        self.conn().key(&format!("requests/{request_id}"))
    }

    async fn read(&self, n: &JobName) -> Result<Option<(Job, i64)>> {
        match self.conn().get("read job", &self.job_key(n)).await? {
            Some(kv) => Ok(Some((decode(kv.value())?, kv.mod_revision()))),
            None => Ok(None),
        }
    }

    /// The answer to a create retried with a known request id.
    async fn replay(&self, job: &Job, record: &KeyValue) -> Result<Job> {
        let text = utf8(record.value())?;
        let (name, uid) = text
            .split_once(' ')
            .ok_or_else(|| Error::Storage(format!("bad request record {text:?}")))?;
        let name = parse_name_key(name)?;
        let uid = Uuid::parse_str(uid).map_err(|e| Error::Storage(e.to_string()))?;
        match self.read(&name).await? {
            Some((j, _)) if j.name == job.name && j.uid == uid => Ok(j),
            _ => Err(Error::Conflict(
                "request_id was used for another job".to_string(),
            )),
        }
    }

    /// Jobs for the index keys of one page, in order; jobs deleted meanwhile are left out.
    async fn fetch(&self, names: &[JobName]) -> Result<Vec<Job>> {
        let mut out = Vec::with_capacity(names.len());
        for chunk in names.chunks(TXN_OPS_MAX) {
            let gets: Vec<TxnOp> = chunk
                .iter()
                .map(|n| TxnOp::get(self.job_key(n), None))
                .collect();
            let resp = self
                .conn()
                .txn("read jobs", Txn::new().and_then(gets))
                .await?;
            for r in resp.op_responses() {
                if let TxnOpResponse::Get(g) = r
                    && let Some(kv) = g.kvs().first()
                {
                    out.push(decode(kv.value())?);
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl crate::ports::Catalog for Catalog {
    async fn create_job(&self, job: Job, request_id: Option<String>) -> Result<Job> {
        let key = self.job_key(&job.name);
        let value = encode(&job)?;
        let req_key = request_id.as_deref().map(|r| self.request_key(r));
        for _ in 0..WRITE_RETRIES_MAX {
            if let Some(rk) = &req_key
                && let Some(record) = self.conn().get("read request id", rk).await?
            {
                return self.replay(&job, &record).await;
            }
            let mut when = vec![Compare::version(key.clone(), CompareOp::Equal, 0)];
            let mut then = vec![
                TxnOp::put(key.clone(), value.clone(), None),
                TxnOp::put(self.order_all_key(job.create_time, &job.name), "", None),
                TxnOp::put(self.order_in_key(job.create_time, &job.name), "", None),
                // A new job starts from its creation instant: its first firing is the
                // first scheduled instant after it.
                TxnOp::put(
                    cursor_key(self.conn(), job.uid),
                    sortable_ns(job.create_time),
                    None,
                ),
            ];
            let mut otherwise = Vec::new();
            if let Some(rk) = &req_key {
                when.push(Compare::version(rk.clone(), CompareOp::Equal, 0));
                then.push(TxnOp::put(
                    rk.clone(),
                    format!("{} {}", name_key(&job.name), job.uid),
                    None,
                ));
                otherwise.push(TxnOp::get(rk.clone(), None));
            }
            let txn = Txn::new().when(when).and_then(then).or_else(otherwise);
            let resp = self.conn().txn("create job", txn).await?;
            if resp.succeeded() {
                return Ok(job);
            }
            let request_recorded = resp
                .op_responses()
                .iter()
                .any(|r| matches!(r, TxnOpResponse::Get(g) if !g.kvs().is_empty()));
            if !request_recorded {
                return Err(Error::AlreadyExists(job.name.to_string()));
            }
            // A concurrent call with the same request id won: answer as a retry.
        }
        Err(Error::Unavailable(format!(
            "create {}: contended, try again",
            job.name
        )))
    }

    async fn get_job(&self, name: &JobName) -> Result<Option<Job>> {
        Ok(self.read(name).await?.map(|(j, _)| j))
    }

    async fn list_jobs(
        &self,
        filter: &JobFilter,
        after: Option<JobCursor>,
        limit: usize,
    ) -> Result<Vec<Job>> {
        let prefix = match &filter.region {
            None => self.conn().key("job_order/all/"),
            Some(r) => self.conn().key(&format!("job_order/in/{r}/")),
        };
        let end = prefix_end(prefix.as_bytes());
        let mut start = match &after {
            None => prefix.clone().into_bytes(),
            Some((t, n)) => {
                let k = match &filter.region {
                    None => self.order_all_key(*t, n),
                    Some(r) => {
                        self.conn()
                            .key(&format!("job_order/in/{r}/{}/{}", sortable_ns(*t), n.job))
                    }
                };
                let mut k = k.into_bytes();
                k.push(0); // strictly after
                k
            }
        };
        let mut out = Vec::new();
        while out.len() < limit {
            let want = (limit - out.len()).min(super::RANGE_PAGE_MAX as usize) as i64;
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(want)
                .with_keys_only();
            let mut kv = self.conn().kv();
            let mut resp = self
                .conn()
                .timed("list jobs", kv.get(start.clone(), Some(options)))
                .await?;
            let more = resp.more();
            let kvs = resp.take_kvs();
            let Some(last) = kvs.last() else { break };
            start = last.key().to_vec();
            start.push(0);
            let mut names = Vec::with_capacity(kvs.len());
            for kv in &kvs {
                let rest = utf8(&kv.key()[prefix.len()..])?;
                // all: {t}/{region}/{job}; in: {t}/{job}
                let mut parts = rest.splitn(3, '/').skip(1);
                let name = match &filter.region {
                    None => match (parts.next(), parts.next()) {
                        (Some(region), Some(job)) => JobName::new(region, job),
                        _ => return Err(Error::Storage(format!("bad order key {rest:?}"))),
                    },
                    Some(r) => match parts.next() {
                        Some(job) => JobName::new(r.as_str(), job),
                        None => return Err(Error::Storage(format!("bad order key {rest:?}"))),
                    },
                };
                names.push(name);
            }
            out.extend(self.fetch(&names).await?);
            if !more {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn update_job(&self, job: Job, expected_revision: Option<u64>) -> Result<Job> {
        let key = self.job_key(&job.name);
        for _ in 0..WRITE_RETRIES_MAX {
            let Some((current, mod_rev)) = self.read(&job.name).await? else {
                return Err(Error::NotFound(job.name.to_string()));
            };
            let next = job
                .clone()
                .replacing(&current, expected_revision)
                .map_err(Error::Conflict)?;
            let txn = Txn::new()
                .when(vec![Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    mod_rev,
                )])
                .and_then(vec![TxnOp::put(key.clone(), encode(&next)?, None)]);
            if self.conn().txn("update job", txn).await?.succeeded() {
                return Ok(next);
            }
            // Changed since the read: read again and re-check.
        }
        Err(Error::Unavailable(format!(
            "update {}: contended, try again",
            job.name
        )))
    }

    async fn delete_job(&self, name: &JobName) -> Result<Job> {
        let key = self.job_key(name);
        for _ in 0..WRITE_RETRIES_MAX {
            let Some((job, mod_rev)) = self.read(name).await? else {
                return Err(Error::NotFound(name.to_string()));
            };
            let txn = Txn::new()
                .when(vec![Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    mod_rev,
                )])
                .and_then(vec![
                    TxnOp::delete(key.clone(), None),
                    TxnOp::delete(self.order_all_key(job.create_time, name), None),
                    TxnOp::delete(self.order_in_key(job.create_time, name), None),
                    TxnOp::delete(cursor_key(self.conn(), job.uid), None),
                ]);
            if self.conn().txn("delete job", txn).await?.succeeded() {
                return Ok(job);
            }
        }
        Err(Error::Unavailable(format!(
            "delete {name}: contended, try again"
        )))
    }

    async fn all_jobs(&self) -> Result<Vec<Job>> {
        let (kvs, _) = self
            .conn()
            .get_prefix("read all jobs", &self.conn().key("jobs/"))
            .await?;
        kvs.iter().map(|kv| decode(kv.value())).collect()
    }

    fn watch(&self) -> broadcast::Receiver<CatalogEvent> {
        self.inner.events.subscribe()
    }
}

/// The feed task's state.
struct Feed {
    conn: Connection,
    events: broadcast::Sender<CatalogEvent>,
    stats: Arc<Stats>,
    /// name key -> (uid, mod revision) of every job the feed has seen.
    known: HashMap<String, (Uuid, i64)>,
    /// The last revision applied.
    revision: i64,
    options: CatalogOptions,
}

enum WatchEnd {
    /// The stream broke: resume from the last revision.
    Broken(Error),
    /// The revision to resume from was compacted: re-read everything.
    Compacted,
}

impl Feed {
    fn emit(&self, ev: CatalogEvent) {
        // No receiver is fine: nobody is listening yet.
        let _ = self.events.send(ev);
    }

    fn jobs_prefix(&self) -> String {
        self.conn.key("jobs/")
    }

    fn set_revision(&mut self, rev: i64) {
        self.revision = self.revision.max(rev);
        self.stats.revision.store(self.revision, Ordering::Relaxed);
    }

    /// Read every job; with `emit`, announce the difference from what was known.
    async fn load(&mut self, emit: bool) -> Result<()> {
        let prefix = self.jobs_prefix();
        let (kvs, rev) = self.conn.get_prefix("read all jobs", &prefix).await?;
        let mut now: HashMap<String, (Uuid, i64)> = HashMap::with_capacity(kvs.len());
        let mut upserts = Vec::new();
        for kv in &kvs {
            let name = utf8(&kv.key()[prefix.len()..])?.to_string();
            let known = self.known.get(&name).copied();
            if let Some((_, m)) = known
                && m == kv.mod_revision()
            {
                now.insert(name, known.expect("checked"));
                continue;
            }
            let job = match decode(kv.value()) {
                Ok(j) => j,
                Err(e) => {
                    error!(job = name, error = %e, "undecodable job skipped");
                    continue;
                }
            };
            now.insert(name, (job.uid, kv.mod_revision()));
            upserts.push(job);
        }
        let previous = std::mem::replace(&mut self.known, now);
        self.revision = rev;
        self.stats.revision.store(rev, Ordering::Relaxed);
        if emit {
            // Counted before the events go out, so whoever sees them sees the count.
            self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
            // Deletions first, so a job replaced under the same name is removed (old
            // uid) before its successor is added.
            for (name, (uid, _)) in &previous {
                let gone = self.known.get(name).is_none_or(|(u, _)| u != uid);
                if gone && let Ok(name) = parse_name_key(name) {
                    self.emit(CatalogEvent::Deleted { name, uid: *uid });
                }
            }
            for job in upserts {
                self.emit(CatalogEvent::Upserted(Arc::new(job)));
            }
        }
        Ok(())
    }

    async fn run(mut self, stop: CancellationToken) {
        let mut backoff = Backoff::new(self.options.watch_retry_min, self.options.watch_retry_max);
        loop {
            let end = tokio::select! {
                e = self.follow(&mut backoff) => e,
                _ = stop.cancelled() => return,
            };
            match end {
                WatchEnd::Compacted => {
                    warn!(
                        revision = self.revision,
                        "catalog watch fell behind a compaction; re-reading every job"
                    );
                    loop {
                        let r = tokio::select! {
                            r = self.load(true) => r,
                            _ = stop.cancelled() => return,
                        };
                        match r {
                            Ok(()) => break,
                            Err(e) => {
                                debug!(error = %e, "catalog re-read failed; retrying");
                                tokio::select! {
                                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                                    _ = stop.cancelled() => return,
                                }
                            }
                        }
                    }
                    info!(
                        revision = self.revision,
                        jobs = self.known.len(),
                        "catalog re-read"
                    );
                }
                WatchEnd::Broken(e) => {
                    debug!(error = %e, revision = self.revision, "catalog watch broken; resuming");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = stop.cancelled() => return,
                    }
                    self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Follow the jobs prefix from the last revision until the watch ends.
    async fn follow(&mut self, backoff: &mut Backoff) -> WatchEnd {
        let prefix = self.jobs_prefix();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.revision + 1)
            .with_progress_notify();
        let mut client = self.conn.watch_client();
        let mut stream = match self
            .conn
            .timed("watch jobs", client.watch(prefix.clone(), Some(options)))
            .await
        {
            Ok(s) => s,
            Err(e) => return WatchEnd::Broken(e),
        };
        loop {
            let resp = match stream.message().await {
                Ok(Some(r)) => r,
                Ok(None) => return WatchEnd::Broken(Error::Unavailable("watch closed".into())),
                Err(e) => return WatchEnd::Broken(super::map_err(e)),
            };
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    return WatchEnd::Compacted;
                }
                return WatchEnd::Broken(Error::Unavailable(format!(
                    "watch cancelled: {}",
                    resp.cancel_reason()
                )));
            }
            if resp.created() {
                continue;
            }
            // A healthy stream resets the retry delay.
            backoff.reset();
            if resp.events().is_empty() {
                // Progress notification: everything up to this revision was delivered.
                if let Some(h) = resp.header() {
                    self.set_revision(h.revision());
                }
                continue;
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let Ok(name) = utf8(&kv.key()[prefix.len().min(kv.key().len())..]) else {
                    continue;
                };
                let name = name.to_string();
                // Recorded before the event goes out, so whoever sees it sees the count.
                self.set_revision(kv.mod_revision());
                match ev.event_type() {
                    EventType::Put => match decode(kv.value()) {
                        Ok(job) => {
                            if let Some((old, _)) = self.known.get(&name)
                                && *old != job.uid
                                && let Ok(n) = parse_name_key(&name)
                            {
                                self.emit(CatalogEvent::Deleted { name: n, uid: *old });
                            }
                            self.known.insert(name, (job.uid, kv.mod_revision()));
                            self.emit(CatalogEvent::Upserted(Arc::new(job)));
                        }
                        Err(e) => error!(job = name, error = %e, "undecodable job skipped"),
                    },
                    EventType::Delete => {
                        if let Some((uid, _)) = self.known.remove(&name)
                            && let Ok(n) = parse_name_key(&name)
                        {
                            self.emit(CatalogEvent::Deleted { name: n, uid });
                        }
                    }
                }
            }
        }
    }
}
