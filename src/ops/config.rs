//! Server configuration: embedded defaults, an optional TOML file, then `SHARDCAST_*` environment
//! overrides (`SHARDCAST_LISTEN`, `SHARDCAST_WEBSOCKET__IDLE_TIMEOUT_MS`: a double underscore
//! separates nested keys), then command-line flags applied by the binary.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// `[log]`: format and level.
    pub log: LogConfig,
    /// `[auth]`: token secret and public keys.
    pub auth: AuthConfig,
    /// `[rooms]`: `room:*` and `collaboration:*`.
    pub rooms: RoomsConfig,
    /// `[storage]`: the rooms database.
    pub storage: StorageConfig,
    /// `[documents]`: `document:*` and its log.
    pub documents: DocumentsConfig,
    /// `[game]`: what a `game_state` may contain.
    pub game: GameConfig,
    /// `[audio]`: audio frames and budgets.
    pub audio: AudioConfig,
    /// `[bulk]`: zstd bulk updates.
    pub bulk: BulkConfig,
    /// `[uploads]`: chunked uploads.
    pub uploads: UploadsConfig,
}

/// `[websocket]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// `[outbound]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Frames a connection may have queued before it counts as a slow consumer.
    pub max_queued_frames: usize,
    /// Bytes a connection may have queued before it counts as a slow consumer.
    pub max_queued_bytes: usize,
    /// Frames gathered into one vectored write.
    pub write_batch_frames: usize,
}

/// `[mesh]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeshConfig {
    /// Capacity of each shard's inbound queues (publishes to owned topics, and deliveries).
    pub queue_capacity: usize,
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

/// `[auth]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 key for socket and join tokens (at least 32 bytes). Empty: a random secret is
    /// generated once into `<data_dir>/auth_secret` (mode 0600) and a warning is logged.
    pub secret: String,
    /// Accept sockets without a token as guests (local demos). A token that is present is
    /// still checked.
    pub allow_anonymous: bool,
    /// Public keys of identity providers whose RS256/ES256 tokens are accepted too, each pinned
    /// to its algorithm: `[[auth.public_keys]] alg = "RS256", kid = "idp-1", pem_file = "..."`.
    pub public_keys: Vec<PublicKeyConfig>,
}

/// An asymmetric algorithm a public key is pinned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
}

/// One accepted public key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyConfig {
    /// The only algorithm tokens checked with this key may use.
    pub alg: KeyAlgorithm,
    /// The key id tokens name in their header (`kid`); when both name one, they must match.
    #[serde(default)]
    pub kid: Option<String>,
    /// The PEM public key itself ...
    #[serde(default)]
    pub pem: Option<String>,
    /// ... or the file holding it.
    #[serde(default)]
    pub pem_file: Option<PathBuf>,
}

/// `[rooms]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsConfig {
    /// Messages a room keeps in memory and sends in `room_state`.
    pub history_limit: usize,
    /// Largest message body, in bytes of UTF-8 after trimming.
    pub max_message_bytes: usize,
    /// A typing user who sends nothing for this long is announced as stopped.
    pub typing_timeout_ms: u64,
    /// Connections one room or document may have joined at once; later joins are refused.
    pub max_members: usize,
    /// Messages one connection may have waiting for the storage thread; more are refused.
    pub max_pending_messages: usize,
    /// Collaboration channels forward a connection's cursor and selection at most this often
    /// (the latest value wins).
    pub cursor_interval_ms: u64,
}

/// `[storage]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// SQLite database file; relative paths are under `data_dir`.
    pub path: PathBuf,
    /// Requests that may wait for the storage thread; shards wait (without blocking) beyond it.
    pub queue_capacity: usize,
    /// Requests committed together in one transaction at most.
    pub max_batch: usize,
    /// SQLite `synchronous` in WAL mode: `full` (a commit survives power loss) or `normal`
    /// (survives a crash of the process, may lose the last commits on power loss).
    pub synchronous: Synchronous,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        RoomsConfig {
            history_limit: 50,
            max_message_bytes: 4096,
            typing_timeout_ms: 3000,
            max_members: 10_000,
            max_pending_messages: 32,
            cursor_interval_ms: 50,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("shardcast.db"),
            queue_capacity: 4096,
            max_batch: 256,
            synchronous: Synchronous::Full,
        }
    }
}

