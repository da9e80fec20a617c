//! The `room:<id>` channel: chat with persisted history, typing indicators and presence.
//!
//! Client → server:
//! - join `{token?, status?}` → ok `{user: {id, name}}`, then `presence_diff` (broadcast),
//!   `user_joined` (broadcast, on the user's first connection), `presence_state` and
//!   `room_state` `{recent_messages, room_info}` (pushes).
//! - `new_message` `{body}` → broadcast `new_message` `{id, body, user, inserted_at}` once the
//!   row is committed, then reply ok with the same object; invalid bodies get
//!   `{errors: {body: [...]}}`.
//! - `typing` `{typing}` → `user_typing` `{user_id, typing}` to everyone else when the user's
//!   typing state changes; stops by itself after `rooms.typing_timeout_ms` of silence.
//! - `status` `{status}` → the presence meta's `status` changes.
//! - `online_users` → reply `{users: [{id, name}], typing_users: [id], online_count}`.
//! - leave or disconnect → `user_left` `{user, online_count}` once the user's last connection is
//!   gone (and `user_typing` false if they were typing).
//!
//! Everything per room that needs one order — presence, `online_count`, message ids and their
//! broadcast order, the warm history — is kept on the topic's owner shard.

use super::auth::{authorize_channel_join, User};
use super::clock::rfc3339_ms;
use super::{
    field_error, params, reason, status_param, topic_id, touch_session, Services, SessionWrite,
};
use crate::core::presence::throttle::{Pace, Throttle};
use crate::core::presence::tracker::{RefGen, Tracker, STATE_EVENT};
use crate::core::presence::Meta;
use crate::core::{
    Addr, Channel, ChannelCtx, ConnId, HandleIn, HandleInfo, OwnerCtx, Payload, ReplyRef,
    ReplyStatus, TerminateReason,
};
use crate::storage::{MessageRow, RoomRow, RoomSnapshot, StorageError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Topic prefix this channel is routed at.
pub const PREFIX: &str = "room:";

// --- What a room channel receives (its handle_info) ----------------------------------------

/// The messages of a `room:*` channel: answers of its owner tasks, its own timers and storage
/// writes.
pub enum RoomInfo {
    /// `presence_state` for the joiner.
    PresenceState(Payload),
    /// `room_state` for the joiner.
    RoomState(Payload),
    /// The room is full: the join is undone.
    JoinRefused(&'static str),
    /// The outcome of a `new_message`, for its deferred reply.
    Posted {
        /// The push to answer.
        to: ReplyRef,
        /// Ok: the stored message; error: why not.
        result: Result<Payload, Payload>,
    },
    /// An answer to a query push.
    Answer {
        /// The push to answer.
        to: ReplyRef,
        /// The answer.
        payload: Payload,
    },
    /// Check whether the typing state has expired.
    TypingCheck,
    /// Time to forward the latest typing state and status (see [`Throttle`]).
    PresenceFlush,
    /// A session write finished.
    SessionWrite(SessionWrite),
}

impl From<SessionWrite> for RoomInfo {
    fn from(w: SessionWrite) -> Self {
        RoomInfo::SessionWrite(w)
    }
}

type Ctx<'a> = ChannelCtx<'a, RoomInfo>;
type RoomAddr = Addr<RoomInfo>;

// --- The channel (one per joined connection) ------------------------------------------------

/// One connection's `room:<id>` channel.
pub struct RoomChannel {
    services: Arc<Services>,
    joined: Option<Joined>,
}

struct Joined {
    user: User,
    typing: bool,
    /// The typing state the owner last heard of.
    typing_forwarded: bool,
    /// A status not forwarded yet (the latest wins).
    status_pending: Option<String>,
    presence_pace: Throttle,
    typing_deadline: Instant,
    typing_timer: bool,
    /// `new_message`s sent to the owner and not answered yet.
    pending: usize,
}

impl RoomChannel {
    /// A channel not joined yet, using the shared `services`.
    pub fn new(services: Arc<Services>) -> RoomChannel {
        RoomChannel {
            services,
            joined: None,
        }
    }

    fn set_typing(&mut self, ctx: &mut Ctx<'_>, typing: bool) {
        let timeout = self.services.rooms.typing_timeout();
        let Some(j) = self.joined.as_mut() else {
            return;
        };
        if typing {
            j.typing_deadline = ctx.instant() + timeout;
            if !j.typing_timer {
                j.typing_timer = true;
                ctx.send_after(timeout, RoomInfo::TypingCheck);
            }
        }
        if j.typing != typing {
            j.typing = typing;
            self.presence_changed(ctx);
        }
    }

    /// The typing state or status changed: forward it now, or at the end of the interval.
    fn presence_changed(&mut self, ctx: &mut Ctx<'_>) {
        let interval = self.services.rooms.presence_interval();
        let Some(j) = self.joined.as_mut() else {
            return;
        };
        match j.presence_pace.offer(ctx.instant(), interval) {
            Pace::Now => self.forward_presence(ctx),
            Pace::Later(wait) => ctx.send_after(wait, RoomInfo::PresenceFlush),
            Pace::Pending => {}
        }
    }

    /// Sends the owner what changed since it last heard: one diff however many toggles.
    fn forward_presence(&mut self, ctx: &mut Ctx<'_>) {
        let Some(j) = self.joined.as_mut() else {
            return;
        };
        let typing = (j.typing != j.typing_forwarded).then_some(j.typing);
        let status = j.status_pending.take();
        if typing.is_none() && status.is_none() {
            return;
        }
        j.typing_forwarded = j.typing;
        let conn = ctx.conn_id();
        ctx.run_on_owner(move |owner| owner_presence(owner, conn, typing, status));
    }

    fn new_message(&mut self, ctx: &mut Ctx<'_>, params: &Value) -> HandleIn {
        let max = self.services.rooms.max_message_bytes;
        let Some(j) = self.joined.as_mut() else {
            return HandleIn::error(reason("not_joined"));
        };
        let body = match validate_body(params.get("body"), max) {
            Ok(body) => body,
            Err(message) => return HandleIn::error(field_error("body", &message)),
        };
        if j.pending >= self.services.rooms.max_pending_messages {
            return HandleIn::error(reason("too_many_requests"));
        }
        j.pending += 1;
        let (addr, to, user) = (ctx.address(), ctx.reply_ref(), j.user.clone());
        let services = self.services.clone();
        ctx.run_on_owner(move |owner| owner_post(owner, &services, addr, to, user, body));
        HandleIn::NoReply
    }
}

/// The trimmed body, or the changeset-style error message.
pub fn validate_body(body: Option<&Value>, max_bytes: usize) -> Result<String, String> {
    match body {
        None | Some(Value::Null) => Err("can't be blank".into()),
        Some(Value::String(s)) => {
            let trimmed = s.trim();
            if trimmed.is_empty() {
                Err("can't be blank".into())
            } else if trimmed.len() > max_bytes {
                Err(format!("should be at most {max_bytes} byte(s)"))
            } else {
                Ok(trimmed.to_string())
            }
        }
        Some(_) => Err("is invalid".into()),
    }
}

impl Channel for RoomChannel {
    type Info = RoomInfo;

    fn join(&mut self, ctx: &mut Ctx<'_>, payload: Payload) -> Result<Payload, Payload> {
        let params = params(&payload)?;
        let user = authorize_channel_join(&self.services.auth, ctx, &params)?;
        if topic_id(ctx.topic(), PREFIX).is_none() {
            return Err(reason("invalid_topic"));
        }
        let meta = new_meta(&user, status_param(&params), ctx.now().unix_ms);
        let response = Payload::json(&json!({ "user": user.summary() }));
        let (addr, services, key) = (ctx.address(), self.services.clone(), user.id.clone());
        // Broadcasts reach this joiner from its owner join task on: what the room said before
        // is in the `room_state` snapshot that task sends.
        ctx.hold_broadcasts();
        ctx.run_on_owner(move |owner| owner_join(owner, &services, addr, key, meta));
        touch_session(ctx, &self.services, &user);
        self.joined = Some(Joined {
            user,
            typing: false,
            typing_forwarded: false,
            status_pending: None,
            presence_pace: Throttle::default(),
            typing_deadline: ctx.instant(),
            typing_timer: false,
            pending: 0,
        });
        Ok(response)
    }

    fn handle_in(&mut self, ctx: &mut Ctx<'_>, event: &str, payload: Payload) -> HandleIn {
        let params = match params(&payload) {
            Ok(p) => p,
            Err(e) => return HandleIn::error(e),
        };
        match event {
            "new_message" => self.new_message(ctx, &params),
            "typing" => match params.get("typing").and_then(Value::as_bool) {
                Some(typing) => {
                    self.set_typing(ctx, typing);
                    HandleIn::ok(Payload::empty())
                }
                None => HandleIn::error(field_error("typing", "is invalid")),
            },
            "status" => match status_param(&params) {
                Some(status) => {
                    if let Some(j) = self.joined.as_mut() {
                        j.status_pending = Some(status);
                        self.presence_changed(ctx);
                    }
                    HandleIn::ok(Payload::empty())
                }
                None => HandleIn::error(field_error("status", "is invalid")),
            },
            "online_users" => {
                let (addr, to) = (ctx.address(), ctx.reply_ref());
                ctx.run_on_owner(move |owner| owner_query(owner, addr, to));
                HandleIn::NoReply
            }
            _ => HandleIn::error(reason("unknown_event")),
        }
    }

    fn handle_info(&mut self, ctx: &mut Ctx<'_>, msg: RoomInfo) -> HandleInfo {
        match msg {
            RoomInfo::Posted { to, result } => {
                if let Some(j) = self.joined.as_mut() {
                    j.pending = j.pending.saturating_sub(1);
                }
                let (status, payload) = match result {
                    Ok(p) => (ReplyStatus::Ok, p),
                    Err(p) => (ReplyStatus::Error, p),
                };
                send_reply(ctx, &to, status, &payload);
            }
            RoomInfo::TypingCheck => {
                let now = ctx.instant();
                let expired = self.joined.as_mut().is_some_and(|j| {
                    j.typing_timer = false;
                    j.typing && now >= j.typing_deadline
                });
                if expired {
                    self.set_typing(ctx, false);
                } else if let Some(j) = self.joined.as_mut().filter(|j| j.typing) {
                    // Typing went on: check again at the new deadline.
                    j.typing_timer = true;
                    let left = j.typing_deadline.saturating_duration_since(now);
                    ctx.send_after(left.max(Duration::from_millis(1)), RoomInfo::TypingCheck);
                }
            }
            RoomInfo::PresenceFlush => {
                if let Some(j) = self.joined.as_mut() {
                    j.presence_pace.fired(ctx.instant());
                }
                self.forward_presence(ctx);
            }
            RoomInfo::PresenceState(p) => push(ctx, STATE_EVENT, &p),
            RoomInfo::RoomState(p) => push(ctx, "room_state", &p),
            RoomInfo::Answer { to, payload } => send_reply(ctx, &to, ReplyStatus::Ok, &payload),
            RoomInfo::JoinRefused(why) => {
                push(ctx, "join_refused", &reason(why));
                // Not tracked by the owner: nothing to undo in terminate.
                self.joined = None;
                return HandleInfo::Stop;
            }
            RoomInfo::SessionWrite(w) => w.log(ctx.topic()),
        }
        HandleInfo::Continue
    }

    fn terminate(&mut self, ctx: &mut Ctx<'_>, why: TerminateReason) {
        let Some(j) = self.joined.take() else {
            return;
        };
        let conn = ctx.conn_id();
        ctx.run_on_owner(move |owner| owner_leave(owner, conn));
        super::end_session(ctx, &self.services, &j.user, why);
    }
}

pub(crate) fn new_meta(user: &User, status: Option<String>, now_ms: i64) -> Meta {
    let mut extra = Map::new();
    if let Some(avatar) = &user.avatar {
        extra.insert("avatar".into(), Value::String(avatar.clone()));
    }
    Meta {
        phx_ref: String::new(),
        name: user.name.clone(),
        status: status.unwrap_or_else(|| "online".into()),
        typing: false,
        joined_at: rfc3339_ms(now_ms),
        extra,
    }
}

pub(crate) fn push<I: Send + 'static>(ctx: &mut ChannelCtx<'_, I>, event: &str, payload: &Payload) {
    if let Err(e) = ctx.push(event, payload) {
        tracing::warn!(topic = %ctx.topic(), event, error = %e, "push cannot be encoded");
    }
}

pub(crate) fn send_reply<I: Send + 'static>(
    ctx: &mut ChannelCtx<'_, I>,
    to: &ReplyRef,
    status: ReplyStatus,
    payload: &Payload,
) {
    if let Err(e) = ctx.reply(to, status, payload) {
        tracing::warn!(topic = %ctx.topic(), error = %e, "reply cannot be encoded");
    }
}

