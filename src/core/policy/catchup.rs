//! The catch-up policy: when an owner gets to firings late (after a failover, a
//! pause, an outage), which of them still run and which are recorded `missed`, and
//! how a long run of missed firings is folded into a bounded number of records.
//! Owns the policy, [`decide`] and [`fold_missed`]; it must not enumerate schedules,
//! read the clock or write records (the owner does, with `now` passed in here).
//!
//! Rules, for the due firings of one job at `now`:
//! 1. A firing is *late* only when `now - at > late_grace`. On-time firings always
//!    run: catch-up never touches normal operation.
//! 2. A late firing older than `window` (`now - at > window`) is missed with
//!    [`MissReason::OutsideWindow`]. A zero window means "never catch up".
//! 3. Among the remaining late firings, with `coalesce`, only the latest runs and the
//!    others are [`MissReason::Coalesced`].
//! 4. At most `max` late firings run: the *most recent* `max`; older ones are
//!    [`MissReason::OverMax`]. Most recent, because they are closest to what the job
//!    would do now, their lateness is smallest, and the oldest ones are the likeliest
//!    to have been made moot by later ones (a job that refreshes a cache or sends a
//!    report cares about the latest state). `max = 0` runs no late firing at all.
//!
//! For a job with a spread offset, `at` is the dispatch instant (scheduled instant +
//! offset), so lateness is measured against the instant the firing was meant to
//! start. The offset is constant per job, so the order is the same either way.

use std::time::Duration;

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};

use super::{duration_ms, human};
use crate::core::{FieldError, Timestamp};

/// Longest catch-up window: a week covers a long weekend's outage for a daily or
/// weekly job, and bounds how far back an owner enumerates firings.
pub const WINDOW_MAX: Duration = Duration::from_secs(7 * 24 * 3600);
/// Largest accepted `max`: late firings of one job run in one catch-up.
pub const LATE_RUNS_MAX: u32 = 10_000;
/// Most missed firings recorded one by one after a catch-up; the older rest is
/// folded into one [`MissedRange`] record.
pub const MISSED_RECORDS_MAX: usize = 100;

/// How late firings are caught up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Catchup {
    /// Late firings older than this are missed. Default 1 h; at most [`WINDOW_MAX`].
    #[serde(with = "duration_ms")]
    pub window: Duration,
    /// At most this many late firings run (the most recent ones). Default 100; at
    /// most [`LATE_RUNS_MAX`].
    pub max: u32,
    /// Run only the latest of several late firings. Default false.
    pub coalesce: bool,
}

impl Default for Catchup {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(3600),
            max: 100,
            coalesce: false,
        }
    }
}

impl Catchup {
    /// Check the bounds; names the offending field.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.window > WINDOW_MAX {
            return Err(FieldError::new(
                "policy.catchup.window",
                format!("must be at most {}", human(WINDOW_MAX)),
            ));
        }
        if self.max > LATE_RUNS_MAX {
            return Err(FieldError::new(
                "policy.catchup.max",
                format!("must be between 0 and {LATE_RUNS_MAX}"),
            ));
        }
        Ok(())
    }

    /// Firings strictly before this instant are missed ([`MissReason::OutsideWindow`])
    /// whatever else is due: an owner may count them instead of materializing them
    /// (a 1 s cron over a week's outage is 604,800 firings).
    pub fn window_start(&self, now: Timestamp, late_grace: Duration) -> Timestamp {
        // Late (age > grace) and outside (age > window) is age > max(grace, window).
        let reach = delta(self.window.max(late_grace));
        now.checked_sub_signed(reach).unwrap_or(Timestamp::MIN_UTC)
    }
}

/// What happens to one due firing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Run,
    Missed(MissReason),
}

/// Why a due firing does not run (the run record's state is `missed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissReason {
    /// Late by more than the catch-up window.
    OutsideWindow,
    /// `coalesce`: a later late firing runs in its place.
    Coalesced,
    /// More than `max` late firings; the more recent ones run.
    OverMax,
}

impl MissReason {
    /// A short sentence for the run record's `reason`.
    pub fn describe(self) -> &'static str {
        match self {
            MissReason::OutsideWindow => "late by more than the catch-up window",
            MissReason::Coalesced => "coalesced into a later firing",
            MissReason::OverMax => "more late firings than catchup max; later ones ran",
        }
    }
}

/// Whether a firing due at `at` is late at `now`: strictly more than `late_grace`
/// behind. A firing not yet due (`at > now`) is never late.
pub fn is_late(at: Timestamp, now: Timestamp, late_grace: Duration) -> bool {
    now.signed_duration_since(at) > delta(late_grace)
}

