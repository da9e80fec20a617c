//! Topics and broadcast.
//!
//! Every shard keeps its **local subscribers** per topic. The topic's **owner shard** (see
//! [`super::owner_of`]) also knows which *other* shards have subscribers. A broadcast is delivered
//! at once to the publisher's own shard, then sent to the owner, which forwards it to every other
//! interested shard; each shard hands it to its local subscribers. The frame is encoded once (per
//! protocol version) into `Bytes` shared by every subscriber on every shard.

use super::context::Shard;
use super::mesh::{OwnerMsg, ShardMsg};
use super::owner;
use crate::channel::{ConnId, Payload, Topic};
use crate::ops::metrics::ShardMetrics;
use crate::protocol::phoenix::{encode, ByteString, Outgoing, Serializer};
use crate::transport::connection::ConnShared;
use crate::transport::outbound::Delivery;
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

/// One published message, shared by all shards.
pub struct Broadcast {
    pub topic: Topic,
    pub event: ByteString,
    pub payload: Payload,
    /// The publishing connection, for `broadcast_from`.
    pub exclude: Option<ConnId>,
    /// How each subscriber's queue treats this frame when the subscriber is behind.
    pub delivery: Delivery,
    /// The V2 frame, encoded by the publisher (`None` if it cannot be: a field over 255 bytes
    /// in a binary frame).
    v2: Option<Bytes>,
    /// The V1 frame, encoded by the first shard that has a V1 subscriber.
    v1: OnceLock<Option<Bytes>>,
}

impl Broadcast {
    pub fn new(
        topic: Topic,
        event: ByteString,
        payload: Payload,
        exclude: Option<ConnId>,
        arena: &mut BytesMut,
    ) -> Broadcast {
        let v2 = encode(Serializer::V2, &outgoing(&topic, &event, &payload), arena).ok();
        Broadcast {
            topic,
            event,
            payload,
            exclude,
            delivery: Delivery::Reliable,
            v2,
            v1: OnceLock::new(),
        }
    }

    /// Sets the delivery policy (latest-value for state, a per-sender budget for audio).
    pub fn with_delivery(mut self, delivery: Delivery) -> Broadcast {
        self.delivery = delivery;
        self
    }

    /// The frame for a subscriber speaking `ser`, or `None` if this message cannot be expressed
    /// in it (binary payloads for V1 clients).
    pub fn frame_for(&self, ser: Serializer) -> Option<&Bytes> {
        match ser {
            Serializer::V2 => self.v2.as_ref(),
            Serializer::V1 => self
                .v1
                .get_or_init(|| {
                    encode(
                        Serializer::V1,
                        &outgoing(&self.topic, &self.event, &self.payload),
                        &mut BytesMut::new(),
                    )
                    .ok()
                })
                .as_ref(),
        }
    }
}

fn outgoing<'a>(topic: &'a str, event: &'a str, payload: &'a Payload) -> Outgoing<'a> {
    Outgoing::Event {
        join_ref: None,
        msg_ref: None,
        topic,
        event,
        payload,
    }
}

/// A connection subscribed to a topic on this shard.
pub struct Subscriber {
    pub conn_id: ConnId,
    pub serializer: Serializer,
    pub conn: Rc<ConnShared>,
    /// Receives no broadcasts until an owner task opens it ([`ChannelCtx::hold_broadcasts`]).
    ///
    /// [`ChannelCtx::hold_broadcasts`]: crate::channel::ChannelCtx::hold_broadcasts
    pub gated: std::cell::Cell<bool>,
}

struct LocalTopic {
    subscribers: Vec<Subscriber>,
    /// The owner shard has recorded this shard's interest.
    confirmed: bool,
}

/// A shard's view of topics: its local subscribers, and for the topics it owns, the other shards
/// that have subscribers.
#[derive(Default)]
pub struct Topics {
    local: HashMap<Topic, LocalTopic>,
    remote_interest: HashMap<Topic, Vec<usize>>,
}

impl Topics {
    /// Adds a local subscriber. Returns true when the owner still has to confirm this shard's
    /// interest.
    fn add(&mut self, topic: Topic, sub: Subscriber, owned_here: bool) -> bool {
        let entry = self.local.entry(topic).or_insert_with(|| LocalTopic {
            subscribers: Vec::new(),
            confirmed: owned_here,
        });
        entry.subscribers.retain(|s| s.conn_id != sub.conn_id);
        entry.subscribers.push(sub);
        !entry.confirmed
    }

    fn confirm(&mut self, topic: &str) {
        if let Some(t) = self.local.get_mut(topic) {
            t.confirmed = true;
        }
    }

