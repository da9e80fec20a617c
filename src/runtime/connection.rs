//! One connection on a shard, from TCP accept to close: the HTTP head (upgrade, `/health`,
//! `/metrics`), then the WebSocket session. The reader task decodes frames, hands Phoenix
//! messages to the socket state machine and carries out the effects it returns; a writer task
//! drains the outbound queue.

use super::credit::Credit;
use super::interpret::{self, ConnOrigin};
use super::mailbox::{ConnShared, Mail};
use super::shard::Shard;
use super::transport::outbound::{run_writer, Limits, Outbound};
use super::transport::stream::SharedStream;
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
use bytes::{Buf, BytesMut};
use glommio::net::TcpStream;
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll};

/// Serves one accepted TCP connection to the end.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let stream = Rc::new(SharedStream::new(stream));
    let ws = &shard.config.websocket;
    stream.set_write_timeout(ws.write_timeout());
    // The whole head must arrive within the timeout, counted from the accept: a client that
    // trickles a byte at a time does not restart it.
    let deadline = std::time::Instant::now() + ws.handshake_timeout();

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
                let _ = stream
                    .write_all(&response(status, "text/plain", e.to_string().as_bytes()))
                    .await;
                return;
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            ShardMetrics::inc(&shard.metrics().handshake_failures);
            return;
        }
        stream.set_read_timeout(left);
        match read_some(&shard, &stream, &mut buf).await {
            Ok(n) if n > 0 => {}
            _ => {
                // Closed, failed, or silent past the handshake deadline.
                ShardMetrics::inc(&shard.metrics().handshake_failures);
                return;
            }
        }
    };
    buf.advance(head.head_len);
    // `head` (headers, query strings) is dropped here, before the long-lived session.
    let route = route(&shard, head, peer);
    match route {
        Route::Respond(bytes) => {
            let _ = stream.write_all(&bytes).await;
            stream.shutdown_write();
        }
        Route::Upgrade {
            accept,
            session,
            deflate,
        } => {
            let response = switching_protocols(&accept, deflate.as_ref().map(|(_, r)| r.as_str()));
            if stream.write_all(&response).await.is_ok() {
                let deflate = deflate.map(|(agreed, _)| agreed);
                run_session(shard, stream, buf, session, deflate).await;
            }
        }
    }
}

