//! `fastwebsockets-peer`: a benchmark peer for shardcast.
//!
//! A port of `tokio-tungstenite-peer` to hyper 1 + fastwebsockets, written the way a competent
//! fastwebsockets user would write it. It speaks the same subset of Phoenix Channels V2 as
//! shardcast's built-in `echo:*` channel, so a single benchmark harness can drive both. It is
//! meant to be an honest baseline: idiomatic, no artificial slowness, and no tricks that an
//! ordinary fastwebsockets application would not use either.
//!
//! Design (the same as the tokio-tungstenite peer unless noted):
//! * multi-threaded tokio runtime (`--threads N`, default = available cores);
//! * hyper 1 serves HTTP/1.1 on each accepted socket; `fastwebsockets::upgrade` answers the
//!   upgrade on `/socket/websocket`, and `GET /health` is an ordinary hyper route;
//! * after the upgrade the hyper `Upgraded` is downcast back to the `TcpStream` and split with
//!   `into_split` (two owned halves, no lock between reader and writer). Bytes hyper had already
//!   read past the request head are chained in front of the read half;
//! * one task per connection reading messages (`FragmentCollectorRead`, which reassembles
//!   fragmented messages), plus one writer task owning the `WebSocketWrite` half;
//! * each connection has a bounded `tokio::sync::mpsc` outbound queue (see the tokio-tungstenite
//!   peer for why this beats a `tokio::sync::broadcast` channel per topic);
//! * the topic registry is a `DashMap<topic, HashMap<conn, Sender>>`;
//! * a broadcast is encoded ONCE into a `Bytes`; each subscriber's queue gets a clone (a
//!   refcount bump), and the writer hands it to fastwebsockets as a borrowed payload;
//! * fastwebsockets writes each frame straight to its stream (it has no write buffer of its own,
//!   unlike tungstenite), so the write half is wrapped in a `tokio::io::BufWriter`. The writer
//!   writes every frame that is already queued and then flushes once (batching);
//! * `TCP_NODELAY` is on;
//! * pings are answered and a client close is echoed by fastwebsockets (`auto_pong`,
//!   `auto_close`); because the socket is split, those "obligated" frames are handed to the
//!   writer through the same outbound queue;
//! * a subscriber whose queue is full (4096 messages, shardcast's default `max_queued_frames`)
//!   is a slow consumer: it is closed with code 1013, as shardcast does, rather than blocking
//!   the broadcaster or silently losing messages.
//!
//! Payloads are kept as raw JSON text (`serde_json::value::RawValue`) and relayed verbatim.

use bytes::Bytes;
use clap::Parser;
use dashmap::DashMap;
use fastwebsockets::upgrade::{self, UpgradeFut};
use fastwebsockets::{FragmentCollectorRead, Frame, OpCode, Payload, Role, WebSocketWrite};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Outbound queue bound per connection, in messages (shardcast's default `max_queued_frames`).
const QUEUE_CAPACITY: usize = 4096;
/// Largest accepted frame (shardcast's default message limit).
const MAX_MESSAGE: usize = 1 << 20;
/// Per-connection write buffer. Frames at least this large bypass it.
const WRITE_BUFFER: usize = 64 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
const WS_PATH: &str = "/socket/websocket";
const SLOW_REASON: &[u8] = b"slow consumer: outbound backlog over limit";

#[derive(Parser, Debug)]
#[command(about = "tokio + hyper + fastwebsockets broadcast server (shardcast benchmark peer)")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4100")]
    listen: SocketAddr,
    /// Tokio worker threads (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    runtime.block_on(serve(args.listen))
}

async fn serve(addr: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    let registry = Arc::new(Registry::default());
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(http_connection(stream, registry.clone()));
            }
            // EMFILE and friends: back off briefly instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP: upgrade, /health, 404
// ---------------------------------------------------------------------------------------------

