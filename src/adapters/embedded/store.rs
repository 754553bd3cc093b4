//! The embedded store: a redb file behind the `Catalog` and `RunLog` ports.
//!
//! Reads open their own redb read transaction on the caller's thread. Every write goes
//! through one writer thread that applies a whole batch of queued operations in one
//! transaction and commits it durably once (group commit), then answers each caller.
//! So a claim, an attempt start or a result is durable before its caller goes on, at
//! the cost of one fsync per batch, not per operation.
//!
//! Must not decide anything about schedules: it stores what the actors decided, and
//! enforces only the store's own rules (idempotent claims, fencing, one start per
//! attempt, terminal runs never change, retention).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{error, info};
use uuid::Uuid;

use crate::core::Timestamp;
use crate::core::ids::{Epoch, FiringId, JobName};
use crate::core::job::Job;
use crate::core::run::{Attempt, OUTPUT_TAIL_BYTES_MAX, Run, State};
use crate::ports::{
    AttemptEnd, AttemptStart, Catalog, CatalogEvent, Claim, Error, JobCursor, JobFilter, Refusal,
    Result, RunLog,
};

/// name ("region/job") -> Job (JSON)
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
/// (create_time ns, name) -> () : listing order
const JOB_ORDER: TableDefinition<&[u8], ()> = TableDefinition::new("job_order");
/// request id -> job name: idempotent creates
const REQUESTS: TableDefinition<&str, &str> = TableDefinition::new("requests");
/// job uid -> last scheduled instant handled (ns)
const CURSORS: TableDefinition<u128, i64> = TableDefinition::new("cursors");
/// (job uid, scheduled ns, firing id) -> Run (JSON)
const RUNS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("runs");
/// firing id -> runs key
const RUN_KEYS: TableDefinition<u128, &[u8]> = TableDefinition::new("run_keys");
/// job uid -> number of runs kept
const RUN_COUNTS: TableDefinition<u128, u64> = TableDefinition::new("run_counts");
/// firing id -> () for every run not yet terminal
const UNFINISHED: TableDefinition<u128, ()> = TableDefinition::new("unfinished");
/// "epoch" -> newest epoch handed out or seen
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Store settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Runs kept per job; older terminal runs are deleted as new ones arrive.
    pub runs_per_job_max: u64,
    /// Operations the writer queue holds before callers wait (backpressure).
    pub write_queue_max: usize,
    /// Operations applied in one transaction at most.
    pub write_batch_max: usize,
    /// Catalog events buffered per watcher before it lags and must reload.
    pub watch_buffer_max: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            runs_per_job_max: 100,
            write_queue_max: 65_536,
            write_batch_max: 8_192,
            watch_buffer_max: 65_536,
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T>>;

enum Op {
    CreateJob(Box<Job>, Option<String>, Reply<Job>),
    UpdateJob(Box<Job>, Option<u64>, Reply<Job>),
    DeleteJob(JobName, Reply<Job>),
    BulkLoad(Vec<Job>, Reply<usize>),
    Claim(Epoch, Vec<Claim>, Reply<Vec<bool>>),
    Start(
        FiringId,
        AttemptStart,
        Reply<std::result::Result<Run, Refusal>>,
    ),
    Finish(FiringId, Box<AttemptEnd>, Reply<Run>),
    EndRun(FiringId, State, String, Reply<Run>),
    BumpEpoch(Reply<Epoch>),
}

/// The embedded store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    ops: mpsc::Sender<Op>,
    events: broadcast::Sender<CatalogEvent>,
    path: PathBuf,
}

fn storage<E: std::fmt::Display>(e: E) -> Error {
    Error::Storage(e.to_string())
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(storage)
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(storage)
}

/// Nanoseconds since the epoch, saturating outside 1677..2262 (only range bounds go
/// there: schedules are bounded to years the nanosecond range holds).
fn ns(t: Timestamp) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// Order-preserving bytes of a signed instant.
fn ns_key(t: Timestamp) -> [u8; 8] {
    ((ns(t) as u64) ^ (1 << 63)).to_be_bytes()
}

