//! The server's side of one document: the text, the version, the history window of applied
//! operations, and the last operation applied per client (to acknowledge resends instead of
//! applying them twice). Pure: persistence and networking are the caller's.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use ropey::Rope;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::ot::Utf16;
use super::ot::{transform, Chars, OpError, Operation, Unit};

/// Limits of one document; all configurable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DocumentLimits {
    /// Most scalar values the text may grow to (edits that shrink an oversized text pass).
    pub max_chars: usize,
    /// Largest operation accepted, see [`Operation::size`].
    pub max_op_size: usize,
    /// Applied operations kept to rebase late submissions over; a client further behind must
    /// re-join.
    pub history: usize,
    /// Clients whose last applied `seq` is remembered to recognize resends. The one quiet
    /// longest is forgotten first; a resend from a forgotten client would be applied again, so
    /// keep this well above the number of clients editing one document at once.
    pub recent_clients: usize,
}

impl Default for DocumentLimits {
    fn default() -> Self {
        Self {
            max_chars: 5_000_000,
            max_op_size: 100_000,
            history: 1_000,
            recent_clients: 10_000,
        }
    }
}

/// One applied operation as persisted, replayed and sent to clients; `version` is the document
/// version it produced (it applies to version `version - 1`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Revision<U: Unit = Chars> {
    /// The document version this revision produced.
    pub version: u64,
    /// The operation as applied (rebased), on the text at `version - 1`.
    pub op: Operation<U>,
    /// The submitting client, if it identified itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The submitting client's sequence number, if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// A revision in the history window, kept in both units so that a submission counted in
/// either can be rebased without the older texts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    revision: Revision,
    op_utf16: Operation<Utf16>,
}

impl Logged {
    /// The version this revision produced.
    pub fn version(&self) -> u64 {
        self.revision.version
    }

    /// The revision, counted in scalar values.
    pub fn revision(&self) -> &Revision {
        &self.revision
    }

    /// The operation counted in `U`.
    pub fn op<U: Unit>(&self) -> &Operation<U> {
        U::pick(&self.revision.op, &self.op_utf16)
    }

    /// The revision counted in `U`, for a client that joined with that unit.
    pub fn revision_in<U: Unit>(&self) -> Revision<U> {
        Revision {
            version: self.revision.version,
            op: self.op::<U>().clone(),
            client_id: self.revision.client_id.clone(),
            seq: self.revision.seq,
        }
    }
}

/// What [`Document::submit`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The operation as applied (rebased), with the version it produced.
    pub logged: Arc<Logged>,
    /// True if this was a resend of an operation applied before: acknowledge it with
    /// `logged.version()` again, do not broadcast it.
    pub duplicate: bool,
}

impl Applied {
    /// The version the operation produced (the one to acknowledge).
    pub fn version(&self) -> u64 {
        self.logged.version()
    }
}

/// Why a submission, catch-up or replay was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SubmitError {
    /// `base_version` is past the document's current `version`.
    #[error(
        "version {base_version} is ahead of the document (version {version}): re-join to resync"
    )]
    Ahead {
        /// The version the submission is based on.
        base_version: u64,
        /// The document's version.
        version: u64,
    },
    /// `base_version` is before `oldest`, the oldest version the history still rebases from.
    #[error("version {base_version} is older than the retained history (oldest {oldest}): re-join to resync")]
    TooOld {
        /// The version the submission is based on.
        base_version: u64,
        /// The oldest version the history still rebases from.
        oldest: u64,
    },
    /// `seq` is below `last`, the client's last applied `seq`: an old resend, not applied.
    #[error("seq {seq} is older than seq {last}, the last one applied for this client")]
    StaleSeq {
        /// The `seq` submitted.
        seq: u64,
        /// The client's last applied `seq`.
        last: u64,
    },
    /// The text would grow to `len` scalar values, over [`DocumentLimits::max_chars`] (`max`).
    #[error("the document would grow to {len} characters, over the limit of {max}")]
    DocumentTooLarge {
        /// Scalar values the text would have.
        len: usize,
        /// [`DocumentLimits::max_chars`].
        max: usize,
    },
    /// A replayed revision's version `got` is not the one after the document's `version`.
    #[error("replayed revision {got} does not follow version {version}")]
    OutOfOrder {
        /// The replayed revision's version.
        got: u64,
        /// The document's version.
        version: u64,
    },
    /// The operation is invalid, too large, or does not apply to the text.
    #[error(transparent)]
    Op(#[from] OpError),
}