async fn http_connection(stream: TcpStream, registry: Arc<Registry>) {
    let service = service_fn(move |req| route(req, registry.clone()));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let _ = conn.await;
}

async fn route(
    mut req: Request<Incoming>,
    registry: Arc<Registry>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    if path == "/health" && req.method() == Method::GET {
        return Ok(plain(StatusCode::OK, "ok", true));
    }
    // Only `/socket/websocket` upgrades (any query string, e.g. `?vsn=2.0.0`).
    if path != WS_PATH {
        return Ok(plain(StatusCode::NOT_FOUND, "not found", false));
    }
    if !upgrade::is_upgrade_request(&req) {
        return Ok(plain(
            StatusCode::BAD_REQUEST,
            "expected a websocket upgrade",
            false,
        ));
    }
    match upgrade::upgrade(&mut req) {
        Ok((response, fut)) => {
            tokio::spawn(connection(fut, registry));
            Ok(response.map(|_| Full::default()))
        }
        Err(_) => Ok(plain(
            StatusCode::BAD_REQUEST,
            "bad websocket upgrade",
            false,
        )),
    }
}

fn plain(status: StatusCode, body: &'static str, close: bool) -> Response<Full<Bytes>> {
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain");
    if close {
        response = response.header(header::CONNECTION, "close");
    }
    response
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("a static response always builds")
}

// ---------------------------------------------------------------------------------------------
// Topic registry
// ---------------------------------------------------------------------------------------------

type ConnId = u64;

/// One frame waiting in a connection's outbound queue. Cloning it only bumps a refcount.
#[derive(Clone)]
struct Out {
    opcode: OpCode,
    payload: Bytes,
}

impl Out {
    fn text(s: String) -> Out {
        Out {
            opcode: OpCode::Text,
            payload: Bytes::from(s),
        }
    }

    fn binary(v: Vec<u8>) -> Out {
        Out {
            opcode: OpCode::Binary,
            payload: Bytes::from(v),
        }
    }
}

/// How the rest of the server reaches a connection: its outbound queue, and a signal that it
/// fell behind and must be closed.
#[derive(Clone)]
struct Subscriber {
    tx: mpsc::Sender<Out>,
    slow: Arc<Notify>,
}

#[derive(Default)]
struct Registry {
    topics: DashMap<String, HashMap<ConnId, Subscriber>>,
    next_id: AtomicU64,
}

impl Registry {
    fn subscribe(&self, topic: &str, id: ConnId, sub: Subscriber) {
        self.topics
            .entry(topic.to_owned())
            .or_default()
            .insert(id, sub);
    }

    fn unsubscribe(&self, topic: &str, id: ConnId) {
        let now_empty = match self.topics.get_mut(topic) {
            Some(mut subs) => {
                subs.remove(&id);
                subs.is_empty()
            }
            None => false,
        };
        if now_empty {
            self.topics.remove_if(topic, |_, subs| subs.is_empty());
        }
    }

