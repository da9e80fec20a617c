//! The runtime's configuration: what the shards, the mesh and the sockets need.

pub use crate::core::socket::SocketLimits;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// What the runtime needs: the listener, the shards, and the WebSocket, outbound and mesh
/// limits. The server's configuration file composes it (`crate::config::Config`), keeping these
/// keys at the top level and in `[websocket]`, `[outbound]`, `[mesh]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address every shard binds with SO_REUSEPORT.
    pub listen: SocketAddr,
    /// Number of shards (executors, one per core). 0 means one per available core.
    pub shards: usize,
    /// Pin shard N to CPU N (modulo the CPUs available).
    pub pin_shards: bool,
    /// Serve a raw WebSocket echo endpoint at `/echo` (for conformance suites such as Autobahn).
    pub echo_endpoint: bool,
    /// Locked memory each executor's io_uring may use, in bytes.
    pub io_memory: usize,
    /// On shutdown, how long connections get to close (1001) before the shards stop.
    pub shutdown_timeout_ms: u64,
    /// Frame and message limits, timeouts.
    pub websocket: WebSocketConfig,
    /// Per-connection queue bounds and write batching.
    pub outbound: OutboundConfig,
    /// Queues between shards.
    pub mesh: MeshConfig,
    /// What one socket may make the server hold (names, joins).
    pub channels: SocketLimits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 4000)),
            shards: 0,
            pin_shards: true,
            echo_endpoint: false,
            io_memory: 512 * 1024,
            shutdown_timeout_ms: 10_000,
            websocket: WebSocketConfig::default(),
            outbound: OutboundConfig::default(),
            mesh: MeshConfig::default(),
            channels: SocketLimits::default(),
        }
    }
}

impl ServerConfig {
    /// The number of shards to run: `shards`, or one per available core when 0.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            self.shards
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// Every invalid value of the runtime's keys, with the reason.
    pub fn problems(&self) -> Vec<String> {
        let channels = &self.channels;
        let checks = [
            (
                (1..=65_535).contains(&channels.max_topic_bytes),
                "channels.max_topic_bytes must be within 1..=65535",
            ),
            (
                (1..=65_535).contains(&channels.max_event_bytes),
                "channels.max_event_bytes must be within 1..=65535",
            ),
            (
                channels.max_joins_per_socket > 0,
                "channels.max_joins_per_socket must be > 0",
            ),
            (
                self.websocket.max_frame_size > 0,
                "websocket.max_frame_size must be > 0",
            ),
            (
                self.websocket.max_message_size > 0,
                "websocket.max_message_size must be > 0",
            ),
            (
                self.websocket.idle_timeout_ms > 0,
                "websocket.idle_timeout_ms must be > 0",
            ),
            (
                self.websocket.handshake_timeout_ms > 0,
                "websocket.handshake_timeout_ms must be > 0",
            ),
            (
                self.websocket.write_timeout_ms > 0,
                "websocket.write_timeout_ms must be > 0",
            ),
            (
                self.websocket.close_timeout_ms > 0,
                "websocket.close_timeout_ms must be > 0",
            ),
            (
                self.websocket.park_after_ms > 0,
                "websocket.park_after_ms must be > 0",
            ),
            (
                self.websocket.deflate_level <= 9,
                "websocket.deflate_level must be within 0..=9",
            ),
            (
                self.websocket.max_request_head >= 512,
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
                self.outbound.behind_timeout_ms > 0,
                "outbound.behind_timeout_ms must be > 0",
            ),
            (
                self.outbound.hard_limit_factor >= 1,
                "outbound.hard_limit_factor must be >= 1",
            ),
            (
                self.outbound.publisher_credit_bytes > 0,
                "outbound.publisher_credit_bytes must be > 0",
            ),
            (
                self.websocket.frame_timeout_ms > 0,
                "websocket.frame_timeout_ms must be > 0",
            ),
            (
                self.websocket.max_partial_bytes_per_shard > 0,
                "websocket.max_partial_bytes_per_shard must be > 0",
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
        crate::ops::checks::failed(&checks)
    }
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
    /// Once a frame (or a fragmented message) has begun, the rest must arrive within this.
    pub frame_timeout_ms: u64,
    /// Bytes all of a shard's sockets may hold in frames not yet complete; a read past it closes
    /// that socket with 1013.
    pub max_partial_bytes_per_shard: usize,
    /// A connection that sends nothing (not even a heartbeat) for this long is closed.
    /// Phoenix uses 60 s; its clients heartbeat every 30 s.
    pub idle_timeout_ms: u64,
    /// After the server sends a close frame, how long it waits for the client's close.
    pub close_timeout_ms: u64,
    /// A session that has had no input for this long is parked: only its compact state stays
    /// (no task), until its next event.
    pub park_after_ms: u64,
    /// A socket that accepts no bytes for this long while output is pending is dropped.
    pub write_timeout_ms: u64,
    /// Largest HTTP request head accepted during the upgrade.
    pub max_request_head: usize,
    /// Negotiate permessage-deflate (RFC 7692) when a client offers it.
    pub deflate: bool,
    /// Messages shorter than this go uncompressed.
    pub deflate_min_bytes: usize,
    /// zlib compression level, 0 (none) to 9 (smallest).
    pub deflate_level: u32,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            max_frame_size: 1 << 20,
            max_message_size: 1 << 20,
            handshake_timeout_ms: 10_000,
            frame_timeout_ms: 10_000,
            max_partial_bytes_per_shard: 128 << 20,
            idle_timeout_ms: 60_000,
            close_timeout_ms: 5_000,
            park_after_ms: 1_000,
            write_timeout_ms: 30_000,
            max_request_head: 8 * 1024,
            deflate: true,
            deflate_min_bytes: 256,
            deflate_level: 1,
        }
    }
}

