//! The built-in `echo:*` channel and the Phoenix socket basics, over real sockets.

mod common;
use common::*;
use serde_json::json;
use shardcast::core::App;

#[test]
fn join_echo_broadcast_and_unmatched_topic() {
    let server = TestServer::start(App::default(), |_| {});
    let mut a = connect(&server.url("/socket/websocket?vsn=2.0.0"));
    let mut b = connect(&server.url("/socket/websocket?vsn=2.0.0"));
    join(&mut a, "1", "echo:lobby");
    join(&mut b, "7", "echo:lobby");

    send_text(&mut a, r#"["1","2","echo:lobby","echo",{"hello":"world"}]"#);
    assert_eq!(
        recv_json(&mut a),
        json!(["1", "2", "echo:lobby", "phx_reply", {"response": {"hello": "world"}, "status": "ok"}])
    );

    send_text(&mut a, r#"["1","3","echo:lobby","broadcast",{"n":1}]"#);
    // The sender gets the broadcast copy before its reply, as in Phoenix.
    assert_eq!(
        recv_json(&mut a),
        json!([null, null, "echo:lobby", "broadcast", {"n": 1}])
    );
    assert_eq!(
        recv_json(&mut a),
        json!(["1", "3", "echo:lobby", "phx_reply", {"response": {}, "status": "ok"}])
    );
    assert_eq!(
        recv_json(&mut b),
        json!([null, null, "echo:lobby", "broadcast", {"n": 1}])
    );

    send_text(&mut a, r#"["1","4","echo:lobby","nope",{}]"#);
    assert_eq!(
        recv_json(&mut a)[4],
        json!({"response": {"reason": "unknown event"}, "status": "error"})
    );

    send_text(&mut a, r#"["1","5","echo:other","echo",{}]"#);
    assert_eq!(
        recv_json(&mut a),
        json!([null, "5", "echo:other", "phx_reply", {"response": {"reason": "unmatched topic"}, "status": "error"}])
    );
    send_text(&mut a, r#"["9","9","nosuch:topic","phx_join",{}]"#);
    assert_eq!(
        recv_json(&mut a),
        json!([null, "9", "nosuch:topic", "phx_reply", {"response": {"reason": "unmatched topic"}, "status": "error"}])
    );

    send_text(&mut a, r#"[null,"10","phoenix","heartbeat",{}]"#);
    assert_eq!(
        recv_json(&mut a),
        json!([null, "10", "phoenix", "phx_reply", {"response": {}, "status": "ok"}])
    );
}

#[test]
fn binary_echo_and_broadcast() {
    let server = TestServer::start(App::default(), |_| {});
    let mut a = connect(&server.url("/socket/websocket?vsn=2.0.0"));
    join(&mut a, "1", "echo:bin");
    let push = |event: &str, payload: &[u8]| {
        let mut m = vec![0u8, 1, 1, 8, event.len() as u8];
        m.extend_from_slice(b"12echo:bin");
        m.extend_from_slice(event.as_bytes());
        m.extend_from_slice(payload);
        m
    };
    send_binary(&mut a, push("echo", &[1, 2, 3, 255]));
    let mut reply = vec![1u8, 1, 1, 8, 2];
    reply.extend_from_slice(b"12echo:binok");
    reply.extend_from_slice(&[1, 2, 3, 255]);
    assert_eq!(recv(&mut a).into_data().to_vec(), reply);

    send_binary(&mut a, push("broadcast", &[9, 8]));
    let mut bcast = vec![2u8, 8, 9];
    bcast.extend_from_slice(b"echo:binbroadcast");
    bcast.extend_from_slice(&[9, 8]);
    assert_eq!(recv(&mut a).into_data().to_vec(), bcast);
    assert_eq!(recv_json(&mut a)[4]["status"], "ok");
}

#[test]
fn leave_and_duplicate_join() {
    let server = TestServer::start(App::default(), |_| {});
    let mut a = connect(&server.url("/socket/websocket?vsn=2.0.0"));
    join(&mut a, "1", "echo:x");
    send_text(&mut a, r#"["2","2","echo:x","phx_join",{}]"#);
    assert_eq!(
        recv_json(&mut a),
        json!(["2", "2", "echo:x", "phx_reply", {"response": {}, "status": "ok"}])
    );
    assert_eq!(
        recv_json(&mut a),
        json!(["1", "1", "echo:x", "phx_close", {}])
    );
    // Still subscribed exactly once after the duplicate join.
    send_text(&mut a, r#"["2","3","echo:x","broadcast",{}]"#);
    assert_eq!(recv_json(&mut a)[3], "broadcast");
    assert_eq!(recv_json(&mut a)[3], "phx_reply");
    send_text(&mut a, r#"["2","4","echo:x","phx_leave",{}]"#);
    assert_eq!(
        recv_json(&mut a),
        json!(["2", "4", "echo:x", "phx_reply", {"response": {}, "status": "ok"}])
    );
    assert_eq!(
        recv_json(&mut a),
        json!(["2", "2", "echo:x", "phx_close", {}])
    );
    send_text(&mut a, r#"["2","5","echo:x","echo",{}]"#);
    assert_eq!(
        recv_json(&mut a)[4]["response"]["reason"],
        "unmatched topic"
    );
}

#[test]
fn v1_serializer() {
    let server = TestServer::start(App::default(), |_| {});
    let mut a = connect(&server.url("/socket/websocket?vsn=1.0.0"));
    send_text(
        &mut a,
        r#"{"topic":"echo:v1","event":"phx_join","payload":{},"ref":"1","join_ref":"1"}"#,
    );
    assert_eq!(
        recv_text(&mut a),
        r#"{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":"1","topic":"echo:v1"}"#
    );
    send_text(
        &mut a,
        r#"{"topic":"echo:v1","event":"broadcast","payload":{"a":1},"ref":"2","join_ref":"1"}"#,
    );
    assert_eq!(
        recv_text(&mut a),
        r#"{"event":"broadcast","payload":{"a":1},"ref":null,"topic":"echo:v1"}"#
    );
    assert_eq!(
        recv_text(&mut a),
        r#"{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":"2","topic":"echo:v1"}"#
    );
}

#[test]
fn health_metrics_and_unknown_paths() {
    let server = TestServer::start(App::default(), |_| {});
    let (status, body) = http_get(server.addr, "/health");
    assert_eq!(status, 200);
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    let (status, body) = http_get(server.addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        body.contains("shardcast_connections{shard=\"0\"}"),
        "{body}"
    );
    assert_eq!(http_get(server.addr, "/nope").0, 404);
    assert_eq!(http_get(server.addr, "/socket/websocket").0, 400);
}
