//! The binary fast path over real sockets: `game:*` (state relay, validation, the studio hook,
//! bulk updates), audio on `voice:*` and `game:*`, and resumable uploads on `uploads:*`.

mod common;
use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shardcast::core::{App, Router};
use shardcast::features::game::{BulkVerdict, GameHook, HookContext, StateVerdict};
use shardcast::features::{GameChannel, GameSettings};
use shardcast::protocol::binary::bulk::{self, BulkUpdate};
use shardcast::protocol::binary::game_state::{self, GameState, ObjectRecord, Position};
use shardcast::protocol::binary::{audio, upload};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::Message;

// --- A V2 client that speaks both text and binary frames -------------------------------------

#[derive(Debug, Clone)]
enum In {
    Json(Value),
    /// A binary frame: kind 0 (push), 1 (reply) or 2 (broadcast).
    Bin {
        kind: u8,
        topic: String,
        event: String,
        payload: Vec<u8>,
    },
}

impl In {
    fn is_event(&self, topic: &str, event: &str) -> bool {
        match self {
            In::Json(m) => m[2] == topic && m[3] == event,
            In::Bin {
                kind: 0 | 2,
                topic: t,
                event: e,
                ..
            } => t == topic && e == event,
            In::Bin { .. } => false,
        }
    }
}

fn decode_binary_frame(b: &[u8]) -> In {
    let field = |at: &mut usize, len: u8| {
        let s = String::from_utf8(b[*at..*at + usize::from(len)].to_vec()).unwrap();
        *at += usize::from(len);
        s
    };
    match b[0] {
        0 => {
            let mut at = 4;
            let _join_ref = field(&mut at, b[1]);
            let topic = field(&mut at, b[2]);
            let event = field(&mut at, b[3]);
            In::Bin {
                kind: 0,
                topic,
                event,
                payload: b[at..].to_vec(),
            }
        }
        1 => {
            let mut at = 5;
            let _join_ref = field(&mut at, b[1]);
            let msg_ref = field(&mut at, b[2]);
            let topic = field(&mut at, b[3]);
            let status = field(&mut at, b[4]);
            In::Bin {
                kind: 1,
                topic,
                event: format!("reply:{msg_ref}:{status}"),
                payload: b[at..].to_vec(),
            }
        }
        2 => {
            let mut at = 3;
            let topic = field(&mut at, b[1]);
            let event = field(&mut at, b[2]);
            In::Bin {
                kind: 2,
                topic,
                event,
                payload: b[at..].to_vec(),
            }
        }
        k => panic!("unknown binary kind {k}"),
    }
}

struct Peer {
    ws: Ws,
    unread: VecDeque<In>,
    next_ref: u64,
}

impl Peer {
    fn connect(url: &str) -> Peer {
        Peer {
            ws: connect(url),
            unread: VecDeque::new(),
            next_ref: 0,
        }
    }

    fn fresh_ref(&mut self) -> String {
        self.next_ref += 1;
        self.next_ref.to_string()
    }

    fn join(&mut self, topic: &str, payload: Value) -> Value {
        let r = self.fresh_ref();
        send_text(
            &mut self.ws,
            &json!([r, r, topic, "phx_join", payload]).to_string(),
        );
        self.reply(&r)
    }

    fn join_ok(&mut self, topic: &str) -> Value {
        let reply = self.join(topic, json!({}));
        assert_eq!(reply["status"], "ok", "join {topic}: {reply}");
        reply["response"].clone()
    }

    /// Pushes a JSON payload; returns the ref.
    fn push_json(&mut self, topic: &str, event: &str, payload: Value) -> String {
        let r = self.fresh_ref();
        send_text(
            &mut self.ws,
            &json!(["1", r, topic, event, payload]).to_string(),
        );
        r
    }

    /// Pushes a binary payload (V2 binary frame, join ref "1"); returns the ref.
    fn push_bin(&mut self, topic: &str, event: &str, payload: &[u8]) -> String {
        let r = self.fresh_ref();
        let mut m = vec![0u8, 1, r.len() as u8, topic.len() as u8, event.len() as u8];
        m.extend_from_slice(b"1");
        m.extend_from_slice(r.as_bytes());
        m.extend_from_slice(topic.as_bytes());
        m.extend_from_slice(event.as_bytes());
        m.extend_from_slice(payload);
        send_binary(&mut self.ws, m);
        r
    }

