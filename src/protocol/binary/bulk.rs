//! Compressed bulk updates: `compressed_data` is exactly one zstd frame whose content is the JSON
//! document `{"type": "bulk_update", "updates": [...]}`.
//!
//! Decompression is bounded: the input size is checked, a frame that declares a content size
//! over the limit is refused before anything is allocated, the decoder's window is capped at the
//! limit (`windowLogMax`), and the output buffer grows in steps that never pass the limit, so a
//! "zstd bomb" costs at most the limit, whatever its header claims.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
#[cfg(feature = "bulk")]
use zstd::zstd_safe::{self, DCtx, DParameter, InBuffer, OutBuffer};

/// The zstd frame magic number (little-endian on the wire).
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The only document `type` accepted.
pub const BULK_UPDATE_TYPE: &str = "bulk_update";

/// Limits of one bulk update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkLimits {
    /// Largest compressed input (the zstd frame), in bytes.
    pub max_compressed: usize,
    /// Largest decompressed content, in bytes.
    pub max_decompressed: usize,
    /// Elements of `updates` at most.
    pub max_updates: usize,
}

impl Default for BulkLimits {
    fn default() -> Self {
        BulkLimits {
            max_compressed: 1 << 20,
            max_decompressed: 16 << 20,
            max_updates: 100_000,
        }
    }
}

/// Why a `compressed_data` payload was refused, or a document could not be compressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BulkError {
    /// The compressed input is `len` bytes, over the limit of `max`.
    #[error("compressed data of {len} bytes, more than the limit of {max}")]
    CompressedTooLarge {
        /// The input's size, in bytes.
        len: usize,
        /// [`BulkLimits::max_compressed`].
        max: usize,
    },
    /// The input does not start with [`ZSTD_MAGIC`].
    #[error("not a zstd frame")]
    NotZstd,
    /// zstd cannot read the frame header.
    #[error("the zstd frame header is invalid")]
    BadHeader,
    /// The frame header declares `declared` content bytes, over the limit of `max`.
    #[error("the frame declares {declared} bytes of content, more than the limit of {max}")]
    DeclaredTooLarge {
        /// The content size the frame header declares, in bytes.
        declared: u64,
        /// [`BulkLimits::max_decompressed`].
        max: usize,
    },
    /// The content (or the frame's window) is over the limit of `max` bytes.
    #[error("the content is larger than the limit of {max} bytes")]
    DecompressedTooLarge {
        /// [`BulkLimits::max_decompressed`].
        max: usize,
    },
    /// The decoder failed on the frame (the reason is zstd's error name).
    #[error("the zstd frame is corrupt: {0}")]
    Corrupt(&'static str),
    /// The input ends before the frame does.
    #[error("the zstd frame is truncated")]
    Truncated,
    /// `extra` bytes follow the end of the one frame accepted.
    #[error("{extra} bytes after the zstd frame")]
    TrailingData {
        /// Bytes after the frame.
        extra: usize,
    },
    /// The content is not a bulk update document: bad JSON or a missing field (says which).
    #[error("the content is not a bulk update document: {0}")]
    Json(String),
    /// The document's `type` is not [`BULK_UPDATE_TYPE`].
    #[error("unknown document type (expected \"bulk_update\")")]
    UnknownType,
    /// `updates` has more than `max` elements.
    #[error("more than {max} updates")]
    TooManyUpdates {
        /// [`BulkLimits::max_updates`].
        max: usize,
    },
    /// [`compress`] failed (the reason is zstd's error name).
    #[error("compression failed: {0}")]
    Compress(&'static str),
}

impl BulkError {
    /// A stable machine-readable reason.
    pub fn code(&self) -> &'static str {
        use BulkError::*;
        match self {
            CompressedTooLarge { .. }
            | DeclaredTooLarge { .. }
            | DecompressedTooLarge { .. }
            | TooManyUpdates { .. } => "too_large",
            NotZstd | BadHeader | Corrupt(_) | Truncated | TrailingData { .. } => {
                "invalid_compression"
            }
            Json(_) => "invalid_document",
            UnknownType => "unknown_type",
            Compress(_) => "internal_error",
        }
    }
}

