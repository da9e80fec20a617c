//! `phoenix_subset`: the Phoenix Channels V2 subset of shardcast's built-in `echo:*` channel,
//! shared by the benchmark peers in `perf/peers/`.
//!
//! It holds everything that does not depend on the WebSocket library: the topic registry, the
//! per-connection message handling (JSON and V2 binary pushes) and the encoders for replies and
//! broadcasts. Each peer keeps its own transport (upgrade, reader and writer tasks) and tells
//! this crate, through [`Outbound`], how a text or binary frame is built for its outbound queue.
//!
//! Everything generic is monomorphized in the peer, so a peer pays nothing for the sharing: a
//! reply is still one `String`/`Vec<u8>` turned into the peer's frame type without a copy, and
//! a broadcast is still encoded once and cloned (a refcount bump) into each subscriber's queue.
//!
//! Payloads are kept as raw JSON text (`serde_json::value::RawValue`) and relayed verbatim.

use dashmap::DashMap;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};

/// What a peer's outbound queue carries, and how one is made from an encoded message.
///
/// Both constructors take ownership of the buffer, so they can wrap it without copying.
/// Cloning a frame must be cheap (a refcount bump): a broadcast clones one frame per subscriber.
pub trait Outbound: 'static {
    /// One message waiting in a connection's outbound queue.
    type Frame: Clone + Send + 'static;
    /// A text frame holding `s`.
    fn text(s: String) -> Self::Frame;
    /// A binary frame holding `v`.
    fn binary(v: Vec<u8>) -> Self::Frame;
}

// ---------------------------------------------------------------------------------------------
// Topic registry
// ---------------------------------------------------------------------------------------------

pub type ConnId = u64;

/// How the rest of the server reaches a connection: its outbound queue, and a signal that it
/// fell behind and must be closed.
pub struct Subscriber<O: Outbound> {
    pub tx: mpsc::Sender<O::Frame>,
    pub slow: Arc<Notify>,
}

impl<O: Outbound> Clone for Subscriber<O> {
    fn clone(&self) -> Self {
        Subscriber {
            tx: self.tx.clone(),
            slow: self.slow.clone(),
        }
    }
}

pub struct Registry<O: Outbound> {
    topics: DashMap<String, HashMap<ConnId, Subscriber<O>>>,
    next_id: AtomicU64,
}

impl<O: Outbound> Default for Registry<O> {
    fn default() -> Self {
        Registry {
            topics: DashMap::default(),
            next_id: AtomicU64::new(1),
        }
    }
}

impl<O: Outbound> Registry<O> {
    /// A fresh connection id.
    pub fn next_id(&self) -> ConnId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn subscribe(&self, topic: &str, id: ConnId, sub: Subscriber<O>) {
        self.topics
            .entry(topic.to_owned())
            .or_default()
            .insert(id, sub);
    }

    pub fn unsubscribe(&self, topic: &str, id: ConnId) {
        let now_empty = match self.topics.get_mut(topic) {
            Some(mut subs) => {
                subs.remove(&id);
                subs.is_empty()
            }
            None => false,
        };
        if now_empty {
            self.topics.remove_if(topic, |_, subs| subs.is_empty());
        }
    }

