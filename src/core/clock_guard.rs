//! The clock guard's pure half: how wrong this node's wall clock may be, and the gate
//! that this puts on firing (DESIGN.md guarantee 1, "never early").
//!
//! Owns: time-source samples by Cristian's method ([`Sample`]), per-source estimates
//! whose bound grows with age at a stated drift rate ([`Estimate`]), the intersection
//! of several sources by Marzullo's sweep with falseticker detection ([`intersect`]),
//! wall-clock jump detection, and the gate's state machine ([`Guard`]: open, closed
//! with a reason and since when, resign after closed too long).
//!
//! Must not: do IO, talk to a time source, read a clock, sleep or draw random numbers.
//! Every pair of clock readings comes in as a [`Reading`] argument and every decision
//! goes out as data ([`Decision`], [`Event`]); the clock guard actor is the shell that
//! samples the sources, ticks the guard and acts on its events.
//!
//! Sign convention: an offset is *true time minus local wall time*, so the true time is
//! somewhere in `[wall + offset - bound, wall + offset + bound]`. A node whose clock
//! runs ahead has a negative offset. Arithmetic is done in whole nanoseconds and
//! rounded on the safe side (bounds up).

use std::collections::BTreeMap;
use std::fmt;
use std::mem::discriminant;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::core::Timestamp;

/// One reading of this node's two clocks, taken together: the wall clock (UTC, may be
/// stepped by an operator or NTP) and the monotonic clock (never steps; a `Duration`
/// since an arbitrary origin fixed for the life of the process).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    pub wall: Timestamp,
    pub mono: Duration,
}

/// One reading of a time source by Cristian's method: ask at `sent`, get the source's
/// time back at `received`.
///
/// The offset is placed at the midpoint of the round trip, with an uncertainty of half
/// the round trip plus the source's own stated error. The round trip is measured on the
/// monotonic clock and the offset refers to the wall clock *at receipt*, so a wall-clock
/// step during the round trip cannot skew it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    source: String,
    /// True minus local wall time at `received`.
    offset: TimeDelta,
    uncertainty: Duration,
    sent_mono: Duration,
    received: Reading,
}

/// Why a sample was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SampleError {
    /// The round trip took longer than `round_trip_max`: too uncertain to be useful,
    /// and wide intervals would agree with any falseticker.
    RoundTripTooLong {
        source: String,
        round_trip: Duration,
        max: Duration,
    },
    /// The monotonic reading at receipt is before the one at sending (a caller bug).
    ReceivedBeforeSent { source: String },
    /// The source could not be asked (unreachable, bad answer); built by the caller.
    Failed { source: String, message: String },
}

impl SampleError {
    /// The source this error is about.
    pub fn source_name(&self) -> &str {
        match self {
            Self::RoundTripTooLong { source, .. }
            | Self::ReceivedBeforeSent { source }
            | Self::Failed { source, .. } => source,
        }
    }
}

impl fmt::Display for SampleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RoundTripTooLong {
                source,
                round_trip,
                max,
            } => write!(
                f,
                "time source {source}: round trip {round_trip:?} exceeds {max:?}"
            ),
            Self::ReceivedBeforeSent { source } => {
                write!(
                    f,
                    "time source {source}: received before sent (readings out of order)"
                )
            }
            Self::Failed { source, message } => write!(f, "time source {source}: {message}"),
        }
    }
}

impl std::error::Error for SampleError {}

impl Sample {
    /// Takes a sample: the request left at `sent`, the answer `reported` (the source's
    /// UTC time) arrived at `received`; `source_error` is the source's own stated error
    /// (its resolution, e.g. 1 µs for Redis `TIME`; zero if it states none).
    ///
    /// Only the monotonic part of `sent` is used.
    pub fn cristian(
        source: impl Into<String>,
        sent: Reading,
        received: Reading,
        reported: Timestamp,
        source_error: Duration,
        round_trip_max: Duration,
    ) -> Result<Self, SampleError> {
        let source = source.into();
        let Some(round_trip) = received.mono.checked_sub(sent.mono) else {
            return Err(SampleError::ReceivedBeforeSent { source });
        };
        if round_trip > round_trip_max {
            return Err(SampleError::RoundTripTooLong {
                source,
                round_trip,
                max: round_trip_max,
            });
        }
        let trip = ns_of_dur(round_trip);
        let half_down = trip / 2;
        let half_up = trip - half_down;
        Ok(Self {
            source,
            offset: delta_of_ns(ns_of_ts(reported) + half_down - ns_of_ts(received.wall)),
            uncertainty: dur_of_ns(half_up + ns_of_dur(source_error)),
            sent_mono: sent.mono,
            received,
        })
    }

    /// The source this sample is of.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The sample's age at monotonic time `now_mono`, counted from the request's send
    /// (so that drift during the round trip is covered too).
    pub fn age(&self, now_mono: Duration) -> Duration {
        now_mono.saturating_sub(self.sent_mono)
    }

    /// What this sample says at `now`: the offset carried forward on the monotonic
    /// clock (so a wall-clock step since the sample shows up in the offset), and the
    /// uncertainty grown by `drift_ppm` of the sample's age (rounded up).
    pub fn estimate(&self, now: Reading, drift_ppm: u32) -> Estimate {
        let mono_advance = ns_of_dur(now.mono) - ns_of_dur(self.received.mono);
        let wall_advance = ns_of_ts(now.wall) - ns_of_ts(self.received.wall);
        Estimate {
            source: self.source.clone(),
            offset: delta_of_ns(ns_of_delta(self.offset) + mono_advance - wall_advance),
            bound: dur_of_ns(ns_of_dur(self.uncertainty) + drift(self.age(now.mono), drift_ppm)),
        }
    }
}

