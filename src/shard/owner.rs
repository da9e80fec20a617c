//! Work that must happen in one place per topic — presence, a document's operation log, a room's
//! message ids — runs on the topic's **owner shard**. A channel sends an [`OwnerTask`] there with
//! [`ChannelCtx::run_on_owner`](crate::channel::ChannelCtx::run_on_owner); the task sees that
//! shard's state through [`OwnerCtx`], may broadcast on its topic, and answers connections (on
//! any shard) with [`OwnerCtx::send`], which arrives in the channel's `handle_info`.
//!
//! Tasks for one topic from one connection run in the order they were sent.

use super::context::Shard;
use super::mesh::{ConnMessage, OwnerTask, ShardMsg};
use super::pubsub::{self, Broadcast};
use crate::channel::{ConnAddr, ConnId, Payload, Topic};
use crate::protocol::phoenix::ByteString;
use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;

enum OwnerEffect {
    Open(ConnAddr),
    Broadcast(Arc<Broadcast>),
    Send(ConnMessage),
    /// A future to run on this shard; it ends by running a continuation as another owner task.
    Spawn(LocalFuture),
}

/// What an owner task can reach.
pub struct OwnerCtx<'a> {
    shard: &'a Shard,
    topic: &'a Topic,
    effects: Vec<OwnerEffect>,
}

impl OwnerCtx<'_> {
    pub fn topic(&self) -> &Topic {
        self.topic
    }

    pub fn shard_id(&self) -> usize {
        self.shard.id
    }

    /// This shard's instance of `T` (created on first use): where owner-side state lives, e.g.
    /// a presence table keyed by topic.
    pub fn state<T: Default + 'static>(&self) -> Rc<RefCell<T>> {
        self.shard.state::<T>()
    }

    /// Broadcasts on this task's topic to every subscriber on every shard.
    pub fn broadcast(&mut self, event: &str, payload: &Payload) {
        self.publish(event, payload, None);
    }

    /// Broadcasts on this task's topic to every subscriber except the connection `exclude`
    /// (the one whose push caused it).
    pub fn broadcast_from(&mut self, event: &str, payload: &Payload, exclude: ConnId) {
        self.publish(event, payload, Some(exclude));
    }

    fn publish(&mut self, event: &str, payload: &Payload, exclude: Option<ConnId>) {
        let msg = self.shard.with_arena(|arena| {
            Broadcast::new(
                self.topic.clone(),
                ByteString::from(event),
                payload.clone(),
                exclude,
                arena,
            )
        });
        self.effects.push(OwnerEffect::Broadcast(Arc::new(msg)));
    }

    /// Runs `fut` on this shard (e.g. awaiting the storage thread), then `then` with its output
    /// as a new owner task for the same topic. Shards never block on disk; this is how an owner
    /// waits for it.
    pub fn spawn_then<T: 'static>(
        &mut self,
        fut: impl Future<Output = T> + 'static,
        then: impl FnOnce(&mut OwnerCtx<'_>, T) + 'static,
    ) {
        let topic = self.topic.clone();
        self.effects.push(OwnerEffect::Spawn(Box::pin(async move {
            let out = fut.await;
            let Some(shard) = CURRENT_SHARD.with(|s| s.borrow().upgrade()) else {
                return;
            };
            run_task(
                &shard,
                topic,
                Box::new(move |ctx: &mut OwnerCtx<'_>| then(ctx, out)),
            )
            .await;
        })));
    }

    /// Opens the gated subscription of the channel at `to` (see
    /// [`ChannelCtx::hold_broadcasts`](crate::channel::ChannelCtx::hold_broadcasts)): broadcasts
    /// this task and later ones make reach it; earlier ones did not.
    pub fn open(&mut self, to: &ConnAddr) {
        self.effects.push(OwnerEffect::Open(to.clone()));
    }

    /// Sends `msg` to the channel at `to` (its `handle_info`), wherever it lives.
    pub fn send(&mut self, to: &ConnAddr, msg: impl Any + Send) {
        self.effects.push(OwnerEffect::Send(ConnMessage {
            to: to.clone(),
            msg: Box::new(msg),
        }));
    }
}

thread_local! {
    /// The shard running on this thread, for continuations of spawned owner work.
    static CURRENT_SHARD: RefCell<std::rc::Weak<Shard>> =
        const { RefCell::new(std::rc::Weak::new()) };
}

/// Records the shard of this executor thread (called once at shard start).
pub(crate) fn set_current_shard(shard: &Rc<Shard>) {
    CURRENT_SHARD.with(|s| *s.borrow_mut() = Rc::downgrade(shard));
}

/// Runs `task` here (the caller checked this shard owns `topic`), then carries out its effects.
pub async fn run_task(
    shard: &Rc<Shard>,
    topic: Topic,
    task: Box<dyn FnOnce(&mut OwnerCtx<'_>) + '_>,
) {
    let mut ctx = OwnerCtx {
        shard,
        topic: &topic,
        effects: Vec::new(),
    };
    if catch_unwind(AssertUnwindSafe(|| task(&mut ctx))).is_err() {
        tracing::error!(topic = %topic, "owner task panicked");
        return;
    }
    for effect in ctx.effects {
        match effect {
            OwnerEffect::Broadcast(msg) => {
                pubsub::deliver(shard, &msg);
                pubsub::forward(shard, msg, shard.id).await;
            }
            OwnerEffect::Spawn(fut) => {
                glommio::spawn_local(fut).detach();
            }
            OwnerEffect::Open(addr) => {
                let target = addr.shard();
                if target == shard.id {
                    shard.topics.borrow().open_gate(&addr.topic, addr.conn_id);
                } else {
                    let _ = shard.mesh.delivery[target]
                        .send_async(ShardMsg::Open(addr))
                        .await;
                }
            }
            OwnerEffect::Send(m) => {
                let target = m.to.shard();
                if target == shard.id {
                    shard.post_to_conn(m);
                } else {
                    let _ = shard.mesh.delivery[target]
                        .send_async(ShardMsg::ToConn(m))
                        .await;
                }
            }
        }
    }
}

/// Sends `task` to the owner of `topic` (or runs it here if this shard owns it).
pub async fn dispatch(shard: &Rc<Shard>, topic: Topic, task: OwnerTask) {
    let owner = shard.owner_of(&topic);
    if owner == shard.id {
        run_task(shard, topic, task).await;
    } else {
        let _ = shard.mesh.owner[owner]
            .send_async(super::mesh::OwnerMsg::Run { topic, task })
            .await;
    }
}
