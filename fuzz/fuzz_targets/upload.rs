//! `upload_chunk` and `upload_start`: decoding never panics; chunks round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast::protocol::binary::upload;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, chunk)) = upload::decode_chunk(data) {
        assert!(header.chunk_index < header.total_chunks);
        let mut again = Vec::new();
        upload::encode_chunk(&header, chunk, &mut again);
        assert_eq!(again, data);
    }
    if let Ok(start) = upload::parse_start(data) {
        assert!(start.size > 0 && !start.filename.is_empty());
        if let Some(plan) = start
            .chunk_size
            .and_then(|c| upload::ChunkPlan::new(start.size, c))
        {
            let last = plan.total_chunks() - 1;
            assert_eq!(
                plan.offset(last) + u64::from(plan.chunk_len(last).unwrap()),
                start.size
            );
        }
    }
});
