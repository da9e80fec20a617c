//! The RFC 6455 client-frame decoder, with and without permessage-deflate: any bytes, arriving
//! in any split, never panic, never yield a message over the limits (inflated ones included),
//! and text messages are valid UTF-8.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shardcast::protocol::websocket::{DecoderLimits, WsDecoder, WsEvent};

const LIMITS: DecoderLimits = DecoderLimits {
    max_frame_size: 4096,
    max_message_size: 8192,
};

fuzz_target!(|data: &[u8]| {
    // The first byte chooses how the rest arrives (in chunks of 1 to 128 bytes) and whether
    // permessage-deflate was negotiated (its top bit).
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split & 0x7f) + 1;
    let mut dec = WsDecoder::new(LIMITS);
    if split & 0x80 != 0 {
        dec = dec.with_inflate();
    }
    let mut buf = BytesMut::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(event)) => match event {
                    WsEvent::Text(t) => {
                        assert!(t.len() <= LIMITS.max_message_size);
                        assert!(std::str::from_utf8(&t).is_ok());
                    }
                    WsEvent::Binary(b) => assert!(b.len() <= LIMITS.max_message_size),
                    WsEvent::Ping(p) | WsEvent::Pong(p) => assert!(p.len() <= 125),
                    WsEvent::Close(_) => return,
                },
                Ok(None) => break,
                Err(_) => return, // a violation closes the connection
            }
        }
    }
});
