//! `game_state`: the server's validation under its default limits and under permissive limits,
//! at every alignment; whatever parses must decode consistently and re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast::features::GameSettings;
use shardcast::protocol::binary::game_state::{self, GameState, GameStateLimits, ObjectRecord};

fuzz_target!(|data: &[u8]| {
    let settings = GameSettings::default();
    let _ = GameState::parse(data, &settings.limits);
    // An odd offset: position records are read in place whatever the alignment.
    let mut shifted = vec![0u8; 1];
    shifted.extend_from_slice(data);
    let Ok(state) = GameState::parse(&shifted[1..], &GameStateLimits::permissive()) else {
        return;
    };
    let objects: Vec<_> = state.objects().collect();
    assert_eq!(objects.len(), state.object_count() as usize);
    let records: Vec<ObjectRecord<'_>> = objects
        .iter()
        .map(|o| ObjectRecord {
            kind: o.kind,
            x: o.x,
            y: o.y,
            data: o.data,
        })
        .collect();
    let mut again = Vec::new();
    game_state::encode(state.positions(), &records, &mut again).unwrap();
    assert_eq!(again, data);
});