// --- The owner side -------------------------------------------------------------------------

/// One room on its owner shard: per-topic owner state, created by the first join and dropped by
/// the runtime once no shard has a subscriber and no history load or message commit is pending.
#[derive(Default)]
struct Room {
    tracker: Tracker,
    history: History,
    /// Sequence numbers of `new_message`s in the order they were sent to storage (which commits
    /// them, and numbers them, in that order) ...
    next_seq: u64,
    /// ... and the next one to announce: commits are announced in this order only.
    next_release: u64,
    committed: BTreeMap<u64, Commit>,
}

#[derive(Default)]
enum History {
    /// Not in memory.
    #[default]
    Cold,
    /// Being read from storage; these joiners wait for their `room_state`.
    Loading { waiters: Vec<RoomAddr> },
    /// The latest messages (at most `history_limit`), oldest first.
    Warm {
        info: RoomRow,
        messages: VecDeque<MessageRow>,
    },
}

struct Commit {
    result: Result<MessageRow, StorageError>,
    addr: RoomAddr,
    to: ReplyRef,
}

impl Room {
    /// Sends `room_state` to `addr`. Broadcasts the owner makes afterwards reach that connection
    /// after it (the connection's mailbox keeps the owner's order).
    fn send_room_state(&mut self, owner: &mut OwnerCtx<'_>, addr: &RoomAddr, state: Payload) {
        owner.send(addr, RoomInfo::RoomState(state));
    }

