//! I/O drivers on a shard: the accept loop ([`listener`]), one connection's reader task
//! ([`connection`]) and its batching writer with a bounded outbound queue ([`outbound`]). They
//! stay thin: decoding and protocol decisions live in [`crate::protocol`] and [`crate::channel`].

pub mod connection;
pub mod listener;
pub mod outbound;
pub mod stream;
