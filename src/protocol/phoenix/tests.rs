use super::*;
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use std::io::Cursor;
use tungstenite::protocol::frame::FrameHeader;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Strips the WebSocket header off an encoded server frame.
fn payload_of(frame: &Bytes) -> Bytes {
    let mut cur = Cursor::new(&frame[..]);
    let (_, len) = FrameHeader::parse(&mut cur).unwrap().unwrap();
    let start = cur.position() as usize;
    assert_eq!(start + len as usize, frame.len());
    frame.slice(start..)
}

fn enc(ser: Serializer, msg: Outgoing<'_>) -> Bytes {
    payload_of(&encode(ser, &msg, &mut BytesMut::new()).unwrap())
}

// Frames from tests/fixtures/phoenix-golden/v2-frames.log.

#[test]
fn decodes_golden_binary_push() {
    let frame = Bytes::from(hex("0001010a033136726f6f6d3a6c6f62627962696e010203ff"));
    let msg = decode_binary(Serializer::V2, &frame).unwrap();
    assert_eq!(msg.join_ref.as_deref(), Some("1"));
    assert_eq!(msg.msg_ref.as_deref(), Some("6"));
    assert_eq!(&*msg.topic, "room:lobby");
    assert_eq!(&*msg.event, "bin");
    assert_eq!(
        msg.payload,
        Payload::Binary(Bytes::from_static(&[1, 2, 3, 255]))
    );
}

#[test]
fn encodes_golden_binary_reply_push_and_broadcast() {
    let data = Payload::binary(vec![1, 2, 3, 255]);
    let reply = Outgoing::Reply {
        join_ref: Some("1"),
        msg_ref: Some("6"),
        topic: "room:lobby",
        status: "ok",
        payload: &data,
    };
    assert_eq!(
        &enc(Serializer::V2, reply)[..],
        &hex("0101010a023136726f6f6d3a6c6f6262796f6b010203ff")[..]
    );
    let bcast = Outgoing::Event {
        join_ref: None,
        msg_ref: None,
        topic: "room:lobby",
        event: "bin",
        payload: &data,
    };
    assert_eq!(
        &enc(Serializer::V2, bcast)[..],
        &hex("020a03726f6f6d3a6c6f62627962696e010203ff")[..]
    );
    let beef = Payload::binary(vec![0xde, 0xad, 0xbe, 0xef]);
    let push = Outgoing::Event {
        join_ref: Some("1"),
        msg_ref: None,
        topic: "room:lobby",
        event: "bin_push",
        payload: &beef,
    };
    assert_eq!(
        &enc(Serializer::V2, push)[..],
        &hex("00010a0831726f6f6d3a6c6f62627962696e5f70757368deadbeef")[..]
    );
}

