//! Simulated elections, etcd-like (the rules of `adapters/etcd/election.rs`) in virtual
//! time: per shard a line of candidates ordered by the world's revision (a candidacy's
//! creation revision is its epoch, so epochs strictly increase); the first in line owns
//! the shard. Each candidacy has a lease of `ttl` that a keeper task renews every
//! `ttl / 3` while its node incarnation is alive, not paused and hears etcd. The world
//! removes a candidacy when its lease expires (last renewal + TTL) or is revoked (the
//! node ended the term while it could reach etcd), then grants the next candidate;
//! ownership changes go to the trace. The owner's own view: its term ends at the last
//! renewal + TTL - margin (`Term.left`, and `ended` cancelled then), when the key goes,
//! or on resign.
//!
//! Must not decide what an owner does with its term, read the wall clock, or iterate
//! anything but B-trees.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Ctx, Gate, Link, State, TraceEvent, World, term_margin};
use crate::adapters::clock::monotonic_now;
use crate::core::Timestamp;
use crate::core::ids::{Epoch, NodeId};
use crate::ports::{Error, Result, ShardOwner, Term};

/// Shortest lease the simulated etcd grants (a zero TTL would renew in a busy loop).
pub const LEASE_TTL_MIN: Duration = Duration::from_millis(10);

/// One candidacy: a key in a shard's line, bound to its lease.
struct Candidacy {
    /// The simulated process that holds the lease (its faults gate renewals).
    holder: NodeId,
    incarnation: u64,
    /// The node id it campaigns as (the key's value).
    node: NodeId,
    shard: u32,
    ttl: Duration,
    renewed_at: Instant,
    next_tick: Instant,
    /// Renewals have stopped (the term's deadline passed, or the node ended it while it
    /// could not reach etcd): the lease only waits to expire.
    lapsed: bool,
    ended: CancellationToken,
    /// The term's deadline: last acknowledged renewal + TTL - margin.
    deadline: Arc<Mutex<Instant>>,
}

impl Candidacy {
    fn span(&self) -> Duration {
        self.ttl - term_margin(self.ttl)
    }
}

#[derive(Default)]
pub(crate) struct Store {
    /// By creation revision (= epoch).
    keys: BTreeMap<u64, Candidacy>,
    lines: BTreeMap<u32, BTreeSet<u64>>,
}

impl Store {
    fn first(&self, shard: u32) -> Option<u64> {
        self.lines.get(&shard).and_then(|l| l.first().copied())
    }
}

/// Put a candidacy in its shard's line; grant it if it is first.
fn add(st: &mut State, c: Candidacy, at: Timestamp) -> u64 {
    let rev = st.next_revision();
    let (shard, node) = (c.shard, c.node.clone());
    st.election.keys.insert(rev, c);
    st.election.lines.entry(shard).or_default().insert(rev);
    if st.election.first(shard) == Some(rev) {
        st.record(TraceEvent::TermGranted {
            at,
            shard,
            node,
            epoch: Epoch(rev),
        });
    }
    rev
}

/// Take a candidacy out of the world (its key is gone); the next in line is granted.
fn remove(st: &mut State, rev: u64, why: &str, at: Timestamp) {
    let Some(c) = st.election.keys.remove(&rev) else {
        return;
    };
    c.ended.cancel();
    let was_first = st.election.first(c.shard) == Some(rev);
    if let Some(line) = st.election.lines.get_mut(&c.shard) {
        line.remove(&rev);
        if line.is_empty() {
            st.election.lines.remove(&c.shard);
        }
    }
    if !was_first {
        return;
    }
    st.record(TraceEvent::TermEnded {
        at,
        shard: c.shard,
        node: c.node,
        epoch: Epoch(rev),
        why: why.to_owned(),
    });
    if let Some(next) = st.election.first(c.shard) {
        let node = st.election.keys[&next].node.clone();
        st.record(TraceEvent::TermGranted {
            at,
            shard: c.shard,
            node,
            epoch: Epoch(next),
        });
    }
}

/// The lease of candidacy `rev`: renews it while its node can, ends the term when its
/// deadline passes, revokes it when the node ends the term, expires it after its TTL.
async fn keeper(world: World, rev: u64) {
    loop {
        let (wake, ended, watch_end) = {
            let st = world.lock();
            let Some(c) = st.election.keys.get(&rev) else {
                return;
            };
            let mut wake = c.renewed_at + c.ttl;
            if !c.lapsed {
                wake = wake.min(c.next_tick).min(c.renewed_at + c.span());
            }
            (wake, c.ended.clone(), !c.lapsed)
        };
        let by_node = tokio::select! {
            biased;
            _ = ended.cancelled(), if watch_end => true,
            _ = tokio::time::sleep_until(wake) => false,
        };
        let changed = {
            let mut st = world.lock();
            let at = world.true_now();
            let now = monotonic_now();
            let Some(c) = st.election.keys.get(&rev) else {
                return;
            };
            let (holder, inc) = (c.holder.clone(), c.incarnation);
            let hears = st.hears_etcd(&holder, inc);
            let c = st.election.keys.get_mut(&rev).expect("present");
            if by_node && !c.lapsed {
                // The node ended its term (resign, fenced, dropped, gave up a campaign):
                // it revokes the lease if it can reach etcd, else stops renewing.
                c.lapsed = true;
                if hears {
                    remove(&mut st, rev, "revoked", at);
                    true
                } else {
                    false
                }
            } else if now >= c.renewed_at + c.ttl {
                remove(&mut st, rev, "expired", at);
                true
            } else {
                if !c.lapsed && now >= c.next_tick {
                    c.next_tick = now + c.ttl / 3;
                    if hears {
                        c.renewed_at = now;
                        *c.deadline.lock().unwrap_or_else(|p| p.into_inner()) = now + c.span();
                    }
                }
                if !c.lapsed && now >= c.renewed_at + c.span() {
                    // No renewal acknowledged in time: the owner stops before the lease
                    // can expire in etcd (it stays there until then).
                    c.lapsed = true;
                    c.ended.cancel();
                }
                false
            }
        };
        if changed {
            world.shared.elections.notify_waiters();
        }
    }
}