/// One source's estimate: true time minus local wall time is within `offset ± bound`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Estimate {
    pub source: String,
    pub offset: TimeDelta,
    pub bound: Duration,
}

impl Estimate {
    /// The closed interval `[offset - bound, offset + bound]`.
    pub fn interval(&self) -> Interval {
        let (offset, bound) = (ns_of_delta(self.offset), ns_of_dur(self.bound));
        Interval {
            lo: delta_of_ns(offset - bound),
            hi: delta_of_ns(offset + bound),
        }
    }
}

/// A closed interval of offsets (true minus local wall time), `lo <= hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    pub lo: TimeDelta,
    pub hi: TimeDelta,
}

impl Interval {
    /// The interval of a clock that is its own truth (embedded mode): offset 0, bound 0.
    pub const ZERO: Self = Self {
        lo: TimeDelta::zero(),
        hi: TimeDelta::zero(),
    };

    /// The midpoint (rounded down to the nanosecond).
    pub fn offset(&self) -> TimeDelta {
        let (lo, hi) = (ns_of_delta(self.lo), ns_of_delta(self.hi));
        delta_of_ns(lo + (hi - lo) / 2)
    }

    /// Half the width, rounded up: `offset() ± bound()` covers the whole interval.
    pub fn bound(&self) -> Duration {
        let (lo, hi) = (ns_of_delta(self.lo), ns_of_delta(self.hi));
        dur_of_ns(hi - lo - (hi - lo) / 2)
    }

    /// The most the local wall clock may be off: `max(|lo|, |hi|)`.
    pub fn error_max(&self) -> Duration {
        let (lo, hi) = (ns_of_delta(self.lo), ns_of_delta(self.hi));
        dur_of_ns(lo.abs().max(hi.abs()))
    }

    /// Whether `offset` is in the closed interval.
    pub fn contains(&self, offset: TimeDelta) -> bool {
        self.lo <= offset && offset <= self.hi
    }
}

/// Several sources agree: a majority of them share the offsets in `interval`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agreement {
    /// The smallest interval holding every offset that a majority of sources allow.
    pub interval: Interval,
    /// Sources whose interval holds no offset that a majority allows (sorted).
    pub falsetickers: Vec<String>,
}

/// No offset is allowed by a majority of the sources: a fault, never averaged away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disagreement {
    /// Every source that took part (sorted); empty if there were none.
    pub sources: Vec<String>,
}

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.sources.is_empty() {
            write!(f, "no time source to agree on")
        } else {
            write!(
                f,
                "time sources disagree, no majority: {}",
                self.sources.join(", ")
            )
        }
    }
}

impl std::error::Error for Disagreement {}

/// Marzullo's sweep over the sources' intervals, requiring a majority: finds the
/// offsets allowed by strictly more than half of `estimates` and returns the smallest
/// interval holding them all, with the sources that allow none of them as falsetickers.
///
/// If a majority of the sources are right (the true offset is in their intervals), the
/// true offset is in the returned interval. Several estimates of one source count as
/// several votes, so pass one per source. An empty slice is a disagreement.
pub fn intersect(estimates: &[Estimate]) -> Result<Agreement, Disagreement> {
    let need = estimates.len() / 2 + 1;
    let intervals: Vec<(i128, i128)> = estimates
        .iter()
        .map(|e| {
            let i = e.interval();
            (ns_of_delta(i.lo), ns_of_delta(i.hi))
        })
        .collect();
    // Edges of closed intervals: at one point, openings sweep before closings.
    let mut edges: Vec<(i128, bool)> = intervals
        .iter()
        .flat_map(|&(lo, hi)| [(lo, true), (hi, false)])
        .collect();
    edges.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));

    // Maximal segments on which at least `need` intervals overlap.
    let mut segments: Vec<(i128, i128)> = Vec::new();
    let mut count = 0usize;
    let mut start = 0i128;
    for (at, opens) in edges {
        if opens {
            count += 1;
            if count == need {
                start = at;
            }
        } else {
            if count == need {
                segments.push((start, at));
            }
            count -= 1;
        }
    }

    let (Some(first), Some(last)) = (segments.first(), segments.last()) else {
        let mut sources: Vec<String> = estimates.iter().map(|e| e.source.clone()).collect();
        sources.sort();
        sources.dedup();
        return Err(Disagreement { sources });
    };
    let interval = Interval {
        lo: delta_of_ns(first.0),
        hi: delta_of_ns(last.1),
    };
    let mut falsetickers: Vec<String> = estimates
        .iter()
        .zip(&intervals)
        .filter(|(_, (lo, hi))| !segments.iter().any(|(a, b)| lo <= b && a <= hi))
        .map(|(e, _)| e.source.clone())
        .collect();
    falsetickers.sort();
    falsetickers.dedup();
    Ok(Agreement {
        interval,
        falsetickers,
    })
}

/// The guard's limits. Defaults: skew 250 ms, sample age 30 s, closed 30 s, jump 50 ms,
/// round trip 200 ms, drift 200 ppm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardConfig {
    /// The gate closes when the clock may be off by more than this: `|offset| + bound`
    /// (the issue's `max_skew`). A clock known to be far off is closed too, so that its
    /// owner hands over to a node with a good clock.
    pub skew_max: Duration,
    /// A source's newest sample older than this (from its send) no longer counts.
    pub sample_age_max: Duration,
    /// An owner whose gate stays closed longer than this resigns.
    pub closed_max: Duration,
    /// A tick whose wall-clock advance differs from the monotonic one by more than this
    /// (either way) is a jump: reported, and every sample so far is dropped.
    pub jump_max: Duration,
    /// Samples with a longer round trip are rejected; for [`Sample::cristian`].
    pub round_trip_max: Duration,
    /// How fast the bound grows with a sample's age, in parts per million: the most the
    /// monotonic clock's rate may differ from true time's.
    pub drift_ppm: u32,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            skew_max: Duration::from_millis(250),
            sample_age_max: Duration::from_secs(30),
            closed_max: Duration::from_secs(30),
            jump_max: Duration::from_millis(50),
            round_trip_max: Duration::from_millis(200),
            drift_ppm: 200,
        }
    }
}