#[cfg(feature = "bulk")]
/// Smallest `windowLogMax` zstd accepts.
const MIN_WINDOW_LOG: u32 = 10;
#[cfg(feature = "bulk")]
/// Largest window zstd supports on 64-bit targets.
const MAX_WINDOW_LOG: u32 = 31;
#[cfg(feature = "bulk")]
/// First output allocation when the frame does not declare its size.
const INITIAL_OUTPUT: usize = 64 * 1024;

#[cfg(feature = "bulk")]
/// The window log that lets frames of up to `max` content bytes decode, and no larger window.
fn window_log_max(max: usize) -> u32 {
    let log = usize::BITS - max.saturating_sub(1).leading_zeros();
    log.clamp(MIN_WINDOW_LOG, MAX_WINDOW_LOG)
}

#[cfg(feature = "bulk")]
/// Decompresses exactly one zstd frame of at most `limits.max_decompressed` content bytes.
pub fn decompress_bounded(src: &[u8], limits: &BulkLimits) -> Result<Vec<u8>, BulkError> {
    let max = limits.max_decompressed;
    if src.len() > limits.max_compressed {
        return Err(BulkError::CompressedTooLarge {
            len: src.len(),
            max: limits.max_compressed,
        });
    }
    if src.get(..4) != Some(&ZSTD_MAGIC[..]) {
        return Err(BulkError::NotZstd);
    }
    let declared = zstd_safe::get_frame_content_size(src).map_err(|_| BulkError::BadHeader)?;
    if let Some(declared) = declared {
        if declared > max as u64 {
            return Err(BulkError::DeclaredTooLarge { declared, max });
        }
    }
    let mut dctx = DCtx::try_create().ok_or(BulkError::Corrupt("out of memory"))?;
    dctx.set_parameter(DParameter::WindowLogMax(window_log_max(max)))
        .map_err(|code| BulkError::Corrupt(zstd_safe::get_error_name(code)))?;

    // A declared size is an upper bound the decoder enforces itself (content that disagrees with
    // it is corrupt), so the buffer is allocated once. Otherwise it grows, never past `max`.
    let first = match declared {
        Some(n) => n as usize,
        None => INITIAL_OUTPUT.min(max),
    };
    let mut out: Vec<u8> = Vec::new();
    out.try_reserve_exact(first)
        .map_err(|_| BulkError::DecompressedTooLarge { max })?;
    let mut input = InBuffer::around(src);
    loop {
        if out.len() == out.capacity() {
            if out.capacity() >= max {
                // Full at the limit: any further byte of content is one too many.
                return match more_output(&mut dctx, &mut input) {
                    Ok(false) => finish(&input, src, out),
                    Ok(true) => Err(BulkError::DecompressedTooLarge { max }),
                    Err(e) => Err(e),
                };
            }
            let grow = out.capacity().max(INITIAL_OUTPUT).min(max - out.capacity());
            out.try_reserve_exact(grow)
                .map_err(|_| BulkError::DecompressedTooLarge { max })?;
        }
        let before_in = input.pos();
        let before_out = out.len();
        let pos = out.len();
        let hint = {
            let mut output = OutBuffer::around_pos(&mut out, pos);
            dctx.decompress_stream(&mut output, &mut input)
                .map_err(|code| corrupt_or_window(code, max))?
        };
        if hint == 0 {
            return finish(&input, src, out);
        }
        let progressed = input.pos() != before_in || out.len() != before_out;
        if !progressed && input.pos() == src.len() {
            return Err(BulkError::Truncated);
        }
    }
}

#[cfg(feature = "bulk")]
/// Whether the frame has content left past a full output buffer (asks for one byte, on the stack).
fn more_output(dctx: &mut DCtx<'_>, input: &mut InBuffer<'_>) -> Result<bool, BulkError> {
    let mut probe = [0u8; 1];
    loop {
        let before_in = input.pos();
        let mut output = OutBuffer::around(&mut probe[..]);
        let hint = dctx
            .decompress_stream(&mut output, input)
            .map_err(|code| BulkError::Corrupt(zstd_safe::get_error_name(code)))?;
        if output.pos() > 0 {
            return Ok(true);
        }
        if hint == 0 {
            return Ok(false);
        }
        if input.pos() == before_in {
            return Err(BulkError::Truncated);
        }
    }
}

