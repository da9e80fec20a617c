//! Owner-side presence: which connection holds which meta, and the `presence_diff` broadcasts.
//! A [`Tracker`] lives in a topic's owner-shard state and is only touched from owner tasks, so
//! every change of a topic's presence happens in one place, in one order.

use super::{Meta, Presences};
use crate::core::{ConnAddr, ConnId, OwnerCtx, Payload};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use std::collections::HashMap;

/// Event name of a presence change.
pub const DIFF_EVENT: &str = "presence_diff";
/// Event name of the full presence pushed after a join.
pub const STATE_EVENT: &str = "presence_state";

/// Generates `phx_ref`s: unique per process (a random salt and a counter), opaque to clients.
/// One per shard, in its owner state; the salt comes from the owner's seeded random source.
#[derive(Default)]
pub struct RefGen {
    salt: Option<u64>,
    next: u64,
}

impl RefGen {
    /// A generator with a known salt.
    pub fn with_salt(salt: u64) -> RefGen {
        RefGen {
            salt: Some(salt),
            next: 0,
        }
    }

    /// The next ref; `seed` is asked once, for the salt.
    pub fn next_ref(&mut self, seed: impl FnOnce() -> u64) -> String {
        let salt = *self.salt.get_or_insert_with(seed);
        self.next += 1;
        let mut raw = [0u8; 12];
        raw[..4].copy_from_slice(&(salt as u32).to_be_bytes());
        raw[4..].copy_from_slice(&(self.next ^ (salt >> 32 << 40)).to_be_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }
}

/// A connection present on the topic.
#[derive(Debug, Clone)]
pub struct Member {
    /// Key (user id) the connection is present under.
    pub key: String,
    /// `phx_ref` of the connection's current meta.
    pub phx_ref: String,
    /// Where the connection's channel on this topic is reached.
    pub addr: ConnAddr,
}

/// What a join did.
#[derive(Debug)]
pub struct Joined {
    /// The key had no connection on the topic before (announce the user).
    pub first_of_key: bool,
    /// A stale meta of the same connection that was replaced (a channel that crashed and
    /// rejoined without `terminate`), when it belonged to another key.
    pub replaced: Option<Left>,
}

/// What a leave did.
#[derive(Debug, Clone)]
pub struct Left {
    /// Key (user id) the connection was present under.
    pub key: String,
    /// The meta removed.
    pub meta: Meta,
    /// The key's last connection went (announce the user left).
    pub last_of_key: bool,
    /// The key was typing before and is not any more.
    pub stopped_typing: bool,
}

/// What an update did.
#[derive(Debug)]
pub struct Updated {
    /// Key (user id) of the updated connection.
    pub key: String,
    /// The key's typing state (any connection typing) changed to this.
    pub typing_now: Option<bool>,
}

/// The presence of one topic on its owner.
#[derive(Default)]
pub struct Tracker {
    presences: Presences,
    members: HashMap<ConnId, Member>,
}

impl Tracker {
    /// The topic's presence state.
    pub fn presences(&self) -> &Presences {
        &self.presences
    }

    /// The membership of connection `conn`, if it is present.
    pub fn member(&self, conn: ConnId) -> Option<&Member> {
        self.members.get(&conn)
    }

    /// Every connection present, in no particular order.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Connections present (not distinct users).
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Whether no connection is present.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The `presence_state` payload.
    pub fn state_payload(&self) -> Payload {
        Payload::json(self.presences.state())
    }

