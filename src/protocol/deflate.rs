//! permessage-deflate (RFC 7692): the negotiation, and compressing or inflating whole messages.
//!
//! The server always answers `server_no_context_takeover; client_no_context_takeover`, so every
//! message is compressed on its own. That is what lets a broadcast be compressed **once** and the
//! same frame be shared by every subscriber that negotiated the same window, and it means a
//! connection holds no compression state: the thread's (shard's) compressor and decompressor are
//! reset and reused message after message, so an idle connection costs nothing for compression.
//! Inflating is bounded: output past the message size limit stops it (no decompression bomb).

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::cell::RefCell;

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";

/// What a connection agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The LZ77 window the server's messages may use (`server_max_window_bits`), 9..=15.
    pub server_window_bits: u8,
}

/// How the server compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Messages with a shorter payload go uncompressed.
    pub min_bytes: usize,
    /// zlib level, 0..=9.
    pub level: u32,
}

/// The first offer in a `Sec-WebSocket-Extensions` header the server accepts, and the value of
/// the response header accepting it. Offers are tried in the client's order; one with a
/// parameter the server does not know, a repeated parameter, a bad value, or
/// `server_max_window_bits=8` (zlib cannot write an 8-bit window) is declined.
pub fn negotiate(offers: &str) -> Option<(Agreed, String)> {
    offers.split(',').find_map(accept_offer)
}

fn accept_offer(offer: &str) -> Option<(Agreed, String)> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(EXTENSION) {
        return None;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut server_bits: Option<u8> = None;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        match (name.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("server_max_window_bits", Some(v)) => match window_bits(v)? {
                8 => return None,
                bits => server_bits = Some(bits),
            },
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(v)) => {
                window_bits(v)?;
            }
            _ => return None,
        }
        seen.push(name);
    }
    let mut response =
        format!("{EXTENSION}; server_no_context_takeover; client_no_context_takeover");
    if let Some(bits) = server_bits {
        response.push_str(&format!("; server_max_window_bits={bits}"));
    }
    Some((
        Agreed {
            server_window_bits: server_bits.unwrap_or(15),
        },
        response,
    ))
}

fn window_bits(v: &str) -> Option<u8> {
    // RFC 7692 §7.1.2: 1*DIGIT without leading zeros, 8..=15.
    if v.is_empty() || v.len() > 2 || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = v.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

thread_local! {
    /// One compressor per (window bits, level) used on this thread, reset per message.
    static COMPRESSORS: RefCell<Vec<(u8, u32, Compress)>> = const { RefCell::new(Vec::new()) };
    /// The thread's decompressor (a 32 KiB window accepts every client window), reset per message.
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// The empty stored block a sync flush ends with; RFC 7692 §7.2.1 strips it.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// An empty final block (fixed Huffman, end of block), fed after the tail: a message that ends
/// on a block boundary, as a sync-flushed one does, then ends the stream; one cut off inside a
/// block does not, and is refused.
const FINAL: [u8; 2] = [0x03, 0x00];

/// Compresses one message's payload (no context kept), as RFC 7692 §7.2.1 frames it.
pub fn compress(payload: &[u8], level: u32, window_bits: u8) -> Vec<u8> {
    COMPRESSORS.with(|cell| {
        let mut compressors = cell.borrow_mut();
        let i = match compressors
            .iter()
            .position(|(b, l, _)| *b == window_bits && *l == level)
        {
            Some(i) => i,
            None => {
                let c = Compress::new_with_window_bits(
                    Compression::new(level.min(9)),
                    false,
                    window_bits,
                );
                compressors.push((window_bits, level, c));
                compressors.len() - 1
            }
        };
        let c = &mut compressors[i].2;
        c.reset();
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        let mut consumed = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            let before = c.total_in();
            c.compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync)
                .expect("deflate into a growing buffer cannot fail");
            consumed += (c.total_in() - before) as usize;
            // Done when all input is in and the flush did not fill the buffer (zlib: more than
            // six bytes to spare, or a repeated flush marker may follow).
            if consumed == payload.len() && out.capacity() - out.len() > 6 {
                break;
            }
        }
        debug_assert!(
            out.ends_with(&TAIL),
            "a sync flush ends with its empty block"
        );
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        out
    })
}

