//! Cron grammar: what parses, what it means, and the errors for what does not.
//!
//! Tests only; no clock reads.

use super::super::cron::Cron;
use super::super::{CRON_EXPR_LEN_MAX, DstFold, DstGap, Kind, ScheduleSpec};
use super::{cron_spec, utc, wall};

fn cron_err(expr: &str) -> (String, String) {
    let e = cron_spec(expr, "UTC", DstGap::Shift, DstFold::First)
        .compile()
        .expect_err(expr);
    (e.field, e.message)
}

/// The next `n` UTC firings of `expr` after `after`, as `YYYY-MM-DDTHH:MM:SS`.
fn next_n(expr: &str, after: &str, n: usize) -> Vec<String> {
    let s = cron_spec(expr, "UTC", DstGap::Shift, DstFold::First)
        .compile()
        .unwrap_or_else(|e| panic!("{expr}: {e}"));
    s.preview(utc(after), n)
        .iter()
        .map(|f| f.at.format("%Y-%m-%dT%H:%M:%S").to_string())
        .collect()
}

#[test]
fn errors_name_the_field_and_say_what_is_wrong() {
    let cases: &[(&str, &str)] = &[
        ("0 25 * * *", "field 2 (hour) value 25 out of range 0-23"),
        ("60 * * * *", "field 1 (minute) value 60 out of range 0-59"),
        (
            "0 0 0 * *",
            "field 3 (day-of-month) value 0 out of range 1-31",
        ),
        ("0 0 * 13 *", "field 4 (month) value 13 out of range 1-12"),
        (
            "0 0 * * 8",
            "field 5 (day-of-week) value 8 out of range 0-7",
        ),
        (
            "61 0 0 * * *",
            "field 1 (second) value 61 out of range 0-59",
        ),
        ("0 0 * * * * *", "expression has 7 fields"),
        ("0 0 * *", "expression has 4 fields"),
        ("", "expression is empty"),
        ("   ", "expression is empty"),
        ("*/ * * * *", "field 1 (minute) has an empty step in '*/'"),
        ("*/0 * * * *", "field 1 (minute) step 0 in '*/0'"),
        (
            "*/99 * * * *",
            "field 1 (minute) step 99 in '*/99' out of range 1-59",
        ),
        ("5-3 * * * *", "field 1 (minute) range 5-3 is reversed"),
        (
            "0 0 * FOO *",
            "field 4 (month) unknown name 'FOO': expected 1-12 or JAN-DEC",
        ),
        (
            "0 0 * * FUN",
            "field 5 (day-of-week) unknown name 'FUN': expected 0-7 or SUN-SAT",
        ),
        (
            "x * * * *",
            "field 1 (minute) cannot parse 'X': expected 0-59",
        ),
        ("1,,2 * * * *", "field 1 (minute) has an empty list item"),
        ("1, * * * *", "field 1 (minute) has an empty list item"),
        ("@reboot", "@reboot is not supported"),
        ("@fortnightly", "unknown macro '@fortnightly'"),
        (
            "0 L * * *",
            "field 2 (hour) 'L': 'L' is only allowed in day-of-month and day-of-week",
        ),
        (
            "0 0 * * 1W",
            "field 5 (day-of-week) '1W': 'W' is only allowed in day-of-month",
        ),
        (
            "0 0 1#2 * *",
            "field 3 (day-of-month) '1#2': '#' is only allowed in day-of-week",
        ),
        (
            "0 0 * * 1#6",
            "field 5 (day-of-week) '1#6': occurrence '6' after '#' out of range 1-5",
        ),
        ("0 0 * * L", "field 5 (day-of-week) 'L' alone is ambiguous"),
        (
            "0 0 32W * *",
            "field 3 (day-of-month) value 32 out of range 1-31",
        ),
        (
            "0 0 LW/2 * *",
            "field 3 (day-of-month) 'LW/2': 'LW' cannot take a step",
        ),
        (
            "0 ? * * *",
            "field 2 (hour) '?' is only allowed in day-of-month and day-of-week",
        ),
        (
            "/5 * * * *",
            "field 1 (minute) has no start before the step in '/5'",
        ),
        ("1/2/3 * * * *", "field 1 (minute) has more than one '/'"),
        (
            "0 0 1-5W * *",
            "field 3 (day-of-month) '1-5W': 'W' takes a single day",
        ),
        (
            "0 0 * * MON-FRI#2",
            "field 5 (day-of-week) 'MON-FRI#2': 'L' and '#' take a single weekday",
        ),
        ("0 0 30 2 *", "never matches a real date"),
        ("0 0 31 4,6,9,11 *", "never matches a real date"),
        (
            "99999999999 * * * *",
            "field 1 (minute) value 99999999999 out of range 0-59",
        ),
    ];
    for (expr, want) in cases {
        let (field, message) = cron_err(expr);
        assert_eq!(field, "schedule.cron", "{expr}");
        assert!(
            message.starts_with(want) || message.contains(want),
            "{expr}: got '{message}', want '{want}'"
        );
        assert!(
            !message.ends_with('.'),
            "{expr}: '{message}' ends with a period"
        );
        assert!(
            !message.starts_with(char::is_uppercase),
            "{expr}: '{message}'"
        );
    }
}

