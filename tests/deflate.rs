//! permessage-deflate (RFC 7692) over real sockets: negotiation, compressed messages both ways,
//! one compression per broadcast shared by every subscriber, and bounded inflate. (The phoenix.js
//! suite's `ws` transport and Autobahn cases 12.* and 13.* check it against independent peers.)

mod common;
use common::*;
use shardcast::core::App;
use shardcast::protocol::deflate::{compress, inflate};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// Upgrades a raw socket on `path`, offering `offer`; returns it and the response head.
fn upgrade(addr: SocketAddr, path: &str, offer: Option<&str>) -> (TcpStream, String) {
    let ext = offer
        .map(|o| format!("Sec-WebSocket-Extensions: {o}\r\n"))
        .unwrap_or_default();
    upgraded(addr, path, &ext)
}

/// A whole masked client frame; `rsv1` marks it compressed.
fn frame(opcode: u8, rsv1: bool, payload: &[u8]) -> Vec<u8> {
    let first = 0x80 | if rsv1 { 0x40 } else { 0 } | opcode;
    client_frame(first, payload.len(), payload)
}

/// The next server frame: (first byte, payload).
fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).unwrap();
    assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).unwrap();
            u16::from_be_bytes(l) as usize
        }
        127 => {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).unwrap();
            u64::from_be_bytes(l) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).unwrap();
    (h[0], payload)
}

/// The next data message, inflated if it was compressed: (compressed, text).
fn read_message(s: &mut TcpStream) -> (bool, String) {
    let (b0, payload) = read_frame(s);
    assert_eq!(b0 & 0x80, 0x80, "whole messages");
    let compressed = b0 & 0x40 != 0;
    let data = if compressed {
        inflate(&payload, 1 << 24).unwrap().to_vec()
    } else {
        payload
    };
    (compressed, String::from_utf8(data).unwrap())
}

