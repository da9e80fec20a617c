//! Audio: `audio_data` from a client is one encoded audio frame (e.g. 20 ms of Opus), relayed to
//! the other members as `audio_stream` (little-endian):
//!
//! ```text
//! u16 user_id_len, user_id (UTF-8), u64 server_timestamp_ms, u32 seq, audio bytes (the rest)
//! ```
//!
//! `seq` counts one sender's frames on one topic; a gap means frames were dropped for this
//! subscriber (it was behind and its per-sender budget was full).

use bytes::{BufMut, Bytes, BytesMut};

/// The header's fixed part: `u16` length, `u64` timestamp, `u32` seq.
pub const HEADER_FIXED_LEN: usize = 2 + 8 + 4;

/// The header of an `audio_stream` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioStreamHeader<'a> {
    /// The sender's user id (at most 65535 bytes).
    pub user_id: &'a str,
    /// When the server relayed the frame, in milliseconds since the Unix epoch.
    pub server_timestamp_ms: u64,
    /// The sender's frame count on the topic, from 0 (wrapping); a gap means frames dropped.
    pub seq: u32,
}

/// Why an audio frame or `audio_stream` message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudioError {
    /// An `audio_data` payload of 0 bytes.
    #[error("an audio frame must not be empty")]
    Empty,
    /// A frame of `len` bytes, over the limit of `max`.
    #[error("audio frame of {len} bytes, more than the limit of {max}")]
    TooLarge {
        /// The frame's size, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// The sender's user id does not fit the header's `u16` length.
    #[error("a user id longer than 65535 bytes")]
    UserIdTooLong,
    /// A message to decode ends inside its header.
    #[error("message is shorter than its header")]
    Truncated,
    /// The decoded user id is not valid UTF-8.
    #[error("the user id is not UTF-8")]
    UserIdNotUtf8,
}

impl AudioError {
    /// A stable machine-readable reason, for error replies.
    pub fn code(&self) -> &'static str {
        match self {
            AudioError::Empty | AudioError::Truncated | AudioError::UserIdNotUtf8 => "malformed",
            AudioError::TooLarge { .. } | AudioError::UserIdTooLong => "over_limit",
        }
    }
}

/// Checks an `audio_data` payload: 1 to `max` bytes of opaque audio.
pub fn check_audio_data(audio: &[u8], max: usize) -> Result<(), AudioError> {
    match audio.len() {
        0 => Err(AudioError::Empty),
        len if len > max => Err(AudioError::TooLarge { len, max }),
        _ => Ok(()),
    }
}

/// The encoded length of an `audio_stream` message.
pub fn encoded_len(user_id: &str, audio_len: usize) -> usize {
    HEADER_FIXED_LEN + user_id.len() + audio_len
}

/// Appends an `audio_stream` message to `out`.
pub fn encode_into(
    header: &AudioStreamHeader<'_>,
    audio: &[u8],
    out: &mut impl BufMut,
) -> Result<(), AudioError> {
    let len = u16::try_from(header.user_id.len()).map_err(|_| AudioError::UserIdTooLong)?;
    out.put_u16_le(len);
    out.put_slice(header.user_id.as_bytes());
    out.put_u64_le(header.server_timestamp_ms);
    out.put_u32_le(header.seq);
    out.put_slice(audio);
    Ok(())
}

/// An `audio_stream` message in one exactly sized buffer.
pub fn encode(header: &AudioStreamHeader<'_>, audio: &[u8]) -> Result<Bytes, AudioError> {
    let mut out = BytesMut::with_capacity(encoded_len(header.user_id, audio.len()));
    encode_into(header, audio, &mut out)?;
    Ok(out.freeze())
}

/// Splits an `audio_stream` message into its header and audio bytes (no copy).
pub fn decode(msg: &[u8]) -> Result<(AudioStreamHeader<'_>, &[u8]), AudioError> {
    let len_bytes = msg.get(..2).ok_or(AudioError::Truncated)?;
    let id_len = usize::from(u16::from_le_bytes([len_bytes[0], len_bytes[1]]));
    let id = msg.get(2..2 + id_len).ok_or(AudioError::Truncated)?;
    let at = 2 + id_len;
    let fixed = msg.get(at..at + 12).ok_or(AudioError::Truncated)?;
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&fixed[..8]);
    let mut seq = [0u8; 4];
    seq.copy_from_slice(&fixed[8..]);
    let header = AudioStreamHeader {
        user_id: std::str::from_utf8(id).map_err(|_| AudioError::UserIdNotUtf8)?,
        server_timestamp_ms: u64::from_le_bytes(ts),
        seq: u32::from_le_bytes(seq),
    };
    Ok((header, &msg[at + 12..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_bytes() {
        let h = AudioStreamHeader {
            user_id: "ada",
            server_timestamp_ms: 0x0102030405060708,
            seq: 7,
        };
        let msg = encode(&h, &[0xf0, 0x0d]).unwrap();
        assert_eq!(
            &msg[..],
            &[3, 0, b'a', b'd', b'a', 8, 7, 6, 5, 4, 3, 2, 1, 7, 0, 0, 0, 0xf0, 0x0d][..]
        );
        assert_eq!(decode(&msg).unwrap(), (h, &[0xf0, 0x0d][..]));
    }

    #[test]
    fn checks() {
        assert_eq!(check_audio_data(&[], 10), Err(AudioError::Empty));
        assert_eq!(
            check_audio_data(&[0; 11], 10),
            Err(AudioError::TooLarge { len: 11, max: 10 })
        );
        assert_eq!(check_audio_data(&[0; 10], 10), Ok(()));
        assert_eq!(decode(&[5, 0, b'a']), Err(AudioError::Truncated));
        assert_eq!(
            decode(&[1, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(AudioError::UserIdNotUtf8)
        );
        let long = "x".repeat(70_000);
        let h = AudioStreamHeader {
            user_id: &long,
            server_timestamp_ms: 0,
            seq: 0,
        };
        assert_eq!(encode(&h, &[1]), Err(AudioError::UserIdTooLong));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn round_trips(user in ".{0,40}", ts in any::<u64>(), seq in any::<u32>(),
                       audio in proptest::collection::vec(any::<u8>(), 0..200)) {
            let h = AudioStreamHeader { user_id: &user, server_timestamp_ms: ts, seq };
            let msg = encode(&h, &audio).unwrap();
            prop_assert_eq!(msg.len(), encoded_len(&user, audio.len()));
            let (h2, a2) = decode(&msg).unwrap();
            prop_assert_eq!(h2, h);
            prop_assert_eq!(a2, &audio[..]);
        }
    }
}
