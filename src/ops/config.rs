//! Server configuration: embedded defaults, an optional TOML file, then `SHARDCAST_*` environment
//! overrides (`SHARDCAST_LISTEN`, `SHARDCAST_WEBSOCKET__IDLE_TIMEOUT_MS`: a double underscore
//! separates nested keys), then command-line flags applied by the binary.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "SHARDCAST_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid configuration (after environment overrides): {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address every shard binds with SO_REUSEPORT.
    pub listen: SocketAddr,
    /// Number of shards (executors, one per core). 0 means one per available core.
    pub shards: usize,
    /// Pin shard N to CPU N (modulo the CPUs available).
    pub pin_shards: bool,
    /// Where persistent state lives.
    pub data_dir: PathBuf,
    /// Serve a raw WebSocket echo endpoint at `/echo` (for conformance suites such as Autobahn).
    pub echo_endpoint: bool,
    /// Locked memory each executor's io_uring may use, in bytes. Small so it runs under a low
    /// `ulimit -l`.
    pub io_memory: usize,
    /// On SIGTERM/SIGINT, how long connections get to close (1001) before the shards stop.
    pub shutdown_timeout_ms: u64,
    pub websocket: WebSocketConfig,
    pub outbound: OutboundConfig,
    pub mesh: MeshConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketConfig {
    /// Largest single frame payload accepted from a client; larger closes with 1009.
    pub max_frame_size: usize,
    /// Largest reassembled message accepted from a client; larger closes with 1009.
    pub max_message_size: usize,
    /// Time a client has to complete the HTTP upgrade after its TCP connect.
    pub handshake_timeout_ms: u64,
    /// A connection that sends nothing (not even a heartbeat) for this long is closed.
    /// Phoenix uses 60 s; its clients heartbeat every 30 s.
    pub idle_timeout_ms: u64,
    /// After the server sends a close frame, how long it waits for the client's close.
    pub close_timeout_ms: u64,
    /// A socket that accepts no bytes for this long while output is pending is dropped.
    pub write_timeout_ms: u64,
    /// Largest HTTP request head accepted during the upgrade.
    pub max_request_head: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Frames a connection may have queued before it counts as a slow consumer.
    pub max_queued_frames: usize,
    /// Bytes a connection may have queued before it counts as a slow consumer.
    pub max_queued_bytes: usize,
    /// Frames gathered into one vectored write.
    pub write_batch_frames: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeshConfig {
    /// Capacity of each shard's inbound queues (publishes to owned topics, and deliveries).
    pub queue_capacity: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter such as `info` or `shardcast=debug`. `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 4000)),
            shards: 0,
            pin_shards: true,
            data_dir: PathBuf::from("./data"),
            echo_endpoint: false,
            io_memory: 512 * 1024,
            shutdown_timeout_ms: 10_000,
            websocket: WebSocketConfig::default(),
            outbound: OutboundConfig::default(),
            mesh: MeshConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            max_frame_size: 1 << 20,
            max_message_size: 1 << 20,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            close_timeout_ms: 5_000,
            write_timeout_ms: 30_000,
            max_request_head: 8 * 1024,
        }
    }
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            max_queued_frames: 4096,
            max_queued_bytes: 4 << 20,
            write_batch_frames: 64,
        }
    }
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            queue_capacity: 8192,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

impl WebSocketConfig {
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    pub fn close_timeout(&self) -> Duration {
        Duration::from_millis(self.close_timeout_ms)
    }
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
}

impl Config {
    /// Defaults, then `file` (if any), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str::<toml::Table>(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_owned(),
                    source: Box::new(e),
                })?
            }
            None => toml::Table::new(),
        };
        for (key, value) in env {
            let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            set_path(&mut table, &path, parse_env_value(&value));
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let ws = &self.websocket;
        let checks = [
            (
                ws.max_frame_size > 0,
                "websocket.max_frame_size must be > 0",
            ),
            (
                ws.max_message_size > 0,
                "websocket.max_message_size must be > 0",
            ),
            (
                ws.idle_timeout_ms > 0,
                "websocket.idle_timeout_ms must be > 0",
            ),
            (
                ws.handshake_timeout_ms > 0,
                "websocket.handshake_timeout_ms must be > 0",
            ),
            (
                ws.write_timeout_ms > 0,
                "websocket.write_timeout_ms must be > 0",
            ),
            (
                ws.close_timeout_ms > 0,
                "websocket.close_timeout_ms must be > 0",
            ),
            (
                ws.max_request_head >= 512,
                "websocket.max_request_head must be >= 512",
            ),
            (
                self.outbound.max_queued_frames > 0,
                "outbound.max_queued_frames must be > 0",
            ),
            (
                self.outbound.max_queued_bytes > 0,
                "outbound.max_queued_bytes must be > 0",
            ),
            (
                (1..=1024).contains(&self.outbound.write_batch_frames),
                "outbound.write_batch_frames must be within 1..=1024",
            ),
            (
                self.mesh.queue_capacity > 0,
                "mesh.queue_capacity must be > 0",
            ),
            (self.io_memory >= 64 * 1024, "io_memory must be >= 65536"),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, msg)) => Err(ConfigError::Invalid((*msg).to_string())),
            None => Ok(()),
        }
    }

    /// The number of shards to run: `shards`, or one per available core when 0.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            self.shards
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// Environment values are read as TOML scalars when they parse as one (`42`, `true`, `1.5`),
/// otherwise as strings (`127.0.0.1:4000`, `./data`).
fn parse_env_value(raw: &str) -> toml::Value {
    let probe = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&probe) {
        Ok(mut t) => match t.remove("v") {
            Some(
                v @ (toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_)),
            ) => v,
            _ => toml::Value::String(raw.to_owned()),
        },
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    match path {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [head, rest @ ..] => {
            let entry = table
                .entry(head.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(inner) = entry {
                set_path(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(c.listen.port(), 4000);
        assert_eq!(c.websocket.idle_timeout_ms, 60_000);
    }

    #[test]
    fn env_overrides_file_and_nested_keys() {
        let dir = std::env::temp_dir().join(format!("shardcast-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "shards = 3\n[websocket]\nidle_timeout_ms = 1000\n").unwrap();
        let c = Config::load_with_env(
            Some(&file),
            env(&[
                ("SHARDCAST_LISTEN", "127.0.0.1:4100"),
                ("SHARDCAST_WEBSOCKET__IDLE_TIMEOUT_MS", "2500"),
                ("SHARDCAST_ECHO_ENDPOINT", "true"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.shards, 3);
        assert_eq!(c.listen.port(), 4100);
        assert_eq!(c.websocket.idle_timeout_ms, 2500);
        assert!(c.echo_endpoint);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(Config::load_with_env(None, env(&[("SHARDCAST_NO_SUCH_KEY", "1")])).is_err());
        assert!(Config::load_with_env(None, env(&[("SHARDCAST_SHARDS", "many")])).is_err());
        assert!(Config::load_with_env(
            None,
            env(&[("SHARDCAST_OUTBOUND__MAX_QUEUED_FRAMES", "0")])
        )
        .is_err());
    }
}
