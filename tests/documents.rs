//! The `document:*` channel over real sockets: the examples through the server, both
//! operation forms, UTF-16 offsets, resync errors, resends that must not apply twice, re-join
//! catch-up, `create_on_join = false`, limits, restart recovery (snapshot + replay) and editors
//! spread over two shards converging with the server.

mod common;
use common::*;
use serde_json::{json, Value};
use shardcast::document::{Chars, Client as OtClient, Operation, Revision};
use std::collections::BTreeMap;

/// Joins `topic` with `payload`; returns the join ref and the `document_state` or
/// `document_catchup` push that follows (event name, payload).
fn join_doc(c: &mut Client, topic: &str, payload: Value) -> (String, String, Value) {
    let (join_ref, reply) = c.join(topic, payload);
    assert_eq!(reply["status"], "ok", "join {topic}: {reply}");
    let m = c.next_where("document_state or document_catchup", |m| {
        m[2] == topic && (m[3] == "document_state" || m[3] == "document_catchup")
    });
    (join_ref, m[3].as_str().unwrap().to_owned(), m[4].clone())
}

/// Joins and returns the join ref and the state `{content, version}`.
fn open(c: &mut Client, topic: &str) -> (String, Value) {
    let (join_ref, event, state) = join_doc(c, topic, json!({}));
    assert_eq!(event, "document_state");
    (join_ref, state)
}

/// Pushes an `operation` and waits for its reply `{status, response}`.
fn submit(c: &mut Client, join_ref: &str, topic: &str, payload: Value) -> Value {
    c.call(join_ref, topic, "operation", payload)
}

fn ok_version(reply: &Value) -> u64 {
    assert_eq!(reply["status"], "ok", "{reply}");
    reply["response"]["version"].as_u64().unwrap()
}

/// The document as a fresh joiner sees it.
fn content(server: &FeatureServer, topic: &str) -> (String, u64) {
    let mut c = server.client("observer", "Observer");
    let (_, state) = open(&mut c, topic);
    c.close();
    (
        state["content"].as_str().unwrap().to_owned(),
        state["version"].as_u64().unwrap(),
    )
}

/// Creates `topic` with `text` as version 1.
fn seed(c: &mut Client, topic: &str, text: &str) -> String {
    let (join_ref, state) = open(c, topic);
    assert_eq!(state, json!({"content": "", "version": 0}));
    let r = submit(
        c,
        &join_ref,
        topic,
        json!({"op": [text], "version": 0, "client_id": "seed", "seq": 1}),
    );
    assert_eq!(ok_version(&r), 1);
    join_ref
}

#[test]
fn overlapping_deletes_and_inserts_inside_deleted_ranges_converge() {
    let dir = TempDir::new("docs-examples");
    let server = FeatureServer::start(&dir.0, |_| {});
    for (topic, a_op, b_op, expected) in [
        // One user deletes "bc" while another deletes "cd".
        (
            "document:ex1",
            json!({"type": "delete", "position": 1, "length": 2}),
            json!({"type": "delete", "position": 2, "length": 2}),
            "aef",
        ),
        // Delete "bcd" while another inserts "X" at 2.
        (
            "document:ex2",
            json!({"type": "delete", "position": 1, "length": 3}),
            json!({"type": "insert", "position": 2, "content": "X"}),
            "aXef",
        ),
    ] {
        let mut a = server.client("alice", "Alice");
        let mut b = server.client("bob", "Bob");
        let ja = seed(&mut a, topic, "abcdef");
        let (jb, state) = open(&mut b, topic);
        assert_eq!(state, json!({"content": "abcdef", "version": 1}));
        // Both based on version 1, sent before either is acknowledged.
        let ra = a.push(&ja, topic, "operation", json!({"op": a_op, "version": 1}));
        let rb = b.push(&jb, topic, "operation", json!({"op": b_op, "version": 1}));
        let mut versions = vec![ok_version(&a.reply(&ra)), ok_version(&b.reply(&rb))];
        versions.sort();
        assert_eq!(versions, [2, 3]);
        assert_eq!(content(&server, topic), (expected.to_owned(), 3));
    }
}

