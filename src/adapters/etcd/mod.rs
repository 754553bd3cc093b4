//! The etcd adapters for mesh mode: leader election per shard with fencing epochs
//! (`Election`), the job catalog with its change watch (`Catalog`), fenced progress
//! cursors (`Cursors`) and node membership (`Membership`), over one shared
//! `Connection`. This module owns the connection, the key layout, error mapping and the
//! fenced-transaction helper.
//!
//! Keys, all under one cluster prefix (e.g. `/meridian`):
//!
//! | key | value |
//! | --- | --- |
//! | `{p}/election/{shard}/{lease:016x}` | node id; bound to the candidate's lease. The lowest create revision owns the shard; that revision is the epoch |
//! | `{p}/jobs/{region}/{job}` | the job (JSON) |
//! | `{p}/job_order/all/{create}/{region}/{job}` | empty: listing order across regions |
//! | `{p}/job_order/in/{region}/{create}/{job}` | empty: listing order within a region |
//! | `{p}/requests/{request id}` | `{region}/{job} {uid}`: idempotent creates |
//! | `{p}/cursors/{job uid}` | last scheduled instant handled (`sortable_ns`) |
//! | `{p}/members/{region}/{node}` | the member (JSON); bound to the node's lease |
//!
//! `{create}` and cursor values are `sortable_ns`: fixed-width hex whose byte order is
//! time order, so etcd's range reads and value compares order them correctly.
//!
//! Must not make scheduling decisions (those live in `core` and the actors), and must
//! not read the wall clock: lease timing uses tokio's monotonic timer only, because a
//! wall-clock step must never stretch an owner's term.

mod catalog;
mod cursors;
mod election;
mod membership;

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, KvClient, LeaseClient,
    SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchClient,
};

pub use catalog::{Catalog, CatalogOptions};
pub use cursors::{CURSORS_PER_TXN_MAX, Cursors};
pub use election::{Election, ElectionOptions};
pub use membership::{Membership, MembershipOptions};

use crate::core::Timestamp;
use crate::core::ids::Epoch;
use crate::ports::{Error, Result};

/// etcd's default `--max-txn-ops`: operations (and compares) in one transaction.
pub const TXN_OPS_MAX: usize = 128;
/// Keys read per range request when reading a whole prefix.
pub const RANGE_PAGE_MAX: i64 = 1_000;
/// Largest gRPC message this client decodes (a page of large jobs).
pub const MESSAGE_BYTES_MAX: usize = 64 << 20;

/// How to reach etcd.
#[derive(Clone, Debug)]
pub struct Config {
    /// Client URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Cluster key prefix, e.g. `/meridian`; every key lives under it.
    pub prefix: String,
    /// Longest wait for one request before it fails as `Unavailable`.
    pub request_timeout: Duration,
    /// Longest wait for a TCP connection to an endpoint.
    pub connect_timeout: Duration,
}

