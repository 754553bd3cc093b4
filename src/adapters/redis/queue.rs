//! Per-region dispatch queues on Redis Streams: one stream per region
//! (`{p}:dispatch:{region}`), read through one consumer group, each node reading as its
//! own consumer (its node id). Entries carry a dispatch as JSON (run, job, epoch).
//!
//! Delivery is at least once. An entry read (`XREADGROUP`) stays pending for its
//! consumer until acknowledged (`ack`: `XACK` + `XDEL`); an entry pending longer than the
//! visibility timeout (its consumer died, or was cut off) is taken over by another
//! consumer (`reclaim`: `XAUTOCLAIM`) and delivered again. So the same dispatch can
//! reach two workers; the run log's start rule (one start per firing attempt) makes the
//! second one a refused start, never a second run.
//!
//! Bounded: `push` adds only while the stream holds fewer than `queue_max` entries
//! (acknowledged entries are deleted, so the length is what is queued or in flight) and
//! hands the rest back to the caller, who offers it again later. Trimming (`MAXLEN`) is
//! not used: it drops the oldest entries, which are the ones not yet delivered.
//!
//! Blocking reads use a connection of their own per region: on the shared multiplexed
//! connection an `XREADGROUP ... BLOCK` would hold up every command queued behind it. A
//! read interrupted by cancellation is kept and finished by the next pull, because Redis
//! may already have handed it entries (dropping it would strand them until reclaimed).
//!
//! Must not make scheduling decisions (no overlap, no ordering by due time: the region
//! supervisor does that), and must not read the clock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::{Config, Connection};
use crate::core::ids::{Epoch, RegionId};
use crate::core::job::Job;
use crate::core::run::Run;
use crate::ports::{Dispatch, DispatchQueue, Error, Result};

/// Longest a blocking read waits in Redis before it asks again (and before a
/// cancellation that arrived meanwhile is noticed by the server side of the read).
pub const PULL_BLOCK_MAX: Duration = Duration::from_secs(1);
/// `XAUTOCLAIM` calls one `reclaim` makes at most (each looks at up to ten times its
/// count of pending entries).
pub const RECLAIM_STEPS_MAX: usize = 16;

/// The stream entry field holding the dispatch.
const FIELD: &str = "d";

/// Queue settings.
#[derive(Clone, Debug)]
pub struct QueueOptions {
    /// The consumer group every node of the mesh reads through.
    pub group: String,
    /// This node's consumer name: its node id.
    pub consumer: String,
    /// Entries one region's stream holds (queued plus in flight) before `push` hands
    /// dispatches back.
    pub queue_max: usize,
    /// How long a pending entry may go unacknowledged before `reclaim` (and the
    /// trait's `pull`) takes it over from its consumer.
    pub visibility_timeout: Duration,
    /// How long one blocking read waits (at most `PULL_BLOCK_MAX`).
    pub block: Duration,
}

impl QueueOptions {
    /// Defaults for the consumer `consumer` (the node id).
    pub fn new(consumer: impl Into<String>) -> Self {
        Self {
            group: "regions".into(),
            consumer: consumer.into(),
            queue_max: 65_536,
            visibility_timeout: Duration::from_secs(30),
            block: PULL_BLOCK_MAX,
        }
    }
}

/// One entry read from a region's stream: its id (for `ack`) and its dispatch.
pub use crate::ports::Delivery;

/// A dispatch on the wire.
#[derive(Serialize)]
struct WireOut<'a> {
    run: &'a Run,
    job: &'a Job,
    epoch: Epoch,
    shard: u32,
}

#[derive(Deserialize)]
struct WireIn {
    run: Run,
    job: Job,
    epoch: Epoch,
    #[serde(default)]
    shard: u32,
}

/// Redis Streams dispatch queues. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Connection,
    options: QueueOptions,
    push: Script,
    /// Regions whose consumer group this process has made sure of.
    groups: Mutex<HashSet<RegionId>>,
    /// One reading lane per region.
    lanes: Mutex<HashMap<RegionId, Arc<Mutex<Lane>>>>,
}

/// A blocking read in progress.
type PendingRead = Pin<Box<dyn Future<Output = Result<Option<StreamReadReply>>> + Send + 'static>>;

/// How one region is read: a connection of its own for blocking reads, the read a
/// cancelled pull left running (which the next pull finishes), and entries read but not
/// yet handed out (a kept read may bring more than the next pull asks for).
struct Lane {
    reader: Connection,
    pending: Option<PendingRead>,
    ready: VecDeque<Delivery>,
}

