//! The Phoenix socket state machine: routes decoded client messages to the channels joined on
//! one connection and produces the exact reply/close/error frames and orderings Phoenix does.
//! No I/O: its output is a list of [`Effect`]s for the connection driver.

use super::ctx::{encode_reply, ConnState, CtxParts, Outbox};
use super::{
    AnyChannel, Effect, HandleIn, HandleInfo, Payload, ReplyRef, ReplyStatus, Router,
    TerminateReason, Topic,
};
use crate::protocol::phoenix::{encode, event, ByteString, Inbound, Outgoing};
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

struct Joined {
    join_ref: ByteString,
    channel: Box<dyn AnyChannel>,
}

/// A message for a channel's `handle_info`, addressed by topic and join ref so that it is dropped
/// if the channel it was meant for has been left or replaced.
pub struct Info {
    /// The channel's topic.
    pub topic: Topic,
    /// The join it is for.
    pub join_ref: ByteString,
    /// Of the channel's `Info` type.
    pub msg: Box<dyn Any>,
}

/// The channels joined on one socket. A socket joins a handful of topics, so a small vector
/// (linear search, no hashing, ~80 bytes per entry) beats a hash map in time and in memory held by
/// idle connections.
#[derive(Default)]
struct JoinedTopics(Vec<(Topic, Joined)>);

impl JoinedTopics {
    fn position(&self, topic: &str) -> Option<usize> {
        self.0.iter().position(|(t, _)| t == topic)
    }

    fn contains_key(&self, topic: &str) -> bool {
        self.position(topic).is_some()
    }

    fn remove_entry(&mut self, topic: &str) -> Option<(Topic, Joined)> {
        self.position(topic).map(|i| self.0.swap_remove(i))
    }

    fn remove(&mut self, topic: &str) -> Option<Joined> {
        self.remove_entry(topic).map(|(_, j)| j)
    }

    fn insert(&mut self, topic: Topic, joined: Joined) {
        match self.position(&topic) {
            Some(i) => self.0[i].1 = joined,
            None => {
                // Most sockets join one or two topics: grow one at a time, not to four at once
                // (an idle connection's memory is mostly what it keeps here).
                self.0.reserve_exact(1);
                self.0.push((topic, joined))
            }
        }
    }

    fn keys(&self) -> impl Iterator<Item = &Topic> {
        self.0.iter().map(|(t, _)| t)
    }
}

impl IntoIterator for JoinedTopics {
    type Item = (Topic, Joined);
    type IntoIter = std::vec::IntoIter<(Topic, Joined)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// What one socket may make the server hold (`[channels]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SocketLimits {
    /// Longest topic name, in bytes (Phoenix's binary frames cannot carry more than 255). A
    /// message naming a longer one closes the socket with 1008.
    pub max_topic_bytes: usize,
    /// Longest event name, in bytes; longer closes the socket with 1008.
    pub max_event_bytes: usize,
    /// Channels one socket may have joined at once; a join past it is refused
    /// (`{"reason": "too_many_joins"}`).
    pub max_joins_per_socket: usize,
}

impl Default for SocketLimits {
    fn default() -> Self {
        SocketLimits {
            max_topic_bytes: 255,
            max_event_bytes: 255,
            max_joins_per_socket: 100,
        }
    }
}

/// The channels joined on one socket and the Phoenix rules between them.
pub struct PhoenixSocket {
    conn: ConnState,
    router: Arc<Router>,
    joined: JoinedTopics,
    limits: SocketLimits,
}

impl PhoenixSocket {
    /// A socket with no channel joined yet.
    pub fn new(conn: ConnState, router: Arc<Router>) -> Self {
        PhoenixSocket {
            conn,
            router,
            joined: JoinedTopics::default(),
            limits: SocketLimits::default(),
        }
    }

    /// The same, under `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: SocketLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The connection's facts.
    pub fn conn(&self) -> &ConnState {
        &self.conn
    }

