//! Transport behaviour against bad or slow clients, over real sockets.

mod common;
use common::*;
use serde_json::json;
use shardcast::core::App;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tungstenite::Message;

/// Reads until the server closes the TCP connection; panics if it stays open past 5 s.
fn expect_eof(mut s: TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut all = vec![];
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
            Err(e) => panic!("server did not close the connection: {e}"),
        }
    }
}

#[test]
fn invalid_json_closes_1011_and_others_keep_working() {
    let server = TestServer::start(App::default(), |_| {});
    let mut good = connect(&server.url("/socket/websocket?vsn=2.0.0"));
    let mut bad = connect(&server.url("/socket/websocket?vsn=2.0.0"));
    join(&mut good, "1", "echo:a");
    send_text(&mut bad, "not json");
    assert_eq!(recv_close(&mut bad), 1011);
    let mut bad2 = connect(&server.url("/socket/websocket?vsn=2.0.0"));
    send_text(&mut bad2, r#"["1","1","echo:a"]"#);
    assert_eq!(recv_close(&mut bad2), 1011);
    send_text(&mut good, r#"["1","2","echo:a","echo",{"still":"here"}]"#);
    assert_eq!(
        recv_json(&mut good)[4]["response"],
        json!({"still": "here"})
    );
    assert!(server.metric("protocol_errors") >= 2);
}

#[test]
fn frames_over_the_limit_close_1009() {
    let server = TestServer::start(App::default(), |c| {
        c.websocket.max_frame_size = 64 * 1024;
        c.websocket.max_message_size = 64 * 1024;
    });
    let mut ws = connect(&server.url("/socket/websocket?vsn=2.0.0"));
    let big = format!(
        r#"["1","1","echo:a","echo",{{"x":"{}"}}]"#,
        "a".repeat(100_000)
    );
    // The server may close before the whole frame is written; both outcomes end in 1009.
    let _ = ws.send(Message::text(big));
    assert_eq!(recv_close(&mut ws), 1009);
}

#[test]
fn silent_handshake_is_dropped_after_the_timeout() {
    let server = TestServer::start(App::default(), |c| c.websocket.handshake_timeout_ms = 200);
    let silent = TcpStream::connect(server.addr).unwrap();
    let mut partial = TcpStream::connect(server.addr).unwrap();
    partial
        .write_all(b"GET /socket/websocket HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert!(expect_eof(silent).is_empty());
    assert!(expect_eof(partial).is_empty());
    assert_eq!(server.metric("handshake_failures"), 2);
    // The server still serves others.
    let mut ws = connect(&server.url("/socket/websocket?vsn=2.0.0"));
    join(&mut ws, "1", "echo:a");
}

#[test]
fn a_trickled_handshake_gets_no_more_time_than_a_silent_one() {
    // Slowloris: one byte of a valid upgrade every 50 ms, against a 300 ms handshake timeout.
    // Restarting the timeout on every byte would keep the socket forever; the deadline counts
    // from the accept, so the server closes it while the head is still incomplete.
    let server = TestServer::start(App::default(), |c| c.websocket.handshake_timeout_ms = 300);
    let head = b"GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut closed_at = None;
    for (i, b) in head.iter().enumerate() {
        if s.write_all(&[*b]).is_err() {
            closed_at = Some(i);
            break;
        }
        let mut one = [0u8; 1];
        match s.read(&mut one) {
            Ok(0) => {
                closed_at = Some(i);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                closed_at = Some(i);
                break;
            }
            Ok(_) => panic!("the server answered an incomplete head"),
            Err(_) => {} // read timeout: the pace of the trickle
        }
    }
    let at = closed_at.expect("the server kept a trickling handshake open");
    assert!(
        at < head.len() - 1,
        "closed only at byte {at} of {}",
        head.len()
    );
    assert_eq!(server.metric("handshake_failures"), 1);
}

#[test]
fn garbage_and_oversized_heads_get_http_errors() {
    let server = TestServer::start(App::default(), |_| {});
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(b"\x16\x03\x01 garbage\r\n\r\n").unwrap();
    assert!(String::from_utf8_lossy(&expect_eof(s)).starts_with("HTTP/1.1 400"));
    let mut s = TcpStream::connect(server.addr).unwrap();
    let _ = s.write_all(format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(20_000)).as_bytes());
    assert!(String::from_utf8_lossy(&expect_eof(s)).starts_with("HTTP/1.1 431"));
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(b"GET /socket/websocket?vsn=9 HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    assert!(String::from_utf8_lossy(&expect_eof(s)).starts_with("HTTP/1.1 400"));
}

#[test]
fn malformed_websocket_keys_get_400() {
    let server = TestServer::start(App::default(), |_| {});
    for key in [
        "abc".to_string(),
        "A".repeat(2000),
        "dGhlIHNhbXBsZSBub25jZQ".into(),
    ] {
        let mut s = TcpStream::connect(server.addr).unwrap();
        let head = format!(
            "GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        let answer = String::from_utf8_lossy(&expect_eof(s)).into_owned();
        assert!(answer.starts_with("HTTP/1.1 400"), "{key}: {answer}");
        assert!(answer.contains("Sec-WebSocket-Key"), "{answer}");
    }
    assert_eq!(server.metric("handshake_failures"), 3);
    // The RFC's example key still upgrades.
    let _ws = connect(&server.url("/socket/websocket?vsn=2.0.0"));
}

#[test]
fn long_names_close_the_socket_and_joins_per_socket_are_bounded() {
    let server = TestServer::start(App::default(), |c| c.channels.max_joins_per_socket = 3);
    let mut ws = connect(&server.url("/socket/websocket?vsn=2.0.0"));
    for i in 0..3 {
        send_text(
            &mut ws,
            &format!(r#"["{i}","{i}","echo:{i}","phx_join",{{}}]"#),
        );
        assert_eq!(recv_json(&mut ws)[4]["status"], "ok");
    }
    send_text(&mut ws, r#"["9","9","echo:9","phx_join",{}]"#);
    assert_eq!(
        recv_json(&mut ws)[4],
        json!({"status": "error", "response": {"reason": "too_many_joins"}})
    );
    let long = "x".repeat(300);
    send_text(&mut ws, &format!(r#"["1","2","echo:1","{long}",{{}}]"#));
    assert_eq!(recv_close(&mut ws), 1008);
}

#[test]
fn silent_socket_is_closed_after_the_idle_timeout() {
    let server = TestServer::start(App::default(), |c| c.websocket.idle_timeout_ms = 300);
    let mut ws = connect(&server.url("/socket/websocket?vsn=2.0.0"));
    assert_eq!(recv_close(&mut ws), 1001);
    assert_eq!(server.metric("idle_timeouts"), 1);
}

#[test]
fn heartbeats_keep_a_socket_alive_past_the_idle_timeout() {
    let server = TestServer::start(App::default(), |c| c.websocket.idle_timeout_ms = 400);
    let mut ws = connect(&server.url("/socket/websocket?vsn=2.0.0"));
    // Each heartbeat waits for its reply, so the loop spans several idle timeouts of traffic.
    let start = std::time::Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_millis(1200) {
        n += 1;
        send_text(
            &mut ws,
            &format!(r#"[null,"{n}","phoenix","heartbeat",{{}}]"#),
        );
        assert_eq!(recv_json(&mut ws)[1], json!(n.to_string()));
        std::thread::sleep(Duration::from_millis(100)); // client cadence, not synchronisation
    }
    assert_eq!(server.metric("idle_timeouts"), 0);
}

#[test]
fn ping_gets_pong_and_close_is_echoed() {
    let server = TestServer::start(App::default(), |_| {});
    let mut ws = connect(&server.url("/socket/websocket?vsn=2.0.0"));
    ws.send(Message::Ping(vec![1, 2, 3].into())).unwrap();
    match ws.read().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], &[1, 2, 3]),
        other => panic!("unexpected {other:?}"),
    }
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: close_code(4001),
        reason: "bye".into(),
    }))
    .unwrap();
    assert_eq!(recv_close(&mut ws), 4001);
}

/// A subscriber that stops reading must not grow the server's memory: once its backlog passes
/// the limit it is disconnected with 1013 and counted, while the publisher is unaffected.
#[test]
fn slow_consumer_is_disconnected_with_1013() {
    let server = TestServer::start(App::default(), |c| {
        c.outbound.max_queued_frames = 256;
        c.outbound.max_queued_bytes = 256 * 1024;
    });
    // A tiny receive buffer so the kernel cannot absorb the backlog for the idle reader.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&server.addr.into()).unwrap();
    let stream: TcpStream = sock.into();
    let url = server.url("/socket/websocket?vsn=2.0.0");
    let (mut slow, _) = tungstenite::client(
        url.as_str(),
        tungstenite::stream::MaybeTlsStream::Plain(stream),
    )
    .unwrap();
    set_timeout(&slow, Duration::from_secs(5));
    join(&mut slow, "1", "echo:slow");

    let mut publisher = connect(&url);
    join(&mut publisher, "1", "echo:slow");
    let payload = format!(r#"{{"data":"{}"}}"#, "x".repeat(4000));
    let mut sent = 0;
    while server.metric("slow_consumer_disconnects") == 0 {
        assert!(sent < 5000, "the slow consumer was never disconnected");
        sent += 1;
        send_text(
            &mut publisher,
            &format!(r#"["1","{sent}","echo:slow","broadcast",{payload}]"#),
        );
        // The publisher reads its own copy and reply: it is not slowed by the idle subscriber.
        assert_eq!(recv_json(&mut publisher)[3], "broadcast");
        assert_eq!(recv_json(&mut publisher)[3], "phx_reply");
    }
    // The slow client, reading again, finds the close frame after what was already in flight.
    assert_eq!(recv_close(&mut slow), 1013);
    send_text(&mut publisher, r#"["1","x","echo:slow","echo",{}]"#);
    assert_eq!(recv_json(&mut publisher)[4]["status"], "ok");
}

#[test]
fn graceful_shutdown_closes_clients_with_1001() {
    let server = TestServer::start(App::default(), |_| {});
    let mut ws = connect(&server.url("/socket/websocket?vsn=2.0.0"));
    join(&mut ws, "1", "echo:a");
    let stopper = std::thread::spawn(move || server.shutdown());
    assert_eq!(recv_close(&mut ws), 1001);
    drop(ws);
    stopper.join().unwrap();
}

/// An idle connection holds no receive buffer (counted in `/metrics`), and frames queued
/// together go out together: a burst of broadcasts takes far fewer sends than frames, and the
/// sends of all its subscribers far fewer submissions (io_uring_enter calls) than sends.
#[test]
fn idle_connections_hold_no_receive_buffer_and_writes_are_batched() {
    let server = TestServer::start(App::default(), |_| {});
    let url = server.url("/socket/websocket?vsn=2.0.0");
    let mut members: Vec<Ws> = (0..20)
        .map(|_| {
            let mut ws = connect(&url);
            join(&mut ws, "1", "echo:idle");
            ws
        })
        .collect();
    assert_eq!(
        server.metric("receive_buffers"),
        0,
        "20 idle joined sockets"
    );

    // A socket with half a frame holds one, and only it.
    let (mut half, _) = upgraded(server.addr, "/socket/websocket?vsn=2.0.0", "");
    half.write_all(&client_frame(0x81, 1000, b"[\"1\""))
        .unwrap();
    server.wait_for_metric("receive_buffers", 1);
    drop(half);

    let (frames, writes, submissions) = (
        server.metric("frames_out"),
        server.metric("write_syscalls"),
        server.metric("write_submissions"),
    );
    let mut sender = connect(&url);
    join(&mut sender, "1", "echo:idle");
    let count = 200;
    let mut burst = Vec::new();
    for i in 0..count {
        burst.extend(text_frame(&format!(
            r#"["1","b{i}","echo:idle","broadcast",{{"i":{i}}}]"#
        )));
    }
    raw(&mut sender).write_all(&burst).unwrap();
    for ws in members.iter_mut().chain(std::iter::once(&mut sender)) {
        let mut got = 0;
        while got < count {
            if recv_json(ws)[3] == "broadcast" {
                got += 1;
            }
        }
    }
    let frames = server.metric("frames_out") - frames;
    let writes = server.metric("write_syscalls") - writes;
    let submissions = server.metric("write_submissions") - submissions;
    assert!(frames >= 21 * count, "{frames} frames");
    assert!(
        writes * 8 <= frames,
        "{frames} frames took {writes} writes: not batched"
    );
    assert!(
        submissions > 0 && submissions * 4 <= writes,
        "{writes} sends took {submissions} submissions: not one per turn"
    );
    server.wait_for_metric("receive_buffers", 0);
}

/// A session idle past `park_after_ms` is parked (no task: counted in `/metrics`) and carries on
/// where it was at its next event — a message from its client, a broadcast from another
/// member, the server's shutdown.
#[test]
fn idle_sessions_park_and_resume_on_their_next_event() {
    let server = TestServer::start(App::default(), |c| c.websocket.park_after_ms = 50);
    let url = server.url("/socket/websocket?vsn=2.0.0");
    let mut members: Vec<Ws> = (0..10)
        .map(|_| {
            let mut ws = connect(&url);
            join(&mut ws, "1", "echo:parked");
            ws
        })
        .collect();
    let parked_all = |want: u64| server.wait_for_metric("sessions_parked", want);
    parked_all(10);

    // A parked session's own client wakes it: the echo comes back.
    send_text(
        &mut members[0],
        r#"["1","e1","echo:parked","echo",{"n":1}]"#,
    );
    let reply = recv_json(&mut members[0]);
    assert_eq!(reply[1], "e1");
    assert_eq!(reply[4]["response"]["n"], 1);

    // A broadcast from it reaches the others while they stay parked (deliveries need no
    // task), and each of them still answers its own client afterwards.
    parked_all(10);
    send_text(
        &mut members[0],
        r#"["1","b1","echo:parked","broadcast",{"hi":1}]"#,
    );
    for ws in members.iter_mut() {
        loop {
            let m = recv_json(ws);
            if m[3] == "broadcast" {
                assert_eq!(m[4]["hi"], 1);
                break;
            }
        }
    }
    assert!(
        server.metric("sessions_parked") >= 9,
        "a delivery woke a parked session"
    );
    for (i, ws) in members.iter_mut().enumerate().skip(1) {
        send_text(
            ws,
            &format!(r#"["1","e{i}","echo:parked","echo",{{"n":{i}}}]"#),
        );
        let reply = recv_json(ws);
        assert_eq!(reply[4]["response"]["n"], i);
    }
    parked_all(10);

    // Shutdown reaches parked sessions too: each gets its 1001.
    server.shutdown();
    for ws in members.iter_mut() {
        assert_eq!(recv_close(ws), 1001);
    }
}
