//! One connection on a shard, from TCP accept to close: the HTTP head (upgrade, `/health`,
//! `/metrics`), then the WebSocket session. The reader task decodes frames, hands Phoenix
//! messages to the socket state machine and carries out the effects it returns; the outbound
//! queue is written by the shard's socket ring (no writer task per connection).

use super::credit::Credit;
use super::interpret::{self, ConnOrigin};
use super::mailbox::{ConnShared, Mail};
use super::shard::Shard;
use super::transport::outbound::Outbound;
use super::transport::ring::{Received, RecvHandle};
use crate::core::ctx::{ConnState, Outbox, SharedAssigns};
use crate::core::socket::PhoenixSocket;
use crate::core::{ConnId, ConnectInfo, Effect};
use crate::ops::http_endpoints;
use crate::ops::metrics::ShardMetrics;
use crate::protocol::deflate::{self, Agreed};
use crate::protocol::http::{
    check_upgrade, parse_request_head, response, switching_protocols, UpgradeCheck,
};
use crate::protocol::phoenix::{decode_binary, decode_text, Serializer};
use crate::protocol::websocket::{
    close_code, encode_close, encode_frame, DecoderLimits, FrameKind, WsDecoder, WsEvent,
};
use bytes::{Buf, Bytes, BytesMut};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::task::Poll;

