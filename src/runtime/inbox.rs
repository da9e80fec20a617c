//! What serves a shard's two mesh inboxes (see [`super::mesh`]).

use super::credit::Credit;
use super::interpret;
use super::mesh::{OwnerMsg, ShardMsg};
use super::pubsub::{deliver, forward};
use super::shard::Shard;
use crate::ops::metrics::ShardMetrics;
use std::rc::Rc;

/// Serves this shard's delivery inbox until every sender is gone. Never waits on another shard;
/// waits for local subscribers to write what it handed them (its [`Credit`]) before taking more,
/// so a burst from another shard fills the mesh queue (slowing the publisher) instead of every
/// subscriber's queue at once.
pub async fn run_delivery_inbox(shard: Rc<Shard>, inbox: flume::Receiver<ShardMsg>) {
    let credit = Credit::new(shard.config.outbound.publisher_credit_bytes);
    let mut taken = 0;
    while let Some(msg) = next_under_credit(&shard, &credit, &inbox, &mut taken).await {
        match msg {
            ShardMsg::Broadcast(msg) => deliver(&shard, &msg, Some(&credit)),
            ShardMsg::ToConn(m) => shard.post_to_conn(m),
            ShardMsg::Open(addr) => shard.topics.borrow().open_gate(&addr.topic, addr.conn_id),
        }
    }
}

/// Serves this shard's owner inbox until every sender is gone, under its own [`Credit`] (as the
/// delivery inbox).
pub async fn run_owner_inbox(shard: Rc<Shard>, inbox: flume::Receiver<OwnerMsg>) {
    let credit = Credit::new(shard.config.outbound.publisher_credit_bytes);
    let mut taken = 0;
    while let Some(msg) = next_under_credit(&shard, &credit, &inbox, &mut taken).await {
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
                deliver(&shard, &msg, Some(&credit));
                forward(&shard, msg, origin).await;
            }
            OwnerMsg::Run { topic, task } => {
                interpret::run_owner(&shard, topic, Some(&credit), task).await
            }
        }
    }
}

/// Messages an inbox handles before the rest of the shard (its socket ring among them) gets a
/// turn: a busy mesh queue is always ready, so without this the inbox would never yield.
const MESSAGES_PER_TURN: usize = 64;

/// The next message of `inbox` once this inbox's earlier deliveries are written (or patience ran
/// out), counted; `None` when every sender is gone.
async fn next_under_credit<T>(
    shard: &Shard,
    credit: &Credit,
    inbox: &flume::Receiver<T>,
    taken: &mut usize,
) -> Option<T> {
    *taken += 1;
    if *taken == MESSAGES_PER_TURN {
        *taken = 0;
        glommio::executor().yield_now().await;
    }
    credit
        .room(shard.config.outbound.publisher_patience())
        .await;
    let msg = inbox.recv_async().await.ok()?;
    ShardMetrics::inc(&shard.metrics().mesh_messages_in);
    Some(msg)
}