/// A term this handle holds on a shard.
struct Held {
    rev: u64,
    ended: CancellationToken,
    deadline: Arc<Mutex<Instant>>,
}

fn term_of(h: &Held) -> Term {
    let deadline = h.deadline.clone();
    Term {
        epoch: Epoch(h.rev),
        ended: h.ended.clone(),
        left: Some(Arc::new(move || {
            deadline
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .saturating_duration_since(monotonic_now())
        })),
    }
}

/// One node's elections. Dropping it ends every term it holds.
pub(crate) struct SimElection {
    ctx: Ctx,
    ttl: Duration,
    terms: Mutex<BTreeMap<u32, Held>>,
}

impl SimElection {
    pub(crate) fn new(ctx: Ctx, ttl: Duration) -> Self {
        Self {
            ctx,
            ttl: ttl.max(LEASE_TTL_MIN),
            terms: Mutex::new(BTreeMap::new()),
        }
    }

    fn terms(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Held>> {
        self.terms.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for SimElection {
    fn drop(&mut self) {
        for held in self.terms().values() {
            held.ended.cancel();
        }
    }
}

#[async_trait]
impl crate::ports::Election for SimElection {
    async fn campaign(&self, node: &NodeId, shard: u32) -> Result<Term> {
        self.ctx.enter(Link::Etcd).await?;
        if let Some(h) = self.terms().get(&shard)
            && !h.ended.is_cancelled()
        {
            return Ok(term_of(h));
        }
        let world = self.ctx.world.clone();
        let (rev, ended, deadline) = {
            let mut st = world.lock();
            if let Gate::Fail(e) = self.ctx.gate(&st, Link::Etcd) {
                return Err(e);
            }
            let now = monotonic_now();
            let ended = CancellationToken::new();
            let deadline = Arc::new(Mutex::new(now + self.ttl - term_margin(self.ttl)));
            let c = Candidacy {
                holder: self.ctx.node.clone(),
                incarnation: self.ctx.incarnation,
                node: node.clone(),
                shard,
                ttl: self.ttl,
                renewed_at: now,
                next_tick: now + self.ttl / 3,
                lapsed: false,
                ended: ended.clone(),
                deadline: deadline.clone(),
            };
            (add(&mut st, c, world.true_now()), ended, deadline)
        };
        world.shared.elections.notify_waiters();
        tokio::spawn(keeper(world.clone(), rev));
        // Dropped before it wins (or failing), the candidacy is withdrawn.
        let guard = ended.clone().drop_guard();
        loop {
            let elections = world.shared.elections.notified();
            let faults = world.shared.faults.notified();
            tokio::pin!(elections, faults);
            elections.as_mut().enable();
            faults.as_mut().enable();
            {
                let st = world.lock();
                match self.ctx.gate(&st, Link::Etcd) {
                    Gate::Fail(e) if !st.is_current(&self.ctx.node, self.ctx.incarnation) => {
                        return Err(e);
                    }
                    // Paused, or cut off from etcd: the candidacy waits (its lease may
                    // lapse meanwhile).
                    Gate::Fail(_) | Gate::Wait => {}
                    Gate::Go => {
                        if !st.election.keys.contains_key(&rev) || ended.is_cancelled() {
                            return Err(Error::Unavailable(format!(
                                "campaign for shard {shard}: lease lost while waiting"
                            )));
                        }
                        if st.election.first(shard) == Some(rev) {
                            break;
                        }
                    }
                }
            }
            tokio::select! {
                biased;
                _ = &mut faults => {}
                _ = &mut elections => {}
                // (Once cancelled it would be ready forever: then wait for the node.)
                _ = ended.cancelled(), if !ended.is_cancelled() => {}
            }
        }
        let _ = guard.disarm();
        let held = Held {
            rev,
            ended,
            deadline,
        };
        let term = term_of(&held);
        if let Some(old) = self.terms().insert(shard, held) {
            old.ended.cancel();
        }
        Ok(term)
    }

    async fn resign(&self, shard: u32) -> Result<()> {
        // Waits while paused; fails afterwards if etcd cannot be reached.
        let reach = self.ctx.enter(Link::Etcd).await;
        let held = self.terms().remove(&shard);
        let Some(held) = held else {
            return reach;
        };
        // The term ends first, then the key goes.
        held.ended.cancel();
        reach?;
        let world = &self.ctx.world;
        {
            let mut st = world.lock();
            if let Gate::Fail(e) = self.ctx.gate(&st, Link::Etcd) {
                return Err(e);
            }
            remove(&mut st, held.rev, "resigned", world.true_now());
        }
        world.shared.elections.notify_waiters();
        Ok(())
    }

    async fn owner_of(&self, shard: u32) -> Result<Option<ShardOwner>> {
        self.ctx
            .call(Link::Etcd, |st| {
                let Some(rev) = st.election.first(shard) else {
                    return Ok(None);
                };
                let c = &st.election.keys[&rev];
                Ok(Some(ShardOwner {
                    shard,
                    node: c.node.clone(),
                    epoch: Epoch(rev),
                    lease_left: Some(
                        (c.renewed_at + c.ttl).saturating_duration_since(monotonic_now()),
                    ),
                }))
            })
            .await
    }
}