    /// The topics joined now.
    pub fn joined_topics(&self) -> impl Iterator<Item = &Topic> {
        self.joined.keys()
    }

    /// Handles one client message.
    pub fn handle(&mut self, msg: Inbound, out: &mut Outbox<'_>) {
        if msg.topic.len() > self.limits.max_topic_bytes
            || msg.event.len() > self.limits.max_event_bytes
        {
            // Not echoed in a reply (it would send the oversized name back): the socket closes.
            out.effects.push(Effect::Close {
                code: 1008,
                reason: "topic or event name too long",
            });
            return;
        }
        let event: &str = &msg.event;
        if msg.topic == event::HEARTBEAT_TOPIC && event == event::HEARTBEAT {
            self.reply_direct(
                &msg,
                msg.join_ref.as_ref(),
                ReplyStatus::Ok,
                &Payload::empty(),
                out,
            );
        } else if event == event::JOIN {
            self.join(msg, out);
        } else if !self.joined.contains_key(&msg.topic) {
            self.unmatched(&msg, out);
        } else if event == event::LEAVE {
            self.leave(msg, out);
        } else {
            self.handle_in(msg, out);
        }
    }

    fn join(&mut self, msg: Inbound, out: &mut Outbox<'_>) {
        if !self.joined.contains_key(&msg.topic)
            && self.joined.0.len() >= self.limits.max_joins_per_socket
        {
            let payload =
                Payload::raw_json(bytes::Bytes::from_static(br#"{"reason":"too_many_joins"}"#));
            return self.reply_direct(
                &msg,
                msg.join_ref.as_ref(),
                ReplyStatus::Error,
                &payload,
                out,
            );
        }
        let Some(mut channel) = self.router.route(&msg.topic) else {
            return self.unmatched(&msg, out);
        };
        // Stored topics and refs are copied out of the receive buffer so they do not pin it.
        let topic = Topic::from(msg.topic.to_string());
        let join_ref = ByteString::from(msg.join_ref.as_deref().unwrap_or("").to_string());
        let replaced = self.joined.remove(&topic).map(|mut old| {
            self.terminate(&topic, &mut old, TerminateReason::Duplicate, out);
            old.join_ref
        });

        let before = out.effects.len();
        let mut gated = false;
        let result = {
            let parts = CtxParts {
                topic: &topic,
                join_ref: &join_ref,
                msg_ref: msg.msg_ref.as_ref(),
                conn: &self.conn,
                out: out.reborrow(),
                hold: Some(&mut gated),
            };
            catch_unwind(AssertUnwindSafe(|| {
                channel.join(parts, msg.payload.clone())
            }))
        };
        // Effects of the join callback go after the reply.
        let from_join = out.effects.split_off(before);
        let reply_to = ReplyRef {
            topic: topic.clone(),
            join_ref: join_ref.clone(),
            msg_ref: msg.msg_ref.clone(),
        };
        match result {
            Ok(Ok(response)) => {
                if replaced.is_none() || gated {
                    out.effects.push(Effect::Subscribe {
                        topic: topic.clone(),
                        gated,
                    });
                }
                self.send_reply(&reply_to, ReplyStatus::Ok, &response, out);
                out.effects.extend(from_join);
                self.joined
                    .insert(topic.clone(), Joined { join_ref, channel });
            }
            Ok(Err(response)) => {
                self.send_reply(&reply_to, ReplyStatus::Error, &response, out);
                if replaced.is_some() {
                    out.effects.push(Effect::Unsubscribe(topic.clone()));
                }
            }
            Err(_) => {
                tracing::error!(topic = %topic, "channel join crashed");
                let response = Payload::json(&serde_json::json!({ "reason": "join crashed" }));
                self.send_reply(&reply_to, ReplyStatus::Error, &response, out);
                if replaced.is_some() {
                    out.effects.push(Effect::Unsubscribe(topic.clone()));
                }
            }
        }
        if let Some(old_ref) = replaced {
            self.control(&topic, &old_ref, event::CLOSE, out);
        }
    }

    fn leave(&mut self, msg: Inbound, out: &mut Outbox<'_>) {
        let (topic, mut joined) = self
            .joined
            .remove_entry(&msg.topic)
            .expect("caller checked the topic is joined");
        // Unsubscribed first: what `terminate` broadcasts (a presence leave) is for the others.
        out.effects.push(Effect::Unsubscribe(topic.clone()));
        self.terminate(&topic, &mut joined, TerminateReason::Leave, out);
        let reply_to = ReplyRef {
            topic: topic.clone(),
            join_ref: joined.join_ref.clone(),
            msg_ref: msg.msg_ref.clone(),
        };
        self.send_reply(&reply_to, ReplyStatus::Ok, &Payload::empty(), out);
        self.control(&topic, &joined.join_ref, event::CLOSE, out);
    }

    fn handle_in(&mut self, msg: Inbound, out: &mut Outbox<'_>) {
        let (topic, mut joined) = self
            .joined
            .remove_entry(&msg.topic)
            .expect("caller checked the topic is joined");
        let event = msg.event.clone();
        let payload = msg.payload.clone();
        let result = self.call(
            &topic,
            &joined.join_ref,
            msg.msg_ref.as_ref(),
            out,
            |ch, ctx| ch.handle_in(ctx, &event, payload),
            &mut joined.channel,
        );
        let reply_to = || ReplyRef {
            topic: topic.clone(),
            join_ref: joined.join_ref.clone(),
            msg_ref: msg.msg_ref.clone(),
        };
        match result {
            Some(HandleIn::Reply(status, payload)) => {
                self.send_reply(&reply_to(), status, &payload, out);
                self.joined.insert(topic, joined);
            }
            Some(HandleIn::NoReply) => {
                self.joined.insert(topic, joined);
            }
            Some(HandleIn::Stop(reply)) => {
                if let Some((status, payload)) = reply {
                    self.send_reply(&reply_to(), status, &payload, out);
                }
                self.stop(topic, joined, TerminateReason::Normal, out);
            }
            None => self.crashed(topic, joined, out),
        }
    }

    /// Delivers a `send_after` / `send_self` message.
    pub fn handle_info(&mut self, info: Info, out: &mut Outbox<'_>) {
        let Some((topic, mut joined)) = self.joined.remove_entry(&info.topic) else {
            return;
        };
        if joined.join_ref != info.join_ref {
            self.joined.insert(topic, joined);
            return;
        }
        let msg = info.msg;
        let result = self.call(
            &topic,
            &joined.join_ref,
            None,
            out,
            |ch, ctx| ch.handle_info(ctx, msg),
            &mut joined.channel,
        );
        match result {
            Some(HandleInfo::Continue) => {
                self.joined.insert(topic, joined);
            }
            Some(HandleInfo::Stop) => self.stop(topic, joined, TerminateReason::Normal, out),
            None => self.crashed(topic, joined, out),
        }
    }

    /// The connection is going away: every channel terminates and unsubscribes.
    pub fn terminate_all(&mut self, out: &mut Outbox<'_>) {
        for (topic, mut joined) in std::mem::take(&mut self.joined) {
            out.effects.push(Effect::Unsubscribe(topic.clone()));
            self.terminate(&topic, &mut joined, TerminateReason::Disconnect, out);
        }
    }

    fn stop(
        &mut self,
        topic: Topic,
        mut joined: Joined,
        reason: TerminateReason,
        out: &mut Outbox<'_>,
    ) {
        out.effects.push(Effect::Unsubscribe(topic.clone()));
        self.terminate(&topic, &mut joined, reason, out);
        self.control(&topic, &joined.join_ref, event::CLOSE, out);
    }

    /// A panic in a callback: the channel is gone (no `terminate`), the client gets `phx_error`
    /// and rejoins by itself; the connection and its other channels live on.
    fn crashed(&mut self, topic: Topic, mut joined: Joined, out: &mut Outbox<'_>) {
        tracing::error!(topic = %topic, conn = self.conn.conn_id, "channel crashed");
        out.effects.push(Effect::Unsubscribe(topic.clone()));
        // Cleanup only (presence entries elsewhere); a second panic is caught and ignored.
        self.terminate(&topic, &mut joined, TerminateReason::Crashed, out);
        self.control(&topic, &joined.join_ref, event::ERROR, out);
    }

    /// Runs the channel's `terminate` (a panic in it is caught and ignored).
    fn terminate(
        &self,
        topic: &Topic,
        joined: &mut Joined,
        reason: TerminateReason,
        out: &mut Outbox<'_>,
    ) {
        self.call(
            topic,
            &joined.join_ref,
            None,
            out,
            |ch, ctx| ch.terminate(ctx, reason),
            &mut joined.channel,
        );
    }

    /// Runs a callback, catching a panic (`None`). Effects of a crashed callback are discarded.
    fn call<R>(
        &self,
        topic: &Topic,
        join_ref: &ByteString,
        msg_ref: Option<&ByteString>,
        out: &mut Outbox<'_>,
        f: impl FnOnce(&mut dyn AnyChannel, CtxParts<'_>) -> R,
        channel: &mut Box<dyn AnyChannel>,
    ) -> Option<R> {
        let before = out.effects.len();
        let parts = CtxParts {
            topic,
            join_ref,
            msg_ref,
            conn: &self.conn,
            out: out.reborrow(),
            hold: None,
        };
        match catch_unwind(AssertUnwindSafe(|| f(channel.as_mut(), parts))) {
            Ok(r) => Some(r),
            Err(_) => {
                out.effects.truncate(before);
                None
            }
        }
    }

    /// `phx_close` / `phx_error`: the join ref in both ref positions, empty payload.
    fn control(&self, topic: &str, join_ref: &str, event: &str, out: &mut Outbox<'_>) {
        let msg = Outgoing::Event {
            join_ref: Some(join_ref),
            msg_ref: Some(join_ref),
            topic,
            event,
            payload: &Payload::empty(),
        };
        if let Ok(frame) = encode(self.conn.serializer, &msg, out.arena) {
            out.effects.push(Effect::Send(frame));
        }
    }

    fn send_reply(
        &self,
        to: &ReplyRef,
        status: ReplyStatus,
        payload: &Payload,
        out: &mut Outbox<'_>,
    ) {
        match encode_reply(self.conn.serializer, to, status, payload, out.arena) {
            Ok(frame) => out.effects.push(Effect::Send(frame)),
            Err(e) => {
                tracing::warn!(topic = %to.topic, error = %e, "reply cannot be encoded");
                let fallback = Payload::json(&serde_json::json!({ "reason": e.to_string() }));
                if let Ok(frame) = encode_reply(
                    self.conn.serializer,
                    to,
                    ReplyStatus::Error,
                    &fallback,
                    out.arena,
                ) {
                    out.effects.push(Effect::Send(frame));
                }
            }
        }
    }

    /// A reply that echoes the client's own refs (heartbeat).
    fn reply_direct(
        &self,
        msg: &Inbound,
        join_ref: Option<&ByteString>,
        status: ReplyStatus,
        payload: &Payload,
        out: &mut Outbox<'_>,
    ) {
        let reply = Outgoing::Reply {
            join_ref: join_ref.map(|r| r.as_ref()),
            msg_ref: msg.msg_ref.as_deref(),
            topic: &msg.topic,
            status: status.as_str(),
            payload,
        };
        if let Ok(frame) = encode(self.conn.serializer, &reply, out.arena) {
            out.effects.push(Effect::Send(frame));
        }
    }

    /// Phoenix's answer to a push on a topic this socket has not joined (or has no route).
    fn unmatched(&self, msg: &Inbound, out: &mut Outbox<'_>) {
        let payload = Payload::raw_json(bytes::Bytes::from_static(
            br#"{"reason":"unmatched topic"}"#,
        ));
        self.reply_direct(msg, None, ReplyStatus::Error, &payload, out);
    }
}
