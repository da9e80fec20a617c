use super::{ByteString, Inbound, Payload, Serializer};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// Why a client frame is not a Phoenix message. Phoenix closes the socket (1011) on these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A text frame that is not a message in the serializer's JSON shape (the parser's message).
    #[error("invalid JSON message: {0}")]
    Json(String),
    /// A `join_ref` or `ref` that is not a string, a number or null.
    #[error("a ref must be a string, a number or null")]
    BadRef,
    /// A binary frame on a socket that negotiated serializer V1.
    #[error("binary frames need serializer V2")]
    BinaryNeedsV2,
    /// A binary message shorter than its header, or whose field lengths run past its end.
    #[error("binary message too short or lengths out of range")]
    BinaryTruncated,
    /// A binary message whose kind byte is not a push (`0`).
    #[error("binary message kind {0} is not a client push")]
    BinaryKind(u8),
    /// A binary message's topic, event or ref is not valid UTF-8.
    #[error("a field of the binary message is not UTF-8")]
    BinaryUtf8,
}

/// Decodes a text frame (whose bytes are valid UTF-8) in the socket's serializer.
pub fn decode_text(ser: Serializer, frame: &Bytes) -> Result<Inbound, DecodeError> {
    match ser {
        Serializer::V2 => decode_v2_json(frame),
        Serializer::V1 => decode_v1_json(frame),
    }
}

fn decode_v2_json(frame: &Bytes) -> Result<Inbound, DecodeError> {
    type V2<'a> = (
        Option<&'a RawValue>,
        Option<&'a RawValue>,
        Cow<'a, str>,
        Cow<'a, str>,
        &'a RawValue,
    );
    let (join_ref, msg_ref, topic, event, payload): V2 =
        serde_json::from_slice(frame).map_err(|e| DecodeError::Json(e.to_string()))?;
    Ok(Inbound {
        join_ref: decode_ref(frame, join_ref)?,
        msg_ref: decode_ref(frame, msg_ref)?,
        topic: share_str(frame, topic),
        event: share_str(frame, event),
        payload: Payload::Json(frame.slice_ref(payload.get().as_bytes())),
    })
}

fn decode_v1_json(frame: &Bytes) -> Result<Inbound, DecodeError> {
    #[derive(Deserialize)]
    struct V1<'a> {
        #[serde(borrow)]
        topic: Cow<'a, str>,
        #[serde(borrow)]
        event: Cow<'a, str>,
        #[serde(borrow)]
        payload: &'a RawValue,
        #[serde(borrow, rename = "ref", default)]
        msg_ref: Option<&'a RawValue>,
        #[serde(borrow, default)]
        join_ref: Option<&'a RawValue>,
    }
    let m: V1 = serde_json::from_slice(frame).map_err(|e| DecodeError::Json(e.to_string()))?;
    Ok(Inbound {
        join_ref: decode_ref(frame, m.join_ref)?,
        msg_ref: decode_ref(frame, m.msg_ref)?,
        topic: share_str(frame, m.topic),
        event: share_str(frame, m.event),
        payload: Payload::Json(frame.slice_ref(m.payload.get().as_bytes())),
    })
}

/// A string that borrows from the frame stays a slice of it; one that had escapes is owned.
fn share_str(frame: &Bytes, s: Cow<'_, str>) -> ByteString {
    match s {
        Cow::Borrowed(b) => {
            ByteString::try_from(frame.slice_ref(b.as_bytes())).expect("slice of a &str is UTF-8")
        }
        Cow::Owned(o) => ByteString::from(o),
    }
}

/// Refs are strings in every Phoenix client; numbers are accepted and kept as their text.
fn decode_ref(frame: &Bytes, raw: Option<&RawValue>) -> Result<Option<ByteString>, DecodeError> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => {
            let s: Cow<'_, str> = serde_json::from_str(text).map_err(|_| DecodeError::BadRef)?;
            Ok(Some(match s {
                Cow::Borrowed(b) => {
                    // `b` borrows from `text`, which is a slice of `frame`.
                    ByteString::try_from(frame.slice_ref(b.as_bytes()))
                        .map_err(|_| DecodeError::BadRef)?
                }
                Cow::Owned(o) => ByteString::from(o),
            }))
        }
        Some(b'-' | b'0'..=b'9') => Ok(Some(share_str(frame, Cow::Borrowed(text)))),
        Some(b'n') => Ok(None),
        _ => Err(DecodeError::BadRef),
    }
}

/// Decodes a V2 binary client push:
/// `0, len(join_ref), len(ref), len(topic), len(event), join_ref, ref, topic, event, payload`.
pub fn decode_binary(ser: Serializer, frame: &Bytes) -> Result<Inbound, DecodeError> {
    if ser != Serializer::V2 {
        return Err(DecodeError::BinaryNeedsV2);
    }
    let header = frame.get(..5).ok_or(DecodeError::BinaryTruncated)?;
    if header[0] != 0 {
        return Err(DecodeError::BinaryKind(header[0]));
    }
    let lens = [header[1], header[2], header[3], header[4]].map(usize::from);
    let mut at = 5;
    let mut field = |len: usize| -> Result<ByteString, DecodeError> {
        let bytes = frame
            .get(at..at + len)
            .ok_or(DecodeError::BinaryTruncated)?;
        let s =
            ByteString::try_from(frame.slice_ref(bytes)).map_err(|_| DecodeError::BinaryUtf8)?;
        at += len;
        Ok(s)
    };
    let join_ref = field(lens[0])?;
    let msg_ref = field(lens[1])?;
    let topic = field(lens[2])?;
    let event = field(lens[3])?;
    let non_empty = |s: ByteString| if s.is_empty() { None } else { Some(s) };
    Ok(Inbound {
        join_ref: non_empty(join_ref),
        msg_ref: non_empty(msg_ref),
        topic,
        event,
        payload: Payload::Binary(frame.slice(at..)),
    })
}