    /// Pushes binary payloads in one write (so the server reads them together); returns the refs.
    fn push_bin_batch(&mut self, topic: &str, event: &str, payloads: &[Vec<u8>]) -> Vec<String> {
        let mut refs = Vec::new();
        for payload in payloads {
            let r = self.fresh_ref();
            let mut m = vec![0u8, 1, r.len() as u8, topic.len() as u8, event.len() as u8];
            m.extend_from_slice(b"1");
            m.extend_from_slice(r.as_bytes());
            m.extend_from_slice(topic.as_bytes());
            m.extend_from_slice(event.as_bytes());
            m.extend_from_slice(payload);
            self.ws.write(Message::binary(m)).unwrap();
            refs.push(r);
        }
        self.ws.flush().unwrap();
        refs
    }

    fn call_json(&mut self, topic: &str, event: &str, payload: Value) -> Value {
        let r = self.push_json(topic, event, payload);
        self.reply(&r)
    }

    fn call_bin(&mut self, topic: &str, event: &str, payload: &[u8]) -> Value {
        let r = self.push_bin(topic, event, payload);
        self.reply(&r)
    }

    /// The `{status, response}` of the reply to `msg_ref` (JSON replies).
    fn reply(&mut self, msg_ref: &str) -> Value {
        match self.next_where(
            &format!("reply {msg_ref}"),
            |m| matches!(m, In::Json(v) if v[3] == "phx_reply" && v[1] == msg_ref),
        ) {
            In::Json(v) => v[4].clone(),
            In::Bin { .. } => unreachable!(),
        }
    }

    /// The payload of the next binary `event` on `topic`.
    fn binary_event(&mut self, topic: &str, event: &str) -> Vec<u8> {
        match self.next_where(&format!("{event} on {topic}"), |m| {
            matches!(m, In::Bin { .. }) && m.is_event(topic, event)
        }) {
            In::Bin { payload, .. } => payload,
            In::Json(_) => unreachable!(),
        }
    }

    /// The payload of the next JSON `event` on `topic`.
    fn json_event(&mut self, topic: &str, event: &str) -> Value {
        match self.next_where(&format!("{event} on {topic}"), |m| {
            matches!(m, In::Json(_)) && m.is_event(topic, event)
        }) {
            In::Json(v) => v[4].clone(),
            In::Bin { .. } => unreachable!(),
        }
    }

    fn next_where(&mut self, what: &str, pred: impl Fn(&In) -> bool) -> In {
        if let Some(pos) = self.unread.iter().position(&pred) {
            return self.unread.remove(pos).unwrap();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; unread: {:?}",
                self.unread
            );
            set_timeout(&self.ws, left);
            let m = match self.ws.read() {
                Ok(Message::Text(t)) => In::Json(serde_json::from_str(&t).unwrap()),
                Ok(Message::Binary(b)) => decode_binary_frame(&b),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(other) => panic!("waiting for {what}: unexpected {other:?}"),
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => panic!("waiting for {what}: {e}"),
            };
            if pred(&m) {
                return m;
            }
            self.unread.push_back(m);
        }
    }

    /// Round-trips a heartbeat, so everything sent before it has been read; returns the
    /// messages seen so far (and forgets them).
    fn drain(&mut self) -> Vec<In> {
        let r = self.fresh_ref();
        send_text(
            &mut self.ws,
            &json!([null, r, "phoenix", "heartbeat", {}]).to_string(),
        );
        self.reply(&r);
        self.unread.drain(..).collect()
    }
}

fn peer(server: &FeatureServer, sub: &str) -> Peer {
    Peer::connect(&server.socket_url(&server.token(sub, sub, None)))
}

fn state(positions: &[(u32, f32, f32)], objects: &[(&str, f32, f32, &[u8])]) -> Vec<u8> {
    let positions: Vec<Position> = positions
        .iter()
        .map(|&(id, x, y)| Position::new(id, x, y))
        .collect();
    let objects: Vec<ObjectRecord<'_>> = objects
        .iter()
        .map(|&(kind, x, y, data)| ObjectRecord { kind, x, y, data })
        .collect();
    let mut out = Vec::new();
    game_state::encode(&positions, &objects, &mut out).unwrap();
    out
}

fn error_reason(reply: &Value) -> &str {
    assert_eq!(reply["status"], "error", "{reply}");
    reply["response"]["reason"].as_str().unwrap()
}

const GAME: &str = "game:arena";

// --- game:* ------------------------------------------------------------------------------

