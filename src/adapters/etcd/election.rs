//! Leader election per shard over etcd, with fencing epochs.
//!
//! A candidate grants itself a lease, puts `{p}/election/{shard}/{lease:016x}` bound to
//! it, and waits until every key of that shard created before its own is gone (it
//! watches only its immediate predecessor, so a crowd of candidates does not wake all
//! at once). The candidate with the lowest create revision owns the shard, and that
//! create revision is the term's epoch: strictly increasing per shard, because a new
//! owner's key was always created after the previous owner's.
//!
//! A term ends (`Term.ended` is cancelled) when: the lease cannot be renewed and the
//! last acknowledged renewal's send time + TTL - safety margin has passed (etcd never
//! tells a cut-off owner that it lost, so the owner must stop on its own, before the
//! lease can expire on the server); etcd answers that the lease is gone; the owner key
//! is deleted or overwritten (watched); the owner resigns; or the `Election` is dropped.
//! Ending the term comes first, then the lease is revoked (best effort), so the next
//! candidate takes over at once after a graceful stop and within the TTL after a crash.
//!
//! Timing uses tokio's monotonic timer only, never the wall clock. Must not decide what
//! an owner does with its term.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, WatchFilterType, WatchOptions,
};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Backoff, Connection, Fence, election_prefix};
use crate::core::ids::{Epoch, NodeId};
use crate::ports::{Error, Result, ShardOwner, Term};

/// Election settings.
#[derive(Clone, Debug)]
pub struct ElectionOptions {
    /// Lease TTL (whole seconds; etcd grants at least `TTL_MIN`). An owner that dies is
    /// replaced within about this long.
    pub ttl: Duration,
    /// How long before the lease could expire on the server the owner gives up its
    /// term when renewals fail (covers clock-rate differences and stop latency).
    pub safety_margin: Duration,
}

impl Default for ElectionOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(3),
            safety_margin: Duration::from_millis(500),
        }
    }
}

impl ElectionOptions {
    /// The TTL in whole seconds, as etcd takes it (rounded up, at least 1).
    fn ttl_secs(&self) -> i64 {
        let ms = self.ttl.as_millis().max(1) as i64;
        (ms + 999) / 1000
    }

    /// How long a term may last past the send time of its last acknowledged renewal.
    fn term_span(&self) -> Duration {
        let ttl = Duration::from_secs(self.ttl_secs() as u64);
        // Never let the margin eat more than half the TTL.
        ttl - self.safety_margin.min(ttl / 2)
    }

    /// Renewal period: a third of the TTL, so two renewals may fail before the term ends.
    fn renew_every(&self) -> Duration {
        Duration::from_secs(self.ttl_secs() as u64) / 3
    }
}

/// One term this node holds (or held) on a shard.
struct Held {
    fence: Fence,
    ended: CancellationToken,
    deadline: Arc<Mutex<tokio::time::Instant>>,
}

/// Time left before a term's deadline, on the monotonic clock.
fn term_left(deadline: Arc<Mutex<tokio::time::Instant>>) -> crate::ports::TermLeft {
    Arc::new(move || {
        deadline
            .lock()
            .expect("term deadline lock")
            .saturating_duration_since(crate::adapters::clock::monotonic_now())
    })
}

struct Inner {
    conn: Connection,
    options: ElectionOptions,
    terms: Mutex<HashMap<u32, Held>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping the election ends every term it holds (and so revokes their leases).
        if let Ok(terms) = self.terms.lock() {
            for held in terms.values() {
                held.ended.cancel();
            }
        }
    }
}

/// Election of shard owners through etcd. Cheap to clone; dropping the last clone ends
/// every term it holds.
#[derive(Clone)]
pub struct Election {
    inner: Arc<Inner>,
}

