//! The owner side of `document:<id>`: this shard's loaded documents and the pipeline every
//! operation goes through, in one order per document:
//!
//! 1. `submit` rebases it over the revisions its sender had not seen and applies it in memory
//!    (the next operation can be rebased over it at once);
//! 2. its revision is appended to the store's log (enqueued in version order);
//! 3. once the store has committed it — and every version before it — it becomes **durable**:
//!    it is acknowledged to its sender and broadcast to the others.
//!
//! Clients are only ever shown durable state: `document_state` and catch-ups are cut at the
//! durable version, so a client never learns of a version a crash could take back. A document
//! whose append fails is dropped from memory (the next use reloads what is stored) and its
//! subscribers are told to resync.

use super::{doc_id, DocumentServices};
use crate::core::{Addr, ConnId, OwnerCtx, Payload, ReplyRef, ReplyStatus, Topic};
use crate::document::{
    Applied, Chars, Document, Logged, OpError, Operation, SubmitError, Unit, Utf16,
};
use crate::storage::documents::{LogEntry, StoreError, StoredDocument};
use ropey::Rope;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// The unit a client counts positions in, chosen per join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offsets {
    /// Unicode scalar values (the default).
    Chars,
    /// UTF-16 code units, what JavaScript strings and editors count.
    Utf16,
}

/// Why a join cannot be served after its reply was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The document does not exist (and is not created on join).
    NotFound,
    /// The document already has its most joined channels.
    Full,
    /// The shard has its most documents loaded and none idle to unload.
    Overloaded,
    /// The store failed to load the document.
    Storage,
}

impl Refusal {
    /// The `reason` sent to the client.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NotFound => super::NOT_FOUND,
            Refusal::Full => "document_full",
            Refusal::Overloaded => "overloaded",
            Refusal::Storage => "storage_error",
        }
    }
}

/// What the owner tells a channel (its `handle_info`).
#[derive(Debug)]
pub enum ToChannel {
    /// Push `document_state`.
    State(Payload),
    /// Push `document_catchup`.
    CatchUp(Payload),
    /// Push `document_error` and stop the channel.
    Refused(Refusal),
    /// The answer to an `operation` push.
    Reply {
        /// The push being answered.
        to: ReplyRef,
        /// `ok` once the operation is durable, `error` if it was refused.
        status: ReplyStatus,
        /// The acknowledgement (version and `seq`) or the error.
        payload: Payload,
    },
}

/// A channel's join, sent to the document's owner.
pub struct JoinRequest {
    /// The joining channel, which gets the state, a catch-up or a refusal.
    pub addr: Addr<ToChannel>,
    /// The unit the client counts positions in (for catch-ups and broadcasts).
    pub offsets: Offsets,
    /// The version the client last knew (a re-join), if any.
    pub since: Option<u64>,
}

/// An `operation` push, sent from the channel to the document's owner.
pub struct OpRequest {
    /// The sending channel.
    pub addr: Addr<ToChannel>,
    /// The push to answer once the operation is durable (or refused).
    pub reply: ReplyRef,
    /// The sender's user id, recorded as the revision's author.
    pub user_id: Arc<str>,
    /// Whether `user_id` is stable across connections (a token's), so it can scope client ids.
    pub authenticated: bool,
    /// The unit the operation's positions and lengths are counted in.
    pub offsets: Offsets,
    /// The operation's JSON as sent (simple or ot.js form); parsed on the owner.
    pub op: Value,
    /// The document version `op` is based on.
    pub version: u64,
    /// The client-chosen id (1 to 128 bytes) that, with `seq`, lets a resend be recognized.
    pub client_id: Option<String>,
    /// The client's sequence number of the operation; with `client_id`, detects resends.
    pub seq: Option<u64>,
}

enum Waiter {
    Join(JoinRequest),
    Op(OpRequest),
}

/// The documents this shard owns.
#[derive(Default)]
pub struct Documents {
    docs: HashMap<Topic, Slot>,
    /// Joined channels per document, whether it is loaded or not.
    members: HashMap<Topic, usize>,
    next_epoch: u64,
}

impl Documents {
    fn members(&self, topic: &Topic) -> usize {
        self.members.get(topic).copied().unwrap_or(0)
    }
}

