//! Resumable chunked uploads: the `upload_start` request (JSON), the `upload_chunk` binary layout
//! and the chunk arithmetic both sides share.
//!
//! ```text
//! upload_chunk: 16-byte upload_id, u32 chunk_index, u32 total_chunks, chunk bytes (the rest)
//! ```
//!
//! A file of `size` bytes cut in chunks of `chunk_size` has `ceil(size / chunk_size)` chunks;
//! chunk `i` starts at byte `i * chunk_size` and every chunk but the last is exactly
//! `chunk_size` bytes.

use serde::Deserialize;

/// Bytes of an [`UploadId`].
pub const UPLOAD_ID_LEN: usize = 16;
/// `upload_id`, `chunk_index`, `total_chunks`.
pub const CHUNK_HEADER_LEN: usize = UPLOAD_ID_LEN + 4 + 4;

/// 16 random bytes naming one upload; hex (32 lowercase digits) in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId(pub [u8; UPLOAD_ID_LEN]);

impl UploadId {
    /// 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// Parses 32 hex digits (either case); `None` otherwise.
    pub fn from_hex(s: &str) -> Option<UploadId> {
        let mut out = [0u8; UPLOAD_ID_LEN];
        from_hex_into(s, &mut out).then_some(UploadId(out))
    }
}

impl std::fmt::Debug for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UploadId({})", self.to_hex())
    }
}

impl std::fmt::Display for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Parses exactly `out.len() * 2` hex digits (either case) into `out`.
pub fn from_hex_into(s: &str, out: &mut [u8]) -> bool {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let s = s.as_bytes();
    if s.len() != out.len() * 2 {
        return false;
    }
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        match (digit(pair[0]), digit(pair[1])) {
            (Some(hi), Some(lo)) => *o = hi << 4 | lo,
            _ => return false,
        }
    }
    true
}

/// The header of an `upload_chunk` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// The upload the chunk belongs to.
    pub upload_id: UploadId,
    /// Which chunk this is, from 0; below `total_chunks`.
    pub chunk_index: u32,
    /// Number of chunks in the file, at least 1.
    pub total_chunks: u32,
}

/// Why an `upload_chunk` message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The message is `len` bytes, shorter than [`CHUNK_HEADER_LEN`].
    #[error("message is {len} bytes, shorter than the 24-byte chunk header")]
    Truncated {
        /// The message's length, in bytes.
        len: usize,
    },
    /// `total_chunks` is 0.
    #[error("total_chunks must be at least 1")]
    NoChunks,
    /// `chunk_index` `index` is not below `total_chunks` `total`.
    #[error("chunk_index {index} is not below total_chunks {total}")]
    IndexOutOfRange {
        /// The `chunk_index`.
        index: u32,
        /// The `total_chunks`.
        total: u32,
    },
    /// The message has a header but no chunk bytes.
    #[error("a chunk must carry at least one byte")]
    Empty,
}

/// Splits an `upload_chunk` message into its header and the chunk bytes (no copy).
pub fn decode_chunk(msg: &[u8]) -> Result<(ChunkHeader, &[u8]), ChunkError> {
    let head = msg
        .get(..CHUNK_HEADER_LEN)
        .ok_or(ChunkError::Truncated { len: msg.len() })?;
    let mut id = [0u8; UPLOAD_ID_LEN];
    id.copy_from_slice(&head[..UPLOAD_ID_LEN]);
    let word = |at: usize| u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    let header = ChunkHeader {
        upload_id: UploadId(id),
        chunk_index: word(16),
        total_chunks: word(20),
    };
    if header.total_chunks == 0 {
        return Err(ChunkError::NoChunks);
    }
    if header.chunk_index >= header.total_chunks {
        return Err(ChunkError::IndexOutOfRange {
            index: header.chunk_index,
            total: header.total_chunks,
        });
    }
    let data = &msg[CHUNK_HEADER_LEN..];
    if data.is_empty() {
        return Err(ChunkError::Empty);
    }
    Ok((header, data))
}

/// Appends an `upload_chunk` message to `out` (the client side).
pub fn encode_chunk(header: &ChunkHeader, data: &[u8], out: &mut Vec<u8>) {
    out.reserve(CHUNK_HEADER_LEN + data.len());
    out.extend_from_slice(&header.upload_id.0);
    out.extend_from_slice(&header.chunk_index.to_le_bytes());
    out.extend_from_slice(&header.total_chunks.to_le_bytes());
    out.extend_from_slice(data);
}

/// How a file of `size` bytes is cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPlan {
    /// File size in bytes.
    pub size: u64,
    /// Bytes of every chunk but the last.
    pub chunk_size: u32,
}

