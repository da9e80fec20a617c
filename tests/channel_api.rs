//! The public channel API as a game studio would use it from its own crate: a connect hook with
//! assigns, a custom channel with timers, deferred replies, `broadcast_from` and crash isolation.

mod common;
use common::*;
use serde_json::json;
use shardcast::core::{
    App, Channel, ChannelCtx, ConnectInfo, ConnectRefused, HandleIn, HandleInfo, Payload, ReplyRef,
    Router, TerminateReason,
};
use shardcast::ReplyStatus;
use std::time::Duration;
use tungstenite::Message;

/// The socket's assigns: who it is.
struct Player {
    name: String,
}

fn token_hook(info: &ConnectInfo) -> Result<Player, ConnectRefused> {
    match info.param("token") {
        Some("good") => Ok(Player {
            name: "alice".into(),
        }),
        _ => Err(ConnectRefused {
            reason: "invalid token".into(),
        }),
    }
}

#[derive(Default)]
struct Table {
    pending: Option<ReplyRef>,
}

/// What a table's `handle_info` gets.
enum TableInfo {
    Tick(u32),
    Answer,
    Squared(ReplyRef, u64),
}

impl Channel for Table {
    type Info = TableInfo;

    fn join(
        &mut self,
        ctx: &mut ChannelCtx<'_, TableInfo>,
        _payload: Payload,
    ) -> Result<Payload, Payload> {
        let player = ctx.assigns::<Player>().ok_or_else(Payload::empty)?;
        Ok(Payload::json(&json!({ "user": player.name })))
    }

    fn handle_in(
        &mut self,
        ctx: &mut ChannelCtx<'_, TableInfo>,
        event: &str,
        payload: Payload,
    ) -> HandleIn {
        match event {
            "others" => {
                ctx.broadcast_from("others", &payload);
                HandleIn::NoReply
            }
            "countdown" => {
                ctx.send_after(Duration::from_millis(20), TableInfo::Tick(3));
                HandleIn::ok(Payload::empty())
            }
            "later" => {
                self.pending = Some(ctx.reply_ref());
                ctx.send_after(Duration::from_millis(10), TableInfo::Answer);
                HandleIn::NoReply
            }
            "crash" => panic!("boom"),
            "bye" => {
                // A push, the close, then a push the close must refuse.
                let sent = ctx.push("goodbye", &Payload::empty());
                ctx.close_socket(4000, "bye");
                let after = ctx.push("too_late", &Payload::empty());
                match sent.and(after) {
                    Ok(()) => HandleIn::NoReply,
                    Err(e) => panic!("{e}"),
                }
            }
            "square" => {
                // Work done off the shard (a stand-in for the storage thread), awaited without
                // blocking the connection; the answer arrives in handle_info.
                let n: u64 = payload.parse::<serde_json::Value>().unwrap()["n"]
                    .as_u64()
                    .unwrap();
                let (tx, rx) = flume::bounded(1);
                std::thread::spawn(move || tx.send(n * n).unwrap());
                let to = ctx.reply_ref();
                ctx.spawn(async move { TableInfo::Squared(to, rx.recv_async().await.unwrap()) });
                HandleIn::NoReply
            }
            "owner_square" => {
                let n: u64 = payload.parse::<serde_json::Value>().unwrap()["n"]
                    .as_u64()
                    .unwrap();
                ctx.run_on_owner(move |owner| {
                    let (tx, rx) = flume::bounded(1);
                    std::thread::spawn(move || tx.send(n * n).unwrap());
                    owner.spawn_then(
                        async move { rx.recv_async().await.unwrap() },
                        |owner, sq| {
                            owner.broadcast("squared", &Payload::json(&json!({ "sq": sq })));
                        },
                    );
                });
                HandleIn::NoReply
            }
            _ => HandleIn::error_reason("unknown event"),
        }
    }

    fn handle_info(&mut self, ctx: &mut ChannelCtx<'_, TableInfo>, msg: TableInfo) -> HandleInfo {
        let sent = match msg {
            TableInfo::Tick(n) => {
                if n > 1 {
                    ctx.send_after(Duration::from_millis(20), TableInfo::Tick(n - 1));
                }
                ctx.push("tick", &Payload::json(&json!({ "n": n })))
            }
            TableInfo::Squared(to, sq) => {
                ctx.reply(&to, ReplyStatus::Ok, &Payload::json(&json!({ "sq": sq })))
            }
            TableInfo::Answer => match self.pending.take() {
                Some(to) => ctx.reply(
                    &to,
                    ReplyStatus::Ok,
                    &Payload::json(&json!({ "answer": 42 })),
                ),
                None => Ok(()),
            },
        };
        if let Err(e) = sent {
            panic!("a frame of this test cannot be encoded: {e}");
        }
        HandleInfo::Continue
    }

    fn terminate(&mut self, ctx: &mut ChannelCtx<'_, TableInfo>, reason: TerminateReason) {
        // What a presence-like channel does: release its entry, whatever ended the join.
        let payload = Payload::json(&json!({ "reason": format!("{reason:?}") }));
        ctx.broadcast("released", &payload);
    }
}

