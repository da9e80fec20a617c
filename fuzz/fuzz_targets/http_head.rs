//! The HTTP upgrade parser: any bytes never panic, a parsed head never exceeds the limit, and
//! the upgrade check always answers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast::protocol::http::{check_upgrade, parse_request_head, UpgradeCheck};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(head)) = parse_request_head(data, 8192) {
        assert!(head.head_len <= data.len() && head.head_len <= 8192);
        if let UpgradeCheck::Accept(key) = check_upgrade(&head) {
            assert_eq!(key.len(), 28, "base64 of a SHA-1");
        }
    }
});
