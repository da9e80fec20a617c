//! The shard runtime: one glommio executor per core, each owning the connections it accepted and
//! the topics that hash to it. Shards share nothing behind locks; they talk over the flume mesh.
//! This is the only layer that carries out [`Effect`](crate::core::Effect)s.
//!
//! - [`server`]: starting and stopping the executors.
//! - [`shard`]: the per-shard state every task on a shard reaches through an `Rc`.
//! - [`connection`]: one connection's session: decode, feed the socket state machine, interpret.
//! - [`interpret`]: the one interpreter of effects, for channel callbacks and owner tasks alike.
//! - [`topics`], [`pubsub`]: subscriptions and broadcast, local and across shards.
//! - [`mesh`], [`inbox`]: the bounded queues between shards and what serves them.
//! - [`mailbox`]: a connection's shard-facing half (its mailbox and outbound queue).
//! - [`credit`]: backpressure from subscribers' queues to the reader that published.
//! - [`transport`]: socket I/O.
//! - [`memory`]: handing freed memory back after connection storms.
//! - [`config`]: what the runtime is configured with ([`config::ServerConfig`]).

pub mod config;
pub(crate) mod connection;
pub(crate) mod credit;
pub(crate) mod inbox;
pub(crate) mod interpret;
pub(crate) mod mailbox;
pub mod memory;
pub(crate) mod mesh;
pub(crate) mod pubsub;
pub mod server;
pub(crate) mod shard;
pub(crate) mod topics;
pub mod transport;

use crate::core::Now;

/// The shard that owns `topic`: a stable hash (FNV-1a) modulo the shard count, so every shard
/// agrees without asking.
pub fn owner_of(topic: &str, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % shards as u64) as usize
}

/// Reads both clocks: the runtime's edge is the one place the core's time comes from.
pub(crate) fn now() -> Now {
    Now {
        instant: std::time::Instant::now(),
        unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn owner_is_stable_and_spreads() {
        assert_eq!(super::owner_of("room:lobby", 1), 0);
        let mut counts = [0; 4];
        for i in 0..1000 {
            counts[super::owner_of(&format!("room:{i}"), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 150), "{counts:?}");
        assert_eq!(super::owner_of("x", 7), super::owner_of("x", 7));
    }
}
