//! RFC 6455 framing without I/O: a decoder that turns a receive buffer into complete messages and
//! control frames (enforcing masking, fragmentation, UTF-8 and size rules), and encoders for
//! server frames. Header parsing and formatting are tungstenite's; the state machine is ours so the
//! transport can keep payloads as zero-copy slices of its receive buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io::Cursor;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// Close codes the server sends.
pub mod close_code {
    /// 1000: normal closure.
    pub const NORMAL: u16 = 1000;
    /// 1001: the server is going away (shutdown, idle timeout).
    pub const GOING_AWAY: u16 = 1001;
    /// 1002: a violation of the WebSocket protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// 1003: a kind of data the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// 1007: data inconsistent with its type (text that is not UTF-8).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// 1008: a message that violates the server's policy.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// 1009: a frame or message over the size limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// 1011: unexpected condition (sent, like Phoenix, for an undecodable Phoenix message).
    pub const INTERNAL_ERROR: u16 = 1011;
    /// 1013: overloaded, try again later (sent to slow consumers).
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// One event decoded from the client's byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsEvent {
    /// A complete text message; the bytes are valid UTF-8.
    Text(Bytes),
    /// A complete binary message.
    Binary(Bytes),
    /// A ping, with its payload (at most 125 bytes) to echo in the pong.
    Ping(Bytes),
    /// A pong, with its payload.
    Pong(Bytes),
    /// The client's close frame: code and reason when present.
    Close(Option<(u16, Bytes)>),
}

/// Why the decoder gave up on the stream: the connection must be closed with `code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("websocket protocol violation ({code}): {reason}")]
pub struct WsViolation {
    /// The close code to send (see [`close_code`]).
    pub code: u16,
    /// What was wrong, for the close frame's reason and the logs.
    pub reason: &'static str,
}

fn violation(code: u16, reason: &'static str) -> WsViolation {
    WsViolation { code, reason }
}

/// Size limits the decoder enforces.
#[derive(Debug, Clone, Copy)]
pub struct DecoderLimits {
    /// Largest payload of one frame, in bytes (over it: close 1009).
    pub max_frame_size: usize,
    /// Largest message after reassembling its fragments, in bytes (over it: close 1009).
    pub max_message_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageKind {
    Text,
    Binary,
}

/// Incremental decoder for client-to-server frames.
#[derive(Debug)]
pub struct WsDecoder {
    limits: DecoderLimits,
    /// A fragmented message being reassembled.
    fragments: Option<Fragmented>,
    /// permessage-deflate was negotiated: a message's first frame may set RSV1 (compressed).
    inflate: bool,
}

#[derive(Debug)]
struct Fragmented {
    kind: MessageKind,
    data: BytesMut,
    /// Length of the prefix already known to be valid UTF-8 (text messages only).
    utf8_checked: usize,
    /// The message is compressed (checked once inflated).
    compressed: bool,
}

impl WsDecoder {
    /// A decoder at the start of a stream, enforcing `limits`.
    pub fn new(limits: DecoderLimits) -> Self {
        WsDecoder {
            limits,
            fragments: None,
            inflate: false,
        }
    }

    /// permessage-deflate was negotiated: compressed messages are inflated (bounded by the
    /// message size limit).
    pub fn with_inflate(mut self) -> Self {
        self.inflate = true;
        self
    }

    /// Bytes of a fragmented message held while its remaining fragments are awaited.
    pub fn buffered(&self) -> usize {
        self.fragments.as_ref().map_or(0, |f| f.data.len())
    }

    /// Whether a fragmented message has begun and not yet ended.
    pub fn in_message(&self) -> bool {
        self.fragments.is_some()
    }

