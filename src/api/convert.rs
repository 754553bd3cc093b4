//! Conversions between generated proto types and the core's types: jobs, schedules,
//! actions, policies, runs, attempts, firings and node statuses; UTC instants to
//! `Time` (UTC plus a local rendering in the job's zone) and back.
//!
//! Input conversions check only what the core types cannot represent (a negative
//! duration, a malformed timestamp or local time, an unknown enum value) and name the
//! field relative to the job (`schedule.interval`); every other rule is the core's.
//! Must not read a clock, the store or decide anything.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, SecondsFormat};
use chrono_tz::Tz;

use super::pb;
use crate::actors::node_supervisor::NodeStatus;
use crate::core::action::{Action, Command, Http};
use crate::core::ids::RegionId;
use crate::core::job::Job;
use crate::core::policy::{Catchup, Overlap, Policies, RegionLoss, Retry, Spread};
use crate::core::run::{Attempt, AttemptStatus, Run, State, Trigger};
use crate::core::schedule::{DstDecision, DstFold, DstGap, Firing, Kind, Once, ScheduleSpec};
use crate::core::{FieldError, Timestamp};

/// The zone a schedule's `time_zone` defaults to.
pub const ZONE_DEFAULT: &str = "UTC";
/// How a once-local time is written: a naive ISO 8601 date-time, seconds included.
pub const LOCAL_TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

// ------------------------------------------------------------------ primitives

/// A proto timestamp as a UTC instant, within the range every layer can store
/// (nanoseconds since the epoch in an i64: years 1677..2262).
pub fn timestamp_in(field: &str, t: &prost_types::Timestamp) -> Result<Timestamp, FieldError> {
    let nanos = u32::try_from(t.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| FieldError::new(field, "has nanos outside 0..999999999"))?;
    DateTime::from_timestamp(t.seconds, nanos)
        .filter(|d| d.timestamp_nanos_opt().is_some())
        .ok_or_else(|| FieldError::new(field, "is outside the years 1678 to 2261"))
}

