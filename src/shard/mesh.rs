//! The mesh between shards: each shard has two bounded flume inboxes that every other shard holds
//! a sender for.
//!
//! - the **owner inbox** takes what concerns topics the shard owns: subscription changes of other
//!   shards and publishes to forward;
//! - the **delivery inbox** takes broadcasts to hand to local subscribers.
//!
//! Handling a delivery never waits on another shard, so delivery inboxes always drain; owner
//! handlers only wait on delivery inboxes. Hence no cycle of full queues can deadlock, while a
//! publisher that outruns the mesh is slowed down (backpressure) rather than buffered without
//! bound. Each queue is FIFO per sender, which gives per-publisher ordering.

use super::pubsub::Broadcast;
use crate::channel::Topic;
use std::sync::Arc;

pub enum OwnerMsg {
    /// `shard` has local subscribers for `topic`; `ack` once recorded, so the subscriber's join
    /// reply is only sent when broadcasts are sure to reach it.
    Subscribe {
        topic: Topic,
        shard: usize,
        ack: flume::Sender<()>,
    },
    /// `shard` has no local subscribers for `topic` any more.
    Unsubscribe { topic: Topic, shard: usize },
    /// Forward to every other interested shard; `origin` delivered locally already.
    Publish { msg: Arc<Broadcast>, origin: usize },
}

/// The sending side of the mesh, held by every shard.
#[derive(Clone)]
pub struct MeshSenders {
    pub owner: Vec<flume::Sender<OwnerMsg>>,
    pub delivery: Vec<flume::Sender<Arc<Broadcast>>>,
}

/// One shard's receiving side.
pub struct MeshInbox {
    pub owner: flume::Receiver<OwnerMsg>,
    pub delivery: flume::Receiver<Arc<Broadcast>>,
}

/// Builds the full mesh for `shards` shards.
pub fn build(shards: usize, capacity: usize) -> (MeshSenders, Vec<MeshInbox>) {
    let mut senders = MeshSenders {
        owner: Vec::with_capacity(shards),
        delivery: Vec::with_capacity(shards),
    };
    let mut inboxes = Vec::with_capacity(shards);
    for _ in 0..shards {
        let (otx, orx) = flume::bounded(capacity);
        let (dtx, drx) = flume::bounded(capacity);
        senders.owner.push(otx);
        senders.delivery.push(dtx);
        inboxes.push(MeshInbox {
            owner: orx,
            delivery: drx,
        });
    }
    (senders, inboxes)
}