    /// Decodes the next event from `buf`, consuming the bytes it used. `Ok(None)` means more bytes
    /// are needed. Payloads of unfragmented messages are slices of `buf`'s allocation (no copy).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<WsEvent>, WsViolation> {
        loop {
            let mut cursor = Cursor::new(&buf[..]);
            let (header, len) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return Ok(None),
                Err(_) => return Err(violation(close_code::PROTOCOL_ERROR, "reserved opcode")),
            };
            let header_len = cursor.position() as usize;
            self.check_header(&header, len)?;
            let len = len as usize;
            if buf.len() < header_len + len {
                // Nothing is reserved for the declared length: the buffer grows with the bytes
                // that actually arrive, so a header announcing 1 MiB costs what follows it.
                return Ok(None);
            }
            let mut frame = buf.split_to(header_len + len);
            let _ = frame.split_to(header_len);
            if let Some(mask) = header.mask {
                apply_mask(&mut frame, mask);
            }
            let payload = frame.freeze();
            if let Some(event) = self.on_frame(&header, payload)? {
                return Ok(Some(event));
            }
        }
    }

    fn check_header(&self, header: &FrameHeader, len: u64) -> Result<(), WsViolation> {
        let starts_message = matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary));
        if (header.rsv1 && !(self.inflate && starts_message)) || header.rsv2 || header.rsv3 {
            return Err(violation(
                close_code::PROTOCOL_ERROR,
                "reserved bits set without an extension",
            ));
        }
        if header.mask.is_none() {
            return Err(violation(
                close_code::PROTOCOL_ERROR,
                "client frames must be masked",
            ));
        }
        match header.opcode {
            OpCode::Control(_) => {
                if !header.is_final {
                    return Err(violation(
                        close_code::PROTOCOL_ERROR,
                        "fragmented control frame",
                    ));
                }
                if len > 125 {
                    return Err(violation(
                        close_code::PROTOCOL_ERROR,
                        "control frame payload over 125 bytes",
                    ));
                }
            }
            OpCode::Data(_) => {
                if len > self.limits.max_frame_size as u64 {
                    return Err(violation(close_code::MESSAGE_TOO_BIG, "frame too big"));
                }
                let so_far = self.fragments.as_ref().map_or(0, |f| f.data.len() as u64);
                if so_far + len > self.limits.max_message_size as u64 {
                    return Err(violation(close_code::MESSAGE_TOO_BIG, "message too big"));
                }
            }
        }
        Ok(())
    }

    fn on_frame(
        &mut self,
        header: &FrameHeader,
        payload: Bytes,
    ) -> Result<Option<WsEvent>, WsViolation> {
        match header.opcode {
            OpCode::Control(Control::Ping) => Ok(Some(WsEvent::Ping(payload))),
            OpCode::Control(Control::Pong) => Ok(Some(WsEvent::Pong(payload))),
            OpCode::Control(Control::Close) => {
                parse_close(payload).map(|c| Some(WsEvent::Close(c)))
            }
            OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                Err(violation(close_code::PROTOCOL_ERROR, "reserved opcode"))
            }
            OpCode::Data(Data::Continue) => {
                let Some(frag) = self.fragments.as_mut() else {
                    return Err(violation(
                        close_code::PROTOCOL_ERROR,
                        "continuation without a message",
                    ));
                };
                frag.data.extend_from_slice(&payload);
                if frag.kind == MessageKind::Text && !frag.compressed {
                    check_utf8_prefix(frag, header.is_final)?;
                }
                if !header.is_final {
                    return Ok(None);
                }
                let frag = self.fragments.take().expect("fragment present");
                let data = frag.data.freeze();
                if frag.compressed {
                    return self.inflated(frag.kind, &data).map(Some);
                }
                Ok(Some(match frag.kind {
                    MessageKind::Text => WsEvent::Text(data),
                    MessageKind::Binary => WsEvent::Binary(data),
                }))
            }
            OpCode::Data(data @ (Data::Text | Data::Binary)) => {
                if self.fragments.is_some() {
                    return Err(violation(
                        close_code::PROTOCOL_ERROR,
                        "new message inside a fragmented one",
                    ));
                }
                let kind = if data == Data::Text {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                };
                if header.is_final && header.rsv1 {
                    return self.inflated(kind, &payload).map(Some);
                }
                if header.is_final {
                    if kind == MessageKind::Text {
                        if simdutf8::basic::from_utf8(&payload).is_err() {
                            return Err(violation(
                                close_code::INVALID_PAYLOAD,
                                "text message is not UTF-8",
                            ));
                        }
                        return Ok(Some(WsEvent::Text(payload)));
                    }
                    return Ok(Some(WsEvent::Binary(payload)));
                }
                let mut frag = Fragmented {
                    kind,
                    data: BytesMut::from(&payload[..]),
                    utf8_checked: 0,
                    compressed: header.rsv1,
                };
                if kind == MessageKind::Text && !frag.compressed {
                    check_utf8_prefix(&mut frag, false)?;
                }
                self.fragments = Some(frag);
                Ok(None)
            }
        }
    }

    /// A whole compressed message, inflated within the message size limit.
    fn inflated(&self, kind: MessageKind, data: &[u8]) -> Result<WsEvent, WsViolation> {
        let data =
            super::deflate::inflate(data, self.limits.max_message_size).map_err(|e| match e {
                super::deflate::InflateError::TooBig => {
                    violation(close_code::MESSAGE_TOO_BIG, "inflated message too big")
                }
                super::deflate::InflateError::Corrupt => {
                    violation(close_code::INVALID_PAYLOAD, "invalid compressed data")
                }
            })?;
        match kind {
            MessageKind::Text if simdutf8::basic::from_utf8(&data).is_err() => Err(violation(
                close_code::INVALID_PAYLOAD,
                "text message is not UTF-8",
            )),
            MessageKind::Text => Ok(WsEvent::Text(data)),
            MessageKind::Binary => Ok(WsEvent::Binary(data)),
        }
    }
}

