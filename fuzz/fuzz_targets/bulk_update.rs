//! `compressed_data`: bounded decompression and the bulk update document. The input is tried as
//! a zstd frame, as the same bytes behind a zstd magic number, and as a document.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast::protocol::binary::bulk::{self, BulkLimits};

fuzz_target!(|data: &[u8]| {
    let limits = BulkLimits {
        max_compressed: 1 << 16,
        max_decompressed: 1 << 20,
        max_updates: 1000,
    };
    let mut framed = bulk::ZSTD_MAGIC.to_vec();
    framed.extend_from_slice(data);
    for input in [data, &framed[..]] {
        if let Ok(doc) = bulk::decompress_bounded(input, &limits) {
            assert!(doc.len() <= limits.max_decompressed);
            if let Ok(update) = bulk::parse_bulk_update(&doc, limits.max_updates) {
                assert!(update.updates.len() <= limits.max_updates);
            }
        }
    }
    if let Ok(update) = bulk::parse_bulk_update(data, limits.max_updates) {
        assert!(update.updates.len() <= limits.max_updates);
    }
});