    fn room_state(&self, topic: &str) -> Payload {
        let online = self.tracker.presences().user_count();
        let id = topic_id(topic, PREFIX).unwrap_or_default();
        match &self.history {
            History::Warm { info, messages } => Payload::json(&json!({
                "recent_messages": messages.iter().map(message_json).collect::<Vec<_>>(),
                "room_info": {
                    "id": id,
                    "topic": topic,
                    "created_at": rfc3339_ms(info.created_at_ms),
                    "message_count": info.message_count,
                    "online_count": online,
                },
            })),
            _ => Payload::json(&json!({
                "recent_messages": [],
                "room_info": { "id": id, "topic": topic, "online_count": online },
                "error": "history_unavailable",
            })),
        }
    }
}

/// The wire form of a message: `{id, body, user: {id, name}, inserted_at}`.
pub fn message_json(m: &MessageRow) -> Value {
    json!({
        "id": m.id,
        "body": m.body,
        "user": { "id": m.user_id, "name": m.user_name },
        "inserted_at": rfc3339_ms(m.inserted_at_ms),
    })
}

fn user_payload(key: &str, name: &str, online: usize) -> Payload {
    Payload::json(&json!({ "user": { "id": key, "name": name }, "online_count": online }))
}

fn owner_join(
    owner: &mut OwnerCtx<'_>,
    services: &Arc<Services>,
    addr: RoomAddr,
    key: String,
    meta: Meta,
) {
    // From here on the joiner receives the room's broadcasts (its own join announcements
    // included); earlier messages are in the snapshot it is sent below.
    owner.open(&addr);
    let room = owner.topic_state::<Room>();
    let refs = owner.state::<RefGen>();
    let mut room = room.borrow_mut();
    let topic = owner.topic().to_string();
    let name = meta.name.clone();
    let joined = room.tracker.join(
        owner,
        &mut refs.borrow_mut(),
        addr.raw().clone(),
        &key,
        meta,
        services.rooms.max_members,
    );
    let Some(joined) = joined else {
        owner.send(&addr, RoomInfo::JoinRefused("room_full"));
        return;
    };
    let online = room.tracker.presences().user_count();
    if let Some(left) = joined.replaced.filter(|l| l.last_of_key) {
        owner.broadcast(
            "user_left",
            &user_payload(&left.key, &left.meta.name, online),
        );
    }
    if joined.first_of_key {
        owner.broadcast("user_joined", &user_payload(&key, &name, online));
    }
    owner.send(&addr, RoomInfo::PresenceState(room.tracker.state_payload()));
    match &mut room.history {
        History::Warm { .. } => {
            let state = room.room_state(&topic);
            room.send_room_state(owner, &addr, state);
        }
        History::Loading { waiters } => waiters.push(addr),
        History::Cold => {
            room.history = History::Loading {
                waiters: vec![addr],
            };
            let load = services.storage.open_room(
                &topic,
                services.rooms.history_limit,
                owner.now().unix_ms,
            );
            let services = services.clone();
            owner.spawn_then(load, move |owner, result| {
                owner_loaded(owner, &services, result)
            });
        }
    }
}

