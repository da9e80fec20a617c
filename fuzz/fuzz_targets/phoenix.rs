//! The Phoenix V1/V2 decoders (JSON text and V2 binary frames): any bytes never panic; what
//! decodes re-encodes.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use shardcast::protocol::phoenix::{decode_binary, decode_text, encode, Outgoing, Serializer};

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    for ser in [Serializer::V1, Serializer::V2] {
        if let Ok(msg) = decode_text(ser, &frame) {
            let out = Outgoing::Event {
                join_ref: msg.join_ref.as_deref(),
                msg_ref: msg.msg_ref.as_deref(),
                topic: &msg.topic,
                event: &msg.event,
                payload: &msg.payload,
            };
            // Encoding what was decoded may be refused (a binary payload for V1), never panic.
            let _ = encode(ser, &out, &mut BytesMut::new());
        }
    }
    if let Ok(msg) = decode_binary(Serializer::V2, &frame) {
        assert!(msg.topic.len() <= 255 && msg.event.len() <= 255);
    }
});
