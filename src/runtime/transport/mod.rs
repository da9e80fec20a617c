//! Socket I/O on a shard, knowing nothing of shards, topics or channels: the accept loop
//! ([`listener`]), the TCP stream a connection's reader and writer share ([`stream`]), and the
//! bounded outbound queue with its batching writer ([`outbound`]).

pub mod listener;
pub mod outbound;
#[allow(unsafe_code)]
pub mod ring;
pub mod stream;