fn owner_loaded(
    owner: &mut OwnerCtx<'_>,
    services: &Services,
    result: Result<RoomSnapshot, StorageError>,
) {
    let room = owner.topic_state::<Room>();
    let mut room = room.borrow_mut();
    let topic = owner.topic().to_string();
    let waiters = match std::mem::take(&mut room.history) {
        History::Loading { waiters } => waiters,
        other => {
            room.history = other;
            return;
        }
    };
    match result {
        Ok(snapshot) => {
            let mut messages: VecDeque<MessageRow> = snapshot.recent.into();
            while messages.len() > services.rooms.history_limit {
                messages.pop_front();
            }
            room.history = History::Warm {
                info: snapshot.room,
                messages,
            };
        }
        Err(e) => {
            tracing::error!(topic, error = %e, "room history cannot be loaded");
            room.history = History::Cold;
        }
    }
    let state = room.room_state(&topic);
    for addr in waiters {
        // Only joiners still there (the same join) get it.
        if room
            .tracker
            .member(addr.conn_id())
            .is_some_and(|m| &m.addr == addr.raw())
        {
            room.send_room_state(owner, &addr, state.clone());
        }
    }
    release(owner, &mut room, services.rooms.history_limit);
}

fn owner_post(
    owner: &mut OwnerCtx<'_>,
    services: &Arc<Services>,
    addr: RoomAddr,
    to: ReplyRef,
    user: User,
    body: String,
) {
    let room = owner.topic_state::<Room>();
    let mut room = room.borrow_mut();
    let topic = owner.topic().to_string();
    if room.tracker.member(addr.conn_id()).is_none() {
        owner.send(
            &addr,
            RoomInfo::Posted {
                to,
                result: Err(reason("not_joined")),
            },
        );
        return;
    }
    let seq = room.next_seq;
    room.next_seq += 1;
    // Enqueued now, in this task: the storage thread commits (and numbers) in seq order.
    let insert =
        services
            .storage
            .insert_message(&topic, &user.id, &user.name, &body, owner.now().unix_ms);
    let limit = services.rooms.history_limit;
    owner.spawn_then(insert, move |owner, result| {
        // The room is kept while its message is in flight (pending owner work).
        let room = owner.topic_state::<Room>();
        let mut room = room.borrow_mut();
        room.committed.insert(seq, Commit { result, addr, to });
        release(owner, &mut room, limit);
    });
}

