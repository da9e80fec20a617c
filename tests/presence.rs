//! Presence over real sockets, with users and tabs spread over two shards: every client that
//! applies `presence_state` and the `presence_diff`s it receives the way phoenix.js does ends
//! with the same users and metas; meta updates are leave+join with a new ref; dead connections
//! disappear. Also the collaboration channel's cursors and selections.

mod common;
use common::*;
use serde_json::{json, Value};
use shardcast::core::presence::{normalized, sync_diff, sync_state, Diff, State};
use std::collections::BTreeMap;

/// A phoenix.js `Presence` over a [`Client`]: diffs before the first state are held.
struct View {
    topic: String,
    state: State,
    synced: bool,
    pending: Vec<Diff>,
    /// Diffs received so far.
    diffs: usize,
}

impl View {
    fn new(topic: &str) -> View {
        View {
            topic: topic.into(),
            state: State::new(),
            synced: false,
            pending: vec![],
            diffs: 0,
        }
    }

    /// Applies presence messages (in arrival order) until `pred` holds.
    fn until(&mut self, c: &mut Client, what: &str, pred: impl Fn(&State) -> bool) {
        while !(self.synced && pred(&self.state)) {
            let topic = self.topic.clone();
            let m = c.next_where(what, |m| {
                m[2] == topic.as_str() && (m[3] == "presence_state" || m[3] == "presence_diff")
            });
            if m[3] == "presence_state" {
                let s: State = serde_json::from_value(m[4].clone()).unwrap();
                sync_state(&mut self.state, &s);
                for d in self.pending.drain(..) {
                    sync_diff(&mut self.state, &d);
                }
                self.synced = true;
            } else {
                let d: Diff = serde_json::from_value(m[4].clone()).unwrap();
                self.diffs += 1;
                if self.synced {
                    sync_diff(&mut self.state, &d);
                } else {
                    self.pending.push(d);
                }
            }
        }
    }
}

