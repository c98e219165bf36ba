//! [`RaftState`] and the keys under which per-region values are stored.

use protobuf::Message;
use raft::eraftpb::HardState;

use crate::{RaftLogError, Result};

/// Key of a region's raft state.
pub(crate) const RAFT_STATE_KEY: &[u8] = b"s";
/// Prefix of user metadata keys, so they never collide with [`RAFT_STATE_KEY`].
const META_PREFIX: u8 = b'm';
const FORMAT_V1: u8 = 1;
const HEADER_LEN: usize = 1 + 8;

/// The persisted raft state of a region.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RaftState {
    /// Term, vote and commit index.
    pub hard_state: HardState,
    /// Index of the last entry appended.
    pub last_index: u64,
}

impl RaftState {
    /// Encodes as a format byte, the big-endian last index, then the protobuf hard state.
    pub fn encode(&self) -> Vec<u8> {
        let hard_state = self
            .hard_state
            .write_to_bytes()
            .expect("encoding a HardState cannot fail");
        let mut buf = Vec::with_capacity(HEADER_LEN + hard_state.len());
        buf.push(FORMAT_V1);
        buf.extend_from_slice(&self.last_index.to_be_bytes());
        buf.extend_from_slice(&hard_state);
        buf
    }

    /// Decodes bytes written by [`RaftState::encode`].
    pub fn decode(bytes: &[u8]) -> Result<RaftState> {
        if bytes.len() < HEADER_LEN || bytes[0] != FORMAT_V1 {
            return Err(RaftLogError::Corruption(format!(
                "bad raft state header: {:?}",
                &bytes[..bytes.len().min(HEADER_LEN)]
            )));
        }
        let last_index = u64::from_be_bytes(bytes[1..HEADER_LEN].try_into().unwrap());
        let hard_state = HardState::parse_from_bytes(&bytes[HEADER_LEN..])
            .map_err(|e| RaftLogError::Corruption(format!("bad hard state: {e}")))?;
        Ok(RaftState {
            hard_state,
            last_index,
        })
    }
}

/// The stored key of user metadata `key`.
pub(crate) fn meta_key(key: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(key.len() + 1);
    stored.push(META_PREFIX);
    stored.extend_from_slice(key);
    stored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut state = RaftState {
            last_index: 42,
            ..Default::default()
        };
        state.hard_state.term = 7;
        state.hard_state.vote = 3;
        state.hard_state.commit = 40;
        assert_eq!(RaftState::decode(&state.encode()).unwrap(), state);
        assert_eq!(
            RaftState::decode(&RaftState::default().encode()).unwrap(),
            RaftState::default()
        );
    }

    #[test]
    fn corrupt() {
        assert!(matches!(
            RaftState::decode(b""),
            Err(RaftLogError::Corruption(_))
        ));
        assert!(matches!(
            RaftState::decode(&[9; 12]),
            Err(RaftLogError::Corruption(_))
        ));
        let mut bytes = RaftState::default().encode();
        bytes.extend_from_slice(&[0xFF, 0xFF]);
        assert!(matches!(
            RaftState::decode(&bytes),
            Err(RaftLogError::Corruption(_))
        ));
    }
}
