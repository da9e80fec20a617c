//! A harness to unit-test channels without sockets, shards or a clock — the way quinn-proto's
//! tests drive a connection pair without a network.
//!
//! [`TestServer`] stands in for the runtime with one shard that owns every topic: it runs an
//! [`App`]'s connect hook and routes, feeds client messages to each connection's
//! [`PhoenixSocket`], carries out the effects the channels and owner tasks ask for (delivering
//! broadcasts to the test connections subscribed, running owner tasks, firing timers on a
//! **virtual clock**), and records what every connection received, in order.
//!
//! ```
//! use serde_json::json;
//! use shardcast::testing::TestServer;
//! use shardcast::core::App;
//!
//! let mut server = TestServer::new(App::default()); // echo:*
//! let alice = server.connect(&[]).unwrap();
//! let bob = server.connect(&[]).unwrap();
//! assert_eq!(server.join(alice, "echo:1", json!({})).status(), Some("ok"));
//! server.join(bob, "echo:1", json!({}));
//! let reply = server.push(alice, "echo:1", "broadcast", json!({"hi": 1}));
//! assert_eq!(reply.status(), Some("ok"));
//! let got = server.take_received(bob);
//! assert_eq!(got.last().unwrap().event(), "broadcast");
//! assert_eq!(got.last().unwrap().json_payload(), Some(json!({"hi": 1})));
//! ```
//!
//! Spawned futures are polled by the harness (waiting, bounded, for work that completes on
//! other threads, such as the storage thread); they must not need a glommio executor. Time only
//! moves with [`TestServer::advance`].

use crate::core::ctx::{ConnState, Outbox, SharedAssigns};
use crate::core::effect::LocalFuture;
use crate::core::socket::{Info, PhoenixSocket};
use crate::core::{
    App, Broadcast, ConnAddr, ConnId, ConnectInfo, ConnectRefused, Effect, Now, OwnerCtx,
    OwnerStates, OwnerTask, Payload, Then, Topic,
};
use crate::protocol::phoenix::{decode_text, ByteString, Inbound, Serializer};
use bytes::{Bytes, BytesMut};
use serde_json::Value;
use std::any::Any;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// Which test connection (returned by [`TestServer::connect`]).
pub type Client = usize;

/// A frame a test connection received, decoded as the client would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The join ref.
    pub join_ref: Option<String>,
    /// The message ref (set on replies).
    pub msg_ref: Option<String>,
    /// The topic.
    pub topic: String,
    /// The event (`phx_reply` for replies).
    pub event: String,
    /// A reply's status (`ok` / `error`).
    pub status: Option<String>,
    /// The payload; for a reply, its `response`.
    pub payload: Payload,
}