impl RoomsConfig {
    /// `typing_timeout_ms` as a duration.
    pub fn typing_timeout(&self) -> Duration {
        Duration::from_millis(self.typing_timeout_ms)
    }
    /// `cursor_interval_ms` as a duration.
    pub fn cursor_interval(&self) -> Duration {
        Duration::from_millis(self.cursor_interval_ms)
    }
}

/// `document:<id>` channels: collaborative text documents (operational transform), their
/// limits and their own database (an append-only operation log with periodic snapshots).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DocumentsConfig {
    /// Create a missing document (empty) on the first join by a user allowed to join it. When
    /// off, joining a document that is not in the database is refused with
    /// `{"reason": "Document not found"}` (the set of documents is read at startup).
    pub create_on_join: bool,
    /// Most characters (Unicode scalar values) a document may grow to.
    pub max_chars: usize,
    /// Largest operation accepted: components plus inserted characters.
    pub max_op_size: usize,
    /// Applied operations kept per document to rebase late operations over and to catch up
    /// re-joining clients; a client further behind gets the whole document again.
    pub history: usize,
    /// A snapshot of the text is written every this many operations; a restart loads a
    /// snapshot and replays the operations logged after it.
    pub snapshot_every: u64,
    /// Clients per document whose last `seq` is remembered to recognize resent operations.
    pub recent_clients: usize,
    /// Documents a shard keeps in memory at most; idle ones are unloaded first, and joins that
    /// would load more are refused (`overloaded`).
    pub max_loaded: usize,
    /// A document nobody has joined for this long is unloaded from memory.
    pub idle_unload_ms: u64,
    /// Operations one channel may have waiting for their acknowledgement; more are refused.
    pub max_pending_ops: usize,
    /// The documents database; relative paths are under `data_dir`.
    pub path: PathBuf,
    /// Requests waiting for the documents database beyond which operations are refused
    /// (`overloaded`) until it catches up.
    pub queue_capacity: usize,
    /// Requests committed together in one transaction at most.
    pub max_batch: usize,
    /// SQLite `synchronous`: `full` (an acknowledged operation survives power loss) or
    /// `normal` (survives a crash of the process).
    pub synchronous: Synchronous,
}

impl Default for DocumentsConfig {
    fn default() -> Self {
        DocumentsConfig {
            create_on_join: true,
            max_chars: 5_000_000,
            max_op_size: 100_000,
            history: 1_000,
            snapshot_every: 500,
            recent_clients: 10_000,
            max_loaded: 10_000,
            idle_unload_ms: 60_000,
            max_pending_ops: 64,
            path: PathBuf::from("documents.sqlite3"),
            queue_capacity: 65_536,
            max_batch: 1_024,
            synchronous: Synchronous::Full,
        }
    }
}

impl DocumentsConfig {
    /// The database file: `path`, under `data_dir` when relative.
    pub fn database_path(&self, data_dir: &Path) -> PathBuf {
        if self.path.is_absolute() {
            self.path.clone()
        } else {
            data_dir.join(&self.path)
        }
    }

    /// `idle_unload_ms` as a duration.
    pub fn idle_unload(&self) -> Duration {
        Duration::from_millis(self.idle_unload_ms)
    }
}

