//! Unit tests of the built-in channels through the [`testing`](crate::testing) harness: no
//! socket, no shard, virtual time. (The same behaviour over real sockets: `tests/`.)

use super::default_app;
use crate::config::{Config, Synchronous};
use crate::core::Payload;
use crate::features::auth::{Authenticator, Claims};
use crate::protocol::binary::audio;
use crate::protocol::binary::game_state::{self, ObjectRecord, Position};
use crate::storage::StorageThread;
use crate::testing::{Client, TestServer};
use bytes::Bytes;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "features-unit-test-secret-0123456789";

/// The default app over a fresh data directory, driven by the harness.
struct Fixture {
    server: TestServer,
    auth: Arc<Authenticator>,
    config: Config,
    storage: Option<StorageThread>,
    dir: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with(|_| {})
    }

    fn with(tune: impl FnOnce(&mut Config)) -> Fixture {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "shardcast-features-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = Config {
            data_dir: dir.clone(),
            ..Config::default()
        };
        config.auth.secret = SECRET.into();
        config.storage.synchronous = Synchronous::Normal;
        config.documents.synchronous = Synchronous::Normal;
        tune(&mut config);
        let storage = StorageThread::start(&config.storage, &config.data_dir).unwrap();
        let app = default_app(&config, storage.handle()).unwrap();
        Fixture {
            server: TestServer::new(app),
            auth: Arc::new(Authenticator::new(SECRET.as_bytes(), false)),
            config,
            storage: Some(storage),
            dir,
        }
    }

    /// Owner tasks as on a topic another shard owns (see `TestServer::with_remote_owners`).
    fn with_remote_owners(mut self) -> Fixture {
        let app = default_app(&self.config, self.storage.as_ref().unwrap().handle()).unwrap();
        self.server = TestServer::new(app).with_remote_owners();
        self
    }

    /// A socket of user `sub`.
    fn user(&mut self, sub: &str) -> Client {
        let token = self.auth.sign(&Claims::new(sub, sub.to_uppercase(), 3600));
        self.server
            .connect(&[("token", &token), ("vsn", "2.0.0")])
            .unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(s) = self.storage.take() {
            let _ = s.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn payloads(server: &TestServer, c: Client, event: &str) -> Vec<Value> {
    server
        .received_events(c, event)
        .iter()
        .filter_map(|f| f.json_payload())
        .collect()
}

// --- auth ------------------------------------------------------------------------------------

#[test]
fn sockets_need_a_valid_token_and_joins_respect_its_rooms() {
    let mut f = Fixture::new();
    assert!(f.server.connect(&[]).is_err());
    assert!(f.server.connect(&[("token", "not-a-jwt")]).is_err());
    let mut claims = Claims::new("u1", "Ada", 3600);
    claims.rooms = Some(vec!["room:*".into()]);
    let token = f.auth.sign(&claims);
    let c = f.server.connect(&[("token", &token)]).unwrap();
    assert_eq!(f.server.join(c, "room:1", json!({})).status(), Some("ok"));
    let r = f.server.join(c, "echo:1", json!({}));
    assert_eq!(r.response(), json!({"reason": "access_denied"}));
}

// --- room:* ----------------------------------------------------------------------------------

#[test]
fn room_join_sends_presence_and_history_then_messages_are_stored_and_broadcast() {
    let mut f = Fixture::new();
    let (ada, bo) = (f.user("ada"), f.user("bo"));
    let r = f.server.join(ada, "room:lobby", json!({}));
    assert_eq!(r.response(), json!({"user": {"id": "ada", "name": "ADA"}}));
    let state = payloads(&f.server, ada, "room_state");
    assert_eq!(state[0]["recent_messages"], json!([]));
    assert!(payloads(&f.server, ada, "presence_state")[0]["ada"].is_object());

    let sent = f
        .server
        .push(ada, "room:lobby", "new_message", json!({"body": "  hi  "}));
    assert_eq!(sent.status(), Some("ok"));
    assert_eq!(sent.response()["body"], "hi");
    let blank = f
        .server
        .push(ada, "room:lobby", "new_message", json!({"body": " "}));
    assert_eq!(
        blank.response(),
        json!({"errors": {"body": ["can't be blank"]}})
    );

    // A later joiner sees the stored message in its room_state, and the others see it arrive.
    f.server.join(bo, "room:lobby", json!({}));
    let state = payloads(&f.server, bo, "room_state");
    assert_eq!(state[0]["recent_messages"][0]["body"], "hi");
    assert_eq!(
        payloads(&f.server, ada, "user_joined").last().unwrap()["user"]["id"],
        "bo"
    );
    f.server
        .push(bo, "room:lobby", "new_message", json!({"body": "yo"}));
    assert_eq!(
        payloads(&f.server, ada, "new_message").last().unwrap()["body"],
        "yo"
    );
}

#[test]
fn typing_stops_by_itself_after_the_timeout_on_virtual_time() {
    let mut f = Fixture::new();
    let timeout = f.config.rooms.typing_timeout();
    assert_eq!(timeout, Duration::from_secs(3));
    let (ada, bo) = (f.user("ada"), f.user("bo"));
    f.server.join(ada, "room:1", json!({}));
    f.server.join(bo, "room:1", json!({}));
    let r = f
        .server
        .push(ada, "room:1", "typing", json!({"typing": true}));
    assert_eq!(r.status(), Some("ok"));
    assert_eq!(
        payloads(&f.server, bo, "user_typing"),
        vec![json!({"user_id": "ada", "typing": true})]
    );
    // Still typing just before the deadline; a keystroke at 2 s moves it.
    f.server.advance(Duration::from_secs(2));
    f.server
        .push(ada, "room:1", "typing", json!({"typing": true}));
    f.server.advance(Duration::from_millis(2_999));
    assert_eq!(payloads(&f.server, bo, "user_typing").len(), 1);
    f.server.advance(Duration::from_millis(1));
    assert_eq!(
        payloads(&f.server, bo, "user_typing").last().unwrap(),
        &json!({"user_id": "ada", "typing": false})
    );
    assert_eq!(f.server.pending_timers(), 0);
}

#[test]
fn leaving_announces_the_user_left_and_presence_diff() {
    let mut f = Fixture::new();
    let (ada, bo) = (f.user("ada"), f.user("bo"));
    f.server.join(ada, "room:1", json!({}));
    f.server.join(bo, "room:1", json!({}));
    f.server.take_received(ada);
    f.server.disconnect(bo);
    let left = payloads(&f.server, ada, "user_left");
    assert_eq!(left[0]["user"]["id"], "bo");
    assert_eq!(left[0]["online_count"], 1);
    let diff = payloads(&f.server, ada, "presence_diff");
    assert!(diff.last().unwrap()["leaves"]["bo"].is_object());
}

// --- collaboration:* -------------------------------------------------------------------------

#[test]
fn cursor_moves_coalesce_to_the_latest_within_the_interval() {
    let mut f = Fixture::new();
    let interval = f.config.rooms.cursor_interval();
    let (ada, bo) = (f.user("ada"), f.user("bo"));
    f.server.join(ada, "collaboration:doc", json!({}));
    f.server.join(bo, "collaboration:doc", json!({}));
    f.server.take_received(bo);
    for position in [1, 2, 3] {
        let r = f.server.push(
            ada,
            "collaboration:doc",
            "cursor_move",
            json!({ "position": position }),
        );
        assert_eq!(r.status(), Some("ok"));
    }
    let cursors = |s: &TestServer| -> Vec<Value> {
        payloads(s, bo, "presence_diff")
            .iter()
            .filter_map(|d| d["joins"]["ada"]["metas"][0].get("cursor").cloned())
            .collect()
    };
    // The first goes at once; the rest wait for the interval and only the latest is sent.
    assert_eq!(cursors(&f.server), vec![json!(1)]);
    f.server.advance(interval);
    assert_eq!(cursors(&f.server), vec![json!(1), json!(3)]);
    // The document's presence is per-topic owner state, gone once nobody is there.
    assert!(f.server.owner_states().has_topic_state("collaboration:doc"));
    f.server.disconnect(ada);
    f.server.disconnect(bo);
    assert!(!f.server.owner_states().has_topic_state("collaboration:doc"));
}

// --- game:* and voice:* ----------------------------------------------------------------------

fn state(positions: &[(u32, f32, f32)], objects: &[(&str, &[u8])]) -> Payload {
    let positions: Vec<Position> = positions
        .iter()
        .map(|&(id, x, y)| Position::new(id, x, y))
        .collect();
    let objects: Vec<ObjectRecord<'_>> = objects
        .iter()
        .map(|&(kind, data)| ObjectRecord {
            kind,
            x: 0.0,
            y: 0.0,
            data,
        })
        .collect();
    let mut out = Vec::new();
    game_state::encode(&positions, &objects, &mut out).unwrap();
    Payload::Binary(Bytes::from(out))
}

#[test]
fn game_state_is_relayed_as_the_same_bytes_and_bad_states_are_refused() {
    let mut f = Fixture::new();
    let (ada, bo) = (f.user("ada"), f.user("bo"));
    f.server.join(ada, "game:1", json!({}));
    f.server.join(bo, "game:1", json!({}));
    let good = state(&[(7, 1.5, -2.0)], &[("projectile", b"x")]);
    let r = f
        .server
        .push_payload(ada, "game:1", "game_state", good.clone());
    assert_eq!(r.status(), Some("ok"));
    let updates = f.server.received_events(bo, "game_update");
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].payload, good);
    assert!(
        f.server.received_events(ada, "game_update").is_empty(),
        "not to the sender"
    );

    let outside = state(&[(7, 1e9, 0.0)], &[]);
    let r = f.server.push_payload(ada, "game:1", "game_state", outside);
    assert_eq!(r.status(), Some("error"));
    let unknown = state(&[], &[("spaceship", b"")]);
    let r = f.server.push_payload(ada, "game:1", "game_state", unknown);
    assert_eq!(r.status(), Some("error"));
    assert_eq!(f.server.received_events(bo, "game_update").len(), 1);
}

