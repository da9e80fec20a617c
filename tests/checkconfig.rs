//! `shardcast checkconfig`: the effective configuration, and every invalid value with its reason.

use std::process::Command;

fn checkconfig(env: &[(&str, &str)], file: Option<&std::path::Path>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardcast"));
    cmd.arg("checkconfig");
    if let Some(f) = file {
        cmd.arg("--config").arg(f);
    }
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("SHARDCAST_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn prints_the_effective_configuration_and_succeeds_when_valid() {
    let dir = std::env::temp_dir().join(format!("shardcast-checkconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("shardcast.toml");
    std::fs::write(&file, "shards = 3\n[rooms]\nhistory_limit = 20\n").unwrap();
    let (code, stdout, stderr) = checkconfig(&[("SHARDCAST_LOG__FORMAT", "json")], Some(&file));
    assert_eq!(code, 0, "{stderr}");
    let effective: toml::Table = toml::from_str(&stdout).expect("TOML on stdout");
    assert_eq!(effective["shards"].as_integer(), Some(3));
    assert_eq!(effective["rooms"]["history_limit"].as_integer(), Some(20));
    assert_eq!(effective["log"]["format"].as_str(), Some("json"));
    assert_eq!(
        effective["storage"]["synchronous"].as_str(),
        Some("full"),
        "defaults too"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn names_every_invalid_value_and_fails() {
    let (code, _, stderr) = checkconfig(
        &[
            ("SHARDCAST_WEBSOCKET__MAX_FRAME_SIZE", "0"),
            ("SHARDCAST_ROOMS__HISTORY_LIMIT", "0"),
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("websocket.max_frame_size must be > 0"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rooms.history_limit must be within 1..=1000"),
        "{stderr}"
    );
    assert!(stderr.contains("2 invalid value(s)"), "{stderr}");
    // A value of the wrong kind is named with its key.
    let (code, _, stderr) = checkconfig(&[("SHARDCAST_STORAGE__SYNCHRONOUS", "sometimes")], None);
    assert_eq!(code, 1);
    assert!(stderr.contains("storage.synchronous"), "{stderr}");
    assert!(stderr.contains("`full` or `normal`"), "{stderr}");
}
