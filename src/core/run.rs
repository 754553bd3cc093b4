//! The run: the record of one firing: its attempts, state transitions and outcome.
//! Pure data plus the transition rules that keep it consistent (a terminal run never
//! changes again; attempts are numbered 1.. and strictly increase). Must not do IO.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Timestamp;
use super::ids::{Epoch, FiringId, JobName, NodeId};

/// Longest output tail kept per attempt (the executor already caps it; this is the
/// store's own limit).
pub const OUTPUT_TAIL_BYTES_MAX: usize = 4096;

/// Where a run stands. Terminal states never change again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Claimed by an owner and handed to its region; no attempt running.
    Queued,
    /// An attempt has durably started.
    Running,
    /// The last attempt failed; the next starts at `next_attempt_at`.
    RetryWait,
    Succeeded,
    /// Ended without success and no retry policy was set (attempts_max = 1).
    Failed,
    /// Ended without success after retries (or a permanent failure); re-runnable.
    DeadLettered,
    /// Not run: due outside the catch-up window, coalesced, or over catchup_max.
    Missed,
    /// Not run: the overlap policy said so.
    Skipped,
    /// Not run: the job was paused when it fell due.
    Paused,
    /// Not run: the clock guard held it past its grace period.
    Gated,
    /// Stopped by cancel_previous or a shutdown past its grace period.
    Cancelled,
}

impl State {
    pub fn is_terminal(self) -> bool {
        !matches!(self, State::Queued | State::Running | State::RetryWait)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::RetryWait => "retry_wait",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::DeadLettered => "dead_lettered",
            State::Missed => "missed",
            State::Skipped => "skipped",
            State::Paused => "paused",
            State::Gated => "gated",
            State::Cancelled => "cancelled",
        }
    }
}

/// Why a firing happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Trigger {
    Schedule,
    Manual {
        #[serde(default)]
        override_overlap: bool,
    },
}

/// How one attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    /// The worker (or the whole node) died mid-attempt: the outcome is unknown.
    WorkerLost,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1-based.
    pub number: u32,
    pub epoch: Epoch,
    pub node: NodeId,
    pub started_at: Timestamp,
    /// started_at - due instant, in microseconds (never negative: never early).
    pub lateness_us: i64,
    pub finished_at: Option<Timestamp>,
    pub status: Option<AttemptStatus>,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub http_status: Option<u16>,
    #[serde(default)]
    pub output_tail: String,
}

/// The record of a firing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub firing: FiringId,
    pub job: JobName,
    pub job_uid: Uuid,
    /// The schedule's instant; the firing id derives from it.
    pub scheduled_at: Timestamp,
    /// When the first attempt may start: scheduled_at plus the job's spread offset.
    pub due_at: Timestamp,
    pub trigger: Trigger,
    pub state: State,
    /// Why a run is missed/skipped/paused/gated/cancelled/failed, for people.
    #[serde(default)]
    pub reason: String,
    /// The epoch of the owner that claimed it.
    pub epoch: Epoch,
    pub attempts: Vec<Attempt>,
    /// When the next attempt may start (state RetryWait).
    #[serde(default)]
    pub next_attempt_at: Option<Timestamp>,
    /// For a folded record of many missed firings: how many, up to which instant.
    #[serde(default)]
    pub missed_count: u64,
    #[serde(default)]
    pub missed_until: Option<Timestamp>,
    pub create_time: Timestamp,
    pub update_time: Timestamp,
}

impl Run {
    /// A fresh run, claimed and queued for its first attempt.
    #[allow(clippy::too_many_arguments)] // the fields of a run's identity; no sensible grouping
    pub fn queued(
        firing: FiringId,
        job: JobName,
        job_uid: Uuid,
        scheduled_at: Timestamp,
        due_at: Timestamp,
        trigger: Trigger,
        epoch: Epoch,
        now: Timestamp,
    ) -> Self {
        Self {
            firing,
            job,
            job_uid,
            scheduled_at,
            due_at,
            trigger,
            state: State::Queued,
            reason: String::new(),
            epoch,
            attempts: Vec::new(),
            next_attempt_at: None,
            missed_count: 0,
            missed_until: None,
            create_time: now,
            update_time: now,
        }
    }

    /// A run that ends at once without an attempt (missed, skipped, paused, gated).
    pub fn not_run(mut self, state: State, reason: impl Into<String>) -> Self {
        assert!(state.is_terminal(), "not_run needs a terminal state");
        self.state = state;
        self.reason = reason.into();
        self
    }

    /// The number of the next attempt to start.
    pub fn next_attempt_number(&self) -> u32 {
        self.attempts.last().map_or(1, |a| a.number + 1)
    }

    /// The instant the next attempt may start at.
    pub fn next_start_at(&self) -> Timestamp {
        self.next_attempt_at.unwrap_or(self.due_at)
    }

    /// Lateness of the first attempt, if it started.
    pub fn lateness_us(&self) -> Option<i64> {
        self.attempts.first().map(|a| a.lateness_us)
    }
}
