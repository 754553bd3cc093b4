//! Redis `TIME` as a time source for the clock guard: the server's clock, read through
//! the cluster's Redis. Must not interpret the answer beyond decoding it (the guard
//! measures the round trip and does the math).

use async_trait::async_trait;

use super::{Config, Connection};
use crate::core::Timestamp;
use crate::ports::{Error, Result, TimeSource};

/// The clock of the Redis server at `config.url`. Cheap to clone.
#[derive(Clone)]
pub struct RedisTime {
    conn: Connection,
}

impl RedisTime {
    pub fn open(config: &Config) -> Result<Self> {
        Ok(Self {
            conn: Connection::open(config)?,
        })
    }
}

#[async_trait]
impl TimeSource for RedisTime {
    fn name(&self) -> String {
        "redis".into()
    }

    async fn time(&self) -> Result<Timestamp> {
        let (secs, micros): (i64, i64) = self
            .conn
            .run("time", |mut c| async move {
                redis::cmd("TIME").query_async(&mut c).await
            })
            .await?;
        Timestamp::from_timestamp(secs, (micros * 1_000) as u32)
            .ok_or_else(|| Error::Storage(format!("redis TIME answered {secs}.{micros}")))
    }
}