pub fn timestamp_out(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// A proto duration as a non-negative `Duration`.
pub fn duration_in(field: &str, d: &prost_types::Duration) -> Result<Duration, FieldError> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(FieldError::new(field, "must not be negative"));
    }
    if d.nanos >= 1_000_000_000 {
        return Err(FieldError::new(field, "has nanos outside 0..999999999"));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

pub fn duration_out(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

fn micros_out(us: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: us / 1_000_000,
        nanos: ((us % 1_000_000) * 1000) as i32,
    }
}

/// The zone of a stored schedule. A name that no longer parses (the tz database
/// dropped it) renders in UTC rather than failing a read.
pub fn zone(spec: &ScheduleSpec) -> Tz {
    Tz::from_str(&spec.time_zone).unwrap_or(Tz::UTC)
}

/// An instant in UTC and rendered in `tz`.
pub fn time(t: Timestamp, tz: Tz) -> pb::Time {
    pb::Time {
        utc: Some(timestamp_out(t)),
        local: t
            .with_timezone(&tz)
            .to_rfc3339_opts(SecondsFormat::AutoSi, false),
        time_zone: tz.name().to_owned(),
    }
}

// ------------------------------------------------------------------ schedule

fn dst_gap_in(v: i32) -> Result<DstGap, FieldError> {
    match pb::DstGap::try_from(v) {
        Ok(pb::DstGap::Unspecified | pb::DstGap::Shift) => Ok(DstGap::Shift),
        Ok(pb::DstGap::Skip) => Ok(DstGap::Skip),
        Err(_) => Err(FieldError::new(
            "schedule.dst_gap",
            format!("{v} is not a DstGap value"),
        )),
    }
}

fn dst_fold_in(v: i32) -> Result<DstFold, FieldError> {
    match pb::DstFold::try_from(v) {
        Ok(pb::DstFold::Unspecified | pb::DstFold::First) => Ok(DstFold::First),
        Ok(pb::DstFold::Last) => Ok(DstFold::Last),
        Ok(pb::DstFold::Both) => Ok(DstFold::Both),
        Err(_) => Err(FieldError::new(
            "schedule.dst_fold",
            format!("{v} is not a DstFold value"),
        )),
    }
}

/// A schedule from the API. `anchor_default` anchors an interval that names no
/// anchor (the job's creation instant). Fields are named relative to the job.
pub fn schedule_in(
    s: Option<pb::Schedule>,
    anchor_default: Timestamp,
) -> Result<ScheduleSpec, FieldError> {
    let s = s.ok_or_else(|| FieldError::new("schedule", "is required"))?;
    let kind = match s.kind {
        None => {
            return Err(FieldError::new(
                "schedule",
                "must set one of cron, interval or once",
            ));
        }
        Some(pb::schedule::Kind::Cron(expr)) => Kind::Cron { expr },
        Some(pb::schedule::Kind::Interval(d)) => {
            let every = duration_in("schedule.interval", &d)?;
            let anchor = match &s.interval_anchor {
                Some(a) => timestamp_in("schedule.interval_anchor", a)?,
                None => anchor_default,
            };
            Kind::Interval { every, anchor }
        }
        Some(pb::schedule::Kind::Once(once)) => match once.at {
            Some(pb::once::At::LocalTime(local)) => {
                let naive =
                    NaiveDateTime::parse_from_str(&local, LOCAL_TIME_FORMAT).map_err(|_| {
                        FieldError::new(
                            "schedule.once.local_time",
                            format!("{local:?} is not a local date-time like 2027-03-14T02:30:00"),
                        )
                    })?;
                Kind::Once(Once::Local(naive))
            }
            Some(pb::once::At::UtcTime(t)) => {
                Kind::Once(Once::Utc(timestamp_in("schedule.once.utc_time", &t)?))
            }
            None => {
                return Err(FieldError::new(
                    "schedule.once",
                    "must set local_time or utc_time",
                ));
            }
        },
    };
    let time_zone = if s.time_zone.is_empty() {
        ZONE_DEFAULT.to_owned()
    } else {
        s.time_zone
    };
    Ok(ScheduleSpec {
        kind,
        time_zone,
        dst_gap: dst_gap_in(s.dst_gap)?,
        dst_fold: dst_fold_in(s.dst_fold)?,
        start_time: s
            .start_time
            .as_ref()
            .map(|t| timestamp_in("schedule.start_time", t))
            .transpose()?,
        end_time: s
            .end_time
            .as_ref()
            .map(|t| timestamp_in("schedule.end_time", t))
            .transpose()?,
    })
}

pub fn schedule_out(s: &ScheduleSpec) -> pb::Schedule {
    let mut out = pb::Schedule {
        time_zone: s.time_zone.clone(),
        dst_gap: match s.dst_gap {
            DstGap::Shift => pb::DstGap::Shift,
            DstGap::Skip => pb::DstGap::Skip,
        } as i32,
        dst_fold: match s.dst_fold {
            DstFold::First => pb::DstFold::First,
            DstFold::Last => pb::DstFold::Last,
            DstFold::Both => pb::DstFold::Both,
        } as i32,
        start_time: s.start_time.map(timestamp_out),
        end_time: s.end_time.map(timestamp_out),
        ..Default::default()
    };
    out.kind = Some(match &s.kind {
        Kind::Cron { expr } => pb::schedule::Kind::Cron(expr.clone()),
        Kind::Interval { every, anchor } => {
            out.interval_anchor = Some(timestamp_out(*anchor));
            pb::schedule::Kind::Interval(duration_out(*every))
        }
        Kind::Once(Once::Local(naive)) => pb::schedule::Kind::Once(pb::Once {
            at: Some(pb::once::At::LocalTime(
                naive.format(LOCAL_TIME_FORMAT).to_string(),
            )),
        }),
        Kind::Once(Once::Utc(t)) => pb::schedule::Kind::Once(pb::Once {
            at: Some(pb::once::At::UtcTime(timestamp_out(*t))),
        }),
    });
    out
}

pub fn dst_decision_out(d: DstDecision) -> pb::DstDecision {
    match d {
        DstDecision::None => pb::DstDecision::None,
        DstDecision::GapShifted => pb::DstDecision::GapShifted,
        DstDecision::GapSkipped => pb::DstDecision::GapSkipped,
        DstDecision::FoldFirst => pb::DstDecision::FoldFirst,
        DstDecision::FoldLast => pb::DstDecision::FoldLast,
        DstDecision::FoldBoth => pb::DstDecision::FoldBoth,
    }
}

pub fn firing_out(f: &Firing, tz: Tz) -> pb::Firing {
    pb::Firing {
        time: Some(pb::Time {
            utc: Some(timestamp_out(f.at)),
            local: f.local.to_rfc3339_opts(SecondsFormat::AutoSi, false),
            time_zone: tz.name().to_owned(),
        }),
        dst_decision: dst_decision_out(f.decision) as i32,
    }
}

// ------------------------------------------------------------------ action

/// An action from the API; fields named relative to the job (`action.http.url`).
pub fn action_in(a: Option<pb::Action>) -> Result<Action, FieldError> {
    let Some(pb::Action { kind: Some(kind) }) = a else {
        return match a {
            None => Action::require(None),
            Some(_) => Err(FieldError::new(
                "action",
                "must set one of http, command or noop",
            )),
        };
    };
    Ok(match kind {
        pb::action::Kind::Http(h) => Action::Http(Http {
            method: if h.method.is_empty() {
                "POST".to_owned()
            } else {
                h.method
            },
            url: h.url,
            headers: h.headers.into_iter().map(|h| (h.name, h.value)).collect(),
            body: h.body,
        }),
        pb::action::Kind::Command(c) => {
            let mut env: Vec<(String, String)> = c.env.into_iter().collect();
            // Maps have no order on the wire; a stable one keeps stored jobs comparable.
            env.sort();
            Action::Command(Command {
                argv: c.argv,
                env,
                working_dir: (!c.working_dir.is_empty()).then_some(c.working_dir),
            })
        }
        pb::action::Kind::Noop(_) => Action::Noop,
    })
}

pub fn action_out(a: &Action) -> pb::Action {
    let kind = match a {
        Action::Http(h) => pb::action::Kind::Http(pb::HttpAction {
            method: h.method.clone(),
            url: h.url.clone(),
            headers: h
                .headers
                .iter()
                .map(|(name, value)| pb::Header {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            body: h.body.clone(),
        }),
        Action::Command(c) => pb::action::Kind::Command(pb::CommandAction {
            argv: c.argv.clone(),
            env: c.env.iter().cloned().collect(),
            working_dir: c.working_dir.clone().unwrap_or_default(),
        }),
        Action::Noop => pb::action::Kind::Noop(pb::NoopAction {}),
    };
    pb::Action { kind: Some(kind) }
}

// ------------------------------------------------------------------ policy

fn overlap_in(v: i32) -> Result<Overlap, FieldError> {
    match pb::Overlap::try_from(v) {
        Ok(pb::Overlap::Unspecified | pb::Overlap::Skip) => Ok(Overlap::Skip),
        Ok(pb::Overlap::Allow) => Ok(Overlap::Allow),
        Ok(pb::Overlap::BufferOne) => Ok(Overlap::BufferOne),
        Ok(pb::Overlap::CancelPrevious) => Ok(Overlap::CancelPrevious),
        Err(_) => Err(FieldError::new(
            "policy.overlap",
            format!("{v} is not an Overlap value"),
        )),
    }
}

fn overlap_out(o: Overlap) -> pb::Overlap {
    match o {
        Overlap::Allow => pb::Overlap::Allow,
        Overlap::Skip => pb::Overlap::Skip,
        Overlap::BufferOne => pb::Overlap::BufferOne,
        Overlap::CancelPrevious => pb::Overlap::CancelPrevious,
    }
}

fn opt_duration(
    field: &str,
    d: Option<&prost_types::Duration>,
    default: Duration,
) -> Result<Duration, FieldError> {
    d.map_or(Ok(default), |d| duration_in(field, d))
}

/// Policies from the API: every absent field takes the core's default.
pub fn policy_in(p: Option<pb::Policy>) -> Result<Policies, FieldError> {
    let Some(p) = p else {
        return Ok(Policies::default());
    };
    let catchup = match p.catchup {
        None => Catchup::default(),
        Some(c) => {
            let d = Catchup::default();
            Catchup {
                window: opt_duration("policy.catchup.window", c.window.as_ref(), d.window)?,
                max: c.max.unwrap_or(d.max),
                coalesce: c.coalesce,
            }
        }
    };
    let retry = match p.retry {
        None => Retry::default(),
        Some(r) => {
            let d = Retry::default();
            Retry {
                attempts_max: r.attempts_max.unwrap_or(d.attempts_max),
                backoff_initial: opt_duration(
                    "policy.retry.backoff_initial",
                    r.backoff_initial.as_ref(),
                    d.backoff_initial,
                )?,
                backoff_max: opt_duration(
                    "policy.retry.backoff_max",
                    r.backoff_max.as_ref(),
                    d.backoff_max,
                )?,
                backoff_multiplier: r.backoff_multiplier.unwrap_or(d.backoff_multiplier),
                jitter: r.jitter.unwrap_or(d.jitter),
                timeout: opt_duration("policy.retry.timeout", r.timeout.as_ref(), d.timeout)?,
            }
        }
    };
    Ok(Policies {
        overlap: overlap_in(p.overlap)?,
        catchup,
        retry,
        spread: Spread {
            window: opt_duration(
                "policy.spread_window",
                p.spread_window.as_ref(),
                Duration::ZERO,
            )?,
        },
        region_loss: region_loss_in(p.region_loss.as_ref())?,
    })
}

fn region_loss_in(p: Option<&pb::RegionLossPolicy>) -> Result<RegionLoss, FieldError> {
    let Some(p) = p else {
        return Ok(RegionLoss::Pause);
    };
    let to = &p.failover_region;
    match pb::RegionLossAction::try_from(p.action) {
        Ok(pb::RegionLossAction::Unspecified | pb::RegionLossAction::Pause) if to.is_empty() => {
            Ok(RegionLoss::Pause)
        }
        Ok(pb::RegionLossAction::Unspecified | pb::RegionLossAction::Pause) => {
            Err(FieldError::new(
                "policy.region_loss.failover_region",
                "only allowed with action REGION_LOSS_ACTION_FAILOVER",
            ))
        }
        Ok(pb::RegionLossAction::Failover) if to.is_empty() => Err(FieldError::new(
            "policy.region_loss.failover_region",
            "required with action REGION_LOSS_ACTION_FAILOVER",
        )),
        Ok(pb::RegionLossAction::Failover) => {
            crate::core::ids::validate_id("policy.region_loss.failover_region", to)?;
            Ok(RegionLoss::Failover(RegionId(to.clone())))
        }
        Err(_) => Err(FieldError::new(
            "policy.region_loss.action",
            format!("{} is not a RegionLossAction value", p.action),
        )),
    }
}

fn region_loss_out(r: &RegionLoss) -> pb::RegionLossPolicy {
    match r {
        RegionLoss::Pause => pb::RegionLossPolicy {
            action: pb::RegionLossAction::Pause as i32,
            failover_region: String::new(),
        },
        RegionLoss::Failover(to) => pb::RegionLossPolicy {
            action: pb::RegionLossAction::Failover as i32,
            failover_region: to.to_string(),
        },
    }
}

/// Every policy with its effective value, defaults included: what the job will do.
pub fn policy_out(p: &Policies) -> pb::Policy {
    pb::Policy {
        overlap: overlap_out(p.overlap) as i32,
        catchup: Some(pb::CatchupPolicy {
            window: Some(duration_out(p.catchup.window)),
            max: Some(p.catchup.max),
            coalesce: p.catchup.coalesce,
        }),
        retry: Some(pb::RetryPolicy {
            attempts_max: Some(p.retry.attempts_max),
            backoff_initial: Some(duration_out(p.retry.backoff_initial)),
            backoff_max: Some(duration_out(p.retry.backoff_max)),
            backoff_multiplier: Some(p.retry.backoff_multiplier),
            jitter: Some(p.retry.jitter),
            timeout: Some(duration_out(p.retry.timeout)),
        }),
        spread_window: (!p.spread.window.is_zero()).then(|| duration_out(p.spread.window)),
        region_loss: Some(region_loss_out(&p.region_loss)),
    }
}

/// A core field path as the proto spells it, where the two differ.
pub fn proto_field(field: String) -> String {
    match field.as_str() {
        "policy.spread.window" => "policy.spread_window".to_owned(),
        "policy.region_loss.failover" => "policy.region_loss.failover_region".to_owned(),
        "schedule.interval.anchor" => "schedule.interval_anchor".to_owned(),
        _ => field,
    }
}

// ------------------------------------------------------------------ job

/// A stored job as the API shows it; `next` is its next firing, `warnings` are
/// shown on create only.
pub fn job_out(j: &Job, next: Option<&Firing>, warnings: Vec<String>) -> pb::Job {
    let tz = zone(&j.schedule);
    pb::Job {
        name: j.name.to_string(),
        uid: j.uid.to_string(),
        description: j.description.clone(),
        labels: j.labels.iter().cloned().collect(),
        schedule: Some(schedule_out(&j.schedule)),
        action: Some(action_out(&j.action)),
        policy: Some(policy_out(&j.policy)),
        paused: j.paused,
        create_time: Some(timestamp_out(j.create_time)),
        update_time: Some(timestamp_out(j.update_time)),
        etag: j.etag(),
        tzdb_version: j.tzdb_version.clone(),
        warnings,
        next_firing: next.map(|f| firing_out(f, tz)),
    }
}

/// Labels from the API, in a stable order.
pub fn labels_in(labels: std::collections::HashMap<String, String>) -> Vec<(String, String)> {
    let mut v: Vec<_> = labels.into_iter().collect();
    v.sort();
    v
}

// ------------------------------------------------------------------ runs

pub fn run_state_out(s: State) -> pb::RunState {
    match s {
        State::Queued => pb::RunState::Queued,
        State::Running => pb::RunState::Running,
        State::RetryWait => pb::RunState::RetryWait,
        State::Succeeded => pb::RunState::Succeeded,
        State::Failed => pb::RunState::Failed,
        State::DeadLettered => pb::RunState::DeadLettered,
        State::Missed => pb::RunState::Missed,
        State::Skipped => pb::RunState::Skipped,
        State::Paused => pb::RunState::Paused,
        State::Gated => pb::RunState::Gated,
        State::Cancelled => pb::RunState::Cancelled,
    }
}

fn attempt_status_out(s: Option<AttemptStatus>) -> pb::AttemptStatus {
    match s {
        None => pb::AttemptStatus::Unspecified,
        Some(AttemptStatus::Succeeded) => pb::AttemptStatus::Succeeded,
        Some(AttemptStatus::Failed) => pb::AttemptStatus::Failed,
        Some(AttemptStatus::TimedOut) => pb::AttemptStatus::TimedOut,
        Some(AttemptStatus::Cancelled) => pb::AttemptStatus::Cancelled,
        Some(AttemptStatus::WorkerLost) => pb::AttemptStatus::WorkerLost,
    }
}

fn attempt_out(a: &Attempt, tz: Tz) -> pb::Attempt {
    pb::Attempt {
        number: a.number,
        epoch: a.epoch.0,
        node: a.node.to_string(),
        start_time: Some(time(a.started_at, tz)),
        end_time: a.finished_at.map(|t| time(t, tz)),
        lateness: Some(micros_out(a.lateness_us)),
        status: attempt_status_out(a.status) as i32,
        summary: a.summary.clone(),
        exit_code: a.exit_code,
        http_status: a.http_status.map(u32::from),
        output_tail: a.output_tail.clone(),
    }
}

/// A run, its times rendered in its job's zone `tz`.
pub fn run_out(r: &Run, tz: Tz) -> pb::Run {
    pb::Run {
        name: format!("{}/runs/{}", r.job, r.firing),
        firing_id: r.firing.to_string(),
        job: r.job.to_string(),
        scheduled_time: Some(time(r.scheduled_at, tz)),
        due_time: Some(time(r.due_at, tz)),
        state: run_state_out(r.state) as i32,
        reason: r.reason.clone(),
        trigger: match r.trigger {
            Trigger::Schedule => "schedule",
            Trigger::Manual { .. } => "manual",
        }
        .to_owned(),
        epoch: r.epoch.0,
        attempts: r.attempts.iter().map(|a| attempt_out(a, tz)).collect(),
        next_attempt_time: r.next_attempt_at.map(|t| time(t, tz)),
        lateness: r.lateness_us().map(micros_out),
        missed_count: r.missed_count,
        missed_until: r.missed_until.map(|t| time(t, tz)),
        create_time: Some(timestamp_out(r.create_time)),
        update_time: Some(timestamp_out(r.update_time)),
    }
}

// ------------------------------------------------------------------ node

pub fn clock_out(g: &crate::actors::clock_guardian::GuardStatus) -> pb::ClockStatus {
    pb::ClockStatus {
        gate_open: g.open,
        reason: g.reason.clone(),
        since: g.since.map(timestamp_out),
        offset_us: g.offset_us,
        bound_us: g.bound_us,
        sources: g.sources.clone(),
        no_source: g.no_source,
        jumps: g.jumps,
    }
}

pub fn node_status_out(node: &str, regions: &[RegionId], s: &NodeStatus) -> pb::NodeStatus {
    let owners = &s.owners;
    pb::NodeStatus {
        clock: None,
        node: node.to_owned(),
        regions: regions.iter().map(ToString::to_string).collect(),
        // The newest epoch among the shards this node owns (0: it owns none).
        epoch: owners.iter().map(|o| o.epoch.0).max().unwrap_or(0),
        jobs_indexed: s.jobs_indexed() as u64,
        next_due: owners
            .iter()
            .filter_map(|o| o.next_due)
            .min()
            .map(|t| time(t, Tz::UTC)),
        pending_dispatches: owners.iter().map(|o| o.pending_dispatches as u64).sum(),
        region_status: s
            .regions
            .iter()
            .map(|r| pb::RegionStatus {
                region: r.region.to_string(),
                workers: u32::try_from(r.workers).unwrap_or(u32::MAX),
                busy: u32::try_from(r.busy).unwrap_or(u32::MAX),
                waiting: r.waiting as u64,
                started: r.started,
                succeeded: r.succeeded,
                failed: r.failed,
                skipped: r.skipped,
                workers_lost: r.workers_lost,
                refused_stale_epoch: r.refused_stale_epoch,
            })
            .collect(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn time_renders_local_with_offset() {
        let t = chrono::Utc.with_ymd_and_hms(2026, 3, 8, 7, 0, 0).unwrap();
        let tz: Tz = "America/New_York".parse().unwrap();
        let out = time(t, tz);
        assert_eq!(out.local, "2026-03-08T03:00:00-04:00");
        assert_eq!(out.time_zone, "America/New_York");
        assert_eq!(
            t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            "2026-03-08T07:00:00Z"
        );
    }

    #[test]
    fn durations_and_timestamps_are_checked() {
        let neg = prost_types::Duration {
            seconds: -1,
            nanos: 0,
        };
        assert_eq!(duration_in("x", &neg).unwrap_err().field, "x");
        let far = prost_types::Timestamp {
            seconds: i64::MAX / 2,
            nanos: 0,
        };
        assert!(timestamp_in("t", &far).is_err());
        let bad_nanos = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert!(timestamp_in("t", &bad_nanos).is_err());
    }

    #[test]
    fn missing_schedule_and_action_name_the_field() {
        let now = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(schedule_in(None, now).unwrap_err().field, "schedule");
        assert_eq!(
            schedule_in(Some(pb::Schedule::default()), now)
                .unwrap_err()
                .field,
            "schedule"
        );
        assert_eq!(action_in(None).unwrap_err().field, "action");
        assert_eq!(
            action_in(Some(pb::Action::default())).unwrap_err().field,
            "action"
        );
    }

    #[test]
    fn schedule_round_trips() {
        let now = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let s = pb::Schedule {
            kind: Some(pb::schedule::Kind::Once(pb::Once {
                at: Some(pb::once::At::LocalTime("2027-03-14T02:30:00".into())),
            })),
            time_zone: "Europe/Paris".into(),
            dst_fold: pb::DstFold::Both as i32,
            ..Default::default()
        };
        let spec = schedule_in(Some(s), now).unwrap();
        let back = schedule_out(&spec);
        assert_eq!(
            back.kind,
            Some(pb::schedule::Kind::Once(pb::Once {
                at: Some(pb::once::At::LocalTime("2027-03-14T02:30:00".into())),
            }))
        );
        assert_eq!(back.dst_fold, pb::DstFold::Both as i32);
        assert_eq!(back.dst_gap, pb::DstGap::Shift as i32);
        // Interval anchors default to the given instant; zones to UTC.
        let s = pb::Schedule {
            kind: Some(pb::schedule::Kind::Interval(duration_out(
                Duration::from_secs(30),
            ))),
            ..Default::default()
        };
        let spec = schedule_in(Some(s), now).unwrap();
        assert_eq!(spec.time_zone, "UTC");
        assert!(matches!(spec.kind, Kind::Interval { anchor, .. } if anchor == now));
    }

    #[test]
    fn policy_defaults_fill_absent_fields() {
        assert_eq!(policy_in(None).unwrap(), Policies::default());
        let p = pb::Policy {
            retry: Some(pb::RetryPolicy {
                attempts_max: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = policy_in(Some(p)).unwrap();
        assert_eq!(p.retry.attempts_max, 3);
        assert_eq!(p.retry.timeout, Retry::default().timeout);
        assert_eq!(policy_in(Some(policy_out(&p))).unwrap(), p);
    }

    #[test]
    fn command_env_is_sorted() {
        let a = pb::Action {
            kind: Some(pb::action::Kind::Command(pb::CommandAction {
                argv: vec!["true".into()],
                env: [("B".to_string(), "2".to_string()), ("A".into(), "1".into())].into(),
                working_dir: String::new(),
            })),
        };
        let Action::Command(c) = action_in(Some(a)).unwrap() else {
            panic!("a command")
        };
        assert_eq!(
            c.env,
            vec![("A".into(), "1".into()), ("B".into(), "2".into())]
        );
        assert_eq!(c.working_dir, None);
    }
}
