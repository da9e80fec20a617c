//! Addresses of channels: which connection, topic and join a message is for.

use super::Topic;
use crate::protocol::phoenix::ByteString;
use std::fmt;
use std::marker::PhantomData;

/// Identifies one connection server-wide: the shard in the high 16 bits, a counter below.
pub type ConnId = u64;

/// The shard a connection lives on, from its id.
pub fn shard_of(conn_id: ConnId) -> usize {
    (conn_id >> 48) as usize
}

/// Where a channel lives: its connection (whose id names the shard), topic and join. A message
/// sent to an address whose join has been left or replaced is dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnAddr {
    /// The connection.
    pub conn_id: ConnId,
    /// The joined topic.
    pub topic: Topic,
    /// The join this address is for.
    pub join_ref: ByteString,
}

impl ConnAddr {
    /// The shard the connection lives on.
    pub fn shard(&self) -> usize {
        shard_of(self.conn_id)
    }
}

/// A channel's address that only takes the channel's own message type `M` (its
/// [`Channel::Info`](super::Channel::Info)), so an owner task cannot send it anything else.
pub struct Addr<M> {
    raw: ConnAddr,
    _message: PhantomData<fn(M)>,
}

impl<M> Addr<M> {
    pub(crate) fn new(raw: ConnAddr) -> Addr<M> {
        Addr {
            raw,
            _message: PhantomData,
        }
    }

    /// The untyped address (connection, topic, join).
    pub fn raw(&self) -> &ConnAddr {
        &self.raw
    }

    /// The connection.
    pub fn conn_id(&self) -> ConnId {
        self.raw.conn_id
    }
}

impl<M> Clone for Addr<M> {
    fn clone(&self) -> Self {
        Addr::new(self.raw.clone())
    }
}

impl<M> PartialEq for Addr<M> {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl<M> Eq for Addr<M> {}

impl<M> fmt::Debug for Addr<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.raw.fmt(f)
    }
}