/// Why the gate is closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Sources are configured but none has a sample younger than `sample_age_max`
    /// (none taken yet, or all dropped after a jump).
    NoFreshSample,
    /// The fresh samples have no majority agreement.
    Disagreement(Disagreement),
    /// The clock may be off by `skew` (`|offset| + bound`), more than `skew_max`.
    SkewTooLarge { skew: Duration },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoFreshSample => write!(f, "no fresh sample of any time source"),
            Self::Disagreement(d) => d.fmt(f),
            Self::SkewTooLarge { skew } => write!(f, "clock may be off by {skew:?}"),
        }
    }
}

/// The gate, as of the last [`Guard::tick`]. `since` is local wall time, for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Firing allowed (subject to [`Guard::can_fire`]). `no_source`: no time source is
    /// configured (embedded mode), so the node's own clock is taken as true.
    Open {
        since: Timestamp,
        no_source: bool,
    },
    Closed {
        since: Timestamp,
        reason: Reason,
    },
}

/// What [`Guard::tick`] noticed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The wall clock advanced by `delta` more than the monotonic one since the previous
    /// tick (negative: it went back). Samples were dropped; re-sample the sources and
    /// rebuild the timer index from scheduled instants.
    Jump { delta: TimeDelta },
    /// The gate opened.
    Opened,
    /// The gate closed, or stays closed for a different kind of reason.
    Closed { reason: Reason },
    /// The gate has been closed for `closed_for` (monotonic), more than `closed_max`:
    /// an owner should resign. Sent once per closed spell; see [`Guard::resign_due`].
    Resign { closed_for: Duration },
}

/// Whether a firing scheduled at some instant may start now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The earliest true time it may be is at or past the scheduled instant.
    Fire,
    /// Not yet: ask again at this local wall time (allowing for the bound's growth
    /// meanwhile; a fresh sample or a tick may change the answer).
    Wait { until_local: Timestamp },
    /// The gate is closed; the firing waits, and is recorded `gated` past its grace.
    Closed { reason: Reason },
}

/// The gate's state machine over the samples of zero or more time sources.
///
/// Inputs: [`observe`](Self::observe) for each sample or failure, [`tick`](Self::tick)
/// regularly (jump detection and gate transitions). Outputs: [`gate`](Self::gate),
/// [`can_fire`](Self::can_fire), [`estimate`](Self::estimate) and the events.
///
/// With no source configured (embedded mode) the gate is open with offset 0 and bound
/// 0: the node's own clock is the only one there is. Jumps are still detected.
/// With sources, the gate starts closed until the first sample; agreement is taken
/// among the sources that have a fresh sample (a stale source does not vote).
#[derive(Clone, Debug)]
pub struct Guard {
    config: GuardConfig,
    /// Every known source and its newest usable sample.
    samples: BTreeMap<String, Option<Sample>>,
    last_tick: Reading,
    /// Samples received at or before this monotonic time predate a jump.
    stale_through: Option<Duration>,
    gate: Gate,
    /// Monotonic time the current closed spell began.
    closed_mono: Option<Duration>,
    resign_sent: bool,
}

impl Guard {
    /// A guard over the named `sources` (none: embedded mode), as of `now`.
    pub fn new<S: Into<String>>(
        config: GuardConfig,
        sources: impl IntoIterator<Item = S>,
        now: Reading,
    ) -> Self {
        let samples: BTreeMap<String, Option<Sample>> =
            sources.into_iter().map(|s| (s.into(), None)).collect();
        let (gate, closed_mono) = if samples.is_empty() {
            let gate = Gate::Open {
                since: now.wall,
                no_source: true,
            };
            (gate, None)
        } else {
            let gate = Gate::Closed {
                since: now.wall,
                reason: Reason::NoFreshSample,
            };
            (gate, Some(now.mono))
        };
        Self {
            config,
            samples,
            last_tick: now,
            stale_through: None,
            gate,
            closed_mono,
            resign_sent: false,
        }
    }

    /// Takes in one sampling outcome. A sample replaces its source's previous one unless
    /// it is older, or predates a detected jump; returns whether it was kept. A failure
    /// changes no estimate (the previous sample stays valid, its bound growing, until
    /// it is too old). A source not named at construction is added (a peer joined).
    pub fn observe(&mut self, outcome: Result<Sample, SampleError>) -> bool {
        let sample = match outcome {
            Ok(sample) => sample,
            Err(error) => {
                self.samples
                    .entry(error.source_name().to_owned())
                    .or_insert(None);
                return false;
            }
        };
        let stale = self
            .stale_through
            .is_some_and(|t| sample.received.mono <= t);
        let slot = self.samples.entry(sample.source.clone()).or_insert(None);
        if stale
            || slot
                .as_ref()
                .is_some_and(|old| old.received.mono > sample.received.mono)
        {
            return false;
        }
        *slot = Some(sample);
        true
    }