#[cfg(feature = "bulk")]
fn corrupt_or_window(code: usize, max: usize) -> BulkError {
    let name = zstd_safe::get_error_name(code);
    if name.contains("too much memory") || name.contains("window") {
        // The frame's window is larger than the content limit allows.
        BulkError::DecompressedTooLarge { max }
    } else {
        BulkError::Corrupt(name)
    }
}

#[cfg(feature = "bulk")]
fn finish(input: &InBuffer<'_>, src: &[u8], out: Vec<u8>) -> Result<Vec<u8>, BulkError> {
    match src.len() - input.pos() {
        0 => Ok(out),
        extra => Err(BulkError::TrailingData { extra }),
    }
}

#[cfg(feature = "bulk")]
/// Compresses `content` as one zstd frame (with its content size) at `level`.
pub fn compress(content: &[u8], level: i32) -> Result<Vec<u8>, BulkError> {
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(content.len()));
    zstd_safe::compress(&mut out, content, level)
        .map_err(|code| BulkError::Compress(zstd_safe::get_error_name(code)))?;
    Ok(out)
}

/// A validated bulk update document: its `updates` are slices of the document's JSON text.
#[derive(Debug)]
pub struct BulkUpdate<'a> {
    /// Each element of `updates`, as raw JSON, in order.
    pub updates: Vec<&'a RawValue>,
}

/// Reads the document's top-level object: `type`, `updates` (refused past `max_updates` while
/// it is read, so memory stays proportional to the limit, not to the input), other fields skipped.
struct DocumentSeed {
    max_updates: usize,
}

struct Document<'a> {
    kind: Option<Cow<'a, str>>,
    updates: Option<Vec<&'a RawValue>>,
}

const TOO_MANY: &str = "too many updates";

impl<'de> DeserializeSeed<'de> for DocumentSeed {
    type Value = Document<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Document<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DocumentSeed {
    type Value = Document<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object {\"type\": \"bulk_update\", \"updates\": [...]}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document<'de>, A::Error> {
        let mut doc = Document {
            kind: None,
            updates: None,
        };
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match &*key {
                "type" if doc.kind.is_some() => return Err(de::Error::duplicate_field("type")),
                "type" => doc.kind = Some(map.next_value::<Cow<'de, str>>()?),
                "updates" if doc.updates.is_some() => {
                    return Err(de::Error::duplicate_field("updates"))
                }
                "updates" => {
                    doc.updates = Some(map.next_value_seed(UpdatesSeed {
                        max: self.max_updates,
                    })?)
                }
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(doc)
    }
}

struct UpdatesSeed {
    max: usize,
}

impl<'de> DeserializeSeed<'de> for UpdatesSeed {
    type Value = Vec<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for UpdatesSeed {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of updates")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024).min(self.max));
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            if items.len() == self.max {
                return Err(de::Error::custom(TOO_MANY));
            }
            items.push(item);
        }
        Ok(items)
    }
}

/// Validates a decompressed document: JSON `{"type": "bulk_update", "updates": [...]}` with at
/// most `max_updates` updates (other top-level fields are ignored).
pub fn parse_bulk_update(doc: &[u8], max_updates: usize) -> Result<BulkUpdate<'_>, BulkError> {
    let mut de = serde_json::Deserializer::from_slice(doc);
    let parsed = DocumentSeed { max_updates }
        .deserialize(&mut de)
        .and_then(|d| de.end().map(|()| d))
        .map_err(|e| {
            if e.to_string().starts_with(TOO_MANY) {
                BulkError::TooManyUpdates { max: max_updates }
            } else {
                BulkError::Json(e.to_string())
            }
        })?;
    let kind = parsed
        .kind
        .ok_or_else(|| BulkError::Json("missing field `type`".into()))?;
    let updates = parsed
        .updates
        .ok_or_else(|| BulkError::Json("missing field `updates`".into()))?;
    if kind != BULK_UPDATE_TYPE {
        return Err(BulkError::UnknownType);
    }
    Ok(BulkUpdate { updates })
}

/// The JSON text of a bulk update document with these updates.
pub fn encode_document<T: serde::Serialize>(updates: &[T]) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Doc<'a, T> {
        #[serde(rename = "type")]
        kind: &'static str,
        updates: &'a [T],
    }
    serde_json::to_vec(&Doc {
        kind: BULK_UPDATE_TYPE,
        updates,
    })
    .expect("serializing plain data to a Vec cannot fail")
}

