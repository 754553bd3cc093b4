//! Checks a schedule at job creation against "now", and explains to people what the DST
//! transitions of the coming year do to it.
//!
//! Owns the create-time rules (nothing in the past, at least one firing ahead) and the warning
//! texts. It must not change what a schedule computes (that is `mod.rs`), and it must not read
//! the clock: "now" is an argument.

use chrono::{DateTime, NaiveDateTime, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;

use super::cron::Cron;
use super::zone::{self, Mapped, Transition};
use super::{DstFold, DstGap, Kind, Once, Rule, Schedule, ScheduleSpec, rfc3339};
use crate::core::FieldError;

/// How far ahead warnings look.
const WARNING_HORIZON_DAYS: i64 = 365;

/// Most warnings returned (a zone has at most a few transitions a year).
const WARNINGS_MAX: usize = 16;

/// Most affected wall times named in one warning; more are summarised as "and more".
const WARNING_TIMES_MAX: usize = 3;

/// Intervals at least this long keep a wall-clock rhythm that DST visibly moves.
const INTERVAL_DST_WARNING_MIN: TimeDelta = TimeDelta::hours(12);

pub(super) fn validate_for_create(
    spec: &ScheduleSpec,
    now: DateTime<Utc>,
) -> Result<(Schedule, Vec<String>), FieldError> {
    let schedule = spec.compile()?;
    if let Some(end) = spec.end_time
        && end <= now
    {
        return Err(FieldError::new(
            "schedule.end_time",
            format!(
                "end_time {} is not after now ({}): expected a future instant",
                rfc3339(end),
                rfc3339(now)
            ),
        ));
    }
    if schedule.next_after(now).is_none() {
        return Err(never_fires(spec, &schedule, now));
    }
    let warnings = warnings(spec, &schedule, now);
    Ok((schedule, warnings))
}

/// Why a schedule that compiled has no firing after `now`.
fn never_fires(spec: &ScheduleSpec, schedule: &Schedule, now: DateTime<Utc>) -> FieldError {
    let bounds = describe_bounds(spec);
    match &spec.kind {
        Kind::Once(Once::Utc(at)) if *at <= now => FieldError::new(
            "schedule.once",
            format!(
                "once at {} is not after now ({}): expected a future instant",
                rfc3339(*at),
                rfc3339(now)
            ),
        ),
        Kind::Once(Once::Local(wall)) => {
            let tz = schedule.time_zone();
            match zone::map_local(tz, wall) {
                Mapped::Gap { .. } if spec.dst_gap == DstGap::Skip => FieldError::new(
                    "schedule.once",
                    format!(
                        "local time {} does not exist in {} (a DST gap) and dst_gap=skip: it would never fire; expected a wall time that exists, or dst_gap=shift",
                        wall,
                        tz.name()
                    ),
                ),
                mapped if !has_instant_after(mapped, spec.dst_fold, now) => FieldError::new(
                    "schedule.once",
                    format!(
                        "local time {wall} in {} is not after now ({}): expected a future time",
                        tz.name(),
                        rfc3339(now)
                    ),
                ),
                _ => FieldError::new(
                    "schedule.once",
                    format!("once at local time {wall} falls outside {bounds}"),
                ),
            }
        }
        Kind::Once(Once::Utc(at)) => FieldError::new(
            "schedule.once",
            format!("once at {} falls outside {bounds}", rfc3339(*at)),
        ),
        Kind::Cron { .. } | Kind::Interval { .. } => FieldError::new(
            "schedule.end_time",
            format!(
                "the schedule has no firing after now ({}) within {bounds}: expected a later end_time",
                rfc3339(now)
            ),
        ),
    }
}

fn has_instant_after(mapped: Mapped, fold: DstFold, now: DateTime<Utc>) -> bool {
    match mapped {
        Mapped::Single(at) => at.with_timezone(&Utc) > now,
        Mapped::Ambiguous(earlier, later) => match fold {
            DstFold::First => earlier.with_timezone(&Utc) > now,
            DstFold::Last | DstFold::Both => later.with_timezone(&Utc) > now,
        },
        Mapped::Gap { at, .. } => at.is_some_and(|at| at.with_timezone(&Utc) > now),
    }
}

fn describe_bounds(spec: &ScheduleSpec) -> String {
    let start = spec
        .start_time
        .map(rfc3339)
        .unwrap_or_else(|| "-".to_string());
    let end = spec
        .end_time
        .map(rfc3339)
        .unwrap_or_else(|| "-".to_string());
    format!("start_time..end_time [{start}, {end})")
}

/// One warning per transition in the next year that moves, merges, repeats or drops a firing.
fn warnings(spec: &ScheduleSpec, schedule: &Schedule, now: DateTime<Utc>) -> Vec<String> {
    let tz = schedule.time_zone();
    let from = match schedule.start_time() {
        Some(start) if start > now => start,
        _ => now,
    };
    let mut to = now
        .checked_add_signed(TimeDelta::days(WARNING_HORIZON_DAYS))
        .unwrap_or(now);
    if let Some(end) = schedule.end_time() {
        to = to.min(end);
    }
    if to <= from {
        return Vec::new();
    }
    let transitions = zone::transitions(tz, from, to, WARNINGS_MAX);
    let mut out = Vec::new();
    for transition in transitions {
        let text = match (&spec.kind, &schedule.rule) {
            (Kind::Cron { .. }, Rule::Cron(cron)) => {
                wall_clock_warning(spec, tz, &transition, |lo, hi| cron_times_in(cron, lo, hi))
            }
            (Kind::Once(Once::Local(wall)), _) => {
                wall_clock_warning(spec, tz, &transition, |lo, hi| {
                    let inside = *wall >= lo && *wall < hi;
                    (if inside { vec![*wall] } else { Vec::new() }, false)
                })
            }
            (Kind::Interval { every, .. }, _) => {
                interval_warning(schedule, *every, tz, &transition)
            }
            _ => None,
        };
        if let Some(text) = text {
            out.push(text);
        }
    }
    out
}

/// Wall times in `[lo, hi)` matching `cron`, at most `WARNING_TIMES_MAX`, and whether more.
fn cron_times_in(cron: &Cron, lo: NaiveDateTime, hi: NaiveDateTime) -> (Vec<NaiveDateTime>, bool) {
    let mut times = Vec::new();
    let mut from = lo;
    while let Some(t) = cron.next_naive(from) {
        if t >= hi {
            break;
        }
        if times.len() == WARNING_TIMES_MAX {
            return (times, true);
        }
        times.push(t);
        let Some(next) = t.checked_add_signed(TimeDelta::seconds(1)) else {
            break;
        };
        from = next;
    }
    (times, false)
}

fn wall_clock_warning(
    spec: &ScheduleSpec,
    tz: Tz,
    transition: &Transition,
    times_in: impl Fn(NaiveDateTime, NaiveDateTime) -> (Vec<NaiveDateTime>, bool),
) -> Option<String> {
    let before_wall = zone::local_of(transition.at, transition.before)?;
    let after_wall = zone::local_of(transition.at, transition.after)?;
    let is_gap = transition.after > transition.before;
    // A gap skips the wall times [before_wall, after_wall); a fold repeats [after_wall, before_wall).
    let (lo, hi) = if is_gap {
        (before_wall, after_wall)
    } else {
        (after_wall, before_wall)
    };
    let (times, more) = times_in(lo, hi);
    if times.is_empty() {
        return None;
    }
    let seconds = times.iter().any(|t| t.second() != 0);
    let mut list = times
        .iter()
        .map(|t| clock(t, seconds))
        .collect::<Vec<_>>()
        .join(", ");
    if more {
        list.push_str(" and more");
    }
    let plural = times.len() > 1 || more;
    let what = if is_gap {
        let (verb, fire) = if plural {
            ("do not exist", "fire once")
        } else {
            ("does not exist", "fires")
        };
        match spec.dst_gap {
            DstGap::Shift => format!(
                "{list} {verb}, {fire} at {} (dst_gap=shift)",
                clock(&after_wall, after_wall.second() != 0)
            ),
            DstGap::Skip => format!(
                "{list} {verb}, {} skipped (dst_gap=skip)",
                if plural { "are" } else { "is" }
            ),
        }
    } else {
        let (verb, fire) = if plural {
            ("occur twice", "fire")
        } else {
            ("occurs twice", "fires")
        };
        let offsets = format!(
            "UTC{} then UTC{}",
            offset_text(transition.before),
            offset_text(transition.after)
        );
        let which = match spec.dst_fold {
            DstFold::First => "at the first only (dst_fold=first)",
            DstFold::Last => "at the second only (dst_fold=last)",
            DstFold::Both => "at both (dst_fold=both)",
        };
        format!("{list} {verb} ({offsets}), {fire} {which}")
    };
    Some(format!(
        "schedule crosses a DST transition on {} ({}): {what}",
        after_wall.date(),
        tz.name()
    ))
}

fn interval_warning(
    schedule: &Schedule,
    every: std::time::Duration,
    tz: Tz,
    transition: &Transition,
) -> Option<String> {
    let every = TimeDelta::from_std(every).ok()?;
    if every < INTERVAL_DST_WARNING_MIN {
        return None;
    }
    // Only when the schedule fires after the transition.
    schedule.next_after(transition.at - TimeDelta::nanoseconds(1))?;
    let shift = transition.after - transition.before;
    let wall = zone::local_of(transition.at, transition.after)?;
    Some(format!(
        "schedule crosses a DST transition on {} ({}): interval schedules count elapsed time, so local firing times move by {} after it; use a cron schedule to keep wall-clock times",
        wall.date(),
        tz.name(),
        offset_text(shift)
    ))
}

fn clock(t: &NaiveDateTime, seconds: bool) -> String {
    if seconds {
        t.format("%H:%M:%S").to_string()
    } else {
        t.format("%H:%M").to_string()
    }
}

/// `+05:30`, `-04:00`.
fn offset_text(seconds: i32) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let s = seconds.unsigned_abs();
    if !s.is_multiple_of(60) {
        format!("{sign}{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
    } else {
        format!("{sign}{:02}:{:02}", s / 3600, s % 3600 / 60)
    }
}