    /// Checks for a wall-clock jump since the previous tick, then re-evaluates the gate.
    pub fn tick(&mut self, now: Reading) -> Vec<Event> {
        let mut events = Vec::new();
        let wall_advance = ns_of_ts(now.wall) - ns_of_ts(self.last_tick.wall);
        let mono_advance = ns_of_dur(now.mono) - ns_of_dur(self.last_tick.mono);
        let jump = wall_advance - mono_advance;
        self.last_tick = now;
        if jump.abs() > ns_of_dur(self.config.jump_max) {
            events.push(Event::Jump {
                delta: delta_of_ns(jump),
            });
            self.samples.values_mut().for_each(|s| *s = None);
            self.stale_through = Some(now.mono);
        }

        let assessed = self.assess(now);
        let no_source = self.samples.is_empty();
        match (&mut self.gate, assessed) {
            (Gate::Open { no_source: was, .. }, Ok(_)) => *was = no_source,
            (Gate::Closed { .. }, Ok(_)) => {
                self.gate = Gate::Open {
                    since: now.wall,
                    no_source,
                };
                self.closed_mono = None;
                self.resign_sent = false;
                events.push(Event::Opened);
            }
            (Gate::Open { .. }, Err(reason)) => {
                self.gate = Gate::Closed {
                    since: now.wall,
                    reason: reason.clone(),
                };
                self.closed_mono = Some(now.mono);
                events.push(Event::Closed { reason });
            }
            (Gate::Closed { reason: old, .. }, Err(reason)) => {
                if discriminant(old) != discriminant(&reason) {
                    events.push(Event::Closed {
                        reason: reason.clone(),
                    });
                }
                *old = reason;
            }
        }

        if !self.resign_sent && self.resign_due(now) {
            self.resign_sent = true;
            events.push(Event::Resign {
                closed_for: self.closed_for(now),
            });
        }
        events
    }

    /// Whether a firing scheduled at `scheduled` may start at `now`: only if
    /// `now.wall + offset - bound >= scheduled`, i.e. the earliest true time it may be
    /// is past it. Evaluated afresh at `now` (the bound grows between ticks), so it may
    /// say closed before the next tick closes the gate.
    pub fn can_fire(&self, scheduled: Timestamp, now: Reading) -> Decision {
        let interval = match self.assess(now) {
            Ok(interval) => interval,
            Err(reason) => return Decision::Closed { reason },
        };
        let short = ns_of_ts(scheduled) - ns_of_ts(now.wall) - ns_of_delta(interval.lo);
        if short <= 0 {
            return Decision::Fire;
        }
        // While we wait w, lo falls by w * ppm (the bound grows): wait w = short / (1 - ppm).
        let ppm = if self.samples.is_empty() {
            0
        } else {
            i128::from(self.config.drift_ppm.min(PPM as u32 - 1))
        };
        let wait = (short * PPM + (PPM - ppm) - 1) / (PPM - ppm);
        Decision::Wait {
            until_local: ts_of_ns(ns_of_ts(now.wall) + wait),
        }
    }

    /// The gate as of the last tick.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// The sources' agreement at `now`, for status and metrics. Embedded mode: the
    /// zero interval. Never [`Reason::SkewTooLarge`]: a far-off clock is still known.
    pub fn estimate(&self, now: Reading) -> Result<Agreement, Reason> {
        if self.samples.is_empty() {
            return Ok(Agreement {
                interval: Interval::ZERO,
                falsetickers: Vec::new(),
            });
        }
        let fresh: Vec<Estimate> = self
            .samples
            .values()
            .flatten()
            .filter(|s| s.age(now.mono) <= self.config.sample_age_max)
            .map(|s| s.estimate(now, self.config.drift_ppm))
            .collect();
        if fresh.is_empty() {
            return Err(Reason::NoFreshSample);
        }
        intersect(&fresh).map_err(Reason::Disagreement)
    }

    /// Whether the gate (as of the last tick) has been closed longer than `closed_max`
    /// at `now`: an owner should resign, and a node should not campaign.
    pub fn resign_due(&self, now: Reading) -> bool {
        self.closed_mono.is_some() && self.closed_for(now) > self.config.closed_max
    }

    fn closed_for(&self, now: Reading) -> Duration {
        self.closed_mono
            .map_or(Duration::ZERO, |since| now.mono.saturating_sub(since))
    }

    /// The interval firing is judged by at `now`, or why the gate is closed.
    fn assess(&self, now: Reading) -> Result<Interval, Reason> {
        let interval = self.estimate(now)?.interval;
        let skew = interval.error_max();
        if skew > self.config.skew_max {
            return Err(Reason::SkewTooLarge { skew });
        }
        Ok(interval)
    }
}

const NANOS: i128 = 1_000_000_000;
const PPM: i128 = 1_000_000;

/// `ppm` millionths of `age`, in nanoseconds, rounded up.
fn drift(age: Duration, ppm: u32) -> i128 {
    (ns_of_dur(age) * i128::from(ppm) + PPM - 1) / PPM
}

fn ns_of_dur(d: Duration) -> i128 {
    i128::try_from(d.as_nanos()).unwrap_or(i128::MAX)
}

fn ns_of_delta(d: TimeDelta) -> i128 {
    i128::from(d.num_seconds()) * NANOS + i128::from(d.subsec_nanos())
}

fn ns_of_ts(t: Timestamp) -> i128 {
    i128::from(t.timestamp()) * NANOS + i128::from(t.timestamp_subsec_nanos())
}

/// Saturates at `TimeDelta::MIN` / `MAX`.
fn delta_of_ns(n: i128) -> TimeDelta {
    i64::try_from(n.div_euclid(NANOS))
        .ok()
        .and_then(|s| TimeDelta::new(s, n.rem_euclid(NANOS) as u32))
        .unwrap_or(if n < 0 {
            TimeDelta::MIN
        } else {
            TimeDelta::MAX
        })
}

