//! A job's policies and the pure decisions they drive: overlap, catch-up, retry and
//! spread. Owns the policy types (with their defaults and validation), the decision
//! functions, the `duration_ms` serde helper and the stable hashes behind every
//! deterministic "random" choice.
//!
//! Everything here is synchronous and deterministic: the current time and any random
//! seed come in as arguments, decisions go out as data for an actor to carry out. It
//! must not do IO, read a clock, spawn tasks or use ambient randomness (no `rand`, no
//! `DefaultHasher`, whose output may change between Rust releases).
//!
//! Layout:
//! - [`overlap`]: what to do when a firing falls due while an earlier run of the same
//!   job is still running (a per-job state machine held by the region supervisor).
//! - [`catchup`]: which late firings run and which are recorded `missed`.
//! - [`retry`]: after a failed attempt, retry when, or end the run how.
//! - [`spread`]: a job's deterministic dispatch offset.
//! - [`region_loss`]: where a firing goes when its home region has no live node.
//! - [`hash`]: FNV-1a and splitmix64, stable across platforms and Rust versions.

pub mod catchup;
pub mod hash;
pub mod overlap;
pub mod region_loss;
pub mod retry;
pub mod spread;

use serde::{Deserialize, Serialize};

use super::FieldError;

pub use catchup::Catchup;
pub use overlap::Overlap;
pub use region_loss::RegionLoss;
pub use retry::Retry;
pub use spread::Spread;

/// All the policies of one job. Every field (and every field of every policy) has a
/// default, so `{}` is a valid, fully defaulted policy.
///
/// Unknown fields are ignored rather than refused: the catalog is read by nodes of
/// different versions during a rolling upgrade, and an older node must still load a
/// job written by a newer one. The API edge, not serde, is where typos are caught.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policies {
    pub overlap: Overlap,
    pub catchup: Catchup,
    pub retry: Retry,
    pub spread: Spread,
    pub region_loss: RegionLoss,
}

impl Policies {
    /// Check every policy; returns the first offending field
    /// (`policy.retry.attempts_max`, ...).
    pub fn validate(&self) -> Result<(), FieldError> {
        self.overlap.validate()?;
        self.catchup.validate()?;
        self.retry.validate()?;
        self.spread.validate()?;
        self.region_loss.validate()
    }
}

/// Serde helper: a `std::time::Duration` as an integer number of milliseconds.
///
/// Use with `#[serde(with = "crate::core::policy::duration_ms")]`. Sub-millisecond
/// parts are truncated on the way out; values beyond `u64::MAX` ms saturate.
pub mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize as whole milliseconds (truncated, saturating at `u64::MAX`).
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        let ms = u64::try_from(value.as_millis()).unwrap_or(u64::MAX);
        serializer.serialize_u64(ms)
    }

    /// Deserialize from a non-negative integer number of milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

/// Render a duration for a validation message: `90 s`, `5 min`, `1500 ms`.
fn human(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0".to_owned()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{} h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{} min", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{ms} ms")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn empty_object_gives_defaults() {
        let p: Policies = serde_json::from_str("{}").unwrap();
        assert_eq!(p, Policies::default());
        assert_eq!(p.overlap, Overlap::Skip);
        assert_eq!(p.catchup.window, Duration::from_secs(3600));
        assert_eq!(p.catchup.max, 100);
        assert!(!p.catchup.coalesce);
        assert_eq!(p.retry.attempts_max, 1);
        assert_eq!(p.retry.backoff_initial, Duration::from_secs(1));
        assert_eq!(p.retry.backoff_max, Duration::from_secs(300));
        assert_eq!(p.retry.backoff_multiplier, 2.0);
        assert_eq!(p.retry.jitter, 0.2);
        assert_eq!(p.retry.timeout, Duration::from_secs(600));
        assert_eq!(p.spread.window, Duration::ZERO);
        p.validate().unwrap();
    }

    #[test]
    fn json_shape_is_stable() {
        let p = Policies::default();
        let v = serde_json::to_value(&p).unwrap();
        let expected = serde_json::json!({
            "overlap": "skip",
            "catchup": {"window": 3_600_000, "max": 100, "coalesce": false},
            "retry": {
                "attempts_max": 1,
                "backoff_initial": 1000,
                "backoff_max": 300_000,
                "backoff_multiplier": 2.0,
                "jitter": 0.2,
                "timeout": 600_000
            },
            "spread": {"window": 0},
            "region_loss": "pause"
        });
        assert_eq!(v, expected);
        let back: Policies = serde_json::from_value(v).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn partial_object_keeps_other_defaults() {
        let p: Policies = serde_json::from_str(
            r#"{"overlap":"buffer_one","retry":{"attempts_max":5},"spread":{"window":60000}}"#,
        )
        .unwrap();
        assert_eq!(p.overlap, Overlap::BufferOne);
        assert_eq!(p.retry.attempts_max, 5);
        assert_eq!(p.retry.backoff_initial, Duration::from_secs(1));
        assert_eq!(p.spread.window, Duration::from_secs(60));
        assert_eq!(p.catchup, Catchup::default());
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let p: Policies =
            serde_json::from_str(r#"{"future_policy":"x","retry":{"future":1}}"#).unwrap();
        assert_eq!(p, Policies::default());
    }

    #[test]
    fn negative_or_fractional_ms_are_refused() {
        assert!(serde_json::from_str::<Spread>(r#"{"window":-1}"#).is_err());
        assert!(serde_json::from_str::<Spread>(r#"{"window":1.5}"#).is_err());
    }

    #[test]
    fn duration_ms_truncates_sub_ms() {
        let s = Spread {
            window: Duration::from_micros(1500),
        };
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"window":1}"#);
    }

    #[test]
    fn validate_reports_first_bad_field() {
        let mut p = Policies::default();
        p.retry.attempts_max = 0;
        p.spread.window = Duration::from_secs(25 * 3600);
        let e = p.validate().unwrap_err();
        assert_eq!(e.field, "policy.retry.attempts_max");
        p.retry.attempts_max = 3;
        assert_eq!(p.validate().unwrap_err().field, "policy.spread.window");
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::ZERO), "0");
        assert_eq!(human(Duration::from_millis(1500)), "1500 ms");
        assert_eq!(human(Duration::from_secs(90)), "90 s");
        assert_eq!(human(Duration::from_secs(300)), "5 min");
        assert_eq!(human(Duration::from_secs(86400)), "24 h");
    }
}
