//! `Worker`: runs one attempt at a time for its region supervisor.
//!
//! It is handed only attempts whose start its supervisor has already recorded durably
//! (so a redelivered or recovered attempt can never run twice). For each, it waits for
//! the attempt's instant if the clock says it is early (never early), runs the action
//! through the executor, decides success, retry or dead letter with the core's retry
//! policy, queues the end record (without waiting for it to be durable: losing it in a
//! crash makes recovery record `worker_lost`), and reports the run's next state back.
//! Must not start attempts nor pick what to run next (its supervisor does).

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, warn};

use super::Deps;
use super::region_supervisor::{Item, RegionSupervisorMsg};
use super::schedule_owner::next_after_failure;
use crate::core::Timestamp;
use crate::core::policy::retry::{self, Failure};
use crate::core::run::{AttemptStatus, State};
use crate::exec::{self, Status as ExecStatus};
use crate::ports::{AttemptEnd, Refusal};

pub enum WorkerMsg {
    /// Run an attempt whose start is durably recorded.
    Run(Box<Item>, CancellationToken),
}

/// How an assignment ended.
#[derive(Debug)]
pub enum Done {
    /// The attempt ran (or was recorded lost); the run's next state as decided, whether
    /// or not its record is durable yet.
    Ended {
        state: State,
        next_attempt_at: Option<Timestamp>,
    },
    /// The run log refused the start: the attempt did not run.
    Refused(Refusal),
    /// A run log error: the attempt may not have been recorded (recovery will see it).
    Error(String),
}

pub struct Worker;

pub struct WorkerState {
    deps: Arc<Deps>,
    supervisor: ActorRef<RegionSupervisorMsg>,
}

fn lateness_us(now: Timestamp, due: Timestamp) -> i64 {
    (now - due).num_microseconds().unwrap_or(i64::MAX)
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = (Arc<Deps>, ActorRef<RegionSupervisorMsg>);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (deps, supervisor): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(WorkerState { deps, supervisor })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let WorkerMsg::Run(item, cancel) = msg;
        let span = info_span!(
            "attempt",
            job = %item.dispatch.job.name,
            firing = %item.dispatch.run.firing,
            region = %item.dispatch.job.name.region,
            attempt = item.attempt,
        );
        let done = run_attempt(&state.deps, &item, cancel)
            .instrument(span)
            .await;
        let _ = state.supervisor.cast(RegionSupervisorMsg::AttemptDone {
            worker: myself.get_id(),
            item,
            done,
        });
        Ok(())
    }
}

async fn run_attempt(deps: &Deps, item: &Item, cancel: CancellationToken) -> Done {
    let clock = &deps.clock;
    // Never early: loop rather than assert, since the wall clock may step back between
    // the wake-up and this read.
    let mut started_at = clock.now();
    while started_at < item.start_at {
        clock.sleep_until(item.start_at).await;
        started_at = clock.now();
    }
    let d = &item.dispatch;
    if let Some(probe) = &deps.probe {
        probe.record(lateness_us(started_at, item.start_at));
    }
    let firing = d.run.firing.to_string();
    let job = d.job.name.to_string();
    let attempt = exec::Attempt {
        job: &job,
        firing_id: &firing,
        scheduled_at: d.run.scheduled_at,
        attempt: item.attempt,
        timeout: d.job.policy.retry.timeout,
        traceparent: None,
    };
    let outcome = deps.executor.execute(&d.job.action, &attempt, cancel).await;
    let finished_at = clock.now();
    let (status, next_state, next_attempt_at) = match outcome.status {
        ExecStatus::Succeeded => (AttemptStatus::Succeeded, State::Succeeded, None),
        ExecStatus::Cancelled => (AttemptStatus::Cancelled, State::Cancelled, None),
        ExecStatus::Failed { retryable } => {
            let failure = if retryable {
                Failure::Retryable
            } else {
                Failure::Permanent
            };
            let decision = retry::after_attempt(
                &d.job.policy.retry,
                item.attempt,
                failure,
                retry::jitter_seed(&firing, item.attempt),
            );
            let (s, at) = next_after_failure(decision, finished_at);
            (AttemptStatus::Failed, s, at)
        }
        ExecStatus::TimedOut => {
            let decision = retry::after_attempt(
                &d.job.policy.retry,
                item.attempt,
                Failure::Retryable,
                retry::jitter_seed(&firing, item.attempt),
            );
            let (s, at) = next_after_failure(decision, finished_at);
            (AttemptStatus::TimedOut, s, at)
        }
    };
    let end = AttemptEnd {
        number: item.attempt,
        status,
        finished_at,
        summary: if item.gate_waited {
            format!(
                "{} (its start waited at the clock gate until due in true time)",
                outcome.summary
            )
        } else {
            outcome.summary
        },
        exit_code: outcome.exit_code,
        http_status: outcome.http_status,
        output_tail: outcome.output_tail,
        next_state,
        next_attempt_at,
    };
    // Queued before the report goes back, so it is applied before any later start of
    // this run (the run log keeps this process's writes in order).
    match deps.runs.record_end(d.run.firing, end).await {
        Ok(()) => Done::Ended {
            state: next_state,
            next_attempt_at,
        },
        Err(e) => {
            warn!(error = %e, "recording the attempt's end failed");
            Done::Error(e.to_string())
        }
    }
}