/// Saturates at zero and `Duration::MAX`.
fn dur_of_ns(n: i128) -> Duration {
    if n <= 0 {
        return Duration::ZERO;
    }
    u64::try_from(n / NANOS).map_or(Duration::MAX, |s| Duration::new(s, (n % NANOS) as u32))
}

/// Saturates at the ends of chrono's range.
fn ts_of_ns(n: i128) -> Timestamp {
    i64::try_from(n.div_euclid(NANOS))
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, n.rem_euclid(NANOS) as u32))
        .unwrap_or(if n < 0 {
            DateTime::<Utc>::MIN_UTC
        } else {
            DateTime::<Utc>::MAX_UTC
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn base() -> Timestamp {
        DateTime::from_timestamp(1_750_000_000, 0).unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn tdms(n: i64) -> TimeDelta {
        TimeDelta::milliseconds(n)
    }

    /// A reading `at` after the origin, the wall clock `ahead` of base + at.
    fn reading(at: Duration, ahead: TimeDelta) -> Reading {
        Reading {
            wall: base() + TimeDelta::from_std(at).unwrap() + ahead,
            mono: at,
        }
    }

    /// A sample taken at monotonic `at` with round trip `trip`, by a node whose wall
    /// clock is `ahead` of true time (true time = base + mono), the source answering
    /// exactly in the middle.
    fn sample(source: &str, at: Duration, trip: Duration, ahead: TimeDelta) -> Sample {
        let sent = reading(at, ahead);
        let received = reading(at + trip, ahead);
        let reported = base() + TimeDelta::from_std(at + trip / 2).unwrap();
        Sample::cristian(source, sent, received, reported, Duration::ZERO, ms(1000)).unwrap()
    }

    /// A sample by a node with a true clock, from a source whose clock is off by `lie`.
    fn lying(source: &str, at: Duration, trip: Duration, lie: TimeDelta) -> Sample {
        let sent = reading(at, TimeDelta::zero());
        let received = reading(at + trip, TimeDelta::zero());
        let reported = base() + TimeDelta::from_std(at + trip / 2).unwrap() + lie;
        Sample::cristian(source, sent, received, reported, Duration::ZERO, ms(1000)).unwrap()
    }

    fn est(source: &str, offset_ms: i64, bound_ms: u64) -> Estimate {
        Estimate {
            source: source.into(),
            offset: tdms(offset_ms),
            bound: ms(bound_ms),
        }
    }

    fn config() -> GuardConfig {
        GuardConfig::default()
    }

    #[test]
    fn cristian_offset_is_from_the_midpoint() {
        let s = sample("redis", ms(1000), ms(20), tdms(300));
        let e = s.estimate(reading(ms(1020), tdms(300)), 0);
        assert_eq!(e.offset, tdms(-300));
        assert_eq!(e.bound, ms(10));

        let sent = reading(ms(0), TimeDelta::zero());
        let received = reading(ms(10), TimeDelta::zero());
        let s = Sample::cristian(
            "r",
            sent,
            received,
            base(),
            Duration::from_micros(1),
            ms(100),
        )
        .unwrap();
        let e = s.estimate(received, 0);
        assert_eq!(e.offset, tdms(-5));
        assert_eq!(e.bound, ms(5) + Duration::from_micros(1));
    }

    #[test]
    fn large_round_trip_is_rejected() {
        let sent = reading(ms(0), TimeDelta::zero());
        let received = reading(ms(300), TimeDelta::zero());
        let err = Sample::cristian("peer-2", sent, received, base(), Duration::ZERO, ms(200))
            .unwrap_err();
        assert_eq!(
            err,
            SampleError::RoundTripTooLong {
                source: "peer-2".into(),
                round_trip: ms(300),
                max: ms(200)
            }
        );
        assert_eq!(err.source_name(), "peer-2");
        let err = Sample::cristian("p", received, sent, base(), Duration::ZERO, ms(200));
        assert!(matches!(err, Err(SampleError::ReceivedBeforeSent { .. })));
    }

    #[test]
    fn bound_grows_with_age_at_the_drift_rate() {
        let s = sample("redis", ms(0), ms(10), TimeDelta::zero());
        let fresh = s.estimate(reading(ms(10), TimeDelta::zero()), 200);
        // Age counts from the send: 10 ms at 200 ppm = 2 µs.
        assert_eq!(fresh.bound, ms(5) + Duration::from_micros(2));
        let old = s.estimate(reading(ms(10_000), TimeDelta::zero()), 200);
        assert_eq!(old.bound, ms(5) + ms(2));
        assert_eq!(old.offset, fresh.offset);
        // A wall step after the sample shows in the offset, carried on the monotonic clock.
        let stepped = s.estimate(reading(ms(10_000), tdms(700)), 200);
        assert_eq!(stepped.offset, tdms(-700));
    }

    #[test]
    fn agreeing_sources_intersect() {
        let a = intersect(&[est("a", 0, 10), est("b", 4, 10), est("c", -3, 10)]).unwrap();
        assert!(a.falsetickers.is_empty());
        // Every offset that two of three allow: [-10, 10].
        assert_eq!(
            a.interval,
            Interval {
                lo: tdms(-10),
                hi: tdms(10)
            }
        );
        assert_eq!(a.interval.offset(), TimeDelta::zero());
        assert_eq!(a.interval.bound(), ms(10));
        assert_eq!(a.interval.error_max(), ms(10));
        let odd = Interval {
            lo: TimeDelta::nanoseconds(-3),
            hi: TimeDelta::nanoseconds(4),
        };
        assert_eq!(odd.offset(), TimeDelta::zero());
        assert_eq!(odd.bound(), Duration::from_nanos(4));

        let one = intersect(&[est("redis", 7, 2)]).unwrap();
        assert_eq!(one.interval, est("redis", 7, 2).interval());
    }

    #[test]
    fn one_falseticker_among_three() {
        let a = intersect(&[est("a", 0, 5), est("bad", 900, 5), est("c", 2, 5)]).unwrap();
        assert_eq!(a.falsetickers, vec!["bad".to_string()]);
        assert_eq!(
            a.interval,
            Interval {
                lo: tdms(-3),
                hi: tdms(5)
            }
        );
    }

    #[test]
    fn two_of_two_disagree_is_a_fault() {
        let d = intersect(&[est("redis", 0, 5), est("peer-2", 100, 5)]).unwrap_err();
        assert_eq!(d.sources, vec!["peer-2".to_string(), "redis".to_string()]);
        assert!(d.to_string().contains("peer-2, redis"));
        // Touching closed intervals agree on their common point.
        let a = intersect(&[est("a", 0, 5), est("b", 10, 5)]).unwrap();
        assert_eq!(
            a.interval,
            Interval {
                lo: tdms(5),
                hi: tdms(5)
            }
        );
        assert!(intersect(&[]).unwrap_err().sources.is_empty());
    }

    #[test]
    fn split_majorities_give_their_hull() {
        let a = intersect(&[est("wide", 5, 5), est("low", 0, 1), est("high", 10, 1)]).unwrap();
        assert_eq!(
            a.interval,
            Interval {
                lo: tdms(0),
                hi: tdms(10)
            }
        );
        assert!(a.falsetickers.is_empty());
    }

    #[test]
    fn embedded_mode_is_open_with_no_source() {
        let t0 = reading(ms(0), TimeDelta::zero());
        let mut g = Guard::new(config(), Vec::<String>::new(), t0);
        assert_eq!(
            g.gate(),
            &Gate::Open {
                since: t0.wall,
                no_source: true
            }
        );
        assert!(g.tick(reading(ms(1000), TimeDelta::zero())).is_empty());
        let now = reading(ms(2000), TimeDelta::zero());
        assert_eq!(g.can_fire(now.wall, now), Decision::Fire);
        let later = now.wall + tdms(3);
        assert_eq!(
            g.can_fire(later, now),
            Decision::Wait { until_local: later }
        );
        assert_eq!(g.estimate(now).unwrap().interval, Interval::ZERO);
        // Jumps are still detected; the gate stays open.
        let events = g.tick(reading(ms(3000), tdms(5000)));
        assert_eq!(events, vec![Event::Jump { delta: tdms(5000) }]);
        assert!(matches!(
            g.gate(),
            Gate::Open {
                no_source: true,
                ..
            }
        ));
    }

    #[test]
    fn gate_opens_on_a_sample_and_stale_samples_close_it() {
        let mut cfg = config();
        cfg.sample_age_max = Duration::from_secs(5);
        let mut g = Guard::new(cfg, ["redis"], reading(ms(0), TimeDelta::zero()));
        assert!(matches!(
            g.gate(),
            Gate::Closed {
                reason: Reason::NoFreshSample,
                ..
            }
        ));
        let now = reading(ms(100), TimeDelta::zero());
        assert_eq!(
            g.can_fire(now.wall, now),
            Decision::Closed {
                reason: Reason::NoFreshSample
            }
        );
        assert!(g.observe(Ok(sample("redis", ms(100), ms(4), TimeDelta::zero()))));
        let now = reading(ms(1000), TimeDelta::zero());
        assert_eq!(g.tick(now), vec![Event::Opened]);
        assert_eq!(
            g.gate(),
            &Gate::Open {
                since: now.wall,
                no_source: false
            }
        );
        // A failure changes nothing while the old sample is fresh.
        assert!(!g.observe(Err(SampleError::Failed {
            source: "redis".into(),
            message: "connection refused".into()
        })));
        assert!(g.tick(reading(ms(5000), TimeDelta::zero())).is_empty());
        let now = reading(ms(5200), TimeDelta::zero());
        assert_eq!(
            g.tick(now),
            vec![Event::Closed {
                reason: Reason::NoFreshSample
            }]
        );
        assert_eq!(
            g.gate(),
            &Gate::Closed {
                since: now.wall,
                reason: Reason::NoFreshSample
            }
        );
    }

    #[test]
    fn far_off_clock_closes_the_gate() {
        let mut g = Guard::new(config(), ["redis"], reading(ms(0), tdms(5000)));
        g.observe(Ok(sample("redis", ms(0), ms(2), tdms(5000))));
        let now = reading(ms(100), tdms(5000));
        let events = g.tick(now);
        assert!(matches!(
            &events[..],
            [Event::Closed { reason: Reason::SkewTooLarge { skew } }] if *skew > ms(5000)
        ));
        assert!(matches!(g.can_fire(base(), now), Decision::Closed { .. }));
        // Known, though: the estimate says the clock is 5 s ahead.
        let e = g.estimate(now).unwrap();
        assert!(e.interval.contains(tdms(-5000)));
    }

    #[test]
    fn disagreeing_sources_close_the_gate_and_name_them() {
        let t0 = reading(ms(0), TimeDelta::zero());
        let mut g = Guard::new(config(), ["redis", "peer-2"], t0);
        g.observe(Ok(sample("redis", ms(0), ms(2), TimeDelta::zero())));
        g.observe(Ok(lying("peer-2", ms(0), ms(2), tdms(80))));
        let events = g.tick(reading(ms(10), TimeDelta::zero()));
        assert_eq!(
            events,
            vec![Event::Closed {
                reason: Reason::Disagreement(Disagreement {
                    sources: vec!["peer-2".into(), "redis".into()]
                })
            }]
        );
    }

    #[test]
    fn falseticker_among_three_keeps_the_gate_open() {
        let t0 = reading(ms(0), TimeDelta::zero());
        let mut g = Guard::new(config(), ["a", "b", "c"], t0);
        g.observe(Ok(sample("a", ms(0), ms(2), TimeDelta::zero())));
        g.observe(Ok(lying("b", ms(0), ms(2), tdms(1))));
        g.observe(Ok(lying("c", ms(0), ms(2), tdms(-400))));
        let now = reading(ms(10), TimeDelta::zero());
        assert_eq!(g.tick(now), vec![Event::Opened]);
        assert_eq!(g.estimate(now).unwrap().falsetickers, vec!["c".to_string()]);
    }

    #[test]
    fn can_fire_waits_for_the_bound() {
        // Clock 100 ms behind, known within ±2 ms (+ drift).
        let mut g = Guard::new(config(), ["redis"], reading(ms(0), tdms(-100)));
        g.observe(Ok(sample("redis", ms(0), ms(4), tdms(-100))));
        let now = reading(ms(4), tdms(-100));
        g.tick(now);
        let true_now = base() + tdms(4);
        // Due now in true time, but the earliest true time we may be at is 2 ms ago.
        let Decision::Wait { until_local } = g.can_fire(true_now, now) else {
            panic!("expected to wait");
        };
        let waited = until_local - now.wall;
        assert!(waited >= tdms(2) && waited < tdms(3), "{waited:?}");
        let at = reading(
            ms(4) + (until_local - now.wall).to_std().unwrap(),
            tdms(-100),
        );
        assert_eq!(g.can_fire(true_now, at), Decision::Fire);
        assert_eq!(g.can_fire(true_now - tdms(10), now), Decision::Fire);
    }

    #[test]
    fn jump_forward_and_back_are_detected() {
        let zero = TimeDelta::zero();
        let mut g = Guard::new(config(), ["redis"], reading(ms(0), zero));
        g.observe(Ok(sample("redis", ms(0), ms(2), zero)));
        // Slew below jump_max is no jump.
        assert_eq!(g.tick(reading(ms(1000), tdms(30))), vec![Event::Opened]);

        let events = g.tick(reading(ms(2000), tdms(3030)));
        assert_eq!(
            events,
            vec![
                Event::Jump { delta: tdms(3000) },
                Event::Closed {
                    reason: Reason::NoFreshSample
                }
            ]
        );
        // A sample from before the jump is refused; a new one shows the clock 3 s ahead.
        assert!(!g.observe(Ok(sample("redis", ms(1500), ms(2), tdms(30)))));
        assert!(g.observe(Ok(sample("redis", ms(2100), ms(2), tdms(3030)))));
        let skew = ms(3031) + Duration::from_micros(20);
        assert_eq!(
            g.tick(reading(ms(2200), tdms(3030))),
            vec![Event::Closed {
                reason: Reason::SkewTooLarge { skew }
            }]
        );

        // The operator sets the clock right: a jump back.
        let events = g.tick(reading(ms(3000), zero));
        assert_eq!(
            events,
            vec![
                Event::Jump { delta: tdms(-3030) },
                Event::Closed {
                    reason: Reason::NoFreshSample
                }
            ]
        );
        assert!(g.observe(Ok(sample("redis", ms(3100), ms(2), zero))));
        assert_eq!(g.tick(reading(ms(3200), zero)), vec![Event::Opened]);
    }

    #[test]
    fn resign_after_closed_too_long() {
        let mut cfg = config();
        cfg.closed_max = Duration::from_secs(10);
        let mut g = Guard::new(cfg, ["redis"], reading(ms(0), TimeDelta::zero()));
        assert!(g.tick(reading(ms(5000), TimeDelta::zero())).is_empty());
        assert!(!g.resign_due(reading(ms(10_000), TimeDelta::zero())));
        let now = reading(ms(10_001), TimeDelta::zero());
        assert!(g.resign_due(now));
        assert_eq!(
            g.tick(now),
            vec![Event::Resign {
                closed_for: ms(10_001)
            }]
        );
        // Once per closed spell.
        assert!(g.tick(reading(ms(11_000), TimeDelta::zero())).is_empty());
        // Reopening ends the spell.
        g.observe(Ok(sample("redis", ms(11_000), ms(2), TimeDelta::zero())));
        assert_eq!(
            g.tick(reading(ms(11_100), TimeDelta::zero())),
            vec![Event::Opened]
        );
        assert!(!g.resign_due(reading(ms(30_000), TimeDelta::zero())));
    }

    /// A sampling world: the local clocks (wall and monotonic advance alike) are off by
    /// `x` from true time at receipt, true time elapses within drift of local time, the
    /// source answers somewhere in the round trip within its stated error.
    #[derive(Debug, Clone)]
    struct World {
        x_ns: i64,
        trip_ns: u64,
        answer_at: f64,
        source_error_ns: u64,
        source_off: f64,
        age_ns: u64,
        drift_trip: f64,
        drift_age: f64,
        due_ns: i64,
        /// Put the due instant within a few ns of where firing becomes allowed.
        due_at_edge: bool,
    }

    /// A fraction in [-1, 1], the extremes often (they are where "never early" bites).
    fn fraction() -> impl Strategy<Value = f64> {
        prop_oneof![Just(-1.0), Just(1.0), -1.0f64..=1.0]
    }

    fn world() -> impl Strategy<Value = World> {
        (
            -2_000_000_000i64..2_000_000_000,
            0u64..200_000_000,
            prop_oneof![Just(0.0), Just(1.0), 0.0f64..=1.0],
            prop_oneof![Just(0u64), 0u64..1_000_000],
            fraction(),
            prop_oneof![Just(0u64), 0u64..60_000_000_000],
            fraction(),
            fraction(),
            -300_000_000i64..300_000_000,
            any::<bool>(),
        )
            .prop_map(|t| World {
                x_ns: t.0,
                trip_ns: t.1,
                answer_at: t.2,
                source_error_ns: t.3,
                source_off: t.4,
                age_ns: t.5,
                drift_trip: t.6,
                drift_age: t.7,
                due_ns: t.8,
                due_at_edge: t.9,
            })
    }

    const DRIFT_PPM: u32 = 200;

    /// The scheduled instant of a world, in ns: near true now, or at the firing edge.
    fn due_of(w: &World, g: &Guard, now: Reading, true_now: i128) -> i128 {
        if w.due_at_edge {
            let lo = ns_of_delta(g.estimate(now).unwrap().interval.lo);
            ns_of_ts(now.wall) + lo + i128::from(w.due_ns % 3_000)
        } else {
            true_now + i128::from(w.due_ns)
        }
    }

    /// Builds the guard and returns it with `now` and the true time at `now`, in ns.
    fn build(w: &World) -> (Guard, Reading, i128) {
        let ppm_of = |ns: u64| (i128::from(ns) * i128::from(DRIFT_PPM)) / PPM;
        let trip = i128::from(w.trip_ns);
        let m0 = Duration::from_secs(100);
        let wall_rx = ns_of_ts(base());
        let true_rx = wall_rx + i128::from(w.x_ns);
        // The source stamps at a point of the round trip; drift over the rest of it.
        let after_stamp = trip - (trip as f64 * w.answer_at) as i128;
        let e1 = (ppm_of(after_stamp as u64) as f64 * w.drift_trip) as i128;
        let stamp_true = true_rx - after_stamp - e1;
        let e0 = (w.source_error_ns as f64 * w.source_off) as i128;
        let sent = Reading {
            wall: ts_of_ns(wall_rx - trip),
            mono: m0,
        };
        let received = Reading {
            wall: base(),
            mono: m0 + Duration::from_nanos(w.trip_ns),
        };
        let s = Sample::cristian(
            "redis",
            sent,
            received,
            ts_of_ns(stamp_true + e0),
            Duration::from_nanos(w.source_error_ns),
            ms(200),
        )
        .unwrap();
        let cfg = GuardConfig {
            skew_max: Duration::from_secs(10),
            sample_age_max: Duration::from_secs(120),
            drift_ppm: DRIFT_PPM,
            ..config()
        };
        let mut g = Guard::new(cfg, ["redis"], received);
        assert!(g.observe(Ok(s)));
        let age = i128::from(w.age_ns);
        let now = Reading {
            wall: ts_of_ns(wall_rx + age),
            mono: received.mono + Duration::from_nanos(w.age_ns),
        };
        let e2 = (ppm_of(w.age_ns) as f64 * w.drift_age) as i128;
        (g, now, true_rx + age + e2)
    }

    proptest! {
        #[test]
        fn never_fires_early_when_the_error_is_within_the_bound(w in world()) {
            let (g, now, true_now) = build(&w);
            let due = due_of(&w, &g, now, true_now);
            // The true offset is inside the estimate, by construction of the world.
            let e = g.estimate(now).unwrap();
            prop_assert!(e.interval.contains(delta_of_ns(true_now - ns_of_ts(now.wall))));
            if g.can_fire(ts_of_ns(due), now) == Decision::Fire {
                prop_assert!(true_now >= due, "fired {} ns early", due - true_now);
            }
        }

        #[test]
        fn waiting_until_the_hint_then_fires(w in world()) {
            let (g, now, true_now) = build(&w);
            let due = ts_of_ns(due_of(&w, &g, now, true_now));
            if let Decision::Wait { until_local } = g.can_fire(due, now) {
                let wait = (until_local - now.wall).to_std().unwrap();
                let later = Reading { wall: until_local, mono: now.mono + wait };
                prop_assert_eq!(g.can_fire(due, later), Decision::Fire);
            }
        }

        #[test]
        fn a_majority_of_truechimers_holds_the_true_offset(
            truth in -1_000i64..1_000,
            good in prop::collection::vec((0i64..=50, 0i64..=50), 1..6),
            bad in prop::collection::vec((-2_000i64..2_000, 0u64..50), 0..6),
        ) {
            prop_assume!(good.len() > bad.len());
            // Truechimers: intervals that contain `truth`.
            let mut all: Vec<Estimate> = good
                .iter()
                .enumerate()
                .map(|(i, (below, above))| Estimate {
                    source: format!("good-{i}"),
                    offset: tdms(truth + (above - below) / 2),
                    bound: ms(((below + above) / 2 + (below + above) % 2) as u64 + 1),
                })
                .collect();
            for e in &all {
                prop_assert!(e.interval().contains(tdms(truth)));
            }
            all.extend(bad.iter().enumerate().map(|(i, &(o, b))| est(&format!("bad-{i}"), o, b)));
            let a = intersect(&all).unwrap();
            prop_assert!(a.interval.contains(tdms(truth)));
            prop_assert!(a.falsetickers.iter().all(|s| s.starts_with("bad-")));
        }
    }
}