/// Serves one accepted TCP connection to the end. Its bytes move through the shard's socket
/// ring: reads land in the shard's shared receive buffers, writes go out in the ring's
/// batched submissions.
pub async fn serve(shard: Rc<Shard>, stream: glommio::net::TcpStream) {
    let peer = stream.peer_addr().ok();
    // The socket leaves glommio (whose stream keeps poll sources and timers per socket): the
    // shard's ring does all its I/O.
    let stream = match into_std(stream) {
        Ok(stream) => stream,
        Err(mut stream) => {
            // No descriptor for the copy (at the limit): the client still gets an answer.
            ShardMetrics::inc(&shard.metrics().connections_shed);
            super::transport::listener::shed(&mut stream).await;
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let ws = &shard.config.websocket;
    let outbound = Rc::new(Outbound::with_limits(shard.outbound_limits.clone()));
    outbound.attach(shard.ring.clone(), stream.as_raw_fd());
    let recv = shard.ring.start_recv(stream.as_raw_fd());
    // The whole head must arrive within the timeout, counted from the accept: a client that
    // trickles a byte at a time does not restart it.
    recv.set_deadline(Some(std::time::Instant::now() + ws.handshake_timeout()));

    let mut buf = BytesMut::new();
    let head = loop {
        match parse_request_head(&buf, ws.max_request_head) {
            Ok(Some(head)) => break head,
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(?peer, error = %e, "bad request head");
                ShardMetrics::inc(&shard.metrics().handshake_failures);
                let status = if matches!(e, crate::protocol::http::HeadError::TooLarge(_)) {
                    431
                } else {
                    400
                };
                let answer = response(status, "text/plain", e.to_string().as_bytes());
                respond_and_close(&outbound, answer).await;
                return;
            }
        }
        match recv.recv(&mut buf).await {
            // (No park time is set before the session: `Idle` cannot come.)
            Received::Data(_) | Received::Idle => {}
            Received::Eof | Received::Error | Received::TimedOut => {
                // Closed, failed, or silent past the handshake deadline.
                ShardMetrics::inc(&shard.metrics().handshake_failures);
                return;
            }
        }
    };
    buf.advance(head.head_len);
    // `head` (headers, query strings) is dropped here, before the long-lived session.
    let route = route(&shard, head, peer);
    recv.set_deadline(None);
    match route {
        Route::Respond(bytes) => respond_and_close(&outbound, bytes).await,
        Route::Upgrade {
            accept,
            session,
            deflate,
        } => {
            let response = switching_protocols(&accept, deflate.as_ref().map(|(_, r)| r.as_str()));
            // The 101 goes out first; the session's frames queue behind it.
            outbound.push(Bytes::from(response));
            let deflate = deflate.map(|(agreed, _)| agreed);
            let io = SessionIo {
                outbound,
                recv,
                _stream: stream,
            };
            run_session(shard, io, buf, session, deflate).await;
        }
    }
}

/// Takes the socket out of glommio's stream (which has no `into_raw_fd`): a duplicate
/// descriptor, the original closed. Gives the stream back if no descriptor is left for the copy.
fn into_std(
    stream: glommio::net::TcpStream,
) -> Result<std::net::TcpStream, glommio::net::TcpStream> {
    let copy = socket2::SockRef::from(&stream).try_clone();
    match copy {
        Ok(socket) => Ok(socket.into()),
        Err(_) => Err(stream),
    }
}

/// Writes a plain HTTP answer, shuts the write side down after it and waits until that is done
/// (or the write failed or timed out).
async fn respond_and_close(outbound: &Outbound, answer: Vec<u8>) {
    outbound.close_with(Bytes::from(answer));
    outbound.finished().await;
}

/// A session's socket: its outbound queue, its receive, and the descriptor both use (closed
/// last, when this is dropped: the queue and the receive are cancelled first).
struct SessionIo {
    outbound: Rc<Outbound>,
    recv: RecvHandle,
    _stream: std::net::TcpStream,
}

enum Route {
    /// A plain HTTP answer, then close.
    Respond(Vec<u8>),
    /// Answer 101 with this accept key (and permessage-deflate's agreement and response
    /// header, when negotiated) and run the session.
    Upgrade {
        accept: String,
        session: SessionKind,
        deflate: Option<(Agreed, String)>,
    },
}

/// Decides what a request head gets: `/health`, `/metrics`, a WebSocket session, or an error.
fn route(
    shard: &Shard,
    head: crate::protocol::http::RequestHead,
    peer: Option<std::net::SocketAddr>,
) -> Route {
    let metrics = shard.metrics();
    let upgrade = check_upgrade(&head);
    let deflate = head
        .headers
        .get("sec-websocket-extensions")
        .filter(|_| shard.config.websocket.deflate)
        .and_then(|offers| deflate::negotiate(offers));
    let text = |status: u16, body: &[u8]| Route::Respond(response(status, "text/plain", body));
    match (head.path.as_str(), upgrade) {
        ("/health", UpgradeCheck::NotUpgrade) => Route::Respond(http_endpoints::health(
            shard.all_metrics(),
            shard.is_draining(),
        )),
        ("/metrics", UpgradeCheck::NotUpgrade) => {
            Route::Respond(http_endpoints::metrics(shard.all_metrics()))
        }
        ("/socket/websocket" | "/echo", _) if shard.is_draining() => {
            text(503, b"server is shutting down")
        }
        ("/socket/websocket", UpgradeCheck::Accept(accept)) => {
            let vsn = head
                .query
                .iter()
                .find(|(k, _)| k == "vsn")
                .map(|(_, v)| v.as_str());
            let Some(serializer) = Serializer::from_vsn(vsn) else {
                ShardMetrics::inc(&metrics.handshake_failures);
                return text(400, b"unsupported vsn (1.0.0 or 2.0.0)");
            };
            let info = ConnectInfo {
                now: super::now(),
                params: head.query,
                peer: peer.unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
            };
            match shard.app.connect(&info) {
                Ok(assigns) => Route::Upgrade {
                    accept,
                    session: SessionKind::Phoenix {
                        serializer,
                        assigns,
                    },
                    deflate,
                },
                Err(refused) => {
                    ShardMetrics::inc(&metrics.connect_refused);
                    text(403, refused.reason.as_bytes())
                }
            }
        }
        ("/echo", UpgradeCheck::Accept(accept)) if shard.config.echo_endpoint => Route::Upgrade {
            accept,
            session: SessionKind::Echo,
            deflate,
        },
        ("/socket/websocket" | "/echo", UpgradeCheck::Refuse(status, why)) => {
            ShardMetrics::inc(&metrics.handshake_failures);
            text(status, why.as_bytes())
        }
        ("/socket/websocket", UpgradeCheck::NotUpgrade) => {
            text(400, b"expected a WebSocket upgrade")
        }
        _ => text(404, b"not found"),
    }
}

enum SessionKind {
    Phoenix {
        serializer: Serializer,
        assigns: SharedAssigns,
    },
    Echo,
}

/// What woke the reader.
enum Wake {
    Data,
    Eof,
    IdleTimeout,
    ReadError,
    Mail,
    OutboundFailed,
    Shutdown,
    /// The connection's earlier broadcasts have been written: take more.
    Credit,
    /// Waited `publisher_patience_ms` for that: write the rest off and go on.
    Patience,
    /// An unfinished frame's deadline passed.
    FrameTimeout,
    /// No input for `park_after`: the session may park.
    Idle,
}

/// Messages one connection may have handled before the others (and the shard's socket ring)
/// get a turn...
const MESSAGES_PER_TURN: usize = 64;
/// ...or bytes of messages: a turn of large broadcasts must not queue megabytes per subscriber
/// before any of it is written.
const BYTES_PER_TURN: usize = 64 * 1024;

async fn run_session(
    shard: Rc<Shard>,
    io: SessionIo,
    buf: BytesMut,
    session: SessionKind,
    deflate: Option<Agreed>,
) {
    let config = &shard.config;
    let conn_id = shard.next_conn_id();
    let shared = Rc::new(ConnShared::new(
        io.outbound.clone(),
        deflate.map(|agreed| (agreed, config.websocket.deflate_params())),
    ));
    shard.register(conn_id, &shared);
    let metrics = shard.metrics();
    ShardMetrics::inc(&metrics.connections);
    ShardMetrics::inc(&metrics.connections_total);

    io.recv
        .set_idle_timeout(Some(config.websocket.idle_timeout()));
    io.recv.set_park_after(Some(config.websocket.park_after()));

    let conn = Conn {
        shard: shard.clone(),
        conn_id,
        shared,
        socket: match session {
            SessionKind::Phoenix {
                serializer,
                assigns,
            } => Some(
                PhoenixSocket::new(
                    ConnState {
                        conn_id,
                        shard: shard.id,
                        serializer,
                        assigns,
                    },
                    shard.app.router.clone(),
                )
                .with_limits(config.channels),
            ),
            SessionKind::Echo => None,
        },
        effects: Vec::new(),
        close_sent: false,
        parked_before: false,
        credit: None,
    };
    drive(SessionState::start(conn, io, buf)).await;
}

/// Everything a WebSocket session holds between events. A session idle for
/// `websocket.park_after_ms` is *parked*: its [`ParkedSession`] in its shard's table is then all
/// that is left of it (no task, no future); the next event for it (input, mail, a failure,
/// shutdown, a deadline) spawns a task that carries on from there.
struct SessionState {
    conn: Conn,
    io: SessionIo,
    buf: BytesMut,
    decoder: WsDecoder,
    partial: PartialBytes,
    frame_deadline: Option<glommio::timer::Timer>,
    patience: Option<glommio::timer::Timer>,
}

/// What is left of a parked session: its connection and socket handles. Its reading state
/// (receive buffer, frame decoder, share of the partial bytes, timers) is at rest whenever it
/// parks — nothing unfinished — so it is dropped and made again on resume: 192 bytes kept per
/// idle connection instead of 336.
struct ParkedSession {
    conn: Conn,
    io: SessionIo,
}

impl SessionState {
    /// A session reading from the start of its stream (`buf`: what came after the handshake).
    fn start(conn: Conn, io: SessionIo, buf: BytesMut) -> Box<SessionState> {
        let config = &conn.shard.config.websocket;
        let mut decoder = WsDecoder::new(DecoderLimits {
            max_frame_size: config.max_frame_size,
            max_message_size: config.max_message_size,
        });
        if conn.shared.deflates() {
            decoder = decoder.with_inflate();
        }
        Box::new(SessionState {
            partial: PartialBytes::new(conn.shard.clone()),
            conn,
            io,
            buf,
            decoder,
            frame_deadline: None,
            patience: None,
        })
    }

    /// Keeps what a parked session needs. Only called at rest (see [`Outcome::Park`]): a
    /// decoder between frames carries nothing a new one lacks.
    fn park(self: Box<Self>) -> Box<ParkedSession> {
        let SessionState {
            conn,
            io,
            buf,
            decoder,
            partial,
            frame_deadline,
            patience,
        } = *self;
        debug_assert!(buf.is_empty() && !decoder.in_message() && decoder.buffered() == 0);
        debug_assert!(partial.held == 0 && frame_deadline.is_none() && patience.is_none());
        Box::new(ParkedSession { conn, io })
    }

    fn resume(parked: ParkedSession) -> Box<SessionState> {
        let ParkedSession { conn, io } = parked;
        SessionState::start(conn, io, BytesMut::new())
    }
}

/// How a session's run ended.
enum Outcome {
    /// Idle with nothing pending (no unfinished frame, timer or credit wait): park it.
    Park,
    /// The session is over: tear it down.
    End,
}

/// Runs a session until it parks or ends.
async fn drive(mut state: Box<SessionState>) {
    match state.run().await {
        Outcome::Park => {
            state.conn.release_spare();
            let waker = parking::waker(state.conn.conn_id);
            // Every source of a next event wakes the parking waker, which resumes the session.
            state.io.recv.register_waker(&waker);
            state.conn.shared.outbound.register_reader(&waker);
            ShardMetrics::inc(&state.conn.shard.metrics().sessions_parked);
            parking::park(state.park());
        }
        Outcome::End => state.finish().await,
    }
}

/// Resumes the parked sessions whose parking wakers fired (one task per shard).
pub async fn run_resumer(shard: Rc<Shard>) {
    loop {
        let woken = parking::next_woken().await;
        for conn_id in woken {
            // None: a repeated wake of a session already resumed.
            if let Some(parked) = parking::unpark(conn_id) {
                ShardMetrics::dec(&shard.metrics().sessions_parked);
                glommio::spawn_local(drive(SessionState::resume(*parked))).detach();
            }
        }
    }
}

/// Parked sessions and their wakers: a waker is a conn id, queued for the shard's resumer when
/// woken. Both are the shard thread's own (thread-local) — every source of a session's events is
/// on its shard's thread.
mod parking {
    use super::ParkedSession;
    use crate::core::ConnId;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::task::{Poll, Wake, Waker};

    #[derive(Default)]
    struct Woken {
        ids: Vec<ConnId>,
        resumer: Option<Waker>,
    }

    thread_local! {
        static WOKEN: RefCell<Woken> = RefCell::new(Woken::default());
        static PARKED: RefCell<HashMap<ConnId, Box<ParkedSession>>> = RefCell::new(HashMap::new());
    }

    /// Keeps an idle session until its next event.
    pub(super) fn park(mut state: Box<ParkedSession>) {
        if !std::mem::replace(&mut state.conn.parked_before, true) {
            // Its first park: the storm it came in with is over for it. (Later parks, after a
            // heartbeat, free no more than they took.)
            crate::runtime::memory::session_freed();
        }
        PARKED.with(|p| p.borrow_mut().insert(state.conn.conn_id, state));
    }

    /// Takes a parked session back (none if it is not parked: a repeated wake).
    pub(super) fn unpark(conn_id: ConnId) -> Option<Box<ParkedSession>> {
        PARKED.with(|p| p.borrow_mut().remove(&conn_id))
    }

    struct Parked(ConnId);

    impl Wake for Parked {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            WOKEN.with(|w| {
                let mut w = w.borrow_mut();
                w.ids.push(self.0);
                if let Some(r) = w.resumer.take() {
                    r.wake();
                }
            });
        }
    }

    /// The waker of parked session `conn_id`.
    pub(super) fn waker(conn_id: ConnId) -> Waker {
        Waker::from(Arc::new(Parked(conn_id)))
    }

    /// The sessions woken since the last call (possibly with repeats), once there are any.
    pub(super) async fn next_woken() -> Vec<ConnId> {
        std::future::poll_fn(|cx| {
            WOKEN.with(|w| {
                let mut w = w.borrow_mut();
                if w.ids.is_empty() {
                    w.resumer = Some(cx.waker().clone());
                    Poll::Pending
                } else {
                    Poll::Ready(std::mem::take(&mut w.ids))
                }
            })
        })
        .await
    }
}

