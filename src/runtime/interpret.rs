//! The one interpreter of [`Effect`]s. Channel callbacks (through a connection's session) and
//! owner tasks produce the same effect list; this is where it is carried out, in order. Routing
//! "here or through the mesh" is decided in one place each: [`send_to_channel`] for messages to a
//! channel, [`dispatch`] for owner tasks, [`open_gate`] for gated subscriptions.

use super::credit::Credit;
use super::mailbox::ConnShared;
use super::mesh::{ConnMessage, OwnerMsg, ShardMsg};
use super::pubsub;
use super::shard::Shard;
use super::topics::Subscriber;
use crate::core::{ConnAddr, ConnId, Effect, OwnerCtx, OwnerTask, Then, Topic};
use crate::ops::metrics::ShardMetrics;
use crate::protocol::phoenix::Serializer;
use crate::protocol::websocket::encode_close;
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

/// The connection whose channel produced the effects; owner tasks have none.
pub struct ConnOrigin<'a> {
    /// The connection.
    pub conn_id: ConnId,
    /// Its protocol version.
    pub serializer: Serializer,
    /// Its shard-facing half.
    pub shared: &'a Rc<ConnShared>,
    /// Whether the close frame is queued (by an earlier effect or by the session itself); the
    /// session ends once the effects are done.
    pub close_sent: &'a mut bool,
}

/// Carries out `effects` in order, leaving the vector empty (for reuse). Broadcasts, including
/// those of owner tasks run here and now, hold `credit` (the reader's that produced them) until
/// local subscribers have written them.
pub async fn apply(
    shard: &Rc<Shard>,
    mut origin: Option<ConnOrigin<'_>>,
    credit: Option<&Rc<Credit>>,
    effects: &mut Vec<Effect>,
) {
    for effect in effects.drain(..) {
        match effect {
            Effect::Send(frame) => match &origin {
                Some(conn) => {
                    if conn.shared.send_own(frame).1 {
                        ShardMetrics::inc(&shard.metrics().deflate_compressions);
                    }
                }
                None => tracing::error!("Effect::Send outside a connection dropped"),
            },
            Effect::Broadcast(msg) => pubsub::publish(shard, msg, credit).await,
            Effect::Subscribe { topic, gated } => match &origin {
                Some(conn) => {
                    let sub = Subscriber {
                        conn_id: conn.conn_id,
                        serializer: conn.serializer,
                        handle: conn.shared.clone(),
                        gated: Cell::new(gated),
                    };
                    // Boxed: rare (joins), and large; keeps every connection's task small.
                    Box::pin(pubsub::subscribe(shard, topic, sub)).await;
                }
                None => tracing::error!(%topic, "Effect::Subscribe outside a connection dropped"),
            },
            Effect::Unsubscribe(topic) => match &origin {
                Some(conn) => Box::pin(pubsub::unsubscribe(shard, topic, conn.conn_id)).await,
                None => tracing::error!(%topic, "Effect::Unsubscribe outside a connection dropped"),
            },
            Effect::Close { code, reason } => match &mut origin {
                Some(conn) => {
                    // Queued here, in order: frames the callback asked for after it are refused.
                    if !*conn.close_sent {
                        let frame = shard.with_arena(|a| encode_close(a, code, reason));
                        conn.shared.outbound.close_with(frame);
                        *conn.close_sent = true;
                    }
                }
                None => tracing::error!(code, "Effect::Close outside a connection dropped"),
            },
            Effect::Open(addr) => open_gate(shard, addr).await,
            Effect::Deliver {
                to,
                msg,
                delay: None,
            } => send_to_channel(shard, ConnMessage { to, msg }).await,
            Effect::Deliver {
                to,
                msg,
                delay: Some(delay),
            } => {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    glommio::timer::sleep(delay).await;
                    send_to_channel(&shard, ConnMessage { to, msg }).await;
                })
                .detach();
            }
            Effect::RunOnOwner {
                topic,
                delay: None,
                task,
            } => Box::pin(dispatch(shard, topic, task, credit)).await,
            Effect::RunOnOwner {
                topic,
                delay: Some(delay),
                task,
            } => {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    glommio::timer::sleep(delay).await;
                    dispatch(&shard, topic, task, None).await;
                })
                .detach();
            }
            Effect::Spawn { fut, then } => {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let out = fut.await;
                    match then {
                        Then::Deliver(to) => shard.post_local(to, out),
                        Then::Owner { topic, task } => {
                            run_owner(&shard, topic, None, move |ctx| task(ctx, out)).await
                        }
                    }
                })
                .detach();
            }
        }
    }
}

/// Sends `task` to the owner of `topic` (or runs it here, under `credit`, if this shard owns it).
pub async fn dispatch(
    shard: &Rc<Shard>,
    topic: Topic,
    task: OwnerTask,
    credit: Option<&Rc<Credit>>,
) {
    let owner = shard.owner_of(&topic);
    if owner == shard.id {
        run_owner(shard, topic, credit, task).await;
    } else {
        let _ = shard.mesh.owner[owner]
            .send_async(OwnerMsg::Run { topic, task })
            .await;
    }
}

/// Runs `task` here (the caller checked this shard owns `topic`), then carries out its effects.
pub async fn run_owner(
    shard: &Rc<Shard>,
    topic: Topic,
    credit: Option<&Rc<Credit>>,
    task: impl FnOnce(&mut OwnerCtx<'_>),
) {
    let mut effects = shard.pooled_effects();
    let ran = {
        let mut states = shard.owner_states.borrow_mut();
        shard.with_arena(|arena| {
            let mut ctx = OwnerCtx::new(
                &topic,
                shard.id,
                super::now(),
                &mut states,
                &mut effects,
                arena,
            );
            catch_unwind(AssertUnwindSafe(|| task(&mut ctx))).is_ok()
        })
    };
    if ran {
        Box::pin(apply(shard, None, credit, &mut effects)).await;
    } else {
        tracing::error!(topic = %topic, "owner task panicked");
        shard.owner_states.borrow_mut().discard(&mut effects);
    }
    shard.recycle_effects(effects);
    shard.release_topic_if_idle(&topic);
}

/// Hands a message to a channel, on this shard or through the mesh.
pub async fn send_to_channel(shard: &Shard, m: ConnMessage) {
    let target = m.to.shard();
    if target == shard.id {
        shard.post_to_conn(m);
    } else {
        let _ = shard.mesh.delivery[target]
            .send_async(ShardMsg::ToConn(m))
            .await;
    }
}

/// Opens a gated subscription, on this shard or through the mesh.
pub async fn open_gate(shard: &Shard, addr: ConnAddr) {
    let target = addr.shard();
    if target == shard.id {
        shard.topics.borrow().open_gate(&addr.topic, addr.conn_id);
    } else {
        let _ = shard.mesh.delivery[target]
            .send_async(ShardMsg::Open(addr))
            .await;
    }
}
