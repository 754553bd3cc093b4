//! Schedules: what a user wrote (`ScheduleSpec`), its compiled form (`Schedule`), and the
//! next-firing math, DST policies included.
//!
//! Owns the meaning of cron, interval and once schedules and of `dst_gap`/`dst_fold`. It is
//! pure and synchronous: no IO, no tokio, no clock reads. "Now" and "after" always come in as
//! arguments, and the next firing is computed from the previous *scheduled* instant.
//!
//! How a wall-clock schedule becomes instants: the cron (or once-local) is evaluated in naive
//! local time, then each matching wall time is mapped to UTC:
//! - it occurs once: that instant, `DstDecision::None`;
//! - it occurs twice (fold): `dst_fold` picks the earlier, the later, or both instants;
//! - it does not occur (gap): `dst_gap = shift` fires once at the first instant after the gap
//!   (the transition; every gap time collapses into that one firing, which also absorbs a
//!   firing of the first real wall time after the gap), `skip` does not fire.

mod cron;
mod validate;
mod zone;

#[cfg(test)]
mod tests;

use std::time::Duration;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDateTime, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::core::FieldError;

pub use cron::CRON_EXPR_LEN_MAX;
use cron::{Cron, YEAR_MAX};
use zone::Mapped;

/// An instant with the zone's offset at it.
type Zoned = DateTime<Tz>;

/// The IANA tz database release that chrono-tz embeds, and so the one that computed every
/// instant here. Record it with the firings; when it changes, recompute future instants.
pub const TZDB_VERSION: &str = chrono_tz::IANA_TZDB_VERSION;

/// Most firings one `preview` returns.
pub const PREVIEW_COUNT_MAX: usize = 1000;

/// Shortest interval.
pub const INTERVAL_EVERY_MIN: Duration = Duration::from_secs(1);

/// Longest interval: 366 days.
pub const INTERVAL_EVERY_MAX: Duration = Duration::from_secs(366 * 86_400);

/// Longest time zone name accepted, in bytes (the longest IANA name is 32).
pub const TIME_ZONE_LEN_MAX: usize = 64;

/// Earliest year of any instant or wall time in a schedule.
pub const YEAR_MIN: i32 = 1900;

/// Naive candidates one `next_after` examines before it gives up: each skipped candidate is a
/// gap under `dst_gap = skip` (jumped over whole) or a defensive retry, so a real search
/// needs a handful.
const SEARCH_STEPS_MAX: usize = 64;

/// What the user wrote; stored as JSON in the job record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    pub kind: Kind,
    /// IANA zone name, e.g. `Europe/Paris`; the cron and once-local are wall times there.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    #[serde(default)]
    pub dst_gap: DstGap,
    #[serde(default)]
    pub dst_fold: DstFold,
    /// Inclusive lower bound: no firing before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    /// Exclusive upper bound: no firing at or after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<DateTime<Utc>>,
}

fn default_time_zone() -> String {
    "UTC".to_string()
}

/// The three kinds of schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// 5 fields (`min hour dom month dow`), 6 with leading seconds, or a macro (`@daily`).
    Cron { expr: String },
    /// `anchor + k * every` for k >= 0: elapsed time, DST ignored.
    Interval {
        every: Duration,
        anchor: DateTime<Utc>,
    },
    /// One firing (two with `dst_fold = both` on a repeated wall time).
    Once(Once),
}

/// When a `once` schedule fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Once {
    /// A wall time in the schedule's time zone; DST policy applies.
    Local(NaiveDateTime),
    /// An instant.
    Utc(DateTime<Utc>),
}

/// What a wall time that does not exist (clocks set forward) does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DstGap {
    /// Fire once, at the first instant after the gap.
    #[default]
    Shift,
    /// Do not fire.
    Skip,
}

/// What a wall time that occurs twice (clocks set back) does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DstFold {
    /// Fire at the first occurrence.
    #[default]
    First,
    /// Fire at the second occurrence.
    Last,
    /// Fire at both.
    Both,
}