impl Election {
    pub fn new(conn: Connection, options: ElectionOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                conn,
                options,
                terms: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The fence of this node's live term on `shard`, if it holds one.
    pub fn fence(&self, shard: u32) -> Option<Fence> {
        let terms = self.inner.terms.lock().expect("terms lock");
        terms
            .get(&shard)
            .filter(|h| !h.ended.is_cancelled())
            .map(|h| h.fence.clone())
    }

    /// The fence for `epoch` on `shard` when this node's live term there has that
    /// epoch. (The write itself is fenced again by etcd.)
    pub(crate) fn fence_for(&self, shard: u32, epoch: Epoch) -> Option<Fence> {
        self.fence(shard).filter(|f| f.epoch == epoch)
    }

    /// The connection this election uses.
    pub fn connection(&self) -> &Connection {
        &self.inner.conn
    }

    /// End this node's term on `shard` now: the term's `ended` fires first, then the
    /// lease is revoked so the next candidate takes over without waiting for the TTL.
    pub async fn resign(&self, shard: u32) -> Result<()> {
        let held = {
            let mut terms = self.inner.terms.lock().expect("terms lock");
            terms.remove(&shard)
        };
        if let Some(held) = held {
            held.ended.cancel();
            // Delete the key now (fenced on its epoch) rather than waiting for the
            // keeper task's revoke: the successor's watch fires on this delete.
            let txn = Txn::new()
                .when(vec![held.fence.compare()])
                .and_then(vec![TxnOp::delete(held.fence.key.clone(), None)]);
            self.inner.conn.txn("resign", txn).await?;
        }
        Ok(())
    }

    /// The current owner epoch of `shard` as etcd sees it (`None`: no candidate).
    pub async fn current_epoch(&self, shard: u32) -> Result<Option<Epoch>> {
        let conn = &self.inner.conn;
        let mut kv = conn.kv();
        let resp = conn
            .timed(
                "read owner",
                kv.get(
                    election_prefix(conn, shard),
                    Some(
                        GetOptions::new()
                            .with_prefix()
                            .with_sort(SortTarget::Create, SortOrder::Ascend)
                            .with_limit(1)
                            .with_keys_only(),
                    ),
                ),
            )
            .await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| Epoch(kv.create_revision() as u64)))
    }

    async fn run_campaign(&self, node: &NodeId, shard: u32) -> Result<Term> {
        let conn = self.inner.conn.clone();
        let options = self.inner.options.clone();
        // Armed before the grant is sent: the lease cannot expire on the server before
        // send time + TTL, so the term may last until then (less the margin).
        let first_expiry = Box::pin(tokio::time::sleep(options.term_span()));
        let deadline = Arc::new(Mutex::new(first_expiry.deadline()));
        let mut lease_client = conn.lease();
        let grant = conn
            .timed("lease grant", lease_client.grant(options.ttl_secs(), None))
            .await?;
        let lease = grant.id();
        let ended = CancellationToken::new();
        tokio::spawn(keep_alive(
            conn.clone(),
            options.clone(),
            lease,
            first_expiry,
            ended.clone(),
            deadline.clone(),
        ));
        // If this future is dropped before it wins, the candidacy is withdrawn.
        let guard = ended.clone().drop_guard();

        let prefix = election_prefix(&conn, shard);
        let key = format!("{prefix}{lease:016x}");
        let put = Txn::new()
            .when(vec![Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(
                key.clone(),
                node.as_str(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else(vec![TxnOp::get(key.clone(), None)]);
        let resp = conn.txn("campaign", put).await?;
        let my_rev = if resp.succeeded() {
            resp.header().map_or(0, |h| h.revision())
        } else {
            first_get(&resp).map(|kv| kv.create_revision()).unwrap_or(0)
        };
        if my_rev <= 0 {
            return Err(Error::Storage("campaign: no create revision".into()));
        }
        debug!(%node, shard, key, rev = my_rev, "candidate");

        loop {
            if ended.is_cancelled() {
                return Err(Error::Unavailable(format!(
                    "campaign for shard {shard}: lease lost while waiting"
                )));
            }
            // In one read: is my key still there, and who was created just before me?
            let check = Txn::new()
                .when(vec![Compare::create_revision(
                    key.clone(),
                    CompareOp::Equal,
                    my_rev,
                )])
                .and_then(vec![TxnOp::get(
                    prefix.clone(),
                    Some(
                        GetOptions::new()
                            .with_prefix()
                            .with_max_create_revision(my_rev - 1)
                            .with_sort(SortTarget::Create, SortOrder::Descend)
                            .with_limit(1)
                            .with_keys_only(),
                    ),
                )]);
            let resp = tokio::select! {
                r = conn.txn("campaign wait", check) => r,
                _ = ended.cancelled() => continue,
            };
            let resp = match resp {
                Ok(r) => r,
                // A passing etcd hiccup does not abandon the candidacy: the keeper
                // ends it (and this loop) if the lease itself is in danger.
                Err(e) if e.retryable() => {
                    debug!(error = %e, "campaign read failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if !resp.succeeded() {
                ended.cancel();
                return Err(Error::Unavailable(format!(
                    "campaign for shard {shard}: candidate key vanished (lease expired?)"
                )));
            }
            let Some(pred) = first_get(&resp) else {
                break; // nobody before me: I own the shard
            };
            let pred_key = pred.key().to_vec();
            let from = resp.header().map_or(0, |h| h.revision()) + 1;
            tokio::select! {
                r = wait_deleted(&conn, pred_key, from) => {
                    if let Err(e) = r {
                        debug!(error = %e, "waiting for predecessor; re-reading");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                _ = ended.cancelled() => {}
            }
        }

        let epoch = Epoch(my_rev as u64);
        let fence = Fence {
            shard,
            epoch,
            key: key.clone(),
        };
        {
            let mut terms = self.inner.terms.lock().expect("terms lock");
            if let Some(old) = terms.insert(
                shard,
                Held {
                    fence: fence.clone(),
                    ended: ended.clone(),
                    deadline: deadline.clone(),
                },
            ) {
                old.ended.cancel();
            }
        }
        let _ = guard.disarm();
        tokio::spawn(observe(conn, fence, ended.clone()));
        info!(%node, shard, %epoch, "won shard");
        Ok(Term {
            epoch,
            ended,
            left: Some(term_left(deadline)),
        })
    }
}

#[async_trait]
impl crate::ports::Election for Election {
    async fn campaign(&self, node: &NodeId, shard: u32) -> Result<Term> {
        {
            let terms = self.inner.terms.lock().expect("terms lock");
            if let Some(h) = terms.get(&shard)
                && !h.ended.is_cancelled()
            {
                return Ok(Term {
                    epoch: h.fence.epoch,
                    ended: h.ended.clone(),
                    left: Some(term_left(h.deadline.clone())),
                });
            }
        }
        self.run_campaign(node, shard).await
    }

    async fn resign(&self, shard: u32) -> Result<()> {
        Election::resign(self, shard).await
    }

    async fn owner_of(&self, shard: u32) -> Result<Option<ShardOwner>> {
        let conn = &self.inner.conn;
        let mut kv = conn.kv();
        let resp = conn
            .timed(
                "read owner",
                kv.get(
                    election_prefix(conn, shard),
                    Some(
                        GetOptions::new()
                            .with_prefix()
                            .with_sort(SortTarget::Create, SortOrder::Ascend)
                            .with_limit(1),
                    ),
                ),
            )
            .await?;
        let Some(owner) = resp.kvs().first() else {
            return Ok(None);
        };
        let node = NodeId(String::from_utf8_lossy(owner.value()).into_owned());
        let mut leases = conn.lease();
        let lease_left = match conn
            .timed("lease ttl", leases.time_to_live(owner.lease(), None))
            .await
        {
            Ok(t) if t.ttl() >= 0 => Some(Duration::from_secs(t.ttl() as u64)),
            _ => None,
        };
        Ok(Some(ShardOwner {
            shard,
            node,
            epoch: Epoch(owner.create_revision() as u64),
            lease_left,
        }))
    }
}

fn first_get(resp: &etcd_client::TxnResponse) -> Option<etcd_client::KeyValue> {
    resp.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().cloned(),
        _ => None,
    })
}

/// Resolve when `key` is deleted (at or after revision `from`).
async fn wait_deleted(conn: &Connection, key: Vec<u8>, from: i64) -> Result<()> {
    let mut client = conn.watch_client();
    let options = WatchOptions::new()
        .with_start_revision(from)
        .with_filters([WatchFilterType::NoPut]);
    let mut stream = conn
        .timed("watch predecessor", client.watch(key, Some(options)))
        .await?;
    loop {
        let msg = stream.message().await.map_err(super::map_err)?;
        let Some(resp) = msg else {
            return Err(Error::Unavailable("watch closed".into()));
        };
        if resp.canceled() {
            // Compacted or cancelled: the caller re-reads the predecessors.
            return Err(Error::Unavailable(format!(
                "watch cancelled: {}",
                resp.cancel_reason()
            )));
        }
        if resp
            .events()
            .iter()
            .any(|e| e.event_type() == EventType::Delete)
        {
            return Ok(());
        }
    }
}

/// Keep the lease alive until `ended`; end the term when renewals stop working long
/// enough that the lease could expire on the server, or when etcd says it is gone.
async fn keep_alive(
    conn: Connection,
    options: ElectionOptions,
    lease: i64,
    mut expiry: Pin<Box<Sleep>>,
    ended: CancellationToken,
    deadline: Arc<Mutex<tokio::time::Instant>>,
) {
    // Every renewal that moves `expiry` moves the term's deadline with it.
    let moved = |expiry: &Pin<Box<Sleep>>| {
        *deadline.lock().expect("term deadline lock") = expiry.deadline();
    };
    let renew_every = options.renew_every();
    let span = options.term_span();
    let mut backoff = Backoff::new(Duration::from_millis(100), renew_every);
    'connect: loop {
        // (Re)open the keep-alive stream; opening it is itself a renewal.
        let guard = Box::pin(tokio::time::sleep(span));
        let mut client = conn.lease();
        let opened = tokio::select! {
            r = client.keep_alive(lease) => r,
            _ = &mut expiry => return expire(lease, &ended),
            _ = ended.cancelled() => return revoke(&conn, lease).await,
        };
        let (mut keeper, mut responses) = match opened {
            Ok(pair) => {
                expiry = guard;
                moved(&expiry);
                backoff.reset();
                pair
            }
            Err(e) if e.to_string().contains("lease not found") => {
                warn!(lease, "lease is gone; ending term");
                ended.cancel();
                return;
            }
            Err(e) => {
                debug!(lease, error = %e, "keep-alive stream failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => continue 'connect,
                    _ = &mut expiry => return expire(lease, &ended),
                    _ = ended.cancelled() => return revoke(&conn, lease).await,
                }
            }
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(renew_every) => {}
                _ = &mut expiry => return expire(lease, &ended),
                _ = ended.cancelled() => return revoke(&conn, lease).await,
            }
            let guard = Box::pin(tokio::time::sleep(span));
            if keeper.keep_alive().await.is_err() {
                continue 'connect;
            }
            let answer = tokio::select! {
                r = responses.message() => r,
                _ = &mut expiry => return expire(lease, &ended),
                _ = ended.cancelled() => return revoke(&conn, lease).await,
            };
            match answer {
                Ok(Some(r)) if r.ttl() > 0 => {
                    expiry = guard;
                    moved(&expiry);
                }
                Ok(Some(_)) => {
                    warn!(lease, "lease expired on the server; ending term");
                    ended.cancel();
                    return;
                }
                Ok(None) | Err(_) => continue 'connect,
            }
        }
    }
}

fn expire(lease: i64, ended: &CancellationToken) {
    if !ended.is_cancelled() {
        warn!(
            lease,
            "no lease renewal acknowledged in time; ending term before the lease can expire"
        );
    }
    ended.cancel();
}

async fn revoke(conn: &Connection, lease: i64) {
    let mut client = conn.lease();
    if let Err(e) = conn.timed("lease revoke", client.revoke(lease)).await {
        debug!(lease, error = %e, "revoke failed; the lease will expire by itself");
    }
}

/// Watch the owner key: its deletion or overwrite ends the term.
async fn observe(conn: Connection, fence: Fence, ended: CancellationToken) {
    let mut from = fence.epoch.0 as i64 + 1;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let result = tokio::select! {
            r = observe_once(&conn, &fence, &mut from) => r,
            _ = ended.cancelled() => return,
        };
        match result {
            Ok(()) => {
                warn!(
                    shard = fence.shard,
                    epoch = %fence.epoch,
                    "owner key deleted or replaced; ending term"
                );
                ended.cancel();
                return;
            }
            Err(e) => {
                debug!(error = %e, "owner watch broken; resuming");
                // Look at the key itself: if it is intact at revision H, nothing before
                // H can have ended the term, so resume from H + 1 (also when the history
                // the watch would resume from was compacted).
                let mut kv = conn.kv();
                if let Ok(resp) = conn
                    .timed("read owner key", kv.get(fence.key.clone(), None))
                    .await
                {
                    let intact = resp
                        .kvs()
                        .first()
                        .is_some_and(|kv| kv.create_revision() == fence.epoch.0 as i64);
                    if !intact {
                        warn!(
                            shard = fence.shard,
                            epoch = %fence.epoch,
                            "owner key gone; ending term"
                        );
                        ended.cancel();
                        return;
                    }
                    from = from.max(resp.header().map_or(0, |h| h.revision()) + 1);
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = ended.cancelled() => return,
                }
            }
        }
    }
}

/// Ok when the key was deleted or overwritten; Err when the watch broke.
async fn observe_once(conn: &Connection, fence: &Fence, from: &mut i64) -> Result<()> {
    let mut client = conn.watch_client();
    let options = WatchOptions::new()
        .with_start_revision(*from)
        .with_progress_notify();
    let mut stream = conn
        .timed(
            "watch owner key",
            client.watch(fence.key.clone(), Some(options)),
        )
        .await?;
    loop {
        let Some(resp) = stream.message().await.map_err(super::map_err)? else {
            return Err(Error::Unavailable("watch closed".into()));
        };
        if resp.canceled() {
            return Err(Error::Unavailable(format!(
                "watch cancelled: {}",
                resp.cancel_reason()
            )));
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            match ev.event_type() {
                EventType::Delete => return Ok(()),
                // Re-put by someone else (a new create revision) replaces the owner.
                EventType::Put if kv.create_revision() != fence.epoch.0 as i64 => return Ok(()),
                EventType::Put => *from = kv.mod_revision() + 1,
            }
        }
    }
}
