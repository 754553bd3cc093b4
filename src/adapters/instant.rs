//! How adapters write an instant so that the storage's own order is time order:
//! nanoseconds since the epoch, saturating outside 1677..2262 (only range bounds go
//! there), with the sign bit flipped so unsigned and byte order follow time. Every
//! store (redb keys, etcd keys and values, Redis members) uses this one encoding.
//! Must not hold anything store-specific.

use crate::core::Timestamp;

/// Nanoseconds since the epoch, saturating at the ends of the i64 range.
pub fn saturating_ns(t: Timestamp) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// `saturating_ns` with the sign bit flipped: unsigned order is time order.
pub fn biased_ns(t: Timestamp) -> u64 {
    (saturating_ns(t) as u64) ^ (1 << 63)
}

/// The inverse of `biased_ns`.
pub fn from_biased_ns(raw: u64) -> Timestamp {
    Timestamp::from_timestamp_nanos((raw ^ (1 << 63)) as i64)
}

/// 16 hex digits of `biased_ns`: string and byte order are time order.
pub fn sortable_hex(t: Timestamp) -> String {
    format!("{:016x}", biased_ns(t))
}

/// The inverse of `sortable_hex`; None when `s` is not 16 hex digits.
pub fn parse_sortable_hex(s: &[u8]) -> Option<Timestamp> {
    let text = std::str::from_utf8(s).ok()?;
    (text.len() == 16)
        .then(|| u64::from_str_radix(text, 16).ok())
        .flatten()
        .map(from_biased_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_like_time_and_round_trips() {
        let ts = [
            Timestamp::from_timestamp_nanos(i64::MIN + 1),
            Timestamp::from_timestamp_nanos(-1),
            Timestamp::from_timestamp_nanos(0),
            Timestamp::from_timestamp_nanos(1),
            Timestamp::from_timestamp_nanos(1_700_000_000_000_000_000),
        ];
        let hex: Vec<String> = ts.iter().map(|t| sortable_hex(*t)).collect();
        let mut sorted = hex.clone();
        sorted.sort();
        assert_eq!(hex, sorted);
        for (t, h) in ts.iter().zip(&hex) {
            assert_eq!(parse_sortable_hex(h.as_bytes()), Some(*t));
            assert_eq!(from_biased_ns(biased_ns(*t)), *t);
        }
        assert_eq!(saturating_ns(Timestamp::MAX_UTC), i64::MAX);
        assert_eq!(saturating_ns(Timestamp::MIN_UTC), i64::MIN);
        assert_eq!(parse_sortable_hex(b"xyz"), None);
    }
}
