//! Table-driven DST cases: spring-forward and fall-back days of 2026/2027 in five zones, each
//! run under all six (dst_gap, dst_fold) combinations, with the UTC instants and decisions
//! written out by hand.
//!
//! Tests only; no clock reads.

use chrono::{FixedOffset, TimeZone};

use super::super::{DstDecision, DstFold, DstGap, Kind, Once, ScheduleSpec};
use super::{FOLDS, GAPS, chain, cron_spec, expected, utc, wall};

enum Expect {
    /// A spring-forward case: only `dst_gap` matters.
    Gap {
        shift: &'static [&'static str],
        skip: &'static [&'static str],
    },
    /// A fall-back case: only `dst_fold` matters.
    Fold {
        first: &'static [&'static str],
        last: &'static [&'static str],
        both: &'static [&'static str],
    },
    /// No transition involved: every policy gives the same firings.
    Same(&'static [&'static str]),
}

struct Case {
    zone: &'static str,
    expr: &'static str,
    after: &'static str,
    expect: Expect,
}

const CASES: &[Case] = &[
    // America/New_York: 2026-03-08 and 2027-03-14 02:00 EST -> 03:00 EDT (07:00Z);
    // 2026-11-01 and 2027-11-07 02:00 EDT -> 01:00 EST (06:00Z).
    Case {
        zone: "America/New_York",
        expr: "30 2 * * *",
        after: "2026-03-07T12:00:00Z",
        expect: Expect::Gap {
            shift: &[
                "2026-03-08T07:00:00Z S",
                "2026-03-09T06:30:00Z",
                "2026-03-10T06:30:00Z",
            ],
            skip: &[
                "2026-03-09T06:30:00Z",
                "2026-03-10T06:30:00Z",
                "2026-03-11T06:30:00Z",
            ],
        },
    },
    Case {
        zone: "America/New_York",
        expr: "30 2 * * *",
        after: "2027-03-13T12:00:00Z",
        expect: Expect::Gap {
            shift: &[
                "2027-03-14T07:00:00Z S",
                "2027-03-15T06:30:00Z",
                "2027-03-16T06:30:00Z",
            ],
            skip: &[
                "2027-03-15T06:30:00Z",
                "2027-03-16T06:30:00Z",
                "2027-03-17T06:30:00Z",
            ],
        },
    },
    Case {
        zone: "America/New_York",
        expr: "*/30 * * * *",
        after: "2027-03-14T06:00:00Z",
        expect: Expect::Gap {
            // 02:00 and 02:30 do not exist; both collapse into 03:00 EDT, itself a match.
            shift: &[
                "2027-03-14T06:30:00Z",
                "2027-03-14T07:00:00Z S",
                "2027-03-14T07:30:00Z",
                "2027-03-14T08:00:00Z",
            ],
            skip: &[
                "2027-03-14T06:30:00Z",
                "2027-03-14T07:00:00Z",
                "2027-03-14T07:30:00Z",
                "2027-03-14T08:00:00Z",
            ],
        },
    },
    Case {
        zone: "America/New_York",
        expr: "*/20 59 1,2 * * *",
        after: "2027-03-14T06:58:00Z",
        expect: Expect::Gap {
            shift: &[
                "2027-03-14T06:59:00Z",
                "2027-03-14T06:59:20Z",
                "2027-03-14T06:59:40Z",
                "2027-03-14T07:00:00Z S",
                "2027-03-15T05:59:00Z",
            ],
            skip: &[
                "2027-03-14T06:59:00Z",
                "2027-03-14T06:59:20Z",
                "2027-03-14T06:59:40Z",
                "2027-03-15T05:59:00Z",
                "2027-03-15T05:59:20Z",
            ],
        },
    },
    Case {
        zone: "America/New_York",
        expr: "30 1 * * *",
        after: "2026-10-31T12:00:00Z",
        expect: Expect::Fold {
            first: &[
                "2026-11-01T05:30:00Z F",
                "2026-11-02T06:30:00Z",
                "2026-11-03T06:30:00Z",
            ],
            last: &[
                "2026-11-01T06:30:00Z L",
                "2026-11-02T06:30:00Z",
                "2026-11-03T06:30:00Z",
            ],
            both: &[
                "2026-11-01T05:30:00Z B",
                "2026-11-01T06:30:00Z B",
                "2026-11-02T06:30:00Z",
            ],
        },
    },
    Case {
        zone: "America/New_York",
        expr: "30 1 * * *",
        after: "2027-11-06T12:00:00Z",
        expect: Expect::Fold {
            first: &[
                "2027-11-07T05:30:00Z F",
                "2027-11-08T06:30:00Z",
                "2027-11-09T06:30:00Z",
            ],
            last: &[
                "2027-11-07T06:30:00Z L",
                "2027-11-08T06:30:00Z",
                "2027-11-09T06:30:00Z",
            ],
            both: &[
                "2027-11-07T05:30:00Z B",
                "2027-11-07T06:30:00Z B",
                "2027-11-08T06:30:00Z",
            ],
        },
    },
    Case {
        zone: "America/New_York",
        expr: "*/30 * * * *",
        after: "2027-11-07T04:00:00Z",
        expect: Expect::Fold {
            first: &[
                "2027-11-07T04:30:00Z",
                "2027-11-07T05:00:00Z F",
                "2027-11-07T05:30:00Z F",
                "2027-11-07T07:00:00Z",
                "2027-11-07T07:30:00Z",
                "2027-11-07T08:00:00Z",
            ],
            last: &[
                "2027-11-07T04:30:00Z",
                "2027-11-07T06:00:00Z L",
                "2027-11-07T06:30:00Z L",
                "2027-11-07T07:00:00Z",
                "2027-11-07T07:30:00Z",
                "2027-11-07T08:00:00Z",
            ],
            both: &[
                "2027-11-07T04:30:00Z",
                "2027-11-07T05:00:00Z B",
                "2027-11-07T05:30:00Z B",
                "2027-11-07T06:00:00Z B",
                "2027-11-07T06:30:00Z B",
                "2027-11-07T07:00:00Z",
            ],
        },
    },
    // `after` inside the first pass of the repeated hour (01:10 EDT).
    Case {
        zone: "America/New_York",
        expr: "*/30 * * * *",
        after: "2027-11-07T05:10:00Z",
        expect: Expect::Fold {
            first: &["2027-11-07T05:30:00Z F", "2027-11-07T07:00:00Z"],
            last: &["2027-11-07T06:00:00Z L", "2027-11-07T06:30:00Z L"],
            both: &["2027-11-07T05:30:00Z B", "2027-11-07T06:00:00Z B"],
        },
    },
    // `after` inside the second pass (01:10 EST).
    Case {
        zone: "America/New_York",
        expr: "*/30 * * * *",
        after: "2027-11-07T06:10:00Z",
        expect: Expect::Fold {
            first: &["2027-11-07T07:00:00Z", "2027-11-07T07:30:00Z"],
            last: &["2027-11-07T06:30:00Z L", "2027-11-07T07:00:00Z"],
            both: &["2027-11-07T06:30:00Z B", "2027-11-07T07:00:00Z"],
        },
    },
    Case {
        zone: "America/New_York",
        expr: "*/20 59 1,2 * * *",
        after: "2027-11-07T05:58:00Z",
        expect: Expect::Fold {
            first: &[
                "2027-11-07T05:59:00Z F",
                "2027-11-07T05:59:20Z F",
                "2027-11-07T05:59:40Z F",
                "2027-11-07T07:59:00Z",
                "2027-11-07T07:59:20Z",
            ],
            last: &[
                "2027-11-07T06:59:00Z L",
                "2027-11-07T06:59:20Z L",
                "2027-11-07T06:59:40Z L",
                "2027-11-07T07:59:00Z",
                "2027-11-07T07:59:20Z",
            ],
            both: &[
                "2027-11-07T05:59:00Z B",
                "2027-11-07T05:59:20Z B",
                "2027-11-07T05:59:40Z B",
                "2027-11-07T06:59:00Z B",
                "2027-11-07T06:59:20Z B",
                "2027-11-07T06:59:40Z B",
                "2027-11-07T07:59:00Z",
            ],
        },
    },
    // Europe/London: 2026-03-29 and 2027-03-28 01:00 GMT -> 02:00 BST (01:00Z);
    // 2026-10-25 and 2027-10-31 02:00 BST -> 01:00 GMT (01:00Z).
    Case {
        zone: "Europe/London",
        expr: "30 1 * * *",
        after: "2026-03-28T12:00:00Z",
        expect: Expect::Gap {
            shift: &[
                "2026-03-29T01:00:00Z S",
                "2026-03-30T00:30:00Z",
                "2026-03-31T00:30:00Z",
            ],
            skip: &[
                "2026-03-30T00:30:00Z",
                "2026-03-31T00:30:00Z",
                "2026-04-01T00:30:00Z",
            ],
        },
    },
    Case {
        zone: "Europe/London",
        expr: "30 1 * * *",
        after: "2027-03-27T12:00:00Z",
        expect: Expect::Gap {
            shift: &["2027-03-28T01:00:00Z S", "2027-03-29T00:30:00Z"],
            skip: &["2027-03-29T00:30:00Z", "2027-03-30T00:30:00Z"],
        },
    },
    Case {
        zone: "Europe/London",
        expr: "*/30 * * * *",
        after: "2027-03-28T00:00:00Z",
        expect: Expect::Gap {
            shift: &[
                "2027-03-28T00:30:00Z",
                "2027-03-28T01:00:00Z S",
                "2027-03-28T01:30:00Z",
                "2027-03-28T02:00:00Z",
            ],
            skip: &[
                "2027-03-28T00:30:00Z",
                "2027-03-28T01:00:00Z",
                "2027-03-28T01:30:00Z",
                "2027-03-28T02:00:00Z",
            ],
        },
    },
    Case {
        zone: "Europe/London",
        expr: "30 1 * * *",
        after: "2026-10-24T12:00:00Z",
        expect: Expect::Fold {
            first: &[
                "2026-10-25T00:30:00Z F",
                "2026-10-26T01:30:00Z",
                "2026-10-27T01:30:00Z",
            ],
            last: &[
                "2026-10-25T01:30:00Z L",
                "2026-10-26T01:30:00Z",
                "2026-10-27T01:30:00Z",
            ],
            both: &[
                "2026-10-25T00:30:00Z B",
                "2026-10-25T01:30:00Z B",
                "2026-10-26T01:30:00Z",
            ],
        },
    },
    Case {
        zone: "Europe/London",
        expr: "30 1 * * *",
        after: "2027-10-30T12:00:00Z",
        expect: Expect::Fold {
            first: &[
                "2027-10-31T00:30:00Z F",
                "2027-11-01T01:30:00Z",
                "2027-11-02T01:30:00Z",
            ],
            last: &[
                "2027-10-31T01:30:00Z L",
                "2027-11-01T01:30:00Z",
                "2027-11-02T01:30:00Z",
            ],
            both: &[
                "2027-10-31T00:30:00Z B",
                "2027-10-31T01:30:00Z B",
                "2027-11-01T01:30:00Z",
            ],
        },
    },
    Case {
        zone: "Europe/London",
        expr: "*/30 * * * *",
        after: "2027-10-30T23:00:00Z",
        expect: Expect::Fold {
            first: &[
                "2027-10-30T23:30:00Z",
                "2027-10-31T00:00:00Z F",
                "2027-10-31T00:30:00Z F",
                "2027-10-31T02:00:00Z",
                "2027-10-31T02:30:00Z",
                "2027-10-31T03:00:00Z",
            ],
            last: &[
                "2027-10-30T23:30:00Z",
                "2027-10-31T01:00:00Z L",
                "2027-10-31T01:30:00Z L",
                "2027-10-31T02:00:00Z",
                "2027-10-31T02:30:00Z",
                "2027-10-31T03:00:00Z",
            ],
            both: &[
                "2027-10-30T23:30:00Z",
                "2027-10-31T00:00:00Z B",
                "2027-10-31T00:30:00Z B",
                "2027-10-31T01:00:00Z B",
                "2027-10-31T01:30:00Z B",
                "2027-10-31T02:00:00Z",
            ],
        },
    },
    // Australia/Lord_Howe (+10:30, +11:00 in summer, a 30-minute shift): 2026-04-05 and
    // 2027-04-04 02:00 -> 01:30 (15:00Z the day before); 2026-10-04 and 2027-10-03 02:00 ->
    // 02:30 (15:30Z the day before).
    Case {
        zone: "Australia/Lord_Howe",
        expr: "15 2 * * *",
        after: "2026-10-02T00:00:00Z",
        expect: Expect::Gap {
            shift: &[
                "2026-10-02T15:45:00Z",
                "2026-10-03T15:30:00Z S",
                "2026-10-04T15:15:00Z",
            ],
            skip: &[
                "2026-10-02T15:45:00Z",
                "2026-10-04T15:15:00Z",
                "2026-10-05T15:15:00Z",
            ],
        },
    },
    Case {
        zone: "Australia/Lord_Howe",
        expr: "15 2 * * *",
        after: "2027-10-01T00:00:00Z",
        expect: Expect::Gap {
            shift: &[
                "2027-10-01T15:45:00Z",
                "2027-10-02T15:30:00Z S",
                "2027-10-03T15:15:00Z",
            ],
            skip: &[
                "2027-10-01T15:45:00Z",
                "2027-10-03T15:15:00Z",
                "2027-10-04T15:15:00Z",
            ],
        },
    },
    Case {
        zone: "Australia/Lord_Howe",
        expr: "*/15 * * * *",
        after: "2026-10-03T15:00:00Z",
        expect: Expect::Gap {
            shift: &[
                "2026-10-03T15:15:00Z",
                "2026-10-03T15:30:00Z S",
                "2026-10-03T15:45:00Z",
                "2026-10-03T16:00:00Z",
                "2026-10-03T16:15:00Z",
            ],
            skip: &[
                "2026-10-03T15:15:00Z",
                "2026-10-03T15:30:00Z",
                "2026-10-03T15:45:00Z",
                "2026-10-03T16:00:00Z",
                "2026-10-03T16:15:00Z",
            ],
        },
    },
    Case {
        zone: "Australia/Lord_Howe",
        expr: "45 1 * * *",
        after: "2026-04-03T00:00:00Z",
        expect: Expect::Fold {
            first: &[
                "2026-04-03T14:45:00Z",
                "2026-04-04T14:45:00Z F",
                "2026-04-05T15:15:00Z",
            ],
            last: &[
                "2026-04-03T14:45:00Z",
                "2026-04-04T15:15:00Z L",
                "2026-04-05T15:15:00Z",
            ],
            both: &[
                "2026-04-03T14:45:00Z",
                "2026-04-04T14:45:00Z B",
                "2026-04-04T15:15:00Z B",
            ],
        },
    },
    Case {
        zone: "Australia/Lord_Howe",
        expr: "45 1 * * *",
        after: "2027-04-02T00:00:00Z",
        expect: Expect::Fold {
            first: &[
                "2027-04-02T14:45:00Z",
                "2027-04-03T14:45:00Z F",
                "2027-04-04T15:15:00Z",
            ],
            last: &[
                "2027-04-02T14:45:00Z",
                "2027-04-03T15:15:00Z L",
                "2027-04-04T15:15:00Z",
            ],
            both: &[
                "2027-04-02T14:45:00Z",
                "2027-04-03T14:45:00Z B",
                "2027-04-03T15:15:00Z B",
            ],
        },
    },
    Case {
        zone: "Australia/Lord_Howe",
        expr: "*/15 * * * *",
        after: "2027-04-03T14:00:00Z",
        expect: Expect::Fold {
            first: &[
                "2027-04-03T14:15:00Z",
                "2027-04-03T14:30:00Z F",
                "2027-04-03T14:45:00Z F",
                "2027-04-03T15:30:00Z",
                "2027-04-03T15:45:00Z",
                "2027-04-03T16:00:00Z",
            ],
            last: &[
                "2027-04-03T14:15:00Z",
                "2027-04-03T15:00:00Z L",
                "2027-04-03T15:15:00Z L",
                "2027-04-03T15:30:00Z",
                "2027-04-03T15:45:00Z",
                "2027-04-03T16:00:00Z",
            ],
            both: &[
                "2027-04-03T14:15:00Z",
                "2027-04-03T14:30:00Z B",
                "2027-04-03T14:45:00Z B",
                "2027-04-03T15:00:00Z B",
                "2027-04-03T15:15:00Z B",
                "2027-04-03T15:30:00Z",
            ],
        },
    },
    // Pacific/Chatham (+12:45, +13:45 in summer): 2026-09-27 and 2027-09-26 02:45 -> 03:45
    // (14:00Z the day before); 2026-04-05 and 2027-04-04 03:45 -> 02:45 (14:00Z the day before).
    Case {
        zone: "Pacific/Chatham",
        expr: "0 3 * * *",
        after: "2026-09-25T00:00:00Z",
        expect: Expect::Gap {
            shift: &[
                "2026-09-25T14:15:00Z",
                "2026-09-26T14:00:00Z S",
                "2026-09-27T13:15:00Z",
            ],
            skip: &[
                "2026-09-25T14:15:00Z",
                "2026-09-27T13:15:00Z",
                "2026-09-28T13:15:00Z",
            ],
        },
    },
    Case {
        zone: "Pacific/Chatham",
        expr: "0 3 * * *",
        after: "2027-09-24T00:00:00Z",
        expect: Expect::Gap {
            shift: &[
                "2027-09-24T14:15:00Z",
                "2027-09-25T14:00:00Z S",
                "2027-09-26T13:15:00Z",
            ],
            skip: &[
                "2027-09-24T14:15:00Z",
                "2027-09-26T13:15:00Z",
                "2027-09-27T13:15:00Z",
            ],
        },
    },
    Case {
        zone: "Pacific/Chatham",
        expr: "*/30 * * * *",
        after: "2027-09-25T13:00:00Z",
        expect: Expect::Gap {
            shift: &[
                "2027-09-25T13:15:00Z",
                "2027-09-25T13:45:00Z",
                "2027-09-25T14:00:00Z S",
                "2027-09-25T14:15:00Z",
            ],
            skip: &[
                "2027-09-25T13:15:00Z",
                "2027-09-25T13:45:00Z",
                "2027-09-25T14:15:00Z",
                "2027-09-25T14:45:00Z",
            ],
        },
    },
    Case {
        zone: "Pacific/Chatham",
        expr: "0 3 * * *",
        after: "2026-04-03T00:00:00Z",
        expect: Expect::Fold {
            first: &[
                "2026-04-03T13:15:00Z",
                "2026-04-04T13:15:00Z F",
                "2026-04-05T14:15:00Z",
            ],
            last: &[
                "2026-04-03T13:15:00Z",
                "2026-04-04T14:15:00Z L",
                "2026-04-05T14:15:00Z",
            ],
            both: &[
                "2026-04-03T13:15:00Z",
                "2026-04-04T13:15:00Z B",
                "2026-04-04T14:15:00Z B",
            ],
        },
    },
    Case {
        zone: "Pacific/Chatham",
        expr: "0 3 * * *",
        after: "2027-04-02T00:00:00Z",
        expect: Expect::Fold {
            first: &[
                "2027-04-02T13:15:00Z",
                "2027-04-03T13:15:00Z F",
                "2027-04-04T14:15:00Z",
            ],
            last: &[
                "2027-04-02T13:15:00Z",
                "2027-04-03T14:15:00Z L",
                "2027-04-04T14:15:00Z",
            ],
            both: &[
                "2027-04-02T13:15:00Z",
                "2027-04-03T13:15:00Z B",
                "2027-04-03T14:15:00Z B",
            ],
        },
    },
    Case {
        zone: "Pacific/Chatham",
        expr: "0 * * * *",
        after: "2026-04-04T12:00:00Z",
        expect: Expect::Fold {
            first: &[
                "2026-04-04T12:15:00Z",
                "2026-04-04T13:15:00Z F",
                "2026-04-04T15:15:00Z",
                "2026-04-04T16:15:00Z",
                "2026-04-04T17:15:00Z",
            ],
            last: &[
                "2026-04-04T12:15:00Z",
                "2026-04-04T14:15:00Z L",
                "2026-04-04T15:15:00Z",
                "2026-04-04T16:15:00Z",
                "2026-04-04T17:15:00Z",
            ],
            both: &[
                "2026-04-04T12:15:00Z",
                "2026-04-04T13:15:00Z B",
                "2026-04-04T14:15:00Z B",
                "2026-04-04T15:15:00Z",
                "2026-04-04T16:15:00Z",
            ],
        },
    },
    // Asia/Kolkata (+05:30, no DST): the policies never matter, on US or EU transition days alike.
    Case {
        zone: "Asia/Kolkata",
        expr: "30 2 * * *",
        after: "2027-03-13T00:00:00Z",
        expect: Expect::Same(&[
            "2027-03-13T21:00:00Z",
            "2027-03-14T21:00:00Z",
            "2027-03-15T21:00:00Z",
        ]),
    },
    Case {
        zone: "Asia/Kolkata",
        expr: "*/30 * * * *",
        after: "2026-11-01T05:50:00Z",
        expect: Expect::Same(&[
            "2026-11-01T06:00:00Z",
            "2026-11-01T06:30:00Z",
            "2026-11-01T07:00:00Z",
        ]),
    },
    Case {
        zone: "Asia/Kolkata",
        expr: "30 1 * * *",
        after: "2026-10-24T12:00:00Z",
        expect: Expect::Same(&["2026-10-24T20:00:00Z", "2026-10-25T20:00:00Z"]),
    },
];

