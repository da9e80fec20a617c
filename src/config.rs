//! The server's configuration file: embedded defaults, an optional TOML file, then `SHARDCAST_*`
//! environment overrides (`SHARDCAST_LISTEN`, `SHARDCAST_WEBSOCKET__IDLE_TIMEOUT_MS`: a double
//! underscore separates nested keys), then command-line flags applied by the binary.
//!
//! Each section is owned by the layer or feature it configures, next to its code, with its own
//! typed values and checks (`problems`): [`ServerConfig`] and `[websocket]`/`[outbound]`/`[mesh]`
//! in `runtime::config`, `[storage]` in `storage::config`, `[auth]` in `features::auth`,
//! `[rooms]` in `features::room`, `[documents]` in `features::document`, `[game]`/`[bulk]` in
//! `features::game`, `[audio]` in `features::voice`, `[uploads]` in `features::uploads`. This
//! module only composes them.

pub use crate::features::auth::{AuthConfig, KeyAlgorithm, PublicKeyConfig};
#[cfg(feature = "documents")]
pub use crate::features::document::DocumentsConfig;
pub use crate::features::game::{BulkConfig, GameConfig, LatestPer};
#[cfg(feature = "rooms")]
pub use crate::features::room::RoomsConfig;
#[cfg(feature = "uploads")]
pub use crate::features::uploads::UploadsConfig;
pub use crate::features::voice::AudioConfig;
pub use crate::runtime::config::{
    MeshConfig, OutboundConfig, ServerConfig, SocketLimits, WebSocketConfig,
};
#[cfg(feature = "sqlite")]
pub use crate::storage::config::{StorageConfig, Synchronous};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "SHARDCAST_";

/// Why a configuration cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrongly typed values.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (it names the key).
        source: Box<toml::de::Error>,
    },
    /// A value is out of range (after environment overrides).
    #[error("invalid configuration (after environment overrides): {0}")]
    Invalid(String),
}

/// The whole configuration: every section, with its defaults (README lists every key).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// `[websocket]`: frame and message limits, timeouts.
    pub websocket: WebSocketConfig,
    /// `[outbound]`: per-connection queue bounds and write batching.
    pub outbound: OutboundConfig,
    /// `[mesh]`: queues between shards.
    pub mesh: MeshConfig,
    /// `[channels]`: what one socket may make the server hold.
    pub channels: SocketLimits,
    /// `[log]`: format and level.
    pub log: LogConfig,
    /// `[auth]`: token secret and public keys.
    pub auth: AuthConfig,
    /// `[rooms]`: `room:*` and `collaboration:*`.
    #[cfg(feature = "rooms")]
    pub rooms: RoomsConfig,
    /// `[storage]`: the rooms database.
    #[cfg(feature = "sqlite")]
    pub storage: StorageConfig,
    /// `[documents]`: `document:*` and its log.
    #[cfg(feature = "documents")]
    pub documents: DocumentsConfig,
    /// `[game]`: what a `game_state` may contain.
    pub game: GameConfig,
    /// `[audio]`: audio frames and budgets.
    pub audio: AudioConfig,
    /// `[bulk]`: zstd bulk updates.
    pub bulk: BulkConfig,
    /// `[uploads]`: chunked uploads.
    #[cfg(feature = "uploads")]
    pub uploads: UploadsConfig,
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `shardcast=debug`. `RUST_LOG` wins when set.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        // The runtime's keys take the runtime's own defaults.
        let ServerConfig {
            listen,
            shards,
            pin_shards,
            echo_endpoint,
            io_memory,
            shutdown_timeout_ms,
            websocket,
            outbound,
            mesh,
            channels,
        } = ServerConfig::default();
        Config {
            listen,
            shards,
            pin_shards,
            data_dir: PathBuf::from("./data"),
            echo_endpoint,
            io_memory,
            shutdown_timeout_ms,
            websocket,
            outbound,
            mesh,
            channels,
            log: LogConfig::default(),
            auth: AuthConfig::default(),
            #[cfg(feature = "rooms")]
            rooms: RoomsConfig::default(),
            #[cfg(feature = "sqlite")]
            storage: StorageConfig::default(),
            #[cfg(feature = "documents")]
            documents: DocumentsConfig::default(),
            game: GameConfig::default(),
            audio: AudioConfig::default(),
            bulk: BulkConfig::default(),
            #[cfg(feature = "uploads")]
            uploads: UploadsConfig::default(),
        }
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
        let config = Self::load_unchecked(file, env)?;
        config.validate()?;
        Ok(config)
    }

    /// Defaults, `file`, then `env`, with every key typed but the values not checked yet (see
    /// [`Config::problems`]): what `shardcast checkconfig` reports on.
    pub fn load_unchecked(
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
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))
    }

    /// Checks every value; the error names the first problem (see [`Config::problems`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.problems().into_iter().next() {
            Some(p) => Err(ConfigError::Invalid(p)),
            None => Ok(()),
        }
    }

    /// Every invalid value, with the reason: each section's own checks, in file order.
    pub fn problems(&self) -> Vec<String> {
        let mut all = self.server().problems();
        all.extend(self.auth.problems());
        #[cfg(feature = "rooms")]
        all.extend(self.rooms.problems());
        #[cfg(feature = "sqlite")]
        all.extend(self.storage.problems());
        #[cfg(feature = "documents")]
        all.extend(self.documents.problems());
        all.extend(self.game.problems());
        all.extend(self.audio.problems());
        all.extend(self.bulk.problems());
        #[cfg(feature = "uploads")]
        all.extend(self.uploads.problems());
        all
    }

    /// The runtime's part.
    pub fn server(&self) -> ServerConfig {
        ServerConfig {
            listen: self.listen,
            shards: self.shards,
            pin_shards: self.pin_shards,
            echo_endpoint: self.echo_endpoint,
            io_memory: self.io_memory,
            shutdown_timeout_ms: self.shutdown_timeout_ms,
            websocket: self.websocket.clone(),
            outbound: self.outbound.clone(),
            mesh: self.mesh.clone(),
            channels: self.channels,
        }
    }

    /// The configuration as a TOML document (every key, defaults included).
    pub fn effective_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// The number of shards to run: `shards`, or one per available core when 0.
    pub fn shard_count(&self) -> usize {
        self.server().shard_count()
    }
}