#[test]
fn expression_length_is_limited() {
    let long = format!("{} * * * *", "1,".repeat(CRON_EXPR_LEN_MAX));
    let (field, message) = cron_err(&long);
    assert_eq!(field, "schedule.cron");
    assert!(message.contains("at most 256"), "{message}");
}

#[test]
fn other_fields_are_checked() {
    let bad_zone = ScheduleSpec {
        time_zone: "America/New_york".into(),
        ..ScheduleSpec::new(Kind::Cron {
            expr: "* * * * *".into(),
        })
    };
    let e = bad_zone.compile().unwrap_err();
    assert_eq!(e.field, "schedule.time_zone");
    assert!(
        e.message.contains("did you mean 'America/New_York'"),
        "{}",
        e.message
    );

    let empty_zone = ScheduleSpec {
        time_zone: String::new(),
        ..ScheduleSpec::new(Kind::Cron {
            expr: "* * * * *".into(),
        })
    };
    assert_eq!(
        empty_zone.compile().unwrap_err().field,
        "schedule.time_zone"
    );

    for every in [
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(367 * 86_400),
    ] {
        let spec = ScheduleSpec::new(Kind::Interval {
            every,
            anchor: utc("2027-01-01T00:00:00Z"),
        });
        let e = spec.compile().unwrap_err();
        assert_eq!(e.field, "schedule.interval");
        assert!(e.message.contains("out of range"), "{}", e.message);
    }

    let reversed = ScheduleSpec {
        start_time: Some(utc("2027-01-02T00:00:00Z")),
        end_time: Some(utc("2027-01-01T00:00:00Z")),
        ..ScheduleSpec::new(Kind::Cron {
            expr: "* * * * *".into(),
        })
    };
    assert_eq!(reversed.compile().unwrap_err().field, "schedule.end_time");

    let far = ScheduleSpec::new(Kind::Once(super::super::Once::Local(wall(
        "1800-01-01T00:00:00",
    ))));
    assert_eq!(far.compile().unwrap_err().field, "schedule.once");
}