#[test]
fn tie_break_puts_the_later_submission_left_and_combining_marks_count() {
    let dir = TempDir::new("docs-tie");
    let server = FeatureServer::start(&dir.0, |_| {});
    let topic = "document:tie";
    let mut a = server.client("alice", "Alice");
    let mut b = server.client("bob", "Bob");
    let ja = seed(&mut a, topic, "xy");
    let (jb, _) = open(&mut b, topic);
    let insert = |s: &str| json!({"type": "insert", "position": 1, "content": s});
    let ra = submit(&mut a, &ja, topic, json!({"op": insert("A"), "version": 1}));
    assert_eq!(ok_version(&ra), 2);
    // B never saw A's insert: the submitted operation goes left.
    let rb = submit(&mut b, &jb, topic, json!({"op": insert("B"), "version": 1}));
    assert_eq!(ok_version(&rb), 3);
    assert_eq!(content(&server, topic).0, "xBAy");

    // "e" + U+0301 is two positions: an insert after the accent lands after it.
    let topic = "document:accent";
    let ja = seed(&mut a, topic, "ebc");
    let accent = json!({"type": "insert", "position": 1, "content": "\u{301}"});
    assert_eq!(
        ok_version(&submit(
            &mut a,
            &ja,
            topic,
            json!({"op": accent, "version": 1})
        )),
        2
    );
    let after = json!({"type": "insert", "position": 2, "content": "x"});
    assert_eq!(
        ok_version(&submit(
            &mut a,
            &ja,
            topic,
            json!({"op": after, "version": 2})
        )),
        3
    );
    assert_eq!(content(&server, topic).0, "e\u{301}xbc");
}

#[test]
fn both_operation_forms_and_the_broadcast_shape() {
    let dir = TempDir::new("docs-forms");
    let server = FeatureServer::start(&dir.0, |_| {});
    let topic = "document:forms";
    let mut a = server.client("alice", "Alice");
    let mut b = server.client("bob", "Bob");
    let ja = seed(&mut a, topic, "hello");
    let (_jb, _) = open(&mut b, topic);

    // ot.js compound form: retain 5, insert " world".
    let r = submit(
        &mut a,
        &ja,
        topic,
        json!({"op": [5, " world"], "version": 1, "client_id": "tab-1", "seq": 7}),
    );
    assert_eq!(r["response"], json!({"version": 2, "seq": 7}));
    let seen = b.event(topic, "operation");
    assert_eq!(
        seen,
        json!({"op": [5, " world"], "version": 2, "user_id": "alice", "client_id": "tab-1", "seq": 7})
    );
    // A list of simple operations applies in order.
    let list = json!([
        {"type": "delete", "position": 0, "length": 1},
        {"type": "insert", "position": 0, "content": "H"},
    ]);
    let r = submit(&mut a, &ja, topic, json!({"op": list, "version": 2}));
    assert_eq!(r["response"], json!({"version": 3}));
    let seen = b.event(topic, "operation");
    assert_eq!(seen["op"], json!(["H", -1, 10]));
    assert_eq!(
        (seen["client_id"].clone(), seen["seq"].clone()),
        (Value::Null, Value::Null)
    );
    // The sender never gets its own operation as a broadcast.
    assert!(a.drain_events(topic, "operation").is_empty());
    assert_eq!(content(&server, topic), ("Hello world".to_owned(), 3));

    // Malformed operations are refused with a reason and change nothing.
    for (payload, reason) in [
        (json!({"op": [99, "x"], "version": 3}), "invalid_operation"),
        (
            json!({"op": {"type": "insert", "position": 12, "content": "x"}, "version": 3}),
            "invalid_operation",
        ),
        (
            json!({"op": {"type": "move", "position": 0}, "version": 3}),
            "invalid_operation",
        ),
        (json!({"op": [11, "x"]}), "invalid_operation"),
        (json!({"version": 3}), "invalid_operation"),
        (
            json!({"op": [11, "x"], "version": 3, "seq": -1}),
            "invalid_operation",
        ),
        (
            json!({"op": [11, "x"], "version": 3, "client_id": 5}),
            "invalid_operation",
        ),
    ] {
        let r = submit(&mut a, &ja, topic, payload.clone());
        assert_eq!(r["status"], "error", "{payload}");
        assert_eq!(r["response"]["reason"], reason, "{payload}: {r}");
    }
    let r = a.call(&ja, topic, "paste", json!({}));
    assert_eq!(r["response"]["reason"], "unknown_event");
    assert_eq!(content(&server, topic), ("Hello world".to_owned(), 3));
}