#[test]
fn game_state_is_relayed_as_the_same_bytes_and_bad_input_is_answered() {
    let dir = TempDir::new("game-relay");
    let server = FeatureServer::start(&dir.0, |c| {
        c.game.world_max_x = 100.0;
        c.game.max_positions = 4;
    });
    let mut a = peer(&server, "ada");
    let mut b = peer(&server, "bob");
    a.join_ok(GAME);
    b.join_ok(GAME);

    let valid = state(&[(1, 10.0, -5.5)], &[("projectile", 1.0, 2.0, &[7, 7, 7])]);
    assert_eq!(a.call_bin(GAME, "game_state", &valid)["status"], "ok");
    assert_eq!(b.binary_event(GAME, "game_update"), valid);
    assert!(
        a.drain().iter().all(|m| !m.is_event(GAME, "game_update")),
        "the sender does not get its own state back"
    );

    let mut truncated = valid.clone();
    truncated.pop();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (truncated, "malformed"),
        (vec![1, 2, 3], "malformed"),
        (state(&[(1, 100.5, 0.0)], &[]), "out_of_bounds"),
        (state(&[(1, f32::NAN, 0.0)], &[]), "not_finite"),
        (state(&[(1, 0.0, 0.0); 5], &[]), "over_limit"),
        (
            state(&[], &[("unicorn", 0.0, 0.0, &[])]),
            "unknown_object_type",
        ),
    ];
    for (bytes, expected) in cases {
        let reply = a.call_bin(GAME, "game_state", &bytes);
        assert_eq!(error_reason(&reply), expected, "{reply}");
        assert!(reply["response"]["message"].as_str().is_some());
    }
    let reply = a.call_json(GAME, "game_state", json!({"positions": []}));
    assert_eq!(error_reason(&reply), "malformed");
    // The connection lives on, and nothing invalid reached the other member.
    let second = state(&[(1, 20.0, 0.0)], &[]);
    assert_eq!(a.call_bin(GAME, "game_state", &second)["status"], "ok");
    assert_eq!(b.binary_event(GAME, "game_update"), second);
    assert_eq!(
        a.call_json(GAME, "nope", json!({}))["response"]["reason"],
        "unknown_event"
    );
}

#[test]
fn game_topics_are_checked_at_join() {
    let dir = TempDir::new("game-join");
    let server = FeatureServer::start(&dir.0, |_| {});
    let token = server.token("ada", "Ada", Some(&["game:allowed"]));
    let mut a = Peer::connect(&server.socket_url(&token));
    a.join_ok("game:allowed");
    assert_eq!(
        a.join("game:other", json!({}))["response"]["reason"],
        "access_denied"
    );
    assert_eq!(
        a.join("voice:other", json!({}))["response"]["reason"],
        "access_denied"
    );
}

struct StudioRules;

impl GameHook for StudioRules {
    fn validate_game_state(&self, ctx: &HookContext<'_>, s: &GameState<'_>) -> StateVerdict {
        assert!(ctx.topic.starts_with("game:"));
        if s.positions().iter().any(|p| p.player_id() == 13) {
            return StateVerdict::Reject("player 13 is banned".into());
        }
        if s.positions().iter().any(|p| p.player_id() == 7) {
            // Snap player 7 to the origin.
            let snapped: Vec<(u32, f32, f32)> = s
                .positions()
                .iter()
                .map(|p| (p.player_id(), 0.0, 0.0))
                .collect();
            return StateVerdict::Replace(state(&snapped, &[]).into());
        }
        StateVerdict::Accept
    }

    fn bulk_update(&self, _ctx: &HookContext<'_>, u: &BulkUpdate<'_>) -> BulkVerdict {
        match u.updates.len() {
            0 => BulkVerdict::Reject("empty".into()),
            1 => BulkVerdict::Handled,
            n => BulkVerdict::Replace(vec![json!({"count": n})]),
        }
    }
}

