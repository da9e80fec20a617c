//! Presence with Phoenix.Presence semantics and wire format.
//!
//! - [`Presences`]: the authoritative state of one topic (kept on the topic's owner shard):
//!   key (user id) → metas, one per connection. Every change returns the [`Diff`] to broadcast.
//! - [`sync_diff`] / [`sync_state`]: what a client (phoenix.js `Presence.syncDiff` /
//!   `syncState`) does with them; the property tests check that a client applying the diffs in
//!   order to the state it was sent ends with the owner's state.
//! - [`tracker`]: the owner-side glue: connections to metas, broadcasts of `presence_diff`.
//!
//! Wire shapes: state `{"u1": {"metas": [{"phx_ref": "..", "name": "..", ...}]}}`, diff
//! `{"joins": {...state-shaped...}, "leaves": {...}}`. A meta update is a leave of the old meta
//! and a join of the new one (with a new `phx_ref`) in one diff, as Phoenix sends it.

pub mod throttle;
pub mod tracker;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One connection's presence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Unique, opaque; a new one for every change.
    pub phx_ref: String,
    /// Display name of the user.
    pub name: String,
    /// User-set status (`"online"` unless the join or a `status` event sets another).
    pub status: String,
    /// Whether this connection's user is typing.
    pub typing: bool,
    /// RFC 3339 time of the join.
    pub joined_at: String,
    /// Channel-specific fields (`avatar`, `cursor`, `selection`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The metas of one key.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Presence {
    /// One meta per connection of the key, least recently changed first.
    pub metas: Vec<Meta>,
}

/// Presence of a topic as the wire shows it: key → metas. Keys in order, as Phoenix sends them.
pub type State = BTreeMap<String, Presence>;

/// A `presence_diff` payload.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Diff {
    /// Metas added, by key.
    pub joins: State,
    /// Metas removed, by key (matched by `phx_ref`).
    pub leaves: State,
}

impl Diff {
    fn join(key: &str, meta: Meta) -> Diff {
        let mut d = Diff::default();
        d.joins
            .insert(key.to_string(), Presence { metas: vec![meta] });
        d
    }

    fn leave(key: &str, meta: Meta) -> Diff {
        let mut d = Diff::default();
        d.leaves
            .insert(key.to_string(), Presence { metas: vec![meta] });
        d
    }

    /// Whether the diff has neither joins nor leaves.
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }
}

/// The authoritative presence of one topic.
#[derive(Debug, Clone, Default)]
pub struct Presences {
    state: State,
    metas: usize,
}

impl Presences {
    /// Adds `meta` under `key` (at the end, where a client's `syncDiff` puts a join).
    pub fn track(&mut self, key: &str, meta: Meta) -> Diff {
        self.metas += 1;
        self.state
            .entry(key.to_string())
            .or_default()
            .metas
            .push(meta.clone());
        Diff::join(key, meta)
    }

    /// Removes the meta `phx_ref` of `key`; the key goes with its last meta.
    pub fn untrack(&mut self, key: &str, phx_ref: &str) -> Option<(Meta, Diff)> {
        let presence = self.state.get_mut(key)?;
        let pos = presence.metas.iter().position(|m| m.phx_ref == phx_ref)?;
        let meta = presence.metas.remove(pos);
        if presence.metas.is_empty() {
            self.state.remove(key);
        }
        self.metas -= 1;
        Some((meta.clone(), Diff::leave(key, meta)))
    }

    /// Changes the meta `phx_ref` of `key` with `change`; it gets `new_ref` and moves to the end
    /// (a leave of the old meta and a join of the new one, as a client applies it).
    pub fn update(
        &mut self,
        key: &str,
        phx_ref: &str,
        new_ref: String,
        change: impl FnOnce(&mut Meta),
    ) -> Option<Diff> {
        let presence = self.state.get_mut(key)?;
        let pos = presence.metas.iter().position(|m| m.phx_ref == phx_ref)?;
        let old = presence.metas.remove(pos);
        let mut new = old.clone();
        change(&mut new);
        new.phx_ref = new_ref;
        presence.metas.push(new.clone());
        let mut diff = Diff::join(key, new);
        diff.leaves
            .insert(key.to_string(), Presence { metas: vec![old] });
        Some(diff)
    }

