//! Socket I/O on a shard, knowing nothing of shards, topics or channels: the accept loop
//! ([`listener`]), the bounded outbound queue ([`outbound`]), and the shard's own io_uring that
//! writes those queues and receives into shared buffers ([`ring`]).

pub mod listener;
// One `unsafe impl`: the queue's promise to the ring that a send's frames outlive it.
#[allow(unsafe_code)]
pub mod outbound;
#[allow(unsafe_code)]
pub mod ring;