impl Config {
    /// Defaults for `endpoints` under `prefix`.
    pub fn new(endpoints: Vec<String>, prefix: impl Into<String>) -> Self {
        Self {
            endpoints,
            prefix: prefix.into(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// A connection to etcd shared by the adapters. Cheap to clone. Connecting is lazy: a
/// node can start before etcd answers; requests fail as `Unavailable` meanwhile.
#[derive(Clone)]
pub struct Connection {
    client: Client,
    kv: KvClient,
    watch: WatchClient,
    lease: LeaseClient,
    prefix: String,
    request_timeout: Duration,
}

impl Connection {
    /// Connect to `config.endpoints`.
    pub async fn connect(config: &Config) -> Result<Self> {
        if config.endpoints.is_empty() {
            return Err(Error::Unavailable("no etcd endpoints configured".into()));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            // HTTP/2 pings find a dead connection under a long-lived stream. etcd refuses
            // pings more often than every 5 s (`--grpc-keepalive-min-time`).
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(map_err)?;
        let prefix = config.prefix.trim_end_matches('/').to_string();
        Ok(Self {
            kv: client
                .kv_client()
                .max_decoding_message_size(MESSAGE_BYTES_MAX),
            watch: client
                .watch_client()
                .max_decoding_message_size(MESSAGE_BYTES_MAX),
            lease: client.lease_client(),
            client,
            prefix,
            request_timeout: config.request_timeout,
        })
    }

    /// The underlying etcd client (for tools and tests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The cluster prefix, without a trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}/{rest}`.
    pub(crate) fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }

    pub(crate) fn kv(&self) -> KvClient {
        self.kv.clone()
    }

    pub(crate) fn watch_client(&self) -> WatchClient {
        self.watch.clone()
    }

    pub(crate) fn lease(&self) -> LeaseClient {
        self.lease.clone()
    }

    /// Run one request with the request timeout; map its error.
    pub(crate) async fn timed<T>(
        &self,
        what: &str,
        fut: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.request_timeout, fut).await {
            Ok(r) => r.map_err(|e| context(what, map_err(e))),
            Err(_) => Err(Error::Unavailable(format!(
                "etcd {what}: no answer within {:?}",
                self.request_timeout
            ))),
        }
    }

    /// A transaction with the request timeout.
    pub(crate) async fn txn(&self, what: &str, txn: Txn) -> Result<TxnResponse> {
        let mut kv = self.kv();
        self.timed(what, kv.txn(txn)).await
    }

    /// One key's value, if any.
    pub(crate) async fn get(&self, what: &str, key: &str) -> Result<Option<KeyValue>> {
        let mut kv = self.kv();
        let mut resp = self.timed(what, kv.get(key, None)).await?;
        Ok(resp.take_kvs().into_iter().next())
    }

    /// Every key-value under `prefix` at one revision, read a page at a time. Returns
    /// them in key order with the revision they were read at.
    pub(crate) async fn get_prefix(
        &self,
        what: &str,
        prefix: &str,
    ) -> Result<(Vec<KeyValue>, i64)> {
        let end = prefix_end(prefix.as_bytes());
        // A page read at a compacted revision restarts the read at the newest one.
        for _ in 0..3 {
            let mut out = Vec::new();
            let mut start = prefix.as_bytes().to_vec();
            let mut revision = 0;
            let mut compacted = false;
            loop {
                let mut options = GetOptions::new()
                    .with_range(end.clone())
                    .with_limit(RANGE_PAGE_MAX);
                if revision > 0 {
                    options = options.with_revision(revision);
                }
                let mut kv = self.kv();
                let mut resp = match self.timed(what, kv.get(start.clone(), Some(options))).await {
                    Ok(r) => r,
                    Err(Error::Storage(m)) if m.contains("compacted") => {
                        compacted = true;
                        break;
                    }
                    Err(e) => return Err(e),
                };
                if revision == 0 {
                    revision = resp.header().map_or(0, |h| h.revision());
                }
                let more = resp.more();
                let kvs = resp.take_kvs();
                let Some(last) = kvs.last() else { break };
                start = last.key().to_vec();
                start.push(0);
                out.extend(kvs);
                if !more {
                    break;
                }
            }
            if !compacted {
                return Ok((out, revision));
            }
        }
        Err(Error::Unavailable(format!(
            "etcd {what}: the store kept compacting under a full read"
        )))
    }
}

/// Add what was being done to an error's message.
fn context(what: &str, e: Error) -> Error {
    match e {
        Error::Unavailable(m) => Error::Unavailable(format!("etcd {what}: {m}")),
        Error::Storage(m) => Error::Storage(format!("etcd {what}: {m}")),
        Error::Full(m) => Error::Full(format!("etcd {what}: {m}")),
        other => other,
    }
}

/// Map an etcd client error to a port error: connection trouble is `Unavailable`
/// (retryable), a full database is `Full`, the rest is `Storage`.
pub(crate) fn map_err(e: etcd_client::Error) -> Error {
    use etcd_client::Error as E;
    use tonic::Code;
    match e {
        E::GRpcStatus(s) => match s.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
            | Code::Unknown
            | Code::Internal => Error::Unavailable(s.message().to_string()),
            Code::ResourceExhausted => Error::Full(s.message().to_string()),
            _ => Error::Storage(s.message().to_string()),
        },
        E::TransportError(e) => Error::Unavailable(e.to_string()),
        E::IoError(e) => Error::Unavailable(e.to_string()),
        E::WatchError(m)
        | E::LeaseKeepAliveError(m)
        | E::ElectError(m)
        | E::EndpointError(m)
        | E::Internal(m) => Error::Unavailable(m),
        other => Error::Storage(other.to_string()),
    }
}

/// The end of the range of keys starting with `prefix` (etcd's convention).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): to the end of the keyspace.
    vec![0]
}

/// An instant as 16 hex digits whose byte order is time order, so etcd can range over
/// and compare them (the one encoding every adapter uses).
pub(crate) use super::instant::sortable_hex as sortable_ns;

/// The inverse of `sortable_ns`.
pub(crate) fn parse_sortable_ns(s: &[u8]) -> Result<Timestamp> {
    super::instant::parse_sortable_hex(s)
        .ok_or_else(|| Error::Storage(format!("bad instant {:?}", String::from_utf8_lossy(s))))
}

/// The fencing condition of one owner term: the owner's election key and the create
/// revision it must still have. Every owner write to etcd goes through `fenced_txn`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub shard: u32,
    pub epoch: Epoch,
    /// The owner's election key (`{p}/election/{shard}/{lease:016x}`).
    pub key: String,
}