impl SubmitError {
    /// True if the client's view is unusable and it must re-join to get the current state.
    pub fn needs_resync(&self) -> bool {
        matches!(self, Self::Ahead { .. } | Self::TooOld { .. })
    }
}

/// The last applied operation of each recent client, evicting the client that has been quiet
/// longest once over capacity.
#[derive(Debug, Default)]
struct RecentClients {
    by_client: HashMap<String, Arc<Logged>>,
    by_version: BTreeMap<u64, String>,
}

impl RecentClients {
    fn get(&self, client_id: &str) -> Option<&Arc<Logged>> {
        self.by_client.get(client_id)
    }

    fn record(&mut self, logged: &Arc<Logged>, cap: usize) {
        let Some(client_id) = &logged.revision.client_id else {
            return;
        };
        if logged.revision.seq.is_none() {
            return;
        }
        if let Some(old) = self.by_client.insert(client_id.clone(), logged.clone()) {
            self.by_version.remove(&old.version());
        }
        self.by_version.insert(logged.version(), client_id.clone());
        while self.by_client.len() > cap {
            if let Some((_, evicted)) = self.by_version.pop_first() {
                self.by_client.remove(&evicted);
            }
        }
    }
}

/// One document on its owner shard.
#[derive(Debug)]
pub struct Document {
    text: Rope,
    version: u64,
    history: VecDeque<Arc<Logged>>,
    recent: RecentClients,
    limits: DocumentLimits,
}

impl Document {
    /// An empty document at version 0.
    pub fn new(limits: DocumentLimits) -> Self {
        Self::from_snapshot("", 0, limits)
    }

    /// A document restored from a snapshot; [`replay`](Self::replay) the revisions logged
    /// after it. History before the snapshot is gone, so clients behind it re-join.
    pub fn from_snapshot(text: &str, version: u64, limits: DocumentLimits) -> Self {
        Self {
            text: Rope::from_str(text),
            version,
            history: VecDeque::new(),
            recent: RecentClients::default(),
            limits,
        }
    }

    /// The current text, at [`version`](Self::version).
    pub fn text(&self) -> &Rope {
        &self.text
    }

    /// Number of operations applied since the document was created.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The limits the document was created with.
    pub fn limits(&self) -> &DocumentLimits {
        &self.limits
    }

    /// The oldest version a submission may be based on.
    pub fn oldest_version(&self) -> u64 {
        self.version - self.history.len() as u64
    }

    /// The last `seq` applied for `client_id`, if it is still remembered.
    pub fn last_seq(&self, client_id: &str) -> Option<u64> {
        self.recent.get(client_id).and_then(|l| l.revision.seq)
    }

    /// The revisions applied after `version`, oldest first: what a client that re-joins at
    /// `version` has missed.
    pub fn ops_since(
        &self,
        version: u64,
    ) -> Result<impl ExactSizeIterator<Item = &Arc<Logged>>, SubmitError> {
        if version > self.version {
            return Err(SubmitError::Ahead {
                base_version: version,
                version: self.version,
            });
        }
        let oldest = self.oldest_version();
        if version < oldest {
            return Err(SubmitError::TooOld {
                base_version: version,
                oldest,
            });
        }
        Ok(self.history.range((version - oldest) as usize..))
    }