impl ChunkPlan {
    /// `None` when `size` is 0, `chunk_size` is 0, or the count does not fit a `u32`.
    pub fn new(size: u64, chunk_size: u32) -> Option<ChunkPlan> {
        let plan = ChunkPlan { size, chunk_size };
        (size > 0 && chunk_size > 0 && u32::try_from(plan.count_u64()).is_ok()).then_some(plan)
    }

    fn count_u64(&self) -> u64 {
        self.size.div_ceil(u64::from(self.chunk_size))
    }

    /// Number of chunks: `ceil(size / chunk_size)`.
    pub fn total_chunks(&self) -> u32 {
        self.count_u64() as u32
    }

    /// Byte offset of chunk `index`.
    pub fn offset(&self, index: u32) -> u64 {
        u64::from(index) * u64::from(self.chunk_size)
    }

    /// Exact length of chunk `index` (`None` past the last chunk).
    pub fn chunk_len(&self, index: u32) -> Option<u32> {
        if index >= self.total_chunks() {
            return None;
        }
        let left = self.size - self.offset(index);
        Some(left.min(u64::from(self.chunk_size)) as u32)
    }
}

/// `upload_start`: `{filename, size, sha256, chunk_size?, upload_id?}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UploadStartRequest {
    /// The client's name for the file.
    pub filename: String,
    /// File size in bytes.
    pub size: u64,
    /// SHA-256 of the whole file, as 64 hex digits.
    pub sha256: String,
    /// Requested chunk size in bytes.
    #[serde(default)]
    pub chunk_size: Option<u32>,
    /// The upload to resume, as 32 hex digits.
    #[serde(default)]
    pub upload_id: Option<String>,
}

/// A checked `upload_start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStart {
    /// The client's name for the file: metadata only, never part of a path.
    pub filename: String,
    /// File size in bytes, at least 1.
    pub size: u64,
    /// SHA-256 the completed file must have.
    pub sha256: [u8; 32],
    /// Requested chunk size in bytes; `None` for the server's default.
    pub chunk_size: Option<u32>,
    /// Resume this upload.
    pub upload_id: Option<UploadId>,
}

/// Why an `upload_start` payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// The payload is not JSON of the request's shape (the parser's message).
    #[error("expected {{filename, size, sha256, chunk_size?, upload_id?}}: {0}")]
    Shape(String),
    /// `filename` is empty, over 255 bytes, or has a control character.
    #[error("filename must be 1 to 255 bytes without control characters")]
    BadFilename,
    /// `size` is 0.
    #[error("size must be at least 1 byte")]
    EmptyFile,
    /// `sha256` is not 64 hex digits.
    #[error("sha256 must be 64 hex digits")]
    BadSha256,
    /// `upload_id` is not 32 hex digits.
    #[error("upload_id must be 32 hex digits")]
    BadUploadId,
}

impl StartError {
    /// A stable machine-readable reason, for error replies.
    pub fn code(&self) -> &'static str {
        match self {
            StartError::Shape(_) => "invalid_payload",
            StartError::BadFilename => "invalid_filename",
            StartError::EmptyFile => "invalid_size",
            StartError::BadSha256 => "invalid_sha256",
            StartError::BadUploadId => "invalid_upload_id",
        }
    }
}

