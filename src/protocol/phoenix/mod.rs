//! The Phoenix Channels wire protocol: message model, serializer V2 (JSON arrays and binary
//! frames, `vsn=2.0.0`) and V1 (JSON objects, `vsn=1.0.0`). Pure codecs; see
//! `docs/PROTOCOL.md` for the frame layouts.

mod decode;
mod encode;
mod json;
mod payload;

pub use bytestring::ByteString;
pub use decode::{decode_binary, decode_text, DecodeError};
pub use encode::{encode, EncodeError, Outgoing};
pub use json::write_json_str;
pub use payload::{Payload, PayloadError};

/// Protocol events with a meaning to the socket itself.
pub mod event {
    /// Client → server: join a topic.
    pub const JOIN: &str = "phx_join";
    /// Client → server: leave a topic.
    pub const LEAVE: &str = "phx_leave";
    /// Server → client: the reply to a client message.
    pub const REPLY: &str = "phx_reply";
    /// Server → client: the channel instance is closed (left, stopped or replaced by a rejoin).
    pub const CLOSE: &str = "phx_close";
    /// Server → client: the channel crashed; the client may rejoin.
    pub const ERROR: &str = "phx_error";
    /// Client → server keep-alive on [`HEARTBEAT_TOPIC`], answered with an ok reply.
    pub const HEARTBEAT: &str = "heartbeat";
    /// The topic heartbeats are sent on.
    pub const HEARTBEAT_TOPIC: &str = "phoenix";
}

/// Which serializer a socket negotiated with its `vsn` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Serializer {
    /// `vsn=1.0.0` (and the default when `vsn` is absent, as in Phoenix): JSON objects, no binary.
    V1,
    /// `vsn=2.0.0`: JSON arrays plus binary frames.
    V2,
}

impl Serializer {
    /// Maps the `vsn` parameter; unknown versions are refused.
    pub fn from_vsn(vsn: Option<&str>) -> Option<Serializer> {
        match vsn {
            None | Some("1.0.0") => Some(Serializer::V1),
            Some("2.0.0") => Some(Serializer::V2),
            Some(_) => None,
        }
    }
}

/// A message from the client: `[join_ref, ref, topic, event, payload]`. The strings and the
/// payload are slices of the received frame (copied only when the JSON string had escapes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The ref of the join this message belongs to (the join's own ref on `phx_join`).
    pub join_ref: Option<ByteString>,
    /// The message's own ref, echoed in its reply.
    pub msg_ref: Option<ByteString>,
    /// The topic the message is for.
    pub topic: ByteString,
    /// The event name, e.g. `phx_join` or a channel's own.
    pub event: ByteString,
    /// The payload, JSON or binary.
    pub payload: Payload,
}

#[cfg(test)]
mod tests;