fn join(s: &mut TcpStream, topic: &str) {
    let msg = format!(r#"["1","1","{topic}","phx_join",{{}}]"#);
    s.write_all(&frame(1, false, msg.as_bytes())).unwrap();
    let (_, reply) = read_message(s);
    assert!(reply.contains(r#""status":"ok""#), "{reply}");
}

#[test]
fn an_offer_is_answered_and_messages_go_compressed_both_ways() {
    let server = TestServer::start(App::default(), |c| c.echo_endpoint = true);
    let (mut s, head) = upgrade(server.addr, "/echo", Some(OFFER));
    assert!(
        head.contains("sec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"),
        "{head}"
    );
    let text = "the quick brown fox jumps over the lazy dog. ".repeat(50);
    // A compressed message in, the echo compressed out.
    s.write_all(&frame(1, true, &compress(text.as_bytes(), 6, 15)))
        .unwrap();
    assert_eq!(read_message(&mut s), (true, text.clone()));
    // A plain message in is fine too (compression is per message); the echo is compressed.
    s.write_all(&frame(1, false, text.as_bytes())).unwrap();
    assert_eq!(read_message(&mut s), (true, text));
    // Under deflate_min_bytes: not compressed.
    s.write_all(&frame(1, true, &compress(b"short", 6, 15)))
        .unwrap();
    assert_eq!(read_message(&mut s), (false, "short".to_string()));
    // A compressed message split over fragments (RSV1 on the first only).
    let packed = compress("fragmented ".repeat(40).as_bytes(), 6, 15);
    let (a, b) = packed.split_at(packed.len() / 2);
    let mut first = frame(1, true, a);
    first[0] &= 0x7f; // not final
    s.write_all(&first).unwrap();
    s.write_all(&frame(0, false, b)).unwrap();
    assert_eq!(read_message(&mut s).1, "fragmented ".repeat(40));

    // Without an offer, or with deflate off, nothing is negotiated and RSV1 is a protocol error.
    let (mut plain, head) = upgrade(server.addr, "/echo", None);
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
    plain
        .write_all(&frame(1, true, &compress(b"x", 6, 15)))
        .unwrap();
    let (b0, close) = read_frame(&mut plain);
    assert_eq!(
        (b0 & 0x0f, u16::from_be_bytes([close[0], close[1]])),
        (8, 1002)
    );
    let off = TestServer::start(App::default(), |c| {
        c.echo_endpoint = true;
        c.websocket.deflate = false;
    });
    let (_, head) = upgrade(off.addr, "/echo", Some(OFFER));
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
}

#[test]
fn a_broadcast_is_compressed_once_and_shared_by_every_subscriber() {
    let server = TestServer::start(App::default(), |_| {});
    let path = "/socket/websocket?vsn=2.0.0";
    let mut packed: Vec<TcpStream> = (0..3)
        .map(|_| {
            let (mut s, head) = upgrade(server.addr, path, Some(OFFER));
            assert!(head.contains("permessage-deflate"), "{head}");
            join(&mut s, "echo:z");
            s
        })
        .collect();
    // Two that asked for a 10-bit window share one compression of their own.
    let mut narrow: Vec<TcpStream> = (0..2)
        .map(|_| {
            let (mut s, head) = upgrade(
                server.addr,
                path,
                Some("permessage-deflate; server_max_window_bits=10"),
            );
            assert!(head.contains("server_max_window_bits=10"), "{head}");
            join(&mut s, "echo:z");
            s
        })
        .collect();
    let mut plain = connect(&server.url(path));
    common::join(&mut plain, "1", "echo:z");
    let mut publisher = connect(&server.url(path));
    common::join(&mut publisher, "1", "echo:z");
    let before = server.metric("deflate_compressions");

    let body = "compress me once, ".repeat(200);
    send_text(
        &mut publisher,
        &format!(r#"["1","2","echo:z","broadcast",{{"body":"{body}"}}]"#),
    );
    let frames: Vec<(u8, Vec<u8>)> = packed.iter_mut().map(read_frame).collect();
    for (b0, _) in &frames {
        assert_eq!(*b0, 0xc1, "FIN + RSV1 + text");
    }
    assert!(
        frames.windows(2).all(|w| w[0].1 == w[1].1),
        "every subscriber got the same compressed bytes"
    );
    let text = String::from_utf8(inflate(&frames[0].1, 1 << 20).unwrap().to_vec()).unwrap();
    assert!(
        text.contains(&body) && text.contains(r#""broadcast""#),
        "{text}"
    );
    let got = recv_json(&mut plain);
    assert_eq!(
        got[4]["body"],
        body.as_str(),
        "the plain subscriber gets it plain"
    );
    let narrow_frames: Vec<(u8, Vec<u8>)> = narrow.iter_mut().map(read_frame).collect();
    assert_eq!(narrow_frames[0], narrow_frames[1]);
    let narrow_text = inflate(&narrow_frames[0].1, 1 << 20).unwrap();
    assert_eq!(&narrow_text[..], text.as_bytes());
    assert_eq!(
        server.metric("deflate_compressions") - before,
        2,
        "one compression per window for five subscribers"
    );
}

#[test]
fn a_decompression_bomb_closes_with_1009_and_the_server_goes_on() {
    let server = TestServer::start(App::default(), |c| {
        c.echo_endpoint = true;
        c.websocket.max_message_size = 64 * 1024;
    });
    let (mut s, _) = upgrade(server.addr, "/echo", Some(OFFER));
    let bomb = compress(&vec![b'a'; 10 << 20], 9, 15);
    assert!(bomb.len() < 64 * 1024, "{} bytes on the wire", bomb.len());
    s.write_all(&frame(1, true, &bomb)).unwrap();
    let (b0, close) = read_frame(&mut s);
    assert_eq!(
        (b0 & 0x0f, u16::from_be_bytes([close[0], close[1]])),
        (8, 1009)
    );
    let (mut next, _) = upgrade(server.addr, "/echo", Some(OFFER));
    next.write_all(&frame(1, false, b"still here")).unwrap();
    assert_eq!(read_message(&mut next), (false, "still here".to_string()));
}