#[test]
fn utf16_offsets_are_converted_at_the_edge() {
    let dir = TempDir::new("docs-utf16");
    let server = FeatureServer::start(&dir.0, |_| {});
    let topic = "document:emoji";
    let mut chars = server.client("c", "Chars");
    let jc = seed(&mut chars, topic, "a😀b");
    let mut js = server.client("j", "Js");
    let (jj, event, state) = join_doc(&mut js, topic, json!({"offsets": "utf16"}));
    assert_eq!(event, "document_state");
    assert_eq!(state, json!({"content": "a😀b", "version": 1}));

    // "!" before "b": UTF-16 offset 3 (scalar offset 2).
    let r = submit(
        &mut js,
        &jj,
        topic,
        json!({"op": {"type": "insert", "position": 3, "content": "!"}, "version": 1}),
    );
    assert_eq!(ok_version(&r), 2);
    let seen = chars.event(topic, "operation");
    assert_eq!(seen["op"], json!([2, "!", 1]));
    assert_eq!(seen["op_utf16"], json!([3, "!", 1]));
    // An offset inside the emoji's surrogate pair is refused.
    let r = submit(
        &mut js,
        &jj,
        topic,
        json!({"op": [2, "x", 3], "version": 2}),
    );
    assert_eq!(r["response"]["reason"], "invalid_operation", "{r}");
    assert!(
        r["response"]["message"]
            .as_str()
            .unwrap()
            .contains("surrogate"),
        "{r}"
    );
    // A scalar-value client and a UTF-16 client edit concurrently from version 2.
    let r1 = chars.push(
        &jc,
        topic,
        "operation",
        json!({"op": {"type": "insert", "position": 1, "content": "👍"}, "version": 2}),
    );
    let r2 = js.push(
        &jj,
        topic,
        "operation",
        json!({"op": {"type": "delete", "position": 1, "length": 2}, "version": 2}),
    );
    ok_version(&chars.reply(&r1));
    ok_version(&js.reply(&r2));
    assert_eq!(content(&server, topic), ("a👍!b".to_owned(), 4));
    // A UTF-16 client catching up gets UTF-16 operations.
    let mut late = server.client("j", "Js");
    let (_, event, catchup) = join_doc(&mut late, topic, json!({"offsets": "utf16", "version": 1}));
    assert_eq!(event, "document_catchup");
    assert_eq!(catchup["operations"][0]["op"], json!([3, "!", 1]));
    let (_, reply) = late.join(topic, json!({"offsets": "bytes"}));
    assert_eq!(reply["response"]["reason"], "invalid_offsets");
}

#[test]
fn versions_outside_the_history_get_resync_errors() {
    let dir = TempDir::new("docs-resync");
    let server = FeatureServer::start(&dir.0, |c| c.documents.history = 2);
    let topic = "document:resync";
    let mut a = server.client("alice", "Alice");
    let ja = seed(&mut a, topic, "a");
    for v in 1..4u64 {
        let r = submit(&mut a, &ja, topic, json!({"op": [v, "b"], "version": v}));
        assert_eq!(ok_version(&r), v + 1);
    }
    let ahead = submit(&mut a, &ja, topic, json!({"op": [4, "x"], "version": 9}));
    assert_eq!(ahead["status"], "error");
    assert_eq!(ahead["response"]["reason"], "resync");
    assert_eq!(ahead["response"]["version"], 4);
    let old = submit(&mut a, &ja, topic, json!({"op": [1, "x"], "version": 1}));
    assert_eq!(old["response"]["reason"], "resync", "{old}");
    assert!(old["response"]["message"]
        .as_str()
        .unwrap()
        .contains("re-join"));
    // Version 2 is the oldest the history still reaches.
    let r = submit(&mut a, &ja, topic, json!({"op": [2, "x"], "version": 2}));
    assert_eq!(ok_version(&r), 5);
    assert_eq!(content(&server, topic), ("abxbb".to_owned(), 5));

    // Re-joining that far behind gets the whole document instead of a catch-up.
    let mut b = server.client("bob", "Bob");
    let (_, event, state) = join_doc(&mut b, topic, json!({"version": 1}));
    assert_eq!(event, "document_state");
    assert_eq!(state["version"], 5);
    let (_, event, _) = join_doc(&mut b, topic, json!({"version": 99}));
    assert_eq!(event, "document_state");
}