/// The same data frame, compressed: RSV1 set, the payload deflated. `None` when `frame` is not a
/// whole unmasked text or binary frame, its payload is under `params.min_bytes`, or compressing
/// it would not make it smaller (it then goes as it is: compression is per message).
pub fn deflate_frame(frame: &[u8], params: &Params, window_bits: u8) -> Option<Bytes> {
    let (&b0, rest) = frame.split_first()?;
    let (&b1, rest) = rest.split_first()?;
    let opcode = b0 & 0x0f;
    if b0 & 0xf0 != 0x80 || !(opcode == 1 || opcode == 2) || b1 & 0x80 != 0 {
        return None;
    }
    let (len, payload) = match b1 & 0x7f {
        126 => (
            u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize,
            &rest[2..],
        ),
        127 => (
            u64::from_be_bytes(rest.get(..8)?.try_into().ok()?) as usize,
            &rest[8..],
        ),
        n => (n as usize, rest),
    };
    if payload.len() != len || len < params.min_bytes.max(1) {
        return None;
    }
    let compressed = compress(payload, params.level, window_bits);
    if compressed.len() >= len {
        return None;
    }
    let mut out = BytesMut::with_capacity(compressed.len() + 10);
    out.put_u8(0xc0 | opcode); // FIN + RSV1
    match compressed.len() {
        n @ 0..=125 => out.put_u8(n as u8),
        n @ 126..=0xffff => {
            out.put_u8(126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(127);
            out.put_u64(n as u64);
        }
    }
    out.extend_from_slice(&compressed);
    Some(out.freeze())
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// It inflates to more than the message size limit.
    #[error("inflated message over the size limit")]
    TooBig,
    /// Not a valid DEFLATE stream.
    #[error("invalid compressed data")]
    Corrupt,
}

/// Inflates one message (no context kept) into at most `max` bytes. Output is taken a block at
/// a time, so memory grows with what is produced and stops one block past the limit.
pub fn inflate(data: &[u8], max: usize) -> Result<Bytes, InflateError> {
    INFLATER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = slot.get_or_insert_with(|| Decompress::new(false));
        d.reset(false);
        let mut out = Vec::new();
        let mut block = [0u8; 16 * 1024];
        let mut ended = false;
        'inputs: for input in [data, &TAIL[..], &FINAL[..]] {
            let mut pos = 0;
            loop {
                let (before_in, before_out) = (d.total_in(), d.total_out());
                let status = d
                    .decompress(&input[pos..], &mut block, FlushDecompress::None)
                    .map_err(|_| InflateError::Corrupt)?;
                let read = (d.total_in() - before_in) as usize;
                let wrote = (d.total_out() - before_out) as usize;
                pos += read;
                if out.len() + wrote > max {
                    return Err(InflateError::TooBig);
                }
                out.extend_from_slice(&block[..wrote]);
                if status == Status::StreamEnd {
                    // A final block (the sender's own BFINAL, or ours): the message ends there.
                    ended = true;
                    break 'inputs;
                }
                if pos == input.len() && wrote < block.len() {
                    break; // this input is in and nothing more is held back
                }
                if read == 0 && wrote == 0 {
                    return Err(InflateError::Corrupt);
                }
            }
        }
        if !ended {
            return Err(InflateError::Corrupt);
        }
        Ok(Bytes::from(out))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn negotiation_accepts_what_browsers_and_ws_offer() {
        let (agreed, response) = negotiate("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(agreed.server_window_bits, 15);
        assert_eq!(
            response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        let (agreed, response) = negotiate(
            "permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=\"10\"; client_no_context_takeover",
        )
        .unwrap();
        assert_eq!(agreed.server_window_bits, 10, "the 8-bit offer is declined");
        assert!(response.ends_with("server_max_window_bits=10"));
        for declined in [
            "x-webkit-deflate-frame",
            "permessage-deflate; foo",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
        ] {
            assert_eq!(negotiate(declined), None, "{declined}");
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let packed = compress(&zeros, 9, 15);
        assert!(packed.len() < 20 << 10, "{} bytes", packed.len());
        assert_eq!(inflate(&packed, 1 << 20), Err(InflateError::TooBig));
        assert_eq!(inflate(&packed, 10 << 20).unwrap().len(), 10 << 20);
        assert_eq!(inflate(b"\xff\xff\xff", 100), Err(InflateError::Corrupt));
        // Cut off inside a block: refused, not taken as a shorter message.
        let text = compress("a message cut short ".repeat(50).as_bytes(), 6, 15);
        assert_eq!(
            inflate(&text[..text.len() / 2], 1 << 20),
            Err(InflateError::Corrupt)
        );
        // An empty message is an empty stored block's remainder (RFC 7692 §7.2.3.6).
        assert_eq!(inflate(&[0x00], 100).unwrap().len(), 0);
    }

    #[test]
    fn frames_under_the_minimum_or_not_data_stay_as_they_are() {
        let params = Params {
            min_bytes: 64,
            level: 1,
        };
        // Server frames by hand (FIN + opcode, unmasked length).
        let frame = |opcode: u8, payload: &[u8]| {
            let mut f = vec![0x80 | opcode];
            if payload.len() < 126 {
                f.push(payload.len() as u8);
            } else {
                f.push(126);
                f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            }
            f.extend_from_slice(payload);
            f
        };
        let small = frame(1, b"hi");
        assert_eq!(deflate_frame(&small, &params, 15), None);
        let big_text = "hello ".repeat(100);
        let big = frame(1, big_text.as_bytes());
        let packed = deflate_frame(&big, &params, 15).expect("compressible");
        assert_eq!(packed[0], 0xc1, "FIN + RSV1 + text");
        let len = packed[1] as usize;
        assert_eq!(
            inflate(&packed[2..2 + len], 1 << 20).unwrap(),
            big_text.as_bytes()
        );
        let ping = frame(9, &[7; 100]);
        assert_eq!(deflate_frame(&ping, &params, 15), None);
    }

    proptest! {
        #[test]
        fn what_is_compressed_inflates_back(
            data in proptest::collection::vec(0u8..8, 0..20_000),
            level in 0u32..=9,
            bits in 9u8..=15,
        ) {
            let packed = compress(&data, level, bits);
            prop_assert_eq!(&inflate(&packed, data.len()).unwrap()[..], &data[..]);
            if !data.is_empty() {
                prop_assert_eq!(inflate(&packed, data.len() - 1), Err(InflateError::TooBig));
            }
        }
    }
}