    /// Queues `msg` (already encoded; cloning it only bumps a refcount) for every subscriber.
    pub fn broadcast(&self, topic: &str, msg: &O::Frame) {
        let Some(subs) = self.topics.get(topic) else {
            return;
        };
        for sub in subs.values() {
            match sub.tx.try_send(msg.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => sub.slow.notify_one(),
                // The connection is going away; its own task unsubscribes it.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------------------------

/// A V2 JSON message `[join_ref, ref, topic, event, payload]`. Refs stay raw JSON text (they
/// are echoed back verbatim); strings borrow from the frame unless they contain escapes.
#[derive(Deserialize)]
struct JsonPush<'a>(
    #[serde(borrow)] Option<&'a RawValue>,
    #[serde(borrow)] Option<&'a RawValue>,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] &'a RawValue,
);

const EMPTY: &str = "{}";
const UNMATCHED: &str = r#"{"reason":"unmatched topic"}"#;
const UNKNOWN_EVENT: &str = r#"{"reason":"unknown event"}"#;

/// One connection's protocol state: the topics it joined and its own outbound queue.
pub struct Conn<O: Outbound> {
    id: ConnId,
    registry: Arc<Registry<O>>,
    me: Subscriber<O>,
    joined: HashSet<String>,
}

impl<O: Outbound> Conn<O> {
    /// `tx` is the connection's outbound queue; `slow` is notified when a broadcast finds
    /// that queue full (the writer then closes the socket with 1013).
    pub fn new(
        id: ConnId,
        registry: Arc<Registry<O>>,
        tx: mpsc::Sender<O::Frame>,
        slow: Arc<Notify>,
    ) -> Self {
        Conn {
            id,
            registry,
            me: Subscriber { tx, slow },
            joined: HashSet::new(),
        }
    }

    /// This connection's outbound queue.
    pub fn tx(&self) -> &mpsc::Sender<O::Frame> {
        &self.me.tx
    }

    /// Queues a message for this connection's own socket; false once the writer is gone.
    /// Awaiting here is the natural backpressure: we stop reading while our writer is behind.
    async fn send(&self, msg: O::Frame) -> bool {
        self.me.tx.send(msg).await.is_ok()
    }

    /// Queues a `phx_reply` (see [`json_reply`]).
    async fn reply(
        &self,
        join_ref: Option<&str>,
        msg_ref: Option<&str>,
        topic: &str,
        status: &str,
        response: &str,
    ) -> bool {
        self.send(O::text(json_reply(
            join_ref, msg_ref, topic, status, response,
        )))
        .await
    }

    /// Unsubscribes from every joined topic.
    pub fn leave_all(&mut self) {
        for topic in self.joined.drain() {
            self.registry.unsubscribe(&topic, self.id);
        }
    }

    /// Handles one text message; false when the socket must be closed.
    pub async fn on_text(&mut self, text: &str) -> bool {
        // Phoenix closes the socket on a frame that is not a message; so do we.
        let Ok(JsonPush(join_ref, msg_ref, topic, event, payload)) = serde_json::from_str(text)
        else {
            return false;
        };
        let jr = join_ref.map(RawValue::get);
        let r = msg_ref.map(RawValue::get);
        let (topic, event) = (topic.as_ref(), event.as_ref());

        if topic == "phoenix" {
            let status = if event == "heartbeat" { "ok" } else { "error" };
            let response = if event == "heartbeat" {
                EMPTY
            } else {
                UNKNOWN_EVENT
            };
            return self.reply(None, r, topic, status, response).await;
        }
        match event {
            "phx_join" => {
                if !topic.starts_with("echo:") {
                    return self.reply(None, r, topic, "error", UNMATCHED).await;
                }
                if self.joined.insert(topic.to_owned()) {
                    self.registry.subscribe(topic, self.id, self.me.clone());
                }
                self.reply(jr, r, topic, "ok", EMPTY).await
            }
            _ if !self.joined.contains(topic) => {
                self.reply(None, r, topic, "error", UNMATCHED).await
            }
            "echo" => self.reply(jr, r, topic, "ok", payload.get()).await,
            "broadcast" => {
                let mut out = String::with_capacity(40 + topic.len() + payload.get().len());
                out.push_str("[null,null,");
                push_json_str(&mut out, topic);
                out.push_str(",\"broadcast\",");
                out.push_str(payload.get());
                out.push(']');
                self.registry.broadcast(topic, &O::text(out));
                self.reply(jr, r, topic, "ok", EMPTY).await
            }
            "phx_leave" => {
                self.joined.remove(topic);
                self.registry.unsubscribe(topic, self.id);
                if !self.reply(jr, r, topic, "ok", EMPTY).await {
                    return false;
                }
                // As Phoenix does: phx_close with the join ref in both ref positions.
                let mut out = String::with_capacity(48 + topic.len());
                out.push('[');
                out.push_str(jr.unwrap_or("null"));
                out.push(',');
                out.push_str(jr.unwrap_or("null"));
                out.push(',');
                push_json_str(&mut out, topic);
                out.push_str(",\"phx_close\",{}]");
                self.send(O::text(out)).await
            }
            _ => self.reply(jr, r, topic, "error", UNKNOWN_EVENT).await,
        }
    }

    /// Handles one binary message, a V2 binary client push:
    /// `0, len(join_ref), len(ref), len(topic), len(event), join_ref, ref, topic, event, payload`.
    /// False when the socket must be closed.
    pub async fn on_binary(&mut self, frame: &[u8]) -> bool {
        let Some(push) = BinaryPush::parse(frame) else {
            return false;
        };
        // JSON text of the refs, for JSON replies (an empty ref is null, as in Phoenix).
        let jr = (!push.join_ref.is_empty()).then(|| json_str(push.join_ref));
        let r = (!push.msg_ref.is_empty()).then(|| json_str(push.msg_ref));
        let topic = push.topic;

        if !self.joined.contains(topic) {
            return self
                .reply(None, r.as_deref(), topic, "error", UNMATCHED)
                .await;
        }
        match push.event {
            "echo" => {
                // 1, len(join_ref), len(ref), len(topic), len(status), join_ref, ref, topic,
                // status, payload
                let mut out = Vec::with_capacity(
                    7 + push.join_ref.len() + push.msg_ref.len() + topic.len() + push.payload.len(),
                );
                out.extend_from_slice(&[
                    1,
                    push.join_ref.len() as u8,
                    push.msg_ref.len() as u8,
                    topic.len() as u8,
                    2,
                ]);
                out.extend_from_slice(push.join_ref.as_bytes());
                out.extend_from_slice(push.msg_ref.as_bytes());
                out.extend_from_slice(topic.as_bytes());
                out.extend_from_slice(b"ok");
                out.extend_from_slice(push.payload);
                self.send(O::binary(out)).await
            }
            "broadcast" => {
                // 2, len(topic), len(event), topic, event, payload
                const EVENT: &str = "broadcast";
                let mut out =
                    Vec::with_capacity(3 + topic.len() + EVENT.len() + push.payload.len());
                out.extend_from_slice(&[2, topic.len() as u8, EVENT.len() as u8]);
                out.extend_from_slice(topic.as_bytes());
                out.extend_from_slice(EVENT.as_bytes());
                out.extend_from_slice(push.payload);
                self.registry.broadcast(topic, &O::binary(out));
                self.reply(jr.as_deref(), r.as_deref(), topic, "ok", EMPTY)
                    .await
            }
            _ => {
                self.reply(jr.as_deref(), r.as_deref(), topic, "error", UNKNOWN_EVENT)
                    .await
            }
        }
    }
}

struct BinaryPush<'a> {
    join_ref: &'a str,
    msg_ref: &'a str,
    topic: &'a str,
    event: &'a str,
    payload: &'a [u8],
}

impl<'a> BinaryPush<'a> {
    #[inline]
    fn parse(frame: &'a [u8]) -> Option<BinaryPush<'a>> {
        let header = frame.get(..5)?;
        if header[0] != 0 {
            return None;
        }
        let mut at = 5;
        let mut field = |len: u8| -> Option<&'a str> {
            let bytes = frame.get(at..at + usize::from(len))?;
            at += usize::from(len);
            std::str::from_utf8(bytes).ok()
        };
        let join_ref = field(header[1])?;
        let msg_ref = field(header[2])?;
        let topic = field(header[3])?;
        let event = field(header[4])?;
        Some(BinaryPush {
            join_ref,
            msg_ref,
            topic,
            event,
            payload: &frame[at..],
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding helpers
// ---------------------------------------------------------------------------------------------

/// `[join_ref, ref, topic, "phx_reply", {"response": response, "status": status}]`; the refs
/// and `response` are JSON text.
#[inline]
fn json_reply(
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    status: &str,
    response: &str,
) -> String {
    let jr = join_ref.unwrap_or("null");
    let r = msg_ref.unwrap_or("null");
    let mut out = String::with_capacity(56 + jr.len() + r.len() + topic.len() + response.len());
    out.push('[');
    out.push_str(jr);
    out.push(',');
    out.push_str(r);
    out.push(',');
    push_json_str(&mut out, topic);
    out.push_str(",\"phx_reply\",{\"response\":");
    out.push_str(response);
    out.push_str(",\"status\":\"");
    out.push_str(status);
    out.push_str("\"}]");
    out
}

/// Appends `s` as a JSON string (plain names are copied as they are).
#[inline]
fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).expect("a str always encodes"));
    }
}

#[inline]
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_json_str(&mut out, s);
    out
}
