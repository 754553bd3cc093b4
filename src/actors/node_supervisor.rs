//! `NodeSupervisor`: the root of one node's actors. Starts a `RegionSupervisor` per
//! hosted region, campaigns for every schedule shard (one task per shard) and starts a
//! `ScheduleOwner` for each shard this node wins, restarts children that fail (within
//! a restart budget; past it the node stops rather than flap), balances shards across
//! the live nodes (an owner of more than its fair share resigns the surplus), and runs
//! the graceful shutdown: stop claiming, let running attempts finish up to a grace
//! period, then stop. Must not do scheduling work itself.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::Deps;
use super::region_supervisor::{self, RegionSupervisor, RegionSupervisorMsg};
use super::schedule_owner::{self, ScheduleOwner, ScheduleOwnerMsg};
use crate::core::Timestamp;
use crate::core::ids::RegionId;
use crate::ports::Term;

pub enum NodeSupervisorMsg {
    /// The owner of `shard`, if this node holds a term on it.
    Owner(u32, RpcReplyPort<Option<ActorRef<ScheduleOwnerMsg>>>),
    /// Every child's status.
    Status(RpcReplyPort<NodeStatus>),
    /// Graceful stop: answer when running attempts finished (or were cancelled after
    /// `grace`).
    Shutdown(Duration, RpcReplyPort<()>),
    /// This node won `shard` (sent by the shard's campaign task).
    Won(u32, Term),
    /// Start the owner of `shard` again after it failed within a live term.
    Respawn(u32),
    /// Look at the live nodes and resign shards held beyond a fair share.
    Balance,
}

#[derive(Clone, Debug, Default)]
pub struct NodeStatus {
    /// One per shard this node owns, by shard.
    pub owners: Vec<schedule_owner::Status>,
    pub regions: Vec<region_supervisor::Status>,
    pub restarts: u64,
}

impl NodeStatus {
    /// Sum of the owners' counters, for one-number views (the node's status call).
    pub fn jobs_indexed(&self) -> usize {
        self.owners.iter().map(|o| o.jobs_indexed).sum()
    }
}

pub struct NodeSupervisor;

struct Owned {
    owner: Option<ActorRef<ScheduleOwnerMsg>>,
    term: Term,
}

pub struct NodeState {
    deps: Arc<Deps>,
    owners: HashMap<u32, Owned>,
    campaigns: Vec<JoinHandle<()>>,
    balancer: Option<JoinHandle<()>>,
    regions: HashMap<RegionId, ActorRef<RegionSupervisorMsg>>,
    restarts: VecDeque<Timestamp>,
    restarts_total: u64,
    stopping: bool,
}

impl Drop for NodeState {
    fn drop(&mut self) {
        for c in self.campaigns.drain(..) {
            c.abort();
        }
        if let Some(b) = self.balancer.take() {
            b.abort();
        }
    }
}

/// How long a status or drain call to a child may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often shard ownership is rebalanced across live nodes.
const BALANCE_EVERY: Duration = Duration::from_secs(2);
/// Pause before campaigning again after a failed campaign.
const CAMPAIGN_RETRY: Duration = Duration::from_millis(500);
/// Pause before restarting an owner that failed within a live term.
const RESPAWN_AFTER: Duration = Duration::from_millis(200);

