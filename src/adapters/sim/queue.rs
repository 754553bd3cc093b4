//! Simulated dispatch queues, Redis-streams-like (the rules of
//! `adapters/redis/queue.rs`): one stream per region shared by the world, ids in push
//! order; `push` adds while the stream holds fewer than `queue_max` entries (queued plus
//! pending) and hands the rest back in order; `receive` reads as this node's consumer:
//! entries pending longer than the visibility timeout with any consumer first (taken
//! over, delivered again), else new entries in order, waiting until there is one or
//! `cancel` fires; `ack` deletes entries; `pull` is `receive` and `ack` at once.
//!
//! Unlike a blocked `XREADGROUP`, a waiting `receive` also wakes when a pending entry
//! passes the visibility timeout. Must not reorder entries, decide anything about
//! scheduling, or iterate anything but B-trees.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Ctx, Gate, Link};
use crate::adapters::clock::monotonic_now;
use crate::core::ids::{NodeId, RegionId};
use crate::ports::{Delivery, Dispatch, Result};

struct Entry {
    dispatch: Dispatch,
    /// The consumer holding it and when it was (last) delivered.
    held: Option<(NodeId, Instant)>,
}

#[derive(Default)]
struct Stream {
    next_id: u64,
    entries: BTreeMap<u64, Entry>,
    /// Entries not yet delivered, in order.
    fresh: BTreeSet<u64>,
    /// Delivered entries by (delivery instant, id).
    pending: BTreeSet<(Instant, u64)>,
}

impl Stream {
    fn deliver(&mut self, id: u64, to: &NodeId, now: Instant) -> Option<Delivery> {
        let e = self.entries.get_mut(&id)?;
        if let Some((_, at)) = e.held.take() {
            self.pending.remove(&(at, id));
        }
        self.fresh.remove(&id);
        e.held = Some((to.clone(), now));
        self.pending.insert((now, id));
        Some(Delivery {
            id: id.to_string(),
            dispatch: e.dispatch.clone(),
        })
    }

    fn remove(&mut self, id: u64) {
        if let Some(e) = self.entries.remove(&id) {
            self.fresh.remove(&id);
            if let Some((_, at)) = e.held {
                self.pending.remove(&(at, id));
            }
        }
    }
}

#[derive(Default)]
pub(crate) struct Store {
    streams: BTreeMap<RegionId, Stream>,
}

/// One node's handle on the dispatch streams.
pub(crate) struct SimQueues {
    ctx: Ctx,
    visibility_timeout: Duration,
    queue_max: usize,
}

impl SimQueues {
    pub(crate) fn new(ctx: Ctx, visibility_timeout: Duration, queue_max: usize) -> Self {
        Self {
            ctx,
            visibility_timeout,
            queue_max,
        }
    }
}

#[async_trait]
impl crate::ports::DispatchQueue for SimQueues {
    async fn push(&self, region: &RegionId, batch: Vec<Dispatch>) -> Result<Vec<Dispatch>> {
        if batch.is_empty() {
            return Ok(batch);
        }
        let bound = self.queue_max;
        let (added, rest) = self
            .ctx
            .call(Link::Redis, |st| {
                let s = st.queues.streams.entry(region.clone()).or_default();
                let room = bound.saturating_sub(s.entries.len()).min(batch.len());
                let mut batch = batch;
                let rest = batch.split_off(room);
                for dispatch in batch {
                    let id = s.next_id;
                    s.next_id += 1;
                    s.entries.insert(
                        id,
                        Entry {
                            dispatch,
                            held: None,
                        },
                    );
                    s.fresh.insert(id);
                }
                Ok((room, rest))
            })
            .await?;
        if added > 0 {
            self.ctx.shared().streams.notify_waiters();
        }
        Ok(rest)
    }

    async fn pull(
        &self,
        region: &RegionId,
        max: usize,
        cancel: &CancellationToken,
    ) -> Result<Vec<Dispatch>> {
        let got = self.receive(region, max, cancel).await?;
        {
            let mut st = self.ctx.world.lock();
            if let Some(s) = st.queues.streams.get_mut(region) {
                for d in &got {
                    if let Ok(id) = d.id.parse() {
                        s.remove(id);
                    }
                }
            }
        }
        Ok(got.into_iter().map(|d| d.dispatch).collect())
    }

    async fn receive(
        &self,
        region: &RegionId,
        max: usize,
        cancel: &CancellationToken,
    ) -> Result<Vec<Delivery>> {
        let max = max.max(1);
        let shared = self.ctx.shared();
        loop {
            if cancel.is_cancelled() {
                return Ok(Vec::new());
            }
            let streams = shared.streams.notified();
            let faults = shared.faults.notified();
            tokio::pin!(streams, faults);
            streams.as_mut().enable();
            faults.as_mut().enable();
            let wake = {
                let mut st = self.ctx.world.lock();
                match self.ctx.gate(&st, Link::Redis) {
                    Gate::Fail(e) => return Err(e),
                    Gate::Wait => None,
                    Gate::Go => {
                        let now = monotonic_now();
                        let s = st.queues.streams.entry(region.clone()).or_default();
                        let vt = self.visibility_timeout;
                        // Taken over first, in id order (as XAUTOCLAIM).
                        let mut stale: Vec<u64> = s
                            .pending
                            .iter()
                            .take_while(|(at, _)| *at + vt <= now)
                            .map(|(_, id)| *id)
                            .collect();
                        stale.sort_unstable();
                        stale.truncate(max);
                        let ids: Vec<u64> = if stale.is_empty() {
                            s.fresh.iter().take(max).copied().collect()
                        } else {
                            stale
                        };
                        if !ids.is_empty() {
                            return Ok(ids
                                .into_iter()
                                .filter_map(|id| s.deliver(id, &self.ctx.node, now))
                                .collect());
                        }
                        s.pending.first().map(|(at, _)| *at + vt)
                    }
                }
            };
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(Vec::new()),
                _ = &mut faults => {}
                _ = &mut streams => {}
                _ = sleep => {}
            }
        }
    }

    async fn ack(&self, region: &RegionId, ids: &[String]) -> Result<()> {
        self.ctx
            .call(Link::Redis, |st| {
                if let Some(s) = st.queues.streams.get_mut(region) {
                    for id in ids {
                        if let Ok(id) = id.parse() {
                            s.remove(id);
                        }
                    }
                }
                Ok(())
            })
            .await
    }
}