impl SessionState {
    /// Reads, decodes and handles messages and mail until the session parks or ends.
    async fn run(&mut self) -> Outcome {
        let SessionState {
            conn,
            io,
            buf,
            decoder,
            partial,
            frame_deadline,
            patience,
        } = self;
        let shard = conn.shard.clone();
        let config = &shard.config;
        let metrics = shard.metrics();
        let credit = conn.credit().clone();
        let outbound = &io.outbound;
        let recv = &io.recv;
        let conn_id = conn.conn_id;
        'session: loop {
            // Take what the buffer holds: a bounded number of messages per turn, and only while
            // this connection's earlier broadcasts are being written (its credit).
            let mut taken = 0;
            let mut taken_bytes = 0;
            while credit.has_room() {
                match decoder.decode(buf) {
                    Ok(Some(event)) => {
                        taken_bytes += match &event {
                            WsEvent::Text(data) | WsEvent::Binary(data) => data.len(),
                            _ => 0,
                        };
                        if !conn.on_event(event).await {
                            break 'session;
                        }
                        // What the callback sent itself (`send_self`, owner answers that are
                        // already here) is handled before the client's next message.
                        conn.handle_mail().await;
                        taken += 1;
                        if taken_bytes >= BYTES_PER_TURN {
                            // Ends the turn as the count bound does.
                            taken = MESSAGES_PER_TURN;
                        }
                        if taken == MESSAGES_PER_TURN {
                            // Let the other connections run before more of this one's input.
                            glommio::executor().yield_now().await;
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(violation) => {
                        tracing::debug!(conn = conn_id, %violation, "closing connection");
                        ShardMetrics::inc(&metrics.protocol_errors);
                        conn.close(violation.code, violation.reason);
                        break 'session;
                    }
                }
            }
            if credit.has_room() {
                *patience = None;
            }
            glommio::yield_if_needed().await;
            if buf.is_empty() && buf.capacity() > 0 {
                // Idle connections hold no receive memory: reads land in the shard's buffers.
                *buf = BytesMut::new();
            }
            let more_input_wanted = taken < MESSAGES_PER_TURN;
            let read = credit.has_room() && more_input_wanted;
            // An unfinished frame must be completed within its deadline, however slowly its
            // bytes trickle in. The clock runs only while the server reads (holding the client
            // back for credit is not the client being slow), and starts again with every
            // message completed (a busy client's reads rarely end on a frame boundary) — except
            // inside a fragmented message, which must end within it as a whole (interleaved
            // pings do not restart it).
            let unfinished = !buf.is_empty() || decoder.in_message();
            if !read || !unfinished || (taken > 0 && !decoder.in_message()) {
                *frame_deadline = None;
            }
            if read && unfinished && frame_deadline.is_none() {
                *frame_deadline =
                    Some(glommio::timer::Timer::new(config.websocket.frame_timeout()));
            }
            let held = buf.len() + decoder.buffered();
            if !partial.set(held, buf.capacity() + decoder.buffered()) {
                ShardMetrics::inc(&metrics.partial_budget_closes);
                conn.close(
                    close_code::TRY_AGAIN_LATER,
                    "server busy: too much unfinished input",
                );
                break;
            }
            if !credit.has_room() && patience.is_none() {
                ShardMetrics::inc(&metrics.publisher_waits);
                *patience = Some(glommio::timer::Timer::new(
                    config.outbound.publisher_patience(),
                ));
            }
            if !more_input_wanted && credit.has_room() {
                // The turn ended on the message bound: go on with the buffer first.
                continue;
            }
            let wait = Waits {
                read,
                credit: &credit,
                patience,
                frame_deadline,
            };
            match next_wake(recv, &conn.shared, buf, wait).await {
                Wake::Data | Wake::Credit => {}
                Wake::Idle => {
                    // Nothing pending (no input, mail, timer or credit wait): park.
                    if !unfinished && frame_deadline.is_none() && patience.is_none() {
                        return Outcome::Park;
                    }
                }
                Wake::Patience => {
                    // The subscribers holding this connection's frames are not keeping up:
                    // they are judged on their own (they fall behind); this one goes on.
                    credit.write_off();
                    *patience = None;
                }
                Wake::Mail => conn.handle_mail().await,
                Wake::IdleTimeout => {
                    ShardMetrics::inc(&metrics.idle_timeouts);
                    conn.close(close_code::GOING_AWAY, "idle timeout");
                    break;
                }
                Wake::FrameTimeout => {
                    ShardMetrics::inc(&metrics.frame_timeouts);
                    conn.close(close_code::POLICY_VIOLATION, "frame not completed in time");
                    break;
                }
                Wake::Shutdown => {
                    conn.close(close_code::GOING_AWAY, "server shutting down");
                    break;
                }
                Wake::OutboundFailed => {
                    if outbound.is_slow_consumer() {
                        ShardMetrics::inc(&metrics.slow_consumer_disconnects);
                        tracing::info!(conn = conn_id, "slow consumer disconnected (1013)");
                    }
                    break;
                }
                Wake::Eof | Wake::ReadError => break,
            }
            if conn.close_sent {
                break;
            }
        }
        Outcome::End
    }

    /// Tears the session down: channels terminate, the closing handshake runs, the socket
    /// closes.
    async fn finish(self: Box<Self>) {
        let SessionState {
            mut conn,
            io,
            partial,
            ..
        } = *self;
        drop(partial);
        crate::runtime::memory::session_freed();
        let shard = conn.shard.clone();
        let config = &shard.config;
        let metrics = shard.metrics();
        let outbound = &io.outbound;
        let recv = &io.recv;

        // Channels terminate (their broadcasts, e.g. "user left", still go out) and unsubscribe.
        conn.lend_effects();
        if let Some(socket) = conn.socket.as_mut() {
            shard.with_arena(|arena| {
                socket.terminate_all(&mut Outbox {
                    effects: &mut conn.effects,
                    arena,
                    now: super::now(),
                })
            });
            conn.run_effects().await;
        }
        shard.unregister(conn.conn_id);
        ShardMetrics::dec(&metrics.connections);

        // A slow consumer still gets its 1013 close frame if it reads again within the timeout.
        if (conn.close_sent && !outbound.failed()) || outbound.is_slow_consumer() {
            // Closing handshake: the ring sends our close frame and then FIN; wait for the
            // client's side to close (or the close timeout), discarding what it still sends.
            recv.set_idle_timeout(None);
            recv.set_park_after(None);
            recv.set_deadline(Some(
                std::time::Instant::now() + config.websocket.close_timeout(),
            ));
            let mut buf = BytesMut::new();
            while let Received::Data(_) = recv.recv(&mut buf).await {
                buf.clear();
            }
        }
        // Sends still in flight are cancelled before the socket is closed (dropped) here.
        outbound.abandon();
        drop(io);
    }
}

/// This connection's share of the shard's bytes held in unfinished frames, and whether it holds
/// a receive buffer at all (an idle one does not: both are gauges in `/metrics`).
struct PartialBytes {
    shard: Rc<Shard>,
    held: usize,
    has_buffer: bool,
}

impl PartialBytes {
    fn new(shard: Rc<Shard>) -> Self {
        PartialBytes {
            shard,
            held: 0,
            has_buffer: false,
        }
    }