#[test]
fn dst_table_under_every_policy() {
    let mut checked = 0;
    for case in CASES {
        for gap in GAPS {
            for fold in FOLDS {
                let want: &[&str] = match &case.expect {
                    Expect::Gap { shift, skip } => match gap {
                        DstGap::Shift => shift,
                        DstGap::Skip => skip,
                    },
                    Expect::Fold { first, last, both } => match fold {
                        DstFold::First => first,
                        DstFold::Last => last,
                        DstFold::Both => both,
                    },
                    Expect::Same(list) => list,
                };
                let schedule = cron_spec(case.expr, case.zone, gap, fold)
                    .compile()
                    .unwrap_or_else(|e| panic!("{}: {e}", case.expr));
                let got: Vec<_> = chain(&schedule, utc(case.after), want.len())
                    .into_iter()
                    .map(|f| (f.at, f.decision))
                    .collect();
                let want: Vec<_> = want.iter().map(|s| expected(s)).collect();
                assert_eq!(
                    got, want,
                    "{} '{}' after {} gap={gap:?} fold={fold:?}",
                    case.zone, case.expr, case.after
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, CASES.len() * 6);
}

#[test]
fn gap_shift_fires_at_the_wall_time_after_the_gap() {
    let schedule = cron_spec(
        "30 2 * * *",
        "America/New_York",
        DstGap::Shift,
        DstFold::First,
    )
    .compile()
    .unwrap();
    let f = schedule.next_after(utc("2027-03-13T12:00:00Z")).unwrap();
    let edt = FixedOffset::west_opt(4 * 3600).unwrap();
    assert_eq!(f.local, edt.with_ymd_and_hms(2027, 3, 14, 3, 0, 0).unwrap());
    assert_eq!(f.decision, DstDecision::GapShifted);
}

#[test]
fn fold_both_renders_each_occurrence_with_its_own_offset() {
    let schedule = cron_spec(
        "30 1 * * *",
        "America/New_York",
        DstGap::Shift,
        DstFold::Both,
    )
    .compile()
    .unwrap();
    let firings = schedule.preview(utc("2027-11-06T12:00:00Z"), 2);
    assert_eq!(firings[0].local.to_rfc3339(), "2027-11-07T01:30:00-04:00");
    assert_eq!(firings[1].local.to_rfc3339(), "2027-11-07T01:30:00-05:00");
}

fn once_spec(local: &str, zone: &str, gap: DstGap, fold: DstFold) -> ScheduleSpec {
    ScheduleSpec {
        time_zone: zone.to_string(),
        dst_gap: gap,
        dst_fold: fold,
        ..ScheduleSpec::new(Kind::Once(Once::Local(wall(local))))
    }
}

#[test]
fn once_local_follows_the_same_policies() {
    let after = utc("2027-01-01T00:00:00Z");
    for gap in GAPS {
        for fold in FOLDS {
            // In the New York gap.
            let s = once_spec("2027-03-14T02:30:00", "America/New_York", gap, fold)
                .compile()
                .unwrap();
            let got: Vec<_> = chain(&s, after, 5)
                .iter()
                .map(|f| (f.at, f.decision))
                .collect();
            let want = match gap {
                DstGap::Shift => vec![expected("2027-03-14T07:00:00Z S")],
                DstGap::Skip => vec![],
            };
            assert_eq!(got, want, "gap={gap:?} fold={fold:?}");

            // In the New York fold.
            let s = once_spec("2027-11-07T01:30:00", "America/New_York", gap, fold)
                .compile()
                .unwrap();
            let got: Vec<_> = chain(&s, after, 5)
                .iter()
                .map(|f| (f.at, f.decision))
                .collect();
            let want: Vec<_> = match fold {
                DstFold::First => vec![expected("2027-11-07T05:30:00Z F")],
                DstFold::Last => vec![expected("2027-11-07T06:30:00Z L")],
                DstFold::Both => vec![
                    expected("2027-11-07T05:30:00Z B"),
                    expected("2027-11-07T06:30:00Z B"),
                ],
            };
            assert_eq!(got, want, "gap={gap:?} fold={fold:?}");

            // Chatham, a 45-minute offset: unaffected wall time.
            let s = once_spec("2027-06-01T09:00:00", "Pacific/Chatham", gap, fold)
                .compile()
                .unwrap();
            let got: Vec<_> = chain(&s, after, 5).iter().map(|f| f.at).collect();
            assert_eq!(got, vec![utc("2027-05-31T20:15:00Z")]);
        }
    }
}

#[test]
fn once_local_both_second_occurrence_after_the_first() {
    let s = once_spec(
        "2027-11-07T01:30:00",
        "America/New_York",
        DstGap::Shift,
        DstFold::Both,
    )
    .compile()
    .unwrap();
    let f = s.next_after(utc("2027-11-07T05:30:00Z")).unwrap();
    assert_eq!((f.at, f.decision), expected("2027-11-07T06:30:00Z B"));
    assert!(s.next_after(f.at).is_none());
}

#[test]
fn interval_ignores_dst() {
    let spec = ScheduleSpec {
        time_zone: "America/New_York".into(),
        ..ScheduleSpec::new(Kind::Interval {
            every: std::time::Duration::from_secs(3600),
            anchor: utc("2027-11-07T03:00:00Z"),
        })
    };
    let s = spec.compile().unwrap();
    let got: Vec<_> = chain(&s, utc("2027-11-07T04:00:00Z"), 4)
        .iter()
        .map(|f| (f.at, f.decision, f.local.to_rfc3339()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                utc("2027-11-07T05:00:00Z"),
                DstDecision::None,
                "2027-11-07T01:00:00-04:00".into()
            ),
            (
                utc("2027-11-07T06:00:00Z"),
                DstDecision::None,
                "2027-11-07T01:00:00-05:00".into()
            ),
            (
                utc("2027-11-07T07:00:00Z"),
                DstDecision::None,
                "2027-11-07T02:00:00-05:00".into()
            ),
            (
                utc("2027-11-07T08:00:00Z"),
                DstDecision::None,
                "2027-11-07T03:00:00-05:00".into()
            ),
        ]
    );
}

#[test]
fn skip_jumps_a_dense_gap_quickly() {
    // Every second: the New York gap holds 3,600 nonexistent times; skip must not try each.
    let s = cron_spec(
        "* * * * * *",
        "America/New_York",
        DstGap::Skip,
        DstFold::First,
    )
    .compile()
    .unwrap();
    let f = s.next_after(utc("2027-03-14T06:59:59Z")).unwrap();
    assert_eq!(
        (f.at, f.decision),
        (utc("2027-03-14T07:00:00Z"), DstDecision::None)
    );
    let f = s.next_after(utc("2027-03-14T06:59:58Z")).unwrap();
    assert_eq!(f.at, utc("2027-03-14T06:59:59Z"));
}

#[test]
fn first_from_the_second_pass_jumps_past_the_fold() {
    // After 01:10 EST (the repeated hour's second pass), dst_fold=first has nothing left in
    // the fold: the next second that fires is 02:00:00 EST, not 01:10:01.
    let s = cron_spec(
        "* * * * * *",
        "America/New_York",
        DstGap::Shift,
        DstFold::First,
    )
    .compile()
    .unwrap();
    let f = s.next_after(utc("2027-11-07T06:10:00Z")).unwrap();
    assert_eq!(
        (f.at, f.decision),
        (utc("2027-11-07T07:00:00Z"), DstDecision::None)
    );
    // And dst_fold=last, from the first pass, goes back to the start of the fold.
    let s = cron_spec(
        "* * * * * *",
        "America/New_York",
        DstGap::Shift,
        DstFold::Last,
    )
    .compile()
    .unwrap();
    let f = s.next_after(utc("2027-11-07T05:10:00Z")).unwrap();
    assert_eq!((f.at, f.decision), expected("2027-11-07T06:00:00Z L"));
}
