//! The Redis adapters for mesh mode: the run log (`RunLog`: claims, starts, ends,
//! retention, progress cursors) and the per-region dispatch queues on Redis Streams
//! (`Queue`). This module owns the connection, the key layout, the value encodings and
//! the error mapping that both share.
//!
//! Keys live under one configurable prefix `p`, wrapped in braces as a Redis Cluster hash
//! tag (`{p}:...`): every key of one run log hashes to the same slot, so the multi-key
//! Lua scripts stay legal on a cluster (one run log is one slot: cluster-compatible, not
//! cluster-scalable; give each region its own prefix or its own Redis to spread load).
//!
//! | key | type | value |
//! | --- | --- | --- |
//! | `{p}:epoch:{shard}` | string | newest owner epoch seen for the shard (`epoch20`) |
//! | `{p}:cursors` | hash | job uid -> last scheduled instant handled (`instant20`) |
//! | `{p}:unfinished` | zset, scores 0 | `{due hex16}{firing}` for every run not yet terminal |
//! | `{p}:runs:{job uid}` | zset, scores 0 | `{scheduled hex16}{firing}`: the job's runs |
//! | `{p}:done:{job uid}` | zset, scores 0 | the same members, for the job's terminal runs (retention) |
//! | `{p}:run:{firing}` | hash | the run (see `run_log.rs`) |
//! | `{p}:dispatch:{region}` | stream | one entry per dispatch, field `d` (JSON) |
//!
//! Zset members are ordered by bytes (`ZRANGEBYLEX`), never by score: a float score
//! cannot hold a nanosecond instant. Values that Lua compares are fixed-width decimal
//! strings (`epoch20`, `instant20`): Lua numbers are doubles and would round a u64, and
//! equal-width digit strings compare as their numbers do.
//!
//! Durability: the guarantees assume the server runs with `appendonly yes` and
//! `appendfsync always`, so every write Redis acknowledged survives a Redis crash. With
//! `everysec`, up to a second of acknowledged claims, starts and ends can be lost, and a
//! lost start lets an attempt run twice.
//!
//! Must not make scheduling decisions (those live in `core` and the actors), and must not
//! read the wall clock: every instant comes in as an argument.

mod queue;
mod run_log;
mod time;

use super::instant::{biased_ns, from_biased_ns};
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use queue::{Delivery, Queue, QueueOptions};
pub use run_log::{RunLog, RunLogOptions};
pub use time::RedisTime;

use crate::core::Timestamp;
use crate::core::ids::Epoch;
use crate::ports::{Error, Result};

/// Reconnection tries the connection manager makes for one broken connection before the
/// commands waiting on it fail (`Unavailable`); the next command starts a new round.
pub const RECONNECT_TRIES_MAX: usize = 3;

/// How to reach Redis.
#[derive(Clone, Debug)]
pub struct Config {
    /// e.g. `redis://127.0.0.1:6379/`.
    pub url: String,
    /// Key prefix without braces, e.g. `meridian` or `meridian:eu-west`; keys are
    /// `{prefix}:...`.
    pub prefix: String,
    /// Longest wait for one request (connecting included) before it fails as
    /// `Unavailable`.
    pub request_timeout: Duration,
    /// Longest wait for one TCP connection.
    pub connect_timeout: Duration,
}

impl Config {
    /// Defaults for `url` under `prefix`.
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: prefix.into(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

/// A reconnecting, multiplexed connection plus the key prefix. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Connection {
    client: redis::Client,
    manager: ConnectionManager,
    /// `{prefix}`: the hash-tagged start of every key.
    base: String,
    request_timeout: Duration,
    connect_timeout: Duration,
}

impl Connection {
    /// A connection for `config`. Lazy: nothing is dialed until the first command, so a
    /// node can start before Redis answers (its requests fail `Unavailable` meanwhile).
    pub(crate) fn open(config: &Config) -> Result<Self> {
        if config.prefix.contains(['{', '}']) {
            return Err(Error::Storage(format!(
                "redis prefix {:?} must not contain braces: they are added as the hash tag",
                config.prefix
            )));
        }
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| Error::Storage(format!("redis url {:?}: {e}", config.url)))?;
        let manager = manager(&client, config.request_timeout, config.connect_timeout)?;
        Ok(Self {
            client,
            manager,
            base: format!("{{{}}}", config.prefix),
            request_timeout: config.request_timeout,
            connect_timeout: config.connect_timeout,
        })
    }

    /// A separate connection whose requests may take `extra` longer than usual: for
    /// blocking reads (`XREADGROUP ... BLOCK`), which would stall every command queued
    /// behind them on a shared multiplexed connection.
    pub(crate) fn dedicated(&self, extra: Duration) -> Result<Self> {
        let timeout = self.request_timeout + extra;
        Ok(Self {
            client: self.client.clone(),
            manager: manager(&self.client, timeout, self.connect_timeout)?,
            base: self.base.clone(),
            request_timeout: timeout,
            connect_timeout: self.connect_timeout,
        })
    }