#[test]
fn a_studio_hook_validates_and_transforms_through_the_public_api() {
    let settings = Arc::new(GameSettings::default());
    let app = App::new(
        |_: &shardcast::ConnectInfo| Ok(()),
        Router::new().channel("game:*", move || {
            GameChannel::new(settings.clone()).with_hook(Arc::new(StudioRules))
        }),
    );
    let server = TestServer::start(app, |_| {});
    let url = server.url("/socket/websocket?vsn=2.0.0");
    let (mut a, mut b) = (Peer::connect(&url), Peer::connect(&url));
    a.join_ok(GAME);
    b.join_ok(GAME);

    let banned = a.call_bin(GAME, "game_state", &state(&[(13, 1.0, 1.0)], &[]));
    assert_eq!(error_reason(&banned), "rejected");
    assert_eq!(banned["response"]["message"], "player 13 is banned");

    let moved = state(&[(7, 5.0, 5.0), (8, 1.0, 2.0)], &[]);
    assert_eq!(a.call_bin(GAME, "game_state", &moved)["status"], "ok");
    let relayed = b.binary_event(GAME, "game_update");
    assert_eq!(relayed, state(&[(7, 0.0, 0.0), (8, 0.0, 0.0)], &[]));
    assert!(b.drain().is_empty(), "the banned state never arrived");

    // Bulk hook: replaced updates are compressed once by the server.
    let frame = bulk::encode_compressed(&[json!(1), json!(2)], 3).unwrap();
    assert_eq!(a.call_bin(GAME, "compressed_data", &frame)["status"], "ok");
    let got = b.binary_event(GAME, "bulk_update");
    let doc = bulk::decompress_bounded(&got, &Default::default()).unwrap();
    let parsed = bulk::parse_bulk_update(&doc, 10).unwrap();
    assert_eq!(parsed.updates[0].get(), r#"{"count":2}"#);
    let handled = bulk::encode_compressed(&[json!(1)], 3).unwrap();
    assert_eq!(
        a.call_bin(GAME, "compressed_data", &handled)["status"],
        "ok"
    );
    let empty = bulk::encode_compressed::<Value>(&[], 3).unwrap();
    assert_eq!(
        error_reason(&a.call_bin(GAME, "compressed_data", &empty)),
        "rejected"
    );
    assert!(
        b.drain().iter().all(|m| !m.is_event(GAME, "bulk_update")),
        "handled and rejected updates are not relayed"
    );
}

#[test]
fn compressed_bulk_updates_are_relayed_once_and_bombs_refused() {
    let dir = TempDir::new("game-bulk");
    let server = FeatureServer::start(&dir.0, |c| c.bulk.max_decompressed_bytes = 1 << 20);
    let mut a = peer(&server, "ada");
    let mut b = peer(&server, "bob");
    a.join_ok(GAME);
    b.join_ok(GAME);

    let updates: Vec<Value> = (0..500)
        .map(|i| json!({"id": i, "hp": 100 - i % 7}))
        .collect();
    let frame = bulk::encode_compressed(&updates, 3).unwrap();
    assert_eq!(a.call_bin(GAME, "compressed_data", &frame)["status"], "ok");
    assert_eq!(
        b.binary_event(GAME, "bulk_update"),
        frame,
        "the client's own frame, validated, is relayed"
    );

    // A bomb: 1 GiB of zeros declared in a 40 KB frame.
    let mut bomb = bulk::ZSTD_MAGIC.to_vec();
    bomb.extend_from_slice(&[0xc0, 0x38]);
    bomb.extend_from_slice(&(1u64 << 30).to_le_bytes());
    for i in 0..8192u32 {
        let header = u32::from(i == 8191) | (1 << 1) | ((128 * 1024) << 3);
        bomb.extend_from_slice(&header.to_le_bytes()[..3]);
        bomb.push(0);
    }
    let not_json = bulk::compress(b"not json", 3).unwrap();
    let other_type = bulk::compress(br#"{"type":"chat","updates":[]}"#, 3).unwrap();
    // The same bomb without the declared size: stopped at the limit.
    let mut undeclared = bulk::ZSTD_MAGIC.to_vec();
    undeclared.extend_from_slice(&[0x00, 0x38]);
    undeclared.extend_from_slice(&bomb[14..]);
    for (payload, expected) in [
        (bomb, "too_large"),
        (undeclared, "too_large"),
        (b"plain bytes".to_vec(), "invalid_compression"),
        (not_json, "invalid_document"),
        (other_type, "unknown_type"),
    ] {
        let r = a.push_bin(GAME, "compressed_data", &payload);
        let pushed = a.json_event(GAME, "error");
        assert_eq!(pushed["reason"], expected, "{pushed}");
        assert!(pushed["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(error_reason(&a.reply(&r)), expected);
    }
    // Still connected, still relaying.
    assert_eq!(a.call_bin(GAME, "compressed_data", &frame)["status"], "ok");
    assert_eq!(b.binary_event(GAME, "bulk_update"), frame);
}

// --- audio -----------------------------------------------------------------------------------

#[test]
fn audio_is_relayed_with_the_sender_and_consecutive_seq() {
    let dir = TempDir::new("voice");
    let server = FeatureServer::start(&dir.0, |c| c.audio.max_frame_bytes = 100);
    for topic in ["voice:team", GAME] {
        let mut peers: Vec<Peer> = ["ada", "bob", "cy"]
            .iter()
            .map(|s| peer(&server, s))
            .collect();
        for p in &mut peers {
            p.join_ok(topic);
        }
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        for i in 0..3u8 {
            assert_eq!(
                peers[0].call_bin(topic, "audio_data", &[i; 20])["status"],
                "ok"
            );
        }
        for p in &mut peers[1..] {
            for i in 0..3u8 {
                let msg = p.binary_event(topic, "audio_stream");
                let (h, frame) = audio::decode(&msg).unwrap();
                assert_eq!(
                    (h.user_id, h.seq, frame),
                    ("ada", u32::from(i), &[i; 20][..])
                );
                assert!(h.server_timestamp_ms >= before);
            }
        }
        assert!(peers[0]
            .drain()
            .iter()
            .all(|m| !m.is_event(topic, "audio_stream")));
        let reply = peers[0].call_bin(topic, "audio_data", &[0; 101]);
        assert_eq!(error_reason(&reply), "over_limit");
        assert_eq!(
            error_reason(&peers[0].call_bin(topic, "audio_data", &[])),
            "malformed"
        );
        // Rejected frames take no sequence number.
        peers[0].call_bin(topic, "audio_data", &[9]);
        let msg = peers[1].binary_event(topic, "audio_stream");
        assert_eq!(audio::decode(&msg).unwrap().0.seq, 3);
    }
}

// --- uploads ---------------------------------------------------------------------------------

fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha_hex(data: &[u8]) -> String {
    upload::to_hex(&Sha256::digest(data))
}

fn chunk_msg(id: &str, index: u32, total: u32, data: &[u8]) -> Vec<u8> {
    let header = upload::ChunkHeader {
        upload_id: upload::UploadId::from_hex(id).unwrap(),
        chunk_index: index,
        total_chunks: total,
    };
    let mut msg = Vec::new();
    upload::encode_chunk(&header, data, &mut msg);
    msg
}

/// Sends `indexes` (with their data) as chunks, at most 4 unanswered at a time; returns the
/// answers (`response`s), all ok.
fn send_chunks(
    p: &mut Peer,
    topic: &str,
    id: &str,
    file: &[u8],
    chunk: usize,
    indexes: &[u32],
) -> Vec<Value> {
    let total = file.len().div_ceil(chunk) as u32;
    let mut pending = VecDeque::new();
    let mut answers = Vec::new();
    let mut take = |p: &mut Peer, r: String| {
        let reply = p.reply(&r);
        assert_eq!(reply["status"], "ok", "{reply}");
        answers.push(reply["response"].clone());
    };
    for &i in indexes {
        if pending.len() == 4 {
            take(p, pending.pop_front().unwrap());
        }
        let start = i as usize * chunk;
        let data = &file[start..(start + chunk).min(file.len())];
        pending.push_back(p.push_bin(topic, "upload_chunk", &chunk_msg(id, i, total, data)));
    }
    while let Some(r) = pending.pop_front() {
        take(p, r);
    }
    answers
}

#[test]
fn uploads_resume_on_a_new_connection_in_any_order_and_verify() {
    let dir = TempDir::new("uploads");
    let server = FeatureServer::start(&dir.0, |c| {
        c.shards = 2;
        c.uploads.min_chunk_size = 1024;
    });
    let topic = "uploads:ada";
    let file = content(300 * 1024 + 123, 7);
    let chunk = 16 * 1024;
    let total = file.len().div_ceil(chunk) as u32;
    let start = json!({"filename": "../../etc/passwd", "size": file.len(), "sha256": sha_hex(&file), "chunk_size": chunk});

    let mut first = peer(&server, "ada");
    let joined = first.join_ok(topic);
    assert_eq!(joined["user_id"], "ada");
    let started = first.call_json(topic, "upload_start", start.clone());
    assert_eq!(started["status"], "ok", "{started}");
    let id = started["response"]["upload_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(started["response"]["total_chunks"], total);
    assert_eq!(
        started["response"]["missing"],
        json!((0..total).collect::<Vec<_>>())
    );

    // Half the chunks, shuffled, some twice; then the connection is dropped without a close.
    let mut order: Vec<u32> = (0..total).rev().step_by(2).collect();
    let dups = [order[0], order[3]];
    order.extend_from_slice(&dups);
    let answers = send_chunks(&mut first, topic, &id, &file, chunk, &order);
    assert!(answers
        .iter()
        .all(|a| a["upload_complete"] == false && a["upload_id"] == id.as_str()));
    let sent: std::collections::BTreeSet<u32> = order.iter().copied().collect();
    let most = answers
        .iter()
        .map(|a| a["chunks_received"].as_u64().unwrap())
        .max();
    assert_eq!(most, Some(sent.len() as u64));
    drop(first);

    // A new connection (possibly on the other shard) resumes.
    let mut second = peer(&server, "ada");
    second.join_ok(topic);
    let resume = second.call_json(
        topic,
        "upload_start",
        json!({"upload_id": id, "filename": "x", "size": file.len(), "sha256": sha_hex(&file)}),
    );
    let missing: Vec<u32> = serde_json::from_value(resume["response"]["missing"].clone()).unwrap();
    let expected: Vec<u32> = (0..total).filter(|i| !sent.contains(i)).collect();
    assert_eq!(missing, expected, "{resume}");
    let mut rest = missing.clone();
    let dup = rest[0];
    rest.insert(1, dup);
    rest.reverse();
    let answers = send_chunks(&mut second, topic, &id, &file, chunk, &rest);
    let done = answers
        .iter()
        .find(|a| a["upload_complete"] == true)
        .expect("the chunk that completes the set is answered with the verdict");
    assert_eq!(done["sha256"], sha_hex(&file));
    assert_eq!(done["size"], file.len());
    let file_id = done["file_id"].as_str().unwrap();
    let files = dir.0.join("uploads").join("files");
    assert_eq!(std::fs::read(files.join(file_id)).unwrap(), file);
    let meta: Value =
        serde_json::from_slice(&std::fs::read(files.join(format!("{file_id}.json"))).unwrap())
            .unwrap();
    assert_eq!(
        meta["filename"], "../../etc/passwd",
        "a client's name is metadata only"
    );
    assert_eq!(meta["user_id"], "ada");
    assert!(std::fs::read_dir(dir.0.join("uploads").join("partial"))
        .unwrap()
        .next()
        .is_none());

    // Completed uploads answer repeated starts and chunks idempotently.
    let again = second.call_json(
        topic,
        "upload_start",
        json!({"upload_id": id, "filename": "x", "size": file.len(), "sha256": sha_hex(&file)}),
    );
    assert_eq!(again["response"]["upload_complete"], true);
    assert_eq!(again["response"]["missing"], json!([]));
    let dup = second.call_bin(
        topic,
        "upload_chunk",
        &chunk_msg(&id, 0, total, &file[..chunk]),
    );
    assert_eq!(dup["response"]["file_id"], file_id);
}

#[test]
fn upload_checks_limits_and_retries() {
    let dir = TempDir::new("uploads-limits");
    let server = FeatureServer::start(&dir.0, |c| {
        c.auth.allow_anonymous = true;
        c.uploads.min_chunk_size = 16;
        c.uploads.chunk_size = 16;
        c.uploads.max_file_size = 1000;
        c.uploads.quota_bytes = 1100;
        c.uploads.max_concurrent_per_user = 2;
        c.uploads.max_chunks = 10;
        c.uploads.max_pending_chunks = 2;
    });
    let topic = "uploads:ada";
    let mut a = peer(&server, "ada");
    assert_eq!(
        a.join("uploads:bob", json!({}))["response"]["reason"],
        "access_denied"
    );
    let mut guest = Peer::connect(&format!("ws://{}/socket/websocket?vsn=2.0.0", server.addr));
    assert_eq!(
        guest.join("uploads:guest", json!({}))["response"]["reason"],
        "access_denied"
    );
    a.join_ok(topic);

    let sha = "00".repeat(32);
    let start = |size: usize, chunk: usize| json!({"filename": "f", "size": size, "sha256": sha, "chunk_size": chunk});
    for (payload, reason) in [
        (start(1001, 100), "file_too_large"),
        (start(100, 8), "invalid_chunk_size"),
        (start(1000, 16), "too_many_chunks"),
        (
            json!({"filename": "f", "size": 0, "sha256": sha}),
            "invalid_size",
        ),
        (
            json!({"filename": "", "size": 5, "sha256": sha}),
            "invalid_filename",
        ),
        (
            json!({"filename": "f", "size": 5, "sha256": "zz"}),
            "invalid_sha256",
        ),
        (json!({"filename": "f", "size": 5}), "invalid_payload"),
        (
            json!({"filename": "f", "size": 5, "sha256": sha, "upload_id": "00".repeat(16)}),
            "unknown_upload",
        ),
    ] {
        assert_eq!(
            error_reason(&a.call_json(topic, "upload_start", payload.clone())),
            reason,
            "{payload}"
        );
    }

    // A file with a wrong declared checksum: verified, refused, kept for a retry.
    let file = content(40, 1);
    let wrong = a.call_json(
        topic,
        "upload_start",
        json!({"filename": "f", "size": 40, "sha256": sha}),
    );
    let id = wrong["response"]["upload_id"].as_str().unwrap().to_string();
    assert_eq!(
        error_reason(&a.call_bin(topic, "upload_chunk", &chunk_msg(&id, 0, 3, &file[..15]))),
        "bad_chunk_length"
    );
    assert_eq!(
        error_reason(&a.call_bin(topic, "upload_chunk", &chunk_msg(&id, 0, 4, &file[..16]))),
        "total_chunks_mismatch"
    );
    assert_eq!(
        error_reason(&a.call_bin(topic, "upload_chunk", &[1, 2, 3])),
        "invalid_chunk"
    );
    assert_eq!(
        error_reason(&a.call_bin(
            topic,
            "upload_chunk",
            &chunk_msg(&"11".repeat(16), 0, 3, &file[..16])
        )),
        "unknown_upload"
    );
    a.call_bin(topic, "upload_chunk", &chunk_msg(&id, 0, 3, &file[..16]));
    a.call_bin(topic, "upload_chunk", &chunk_msg(&id, 1, 3, &file[16..32]));
    let mismatch = a.call_bin(topic, "upload_chunk", &chunk_msg(&id, 2, 3, &file[32..]));
    assert_eq!(error_reason(&mismatch), "checksum_mismatch", "{mismatch}");
    assert_eq!(mismatch["response"]["actual_sha256"], sha_hex(&file));
    let resume = a.call_json(
        topic,
        "upload_start",
        json!({"upload_id": id, "filename": "f", "size": 40, "sha256": sha}),
    );
    assert_eq!(
        resume["response"]["missing"],
        json!([0, 1, 2]),
        "every chunk is missing again"
    );
    assert_eq!(
        error_reason(&a.call_json(
            topic,
            "upload_start",
            json!({"upload_id": id, "filename": "f", "size": 41, "sha256": sha})
        )),
        "upload_mismatch"
    );

    // Per-user concurrency (the mismatched upload still counts) and the disk quota.
    let ok = a.call_json(topic, "upload_start", start(160, 16));
    assert_eq!(ok["status"], "ok");
    assert_eq!(
        error_reason(&a.call_json(topic, "upload_start", start(16, 16))),
        "too_many_uploads"
    );
    // Quota is taken as chunks arrive: a start that sends nothing holds none of it.
    let mut bob = peer(&server, "bob");
    bob.join_ok("uploads:bob");
    let bob_file = content(1000, 7);
    let bob_start =
        json!({"filename": "g", "size": 1000, "sha256": sha_hex(&bob_file), "chunk_size": 100});
    let bob_up = bob.call_json("uploads:bob", "upload_start", bob_start);
    assert_eq!(bob_up["status"], "ok", "{bob_up}");
    let bob_id = bob_up["response"]["upload_id"]
        .as_str()
        .unwrap()
        .to_string();

    // At most 2 chunks may wait for their answer per connection.
    let big_id = ok["response"]["upload_id"].as_str().unwrap().to_string();
    let data = content(160, 3);
    let refs = a.push_bin_batch(
        topic,
        "upload_chunk",
        &(0..3)
            .map(|i| chunk_msg(&big_id, i, 10, &data[i as usize * 16..][..16]))
            .collect::<Vec<_>>(),
    );
    let replies: Vec<Value> = refs.iter().map(|r| a.reply(r)).collect();
    assert_eq!(
        replies.iter().filter(|r| r["status"] == "ok").count(),
        2,
        "{replies:?}"
    );
    assert_eq!(error_reason(&replies[2]), "too_many_pending_chunks");

    // Bob's 1000 bytes land and complete. Taken of the 1100-byte quota: 40 by the mismatched
    // upload (its bytes stay on disk until sent again), 32 by ada's chunks, 1000 by bob's file.
    for i in 0..10u32 {
        let r = bob.call_bin(
            "uploads:bob",
            "upload_chunk",
            &chunk_msg(&bob_id, i, 10, &bob_file[i as usize * 100..][..100]),
        );
        assert_eq!(r["status"], "ok", "{r}");
    }
    let r = a.call_bin(
        topic,
        "upload_chunk",
        &chunk_msg(&big_id, 2, 10, &data[32..48]),
    );
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(
        error_reason(&a.call_bin(
            topic,
            "upload_chunk",
            &chunk_msg(&big_id, 3, 10, &data[48..64])
        )),
        "quota_exceeded",
        "1088 + 16 bytes are over the 1100-byte quota"
    );
    assert_eq!(
        error_reason(&bob.call_json("uploads:bob", "upload_start", start(16, 16))),
        "quota_exceeded",
        "a file that cannot fit now is refused at its start"
    );
}

#[test]
fn abandoned_uploads_hold_no_quota_and_expire() {
    let dir = TempDir::new("uploads-expiry");
    let server = FeatureServer::start(&dir.0, |c| {
        c.uploads.min_chunk_size = 16;
        c.uploads.quota_bytes = 100;
        c.uploads.max_unfinished_bytes_per_user = 150;
        c.uploads.unstarted_expire_after_ms = 200;
        c.uploads.expire_after_ms = 1500;
    });
    let partial = |id: &str| {
        dir.0
            .join("uploads")
            .join("partial")
            .join(format!("{id}.part"))
    };
    let start = |size: usize| json!({"filename": "f", "size": size, "sha256": "00".repeat(32), "chunk_size": 16});
    let upload_id = |reply: &Value| {
        assert_eq!(reply["status"], "ok", "{reply}");
        reply["response"]["upload_id"].as_str().unwrap().to_string()
    };
    let mut ada = peer(&server, "ada");
    ada.join_ok("uploads:ada");
    let ada_id = upload_id(&ada.call_json("uploads:ada", "upload_start", start(100)));
    assert_eq!(
        error_reason(&ada.call_json("uploads:ada", "upload_start", start(60))),
        "quota_exceeded",
        "100 + 60 declared bytes are over ada's 150"
    );
    // Ada's declared 100 bytes hold none of the 100-byte quota: others start too.
    let mut bob = peer(&server, "bob");
    bob.join_ok("uploads:bob");
    let bob_id = upload_id(&bob.call_json("uploads:bob", "upload_start", start(100)));
    let data = content(100, 5);
    for i in 0..4u32 {
        let r = ada.call_bin(
            "uploads:ada",
            "upload_chunk",
            &chunk_msg(&ada_id, i, 7, &data[i as usize * 16..][..16]),
        );
        assert_eq!(r["status"], "ok", "{r}");
    }
    for i in 0..2u32 {
        let r = bob.call_bin(
            "uploads:bob",
            "upload_chunk",
            &chunk_msg(&bob_id, i, 7, &data[i as usize * 16..][..16]),
        );
        assert_eq!(r["status"], "ok", "{r}");
    }
    assert_eq!(
        error_reason(&bob.call_bin(
            "uploads:bob",
            "upload_chunk",
            &chunk_msg(&bob_id, 2, 7, &data[32..48])
        )),
        "quota_exceeded",
        "64 + 32 + 16 bytes sent are over the quota"
    );

    // An upload that is sent no chunk goes after unstarted_expire_after_ms; one that was
    // sent chunks stays until expire_after_ms.
    let mut carol = peer(&server, "carol");
    carol.join_ok("uploads:carol");
    let carol_id = upload_id(&carol.call_json("uploads:carol", "upload_start", start(4)));
    assert!(partial(&carol_id).exists());
    let deadline = Instant::now() + Duration::from_secs(10);
    while partial(&carol_id).exists() {
        assert!(
            Instant::now() < deadline,
            "the unstarted upload never expired"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        partial(&ada_id).exists(),
        "an upload with chunks lives for expire_after_ms"
    );
    // Bob's upload is touched (resumed) now, so it outlives ada's.
    let bob_resume =
        json!({"upload_id": bob_id, "filename": "f", "size": 100, "sha256": "00".repeat(32)});
    let r = bob.call_json("uploads:bob", "upload_start", bob_resume);
    assert_eq!(r["response"]["missing"], json!([2, 3, 4, 5, 6]), "{r}");

    // Poll (bounded) until ada's upload expired too: its 64 bytes of quota come back.
    while partial(&ada_id).exists() {
        assert!(Instant::now() < deadline, "the upload never expired");
        std::thread::sleep(Duration::from_millis(20));
    }
    let resume =
        json!({"upload_id": ada_id, "filename": "f", "size": 100, "sha256": "00".repeat(32)});
    assert_eq!(
        error_reason(&ada.call_json("uploads:ada", "upload_start", resume)),
        "unknown_upload"
    );
    let r = bob.call_bin(
        "uploads:bob",
        "upload_chunk",
        &chunk_msg(&bob_id, 2, 7, &data[32..48]),
    );
    assert_eq!(r["status"], "ok", "the quota came back: {r}");
}

#[test]
fn partial_files_of_a_previous_run_are_removed_and_completed_files_count() {
    let dir = TempDir::new("uploads-restart");
    let root = dir.0.join("uploads");
    std::fs::create_dir_all(root.join("partial")).unwrap();
    std::fs::create_dir_all(root.join("files")).unwrap();
    std::fs::write(root.join("partial").join("stale.part"), b"x").unwrap();
    std::fs::write(root.join("files").join("old"), vec![0u8; 60]).unwrap();
    let server = FeatureServer::start(&dir.0, |c| {
        c.uploads.min_chunk_size = 16;
        c.uploads.quota_bytes = 100;
    });
    assert!(!root.join("partial").join("stale.part").exists());
    let mut a = peer(&server, "ada");
    a.join_ok("uploads:ada");
    let start = |size: u32| json!({"filename": "f", "size": size, "sha256": "00".repeat(32), "chunk_size": 16});
    assert_eq!(
        error_reason(&a.call_json("uploads:ada", "upload_start", start(41))),
        "quota_exceeded"
    );
    assert_eq!(
        a.call_json("uploads:ada", "upload_start", start(40))["status"],
        "ok"
    );
}