fn name_key(n: &JobName) -> String {
    format!("{}/{}", n.region, n.job)
}

fn parse_name_key(key: &str) -> Result<JobName> {
    let (region, job) = key
        .split_once('/')
        .ok_or_else(|| Error::Storage(format!("bad job key {key:?}")))?;
    Ok(JobName::new(region, job))
}

fn order_key(create: Timestamp, n: &JobName) -> Vec<u8> {
    let mut k = ns_key(create).to_vec();
    k.extend_from_slice(name_key(n).as_bytes());
    k
}

fn run_key(uid: Uuid, scheduled: Timestamp, firing: FiringId) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..16].copy_from_slice(uid.as_bytes());
    k[16..24].copy_from_slice(&ns_key(scheduled));
    k[24..].copy_from_slice(firing.0.as_bytes());
    k
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

impl Store {
    /// Open (or create) the store in `dir` (file `meridian.redb`) and start its writer.
    pub fn open(dir: &Path, options: Options) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(storage)?;
        let path = dir.join("meridian.redb");
        let db = Database::builder()
            .set_cache_size(256 << 20)
            .create(&path)
            .map_err(storage)?;
        // Create every table up front so readers never meet a missing one.
        let tx = db.begin_write().map_err(storage)?;
        {
            tx.open_table(JOBS).map_err(storage)?;
            tx.open_table(JOB_ORDER).map_err(storage)?;
            tx.open_table(REQUESTS).map_err(storage)?;
            tx.open_table(CURSORS).map_err(storage)?;
            tx.open_table(RUNS).map_err(storage)?;
            tx.open_table(RUN_KEYS).map_err(storage)?;
            tx.open_table(RUN_COUNTS).map_err(storage)?;
            tx.open_table(UNFINISHED).map_err(storage)?;
            tx.open_table(META).map_err(storage)?;
        }
        tx.commit().map_err(storage)?;
        let db = Arc::new(db);
        let (ops, rx) = mpsc::channel(options.write_queue_max);
        let (events, _) = broadcast::channel(options.watch_buffer_max);
        let writer = Writer {
            db: db.clone(),
            events: events.clone(),
            options: options.clone(),
        };
        thread::Builder::new()
            .name("meridian-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(storage)?;
        info!(path = %path.display(), "store open");
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                ops,
                events,
                path,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .ops
            .send(make(tx))
            .await
            .map_err(|_| Error::Unavailable("store writer stopped".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("store writer stopped".into()))?
    }

    /// Start a new owner term: bump and return the persisted epoch.
    pub async fn bump_epoch(&self) -> Result<Epoch> {
        self.call(Op::BumpEpoch).await
    }

    /// Insert many jobs at once (benchmarks, imports); existing names are replaced.
    /// Emits no catalog events: callers load the index themselves.
    pub async fn bulk_load(&self, jobs: Vec<Job>) -> Result<usize> {
        self.call(|r| Op::BulkLoad(jobs, r)).await
    }

    fn read(&self) -> Result<redb::ReadTransaction> {
        self.inner.db.begin_read().map_err(storage)
    }
}

#[async_trait]
impl Catalog for Store {
    async fn create_job(&self, job: Job, request_id: Option<String>) -> Result<Job> {
        self.call(|r| Op::CreateJob(Box::new(job), request_id, r))
            .await
    }

