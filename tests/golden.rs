//! Replays the frames captured from a real Phoenix 1.7 server (`tests/fixtures/phoenix-golden/`)
//! against shardcast, with a channel that behaves like the one that produced them, and checks
//! every frame shardcast sends (presence `phx_ref` values aside).

mod common;
use common::*;
use serde_json::{json, Value};
use shardcast::core::{
    App, Channel, ChannelCtx, HandleIn, HandleInfo, Payload, Router, TerminateReason,
};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tungstenite::Message;

fn golden(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/phoenix-golden")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// --- The channel of the capture: `room:*` with presence keyed by user id. -------------------

thread_local! {
    /// topic -> user id -> metas. Shard-local, which is enough on the one-shard server used here.
    static PRESENCE: RefCell<BTreeMap<String, BTreeMap<String, Vec<Value>>>> = RefCell::default();
    static NEXT_REF: RefCell<u64> = const { RefCell::new(0) };
}

#[derive(Default)]
struct GoldenRoom {
    topic: String,
    user: Option<(String, Value)>,
}

fn remove_meta(topic: &str, user: &str, meta: &Value) {
    PRESENCE.with(|p| {
        let mut p = p.borrow_mut();
        let users = p.entry(topic.to_string()).or_default();
        if let Some(metas) = users.get_mut(user) {
            metas.retain(|m| m != meta);
            if metas.is_empty() {
                users.remove(user);
            }
        }
    });
}

struct AfterJoin;

impl GoldenRoom {
    fn untrack(&mut self, ctx: &mut ChannelCtx<'_, AfterJoin>, announce: bool) {
        let Some((user, meta)) = self.user.take() else {
            return;
        };
        remove_meta(&self.topic, &user, &meta);
        if announce {
            let diff = json!({"joins": {}, "leaves": {user: {"metas": [meta]}}});
            ctx.broadcast("presence_diff", &Payload::json(&diff));
        }
    }
}

impl Channel for GoldenRoom {
    type Info = AfterJoin;

    fn join(
        &mut self,
        ctx: &mut ChannelCtx<'_, AfterJoin>,
        payload: Payload,
    ) -> Result<Payload, Payload> {
        if ctx.topic() == "room:forbidden" {
            return Err(Payload::json(&json!({"reason": "unauthorized"})));
        }
        self.topic = ctx.topic().to_string();
        let p: Value = payload.parse().unwrap();
        if let (Some(id), Some(name)) = (p["user_id"].as_str(), p["name"].as_str()) {
            let phx_ref = NEXT_REF.with(|r| {
                *r.borrow_mut() += 1;
                format!("ref{}", r.borrow())
            });
            self.user = Some((id.to_string(), json!({"name": name, "phx_ref": phx_ref})));
            ctx.send_self(AfterJoin);
        }
        Ok(Payload::empty())
    }

    fn handle_in(
        &mut self,
        ctx: &mut ChannelCtx<'_, AfterJoin>,
        event: &str,
        payload: Payload,
    ) -> HandleIn {
        match event {
            "new_msg" => {
                ctx.broadcast("new_msg", &payload);
                HandleIn::ok(payload)
            }
            "ping" => HandleIn::ok(payload),
            "error_reply" => HandleIn::error_reason("nope"),
            "bin" => {
                ctx.broadcast("bin", &payload);
                HandleIn::ok(payload)
            }
            "bin_push" => {
                ctx.push("bin_push", &payload).unwrap();
                HandleIn::ok(Payload::empty())
            }
            "crash" => panic!("crash requested by the client"),
            "stop" => HandleIn::Stop(Some((shardcast::ReplyStatus::Ok, Payload::empty()))),
            _ => HandleIn::error_reason("unknown event"),
        }
    }

    fn handle_info(&mut self, ctx: &mut ChannelCtx<'_, AfterJoin>, _msg: AfterJoin) -> HandleInfo {
        {
            let (user, meta) = self.user.clone().unwrap();
            let state = PRESENCE.with(|p| {
                let mut p = p.borrow_mut();
                let users = p.entry(ctx.topic().to_string()).or_default();
                users.entry(user.clone()).or_default().push(meta.clone());
                users
                    .iter()
                    .map(|(k, metas)| (k.clone(), json!({"metas": metas})))
                    .collect::<serde_json::Map<_, _>>()
            });
            ctx.broadcast(
                "presence_diff",
                &Payload::json(&json!({"joins": {user: {"metas": [meta]}}, "leaves": {}})),
            );
            ctx.push("presence_state", &Payload::json(&state)).unwrap();
        }
        HandleInfo::Continue
    }

    fn terminate(&mut self, ctx: &mut ChannelCtx<'_, AfterJoin>, reason: TerminateReason) {
        // As captured: a replaced (duplicate) join leaves no diff behind.
        self.untrack(ctx, reason != TerminateReason::Duplicate);
    }
}

fn golden_app() -> App {
    App::new(
        shardcast::core::AllowAll,
        Router::new().channel("room:*", GoldenRoom::default),
    )
}

/// Presence refs are unique per server: compare everything else.
fn normalize(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if k == "phx_ref" {
                    *val = json!("*");
                } else {
                    normalize(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalize),
        _ => {}
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn v2_frames_match_the_phoenix_capture() {
    let server = golden_app_server();
    let log = golden("v2-frames.log");
    let mut clients: BTreeMap<String, Ws> = BTreeMap::new();
    let mut checked = 0;
    for line in log.lines() {
        let Some((who, rest)) = line.split_once(' ') else {
            continue;
        };
        if who.len() != 1 {
            continue;
        }
        let (dir, body) = rest.split_at(3);
        let body = body.trim();
        match dir {
            "---" if body.starts_with("ws open") => {
                clients.insert(
                    who.into(),
                    connect(&server.url("/socket/websocket?vsn=2.0.0")),
                );
            }
            "---" if body.starts_with("ws closed") => {
                let code: u16 = body.trim_start_matches("ws closed").trim().parse().unwrap();
                let ws = clients.get_mut(who).unwrap();
                if code == 1000 {
                    // The client ends its session normally; the server echoes the close code.
                    ws.close(None).unwrap();
                }
                assert_eq!(recv_close(ws), code, "{line}");
                checked += 1;
            }
            ">>>" => {
                let ws = clients.get_mut(who).unwrap();
                match body.strip_prefix("BIN ") {
                    Some(b) => send_binary(ws, hex(b.split_whitespace().next().unwrap())),
                    None => send_text(ws, body),
                }
            }
            "<<<" => {
                let ws = clients.get_mut(who).unwrap();
                match body.strip_prefix("BIN ") {
                    Some(b) => {
                        let want = hex(b.split_whitespace().next().unwrap());
                        match recv(ws) {
                            Message::Binary(got) => assert_eq!(got.to_vec(), want, "{line}"),
                            other => panic!("{line}: got {other:?}"),
                        }
                    }
                    None => {
                        let mut want: Value = serde_json::from_str(body).unwrap();
                        let mut got = recv_json(ws);
                        normalize(&mut want);
                        normalize(&mut got);
                        assert_eq!(got, want, "{line}");
                    }
                }
                checked += 1;
            }
            _ => {}
        }
    }
    assert!(checked >= 35, "only {checked} frames checked");
}

#[test]
fn v1_frames_match_the_phoenix_capture_per_topic_order() {
    let server = golden_app_server();
    let log = golden("v1-frames.log");
    let mut ws = connect(&server.url("/socket/websocket?vsn=1.0.0"));
    // Phoenix orders frames per topic (the heartbeat is answered by the socket process, ahead of
    // the channel's frames); compare each topic's sequence.
    let mut expected: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut sent = 0;
    for line in log.lines() {
        if let Some(body) = line.strip_prefix(">>> ") {
            send_text(&mut ws, body);
            sent += 1;
        } else if let Some(body) = line.strip_prefix("<<< ") {
            let mut v: Value = serde_json::from_str(body).unwrap();
            normalize(&mut v);
            expected
                .entry(v["topic"].as_str().unwrap().to_string())
                .or_default()
                .push(v);
        }
    }
    assert_eq!(sent, 3);
    let total: usize = expected.values().map(Vec::len).sum();
    let mut got: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for _ in 0..total {
        let text = recv_text(&mut ws);
        // V1 frames carry exactly Phoenix's keys.
        let mut v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["event", "payload", "ref", "topic"]
        );
        normalize(&mut v);
        got.entry(v["topic"].as_str().unwrap().to_string())
            .or_default()
            .push(v);
    }
    assert_eq!(got, expected);
}

fn golden_app_server() -> TestServer {
    TestServer::start(golden_app(), |_| {})
}
