//! Subscriptions and broadcast across shards.
//!
//! Every shard keeps its **local subscribers** per topic ([`super::topics`]). The topic's **owner
//! shard** (see [`super::owner_of`]) also knows which *other* shards have subscribers. A broadcast
//! is delivered at once to the publisher's own shard, then sent to the owner, which forwards it
//! to every other interested shard; each shard hands it to its local subscribers. The frame is
//! encoded once (per protocol version) into `Bytes` shared by every subscriber on every shard.

use super::credit::Credit;
use super::mailbox::ConnShared;
use super::mesh::{OwnerMsg, ShardMsg};
use super::shard::Shard;
use super::topics::Subscriber;
use crate::core::{Broadcast, ConnId, Topic};
use crate::ops::metrics::ShardMetrics;
use std::rc::Rc;
use std::sync::Arc;

/// Subscribes a connection; resolves once broadcasts from any shard will reach it.
pub async fn subscribe(shard: &Shard, topic: Topic, sub: Subscriber<Rc<ConnShared>>) {
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

/// Unsubscribes a connection; tells the owner when this shard has no subscriber left.
pub async fn unsubscribe(shard: &Shard, topic: Topic, conn_id: ConnId) {
    let last = shard.topics.borrow_mut().remove(&topic, conn_id);
    if !last {
        return;
    }
    let owner = shard.owner_of(&topic);
    if owner == shard.id {
        shard.release_topic_if_idle(&topic);
    } else {
        let _ = shard.mesh.owner[owner]
            .send_async(OwnerMsg::Unsubscribe {
                topic,
                shard: shard.id,
            })
            .await;
    }
}

/// Publishes from this shard: local subscribers first (holding `credit` until they have written
/// it), then every other interested shard.
pub async fn publish(shard: &Shard, msg: Arc<Broadcast>, credit: Option<&Rc<Credit>>) {
    ShardMetrics::inc(&shard.metrics().broadcasts);
    deliver(shard, &msg, credit);
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

/// Hands `msg` to this shard's local subscribers, who hold `credit` until they have written it.
pub(crate) fn deliver(shard: &Shard, msg: &Broadcast, credit: Option<&Rc<Credit>>) {
    let (delivered, dropped, compressed) = shard.topics.borrow().deliver_local(msg, credit);
    ShardMetrics::add(&shard.metrics().deflate_compressions, compressed);
    ShardMetrics::add(&shard.metrics().deliveries, delivered);
    ShardMetrics::add(&shard.metrics().frames_dropped_by_policy, dropped);
}

/// On the owner: sends `msg` to every other interested shard but `origin`.
pub(crate) async fn forward(shard: &Shard, msg: Arc<Broadcast>, origin: usize) {
    let targets = shard.topics.borrow().forward_targets(&msg.topic, origin);
    for target in targets {
        let _ = shard.mesh.delivery[target]
            .send_async(ShardMsg::Broadcast(msg.clone()))
            .await;
    }
}
