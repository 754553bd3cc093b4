//! The spread policy: a deterministic per-job offset within a window, so that many
//! jobs on the same schedule (100k jobs at `0 * * * *`) do not all hit their targets
//! at the same instant. Owns the policy and the offset arithmetic; it must not read a
//! clock or draw ambient randomness.
//!
//! What the offset moves: only the *dispatch* instant. A firing keeps the schedule's
//! instant as its `scheduled_at`, and its id derives from that instant, so the id is
//! the same whatever the spread (and changing the spread never re-fires or renames a
//! firing). The run's `due_at` is `scheduled_at + offset`: dispatch waits for it,
//! "never early" holds against it (a spread job also never starts before its
//! schedule's instant, since the offset is non-negative), and lateness and catch-up
//! are measured from it.
//!
//! The offset depends only on the job's uid bytes and the window, through FNV-1a and
//! splitmix64: every node computes the same offset, across restarts and upgrades.

use std::time::Duration;

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};

use super::hash::{below, fnv1a64, splitmix64};
use super::{duration_ms, human};
use crate::core::{FieldError, Timestamp};

/// Longest accepted spread window.
pub const WINDOW_MAX: Duration = Duration::from_secs(24 * 3600);

/// Spread a job's dispatch over a window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Spread {
    /// The offset is in `[0, window)`. Zero (the default) turns spreading off; at
    /// most [`WINDOW_MAX`]. Pick it below the schedule's period, or a job's dispatch
    /// slides past its next firing (allowed: overlap policy then applies).
    #[serde(with = "duration_ms")]
    pub window: Duration,
}

impl Spread {
    /// Check the bounds; names the offending field.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.window > WINDOW_MAX {
            return Err(FieldError::new(
                "policy.spread.window",
                format!("must be at most {}", human(WINDOW_MAX)),
            ));
        }
        Ok(())
    }

    /// This job's offset under this policy (see [`offset`]).
    pub fn offset(&self, job_uid: &[u8; 16]) -> Duration {
        offset(job_uid, self.window)
    }

    /// When a firing scheduled at `scheduled_at` may be dispatched: the run's
    /// `due_at`. Saturates at the largest representable instant.
    pub fn due_at(&self, job_uid: &[u8; 16], scheduled_at: Timestamp) -> Timestamp {
        let off = TimeDelta::from_std(self.offset(job_uid)).unwrap_or(TimeDelta::MAX);
        scheduled_at
            .checked_add_signed(off)
            .unwrap_or(Timestamp::MAX_UTC)
    }
}

/// The offset of the job with uid bytes `job_uid` in `[0, window)`, in whole
/// milliseconds (the unit durations are stored in); zero when the window is under
/// 1 ms. Roughly uniform over the window across uids, fixed for a given uid and
/// window.
pub fn offset(job_uid: &[u8; 16], window: Duration) -> Duration {
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    // FNV alone has weak low bits; the mixer spreads every input bit over the output.
    let h = splitmix64(fnv1a64(job_uid));
    Duration::from_millis(below(h, window_ms))
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;

    use super::*;

    const UID: [u8; 16] = [
        0x67, 0xe5, 0x50, 0x44, 0x10, 0xb1, 0x42, 0x6f, 0x92, 0x47, 0xbb, 0x68, 0x0e, 0x5f, 0xe0,
        0xc8,
    ];

    #[test]
    fn offset_table() {
        assert_eq!(offset(&UID, Duration::ZERO), Duration::ZERO);
        assert_eq!(offset(&UID, Duration::from_micros(999)), Duration::ZERO);
        assert_eq!(offset(&UID, Duration::from_millis(1)), Duration::ZERO);
        assert_eq!(offset(&[0; 16], Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn offset_is_pinned() {
        // Changing these values moves every spread job's dispatch in a running mesh.
        // They were cross-checked against an independent implementation.
        assert_eq!(offset(&UID, Duration::from_secs(3600)), PINNED_UID_1H);
        assert_eq!(offset(&[0; 16], Duration::from_secs(60)), PINNED_ZERO_1MIN);
    }

    const PINNED_UID_1H: Duration = Duration::from_millis(898_534);
    const PINNED_ZERO_1MIN: Duration = Duration::from_millis(15_369);

    #[test]
    fn offsets_spread_over_the_window() {
        // 10,000 sequential-ish uids over a 60 s window, in 60 one-second buckets:
        // every bucket gets a fair share (expected 166.7 each).
        let window = Duration::from_secs(60);
        let mut buckets = [0u32; 60];
        for i in 0u32..10_000 {
            let mut uid = UID;
            uid[12..].copy_from_slice(&i.to_be_bytes());
            buckets[offset(&uid, window).as_secs() as usize] += 1;
        }
        let (lo, hi) = (buckets.iter().min().unwrap(), buckets.iter().max().unwrap());
        assert!(*lo > 110 && *hi < 225, "{buckets:?}");
    }

    #[test]
    fn due_at_adds_the_offset() {
        let s = Spread {
            window: Duration::from_secs(3600),
        };
        let at = Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap();
        let due = s.due_at(&UID, at);
        assert!(due >= at);
        assert_eq!((due - at).to_std().unwrap(), s.offset(&UID));
        assert_eq!(Spread::default().due_at(&UID, at), at);
        assert_eq!(
            s.due_at(&UID, Timestamp::MAX_UTC),
            Timestamp::MAX_UTC,
            "saturates"
        );
    }

    #[test]
    fn validation() {
        Spread::default().validate().unwrap();
        Spread { window: WINDOW_MAX }.validate().unwrap();
        let e = Spread {
            window: WINDOW_MAX + Duration::from_millis(1),
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field, "policy.spread.window");
        assert_eq!(e.message, "must be at most 24 h");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn offset_below_window_and_deterministic(uid in any::<[u8; 16]>(), window_ms in 0u64..=86_400_000) {
            let window = Duration::from_millis(window_ms);
            let o = offset(&uid, window);
            prop_assert!(o < window || window.is_zero());
            prop_assert_eq!(o, offset(&uid, window));
            prop_assert_eq!(o.subsec_nanos() % 1_000_000, 0);
        }
    }
}