    /// Records that the connection now holds `held` bytes in a buffer of `capacity`; false if
    /// that takes the shard past its budget (the connection must close).
    fn set(&mut self, held: usize, capacity: usize) -> bool {
        let grew = held > self.held;
        self.shard.adjust_partial_bytes(self.held, held);
        self.held = held;
        self.set_has_buffer(capacity > 0);
        !grew
            || self.shard.partial_bytes() <= self.shard.config.websocket.max_partial_bytes_per_shard
    }

    fn set_has_buffer(&mut self, has: bool) {
        if has != self.has_buffer {
            self.has_buffer = has;
            let gauge = &self.shard.metrics().receive_buffers;
            if has {
                ShardMetrics::inc(gauge);
            } else {
                ShardMetrics::dec(gauge);
            }
        }
    }
}

impl Drop for PartialBytes {
    fn drop(&mut self) {
        self.shard.adjust_partial_bytes(self.held, 0);
        self.set_has_buffer(false);
    }
}

/// What the reader waits on besides mail and failures.
struct Waits<'a> {
    /// Read the socket (false while the connection's credit is spent).
    read: bool,
    credit: &'a Credit,
    patience: &'a mut Option<glommio::timer::Timer>,
    frame_deadline: &'a mut Option<glommio::timer::Timer>,
}