impl Actor for NodeSupervisor {
    type Msg = NodeSupervisorMsg;
    type State = NodeState;
    type Arguments = Arc<Deps>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        deps: Arc<Deps>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = NodeState {
            deps,
            owners: HashMap::new(),
            campaigns: Vec::new(),
            balancer: None,
            regions: HashMap::new(),
            restarts: VecDeque::new(),
            restarts_total: 0,
            stopping: false,
        };
        for region in state.deps.config.regions.clone() {
            state.start_region(&myself, region).await?;
        }
        for shard in 0..state.deps.config.shards.max(1) {
            state
                .campaigns
                .push(spawn_campaign(state.deps.clone(), shard, myself.clone()));
        }
        if state.deps.membership.is_some() && state.deps.config.shards > 1 {
            let me = myself.clone();
            state.balancer = Some(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(BALANCE_EVERY).await;
                    if me.cast(NodeSupervisorMsg::Balance).is_err() {
                        return;
                    }
                }
            }));
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeSupervisorMsg::Owner(shard, reply) => {
                let owner = state
                    .owners
                    .get(&shard)
                    .filter(|o| o.term.is_live())
                    .and_then(|o| o.owner.clone());
                let _ = reply.send(owner);
            }
            NodeSupervisorMsg::Status(reply) => {
                let mut status = NodeStatus {
                    restarts: state.restarts_total,
                    ..NodeStatus::default()
                };
                for o in state.owners.values() {
                    if let Some(owner) = &o.owner
                        && let Ok(ractor::rpc::CallResult::Success(s)) = owner
                            .call(ScheduleOwnerMsg::Status, Some(CALL_TIMEOUT))
                            .await
                    {
                        status.owners.push(s);
                    }
                }
                status.owners.sort_by_key(|o| o.shard);
                for r in state.regions.values() {
                    if let Ok(ractor::rpc::CallResult::Success(s)) = r
                        .call(RegionSupervisorMsg::Status, Some(CALL_TIMEOUT))
                        .await
                    {
                        status.regions.push(s);
                    }
                }
                status.regions.sort_by(|a, b| a.region.cmp(&b.region));
                let _ = reply.send(status);
            }
            NodeSupervisorMsg::Shutdown(grace, reply) => {
                state.stopping = true;
                for c in state.campaigns.drain(..) {
                    c.abort();
                }
                // Stop claiming first: nothing new is handed out.
                for (shard, o) in state.owners.drain() {
                    if let Some(owner) = o.owner {
                        let _ = owner.stop_and_wait(None, Some(CALL_TIMEOUT)).await;
                    }
                    // Hand the shard over now rather than after the lease TTL.
                    if let Err(e) = state.deps.election.resign(shard).await {
                        warn!(shard, error = %e, "resigning failed; the lease will expire");
                    }
                }
                for r in state.regions.values() {
                    let res = r
                        .call(
                            |port| RegionSupervisorMsg::Drain(grace, port),
                            Some(grace + CALL_TIMEOUT),
                        )
                        .await;
                    if !matches!(res, Ok(ractor::rpc::CallResult::Success(()))) {
                        warn!("a region did not drain in time");
                    }
                }
                info!("node drained");
                let _ = reply.send(());
            }
            NodeSupervisorMsg::Won(shard, term) => {
                if state.stopping || !term.is_live() {
                    return Ok(());
                }
                state.owners.insert(shard, Owned { owner: None, term });
                state.start_owner(&myself, shard).await;
            }
            NodeSupervisorMsg::Respawn(shard) => {
                if !state.stopping
                    && state
                        .owners
                        .get(&shard)
                        .is_some_and(|o| o.owner.is_none() && o.term.is_live())
                {
                    state.start_owner(&myself, shard).await;
                }
            }
            NodeSupervisorMsg::Balance => state.balance().await,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        if state.stopping {
            return Ok(());
        }
        state.restart(&myself, cell, &why).await
    }
}

/// Campaign for `shard` for as long as the node lives: each won term goes to the
/// supervisor; when it ends, campaign again (behind the other candidates).
fn spawn_campaign(deps: Arc<Deps>, shard: u32, to: ActorRef<NodeSupervisorMsg>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            // A node whose clock cannot be trusted does not ask to own anything.
            while !deps.guard.is_open() {
                tokio::time::sleep(CAMPAIGN_RETRY).await;
            }
            match deps.election.campaign(&deps.node, shard).await {
                Ok(term) => {
                    let ended = term.ended.clone();
                    if to.cast(NodeSupervisorMsg::Won(shard, term)).is_err() {
                        return;
                    }
                    ended.cancelled().await;
                }
                Err(e) => {
                    warn!(shard, error = %e, "campaign failed; trying again");
                    tokio::time::sleep(CAMPAIGN_RETRY).await;
                }
            }
        }
    })
}

impl NodeState {
    async fn start_region(
        &mut self,
        myself: &ActorRef<NodeSupervisorMsg>,
        region: RegionId,
    ) -> Result<(), ActorProcessingErr> {
        let (r, _) = Actor::spawn_linked(
            None,
            RegionSupervisor,
            (self.deps.clone(), region.clone()),
            myself.get_cell(),
        )
        .await?;
        self.regions.insert(region, r);
        Ok(())
    }