impl Frame {
    fn none() -> Frame {
        Frame {
            join_ref: None,
            msg_ref: None,
            topic: String::new(),
            event: String::new(),
            status: None,
            payload: Payload::empty(),
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The event (`phx_reply` for replies).
    pub fn event(&self) -> &str {
        &self.event
    }

    /// The message ref (set on replies).
    pub fn msg_ref(&self) -> Option<&str> {
        self.msg_ref.as_deref()
    }

    /// The payload as JSON (a reply's `response`), if it is JSON.
    pub fn json_payload(&self) -> Option<Value> {
        self.payload.parse().ok()
    }

    /// A reply's status (`"ok"` / `"error"`), `None` for other frames.
    pub fn status(&self) -> Option<&str> {
        self.status.as_deref()
    }

    /// A reply's `response` as JSON (`Null` when it is not JSON).
    pub fn response(&self) -> Value {
        self.json_payload().unwrap_or(Value::Null)
    }

    /// Decodes one server WebSocket frame (header included) as phoenix.js would.
    fn decode(frame: &[u8]) -> Frame {
        let (opcode, data) = split_ws(frame).expect("the core encodes whole WebSocket frames");
        if opcode == 1 {
            let msg = decode_text(Serializer::V2, &Bytes::copy_from_slice(data))
                .expect("the core encodes valid V2 frames");
            let mut f = Frame {
                join_ref: msg.join_ref.as_deref().map(str::to_string),
                msg_ref: msg.msg_ref.as_deref().map(str::to_string),
                topic: msg.topic.to_string(),
                event: msg.event.to_string(),
                status: None,
                payload: msg.payload,
            };
            if f.event == crate::protocol::phoenix::event::REPLY {
                let v: Value = f.payload.parse().unwrap_or(Value::Null);
                f.status = v.get("status").and_then(Value::as_str).map(str::to_string);
                f.payload = Payload::json(v.get("response").unwrap_or(&Value::Null));
            }
            f
        } else {
            decode_binary_frame(data)
        }
    }
}

/// The opcode and payload of an unmasked server frame.
fn split_ws(frame: &[u8]) -> Option<(u8, &[u8])> {
    let opcode = frame.first()? & 0x0f;
    let (len, at) = match frame.get(1)? & 0x7f {
        126 => (
            u16::from_be_bytes([*frame.get(2)?, *frame.get(3)?]) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(frame.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    Some((opcode, frame.get(at..at + len)?))
}

/// Phoenix V2 binary server frames: push (0), reply (1), broadcast (2).
fn decode_binary_frame(d: &[u8]) -> Frame {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut f = Frame::none();
    match d.first() {
        Some(0) => {
            let (j, t, e) = (d[1] as usize, d[2] as usize, d[3] as usize);
            let mut at = 4;
            f.join_ref = Some(text(&d[at..at + j]));
            at += j;
            f.topic = text(&d[at..at + t]);
            at += t;
            f.event = text(&d[at..at + e]);
            f.payload = Payload::Binary(Bytes::copy_from_slice(&d[at + e..]));
        }
        Some(1) => {
            let (j, r, t, s) = (d[1] as usize, d[2] as usize, d[3] as usize, d[4] as usize);
            let mut at = 5;
            f.join_ref = Some(text(&d[at..at + j]));
            at += j;
            f.msg_ref = Some(text(&d[at..at + r]));
            at += r;
            f.topic = text(&d[at..at + t]);
            at += t;
            f.status = Some(text(&d[at..at + s]));
            f.event = crate::protocol::phoenix::event::REPLY.to_string();
            f.payload = Payload::Binary(Bytes::copy_from_slice(&d[at + s..]));
        }
        Some(2) => {
            let (t, e) = (d[1] as usize, d[2] as usize);
            f.topic = text(&d[3..3 + t]);
            f.event = text(&d[3 + t..3 + t + e]);
            f.payload = Payload::Binary(Bytes::copy_from_slice(&d[3 + t + e..]));
        }
        _ => panic!("unknown binary frame kind"),
    }
    f
}

/// A broadcast as the harness saw it published.
#[derive(Debug, Clone)]
pub struct Published {
    /// The topic.
    pub topic: Topic,
    /// The event.
    pub event: String,
    /// The payload.
    pub payload: Payload,
    /// The connection `broadcast_from` left out.
    pub exclude: Option<ConnId>,
}

impl Published {
    /// The payload as JSON, if it is JSON.
    pub fn json_payload(&self) -> Option<Value> {
        self.payload.parse().ok()
    }
}

struct TestConn {
    id: ConnId,
    socket: PhoenixSocket,
    /// Subscribed topics, and whether each is gated.
    subscriptions: HashMap<Topic, bool>,
    mailbox: VecDeque<Mail>,
    received: Vec<Frame>,
    closed: Option<(u16, &'static str)>,
    /// Its channels have terminated after a close (as the runtime's session end does).
    terminated: bool,
    next_ref: u64,
}

enum Mail {
    Info(Info),
    Frame(Bytes),
}

enum Timer {
    Deliver(ConnAddr, Box<dyn Any + Send>),
    Owner(Topic, OwnerTask),
}

enum Job {
    Conn(Client, Vec<Effect>),
    Owner(Vec<Effect>),
    /// An owner task on a (virtually) remote owner: runs after what is queued before it.
    OwnerTask(Topic, OwnerTask),
}

/// The runtime's test double: one virtual shard owning every topic, a virtual clock.
pub struct TestServer {
    app: App,
    now: Now,
    owner_states: OwnerStates,
    arena: BytesMut,
    conns: Vec<TestConn>,
    timers: BTreeMap<(Instant, u64), Timer>,
    timer_seq: u64,
    spawned: Vec<(LocalFuture<Box<dyn Any>>, Then)>,
    published: Vec<Published>,
    waker: Arc<Unparker>,
    remote_owners: bool,
}

struct Unparker(std::thread::Thread);

impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// How long [`TestServer`] waits for spawned work that completes elsewhere (a storage thread).
const SPAWN_WAIT: Duration = Duration::from_secs(10);

impl TestServer {
    /// A harness running `app`. Virtual time starts at 2023-11-14T22:13:20Z.
    pub fn new(app: App) -> TestServer {
        TestServer {
            app,
            now: Now {
                instant: Instant::now(),
                unix_ms: 1_700_000_000_000,
            },
            owner_states: OwnerStates::new(0x5eed),
            arena: BytesMut::new(),
            conns: Vec::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            spawned: Vec::new(),
            published: Vec::new(),
            waker: Arc::new(Unparker(std::thread::current())),
            remote_owners: false,
        }
    }

    /// Runs owner tasks as a later step, as the runtime does when a topic's owner is another
    /// shard (for N shards, N-1 topics in N): a reply to a push then reaches the client before
    /// what the owner task broadcasts. By default owner tasks run at once, before the rest of
    /// the callback's effects, as on a topic this shard owns. Test channels in both modes.
    pub fn with_remote_owners(mut self) -> TestServer {
        self.remote_owners = true;
        self
    }

    /// The virtual time.
    pub fn now(&self) -> Now {
        self.now
    }

    /// Connects a socket with these query parameters (`vsn=2.0.0` is implied).
    pub fn connect(&mut self, params: &[(&str, &str)]) -> Result<Client, ConnectRefused> {
        let info = ConnectInfo {
            now: self.now,
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            peer: ([127, 0, 0, 1], 40_000 + self.conns.len() as u16).into(),
        };
        let assigns: SharedAssigns = self.app.connect(&info)?;
        let id = self.conns.len() as ConnId + 1;
        let conn = ConnState {
            conn_id: id,
            shard: 0,
            serializer: Serializer::V2,
            assigns,
        };
        self.conns.push(TestConn {
            id,
            socket: PhoenixSocket::new(conn, self.app.router.clone()),
            subscriptions: HashMap::new(),
            mailbox: VecDeque::new(),
            received: Vec::new(),
            closed: None,
            terminated: false,
            next_ref: 0,
        });
        Ok(self.conns.len() - 1)
    }

    /// The server-wide id of a test connection (what `broadcast_from` excludes).
    pub fn conn_id(&self, client: Client) -> ConnId {
        self.conns[client].id
    }

    /// Sends `[join_ref, ref, topic, event, payload]` from `client`; runs everything that follows
    /// to completion and returns the frames the client received meanwhile.
    pub fn send(
        &mut self,
        client: Client,
        join_ref: Option<&str>,
        msg_ref: Option<&str>,
        topic: &str,
        event: &str,
        payload: Payload,
    ) -> Vec<Frame> {
        assert!(
            self.conns[client].closed.is_none(),
            "client {client} is closed: its socket takes no more messages"
        );
        let before = self.conns[client].received.len();
        let msg = Inbound {
            join_ref: join_ref.map(|r| ByteString::from(r.to_string())),
            msg_ref: msg_ref.map(|r| ByteString::from(r.to_string())),
            topic: ByteString::from(topic.to_string()),
            event: ByteString::from(event.to_string()),
            payload,
        };
        let effects = self.with_outbox(client, |socket, out| socket.handle(msg, out));
        self.run(Job::Conn(client, effects));
        self.conns[client].received[before..].to_vec()
    }

    /// Joins `topic` (join ref = msg ref = a fresh number) and returns the join's reply.
    pub fn join(&mut self, client: Client, topic: &str, payload: Value) -> Frame {
        let r = self.fresh_ref(client);
        let frames = self.send(
            client,
            Some(&r),
            Some(&r),
            topic,
            "phx_join",
            json(&payload),
        );
        reply_in(frames, &r)
    }

    /// Pushes `event` on a joined `topic` and returns its reply (a frame with no status when
    /// the channel did not reply).
    pub fn push(&mut self, client: Client, topic: &str, event: &str, payload: Value) -> Frame {
        self.push_payload(client, topic, event, json(&payload))
    }

    /// [`TestServer::push`] with any payload (binary too).
    pub fn push_payload(
        &mut self,
        client: Client,
        topic: &str,
        event: &str,
        payload: Payload,
    ) -> Frame {
        let join_ref = self.join_ref_of(client, topic);
        let r = self.fresh_ref(client);
        let frames = self.send(client, join_ref.as_deref(), Some(&r), topic, event, payload);
        reply_in(frames, &r)
    }

    /// Leaves `topic`.
    pub fn leave(&mut self, client: Client, topic: &str) -> Frame {
        let join_ref = self.join_ref_of(client, topic);
        let r = self.fresh_ref(client);
        let frames = self.send(
            client,
            join_ref.as_deref(),
            Some(&r),
            topic,
            "phx_leave",
            Payload::empty(),
        );
        reply_in(frames, &r)
    }

    /// The connection goes away: every channel terminates.
    pub fn disconnect(&mut self, client: Client) {
        let effects = self.with_outbox(client, |socket, out| socket.terminate_all(out));
        self.run(Job::Conn(client, effects));
    }

    /// Moves the virtual clock forward by `by`, firing every timer that falls due on the way, in
    /// order, and running what they cause.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now.instant + by;
        let start = self.now;
        while let Some((&(due, seq), _)) = self.timers.first_key_value() {
            if due > target {
                break;
            }
            let timer = self.timers.remove(&(due, seq)).expect("just seen");
            self.now = start.advanced(due - start.instant);
            match timer {
                Timer::Deliver(to, msg) => {
                    self.deliver_local(to, msg);
                    self.run(Job::Owner(Vec::new()));
                }
                Timer::Owner(topic, task) => self.run_owner(topic, task),
            }
        }
        self.now = start.advanced(by);
    }

    /// Everything `client` received so far, in order.
    pub fn received(&self, client: Client) -> &[Frame] {
        &self.conns[client].received
    }

    /// What `client` received since the last call, in order.
    pub fn take_received(&mut self, client: Client) -> Vec<Frame> {
        std::mem::take(&mut self.conns[client].received)
    }

    /// Frames `client` received with this event, in order.
    pub fn received_events(&self, client: Client, event: &str) -> Vec<Frame> {
        self.conns[client]
            .received
            .iter()
            .filter(|f| f.event() == event)
            .cloned()
            .collect()
    }

    /// Every broadcast published so far, in order.
    pub fn published(&self) -> &[Published] {
        &self.published
    }

    /// The close a channel asked for on `client`'s socket, if any.
    pub fn closed(&self, client: Client) -> Option<(u16, &'static str)> {
        self.conns[client].closed
    }

    /// Whether `client` is subscribed to `topic` (and receives its broadcasts: not gated).
    pub fn is_subscribed(&self, client: Client, topic: &str) -> bool {
        self.conns[client].subscriptions.get(topic) == Some(&false)
    }

    /// Timers waiting on the virtual clock.
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// The owner-side state (per-topic lifecycle can be checked through it).
    pub fn owner_states(&self) -> &OwnerStates {
        &self.owner_states
    }

    // --- The interpreter ------------------------------------------------------------------

    fn fresh_ref(&mut self, client: Client) -> String {
        let c = &mut self.conns[client];
        c.next_ref += 1;
        c.next_ref.to_string()
    }

    fn join_ref_of(&self, client: Client, topic: &str) -> Option<String> {
        // The most recent join reply on the topic names the join ref.
        self.conns[client]
            .received
            .iter()
            .rev()
            .find(|f| f.topic() == topic && f.status().is_some())
            .and_then(|f| f.join_ref.clone())
    }

    fn with_outbox(
        &mut self,
        client: Client,
        f: impl FnOnce(&mut PhoenixSocket, &mut Outbox<'_>),
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let mut out = Outbox {
            effects: &mut effects,
            arena: &mut self.arena,
            now: self.now,
        };
        f(&mut self.conns[client].socket, &mut out);
        effects
    }

    fn run(&mut self, first: Job) {
        let mut jobs = VecDeque::from([first]);
        let deadline = Instant::now() + SPAWN_WAIT;
        loop {
            while let Some(job) = jobs.pop_front() {
                match job {
                    Job::Conn(client, effects) => self.apply(Some(client), effects, &mut jobs),
                    Job::Owner(effects) => self.apply(None, effects, &mut jobs),
                    Job::OwnerTask(topic, task) => {
                        let effects = self.owner_effects(&topic, task);
                        self.apply(None, effects, &mut jobs);
                        self.release_if_unused(&topic);
                    }
                }
                self.drain_mailboxes(&mut jobs);
                self.end_closed_sessions(&mut jobs);
            }
            if self.spawned.is_empty() {
                return;
            }
            if !self.poll_spawned(&mut jobs) && jobs.is_empty() {
                // Spawned work finishes on another thread (storage): wait for its wake-up.
                let now = Instant::now();
                assert!(
                    now < deadline,
                    "spawned work did not finish in {SPAWN_WAIT:?}"
                );
                std::thread::park_timeout(deadline - now);
            }
        }
    }

    /// A socket whose close was asked for ends like the runtime's session: its channels
    /// terminate and unsubscribe; nothing more reaches it.
    fn end_closed_sessions(&mut self, jobs: &mut VecDeque<Job>) {
        for client in 0..self.conns.len() {
            if self.conns[client].closed.is_some() && !self.conns[client].terminated {
                self.conns[client].terminated = true;
                let effects = self.with_outbox(client, |socket, out| socket.terminate_all(out));
                jobs.push_back(Job::Conn(client, effects));
            }
        }
    }

    fn drain_mailboxes(&mut self, jobs: &mut VecDeque<Job>) {
        for client in 0..self.conns.len() {
            while let Some(mail) = self.conns[client].mailbox.pop_front() {
                match mail {
                    Mail::Frame(frame) => push_frame(&mut self.conns[client], frame),
                    Mail::Info(info) => {
                        let effects =
                            self.with_outbox(client, |socket, out| socket.handle_info(info, out));
                        jobs.push_back(Job::Conn(client, effects));
                        return;
                    }
                }
            }
        }
    }

    fn poll_spawned(&mut self, jobs: &mut VecDeque<Job>) -> bool {
        let waker = Waker::from(self.waker.clone());
        let mut cx = Context::from_waker(&waker);
        let mut progressed = false;
        let mut i = 0;
        while i < self.spawned.len() {
            if let Poll::Ready(out) = self.spawned[i].0.as_mut().poll(&mut cx) {
                let (_, then) = self.spawned.swap_remove(i);
                progressed = true;
                match then {
                    Then::Deliver(to) => self.deliver_local(to, out),
                    Then::Owner { topic, task } => {
                        let effects = self.owner_effects(&topic, move |ctx| task(ctx, out));
                        jobs.push_back(Job::Owner(effects));
                        self.release_if_unused(&topic);
                    }
                }
            } else {
                i += 1;
            }
        }
        progressed
    }

    fn apply(&mut self, origin: Option<Client>, effects: Vec<Effect>, jobs: &mut VecDeque<Job>) {
        for effect in effects {
            match effect {
                Effect::Send(frame) => match origin {
                    Some(c) => push_frame(&mut self.conns[c], frame),
                    None => panic!("Effect::Send from an owner task"),
                },
                Effect::Broadcast(msg) => self.publish(&msg),
                Effect::Subscribe { topic, gated } => {
                    let c = origin.expect("Effect::Subscribe from an owner task");
                    self.conns[c].subscriptions.insert(topic, gated);
                }
                Effect::Unsubscribe(topic) => {
                    let c = origin.expect("Effect::Unsubscribe from an owner task");
                    self.conns[c].subscriptions.remove(&topic);
                    self.release_if_unused(&topic);
                }
                Effect::Open(addr) => {
                    if let Some(conn) = self.conns.iter_mut().find(|c| c.id == addr.conn_id) {
                        if let Some(gated) = conn.subscriptions.get_mut(&addr.topic) {
                            *gated = false;
                        }
                    }
                }
                Effect::Deliver {
                    to,
                    msg,
                    delay: None,
                } => self.deliver_local(to, msg),
                Effect::Deliver {
                    to,
                    msg,
                    delay: Some(d),
                } => self.schedule(d, Timer::Deliver(to, msg)),
                Effect::Close { code, reason } => {
                    let c = origin.expect("Effect::Close from an owner task");
                    self.conns[c].closed.get_or_insert((code, reason));
                }
                Effect::RunOnOwner {
                    topic,
                    delay: None,
                    task,
                } if self.remote_owners => jobs.push_back(Job::OwnerTask(topic, task)),
                Effect::RunOnOwner {
                    topic,
                    delay: None,
                    task,
                } => {
                    // A local owner: its effects run before the rest of this list, as the
                    // runtime awaits them.
                    let effects = self.owner_effects(&topic, task);
                    self.apply(None, effects, jobs);
                    self.release_if_unused(&topic);
                }
                Effect::RunOnOwner {
                    topic,
                    delay: Some(d),
                    task,
                } => self.schedule(d, Timer::Owner(topic, task)),
                Effect::Spawn { fut, then } => self.spawned.push((fut, then)),
            }
        }
    }

    fn run_owner(&mut self, topic: Topic, task: OwnerTask) {
        let effects = self.owner_effects(&topic, task);
        self.release_if_unused(&topic);
        self.run(Job::Owner(effects));
    }

    fn owner_effects(
        &mut self,
        topic: &Topic,
        task: impl FnOnce(&mut OwnerCtx<'_>),
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let mut ctx = OwnerCtx::new(
            topic,
            0,
            self.now,
            &mut self.owner_states,
            &mut effects,
            &mut self.arena,
        );
        if catch_unwind(AssertUnwindSafe(|| task(&mut ctx))).is_err() {
            // As the runtime: a panicking owner task's effects are discarded.
            self.owner_states.discard(&mut effects);
        }
        effects
    }

    fn release_if_unused(&mut self, topic: &str) {
        if !self
            .conns
            .iter()
            .any(|c| c.subscriptions.contains_key(topic))
        {
            self.owner_states.release_if_idle(topic);
        }
    }

    fn schedule(&mut self, delay: Duration, timer: Timer) {
        self.timer_seq += 1;
        self.timers
            .insert((self.now.instant + delay, self.timer_seq), timer);
    }

    fn publish(&mut self, msg: &Broadcast) {
        self.published.push(Published {
            topic: msg.topic.clone(),
            event: msg.event.to_string(),
            payload: msg.payload.clone(),
            exclude: msg.exclude,
        });
        let Some(frame) = msg.frame_for(Serializer::V2) else {
            return;
        };
        for conn in &mut self.conns {
            if Some(conn.id) == msg.exclude || conn.subscriptions.get(&msg.topic) != Some(&false) {
                continue;
            }
            if conn.mailbox.is_empty() {
                push_frame(conn, frame.clone());
            } else {
                conn.mailbox.push_back(Mail::Frame(frame.clone()));
            }
        }
    }

    fn deliver_local(&mut self, to: ConnAddr, msg: Box<dyn Any>) {
        if let Some(conn) = self.conns.iter_mut().find(|c| c.id == to.conn_id) {
            conn.mailbox.push_back(Mail::Info(Info {
                topic: to.topic,
                join_ref: to.join_ref,
                msg,
            }));
        }
    }
}

fn push_frame(conn: &mut TestConn, frame: Bytes) {
    // After a close the runtime's outbound queue refuses frames.
    if conn.closed.is_none() {
        conn.received.push(Frame::decode(&frame));
    }
}

fn json(v: &Value) -> Payload {
    Payload::json(v)
}

/// The reply to `msg_ref` among `frames`, or an empty frame (no status) when there is none.
fn reply_in(frames: Vec<Frame>, msg_ref: &str) -> Frame {
    frames
        .into_iter()
        .find(|f| f.msg_ref() == Some(msg_ref) && f.status().is_some())
        .unwrap_or_else(Frame::none)
}

#[cfg(test)]
mod tests {
    //! The Phoenix socket state machine and the owner-task machinery, through the harness.
    use super::TestServer;
    use crate::core::echo::EchoChannel;
    use crate::core::{
        AllowAll, App, Channel, ChannelCtx, HandleIn, HandleInfo, OwnerCtx, Payload, Router,
        TerminateReason,
    };
    use serde_json::{json, Value};
    use std::time::Duration;

    /// A channel exercising every callback.
    #[derive(Default)]
    struct Probe;

    enum ProbeInfo {
        Later(u32),
        Counted(u64),
    }

    #[derive(Default)]
    struct Joins(u64);

    fn count_join(owner: &mut OwnerCtx<'_>, to: crate::core::Addr<ProbeInfo>) {
        let joins = owner.topic_state::<Joins>();
        let n = {
            let mut j = joins.borrow_mut();
            j.0 += 1;
            j.0
        };
        owner.send(&to, ProbeInfo::Counted(n));
    }

    impl Channel for Probe {
        type Info = ProbeInfo;

        fn join(
            &mut self,
            ctx: &mut ChannelCtx<'_, ProbeInfo>,
            p: Payload,
        ) -> Result<Payload, Payload> {
            let p: Value = p.parse().unwrap_or(Value::Null);
            if p["refuse"] == json!(true) {
                return Err(Payload::json(&json!({"reason": "refused"})));
            }
            let to = ctx.address();
            ctx.run_on_owner(move |owner| count_join(owner, to));
            Ok(Payload::json(&json!({"joined": true})))
        }

        fn handle_in(
            &mut self,
            ctx: &mut ChannelCtx<'_, ProbeInfo>,
            event: &str,
            _p: Payload,
        ) -> HandleIn {
            match event {
                "later" => {
                    ctx.send_after(Duration::from_millis(500), ProbeInfo::Later(1));
                    HandleIn::NoReply
                }
                "crash" => panic!("crash requested"),
                "stop" => HandleIn::Stop(None),
                "close" => {
                    ctx.close_socket(4000, "asked");
                    HandleIn::ok(Payload::empty())
                }
                "shout_on_owner" => {
                    ctx.run_on_owner(|owner| owner.broadcast("shout", &Payload::empty()));
                    HandleIn::ok(Payload::empty())
                }
                "owner_panic" => {
                    ctx.run_on_owner(|owner| {
                        owner.topic_state::<Joins>();
                        owner.run_after(Duration::from_secs(1), |_| {});
                        panic!("owner task fails after scheduling work");
                    });
                    HandleIn::ok(Payload::empty())
                }
                _ => HandleIn::error_reason("unknown event"),
            }
        }

        fn handle_info(
            &mut self,
            ctx: &mut ChannelCtx<'_, ProbeInfo>,
            msg: ProbeInfo,
        ) -> HandleInfo {
            let (event, n) = match msg {
                ProbeInfo::Later(n) => ("later", u64::from(n)),
                ProbeInfo::Counted(n) => ("counted", n),
            };
            match ctx.push(event, &Payload::json(&json!({ "n": n }))) {
                Ok(()) => HandleInfo::Continue,
                Err(_) => HandleInfo::Stop,
            }
        }

        fn terminate(&mut self, ctx: &mut ChannelCtx<'_, ProbeInfo>, reason: TerminateReason) {
            ctx.broadcast(
                "gone",
                &Payload::json(&json!({"why": format!("{reason:?}")})),
            );
        }
    }

    fn server() -> TestServer {
        TestServer::new(App::new(
            AllowAll,
            Router::new()
                .channel("probe:*", Probe::default)
                .channel("echo:*", EchoChannel::default),
        ))
    }

    #[test]
    fn heartbeat_and_unmatched_topics_get_phoenix_replies() {
        let mut s = server();
        let c = s.connect(&[]).unwrap();
        let frames = s.send(c, None, Some("9"), "phoenix", "heartbeat", Payload::empty());
        assert_eq!(frames.len(), 1);
        assert_eq!(
            (frames[0].topic(), frames[0].status()),
            ("phoenix", Some("ok"))
        );
        // A push on a topic not joined, and a join with no route.
        let r = s.push(c, "probe:1", "later", json!({}));
        assert_eq!(r.response(), json!({"reason": "unmatched topic"}));
        let r = s.join(c, "nowhere", json!({}));
        assert_eq!(
            (r.status(), r.response()),
            (Some("error"), json!({"reason": "unmatched topic"}))
        );
    }

    #[test]
    fn join_refusal_stop_crash_and_leave_follow_phoenix() {
        let mut s = server();
        let c = s.connect(&[]).unwrap();
        let r = s.join(c, "probe:1", json!({"refuse": true}));
        assert_eq!(r.response(), json!({"reason": "refused"}));
        assert!(!s.is_subscribed(c, "probe:1"));

        assert_eq!(s.join(c, "probe:1", json!({})).status(), Some("ok"));
        assert!(s.is_subscribed(c, "probe:1"));
        // The owner's answer arrives in handle_info, after the reply.
        let counted = s.received_events(c, "counted");
        assert_eq!(counted[0].json_payload(), Some(json!({"n": 1})));

        // Joining again replaces the join: the old one is closed (phx_close, old join ref).
        let old_ref = s
            .received(c)
            .iter()
            .rev()
            .find(|f| f.status() == Some("ok"))
            .unwrap()
            .join_ref
            .clone();
        s.join(c, "probe:1", json!({}));
        let closes = s.received_events(c, "phx_close");
        assert_eq!(closes.last().unwrap().join_ref, old_ref);
        assert_eq!(
            s.published().last().unwrap().json_payload(),
            Some(json!({"why": "Duplicate"}))
        );

        // A crash: phx_error, unsubscribed, terminate(Crashed) still runs.
        s.take_received(c);
        s.push(c, "probe:1", "crash", json!({}));
        assert_eq!(s.received_events(c, "phx_error").len(), 1);
        assert!(!s.is_subscribed(c, "probe:1"));
        assert_eq!(
            s.published().last().unwrap().json_payload(),
            Some(json!({"why": "Crashed"}))
        );

        // Stop from handle_in: phx_close; leave: ok reply then phx_close.
        s.join(c, "probe:2", json!({}));
        s.take_received(c);
        s.push(c, "probe:2", "stop", json!({}));
        assert_eq!(s.received_events(c, "phx_close").len(), 1);
        s.join(c, "probe:3", json!({}));
        assert_eq!(s.leave(c, "probe:3").status(), Some("ok"));
        assert!(!s.is_subscribed(c, "probe:3"));
    }

    #[test]
    fn timers_run_on_the_virtual_clock_and_die_with_their_join() {
        let mut s = server();
        let c = s.connect(&[]).unwrap();
        s.join(c, "probe:1", json!({}));
        s.push(c, "probe:1", "later", json!({}));
        s.advance(Duration::from_millis(499));
        assert!(s.received_events(c, "later").is_empty());
        s.advance(Duration::from_millis(1));
        assert_eq!(s.received_events(c, "later").len(), 1);
        // A timer whose join was left is dropped.
        s.push(c, "probe:1", "later", json!({}));
        s.leave(c, "probe:1");
        s.advance(Duration::from_secs(1));
        assert_eq!(s.received_events(c, "later").len(), 1);
        assert_eq!(s.pending_timers(), 0);
    }

    #[test]
    fn per_topic_owner_state_lives_while_the_topic_has_subscribers() {
        let mut s = server();
        let (a, b) = (s.connect(&[]).unwrap(), s.connect(&[]).unwrap());
        s.join(a, "probe:1", json!({}));
        s.join(b, "probe:1", json!({}));
        assert_eq!(
            s.received_events(b, "counted")[0].json_payload(),
            Some(json!({"n": 2}))
        );
        assert!(s.owner_states().has_topic_state("probe:1"));
        s.leave(a, "probe:1");
        assert!(
            s.owner_states().has_topic_state("probe:1"),
            "b is still there"
        );
        s.disconnect(b);
        assert!(!s.owner_states().has_topic_state("probe:1"));
        // A new life starts from scratch.
        s.join(a, "probe:1", json!({}));
        let counted = s.received_events(a, "counted");
        assert_eq!(
            counted.last().unwrap().json_payload(),
            Some(json!({"n": 1}))
        );
    }

    #[test]
    fn broadcasts_reach_every_subscriber_and_callbacks_can_close_the_socket() {
        let mut s = server();
        let (a, b) = (s.connect(&[]).unwrap(), s.connect(&[]).unwrap());
        s.join(a, "echo:1", json!({}));
        s.join(b, "echo:1", json!({}));
        s.push(a, "echo:1", "broadcast", json!({"x": 1}));
        for c in [a, b] {
            assert_eq!(s.received_events(c, "broadcast").len(), 1);
        }
        let binary = Payload::Binary(bytes::Bytes::from_static(b"\x01\x02"));
        let r = s.push_payload(a, "echo:1", "echo", binary.clone());
        assert_eq!((r.status(), &r.payload), (Some("ok"), &binary));
        s.push(a, "probe:9", "close", json!({}));
        assert_eq!(s.closed(a), None, "not joined: unmatched, nothing closed");
        s.join(a, "probe:9", json!({}));
        let r = s.push(a, "probe:9", "close", json!({}));
        assert_eq!(r.status(), None, "the reply comes after the close: refused");
        assert_eq!(s.closed(a), Some((4000, "asked")));
        // The session ended as the runtime's does: channels terminated and unsubscribed.
        assert!(!s.is_subscribed(a, "probe:9") && !s.is_subscribed(a, "echo:1"));
        let why: Vec<_> = s
            .published()
            .iter()
            .filter_map(|p| p.json_payload())
            .collect();
        assert!(why.contains(&json!({"why": "Disconnect"})), "{why:?}");
    }

    #[test]
    fn names_and_joins_per_socket_are_bounded() {
        let mut s = server();
        let c = s.connect(&[]).unwrap();
        for i in 0..100 {
            assert_eq!(
                s.join(c, &format!("echo:{i}"), json!({})).status(),
                Some("ok")
            );
        }
        let r = s.join(c, "echo:100", json!({}));
        assert_eq!(r.response(), json!({"reason": "too_many_joins"}));
        // Joining a topic again is a rejoin, not one more; leaving makes room.
        assert_eq!(s.join(c, "echo:7", json!({})).status(), Some("ok"));
        s.leave(c, "echo:7");
        assert_eq!(s.join(c, "echo:100", json!({})).status(), Some("ok"));
        // A name longer than 255 bytes is not echoed back: the socket closes with 1008.
        let long = format!("echo:{}", "x".repeat(251));
        s.send(c, Some("9"), Some("9"), &long, "phx_join", Payload::empty());
        assert_eq!(s.closed(c), Some((1008, "topic or event name too long")));
    }

    #[test]
    fn a_panicking_owner_task_leaves_no_pending_work_behind() {
        let mut s = server();
        let c = s.connect(&[]).unwrap();
        s.join(c, "probe:1", json!({}));
        s.push(c, "probe:1", "owner_panic", json!({}));
        assert_eq!(s.pending_timers(), 0, "its effects were discarded");
        s.leave(c, "probe:1");
        assert!(!s.owner_states().has_topic_state("probe:1"));
    }

    #[test]
    fn remote_owners_run_after_the_callback_local_ones_before_its_reply() {
        for remote in [false, true] {
            let mut s = server();
            if remote {
                s = s.with_remote_owners();
            }
            let c = s.connect(&[]).unwrap();
            let frames = s.send(
                c,
                Some("1"),
                Some("1"),
                "probe:1",
                "phx_join",
                Payload::empty(),
            );
            let events: Vec<&str> = frames.iter().map(|f| f.event()).collect();
            // The join reply always comes first (the owner's answer goes through handle_info).
            assert_eq!(events, ["phx_reply", "counted"], "remote: {remote}");
            // An owner's broadcast: before the push's reply on a local owner, after it otherwise.
            s.take_received(c);
            s.push(c, "probe:1", "shout_on_owner", json!({}));
            let events: Vec<String> = s
                .take_received(c)
                .iter()
                .map(|f| f.event().to_string())
                .collect();
            let expected = if remote {
                ["phx_reply", "shout"]
            } else {
                ["shout", "phx_reply"]
            };
            assert_eq!(events, expected, "remote: {remote}");
        }
    }
}
