//! Simulated membership, etcd-like (the rules of `adapters/etcd/membership.rs`): a
//! node's registration (its regions and endpoint) lives while its lease is renewed; a
//! keeper task renews it every `ttl / 3` while the node incarnation is alive, not paused
//! and hears etcd, lets it vanish at last renewal + TTL, and registers it again once the
//! node hears etcd anew (as the etcd adapter does after a long partition). `join`
//! replaces the handle's registration; `leave` removes it at once (or lets it expire if
//! etcd cannot be reached).
//!
//! Must not decide what a region loss means, read the wall clock, or iterate anything
//! but B-trees.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Ctx, Link, World};
use crate::adapters::clock::monotonic_now;
use crate::core::ids::{NodeId, RegionId};
use crate::ports::{Error, Member, Result};

/// Regions one node may register at most (as the etcd adapter's transaction bound).
pub const REGIONS_PER_NODE_MAX: usize = 128;
/// Shortest lease the simulated etcd grants (a zero TTL would renew in a busy loop).
pub const LEASE_TTL_MIN: Duration = Duration::from_millis(10);

struct Registration {
    /// The simulated process that holds the lease.
    holder: NodeId,
    incarnation: u64,
    /// The node id it registers as.
    node: NodeId,
    regions: Vec<RegionId>,
    endpoint: String,
    ttl: Duration,
    renewed_at: Instant,
    next_tick: Instant,
    /// Visible to readers (the lease is live).
    present: bool,
    /// Left while etcd was unreachable: no more renewals, gone at expiry.
    stopped: bool,
}

#[derive(Default)]
pub(crate) struct Store {
    regs: BTreeMap<u64, Registration>,
}

impl Store {
    fn live(&self) -> impl Iterator<Item = &Registration> {
        self.regs.values().filter(|r| r.present)
    }
}

/// Keep registration `id` alive (see the module doc); ends when it is removed.
async fn keeper(world: World, id: u64) {
    loop {
        let wake = {
            let st = world.lock();
            let Some(r) = st.members.regs.get(&id) else {
                return;
            };
            let mut wake = r.next_tick;
            if r.present {
                wake = wake.min(r.renewed_at + r.ttl);
            }
            wake
        };
        tokio::time::sleep_until(wake).await;
        let mut st = world.lock();
        let now = monotonic_now();
        let Some(r) = st.members.regs.get(&id) else {
            return;
        };
        let (holder, inc) = (r.holder.clone(), r.incarnation);
        let hears = st.hears_etcd(&holder, inc);
        let current = st.is_current(&holder, inc);
        let r = st.members.regs.get_mut(&id).expect("present");
        if r.present && now >= r.renewed_at + r.ttl {
            r.present = false;
        }
        if now >= r.next_tick {
            r.next_tick = now + r.ttl / 3;
            if hears && !r.stopped {
                r.renewed_at = now;
                r.present = true;
            }
        }
        if !r.present && (r.stopped || !current) {
            st.members.regs.remove(&id);
            return;
        }
    }
}

/// One node's membership handle. Dropping it withdraws its registration.
pub(crate) struct SimMembership {
    ctx: Ctx,
    ttl: Duration,
    current: Mutex<Option<u64>>,
}

impl SimMembership {
    pub(crate) fn new(ctx: Ctx, ttl: Duration) -> Self {
        Self {
            ctx,
            ttl: ttl.max(LEASE_TTL_MIN),
            current: Mutex::new(None),
        }
    }

    /// Withdraw registration `id`: at once if etcd can be reached, else it expires.
    fn withdraw(&self, id: u64) {
        let mut st = self.ctx.world.lock();
        if st.hears_etcd(&self.ctx.node, self.ctx.incarnation) {
            st.members.regs.remove(&id);
        } else if let Some(r) = st.members.regs.get_mut(&id) {
            r.stopped = true;
        }
    }

    fn take(&self) -> Option<u64> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

impl Drop for SimMembership {
    fn drop(&mut self) {
        if let Some(id) = self.take() {
            self.withdraw(id);
        }
    }
}

#[async_trait]
impl crate::ports::Membership for SimMembership {
    async fn join(&self, node: &NodeId, regions: &[RegionId], endpoint: &str) -> Result<()> {
        if regions.len() > REGIONS_PER_NODE_MAX {
            return Err(Error::Storage(format!(
                "a node hosts at most {REGIONS_PER_NODE_MAX} regions"
            )));
        }
        self.leave().await?;
        let ttl = self.ttl;
        let (holder, incarnation) = (self.ctx.node.clone(), self.ctx.incarnation);
        let id = self
            .ctx
            .call(Link::Etcd, |st| {
                let now = monotonic_now();
                let id = st.next_revision();
                st.members.regs.insert(
                    id,
                    Registration {
                        holder,
                        incarnation,
                        node: node.clone(),
                        regions: regions.to_vec(),
                        endpoint: endpoint.to_owned(),
                        ttl,
                        renewed_at: now,
                        next_tick: now + ttl / 3,
                        present: true,
                        stopped: false,
                    },
                );
                Ok(id)
            })
            .await?;
        tokio::spawn(keeper(self.ctx.world.clone(), id));
        if let Some(old) = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(id)
        {
            // A concurrent join won the race before this one: keep the newest.
            self.withdraw(old);
        }
        Ok(())
    }

    async fn leave(&self) -> Result<()> {
        // Waits while paused; a crashed incarnation's call fails.
        if let Err(e) = self.ctx.enter(Link::Etcd).await {
            let current = {
                let st = self.ctx.world.lock();
                st.is_current(&self.ctx.node, self.ctx.incarnation)
            };
            if !current {
                return Err(e);
            }
        }
        if let Some(id) = self.take() {
            self.withdraw(id);
        }
        Ok(())
    }

    async fn live_regions(&self) -> Result<Vec<RegionId>> {
        self.ctx
            .call(Link::Etcd, |st| {
                let mut regions: Vec<RegionId> = st
                    .members
                    .live()
                    .flat_map(|r| r.regions.iter().cloned())
                    .collect();
                regions.sort();
                regions.dedup();
                Ok(regions)
            })
            .await
    }

    async fn members(&self, region: &RegionId) -> Result<Vec<Member>> {
        self.ctx
            .call(Link::Etcd, |st| {
                let mut out: Vec<Member> = st
                    .members
                    .live()
                    .filter(|r| r.regions.contains(region))
                    .map(|r| Member {
                        node: r.node.clone(),
                        region: region.clone(),
                        endpoint: r.endpoint.clone(),
                    })
                    .collect();
                // One key per (region, node) in etcd: the newest registration wins.
                out.reverse();
                out.sort_by(|a, b| a.node.cmp(&b.node));
                out.dedup_by(|a, b| a.node == b.node);
                Ok(out)
            })
            .await
    }
}
