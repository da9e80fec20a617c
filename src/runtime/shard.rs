//! Per-shard state. Only tasks of this shard touch it (through `Rc`), so plain `RefCell`s do:
//! no locks anywhere on the message path.

use super::config::ServerConfig;
use super::mailbox::ConnShared;
use super::mesh::{ConnMessage, MeshSenders};
use super::topics::Topics;
use super::transport::outbound::Limits;
use super::transport::ring::SocketRing;
use crate::core::socket::Info;
use crate::core::{App, ConnId, Effect, OwnerStates};
use crate::ops::metrics::{Metrics, ShardMetrics};
use bytes::BytesMut;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;

/// Chunk size of the shard's frame-encoding arena.
const ARENA_CHUNK: usize = 64 * 1024;

/// One shard's state.
pub struct Shard {
    /// This shard's index.
    pub id: usize,
    /// How many shards there are.
    pub shard_count: usize,
    /// The server's configuration.
    pub config: Arc<ServerConfig>,
    /// The connect hook and routes.
    pub app: App,
    /// Senders to every shard's inboxes.
    pub mesh: MeshSenders,
    /// Local subscribers, and remote interest in the topics this shard owns.
    pub topics: RefCell<Topics<Rc<ConnShared>>>,
    /// Owner-side state of the topics this shard owns.
    pub owner_states: RefCell<OwnerStates>,
    /// The shard's io_uring for socket writes.
    pub ring: Rc<SocketRing>,
    /// Every connection's outbound bounds (from `[outbound]`), shared.
    pub outbound_limits: Rc<Limits>,
    metrics: Arc<Metrics>,
    arena: RefCell<BytesMut>,
    connections: RefCell<HashMap<ConnId, Weak<ConnShared>>>,
    next_conn: Cell<u64>,
    draining: Cell<bool>,
    /// Bytes this shard's sockets hold in frames not yet complete.
    partial_bytes: Cell<usize>,
    /// Effect buffers lent to connections while they run a callback.
    effects_pool: RefCell<Vec<Vec<Effect>>>,
    drained_waker: RefCell<Option<std::task::Waker>>,
}

impl Shard {
    pub fn new(
        id: usize,
        config: Arc<ServerConfig>,
        app: App,
        mesh: MeshSenders,
        metrics: Arc<Metrics>,
        ring: Rc<SocketRing>,
    ) -> Shard {
        let outbound_limits = Rc::new(Limits {
            max_frames: config.outbound.max_queued_frames,
            max_bytes: config.outbound.max_queued_bytes,
            behind_timeout: config.outbound.behind_timeout(),
            hard_factor: config.outbound.hard_limit_factor,
            batch_frames: config.outbound.write_batch_frames,
        });
        Shard {
            id,
            shard_count: mesh.owner.len(),
            config,
            app,
            mesh,
            topics: RefCell::new(Topics::default()),
            owner_states: RefCell::new(OwnerStates::new(
                getrandom::u64().unwrap_or(0x5eed ^ id as u64),
            )),
            metrics,
            ring,
            outbound_limits,
            arena: RefCell::new(BytesMut::with_capacity(ARENA_CHUNK)),
            connections: RefCell::new(HashMap::new()),
            next_conn: Cell::new(0),
            draining: Cell::new(false),
            partial_bytes: Cell::new(0),
            effects_pool: RefCell::new(Vec::new()),
            drained_waker: RefCell::new(None),
        }
    }

    pub fn metrics(&self) -> &ShardMetrics {
        self.metrics.shard(self.id)
    }

    pub fn all_metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn owner_of(&self, topic: &str) -> usize {
        super::owner_of(topic, self.shard_count)
    }

    /// A server-wide unique connection id: shard in the top 16 bits.
    pub fn next_conn_id(&self) -> ConnId {
        let n = self.next_conn.get() + 1;
        self.next_conn.set(n);
        ((self.id as u64) << 48) | n
    }