    async fn get_job(&self, name: &JobName) -> Result<Option<Job>> {
        let tx = self.read()?;
        let t = tx.open_table(JOBS).map_err(storage)?;
        match t.get(name_key(name).as_str()).map_err(storage)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    async fn list_jobs(
        &self,
        filter: &JobFilter,
        after: Option<JobCursor>,
        limit: usize,
    ) -> Result<Vec<Job>> {
        let tx = self.read()?;
        let order = tx.open_table(JOB_ORDER).map_err(storage)?;
        let jobs = tx.open_table(JOBS).map_err(storage)?;
        let start = after.map(|(t, n)| {
            let mut k = order_key(t, &n);
            k.push(0); // strictly after
            k
        });
        let range = match &start {
            Some(k) => order.range(k.as_slice()..).map_err(storage)?,
            None => order.range::<&[u8]>(..).map_err(storage)?,
        };
        let mut out = Vec::new();
        for entry in range {
            let (k, _) = entry.map_err(storage)?;
            let name = std::str::from_utf8(&k.value()[8..])
                .map_err(storage)?
                .to_owned();
            if let Some(region) = &filter.region
                && !name.starts_with(&format!("{region}/"))
            {
                continue;
            }
            if let Some(v) = jobs.get(name.as_str()).map_err(storage)? {
                out.push(decode(v.value())?);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    async fn update_job(&self, job: Job, expected_revision: Option<u64>) -> Result<Job> {
        self.call(|r| Op::UpdateJob(Box::new(job), expected_revision, r))
            .await
    }

    async fn delete_job(&self, name: &JobName) -> Result<Job> {
        self.call(|r| Op::DeleteJob(name.clone(), r)).await
    }

    async fn all_jobs(&self) -> Result<Vec<Job>> {
        let db = self.inner.db.clone();
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_read().map_err(storage)?;
            let t = tx.open_table(JOBS).map_err(storage)?;
            let mut out = Vec::new();
            for entry in t.iter().map_err(storage)? {
                let (_, v) = entry.map_err(storage)?;
                out.push(decode(v.value())?);
            }
            Ok(out)
        })
        .await
        .map_err(storage)?
    }

    fn watch(&self) -> broadcast::Receiver<CatalogEvent> {
        self.inner.events.subscribe()
    }
}

#[async_trait]
impl RunLog for Store {
    async fn claim(&self, epoch: Epoch, claims: Vec<Claim>) -> Result<Vec<bool>> {
        self.call(|r| Op::Claim(epoch, claims, r)).await
    }

    async fn cursors(&self) -> Result<Vec<(Uuid, Timestamp)>> {
        let tx = self.read()?;
        let t = tx.open_table(CURSORS).map_err(storage)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(storage)? {
            let (k, v) = entry.map_err(storage)?;
            out.push((
                Uuid::from_u128(k.value()),
                Timestamp::from_timestamp_nanos(v.value()),
            ));
        }
        Ok(out)
    }

    async fn cursor(&self, job_uid: Uuid) -> Result<Option<Timestamp>> {
        let tx = self.read()?;
        let t = tx.open_table(CURSORS).map_err(storage)?;
        Ok(t.get(job_uid.as_u128())
            .map_err(storage)?
            .map(|v| Timestamp::from_timestamp_nanos(v.value())))
    }

    async fn start_attempt(
        &self,
        firing: FiringId,
        start: AttemptStart,
    ) -> Result<std::result::Result<Run, Refusal>> {
        self.call(|r| Op::Start(firing, start, r)).await
    }

    async fn finish_attempt(&self, firing: FiringId, end: AttemptEnd) -> Result<Run> {
        self.call(|r| Op::Finish(firing, Box::new(end), r)).await
    }

    async fn end_run(&self, firing: FiringId, state: State, reason: String) -> Result<Run> {
        self.call(|r| Op::EndRun(firing, state, reason, r)).await
    }

    async fn get_run(&self, firing: FiringId) -> Result<Option<Run>> {
        let tx = self.read()?;
        let keys = tx.open_table(RUN_KEYS).map_err(storage)?;
        let runs = tx.open_table(RUNS).map_err(storage)?;
        let Some(k) = keys.get(firing.0.as_u128()).map_err(storage)? else {
            return Ok(None);
        };
        match runs.get(k.value()).map_err(storage)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    async fn list_runs(
        &self,
        job_uid: Uuid,
        before: Option<(Timestamp, FiringId)>,
        limit: usize,
    ) -> Result<Vec<Run>> {
        let tx = self.read()?;
        let runs = tx.open_table(RUNS).map_err(storage)?;
        let lo = run_key(job_uid, Timestamp::MIN_UTC, FiringId(Uuid::nil()));
        let hi = match before {
            Some((t, f)) => run_key(job_uid, t, f),
            None => run_key(job_uid, Timestamp::MAX_UTC, FiringId(Uuid::max())),
        };
        let mut out = Vec::new();
        for entry in runs
            .range(lo.as_slice()..hi.as_slice())
            .map_err(storage)?
            .rev()
        {
            let (_, v) = entry.map_err(storage)?;
            out.push(decode(v.value())?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    async fn unfinished(&self) -> Result<Vec<Run>> {
        let tx = self.read()?;
        let open = tx.open_table(UNFINISHED).map_err(storage)?;
        let keys = tx.open_table(RUN_KEYS).map_err(storage)?;
        let runs = tx.open_table(RUNS).map_err(storage)?;
        let mut out = Vec::new();
        for entry in open.iter().map_err(storage)? {
            let (f, _) = entry.map_err(storage)?;
            if let Some(k) = keys.get(f.value()).map_err(storage)?
                && let Some(v) = runs.get(k.value()).map_err(storage)?
            {
                out.push(decode(v.value())?);
            }
        }
        Ok(out)
    }
}

/// The single writer: batches operations into one durable transaction each.
struct Writer {
    db: Arc<Database>,
    events: broadcast::Sender<CatalogEvent>,
    options: Options,
}

/// What one operation produced, kept until its transaction commits.
enum Done {
    Job(Reply<Job>, Box<Result<Job>>, Option<CatalogEvent>),
    Usize(Reply<usize>, Result<usize>),
    Claims(Reply<Vec<bool>>, Result<Vec<bool>>),
    Start(
        Reply<std::result::Result<Run, Refusal>>,
        Box<Result<std::result::Result<Run, Refusal>>>,
    ),
    Run(Reply<Run>, Box<Result<Run>>),
    Epoch(Reply<Epoch>, Result<Epoch>),
}

impl Done {
    fn fail(self, e: &Error) -> Self {
        fn err<T>(e: &Error) -> Result<T> {
            Err(Error::Storage(e.to_string()))
        }
        match self {
            Done::Job(r, _, _) => Done::Job(r, Box::new(err(e)), None),
            Done::Usize(r, _) => Done::Usize(r, err(e)),
            Done::Claims(r, _) => Done::Claims(r, err(e)),
            Done::Start(r, _) => Done::Start(r, Box::new(err(e))),
            Done::Run(r, _) => Done::Run(r, Box::new(err(e))),
            Done::Epoch(r, _) => Done::Epoch(r, err(e)),
        }
    }

    fn send(self, events: &broadcast::Sender<CatalogEvent>) {
        // A caller that gave up waiting is fine: the write is done either way.
        match self {
            Done::Job(r, res, ev) => {
                if let (Ok(_), Some(ev)) = (&*res, ev) {
                    let _ = events.send(ev);
                }
                let _ = r.send(*res);
            }
            Done::Usize(r, res) => drop(r.send(res)),
            Done::Claims(r, res) => drop(r.send(res)),
            Done::Start(r, res) => drop(r.send(*res)),
            Done::Run(r, res) => drop(r.send(*res)),
            Done::Epoch(r, res) => drop(r.send(res)),
        }
    }
}

type Tables<'t> = (
    redb::Table<'t, &'static str, &'static [u8]>,
    redb::Table<'t, &'static [u8], ()>,
    redb::Table<'t, &'static str, &'static str>,
    redb::Table<'t, u128, i64>,
    redb::Table<'t, &'static [u8], &'static [u8]>,
    redb::Table<'t, u128, &'static [u8]>,
    redb::Table<'t, u128, u64>,
    redb::Table<'t, u128, ()>,
    redb::Table<'t, &'static str, u64>,
);

struct Tx<'t> {
    jobs: redb::Table<'t, &'static str, &'static [u8]>,
    order: redb::Table<'t, &'static [u8], ()>,
    requests: redb::Table<'t, &'static str, &'static str>,
    cursors: redb::Table<'t, u128, i64>,
    runs: redb::Table<'t, &'static [u8], &'static [u8]>,
    run_keys: redb::Table<'t, u128, &'static [u8]>,
    run_counts: redb::Table<'t, u128, u64>,
    unfinished: redb::Table<'t, u128, ()>,
    meta: redb::Table<'t, &'static str, u64>,
}

impl<'t> From<Tables<'t>> for Tx<'t> {
    fn from(t: Tables<'t>) -> Self {
        Tx {
            jobs: t.0,
            order: t.1,
            requests: t.2,
            cursors: t.3,
            runs: t.4,
            run_keys: t.5,
            run_counts: t.6,
            unfinished: t.7,
            meta: t.8,
        }
    }
}

impl Writer {
    fn run(self, mut rx: mpsc::Receiver<Op>) {
        let mut batch = Vec::with_capacity(self.options.write_batch_max);
        while let Some(op) = rx.blocking_recv() {
            batch.push(op);
            while batch.len() < self.options.write_batch_max {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let done = self.apply(&mut batch);
            for d in done {
                d.send(&self.events);
            }
        }
        info!("store writer stopped");
    }

    fn apply(&self, batch: &mut Vec<Op>) -> Vec<Done> {
        let mut done = Vec::with_capacity(batch.len());
        let result = (|| -> Result<redb::WriteTransaction> {
            let mut wtx = self.db.begin_write().map_err(storage)?;
            wtx.set_durability(Durability::Immediate).map_err(storage)?;
            {
                let mut tx: Tx = (
                    wtx.open_table(JOBS).map_err(storage)?,
                    wtx.open_table(JOB_ORDER).map_err(storage)?,
                    wtx.open_table(REQUESTS).map_err(storage)?,
                    wtx.open_table(CURSORS).map_err(storage)?,
                    wtx.open_table(RUNS).map_err(storage)?,
                    wtx.open_table(RUN_KEYS).map_err(storage)?,
                    wtx.open_table(RUN_COUNTS).map_err(storage)?,
                    wtx.open_table(UNFINISHED).map_err(storage)?,
                    wtx.open_table(META).map_err(storage)?,
                )
                    .into();
                for op in batch.drain(..) {
                    done.push(self.apply_one(&mut tx, op));
                }
            }
            Ok(wtx)
        })();
        let outcome = result.and_then(|wtx| wtx.commit().map_err(storage));
        match outcome {
            Ok(()) => done,
            Err(e) => {
                error!(error = %e, ops = done.len(), "store commit failed");
                // Ops not yet drained (begin failed) have their reply senders dropped,
                // which their callers see as Unavailable.
                batch.clear();
                done.into_iter().map(|d| d.fail(&e)).collect()
            }
        }
    }

    fn apply_one(&self, tx: &mut Tx, op: Op) -> Done {
        match op {
            Op::CreateJob(job, request_id, r) => {
                let res = create_job(tx, *job, request_id);
                let ev = res
                    .as_ref()
                    .ok()
                    .map(|j| CatalogEvent::Upserted(Arc::new(j.clone())));
                Done::Job(r, Box::new(res), ev)
            }
            Op::UpdateJob(job, rev, r) => {
                let res = update_job(tx, *job, rev);
                let ev = res
                    .as_ref()
                    .ok()
                    .map(|j| CatalogEvent::Upserted(Arc::new(j.clone())));
                Done::Job(r, Box::new(res), ev)
            }
            Op::DeleteJob(name, r) => {
                let res = delete_job(tx, &name);
                let ev = res.as_ref().ok().map(|j| CatalogEvent::Deleted {
                    name: j.name.clone(),
                    uid: j.uid,
                });
                Done::Job(r, Box::new(res), ev)
            }
            Op::BulkLoad(jobs, r) => Done::Usize(r, bulk_load(tx, jobs)),
            Op::Claim(epoch, claims, r) => {
                Done::Claims(r, claim(tx, epoch, claims, self.options.runs_per_job_max))
            }
            Op::Start(f, s, r) => Done::Start(r, Box::new(start(tx, f, s))),
            Op::Finish(f, e, r) => Done::Run(r, Box::new(finish(tx, f, *e))),
            Op::EndRun(f, state, reason, r) => {
                Done::Run(r, Box::new(end_run(tx, f, state, reason)))
            }
            Op::BumpEpoch(r) => Done::Epoch(r, bump_epoch(tx)),
        }
    }
}

fn put_job(tx: &mut Tx, job: &Job) -> Result<()> {
    let key = name_key(&job.name);
    tx.jobs
        .insert(key.as_str(), encode(job)?.as_slice())
        .map_err(storage)?;
    tx.order
        .insert(order_key(job.create_time, &job.name).as_slice(), ())
        .map_err(storage)?;
    Ok(())
}

fn read_job(tx: &Tx, name: &JobName) -> Result<Option<Job>> {
    match tx.jobs.get(name_key(name).as_str()).map_err(storage)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

fn create_job(tx: &mut Tx, job: Job, request_id: Option<String>) -> Result<Job> {
    if let Some(rid) = &request_id {
        let earlier = tx
            .requests
            .get(rid.as_str())
            .map_err(storage)?
            .map(|v| v.value().to_owned());
        if let Some(earlier) = earlier {
            let name = parse_name_key(&earlier)?;
            return match read_job(tx, &name)? {
                Some(j) if j.name == job.name => Ok(j),
                _ => Err(Error::Conflict(format!(
                    "request_id {rid:?} was used for another job"
                ))),
            };
        }
    }
    if read_job(tx, &job.name)?.is_some() {
        return Err(Error::AlreadyExists(job.name.to_string()));
    }
    put_job(tx, &job)?;
    if let Some(rid) = &request_id {
        tx.requests
            .insert(rid.as_str(), name_key(&job.name).as_str())
            .map_err(storage)?;
    }
    // A new job starts from its creation instant: its first firing is the first
    // scheduled instant after it.
    tx.cursors
        .insert(job.uid.as_u128(), ns(job.create_time))
        .map_err(storage)?;
    Ok(job)
}

fn update_job(tx: &mut Tx, mut job: Job, expected: Option<u64>) -> Result<Job> {
    let Some(current) = read_job(tx, &job.name)? else {
        return Err(Error::NotFound(job.name.to_string()));
    };
    if current.uid != job.uid {
        return Err(Error::Conflict(format!("{} was replaced", job.name)));
    }
    if let Some(rev) = expected
        && rev != current.revision
    {
        return Err(Error::Conflict(format!(
            "{} is at revision {}, not {rev}",
            job.name, current.revision
        )));
    }
    job.revision = current.revision + 1;
    job.create_time = current.create_time;
    put_job(tx, &job)?;
    Ok(job)
}

fn delete_job(tx: &mut Tx, name: &JobName) -> Result<Job> {
    let Some(job) = read_job(tx, name)? else {
        return Err(Error::NotFound(name.to_string()));
    };
    tx.jobs.remove(name_key(name).as_str()).map_err(storage)?;
    tx.order
        .remove(order_key(job.create_time, name).as_slice())
        .map_err(storage)?;
    tx.cursors.remove(job.uid.as_u128()).map_err(storage)?;
    tx.run_counts.remove(job.uid.as_u128()).map_err(storage)?;
    let lo = run_key(job.uid, Timestamp::MIN_UTC, FiringId(Uuid::nil()));
    let hi = run_key(job.uid, Timestamp::MAX_UTC, FiringId(Uuid::max()));
    let mut doomed = Vec::new();
    for entry in tx
        .runs
        .range(lo.as_slice()..=hi.as_slice())
        .map_err(storage)?
    {
        let (k, _) = entry.map_err(storage)?;
        doomed.push(k.value().to_vec());
    }
    for k in doomed {
        let firing = u128::from_be_bytes(k[24..40].try_into().expect("40-byte keys"));
        tx.runs.remove(k.as_slice()).map_err(storage)?;
        tx.run_keys.remove(firing).map_err(storage)?;
        tx.unfinished.remove(firing).map_err(storage)?;
    }
    Ok(job)
}

fn bulk_load(tx: &mut Tx, jobs: Vec<Job>) -> Result<usize> {
    let n = jobs.len();
    for job in jobs {
        put_job(tx, &job)?;
        tx.cursors
            .insert(job.uid.as_u128(), ns(job.create_time))
            .map_err(storage)?;
    }
    Ok(n)
}

fn bump_epoch(tx: &mut Tx) -> Result<Epoch> {
    let current = tx
        .meta
        .get("epoch")
        .map_err(storage)?
        .map_or(0, |v| v.value());
    let next = current + 1;
    tx.meta.insert("epoch", next).map_err(storage)?;
    Ok(Epoch(next))
}

fn current_epoch(tx: &Tx) -> Result<Epoch> {
    Ok(Epoch(
        tx.meta
            .get("epoch")
            .map_err(storage)?
            .map_or(0, |v| v.value()),
    ))
}

fn read_run(tx: &Tx, firing: FiringId) -> Result<Option<(Vec<u8>, Run)>> {
    let Some(k) = tx
        .run_keys
        .get(firing.0.as_u128())
        .map_err(storage)?
        .map(|v| v.value().to_vec())
    else {
        return Ok(None);
    };
    match tx.runs.get(k.as_slice()).map_err(storage)? {
        Some(v) => {
            let run = decode(v.value())?;
            Ok(Some((k, run)))
        }
        None => Ok(None),
    }
}

/// Write a run; `was_open` says whether it was in the unfinished index before, so the
/// index (another B-tree, another page path per commit) is touched only on a change.
fn write_run(tx: &mut Tx, key: &[u8], run: &Run, was_open: bool) -> Result<()> {
    tx.runs
        .insert(key, encode(run)?.as_slice())
        .map_err(storage)?;
    let open = !run.state.is_terminal();
    if open && !was_open {
        tx.unfinished
            .insert(run.firing.0.as_u128(), ())
            .map_err(storage)?;
    } else if !open && was_open {
        tx.unfinished
            .remove(run.firing.0.as_u128())
            .map_err(storage)?;
    }
    Ok(())
}

fn claim(tx: &mut Tx, epoch: Epoch, claims: Vec<Claim>, keep: u64) -> Result<Vec<bool>> {
    let current = current_epoch(tx)?;
    if epoch < current {
        return Err(Error::Fenced {
            stale: epoch,
            current,
        });
    }
    let mut out = Vec::with_capacity(claims.len());
    for c in claims {
        let uid = c.run.job_uid;
        if let Some(at) = c.cursor {
            let prev = tx
                .cursors
                .get(uid.as_u128())
                .map_err(storage)?
                .map(|v| v.value());
            if prev.is_none_or(|p| p < ns(at)) {
                tx.cursors.insert(uid.as_u128(), ns(at)).map_err(storage)?;
            }
        }
        if tx
            .run_keys
            .get(c.run.firing.0.as_u128())
            .map_err(storage)?
            .is_some()
        {
            out.push(false);
            continue;
        }
        let key = run_key(uid, c.run.scheduled_at, c.run.firing);
        write_run(tx, &key, &c.run, false)?;
        tx.run_keys
            .insert(c.run.firing.0.as_u128(), key.as_slice())
            .map_err(storage)?;
        let count = tx
            .run_counts
            .get(uid.as_u128())
            .map_err(storage)?
            .map_or(0, |v| v.value())
            + 1;
        let count = enforce_retention(tx, uid, count, keep)?;
        tx.run_counts
            .insert(uid.as_u128(), count)
            .map_err(storage)?;
        out.push(true);
    }
    Ok(out)
}

/// Delete the oldest terminal runs of a job while it has more than `keep`. Runs not
/// yet terminal are never deleted (they are still owed an outcome).
fn enforce_retention(tx: &mut Tx, uid: Uuid, mut count: u64, keep: u64) -> Result<u64> {
    if count <= keep {
        return Ok(count);
    }
    let lo = run_key(uid, Timestamp::MIN_UTC, FiringId(Uuid::nil()));
    let hi = run_key(uid, Timestamp::MAX_UTC, FiringId(Uuid::max()));
    let mut doomed = Vec::new();
    // Bounded scan: a job never has more than `keep` plus its unfinished runs.
    for entry in tx
        .runs
        .range(lo.as_slice()..=hi.as_slice())
        .map_err(storage)?
    {
        if count - doomed.len() as u64 <= keep {
            break;
        }
        let (k, v) = entry.map_err(storage)?;
        let run: Run = decode(v.value())?;
        if run.state.is_terminal() {
            doomed.push((k.value().to_vec(), run.firing));
        }
    }
    for (k, f) in &doomed {
        tx.runs.remove(k.as_slice()).map_err(storage)?;
        tx.run_keys.remove(f.0.as_u128()).map_err(storage)?;
    }
    count -= doomed.len() as u64;
    Ok(count)
}

fn start(
    tx: &mut Tx,
    firing: FiringId,
    s: AttemptStart,
) -> Result<std::result::Result<Run, Refusal>> {
    let Some((key, mut run)) = read_run(tx, firing)? else {
        return Err(Error::NotFound(format!("run {firing}")));
    };
    if s.epoch < run.epoch {
        return Ok(Err(Refusal::Fenced));
    }
    if run.state.is_terminal() {
        return Ok(Err(Refusal::Terminal(run.state)));
    }
    if run.attempts.iter().any(|a| a.number >= s.number) {
        return Ok(Err(Refusal::AlreadyStarted));
    }
    match read_job(tx, &run.job)? {
        Some(j) if j.uid == run.job_uid && !j.paused => {}
        Some(j) if j.uid == run.job_uid => return Ok(Err(Refusal::JobPaused)),
        _ => return Ok(Err(Refusal::JobDeleted)),
    }
    run.state = State::Running;
    run.epoch = s.epoch;
    run.next_attempt_at = None;
    run.update_time = s.started_at;
    run.attempts.push(Attempt {
        number: s.number,
        epoch: s.epoch,
        node: s.node,
        started_at: s.started_at,
        lateness_us: s.lateness_us,
        finished_at: None,
        status: None,
        summary: String::new(),
        exit_code: None,
        http_status: None,
        output_tail: String::new(),
    });
    write_run(tx, &key, &run, true)?;
    Ok(Ok(run))
}

fn finish(tx: &mut Tx, firing: FiringId, mut e: AttemptEnd) -> Result<Run> {
    let Some((key, mut run)) = read_run(tx, firing)? else {
        return Err(Error::NotFound(format!("run {firing}")));
    };
    let was_open = !run.state.is_terminal();
    let Some(attempt) = run.attempts.iter_mut().find(|a| a.number == e.number) else {
        return Err(Error::Conflict(format!(
            "run {firing} has no attempt {}",
            e.number
        )));
    };
    if attempt.status.is_some() {
        // Already recorded (e.g. marked worker_lost by recovery): first word stands.
        return Ok(run);
    }
    truncate_tail(&mut e.output_tail);
    attempt.finished_at = Some(e.finished_at);
    attempt.status = Some(e.status);
    attempt.summary = e.summary;
    attempt.exit_code = e.exit_code;
    attempt.http_status = e.http_status;
    attempt.output_tail = e.output_tail;
    if !run.state.is_terminal() {
        run.state = e.next_state;
        run.next_attempt_at = e.next_attempt_at;
        if e.next_state.is_terminal() && e.next_state != State::Succeeded {
            run.reason = attempt.summary.clone();
        }
    }
    run.update_time = e.finished_at;
    write_run(tx, &key, &run, was_open)?;
    Ok(run)
}

fn end_run(tx: &mut Tx, firing: FiringId, state: State, reason: String) -> Result<Run> {
    assert!(state.is_terminal(), "end_run needs a terminal state");
    let Some((key, mut run)) = read_run(tx, firing)? else {
        return Err(Error::NotFound(format!("run {firing}")));
    };
    if run.state.is_terminal() {
        return Ok(run);
    }
    run.state = state;
    run.reason = reason;
    run.next_attempt_at = None;
    write_run(tx, &key, &run, true)?;
    Ok(run)
}
