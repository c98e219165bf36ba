//! Memcomparable byte encoding, byte-identical to TiKV's `codec::bytes::encode_bytes`.
//!
//! The key is cut into groups of [`GROUP_SIZE`] bytes; the last group is padded with zeros.
//! Every group is followed by a marker byte `0xFF - pad_count`. A key whose length is a multiple
//! of 8 (including the empty key) ends with an all-padding group `0 x 8, 0xF7`. Comparing two
//! encodings byte-wise gives the same order as comparing the raw keys.

use crate::{CodecError, Result};

/// Bytes of key data per group.
pub const GROUP_SIZE: usize = 8;
/// Bytes per encoded group: data plus the marker byte.
pub const ENCODED_GROUP_SIZE: usize = GROUP_SIZE + 1;
/// Marker of a full group (no padding).
pub const MARKER: u8 = 0xFF;
const PADDING: [u8; GROUP_SIZE] = [0; GROUP_SIZE];

/// Length of the encoding of a key of `len` bytes.
pub fn encoded_len(len: usize) -> usize {
    (len / GROUP_SIZE + 1) * ENCODED_GROUP_SIZE
}

/// Encodes `key` into a new buffer.
pub fn encode_bytes(key: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(encoded_len(key.len()));
    encode_bytes_to(&mut buf, key);
    buf
}

/// Appends the encoding of `key` to `buf`.
pub fn encode_bytes_to(buf: &mut Vec<u8>, key: &[u8]) {
    buf.reserve(encoded_len(key.len()));
    let mut chunks = key.chunks_exact(GROUP_SIZE);
    for group in &mut chunks {
        buf.extend_from_slice(group);
        buf.push(MARKER);
    }
    // The remainder is shorter than a group (possibly empty): it always yields one padded group,
    // which is what terminates the encoding.
    let rest = chunks.remainder();
    let pad_count = GROUP_SIZE - rest.len();
    buf.extend_from_slice(rest);
    buf.extend_from_slice(&PADDING[..pad_count]);
    buf.push(MARKER - pad_count as u8);
}

/// Decodes one encoded key from the front of `input`.
///
/// Returns the key and the number of input bytes consumed; bytes after the terminating group
/// (e.g. an MVCC timestamp) are left alone.
pub fn decode_bytes(input: &[u8]) -> Result<(Vec<u8>, usize)> {
    let mut key = Vec::with_capacity(input.len() / ENCODED_GROUP_SIZE * GROUP_SIZE);
    let mut offset = 0;
    loop {
        let group =
            input
                .get(offset..offset + ENCODED_GROUP_SIZE)
                .ok_or(CodecError::Truncated {
                    needed_bytes: ENCODED_GROUP_SIZE,
                    available_bytes: input.len() - offset,
                })?;
        let marker = group[GROUP_SIZE];
        let pad_count = usize::from(MARKER - marker);
        if pad_count > GROUP_SIZE {
            return Err(CodecError::BadMarker {
                marker,
                offset: offset + GROUP_SIZE,
            });
        }
        let data_len = GROUP_SIZE - pad_count;
        key.extend_from_slice(&group[..data_len]);
        if pad_count != 0 {
            if group[data_len..GROUP_SIZE] != PADDING[..pad_count] {
                return Err(CodecError::BadPadding { offset });
            }
            return Ok((key, offset + ENCODED_GROUP_SIZE));
        }
        offset += ENCODED_GROUP_SIZE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_vectors() {
        assert_eq!(encode_bytes(b""), vec![0, 0, 0, 0, 0, 0, 0, 0, 0xF7]);
        assert_eq!(
            encode_bytes(b"abc"),
            vec![b'a', b'b', b'c', 0, 0, 0, 0, 0, 0xFA]
        );
        let mut expected = b"12345678".to_vec();
        expected.push(0xFF);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xF7]);
        assert_eq!(encode_bytes(b"12345678"), expected);
        let mut expected = b"123456789".to_vec();
        expected.insert(8, 0xFF);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0xF8]);
        assert_eq!(encode_bytes(b"123456789"), expected);
        // TiKV's own test vector.
        assert_eq!(
            encode_bytes(&[1, 2, 3, 0]),
            vec![1, 2, 3, 0, 0, 0, 0, 0, 0xFB]
        );
    }

    #[test]
    fn encoded_len_matches() {
        for len in 0..40 {
            assert_eq!(encode_bytes(&vec![7; len]).len(), encoded_len(len));
        }
    }

    #[test]
    fn decode_leaves_suffix() {
        let mut buf = encode_bytes(b"hello world");
        let consumed = buf.len();
        buf.extend_from_slice(&[1, 2, 3]);
        assert_eq!(
            decode_bytes(&buf).unwrap(),
            (b"hello world".to_vec(), consumed)
        );
    }

    #[test]
    fn decode_errors() {
        assert_eq!(
            decode_bytes(&[]),
            Err(CodecError::Truncated {
                needed_bytes: 9,
                available_bytes: 0
            })
        );
        assert!(matches!(
            decode_bytes(&[1, 2, 3, 4, 5, 6, 7, 8, 0xFF, 0]),
            Err(CodecError::Truncated { .. })
        ));
        assert_eq!(
            decode_bytes(&[0, 0, 0, 0, 0, 0, 0, 0, 0xF6]),
            Err(CodecError::BadMarker {
                marker: 0xF6,
                offset: 8
            })
        );
        assert_eq!(
            decode_bytes(&[b'a', 0, 1, 0, 0, 0, 0, 0, 0xF9]),
            Err(CodecError::BadPadding { offset: 0 })
        );
    }

    proptest! {
        #[test]
        fn round_trip(key in proptest::collection::vec(any::<u8>(), 0..64)) {
            let encoded = encode_bytes(&key);
            prop_assert_eq!(decode_bytes(&encoded).unwrap(), (key, encoded.len()));
        }

        #[test]
        fn order_preserved(
            a in proptest::collection::vec(any::<u8>(), 0..40),
            b in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            prop_assert_eq!(a.cmp(&b), encode_bytes(&a).cmp(&encode_bytes(&b)));
        }

        #[test]
        fn order_preserved_with_shared_prefixes(
            a in proptest::collection::vec(0u8..3, 0..20),
            b in proptest::collection::vec(0u8..3, 0..20),
        ) {
            // A tiny alphabet makes prefixes, equal keys and zero bytes common.
            prop_assert_eq!(a.cmp(&b), encode_bytes(&a).cmp(&encode_bytes(&b)));
        }

        #[test]
        fn garbage_never_panics(input in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok((key, consumed)) = decode_bytes(&input) {
                prop_assert_eq!(encode_bytes(&key), input[..consumed].to_vec());
            }
        }
    }
}
