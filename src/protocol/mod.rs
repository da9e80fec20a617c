//! Wire codecs. Nothing in here performs I/O: every decoder works on byte slices or [`bytes::Bytes`]
//! so it can be unit- and property-tested in isolation.

pub mod binary;
pub mod deflate;
pub mod http;
pub mod phoenix;
pub mod websocket;