    /// Tracks the connection at `addr` under `key` with `meta` (its `phx_ref` is set here) and
    /// broadcasts the diff. `None` when the topic already has `max_members` connections.
    pub fn join(
        &mut self,
        owner: &mut OwnerCtx<'_>,
        refs: &mut RefGen,
        addr: ConnAddr,
        key: &str,
        mut meta: Meta,
        max_members: usize,
    ) -> Option<Joined> {
        let replaced = match self.members.contains_key(&addr.conn_id) {
            true => self.leave(owner, addr.conn_id),
            false if self.members.len() >= max_members => return None,
            false => None,
        };
        let had_key =
            self.presences.get(key).is_some() || replaced.as_ref().is_some_and(|l| l.key == key);
        meta.phx_ref = refs.next_ref(|| owner.random_u64());
        self.members.insert(
            addr.conn_id,
            Member {
                key: key.to_string(),
                phx_ref: meta.phx_ref.clone(),
                addr,
            },
        );
        let diff = self.presences.track(key, meta);
        owner.broadcast(DIFF_EVENT, &Payload::json(&diff));
        Some(Joined {
            first_of_key: !had_key,
            replaced: replaced.filter(|l| l.key != key),
        })
    }

    /// Untracks connection `conn` and broadcasts the diff.
    pub fn leave(&mut self, owner: &mut OwnerCtx<'_>, conn: ConnId) -> Option<Left> {
        let member = self.members.remove(&conn)?;
        let was_typing = self.presences.is_typing(&member.key);
        let (meta, diff) = self.presences.untrack(&member.key, &member.phx_ref)?;
        owner.broadcast(DIFF_EVENT, &Payload::json(&diff));
        Some(Left {
            last_of_key: self.presences.get(&member.key).is_none(),
            stopped_typing: was_typing && !self.presences.is_typing(&member.key),
            key: member.key,
            meta,
        })
    }