/// `game:<id>` channels: what a `game_state` may contain, and how a slow subscriber is served.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GameConfig {
    /// The world: coordinates of positions and objects must lie within these bounds.
    pub world_min_x: f32,
    /// Right edge of the world.
    pub world_max_x: f32,
    /// Bottom edge of the world.
    pub world_min_y: f32,
    /// Top edge of the world.
    pub world_max_y: f32,
    /// Position records per `game_state` at most.
    pub max_positions: u32,
    /// Object records per `game_state` at most.
    pub max_objects: u32,
    /// Largest `data` of one object, in bytes.
    pub max_object_data: u32,
    /// The object types a state may name; anything else is refused.
    pub object_types: Vec<String>,
    /// Latest-value-wins key for subscribers that are behind: `sender` (at most one queued
    /// `game_update` per topic and publishing connection: with one publisher, such as an
    /// authoritative simulation, that is one per topic; with every player publishing its own
    /// state, nobody's update supersedes another player's) or `topic` (at most one per topic,
    /// whoever sent it: updates of different members published at the same instant supersede
    /// each other even for subscribers that keep up).
    pub latest_per: LatestPer,
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

/// Durability of a SQLite commit (`synchronous` in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// An acknowledged write survives power loss.
    Full,
    /// An acknowledged write survives a process crash.
    Normal,
}

/// What a latest-value-wins `game_update` replaces in a subscriber's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LatestPer {
    /// The queued update of the same topic and publishing connection.
    Sender,
    /// The queued update of the same topic, whoever sent it.
    Topic,
}

impl Default for GameConfig {
    fn default() -> Self {
        GameConfig {
            world_min_x: -10_000.0,
            world_max_x: 10_000.0,
            world_min_y: -10_000.0,
            world_max_y: 10_000.0,
            max_positions: 1024,
            max_objects: 1024,
            max_object_data: 1024,
            object_types: ["projectile", "pickup", "effect", "npc", "vehicle", "item"]
                .map(String::from)
                .to_vec(),
            latest_per: LatestPer::Sender,
        }
    }
}

impl GameConfig {
    fn world_bounds_valid(&self) -> bool {
        let all = [
            self.world_min_x,
            self.world_max_x,
            self.world_min_y,
            self.world_max_y,
        ];
        all.iter().all(|v| v.is_finite())
            && self.world_min_x < self.world_max_x
            && self.world_min_y < self.world_max_y
    }

    fn object_types_valid(&self) -> bool {
        let mut seen = std::collections::HashSet::new();
        self.object_types.len() <= 1024
            && self
                .object_types
                .iter()
                .all(|t| (1..=255).contains(&t.len()) && seen.insert(t.as_str()))
    }
}

/// Audio relayed on `game:` and `voice:` topics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioConfig {
    /// Audio a subscriber that is behind keeps queued per sender; older frames are dropped.
    pub budget_ms: u32,
    /// Duration of one `audio_data` frame (the budget in frames is `budget_ms / frame_ms`).
    pub frame_ms: u32,
    /// Largest `audio_data` payload, in bytes.
    pub max_frame_bytes: usize,
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            budget_ms: 200,
            frame_ms: 20,
            max_frame_bytes: 4096,
        }
    }
}

impl AudioConfig {
    /// Frames per sender a subscriber may have queued (at least 1).
    pub fn budget_frames(&self) -> u32 {
        (self.budget_ms / self.frame_ms.max(1)).max(1)
    }
}

/// `compressed_data` (zstd) bulk updates.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BulkConfig {
    /// Largest compressed payload accepted (the WebSocket message limit applies first).
    pub max_compressed_bytes: usize,
    /// Largest decompressed document; decompression never allocates past it.
    pub max_decompressed_bytes: usize,
    /// Elements of `updates` at most.
    pub max_updates: usize,
    /// zstd level for documents the server compresses itself (a hook that changed the updates).
    pub level: i32,
}

impl Default for BulkConfig {
    fn default() -> Self {
        BulkConfig {
            max_compressed_bytes: 1 << 20,
            max_decompressed_bytes: 16 << 20,
            max_updates: 100_000,
            level: 3,
        }
    }
}

