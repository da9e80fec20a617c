//! What serves a shard's two mesh inboxes (see [`super::mesh`]).

use super::interpret;
use super::mesh::{OwnerMsg, ShardMsg};
use super::pubsub::{deliver, forward};
use super::shard::Shard;
use crate::ops::metrics::ShardMetrics;
use std::rc::Rc;

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
                shard.release_topic_if_idle(&topic);
            }
            OwnerMsg::Publish { msg, origin } => {
                deliver(&shard, &msg);
                forward(&shard, msg, origin).await;
            }
            OwnerMsg::Run { topic, task } => interpret::run_owner(&shard, topic, task).await,
        }
    }
}