#[test]
fn json_frames_match_phoenix_byte_for_byte() {
    let p = Payload::raw_json(Bytes::from_static(br#"{"body":"hello","n":1}"#));
    let reply = Outgoing::Reply {
        join_ref: Some("1"),
        msg_ref: Some("3"),
        topic: "room:lobby",
        status: "ok",
        payload: &p,
    };
    assert_eq!(
        &enc(Serializer::V2, reply)[..],
        br#"["1","3","room:lobby","phx_reply",{"response":{"body":"hello","n":1},"status":"ok"}]"#
    );
    let bcast = Outgoing::Event {
        join_ref: None,
        msg_ref: None,
        topic: "room:lobby",
        event: "new_msg",
        payload: &p,
    };
    assert_eq!(
        &enc(Serializer::V2, bcast)[..],
        br#"[null,null,"room:lobby","new_msg",{"body":"hello","n":1}]"#
    );
    let v1 = Outgoing::Reply {
        join_ref: Some("1"),
        msg_ref: Some("2"),
        topic: "room:lobby",
        status: "ok",
        payload: &p,
    };
    assert_eq!(
        &enc(Serializer::V1, v1)[..],
        br#"{"event":"phx_reply","payload":{"response":{"body":"hello","n":1},"status":"ok"},"ref":"2","topic":"room:lobby"}"#
    );
}

#[test]
fn decodes_json_in_both_serializers_zero_copy() {
    let frame = Bytes::from_static(br#"["1","3","room:lobby","new_msg",{"body":"hello","n":1}]"#);
    let msg = decode_text(Serializer::V2, &frame).unwrap();
    assert_eq!(
        (msg.join_ref.as_deref(), msg.msg_ref.as_deref()),
        (Some("1"), Some("3"))
    );
    assert_eq!(
        msg.payload.as_bytes().as_ptr(),
        frame[frame.len() - 23..].as_ptr(),
        "payload is a slice of the frame"
    );
    let v1 = Bytes::from_static(br#"{"topic":"room:lobby","event":"phx_join","payload":{"user_id":"v1"},"ref":"1","join_ref":"1"}"#);
    let msg = decode_text(Serializer::V1, &v1).unwrap();
    assert_eq!((&*msg.topic, &*msg.event), ("room:lobby", "phx_join"));
    assert_eq!(&msg.payload.as_bytes()[..], br#"{"user_id":"v1"}"#);
}

#[test]
fn refs_may_be_null_numbers_or_escaped_strings() {
    let frame = Bytes::from_static(br#"[null,7,"a\"b","e",{}]"#);
    let msg = decode_text(Serializer::V2, &frame).unwrap();
    assert_eq!(msg.join_ref, None);
    assert_eq!(msg.msg_ref.as_deref(), Some("7"));
    assert_eq!(&*msg.topic, "a\"b");
    assert!(decode_text(
        Serializer::V2,
        &Bytes::from_static(br#"[{},"1","t","e",{}]"#)
    )
    .is_err());
    assert!(decode_text(Serializer::V2, &Bytes::from_static(br#"["1","1","t","e"]"#)).is_err());
    assert!(decode_text(Serializer::V2, &Bytes::from_static(b"not json")).is_err());
}

#[test]
fn binary_limits() {
    assert_eq!(
        decode_binary(Serializer::V1, &Bytes::from_static(&[0, 0, 0, 0, 0])),
        Err(DecodeError::BinaryNeedsV2)
    );
    assert_eq!(
        decode_binary(Serializer::V2, &Bytes::from_static(&[1, 0, 0, 0, 0])),
        Err(DecodeError::BinaryKind(1))
    );
    assert_eq!(
        decode_binary(Serializer::V2, &Bytes::from_static(&[0, 5, 0, 0, 0, b'a'])),
        Err(DecodeError::BinaryTruncated)
    );
    let long = "t".repeat(300);
    let p = Payload::binary(vec![1]);
    let m = Outgoing::Event {
        join_ref: None,
        msg_ref: None,
        topic: &long,
        event: "e",
        payload: &p,
    };
    assert_eq!(
        encode(Serializer::V2, &m, &mut BytesMut::new()),
        Err(EncodeError::FieldTooLong)
    );
    assert_eq!(
        encode(Serializer::V1, &m, &mut BytesMut::new()),
        Err(EncodeError::BinaryNeedsV2)
    );
}

proptest! {
    #[test]
    fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let frame = Bytes::from(data);
        let _ = decode_binary(Serializer::V2, &frame);
        let _ = decode_text(Serializer::V2, &frame);
        let _ = decode_text(Serializer::V1, &frame);
    }

    #[test]
    fn binary_push_roundtrip(jr in "[a-z0-9]{0,10}", r in "[a-z0-9]{1,10}", topic in "\\PC{1,40}", event in "\\PC{1,20}", payload in proptest::collection::vec(any::<u8>(), 0..300)) {
        prop_assume!(topic.len() < 256 && event.len() < 256);
        let mut frame = vec![0u8, jr.len() as u8, r.len() as u8, topic.len() as u8, event.len() as u8];
        for part in [&jr, &r, &topic, &event] {
            frame.extend_from_slice(part.as_bytes());
        }
        frame.extend_from_slice(&payload);
        let msg = decode_binary(Serializer::V2, &Bytes::from(frame)).unwrap();
        prop_assert_eq!(msg.join_ref.as_deref().unwrap_or(""), jr.as_str());
        prop_assert_eq!(&*msg.topic, topic.as_str());
        prop_assert_eq!(&*msg.event, event.as_str());
        prop_assert_eq!(&msg.payload.as_bytes()[..], &payload[..]);
    }

    #[test]
    fn json_event_roundtrip(topic in "\\PC{0,30}", event in "\\PC{0,20}", n in any::<i64>(), s in "\\PC{0,20}") {
        let payload = Payload::json(&serde_json::json!({"n": n, "s": s}));
        let out = Outgoing::Event { join_ref: Some("1"), msg_ref: Some("2"), topic: &topic, event: &event, payload: &payload };
        for ser in [Serializer::V1, Serializer::V2] {
            let text = enc(ser, out);
            let back = decode_text(ser, &text).unwrap();
            prop_assert_eq!(&*back.topic, topic.as_str());
            prop_assert_eq!(&*back.event, event.as_str());
            prop_assert_eq!(back.payload.parse::<serde_json::Value>().unwrap(), serde_json::json!({"n": n, "s": s}));
        }
    }
}