#[cfg(feature = "bulk")]
/// A `compressed_data` payload: `updates` as a document, compressed at `level`.
pub fn encode_compressed<T: serde::Serialize>(
    updates: &[T],
    level: i32,
) -> Result<Vec<u8>, BulkError> {
    compress(&encode_document(updates), level)
}

#[cfg(feature = "bulk")]
#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(max_decompressed: usize) -> BulkLimits {
        BulkLimits {
            max_compressed: 1 << 20,
            max_decompressed,
            max_updates: 100,
        }
    }

    /// A frame built by hand: RLE blocks of `block` bytes each, `blocks` of them, with or without
    /// a content size in the header. Decompresses to `block * blocks` zero bytes.
    pub(crate) fn rle_bomb(blocks: usize, block: u32, declare: bool) -> Vec<u8> {
        let mut f = ZSTD_MAGIC.to_vec();
        let total = u64::from(block) * blocks as u64;
        if declare {
            f.push(0b1100_0000); // FCS field 8 bytes, not single segment
            f.push(0x38); // window descriptor: 2^17 (128 KiB), the largest block
            f.extend_from_slice(&total.to_le_bytes());
        } else {
            f.push(0x00); // no FCS, not single segment
            f.push(0x38); // window descriptor: exponent 7 -> 2^17 (128 KiB)
        }
        for i in 0..blocks {
            let last = u32::from(i + 1 == blocks);
            let header = last | (1 << 1) | (block << 3); // type 1 = RLE
            f.extend_from_slice(&header.to_le_bytes()[..3]);
            f.push(0);
        }
        f
    }

    #[test]
    fn round_trip_and_validation() {
        let updates = vec![serde_json::json!({"id": 1, "x": 2}), serde_json::json!([3])];
        let frame = encode_compressed(&updates, 3).unwrap();
        let doc = decompress_bounded(&frame, &limits(1 << 20)).unwrap();
        let parsed = parse_bulk_update(&doc, 10).unwrap();
        assert_eq!(parsed.updates.len(), 2);
        assert_eq!(parsed.updates[0].get(), r#"{"id":1,"x":2}"#);

        assert_eq!(
            parse_bulk_update(br#"{"type":"other","updates":[]}"#, 10).unwrap_err(),
            BulkError::UnknownType
        );
        assert_eq!(
            parse_bulk_update(br#"{"type":"bulk_update","updates":[1,2,3]}"#, 2).unwrap_err(),
            BulkError::TooManyUpdates { max: 2 }
        );
        assert_eq!(
            parse_bulk_update(br#"{"type":"bulk_update","updates":[1,2]}"#, 2)
                .unwrap()
                .updates
                .len(),
            2
        );
        for bad in [
            &br#"{"updates":[]}"#[..],
            br#"{"type":"bulk_update","updates":{}}"#,
            b"[]",
            b"\xff",
        ] {
            assert_eq!(
                parse_bulk_update(bad, 2).unwrap_err().code(),
                "invalid_document"
            );
        }
    }

    #[test]
    fn size_limits() {
        let content = vec![b'x'; 5000];
        let frame = compress(&content, 1).unwrap();
        assert_eq!(decompress_bounded(&frame, &limits(5000)).unwrap(), content);
        assert_eq!(
            decompress_bounded(&frame, &limits(4999)),
            Err(BulkError::DeclaredTooLarge {
                declared: 5000,
                max: 4999
            })
        );
        let small = BulkLimits {
            max_compressed: frame.len() - 1,
            ..limits(1 << 20)
        };
        assert!(matches!(
            decompress_bounded(&frame, &small),
            Err(BulkError::CompressedTooLarge { .. })
        ));
        assert_eq!(
            decompress_bounded(b"{}", &limits(10)),
            Err(BulkError::NotZstd)
        );
        // Skippable frames are not bulk updates.
        assert_eq!(
            decompress_bounded(&[0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0], &limits(10)),
            Err(BulkError::NotZstd)
        );
        let mut trailing = frame.clone();
        trailing.push(0);
        assert_eq!(
            decompress_bounded(&trailing, &limits(1 << 20)),
            Err(BulkError::TrailingData { extra: 1 })
        );
        assert!(decompress_bounded(&frame[..frame.len() - 2], &limits(1 << 20)).is_err());
        assert!(decompress_bounded(&frame[..5], &limits(1 << 20)).is_err());
    }

    #[test]
    fn bombs_are_refused_at_the_limit() {
        // 1 GiB of zeros in 8 KiB of input, declared in the header: refused before decoding.
        let bomb = rle_bomb(8192, 128 * 1024, true);
        assert!(bomb.len() < 40_000);
        assert_eq!(
            decompress_bounded(&bomb, &limits(16 << 20)),
            Err(BulkError::DeclaredTooLarge {
                declared: 1 << 30,
                max: 16 << 20
            })
        );
        // The same without a declared size: decoding stops at the limit.
        let bomb = rle_bomb(8192, 128 * 1024, false);
        assert_eq!(
            decompress_bounded(&bomb, &limits(1 << 20)),
            Err(BulkError::DecompressedTooLarge { max: 1 << 20 })
        );
        // Exactly at the limit is fine, one block over is not.
        let fits = rle_bomb(8, 128 * 1024, false);
        assert_eq!(
            decompress_bounded(&fits, &limits(1 << 20)).unwrap().len(),
            1 << 20
        );
        assert_eq!(
            decompress_bounded(&rle_bomb(9, 128 * 1024, false), &limits(1 << 20)),
            Err(BulkError::DecompressedTooLarge { max: 1 << 20 })
        );
        // A window larger than the limit allows is refused by the decoder.
        let mut big_window = ZSTD_MAGIC.to_vec();
        big_window.extend_from_slice(&[0x00, 0xf8, 0x01, 0x00, 0x00, 0x00]); // 2^(10+31)
        assert!(decompress_bounded(&big_window, &limits(1 << 20)).is_err());
    }

    #[test]
    fn window_log_covers_the_limit() {
        assert_eq!(window_log_max(1), 10);
        assert_eq!(window_log_max(1 << 20), 20);
        assert_eq!(window_log_max((1 << 20) + 1), 21);
        assert_eq!(window_log_max(16 << 20), 24);
        assert_eq!(window_log_max(usize::MAX), 31);
    }

    proptest! {
        #[test]
        fn decompress_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut bytes = ZSTD_MAGIC.to_vec();
            bytes.extend_from_slice(&tail);
            let _ = decompress_bounded(&bytes, &limits(1 << 16));
            let _ = decompress_bounded(&tail, &limits(1 << 16));
            let _ = parse_bulk_update(&tail, 10);
        }

        #[test]
        fn corrupted_frames_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        ) {
            let mut frame = encode_compressed(&[serde_json::json!({"a": [1, 2, 3], "b": "xyz"})], 3).unwrap();
            for (i, v) in flips {
                let at = i.index(frame.len());
                frame[at] = v;
            }
            if let Ok(doc) = decompress_bounded(&frame, &limits(1 << 16)) {
                prop_assert!(doc.len() <= 1 << 16);
                let _ = parse_bulk_update(&doc, 10);
            }
        }

        #[test]
        fn round_trips(values in proptest::collection::vec(any::<i64>(), 0..50), level in 1i32..6) {
            let updates: Vec<serde_json::Value> = values.iter().map(|v| serde_json::json!({"v": v})).collect();
            let frame = encode_compressed(&updates, level).unwrap();
            let doc = decompress_bounded(&frame, &limits(1 << 20)).unwrap();
            let parsed = parse_bulk_update(&doc, 100).unwrap();
            let back: Vec<serde_json::Value> =
                parsed.updates.iter().map(|r| serde_json::from_str(r.get()).unwrap()).collect();
            prop_assert_eq!(back, updates);
        }
    }
}
