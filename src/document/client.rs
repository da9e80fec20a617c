//! The client's side of the protocol (the ot.js client state machine): at most one operation
//! in flight, local edits made meanwhile buffered into one, and incoming operations rebased over
//! both. The JavaScript client mirrors it; this one drives the simulator and load tests.

use ropey::Rope;
use thiserror::Error;

use super::ot::{compose, transform, Chars, OpError, Operation, Unit};
use super::server::Revision;

/// An operation sent to (or to be resent to) the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing<U: Unit = Chars> {
    /// The edit, against the text at `base_version`.
    pub op: Operation<U>,
    /// The server version the operation applies to.
    pub base_version: u64,
    /// The client's sequence number for this operation, from 1; a resend keeps it.
    pub seq: u64,
}

/// The client state machine's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientState<U: Unit = Chars> {
    /// Nothing in flight: local edits are sent at once.
    Synchronized,
    /// Waiting for the server to acknowledge the operation in flight.
    AwaitingConfirm(Outgoing<U>),
    /// Waiting for the acknowledgement, with local edits made since composed into one.
    AwaitingWithBuffer(Outgoing<U>, Operation<U>),
}

/// What a re-joining client receives: the revisions it missed, when the server still has them,
/// or else the current state.
#[derive(Clone, Debug)]
pub enum CatchUp<U: Unit = Chars> {
    /// The missed revisions, oldest first.
    Revisions(Vec<Revision<U>>),
    /// The current `text` at `version`, replacing the client's copy.
    State {
        /// The current text.
        text: String,
        /// The version `text` is at.
        version: u64,
    },
}

/// Why a client could not apply an edit or what the server sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClientError {
    /// A revision or acknowledgement of version `got` arrived when `expected` was next.
    #[error("expected version {expected}, got {got}: re-join to resync")]
    OutOfOrder {
        /// The version that was next.
        expected: u64,
        /// The version received.
        got: u64,
    },
    /// An operation did not fit the client's text.
    #[error(transparent)]
    Op(#[from] OpError),
}

/// One client's copy of a document.
#[derive(Clone, Debug)]
pub struct Client<U: Unit = Chars> {
    id: String,
    text: Rope,
    version: u64,
    next_seq: u64,
    state: ClientState<U>,
}

impl<U: Unit> Client<U> {
    /// A client that joined and received `text` at `version`.
    pub fn new(id: impl Into<String>, text: &str, version: u64) -> Self {
        Self {
            id: id.into(),
            text: Rope::from_str(text),
            version,
            next_seq: 1,
            state: ClientState::Synchronized,
        }
    }

    /// The client id sent with each operation (its `client_id` in revisions).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The client's copy of the text, local edits included.
    pub fn text(&self) -> &Rope {
        &self.text
    }

    /// The last server version this client has incorporated.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Where the client is in the protocol: synchronized, or waiting for an acknowledgement.
    pub fn state(&self) -> &ClientState<U> {
        &self.state
    }

    /// The operation in flight, rebased to [`version`](Self::version): what to resend after
    /// re-joining.
    pub fn pending(&self) -> Option<&Outgoing<U>> {
        match &self.state {
            ClientState::Synchronized => None,
            ClientState::AwaitingConfirm(p) | ClientState::AwaitingWithBuffer(p, _) => Some(p),
        }
    }

    /// Applies a local edit; returns the operation to send, if nothing is in flight.
    pub fn edit(&mut self, op: Operation<U>) -> Result<Option<Outgoing<U>>, ClientError> {
        U::into_chars(op.clone(), &self.text)?.apply(&mut self.text)?;
        let (state, out) = match std::mem::replace(&mut self.state, ClientState::Synchronized) {
            ClientState::Synchronized => {
                let out = self.outgoing(op);
                (ClientState::AwaitingConfirm(out.clone()), Some(out))
            }
            ClientState::AwaitingConfirm(p) => (ClientState::AwaitingWithBuffer(p, op), None),
            ClientState::AwaitingWithBuffer(p, buffer) => (
                ClientState::AwaitingWithBuffer(p, compose(&buffer, &op)?),
                None,
            ),
        };
        self.state = state;
        Ok(out)
    }