    /// Removes a local subscriber. Returns true when it was the topic's last one on this shard.
    fn remove(&mut self, topic: &str, conn_id: ConnId) -> bool {
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

    /// Queues `msg` to every local subscriber; returns how many took it and how many older
    /// frames gave way under the message's delivery policy.
    pub fn deliver_local(&self, msg: &Broadcast) -> (u64, u64) {
        let Some(entry) = self.local.get(&msg.topic) else {
            return (0, 0);
        };
        let (mut delivered, mut dropped) = (0, 0);
        for sub in &entry.subscribers {
            if Some(sub.conn_id) == msg.exclude || sub.gated.get() {
                continue;
            }
            if let Some(frame) = msg.frame_for(sub.serializer) {
                let pushed = sub.conn.deliver(frame.clone(), msg.delivery);
                delivered += u64::from(pushed.accepted());
                dropped += u64::from(pushed.dropped_one());
            }
        }
        (delivered, dropped)
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

    pub fn local_subscriber_count(&self, topic: &str) -> usize {
        self.local.get(topic).map_or(0, |t| t.subscribers.len())
    }

    fn record_interest(&mut self, topic: Topic, shard: usize) {
        let shards = self.remote_interest.entry(topic).or_default();
        if !shards.contains(&shard) {
            shards.push(shard);
        }
    }

    fn drop_interest(&mut self, topic: &str, shard: usize) {
        if let Some(shards) = self.remote_interest.get_mut(topic) {
            shards.retain(|&s| s != shard);
            if shards.is_empty() {
                self.remote_interest.remove(topic);
            }
        }
    }

    /// Other shards to forward a publish to, leaving out `origin`.
    fn forward_targets(&self, topic: &str, origin: usize) -> Vec<usize> {
        self.remote_interest
            .get(topic)
            .map(|s| s.iter().copied().filter(|&s| s != origin).collect())
            .unwrap_or_default()
    }
}

/// Subscribes a connection; resolves once broadcasts from any shard will reach it.
pub async fn subscribe(shard: &Shard, topic: Topic, sub: Subscriber) {
    let owner = shard.owner_of(&topic);
    let needs_ack = shard
        .topics
        .borrow_mut()
        .add(topic.clone(), sub, owner == shard.id);
    if !needs_ack {
        return;
    }
    let (ack_tx, ack_rx) = flume::bounded(1);
    let msg = OwnerMsg::Subscribe {
        topic: topic.clone(),
        shard: shard.id,
        ack: ack_tx,
    };
    if shard.mesh.owner[owner].send_async(msg).await.is_ok() && ack_rx.recv_async().await.is_ok() {
        shard.topics.borrow_mut().confirm(&topic);
    }
}

pub async fn unsubscribe(shard: &Shard, topic: Topic, conn_id: ConnId) {
    let last = shard.topics.borrow_mut().remove(&topic, conn_id);
    let owner = shard.owner_of(&topic);
    if last && owner != shard.id {
        let _ = shard.mesh.owner[owner]
            .send_async(OwnerMsg::Unsubscribe {
                topic,
                shard: shard.id,
            })
            .await;
    }
}

/// Publishes from this shard: local subscribers first, then every other interested shard.
pub async fn publish(shard: &Shard, msg: Arc<Broadcast>) {
    ShardMetrics::inc(&shard.metrics().broadcasts);
    deliver(shard, &msg);
    let owner = shard.owner_of(&msg.topic);
    if owner == shard.id {
        forward(shard, msg, shard.id).await;
    } else {
        let _ = shard.mesh.owner[owner]
            .send_async(OwnerMsg::Publish {
                msg,
                origin: shard.id,
            })
            .await;
    }
}

pub(crate) fn deliver(shard: &Shard, msg: &Broadcast) {
    let (delivered, dropped) = shard.topics.borrow().deliver_local(msg);
    ShardMetrics::add(&shard.metrics().deliveries, delivered);
    ShardMetrics::add(&shard.metrics().frames_dropped_by_policy, dropped);
}

pub(crate) async fn forward(shard: &Shard, msg: Arc<Broadcast>, origin: usize) {
    let targets = shard.topics.borrow().forward_targets(&msg.topic, origin);
    for target in targets {
        let _ = shard.mesh.delivery[target]
            .send_async(ShardMsg::Broadcast(msg.clone()))
            .await;
    }
}

/// Serves this shard's owner inbox until every sender is gone.
pub async fn run_owner_inbox(shard: Rc<Shard>, inbox: flume::Receiver<OwnerMsg>) {
    while let Ok(msg) = inbox.recv_async().await {
        ShardMetrics::inc(&shard.metrics().mesh_messages_in);
        match msg {
            OwnerMsg::Subscribe {
                topic,
                shard: from,
                ack,
            } => {
                shard.topics.borrow_mut().record_interest(topic, from);
                let _ = ack.send(());
            }
            OwnerMsg::Unsubscribe { topic, shard: from } => {
                shard.topics.borrow_mut().drop_interest(&topic, from);
            }
            OwnerMsg::Publish { msg, origin } => {
                deliver(&shard, &msg);
                forward(&shard, msg, origin).await;
            }
            OwnerMsg::Run { topic, task } => owner::run_task(&shard, topic, task).await,
        }
    }
}

/// Serves this shard's delivery inbox until every sender is gone. Never waits on another shard.
pub async fn run_delivery_inbox(shard: Rc<Shard>, inbox: flume::Receiver<ShardMsg>) {
    while let Ok(msg) = inbox.recv_async().await {
        ShardMetrics::inc(&shard.metrics().mesh_messages_in);
        match msg {
            ShardMsg::Broadcast(msg) => deliver(&shard, &msg),
            ShardMsg::ToConn(m) => shard.post_to_conn(m),
            ShardMsg::Open(addr) => shard.topics.borrow().open_gate(&addr.topic, addr.conn_id),
        }
    }
}