#[test]
fn voice_relays_audio_with_the_sender_and_a_sequence() {
    let mut f = Fixture::new();
    let (ada, bo) = (f.user("ada"), f.user("bo"));
    f.server.join(ada, "voice:1", json!({}));
    f.server.join(bo, "voice:1", json!({}));
    for _ in 0..3 {
        let frame = Payload::Binary(Bytes::from_static(b"opus-frame"));
        f.server.push_payload(ada, "voice:1", "audio_data", frame);
    }
    let streams = f.server.received_events(bo, "audio_stream");
    let seqs: Vec<u32> = streams
        .iter()
        .map(|s| {
            let Payload::Binary(b) = &s.payload else {
                panic!("audio_stream is binary")
            };
            let (header, audio) = audio::decode(b).unwrap();
            assert_eq!((header.user_id, audio), ("ada", &b"opus-frame"[..]));
            assert_eq!(header.server_timestamp_ms, f.server.now().unix_ms as u64);
            header.seq
        })
        .collect();
    assert_eq!(seqs, vec![0, 1, 2]);
    let r = f.server.push(ada, "voice:1", "game_state", json!({}));
    assert_eq!(r.response()["reason"], "unknown_event");
}

// --- uploads:* -------------------------------------------------------------------------------

#[test]
fn uploads_topics_belong_to_their_user_and_starts_are_validated() {
    let mut f = Fixture::new();
    let ada = f.user("ada");
    let r = f.server.join(ada, "uploads:bo", json!({}));
    assert_eq!(r.response(), json!({"reason": "access_denied"}));
    let r = f.server.join(ada, "uploads:ada", json!({}));
    assert_eq!(r.status(), Some("ok"));
    assert_eq!(r.response()["user_id"], "ada");
    let too_big = json!({"filename": "a.bin", "size": 1u64 << 40, "sha256": "00".repeat(32)});
    let r = f.server.push(ada, "uploads:ada", "upload_start", too_big);
    assert_eq!(r.status(), Some("error"));
    let bad_hash = json!({"filename": "a.bin", "size": 10, "sha256": "xyz"});
    let r = f.server.push(ada, "uploads:ada", "upload_start", bad_hash);
    assert_eq!(r.status(), Some("error"));
}