/// Parses and checks an `upload_start` payload (JSON bytes).
pub fn parse_start(json: &[u8]) -> Result<UploadStart, StartError> {
    let req: UploadStartRequest =
        serde_json::from_slice(json).map_err(|e| StartError::Shape(e.to_string()))?;
    let name_ok = !req.filename.is_empty()
        && req.filename.len() <= 255
        && !req.filename.chars().any(char::is_control);
    if !name_ok {
        return Err(StartError::BadFilename);
    }
    if req.size == 0 {
        return Err(StartError::EmptyFile);
    }
    let mut sha256 = [0u8; 32];
    if !from_hex_into(&req.sha256, &mut sha256) {
        return Err(StartError::BadSha256);
    }
    let upload_id = match req.upload_id.as_deref() {
        None => None,
        Some(hex) => Some(UploadId::from_hex(hex).ok_or(StartError::BadUploadId)?),
    };
    Ok(UploadStart {
        filename: req.filename,
        size: req.size,
        sha256,
        chunk_size: req.chunk_size,
        upload_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chunk_known_bytes_and_errors() {
        let id = UploadId([0xab; 16]);
        let mut msg = Vec::new();
        encode_chunk(
            &ChunkHeader {
                upload_id: id,
                chunk_index: 2,
                total_chunks: 3,
            },
            b"xyz",
            &mut msg,
        );
        let mut expected = vec![0xab; 16];
        expected.extend_from_slice(&[2, 0, 0, 0, 3, 0, 0, 0]);
        expected.extend_from_slice(b"xyz");
        assert_eq!(msg, expected);
        let (h, data) = decode_chunk(&msg).unwrap();
        assert_eq!(
            (h.upload_id, h.chunk_index, h.total_chunks, data),
            (id, 2, 3, &b"xyz"[..])
        );

        assert_eq!(
            decode_chunk(&msg[..23]),
            Err(ChunkError::Truncated { len: 23 })
        );
        assert_eq!(decode_chunk(&msg[..24]), Err(ChunkError::Empty));
        let mut bad = msg.clone();
        bad[20] = 0;
        assert_eq!(decode_chunk(&bad), Err(ChunkError::NoChunks));
        let mut bad = msg.clone();
        bad[16] = 3;
        assert_eq!(
            decode_chunk(&bad),
            Err(ChunkError::IndexOutOfRange { index: 3, total: 3 })
        );
    }

    #[test]
    fn plan_arithmetic() {
        let p = ChunkPlan::new(10, 4).unwrap();
        assert_eq!(p.total_chunks(), 3);
        assert_eq!(
            (0..4).map(|i| p.chunk_len(i)).collect::<Vec<_>>(),
            vec![Some(4), Some(4), Some(2), None]
        );
        assert_eq!(p.offset(2), 8);
        assert_eq!(ChunkPlan::new(8, 4).unwrap().chunk_len(1), Some(4));
        assert!(ChunkPlan::new(0, 4).is_none());
        assert!(ChunkPlan::new(1, 0).is_none());
        assert!(ChunkPlan::new(u64::MAX, 1).is_none());
    }

    #[test]
    fn start_requests() {
        let sha = "ab".repeat(32);
        let ok = parse_start(
            format!(
                r#"{{"filename":"../../etc/passwd","size":5,"sha256":"{sha}","chunk_size":4}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            ok.filename, "../../etc/passwd",
            "kept as metadata, never a path"
        );
        assert_eq!(ok.sha256, [0xab; 32]);
        assert_eq!(ok.chunk_size, Some(4));
        assert_eq!(ok.upload_id, None);
        let resume = parse_start(
            format!(
                r#"{{"filename":"a","size":5,"sha256":"{sha}","upload_id":"{}"}}"#,
                "0f".repeat(16)
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(resume.upload_id, Some(UploadId([0x0f; 16])));
        for (json, code) in [
            (r#"[]"#.to_string(), "invalid_payload"),
            (
                format!(r#"{{"filename":"","size":5,"sha256":"{sha}"}}"#),
                "invalid_filename",
            ),
            (
                format!(r#"{{"filename":"a\nb","size":5,"sha256":"{sha}"}}"#),
                "invalid_filename",
            ),
            (
                format!(r#"{{"filename":"a","size":0,"sha256":"{sha}"}}"#),
                "invalid_size",
            ),
            (
                format!(r#"{{"filename":"a","size":-1,"sha256":"{sha}"}}"#),
                "invalid_payload",
            ),
            (
                r#"{"filename":"a","size":1,"sha256":"xyz"}"#.to_string(),
                "invalid_sha256",
            ),
            (
                format!(r#"{{"filename":"a","size":1,"sha256":"{sha}","upload_id":"12"}}"#),
                "invalid_upload_id",
            ),
        ] {
            assert_eq!(
                parse_start(json.as_bytes()).unwrap_err().code(),
                code,
                "{json}"
            );
        }
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_chunk(&bytes);
            let _ = parse_start(&bytes);
        }

        #[test]
        fn chunk_round_trips(id in any::<[u8; 16]>(), total in 1u32.., index_seed in any::<u32>(),
                             data in proptest::collection::vec(any::<u8>(), 1..100)) {
            let h = ChunkHeader { upload_id: UploadId(id), chunk_index: index_seed % total, total_chunks: total };
            let mut msg = Vec::new();
            encode_chunk(&h, &data, &mut msg);
            let (h2, d2) = decode_chunk(&msg).unwrap();
            prop_assert_eq!(h2, h);
            prop_assert_eq!(d2, &data[..]);
        }

        #[test]
        fn hex_round_trips(bytes in any::<[u8; 16]>()) {
            let id = UploadId(bytes);
            prop_assert_eq!(UploadId::from_hex(&id.to_hex()), Some(id));
            prop_assert_eq!(UploadId::from_hex(&id.to_hex().to_uppercase()), Some(id));
        }

        #[test]
        fn chunks_tile_the_file(size in 1u64..10_000_000, chunk in 1u32..100_000) {
            let p = ChunkPlan::new(size, chunk).unwrap();
            let mut end = 0u64;
            for i in 0..p.total_chunks() {
                prop_assert_eq!(p.offset(i), end);
                let len = p.chunk_len(i).unwrap();
                prop_assert!(len >= 1 && len <= chunk);
                end += u64::from(len);
            }
            prop_assert_eq!(end, size);
        }
    }
}
