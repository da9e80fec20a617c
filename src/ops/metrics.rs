//! Counters each shard updates without locks (relaxed atomics it alone writes) and any shard can
//! read to answer `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! shard_metrics {
    ($($name:ident: $kind:literal, $help:literal;)*) => {
        /// One shard's counters.
        #[derive(Debug, Default)]
        #[repr(align(128))] // keep shards' counters on separate cache lines
        pub struct ShardMetrics {
            $(#[doc = $help] pub $name: AtomicU64,)*
        }

        impl ShardMetrics {
            fn render(all: &[ShardMetrics], out: &mut String) {
                $(
                    let _ = writeln!(out, "# HELP shardcast_{} {}", stringify!($name), $help);
                    let _ = writeln!(out, "# TYPE shardcast_{} {}", stringify!($name), $kind);
                    for (i, m) in all.iter().enumerate() {
                        let _ = writeln!(out, "shardcast_{}{{shard=\"{}\"}} {}", stringify!($name), i, m.$name.load(Relaxed));
                    }
                )*
            }
        }
    };
}

shard_metrics! {
    connections: "gauge", "Open WebSocket connections.";
    connections_total: "counter", "WebSocket connections accepted since start.";
    handshake_failures: "counter", "Connections that closed or timed out before completing the upgrade, or sent a bad one.";
    connect_refused: "counter", "Upgrades refused by the socket connect hook (HTTP 403).";
    messages_in: "counter", "WebSocket data messages received.";
    frames_out: "counter", "WebSocket frames written.";
    bytes_out: "counter", "Bytes written to WebSocket connections.";
    write_syscalls: "counter", "Vectored sends (SENDMSG submissions) made to sockets.";
    ring_wakeups: "counter", "Times the shard's socket ring woke its shard for completions that arrived after their submission (sends into full sockets, receives).";
    write_submissions: "counter", "io_uring_enter calls that handed sends to the kernel: frames_out / write_submissions is frames per submission.";
    broadcasts: "counter", "Broadcasts published from this shard.";
    deliveries: "counter", "Broadcast frames queued to subscribers on this shard.";
    deflate_compressions: "counter", "Messages compressed (permessage-deflate): once per broadcast and window for all its subscribers on every shard (counted where it happened), once per reply; attempts that did not pay are not counted.";
    frames_dropped_by_policy: "counter", "Queued frames replaced (latest value wins) or dropped (per-sender budget) for subscribers that were behind.";
    slow_consumer_disconnects: "counter", "Connections closed (1013) because their outbound backlog stayed behind past the timeout or reached the hard bound.";
    publisher_waits: "counter", "Times a reader waited for its subscribers to write its earlier broadcasts (publisher credit).";
    frame_timeouts: "counter", "Connections closed (1008) for a frame or fragmented message not completed within frame_timeout_ms.";
    partial_budget_closes: "counter", "Connections closed (1013) because the shard's bytes held in unfinished frames reached max_partial_bytes_per_shard.";
    partial_bytes: "gauge", "Bytes held in unfinished frames and messages by this shard's sockets.";
    sessions_parked: "gauge", "Sessions parked: idle, held as compact state with no task or future until their next event.";
    completion_overflows: "counter", "Times the socket ring's completion queue filled up and the kernel's overflow list was flushed into it.";
    receive_starved: "counter", "Receives that found the shard's shared receive buffers all taken (they resume as buffers come back).";
    receive_buffers: "gauge", "Connections holding a receive buffer (only while a frame is unfinished: an idle connection holds none).";
    accept_failures: "counter", "Failed accept calls (descriptor limit reached, among others).";
    connections_shed: "counter", "Connections accepted on the reserve descriptor and closed at once (HTTP 503) while at the descriptor limit.";
    protocol_errors: "counter", "Connections closed for a WebSocket or Phoenix protocol violation.";
    idle_timeouts: "counter", "Connections closed for silence past the idle timeout.";
    mesh_messages_in: "counter", "Messages received from other shards.";
}

impl ShardMetrics {
    /// Adds 1 to a counter or gauge.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Subtracts 1 from a gauge.
    pub fn dec(counter: &AtomicU64) {
        counter.fetch_sub(1, Relaxed);
    }
}

/// All shards' counters.
#[derive(Debug)]
pub struct Metrics {
    /// One entry per shard, indexed by shard id.
    pub shards: Box<[ShardMetrics]>,
}

impl Metrics {
    /// Zeroed counters for `shards` shards.
    pub fn new(shards: usize) -> Metrics {
        Metrics {
            shards: (0..shards).map(|_| ShardMetrics::default()).collect(),
        }
    }

    /// The counters of shard `id`; panics if there is no such shard.
    pub fn shard(&self, id: usize) -> &ShardMetrics {
        &self.shards[id]
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(out, "# HELP shardcast_shards Number of shards.\n# TYPE shardcast_shards gauge\nshardcast_shards {}", self.shards.len());
        ShardMetrics::render(&self.shards, &mut out);
        out
    }

    /// Open WebSocket connections, summed over the shards.
    pub fn total_connections(&self) -> u64 {
        self.shards
            .iter()
            .map(|m| m.connections.load(Relaxed))
            .sum()
    }
}