enum Slot {
    /// Being read from the store; these requests wait for it, in order.
    Loading(Vec<Waiter>),
    Ready(Box<Loaded>),
}

struct Loaded {
    /// Tells continuations of an unloaded (failed) instance from the current one.
    epoch: u64,
    doc: Document,
    /// The text at `durable_version`: what joiners get.
    durable_text: Rope,
    durable_version: u64,
    /// Who made each revision in the document's history window (and in flight), by version.
    authors: VecDeque<(u64, Arc<str>)>,
    /// Applied, appended, not yet committed; in version order.
    inflight: VecDeque<InFlight>,
    /// Resends of an operation still in flight, acknowledged once its version is durable.
    ack_waiters: Vec<(u64, Ack)>,
    last_used: Instant,
}

struct InFlight {
    logged: Arc<Logged>,
    /// The connection its broadcast skips: the sender's, which gets the acknowledgement instead.
    /// Cleared when that connection joins again before this is durable: the new join's state
    /// stops short of this revision and its acknowledgement goes to the old join, so the
    /// revision must reach it as a broadcast (its client recognizes its own `client_id`/`seq`).
    exclude: Option<ConnId>,
    /// The text after this revision (a rope clone shares its nodes).
    text: Rope,
    user_id: Arc<str>,
    ack: Ack,
    result: Option<Result<(), StoreError>>,
}

struct Ack {
    addr: Addr<ToChannel>,
    to: ReplyRef,
    seq: Option<u64>,
}

impl Loaded {
    fn idle(&self) -> bool {
        self.inflight.is_empty() && self.ack_waiters.is_empty()
    }

    fn author(&self, version: u64) -> Arc<str> {
        let index = self
            .authors
            .front()
            .and_then(|(first, _)| version.checked_sub(*first));
        index
            .and_then(|i| self.authors.get(i as usize))
            .filter(|(v, _)| *v == version)
            .map_or_else(|| Arc::from(""), |(_, a)| a.clone())
    }

    /// Forgets authors of revisions that left the history window.
    fn trim_authors(&mut self) {
        let oldest = self.doc.oldest_version();
        while self.authors.front().is_some_and(|(v, _)| *v <= oldest) {
            self.authors.pop_front();
        }
    }

    fn state_payload(&self) -> Payload {
        Payload::json(&json!({
            "content": self.durable_text.to_string(),
            "version": self.durable_version,
        }))
    }

    /// The revisions after `since` up to the durable version, if the history still has them.
    fn catch_up(&self, since: u64, offsets: Offsets) -> Option<Payload> {
        if since > self.durable_version {
            return None;
        }
        let missed = self.doc.ops_since(since).ok()?;
        let operations: Vec<Value> = missed
            .take_while(|l| l.version() <= self.durable_version)
            .map(|l| revision_json(l, &self.author(l.version()), offsets))
            .collect();
        Some(Payload::json(&json!({
            "from": since,
            "version": self.durable_version,
            "operations": operations,
        })))
    }
}

// --- Client ids -------------------------------------------------------------------------------

/// Client ids are scoped by user, so nobody can make the server take their operations for
/// someone else's resends: the document remembers `"u<len>:<user>:<client id>"`. Guests (no
/// token) get a new user id on every connection, so theirs share one scope, `"g:<client id>"`:
/// a resend after a reconnect must still be recognized.
fn scope(user_id: Option<&str>, client_id: &str) -> String {
    match user_id {
        Some(user) => format!("u{}:{user}:{client_id}", user.len()),
        None => format!("g:{client_id}"),
    }
}

/// The client's own id from a scoped one.
fn unscope(key: &str) -> &str {
    if let Some(client) = key.strip_prefix("g:") {
        return client;
    }
    key.strip_prefix('u')
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(n, rest)| rest.get(n.parse::<usize>().ok()? + 1..))
        .unwrap_or(key)
}

// --- Wire shapes ------------------------------------------------------------------------------

fn op_json(logged: &Logged, offsets: Offsets) -> Value {
    match offsets {
        Offsets::Chars => logged.op::<Chars>().to_json(),
        Offsets::Utf16 => logged.op::<Utf16>().to_json(),
    }
}

