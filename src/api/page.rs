//! Pagination: page sizes and opaque, tamper-evident page tokens.
//!
//! A token is `base64url(payload || HMAC-SHA256(key, kind || scope || payload))`. The
//! payload is a cursor (`(create_time, name)` for jobs, `(scheduled_at, firing id)` for
//! runs); the scope is what the listing was of (the parent, and for runs the job's
//! uid), so a token cannot be edited, nor replayed against another listing, nor
//! against a job deleted and created again under the same name. The key is the node's
//! page key, persisted with its data, so tokens survive restarts.
//!
//! Must not read the store: it only encodes and checks cursors.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::DateTime;
use ring::hmac;
use uuid::Uuid;

use crate::core::ids::{FiringId, JobName};
use crate::core::{FieldError, Timestamp};

/// Page size when the request gives none (or 0).
pub const PAGE_SIZE_DEFAULT: usize = 50;
/// Largest page; larger requests are coerced down to it (AIP-158).
pub const PAGE_SIZE_MAX: usize = 1000;
/// Encoded bytes of the items of one page at most: a page ends early rather than
/// exceed it, below the 4 MiB most gRPC clients accept by default.
pub const PAGE_BYTES_MAX: usize = 3 * 1024 * 1024;
/// Longest token accepted: cursors are small, anything longer is not ours.
const TOKEN_BYTES_MAX: usize = 1024;
/// Format version, first byte of every payload.
const VERSION: u8 = 1;
const KIND_JOBS: u8 = b'j';
const KIND_RUNS: u8 = b'r';
const MAC_LEN: usize = 32;

/// The page size of a request: default when 0, coerced to the maximum, refused when
/// negative.
pub fn page_size(requested: i32) -> Result<usize, FieldError> {
    match requested {
        0 => Ok(PAGE_SIZE_DEFAULT),
        n if n < 0 => Err(FieldError::new("page_size", "must not be negative")),
        n => Ok((n as usize).min(PAGE_SIZE_MAX)),
    }
}

/// Signs and checks page tokens with one node key.
pub struct Tokens {
    key: hmac::Key,
}

fn invalid() -> FieldError {
    FieldError::new(
        "page_token",
        "is not a page token this server issued for this listing",
    )
}

fn ns(t: Timestamp) -> i64 {
    t.timestamp_nanos_opt()
        .expect("stored instants are within 1677..2262")
}

impl Tokens {
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    fn mac_input(kind: u8, scope: &str, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(1 + 8 + scope.len() + payload.len());
        m.push(kind);
        // Length-prefixed so that (scope, payload) pairs cannot be re-split.
        m.extend_from_slice(&(scope.len() as u64).to_be_bytes());
        m.extend_from_slice(scope.as_bytes());
        m.extend_from_slice(payload);
        m
    }

    fn seal(&self, kind: u8, scope: &str, payload: Vec<u8>) -> String {
        let tag = hmac::sign(&self.key, &Self::mac_input(kind, scope, &payload));
        let mut bytes = payload;
        bytes.extend_from_slice(tag.as_ref());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The payload of `token` if this key sealed it for (`kind`, `scope`).
    fn open(&self, kind: u8, scope: &str, token: &str) -> Result<Vec<u8>, FieldError> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        if bytes.len() < MAC_LEN + 1 {
            return Err(invalid());
        }
        let (payload, tag) = bytes.split_at(bytes.len() - MAC_LEN);
        // Constant-time comparison inside `verify`.
        hmac::verify(&self.key, &Self::mac_input(kind, scope, payload), tag)
            .map_err(|_| invalid())?;
        if payload[0] != VERSION {
            return Err(invalid());
        }
        Ok(payload[1..].to_vec())
    }

    /// The token continuing a job listing of `parent` after `cursor`.
    pub fn jobs(&self, parent: &str, cursor: &(Timestamp, JobName)) -> String {
        let mut p = vec![VERSION];
        p.extend_from_slice(&ns(cursor.0).to_be_bytes());
        p.extend_from_slice(cursor.1.to_string().as_bytes());
        self.seal(KIND_JOBS, parent, p)
    }

