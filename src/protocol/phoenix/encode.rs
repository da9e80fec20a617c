use super::json::{write_json_opt, write_json_str};
use super::{event, Payload, Serializer};
use crate::protocol::websocket::{encode_frame_with, FrameKind};
use bytes::{BufMut, Bytes, BytesMut};

/// A message from the server, before serialization.
#[derive(Debug, Clone, Copy)]
pub enum Outgoing<'a> {
    /// `phx_reply` to the client message `msg_ref` with `status` (`ok` / `error`).
    Reply {
        /// The join ref of the message replied to.
        join_ref: Option<&'a str>,
        /// The ref of the message replied to.
        msg_ref: Option<&'a str>,
        /// The topic of the message replied to.
        topic: &'a str,
        /// `ok` or `error`.
        status: &'a str,
        /// The `response` of the reply.
        payload: &'a Payload,
    },
    /// Any other event. A push carries the join ref; a broadcast carries no refs; `phx_close`
    /// and `phx_error` carry the join ref in both positions.
    Event {
        /// The channel's join ref (`None` for a broadcast).
        join_ref: Option<&'a str>,
        /// `None`, except for `phx_close` / `phx_error`: the join ref again.
        msg_ref: Option<&'a str>,
        /// The topic the event is on.
        topic: &'a str,
        /// The event name.
        event: &'a str,
        /// The payload, JSON or binary.
        payload: &'a Payload,
    },
}

/// Why a message cannot be encoded for a socket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A binary payload for a socket on serializer V1.
    #[error("serializer V1 cannot carry binary payloads")]
    BinaryNeedsV2,
    /// A binary frame's ref, topic, event or status is over 255 bytes (its length is a `u8`).
    #[error(
        "a ref, topic, event or status longer than 255 bytes cannot be sent in a binary frame"
    )]
    FieldTooLong,
}

/// Encodes `msg` as one complete WebSocket frame (header included), split off the `arena` so the
/// result can be queued to any number of sockets without another copy.
pub fn encode(
    ser: Serializer,
    msg: &Outgoing<'_>,
    arena: &mut BytesMut,
) -> Result<Bytes, EncodeError> {
    let payload = match msg {
        Outgoing::Reply { payload, .. } | Outgoing::Event { payload, .. } => payload,
    };
    match (ser, payload) {
        (Serializer::V1, Payload::Binary(_)) => Err(EncodeError::BinaryNeedsV2),
        (Serializer::V2, Payload::Binary(data)) => encode_v2_binary(msg, data, arena),
        (Serializer::V2, Payload::Json(_)) => {
            Ok(encode_frame_with(arena, FrameKind::Text, |out| {
                write_v2_json(out, msg)
            }))
        }
        (Serializer::V1, Payload::Json(_)) => {
            Ok(encode_frame_with(arena, FrameKind::Text, |out| {
                write_v1_json(out, msg)
            }))
        }
    }
}

fn write_reply_payload(out: &mut BytesMut, status: &str, response: &[u8]) {
    out.extend_from_slice(b"{\"response\":");
    out.extend_from_slice(response);
    out.extend_from_slice(b",\"status\":");
    write_json_str(out, status);
    out.extend_from_slice(b"}");
}

fn write_v2_json(out: &mut BytesMut, msg: &Outgoing<'_>) {
    let (join_ref, msg_ref, topic, event, payload, status) = fields(msg);
    out.extend_from_slice(b"[");
    write_json_opt(out, join_ref);
    out.extend_from_slice(b",");
    write_json_opt(out, msg_ref);
    out.extend_from_slice(b",");
    write_json_str(out, topic);
    out.extend_from_slice(b",");
    write_json_str(out, event);
    out.extend_from_slice(b",");
    match status {
        Some(status) => write_reply_payload(out, status, payload),
        None => out.extend_from_slice(payload),
    }
    out.extend_from_slice(b"]");
}

/// V1 objects carry no join ref; keys in Jason's (sorted) order.
fn write_v1_json(out: &mut BytesMut, msg: &Outgoing<'_>) {
    let (_, msg_ref, topic, event, payload, status) = fields(msg);
    out.extend_from_slice(b"{\"event\":");
    write_json_str(out, event);
    out.extend_from_slice(b",\"payload\":");
    match status {
        Some(status) => write_reply_payload(out, status, payload),
        None => out.extend_from_slice(payload),
    }
    out.extend_from_slice(b",\"ref\":");
    write_json_opt(out, msg_ref);
    out.extend_from_slice(b",\"topic\":");
    write_json_str(out, topic);
    out.extend_from_slice(b"}");
}

type Fields<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    &'a str,
    &'a str,
    &'a [u8],
    Option<&'a str>,
);

fn fields<'a>(msg: &Outgoing<'a>) -> Fields<'a> {
    match *msg {
        Outgoing::Reply {
            join_ref,
            msg_ref,
            topic,
            status,
            payload,
        } => (
            join_ref,
            msg_ref,
            topic,
            event::REPLY,
            payload.as_bytes(),
            Some(status),
        ),
        Outgoing::Event {
            join_ref,
            msg_ref,
            topic,
            event,
            payload,
        } => (join_ref, msg_ref, topic, event, payload.as_bytes(), None),
    }
}

fn len_u8(s: &str) -> Result<u8, EncodeError> {
    u8::try_from(s.len()).map_err(|_| EncodeError::FieldTooLong)
}

/// V2 binary layouts: push `0`, reply `1`, broadcast `2` (see docs/PROTOCOL.md).
fn encode_v2_binary(
    msg: &Outgoing<'_>,
    data: &[u8],
    arena: &mut BytesMut,
) -> Result<Bytes, EncodeError> {
    let mut head: [&str; 4] = [""; 4];
    let (kind, parts): (u8, &[&str]) = match *msg {
        Outgoing::Reply {
            join_ref,
            msg_ref,
            topic,
            status,
            ..
        } => {
            head = [join_ref.unwrap_or(""), msg_ref.unwrap_or(""), topic, status];
            (1, &head[..4])
        }
        Outgoing::Event {
            join_ref: Some(join_ref),
            topic,
            event,
            ..
        } => {
            head[..3].copy_from_slice(&[join_ref, topic, event]);
            (0, &head[..3])
        }
        Outgoing::Event {
            join_ref: None,
            topic,
            event,
            ..
        } => {
            head[..2].copy_from_slice(&[topic, event]);
            (2, &head[..2])
        }
    };
    let mut lens = [0u8; 4];
    for (len, part) in lens.iter_mut().zip(parts) {
        *len = len_u8(part)?;
    }
    Ok(encode_frame_with(arena, FrameKind::Binary, |out| {
        out.put_u8(kind);
        out.extend_from_slice(&lens[..parts.len()]);
        for part in parts {
            out.extend_from_slice(part.as_bytes());
        }
        out.extend_from_slice(data);
    }))
}
