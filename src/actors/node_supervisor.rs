//! `NodeSupervisor`: the root of one node's actors. Starts a `RegionSupervisor` per
//! hosted region and the `ScheduleOwner`, restarts any that fail (within a restart
//! budget; past it the node stops rather than flap), and runs the graceful shutdown:
//! stop claiming, let running attempts finish up to a grace period, then stop.
//! Must not do scheduling work itself.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::{error, info, warn};

use super::Deps;
use super::region_supervisor::{self, RegionSupervisor, RegionSupervisorMsg};
use super::schedule_owner::{self, ScheduleOwner, ScheduleOwnerMsg};
use crate::core::Timestamp;
use crate::core::ids::RegionId;

pub enum NodeSupervisorMsg {
    /// The current schedule owner, if this node holds a term.
    Owner(RpcReplyPort<Option<ActorRef<ScheduleOwnerMsg>>>),
    /// Every child's status.
    Status(RpcReplyPort<NodeStatus>),
    /// Graceful stop: answer when running attempts finished (or were cancelled after
    /// `grace`).
    Shutdown(Duration, RpcReplyPort<()>),
}

#[derive(Clone, Debug, Default)]
pub struct NodeStatus {
    pub owner: Option<schedule_owner::Status>,
    pub regions: Vec<region_supervisor::Status>,
    pub restarts: u64,
}

pub struct NodeSupervisor;

pub struct NodeState {
    deps: Arc<Deps>,
    owner: Option<ActorRef<ScheduleOwnerMsg>>,
    regions: HashMap<RegionId, ActorRef<RegionSupervisorMsg>>,
    restarts: VecDeque<Timestamp>,
    restarts_total: u64,
    stopping: bool,
}

/// How long a status or drain call to a child may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

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
            owner: None,
            regions: HashMap::new(),
            restarts: VecDeque::new(),
            restarts_total: 0,
            stopping: false,
        };
        for region in state.deps.config.regions.clone() {
            state.start_region(&myself, region).await?;
        }
        state.start_owner(&myself).await?;
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeSupervisorMsg::Owner(reply) => {
                let _ = reply.send(state.owner.clone());
            }
            NodeSupervisorMsg::Status(reply) => {
                let mut status = NodeStatus {
                    restarts: state.restarts_total,
                    ..NodeStatus::default()
                };
                if let Some(owner) = &state.owner
                    && let Ok(ractor::rpc::CallResult::Success(s)) = owner
                        .call(ScheduleOwnerMsg::Status, Some(CALL_TIMEOUT))
                        .await
                {
                    status.owner = Some(s);
                }
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
                if let Some(owner) = state.owner.take() {
                    // Stop claiming first: nothing new is handed out.
                    let _ = owner.stop_and_wait(None, Some(CALL_TIMEOUT)).await;
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

    async fn start_owner(
        &mut self,
        myself: &ActorRef<NodeSupervisorMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let (o, _) =
            Actor::spawn_linked(None, ScheduleOwner, self.deps.clone(), myself.get_cell()).await?;
        self.owner = Some(o);
        Ok(())
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
        self.restarts.push_back(now);
        self.restarts_total += 1;
        let id = cell.get_id();
        if self.owner.as_ref().is_some_and(|o| o.get_id() == id) {
            warn!(reason = %why, "schedule owner stopped; starting a new term");
            self.owner = None;
            // A new term: campaign again, reload, recover.
            self.start_owner(myself).await?;
            return Ok(());
        }
        let region = self
            .regions
            .iter()
            .find(|(_, r)| r.get_id() == id)
            .map(|(k, _)| k.clone());
        if let Some(region) = region {
            warn!(region = %region, reason = %why, "region supervisor stopped; restarting");
            self.regions.remove(&region);
            self.start_region(myself, region).await?;
            // Its queued work was only in memory: a new owner term recovers it from the
            // run log.
            if let Some(owner) = self.owner.take() {
                owner.stop(Some("region restarted".into()));
                // Its termination event starts the new term.
                self.owner = Some(owner);
            }
        }
        Ok(())
    }
}