impl Queue {
    /// Queues on the Redis at `config.url`, keys under `config.prefix`. Connects lazily.
    pub fn open(config: &Config, mut options: QueueOptions) -> Result<Self> {
        options.block = options.block.min(PULL_BLOCK_MAX);
        if options.block.is_zero() {
            // BLOCK 0 waits forever in Redis, past any cancellation.
            options.block = Duration::from_millis(1);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                conn: Connection::open(config)?,
                options,
                push: Script::new(include_str!("scripts/push.lua")),
                groups: Mutex::new(HashSet::new()),
                lanes: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The options in force.
    pub fn options(&self) -> &QueueOptions {
        &self.inner.options
    }

    /// `{p}:dispatch:{region}`.
    pub fn stream_key(&self, region: &RegionId) -> String {
        self.inner.conn.key(&format!("dispatch:{region}"))
    }

    /// Create the region's consumer group (and stream) unless this process did already.
    /// The group starts at the stream's beginning, so entries pushed before any reader
    /// came are delivered too.
    async fn ensure_group(&self, region: &RegionId) -> Result<()> {
        if self.inner.groups.lock().await.contains(region) {
            return Ok(());
        }
        let key = self.stream_key(region);
        let group = self.inner.options.group.clone();
        let created: Result<()> = self
            .inner
            .conn
            .run("create consumer group", |mut c| async move {
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&key)
                    .arg(&group)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query_async(&mut c)
                    .await
            })
            .await;
        match created {
            Ok(()) => {}
            Err(Error::Storage(m)) if m.contains("BUSYGROUP") => {}
            Err(e) => return Err(e),
        }
        self.inner.groups.lock().await.insert(region.clone());
        Ok(())
    }

    /// Forget that the group exists (Redis lost it: a flush, or data loss).
    async fn forget_group(&self, region: &RegionId) {
        self.inner.groups.lock().await.remove(region);
    }

    /// The region's reading lane (its own connection, and a read left running by a
    /// cancelled pull).
    async fn lane(&self, region: &RegionId) -> Result<Arc<Mutex<Lane>>> {
        let mut lanes = self.inner.lanes.lock().await;
        if let Some(l) = lanes.get(region) {
            return Ok(l.clone());
        }
        let lane = Arc::new(Mutex::new(Lane {
            reader: self.inner.conn.dedicated(self.inner.options.block)?,
            pending: None,
            ready: VecDeque::new(),
        }));
        lanes.insert(region.clone(), lane.clone());
        Ok(lane)
    }

    /// Whether the region's lane holds entries read but not handed out, or a read a
    /// cancelled pull left running. A lane busy with another pull counts as empty.
    async fn has_buffered(&self, region: &RegionId) -> Result<bool> {
        let lane = self.lane(region).await?;
        Ok(lane
            .try_lock()
            .is_ok_and(|l| !l.ready.is_empty() || l.pending.is_some()))
    }

    /// Read up to `max` new entries for `region` as this node's consumer, waiting until
    /// there is one or `cancel` fires (then an empty batch). The entries stay pending
    /// until `ack`: if this node dies first, another one `reclaim`s them after the
    /// visibility timeout. A read that `cancel` interrupts is kept, not dropped (Redis
    /// may already have handed it entries): the next pull of the region goes on
    /// waiting for it, so nothing it took is stranded.
    pub async fn pull_deliveries(
        &self,
        region: &RegionId,
        max: usize,
        cancel: &CancellationToken,
    ) -> Result<Vec<Delivery>> {
        let max = max.max(1);
        let lane = self.lane(region).await?;
        // One pull per region at a time: concurrent ones would queue on the
        // connection anyway.
        let mut lane = tokio::select! {
            _ = cancel.cancelled() => return Ok(Vec::new()),
            lane = lane.lock() => lane,
        };
        let mut retried_group = false;
        loop {
            if !lane.ready.is_empty() {
                let n = max.min(lane.ready.len());
                return Ok(lane.ready.drain(..n).collect());
            }
            if cancel.is_cancelled() {
                return Ok(Vec::new());
            }
            let mut read = match lane.pending.take() {
                Some(read) => read,
                None => {
                    self.ensure_group(region).await?;
                    self.read(lane.reader.clone(), region, max)
                }
            };
            let reply = tokio::select! {
                _ = cancel.cancelled() => {
                    lane.pending = Some(read);
                    return Ok(Vec::new());
                }
                r = &mut read => r,
            };
            let reply = match reply {
                Ok(r) => r,
                Err(Error::Storage(m)) if m.contains("NOGROUP") && !retried_group => {
                    warn!(region = %region, "dispatch consumer group vanished; creating it again");
                    self.forget_group(region).await;
                    retried_group = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let entries: Vec<StreamId> = reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default();
            if entries.is_empty() {
                continue;
            }
            let out = self.decode(region, entries).await;
            lane.ready.extend(out);
        }
    }

    /// One blocking `XREADGROUP` of new entries, owning everything it needs, so that a
    /// cancelled pull can keep it for the next one.
    fn read(&self, reader: Connection, region: &RegionId, max: usize) -> PendingRead {
        let o = &self.inner.options;
        let block_ms = o.block.as_millis().max(1) as u64;
        let (group, consumer, key) = (o.group.clone(), o.consumer.clone(), self.stream_key(region));
        Box::pin(async move {
            reader
                .run("read dispatches", |mut c| async move {
                    redis::cmd("XREADGROUP")
                        .arg("GROUP")
                        .arg(&group)
                        .arg(&consumer)
                        .arg("COUNT")
                        .arg(max)
                        .arg("BLOCK")
                        .arg(block_ms)
                        .arg("STREAMS")
                        .arg(&key)
                        .arg(">")
                        .query_async::<Option<StreamReadReply>>(&mut c)
                        .await
                })
                .await
        })
    }

    /// Decode entries; an entry that cannot be decoded is logged and dropped from the
    /// stream (it could never run; the run log's recovery still has its run).
    async fn decode(&self, region: &RegionId, entries: Vec<StreamId>) -> Vec<Delivery> {
        let mut out = Vec::with_capacity(entries.len());
        let mut bad = Vec::new();
        for e in entries {
            let parsed = match e.map.get(FIELD) {
                Some(redis::Value::BulkString(b)) => {
                    serde_json::from_slice::<WireIn>(b).map_err(|e| e.to_string())
                }
                other => Err(format!("no {FIELD:?} field: {other:?}")),
            };
            match parsed {
                Ok(w) => out.push(Delivery {
                    id: e.id,
                    dispatch: Dispatch {
                        run: w.run,
                        job: Arc::new(w.job),
                        epoch: w.epoch,
                        shard: w.shard,
                    },
                }),
                Err(why) => {
                    error!(region = %region, id = %e.id, %why, "dropping an undecodable dispatch");
                    bad.push(e.id);
                }
            }
        }
        if !bad.is_empty()
            && let Err(e) = self.ack(region, &bad).await
        {
            warn!(error = %e, "could not drop undecodable dispatches");
        }
        out
    }

    /// Acknowledge entries of `region` (done with them) and delete them from the
    /// stream, which frees their room under `queue_max`. Unknown ids are ignored.
    /// Returns how many were pending.
    pub async fn ack(&self, region: &RegionId, ids: &[String]) -> Result<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        let key = self.stream_key(region);
        let group = self.inner.options.group.clone();
        let (acked, _deleted): (usize, usize) = self
            .inner
            .conn
            .run("ack dispatches", |mut c| async move {
                redis::pipe()
                    .atomic()
                    .cmd("XACK")
                    .arg(&key)
                    .arg(&group)
                    .arg(ids)
                    .cmd("XDEL")
                    .arg(&key)
                    .arg(ids)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(acked)
    }

    /// Take over up to `max` entries of `region` that have been pending (read, not
    /// acknowledged) for at least `min_idle`, whoever held them, and deliver them to
    /// this node's consumer again.
    pub async fn reclaim(
        &self,
        region: &RegionId,
        min_idle: Duration,
        max: usize,
    ) -> Result<Vec<Delivery>> {
        let max = max.max(1);
        match self.reclaim_once(region, min_idle, max).await {
            Err(Error::Storage(m)) if m.contains("NOGROUP") => {
                warn!(region = %region, "dispatch consumer group vanished; creating it again");
                self.forget_group(region).await;
                self.reclaim_once(region, min_idle, max).await
            }
            other => other,
        }
    }

    async fn reclaim_once(
        &self,
        region: &RegionId,
        min_idle: Duration,
        max: usize,
    ) -> Result<Vec<Delivery>> {
        self.ensure_group(region).await?;
        let key = self.stream_key(region);
        let o = &self.inner.options;
        let min_idle_ms = min_idle.as_millis() as u64;
        let mut start = "0-0".to_owned();
        let mut entries = Vec::new();
        for _ in 0..RECLAIM_STEPS_MAX {
            let count = max - entries.len();
            let (group, consumer, key2, from) = (
                o.group.clone(),
                o.consumer.clone(),
                key.clone(),
                start.clone(),
            );
            let reply: StreamAutoClaimReply = self
                .inner
                .conn
                .run("reclaim dispatches", |mut c| async move {
                    redis::cmd("XAUTOCLAIM")
                        .arg(&key2)
                        .arg(&group)
                        .arg(&consumer)
                        .arg(min_idle_ms)
                        .arg(&from)
                        .arg("COUNT")
                        .arg(count)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            entries.extend(reply.claimed);
            start = reply.next_stream_id;
            if start == "0-0" || entries.len() >= max {
                break;
            }
        }
        Ok(self.decode(region, entries).await)
    }

    /// Entries in `region`'s stream: queued plus in flight.
    pub async fn len(&self, region: &RegionId) -> Result<usize> {
        let key = self.stream_key(region);
        self.inner
            .conn
            .run("stream length", |mut c| async move {
                redis::cmd("XLEN").arg(&key).query_async(&mut c).await
            })
            .await
    }

    /// Whether `region`'s stream holds no entry.
    pub async fn is_empty(&self, region: &RegionId) -> Result<bool> {
        Ok(self.len(region).await? == 0)
    }
}

#[async_trait]
impl DispatchQueue for Queue {
    async fn push(&self, region: &RegionId, batch: Vec<Dispatch>) -> Result<Vec<Dispatch>> {
        if batch.is_empty() {
            return Ok(batch);
        }
        let mut payloads = Vec::with_capacity(batch.len());
        for d in &batch {
            let wire = WireOut {
                run: &d.run,
                job: &d.job,
                epoch: d.epoch,
                shard: d.shard,
            };
            payloads.push(serde_json::to_vec(&wire).map_err(|e| Error::Storage(e.to_string()))?);
        }
        let key = self.stream_key(region);
        let bound = self.inner.options.queue_max;
        let script = &self.inner.push;
        let added: usize = self
            .inner
            .conn
            .run("push dispatches", |mut c| async move {
                let mut inv = script.prepare_invoke();
                inv.key(&key).arg(bound).arg(FIELD).arg(&payloads[..]);
                inv.invoke_async(&mut c).await
            })
            .await?;
        let mut batch = batch;
        Ok(batch.split_off(added.min(batch.len())))
    }

    /// Entries held past the visibility timeout by any consumer first, else new ones.
    /// What is handed over is acknowledged at once: trait users have no ids to
    /// acknowledge with, so from here on the dispatch lives in this process, as with the
    /// embedded queue (a crash loses it; the owner's recovery re-dispatches the run from
    /// the run log's `unfinished`). Delivery into the process is at least once (a crash
    /// between the read and the acknowledgement, or a failed acknowledgement, delivers
    /// again after the visibility timeout); callers dedupe through the run log's start
    /// rule. `pull_deliveries` + `ack` after the start is recorded is the stronger
    /// protocol.
    async fn pull(
        &self,
        region: &RegionId,
        max: usize,
        cancel: &CancellationToken,
    ) -> Result<Vec<Dispatch>> {
        let timeout = self.inner.options.visibility_timeout;
        // What this process already read comes first: reclaiming before it could take
        // those very entries again (they look idle in Redis) and deliver them twice.
        let mut got = if self.has_buffered(region).await? {
            Vec::new()
        } else {
            self.reclaim(region, timeout, max).await?
        };
        if got.is_empty() {
            got = self.pull_deliveries(region, max, cancel).await?;
        }
        let ids: Vec<String> = got.iter().map(|d| d.id.clone()).collect();
        if let Err(e) = self.ack(region, &ids).await {
            // They come back after the visibility timeout; the start rule dedupes.
            warn!(error = %e, region = %region, "could not acknowledge pulled dispatches");
        }
        Ok(got.into_iter().map(|d| d.dispatch).collect())
    }

    /// Entries held past the visibility timeout by any consumer first (what this
    /// process already read comes before them), else new ones; nothing is acknowledged
    /// here: the region acknowledges each once its run is settled.
    async fn receive(
        &self,
        region: &RegionId,
        max: usize,
        cancel: &CancellationToken,
    ) -> Result<Vec<Delivery>> {
        let timeout = self.inner.options.visibility_timeout;
        let got = if self.has_buffered(region).await? {
            Vec::new()
        } else {
            self.reclaim(region, timeout, max).await?
        };
        if got.is_empty() {
            // One blocking read at most, so the next call reclaims again: entries a
            // dead (or clock-gated) consumer holds must not wait for new traffic. A
            // read cut short is kept and finished by the next call.
            let round = cancel.child_token();
            let timer = round.clone();
            let block = self.inner.options.block;
            let stop_after = tokio::spawn(async move {
                tokio::time::sleep(block + Duration::from_millis(100)).await;
                timer.cancel();
            });
            let read = self.pull_deliveries(region, max, &round).await;
            stop_after.abort();
            return read;
        }
        Ok(got)
    }

    async fn ack(&self, region: &RegionId, ids: &[String]) -> Result<()> {
        let ids: Vec<String> = ids.iter().filter(|i| !i.is_empty()).cloned().collect();
        Queue::ack(self, region, &ids).await.map(|_| ())
    }
}