    /// Length of the text at `version`, counted in `U`: what a client's operation based on
    /// that version applies to (needed to parse the simple JSON form).
    pub fn len_at<U: Unit>(&self, version: u64) -> Result<usize, SubmitError> {
        Ok(self
            .ops_since(version)?
            .next()
            .map_or_else(|| U::rope_len(&self.text), |l| l.op::<U>().base_len()))
    }

    /// Applies a client's operation `op`, based on `base_version` and counted in `U`.
    ///
    /// The operation is rebased over every revision the client had not seen, with
    /// `transform(submitted, logged)`: the submitted operation goes left on a tie. It gets the
    /// next version even if rebasing made it a no-op. A resend (same `client_id` and `seq` as
    /// the last applied one) is not applied again but answered with the original revision.
    pub fn submit<U: Unit>(
        &mut self,
        op: Operation<U>,
        base_version: u64,
        client_id: Option<&str>,
        seq: Option<u64>,
    ) -> Result<Applied, SubmitError> {
        if let (Some(id), Some(seq)) = (client_id, seq) {
            if let Some(last) = self.recent.get(id) {
                let last_seq = last.revision.seq.unwrap_or_default();
                if seq == last_seq {
                    return Ok(Applied {
                        logged: last.clone(),
                        duplicate: true,
                    });
                }
                if seq < last_seq {
                    return Err(SubmitError::StaleSeq {
                        seq,
                        last: last_seq,
                    });
                }
            }
        }
        let (size, max) = (op.size(), self.limits.max_op_size);
        if size > max {
            return Err(OpError::TooLarge { size, max }.into());
        }
        op.check_base(self.len_at::<U>(base_version)?)?;
        let mut op = op;
        for logged in self.ops_since(base_version)? {
            op = transform(&op, logged.op::<U>())?.0;
        }
        let op = U::into_chars(op, &self.text)?;
        let (len, max) = (op.target_len(), self.limits.max_chars);
        if len > max && len > op.base_len() {
            return Err(SubmitError::DocumentTooLarge { len, max });
        }
        let logged = self.commit(op, client_id, seq)?;
        Ok(Applied {
            logged,
            duplicate: false,
        })
    }

    /// Re-applies revisions logged after the snapshot this document was restored from.
    pub fn replay(
        &mut self,
        revisions: impl IntoIterator<Item = Revision>,
    ) -> Result<(), SubmitError> {
        for revision in revisions {
            if revision.version != self.version + 1 {
                return Err(SubmitError::OutOfOrder {
                    got: revision.version,
                    version: self.version,
                });
            }
            self.commit(revision.op, revision.client_id.as_deref(), revision.seq)?;
        }
        Ok(())
    }