/// The DST decision behind one firing, shown by previews.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DstDecision {
    /// The wall time occurs once (or the schedule ignores DST).
    #[default]
    None,
    /// The wall time fell in a gap and fires at the first instant after it.
    GapShifted,
    /// The wall time fell in a gap and does not fire. Never on a `Firing` (a skipped time is
    /// no firing); for callers that annotate skipped times themselves.
    GapSkipped,
    /// The wall time occurs twice; this is the first occurrence, the only one that fires.
    FoldFirst,
    /// The wall time occurs twice; this is the second occurrence, the only one that fires.
    FoldLast,
    /// The wall time occurs twice and both fire; this is one of them.
    FoldBoth,
}

/// One firing of a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Firing {
    /// The scheduled instant.
    pub at: DateTime<Utc>,
    /// The same instant on the wall clock of the schedule's zone.
    pub local: DateTime<FixedOffset>,
    pub decision: DstDecision,
}

/// A compiled schedule: compact (one per active job stays in memory), cheap to query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    rule: Rule,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    tz: Tz,
    gap: DstGap,
    fold: DstFold,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Rule {
    Cron(Cron),
    /// `every` in nanoseconds (366 days fit in a u64 many times over).
    Interval {
        every_nanos: u64,
        anchor: DateTime<Utc>,
    },
    Once(Once),
}

/// Which occurrence of a repeated wall time a search picks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pick {
    Earlier,
    Later,
}

/// Where `after`'s own wall time sits relative to a fold.
enum FoldPosition {
    /// Not in a repeated hour.
    Outside,
    /// In the first pass of a repeated hour (before clocks go back). Offsets in seconds.
    FirstPass { earlier: i32, later: i32 },
    /// In the second pass (after clocks went back).
    SecondPass { earlier: i32, later: i32 },
}

impl ScheduleSpec {
    /// A spec with the defaults: zone UTC, `dst_gap = shift`, `dst_fold = first`, no bounds.
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            time_zone: default_time_zone(),
            dst_gap: DstGap::default(),
            dst_fold: DstFold::default(),
            start_time: None,
            end_time: None,
        }
    }

    /// Checks the spec and compiles it. Only checks that need no "now" (see
    /// `validate_for_create` for those); a stored spec that compiled once compiles again with
    /// the same tz database.
    pub fn compile(&self) -> Result<Schedule, FieldError> {
        let tz = parse_time_zone(&self.time_zone)?;
        check_instant_year("schedule.start_time", self.start_time)?;
        check_instant_year("schedule.end_time", self.end_time)?;
        if let (Some(start), Some(end)) = (self.start_time, self.end_time)
            && end <= start
        {
            return Err(FieldError::new(
                "schedule.end_time",
                format!(
                    "end_time {} is not after start_time {}: expected end_time > start_time (end_time is exclusive)",
                    rfc3339(end),
                    rfc3339(start)
                ),
            ));
        }
        let rule = match &self.kind {
            Kind::Cron { expr } => {
                let cron = Cron::parse(expr)?;
                // The calendar repeats every 400 years: no match in one full cycle is no match ever.
                let cycle_start = NaiveDateTime::default()
                    .with_year(2000)
                    .ok_or_else(|| FieldError::new("schedule.cron", "internal date error"))?;
                if cron.next_naive_until(cycle_start, 2399).is_none() {
                    return Err(FieldError::new(
                        "schedule.cron",
                        format!(
                            "expression '{}' never matches a real date (e.g. day 30 of february): check day-of-month against month",
                            expr.trim()
                        ),
                    ));
                }
                Rule::Cron(cron)
            }
            Kind::Interval { every, anchor } => {
                if *every < INTERVAL_EVERY_MIN || *every > INTERVAL_EVERY_MAX {
                    return Err(FieldError::new(
                        "schedule.interval",
                        format!(
                            "every {every:?} out of range: expected 1s to 366 days ({}s)",
                            INTERVAL_EVERY_MAX.as_secs()
                        ),
                    ));
                }
                check_instant_year("schedule.interval.anchor", Some(*anchor))?;
                Rule::Interval {
                    every_nanos: every.as_nanos() as u64,
                    anchor: *anchor,
                }
            }
            Kind::Once(once) => {
                let year = match once {
                    Once::Local(t) => t.year(),
                    Once::Utc(t) => t.year(),
                };
                if !(YEAR_MIN..=YEAR_MAX).contains(&year) {
                    return Err(FieldError::new(
                        "schedule.once",
                        format!("year {year} out of range {YEAR_MIN}-{YEAR_MAX}"),
                    ));
                }
                Rule::Once(*once)
            }
        };
        Ok(Schedule {
            rule,
            start: self.start_time,
            end: self.end_time,
            tz,
            gap: self.dst_gap,
            fold: self.dst_fold,
        })
    }

    /// `compile`, plus the checks that need "now": an end_time or a once that is not in the
    /// future, a schedule that never fires after now. Returns warnings for people, one per DST
    /// transition in the 365 days after now that changes a firing, e.g. "schedule crosses a
    /// DST transition on 2027-03-14 (America/New_York): 02:30 does not exist, fires at 03:00
    /// (dst_gap=shift)".
    pub fn validate_for_create(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(Schedule, Vec<String>), FieldError> {
        validate::validate_for_create(self, now)
    }
}