impl From<&Config> for ServerConfig {
    fn from(c: &Config) -> ServerConfig {
        c.server()
    }
}

impl From<Config> for ServerConfig {
    fn from(c: Config) -> ServerConfig {
        c.server()
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

    #[test]
    fn the_readme_lists_every_key_with_its_default() {
        let readme = include_str!("../README.md");
        let start = readme
            .find("```toml\nlisten")
            .expect("the README's config block")
            + 8;
        let block = &readme[start..start + readme[start..].find("```").unwrap()];
        // Unknown keys are refused (deny_unknown_fields), so every key there exists ...
        let parsed: Config = toml::from_str(block).expect("the README's block parses");
        // ... and it says the defaults, every one of them.
        assert_eq!(parsed.effective_toml(), Config::default().effective_toml());
        for (section, _) in toml::from_str::<toml::Table>(&Config::default().effective_toml())
            .unwrap()
            .iter()
            .filter(|(_, v)| v.is_table())
        {
            assert!(
                block.contains(&format!("[{section}]")),
                "README lacks [{section}]"
            );
        }
    }

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

    #[test]
    fn documents_section_has_defaults_and_is_validated() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert!(c.documents.create_on_join);
        assert_eq!(c.documents.history, 1_000);
        assert_eq!(
            c.documents.database_path(Path::new("/d")),
            PathBuf::from("/d/documents.sqlite3")
        );
        let c = Config::load_with_env(
            None,
            env(&[
                ("SHARDCAST_DOCUMENTS__CREATE_ON_JOIN", "false"),
                ("SHARDCAST_DOCUMENTS__SNAPSHOT_EVERY", "10"),
            ]),
        )
        .unwrap();
        assert!(!c.documents.create_on_join);
        assert_eq!(c.documents.snapshot_every, 10);
        for bad in [
            ("SHARDCAST_DOCUMENTS__HISTORY", "0"),
            ("SHARDCAST_DOCUMENTS__SNAPSHOT_EVERY", "0"),
            ("SHARDCAST_DOCUMENTS__MAX_CHARS", "0"),
            ("SHARDCAST_DOCUMENTS__SYNCHRONOUS", "off"),
            ("SHARDCAST_DOCUMENTS__NO_SUCH_KEY", "1"),
        ] {
            assert!(Config::load_with_env(None, env(&[bad])).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn binary_sections_have_defaults_and_are_validated() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(c.audio.budget_frames(), 10);
        assert_eq!(c.bulk.max_compressed_bytes, 1 << 20);
        assert_eq!(c.bulk.max_decompressed_bytes, 16 << 20);
        assert_eq!(c.game.latest_per, LatestPer::Sender);
        assert_eq!(c.uploads.path(Path::new("/d")), PathBuf::from("/d/uploads"));
        let c = Config::load_with_env(
            None,
            env(&[
                ("SHARDCAST_GAME__WORLD_MAX_X", "500"),
                ("SHARDCAST_GAME__LATEST_PER", "topic"),
                ("SHARDCAST_AUDIO__BUDGET_MS", "100"),
                ("SHARDCAST_UPLOADS__MAX_FILE_SIZE", "1000"),
            ]),
        )
        .unwrap();
        assert_eq!(c.game.world_max_x, 500.0);
        assert_eq!(c.game.latest_per, LatestPer::Topic);
        assert_eq!(c.audio.budget_frames(), 5);
        assert_eq!(c.uploads.max_file_size, 1000);
        for bad in [
            ("SHARDCAST_GAME__WORLD_MIN_X", "20000"),
            ("SHARDCAST_GAME__LATEST_PER", "player"),
            ("SHARDCAST_GAME__MAX_POSITIONS", "0"),
            ("SHARDCAST_AUDIO__FRAME_MS", "0"),
            ("SHARDCAST_AUDIO__BUDGET_MS", "10"),
            ("SHARDCAST_BULK__MAX_DECOMPRESSED_BYTES", "0"),
            ("SHARDCAST_BULK__LEVEL", "40"),
            ("SHARDCAST_UPLOADS__CHUNK_SIZE", "1"),
            ("SHARDCAST_UPLOADS__MAX_PENDING_CHUNKS", "0"),
            ("SHARDCAST_UPLOADS__NO_SUCH_KEY", "1"),
        ] {
            assert!(Config::load_with_env(None, env(&[bad])).is_err(), "{bad:?}");
        }
        let mut c = Config::default();
        c.game.object_types = vec!["a".into(), "a".into()];
        assert!(c.validate().is_err(), "duplicate object types");
        c.game.object_types = vec![String::new()];
        assert!(c.validate().is_err(), "empty object type");
    }

    #[test]
    fn feature_sections_have_defaults_and_are_validated() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert!(c.auth.secret.is_empty() && !c.auth.allow_anonymous);
        assert_eq!(c.rooms.history_limit, 50);
        assert_eq!(c.rooms.max_message_bytes, 4096);
        assert_eq!(c.rooms.typing_timeout_ms, 3000);
        assert_eq!(
            c.storage.database_path(Path::new("/d")),
            PathBuf::from("/d/shardcast.db")
        );
        let c = Config::load_with_env(
            None,
            env(&[
                ("SHARDCAST_AUTH__ALLOW_ANONYMOUS", "true"),
                ("SHARDCAST_ROOMS__TYPING_TIMEOUT_MS", "500"),
                ("SHARDCAST_STORAGE__SYNCHRONOUS", "normal"),
            ]),
        )
        .unwrap();
        assert!(c.auth.allow_anonymous);
        assert_eq!(c.rooms.typing_timeout_ms, 500);
        for bad in [
            ("SHARDCAST_AUTH__SECRET", "short"),
            ("SHARDCAST_ROOMS__MAX_MESSAGE_BYTES", "0"),
            ("SHARDCAST_STORAGE__SYNCHRONOUS", "off"),
            ("SHARDCAST_ROOMS__NO_SUCH_KEY", "1"),
        ] {
            assert!(Config::load_with_env(None, env(&[bad])).is_err(), "{bad:?}");
        }
    }
}
