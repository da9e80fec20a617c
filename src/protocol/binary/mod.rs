//! The binary fast path's payload layouts (carried as Phoenix V2 binary payloads; all integers
//! and floats little-endian; byte diagrams in `docs/PROTOCOL.md`). Pure codecs: no I/O, every
//! decoder works on a byte slice of the receive buffer, is property-tested and fuzzed
//! (`fuzz/`), and never panics. The encoders are the Rust client side of the same layouts.
//!
//! - [`game_state`]: `game_state` / `game_update`, validated in place without allocating.
//! - [`audio`]: `audio_data` in, `audio_stream` (a header plus the audio bytes) out.
//! - [`bulk`]: `compressed_data`: one zstd frame, decompressed within limits, holding a
//!   `bulk_update` JSON document.
//! - [`upload`]: `upload_start` (JSON) and `upload_chunk` (binary) of resumable uploads.

pub mod audio;
pub mod bulk;
pub mod game_state;
pub mod upload;
