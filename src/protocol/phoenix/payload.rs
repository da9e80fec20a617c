use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};

/// A message payload: JSON text (already validated, kept as the client's bytes so it can be
/// relayed without re-encoding) or raw binary.
#[derive(Clone, PartialEq, Eq)]
pub enum Payload {
    /// JSON text.
    Json(Bytes),
    /// Raw bytes, carried only in serializer V2 binary frames.
    Binary(Bytes),
}

/// Why [`Payload::parse`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The payload is binary.
    #[error("expected a JSON payload, got binary")]
    NotJson,
    /// The JSON does not deserialize into the type asked for.
    #[error("payload does not match the expected shape: {0}")]
    Shape(#[from] serde_json::Error),
}

impl Payload {
    /// `{}`, the payload of most protocol replies.
    pub fn empty() -> Payload {
        Payload::Json(Bytes::from_static(b"{}"))
    }

    /// Serializes `value` as a JSON payload.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Payload {
        Payload::Json(Bytes::from(
            serde_json::to_vec(value).expect("serializing to a Vec cannot fail for plain data"),
        ))
    }

    /// A JSON payload from trusted JSON text (not validated).
    pub fn raw_json(text: impl Into<Bytes>) -> Payload {
        Payload::Json(text.into())
    }

    /// A binary payload (serializer V2 only).
    pub fn binary(data: impl Into<Bytes>) -> Payload {
        Payload::Binary(data.into())
    }

    /// Deserializes a JSON payload.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, PayloadError> {
        match self {
            Payload::Json(text) => Ok(serde_json::from_slice(text)?),
            Payload::Binary(_) => Err(PayloadError::NotJson),
        }
    }

    /// The payload's bytes: the JSON text or the binary data.
    pub fn as_bytes(&self) -> &Bytes {
        match self {
            Payload::Json(b) | Payload::Binary(b) => b,
        }
    }

    /// Whether this is a binary payload.
    pub fn is_binary(&self) -> bool {
        matches!(self, Payload::Binary(_))
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Json(b) => write!(f, "Json({})", String::from_utf8_lossy(b)),
            Payload::Binary(b) => write!(f, "Binary({} bytes)", b.len()),
        }
    }
}
