//! One published message, encoded once and shared by every subscriber on every shard, and the
//! delivery policy subscribers that are behind apply to it.

use super::{ConnId, Payload, Topic};
use crate::protocol::deflate::{deflate_frame, Agreed, Params};
use crate::protocol::phoenix::{encode, ByteString, Outgoing, Serializer};
use bytes::{Bytes, BytesMut};
use std::sync::OnceLock;

/// How a queued frame may be treated when the subscriber is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued in order; never dropped (the connection is closed as a slow consumer instead).
    Reliable,
    /// Latest value wins among frames with the same key (game state).
    Latest(u64),
    /// At most `max` frames with this key wait in the queue; a new one drops the oldest
    /// (bounded, lossy streams such as one sender's audio).
    Budget {
        /// Frames with the same key share the budget.
        key: u64,
        /// Frames of this key that may wait.
        max: u16,
    },
}

/// One published message, shared by all shards.
pub struct Broadcast {
    /// The topic published to.
    pub topic: Topic,
    /// The event name.
    pub event: ByteString,
    /// The payload, kept for the V1 encoding and for tests.
    pub payload: Payload,
    /// The publishing connection, for `broadcast_from`.
    pub exclude: Option<ConnId>,
    /// How each subscriber's queue treats this frame when the subscriber is behind.
    pub delivery: Delivery,
    /// The V2 frame, encoded by the publisher (`None` if it cannot be: a field over 255 bytes
    /// in a binary frame).
    v2: Option<Bytes>,
    /// The V1 frame, encoded by the first shard that has a V1 subscriber.
    v1: OnceLock<Option<Bytes>>,
    /// The permessage-deflate forms, per protocol version (`[V2, V1]`) and window (9..=15 bits),
    /// compressed by the first shard that has such a subscriber and shared by all of them.
    deflated: [[OnceLock<Option<Bytes>>; 7]; 2],
}

impl Broadcast {
    /// Encodes the V2 frame at once into `arena` (frames split off it share its chunk).
    pub fn new(
        topic: Topic,
        event: ByteString,
        payload: Payload,
        exclude: Option<ConnId>,
        arena: &mut BytesMut,
    ) -> Broadcast {
        let v2 = encode(Serializer::V2, &outgoing(&topic, &event, &payload), arena).ok();
        Broadcast {
            topic,
            event,
            payload,
            exclude,
            delivery: Delivery::Reliable,
            v2,
            v1: OnceLock::new(),
            deflated: Default::default(),
        }
    }

    /// Sets the delivery policy (latest-value for state, a per-sender budget for audio).
    pub fn with_delivery(mut self, delivery: Delivery) -> Broadcast {
        self.delivery = delivery;
        self
    }

    /// The frame for a subscriber speaking `ser`, or `None` if this message cannot be expressed
    /// in it (binary payloads for V1 clients).
    pub fn frame_for(&self, ser: Serializer) -> Option<&Bytes> {
        match ser {
            Serializer::V2 => self.v2.as_ref(),
            Serializer::V1 => self
                .v1
                .get_or_init(|| {
                    encode(
                        Serializer::V1,
                        &outgoing(&self.topic, &self.event, &self.payload),
                        &mut BytesMut::new(),
                    )
                    .ok()
                })
                .as_ref(),
        }
    }
}

impl Broadcast {
    /// The frame for a subscriber speaking `ser` that negotiated permessage-deflate as
    /// `agreed`: compressed when that pays, else the plain frame. The compression (or the finding
    /// that it does not pay) happens once per protocol version and window for every such
    /// subscriber, on every shard (another shard asking meanwhile waits for it: microseconds);
    /// the bool says whether this call compressed it.
    pub fn deflated_frame_for(
        &self,
        ser: Serializer,
        agreed: Agreed,
        params: &Params,
    ) -> (Option<Bytes>, bool) {
        let Some(plain) = self.frame_for(ser) else {
            return (None, false);
        };
        let bits = agreed.server_window_bits.clamp(9, 15);
        let slot = &self.deflated[usize::from(ser == Serializer::V1)][usize::from(bits - 9)];
        let mut compressed_now = false;
        let packed = slot.get_or_init(|| {
            compressed_now = true;
            deflate_frame(plain, params, bits)
        });
        let frame = packed.as_ref().unwrap_or(plain).clone();
        (Some(frame), compressed_now && packed.is_some())
    }
}

impl std::fmt::Debug for Broadcast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broadcast")
            .field("topic", &self.topic)
            .field("event", &self.event)
            .field("exclude", &self.exclude)
            .field("delivery", &self.delivery)
            .finish()
    }
}

fn outgoing<'a>(topic: &'a str, event: &'a str, payload: &'a Payload) -> Outgoing<'a> {
    Outgoing::Event {
        join_ref: None,
        msg_ref: None,
        topic,
        event,
        payload,
    }
}