/// Announces committed messages in the order they were sent to storage (= id order). Held while
/// the history loads, so a joiner's `room_state` comes before the messages that follow it.
fn release(owner: &mut OwnerCtx<'_>, room: &mut Room, limit: usize) {
    if matches!(room.history, History::Loading { .. }) {
        return;
    }
    while let Some(commit) = room.committed.remove(&room.next_release) {
        room.next_release += 1;
        match commit.result {
            Ok(row) => {
                let payload = Payload::json(&message_json(&row));
                if let History::Warm { info, messages } = &mut room.history {
                    // A row the loaded snapshot already had is not added twice.
                    if messages.back().is_none_or(|m| m.id < row.id) {
                        info.message_count += 1;
                        messages.push_back(row);
                        while messages.len() > limit {
                            messages.pop_front();
                        }
                    }
                }
                owner.broadcast("new_message", &payload);
                owner.send(
                    &commit.addr,
                    RoomInfo::Posted {
                        to: commit.to,
                        result: Ok(payload),
                    },
                );
            }
            Err(e) => {
                tracing::warn!(topic = %owner.topic(), error = %e, "message not stored");
                let why = match e {
                    StorageError::Overloaded => "server_busy",
                    _ => "storage_unavailable",
                };
                owner.send(
                    &commit.addr,
                    RoomInfo::Posted {
                        to: commit.to,
                        result: Err(reason(why)),
                    },
                );
            }
        }
    }
}