impl Schedule {
    /// The first firing strictly after `after`, within `[start_time, end_time)` and under the
    /// DST policy; None when the schedule is exhausted. Pass the previous *scheduled* instant
    /// (never the clock): successive calls then give strictly increasing instants.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<Firing> {
        // `>= start` is `> start - 1ns`.
        let after = match self.start {
            Some(start) => after.max(start.checked_sub_signed(TimeDelta::nanoseconds(1))?),
            None => after,
        };
        if self.end.is_some_and(|end| after >= end) {
            return None;
        }
        let (zoned, decision) = match &self.rule {
            Rule::Cron(cron) => self.next_cron(cron, after)?,
            Rule::Interval {
                every_nanos,
                anchor,
            } => (
                next_interval(*every_nanos, *anchor, after)?.with_timezone(&self.tz),
                DstDecision::None,
            ),
            Rule::Once(once) => self.next_once(once, after)?,
        };
        let at = zoned.with_timezone(&Utc);
        if at <= after || self.end.is_some_and(|end| at >= end) {
            return None;
        }
        Some(Firing {
            at,
            local: zoned.fixed_offset(),
            decision,
        })
    }

    /// Up to `count` (at most `PREVIEW_COUNT_MAX`) firings strictly after `after`, in order.
    pub fn preview(&self, after: DateTime<Utc>, count: usize) -> Vec<Firing> {
        let count = count.min(PREVIEW_COUNT_MAX);
        let mut firings = Vec::with_capacity(count);
        let mut cursor = after;
        while firings.len() < count {
            let Some(firing) = self.next_after(cursor) else {
                break;
            };
            cursor = firing.at;
            firings.push(firing);
        }
        firings
    }

    /// The zone the schedule is evaluated (cron, once-local) and rendered in.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// Inclusive lower bound, if any.
    pub fn start_time(&self) -> Option<DateTime<Utc>> {
        self.start
    }

    /// Exclusive upper bound, if any.
    pub fn end_time(&self) -> Option<DateTime<Utc>> {
        self.end
    }

    /// The gap policy (used by cron and once-local only).
    pub fn dst_gap(&self) -> DstGap {
        self.gap
    }

    /// The fold policy (used by cron and once-local only).
    pub fn dst_fold(&self) -> DstFold {
        self.fold
    }

    fn fold_decision(&self) -> DstDecision {
        match self.fold {
            DstFold::First => DstDecision::FoldFirst,
            DstFold::Last => DstDecision::FoldLast,
            DstFold::Both => DstDecision::FoldBoth,
        }
    }

    /// The smallest instant > `after` over all wall times matching `cron`.
    ///
    /// Mapping wall times to instants is monotone when one occurrence of each repeated time is
    /// taken: "earlier occurrence" and "later occurrence" both grow with the wall time. So each
    /// policy is one or two ordered searches over wall times, from the first wall time whose
    /// chosen occurrence can lie after `after`:
    /// - usually just after `after`'s own wall time;
    /// - for earlier occurrences when `after` is in the second pass of a fold: from the end of
    ///   the fold (every earlier occurrence in it is already past);
    /// - for later occurrences when `after` is in the first pass: from the start of the fold
    ///   (every later occurrence in it is still to come).
    ///
    /// `Both` takes the smaller of the two searches.
    fn next_cron(&self, cron: &Cron, after: DateTime<Utc>) -> Option<(Zoned, DstDecision)> {
        let offset = zone::offset_at(self.tz, after);
        let local = zone::local_of(after, offset)?;
        let just_after = local
            .with_nanosecond(0)?
            .checked_add_signed(TimeDelta::seconds(1))?;
        match (self.fold, self.fold_position(&local, offset)) {
            (DstFold::First, FoldPosition::Outside | FoldPosition::FirstPass { .. })
            | (DstFold::Both, FoldPosition::Outside) => {
                self.search(cron, just_after, Pick::Earlier, after)
            }
            (DstFold::Last, FoldPosition::Outside | FoldPosition::SecondPass { .. }) => {
                self.search(cron, just_after, Pick::Later, after)
            }
            (DstFold::First, FoldPosition::SecondPass { earlier, later }) => {
                let fold_end = self.fold_end(after, earlier, later)?;
                self.search(cron, fold_end, Pick::Earlier, after)
            }
            (DstFold::Last, FoldPosition::FirstPass { earlier, later }) => {
                let fold_start = self.fold_start(after, earlier, later)?;
                self.search(cron, fold_start, Pick::Later, after)
            }
            (DstFold::Both, FoldPosition::FirstPass { earlier, later }) => {
                let fold_start = self.fold_start(after, earlier, later)?;
                min_firing(
                    self.search(cron, just_after, Pick::Earlier, after),
                    self.search(cron, fold_start, Pick::Later, after),
                )
            }
            (DstFold::Both, FoldPosition::SecondPass { earlier, later }) => {
                let fold_end = self.fold_end(after, earlier, later)?;
                min_firing(
                    self.search(cron, fold_end, Pick::Earlier, after),
                    self.search(cron, just_after, Pick::Later, after),
                )
            }
        }
    }

    /// The first wall time >= `from` matching `cron` whose chosen instant is > `after`.
    fn search(
        &self,
        cron: &Cron,
        mut from: NaiveDateTime,
        pick: Pick,
        after: DateTime<Utc>,
    ) -> Option<(Zoned, DstDecision)> {
        for _ in 0..SEARCH_STEPS_MAX {
            let wall = cron.next_naive(from)?;
            let chosen = match zone::map_local(self.tz, &wall) {
                Mapped::Single(at) => Some((at, DstDecision::None)),
                Mapped::Ambiguous(earlier, later) => {
                    let at = if pick == Pick::Earlier {
                        earlier
                    } else {
                        later
                    };
                    Some((at, self.fold_decision()))
                }
                Mapped::Gap { at, end } => match self.gap {
                    DstGap::Shift => at.map(|at| (at, DstDecision::GapShifted)),
                    DstGap::Skip => {
                        // Jump the whole gap at once: a `* * * * * *` would otherwise try
                        // every second of it.
                        if let Some(end) = end {
                            from = end;
                            continue;
                        }
                        None
                    }
                },
            };
            match chosen {
                Some((at, decision)) if at.with_timezone(&Utc) > after => {
                    return Some((at, decision));
                }
                // By construction the chosen instant is after `after`; if a zone breaks that
                // (two transitions within hours), move on rather than go back in time.
                _ => from = wall.checked_add_signed(TimeDelta::seconds(1))?,
            }
        }
        None
    }

    fn fold_position(&self, local: &NaiveDateTime, offset: i32) -> FoldPosition {
        match zone::map_local(self.tz, local) {
            Mapped::Ambiguous(earlier_at, later_at) => {
                // The earlier occurrence carries the larger offset.
                let earlier = zone::offset_of(&earlier_at);
                let later = zone::offset_of(&later_at);
                if offset == earlier {
                    FoldPosition::FirstPass { earlier, later }
                } else {
                    FoldPosition::SecondPass { earlier, later }
                }
            }
            _ => FoldPosition::Outside,
        }
    }

    /// First wall time of the fold `after` is in the first pass of: the transition is within
    /// `(after, after + fold length]`.
    fn fold_start(&self, after: DateTime<Utc>, earlier: i32, later: i32) -> Option<NaiveDateTime> {
        let length = i64::from(earlier - later);
        let lo = after.timestamp();
        let transition = zone::transition_in(self.tz, lo, lo.checked_add(length)?)?;
        zone::local_of(transition, later)
    }

    /// First wall time after the fold `after` is in the second pass of: the transition is
    /// within `(after - fold length, after]`.
    fn fold_end(&self, after: DateTime<Utc>, earlier: i32, later: i32) -> Option<NaiveDateTime> {
        let length = i64::from(earlier - later);
        let hi = after.timestamp();
        let transition = zone::transition_in(self.tz, hi.checked_sub(length)?, hi)?;
        zone::local_of(transition, earlier)
    }

    fn next_once(&self, once: &Once, after: DateTime<Utc>) -> Option<(Zoned, DstDecision)> {
        let candidates: [Option<(Zoned, DstDecision)>; 2] = match once {
            Once::Utc(at) => [Some((at.with_timezone(&self.tz), DstDecision::None)), None],
            Once::Local(wall) => match zone::map_local(self.tz, wall) {
                Mapped::Single(at) => [Some((at, DstDecision::None)), None],
                Mapped::Ambiguous(earlier, later) => {
                    let decision = self.fold_decision();
                    match self.fold {
                        DstFold::First => [Some((earlier, decision)), None],
                        DstFold::Last => [Some((later, decision)), None],
                        DstFold::Both => [Some((earlier, decision)), Some((later, decision))],
                    }
                }
                Mapped::Gap { at, .. } => match self.gap {
                    DstGap::Shift => [at.map(|at| (at, DstDecision::GapShifted)), None],
                    DstGap::Skip => [None, None],
                },
            },
        };
        candidates
            .into_iter()
            .flatten()
            .find(|(at, _)| at.with_timezone(&Utc) > after)
    }
}