/// User → number of metas.
fn shape(s: &State) -> BTreeMap<String, usize> {
    s.iter().map(|(k, p)| (k.clone(), p.metas.len())).collect()
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

#[test]
fn presence_converges_for_users_and_tabs_on_two_shards() {
    const T: &str = "room:presence";
    let dir = TempDir::new("presence-shards");
    let server = FeatureServer::start(&dir.0, |c| c.shards = 2);
    let subs = [
        ("u1", "Ada"),
        ("u1", "Ada"),
        ("u2", "Bo"),
        ("u3", "Cy"),
        ("u3", "Cy"),
        ("u3", "Cy"),
    ];
    let mut clients = server.clients_on_both_shards(&subs);
    let mut views: Vec<View> = subs.iter().map(|_| View::new(T)).collect();
    let mut join_refs = vec![];
    for c in clients.iter_mut() {
        join_refs.push(c.join_ok(T));
    }
    let all = counts(&[("u1", 2), ("u2", 1), ("u3", 3)]);
    for (c, v) in clients.iter_mut().zip(views.iter_mut()) {
        v.until(c, "everyone present", |s| shape(s) == all);
    }
    let reference = normalized(&views[0].state);
    for v in &views {
        assert_eq!(normalized(&v.state), reference);
    }
    let metas = |s: &State| -> Vec<Value> {
        s.values()
            .flat_map(|p| p.metas.iter().map(|m| serde_json::to_value(m).unwrap()))
            .collect()
    };
    assert!(metas(&views[0].state)
        .iter()
        .all(|m| m["status"] == "online" && m["typing"] == false));

    // A status change of one of Cy's tabs: a new ref for that meta, everyone sees it.
    let old_refs: Vec<String> = views[0].state["u3"]
        .metas
        .iter()
        .map(|m| m.phx_ref.clone())
        .collect();
    let r = clients[3].call(&join_refs[3], T, "status", json!({"status": "away"}));
    assert_eq!(r["status"], "ok");
    for (c, v) in clients.iter_mut().zip(views.iter_mut()) {
        v.until(c, "Cy away", |s| {
            s.get("u3")
                .is_some_and(|p| p.metas.iter().any(|m| m.status == "away"))
        });
        let u3 = &v.state["u3"].metas;
        assert_eq!(u3.len(), 3);
        let changed = u3.iter().find(|m| m.status == "away").unwrap();
        assert!(
            !old_refs.contains(&changed.phx_ref),
            "a meta update gets a new phx_ref"
        );
    }

    // One of Ada's tabs leaves, Bo's connection dies without a close frame, one of Cy's closes.
    let mut gone = vec![];
    for i in [4, 2, 1] {
        gone.push(clients.remove(i));
        views.remove(i);
    }
    let mut ada_tab = gone.pop().unwrap();
    assert_eq!(
        ada_tab.call(&join_refs[1], T, "phx_leave", json!({}))["status"],
        "ok"
    );
    drop(gone.pop().unwrap()); // Bo: TCP closed under the socket
    gone.pop().unwrap().close(); // Cy's fifth connection
    let after = counts(&[("u1", 1), ("u3", 2)]);
    for (c, v) in clients.iter_mut().zip(views.iter_mut()) {
        v.until(c, "leaves applied", |s| shape(s) == after);
    }
    // A late joiner's presence_state is what everyone converged to.
    let mut late = server.client("u4", "Di");
    let mut late_view = View::new(T);
    late.join_ok(T);
    late_view.until(&mut late, "late state", |s| s.contains_key("u4"));
    for (c, v) in clients.iter_mut().zip(views.iter_mut()) {
        v.until(c, "Di joined", |s| s.contains_key("u4"));
        assert_eq!(normalized(&v.state), normalized(&late_view.state));
    }
    assert_eq!(
        shape(&late_view.state),
        counts(&[("u1", 1), ("u3", 2), ("u4", 1)])
    );
}

#[test]
fn collaboration_cursors_and_selections_are_presence_metas() {
    const T: &str = "collaboration:doc";
    let dir = TempDir::new("presence-collab");
    let server = FeatureServer::start(&dir.0, |c| c.rooms.cursor_interval_ms = 0);
    let mut ada = server.client("u1", "Ada");
    let mut bo = server.client("u2", "Bo");
    let ja = ada.join_ok(T);
    let mut bo_view = View::new(T);
    bo.join_ok(T);
    bo_view.until(&mut bo, "both", |s| s.len() == 2);

    let r = ada.call(
        &ja,
        T,
        "cursor_move",
        json!({"position": {"line": 3, "ch": 7}}),
    );
    assert_eq!(r["status"], "ok");
    bo_view.until(&mut bo, "cursor", |s| {
        s["u1"].metas[0].extra.get("cursor") == Some(&json!({"line": 3, "ch": 7}))
    });
    let r = ada.call(
        &ja,
        T,
        "text_selection",
        json!({"selection": {"from": 1, "to": 9}}),
    );
    assert_eq!(r["status"], "ok");
    bo_view.until(&mut bo, "selection", |s| {
        let m = &s["u1"].metas[0];
        m.extra.get("selection") == Some(&json!({"from": 1, "to": 9}))
            && m.extra.get("cursor") == Some(&json!({"line": 3, "ch": 7}))
    });
    assert_eq!(
        ada.call(&ja, T, "cursor_move", json!({"position": "x".repeat(2000)})),
        json!({"status": "error", "response": {"errors": {"position": ["is too large"]}}})
    );
    assert_eq!(
        ada.call(&ja, T, "cursor_move", json!({})),
        json!({"status": "error", "response": {"errors": {"position": ["can't be blank"]}}})
    );
}

#[test]
fn fast_cursor_moves_are_coalesced_latest_value_wins() {
    const T: &str = "collaboration:fast";
    let dir = TempDir::new("presence-coalesce");
    let server = FeatureServer::start(&dir.0, |c| c.rooms.cursor_interval_ms = 200);
    let mut ada = server.client("u1", "Ada");
    let mut bo = server.client("u2", "Bo");
    let ja = ada.join_ok(T);
    bo.join_ok(T);
    let mut bo_view = View::new(T);
    bo_view.until(&mut bo, "both", |s| s.len() == 2);
    let before = bo_view.diffs;
    let refs: Vec<String> = (0..50)
        .map(|i| ada.push(&ja, T, "cursor_move", json!({"position": i})))
        .collect();
    for r in &refs {
        assert_eq!(ada.reply(r)["status"], "ok");
    }
    bo_view.until(&mut bo, "last position", |s| {
        s["u1"].metas[0].extra.get("cursor") == Some(&json!(49))
    });
    // At most one update per interval reached Bo, not one per move.
    let diffs = bo_view.diffs - before + bo.drain_events(T, "presence_diff").len();
    assert!(diffs <= 10, "{diffs} presence diffs for 50 moves");
}
