//! `ClockGuardian`: the shell around the core's clock guard. A task (no mailbox: the
//! owner and the regions read its state synchronously through a `GuardHandle`) that
//! ticks the guard every `TICK_EVERY` on both clocks, samples the time sources every
//! `SAMPLE_EVERY` (and at once after a wall-clock jump): the configured ones (Redis
//! `TIME`) and, when at least `PEERS_MIN` are live, the peers' clocks; and announces
//! jumps so the owners rebuild their timer index from the scheduled instants.
//!
//! Must not decide anything itself: offsets, bounds, the gate and resignation are the
//! core's (`core::clock_guard`). Must not read the clock except through the `Clock`
//! port.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::core::Timestamp;
use crate::core::clock_guard::{
    Decision, Event, Gate, Guard, GuardConfig, Reading, Sample, SampleError,
};
use crate::ports::{Clock, PeerClocks, TimeSource};

/// How often the guard compares the wall clock's advance with the monotonic one's.
const TICK_EVERY: Duration = Duration::from_millis(100);
/// How often each source is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Longest one sample may take before it counts as failed.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(1);
/// Peers sampled per round at most.
pub const PEERS_MAX: usize = 4;
/// Peers are sampled only when at least this many are live: with the configured
/// source, that makes three voters, so one bad clock is outvoted instead of making
/// every gate close on a tie.
pub const PEERS_MIN: usize = 2;

/// What the guard shows (status, metrics).
#[derive(Clone, Debug, Default)]
pub struct GuardStatus {
    pub open: bool,
    /// When the gate last opened or closed.
    pub since: Option<Timestamp>,
    /// Why it is closed (empty when open).
    pub reason: String,
    /// True minus local time, microseconds (0 without a source).
    pub offset_us: i64,
    /// How far off the offset may be, microseconds.
    pub bound_us: u64,
    pub sources: Vec<String>,
    /// No source is configured (embedded mode): only jumps are watched.
    pub no_source: bool,
    pub jumps: u64,
    /// Samples refused or failed so far.
    pub sample_errors: u64,
}

/// The guard's state, shared by the guardian task (writer) and the actors (readers).
pub struct GuardHandle {
    guard: Mutex<Guard>,
    clock: Arc<dyn Clock>,
    sources: Mutex<Vec<String>>,
    jumps: watch::Sender<u64>,
    sample_errors: std::sync::atomic::AtomicU64,
}

impl GuardHandle {
    fn reading(&self) -> Reading {
        Reading {
            wall: self.clock.now(),
            mono: self.clock.monotonic(),
        }
    }

    /// May a firing scheduled at `scheduled` start now?
    pub fn can_fire(&self, scheduled: Timestamp) -> Decision {
        let now = self.reading();
        self.guard
            .lock()
            .expect("guard lock")
            .can_fire(scheduled, now)
    }

    /// Whether the gate is open right now.
    pub fn is_open(&self) -> bool {
        matches!(
            self.guard.lock().expect("guard lock").gate(),
            Gate::Open { .. }
        )
    }

    /// Whether the gate has been closed so long that an owner must hand over.
    pub fn resign_due(&self) -> bool {
        let now = self.reading();
        self.guard.lock().expect("guard lock").resign_due(now)
    }

    /// Bumped at every wall-clock jump.
    pub fn jumps(&self) -> watch::Receiver<u64> {
        self.jumps.subscribe()
    }

    pub fn status(&self) -> GuardStatus {
        let now = self.reading();
        let guard = self.guard.lock().expect("guard lock");
        let mut s = GuardStatus {
            sources: self.sources.lock().expect("sources lock").clone(),
            jumps: *self.jumps.borrow(),
            sample_errors: self
                .sample_errors
                .load(std::sync::atomic::Ordering::Relaxed),
            ..GuardStatus::default()
        };
        match guard.gate() {
            Gate::Open { since, no_source } => {
                s.open = true;
                s.since = Some(*since);
                s.no_source = *no_source;
            }
            Gate::Closed { since, reason } => {
                s.since = Some(*since);
                s.reason = reason.to_string();
            }
        }
        if let Ok(a) = guard.estimate(now) {
            s.offset_us = a.interval.offset().num_microseconds().unwrap_or(i64::MAX);
            s.bound_us = u64::try_from(a.interval.bound().as_micros()).unwrap_or(u64::MAX);
        }
        s
    }
}

/// Start the guardian; it runs until `stop`. With no sources the gate stays open (the
/// node's own clock is all there is) and only jumps are watched.
pub fn spawn(
    clock: Arc<dyn Clock>,
    sources: Vec<Arc<dyn TimeSource>>,
    peers: Option<Arc<dyn PeerClocks>>,
    config: GuardConfig,
    stop: CancellationToken,
) -> Arc<GuardHandle> {
    let names: Vec<String> = sources.iter().map(|s| s.name()).collect();
    let start = Reading {
        wall: clock.now(),
        mono: clock.monotonic(),
    };
    let handle = Arc::new(GuardHandle {
        guard: Mutex::new(Guard::new(config.clone(), names.clone(), start)),
        clock,
        sources: Mutex::new(names),
        jumps: watch::channel(0).0,
        sample_errors: std::sync::atomic::AtomicU64::new(0),
    });
    let h = handle.clone();
    tokio::spawn(async move {
        let mut next_sample = Duration::ZERO;
        loop {
            let now = h.reading();
            if !sources.is_empty() && now.mono >= next_sample {
                let mut round = sources.clone();
                if let Some(p) = &peers {
                    let live = p.peers(PEERS_MAX).await;
                    if live.len() >= PEERS_MIN {
                        round.extend(live);
                    }
                }
                *h.sources.lock().expect("sources lock") = round.iter().map(|s| s.name()).collect();
                sample_all(&h, &round, config.round_trip_max).await;
                next_sample = h.clock.monotonic() + SAMPLE_EVERY;
            }
            let now = h.reading();
            let events = h.guard.lock().expect("guard lock").tick(now);
            for e in events {
                match e {
                    Event::Jump { delta } => {
                        warn!(
                            delta_ms = delta.num_milliseconds(),
                            "wall clock jumped; re-sampling and rebuilding timer indexes"
                        );
                        h.jumps.send_modify(|n| *n += 1);
                        next_sample = Duration::ZERO;
                    }
                    Event::Opened => info!("clock gate opened"),
                    Event::Closed { reason } => warn!(%reason, "clock gate closed: firing waits"),
                    Event::Resign { closed_for } => warn!(
                        closed_s = closed_for.as_secs(),
                        "clock gate closed too long: owned shards will be handed over"
                    ),
                }
            }
            tokio::select! {
            biased;
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(TICK_EVERY) => {}
            }
        }
    });
    handle
}

async fn sample_all(h: &GuardHandle, sources: &[Arc<dyn TimeSource>], round_trip_max: Duration) {
    for source in sources {
        let sent = h.reading();
        let answer = tokio::time::timeout(SAMPLE_TIMEOUT, source.time()).await;
        let received = h.reading();
        let outcome = match answer {
            Ok(Ok(reported)) => Sample::cristian(
                source.name(),
                sent,
                received,
                reported,
                Duration::ZERO,
                round_trip_max,
            ),
            Ok(Err(e)) => Err(SampleError::Failed {
                source: source.name(),
                message: e.to_string(),
            }),
            Err(_) => Err(SampleError::Failed {
                source: source.name(),
                message: format!("no answer within {SAMPLE_TIMEOUT:?}"),
            }),
        };
        if outcome.is_err() {
            h.sample_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        h.guard.lock().expect("guard lock").observe(outcome);
    }
}
