//! Stable, non-cryptographic hashes for deterministic choices (retry jitter, spread
//! offsets). Owns only the arithmetic.
//!
//! Their outputs are part of Meridian's behaviour: every node must compute the same
//! jitter and offset for the same input, today and after an upgrade, so these are
//! fixed published algorithms pinned by test vectors. Never replace them with
//! `std::hash::DefaultHasher` (unspecified, may change between Rust releases) and
//! never use them where an adversary chooses the input and collisions matter.

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bits, over `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_extend(FNV_OFFSET, bytes)
}

/// Continue an FNV-1a 64 hash `state` over more `bytes` (hashing `a` then `b` equals
/// hashing `a ++ b`).
pub fn fnv1a64_extend(state: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(state, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// One step of splitmix64 (Steele, Lea, Flood 2014) used as a mixer: a bijection on
/// `u64` whose output bits all depend on all input bits. FNV's low bits are weak, so
/// every FNV value is mixed through this before it becomes a number in a range.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform value in `[0, 1)` from a 64-bit hash: its top 53 bits over 2^53.
pub fn unit_f64(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A value in `[0, n)` from a 64-bit hash (multiply-shift; bias below 2^-64 * n).
/// `n == 0` gives 0.
pub fn below(h: u64, n: u64) -> u64 {
    ((u128::from(h) * u128::from(n)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_reference_vectors() {
        // From the FNV reference test suite (isthe.com/chongo/tech/comp/fnv).
        for (input, expected) in [
            (&b""[..], 0xcbf2_9ce4_8422_2325),
            (b"a", 0xaf63_dc4c_8601_ec8c),
            (b"foobar", 0x8594_4171_f739_67e8),
        ] {
            assert_eq!(fnv1a64(input), expected, "{input:?}");
        }
    }

    #[test]
    fn fnv1a64_extend_concatenates() {
        assert_eq!(fnv1a64_extend(fnv1a64(b"foo"), b"bar"), fnv1a64(b"foobar"));
    }

    #[test]
    fn splitmix64_reference_vectors() {
        // The first outputs of the reference splitmix64 generator seeded with 0 are
        // mix(0 + γ), mix(0 + 2γ): our step adds γ once, so feed it k·γ for k-1.
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(0x9e37_79b9_7f4a_7c15), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn unit_and_below_ranges() {
        assert_eq!(unit_f64(0), 0.0);
        assert!(unit_f64(u64::MAX) < 1.0);
        assert_eq!(below(u64::MAX, 0), 0);
        assert_eq!(below(u64::MAX, 10), 9);
        assert_eq!(below(0, 10), 0);
    }
}