    /// Handles an operation the server broadcast. The client's own operation coming back (after
    /// a reconnect, through the new connection) acknowledges it.
    pub fn receive(&mut self, rev: &Revision<U>) -> Result<Option<Outgoing<U>>, ClientError> {
        if let (Some(id), Some(seq), Some(p)) = (&rev.client_id, rev.seq, self.pending()) {
            if *id == self.id && seq == p.seq {
                return self.ack(rev.version, seq);
            }
        }
        self.expect(rev.version)?;
        // The pending operation reached the server after `rev`, so the server rebased it with
        // `transform(pending, rev)`; the same call here gives the same result.
        let incoming = match &mut self.state {
            ClientState::Synchronized => rev.op.clone(),
            ClientState::AwaitingConfirm(p) => {
                let (pending, incoming) = transform(&p.op, &rev.op)?;
                (p.op, p.base_version) = (pending, rev.version);
                incoming
            }
            ClientState::AwaitingWithBuffer(p, buffer) => {
                let (pending, incoming) = transform(&p.op, &rev.op)?;
                let (buffered, incoming) = transform(buffer, &incoming)?;
                (p.op, p.base_version, *buffer) = (pending, rev.version, buffered);
                incoming
            }
        };
        U::into_chars(incoming, &self.text)?.apply(&mut self.text)?;
        self.version = rev.version;
        Ok(None)
    }

    /// Handles the server's acknowledgement of `seq` at `version`; returns the buffered edits to
    /// send next. Acknowledgements of anything but the operation in flight (a resend's duplicate)
    /// are ignored.
    pub fn ack(&mut self, version: u64, seq: u64) -> Result<Option<Outgoing<U>>, ClientError> {
        if self.pending().is_none_or(|p| p.seq != seq) {
            return Ok(None);
        }
        self.expect(version)?;
        self.version = version;
        match std::mem::replace(&mut self.state, ClientState::Synchronized) {
            ClientState::AwaitingWithBuffer(_, buffer) => {
                let out = self.outgoing(buffer);
                self.state = ClientState::AwaitingConfirm(out.clone());
                Ok(Some(out))
            }
            _ => Ok(None),
        }
    }

    /// Catches up after re-joining; returns the operation in flight to resend with its
    /// original `seq` (the server applies it at most once).
    ///
    /// When the server no longer has the missed revisions, the client takes the current state
    /// and its unacknowledged edits are dropped: they cannot be rebased, and one that did reach
    /// the server will arrive as a broadcast like anyone else's.
    pub fn rejoin(&mut self, catch_up: CatchUp<U>) -> Result<Option<Outgoing<U>>, ClientError> {
        match catch_up {
            CatchUp::Revisions(revisions) => {
                for rev in &revisions {
                    self.receive(rev)?;
                }
            }
            CatchUp::State { text, version } => {
                self.text = Rope::from_str(&text);
                self.version = version;
                self.state = ClientState::Synchronized;
            }
        }
        Ok(self.pending().cloned())
    }

    fn outgoing(&mut self, op: Operation<U>) -> Outgoing<U> {
        self.next_seq += 1;
        Outgoing {
            op,
            base_version: self.version,
            seq: self.next_seq - 1,
        }
    }

