//! Property tests:
//! - around real DST transitions, under every policy, the firings equal what a brute-force,
//!   minute-by-minute (second-by-second for 6 fields) enumeration of wall times produces:
//!   every firing matches the expression or is a gap shift, firings strictly increase, and
//!   none is skipped;
//! - in UTC, the cron evaluator agrees with the `croner` crate on generated expressions.
//!
//! Tests only; no clock reads (instants are generated).

use std::collections::BTreeMap;

use chrono::{DateTime, LocalResult, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron as Croner;
use proptest::prelude::*;

use super::super::{DstDecision, DstFold, DstGap};
use super::{FOLDS, GAPS, cron_spec, utc};

const ZONES: [&str; 6] = [
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "UTC",
];

/// Transition instants of 2026/2027 of each zone above, to start searches near (the zones
/// without DST borrow New York's instants).
const TRANSITIONS: [[&str; 4]; 6] = [
    [
        "2026-03-08T07:00:00Z",
        "2026-11-01T06:00:00Z",
        "2027-03-14T07:00:00Z",
        "2027-11-07T06:00:00Z",
    ],
    [
        "2026-03-29T01:00:00Z",
        "2026-10-25T01:00:00Z",
        "2027-03-28T01:00:00Z",
        "2027-10-31T01:00:00Z",
    ],
    [
        "2026-04-04T15:00:00Z",
        "2026-10-03T15:30:00Z",
        "2027-04-03T15:00:00Z",
        "2027-10-02T15:30:00Z",
    ],
    [
        "2026-03-08T07:00:00Z",
        "2026-11-01T06:00:00Z",
        "2027-03-14T07:00:00Z",
        "2027-11-07T06:00:00Z",
    ],
    [
        "2026-04-04T14:00:00Z",
        "2026-09-26T14:00:00Z",
        "2027-04-03T14:00:00Z",
        "2027-09-25T14:00:00Z",
    ],
    [
        "2026-03-08T07:00:00Z",
        "2026-11-01T06:00:00Z",
        "2027-03-14T07:00:00Z",
        "2027-11-07T06:00:00Z",
    ],
];

/// A numeric cron field over `min..=max` in syntax both we and croner accept.
fn numeric_field(min: u32, max: u32) -> BoxedStrategy<String> {
    let value = min..=max;
    let step = 1..=max.max(1);
    prop_oneof![
        2 => Just("*".to_string()),
        2 => step.clone().prop_map(|k| format!("*/{k}")),
        2 => value.clone().prop_map(|a| a.to_string()),
        1 => (value.clone(), value.clone()).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        1 => (value.clone(), value.clone(), step).prop_map(|(a, b, k)| format!("{}-{}/{k}", a.min(b), a.max(b))),
        1 => proptest::collection::vec(value, 2..4).prop_map(|v| {
            v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        }),
    ]
    .boxed()
}

fn dom_field() -> BoxedStrategy<String> {
    prop_oneof![
        6 => Just("*".to_string()),
        1 => Just("?".to_string()),
        4 => numeric_field(1, 31),
        1 => Just("L".to_string()),
        1 => Just("LW".to_string()),
        1 => (1..=31u32).prop_map(|d| format!("{d}W")),
        1 => (1..=28u32).prop_map(|d| format!("L,{d}")),
        1 => (1..=31u32, 1..=31u32).prop_map(|(a, b)| format!("{a}W,{b}")),
    ]
    .boxed()
}

fn month_field() -> BoxedStrategy<String> {
    prop_oneof![
        4 => numeric_field(1, 12),
        1 => Just("JAN-MAR".to_string()),
        1 => Just("jun,Dec".to_string()),
        1 => Just("feb".to_string()),
    ]
    .boxed()
}

fn dow_field() -> BoxedStrategy<String> {
    prop_oneof![
        6 => Just("*".to_string()),
        1 => Just("?".to_string()),
        4 => numeric_field(0, 7),
        1 => Just("MON-FRI".to_string()),
        1 => Just("sat,SUN".to_string()),
        1 => Just("FRI-SUN".to_string()),
        1 => (0..=7u32).prop_map(|w| format!("{w}L")),
        1 => (0..=7u32, 1..=5u32).prop_map(|(w, k)| format!("{w}#{k}")),
        1 => (0..=6u32, 1..=5u32, 0..=6u32).prop_map(|(w, k, x)| format!("{w}#{k},{x}")),
    ]
    .boxed()
}

/// Full expressions in the syntax croner shares with us.
fn oracle_expr() -> impl Strategy<Value = String> {
    (
        proptest::option::of(numeric_field(0, 59)),
        numeric_field(0, 59),
        numeric_field(0, 23),
        dom_field(),
        month_field(),
        dow_field(),
    )
        .prop_map(|(sec, min, hour, dom, month, dow)| match sec {
            Some(sec) => format!("{sec} {min} {hour} {dom} {month} {dow}"),
            None => format!("{min} {hour} {dom} {month} {dow}"),
        })
}

/// Dense-ish expressions whose firings land in and around DST gaps and folds.
fn dst_expr() -> impl Strategy<Value = (String, bool)> {
    let minute = prop_oneof![
        Just("*".to_string()),
        (1..=30u32).prop_map(|k| format!("*/{k}")),
        (0..60u32).prop_map(|a| a.to_string()),
        (0..60u32, 0..60u32).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        proptest::collection::vec(0..60u32, 2..4).prop_map(|v| v
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")),
    ];
    let hour = prop_oneof![
        2 => Just("*".to_string()),
        2 => (0..=4u32).prop_map(|h| h.to_string()),
        2 => (0..=4u32, 0..=4u32).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        1 => (1..=6u32).prop_map(|k| format!("*/{k}")),
        1 => proptest::collection::vec(0..24u32, 2..4)
            .prop_map(|v| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
    ];
    let dow = prop_oneof![4 => Just("*"), 1 => Just("0"), 1 => Just("1-5"), 1 => Just("SAT,SUN")];
    let second = prop_oneof![
        (10..=30u32).prop_map(|k| format!("*/{k}")),
        (0..60u32).prop_map(|s| s.to_string()),
        Just("0,30".to_string()),
    ];
    (proptest::option::of(second), minute, hour, dow).prop_map(|(sec, min, hour, dow)| match sec {
        Some(sec) => (format!("{sec} {min} {hour} * * {dow}"), true),
        None => (format!("{min} {hour} * * {dow}"), false),
    })
}

fn croner(expr: &str) -> Croner {
    croner::parser::CronParser::new()
        .parse(expr)
        .unwrap_or_else(|e| panic!("croner rejects '{expr}': {e:?}"))
}

/// The firings of `expr` in `(from, to]` under a policy, by enumerating every wall time one
/// step apart, asking croner whether it matches and chrono-tz what it maps to.
fn brute_force(
    expr: &str,
    seconds: bool,
    tz: Tz,
    gap: DstGap,
    fold: DstFold,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, DstDecision)> {
    let oracle = croner(expr);
    let step = if seconds {
        TimeDelta::seconds(1)
    } else {
        TimeDelta::minutes(1)
    };
    // No offset here changes by more than an hour, so 3 hours of margin cover every wall time
    // that maps into the window.
    let margin = TimeDelta::hours(3);
    let local = |t: DateTime<Utc>| t.with_timezone(&tz).naive_local();
    let mut wall = (local(from) - margin)
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or_default();
    let end = local(to) + margin;
    let mut found: BTreeMap<DateTime<Utc>, DstDecision> = BTreeMap::new();
    let mut add = |at: DateTime<Utc>, decision: DstDecision| {
        let entry = found.entry(at).or_insert(decision);
        // A gap shift lands on the first wall time after the gap, which may match itself.
        if decision == DstDecision::GapShifted {
            *entry = decision;
        }
    };
    while wall <= end {
        if oracle.is_time_matching(&wall).unwrap_or(false) {
            match tz.from_local_datetime(&wall) {
                LocalResult::Single(t) => add(t.with_timezone(&Utc), DstDecision::None),
                LocalResult::Ambiguous(a, b) => {
                    let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
                    match fold {
                        DstFold::First => add(a, DstDecision::FoldFirst),
                        DstFold::Last => add(b, DstDecision::FoldLast),
                        DstFold::Both => {
                            add(a, DstDecision::FoldBoth);
                            add(b, DstDecision::FoldBoth);
                        }
                    }
                }
                LocalResult::None => {
                    if gap == DstGap::Shift {
                        // Walk to the first wall time that exists (gaps end on a minute).
                        let mut after_gap = wall.with_second(0).unwrap_or(wall);
                        let shifted = loop {
                            after_gap += TimeDelta::minutes(1);
                            if let Some(t) = tz.from_local_datetime(&after_gap).earliest() {
                                break t.with_timezone(&Utc);
                            }
                        };
                        add(shifted, DstDecision::GapShifted);
                    }
                }
            }
        }
        wall += step;
    }
    found
        .into_iter()
        .filter(|(at, _)| *at > from && *at <= to)
        .collect()
}

/// Where two firing lists first differ, briefly (the lists can hold thousands of firings).
fn first_difference(
    ours: &[(DateTime<Utc>, DstDecision)],
    want: &[(DateTime<Utc>, DstDecision)],
) -> Option<String> {
    let i = ours.iter().zip(want).position(|(a, b)| a != b);
    let i = match i {
        Some(i) => i,
        None if ours.len() == want.len() => return None,
        None => ours.len().min(want.len()),
    };
    Some(format!(
        "lengths {} vs {} (brute force); first difference at {i}: ours {:?}, brute force {:?}",
        ours.len(),
        want.len(),
        ours.get(i),
        want.get(i)
    ))
}

proptest! {
    // 256 cases each (proptest's default); PROPTEST_CASES=5000 for a longer run.
    #![proptest_config(ProptestConfig::default())]

    /// Around DST transitions, under every policy: the computed firings are exactly the
    /// brute-force ones, in strictly increasing order.
    #[test]
    fn dst_firings_equal_brute_force(
        (expr, seconds) in dst_expr(),
        zone in 0..ZONES.len(),
        transition in 0..4usize,
        offset_secs in prop_oneof![-30 * 3600i64..6 * 3600, -2 * 3600i64..2 * 3600],
        probes in proptest::collection::vec(0..1_000_000i64, 8),
        near in proptest::collection::vec(-7_200_000..7_200_000i64, 8),
        nanos in prop_oneof![3 => Just(0u32), 1 => 0..1_000_000_000u32],
        gap in 0..2usize,
        fold in 0..3usize,
        bounds in proptest::option::of((0..7200i64, 0..7200i64)),
    ) {
        let (gap, fold) = (GAPS[gap], FOLDS[fold]);
        let tz: Tz = ZONES[zone].parse().unwrap();
        let transition_at = utc(TRANSITIONS[zone][transition]);
        let from = transition_at + TimeDelta::seconds(offset_secs) + TimeDelta::nanoseconds(i64::from(nanos));
        let to = from + if seconds { TimeDelta::hours(2) } else { TimeDelta::hours(36) };
        let mut spec = cron_spec(&expr, ZONES[zone], gap, fold);
        if let Some((a, b)) = bounds {
            // Scale the bounds into the window.
            let span = (to - from).num_seconds();
            let (a, b) = (a * span / 7200, b * span / 7200);
            let (a, b) = (a.min(b), a.max(b) + 1);
            spec.start_time = Some(from + TimeDelta::seconds(a));
            spec.end_time = Some(from + TimeDelta::seconds(b));
        }
        let schedule = spec.compile().unwrap();

        let mut ours = Vec::new();
        let mut cursor = from;
        while let Some(f) = schedule.next_after(cursor) {
            prop_assert!(f.at > cursor, "{} not after {}", f.at, cursor);
            if f.at > to {
                break;
            }
            // (a) each firing is a matching wall time, or a shift to the end of a gap.
            let wall = f.local.naive_local();
            if f.decision != DstDecision::GapShifted {
                prop_assert!(croner(&expr).is_time_matching(&wall).unwrap(), "{wall} does not match");
            }
            ours.push((f.at, f.decision));
            cursor = f.at;
        }

        let mut want = brute_force(&expr, seconds, tz, gap, fold, from, to);
        if let (Some(start), Some(end)) = (spec.start_time, spec.end_time) {
            want.retain(|(at, _)| *at >= start && *at < end);
        }
        // (b) strictly increasing and (c) nothing skipped: equal to the full enumeration.
        if let Some(diff) = first_difference(&ours, &want) {
            prop_assert!(false, "'{}' in {} from {} gap={:?} fold={:?}: {}", expr, ZONES[zone], from, gap, fold, diff);
        }

        // From arbitrary instants too, not only from firings: the first firing after each.
        let span = (to - from).num_milliseconds();
        let uniform = probes.iter().map(|p| from + TimeDelta::milliseconds(p * span / 1_000_000));
        // Half of them within two hours of the transition, where the folds and gaps are.
        let near = near.iter().map(|ms| transition_at + TimeDelta::milliseconds(*ms));
        for at in uniform.chain(near).filter(|at| *at >= from && *at < to) {
            let expected = want.iter().find(|(t, _)| *t > at).copied();
            let got = schedule.next_after(at).map(|f| (f.at, f.decision)).filter(|(t, _)| *t <= to);
            prop_assert_eq!(got, expected, "'{}' in {} after {} gap={:?} fold={:?}", expr, ZONES[zone], at, gap, fold);
        }
    }

    /// In UTC (no DST), our evaluator and croner give the same next firings.
    #[test]
    fn cron_agrees_with_croner(
        expr in oracle_expr(),
        start in 946_684_800i64..4_102_444_800,
    ) {
        let schedule = match cron_spec(&expr, "UTC", DstGap::Shift, DstFold::First).compile() {
            Ok(s) => s,
            Err(e) => {
                // Only day-of-month/month combinations that never happen may be refused.
                prop_assert!(e.message.contains("never matches"), "'{}' refused: {}", expr, e);
                return Ok(());
            }
        };
        let oracle = croner(&expr);
        let mut ours = DateTime::from_timestamp(start, 0).unwrap();
        let mut theirs = ours;
        for _ in 0..5 {
            let Some(next) = schedule.next_after(ours) else {
                prop_assert!(false, "'{}' exhausted after {}", expr, ours);
                return Ok(());
            };
            theirs = oracle.find_next_occurrence(&theirs, false).unwrap();
            prop_assert_eq!(next.at, theirs, "'{}' after {}", expr, ours);
            prop_assert_eq!(next.decision, DstDecision::None);
            ours = next.at;
        }
    }

    /// `a/k` (which croner refuses) means `a-max/k`.
    #[test]
    fn start_step_means_start_to_max(a in 0..60u32, k in 1..60u32, start in 946_684_800i64..4_102_444_800) {
        let short = cron_spec(&format!("{a}/{k} * * * *"), "UTC", DstGap::Shift, DstFold::First).compile().unwrap();
        let long = cron_spec(&format!("{a}-59/{k} * * * *"), "UTC", DstGap::Shift, DstFold::First).compile().unwrap();
        let after = DateTime::from_timestamp(start, 0).unwrap();
        prop_assert_eq!(short.preview(after, 5), long.preview(after, 5));
    }
}

/// The instants used above really are transitions of their zones (guards the table).
#[test]
fn transitions_used_are_real() {
    for (zone, instants) in ZONES.iter().zip(TRANSITIONS) {
        let tz: Tz = zone.parse().unwrap();
        for t in instants {
            let at = utc(t);
            let before = (at - TimeDelta::seconds(1))
                .with_timezone(&tz)
                .offset()
                .to_string();
            let after = at.with_timezone(&tz).offset().to_string();
            let has_dst = !matches!(*zone, "Asia/Kolkata" | "UTC");
            assert_eq!(
                before != after,
                has_dst,
                "{zone} at {t}: {before} -> {after}"
            );
        }
    }
}