/// A revision for one client: `{op, version, user_id, client_id, seq}` with `op` in its unit.
fn revision_json(logged: &Logged, user_id: &str, offsets: Offsets) -> Value {
    let rev = logged.revision();
    json!({
        "op": op_json(logged, offsets),
        "version": rev.version,
        "user_id": user_id,
        "client_id": rev.client_id.as_deref().map(unscope),
        "seq": rev.seq,
    })
}

/// The broadcast of a revision, one payload for every subscriber: `op` counts scalar values;
/// `op_utf16` is added when UTF-16 offsets differ (the text has characters outside the BMP).
fn broadcast_payload(logged: &Logged, user_id: &str) -> Payload {
    let mut value = revision_json(logged, user_id, Offsets::Chars);
    let utf16 = logged.op::<Utf16>();
    if utf16.components() != logged.op::<Chars>().components() {
        value["op_utf16"] = utf16.to_json();
    }
    Payload::json(&value)
}

fn reason_payload(reason: &str, message: &str) -> Payload {
    Payload::json(&json!({ "reason": reason, "message": message }))
}

/// The error reply for a refused operation.
fn submit_error_payload(e: &SubmitError, durable_version: u64) -> Payload {
    let message = e.to_string();
    if e.needs_resync() {
        return Payload::json(&json!({
            "reason": "resync",
            "message": message,
            "version": durable_version,
        }));
    }
    let reason = match e {
        SubmitError::StaleSeq { .. } => "stale_seq",
        SubmitError::DocumentTooLarge { .. } => "document_too_large",
        SubmitError::Op(OpError::TooLarge { .. }) => "operation_too_large",
        _ => "invalid_operation",
    };
    reason_payload(reason, &message)
}

fn reply(owner: &mut OwnerCtx<'_>, ack: &Ack, status: ReplyStatus, payload: Payload) {
    owner.send(
        &ack.addr,
        ToChannel::Reply {
            to: ack.to.clone(),
            status,
            payload,
        },
    );
}

fn ack_payload(version: u64, seq: Option<u64>) -> Payload {
    match seq {
        Some(seq) => Payload::json(&json!({ "version": version, "seq": seq })),
        None => Payload::json(&json!({ "version": version })),
    }
}

// --- Tasks ------------------------------------------------------------------------------------

/// A channel joined: count it, load the document if needed, send it the state or a catch-up.
pub fn join(owner: &mut OwnerCtx<'_>, svc: &Arc<DocumentServices>, req: JoinRequest) {
    let state = owner.state::<Documents>();
    let mut docs = state.borrow_mut();
    let topic = owner.topic().clone();
    let members = docs.members.entry(topic.clone()).or_default();
    *members += 1;
    if *members > svc.max_members {
        owner.send(&req.addr, ToChannel::Refused(Refusal::Full));
        return;
    }
    match docs.docs.get_mut(&topic) {
        Some(Slot::Ready(d)) => {
            d.last_used = owner.now().instant;
            answer_join(owner, d, req);
        }
        Some(Slot::Loading(waiters)) => waiters.push(Waiter::Join(req)),
        None => start_load(owner, svc, &mut docs, Waiter::Join(req)),
    }
}

/// A channel left (or its connection closed).
pub fn leave(owner: &mut OwnerCtx<'_>, svc: &Arc<DocumentServices>) {
    let state = owner.state::<Documents>();
    let mut docs = state.borrow_mut();
    let topic = owner.topic().clone();
    let Some(members) = docs.members.get_mut(&topic) else {
        return;
    };
    *members = members.saturating_sub(1);
    if *members == 0 {
        docs.members.remove(&topic);
        schedule_idle_check(owner, svc);
    }
}

/// An `operation` push.
pub fn operation(owner: &mut OwnerCtx<'_>, svc: &Arc<DocumentServices>, req: OpRequest) {
    let state = owner.state::<Documents>();
    let mut docs = state.borrow_mut();
    let topic = owner.topic().clone();
    match docs.docs.get_mut(&topic) {
        Some(Slot::Ready(d)) => apply(owner, svc, d, req),
        Some(Slot::Loading(waiters)) => waiters.push(Waiter::Op(req)),
        // Unloaded after a storage failure while its members stayed: load it again.
        None => start_load(owner, svc, &mut docs, Waiter::Op(req)),
    }
}

