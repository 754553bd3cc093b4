//! Wall-clock time to UTC instants in one IANA zone: unique, ambiguous (fold) or nonexistent
//! (gap) local times, and the transitions around them.
//!
//! Owns the questions asked of chrono-tz; it must not apply a DST policy (the caller picks
//! among the instants offered) and must not read the clock.

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::{GapInfo, Tz};

/// Window stepped through when looking for transitions: no zone changes offset twice within
/// it, so one probe per step sees every transition.
const TRANSITION_PROBE_STEP_SECS: i64 = 6 * 3600;

/// The instants a wall-clock time stands for in a zone, each with its offset there (so that
/// rendering a firing needs no second lookup).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mapped {
    /// Occurs once.
    Single(DateTime<Tz>),
    /// Occurs twice (a fold, clocks set back): earlier and later instant.
    Ambiguous(DateTime<Tz>, DateTime<Tz>),
    /// Does not occur (a gap, clocks set forward). `at` is the first instant after the gap
    /// (the transition), `end` the first wall time after it; None only at the ends of the
    /// zone's table.
    Gap {
        at: Option<DateTime<Tz>>,
        end: Option<NaiveDateTime>,
    },
}

/// Maps a wall-clock time in `tz` to the instants it stands for.
pub(crate) fn map_local(tz: Tz, local: &NaiveDateTime) -> Mapped {
    match tz.from_local_datetime(local) {
        LocalResult::Single(t) => Mapped::Single(t),
        LocalResult::Ambiguous(a, b) if b < a => Mapped::Ambiguous(b, a),
        LocalResult::Ambiguous(a, b) => Mapped::Ambiguous(a, b),
        LocalResult::None => match GapInfo::new(local, &tz).and_then(|g| g.end) {
            Some(end) => Mapped::Gap {
                at: Some(end),
                end: Some(end.naive_local()),
            },
            None => Mapped::Gap {
                at: None,
                end: None,
            },
        },
    }
}

/// Offset of a zoned time, in seconds east of UTC.
pub(crate) fn offset_of(t: &DateTime<Tz>) -> i32 {
    t.offset().fix().local_minus_utc()
}

/// UTC offset of `tz` at `t`, in seconds east of UTC.
pub(crate) fn offset_at(tz: Tz, t: DateTime<Utc>) -> i32 {
    tz.offset_from_utc_datetime(&t.naive_utc())
        .fix()
        .local_minus_utc()
}

fn offset_at_secs(tz: Tz, secs: i64) -> Option<i32> {
    DateTime::from_timestamp(secs, 0).map(|t| offset_at(tz, t))
}

/// The wall-clock time of `t` in a zone whose offset at `t` is `offset` seconds.
pub(crate) fn local_of(t: DateTime<Utc>, offset: i32) -> Option<NaiveDateTime> {
    t.naive_utc()
        .checked_add_signed(TimeDelta::seconds(i64::from(offset)))
}

/// The first whole second in `(lo, hi]` whose offset differs from the offset at `lo`.
/// The caller knows that one transition lies in that range (chrono-tz transitions fall on
/// whole seconds); returns `hi` when the offsets at both ends agree.
pub(crate) fn transition_in(tz: Tz, lo: i64, hi: i64) -> Option<DateTime<Utc>> {
    let before = offset_at_secs(tz, lo)?;
    let (mut a, mut b) = (lo, hi);
    while b - a > 1 {
        let mid = a + (b - a) / 2;
        if offset_at_secs(tz, mid)? == before {
            a = mid;
        } else {
            b = mid;
        }
    }
    DateTime::from_timestamp(b, 0)
}

/// A change of UTC offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Transition {
    /// First instant with the new offset.
    pub at: DateTime<Utc>,
    /// Offsets before and after, seconds east of UTC.
    pub before: i32,
    pub after: i32,
}

/// Every offset change of `tz` in `(from, to]`, oldest first, at most `count_max`.
pub(crate) fn transitions(
    tz: Tz,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    count_max: usize,
) -> Vec<Transition> {
    let mut found = Vec::new();
    let (mut t, end) = (from.timestamp(), to.timestamp());
    let Some(mut offset) = offset_at_secs(tz, t) else {
        return found;
    };
    while t < end && found.len() < count_max {
        let next = (t + TRANSITION_PROBE_STEP_SECS).min(end);
        let Some(next_offset) = offset_at_secs(tz, next) else {
            break;
        };
        if next_offset != offset
            && let Some(at) = transition_in(tz, t, next)
            && at > from
        {
            found.push(Transition {
                at,
                before: offset,
                after: next_offset,
            });
        }
        t = next;
        offset = next_offset;
    }
    found
}