// --- document:* ------------------------------------------------------------------------------

#[test]
fn document_operations_are_acknowledged_once_durable_and_reach_the_others() {
    let mut f = Fixture::new();
    let (ada, bo) = (f.user("ada"), f.user("bo"));
    f.server.join(ada, "document:42", json!({}));
    f.server.join(bo, "document:42", json!({}));
    assert_eq!(
        payloads(&f.server, ada, "document_state")[0],
        json!({"content": "", "version": 0})
    );
    let op = json!({"op": ["hello"], "version": 0, "client_id": "a", "seq": 1});
    let r = f.server.push(ada, "document:42", "operation", op);
    assert_eq!(r.status(), Some("ok"));
    assert_eq!(r.response(), json!({"version": 1, "seq": 1}));
    let seen = f.server.received_events(bo, "operation");
    assert_eq!(seen.len(), 1);
    // A late operation from bo is transformed against ada's.
    let op = json!({"op": ["!"], "version": 0, "client_id": "b", "seq": 1});
    let r = f.server.push(bo, "document:42", "operation", op);
    assert_eq!(r.response()["version"], 2);
    let later = f.user("cy");
    f.server.join(later, "document:42", json!({}));
    let content = &payloads(&f.server, later, "document_state")[0]["content"];
    assert!(content == "hello!" || content == "!hello", "{content}");
}