async fn next_wake(
    recv: &RecvHandle,
    shared: &ConnShared,
    buf: &mut BytesMut,
    wait: Waits<'_>,
) -> Wake {
    use std::future::Future;
    use std::pin::Pin;
    std::future::poll_fn(|cx| {
        if shared.outbound.failed() {
            return Poll::Ready(Wake::OutboundFailed);
        }
        if shared.shutdown_requested() {
            return Poll::Ready(Wake::Shutdown);
        }
        if shared.has_mail() {
            return Poll::Ready(Wake::Mail);
        }
        if let Some(timer) = wait.frame_deadline.as_mut() {
            if Pin::new(timer).poll(cx).is_ready() {
                return Poll::Ready(Wake::FrameTimeout);
            }
        }
        shared.outbound.register_reader(cx.waker());
        if !wait.read {
            if wait.credit.poll_room(cx).is_ready() {
                return Poll::Ready(Wake::Credit);
            }
            if let Some(timer) = wait.patience.as_mut() {
                if Pin::new(timer).poll(cx).is_ready() {
                    return Poll::Ready(Wake::Patience);
                }
            }
            return Poll::Pending;
        }
        recv.poll_recv(cx, buf).map(|received| match received {
            Received::Data(_) => Wake::Data,
            Received::Eof => Wake::Eof,
            Received::TimedOut => Wake::IdleTimeout,
            Received::Idle => Wake::Idle,
            Received::Error => Wake::ReadError,
        })
    })
    .await
}