fn app() -> App {
    App::new(
        token_hook,
        Router::new()
            .channel("table:*", Table::default)
            .channel("echo:*", shardcast::core::echo::EchoChannel::default),
    )
}

#[test]
fn connect_hook_refuses_with_403_and_assigns_reach_channels() {
    let server = TestServer::start(app(), |_| {});
    match tungstenite::connect(server.url("/socket/websocket?vsn=2.0.0&token=bad")) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected HTTP 403, got {other:?}"),
    }
    assert_eq!(server.metric("connect_refused"), 1);
    let mut ws = connect(&server.url("/socket/websocket?vsn=2.0.0&token=good"));
    send_text(&mut ws, r#"["1","1","table:1","phx_join",{}]"#);
    assert_eq!(
        recv_json(&mut ws)[4],
        json!({"response": {"user": "alice"}, "status": "ok"})
    );
}

#[test]
fn timers_self_messages_and_deferred_replies() {
    let server = TestServer::start(app(), |_| {});
    let mut ws = connect(&server.url("/socket/websocket?vsn=2.0.0&token=good"));
    send_text(&mut ws, r#"["1","1","table:1","phx_join",{}]"#);
    recv_json(&mut ws);
    send_text(&mut ws, r#"["1","2","table:1","countdown",{}]"#);
    assert_eq!(recv_json(&mut ws)[1], "2");
    for n in [3, 2, 1] {
        assert_eq!(
            recv_json(&mut ws),
            json!(["1", null, "table:1", "tick", {"n": n}])
        );
    }
    send_text(&mut ws, r#"["1","3","table:1","later",{}]"#);
    assert_eq!(
        recv_json(&mut ws),
        json!(["1", "3", "table:1", "phx_reply", {"response": {"answer": 42}, "status": "ok"}])
    );
}

#[test]
fn broadcast_from_skips_the_sender() {
    let server = TestServer::start(app(), |_| {});
    let url = server.url("/socket/websocket?vsn=2.0.0&token=good");
    let (mut a, mut b) = (connect(&url), connect(&url));
    for ws in [&mut a, &mut b] {
        send_text(ws, r#"["1","1","table:1","phx_join",{}]"#);
        recv_json(ws);
    }
    send_text(&mut a, r#"["1","2","table:1","others",{"x":1}]"#);
    assert_eq!(
        recv_json(&mut b),
        json!([null, null, "table:1", "others", {"x": 1}])
    );
    // `a` gets nothing from its own broadcast_from: the next frame it sees is its heartbeat reply.
    send_text(&mut a, r#"[null,"3","phoenix","heartbeat",{}]"#);
    assert_eq!(recv_json(&mut a)[2], "phoenix");
}

#[test]
fn a_crash_errors_only_that_channel() {
    let server = TestServer::start(app(), |_| {});
    let mut ws = connect(&server.url("/socket/websocket?vsn=2.0.0&token=good"));
    join(&mut ws, "1", "echo:side");
    send_text(&mut ws, r#"["2","2","table:1","phx_join",{}]"#);
    recv_json(&mut ws);
    send_text(&mut ws, r#"["2","3","table:1","crash",{}]"#);
    assert_eq!(
        recv_json(&mut ws),
        json!(["2", "2", "table:1", "phx_error", {}])
    );
    // The crashed topic is no longer joined; the other channel and the connection live on.
    send_text(&mut ws, r#"["2","4","table:1","countdown",{}]"#);
    assert_eq!(
        recv_json(&mut ws)[4]["response"]["reason"],
        "unmatched topic"
    );
    send_text(&mut ws, r#"["1","5","echo:side","echo",{"ok":true}]"#);
    assert_eq!(recv_json(&mut ws)[4]["response"], json!({"ok": true}));
}

#[test]
fn spawned_work_answers_through_handle_info_and_owner_continuations() {
    let server = TestServer::start(app(), |_| {});
    let mut ws = connect(&server.url("/socket/websocket?vsn=2.0.0&token=good"));
    send_text(&mut ws, r#"["1","1","table:1","phx_join",{}]"#);
    recv_json(&mut ws);
    send_text(&mut ws, r#"["1","2","table:1","square",{"n":12}]"#);
    assert_eq!(
        recv_json(&mut ws),
        json!(["1", "2", "table:1", "phx_reply", {"response": {"sq": 144}, "status": "ok"}])
    );
    send_text(&mut ws, r#"["1","3","table:1","owner_square",{"n":5}]"#);
    assert_eq!(
        recv_json(&mut ws),
        json!([null, null, "table:1", "squared", {"sq": 25}])
    );
}

#[test]
fn a_channel_closes_its_socket_in_order() {
    let server = TestServer::start(app(), |_| {});
    let mut ws = connect(&server.url("/socket/websocket?vsn=2.0.0&token=good"));
    send_text(&mut ws, r#"["1","1","table:1","phx_join",{}]"#);
    recv_json(&mut ws);
    send_text(&mut ws, r#"["1","2","table:1","bye",{}]"#);
    assert_eq!(recv_json(&mut ws)[3], "goodbye");
    // The close frame comes next: the push made after close_socket never leaves.
    match recv(&mut ws) {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4000),
        other => panic!("expected the close frame, got {other:?}"),
    }
}