/// Validates the not-yet-checked part of a fragmented text message so that invalid UTF-8 fails
/// fast, before the rest of the message arrives. A sequence cut at the end of a fragment is fine
/// unless this is the final fragment.
fn check_utf8_prefix(frag: &mut Fragmented, is_final: bool) -> Result<(), WsViolation> {
    let tail = &frag.data[frag.utf8_checked..];
    match std::str::from_utf8(tail) {
        Ok(_) => {
            frag.utf8_checked = frag.data.len();
            Ok(())
        }
        Err(e) if e.error_len().is_none() && !is_final => {
            frag.utf8_checked += e.valid_up_to();
            Ok(())
        }
        Err(_) => Err(violation(
            close_code::INVALID_PAYLOAD,
            "text message is not UTF-8",
        )),
    }
}

fn parse_close(payload: Bytes) -> Result<Option<(u16, Bytes)>, WsViolation> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(violation(
            close_code::PROTOCOL_ERROR,
            "close payload of one byte",
        )),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !CloseCode::from(code).is_allowed() {
                return Err(violation(close_code::PROTOCOL_ERROR, "invalid close code"));
            }
            let reason = payload.slice(2..);
            if std::str::from_utf8(&reason).is_err() {
                return Err(violation(
                    close_code::INVALID_PAYLOAD,
                    "close reason is not UTF-8",
                ));
            }
            Ok(Some((code, reason)))
        }
    }
}

/// XORs `data` with the 4-byte client mask, eight bytes at a time.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let mask8 = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes((&*chunk).try_into().expect("8-byte chunk")) ^ mask8;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    let rest = chunks.into_remainder();
    for (i, b) in rest.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// Opcode of a server frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A text data frame (opcode 0x1).
    Text,
    /// A binary data frame (opcode 0x2).
    Binary,
    /// A ping frame (opcode 0x9).
    Ping,
    /// A pong frame (opcode 0xA).
    Pong,
    /// A close frame (opcode 0x8).
    Close,
}

