//! The shard runtime: one glommio executor per core, each owning the connections it accepted and
//! the topics that hash to it. Shards share nothing behind locks; they talk over the flume mesh.
//!
//! - [`server`]: starting and stopping the executors.
//! - [`context`]: the per-shard state every task on a shard reaches through an `Rc`.
//! - [`pubsub`]: topic subscriptions and broadcast, local and across shards.
//! - [`mesh`]: the bounded queues between shards.
//! - [`owner`]: running work on a topic's owner shard, where per-topic authoritative state lives.

pub mod context;
pub mod mesh;
pub mod owner;
pub mod pubsub;
pub mod server;

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
