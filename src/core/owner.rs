//! Work that must happen in one place per topic — presence, a document's operation log, a room's
//! message ids — runs on the topic's **owner shard**. A channel sends an
//! [`OwnerTask`](super::OwnerTask) there with [`ChannelCtx::run_on_owner`]; the task sees that
//! shard's owner state through [`OwnerCtx`], may broadcast on its topic, and answers channels (on
//! any shard) with [`OwnerCtx::send`], which arrives in the channel's `handle_info`.
//!
//! Tasks for one topic from one connection run in the order they were sent.
//!
//! [`ChannelCtx::run_on_owner`]: super::ChannelCtx::run_on_owner

use super::{Addr, Broadcast, ConnAddr, ConnId, Effect, Now, Payload, Then, Topic};
use crate::protocol::phoenix::ByteString;
use bytes::BytesMut;
use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// The owner-side state of one shard: shard-wide values by type, and per-topic values by topic
/// and type with a lifecycle (created on first use, dropped when the topic has no subscribers
/// and no pending owner work). Also the shard's source of randomness, seeded by whoever builds
/// it (the runtime from the OS, a test with a constant).
pub struct OwnerStates {
    shard_wide: HashMap<TypeId, Rc<dyn Any>>,
    per_topic: HashMap<Topic, TopicState>,
    rng: u64,
}

#[derive(Default)]
struct TopicState {
    values: HashMap<TypeId, Rc<dyn Any>>,
    /// Spawned owner work (`spawn_then`) not finished yet.
    pending: usize,
}

impl OwnerStates {
    /// Empty state with a random seed.
    pub fn new(seed: u64) -> OwnerStates {
        OwnerStates {
            shard_wide: HashMap::new(),
            per_topic: HashMap::new(),
            rng: seed,
        }
    }

    fn shard_state<T: Default + 'static>(&mut self) -> Rc<RefCell<T>> {
        fetch(&mut self.shard_wide)
    }

    fn topic_state<T: Default + 'static>(&mut self, topic: &Topic) -> Rc<RefCell<T>> {
        let entry = match self.per_topic.get_mut(topic.as_ref() as &str) {
            Some(e) => e,
            None => self.per_topic.entry(topic.clone()).or_default(),
        };
        fetch(&mut entry.values)
    }

    /// Spawned owner work for `topic` started.
    pub(crate) fn work_started(&mut self, topic: &Topic) {
        match self.per_topic.get_mut(topic.as_ref() as &str) {
            Some(e) => e.pending += 1,
            None => self.per_topic.entry(topic.clone()).or_default().pending += 1,
        }
    }

    /// A panicking owner task's effects are discarded; the pending work it had counted
    /// (`spawn_then`, `run_after`) will never finish, so it is uncounted here.
    pub fn discard(&mut self, effects: &mut Vec<Effect>) {
        for effect in effects.drain(..) {
            match effect {
                Effect::Spawn {
                    then: Then::Owner { topic, .. },
                    ..
                }
                | Effect::RunOnOwner {
                    topic,
                    delay: Some(_),
                    ..
                } => self.work_finished(&topic),
                _ => {}
            }
        }
    }

    /// Spawned owner work for `topic` finished (its continuation has run).
    pub fn work_finished(&mut self, topic: &str) {
        if let Some(e) = self.per_topic.get_mut(topic) {
            e.pending = e.pending.saturating_sub(1);
        }
    }

    /// Drops `topic`'s per-topic state if no owner work is pending; the caller (the runtime)
    /// knows the topic has no subscribers left on any shard. Returns whether it was dropped.
    pub fn release_if_idle(&mut self, topic: &str) -> bool {
        match self.per_topic.get(topic) {
            Some(e) if e.pending == 0 => {
                self.per_topic.remove(topic);
                true
            }
            _ => false,
        }
    }

    /// Whether `topic` holds per-topic state now.
    pub fn has_topic_state(&self, topic: &str) -> bool {
        self.per_topic.contains_key(topic)
    }

    fn next_random(&mut self) -> u64 {
        // SplitMix64: a well-mixed sequence from any seed, for unique ids (not for secrets).
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn fetch<T: Default + 'static>(map: &mut HashMap<TypeId, Rc<dyn Any>>) -> Rc<RefCell<T>> {
    map.entry(TypeId::of::<T>())
        .or_insert_with(|| Rc::new(RefCell::new(T::default())) as Rc<dyn Any>)
        .clone()
        .downcast::<RefCell<T>>()
        .unwrap_or_else(|_| unreachable!("states are keyed by their type"))
}

