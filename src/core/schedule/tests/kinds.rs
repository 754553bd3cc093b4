//! Interval and once schedules, start/end bounds, create-time checks and warnings, the JSON
//! form of a spec, and the compiled size.
//!
//! Tests only; no clock reads ("now" is written out).

use std::time::Duration;

use super::super::{
    DstDecision, DstFold, DstGap, Kind, Once, PREVIEW_COUNT_MAX, Schedule, ScheduleSpec,
    TZDB_VERSION,
};
use super::{chain, cron_spec, utc, wall};

fn interval(every: Duration, anchor: &str) -> ScheduleSpec {
    ScheduleSpec::new(Kind::Interval {
        every,
        anchor: utc(anchor),
    })
}

fn ats(schedule: &Schedule, after: &str, n: usize) -> Vec<String> {
    chain(schedule, utc(after), n)
        .iter()
        .map(|f| f.at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .collect()
}

#[test]
fn interval_counts_from_the_anchor() {
    let s = interval(Duration::from_secs(60), "2027-01-01T00:00:10Z")
        .compile()
        .unwrap();
    // Before the anchor: the anchor itself.
    assert_eq!(
        ats(&s, "2026-12-31T00:00:00Z", 2),
        ["2027-01-01T00:00:10Z", "2027-01-01T00:01:10Z"]
    );
    // Strictly after: an instant on the grid is not returned again.
    assert_eq!(ats(&s, "2027-01-01T00:01:10Z", 1), ["2027-01-01T00:02:10Z"]);
    // Far after: arithmetic, not a walk.
    assert_eq!(ats(&s, "2030-06-01T12:00:00Z", 1), ["2030-06-01T12:00:10Z"]);
}

#[test]
fn interval_keeps_sub_second_precision() {
    let s = interval(Duration::from_millis(1500), "2027-01-01T00:00:00Z")
        .compile()
        .unwrap();
    assert_eq!(
        ats(&s, "2027-01-01T00:00:00Z", 3),
        [
            "2027-01-01T00:00:01.500Z",
            "2027-01-01T00:00:03Z",
            "2027-01-01T00:00:04.500Z"
        ]
    );
}

#[test]
fn interval_first_firing_is_at_or_after_both_anchor_and_start() {
    let mut spec = interval(Duration::from_secs(60), "2027-01-01T00:00:10Z");
    spec.start_time = Some(utc("2027-01-01T00:05:00Z"));
    let s = spec.compile().unwrap();
    assert_eq!(ats(&s, "2026-01-01T00:00:00Z", 1), ["2027-01-01T00:05:10Z"]);

    // A start on the grid is inclusive.
    spec.start_time = Some(utc("2027-01-01T00:05:10Z"));
    let s = spec.compile().unwrap();
    assert_eq!(ats(&s, "2026-01-01T00:00:00Z", 1), ["2027-01-01T00:05:10Z"]);

    // A start before the anchor: the anchor.
    spec.start_time = Some(utc("2026-01-01T00:00:00Z"));
    let s = spec.compile().unwrap();
    assert_eq!(ats(&s, "2025-01-01T00:00:00Z", 1), ["2027-01-01T00:00:10Z"]);
}

#[test]
fn bounds_start_inclusive_end_exclusive() {
    let mut spec = cron_spec("0 * * * *", "UTC", DstGap::Shift, DstFold::First);
    spec.start_time = Some(utc("2027-01-01T05:00:00Z"));
    spec.end_time = Some(utc("2027-01-01T07:00:00Z"));
    let s = spec.compile().unwrap();
    assert_eq!(
        ats(&s, "2027-01-01T00:00:00Z", 5),
        ["2027-01-01T05:00:00Z", "2027-01-01T06:00:00Z"]
    );
    assert!(s.next_after(utc("2027-01-01T06:00:00Z")).is_none());
    assert!(s.next_after(utc("2030-01-01T00:00:00Z")).is_none());
}

#[test]
fn once_utc_fires_once() {
    let s = ScheduleSpec::new(Kind::Once(Once::Utc(utc("2027-05-05T05:05:05Z"))))
        .compile()
        .unwrap();
    assert_eq!(ats(&s, "2027-01-01T00:00:00Z", 3), ["2027-05-05T05:05:05Z"]);
    assert!(s.next_after(utc("2027-05-05T05:05:05Z")).is_none());
}

#[test]
fn preview_is_capped() {
    let s = cron_spec("* * * * * *", "UTC", DstGap::Shift, DstFold::First)
        .compile()
        .unwrap();
    assert_eq!(
        s.preview(utc("2027-01-01T00:00:00Z"), PREVIEW_COUNT_MAX + 50)
            .len(),
        PREVIEW_COUNT_MAX
    );
    assert!(s.preview(utc("2027-01-01T00:00:00Z"), 0).is_empty());
}

#[test]
fn next_after_handles_sub_second_after() {
    let s = cron_spec(
        "* * * * * *",
        "Europe/London",
        DstGap::Shift,
        DstFold::First,
    )
    .compile()
    .unwrap();
    let after = utc("2027-01-01T00:00:00.5Z");
    assert_eq!(s.next_after(after).unwrap().at, utc("2027-01-01T00:00:01Z"));
}

#[test]
fn validate_for_create_warns_about_each_transition_crossed() {
    let now = utc("2027-01-01T00:00:00Z");
    let spec = cron_spec(
        "30 2 * * *",
        "America/New_York",
        DstGap::Shift,
        DstFold::First,
    );
    let (_, warnings) = spec.validate_for_create(now).unwrap();
    assert_eq!(
        warnings,
        [
            "schedule crosses a DST transition on 2027-03-14 (America/New_York): 02:30 does not exist, fires at 03:00 (dst_gap=shift)"
        ]
    );

    let spec = cron_spec(
        "*/30 * * * *",
        "America/New_York",
        DstGap::Skip,
        DstFold::Both,
    );
    let (_, warnings) = spec.validate_for_create(now).unwrap();
    assert_eq!(
        warnings,
        [
            "schedule crosses a DST transition on 2027-03-14 (America/New_York): 02:00, 02:30 do not exist, are skipped (dst_gap=skip)",
            "schedule crosses a DST transition on 2027-11-07 (America/New_York): 01:00, 01:30 occur twice (UTC-04:00 then UTC-05:00), fire at both (dst_fold=both)",
        ]
    );

    let spec = cron_spec("* * * * *", "Europe/London", DstGap::Shift, DstFold::Last);
    let (_, warnings) = spec.validate_for_create(now).unwrap();
    assert_eq!(
        warnings,
        [
            "schedule crosses a DST transition on 2027-03-28 (Europe/London): 01:00, 01:01, 01:02 and more do not exist, fire once at 02:00 (dst_gap=shift)",
            "schedule crosses a DST transition on 2027-10-31 (Europe/London): 01:00, 01:01, 01:02 and more occur twice (UTC+01:00 then UTC+00:00), fire at the second only (dst_fold=last)",
        ]
    );

    // A daily time outside the gap and fold crosses nothing.
    let spec = cron_spec(
        "0 9 * * *",
        "America/New_York",
        DstGap::Shift,
        DstFold::First,
    );
    assert!(spec.validate_for_create(now).unwrap().1.is_empty());
    // No DST, no warning.
    let spec = cron_spec(
        "*/30 * * * *",
        "Asia/Kolkata",
        DstGap::Shift,
        DstFold::First,
    );
    assert!(spec.validate_for_create(now).unwrap().1.is_empty());

    // Only within end_time: the September gap is cut off.
    let mut spec = cron_spec(
        "0 3 * * *",
        "Pacific/Chatham",
        DstGap::Shift,
        DstFold::First,
    );
    spec.end_time = Some(utc("2027-06-01T00:00:00Z"));
    let (_, warnings) = spec.validate_for_create(now).unwrap();
    assert_eq!(
        warnings,
        [
            "schedule crosses a DST transition on 2027-04-04 (Pacific/Chatham): 03:00 occurs twice (UTC+13:45 then UTC+12:45), fires at the first only (dst_fold=first)"
        ]
    );

    // Only the coming 365 days: from mid-2027, Lord Howe's October 2027 gap and April 2028
    // fold, not October 2028.
    let spec = cron_spec(
        "15,45 * * * *",
        "Australia/Lord_Howe",
        DstGap::Skip,
        DstFold::Last,
    );
    let (_, warnings) = spec
        .validate_for_create(utc("2027-06-01T00:00:00Z"))
        .unwrap();
    assert_eq!(
        warnings,
        [
            "schedule crosses a DST transition on 2027-10-03 (Australia/Lord_Howe): 02:15 does not exist, is skipped (dst_gap=skip)",
            "schedule crosses a DST transition on 2028-04-02 (Australia/Lord_Howe): 01:45 occurs twice (UTC+11:00 then UTC+10:30), fires at the second only (dst_fold=last)",
        ]
    );
}

#[test]
fn validate_for_create_warns_for_once_and_long_intervals() {
    let now = utc("2027-01-01T00:00:00Z");
    let spec = ScheduleSpec {
        time_zone: "America/New_York".into(),
        dst_fold: DstFold::Last,
        ..ScheduleSpec::new(Kind::Once(Once::Local(wall("2027-11-07T01:30:00"))))
    };
    let (s, warnings) = spec.validate_for_create(now).unwrap();
    assert_eq!(
        warnings,
        [
            "schedule crosses a DST transition on 2027-11-07 (America/New_York): 01:30 occurs twice (UTC-04:00 then UTC-05:00), fires at the second only (dst_fold=last)"
        ]
    );
    assert_eq!(s.next_after(now).unwrap().decision, DstDecision::FoldLast);

    let spec = ScheduleSpec {
        time_zone: "Europe/London".into(),
        ..interval(Duration::from_secs(86_400), "2026-12-01T09:00:00Z")
    };
    let (_, warnings) = spec.validate_for_create(now).unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert_eq!(
        warnings[0],
        "schedule crosses a DST transition on 2027-03-28 (Europe/London): interval schedules count elapsed time, so local firing times move by +01:00 after it; use a cron schedule to keep wall-clock times"
    );

    // Short intervals have no wall-clock rhythm to disturb.
    let spec = ScheduleSpec {
        time_zone: "Europe/London".into(),
        ..interval(Duration::from_secs(300), "2026-12-01T09:00:00Z")
    };
    assert!(spec.validate_for_create(now).unwrap().1.is_empty());
}

#[test]
fn validate_for_create_rejects_what_cannot_fire() {
    let now = utc("2027-02-01T00:00:00Z");

    let past = ScheduleSpec::new(Kind::Once(Once::Utc(utc("2027-01-31T00:00:00Z"))));
    let e = past.validate_for_create(now).unwrap_err();
    assert_eq!(e.field, "schedule.once");
    assert!(e.message.contains("is not after now"), "{}", e.message);

    let past_local = ScheduleSpec {
        time_zone: "Europe/Paris".into(),
        ..ScheduleSpec::new(Kind::Once(Once::Local(wall("2027-02-01T00:30:00"))))
    };
    // 00:30 in Paris is 23:30Z the day before: in the past.
    let e = past_local.validate_for_create(now).unwrap_err();
    assert_eq!(e.field, "schedule.once");

    let in_gap = ScheduleSpec {
        time_zone: "America/New_York".into(),
        dst_gap: DstGap::Skip,
        ..ScheduleSpec::new(Kind::Once(Once::Local(wall("2027-03-14T02:30:00"))))
    };
    let e = in_gap.validate_for_create(now).unwrap_err();
    assert_eq!(e.field, "schedule.once");
    assert!(e.message.contains("does not exist"), "{}", e.message);
    // With shift it is fine.
    let in_gap = ScheduleSpec {
        dst_gap: DstGap::Shift,
        ..in_gap
    };
    assert!(in_gap.validate_for_create(now).is_ok());

    let mut ended = cron_spec("0 0 * * *", "UTC", DstGap::Shift, DstFold::First);
    ended.end_time = Some(utc("2027-01-15T00:00:00Z"));
    let e = ended.validate_for_create(now).unwrap_err();
    assert_eq!(e.field, "schedule.end_time");
    assert!(e.message.contains("is not after now"), "{}", e.message);

    let mut no_firing = cron_spec("0 0 1 1 *", "UTC", DstGap::Shift, DstFold::First);
    no_firing.end_time = Some(utc("2027-06-01T00:00:00Z"));
    let e = no_firing.validate_for_create(now).unwrap_err();
    assert_eq!(e.field, "schedule.end_time");
    assert!(e.message.contains("no firing after now"), "{}", e.message);

    // Compile errors come through unchanged.
    let bad = cron_spec("0 25 * * *", "UTC", DstGap::Shift, DstFold::First);
    assert_eq!(
        bad.validate_for_create(now).unwrap_err().field,
        "schedule.cron"
    );
}

#[test]
fn spec_json_has_defaults_and_lowercase_policies() {
    let spec: ScheduleSpec =
        serde_json::from_str(r#"{"kind":{"cron":{"expr":"0 9 * * MON-FRI"}}}"#).unwrap();
    assert_eq!(
        spec,
        ScheduleSpec::new(Kind::Cron {
            expr: "0 9 * * MON-FRI".into()
        })
    );
    assert_eq!(spec.time_zone, "UTC");

    let spec: ScheduleSpec = serde_json::from_str(
        r#"{"kind":{"once":{"local":"2027-03-14T02:30:00"}},"time_zone":"America/New_York","dst_gap":"skip","dst_fold":"both","end_time":"2028-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    assert_eq!(spec.dst_gap, DstGap::Skip);
    assert_eq!(spec.dst_fold, DstFold::Both);
    assert_eq!(spec.end_time, Some(utc("2028-01-01T00:00:00Z")));

    let text = serde_json::to_string(&spec).unwrap();
    assert!(text.contains(r#""dst_gap":"skip""#), "{text}");
    assert!(text.contains(r#""dst_fold":"both""#), "{text}");
    let back: ScheduleSpec = serde_json::from_str(&text).unwrap();
    assert_eq!(back, spec);

    let spec = interval(Duration::from_millis(1500), "2027-01-01T00:00:00Z");
    let back: ScheduleSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
    assert_eq!(back, spec);

    assert!(
        serde_json::from_str::<ScheduleSpec>(r#"{"kind":{"cron":{"expr":"*"}},"dst_gap":"Shift"}"#)
            .is_err()
    );
}

#[test]
fn schedule_is_small_and_shareable() {
    fn shareable<T: Send + Sync + Clone + std::fmt::Debug>() {}
    shareable::<Schedule>();
    let size = std::mem::size_of::<Schedule>();
    assert!(size <= 96, "size_of::<Schedule>() = {size}");
    assert_eq!(TZDB_VERSION.len(), 5, "{TZDB_VERSION}");
}
