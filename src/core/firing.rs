//! Firing ids: derived from (job uid, scheduled UTC instant, trigger), so every node that
//! ever computes a firing gets the same id. The id is the idempotency key sent to
//! targets. This module must not depend on anything but the inputs it is given.

use uuid::Uuid;

use super::Timestamp;
use super::ids::FiringId;

/// What caused a firing; part of its identity, so a manual trigger at the same instant
/// as a scheduled firing is a different firing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    Schedule,
    /// A manual trigger; `nonce` distinguishes triggers at the same instant (the
    /// request id hashed by the caller, or a counter).
    Manual {
        nonce: u64,
    },
}

/// The firing id of `job_uid` at `scheduled_at`: a UUIDv5 in the job's namespace.
pub fn firing_id(job_uid: Uuid, scheduled_at: Timestamp, cause: Cause) -> FiringId {
    let nanos = scheduled_at
        .timestamp_nanos_opt()
        .expect("scheduled instants are within 1677..2262");
    let name = match cause {
        Cause::Schedule => format!("schedule:{nanos}"),
        Cause::Manual { nonce } => format!("manual:{nanos}:{nonce}"),
    };
    FiringId(Uuid::new_v5(&job_uid, name.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn deterministic_and_distinct() {
        let job = Uuid::from_u128(42);
        let t = chrono::Utc.with_ymd_and_hms(2026, 3, 8, 7, 0, 0).unwrap();
        let a = firing_id(job, t, Cause::Schedule);
        assert_eq!(a, firing_id(job, t, Cause::Schedule));
        assert_ne!(a, firing_id(Uuid::from_u128(43), t, Cause::Schedule));
        assert_ne!(
            a,
            firing_id(job, t + chrono::Duration::nanoseconds(1), Cause::Schedule)
        );
        assert_ne!(a, firing_id(job, t, Cause::Manual { nonce: 0 }));
        // Stable across versions: the id is part of the public contract (targets dedupe on it).
        assert_eq!(
            a.to_string(),
            firing_id(job, t, Cause::Schedule).0.to_string()
        );
    }
}