fn answer_join(owner: &mut OwnerCtx<'_>, d: &mut Loaded, req: JoinRequest) {
    for entry in d.inflight.iter_mut() {
        if entry.exclude == Some(req.addr.conn_id()) {
            entry.exclude = None;
        }
    }
    let msg = match req.since.and_then(|v| d.catch_up(v, req.offsets)) {
        Some(payload) => ToChannel::CatchUp(payload),
        None => ToChannel::State(d.state_payload()),
    };
    owner.send(&req.addr, msg);
}

fn refuse(owner: &mut OwnerCtx<'_>, waiter: Waiter, why: Refusal) {
    match waiter {
        Waiter::Join(req) => owner.send(&req.addr, ToChannel::Refused(why)),
        Waiter::Op(req) => owner.send(
            &req.addr,
            ToChannel::Reply {
                to: req.reply,
                status: ReplyStatus::Error,
                payload: reason_payload(why.reason(), "the document is not available"),
            },
        ),
    }
}

fn start_load(
    owner: &mut OwnerCtx<'_>,
    svc: &Arc<DocumentServices>,
    docs: &mut Documents,
    first: Waiter,
) {
    let max = svc.config.max_loaded;
    if docs.docs.len() >= max {
        evict_idle(docs, max - 1);
    }
    if docs.docs.len() >= max {
        tracing::warn!(topic = %owner.topic(), max, "too many documents loaded on this shard");
        refuse(owner, first, Refusal::Overloaded);
        return;
    }
    let topic = owner.topic().clone();
    let load = svc.store.load(doc_id(&topic), svc.config.create_on_join);
    docs.docs.insert(topic, Slot::Loading(vec![first]));
    let svc = svc.clone();
    owner.spawn_then(load, move |owner, result| loaded(owner, &svc, result));
}

/// Unloads idle documents nobody has joined, least recently used first, down to `keep`.
fn evict_idle(docs: &mut Documents, keep: usize) {
    let mut idle: Vec<(Instant, Topic)> = docs
        .docs
        .iter()
        .filter_map(|(topic, slot)| match slot {
            Slot::Ready(d) if d.idle() && docs.members(topic) == 0 => {
                Some((d.last_used, topic.clone()))
            }
            _ => None,
        })
        .collect();
    idle.sort();
    for (_, topic) in idle {
        if docs.docs.len() <= keep {
            break;
        }
        docs.docs.remove(&topic);
    }
}

fn build(
    svc: &DocumentServices,
    stored: StoredDocument,
    epoch: u64,
    now: Instant,
) -> Result<Loaded, SubmitError> {
    let mut doc = Document::from_snapshot(
        &stored.snapshot,
        stored.snapshot_version,
        svc.limits.clone(),
    );
    let authors = stored
        .log
        .iter()
        .map(|e| (e.revision.version, Arc::from(e.user_id.as_str())))
        .collect();
    doc.replay(stored.log.into_iter().map(|e| e.revision))?;
    let mut loaded = Loaded {
        epoch,
        durable_text: doc.text().clone(),
        durable_version: doc.version(),
        doc,
        authors,
        inflight: VecDeque::new(),
        ack_waiters: Vec::new(),
        last_used: now,
    };
    loaded.trim_authors();
    Ok(loaded)
}