    fn commit(
        &mut self,
        op: Operation,
        client_id: Option<&str>,
        seq: Option<u64>,
    ) -> Result<Arc<Logged>, OpError> {
        // The UTF-16 form needs the text the operation applies to, so it is made now.
        let op_utf16 = op.to_utf16(&self.text)?;
        op.apply(&mut self.text)?;
        self.version += 1;
        let logged = Arc::new(Logged {
            revision: Revision {
                version: self.version,
                op,
                client_id: client_id.map(str::to_owned),
                seq,
            },
            op_utf16,
        });
        self.history.push_back(logged.clone());
        while self.history.len() > self.limits.history {
            self.history.pop_front();
        }
        self.recent.record(&logged, self.limits.recent_clients);
        Ok(logged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(text: &str) -> Document {
        Document::from_snapshot(text, 0, DocumentLimits::default())
    }

    fn ins(len: usize, pos: usize, s: &str) -> Operation {
        Operation::insert_at(len, pos, s).unwrap()
    }

    fn del(len: usize, pos: usize, n: usize) -> Operation {
        Operation::delete_at(len, pos, n).unwrap()
    }

    #[test]
    fn rebases_concurrent_submissions() {
        let mut d = doc("abcdef");
        assert_eq!(d.submit(del(6, 1, 2), 0, None, None).unwrap().version(), 1);
        // Based on version 0, it never saw the first delete.
        let second = d.submit(del(6, 2, 2), 0, None, None).unwrap();
        assert_eq!(d.text().to_string(), "aef");
        assert_eq!(second.logged.revision().op, del(4, 1, 1));

        let mut d = doc("abcdef");
        d.submit(del(6, 1, 3), 0, None, None).unwrap();
        d.submit(ins(6, 2, "X"), 0, None, None).unwrap();
        assert_eq!(d.text().to_string(), "aXef");
    }

    #[test]
    fn submitted_insert_goes_left() {
        let mut d = doc("xy");
        d.submit(ins(2, 1, "A"), 0, None, None).unwrap();
        d.submit(ins(2, 1, "B"), 0, None, None).unwrap();
        assert_eq!(d.text().to_string(), "xBAy");
    }

    #[test]
    fn noop_after_rebase_still_gets_a_version() {
        let mut d = doc("abc");
        d.submit(del(3, 1, 1), 0, None, None).unwrap();
        let applied = d.submit(del(3, 1, 1), 0, None, None).unwrap();
        assert!(applied.logged.revision().op.is_noop());
        assert_eq!((applied.version(), d.version()), (2, 2));
        assert_eq!(d.text().to_string(), "ac");
    }

    #[test]
    fn versions_outside_history_need_resync() {
        let limits = DocumentLimits {
            history: 2,
            ..DocumentLimits::default()
        };
        let mut d = Document::from_snapshot("", 0, limits);
        for v in 0..3 {
            d.submit(ins(v, 0, "a"), v as u64, None, None).unwrap();
        }
        let ahead = d.submit(ins(3, 0, "a"), 4, None, None).unwrap_err();
        assert!(matches!(
            ahead,
            SubmitError::Ahead {
                base_version: 4,
                version: 3
            }
        ));
        assert!(ahead.needs_resync());
        let old = d.submit(ins(0, 0, "a"), 0, None, None).unwrap_err();
        assert!(matches!(
            old,
            SubmitError::TooOld {
                base_version: 0,
                oldest: 1
            }
        ));
        assert!(old.needs_resync());
        assert_eq!(d.len_at::<Chars>(1), Ok(1));
        d.submit(ins(1, 1, "b"), 1, None, None).unwrap();
        assert_eq!(d.text().to_string(), "aaab");
        assert!(!SubmitError::Op(OpError::Empty).needs_resync());
    }

    #[test]
    fn resends_are_acknowledged_not_reapplied() {
        let mut d = doc("");
        let first = d.submit(ins(0, 0, "a"), 0, Some("c1"), Some(1)).unwrap();
        d.submit(ins(1, 0, "b"), 1, Some("c2"), Some(1)).unwrap();
        // After a reconnect c1 resends seq 1 based on the version it knew.
        let resent = d.submit(ins(0, 0, "a"), 0, Some("c1"), Some(1)).unwrap();
        assert!(resent.duplicate);
        assert_eq!(resent.version(), first.version());
        assert_eq!(d.text().to_string(), "ba");
        assert_eq!(d.last_seq("c1"), Some(1));
        d.submit(ins(2, 2, "c"), 2, Some("c1"), Some(2)).unwrap();
        assert_eq!(
            d.submit(ins(0, 0, "a"), 0, Some("c1"), Some(1)),
            Err(SubmitError::StaleSeq { seq: 1, last: 2 })
        );
    }

    #[test]
    fn remembers_a_bounded_number_of_clients() {
        let limits = DocumentLimits {
            recent_clients: 2,
            ..DocumentLimits::default()
        };
        let mut d = Document::new(limits);
        for (i, id) in ["a", "b", "a", "c"].into_iter().enumerate() {
            d.submit(ins(i, 0, id), i as u64, Some(id), Some(i as u64))
                .unwrap();
        }
        // "b" has been quiet longest.
        assert_eq!(d.last_seq("b"), None);
        assert_eq!((d.last_seq("a"), d.last_seq("c")), (Some(2), Some(3)));
    }

    #[test]
    fn enforces_size_limits() {
        let limits = DocumentLimits {
            max_chars: 3,
            max_op_size: 5,
            ..DocumentLimits::default()
        };
        let mut d = Document::from_snapshot("abcd", 0, limits);
        assert!(matches!(
            d.submit(ins(4, 0, "123456"), 0, None, None),
            Err(SubmitError::Op(OpError::TooLarge { max: 5, .. }))
        ));
        assert_eq!(
            d.submit(ins(4, 0, "x"), 0, None, None),
            Err(SubmitError::DocumentTooLarge { len: 5, max: 3 })
        );
        // Shrinking an oversized document is allowed.
        d.submit(del(4, 0, 1), 0, None, None).unwrap();
        assert_eq!(d.text().to_string(), "bcd");
        assert!(matches!(
            d.submit(ins(2, 0, "x"), 1, None, None),
            Err(SubmitError::Op(OpError::BaseLength {
                expected: 2,
                actual: 3
            }))
        ));
    }

    #[test]
    fn utf16_submissions_rebase_over_scalar_ones() {
        let mut d = doc("a😀b");
        // A scalar client inserts before the emoji, a UTF-16 client after it, concurrently.
        d.submit(ins(3, 1, "x"), 0, None, None).unwrap();
        let op16 = Operation::<Utf16>::insert_at(4, 3, "👍").unwrap();
        let applied = d.submit(op16, 0, None, None).unwrap();
        assert_eq!(d.text().to_string(), "ax😀👍b");
        assert_eq!(applied.logged.revision().op, ins(4, 3, "👍"));
        assert_eq!(
            *applied.logged.op::<Utf16>(),
            Operation::insert_at(5, 4, "👍").unwrap()
        );
        assert_eq!(d.len_at::<Utf16>(1), Ok(5));
        let split = Operation::<Utf16>::insert_at(7, 3, "?").unwrap();
        assert_eq!(
            d.submit(split, 2, None, None),
            Err(SubmitError::Op(OpError::SplitsSurrogatePair { offset: 3 }))
        );
    }

    #[test]
    fn snapshot_plus_replay_restores_the_document() {
        let mut live = doc("hello");
        let snapshot = (live.text().to_string(), live.version());
        let mut log = Vec::new();
        for (i, op) in [ins(5, 5, " world"), del(11, 0, 1), ins(10, 0, "H")]
            .into_iter()
            .enumerate()
        {
            let applied = live
                .submit(op, i as u64, Some("c"), Some(i as u64))
                .unwrap();
            // What persistence writes and reads back.
            let json = serde_json::to_string(applied.logged.revision()).unwrap();
            log.push(serde_json::from_str::<Revision>(&json).unwrap());
        }
        assert_eq!(
            serde_json::to_value(&log[1]).unwrap(),
            json!({"version": 2, "op": [-1, 10], "client_id": "c", "seq": 1})
        );
        let mut restored =
            Document::from_snapshot(&snapshot.0, snapshot.1, DocumentLimits::default());
        restored.replay(log.clone()).unwrap();
        assert_eq!(restored.text(), live.text());
        assert_eq!(restored.version(), 3);
        assert_eq!(restored.last_seq("c"), Some(2));
        assert!(
            restored
                .submit(ins(10, 0, "H"), 2, Some("c"), Some(2))
                .unwrap()
                .duplicate
        );
        let mut gap = doc("hello");
        assert_eq!(
            gap.replay(log.into_iter().skip(1)),
            Err(SubmitError::OutOfOrder { got: 2, version: 0 })
        );
    }
}