#[test]
fn grammar_means_what_vixie_cron_means() {
    let after = "2027-01-01T00:00:00Z";
    // Names, case-insensitive, ranges of names, Sunday as 0 or 7.
    assert_eq!(
        next_n("0 9 * jan-Feb mon-fri", after, 2),
        [
            "2027-01-01T09:00:00", // a Friday
            "2027-01-04T09:00:00",
        ]
    );
    assert_eq!(next_n("0 0 * * 7", after, 1), ["2027-01-03T00:00:00"]);
    assert_eq!(next_n("0 0 * * 0", after, 1), ["2027-01-03T00:00:00"]);
    assert_eq!(
        next_n("0 0 * * FRI-SUN", "2027-01-01T00:00:01Z", 3),
        [
            "2027-01-02T00:00:00",
            "2027-01-03T00:00:00",
            "2027-01-08T00:00:00",
        ]
    );
    // Steps: */15, a-b/s, and a/s meaning a to the maximum.
    assert_eq!(
        next_n("*/15 0 * * *", after, 3),
        [
            "2027-01-01T00:15:00",
            "2027-01-01T00:30:00",
            "2027-01-01T00:45:00",
        ]
    );
    assert_eq!(
        next_n("1-30/10 0 1 1 *", after, 3),
        [
            "2027-01-01T00:01:00",
            "2027-01-01T00:11:00",
            "2027-01-01T00:21:00",
        ]
    );
    assert_eq!(
        next_n("50/5 0 1 1 *", after, 3),
        [
            "2027-01-01T00:50:00",
            "2027-01-01T00:55:00",
            "2028-01-01T00:50:00",
        ]
    );
    // `?` is `*` in the day fields.
    assert_eq!(next_n("0 0 ? * MON", after, 1), ["2027-01-04T00:00:00"]);
    // Both day fields restricted: either matches (the 13th, or any Friday).
    assert_eq!(
        next_n("0 0 13 * 5", after, 3),
        [
            "2027-01-08T00:00:00",
            "2027-01-13T00:00:00",
            "2027-01-15T00:00:00",
        ]
    );
    // L, LW, W.
    assert_eq!(
        next_n("0 0 L 2 *", after, 2),
        ["2027-02-28T00:00:00", "2028-02-29T00:00:00"]
    );
    // 2027-07-31 is a Saturday: the last weekday is Friday the 30th.
    assert_eq!(next_n("0 0 LW 7 *", after, 1), ["2027-07-30T00:00:00"]);
    // 2027-05-01 is a Saturday: 1W moves forward to Monday the 3rd (never to April).
    assert_eq!(next_n("0 0 1W 5 *", after, 1), ["2027-05-03T00:00:00"]);
    // 2027-05-15 is a Saturday: 15W is Friday the 14th.
    assert_eq!(next_n("0 0 15W 5 *", after, 1), ["2027-05-14T00:00:00"]);
    // 2027-10-31 is a Sunday: 31W moves back to Friday the 29th.
    assert_eq!(next_n("0 0 31W 10 *", after, 1), ["2027-10-29T00:00:00"]);
    // 5L last Friday, 1#2 second Monday.
    assert_eq!(next_n("0 0 * 1 5L", after, 1), ["2027-01-29T00:00:00"]);
    assert_eq!(next_n("0 0 * 1 FRIL", after, 1), ["2027-01-29T00:00:00"]);
    assert_eq!(next_n("0 0 * 1 1#2", after, 1), ["2027-01-11T00:00:00"]);
    assert_eq!(next_n("0 0 * 1 MON#2", after, 1), ["2027-01-11T00:00:00"]);
    // A rare but real date: February with five Mondays (Feb 29 a Monday) comes in 2044.
    assert_eq!(next_n("0 0 * 2 1#5", after, 1), ["2044-02-29T00:00:00"]);
    // Macros.
    assert_eq!(next_n("@yearly", after, 1), ["2028-01-01T00:00:00"]);
    assert_eq!(next_n("@Annually", after, 1), ["2028-01-01T00:00:00"]);
    assert_eq!(next_n("@monthly", after, 1), ["2027-02-01T00:00:00"]);
    assert_eq!(next_n("@weekly", after, 1), ["2027-01-03T00:00:00"]);
    assert_eq!(next_n("@daily", after, 1), ["2027-01-02T00:00:00"]);
    assert_eq!(next_n("@midnight", after, 1), ["2027-01-02T00:00:00"]);
    assert_eq!(next_n("@hourly", after, 1), ["2027-01-01T01:00:00"]);
    // Six fields: leading seconds.
    assert_eq!(
        next_n("*/20 * * * * *", after, 3),
        [
            "2027-01-01T00:00:20",
            "2027-01-01T00:00:40",
            "2027-01-01T00:01:00",
        ]
    );
    // Leap day.
    assert_eq!(
        next_n("0 0 29 2 *", after, 2),
        ["2028-02-29T00:00:00", "2032-02-29T00:00:00"]
    );
}

#[test]
fn matches_agrees_with_search() {
    let cron = Cron::parse("*/7 1-3 L,15W * 5L").unwrap();
    assert!(!cron.has_seconds());
    let mut from = wall("2027-01-01T00:00:00");
    for _ in 0..200 {
        let next = cron.next_naive(from).unwrap();
        assert!(cron.matches(&next));
        // Nothing in between.
        let mut t = from;
        while t < next {
            assert!(!cron.matches(&t), "{t} matches but search jumped to {next}");
            t += chrono::TimeDelta::minutes(1);
        }
        from = next + chrono::TimeDelta::seconds(1);
    }
}