    /// Queues `msg` (already encoded; cloning it only bumps a refcount) for every subscriber.
    fn broadcast(&self, topic: &str, msg: &Out) {
        let Some(subs) = self.topics.get(topic) else {
            return;
        };
        for sub in subs.values() {
            match sub.tx.try_send(msg.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => sub.slow.notify_one(),
                // The connection is going away; its own task unsubscribes it.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------------------------

type Sink = WebSocketWrite<BufWriter<OwnedWriteHalf>>;

async fn connection(fut: UpgradeFut, registry: Arc<Registry>) {
    let ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, fut).await {
        Ok(Ok(ws)) => ws,
        _ => return,
    };
    // Back to the TcpStream, for two lock-free owned halves. hyper served a
    // `TokioIo<TcpStream>`, so the downcast cannot fail.
    let upgraded = ws.into_inner().into_inner();
    let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
        return;
    };
    let (read, write) = parts.io.into_inner().into_split();
    let read = io::Cursor::new(parts.read_buf).chain(read);
    let (mut source, sink) = fastwebsockets::after_handshake_split(
        read,
        BufWriter::with_capacity(WRITE_BUFFER, write),
        Role::Server,
    );
    // fastwebsockets refuses frames of `max_message_size` bytes or more.
    source.set_max_message_size(MAX_MESSAGE + 1);
    let mut source = FragmentCollectorRead::new(source);

    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let slow = Arc::new(Notify::new());
    let mut writer = tokio::spawn(write_loop(sink, rx, slow.clone()));
    let id = registry.next_id.fetch_add(1, Ordering::Relaxed);
    let mut conn = Conn {
        id,
        registry,
        me: Subscriber { tx, slow },
        joined: HashSet::new(),
    };

    loop {
        // Pongs and the close echo that fastwebsockets owes the peer go through our queue.
        let tx = &conn.me.tx;
        let mut obligated = |frame: Frame<'_>| {
            let out = Out {
                opcode: frame.opcode,
                payload: Bytes::copy_from_slice(&frame.payload),
            };
            async move {
                tx.send(out)
                    .await
                    .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
            }
        };
        let next = tokio::select! {
            next = source.read_frame(&mut obligated) => next,
            // The writer stopped (socket error, or closed as a slow consumer).
            _ = &mut writer => {
                conn.leave_all();
                return;
            }
        };
        let keep_going = match next {
            Ok(frame) => match frame.opcode {
                OpCode::Text => {
                    // SAFETY: fastwebsockets validates text payloads as UTF-8 ("Text frames
                    // payload is guaranteed to be valid UTF-8"), fragmented ones included.
                    let text = unsafe { std::str::from_utf8_unchecked(&frame.payload) };
                    conn.on_text(text).await
                }
                OpCode::Binary => conn.on_binary(&frame.payload).await,
                OpCode::Close => false,
                // Pings are answered by fastwebsockets itself.
                _ => true,
            },
            Err(_) => false,
        };
        if !keep_going {
            break;
        }
    }

    conn.leave_all();
    // Dropping the last sender lets the writer drain its queue, close the socket and exit.
    drop(conn);
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, writer).await;
}