impl WebSocketConfig {
    /// `handshake_timeout_ms` as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
    /// How permessage-deflate compresses.
    pub fn deflate_params(&self) -> crate::protocol::deflate::Params {
        crate::protocol::deflate::Params {
            min_bytes: self.deflate_min_bytes,
            level: self.deflate_level,
        }
    }
    /// `frame_timeout_ms` as a duration.
    pub fn frame_timeout(&self) -> Duration {
        Duration::from_millis(self.frame_timeout_ms)
    }
    /// `idle_timeout_ms` as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    /// `close_timeout_ms` as a duration.
    pub fn close_timeout(&self) -> Duration {
        Duration::from_millis(self.close_timeout_ms)
    }
    /// `park_after_ms` as a duration.
    pub fn park_after(&self) -> Duration {
        Duration::from_millis(self.park_after_ms)
    }
    /// `write_timeout_ms` as a duration.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
}

/// `[outbound]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Frames queued past which a connection is behind.
    pub max_queued_frames: usize,
    /// Bytes queued past which a connection is behind.
    pub max_queued_bytes: usize,
    /// A connection that stays behind this long is closed as a slow consumer (1013).
    pub behind_timeout_ms: u64,
    /// Reaching this multiple of the two bounds above closes at once (the memory cap).
    pub hard_limit_factor: usize,
    /// Bytes of one reader's broadcasts that local subscribers may have queued and not written
    /// before the server takes that reader's next message (backpressure on publishers).
    pub publisher_credit_bytes: usize,
    /// Longest a publisher waits for that credit (a subscriber that stopped reading must not
    /// stall a room).
    pub publisher_patience_ms: u64,
    /// Frames gathered into one vectored write.
    pub write_batch_frames: usize,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            max_queued_frames: 4096,
            max_queued_bytes: 4 << 20,
            behind_timeout_ms: 5_000,
            hard_limit_factor: 4,
            publisher_credit_bytes: 1 << 20,
            publisher_patience_ms: 100,
            write_batch_frames: 64,
        }
    }
}

impl OutboundConfig {
    /// `behind_timeout_ms` as a duration.
    pub fn behind_timeout(&self) -> Duration {
        Duration::from_millis(self.behind_timeout_ms)
    }
    /// `publisher_patience_ms` as a duration.
    pub fn publisher_patience(&self) -> Duration {
        Duration::from_millis(self.publisher_patience_ms)
    }
}

/// `[mesh]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeshConfig {
    /// Capacity of each shard's inbound queues (publishes to owned topics, and deliveries).
    pub queue_capacity: usize,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            queue_capacity: 8192,
        }
    }
}