    fn expect(&self, version: u64) -> Result<(), ClientError> {
        match self.version + 1 {
            expected if expected == version => Ok(()),
            expected => Err(ClientError::OutOfOrder {
                expected,
                got: version,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::server::{Document, DocumentLimits};

    fn ins(len: usize, pos: usize, s: &str) -> Operation {
        Operation::insert_at(len, pos, s).unwrap()
    }

    #[test]
    fn second_edit_before_the_ack_is_buffered_and_rebased() {
        let mut server = Document::from_snapshot("abc", 0, DocumentLimits::default());
        let mut a = Client::<Chars>::new("a", "abc", 0);
        let mut b = Client::<Chars>::new("b", "abc", 0);

        let a1 = a.edit(ins(3, 3, "1")).unwrap().unwrap();
        // Second edit before the first is acknowledged: buffered, not sent.
        assert_eq!(a.edit(ins(4, 4, "2")).unwrap(), None);
        let b1 = b.edit(ins(3, 0, "X")).unwrap().unwrap();

        // The server applies b's edit first, then a's first edit (rebased over b's).
        let rb = server
            .submit(b1.op, b1.base_version, Some("b"), Some(b1.seq))
            .unwrap();
        let ra = server
            .submit(a1.op, a1.base_version, Some("a"), Some(a1.seq))
            .unwrap();
        assert_eq!(b.ack(rb.version(), b1.seq).unwrap(), None);

        // a gets b's edit, rebased over its pending and buffered edits; then its ack, which
        // releases the buffer, now based on version 2 and never rebased over a's own edit.
        assert_eq!(a.receive(rb.logged.revision()).unwrap(), None);
        assert_eq!(a.text().to_string(), "Xabc12");
        let a2 = a.ack(ra.version(), a1.seq).unwrap().unwrap();
        assert_eq!((a2.base_version, a2.seq), (2, 2));
        b.receive(ra.logged.revision()).unwrap();
        let ra2 = server
            .submit(a2.op, a2.base_version, Some("a"), Some(a2.seq))
            .unwrap();
        a.ack(ra2.version(), a2.seq).unwrap();
        b.receive(ra2.logged.revision()).unwrap();

        for text in [a.text(), b.text()] {
            assert_eq!(text, server.text());
        }
        assert_eq!(server.text().to_string(), "Xabc12");
        assert_eq!(a.state(), &ClientState::Synchronized);
    }

    #[test]
    fn rejoin_catches_up_and_recognizes_its_own_operation() {
        let mut server = Document::new(DocumentLimits::default());
        let mut a = Client::<Chars>::new("a", "", 0);
        let sent = a.edit(ins(0, 0, "a")).unwrap().unwrap();
        a.edit(ins(1, 1, "b")).unwrap();
        // The first edit reached the server, but the connection dropped before the ack.
        server
            .submit(ins(0, 0, "x"), 0, Some("other"), Some(1))
            .unwrap();
        server
            .submit(sent.op.clone(), 0, Some("a"), Some(sent.seq))
            .unwrap();
        let missed = server.ops_since(a.version()).unwrap();
        let missed = missed.map(|l| l.revision().clone()).collect();
        // Own revision acknowledged; the buffered edit is now in flight, rebased.
        let resend = a.rejoin(CatchUp::Revisions(missed)).unwrap().unwrap();
        assert_eq!((resend.seq, resend.base_version), (2, 2));
        let applied = server
            .submit(resend.op.clone(), 2, Some("a"), Some(2))
            .unwrap();
        a.ack(applied.version(), 2).unwrap();
        // The same operation arriving again (from the old connection) is not applied again.
        assert!(
            server
                .submit(resend.op, 2, Some("a"), Some(2))
                .unwrap()
                .duplicate
        );
        assert_eq!(a.ack(applied.version(), 2).unwrap(), None);
        assert_eq!(a.text(), server.text());
        assert_eq!(server.text().to_string(), "abx");
    }

    #[test]
    fn out_of_order_revisions_are_errors() {
        let mut a = Client::<Chars>::new("a", "", 0);
        let rev = Revision {
            version: 2,
            op: ins(0, 0, "x"),
            client_id: None,
            seq: None,
        };
        assert_eq!(
            a.receive(&rev),
            Err(ClientError::OutOfOrder {
                expected: 1,
                got: 2
            })
        );
    }
}
