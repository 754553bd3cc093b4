//! Job progress cursors in etcd (`{p}/cursors/{job uid}`), written only by a shard's
//! owner and fenced by its epoch: each transaction compares the owner key's create
//! revision with the epoch, so a deposed owner's late write is refused by etcd itself,
//! not only by this node's view of its term.
//!
//! A batch goes in as few transactions as etcd's `--max-txn-ops` allows (see
//! `CURSORS_PER_TXN_MAX`); each cursor moves only
//! forward, decided inside the transaction (values are `sortable_ns`, so etcd's byte
//! compare is a time compare). The catalog creates a job's cursor with the job and
//! deletes it with the job. Must not decide which instants are handled: the owner does.

use async_trait::async_trait;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use uuid::Uuid;

use super::{Connection, Election, TXN_OPS_MAX, fenced_txn, parse_sortable_ns, sortable_ns};

/// Cursors per transaction. etcd checks `--max-txn-ops` level by level and gives a
/// nested transaction only the budget its parents left: with one op per cursor at the
/// top and two nested levels below each, 126 is the most the default 128 allows.
pub const CURSORS_PER_TXN_MAX: usize = TXN_OPS_MAX - 2;
use crate::core::Timestamp;
use crate::core::ids::Epoch;
use crate::ports::{Error, Result};

/// Fenced progress cursors. Cheap to clone.
#[derive(Clone)]
pub struct Cursors {
    conn: Connection,
    election: Election,
}

/// `{p}/cursors/{uid}`.
pub(crate) fn cursor_key(conn: &Connection, uid: Uuid) -> String {
    conn.key(&format!("cursors/{}", uid.simple()))
}

fn parse_uid(conn: &Connection, key: &[u8]) -> Result<Uuid> {
    let prefix = conn.key("cursors/");
    let text = std::str::from_utf8(key).map_err(|e| Error::Storage(e.to_string()))?;
    let id = text
        .strip_prefix(&prefix)
        .ok_or_else(|| Error::Storage(format!("cursor key {text:?} outside {prefix:?}")))?;
    Uuid::parse_str(id).map_err(|e| Error::Storage(format!("cursor key {text:?}: {e}")))
}

impl Cursors {
    /// Cursors written under the terms `election` holds.
    pub fn new(election: Election) -> Self {
        Self {
            conn: election.connection().clone(),
            election,
        }
    }
}

/// "Set `key` to `value` if it is missing or lower", as one nested transaction.
fn advance_op(key: String, value: String) -> TxnOp {
    let put = TxnOp::put(key.clone(), value.clone(), None);
    let if_missing = Txn::new()
        .when(vec![Compare::version(key.clone(), CompareOp::Equal, 0)])
        .and_then(vec![put.clone()]);
    // A value compare on a missing key is false, hence the nested "missing" branch.
    TxnOp::txn(
        Txn::new()
            .when(vec![Compare::value(key, CompareOp::Less, value)])
            .and_then(vec![put])
            .or_else(vec![TxnOp::txn(if_missing)]),
    )
}

#[async_trait]
impl crate::ports::Cursors for Cursors {
    async fn advance(&self, epoch: Epoch, shard: u32, batch: Vec<(Uuid, Timestamp)>) -> Result<()> {
        let Some(fence) = self.election.fence_for(shard, epoch) else {
            // This node no longer holds that term: refuse before touching etcd.
            let current = self
                .election
                .current_epoch(shard)
                .await
                .ok()
                .flatten()
                .unwrap_or(epoch);
            return Err(Error::Fenced {
                stale: epoch,
                current,
            });
        };
        // One op per job: keep the latest instant of a job named twice in a batch.
        let mut latest: std::collections::BTreeMap<Uuid, Timestamp> = Default::default();
        for (uid, t) in batch {
            let e = latest.entry(uid).or_insert(t);
            *e = (*e).max(t);
        }
        let mut ops = latest
            .into_iter()
            .map(|(uid, t)| advance_op(cursor_key(&self.conn, uid), sortable_ns(t)))
            .peekable();
        while ops.peek().is_some() {
            let chunk: Vec<TxnOp> = ops.by_ref().take(CURSORS_PER_TXN_MAX).collect();
            fenced_txn(&self.conn, &fence, chunk).await?;
        }
        Ok(())
    }

    async fn all(&self) -> Result<Vec<(Uuid, Timestamp)>> {
        let (kvs, _) = self
            .conn
            .get_prefix("read cursors", &self.conn.key("cursors/"))
            .await?;
        kvs.iter()
            .map(|kv| {
                Ok((
                    parse_uid(&self.conn, kv.key())?,
                    parse_sortable_ns(kv.value())?,
                ))
            })
            .collect()
    }

    async fn get(&self, job_uid: Uuid) -> Result<Option<Timestamp>> {
        match self
            .conn
            .get("read cursor", &cursor_key(&self.conn, job_uid))
            .await?
        {
            Some(kv) => Ok(Some(parse_sortable_ns(kv.value())?)),
            None => Ok(None),
        }
    }
}
