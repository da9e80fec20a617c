//! A shard's topic table: its local subscribers per topic, and for the topics it owns, the other
//! shards that have subscribers. Subscribers are opaque handles (anything that takes a frame),
//! so the table knows nothing about sockets.

use super::credit::{Credit, Hold};
use crate::core::{Broadcast, ConnId, Topic};
use crate::protocol::phoenix::Serializer;
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

/// What a subscriber handle does with a frame.
pub trait Sink {
    /// Queues `msg`'s frame for `serializer` (compressed if the handle negotiated it) at `now`,
    /// keeping the publisher's `hold` until it is written.
    fn deliver(
        &self,
        msg: &Broadcast,
        serializer: Serializer,
        hold: Option<&Rc<Hold>>,
        now: Instant,
    ) -> Delivered;
}

/// What a [`Sink`] did with a broadcast.
#[derive(Debug, Default, Clone, Copy)]
pub struct Delivered {
    /// The frame was queued.
    pub taken: bool,
    /// An older frame gave way under the message's delivery policy.
    pub gave_way: bool,
    /// The frame was compressed for it (the first permessage-deflate subscriber of a message).
    pub compressed: bool,
}

/// A connection subscribed to a topic on this shard.
pub struct Subscriber<H> {
    /// The connection.
    pub conn_id: ConnId,
    /// Its protocol version (which frame of a broadcast it takes).
    pub serializer: Serializer,
    /// Where its frames go.
    pub handle: H,
    /// Receives no broadcasts until an owner task opens it
    /// ([`ChannelCtx::hold_broadcasts`](crate::core::ChannelCtx::hold_broadcasts)).
    pub gated: Cell<bool>,
}

struct LocalTopic<H> {
    subscribers: Vec<Subscriber<H>>,
    /// The owner shard has recorded this shard's interest.
    confirmed: bool,
}

/// A shard's view of topics.
pub struct Topics<H> {
    local: HashMap<Topic, LocalTopic<H>>,
    remote_interest: HashMap<Topic, Vec<usize>>,
}

impl<H> Default for Topics<H> {
    fn default() -> Self {
        Topics {
            local: HashMap::new(),
            remote_interest: HashMap::new(),
        }
    }
}

impl<H: Sink> Topics<H> {
    /// Adds a local subscriber. Returns true when the owner still has to confirm this shard's
    /// interest.
    pub fn add(&mut self, topic: Topic, sub: Subscriber<H>, owned_here: bool) -> bool {
        let entry = self.local.entry(topic).or_insert_with(|| LocalTopic {
            subscribers: Vec::new(),
            confirmed: owned_here,
        });
        entry.subscribers.retain(|s| s.conn_id != sub.conn_id);
        entry.subscribers.push(sub);
        !entry.confirmed
    }

    /// The owner recorded this shard's interest in `topic`.
    pub fn confirm(&mut self, topic: &str) {
        if let Some(t) = self.local.get_mut(topic) {
            t.confirmed = true;
        }
    }

    /// Removes a local subscriber. Returns true when it was the topic's last one on this shard.
    pub fn remove(&mut self, topic: &str, conn_id: ConnId) -> bool {
        let Some(entry) = self.local.get_mut(topic) else {
            return false;
        };
        entry.subscribers.retain(|s| s.conn_id != conn_id);
        if entry.subscribers.is_empty() {
            self.local.remove(topic);
            true
        } else {
            false
        }
    }

    /// Queues `msg` to every local subscriber, each keeping a hold on `credit` (the
    /// publisher's) until it has written the frame; returns how many took it, how many older
    /// frames gave way under the message's delivery policy, and how many compressions it took.
    pub fn deliver_local(&self, msg: &Broadcast, credit: Option<&Rc<Credit>>) -> (u64, u64, u64) {
        let Some(entry) = self.local.get(&msg.topic) else {
            return (0, 0, 0);
        };
        let now = Instant::now();
        let hold = credit.and_then(|c| msg.frame_for(Serializer::V2).map(|f| c.hold(f.len())));
        let (mut delivered, mut dropped, mut compressed) = (0, 0, 0);
        for sub in &entry.subscribers {
            if Some(sub.conn_id) == msg.exclude || sub.gated.get() {
                continue;
            }
            let d = sub.handle.deliver(msg, sub.serializer, hold.as_ref(), now);
            delivered += u64::from(d.taken);
            dropped += u64::from(d.gave_way);
            compressed += u64::from(d.compressed);
        }
        (delivered, dropped, compressed)
    }

    /// Lets broadcasts on `topic` reach a gated subscriber from now on.
    pub fn open_gate(&self, topic: &str, conn_id: ConnId) {
        if let Some(sub) = self
            .local
            .get(topic)
            .and_then(|t| t.subscribers.iter().find(|s| s.conn_id == conn_id))
        {
            sub.gated.set(false);
        }
    }

    /// Whether any shard (this one locally, or another as recorded here by the owner) has
    /// subscribers for `topic`. Only complete on the topic's owner.
    pub fn has_interest(&self, topic: &str) -> bool {
        self.local.contains_key(topic) || self.remote_interest.contains_key(topic)
    }

    /// On the owner: `shard` has subscribers for `topic`.
    pub fn record_interest(&mut self, topic: Topic, shard: usize) {
        let shards = self.remote_interest.entry(topic).or_default();
        if !shards.contains(&shard) {
            shards.push(shard);
        }
    }

    /// On the owner: `shard` has no subscribers for `topic` any more.
    pub fn drop_interest(&mut self, topic: &str, shard: usize) {
        if let Some(shards) = self.remote_interest.get_mut(topic) {
            shards.retain(|&s| s != shard);
            if shards.is_empty() {
                self.remote_interest.remove(topic);
            }
        }
    }

    /// Other shards to forward a publish to, leaving out `origin`.
    pub fn forward_targets(&self, topic: &str, origin: usize) -> Vec<usize> {
        self.remote_interest
            .get(topic)
            .map(|s| s.iter().copied().filter(|&s| s != origin).collect())
            .unwrap_or_default()
    }
}