impl FrameKind {
    fn opcode(self) -> OpCode {
        match self {
            FrameKind::Text => OpCode::Data(Data::Text),
            FrameKind::Binary => OpCode::Data(Data::Binary),
            FrameKind::Ping => OpCode::Control(Control::Ping),
            FrameKind::Pong => OpCode::Control(Control::Pong),
            FrameKind::Close => OpCode::Control(Control::Close),
        }
    }
}

/// Largest server frame header: 2 bytes plus an 8-byte extended length (no mask).
pub const MAX_SERVER_HEADER: usize = 10;

/// Writes the header of an unmasked, final server frame with a payload of `len` bytes.
pub fn put_header(out: &mut BytesMut, kind: FrameKind, len: usize) {
    let mut writer = out.writer();
    server_header(kind)
        .format(len as u64, &mut writer)
        .expect("writing to BytesMut cannot fail");
}

/// Encodes one complete server frame into `out` and returns it as shareable bytes. `out` is an
/// arena: the frame is split off it, so consecutive frames share one allocation.
pub fn encode_frame(out: &mut BytesMut, kind: FrameKind, payload: &[u8]) -> Bytes {
    out.reserve(MAX_SERVER_HEADER + payload.len());
    put_header(out, kind, payload.len());
    out.extend_from_slice(payload);
    out.split().freeze()
}

/// Encodes a close frame with `code` and a UTF-8 `reason` (truncated to fit 125 bytes).
pub fn encode_close(out: &mut BytesMut, code: u16, reason: &str) -> Bytes {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = [0u8; 125];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
    encode_frame(out, FrameKind::Close, &payload[..2 + cut])
}

/// Encodes the frame header for a payload the caller writes itself right after: reserves room for
/// the largest header, lets `write_payload` append, then moves the payload up behind the real
/// header. Used by serializers so payloads are written once, directly into the frame.
pub fn encode_frame_with(
    out: &mut BytesMut,
    kind: FrameKind,
    write_payload: impl FnOnce(&mut BytesMut),
) -> Bytes {
    let start = out.len();
    out.put_bytes(0, MAX_SERVER_HEADER);
    write_payload(out);
    let payload_len = (out.len() - start - MAX_SERVER_HEADER) as u64;
    let header = server_header(kind);
    let skip = MAX_SERVER_HEADER - header.len(payload_len);
    let mut slot = &mut out[start + skip..start + MAX_SERVER_HEADER];
    header
        .format(payload_len, &mut slot)
        .expect("header fits the reserved slot");
    let mut frame = out.split();
    frame.advance(start + skip);
    frame.freeze()
}