fn owner_leave(owner: &mut OwnerCtx<'_>, conn: ConnId) {
    let room = owner.topic_state::<Room>();
    let mut room = room.borrow_mut();
    if let Some(left) = room.tracker.leave(owner, conn) {
        if left.stopped_typing {
            let p = Payload::json(&json!({ "user_id": left.key, "typing": false }));
            owner.broadcast_from("user_typing", &p, conn);
        }
        if left.last_of_key {
            let online = room.tracker.presences().user_count();
            owner.broadcast(
                "user_left",
                &user_payload(&left.key, &left.meta.name, online),
            );
        }
    }
}

/// A connection's typing state and/or status changed: one presence diff, and `user_typing`
/// when the user's typing state (over all their connections) changed.
fn owner_presence(
    owner: &mut OwnerCtx<'_>,
    conn: ConnId,
    typing: Option<bool>,
    status: Option<String>,
) {
    let room = owner.topic_state::<Room>();
    let refs = owner.state::<RefGen>();
    let mut room = room.borrow_mut();
    let updated = room
        .tracker
        .update(owner, &mut refs.borrow_mut(), conn, |m| {
            if let Some(typing) = typing {
                m.typing = typing;
            }
            if let Some(status) = status {
                m.status = status;
            }
        });
    if let Some((key, now)) = updated.and_then(|u| u.typing_now.map(|t| (u.key, t))) {
        let p = Payload::json(&json!({ "user_id": key, "typing": now }));
        owner.broadcast_from("user_typing", &p, conn);
    }
}

fn owner_query(owner: &mut OwnerCtx<'_>, addr: RoomAddr, to: ReplyRef) {
    let room = owner.topic_state::<Room>();
    let room = room.borrow();
    let payload = {
        let p = room.tracker.presences();
        json!({
            "users": p.online_users().map(|(id, name)| json!({ "id": id, "name": name })).collect::<Vec<_>>(),
            "typing_users": p.typing_users().collect::<Vec<_>>(),
            "online_count": p.user_count(),
        })
    };
    owner.send(
        &addr,
        RoomInfo::Answer {
            to,
            payload: Payload::json(&payload),
        },
    );
}

// --- Configuration (this feature's section of the config file) ---------------------

