//! Peers' clocks as time sources for the clock guard: each live member's `GetTime`,
//! over gRPC. Lives at the edge because it speaks the proto API; must not interpret the
//! answers (the guard does the math) nor cache a peer that left.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tonic::transport::{Channel, Endpoint};

use super::pb;
use crate::core::Timestamp;
use crate::core::ids::NodeId;
use crate::ports::{Error, Membership, PeerClocks, Result, TimeSource};

/// Longest one peer time call may take (the guard rejects long round trips anyway).
const CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// One peer's clock.
struct PeerTime {
    name: String,
    channel: Channel,
}

#[async_trait]
impl TimeSource for PeerTime {
    fn name(&self) -> String {
        self.name.clone()
    }

    async fn time(&self) -> Result<Timestamp> {
        let mut client = pb::scheduler_client::SchedulerClient::new(self.channel.clone());
        let answer = tokio::time::timeout(CALL_TIMEOUT, client.get_time(pb::GetTimeRequest {}))
            .await
            .map_err(|_| Error::Unavailable(format!("{}: no answer in time", self.name)))?
            .map_err(|s| Error::Unavailable(format!("{}: {}", self.name, s.message())))?
            .into_inner();
        let now = answer
            .now
            .ok_or_else(|| Error::Storage(format!("{}: answer without a time", self.name)))?;
        Timestamp::from_timestamp(now.seconds, u32::try_from(now.nanos).unwrap_or(0))
            .ok_or_else(|| Error::Storage(format!("{}: time out of range", self.name)))
    }
}

/// The live members of the mesh other than this node.
pub struct MeshPeers {
    node: NodeId,
    membership: Arc<dyn Membership>,
    /// Clients by endpoint, kept while the peer stays a member.
    clients: Mutex<BTreeMap<String, Arc<PeerTime>>>,
}

impl MeshPeers {
    pub fn new(node: NodeId, membership: Arc<dyn Membership>) -> Self {
        Self {
            node,
            membership,
            clients: Mutex::new(BTreeMap::new()),
        }
    }
}

#[async_trait]
impl PeerClocks for MeshPeers {
    async fn peers(&self, max: usize) -> Vec<Arc<dyn TimeSource>> {
        let mut members: BTreeMap<String, String> = BTreeMap::new();
        if let Ok(regions) = self.membership.live_regions().await {
            for r in regions {
                for m in self.membership.members(&r).await.unwrap_or_default() {
                    if m.node != self.node {
                        members.insert(m.node.to_string(), m.endpoint);
                    }
                }
            }
        }
        let mut clients = self.clients.lock().expect("peer clients lock");
        clients.retain(|endpoint, _| members.values().any(|e| e == endpoint));
        let mut out: Vec<Arc<dyn TimeSource>> = Vec::new();
        for (node, endpoint) in members.into_iter().take(max) {
            let client = match clients.get(&endpoint) {
                Some(c) => c.clone(),
                None => {
                    let Ok(ep) = Endpoint::from_shared(endpoint.clone()) else {
                        continue;
                    };
                    let c = Arc::new(PeerTime {
                        name: format!("peer:{node}"),
                        channel: ep
                            .connect_timeout(CALL_TIMEOUT)
                            .timeout(CALL_TIMEOUT)
                            .connect_lazy(),
                    });
                    clients.insert(endpoint, c.clone());
                    c
                }
            };
            out.push(client);
        }
        out
    }
}