enum Route {
    /// A plain HTTP answer, then close.
    Respond(Vec<u8>),
    /// Answer 101 with this accept key (and permessage-deflate's agreement and response
    /// header, when negotiated) and run the session.
    Upgrade {
        accept: String,
        session: Session,
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
                    session: Session::Phoenix {
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
            session: Session::Echo,
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

enum Session {
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
}

/// Messages one connection may have handled before the others (and the writers) get a turn.
const MESSAGES_PER_TURN: usize = 64;

async fn run_session(
    shard: Rc<Shard>,
    stream: Rc<SharedStream>,
    mut buf: BytesMut,
    session: Session,
    deflate: Option<Agreed>,
) {
    let config = &shard.config;
    let conn_id = shard.next_conn_id();
    let outbound = Rc::new(Outbound::new(Limits {
        max_frames: config.outbound.max_queued_frames,
        max_bytes: config.outbound.max_queued_bytes,
        behind_timeout: config.outbound.behind_timeout(),
        hard_factor: config.outbound.hard_limit_factor,
        batch_frames: config.outbound.write_batch_frames,
    }));
    let shared = Rc::new(ConnShared::new(
        outbound.clone(),
        deflate.map(|agreed| (agreed, config.websocket.deflate_params())),
    ));
    shard.register(conn_id, &shared);
    let metrics = shard.metrics();
    ShardMetrics::inc(&metrics.connections);
    ShardMetrics::inc(&metrics.connections_total);

    let writer = {
        let (shard, out, stream) = (shard.clone(), outbound.clone(), stream.clone());
        glommio::spawn_local(async move { run_writer(out, stream, shard.metrics()).await })
    };
    stream.set_read_timeout(config.websocket.idle_timeout());

    let credit = Credit::new(config.outbound.publisher_credit_bytes);
    let mut conn = Conn {
        shard: shard.clone(),
        conn_id,
        shared: shared.clone(),
        socket: match session {
            Session::Phoenix {
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
            Session::Echo => None,
        },
        effects: Vec::new(),
        close_sent: false,
        credit: credit.clone(),
    };
    let mut decoder = WsDecoder::new(DecoderLimits {
        max_frame_size: config.websocket.max_frame_size,
        max_message_size: config.websocket.max_message_size,
    });
    if deflate.is_some() {
        decoder = decoder.with_inflate();
    }
    let mut partial = PartialBytes::new(&shard);
    let mut frame_deadline: Option<glommio::timer::Timer> = None;
    let mut patience: Option<glommio::timer::Timer> = None;

    'session: loop {
        // Take what the buffer holds: a bounded number of messages per turn, and only while this
        // connection's earlier broadcasts are being written (its credit).
        let mut taken = 0;
        while credit.has_room() {
            match decoder.decode(&mut buf) {
                Ok(Some(event)) => {
                    if !conn.on_event(event).await {
                        break 'session;
                    }
                    // What the callback sent itself (`send_self`, owner answers that are
                    // already here) is handled before the client's next message.
                    conn.handle_mail().await;
                    taken += 1;
                    if taken == MESSAGES_PER_TURN {
                        // Let the writers and the other connections run before more of this
                        // connection's input.
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
            patience = None;
        }
        glommio::yield_if_needed().await;
        if buf.is_empty() && buf.capacity() > 0 {
            // Idle connections hold no receive memory: reads land in the shard's scratch buffer.
            buf = BytesMut::new();
        }
        let more_input_wanted = taken < MESSAGES_PER_TURN;
        let read = credit.has_room() && more_input_wanted;
        // An unfinished frame must be completed within its deadline, however slowly its bytes
        // trickle in. The clock runs only while the server reads (holding the client back for
        // credit is not the client being slow), and starts again with every message completed
        // (a busy client's reads rarely end on a frame boundary) — except inside a fragmented
        // message, which must end within it as a whole (interleaved pings do not restart it).
        let unfinished = !buf.is_empty() || decoder.in_message();
        if !read || !unfinished || (taken > 0 && !decoder.in_message()) {
            frame_deadline = None;
        }
        if read && unfinished && frame_deadline.is_none() {
            frame_deadline = Some(glommio::timer::Timer::new(config.websocket.frame_timeout()));
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
            patience = Some(glommio::timer::Timer::new(
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
            patience: &mut patience,
            frame_deadline: &mut frame_deadline,
        };
        match next_wake(&shard, &stream, &shared, &mut buf, wait).await {
            Wake::Data | Wake::Credit => {}
            Wake::Patience => {
                // The subscribers holding this connection's frames are not keeping up: they
                // are judged on their own (they fall behind); this connection goes on.
                credit.write_off();
                patience = None;
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
    drop(partial);

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
    shard.unregister(conn_id);
    ShardMetrics::dec(&metrics.connections);

    // A slow consumer still gets its 1013 close frame if it reads again within the timeout.
    if (conn.close_sent && !outbound.failed()) || outbound.is_slow_consumer() {
        // Closing handshake: the writer sends our close frame and then FIN; wait for the
        // client's side to close (or the close timeout), discarding what it still sends.
        stream.set_read_timeout(config.websocket.close_timeout());
        buf = BytesMut::new();
        while let Ok(n) = read_some(&shard, &stream, &mut buf).await {
            buf.clear();
            if n == 0 {
                break;
            }
        }
    }
    outbound.abandon();
    writer.await;
}

/// This connection's share of the shard's bytes held in unfinished frames, and whether it holds
/// a receive buffer at all (an idle one does not: both are gauges in `/metrics`).
struct PartialBytes<'a> {
    shard: &'a Shard,
    held: usize,
    has_buffer: bool,
}

impl<'a> PartialBytes<'a> {
    fn new(shard: &'a Shard) -> Self {
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

impl Drop for PartialBytes<'_> {
    fn drop(&mut self) {
        self.shard.adjust_partial_bytes(self.held, 0);
        self.set_has_buffer(false);
    }
}

/// Reads once into `buf` through the shard's scratch buffer.
async fn read_some(shard: &Shard, stream: &SharedStream, buf: &mut BytesMut) -> io::Result<usize> {
    std::future::poll_fn(|cx| poll_read_into(shard, stream, cx, buf)).await
}

fn poll_read_into(
    shard: &Shard,
    stream: &SharedStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    shard.with_scratch(|scratch| match stream.poll_read(cx, scratch) {
        Poll::Ready(Ok(n)) => {
            buf.extend_from_slice(&scratch[..n]);
            Poll::Ready(Ok(n))
        }
        other => other,
    })
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
    shard: &Shard,
    stream: &SharedStream,
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
        match poll_read_into(shard, stream, cx, buf) {
            Poll::Ready(Ok(0)) => Poll::Ready(Wake::Eof),
            Poll::Ready(Ok(_)) => Poll::Ready(Wake::Data),
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::TimedOut => {
                Poll::Ready(Wake::IdleTimeout)
            }
            Poll::Ready(Err(_)) => Poll::Ready(Wake::ReadError),
            Poll::Pending => Poll::Pending,
        }
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
    /// Backpressure from the subscribers of this connection's broadcasts.
    credit: Rc<Credit>,
}

impl Conn {
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
        let origin = ConnOrigin {
            conn_id: self.conn_id,
            serializer,
            shared: &self.shared,
            close_sent: &mut self.close_sent,
        };
        interpret::apply(&self.shard, Some(origin), Some(&self.credit), &mut effects).await;
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