/// The reader's per-connection state.
struct Conn {
    shard: Rc<Shard>,
    conn_id: ConnId,
    shared: Rc<ConnShared>,
    /// `None` on the raw echo endpoint.
    socket: Option<PhoenixSocket>,
    effects: Vec<Effect>,
    close_sent: bool,
    /// Whether the session has parked before (see `parking::park`).
    parked_before: bool,
    /// Backpressure from the subscribers of this connection's broadcasts (none while parked
    /// with nothing outstanding: made again when the session resumes).
    credit: Option<Rc<Credit>>,
}

impl Conn {
    /// This connection's publisher credit, made when first needed.
    fn credit(&mut self) -> &Rc<Credit> {
        let limit = self.shard.config.outbound.publisher_credit_bytes;
        self.credit.get_or_insert_with(|| Credit::new(limit))
    }

    /// Before parking: keeps only what the next event needs (its queues' capacity goes back,
    /// and its credit if no frame of its broadcasts is still queued anywhere).
    fn release_spare(&mut self) {
        self.shared.release_spare();
        if self
            .credit
            .as_ref()
            .is_some_and(|c| Rc::strong_count(c) == 1)
        {
            self.credit = None;
        }
    }

    /// Handles one decoded WebSocket event. Returns false when the session is over.
    async fn on_event(&mut self, event: WsEvent) -> bool {
        let shard = self.shard.clone();
        let event_is_text = matches!(event, WsEvent::Text(_));
        match event {
            // Raw echo endpoint: the same message back with the same opcode.
            WsEvent::Text(data) if self.socket.is_none() => self.echo(FrameKind::Text, &data),
            WsEvent::Binary(data) if self.socket.is_none() => self.echo(FrameKind::Binary, &data),
            WsEvent::Text(data) | WsEvent::Binary(data) => {
                ShardMetrics::inc(&shard.metrics().messages_in);
                let socket = self.socket.as_mut().expect("phoenix session");
                let serializer = socket.conn().serializer;
                let decoded = if event_is_text {
                    decode_text(serializer, &data)
                } else {
                    decode_binary(serializer, &data)
                };
                match decoded {
                    Ok(msg) => {
                        self.lend_effects();
                        let socket = self.socket.as_mut().expect("phoenix session");
                        let out = &mut self.effects;
                        shard.with_arena(|arena| {
                            socket.handle(
                                msg,
                                &mut Outbox {
                                    effects: out,
                                    arena,
                                    now: super::now(),
                                },
                            )
                        });
                        self.run_effects().await;
                    }
                    Err(e) => {
                        // Phoenix closes the socket with 1011 on a frame it cannot decode.
                        tracing::debug!(conn = self.conn_id, error = %e, "undecodable message");
                        ShardMetrics::inc(&shard.metrics().protocol_errors);
                        self.close(close_code::INTERNAL_ERROR, "invalid message");
                        return false;
                    }
                }
            }
            WsEvent::Ping(data) => {
                let frame = shard.with_arena(|a| encode_frame(a, FrameKind::Pong, &data));
                self.shared.outbound.push(frame);
            }
            WsEvent::Pong(_) => {}
            WsEvent::Close(code) => {
                // Echo the client's code (RFC 6455 §5.5.1), then finish.
                let code = code.map_or(close_code::NORMAL, |(c, _)| c);
                self.close(code, "");
                return false;
            }
        }
        !self.close_sent && !self.shared.outbound.failed()
    }

