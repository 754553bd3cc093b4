//! The retry policy: after an attempt of a run ends without success, whether to try
//! again and when, or how the run ends. Owns the policy, the backoff arithmetic and
//! the jitter seed; it must not sleep, schedule or read a clock (the caller adds the
//! returned delay to its own `now`), and must not draw ambient randomness (jitter
//! comes from a seed derived from the firing id, so every node computes the same).
//!
//! Semantics of [`after_attempt`] (matching `run::State`):
//! - `attempts_max = 1` (the default) means "no retry policy": any failure ends the
//!   run [`Decision::GiveUp`] (state `failed`).
//! - With retries configured (`attempts_max > 1`):
//!   - a [`Failure::Retryable`] failure with attempts left: [`Decision::RetryIn`]
//!     (state `retry_wait`, then a new numbered attempt with the same firing id);
//!   - retries exhausted, or a [`Failure::Permanent`] failure at any attempt:
//!     [`Decision::DeadLetter`] (state `dead_lettered`): the run ended without
//!     success and is listed and re-runnable. A permanent failure (a bad request, a
//!     missing command) will not heal by retrying, but it is exactly what an
//!     operator must see and re-run after a fix, so it lands in the same place as
//!     exhausted retries instead of a third state.
//!
//! Mapping from an attempt's status (the worker's job): failed, timed out and worker
//! lost are `Retryable` unless the executor classified the failure as permanent (for
//! instance an HTTP 4xx other than 408/429). A cancelled attempt is not a failure and
//! never comes here: the run ends `cancelled`.
//!
//! Delays: `backoff(n) = min(backoff_max, backoff_initial * multiplier^(n-1))` after
//! attempt `n`, then jitter multiplies it by `1 + jitter * u` with `u` in `[-1, 1)`
//! derived from the seed, and the result is clamped to `[0, backoff_max]`. At the cap
//! jitter only shortens, so retries of many runs that all reached the cap still
//! spread out, and no delay ever exceeds `backoff_max`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::hash::{fnv1a64, fnv1a64_extend, splitmix64, unit_f64};
use super::{duration_ms, human};
use crate::core::FieldError;

/// Largest accepted `attempts_max` (first attempt included).
pub const ATTEMPTS_MAX: u32 = 100;
/// Shortest accepted `backoff_initial`.
pub const DELAY_MIN: Duration = Duration::from_millis(1);
/// Longest accepted `backoff_initial` and `backoff_max`.
pub const DELAY_MAX: Duration = Duration::from_secs(24 * 3600);
/// Largest accepted `backoff_multiplier`.
pub const MULTIPLIER_MAX: f64 = 10.0;
/// Shortest accepted per-attempt `timeout`.
pub const TIMEOUT_MIN: Duration = Duration::from_secs(1);
/// Longest accepted per-attempt `timeout`.
pub const TIMEOUT_MAX: Duration = Duration::from_secs(24 * 3600);

/// How failed attempts are retried, and how long one attempt may take.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Retry {
    /// Attempts in all, the first included: 1 (default) is no retry; 1..=100.
    pub attempts_max: u32,
    /// Delay after the first failed attempt. Default 1 s.
    #[serde(with = "duration_ms")]
    pub backoff_initial: Duration,
    /// Cap on any delay, jitter included. Default 5 min; at least `backoff_initial`.
    #[serde(with = "duration_ms")]
    pub backoff_max: Duration,
    /// Growth factor between consecutive delays. Default 2.0; 1.0..=10.0.
    pub backoff_multiplier: f64,
    /// Fraction of each delay randomized, plus or minus. Default 0.2; 0.0..=1.0.
    pub jitter: f64,
    /// Longest one attempt may run before it is stopped and counted as a retryable
    /// failure. Default 10 min; 1 s..=24 h.
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts_max: 1,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            backoff_multiplier: 2.0,
            jitter: 0.2,
            timeout: Duration::from_secs(600),
        }
    }
}