    /// Start the owner of a shard this node holds a term on. A failure to start is
    /// retried shortly while the term holds (e.g. the run log was briefly unreachable).
    async fn start_owner(&mut self, myself: &ActorRef<NodeSupervisorMsg>, shard: u32) {
        let Some(o) = self.owners.get(&shard) else {
            return;
        };
        let args = (self.deps.clone(), shard, o.term.clone());
        match Actor::spawn_linked(None, ScheduleOwner, args, myself.get_cell()).await {
            Ok((owner, _)) => {
                if let Some(o) = self.owners.get_mut(&shard) {
                    o.owner = Some(owner);
                }
            }
            Err(e) => {
                warn!(shard, error = %e, "starting the schedule owner failed; retrying");
                let me = myself.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(RESPAWN_AFTER).await;
                    let _ = me.cast(NodeSupervisorMsg::Respawn(shard));
                });
            }
        }
    }

    /// Resign one shard when this node holds more than its fair share of the live
    /// nodes' (ceil(shards / nodes)); its campaign task queues up again behind the
    /// others, so another node takes it over.
    async fn balance(&mut self) {
        let Some(membership) = self.deps.membership.clone() else {
            return;
        };
        let held = self.owners.values().filter(|o| o.term.is_live()).count();
        if held <= 1 {
            return;
        }
        let mut nodes = std::collections::BTreeSet::new();
        match membership.live_regions().await {
            Ok(regions) => {
                for r in regions {
                    if let Ok(members) = membership.members(&r).await {
                        nodes.extend(members.into_iter().map(|m| m.node));
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "balance: reading membership failed");
                return;
            }
        }
        let n = nodes.len().max(1);
        let shards = self.deps.config.shards.max(1) as usize;
        let fair = shards.div_ceil(n);
        if held > fair {
            let shard = *self
                .owners
                .iter()
                .filter(|(_, o)| o.term.is_live())
                .map(|(s, _)| s)
                .max()
                .expect("held > 1");
            info!(
                shard,
                held,
                fair,
                nodes = n,
                "holding more than a fair share of shards; resigning one"
            );
            if let Some(o) = self.owners.remove(&shard)
                && let Some(owner) = o.owner
            {
                owner.stop(Some("resigned for balance".into()));
            }
            if let Err(e) = self.deps.election.resign(shard).await {
                warn!(shard, error = %e, "resigning failed");
            }
        }
    }

    async fn restart(
        &mut self,
        myself: &ActorRef<NodeSupervisorMsg>,
        cell: ActorCell,
        why: &str,
    ) -> Result<(), ActorProcessingErr> {
        let now = self.deps.clock.now();
        while self
            .restarts
            .front()
            .is_some_and(|t| now - *t > chrono::Duration::minutes(1))
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() as u32 >= self.deps.config.restarts_per_minute_max {
            error!(reason = %why, "restart budget exhausted; stopping the node");
            return Err(format!("too many restarts; last: {why}").into());
        }
        let id = cell.get_id();
        let shard = self
            .owners
            .iter()
            .find(|(_, o)| o.owner.as_ref().is_some_and(|r| r.get_id() == id))
            .map(|(s, _)| *s);
        if let Some(shard) = shard {
            let o = self.owners.get_mut(&shard).expect("found above");
            o.owner = None;
            if o.term.is_live() {
                // Same term: reload and recover again.
                self.restarts.push_back(now);
                self.restarts_total += 1;
                warn!(shard, reason = %why, "schedule owner stopped within its term; restarting it");
                let me = myself.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(RESPAWN_AFTER).await;
                    let _ = me.cast(NodeSupervisorMsg::Respawn(shard));
                });
            } else {
                // The term is over: the shard's campaign task campaigns again.
                info!(shard, reason = %why, "schedule owner term over");
                self.owners.remove(&shard);
            }
            return Ok(());
        }
        let region = self
            .regions
            .iter()
            .find(|(_, r)| r.get_id() == id)
            .map(|(k, _)| k.clone());
        if let Some(region) = region {
            self.restarts.push_back(now);
            self.restarts_total += 1;
            warn!(region = %region, reason = %why, "region supervisor stopped; restarting");
            self.regions.remove(&region);
            self.start_region(myself, region).await?;
            // Its held work was only in memory: the owners recover it from the run log
            // (their restart re-reads what is unfinished).
            for o in self.owners.values() {
                if let Some(owner) = &o.owner {
                    owner.stop(Some("region restarted".into()));
                }
            }
        }
        Ok(())
    }
}
