//! Node membership in etcd: a node registers `{p}/members/{region}/{node}` (value: the
//! member as JSON) for every region it hosts, bound to one lease it keeps alive. If the
//! node dies the lease expires and its registrations vanish within the TTL; if the lease
//! is lost while the node lives (a partition longer than the TTL), a background task
//! registers again under a new lease as soon as etcd answers.
//!
//! Reads go to etcd each time (one small range read), so they are never staler than
//! etcd itself; callers poll at their own pace. Must not decide what a region loss
//! means: the owner applies the jobs' `region_loss` policies.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Backoff, Connection};
use crate::core::ids::{NodeId, RegionId};
use crate::ports::{Error, Member, Result};

/// Regions one node may register at most (one transaction).
pub const REGIONS_PER_NODE_MAX: usize = super::TXN_OPS_MAX;

/// Membership settings.
#[derive(Clone, Debug)]
pub struct MembershipOptions {
    /// Lease TTL (whole seconds, etcd grants at least 2 s): a dead node's regions count
    /// as lost after about this long.
    pub ttl: Duration,
}

impl Default for MembershipOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(3),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Record {
    node: String,
    region: String,
    endpoint: String,
}

struct Registration {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Membership through etcd leases. Cheap to clone; dropping the last clone withdraws
/// the registration (by revoking its lease).
#[derive(Clone)]
pub struct Membership {
    conn: Connection,
    options: MembershipOptions,
    current: Arc<Mutex<Option<Registration>>>,
    _dropped: Arc<DropStop>,
}

/// Stops the registration task when the last `Membership` clone goes.
struct DropStop(Arc<Mutex<Option<Registration>>>);

impl Drop for DropStop {
    fn drop(&mut self) {
        if let Ok(mut g) = self.0.lock()
            && let Some(r) = g.take()
        {
            r.stop.cancel();
        }
    }
}

impl Membership {
    pub fn new(conn: Connection, options: MembershipOptions) -> Self {
        let current = Arc::new(Mutex::new(None));
        Self {
            conn,
            options,
            _dropped: Arc::new(DropStop(current.clone())),
            current,
        }
    }

    fn ttl_secs(&self) -> i64 {
        let ms = self.options.ttl.as_millis().max(1) as i64;
        (ms + 999) / 1000
    }