    /// The whole state, as sent in `presence_state`.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The metas of `key`, if it is present.
    pub fn get(&self, key: &str) -> Option<&Presence> {
        self.state.get(key)
    }

    /// The meta `phx_ref` of `key`, if present.
    pub fn meta(&self, key: &str, phx_ref: &str) -> Option<&Meta> {
        self.state
            .get(key)?
            .metas
            .iter()
            .find(|m| m.phx_ref == phx_ref)
    }

    /// Distinct keys (users) present.
    pub fn user_count(&self) -> usize {
        self.state.len()
    }

    /// Metas (connections) present.
    pub fn meta_count(&self) -> usize {
        self.metas
    }

    /// Whether no one is present.
    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }

    /// Users present: key and the name of their latest meta.
    pub fn online_users(&self) -> impl Iterator<Item = (&str, &str)> {
        self.state
            .iter()
            .filter_map(|(k, p)| p.metas.last().map(|m| (k.as_str(), m.name.as_str())))
    }

    /// Whether any connection of `key` is typing.
    pub fn is_typing(&self, key: &str) -> bool {
        self.state
            .get(key)
            .is_some_and(|p| p.metas.iter().any(|m| m.typing))
    }

    /// Users with a typing connection.
    pub fn typing_users(&self) -> impl Iterator<Item = &str> {
        self.state
            .iter()
            .filter(|(_, p)| p.metas.iter().any(|m| m.typing))
            .map(|(k, _)| k.as_str())
    }
}