    /// The longest one request on this connection may take.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// `{prefix}:{rest}`.
    pub(crate) fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.base)
    }

    /// The hash-tagged prefix, `{prefix}`, for scripts that build keys.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// Whether the server persists every write before it answers (`appendonly yes` and
    /// `appendfsync always`); `None` when `CONFIG GET` is refused.
    pub(crate) async fn persists_every_write(&self) -> Result<Option<bool>> {
        let read = |name: &'static str| {
            self.run("config get", move |mut c| async move {
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg(name)
                    .query_async::<HashMap<String, String>>(&mut c)
                    .await
            })
        };
        let (aof, fsync) = match (read("appendonly").await, read("appendfsync").await) {
            (Ok(a), Ok(f)) => (a, f),
            (Err(Error::Storage(_)), _) | (_, Err(Error::Storage(_))) => return Ok(None),
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        let is = |m: &HashMap<String, String>, k: &str, v: &str| m.get(k).is_some_and(|x| x == v);
        Ok(Some(
            is(&aof, "appendonly", "yes") && is(&fsync, "appendfsync", "always"),
        ))
    }

    /// Run one request on this connection with the request timeout; map its error.
    pub(crate) async fn run<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.request_timeout, f(self.manager.clone())).await {
            Ok(r) => r.map_err(|e| map_err(what, e)),
            Err(_) => Err(Error::Unavailable(format!(
                "redis {what}: no answer within {:?}",
                self.request_timeout
            ))),
        }
    }
}

fn manager(
    client: &redis::Client,
    response_timeout: Duration,
    connect_timeout: Duration,
) -> Result<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(connect_timeout))
        .set_number_of_retries(RECONNECT_TRIES_MAX)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client.clone(), config)
        .map_err(|e| Error::Storage(format!("redis connection manager: {e}")))
}

/// Map a Redis error to a port error: connection trouble, timeouts and a server that is
/// loading, read-only or failing over are `Unavailable` (retryable); the rest (a script
/// error, a wrong type) is `Storage`.
pub(crate) fn map_err(what: &str, e: redis::RedisError) -> Error {
    use redis::{ErrorKind, ServerErrorKind};
    let retryable = match e.kind() {
        ErrorKind::Io | ErrorKind::ClusterConnectionNotFound => true,
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly,
        ) => true,
        // A persistence failure (`MISCONF`) or a long script (`BUSY`) passes.
        _ => matches!(e.code(), Some("MISCONF" | "BUSY")),
    };
    if retryable {
        Error::Unavailable(format!("redis {what}: {e}"))
    } else {
        Error::Storage(format!("redis {what}: {e}"))
    }
}

/// An instant as 16 hex digits whose byte order is time order, for zset members ordered
/// with `ZRANGEBYLEX` (the one encoding every adapter uses).
pub(crate) use super::instant::sortable_hex;

/// An instant as 20 decimal digits whose string order is time order, for values Lua
/// compares (`instant20`).
pub(crate) fn instant20(t: Timestamp) -> String {
    format!("{:020}", biased_ns(t))
}

/// The inverse of `instant20`.
pub(crate) fn parse_instant20(s: &str) -> Result<Timestamp> {
    let raw: u64 = s
        .parse()
        .map_err(|_| Error::Storage(format!("bad instant {s:?}")))?;
    Ok(from_biased_ns(raw))
}

/// An epoch as 20 decimal digits (`epoch20`), so Lua compares it exactly.
pub(crate) fn epoch20(e: Epoch) -> String {
    format!("{:020}", e.0)
}

/// The inverse of `epoch20`.
pub(crate) fn parse_epoch20(s: &str) -> Result<Epoch> {
    s.parse()
        .map(Epoch)
        .map_err(|_| Error::Storage(format!("bad epoch {s:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_order_like_time_and_round_trip() {
        let ts = [
            chrono::DateTime::from_timestamp_nanos(i64::MIN + 1),
            chrono::DateTime::from_timestamp_nanos(-1),
            chrono::DateTime::from_timestamp_nanos(0),
            chrono::DateTime::from_timestamp_nanos(1),
            chrono::DateTime::from_timestamp_nanos(1_700_000_000_000_000_000),
        ];
        for enc in [sortable_hex, instant20] {
            let e: Vec<String> = ts.iter().map(|t| enc(*t)).collect();
            let mut sorted = e.clone();
            sorted.sort();
            assert_eq!(e, sorted);
        }
        for t in ts {
            assert_eq!(parse_instant20(&instant20(t)).unwrap(), t);
        }
        assert!(epoch20(Epoch(9)) < epoch20(Epoch(10)));
        assert_eq!(
            parse_epoch20(&epoch20(Epoch(u64::MAX))).unwrap(),
            Epoch(u64::MAX)
        );
    }
}