#[test]
fn resent_operations_are_acknowledged_not_applied_twice() {
    let dir = TempDir::new("docs-resend");
    let server = FeatureServer::start(&dir.0, |_| {});
    let topic = "document:resend";
    let mut a = server.client("alice", "Alice");
    let mut b = server.client("bob", "Bob");
    let ja = seed(&mut a, topic, "abc");
    let (jb, _) = open(&mut b, topic);
    let op = json!({"op": [3, "!"], "version": 1, "client_id": "tab", "seq": 2});
    assert_eq!(ok_version(&submit(&mut a, &ja, topic, op.clone())), 2);
    // B edits meanwhile; then A resends (as after a reconnect) from another connection.
    assert_eq!(
        ok_version(&submit(
            &mut b,
            &jb,
            topic,
            json!({"op": ["X", 4], "version": 2})
        )),
        3
    );
    let mut a2 = server.client("alice", "Alice");
    let (ja2, event, catchup) = join_doc(&mut a2, topic, json!({"version": 1}));
    assert_eq!(event, "document_catchup");
    assert_eq!(catchup["from"], 1);
    assert_eq!(catchup["version"], 3);
    let ops = catchup["operations"].as_array().unwrap();
    assert_eq!(
        ops[0],
        json!({"op": [3, "!"], "version": 2, "user_id": "alice", "client_id": "tab", "seq": 2})
    );
    assert_eq!(ops[1]["user_id"], "bob");
    let again = submit(&mut a2, &ja2, topic, op.clone());
    assert_eq!(again["response"], json!({"version": 2, "seq": 2}));
    let again = submit(&mut a, &ja, topic, op);
    assert_eq!(again["response"], json!({"version": 2, "seq": 2}));
    assert_eq!(content(&server, topic), ("Xabc!".to_owned(), 3));
    // B saw A's operation once.
    assert!(b.drain_events(topic, "operation").len() == 1);
    // An older seq than the last applied one is refused.
    let stale = submit(
        &mut a2,
        &ja2,
        topic,
        json!({"op": [5, "?"], "version": 3, "client_id": "tab", "seq": 1}),
    );
    assert_eq!(stale["response"]["reason"], "stale_seq");
    // Client ids are per user: Bob using "tab" with seq 2 is a new operation.
    let bob = submit(
        &mut b,
        &jb,
        topic,
        json!({"op": [5, "?"], "version": 3, "client_id": "tab", "seq": 2}),
    );
    assert_eq!(ok_version(&bob), 4);
}

#[test]
fn a_fresh_rejoin_on_the_same_connection_still_gets_its_operation_in_flight() {
    let dir = TempDir::new("docs-rejoin-inflight");
    let server = FeatureServer::start(&dir.0, |_| {});
    let topic = "document:inflight";
    let mut a = server.client("alice", "Alice");
    let ja = seed(&mut a, topic, "abc");
    // Sent, then at once a join of the same topic on the same connection (as a client that gave
    // up on its state does): the old join's acknowledgement is lost with it.
    a.push(
        &ja,
        topic,
        "operation",
        json!({"op": [3, "!"], "version": 1, "client_id": "tab", "seq": 2}),
    );
    let (_, event, state) = join_doc(&mut a, topic, json!({}));
    assert_eq!(event, "document_state");
    if state["version"] == 1 {
        // Not durable when the state was taken: it arrives as an operation, not excluded.
        assert_eq!(state["content"], "abc");
        let op = a.event(topic, "operation");
        assert_eq!(
            op,
            json!({"op": [3, "!"], "version": 2, "user_id": "alice", "client_id": "tab", "seq": 2})
        );
    } else {
        assert_eq!(state, json!({"content": "abc!", "version": 2}));
    }
    assert_eq!(content(&server, topic), ("abc!".to_owned(), 2));
}