#[test]
fn an_idle_document_leaves_memory_after_its_timeout_on_virtual_time() {
    let mut f = Fixture::with(|c| c.documents.idle_unload_ms = 60_000);
    let ada = f.user("ada");
    f.server.join(ada, "document:idle", json!({}));
    let op = json!({"op": ["x"], "version": 0, "client_id": "a", "seq": 1});
    f.server.push(ada, "document:idle", "operation", op);
    f.server.leave(ada, "document:idle");
    assert_eq!(f.server.pending_timers(), 1, "the idle check is scheduled");
    f.server.advance(Duration::from_secs(59));
    assert_eq!(f.server.pending_timers(), 1);
    f.server.advance(Duration::from_secs(1));
    assert_eq!(
        f.server.pending_timers(),
        0,
        "checked and unloaded, nothing rescheduled"
    );
    // Reloaded from its durable log on the next join.
    f.server.join(ada, "document:idle", json!({}));
    let states = payloads(&f.server, ada, "document_state");
    assert_eq!(
        states.last().unwrap(),
        &json!({"content": "x", "version": 1})
    );
}

#[test]
fn token_expiry_is_checked_against_the_event_time_not_the_clock() {
    let mut f = Fixture::new();
    let now_secs = (f.server.now().unix_ms / 1000) as u64;
    let mut claims = Claims::new("ada", "Ada", 0);
    claims.exp = now_secs + 60;
    let token = f.auth.sign(&claims);
    assert!(f.server.connect(&[("token", &token)]).is_ok());
    f.server.advance(Duration::from_secs(60));
    let refused = f.server.connect(&[("token", &token)]).unwrap_err();
    assert!(refused.reason.contains("expired"), "{}", refused.reason);
}

#[test]
fn a_room_lives_on_its_owner_while_it_has_members_or_pending_work() {
    let mut f = Fixture::new();
    let (ada, bo) = (f.user("ada"), f.user("bo"));
    f.server.join(ada, "room:life", json!({}));
    f.server
        .push(ada, "room:life", "new_message", json!({"body": "kept"}));
    f.server.disconnect(ada);
    assert!(!f.server.owner_states().has_topic_state("room:life"));
    // A new life reloads its history from storage.
    f.server.join(bo, "room:life", json!({}));
    let state = payloads(&f.server, bo, "room_state");
    assert_eq!(state[0]["recent_messages"][0]["body"], "kept");
    assert!(f.server.owner_states().has_topic_state("room:life"));
}

#[test]
fn a_push_reply_and_its_owner_broadcast_in_both_owner_placements() {
    for remote in [false, true] {
        let mut f = Fixture::new();
        if remote {
            f = f.with_remote_owners();
        }
        let ada = f.user("ada");
        f.server.join(ada, "room:1", json!({}));
        f.server.take_received(ada);
        f.server
            .push(ada, "room:1", "status", json!({"status": "away"}));
        let events: Vec<String> = f
            .server
            .take_received(ada)
            .iter()
            .map(|fr| fr.event().to_string())
            .collect();
        // A topic this shard owns: the owner's broadcast goes out before the reply; owned by
        // another shard: after it. Clients must not depend on either.
        let expected = if remote {
            ["phx_reply", "presence_diff"]
        } else {
            ["presence_diff", "phx_reply"]
        };
        assert_eq!(events, expected, "remote owners: {remote}");
        // Either way the room works the same.
        let r = f
            .server
            .push(ada, "room:1", "new_message", json!({"body": "hi"}));
        assert_eq!(r.status(), Some("ok"));
    }
}