/// Owns the write half: writes every frame that is ready, then flushes once.
async fn write_loop(mut sink: Sink, mut rx: mpsc::Receiver<Out>, slow: Arc<Notify>) {
    loop {
        let first = tokio::select! {
            biased;
            _ = slow.notified() => {
                // Slow consumer: drop the backlog and close with 1013 "try again later".
                let close = async {
                    sink.write_frame(Frame::close(1013, SLOW_REASON)).await?;
                    sink.flush().await
                };
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
                return;
            }
            msg = rx.recv() => msg,
        };
        let Some(first) = first else {
            // The reader is done: send the close frame (unless the close echo already went
            // out), flush, and stop. Dropping the write half shuts the socket down.
            let close = async {
                if !sink.is_closed() {
                    sink.write_frame(Frame::close_raw(Payload::Borrowed(&[])))
                        .await?;
                }
                sink.flush().await
            };
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
            return;
        };
        if write(&mut sink, &first).await.is_err() {
            return;
        }
        while let Ok(msg) = rx.try_recv() {
            if write(&mut sink, &msg).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// Writes one queued frame; the shared payload is lent to fastwebsockets, not copied.
async fn write(sink: &mut Sink, out: &Out) -> Result<(), fastwebsockets::WebSocketError> {
    sink.write_frame(Frame::new(
        true,
        out.opcode,
        None,
        Payload::Borrowed(&out.payload),
    ))
    .await
}

/// A V2 JSON message `[join_ref, ref, topic, event, payload]`. Refs stay raw JSON text (they
/// are echoed back verbatim); strings borrow from the frame unless they contain escapes.
#[derive(Deserialize)]
struct JsonPush<'a>(
    #[serde(borrow)] Option<&'a RawValue>,
    #[serde(borrow)] Option<&'a RawValue>,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] &'a RawValue,
);

const EMPTY: &str = "{}";
const UNMATCHED: &str = r#"{"reason":"unmatched topic"}"#;
const UNKNOWN_EVENT: &str = r#"{"reason":"unknown event"}"#;

struct Conn {
    id: ConnId,
    registry: Arc<Registry>,
    me: Subscriber,
    joined: HashSet<String>,
}

impl Conn {
    /// Queues a message for this connection's own socket; false once the writer is gone.
    /// Awaiting here is the natural backpressure: we stop reading while our writer is behind.
    async fn send(&self, msg: Out) -> bool {
        self.me.tx.send(msg).await.is_ok()
    }

    fn leave_all(&mut self) {
        for topic in self.joined.drain() {
            self.registry.unsubscribe(&topic, self.id);
        }
    }

    async fn on_text(&mut self, text: &str) -> bool {
        // Phoenix closes the socket on a frame that is not a message; so do we.
        let Ok(JsonPush(join_ref, msg_ref, topic, event, payload)) = serde_json::from_str(text)
        else {
            return false;
        };
        let jr = join_ref.map(RawValue::get);
        let r = msg_ref.map(RawValue::get);
        let (topic, event) = (topic.as_ref(), event.as_ref());

        if topic == "phoenix" {
            let status = if event == "heartbeat" { "ok" } else { "error" };
            let response = if event == "heartbeat" {
                EMPTY
            } else {
                UNKNOWN_EVENT
            };
            return self
                .send(json_reply(None, r, topic, status, response))
                .await;
        }
        match event {
            "phx_join" => {
                if !topic.starts_with("echo:") {
                    return self
                        .send(json_reply(None, r, topic, "error", UNMATCHED))
                        .await;
                }
                if self.joined.insert(topic.to_owned()) {
                    self.registry.subscribe(topic, self.id, self.me.clone());
                }
                self.send(json_reply(jr, r, topic, "ok", EMPTY)).await
            }
            _ if !self.joined.contains(topic) => {
                self.send(json_reply(None, r, topic, "error", UNMATCHED))
                    .await
            }
            "echo" => {
                self.send(json_reply(jr, r, topic, "ok", payload.get()))
                    .await
            }
            "broadcast" => {
                let mut out = String::with_capacity(40 + topic.len() + payload.get().len());
                out.push_str("[null,null,");
                push_json_str(&mut out, topic);
                out.push_str(",\"broadcast\",");
                out.push_str(payload.get());
                out.push(']');
                self.registry.broadcast(topic, &Out::text(out));
                self.send(json_reply(jr, r, topic, "ok", EMPTY)).await
            }
            "phx_leave" => {
                self.joined.remove(topic);
                self.registry.unsubscribe(topic, self.id);
                if !self.send(json_reply(jr, r, topic, "ok", EMPTY)).await {
                    return false;
                }
                // As Phoenix does: phx_close with the join ref in both ref positions.
                let mut out = String::with_capacity(48 + topic.len());
                out.push('[');
                out.push_str(jr.unwrap_or("null"));
                out.push(',');
                out.push_str(jr.unwrap_or("null"));
                out.push(',');
                push_json_str(&mut out, topic);
                out.push_str(",\"phx_close\",{}]");
                self.send(Out::text(out)).await
            }
            _ => {
                self.send(json_reply(jr, r, topic, "error", UNKNOWN_EVENT))
                    .await
            }
        }
    }

    /// A V2 binary client push:
    /// `0, len(join_ref), len(ref), len(topic), len(event), join_ref, ref, topic, event, payload`.
    async fn on_binary(&mut self, frame: &[u8]) -> bool {
        let Some(push) = BinaryPush::parse(frame) else {
            return false;
        };
        // JSON text of the refs, for JSON replies (an empty ref is null, as in Phoenix).
        let jr = (!push.join_ref.is_empty()).then(|| json_str(push.join_ref));
        let r = (!push.msg_ref.is_empty()).then(|| json_str(push.msg_ref));
        let topic = push.topic;

        if !self.joined.contains(topic) {
            return self
                .send(json_reply(None, r.as_deref(), topic, "error", UNMATCHED))
                .await;
        }
        match push.event {
            "echo" => {
                // 1, len(join_ref), len(ref), len(topic), len(status), join_ref, ref, topic,
                // status, payload
                let mut out = Vec::with_capacity(
                    7 + push.join_ref.len() + push.msg_ref.len() + topic.len() + push.payload.len(),
                );
                out.extend_from_slice(&[
                    1,
                    push.join_ref.len() as u8,
                    push.msg_ref.len() as u8,
                    topic.len() as u8,
                    2,
                ]);
                out.extend_from_slice(push.join_ref.as_bytes());
                out.extend_from_slice(push.msg_ref.as_bytes());
                out.extend_from_slice(topic.as_bytes());
                out.extend_from_slice(b"ok");
                out.extend_from_slice(push.payload);
                self.send(Out::binary(out)).await
            }
            "broadcast" => {
                // 2, len(topic), len(event), topic, event, payload
                const EVENT: &str = "broadcast";
                let mut out =
                    Vec::with_capacity(3 + topic.len() + EVENT.len() + push.payload.len());
                out.extend_from_slice(&[2, topic.len() as u8, EVENT.len() as u8]);
                out.extend_from_slice(topic.as_bytes());
                out.extend_from_slice(EVENT.as_bytes());
                out.extend_from_slice(push.payload);
                self.registry.broadcast(topic, &Out::binary(out));
                self.send(json_reply(jr.as_deref(), r.as_deref(), topic, "ok", EMPTY))
                    .await
            }
            _ => {
                self.send(json_reply(
                    jr.as_deref(),
                    r.as_deref(),
                    topic,
                    "error",
                    UNKNOWN_EVENT,
                ))
                .await
            }
        }
    }
}

struct BinaryPush<'a> {
    join_ref: &'a str,
    msg_ref: &'a str,
    topic: &'a str,
    event: &'a str,
    payload: &'a [u8],
}

impl<'a> BinaryPush<'a> {
    fn parse(frame: &'a [u8]) -> Option<BinaryPush<'a>> {
        let header = frame.get(..5)?;
        if header[0] != 0 {
            return None;
        }
        let mut at = 5;
        let mut field = |len: u8| -> Option<&'a str> {
            let bytes = frame.get(at..at + usize::from(len))?;
            at += usize::from(len);
            std::str::from_utf8(bytes).ok()
        };
        let join_ref = field(header[1])?;
        let msg_ref = field(header[2])?;
        let topic = field(header[3])?;
        let event = field(header[4])?;
        Some(BinaryPush {
            join_ref,
            msg_ref,
            topic,
            event,
            payload: &frame[at..],
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding helpers
// ---------------------------------------------------------------------------------------------

/// `[join_ref, ref, topic, "phx_reply", {"response": response, "status": status}]`; the refs
/// and `response` are JSON text.
fn json_reply(
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    status: &str,
    response: &str,
) -> Out {
    let jr = join_ref.unwrap_or("null");
    let r = msg_ref.unwrap_or("null");
    let mut out = String::with_capacity(56 + jr.len() + r.len() + topic.len() + response.len());
    out.push('[');
    out.push_str(jr);
    out.push(',');
    out.push_str(r);
    out.push(',');
    push_json_str(&mut out, topic);
    out.push_str(",\"phx_reply\",{\"response\":");
    out.push_str(response);
    out.push_str(",\"status\":\"");
    out.push_str(status);
    out.push_str("\"}]");
    Out::text(out)
}

/// Appends `s` as a JSON string (plain names are copied as they are).
fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).expect("a str always encodes"));
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_json_str(&mut out, s);
    out
}