impl Fence {
    /// The compare that holds only while this term's key exists with its epoch.
    pub fn compare(&self) -> Compare {
        Compare::create_revision(self.key.clone(), CompareOp::Equal, self.epoch.0 as i64)
    }
}

/// The election keys of `shard` live under this prefix.
pub(crate) fn election_prefix(conn: &Connection, shard: u32) -> String {
    conn.key(&format!("election/{shard}/"))
}

/// Run `ops` only if `fence` still holds; otherwise `Error::Fenced` with the shard's
/// current epoch (its owner key's create revision, or the store's revision when the
/// shard has no owner: every later epoch is above it).
pub async fn fenced_txn(conn: &Connection, fence: &Fence, ops: Vec<TxnOp>) -> Result<TxnResponse> {
    let current_owner = TxnOp::get(
        election_prefix(conn, fence.shard),
        Some(
            GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Ascend)
                .with_limit(1)
                .with_keys_only(),
        ),
    );
    let txn = Txn::new()
        .when(vec![fence.compare()])
        .and_then(ops)
        .or_else(vec![current_owner]);
    let resp = conn.txn("fenced write", txn).await?;
    if resp.succeeded() {
        return Ok(resp);
    }
    let header_rev = resp.header().map_or(0, |h| h.revision());
    let owner_rev = resp.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.create_revision()),
        _ => None,
    });
    let current = owner_rev.unwrap_or(header_rev).max(0) as u64;
    Err(Error::Fenced {
        stale: fence.epoch,
        current: Epoch(current),
    })
}

/// Put one key only if `fence` still holds.
pub async fn fenced_put(
    conn: &Connection,
    fence: &Fence,
    key: impl Into<Vec<u8>>,
    value: impl Into<Vec<u8>>,
) -> Result<()> {
    fenced_txn(conn, fence, vec![TxnOp::put(key, value, None)])
        .await
        .map(|_| ())
}

/// Exponential backoff between `min` and `max`.
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The wait before the next try; doubles each time up to `max`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sortable_ns_orders_like_time() {
        let ts = [
            chrono::DateTime::from_timestamp_nanos(i64::MIN + 1),
            chrono::DateTime::from_timestamp_nanos(-1),
            chrono::DateTime::from_timestamp_nanos(0),
            chrono::DateTime::from_timestamp_nanos(1),
            chrono::DateTime::from_timestamp_nanos(1_700_000_000_000_000_000),
        ];
        let enc: Vec<String> = ts.iter().map(|t| sortable_ns(*t)).collect();
        let mut sorted = enc.clone();
        sorted.sort();
        assert_eq!(enc, sorted);
        for (t, e) in ts.iter().zip(&enc) {
            assert_eq!(parse_sortable_ns(e.as_bytes()).unwrap(), *t);
        }
    }

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
    }
}