impl Retry {
    /// Check the bounds; names the offending field.
    pub fn validate(&self) -> Result<(), FieldError> {
        if !(1..=ATTEMPTS_MAX).contains(&self.attempts_max) {
            return Err(FieldError::new(
                "policy.retry.attempts_max",
                format!("must be between 1 and {ATTEMPTS_MAX}"),
            ));
        }
        if !(DELAY_MIN..=DELAY_MAX).contains(&self.backoff_initial) {
            return Err(FieldError::new(
                "policy.retry.backoff_initial",
                format!(
                    "must be between {} and {}",
                    human(DELAY_MIN),
                    human(DELAY_MAX)
                ),
            ));
        }
        if self.backoff_max < self.backoff_initial || self.backoff_max > DELAY_MAX {
            return Err(FieldError::new(
                "policy.retry.backoff_max",
                format!("must be between backoff_initial and {}", human(DELAY_MAX)),
            ));
        }
        // `contains` is false for NaN, so NaN and infinities are refused too.
        if !(1.0..=MULTIPLIER_MAX).contains(&self.backoff_multiplier) {
            return Err(FieldError::new(
                "policy.retry.backoff_multiplier",
                format!("must be between 1 and {MULTIPLIER_MAX}"),
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(FieldError::new(
                "policy.retry.jitter",
                "must be between 0 and 1",
            ));
        }
        if !(TIMEOUT_MIN..=TIMEOUT_MAX).contains(&self.timeout) {
            return Err(FieldError::new(
                "policy.retry.timeout",
                format!(
                    "must be between {} and {}",
                    human(TIMEOUT_MIN),
                    human(TIMEOUT_MAX)
                ),
            ));
        }
        Ok(())
    }
}

/// How an attempt failed, as far as retrying goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// Might succeed if tried again: errors, timeouts, 5xx, a lost worker.
    Retryable,
    /// Will fail the same way if tried again: a bad request, a missing command.
    Permanent,
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Start the next attempt this long after the failed one ended.
    RetryIn(Duration),
    /// End the run `dead_lettered`: retries configured, and exhausted or pointless.
    DeadLetter,
    /// End the run `failed`: no retry policy (`attempts_max = 1`).
    GiveUp,
}

/// Decide after attempt number `attempt` (1-based: the one that just ended) failed
/// with `failure`. `jitter_seed` should be [`jitter_seed`]`(firing_id, attempt)`.
///
/// # Panics
/// If `attempt` is 0 (attempts are numbered from 1: a caller bug).
pub fn after_attempt(policy: &Retry, attempt: u32, failure: Failure, jitter_seed: u64) -> Decision {
    assert!(attempt >= 1, "retry: attempts are numbered from 1");
    if policy.attempts_max <= 1 {
        return Decision::GiveUp;
    }
    match failure {
        Failure::Permanent => Decision::DeadLetter,
        // `>=`: a policy lowered mid-run ends the run rather than retrying on.
        Failure::Retryable if attempt >= policy.attempts_max => Decision::DeadLetter,
        Failure::Retryable => Decision::RetryIn(delay(policy, attempt, jitter_seed)),
    }
}

/// The backoff after failed attempt `attempt`, before jitter:
/// `min(backoff_max, backoff_initial * multiplier^(attempt-1))`. Non-decreasing in
/// `attempt` (for a valid policy) and never above `backoff_max`.
pub fn backoff(policy: &Retry, attempt: u32) -> Duration {
    let cap = nanos(policy.backoff_max);
    let mut d = nanos(policy.backoff_initial).min(cap);
    // Multiply step by step rather than `powi`: each step is `d * m >= d` for m >= 1,
    // so the sequence is monotone by construction despite rounding. The exponent is
    // bounded (attempts never exceed ATTEMPTS_MAX), so the loop is too.
    for _ in 1..attempt.min(ATTEMPTS_MAX) {
        if d >= cap {
            break;
        }
        // f64::min returns the non-NaN side, so a NaN multiplier lands on the cap.
        d = (d * policy.backoff_multiplier).min(cap);
    }
    from_nanos(d).min(policy.backoff_max)
}

/// The delay after failed attempt `attempt`: [`backoff`] with jitter from `seed`,
/// clamped to `[0, backoff_max]`. Deterministic: the same arguments give the same
/// delay on every node.
pub fn delay(policy: &Retry, attempt: u32, seed: u64) -> Duration {
    let base = nanos(backoff(policy, attempt));
    let jitter = if policy.jitter.is_nan() {
        0.0
    } else {
        policy.jitter.clamp(0.0, 1.0)
    };
    let u = 2.0 * unit_f64(splitmix64(seed)) - 1.0;
    let jittered = (base * (1.0 + jitter * u)).clamp(0.0, nanos(policy.backoff_max));
    from_nanos(jittered).min(policy.backoff_max)
}

/// The jitter seed of attempt `attempt` of firing `firing_id`: FNV-1a 64 over the
/// id's bytes then the attempt's 4 little-endian bytes. Stable across platforms and
/// Rust versions, so every node derives the same delay for the same attempt.
pub fn jitter_seed(firing_id: &str, attempt: u32) -> u64 {
    fnv1a64_extend(fnv1a64(firing_id.as_bytes()), &attempt.to_le_bytes())
}

/// Nanoseconds as f64: exact up to 2^53 ns (104 days), past every valid delay.
fn nanos(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// Back from f64 nanoseconds; `as` saturates (NaN gives 0), so this cannot panic.
fn from_nanos(ns: f64) -> Duration {
    Duration::from_nanos(ns as u64)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use Decision::{DeadLetter, GiveUp, RetryIn};
    use Failure::{Permanent, Retryable};

    fn no_jitter(attempts_max: u32) -> Retry {
        Retry {
            attempts_max,
            jitter: 0.0,
            ..Retry::default()
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn decision_table() {
        let cases = [
            ("default: no retry", Retry::default(), 1, Retryable, GiveUp),
            ("no retry, permanent", no_jitter(1), 1, Permanent, GiveUp),
            ("first failure", no_jitter(3), 1, Retryable, RetryIn(S(1))),
            ("second failure", no_jitter(3), 2, Retryable, RetryIn(S(2))),
            ("exhausted", no_jitter(3), 3, Retryable, DeadLetter),
            ("past the end", no_jitter(3), 7, Retryable, DeadLetter),
            (
                "permanent with attempts left",
                no_jitter(3),
                1,
                Permanent,
                DeadLetter,
            ),
        ];
        for (name, p, attempt, failure, expected) in cases {
            assert_eq!(after_attempt(&p, attempt, failure, 0), expected, "{name}");
        }
    }

    #[test]
    fn backoff_table() {
        let p = Retry::default();
        // 1, 2, 4, ... 256 s, then the 300 s cap.
        let expected = [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300];
        for (i, &secs) in expected.iter().enumerate() {
            assert_eq!(backoff(&p, i as u32 + 1), S(secs), "attempt {}", i + 1);
        }
        assert_eq!(backoff(&p, u32::MAX), S(300));
        let flat = Retry {
            backoff_multiplier: 1.0,
            ..Retry::default()
        };
        assert_eq!(backoff(&flat, 50), S(1));
        let frac = Retry {
            backoff_initial: Duration::from_millis(100),
            backoff_multiplier: 1.5,
            ..Retry::default()
        };
        assert_eq!(backoff(&frac, 3), Duration::from_millis(225));
    }

    #[test]
    fn invalid_policies_do_not_panic() {
        let p = Retry {
            backoff_initial: S(10),
            backoff_max: S(1),
            backoff_multiplier: f64::NAN,
            jitter: f64::NAN,
            ..Retry::default()
        };
        assert_eq!(backoff(&p, 5), S(1));
        assert_eq!(delay(&p, 5, 42), S(1));
        let huge = Retry {
            backoff_initial: Duration::MAX,
            backoff_max: Duration::MAX,
            jitter: 5.0,
            ..Retry::default()
        };
        assert!(delay(&huge, 3, 7) <= Duration::MAX);
    }

    #[test]
    fn jitter_is_bounded_and_spreads() {
        let p = Retry::default();
        let mut seen = std::collections::BTreeSet::new();
        for attempt in 1..=3 {
            for i in 0..200 {
                let seed = jitter_seed(&format!("firing-{i}"), attempt);
                let d = delay(&p, attempt, seed);
                let base = backoff(&p, attempt).as_secs_f64();
                assert!(d.as_secs_f64() >= base * 0.8 - 1e-9, "{d:?}");
                assert!(d.as_secs_f64() <= base * 1.2 + 1e-9, "{d:?}");
                seen.insert(d);
            }
        }
        assert!(
            seen.len() > 500,
            "jitter should rarely collide: {}",
            seen.len()
        );
        // At the cap, jitter only shortens.
        for i in 0..200 {
            let d = delay(&p, 20, jitter_seed(&format!("f{i}"), 20));
            assert!(d <= S(300) && d >= S(240), "{d:?}");
        }
    }

    #[test]
    fn jitter_is_pinned() {
        // Changing these values changes every retry delay in a running mesh. They
        // were cross-checked against an independent FNV-1a/splitmix64 implementation.
        assert_eq!(jitter_seed("", 0), 0x4d25_767f_9dce_13f5);
        let seed = jitter_seed("01HV-firing", 3);
        assert_eq!(seed, 0xd009_335c_9580_6307);
        assert_eq!(
            delay(&Retry::default(), 3, seed),
            Duration::from_nanos(4_623_923_831)
        );
        assert_ne!(jitter_seed("f", 1), jitter_seed("f", 2));
        assert_ne!(jitter_seed("f1", 1), jitter_seed("f2", 1));
    }

    #[test]
    fn validation() {
        Retry::default().validate().unwrap();
        let ok = Retry {
            attempts_max: ATTEMPTS_MAX,
            backoff_initial: DELAY_MAX,
            backoff_max: DELAY_MAX,
            backoff_multiplier: MULTIPLIER_MAX,
            jitter: 1.0,
            timeout: TIMEOUT_MAX,
        };
        ok.validate().unwrap();
        let bad: Vec<(&str, Retry)> = vec![
            (
                "policy.retry.attempts_max",
                Retry {
                    attempts_max: 0,
                    ..Retry::default()
                },
            ),
            (
                "policy.retry.attempts_max",
                Retry {
                    attempts_max: 101,
                    ..Retry::default()
                },
            ),
            (
                "policy.retry.backoff_initial",
                Retry {
                    backoff_initial: Duration::ZERO,
                    ..Retry::default()
                },
            ),
            (
                "policy.retry.backoff_initial",
                Retry {
                    backoff_initial: DELAY_MAX + S(1),
                    ..ok.clone()
                },
            ),
            (
                "policy.retry.backoff_max",
                Retry {
                    backoff_max: Duration::from_millis(999),
                    ..Retry::default()
                },
            ),
            (
                "policy.retry.backoff_max",
                Retry {
                    backoff_max: DELAY_MAX + S(1),
                    ..Retry::default()
                },
            ),
            (
                "policy.retry.backoff_multiplier",
                Retry {
                    backoff_multiplier: 0.5,
                    ..Retry::default()
                },
            ),
            (
                "policy.retry.backoff_multiplier",
                Retry {
                    backoff_multiplier: 10.5,
                    ..Retry::default()
                },
            ),
            (
                "policy.retry.backoff_multiplier",
                Retry {
                    backoff_multiplier: f64::NAN,
                    ..Retry::default()
                },
            ),
            (
                "policy.retry.jitter",
                Retry {
                    jitter: -0.1,
                    ..Retry::default()
                },
            ),
            (
                "policy.retry.jitter",
                Retry {
                    jitter: f64::INFINITY,
                    ..Retry::default()
                },
            ),
            (
                "policy.retry.timeout",
                Retry {
                    timeout: Duration::from_millis(999),
                    ..Retry::default()
                },
            ),
            (
                "policy.retry.timeout",
                Retry {
                    timeout: TIMEOUT_MAX + S(1),
                    ..Retry::default()
                },
            ),
        ];
        for (field, p) in bad {
            let e = p.validate().unwrap_err();
            assert_eq!(e.field, field, "{p:?}");
        }
        assert_eq!(
            Retry {
                attempts_max: 0,
                ..Retry::default()
            }
            .validate()
            .unwrap_err()
            .message,
            "must be between 1 and 100"
        );
    }

    fn valid_policy() -> impl Strategy<Value = Retry> {
        (
            2u32..=ATTEMPTS_MAX,
            1u64..=60_000,
            0u64..=600_000,
            1.0f64..=MULTIPLIER_MAX,
            0.0f64..=1.0,
        )
            .prop_map(|(attempts_max, initial_ms, extra_ms, m, j)| Retry {
                attempts_max,
                backoff_initial: Duration::from_millis(initial_ms),
                backoff_max: Duration::from_millis(initial_ms + extra_ms),
                backoff_multiplier: m,
                jitter: j,
                ..Retry::default()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn backoff_monotone_and_capped(p in valid_policy()) {
            prop_assert!(p.validate().is_ok());
            let mut prev = Duration::ZERO;
            for attempt in 1..=p.attempts_max {
                let b = backoff(&p, attempt);
                prop_assert!(b >= prev, "attempt {}: {:?} < {:?}", attempt, b, prev);
                prop_assert!(b <= p.backoff_max);
                prev = b;
            }
            prop_assert_eq!(backoff(&p, 1), p.backoff_initial);
        }

        #[test]
        fn delay_within_jitter_and_cap(p in valid_policy(), attempt in 1u32..=100, seed in any::<u64>()) {
            let d = delay(&p, attempt, seed);
            prop_assert!(d <= p.backoff_max);
            let base = backoff(&p, attempt).as_nanos() as f64;
            let lo = base * (1.0 - p.jitter);
            let hi = (base * (1.0 + p.jitter)).min(p.backoff_max.as_nanos() as f64);
            let ns = d.as_nanos() as f64;
            prop_assert!(ns >= lo - 1.0 && ns <= hi + 1.0, "{} not in [{}, {}]", ns, lo, hi);
            prop_assert_eq!(d, delay(&p, attempt, seed));
        }

        #[test]
        fn retries_until_exhausted(p in valid_policy(), seed in any::<u64>()) {
            for attempt in 1..p.attempts_max {
                let is_retry = matches!(after_attempt(&p, attempt, Retryable, seed), RetryIn(_));
                prop_assert!(is_retry);
                prop_assert_eq!(after_attempt(&p, attempt, Permanent, seed), DeadLetter);
            }
            prop_assert_eq!(after_attempt(&p, p.attempts_max, Retryable, seed), DeadLetter);
        }
    }
}
