//! The `collaboration:<id>` channel: who is in a document, with their cursor and selection.
//!
//! - join `{token?, status?}` → ok `{user: {id, name}}`, then `presence_diff` (broadcast) and
//!   `presence_state` (push).
//! - `cursor_move` `{position}` and `text_selection` `{selection}` → the connection's presence
//!   meta gets `cursor` / `selection` (a `presence_diff` leave+join with a new `phx_ref`).
//!   Updates are forwarded at most every `rooms.cursor_interval_ms` per connection; the latest
//!   value wins, so a fast mouse does not flood the room.
//! - `status` `{status}` → the meta's `status`.
//! - leave or disconnect → the meta leaves.

use super::auth::{authorize_join, JoinDenied, User};
use super::presence::tracker::{RefGen, Tracker, STATE_EVENT};
use super::presence::Meta;
use super::room::{new_meta, push, JoinRefused, PresenceState};
use super::{end_session, SessionWrite};
use super::{field_error, params, reason, status_param, topic_id, touch_session, Services};
use crate::channel::{
    Channel, ChannelCtx, ConnAddr, ConnId, HandleIn, HandleInfo, OwnerCtx, Payload, TerminateReason,
};
use serde_json::{json, Value};
use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Topic prefix this channel is routed at.
pub const PREFIX: &str = "collaboration:";
/// Largest `position` / `selection`, as JSON text.
pub const MAX_FIELD_BYTES: usize = 1024;

/// Time to forward the latest cursor/selection.
struct Flush;

pub struct CollaborationChannel {
    services: Arc<Services>,
    joined: Option<Joined>,
}

struct Joined {
    user: User,
    cursor: Option<Value>,
    selection: Option<Value>,
    last_flush: Option<Instant>,
    flush_timer: bool,
}

impl CollaborationChannel {
    pub fn new(services: Arc<Services>) -> CollaborationChannel {
        CollaborationChannel {
            services,
            joined: None,
        }
    }

    /// Stores a cursor or selection and forwards it now, or at the end of the interval.
    fn update(&mut self, ctx: &mut ChannelCtx<'_>, field: &str, value: Value) -> HandleIn {
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
        if !j.flush_timer {
            let since = j.last_flush.map_or(interval, |t| t.elapsed());
            if since >= interval {
                self.flush(ctx);
            } else {
                j.flush_timer = true;
                ctx.send_after(interval - since, Flush);
            }
        }
        HandleIn::ok(Payload::empty())
    }

    fn flush(&mut self, ctx: &mut ChannelCtx<'_>) {
        let Some(j) = self.joined.as_mut() else {
            return;
        };
        let (cursor, selection) = (j.cursor.take(), j.selection.take());
        if cursor.is_none() && selection.is_none() {
            return;
        }
        j.last_flush = Some(Instant::now());
        let conn = ctx.conn_id();
        ctx.run_on_owner(move |owner| {
            owner_update(owner, conn, move |m| {
                if let Some(c) = cursor {
                    m.extra.insert("cursor".into(), c);
                }
                if let Some(s) = selection {
                    m.extra.insert("selection".into(), s);
                }
            })
        });
    }
}

impl Channel for CollaborationChannel {
    fn join(&mut self, ctx: &mut ChannelCtx<'_>, payload: Payload) -> Result<Payload, Payload> {
        let params = params(&payload)?;
        let user = authorize_join(&self.services.auth, ctx.assigns(), &params, ctx.topic())
            .map_err(JoinDenied::payload)?;
        if topic_id(ctx.topic(), PREFIX).is_none() {
            return Err(reason("invalid_topic"));
        }
        let meta = new_meta(&user, status_param(&params));
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
            last_flush: None,
            flush_timer: false,
        });
        Ok(response)
    }

    fn handle_in(&mut self, ctx: &mut ChannelCtx<'_>, event: &str, payload: Payload) -> HandleIn {
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
                    let conn = ctx.conn_id();
                    ctx.run_on_owner(move |owner| owner_update(owner, conn, |m| m.status = status));
                    HandleIn::ok(Payload::empty())
                }
                None => HandleIn::error(field_error("status", "is invalid")),
            },
            _ => HandleIn::error(reason("unknown_event")),
        }
    }

    fn handle_info(&mut self, ctx: &mut ChannelCtx<'_>, msg: Box<dyn Any>) -> HandleInfo {
        if msg.downcast_ref::<Flush>().is_some() {
            if let Some(j) = self.joined.as_mut() {
                j.flush_timer = false;
            }
            self.flush(ctx);
        } else if let Some(PresenceState(p)) = msg.downcast_ref::<PresenceState>() {
            push(ctx, STATE_EVENT, p);
        } else if let Some(JoinRefused(why)) = msg.downcast_ref::<JoinRefused>() {
            push(ctx, "join_refused", &reason(why));
            self.joined = None;
            return HandleInfo::Stop;
        } else if let Some(w) = msg.downcast_ref::<SessionWrite>() {
            w.log(ctx.topic());
        }
        HandleInfo::Continue
    }

    fn terminate(&mut self, ctx: &mut ChannelCtx<'_>, why: TerminateReason) {
        let Some(j) = self.joined.take() else {
            return;
        };
        let conn = ctx.conn_id();
        ctx.run_on_owner(move |owner| owner_leave(owner, conn));
        end_session(ctx, &self.services, &j.user, why);
    }
}

// --- The owner side -------------------------------------------------------------------------

/// Documents owned by this shard.
#[derive(Default)]
struct Documents {
    docs: HashMap<String, Tracker>,
}

fn owner_join(owner: &mut OwnerCtx<'_>, addr: ConnAddr, key: String, meta: Meta, max: usize) {
    let docs = owner.state::<Documents>();
    let refs = owner.state::<RefGen>();
    let mut docs = docs.borrow_mut();
    let topic = owner.topic().to_string();
    let tracker = docs.docs.entry(topic.clone()).or_default();
    let joined = tracker.join(owner, &mut refs.borrow_mut(), addr.clone(), &key, meta, max);
    match joined {
        Some(_) => owner.send(&addr, PresenceState(tracker.state_payload())),
        None => {
            owner.send(&addr, JoinRefused("room_full"));
            if tracker.is_empty() {
                docs.docs.remove(&topic);
            }
        }
    }
}

fn owner_leave(owner: &mut OwnerCtx<'_>, conn: ConnId) {
    let docs = owner.state::<Documents>();
    let mut docs = docs.borrow_mut();
    let topic = owner.topic().to_string();
    if let Some(tracker) = docs.docs.get_mut(&topic) {
        tracker.leave(owner, conn);
        if tracker.is_empty() {
            docs.docs.remove(&topic);
        }
    }
}

fn owner_update(owner: &mut OwnerCtx<'_>, conn: ConnId, change: impl FnOnce(&mut Meta)) {
    let docs = owner.state::<Documents>();
    let refs = owner.state::<RefGen>();
    let mut docs = docs.borrow_mut();
    let topic = owner.topic().to_string();
    if let Some(tracker) = docs.docs.get_mut(&topic) {
        tracker.update(owner, &mut refs.borrow_mut(), conn, change);
    }
}