#[test]
fn a_failed_append_is_not_acknowledged_and_the_document_reloads() {
    let dir = TempDir::new("docs-fail");
    let server = FeatureServer::start(&dir.0, |_| {});
    let topic = "document:broken";
    let mut a = server.client("alice", "Alice");
    let mut b = server.client("bob", "Bob");
    let ja = seed(&mut a, topic, "abc");
    open(&mut b, topic);
    // Someone else writes the database behind the server's back: the next append does not follow.
    let db = rusqlite::Connection::open(dir.0.join("documents.sqlite3")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    db.execute("UPDATE documents SET version = 10 WHERE id = 'broken'", [])
        .unwrap();
    let op = json!({"op": [3, "!"], "version": 1, "client_id": "tab", "seq": 2});
    let r = submit(&mut a, &ja, topic, op.clone());
    assert_eq!(r["status"], "error");
    assert_eq!(r["response"]["reason"], "storage_error", "{r}");
    assert_eq!(b.event(topic, "resync"), json!({"reason": "storage_error"}));
    // Nothing unacknowledged was shown to anyone; once the database is right again the
    // document is reloaded from it and the resend is applied (once).
    db.execute("UPDATE documents SET version = 1 WHERE id = 'broken'", [])
        .unwrap();
    let r = submit(&mut a, &ja, topic, op);
    assert_eq!(r["response"], json!({"version": 2, "seq": 2}));
    assert_eq!(content(&server, topic), ("abc!".to_owned(), 2));
}

#[test]
fn limits_are_enforced() {
    let dir = TempDir::new("docs-limits");
    let server = FeatureServer::start(&dir.0, |c| {
        c.documents.max_chars = 10;
        c.documents.max_op_size = 8;
    });
    let topic = "document:limits";
    let mut a = server.client("alice", "Alice");
    let (ja, _) = open(&mut a, topic);
    let r = submit(
        &mut a,
        &ja,
        topic,
        json!({"op": ["0123456789"], "version": 0}),
    );
    assert_eq!(r["response"]["reason"], "operation_too_large", "{r}");
    let r = submit(&mut a, &ja, topic, json!({"op": ["012345"], "version": 0}));
    assert_eq!(ok_version(&r), 1);
    let r = submit(
        &mut a,
        &ja,
        topic,
        json!({"op": [6, "abcde"], "version": 1}),
    );
    assert_eq!(r["response"]["reason"], "document_too_large", "{r}");
    assert_eq!(content(&server, topic), ("012345".to_owned(), 1));
}

#[test]
fn missing_documents_are_refused_when_not_created_on_join() {
    let dir = TempDir::new("docs-notfound");
    let server = FeatureServer::start(&dir.0, |_| {});
    let mut a = server.client("alice", "Alice");
    seed(&mut a, "document:exists", "kept");
    a.close();
    server.stop();

    let server = FeatureServer::start(&dir.0, |c| c.documents.create_on_join = false);
    let mut a = server.client("alice", "Alice");
    let (_, reply) = a.join("document:missing", json!({}));
    assert_eq!(
        reply,
        json!({"status": "error", "response": {"reason": "Document not found"}})
    );
    let (_, state) = open(&mut a, "document:exists");
    assert_eq!(state, json!({"content": "kept", "version": 1}));
}

#[test]
fn a_restart_restores_text_version_and_resend_detection() {
    let dir = TempDir::new("docs-restart");
    let configure = |c: &mut shardcast::Config| {
        c.documents.snapshot_every = 3;
        c.documents.history = 4;
    };
    let server = FeatureServer::start(&dir.0, configure);
    let topic = "document:durable";
    let mut a = server.client("alice", "Alice");
    let ja = seed(&mut a, topic, "");
    let mut expected = String::new();
    for v in 1..=10u64 {
        let text = format!("{v},");
        let insert =
            json!({"type": "insert", "position": expected.chars().count(), "content": text});
        let op = json!({"op": insert, "version": v, "client_id": "tab", "seq": v + 1});
        assert_eq!(ok_version(&submit(&mut a, &ja, topic, op)), v + 1);
        expected.push_str(&text);
    }
    a.close();
    server.stop();

    let server = FeatureServer::start(&dir.0, configure);
    assert_eq!(content(&server, topic), (expected.clone(), 11));
    let mut a = server.client("alice", "Alice");
    // Snapshot at 9 is too recent for a full window of 4: the load starts at snapshot 6, so a
    // client that knew version 7 is caught up.
    let (ja, event, catchup) = join_doc(&mut a, topic, json!({"version": 7}));
    assert_eq!(event, "document_catchup", "{catchup}");
    assert_eq!(catchup["operations"].as_array().unwrap().len(), 4);
    // The last operation, resent after the restart, is recognized.
    let insert =
        json!({"type": "insert", "position": expected.chars().count() - 3, "content": "10,"});
    let last = json!({"op": insert, "version": 10, "client_id": "tab", "seq": 11});
    assert_eq!(
        submit(&mut a, &ja, topic, last)["response"],
        json!({"version": 11, "seq": 11})
    );
    assert_eq!(content(&server, topic), (expected, 11));
}

#[test]
fn idle_documents_are_unloaded_and_busy_shards_refuse_more() {
    let dir = TempDir::new("docs-evict");
    let server = FeatureServer::start(&dir.0, |c| c.documents.max_loaded = 1);
    let mut a = server.client("alice", "Alice");
    let ja = seed(&mut a, "document:one", "first");
    assert_eq!(
        a.call(&ja, "document:one", "phx_leave", json!({}))["status"],
        "ok"
    );
    // "one" is idle: loading "two" unloads it.
    let jb = seed(&mut a, "document:two", "second");
    // "two" has a member, so "one" cannot be loaded beside it.
    let mut b = server.client("bob", "Bob");
    let (_, reply) = b.join("document:one", json!({}));
    assert_eq!(reply["status"], "ok");
    assert_eq!(
        b.event("document:one", "document_error"),
        json!({"reason": "overloaded"})
    );
    b.event("document:one", "phx_close");
    assert_eq!(
        a.call(&jb, "document:two", "phx_leave", json!({}))["status"],
        "ok"
    );
    // Reloaded from the store, as it was.
    let (_, state) = open(&mut b, "document:one");
    assert_eq!(state, json!({"content": "first", "version": 1}));
}

// --- Editors on two shards ------------------------------------------------------------------

fn per_shard_connections(server: &FeatureServer) -> Vec<u64> {
    let text = http_get(server.addr, "/metrics").1;
    text.lines()
        .filter(|l| l.starts_with("shardcast_connections{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect()
}

/// A server message for an editor, keyed by the version it brings the editor to.
enum Incoming {
    Ack(u64),
    Remote(Revision),
}

/// A test editor: the Rust client state machine over a socket. Acknowledgements and broadcasts
/// travel different paths, so they are applied in version order.
struct Editor {
    conn: Client,
    join_ref: String,
    client: OtClient<Chars>,
    in_flight: Option<String>,
    buffered: BTreeMap<u64, Incoming>,
    rng: u64,
}

const TOPIC: &str = "document:shards";

impl Editor {
    fn join(server: &FeatureServer, n: usize) -> Editor {
        let mut conn = server.client(&format!("user{n}"), "Editor");
        let (join_ref, state) = open(&mut conn, TOPIC);
        let client = OtClient::new(
            format!("editor-{n}"),
            state["content"].as_str().unwrap(),
            state["version"].as_u64().unwrap(),
        );
        Editor {
            conn,
            join_ref,
            client,
            in_flight: None,
            buffered: BTreeMap::new(),
            rng: 0x9E37_79B9_7F4A_7C15 ^ n as u64,
        }
    }

    fn random(&mut self, n: usize) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % n.max(1) as u64) as usize
    }

    /// Makes a random edit and sends it.
    fn edit(&mut self) {
        let len = self.client.text().len_chars();
        let op = if len > 0 && self.random(3) == 0 {
            let pos = self.random(len);
            Operation::delete_at(len, pos, 1 + self.random((len - pos).min(3))).unwrap()
        } else {
            let text = ["a", "é", "😀", "\u{301}", "xy"][self.random(5)];
            Operation::insert_at(len, self.random(len + 1), text).unwrap()
        };
        let out = self
            .client
            .edit(op)
            .unwrap()
            .expect("synchronized before each edit");
        let payload = json!({
            "op": out.op.to_json(),
            "version": out.base_version,
            "client_id": self.client.id(),
            "seq": out.seq,
        });
        self.in_flight = Some(self.conn.push(&self.join_ref, TOPIC, "operation", payload));
    }

    /// Reads one message and applies whatever is now in order.
    fn step(&mut self) {
        let m = self.conn.next();
        if m[3] == "phx_reply" && self.in_flight.as_deref() == m[1].as_str() {
            let reply = &m[4];
            assert_eq!(reply["status"], "ok", "{reply}");
            let version = reply["response"]["version"].as_u64().unwrap();
            self.buffered.insert(version, Incoming::Ack(version));
            self.in_flight = None;
        } else if m[3] == "operation" {
            let p = &m[4];
            assert!(
                p["client_id"] != self.client.id(),
                "own operation broadcast back"
            );
            let revision = Revision {
                version: p["version"].as_u64().unwrap(),
                op: serde_json::from_value(p["op"].clone()).unwrap(),
                client_id: p["client_id"].as_str().map(str::to_owned),
                seq: p["seq"].as_u64(),
            };
            self.buffered
                .insert(revision.version, Incoming::Remote(revision));
        }
        while let Some(next) = self.buffered.remove(&(self.client.version() + 1)) {
            match next {
                Incoming::Ack(version) => {
                    let seq = self.client.pending().unwrap().seq;
                    assert_eq!(self.client.ack(version, seq).unwrap(), None);
                }
                Incoming::Remote(rev) => {
                    self.client.receive(&rev).unwrap();
                }
            }
        }
    }

    fn settled_at(&self, version: u64) -> bool {
        self.client.pending().is_none() && self.client.version() == version
    }
}

#[test]
fn editors_on_two_shards_converge_with_the_server() {
    let dir = TempDir::new("docs-shards");
    let server = FeatureServer::start(&dir.0, |c| c.shards = 2);
    let mut editors = Vec::new();
    while editors.len() < 4 || per_shard_connections(&server).contains(&0) {
        assert!(
            editors.len() < 64,
            "connections never reached both shards: {:?}",
            per_shard_connections(&server)
        );
        editors.push(Editor::join(&server, editors.len()));
    }
    // Everyone has joined at version 0 before the first edit.
    const ROUNDS: u64 = 15;
    for _ in 0..ROUNDS {
        // Every editor edits concurrently (all based on what each has seen so far) ...
        for e in editors.iter_mut() {
            e.edit();
        }
        // ... and waits for its acknowledgement, applying others' operations meanwhile.
        for e in editors.iter_mut() {
            while e.in_flight.is_some() || e.client.pending().is_some() {
                e.step();
            }
        }
    }
    let final_version = ROUNDS * editors.len() as u64;
    for e in editors.iter_mut() {
        while !e.settled_at(final_version) {
            e.step();
        }
    }
    let (text, version) = content(&server, TOPIC);
    assert_eq!(version, final_version);
    for (i, e) in editors.iter().enumerate() {
        assert_eq!(e.client.text().to_string(), text, "editor {i}");
    }
}
