//! Micro-benchmarks of the hot codecs: `cargo bench --bench codecs`. Each case runs batches of
//! operations and prints an HDR histogram of nanoseconds per operation over the batches.

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use shardcast::protocol::deflate;
use shardcast::protocol::phoenix::{
    decode_binary, decode_text, encode, Outgoing, Payload, Serializer,
};
use shardcast::protocol::websocket::{encode_frame, DecoderLimits, FrameKind, WsDecoder};
use std::hint::black_box;
use std::time::Instant;

const BATCH: u64 = 1000;
const BATCHES: usize = 2000;

fn bench(name: &str, mut op: impl FnMut()) {
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
    for _ in 0..50 {
        op(); // warm up
    }
    for _ in 0..BATCHES {
        let t = Instant::now();
        for _ in 0..BATCH {
            op();
        }
        let per_op = (t.elapsed().as_nanos() as u64 / BATCH).max(1);
        h.record(per_op).unwrap();
    }
    println!(
        "{name:<44} ns/op  p50 {:>6}  p90 {:>6}  p99 {:>6}  p99.9 {:>6}  max {:>7}  ({} batches of {BATCH})",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
        h.len()
    );
}

fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn main() {
    let text = br#"["1","42","room:lobby","new_msg",{"body":"hello there, how is the game going?","n":1}]"#;
    let frame = Bytes::from_static(text);
    let mut arena = BytesMut::with_capacity(1 << 20);
    let payload = Payload::raw_json(Bytes::from_static(
        br#"{"t":1234567890123456,"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#,
    ));
    let binary_push = {
        let mut m = vec![0u8, 1, 2, 10, 3];
        m.extend_from_slice(b"142room:lobbybin");
        m.extend_from_slice(&[7u8; 64]);
        Bytes::from(m)
    };
    let wire = masked_frame(1, text);

    println!("shardcast codec micro-benchmarks");
    bench("websocket: encode 64 B server frame", || {
        if arena.capacity() < 256 {
            arena.reserve(1 << 20);
        }
        black_box(encode_frame(
            &mut arena,
            FrameKind::Text,
            black_box(&[0u8; 64]),
        ));
    });
    let mut decoder = WsDecoder::new(DecoderLimits {
        max_frame_size: 1 << 20,
        max_message_size: 1 << 20,
    });
    bench("websocket: decode+unmask 86 B client frame", || {
        let mut buf = BytesMut::from(&wire[..]);
        black_box(decoder.decode(&mut buf).unwrap());
    });
    bench("phoenix v2: decode JSON push", || {
        black_box(decode_text(Serializer::V2, black_box(&frame)).unwrap());
    });
    bench("phoenix v2: decode binary push (64 B payload)", || {
        black_box(decode_binary(Serializer::V2, black_box(&binary_push)).unwrap());
    });
    bench("phoenix v2: encode broadcast frame (JSON)", || {
        if arena.capacity() < 256 {
            arena.reserve(1 << 20);
        }
        let m = Outgoing::Event {
            join_ref: None,
            msg_ref: None,
            topic: "room:lobby",
            event: "new_msg",
            payload: &payload,
        };
        black_box(encode(Serializer::V2, &m, &mut arena).unwrap());
    });
    bench("phoenix v2: encode reply frame (JSON)", || {
        if arena.capacity() < 256 {
            arena.reserve(1 << 20);
        }
        let m = Outgoing::Reply {
            join_ref: Some("1"),
            msg_ref: Some("42"),
            topic: "room:lobby",
            status: "ok",
            payload: &payload,
        };
        black_box(encode(Serializer::V2, &m, &mut arena).unwrap());
    });
    bench("phoenix v1: encode broadcast frame (JSON)", || {
        if arena.capacity() < 256 {
            arena.reserve(1 << 20);
        }
        let m = Outgoing::Event {
            join_ref: None,
            msg_ref: None,
            topic: "room:lobby",
            event: "new_msg",
            payload: &payload,
        };
        black_box(encode(Serializer::V1, &m, &mut arena).unwrap());
    });

    // permessage-deflate: a 900 B chat-history-like JSON frame, compressed once per broadcast.
    let history: String = (0..12)
        .map(|i| format!(r#"{{"id":{i},"user":"player{i}","body":"gg, rematch on map {i}?","at":1733100000{i}}},"#))
        .collect();
    let big = encode_frame(&mut arena, FrameKind::Text, history.as_bytes());
    let params = deflate::Params {
        min_bytes: 256,
        level: 1,
    };
    let packed = deflate::deflate_frame(&big, &params, 15).expect("compressible");
    println!(
        "permessage-deflate: {} B frame -> {} B compressed (level 1)",
        big.len(),
        packed.len()
    );
    bench("deflate: compress 900 B JSON frame (level 1)", || {
        black_box(deflate::deflate_frame(black_box(&big), &params, 15));
    });
    let body = packed.slice(if packed[1] & 0x7f == 126 { 4 } else { 2 }..);
    bench("deflate: inflate it back", || {
        black_box(deflate::inflate(black_box(&body), 1 << 20).unwrap());
    });
}
