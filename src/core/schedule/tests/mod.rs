//! Tests of the schedule module: DST tables (`dst`), cron grammar and errors (`parse`), the
//! other kinds, bounds and create-time checks (`kinds`), and property tests against a
//! brute-force enumeration and the `croner` crate (`props`).
//!
//! Test helpers only; they must not read the clock (every instant is written out).

mod dst;
mod kinds;
mod parse;
mod props;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::{DstDecision, DstFold, DstGap, Firing, Kind, ScheduleSpec};

pub(super) const GAPS: [DstGap; 2] = [DstGap::Shift, DstGap::Skip];
pub(super) const FOLDS: [DstFold; 3] = [DstFold::First, DstFold::Last, DstFold::Both];

/// `2027-03-14T07:00:00Z`.
pub(super) fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("bad test instant {s}: {e}"))
        .with_timezone(&Utc)
}

/// `2027-03-14T02:30:00`.
pub(super) fn wall(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .unwrap_or_else(|e| panic!("bad test wall time {s}: {e}"))
}

pub(super) fn cron_spec(expr: &str, zone: &str, gap: DstGap, fold: DstFold) -> ScheduleSpec {
    ScheduleSpec {
        time_zone: zone.to_string(),
        dst_gap: gap,
        dst_fold: fold,
        ..ScheduleSpec::new(Kind::Cron {
            expr: expr.to_string(),
        })
    }
}

/// Expected firing written as `2027-03-14T07:00:00Z` plus an optional decision code:
/// `S` gap shifted, `F` fold first, `L` fold last, `B` fold both.
pub(super) fn expected(s: &str) -> (DateTime<Utc>, DstDecision) {
    let mut parts = s.split_whitespace();
    let at = utc(parts.next().unwrap_or_default());
    let decision = match parts.next() {
        None => DstDecision::None,
        Some("S") => DstDecision::GapShifted,
        Some("F") => DstDecision::FoldFirst,
        Some("L") => DstDecision::FoldLast,
        Some("B") => DstDecision::FoldBoth,
        Some(other) => panic!("bad decision code {other}"),
    };
    (at, decision)
}

/// Firings by chained `next_after`, checking they strictly increase and agree with `preview`.
pub(super) fn chain(schedule: &super::Schedule, after: DateTime<Utc>, count: usize) -> Vec<Firing> {
    let mut out: Vec<Firing> = Vec::new();
    let mut cursor = after;
    for _ in 0..count {
        let Some(f) = schedule.next_after(cursor) else {
            break;
        };
        assert!(f.at > cursor, "{} not after {}", f.at, cursor);
        assert_eq!(
            f.local,
            f.at.with_timezone(&schedule.time_zone()).fixed_offset()
        );
        cursor = f.at;
        out.push(f);
    }
    assert_eq!(schedule.preview(after, count), out);
    out
}