fn loaded(
    owner: &mut OwnerCtx<'_>,
    svc: &Arc<DocumentServices>,
    result: Result<Option<StoredDocument>, StoreError>,
) {
    let state = owner.state::<Documents>();
    let mut docs = state.borrow_mut();
    let topic = owner.topic().clone();
    let waiters = match docs.docs.remove(&topic) {
        Some(Slot::Loading(waiters)) => waiters,
        Some(other) => {
            docs.docs.insert(topic, other);
            return;
        }
        None => return,
    };
    docs.next_epoch += 1;
    let epoch = docs.next_epoch;
    let built = match result {
        Ok(Some(stored)) => build(svc, stored, epoch, owner.now().instant)
            .map(Some)
            .map_err(|e| e.to_string()),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    };
    let mut d = match built {
        Ok(Some(d)) => d,
        Ok(None) => {
            for w in waiters {
                refuse(owner, w, Refusal::NotFound);
            }
            return;
        }
        Err(error) => {
            tracing::error!(topic = %topic, error, "document cannot be loaded");
            for w in waiters {
                refuse(owner, w, Refusal::Storage);
            }
            return;
        }
    };
    for w in waiters {
        match w {
            Waiter::Join(req) => answer_join(owner, &mut d, req),
            Waiter::Op(req) => apply(owner, svc, &mut d, req),
        }
    }
    let idle = d.idle() && docs.members(&topic) == 0;
    docs.docs.insert(topic, Slot::Ready(Box::new(d)));
    if idle {
        schedule_idle_check(owner, svc);
    }
}

fn submit<U: Unit>(
    doc: &mut Document,
    op: &Value,
    version: u64,
    client: Option<&str>,
    seq: Option<u64>,
) -> Result<Applied, SubmitError> {
    let len = doc.len_at::<U>(version)?;
    let op = Operation::<U>::from_json(op, len, doc.limits().max_op_size)?;
    doc.submit(op, version, client, seq)
}

fn apply(owner: &mut OwnerCtx<'_>, svc: &Arc<DocumentServices>, d: &mut Loaded, req: OpRequest) {
    d.last_used = owner.now().instant;
    let ack = Ack {
        addr: req.addr,
        to: req.reply,
        seq: req.seq,
    };
    if svc.store.is_overloaded() {
        let msg = "too many operations are waiting for the database; retry";
        reply(
            owner,
            &ack,
            ReplyStatus::Error,
            reason_payload("overloaded", msg),
        );
        return;
    }
    // Clients only ever learn durable versions.
    if req.version > d.durable_version {
        let e = SubmitError::Ahead {
            base_version: req.version,
            version: d.durable_version,
        };
        let payload = submit_error_payload(&e, d.durable_version);
        reply(owner, &ack, ReplyStatus::Error, payload);
        return;
    }
    let user = req.authenticated.then_some(&*req.user_id);
    let client = req.client_id.as_deref().map(|c| scope(user, c));
    let (client, seq) = (client.as_deref(), req.seq);
    let result = match req.offsets {
        Offsets::Chars => submit::<Chars>(&mut d.doc, &req.op, req.version, client, seq),
        Offsets::Utf16 => submit::<Utf16>(&mut d.doc, &req.op, req.version, client, seq),
    };
    let applied = match result {
        Ok(applied) => applied,
        Err(e) => {
            let payload = submit_error_payload(&e, d.durable_version);
            reply(owner, &ack, ReplyStatus::Error, payload);
            return;
        }
    };
    let version = applied.version();
    if applied.duplicate {
        // Applied before: acknowledged (again) once durable, never applied or broadcast twice.
        if version <= d.durable_version {
            reply(owner, &ack, ReplyStatus::Ok, ack_payload(version, ack.seq));
        } else {
            d.ack_waiters.push((version, ack));
        }
        return;
    }
    let topic = owner.topic().clone();
    let id = doc_id(&topic);
    let entry = LogEntry {
        revision: applied.logged.revision().clone(),
        user_id: req.user_id.to_string(),
        at_ms: owner.now().unix_ms,
    };
    // Enqueued now, in this task: the store commits in version order.
    let append = svc.store.append(id, entry);
    if version % svc.config.snapshot_every == 0 {
        let snapshot = svc.store.snapshot(id, version, d.doc.text().clone());
        owner.spawn_then(snapshot, move |owner, result| {
            if let Err(e) = result {
                tracing::warn!(topic = %owner.topic(), version, error = %e, "snapshot not written");
            }
        });
    }
    d.authors.push_back((version, req.user_id.clone()));
    d.trim_authors();
    d.inflight.push_back(InFlight {
        logged: applied.logged,
        exclude: Some(ack.addr.conn_id()),
        text: d.doc.text().clone(),
        user_id: req.user_id,
        ack,
        result: None,
    });
    let (svc, epoch) = (svc.clone(), d.epoch);
    owner.spawn_then(append, move |owner, result| {
        durable(owner, &svc, epoch, version, result)
    });
}

