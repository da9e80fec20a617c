//! The mesh between shards: each shard has two bounded flume inboxes that every other shard holds
//! a sender for.
//!
//! - the **owner inbox** takes what concerns topics the shard owns: subscription changes of other
//!   shards, publishes to forward, and tasks to run on the owner ([`OwnerTask`]);
//! - the **delivery inbox** takes broadcasts to hand to local subscribers, and messages for one
//!   local connection (the answers of owner tasks).
//!
//! Handling a delivery never waits on another shard, so delivery inboxes always drain; owner
//! handlers only wait on delivery inboxes. Hence no cycle of full queues can deadlock, while a
//! publisher that outruns the mesh is slowed down (backpressure) rather than buffered without
//! bound. Each queue is FIFO per sender, which gives per-publisher ordering.

use crate::core::{Broadcast, ConnAddr, OwnerTask, Topic};
use std::any::Any;
use std::sync::Arc;

/// A message for one connection's channel (`handle_info`), possibly on another shard.
pub struct ConnMessage {
    /// The channel.
    pub to: ConnAddr,
    /// Its message.
    pub msg: Box<dyn Any + Send>,
}

/// What a delivery inbox carries.
pub enum ShardMsg {
    Broadcast(Arc<Broadcast>),
    ToConn(ConnMessage),
    /// Open a gated subscription (see `OwnerCtx::open`).
    Open(ConnAddr),
}

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
    /// Run `task` for `topic` on its owner.
    Run { topic: Topic, task: OwnerTask },
}

/// The sending side of the mesh, held by every shard.
#[derive(Clone)]
pub struct MeshSenders {
    pub owner: Vec<flume::Sender<OwnerMsg>>,
    pub delivery: Vec<flume::Sender<ShardMsg>>,
}

/// One shard's receiving side.
pub struct MeshInbox {
    pub owner: flume::Receiver<OwnerMsg>,
    pub delivery: flume::Receiver<ShardMsg>,
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
