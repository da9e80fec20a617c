//! Collaborative text documents: the operational-transform core (no I/O).
//!
//! The model is the central-server one of Jupiter, Google Wave and ot.js:
//!
//! - An [`Operation`] is a compound edit (`Retain`, `Insert`, `Delete`) over the whole document,
//!   in the ot.js array form on the wire (`[retain n, "insert", -delete]`); the simple form
//!   (`{"type": "insert", ...}` / `{"type": "delete", ...}`, or a list applied in order) is
//!   accepted too, see [`Operation::from_json`].
//! - Positions and lengths count Unicode scalar values ([`Chars`]) everywhere inside. Clients
//!   that count UTF-16 code units (JavaScript editors) are converted at the edge ([`Utf16`]);
//!   offsets that split a surrogate pair are refused. Grapheme clusters are not a unit: an `e`
//!   followed by a combining accent is two positions.
//! - [`transform`] satisfies TP1 with a fixed tie-break: its first argument's insert goes left.
//!   The server passes the submitted operation first, the client its pending one.
//! - The [`Document`] on the owner shard holds the text in a rope, the version (number of
//!   operations applied), a bounded history window, and per client the last applied `seq`.
//!   [`Document::submit`] rebases a submission over the revisions its sender had not seen,
//!   applies it and gives it the next version, even if it became a no-op.
//! - The [`Client`] state machine (synchronized / awaiting confirm / awaiting with buffer) keeps
//!   at most one operation in flight and rebases incoming operations over its own.
//!
//! Reconnects: a client re-joins with the last version it knows. If the history still reaches
//! back that far, it receives the revisions it missed ([`Document::ops_since`], each carrying its
//! sender's `client_id` and `seq`), treats its own among them as the acknowledgement, and resends
//! its operation in flight with the same `seq`; the document answers a resend of the last applied
//! `seq` with the original version instead of applying it again. Otherwise the client takes the
//! current text and version and its unacknowledged edits are lost.

mod client;
mod ot;
mod server;
#[cfg(test)]
mod sim;

pub use client::{CatchUp, Client, ClientError, ClientState, Outgoing};
pub use ot::{
    compose, transform, Chars, Component, OpError, Operation, Unit, Utf16, MAX_SIMPLE_OPS,
};
pub use server::{Applied, Document, DocumentLimits, Logged, Revision, SubmitError};