/// phoenix.js `Presence.syncDiff`: joins first (a key's metas not in the join stay, in front),
/// then leaves (by `phx_ref`; a key with no meta left goes).
pub fn sync_diff(state: &mut State, diff: &Diff) {
    for (key, joined) in &diff.joins {
        let mut metas: Vec<Meta> = match state.get(key) {
            Some(current) => current
                .metas
                .iter()
                .filter(|m| !joined.metas.iter().any(|j| j.phx_ref == m.phx_ref))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        metas.extend(joined.metas.iter().cloned());
        state.insert(key.clone(), Presence { metas });
    }
    for (key, left) in &diff.leaves {
        let Some(current) = state.get_mut(key) else {
            continue;
        };
        current
            .metas
            .retain(|m| !left.metas.iter().any(|l| l.phx_ref == m.phx_ref));
        if current.metas.is_empty() {
            state.remove(key);
        }
    }
}

/// phoenix.js `Presence.syncState`: the diff between `state` and `new_state`, applied.
pub fn sync_state(state: &mut State, new_state: &State) {
    let mut diff = Diff::default();
    for (key, presence) in state.iter() {
        if !new_state.contains_key(key) {
            diff.leaves.insert(key.clone(), presence.clone());
        }
    }
    for (key, new) in new_state {
        match state.get(key) {
            Some(current) => {
                let joined: Vec<Meta> = new
                    .metas
                    .iter()
                    .filter(|m| !current.metas.iter().any(|c| c.phx_ref == m.phx_ref))
                    .cloned()
                    .collect();
                let left: Vec<Meta> = current
                    .metas
                    .iter()
                    .filter(|m| !new.metas.iter().any(|n| n.phx_ref == m.phx_ref))
                    .cloned()
                    .collect();
                if !joined.is_empty() {
                    diff.joins.insert(key.clone(), Presence { metas: joined });
                }
                if !left.is_empty() {
                    diff.leaves.insert(key.clone(), Presence { metas: left });
                }
            }
            None => {
                diff.joins.insert(key.clone(), new.clone());
            }
        }
    }
    sync_diff(state, &diff);
}

/// A state with each key's metas ordered by `phx_ref`, to compare states whose meta order may
/// legitimately differ (a client replays its own join diff on top of the state it was sent).
pub fn normalized(state: &State) -> State {
    state
        .iter()
        .map(|(k, p)| {
            let mut metas = p.metas.clone();
            metas.sort_by(|a, b| a.phx_ref.cmp(&b.phx_ref));
            (k.clone(), Presence { metas })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn meta(r: &str, name: &str) -> Meta {
        Meta {
            phx_ref: r.into(),
            name: name.into(),
            status: "online".into(),
            typing: false,
            joined_at: "2024-01-01T00:00:00.000Z".into(),
            extra: Map::new(),
        }
    }

    #[test]
    fn wire_shapes_are_phoenix_shapes() {
        let mut p = Presences::default();
        let mut m = meta("r1", "alice");
        m.extra.insert("avatar".into(), json!("a.png"));
        let d = p.track("u1", m);
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            json!({"joins": {"u1": {"metas": [{"phx_ref": "r1", "name": "alice", "status": "online",
                "typing": false, "joined_at": "2024-01-01T00:00:00.000Z", "avatar": "a.png"}]}},
                "leaves": {}})
        );
        let d = p
            .update("u1", "r1", "r2".into(), |m| m.typing = true)
            .unwrap();
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["joins"]["u1"]["metas"][0]["phx_ref"], "r2");
        assert_eq!(v["joins"]["u1"]["metas"][0]["typing"], true);
        assert_eq!(v["leaves"]["u1"]["metas"][0]["phx_ref"], "r1");
        assert_eq!(v["leaves"]["u1"]["metas"][0]["typing"], false);
        let back: Diff = serde_json::from_value(v).unwrap();
        assert_eq!(back, d);
        assert_eq!(
            serde_json::to_value(p.state()).unwrap()["u1"]["metas"][0]["phx_ref"],
            "r2"
        );
    }

    #[test]
    fn counts_and_queries() {
        let mut p = Presences::default();
        p.track("u1", meta("a", "alice"));
        p.track("u1", meta("b", "alice"));
        p.track("u2", meta("c", "bob"));
        assert_eq!((p.user_count(), p.meta_count()), (2, 3));
        p.update("u1", "b", "d".into(), |m| m.typing = true);
        assert!(p.is_typing("u1") && !p.is_typing("u2"));
        assert_eq!(p.typing_users().collect::<Vec<_>>(), ["u1"]);
        assert_eq!(
            p.online_users().collect::<Vec<_>>(),
            [("u1", "alice"), ("u2", "bob")]
        );
        assert!(p.untrack("u1", "b").is_none(), "old refs are gone");
        p.untrack("u1", "a").unwrap();
        assert_eq!(p.user_count(), 2);
        p.untrack("u1", "d").unwrap();
        assert_eq!((p.user_count(), p.meta_count()), (1, 1));
        assert!(p.get("u1").is_none());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Track(u8),
        Untrack(u8, u8),
        Update(u8, u8, bool),
        /// A client subscribes now (sees every later diff) ...
        Subscribe,
        /// ... and is sent the state now (diffs before it are held, then replayed).
        SendState,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..4).prop_map(Op::Track),
            2 => (0u8..4, any::<u8>()).prop_map(|(k, i)| Op::Untrack(k, i)),
            3 => (0u8..4, any::<u8>(), any::<bool>()).prop_map(|(k, i, t)| Op::Update(k, i, t)),
            1 => Just(Op::Subscribe),
            1 => Just(Op::SendState),
        ]
    }

    /// A phoenix.js client: diffs before its state are held, then applied after it.
    #[derive(Default)]
    struct Client {
        subscribed: bool,
        synced: bool,
        pending: Vec<Diff>,
        state: State,
    }

    impl Client {
        fn on_diff(&mut self, d: &Diff) {
            // Over the wire and back, as the client gets it.
            let d: Diff = serde_json::from_str(&serde_json::to_string(d).unwrap()).unwrap();
            if !self.subscribed {
                return;
            }
            if self.synced {
                sync_diff(&mut self.state, &d);
            } else {
                self.pending.push(d);
            }
        }

        fn on_state(&mut self, s: &State) {
            let s: State = serde_json::from_str(&serde_json::to_string(s).unwrap()).unwrap();
            sync_state(&mut self.state, &s);
            for d in self.pending.drain(..) {
                sync_diff(&mut self.state, &d);
            }
            self.synced = true;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Clients that subscribe at any point and get the state at any later point end with
        /// exactly the owner's users and metas, whatever the interleaving of joins, leaves and
        /// updates. A client synced before the first change follows the owner's meta order too.
        #[test]
        fn clients_converge_to_the_owner_state(ops in proptest::collection::vec(op(), 0..80)) {
            let mut owner = Presences::default();
            let mut next_ref = 0u32;
            let mut fresh = || { next_ref += 1; format!("ref{next_ref}") };
            let mut early = Client { subscribed: true, ..Client::default() };
            early.on_state(owner.state());
            let mut late: Vec<Client> = Vec::new();
            for op in ops {
                let diff = match op {
                    Op::Track(k) => Some(owner.track(&format!("u{k}"), meta(&fresh(), &format!("n{k}")))),
                    Op::Untrack(k, i) => {
                        let key = format!("u{k}");
                        let r = owner.get(&key).map(|p| p.metas[i as usize % p.metas.len()].phx_ref.clone());
                        r.and_then(|r| owner.untrack(&key, &r)).map(|(_, d)| d)
                    }
                    Op::Update(k, i, typing) => {
                        let key = format!("u{k}");
                        let r = owner.get(&key).map(|p| p.metas[i as usize % p.metas.len()].phx_ref.clone());
                        r.and_then(|r| owner.update(&key, &r, fresh(), |m| m.typing = typing))
                    }
                    Op::Subscribe => {
                        late.push(Client { subscribed: true, ..Client::default() });
                        None
                    }
                    Op::SendState => {
                        if let Some(c) = late.iter_mut().find(|c| !c.synced) {
                            c.on_state(owner.state());
                        }
                        None
                    }
                };
                if let Some(d) = diff {
                    prop_assert!(!d.is_empty());
                    early.on_diff(&d);
                    for c in &mut late {
                        c.on_diff(&d);
                    }
                }
            }
            prop_assert_eq!(&early.state, owner.state());
            let metas: usize = owner.state().values().map(|p| p.metas.len()).sum();
            prop_assert_eq!(metas, owner.meta_count());
            for c in late.iter_mut() {
                if !c.synced {
                    c.on_state(owner.state());
                }
                prop_assert_eq!(normalized(&c.state), normalized(owner.state()));
            }
        }

        /// `sync_state` from any earlier client view lands on the new state (a reconnect).
        #[test]
        fn sync_state_reaches_any_state(
            a in proptest::collection::btree_map(0u8..5, proptest::collection::btree_set(0u8..6, 1..4), 0..5),
            b in proptest::collection::btree_map(0u8..5, proptest::collection::btree_set(0u8..6, 1..4), 0..5),
        ) {
            let build = |m: &BTreeMap<u8, std::collections::BTreeSet<u8>>| -> State {
                m.iter().map(|(k, refs)| (
                    format!("u{k}"),
                    Presence { metas: refs.iter().map(|r| meta(&format!("u{k}r{r}"), "n")).collect() },
                )).collect()
            };
            let (mut state, target) = (build(&a), build(&b));
            sync_state(&mut state, &target);
            prop_assert_eq!(normalized(&state), normalized(&target));
        }
    }
}
