//! The `collaboration:<id>` channel: who is in a document, with their cursor and selection.
//!
//! - join `{token?, status?}` → ok `{user: {id, name}}`, then `presence_diff` (broadcast) and
//!   `presence_state` (push).
//! - `cursor_move` `{position}` and `text_selection` `{selection}` → the connection's presence
//!   meta gets `cursor` / `selection` (a `presence_diff` leave+join with a new `phx_ref`).
//!   Updates are forwarded at most every `rooms.cursor_interval_ms` per connection; the latest
//!   value wins, so a fast mouse does not flood the room.
//! - `status` `{status}` → the meta's `status`, paced like the cursor.
//! - leave or disconnect → the meta leaves.

use super::auth::{authorize_channel_join, User};
use super::room::{new_meta, push};
use super::{end_session, SessionWrite};
use super::{field_error, params, reason, status_param, topic_id, touch_session, Services};
use crate::core::presence::throttle::{Pace, Throttle};
use crate::core::presence::tracker::{RefGen, Tracker, STATE_EVENT};
use crate::core::presence::Meta;
use crate::core::{
    Addr, Channel, ChannelCtx, ConnId, HandleIn, HandleInfo, OwnerCtx, Payload, TerminateReason,
};
use serde_json::{json, Value};
use std::sync::Arc;

/// Topic prefix this channel is routed at.
pub const PREFIX: &str = "collaboration:";
/// Largest `position` / `selection`, as JSON text.
pub const MAX_FIELD_BYTES: usize = 1024;

/// The messages of a `collaboration:*` channel.
pub enum CollaborationInfo {
    /// Time to forward the latest cursor/selection.
    Flush,
    /// `presence_state` for the joiner.
    PresenceState(Payload),
    /// The document is full: the join is undone.
    JoinRefused(&'static str),
    /// A session write finished.
    SessionWrite(SessionWrite),
}

impl From<SessionWrite> for CollaborationInfo {
    fn from(w: SessionWrite) -> Self {
        CollaborationInfo::SessionWrite(w)
    }
}

type Ctx<'a> = ChannelCtx<'a, CollaborationInfo>;

/// One connection's `collaboration:<id>` channel.
pub struct CollaborationChannel {
    services: Arc<Services>,
    joined: Option<Joined>,
}

struct Joined {
    user: User,
    cursor: Option<Value>,
    selection: Option<Value>,
    status: Option<String>,
    pace: Throttle,
}

impl CollaborationChannel {
    /// A channel not joined yet, using the shared `services`.
    pub fn new(services: Arc<Services>) -> CollaborationChannel {
        CollaborationChannel {
            services,
            joined: None,
        }
    }

    /// Stores a cursor or selection and forwards it now, or at the end of the interval.
    fn update(&mut self, ctx: &mut Ctx<'_>, field: &str, value: Value) -> HandleIn {
        let too_big = serde_json::to_vec(&value).map_or(true, |v| v.len() > MAX_FIELD_BYTES);
        if too_big {
            return HandleIn::error(field_error(field, "is too large"));
        }
        let interval = self.services.rooms.cursor_interval();
        let Some(j) = self.joined.as_mut() else {
            return HandleIn::error(reason("not_joined"));
        };
        match field {
            "position" => j.cursor = Some(value),
            _ => j.selection = Some(value),
        }
        self.paced(ctx, interval);
        HandleIn::ok(Payload::empty())
    }

    /// Something changed: forward now, or when the interval ends.
    fn paced(&mut self, ctx: &mut Ctx<'_>, interval: std::time::Duration) {
        let Some(j) = self.joined.as_mut() else {
            return;
        };
        match j.pace.offer(ctx.instant(), interval) {
            Pace::Now => self.flush(ctx),
            Pace::Later(wait) => ctx.send_after(wait, CollaborationInfo::Flush),
            Pace::Pending => {}
        }
    }

    fn flush(&mut self, ctx: &mut Ctx<'_>) {
        let Some(j) = self.joined.as_mut() else {
            return;
        };
        let (cursor, selection, status) = (j.cursor.take(), j.selection.take(), j.status.take());
        if cursor.is_none() && selection.is_none() && status.is_none() {
            return;
        }
        let conn = ctx.conn_id();
        ctx.run_on_owner(move |owner| {
            owner_update(owner, conn, move |m| {
                if let Some(c) = cursor {
                    m.extra.insert("cursor".into(), c);
                }
                if let Some(s) = selection {
                    m.extra.insert("selection".into(), s);
                }
                if let Some(s) = status {
                    m.status = s;
                }
            })
        });
    }
}

impl Channel for CollaborationChannel {
    type Info = CollaborationInfo;