fn server_header(kind: FrameKind) -> FrameHeader {
    FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode: kind.opcode(),
        mask: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: DecoderLimits = DecoderLimits {
        max_frame_size: 1 << 16,
        max_message_size: 1 << 17,
    };

    /// Builds a masked client frame.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n < 65536 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn a_declared_length_reserves_nothing() {
        // A header announcing a 60 KiB payload, followed by one byte of it.
        let frame = client_frame(true, 2, &[7u8; 60 * 1024]);
        let mut dec = WsDecoder::new(LIMITS);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame[..15]);
        assert!(dec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() < 1024, "capacity {}", buf.capacity());
        // The rest arrives: the frame decodes whole.
        buf.extend_from_slice(&frame[15..]);
        match dec.decode(&mut buf).unwrap() {
            Some(WsEvent::Binary(p)) => assert_eq!(p.len(), 60 * 1024),
            other => panic!("{other:?}"),
        }
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<WsEvent>, WsViolation> {
        let mut dec = WsDecoder::new(LIMITS);
        let mut buf = BytesMut::from(bytes);
        let mut out = vec![];
        while let Some(ev) = dec.decode(&mut buf)? {
            out.push(ev);
        }
        Ok(out)
    }

    #[test]
    fn decodes_masked_text_and_binary() {
        let mut bytes = client_frame(true, 1, b"hello");
        bytes.extend(client_frame(true, 2, &[1, 2, 3]));
        assert_eq!(
            decode_all(&bytes).unwrap(),
            vec![
                WsEvent::Text(Bytes::from_static(b"hello")),
                WsEvent::Binary(Bytes::from_static(&[1, 2, 3]))
            ]
        );
    }

    #[test]
    fn reassembles_fragments_with_interleaved_ping() {
        let mut bytes = client_frame(false, 1, "hé".as_bytes());
        bytes.extend(client_frame(true, 9, b"p"));
        bytes.extend(client_frame(true, 0, "llo".as_bytes()));
        assert_eq!(
            decode_all(&bytes).unwrap(),
            vec![
                WsEvent::Ping(Bytes::from_static(b"p")),
                WsEvent::Text(Bytes::from("héllo"))
            ]
        );
    }

    #[test]
    fn utf8_split_across_fragments_is_accepted_but_invalid_fails_fast() {
        let e = "é".as_bytes();
        let mut ok = client_frame(false, 1, &e[..1]);
        ok.extend(client_frame(true, 0, &e[1..]));
        assert_eq!(
            decode_all(&ok).unwrap(),
            vec![WsEvent::Text(Bytes::from("é"))]
        );
        // 0xff can never appear in UTF-8: rejected on the first fragment.
        let bad = client_frame(false, 1, &[b'a', 0xff]);
        assert_eq!(
            decode_all(&bad).unwrap_err().code,
            close_code::INVALID_PAYLOAD
        );
        let truncated = client_frame(true, 1, &e[..1]);
        assert_eq!(
            decode_all(&truncated).unwrap_err().code,
            close_code::INVALID_PAYLOAD
        );
    }

    #[test]
    fn protocol_violations() {
        let unmasked = [0x81u8, 0x01, b'a'];
        assert_eq!(
            decode_all(&unmasked).unwrap_err().code,
            close_code::PROTOCOL_ERROR
        );
        assert_eq!(
            decode_all(&client_frame(true, 3, b"")).unwrap_err().code,
            close_code::PROTOCOL_ERROR
        );
        assert_eq!(
            decode_all(&client_frame(false, 9, b"")).unwrap_err().code,
            close_code::PROTOCOL_ERROR
        );
        assert_eq!(
            decode_all(&client_frame(true, 0, b"x")).unwrap_err().code,
            close_code::PROTOCOL_ERROR
        );
        assert_eq!(
            decode_all(&client_frame(true, 9, &[0; 126]))
                .unwrap_err()
                .code,
            close_code::PROTOCOL_ERROR
        );
        let mut rsv = client_frame(true, 1, b"x");
        rsv[0] |= 0x40;
        assert_eq!(
            decode_all(&rsv).unwrap_err().code,
            close_code::PROTOCOL_ERROR
        );
        let mut two_starts = client_frame(false, 1, b"a");
        two_starts.extend(client_frame(true, 1, b"b"));
        assert_eq!(
            decode_all(&two_starts).unwrap_err().code,
            close_code::PROTOCOL_ERROR
        );
    }

    #[test]
    fn size_limits_close_with_1009_before_buffering() {
        // Only the header of a huge frame is present: refused without waiting for the payload.
        let header = &client_frame(true, 2, &vec![0; LIMITS.max_frame_size + 1])[..14];
        assert_eq!(
            decode_all(header).unwrap_err().code,
            close_code::MESSAGE_TOO_BIG
        );
        let mut frags = vec![];
        for i in 0..3 {
            frags.extend(client_frame(
                false,
                if i == 0 { 2 } else { 0 },
                &vec![0; 50_000],
            ));
        }
        assert_eq!(
            decode_all(&frags).unwrap_err().code,
            close_code::MESSAGE_TOO_BIG
        );
    }

    #[test]
    fn close_frames() {
        assert_eq!(
            decode_all(&client_frame(true, 8, b"")).unwrap(),
            vec![WsEvent::Close(None)]
        );
        let mut p = 1000u16.to_be_bytes().to_vec();
        p.extend_from_slice(b"bye");
        assert_eq!(
            decode_all(&client_frame(true, 8, &p)).unwrap(),
            vec![WsEvent::Close(Some((1000, Bytes::from_static(b"bye"))))]
        );
        assert!(decode_all(&client_frame(true, 8, &[3])).is_err());
        assert!(decode_all(&client_frame(true, 8, &1005u16.to_be_bytes())).is_err());
        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.push(0xff);
        assert_eq!(
            decode_all(&client_frame(true, 8, &bad_reason))
                .unwrap_err()
                .code,
            close_code::INVALID_PAYLOAD
        );
    }

    #[test]
    fn partial_input_waits_for_more() {
        let bytes = client_frame(true, 1, b"hello world");
        let mut dec = WsDecoder::new(LIMITS);
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let ev = dec.decode(&mut buf).unwrap();
            if i + 1 < bytes.len() {
                assert!(ev.is_none());
            } else {
                assert_eq!(ev, Some(WsEvent::Text(Bytes::from_static(b"hello world"))));
            }
        }
    }

    #[test]
    fn server_frames_encode_with_the_shortest_length() {
        let mut arena = BytesMut::new();
        for len in [0usize, 125, 126, 65535, 65536] {
            let payload = vec![7u8; len];
            let a = encode_frame(&mut arena, FrameKind::Binary, &payload);
            let b = encode_frame_with(&mut arena, FrameKind::Binary, |o| {
                o.extend_from_slice(&payload)
            });
            assert_eq!(a, b, "len {len}");
            let mut cur = Cursor::new(&a[..]);
            let (h, l) = FrameHeader::parse(&mut cur).unwrap().unwrap();
            assert_eq!(l as usize, len);
            assert!(h.is_final && h.mask.is_none());
            assert_eq!(cur.position() as usize + len, a.len());
        }
        let c = encode_close(&mut arena, 1009, "too big");
        assert_eq!(
            &c[..],
            &[0x88, 9, 0x03, 0xf1, b't', b'o', b'o', b' ', b'b', b'i', b'g']
        );
    }

    proptest! {
        #[test]
        fn decoder_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut dec = WsDecoder::new(LIMITS);
            let mut buf = BytesMut::new();
            for c in chunks {
                buf.extend_from_slice(&c);
                while let Ok(Some(_)) = dec.decode(&mut buf) {}
            }
        }

        #[test]
        fn mask_roundtrip(data in proptest::collection::vec(any::<u8>(), 0..100), mask in any::<[u8; 4]>()) {
            let mut d = data.clone();
            apply_mask(&mut d, mask);
            let naive: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
            prop_assert_eq!(&d, &naive);
            apply_mask(&mut d, mask);
            prop_assert_eq!(d, data);
        }

        #[test]
        fn fragmented_messages_roundtrip(text in "\\PC{0,40}", cuts in proptest::collection::vec(0usize..40, 0..4)) {
            let bytes = text.as_bytes();
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            points.sort();
            points.dedup();
            let mut stream = vec![];
            let mut prev = 0;
            let mut first = true;
            for &p in points.iter().chain(std::iter::once(&bytes.len())) {
                let fin = p == bytes.len();
                if p < prev || (!fin && p == prev && !first) { continue; }
                stream.extend(client_frame(fin, if first { 1 } else { 0 }, &bytes[prev..p]));
                first = false;
                prev = p;
                if fin { break; }
            }
            prop_assert_eq!(decode_all(&stream).unwrap(), vec![WsEvent::Text(Bytes::copy_from_slice(bytes))]);
        }
    }
}