    async fn read(&self, prefix: &str) -> Result<Vec<Member>> {
        let (kvs, _) = self.conn.get_prefix("read members", prefix).await?;
        let mut out = Vec::with_capacity(kvs.len());
        for kv in kvs {
            match serde_json::from_slice::<Record>(kv.value()) {
                Ok(r) => out.push(Member {
                    node: NodeId(r.node),
                    region: RegionId(r.region),
                    endpoint: r.endpoint,
                }),
                Err(e) => warn!(error = %e, "undecodable member record skipped"),
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl crate::ports::Membership for Membership {
    async fn join(&self, node: &NodeId, regions: &[RegionId], endpoint: &str) -> Result<()> {
        if regions.len() > REGIONS_PER_NODE_MAX {
            return Err(Error::Storage(format!(
                "a node hosts at most {REGIONS_PER_NODE_MAX} regions"
            )));
        }
        self.leave().await?;
        let mut puts = Vec::with_capacity(regions.len());
        for region in regions {
            let record = Record {
                node: node.to_string(),
                region: region.to_string(),
                endpoint: endpoint.to_string(),
            };
            let value = serde_json::to_vec(&record).map_err(|e| Error::Storage(e.to_string()))?;
            puts.push((self.conn.key(&format!("members/{region}/{node}")), value));
        }
        let stop = CancellationToken::new();
        let (first_tx, first_rx) = oneshot::channel();
        let task = tokio::spawn(keep_registered(
            self.conn.clone(),
            self.ttl_secs(),
            puts,
            stop.clone(),
            first_tx,
        ));
        let first = first_rx
            .await
            .unwrap_or_else(|_| Err(Error::Unavailable("registration task stopped".into())));
        if first.is_err() {
            stop.cancel();
            let _ = task.await;
            return first;
        }
        info!(%node, regions = regions.len(), "joined the mesh");
        *self.current.lock().expect("membership lock") = Some(Registration { stop, task });
        Ok(())
    }

    async fn leave(&self) -> Result<()> {
        let reg = self.current.lock().expect("membership lock").take();
        if let Some(reg) = reg {
            reg.stop.cancel();
            // The task revokes the lease (bounded by the request timeout) and ends.
            let _ = reg.task.await;
        }
        Ok(())
    }

    async fn live_regions(&self) -> Result<Vec<RegionId>> {
        let mut regions: Vec<RegionId> = self
            .read(&self.conn.key("members/"))
            .await?
            .into_iter()
            .map(|m| m.region)
            .collect();
        regions.sort();
        regions.dedup();
        Ok(regions)
    }

    async fn members(&self, region: &RegionId) -> Result<Vec<Member>> {
        let mut members = self
            .read(&self.conn.key(&format!("members/{region}/")))
            .await?;
        members.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(members)
    }
}

/// Hold the registration: grant a lease, put the keys, keep the lease alive; when the
/// lease is lost, start over. The first attempt's outcome goes to `first`.
async fn keep_registered(
    conn: Connection,
    ttl: i64,
    puts: Vec<(String, Vec<u8>)>,
    stop: CancellationToken,
    first: oneshot::Sender<Result<()>>,
) {
    let mut first = Some(first);
    let renew_every = Duration::from_secs(ttl as u64) / 3;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
    loop {
        let lease = tokio::select! {
            r = register(&conn, ttl, &puts) => r,
            _ = stop.cancelled() => return,
        };
        let lease = match lease {
            Ok(l) => {
                if let Some(tx) = first.take() {
                    let _ = tx.send(Ok(()));
                }
                backoff.reset();
                l
            }
            Err(e) => {
                if let Some(tx) = first.take() {
                    let _ = tx.send(Err(e));
                    return;
                }
                debug!(error = %e, "re-registration failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        // Keep it alive until it fails for a whole TTL or etcd says it is gone.
        let mut client = conn.lease();
        let opened = tokio::select! {
            r = conn.timed("member keep-alive", client.keep_alive(lease)) => r,
            _ = stop.cancelled() => return revoke(&conn, lease).await,
        };
        if let Ok((mut keeper, mut responses)) = opened {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(renew_every) => {}
                    _ = stop.cancelled() => return revoke(&conn, lease).await,
                }
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                let wait = Duration::from_secs(ttl as u64);
                let answer = tokio::select! {
                    r = tokio::time::timeout(wait, responses.message()) => r,
                    _ = stop.cancelled() => return revoke(&conn, lease).await,
                };
                match answer {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                    _ => break,
                }
            }
        }
        warn!(lease, "membership lease lost; registering again");
        // The old lease may still be alive on the server: revoke it so the old keys
        // go before the new ones are put (best effort).
        revoke(&conn, lease).await;
    }
}

/// Grant a lease and put every key bound to it, in one transaction.
async fn register(conn: &Connection, ttl: i64, puts: &[(String, Vec<u8>)]) -> Result<i64> {
    let mut client = conn.lease();
    let lease = conn
        .timed("member lease", client.grant(ttl, None))
        .await?
        .id();
    let ops: Vec<TxnOp> = puts
        .iter()
        .map(|(k, v)| {
            TxnOp::put(
                k.clone(),
                v.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )
        })
        .collect();
    conn.txn("register member", Txn::new().and_then(ops))
        .await?;
    Ok(lease)
}

async fn revoke(conn: &Connection, lease: i64) {
    let mut client = conn.lease();
    if let Err(e) = conn.timed("member revoke", client.revoke(lease)).await {
        debug!(lease, error = %e, "revoke failed; the lease will expire by itself");
    }
}
