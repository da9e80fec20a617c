//! The `room:*` channel over real sockets: room_state, messages (validation, order, ids,
//! history across restarts and `kill -9`), typing (with the automatic stop), user_joined /
//! user_left counts across shards and tabs, and per-user session records.

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ROOM: &str = "room:lobby";

fn ids(messages: &Value) -> Vec<i64> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect()
}

/// `[join_ref, ref, topic, event]` of a message.
fn head(m: &Value) -> Value {
    Value::Array(m.as_array().unwrap()[..4].to_vec())
}

#[test]
fn join_sends_presence_and_room_state_in_phoenix_order() {
    let dir = TempDir::new("rooms-order");
    let server = FeatureServer::start(&dir.0, |_| {});
    let mut alice = server.client("u1", "Alice");
    let (join_ref, reply) = alice.join(ROOM, json!({}));
    assert_eq!(
        reply,
        json!({"status": "ok", "response": {"user": {"id": "u1", "name": "Alice"}}})
    );
    // Reply, then the diff of our own track (a broadcast), user_joined, then the pushes.
    let diff = alice.next();
    assert_eq!(head(&diff), json!([null, null, ROOM, "presence_diff"]));
    let meta = &diff[4]["joins"]["u1"]["metas"][0];
    assert_eq!(meta["name"], "Alice");
    assert_eq!(meta["status"], "online");
    assert_eq!(meta["typing"], false);
    assert!(meta["phx_ref"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(meta["joined_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(diff[4]["leaves"], json!({}));
    let joined = alice.next();
    assert_eq!(joined[3], "user_joined");
    assert_eq!(
        joined[4],
        json!({"user": {"id": "u1", "name": "Alice"}, "online_count": 1})
    );
    let state = alice.next();
    assert_eq!(
        head(&state),
        json!([join_ref, null, ROOM, "presence_state"])
    );
    assert_eq!(state[4]["u1"]["metas"][0], *meta);
    let room = alice.next();
    assert_eq!(room[3], "room_state");
    assert_eq!(room[4]["recent_messages"], json!([]));
    assert_eq!(room[4]["room_info"]["id"], "lobby");
    assert_eq!(room[4]["room_info"]["online_count"], 1);
    assert_eq!(room[4]["room_info"]["message_count"], 0);
}

#[test]
fn messages_are_validated_persisted_broadcast_and_replayed() {
    let dir = TempDir::new("rooms-messages");
    let server = FeatureServer::start(&dir.0, |c| c.rooms.max_message_bytes = 64);
    let mut alice = server.client("u1", "Alice");
    let mut bob = server.client("u2", "Bob");
    let ja = alice.join_ok(ROOM);
    alice.event(ROOM, "room_state");
    let jb = bob.join_ok(ROOM);
    bob.event(ROOM, "room_state");

    // The sender sees the broadcast, then its ok reply with the same object.
    let r = alice.push(&ja, ROOM, "new_message", json!({"body": "  hello  "}));
    let broadcast = alice.next_where("new_message or reply", |m| {
        m[3] == "new_message" || m[1] == r.as_str()
    });
    assert_eq!(broadcast[3], "new_message", "broadcast before the reply");
    let reply = alice.reply(&r);
    assert_eq!(reply["status"], "ok");
    assert_eq!(reply["response"], broadcast[4]);
    let msg = &reply["response"];
    assert_eq!(msg["body"], "hello");
    assert_eq!(msg["user"], json!({"id": "u1", "name": "Alice"}));
    assert!(msg["id"].as_i64().unwrap() > 0);
    assert!(msg["inserted_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(bob.event(ROOM, "new_message"), *msg);

    // Invalid bodies: changeset-style errors, nothing stored or broadcast.
    for (payload, error) in [
        (json!({"body": "   "}), "can't be blank"),
        (json!({}), "can't be blank"),
        (json!({"body": 42}), "is invalid"),
        (
            json!({"body": "x".repeat(65)}),
            "should be at most 64 byte(s)",
        ),
    ] {
        assert_eq!(
            alice.call(&ja, ROOM, "new_message", payload),
            json!({"status": "error", "response": {"errors": {"body": [error]}}})
        );
    }
    // Exactly the limit, counted after trimming, is fine.
    let ok = alice.call(
        &ja,
        ROOM,
        "new_message",
        json!({"body": format!(" {} ", "é".repeat(32))}),
    );
    assert_eq!(ok["status"], "ok", "{ok}");

    // Messages from both users, in flight together: everyone sees them in id order.
    let mut refs = Vec::new();
    for i in 0..20 {
        refs.push((
            true,
            alice.push(&ja, ROOM, "new_message", json!({"body": format!("a{i}")})),
        ));
        refs.push((
            false,
            bob.push(&jb, ROOM, "new_message", json!({"body": format!("b{i}")})),
        ));
    }
    for (is_alice, r) in &refs {
        let client = if *is_alice { &mut alice } else { &mut bob };
        assert_eq!(client.reply(r)["status"], "ok");
    }
    // The 41 messages since "hello": the same sequence for both, in id order.
    let seen_by = |c: &mut Client| -> Vec<i64> {
        (0..41)
            .map(|_| c.event(ROOM, "new_message")["id"].as_i64().unwrap())
            .collect()
    };
    let (a_ids, b_ids) = (seen_by(&mut alice), seen_by(&mut bob));
    assert_eq!(a_ids, b_ids);
    assert!(b_ids.windows(2).all(|w| w[0] < w[1]), "{b_ids:?}");
    assert!(alice.drain_events(ROOM, "new_message").is_empty());

    // A new joiner gets the last 50, oldest first, ids increasing.
    for i in 0..10 {
        alice.call(
            &ja,
            ROOM,
            "new_message",
            json!({"body": format!("late{i}")}),
        );
    }
    let mut carol = server.client("u3", "Carol");
    carol.join_ok(ROOM);
    let state = carol.event(ROOM, "room_state");
    let recent = &state["recent_messages"];
    assert_eq!(recent.as_array().unwrap().len(), 50);
    assert_eq!(recent[49]["body"], "late9");
    let history_ids = ids(recent);
    assert!(history_ids.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(state["room_info"]["message_count"], 52);
    assert_eq!(state["room_info"]["online_count"], 3);
}

#[test]
fn history_survives_a_restart() {
    let dir = TempDir::new("rooms-restart");
    let server = FeatureServer::start(&dir.0, |_| {});
    let mut alice = server.client("u1", "Alice");
    let ja = alice.join_ok("room:keep");
    let mut stored = vec![];
    for i in 0..3 {
        let r = alice.call(
            &ja,
            "room:keep",
            "new_message",
            json!({"body": format!("m{i}")}),
        );
        stored.push(r["response"].clone());
    }
    drop(alice);
    server.stop();

    let server = FeatureServer::start(&dir.0, |_| {});
    let mut bob = server.client("u2", "Bob");
    let jb = bob.join_ok("room:keep");
    let state = bob.event("room:keep", "room_state");
    assert_eq!(state["recent_messages"], json!(stored));
    // New ids continue after the old ones.
    let r = bob.call(&jb, "room:keep", "new_message", json!({"body": "after"}));
    assert!(r["response"]["id"].as_i64() > stored[2]["id"].as_i64());
}

#[test]
fn an_acknowledged_message_survives_kill_9() {
    let dir = TempDir::new("rooms-kill");
    let spawn = || {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_shardcast"))
            .args(["serve", "--shards", "1", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&dir.0)
            .env("SHARDCAST_AUTH__SECRET", TEST_SECRET)
            .env("SHARDCAST_PIN_SHARDS", "false")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(addr).is_err() || http_get(addr, "/health").0 != 200 {
            assert!(Instant::now() < deadline, "server did not start");
            // Polling the health endpoint, as a deployment's readiness check does.
            std::thread::sleep(Duration::from_millis(20));
        }
        (child, addr)
    };
    let token = |addr: std::net::SocketAddr, sub: &str| {
        let mut config = shardcast::Config::default();
        config.auth.secret = TEST_SECRET.into();
        let key = shardcast::features::auth::resolve_secret(&config.auth, &config.data_dir)
            .unwrap()
            .0;
        let claims = shardcast::features::Claims::new(sub, sub, 600);
        format!(
            "ws://{addr}/socket/websocket?vsn=2.0.0&token={}",
            shardcast::features::Authenticator::new(key, false).sign(&claims)
        )
    };

    let (mut child, addr) = spawn();
    let mut alice = Client::connect(&token(addr, "alice"));
    let ja = alice.join_ok("room:durable");
    let reply = alice.call(
        &ja,
        "room:durable",
        "new_message",
        json!({"body": "last words"}),
    );
    assert_eq!(reply["status"], "ok");
    child.kill().unwrap(); // SIGKILL, right after the ack
    child.wait().unwrap();

    let (mut child, addr) = spawn();
    let mut bob = Client::connect(&token(addr, "bob"));
    bob.join_ok("room:durable");
    let state = bob.event("room:durable", "room_state");
    assert_eq!(state["recent_messages"], json!([reply["response"]]));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn typing_starts_stops_and_stops_by_itself() {
    let dir = TempDir::new("rooms-typing");
    let server = FeatureServer::start(&dir.0, |c| c.rooms.typing_timeout_ms = 500);
    let mut alice = server.client("u1", "Alice");
    let mut bob = server.client("u2", "Bob");
    let ja = alice.join_ok(ROOM);
    alice.event(ROOM, "room_state");
    bob.join_ok(ROOM);
    bob.event(ROOM, "room_state");

    let typing = |on: bool| json!({"user_id": "u1", "typing": on});
    assert_eq!(
        alice.call(&ja, ROOM, "typing", json!({"typing": true}))["status"],
        "ok"
    );
    assert_eq!(bob.event(ROOM, "user_typing"), typing(true));
    // The meta changed as a leave + join with a new ref.
    let diff = bob.event_where(ROOM, "presence_diff", |d| d["leaves"]["u1"].is_object());
    assert_eq!(diff["joins"]["u1"]["metas"][0]["typing"], true);
    assert_eq!(diff["leaves"]["u1"]["metas"][0]["typing"], false);
    assert_ne!(
        diff["joins"]["u1"]["metas"][0]["phx_ref"],
        diff["leaves"]["u1"]["metas"][0]["phx_ref"]
    );
    // Repeating it changes nothing; stopping is announced.
    alice.call(&ja, ROOM, "typing", json!({"typing": true}));
    alice.call(&ja, ROOM, "typing", json!({"typing": false}));
    assert_eq!(bob.event(ROOM, "user_typing"), typing(false));
    // The sender is not told about itself.
    assert!(alice.drain_events(ROOM, "user_typing").is_empty());

    // Going quiet: stopped after the timeout, not before.
    let started = Instant::now();
    alice.call(&ja, ROOM, "typing", json!({"typing": true}));
    assert_eq!(bob.event(ROOM, "user_typing"), typing(true));
    assert_eq!(bob.event(ROOM, "user_typing"), typing(false));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(480),
        "stopped after {waited:?}"
    );
    // Keeping on typing pushes the deadline back: the stop comes 500 ms after the last one.
    alice.call(&ja, ROOM, "typing", json!({"typing": true}));
    assert_eq!(bob.event(ROOM, "user_typing"), typing(true));
    for _ in 0..4 {
        // A user's keystrokes, 100 ms apart (pacing the input, not waiting for the server).
        std::thread::sleep(Duration::from_millis(100));
        alice.call(&ja, ROOM, "typing", json!({"typing": true}));
    }
    let last = Instant::now();
    assert_eq!(bob.event(ROOM, "user_typing"), typing(false));
    assert!(last.elapsed() >= Duration::from_millis(450));

    // Disconnecting while typing announces the stop, then the leave.
    alice.call(&ja, ROOM, "typing", json!({"typing": true}));
    assert_eq!(bob.event(ROOM, "user_typing"), typing(true));
    alice.close();
    assert_eq!(bob.event(ROOM, "user_typing"), typing(false));
    assert_eq!(
        bob.event(ROOM, "user_left"),
        json!({"user": {"id": "u1", "name": "Alice"}, "online_count": 1})
    );
}

#[test]
fn user_joined_and_left_count_users_across_shards_and_tabs() {
    let dir = TempDir::new("rooms-counts");
    let server = FeatureServer::start(&dir.0, |c| c.shards = 2);
    let subs = [
        ("u1", "Alice"),
        ("u1", "Alice"),
        ("u2", "Bob"),
        ("u3", "Carol"),
        ("u3", "Carol"),
    ];
    let mut c = server.clients_on_both_shards(&subs);
    let mut watcher = server.client("w", "Watcher");
    watcher.join_ok("room:count");
    assert_eq!(
        watcher.event("room:count", "user_joined"),
        json!({"user": {"id": "w", "name": "Watcher"}, "online_count": 1})
    );
    let mut joins = vec![];
    for client in c.iter_mut() {
        client.join_ok("room:count");
        client.event("room:count", "room_state");
    }
    for _ in 0..3 {
        joins.push(watcher.event("room:count", "user_joined"));
    }
    assert_eq!(
        joins,
        [
            json!({"user": {"id": "u1", "name": "Alice"}, "online_count": 2}),
            json!({"user": {"id": "u2", "name": "Bob"}, "online_count": 3}),
            json!({"user": {"id": "u3", "name": "Carol"}, "online_count": 4}),
        ]
    );
    assert!(watcher.drain_events("room:count", "user_joined").is_empty());
    let online = watcher.call("j1", "room:count", "online_users", json!({}));
    assert_eq!(online["response"]["online_count"], 4);
    assert_eq!(
        online["response"]["users"],
        json!([{"id": "u1", "name": "Alice"}, {"id": "u2", "name": "Bob"},
               {"id": "u3", "name": "Carol"}, {"id": "w", "name": "Watcher"}])
    );

    // Alice's first tab leaves, Carol's first tab disconnects: both users are still there.
    let mut tabs = c.drain(..);
    let (mut alice1, alice2, bob, carol1, carol2) = (
        tabs.next().unwrap(),
        tabs.next().unwrap(),
        tabs.next().unwrap(),
        tabs.next().unwrap(),
        tabs.next().unwrap(),
    );
    let r = alice1.call("j1", "room:count", "phx_leave", json!({}));
    assert_eq!(r["status"], "ok");
    carol1.close();
    // Each leaves a meta (a presence_diff leave) but no user_left.
    let mut leaves = 0;
    while leaves < 2 {
        let d = watcher.event("room:count", "presence_diff");
        leaves += d["leaves"].as_object().unwrap().len();
    }
    assert!(watcher.drain_events("room:count", "user_left").is_empty());
    // Last tabs: user_left with the distinct users left.
    alice2.close();
    assert_eq!(
        watcher.event("room:count", "user_left"),
        json!({"user": {"id": "u1", "name": "Alice"}, "online_count": 3})
    );
    carol2.close();
    assert_eq!(
        watcher.event("room:count", "user_left"),
        json!({"user": {"id": "u3", "name": "Carol"}, "online_count": 2})
    );
    bob.close();
    assert_eq!(watcher.event("room:count", "user_left")["online_count"], 1);
}

#[test]
fn sessions_record_activity_and_the_last_disconnect_reason() {
    let dir = TempDir::new("rooms-sessions");
    let server = FeatureServer::start(&dir.0, |_| {});
    let mut alice = server.client("u1", "Alice");
    let ja = alice.join_ok(ROOM);
    let r = alice.call(&ja, ROOM, "phx_leave", json!({}));
    assert_eq!(r["status"], "ok");
    let storage = server.storage();
    let session = |want: &str| {
        let deadline = Instant::now() + WAIT;
        loop {
            let row = futures_lite::future::block_on(storage.session("u1")).unwrap();
            if let Some(row) = row.filter(|r| r.last_disconnect_reason.as_deref() == Some(want)) {
                return row;
            }
            assert!(Instant::now() < deadline, "no session with reason {want}");
            // The write happens after the disconnect, off the shard: poll it with a deadline.
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let left = session("leave");
    assert_eq!(left.name, "Alice");
    alice.join_ok(ROOM);
    alice.close();
    let gone = session("disconnect");
    assert!(gone.last_disconnect_ms >= left.last_disconnect_ms);
    assert!(gone.last_activity_ms >= left.last_activity_ms);
}

#[test]
fn pending_messages_per_connection_are_bounded() {
    let dir = TempDir::new("rooms-pending");
    let server = FeatureServer::start(&dir.0, |c| c.rooms.max_pending_messages = 2);
    let mut alice = server.client("u1", "Alice");
    let ja = alice.join_ok(ROOM);
    // Sent back to back: the storage thread cannot have answered 200 before they are read.
    let refs: Vec<String> = (0..200)
        .map(|i| alice.push(&ja, ROOM, "new_message", json!({"body": format!("m{i}")})))
        .collect();
    let replies: Vec<Value> = refs.iter().map(|r| alice.reply(r)).collect();
    let refused = replies
        .iter()
        .filter(|r| r["response"] == json!({"reason": "too_many_requests"}))
        .count();
    let ok = replies.iter().filter(|r| r["status"] == "ok").count();
    assert_eq!(ok + refused, 200);
    assert!(ok >= 2 && refused > 0, "ok {ok}, refused {refused}");
}

#[test]
fn room_state_comes_before_the_messages_that_follow_it() {
    let dir = TempDir::new("rooms-snapshot");
    let server = FeatureServer::start(&dir.0, |c| c.shards = 2);
    let first = |c: &mut Client, topic: &str| -> Value {
        c.next_where("room_state or new_message", |m| {
            m[2] == topic && (m[3] == "room_state" || m[3] == "new_message")
        })
    };
    // Cold rooms: the history loads while the joiner's own first message is committed.
    for i in 0..10 {
        let topic = format!("room:cold{i}");
        let mut c = server.client(&format!("u{i}"), "U");
        let join_ref = "j";
        send_text(
            &mut c.ws,
            &json!([join_ref, join_ref, topic, "phx_join", {}]).to_string(),
        );
        c.push(join_ref, &topic, "new_message", json!({"body": "first!"}));
        assert_eq!(first(&mut c, &topic)[3], "room_state", "{topic}");
        assert_eq!(first(&mut c, &topic)[4]["body"], "first!");
    }

    // A warm room with a stream of messages in flight while someone joins.
    const T: &str = "room:busy";
    let mut bob = server.client("bob", "Bob");
    let jb = bob.join_ok(T);
    bob.event(T, "room_state");
    let refs: Vec<String> = (0..150)
        .map(|i| bob.push(&jb, T, "new_message", json!({"body": format!("m{i}")})))
        .collect();
    let mut alice = server.client("alice", "Alice");
    alice.join_ok(T);
    let state = first(&mut alice, T);
    assert_eq!(state[3], "room_state");
    let snapshot = ids(&state[4]["recent_messages"]);
    let all: Vec<i64> = refs
        .iter()
        .filter_map(|r| bob.reply(r)["response"]["id"].as_i64())
        .collect();
    let last = *all.last().unwrap();
    let mut seen = vec![];
    while seen.last() != Some(&last) && snapshot.last() != Some(&last) {
        seen.push(alice.event(T, "new_message")["id"].as_i64().unwrap());
    }
    // After the snapshot, alice sees exactly the later messages, in order: none lost, none
    // before it.
    let after: Vec<i64> = all
        .iter()
        .copied()
        .filter(|id| snapshot.last().is_none_or(|s| id > s))
        .collect();
    assert_eq!(seen, after);
}