/// Resumable chunked uploads (`uploads:<user id>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadsConfig {
    /// Where uploads live; relative paths are under `data_dir`.
    pub dir: PathBuf,
    /// Chunk size offered when `upload_start` does not ask for one.
    pub chunk_size: u32,
    /// Smallest chunk size a client may ask for.
    pub min_chunk_size: u32,
    /// Largest chunk size a client may ask for (also capped to fit `websocket.max_message_size`).
    pub max_chunk_size: u32,
    /// Chunks per upload at most.
    pub max_chunks: u32,
    /// Largest file, in bytes.
    pub max_file_size: u64,
    /// Unfinished uploads one user may have at once.
    pub max_concurrent_per_user: usize,
    /// Bytes all uploads may take on disk: completed files plus the full size of unfinished ones.
    pub quota_bytes: u64,
    /// An unfinished upload without a chunk or `upload_start` for this long is deleted.
    pub expire_after_ms: u64,
    /// Chunks one connection may have waiting to be written; more are refused until some land.
    pub max_pending_chunks: usize,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        UploadsConfig {
            dir: PathBuf::from("uploads"),
            chunk_size: 256 * 1024,
            min_chunk_size: 4 * 1024,
            max_chunk_size: 512 * 1024,
            max_chunks: 16_384,
            max_file_size: 256 << 20,
            max_concurrent_per_user: 4,
            quota_bytes: 10 << 30,
            expire_after_ms: 24 * 3600 * 1000,
            max_pending_chunks: 8,
        }
    }
}

impl UploadsConfig {
    /// The uploads directory: `dir`, under `data_dir` when relative.
    pub fn path(&self, data_dir: &Path) -> PathBuf {
        if self.dir.is_absolute() {
            self.dir.clone()
        } else {
            data_dir.join(&self.dir)
        }
    }

    /// `expire_after_ms` as a duration.
    pub fn expire_after(&self) -> Duration {
        Duration::from_millis(self.expire_after_ms)
    }
}

