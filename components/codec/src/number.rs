//! Fixed-width integer codecs whose byte order matches numeric order.
//!
//! Ascending: big-endian. Descending: big-endian of `!v`, so larger values sort first (used for
//! MVCC timestamps, where the newest version must come first).

use crate::{CodecError, Result};

/// Bytes in an encoded `u64`.
pub const U64_SIZE: usize = 8;

/// Appends `v` as 8 big-endian bytes.
pub fn encode_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_be_bytes());
}

/// Appends `!v` as 8 big-endian bytes, so that larger values sort first.
pub fn encode_u64_desc(buf: &mut Vec<u8>, v: u64) {
    encode_u64(buf, !v);
}

/// Decodes a `u64` written by [`encode_u64`] from the first 8 bytes of `input`.
pub fn decode_u64(input: &[u8]) -> Result<u64> {
    let bytes: [u8; U64_SIZE] = input
        .get(..U64_SIZE)
        .and_then(|b| b.try_into().ok())
        .ok_or(CodecError::Truncated {
            needed_bytes: U64_SIZE,
            available_bytes: input.len(),
        })?;
    Ok(u64::from_be_bytes(bytes))
}

/// Decodes a `u64` written by [`encode_u64_desc`] from the first 8 bytes of `input`.
pub fn decode_u64_desc(input: &[u8]) -> Result<u64> {
    decode_u64(input).map(|v| !v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_vectors() {
        let mut buf = vec![];
        encode_u64(&mut buf, 0x0102_0304_0506_0708);
        assert_eq!(buf, [1, 2, 3, 4, 5, 6, 7, 8]);
        buf.clear();
        encode_u64_desc(&mut buf, 0);
        assert_eq!(buf, [0xFF; 8]);
    }

    #[test]
    fn truncated() {
        assert_eq!(
            decode_u64(&[1, 2, 3]),
            Err(CodecError::Truncated {
                needed_bytes: 8,
                available_bytes: 3
            })
        );
        assert!(decode_u64_desc(&[]).is_err());
    }

    proptest! {
        #[test]
        fn round_trip_and_order(a in any::<u64>(), b in any::<u64>()) {
            let (mut ea, mut eb, mut da, mut db) = (vec![], vec![], vec![], vec![]);
            encode_u64(&mut ea, a);
            encode_u64(&mut eb, b);
            encode_u64_desc(&mut da, a);
            encode_u64_desc(&mut db, b);
            prop_assert_eq!(decode_u64(&ea).unwrap(), a);
            prop_assert_eq!(decode_u64_desc(&da).unwrap(), a);
            prop_assert_eq!(a.cmp(&b), ea.cmp(&eb));
            prop_assert_eq!(b.cmp(&a), da.cmp(&db));
        }
    }
}
