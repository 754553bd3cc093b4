//! In-process dispatch queues for embedded mode: one bounded channel per region.
//! Nothing here is durable: after a crash the run log's unfinished runs are
//! dispatched again. Must not make scheduling decisions.

use std::collections::HashMap;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::core::ids::RegionId;
use crate::ports::{Delivery, Dispatch, DispatchQueue, Error, Result};

struct Lane {
    tx: mpsc::Sender<Dispatch>,
    rx: tokio::sync::Mutex<mpsc::Receiver<Dispatch>>,
}

/// Bounded per-region queues, created for the regions this node hosts.
pub struct LocalQueues {
    lanes: HashMap<RegionId, Lane>,
}

impl LocalQueues {
    /// One queue of `queue_max` entries per region.
    pub fn new(regions: &[RegionId], queue_max: usize) -> Self {
        let lanes = regions
            .iter()
            .map(|r| {
                let (tx, rx) = mpsc::channel(queue_max);
                (
                    r.clone(),
                    Lane {
                        tx,
                        rx: tokio::sync::Mutex::new(rx),
                    },
                )
            })
            .collect();
        Self { lanes }
    }

    fn lane(&self, region: &RegionId) -> Result<&Lane> {
        self.lanes
            .get(region)
            .ok_or_else(|| Error::NotFound(format!("region {region} is not hosted here")))
    }
}

#[async_trait]
impl DispatchQueue for LocalQueues {
    async fn push(&self, region: &RegionId, batch: Vec<Dispatch>) -> Result<Vec<Dispatch>> {
        let lane = self.lane(region)?;
        let mut rest = batch.into_iter();
        for d in rest.by_ref() {
            match lane.tx.try_send(d) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(d)) => {
                    let mut back = vec![d];
                    back.extend(rest);
                    return Ok(back);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    return Err(Error::Unavailable(format!("region {region} queue closed")));
                }
            }
        }
        Ok(Vec::new())
    }

    async fn pull(
        &self,
        region: &RegionId,
        max: usize,
        cancel: &CancellationToken,
    ) -> Result<Vec<Dispatch>> {
        let lane = self.lane(region)?;
        let mut rx = lane.rx.lock().await;
        let mut out = Vec::new();
        tokio::select! {
            _ = cancel.cancelled() => return Ok(out),
            n = rx.recv_many(&mut out, max) => {
                if n == 0 {
                    return Err(Error::Unavailable("queue closed".into()));
                }
            }
        }
        Ok(out)
    }

    /// In-process: what is received lives only in this process, as everything here.
    async fn receive(
        &self,
        region: &RegionId,
        max: usize,
        cancel: &CancellationToken,
    ) -> Result<Vec<Delivery>> {
        Ok(self
            .pull(region, max, cancel)
            .await?
            .into_iter()
            .map(|dispatch| Delivery {
                id: String::new(),
                dispatch,
            })
            .collect())
    }

    async fn ack(&self, _region: &RegionId, _ids: &[String]) -> Result<()> {
        Ok(())
    }
}