/// The first `anchor + k * every` (k >= 0) after `after`, counted in nanoseconds.
fn next_interval(
    every_nanos: u64,
    anchor: DateTime<Utc>,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let every = i128::from(every_nanos);
    let anchor_ns = nanos_since_epoch(anchor);
    let after_ns = nanos_since_epoch(after);
    let k = if after_ns < anchor_ns {
        0
    } else {
        (after_ns - anchor_ns) / every + 1
    };
    let at = anchor_ns.checked_add(k.checked_mul(every)?)?;
    let secs = i64::try_from(at.div_euclid(1_000_000_000)).ok()?;
    let nanos = at.rem_euclid(1_000_000_000) as u32;
    DateTime::from_timestamp(secs, nanos)
}

fn nanos_since_epoch(t: DateTime<Utc>) -> i128 {
    i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos())
}

fn min_firing(
    a: Option<(Zoned, DstDecision)>,
    b: Option<(Zoned, DstDecision)>,
) -> Option<(Zoned, DstDecision)> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

fn parse_time_zone(name: &str) -> Result<Tz, FieldError> {
    const FIELD: &str = "schedule.time_zone";
    if name.is_empty() {
        return Err(FieldError::new(
            FIELD,
            "time zone is empty: expected an IANA name such as Europe/Paris or UTC",
        ));
    }
    if name.len() > TIME_ZONE_LEN_MAX {
        return Err(FieldError::new(
            FIELD,
            format!(
                "time zone is {} bytes long: expected an IANA name of at most {TIME_ZONE_LEN_MAX}",
                name.len()
            ),
        ));
    }
    name.parse::<Tz>().map_err(|_| {
        let hint = chrono_tz::TZ_VARIANTS
            .iter()
            .find(|tz| tz.name().eq_ignore_ascii_case(name))
            .map(|tz| format!(" (did you mean '{}'?)", tz.name()))
            .unwrap_or_default();
        FieldError::new(
            FIELD,
            format!("unknown time zone '{name}'{hint}: expected an IANA name such as Europe/Paris or UTC"),
        )
    })
}

fn check_instant_year(field: &str, t: Option<DateTime<Utc>>) -> Result<(), FieldError> {
    match t {
        Some(t) if !(YEAR_MIN..=YEAR_MAX).contains(&t.year()) => Err(FieldError::new(
            field,
            format!(
                "{} has year {} out of range {YEAR_MIN}-{YEAR_MAX}",
                rfc3339(t),
                t.year()
            ),
        )),
        _ => Ok(()),
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}