/// Decide, for the due firings of ONE job (`due`: their instants, ascending, all
/// `<= now`), which run and which are missed. The answer has the same length and
/// order as `due`. See the module header for the rules.
///
/// Out-of-order input is tolerated ("most recent" is by instant, ties by position);
/// an instant after `now` is not late and so is `Run` (the dispatcher still waits
/// for it: this is not a license to start early).
pub fn decide(
    policy: &Catchup,
    due: &[Timestamp],
    now: Timestamp,
    late_grace: Duration,
) -> Vec<Decision> {
    let grace = delta(late_grace);
    let window = delta(policy.window);
    let mut out = Vec::with_capacity(due.len());
    // Late firings within the window, which compete for the `max` slots.
    let mut eligible = Vec::new();
    for (i, &at) in due.iter().enumerate() {
        let age = now.signed_duration_since(at);
        if age <= grace {
            out.push(Decision::Run);
        } else if age > window {
            out.push(Decision::Missed(MissReason::OutsideWindow));
        } else {
            // Placeholder: settled below once every competitor is known.
            out.push(Decision::Run);
            eligible.push(i);
        }
    }
    // Stable sort: already ascending in the usual case, ties stay in input order.
    eligible.sort_by_key(|&i| due[i]);
    let slots = if policy.coalesce {
        policy.max.min(1)
    } else {
        policy.max
    };
    let keep = eligible.len().min(slots as usize);
    let loser = if policy.coalesce {
        MissReason::Coalesced
    } else {
        MissReason::OverMax
    };
    let (older, newer) = eligible.split_at(eligible.len() - keep);
    for &i in older {
        out[i] = Decision::Missed(loser);
    }
    // With coalesce and max = 0 the would-be survivor is over max, not coalesced.
    if policy.coalesce && keep == 0 && !older.is_empty() {
        let latest = older[older.len() - 1];
        out[latest] = Decision::Missed(MissReason::OverMax);
    }
    debug_assert!(newer.iter().all(|&i| out[i] == Decision::Run));
    out
}

/// One missed firing to record individually.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missed {
    pub at: Timestamp,
    pub reason: MissReason,
}

/// Many missed firings folded into one record: `first..=last`, with how many of
/// each reason (the run record's `missed_count` is [`MissedRange::count`],
/// `missed_until` is `last`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissedRange {
    pub first: Timestamp,
    pub last: Timestamp,
    pub outside_window: u64,
    pub coalesced: u64,
    pub over_max: u64,
}

impl MissedRange {
    /// All the firings folded in.
    pub fn count(&self) -> u64 {
        self.outside_window + self.coalesced + self.over_max
    }

    fn add(&mut self, m: Missed) {
        self.first = self.first.min(m.at);
        self.last = self.last.max(m.at);
        match m.reason {
            MissReason::OutsideWindow => self.outside_window += 1,
            MissReason::Coalesced => self.coalesced += 1,
            MissReason::OverMax => self.over_max += 1,
        }
    }

    /// The reason shared by every folded firing, if there is one.
    pub fn reason(&self) -> Option<MissReason> {
        match (self.outside_window, self.coalesced, self.over_max) {
            (_, 0, 0) => Some(MissReason::OutsideWindow),
            (0, _, 0) => Some(MissReason::Coalesced),
            (0, 0, _) => Some(MissReason::OverMax),
            _ => None,
        }
    }
}

/// Bound the records a catch-up writes: the most recent [`MISSED_RECORDS_MAX`] missed
/// firings one by one (in input order), the older rest folded into one range.
/// `decisions` is [`decide`]'s answer for `due`.
///
/// The most recent are kept individually because they are what people look at
/// (ListRuns is newest first); the bulk of a long outage is history, and a count
/// with its first and last instant says all there is to say about it.
pub fn fold_missed(
    due: &[Timestamp],
    decisions: &[Decision],
) -> (Vec<Missed>, Option<MissedRange>) {
    assert_eq!(
        due.len(),
        decisions.len(),
        "fold_missed: one decision per due"
    );
    let missed: Vec<Missed> = due
        .iter()
        .zip(decisions)
        .filter_map(|(&at, d)| match *d {
            Decision::Missed(reason) => Some(Missed { at, reason }),
            Decision::Run => None,
        })
        .collect();
    let folded = missed.len().saturating_sub(MISSED_RECORDS_MAX);
    if folded == 0 {
        return (missed, None);
    }
    // Fold the oldest: in the usual ascending input, a prefix.
    let mut order: Vec<usize> = (0..missed.len()).collect();
    order.sort_by_key(|&i| missed[i].at);
    let mut fold = vec![false; missed.len()];
    for &i in &order[..folded] {
        fold[i] = true;
    }
    let first = missed[order[0]].at;
    let mut range = MissedRange {
        first,
        last: first,
        outside_window: 0,
        coalesced: 0,
        over_max: 0,
    };
    let mut individual = Vec::with_capacity(MISSED_RECORDS_MAX);
    for (m, folded) in missed.into_iter().zip(fold) {
        if folded {
            range.add(m);
        } else {
            individual.push(m);
        }
    }
    (individual, Some(range))
}