    /// The cursor of a job listing token; `None` for the empty (first page) token.
    pub fn jobs_cursor(
        &self,
        parent: &str,
        token: &str,
    ) -> Result<Option<(Timestamp, JobName)>, FieldError> {
        if token.is_empty() {
            return Ok(None);
        }
        let p = self.open(KIND_JOBS, parent, token)?;
        if p.len() < 8 {
            return Err(invalid());
        }
        let t = i64::from_be_bytes(p[..8].try_into().expect("8 bytes"));
        let name = std::str::from_utf8(&p[8..]).map_err(|_| invalid())?;
        let name = JobName::parse("page_token", name).map_err(|_| invalid())?;
        Ok(Some((DateTime::from_timestamp_nanos(t), name)))
    }

    /// The token continuing a run listing of job `parent` (uid `job_uid`) after
    /// `cursor`.
    pub fn runs(&self, parent: &str, job_uid: Uuid, cursor: (Timestamp, FiringId)) -> String {
        let mut p = vec![VERSION];
        p.extend_from_slice(&ns(cursor.0).to_be_bytes());
        p.extend_from_slice(cursor.1.0.as_bytes());
        self.seal(KIND_RUNS, &format!("{parent}#{job_uid}"), p)
    }

    /// The cursor of a run listing token; `None` for the empty (first page) token.
    pub fn runs_cursor(
        &self,
        parent: &str,
        job_uid: Uuid,
        token: &str,
    ) -> Result<Option<(Timestamp, FiringId)>, FieldError> {
        if token.is_empty() {
            return Ok(None);
        }
        let p = self.open(KIND_RUNS, &format!("{parent}#{job_uid}"), token)?;
        if p.len() != 8 + 16 {
            return Err(invalid());
        }
        let t = i64::from_be_bytes(p[..8].try_into().expect("8 bytes"));
        let f = Uuid::from_bytes(p[8..].try_into().expect("16 bytes"));
        Ok(Some((DateTime::from_timestamp_nanos(t), FiringId(f))))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at() -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2026, 3, 8, 7, 0, 0).unwrap()
    }

    #[test]
    fn jobs_round_trip_and_bind_to_parent() {
        let t = Tokens::new(&[7; 32]);
        let c = (at(), JobName::new("local", "nightly"));
        let tok = t.jobs("regions/local", &c);
        assert_eq!(t.jobs_cursor("regions/local", &tok).unwrap(), Some(c));
        assert!(t.jobs_cursor("regions/-", &tok).is_err());
        assert!(
            Tokens::new(&[8; 32])
                .jobs_cursor("regions/local", &tok)
                .is_err()
        );
        assert_eq!(t.jobs_cursor("regions/local", "").unwrap(), None);
    }

    #[test]
    fn tampering_is_detected() {
        let t = Tokens::new(&[7; 32]);
        let tok = t.jobs("regions/-", &(at(), JobName::new("local", "a")));
        let mut bytes = URL_SAFE_NO_PAD.decode(&tok).unwrap();
        bytes[3] ^= 1;
        let bad = URL_SAFE_NO_PAD.encode(bytes);
        let e = t.jobs_cursor("regions/-", &bad).unwrap_err();
        assert_eq!(e.field, "page_token");
        for junk in ["x", "!!!", "AAAA", &"A".repeat(5000)] {
            assert!(t.jobs_cursor("regions/-", junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn runs_round_trip_and_bind_to_the_job() {
        let t = Tokens::new(&[1; 32]);
        let uid = Uuid::from_u128(5);
        let c = (at(), FiringId(Uuid::from_u128(9)));
        let tok = t.runs("regions/local/jobs/a", uid, c);
        assert_eq!(
            t.runs_cursor("regions/local/jobs/a", uid, &tok).unwrap(),
            Some(c)
        );
        assert!(
            t.runs_cursor("regions/local/jobs/a", Uuid::from_u128(6), &tok)
                .is_err()
        );
        // A runs token is not a jobs token.
        assert!(t.jobs_cursor("regions/local/jobs/a", &tok).is_err());
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0).unwrap(), PAGE_SIZE_DEFAULT);
        assert_eq!(page_size(7).unwrap(), 7);
        assert_eq!(page_size(5000).unwrap(), PAGE_SIZE_MAX);
        assert_eq!(page_size(-1).unwrap_err().field, "page_size");
    }
}
