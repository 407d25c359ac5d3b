//! Small helpers several modules share (clock, hex, a stable hash). Nothing here depends on
//! another module of the crate, so any module may use it without creating an import cycle.

// The clock and hex are the cache crate's (one copy in the workspace; the gateway depends on it).
pub use reasoning_cache::util::{hex, now_unix};

/// FNV-1a: stable across processes and versions (unlike `DefaultHasher`), so stickiness and
/// anything else hashed survives restarts.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_is_the_published_function() {
        // Test vectors from the FNV reference (draft-eastlake-fnv): "" and "a".
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn hex_is_lower_case_and_zero_padded() {
        assert_eq!(hex(&[0, 0x0f, 0xab]), "000fab");
    }
}
