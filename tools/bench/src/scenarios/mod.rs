//! The scenarios, one file each (fan-out, rooms, game and audio are one engine: `pubsub`).

pub(crate) mod connect;
pub(crate) mod echo;
pub(crate) mod idle;
pub(crate) mod pubsub;
