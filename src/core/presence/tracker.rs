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
    pub key: String,
    pub phx_ref: String,
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
    pub key: String,
    pub meta: Meta,
    /// The key's last connection went (announce the user left).
    pub last_of_key: bool,
    /// The key was typing before and is not any more.
    pub stopped_typing: bool,
}

/// What an update did.
#[derive(Debug)]
pub struct Updated {
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
    pub fn presences(&self) -> &Presences {
        &self.presences
    }

    pub fn member(&self, conn: ConnId) -> Option<&Member> {
        self.members.get(&conn)
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

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
    use super::RefGen;
    use std::collections::HashSet;

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
}