/// What an owner task can reach.
pub struct OwnerCtx<'a> {
    topic: &'a Topic,
    shard: usize,
    now: Now,
    states: &'a mut OwnerStates,
    effects: &'a mut Vec<Effect>,
    arena: &'a mut BytesMut,
}

impl<'a> OwnerCtx<'a> {
    /// A context for one task on `topic`, run on shard `shard` at `now`.
    pub fn new(
        topic: &'a Topic,
        shard: usize,
        now: Now,
        states: &'a mut OwnerStates,
        effects: &'a mut Vec<Effect>,
        arena: &'a mut BytesMut,
    ) -> OwnerCtx<'a> {
        OwnerCtx {
            topic,
            shard,
            now,
            states,
            effects,
            arena,
        }
    }

    /// The task's topic.
    pub fn topic(&self) -> &Topic {
        self.topic
    }

    /// The owner shard.
    pub fn shard_id(&self) -> usize {
        self.shard
    }

    /// The time the task runs at.
    pub fn now(&self) -> Now {
        self.now
    }

    /// A random number from the shard's seeded source (for unique ids such as presence refs).
    pub fn random_u64(&mut self) -> u64 {
        self.states.next_random()
    }

    /// This shard's instance of `T` (created on first use), shared by every topic this shard
    /// owns.
    pub fn state<T: Default + 'static>(&mut self) -> Rc<RefCell<T>> {
        self.states.shard_state::<T>()
    }

    /// This topic's instance of `T` on its owner (created on first use, dropped by the runtime
    /// once the topic has no subscriber on any shard and no pending owner work).
    pub fn topic_state<T: Default + 'static>(&mut self) -> Rc<RefCell<T>> {
        self.states.topic_state::<T>(self.topic)
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
        let msg = Broadcast::new(
            self.topic.clone(),
            ByteString::from(event),
            payload.clone(),
            exclude,
            self.arena,
        );
        self.effects.push(Effect::Broadcast(Arc::new(msg)));
    }

    /// Runs `fut` on this shard (e.g. awaiting the storage thread), then `then` with its output
    /// as a new owner task for the same topic. Shards never block on disk; this is how an owner
    /// waits for it. The topic's state is kept until `then` has run.
    pub fn spawn_then<T: 'static>(
        &mut self,
        fut: impl Future<Output = T> + 'static,
        then: impl FnOnce(&mut OwnerCtx<'_>, T) + 'static,
    ) {
        self.states.work_started(self.topic);
        self.effects.push(Effect::Spawn {
            fut: Box::pin(async move { Box::new(fut.await) as Box<dyn Any> }),
            then: Then::Owner {
                topic: self.topic.clone(),
                task: Box::new(move |ctx: &mut OwnerCtx<'_>, out: Box<dyn Any>| {
                    let topic = ctx.topic.clone();
                    ctx.states.work_finished(&topic);
                    if let Ok(out) = out.downcast::<T>() {
                        then(ctx, *out)
                    }
                }),
            },
        });
    }

    /// Runs `task` on this topic's owner (this shard) after `delay`: the owner's timer. The
    /// topic's state is kept until it has run.
    pub fn run_after(
        &mut self,
        delay: Duration,
        task: impl FnOnce(&mut OwnerCtx<'_>) + Send + 'static,
    ) {
        self.states.work_started(self.topic);
        self.effects.push(Effect::RunOnOwner {
            topic: self.topic.clone(),
            delay: Some(delay),
            task: Box::new(move |ctx: &mut OwnerCtx<'_>| {
                let topic = ctx.topic.clone();
                ctx.states.work_finished(&topic);
                task(ctx)
            }),
        });
    }

    /// Opens the gated subscription of the channel at `to` (see
    /// [`ChannelCtx::hold_broadcasts`](super::ChannelCtx::hold_broadcasts)): broadcasts
    /// this task and later ones make reach it; earlier ones did not.
    pub fn open<M>(&mut self, to: &Addr<M>) {
        self.effects.push(Effect::Open(to.raw().clone()));
    }

    /// Sends `msg` to the channel at `to` (its `handle_info`), wherever it lives.
    pub fn send<M: Send + 'static>(&mut self, to: &Addr<M>, msg: M) {
        self.deliver(to.raw().clone(), Box::new(msg), None);
    }

    /// Sends `msg` to the channel at `to` after `delay`.
    pub fn send_after<M: Send + 'static>(&mut self, to: &Addr<M>, delay: Duration, msg: M) {
        self.deliver(to.raw().clone(), Box::new(msg), Some(delay));
    }

    fn deliver(&mut self, to: ConnAddr, msg: Box<dyn Any + Send>, delay: Option<Duration>) {
        self.effects.push(Effect::Deliver { to, msg, delay });
    }
}