    /// Changes the meta of connection `conn` (a leave and a join with a new `phx_ref`) and
    /// broadcasts the diff. `None` if the connection is not present or nothing changed.
    pub fn update(
        &mut self,
        owner: &mut OwnerCtx<'_>,
        refs: &mut RefGen,
        conn: ConnId,
        change: impl FnOnce(&mut Meta),
    ) -> Option<Updated> {
        let member = self.members.get_mut(&conn)?;
        let current = self.presences.meta(&member.key, &member.phx_ref)?;
        let mut changed = current.clone();
        change(&mut changed);
        if &changed == current {
            return None;
        }
        let was_typing = self.presences.is_typing(&member.key);
        let new_ref = refs.next_ref(|| owner.random_u64());
        let diff =
            self.presences
                .update(&member.key, &member.phx_ref, new_ref.clone(), move |m| {
                    *m = changed
                })?;
        member.phx_ref = new_ref;
        owner.broadcast(DIFF_EVENT, &Payload::json(&diff));
        let typing = self.presences.is_typing(&member.key);
        Some(Updated {
            key: member.key.clone(),
            typing_now: (typing != was_typing).then_some(typing),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{RefGen, Tracker, DIFF_EVENT};
    use crate::core::presence::Meta;
    use crate::core::{ConnAddr, Effect, Now, OwnerCtx, OwnerStates, Topic};
    use bytes::BytesMut;
    use serde_json::{json, Map, Value};
    use std::collections::HashSet;
    use std::time::Instant;

    #[test]
    fn refs_are_unique_and_opaque() {
        let mut g = RefGen::with_salt(0x1234_5678_9abc_def0);
        let refs: HashSet<String> = (0..10_000).map(|_| g.next_ref(|| unreachable!())).collect();
        assert_eq!(refs.len(), 10_000);
        assert!(refs.iter().all(|r| r.len() == 16
            && r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')));
        let other: HashSet<String> = {
            let mut g2 = RefGen::default();
            (0..100)
                .map(|_| g2.next_ref(|| 0x0fed_cba9_8765_4321))
                .collect()
        };
        assert!(other.is_disjoint(&refs), "salted per generator");
    }

    fn meta(name: &str) -> Meta {
        Meta {
            phx_ref: String::new(),
            name: name.into(),
            status: "online".into(),
            typing: false,
            joined_at: "2024-01-01T00:00:00.000Z".into(),
            extra: Map::new(),
        }
    }

    fn addr(conn: u64) -> ConnAddr {
        ConnAddr {
            conn_id: conn,
            topic: Topic::from("room:1"),
            join_ref: "1".into(),
        }
    }

    /// Runs `f` as an owner task and returns the `presence_diff`s it broadcast.
    fn owner_task(states: &mut OwnerStates, f: impl FnOnce(&mut OwnerCtx<'_>)) -> Vec<Value> {
        let topic = Topic::from("room:1");
        let (mut effects, mut arena) = (Vec::new(), BytesMut::new());
        let now = Now {
            instant: Instant::now(),
            unix_ms: 0,
        };
        f(&mut OwnerCtx::new(
            &topic,
            0,
            now,
            states,
            &mut effects,
            &mut arena,
        ));
        effects
            .into_iter()
            .filter_map(|e| match e {
                Effect::Broadcast(b) if b.event == DIFF_EVENT => b.payload.parse().ok(),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn tracks_connections_of_a_user_and_announces_first_and_last() {
        let mut states = OwnerStates::new(7);
        let (mut tracker, mut refs) = (Tracker::default(), RefGen::default());
        let mut first = None;
        let diffs = owner_task(&mut states, |o| {
            first = tracker.join(o, &mut refs, addr(1), "u1", meta("Ada"), 10);
        });
        assert!(first.unwrap().first_of_key);
        assert_eq!(diffs.len(), 1);
        let tab1 = diffs[0]["joins"]["u1"]["metas"][0]["phx_ref"].clone();
        assert_eq!(diffs[0]["leaves"], json!({}));

        // A second tab of the same user: not the first of its key.
        let mut second = None;
        owner_task(&mut states, |o| {
            second = tracker.join(o, &mut refs, addr(2), "u1", meta("Ada"), 10);
        });
        assert!(!second.unwrap().first_of_key);
        assert_eq!(tracker.presences().get("u1").unwrap().metas.len(), 2);

        // Full: a third connection is refused, nothing broadcast.
        let mut full = Some(());
        let diffs = owner_task(&mut states, |o| {
            full = tracker
                .join(o, &mut refs, addr(3), "u2", meta("Bo"), 2)
                .map(|_| ());
        });
        assert!(full.is_none() && diffs.is_empty());

        // Leaves: the first tab's meta leaves with its own ref; the user stays until the last.
        let mut left = None;
        let diffs = owner_task(&mut states, |o| left = tracker.leave(o, 1));
        assert!(!left.unwrap().last_of_key);
        assert_eq!(diffs[0]["leaves"]["u1"]["metas"][0]["phx_ref"], tab1);
        let mut left = None;
        owner_task(&mut states, |o| left = tracker.leave(o, 2));
        assert!(left.unwrap().last_of_key);
        assert!(tracker.is_empty());
        // Unknown connections leave nothing.
        assert!(owner_task(&mut states, |o| assert!(tracker.leave(o, 9).is_none())).is_empty());
    }

    #[test]
    fn a_meta_change_is_a_leave_and_a_join_with_a_new_ref() {
        let mut states = OwnerStates::new(7);
        let (mut tracker, mut refs) = (Tracker::default(), RefGen::default());
        owner_task(&mut states, |o| {
            tracker.join(o, &mut refs, addr(1), "u1", meta("Ada"), 10);
        });
        let before = tracker.member(1).unwrap().phx_ref.clone();
        let mut updated = None;
        let diffs = owner_task(&mut states, |o| {
            updated = tracker.update(o, &mut refs, 1, |m| m.typing = true);
        });
        assert_eq!(updated.unwrap().typing_now, Some(true));
        assert_eq!(
            diffs[0]["leaves"]["u1"]["metas"][0]["phx_ref"],
            json!(before)
        );
        let after = diffs[0]["joins"]["u1"]["metas"][0]["phx_ref"].clone();
        assert_ne!(after, json!(before));
        assert_eq!(diffs[0]["joins"]["u1"]["metas"][0]["typing"], json!(true));
        // No change, no diff.
        let diffs = owner_task(&mut states, |o| {
            assert!(tracker
                .update(o, &mut refs, 1, |m| m.typing = true)
                .is_none());
        });
        assert!(diffs.is_empty());
    }
}
