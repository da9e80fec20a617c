//! `audio_data` / `audio_stream`: decoding never panics; what decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast::protocol::binary::audio;

fuzz_target!(|data: &[u8]| {
    let _ = audio::check_audio_data(data, 4096);
    if let Ok((header, frame)) = audio::decode(data) {
        assert_eq!(&audio::encode(&header, frame).unwrap()[..], data);
    }
});