/// A std duration as a chrono one, saturating (no valid policy comes near the limit).
fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;

    use super::*;
    use Decision::{Missed as M, Run};
    use MissReason::{Coalesced, OutsideWindow, OverMax};

    fn t(secs: i64) -> Timestamp {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn policy(window_s: u64, max: u32, coalesce: bool) -> Catchup {
        Catchup {
            window: Duration::from_secs(window_s),
            max,
            coalesce,
        }
    }

    const GRACE: Duration = Duration::from_secs(5);

    #[test]
    fn table() {
        // (name, policy, due offsets from now in seconds, expected)
        let cases: Vec<(&str, Catchup, Vec<i64>, Vec<Decision>)> = vec![
            ("empty", Catchup::default(), vec![], vec![]),
            ("on time", policy(0, 0, false), vec![-1, 0], vec![Run, Run]),
            (
                "grace boundary is on time",
                policy(0, 0, false),
                vec![-5],
                vec![Run],
            ),
            (
                "just past grace with zero window is missed",
                policy(0, 100, false),
                vec![-6],
                vec![M(OutsideWindow)],
            ),
            (
                "window boundary is inside",
                policy(60, 100, false),
                vec![-61, -60, -30],
                vec![M(OutsideWindow), Run, Run],
            ),
            (
                "max keeps the most recent late ones",
                policy(3600, 2, false),
                vec![-40, -30, -20, -10, 0],
                vec![M(OverMax), M(OverMax), Run, Run, Run],
            ),
            (
                "on-time firings do not count against max",
                policy(3600, 1, false),
                vec![-30, -20, -3, -1],
                vec![M(OverMax), Run, Run, Run],
            ),
            (
                "max zero runs no late firing",
                policy(3600, 0, false),
                vec![-30, -20, 0],
                vec![M(OverMax), M(OverMax), Run],
            ),
            (
                "coalesce runs only the latest late one",
                policy(3600, 100, true),
                vec![-7200, -40, -30, -20, -2],
                vec![M(OutsideWindow), M(Coalesced), M(Coalesced), Run, Run],
            ),
            (
                "coalesce with max zero",
                policy(3600, 0, true),
                vec![-40, -30],
                vec![M(Coalesced), M(OverMax)],
            ),
            (
                "all outside window",
                policy(10, 100, true),
                vec![-40, -30, -20],
                vec![M(OutsideWindow), M(OutsideWindow), M(OutsideWindow)],
            ),
            (
                "window shorter than grace: never misses on-time ones",
                policy(2, 100, false),
                vec![-10, -4],
                vec![M(OutsideWindow), Run],
            ),
            (
                "future instant is not late",
                policy(0, 0, false),
                vec![10],
                vec![Run],
            ),
            (
                "out of order input: most recent by instant",
                policy(3600, 1, false),
                vec![-20, -40, -30],
                vec![Run, M(OverMax), M(OverMax)],
            ),
        ];
        for (name, p, offsets, expected) in cases {
            let due: Vec<_> = offsets.iter().map(|&s| t(s)).collect();
            assert_eq!(decide(&p, &due, t(0), GRACE), expected, "{name}");
        }
    }

    #[test]
    fn window_start_matches_decide() {
        for (window_s, grace_s) in [(60, 5), (2, 5), (0, 0)] {
            let p = policy(window_s, 100, false);
            let grace = Duration::from_secs(grace_s);
            let start = p.window_start(t(0), grace);
            for s in -100..=0 {
                let d = decide(&p, &[t(s)], t(0), grace)[0];
                assert_eq!(
                    d == M(OutsideWindow),
                    t(s) < start,
                    "window {window_s} grace {grace_s} at {s}"
                );
            }
        }
    }

    #[test]
    fn is_late_boundaries() {
        assert!(!is_late(t(-5), t(0), GRACE));
        assert!(is_late(t(-6), t(0), GRACE));
        assert!(!is_late(t(1), t(0), Duration::ZERO));
        assert!(!is_late(t(0), t(0), Duration::ZERO));
    }

    #[test]
    fn validation() {
        Catchup::default().validate().unwrap();
        policy(0, 0, true).validate().unwrap();
        let mut p = Catchup {
            window: WINDOW_MAX,
            max: LATE_RUNS_MAX,
            coalesce: false,
        };
        p.validate().unwrap();
        p.window += Duration::from_millis(1);
        let e = p.validate().unwrap_err();
        assert_eq!(e.field, "policy.catchup.window");
        assert_eq!(e.message, "must be at most 168 h");
        p.window = WINDOW_MAX;
        p.max += 1;
        assert_eq!(p.validate().unwrap_err().field, "policy.catchup.max");
    }

    #[test]
    fn fold_small_keeps_everything() {
        let due: Vec<_> = (0..5).map(t).collect();
        let decisions = vec![M(OutsideWindow), Run, M(OverMax), Run, M(Coalesced)];
        let (ind, range) = fold_missed(&due, &decisions);
        assert_eq!(range, None);
        assert_eq!(
            ind,
            vec![
                Missed {
                    at: t(0),
                    reason: OutsideWindow
                },
                Missed {
                    at: t(2),
                    reason: OverMax
                },
                Missed {
                    at: t(4),
                    reason: Coalesced
                },
            ]
        );
    }

    #[test]
    fn fold_large_keeps_most_recent_individually() {
        // A week-long outage of a job every 10 s with the default policy.
        let now = t(7 * 24 * 3600);
        let due: Vec<_> = (0..7 * 24 * 360).map(|i| t(i * 10)).collect();
        let decisions = decide(&Catchup::default(), &due, now, GRACE);
        let runs = decisions.iter().filter(|d| **d == Run).count();
        assert_eq!(runs, 100);
        let (ind, range) = fold_missed(&due, &decisions);
        let range = range.unwrap();
        assert_eq!(ind.len(), MISSED_RECORDS_MAX);
        assert_eq!(range.count() as usize + ind.len() + runs, due.len());
        assert_eq!(range.first, due[0]);
        assert!(range.last < ind[0].at);
        assert!(ind.windows(2).all(|w| w[0].at < w[1].at));
        // Window 1 h = 360 firings in it, 100 run, 260 over max; the rest outside.
        assert_eq!(range.over_max + ind.len() as u64, 260);
        assert_eq!(range.outside_window as usize, due.len() - 360);
        assert_eq!(range.reason(), None);
    }

    #[test]
    fn range_reason() {
        let mut r = MissedRange {
            first: t(0),
            last: t(0),
            outside_window: 3,
            coalesced: 0,
            over_max: 0,
        };
        assert_eq!(r.reason(), Some(OutsideWindow));
        r.outside_window = 0;
        r.coalesced = 2;
        assert_eq!(r.reason(), Some(Coalesced));
    }

    fn policy_strategy() -> impl Strategy<Value = Catchup> {
        (0u64..200, 0u32..8, any::<bool>()).prop_map(|(w, m, c)| policy(w, m, c))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn properties(
            p in policy_strategy(),
            mut offsets in proptest::collection::vec(0i64..300, 0..40),
            grace_s in 0u64..20,
        ) {
            // Ascending instants, all <= now.
            offsets.sort_unstable_by(|a, b| b.cmp(a));
            let due: Vec<_> = offsets.iter().map(|&s| t(-s)).collect();
            let grace = Duration::from_secs(grace_s);
            let out = decide(&p, &due, t(0), grace);
            prop_assert_eq!(out.len(), due.len());

            let late: Vec<bool> = due.iter().map(|&at| is_late(at, t(0), grace)).collect();
            let in_window: Vec<bool> = due
                .iter()
                .map(|&at| t(0).signed_duration_since(at) <= delta(p.window))
                .collect();
            for i in 0..due.len() {
                if !late[i] {
                    prop_assert_eq!(out[i], Run);
                }
                if late[i] && !in_window[i] {
                    prop_assert_eq!(out[i], M(OutsideWindow));
                }
            }
            let late_runs = (0..due.len()).filter(|&i| late[i] && out[i] == Run).count();
            prop_assert!(late_runs <= p.max as usize);
            let eligible = (0..due.len()).filter(|&i| late[i] && in_window[i]).count();
            if p.coalesce {
                let expect = usize::from(eligible > 0 && p.max > 0);
                prop_assert_eq!(late_runs, expect);
            } else {
                prop_assert_eq!(late_runs, eligible.min(p.max as usize));
            }
            // The late runs are the most recent eligible ones: no missed eligible
            // firing is later than a late run.
            let oldest_late_run = (0..due.len()).find(|&i| late[i] && out[i] == Run);
            if let Some(r) = oldest_late_run {
                for i in r..due.len() {
                    if late[i] && in_window[i] {
                        prop_assert_eq!(out[i], Run);
                    }
                }
            }
            // Folding loses nothing.
            let (ind, range) = fold_missed(&due, &out);
            let missed = out.iter().filter(|d| **d != Run).count();
            prop_assert_eq!(ind.len() + range.map_or(0, |r| r.count() as usize), missed);
            prop_assert!(ind.len() <= MISSED_RECORDS_MAX);
        }
    }
}