    /// Runs `f` with the shard's encoding arena. Frames split off it share 64 KiB chunks, so
    /// encoding a reply or broadcast does not allocate per message.
    pub fn with_arena<R>(&self, f: impl FnOnce(&mut BytesMut) -> R) -> R {
        let mut arena = self.arena.borrow_mut();
        if arena.capacity() < 1024 {
            // `reserve` reuses the chunk when every frame split off it has been written and
            // dropped, and allocates a fresh one otherwise.
            arena.reserve(ARENA_CHUNK);
        }
        f(&mut arena)
    }

    /// One connection's bytes in unfinished frames went from `before` to `after`.
    pub fn adjust_partial_bytes(&self, before: usize, after: usize) {
        let total = self.partial_bytes.get() - before + after;
        self.partial_bytes.set(total);
        self.metrics()
            .partial_bytes
            .store(total as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes this shard's sockets hold in unfinished frames.
    pub fn partial_bytes(&self) -> usize {
        self.partial_bytes.get()
    }

    /// An empty effect buffer for one callback (reused, so callbacks do not allocate one).
    pub fn pooled_effects(&self) -> Vec<Effect> {
        self.effects_pool
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(8))
    }

    /// Returns an effect buffer to the pool (bounded; oversized buffers are dropped).
    pub fn recycle_effects(&self, mut effects: Vec<Effect>) {
        effects.clear();
        let mut pool = self.effects_pool.borrow_mut();
        if effects.capacity() <= 64 && pool.len() < 256 {
            pool.push(effects);
        }
    }

    /// Drops the owner state of `topic` when nothing needs it any more: this shard owns it, no
    /// shard has subscribers, and no owner work is pending.
    pub fn release_topic_if_idle(&self, topic: &str) {
        if self.owner_of(topic) == self.id
            && self.owner_states.borrow().has_topic_state(topic)
            && !self.topics.borrow().has_interest(topic)
        {
            self.owner_states.borrow_mut().release_if_idle(topic);
        }
    }

    /// Hands a message to a local connection's channel; dropped if the connection is gone.
    pub fn post_to_conn(&self, m: ConnMessage) {
        self.post_local(m.to, m.msg);
    }

    /// Hands a message (of the channel's `Info` type) to the channel at `to`, a connection on
    /// this shard; dropped if it is gone.
    pub fn post_local(&self, to: crate::core::ConnAddr, msg: Box<dyn std::any::Any>) {
        let conn = self
            .connections
            .borrow()
            .get(&to.conn_id)
            .and_then(Weak::upgrade);
        if let Some(conn) = conn {
            conn.post(Info {
                topic: to.topic,
                join_ref: to.join_ref,
                msg,
            });
        }
    }

    pub fn register(&self, id: ConnId, conn: &Rc<ConnShared>) {
        self.connections
            .borrow_mut()
            .insert(id, Rc::downgrade(conn));
    }

    pub fn unregister(&self, id: ConnId) {
        let mut conns = self.connections.borrow_mut();
        conns.remove(&id);
        if conns.is_empty() {
            if let Some(w) = self.drained_waker.borrow_mut().take() {
                w.wake();
            }
        }
    }

    /// Resolves once no connection is left on this shard.
    pub async fn drained(&self) {
        std::future::poll_fn(|cx| {
            if self.connections.borrow().is_empty() {
                std::task::Poll::Ready(())
            } else {
                *self.drained_waker.borrow_mut() = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await
    }

    pub fn connection_count(&self) -> usize {
        self.connections.borrow().len()
    }

    /// Whether the shard is draining (new sessions refused, open ones asked to close).
    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Starts a graceful drain: every connection is asked to close with 1001.
    pub fn start_drain(&self) {
        self.draining.set(true);
        let conns: Vec<_> = self
            .connections
            .borrow()
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for conn in conns {
            conn.request_shutdown();
        }
    }
}