    fn join(&mut self, ctx: &mut Ctx<'_>, payload: Payload) -> Result<Payload, Payload> {
        let params = params(&payload)?;
        let user = authorize_channel_join(&self.services.auth, ctx, &params)?;
        if topic_id(ctx.topic(), PREFIX).is_none() {
            return Err(reason("invalid_topic"));
        }
        let meta = new_meta(&user, status_param(&params), ctx.now().unix_ms);
        let response = Payload::json(&json!({ "user": user.summary() }));
        let (addr, key, max) = (
            ctx.address(),
            user.id.clone(),
            self.services.rooms.max_members,
        );
        ctx.run_on_owner(move |owner| owner_join(owner, addr, key, meta, max));
        touch_session(ctx, &self.services, &user);
        self.joined = Some(Joined {
            user,
            cursor: None,
            selection: None,
            status: None,
            pace: Throttle::default(),
        });
        Ok(response)
    }

    fn handle_in(&mut self, ctx: &mut Ctx<'_>, event: &str, payload: Payload) -> HandleIn {
        let mut params = match params(&payload) {
            Ok(p) => p,
            Err(e) => return HandleIn::error(e),
        };
        let mut take = |field: &str| params.get_mut(field).map(Value::take);
        match event {
            "cursor_move" => match take("position") {
                Some(v) if !v.is_null() => self.update(ctx, "position", v),
                _ => HandleIn::error(field_error("position", "can't be blank")),
            },
            "text_selection" => match take("selection") {
                Some(v) => self.update(ctx, "selection", v),
                None => HandleIn::error(field_error("selection", "can't be blank")),
            },
            "status" => match status_param(&params) {
                Some(status) => {
                    let Some(j) = self.joined.as_mut() else {
                        return HandleIn::error(reason("not_joined"));
                    };
                    j.status = Some(status);
                    self.paced(ctx, self.services.rooms.cursor_interval());
                    HandleIn::ok(Payload::empty())
                }
                None => HandleIn::error(field_error("status", "is invalid")),
            },
            _ => HandleIn::error(reason("unknown_event")),
        }
    }

    fn handle_info(&mut self, ctx: &mut Ctx<'_>, msg: CollaborationInfo) -> HandleInfo {
        match msg {
            CollaborationInfo::Flush => {
                if let Some(j) = self.joined.as_mut() {
                    j.pace.fired(ctx.instant());
                }
                self.flush(ctx);
            }
            CollaborationInfo::PresenceState(p) => push(ctx, STATE_EVENT, &p),
            CollaborationInfo::JoinRefused(why) => {
                push(ctx, "join_refused", &reason(why));
                self.joined = None;
                return HandleInfo::Stop;
            }
            CollaborationInfo::SessionWrite(w) => w.log(ctx.topic()),
        }
        HandleInfo::Continue
    }

    fn terminate(&mut self, ctx: &mut Ctx<'_>, why: TerminateReason) {
        let Some(j) = self.joined.take() else {
            return;
        };
        let conn = ctx.conn_id();
        ctx.run_on_owner(move |owner| owner_leave(owner, conn));
        end_session(ctx, &self.services, &j.user, why);
    }
}

// --- The owner side -------------------------------------------------------------------------
//
// A document's presence is per-topic owner state: created by the first join, dropped by the
// runtime once no shard has a subscriber left.

fn owner_join(
    owner: &mut OwnerCtx<'_>,
    addr: Addr<CollaborationInfo>,
    key: String,
    meta: Meta,
    max: usize,
) {
    let tracker = owner.topic_state::<Tracker>();
    let refs = owner.state::<RefGen>();
    let mut tracker = tracker.borrow_mut();
    let joined = tracker.join(
        owner,
        &mut refs.borrow_mut(),
        addr.raw().clone(),
        &key,
        meta,
        max,
    );
    match joined {
        Some(_) => owner.send(
            &addr,
            CollaborationInfo::PresenceState(tracker.state_payload()),
        ),
        None => owner.send(&addr, CollaborationInfo::JoinRefused("room_full")),
    }
}

fn owner_leave(owner: &mut OwnerCtx<'_>, conn: ConnId) {
    let tracker = owner.topic_state::<Tracker>();
    tracker.borrow_mut().leave(owner, conn);
}

fn owner_update(owner: &mut OwnerCtx<'_>, conn: ConnId, change: impl FnOnce(&mut Meta)) {
    let tracker = owner.topic_state::<Tracker>();
    let refs = owner.state::<RefGen>();
    tracker
        .borrow_mut()
        .update(owner, &mut refs.borrow_mut(), conn, change);
}