/// The store answered the append of `version`: release what became durable, in order.
fn durable(
    owner: &mut OwnerCtx<'_>,
    svc: &Arc<DocumentServices>,
    epoch: u64,
    version: u64,
    result: Result<(), StoreError>,
) {
    let state = owner.state::<Documents>();
    let mut docs = state.borrow_mut();
    let topic = owner.topic().clone();
    let Some(Slot::Ready(d)) = docs.docs.get_mut(&topic) else {
        return;
    };
    if d.epoch != epoch {
        return;
    }
    if let Some(entry) = d
        .inflight
        .iter_mut()
        .find(|e| e.logged.version() == version)
    {
        entry.result = Some(result);
    }
    let mut failed = None;
    while let Some(front) = d.inflight.front() {
        match &front.result {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                failed = Some(e.to_string());
                break;
            }
            None => break,
        }
        let Some(entry) = d.inflight.pop_front() else {
            break;
        };
        d.durable_text = entry.text;
        d.durable_version = entry.logged.version();
        let payload = broadcast_payload(&entry.logged, &entry.user_id);
        match entry.exclude {
            Some(sender) => owner.broadcast_from("operation", &payload, sender),
            None => owner.broadcast("operation", &payload),
        }
        let payload = ack_payload(d.durable_version, entry.ack.seq);
        reply(owner, &entry.ack, ReplyStatus::Ok, payload);
    }
    if let Some(error) = failed {
        fail(owner, &mut docs, &topic, &error);
        return;
    }
    let durable_version = d.durable_version;
    let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut d.ack_waiters)
        .into_iter()
        .partition(|(v, _)| *v <= durable_version);
    d.ack_waiters = waiting;
    for (v, ack) in ready {
        reply(owner, &ack, ReplyStatus::Ok, ack_payload(v, ack.seq));
    }
    if d.idle() && docs.members(&topic) == 0 {
        schedule_idle_check(owner, svc);
    }
}

/// An append failed: what is in flight is answered with an error, the document is dropped from
/// memory (the next use reloads what is stored) and its subscribers are told to resync.
fn fail(owner: &mut OwnerCtx<'_>, docs: &mut Documents, topic: &Topic, error: &str) {
    tracing::error!(topic = %topic, error, "operation not persisted; unloading the document");
    let Some(Slot::Ready(d)) = docs.docs.remove(topic) else {
        return;
    };
    let payload = reason_payload("storage_error", "the operation could not be saved; resync");
    let acks = d
        .inflight
        .into_iter()
        .map(|e| e.ack)
        .chain(d.ack_waiters.into_iter().map(|(_, ack)| ack));
    for ack in acks {
        reply(owner, &ack, ReplyStatus::Error, payload.clone());
    }
    owner.broadcast(
        "resync",
        &Payload::json(&json!({ "reason": "storage_error" })),
    );
}

fn schedule_idle_check(owner: &mut OwnerCtx<'_>, svc: &Arc<DocumentServices>) {
    let after = svc.config.idle_unload();
    owner.run_after(after, move |owner| {
        let state = owner.state::<Documents>();
        let mut docs = state.borrow_mut();
        let topic = owner.topic().clone();
        let now = owner.now().instant;
        if docs.members(&topic) > 0 {
            return;
        }
        let unload = matches!(
            docs.docs.get(&topic),
            Some(Slot::Ready(d)) if d.idle() && now.saturating_duration_since(d.last_used) >= after
        );
        if unload {
            docs.docs.remove(&topic);
            tracing::debug!(topic = %topic, "idle document unloaded");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_scoped_by_user() {
        let key = scope(Some("u:1"), "tab:7");
        assert_eq!(key, "u3:u:1:tab:7");
        assert_eq!(unscope(&key), "tab:7");
        assert_ne!(scope(Some("a"), "b:c"), scope(Some("a:b"), "c"));
        assert_ne!(scope(Some("g"), "x"), scope(None, "x"));
        assert_eq!(unscope(&scope(None, "u1:x:y")), "u1:x:y");
        assert_eq!(unscope("garbage"), "garbage");
    }
}