/// `[rooms]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsConfig {
    /// Messages a room keeps in memory and sends in `room_state`.
    pub history_limit: usize,
    /// Largest message body, in bytes of UTF-8 after trimming.
    pub max_message_bytes: usize,
    /// A typing user who sends nothing for this long is announced as stopped.
    pub typing_timeout_ms: u64,
    /// Connections one room or document may have joined at once; later joins are refused.
    pub max_members: usize,
    /// Messages one connection may have waiting for the storage thread; more are refused.
    pub max_pending_messages: usize,
    /// Collaboration channels forward a connection's cursor and selection at most this often
    /// (the latest value wins).
    pub cursor_interval_ms: u64,
    /// A connection's typing state and status reach the room at most this often (the latest
    /// value wins), so toggling them in a burst does not fan out every toggle.
    pub presence_interval_ms: u64,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        RoomsConfig {
            history_limit: 50,
            max_message_bytes: 4096,
            typing_timeout_ms: 3000,
            max_members: 10_000,
            max_pending_messages: 32,
            cursor_interval_ms: 50,
            presence_interval_ms: 100,
        }
    }
}

impl RoomsConfig {
    /// `typing_timeout_ms` as a duration.
    pub fn typing_timeout(&self) -> Duration {
        Duration::from_millis(self.typing_timeout_ms)
    }
    /// `cursor_interval_ms` as a duration.
    pub fn cursor_interval(&self) -> Duration {
        Duration::from_millis(self.cursor_interval_ms)
    }
    /// `presence_interval_ms` as a duration.
    pub fn presence_interval(&self) -> Duration {
        Duration::from_millis(self.presence_interval_ms)
    }

    /// Every invalid value of this section, with the reason (key names as in the file).
    pub fn problems(&self) -> Vec<String> {
        let checks = [
            (
                (1..=1000).contains(&self.history_limit),
                "rooms.history_limit must be within 1..=1000",
            ),
            (
                (1..=65536).contains(&self.max_message_bytes),
                "rooms.max_message_bytes must be within 1..=65536",
            ),
            (
                self.typing_timeout_ms > 0,
                "rooms.typing_timeout_ms must be > 0",
            ),
            (self.max_members > 0, "rooms.max_members must be > 0"),
            (
                self.max_pending_messages > 0,
                "rooms.max_pending_messages must be > 0",
            ),
            (
                self.cursor_interval_ms <= 10_000,
                "rooms.cursor_interval_ms must be <= 10000",
            ),
            (
                self.presence_interval_ms <= 10_000,
                "rooms.presence_interval_ms must be <= 10000",
            ),
        ];
        crate::ops::checks::failed(&checks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_trimmed_and_checked() {
        let v = |s: &str| Some(Value::String(s.into()));
        assert_eq!(validate_body(v("  hi  ").as_ref(), 10), Ok("hi".into()));
        assert_eq!(
            validate_body(v(" \n\t ").as_ref(), 10),
            Err("can't be blank".into())
        );
        assert_eq!(validate_body(None, 10), Err("can't be blank".into()));
        assert_eq!(validate_body(Some(&json!(5)), 10), Err("is invalid".into()));
        assert_eq!(
            validate_body(v(&"x".repeat(11)).as_ref(), 10),
            Err("should be at most 10 byte(s)".into())
        );
        // Bytes, not characters: five 2-byte characters are 10 bytes.
        assert!(validate_body(v("ééééé").as_ref(), 10).is_ok());
        assert!(validate_body(v("éééééé").as_ref(), 10).is_err());
        // Trimmed first: surrounding spaces do not count.
        assert!(validate_body(v(&format!("  {}  ", "x".repeat(10))).as_ref(), 10).is_ok());
    }

    #[test]
    fn message_wire_form() {
        let m = MessageRow {
            id: 7,
            user_id: "u1".into(),
            user_name: "Ada".into(),
            body: "hi".into(),
            inserted_at_ms: 0,
        };
        assert_eq!(
            message_json(&m),
            json!({"id": 7, "body": "hi", "user": {"id": "u1", "name": "Ada"},
                   "inserted_at": "1970-01-01T00:00:00.000Z"})
        );
    }
}