    /// Handles everything in the mailbox, in order.
    async fn handle_mail(&mut self) {
        while let Some(mail) = self.shared.next_mail() {
            match mail {
                Mail::Frame(frame, delivery, hold) => {
                    self.shared.outbound.push_with(
                        frame,
                        delivery,
                        hold,
                        std::time::Instant::now(),
                    );
                }
                Mail::Info(info) => {
                    if self.socket.is_none() {
                        continue;
                    }
                    self.lend_effects();
                    let socket = self.socket.as_mut().expect("checked");
                    self.shard.with_arena(|arena| {
                        socket.handle_info(
                            info,
                            &mut Outbox {
                                effects: &mut self.effects,
                                arena,
                                now: super::now(),
                            },
                        )
                    });
                    self.run_effects().await;
                }
            }
        }
    }

    fn echo(&self, kind: FrameKind, data: &[u8]) {
        let frame = self.shard.with_arena(|a| encode_frame(a, kind, data));
        let (_, compressed) = self.shared.send_own(frame);
        if compressed {
            ShardMetrics::inc(&self.shard.metrics().deflate_compressions);
        }
    }

    /// Queues a close frame; the session ends after it.
    fn close(&mut self, code: u16, reason: &str) {
        if !self.close_sent {
            let frame = self.shard.with_arena(|a| encode_close(a, code, reason));
            self.shared.outbound.close_with(frame);
            self.close_sent = true;
        }
    }

    /// Carries out the effects of the last callback, in order (see [`interpret::apply`]).
    async fn run_effects(&mut self) {
        let mut effects = std::mem::take(&mut self.effects);
        let serializer = self
            .socket
            .as_ref()
            .map_or(Serializer::V2, |s| s.conn().serializer);
        let credit = self.credit().clone();
        let origin = ConnOrigin {
            conn_id: self.conn_id,
            serializer,
            shared: &self.shared,
            close_sent: &mut self.close_sent,
        };
        interpret::apply(&self.shard, Some(origin), Some(&credit), &mut effects).await;
        // Back to the shard's pool: an idle connection holds no effect buffer.
        self.shard.recycle_effects(effects);
    }

    /// Borrows an effect buffer from the shard's pool for the next callback.
    fn lend_effects(&mut self) {
        if self.effects.capacity() == 0 {
            self.effects = self.shard.pooled_effects();
        }
    }
}