impl StorageConfig {
    /// The database file: `path`, under `data_dir` when relative.
    pub fn database_path(&self, data_dir: &Path) -> PathBuf {
        if self.path.is_absolute() {
            self.path.clone()
        } else {
            data_dir.join(&self.path)
        }
    }
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
            auth: AuthConfig::default(),
            rooms: RoomsConfig::default(),
            storage: StorageConfig::default(),
            documents: DocumentsConfig::default(),
            game: GameConfig::default(),
            audio: AudioConfig::default(),
            bulk: BulkConfig::default(),
            uploads: UploadsConfig::default(),
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
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl WebSocketConfig {
    /// `handshake_timeout_ms` as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
    /// `idle_timeout_ms` as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    /// `close_timeout_ms` as a duration.
    pub fn close_timeout(&self) -> Duration {
        Duration::from_millis(self.close_timeout_ms)
    }
    /// `write_timeout_ms` as a duration.
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

    /// Every invalid value, with the reason (empty when the configuration is valid).
    pub fn problems(&self) -> Vec<String> {
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
            (
                self.auth.secret.is_empty() || self.auth.secret.len() >= 32,
                "auth.secret must be empty (generated) or at least 32 bytes",
            ),
            (
                (1..=1000).contains(&self.rooms.history_limit),
                "rooms.history_limit must be within 1..=1000",
            ),
            (
                (1..=65536).contains(&self.rooms.max_message_bytes),
                "rooms.max_message_bytes must be within 1..=65536",
            ),
            (
                self.rooms.typing_timeout_ms > 0,
                "rooms.typing_timeout_ms must be > 0",
            ),
            (self.rooms.max_members > 0, "rooms.max_members must be > 0"),
            (
                self.rooms.max_pending_messages > 0,
                "rooms.max_pending_messages must be > 0",
            ),
            (
                self.rooms.cursor_interval_ms <= 10_000,
                "rooms.cursor_interval_ms must be <= 10000",
            ),
            (
                !self.storage.path.as_os_str().is_empty(),
                "storage.path must not be empty",
            ),
            (
                self.storage.queue_capacity > 0,
                "storage.queue_capacity must be > 0",
            ),
            (
                (1..=10_000).contains(&self.storage.max_batch),
                "storage.max_batch must be within 1..=10000",
            ),
            (
                self.documents.max_chars > 0,
                "documents.max_chars must be > 0",
            ),
            (
                self.documents.max_op_size > 0,
                "documents.max_op_size must be > 0",
            ),
            (
                (1..=1_000_000).contains(&self.documents.history),
                "documents.history must be within 1..=1000000",
            ),
            (
                self.documents.snapshot_every > 0,
                "documents.snapshot_every must be > 0",
            ),
            (
                self.documents.recent_clients > 0,
                "documents.recent_clients must be > 0",
            ),
            (
                self.documents.max_loaded > 0,
                "documents.max_loaded must be > 0",
            ),
            (
                self.documents.idle_unload_ms > 0,
                "documents.idle_unload_ms must be > 0",
            ),
            (
                self.documents.max_pending_ops > 0,
                "documents.max_pending_ops must be > 0",
            ),
            (
                !self.documents.path.as_os_str().is_empty(),
                "documents.path must not be empty",
            ),
            (
                self.documents.queue_capacity > 0,
                "documents.queue_capacity must be > 0",
            ),
            (
                (1..=100_000).contains(&self.documents.max_batch),
                "documents.max_batch must be within 1..=100000",
            ),
            (
                self.game.world_bounds_valid(),
                "game: world bounds must be finite with world_min_x < world_max_x and world_min_y < world_max_y",
            ),
            (self.game.max_positions > 0, "game.max_positions must be > 0"),
            (
                self.game.object_types_valid(),
                "game.object_types must be distinct names of 1 to 255 bytes (at most 1024)",
            ),
            (self.audio.frame_ms > 0, "audio.frame_ms must be > 0"),
            (
                self.audio.budget_ms >= self.audio.frame_ms
                    && self.audio.budget_frames() <= 1000,
                "audio.budget_ms must be at least frame_ms and at most 1000 frames",
            ),
            (
                (1..=1 << 20).contains(&self.audio.max_frame_bytes),
                "audio.max_frame_bytes must be within 1..=1048576",
            ),
            (
                self.bulk.max_compressed_bytes > 0,
                "bulk.max_compressed_bytes must be > 0",
            ),
            (
                (1..=1 << 30).contains(&self.bulk.max_decompressed_bytes),
                "bulk.max_decompressed_bytes must be within 1..=1073741824",
            ),
            (self.bulk.max_updates > 0, "bulk.max_updates must be > 0"),
            (
                (1..=19).contains(&self.bulk.level),
                "bulk.level must be within 1..=19",
            ),
            (
                !self.uploads.dir.as_os_str().is_empty(),
                "uploads.dir must not be empty",
            ),
            (
                self.uploads.min_chunk_size > 0
                    && self.uploads.min_chunk_size <= self.uploads.chunk_size
                    && self.uploads.chunk_size <= self.uploads.max_chunk_size,
                "uploads: 0 < min_chunk_size <= chunk_size <= max_chunk_size is required",
            ),
            (
                (1..=1_000_000).contains(&self.uploads.max_chunks),
                "uploads.max_chunks must be within 1..=1000000",
            ),
            (
                self.uploads.max_file_size > 0,
                "uploads.max_file_size must be > 0",
            ),
            (
                self.uploads.max_concurrent_per_user > 0,
                "uploads.max_concurrent_per_user must be > 0",
            ),
            (self.uploads.quota_bytes > 0, "uploads.quota_bytes must be > 0"),
            (
                self.uploads.expire_after_ms > 0,
                "uploads.expire_after_ms must be > 0",
            ),
            (
                self.uploads.max_pending_chunks > 0,
                "uploads.max_pending_chunks must be > 0",
            ),
        ];
        checks
            .iter()
            .filter(|(ok, _)| !ok)
            .map(|(_, msg)| (*msg).to_string())
            .collect()
    }

    /// The configuration as a TOML document (every key, defaults included).
    pub fn effective_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
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

    #[test]
    fn the_readme_lists_every_key_with_its_default() {
        let readme = include_str!("../../README.md");
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
