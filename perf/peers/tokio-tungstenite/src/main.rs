//! `tokio-tungstenite-peer`: a benchmark peer for shardcast.
//!
//! A small broadcast server written the way a competent tokio user would write one, speaking
//! the same subset of Phoenix Channels V2 as shardcast's built-in `echo:*` channel, so a single
//! benchmark harness can drive both. It is meant to be an honest baseline: idiomatic, no
//! artificial slowness, and no tricks that an ordinary tokio application would not use either.
//!
//! Design:
//! * multi-threaded tokio runtime (`--threads N`, default = available cores);
//! * one task per connection reading frames, plus one writer task owning the sink half
//!   (`StreamExt::split`);
//! * each connection has a bounded `tokio::sync::mpsc` outbound queue. We use a per-connection
//!   mpsc rather than a `tokio::sync::broadcast` channel per topic because a connection
//!   multiplexes replies and several topics onto one socket: with mpsc the writer has exactly
//!   one queue to drain (and can batch everything that is ready), whereas per-topic broadcast
//!   receivers would need a select over a dynamic set of receivers plus a separate reply queue,
//!   and would silently skip messages on lag. mpsc is the usual choice for "fan out to sockets";
//! * the topic registry is a `DashMap<topic, HashMap<conn, Sender>>` (sharded locks; broadcasts
//!   to one topic only take a shared lock);
//! * a broadcast is encoded ONCE into a tungstenite `Message` whose payload (`Utf8Bytes` /
//!   `Bytes`) is reference counted, so each subscriber gets a cheap clone;
//! * the writer `feed`s every message that is already queued and then `flush`es once (batching);
//! * `TCP_NODELAY` is on;
//! * a subscriber whose queue is full (4096 messages, shardcast's default `max_queued_frames`)
//!   is a slow consumer: it is closed with code 1013, as shardcast does, rather than blocking
//!   the broadcaster or silently losing messages.
//!
//! Payloads are kept as raw JSON text (`serde_json::value::RawValue`) and relayed verbatim.

use clap::Parser;
use dashmap::DashMap;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Outbound queue bound per connection, in messages (shardcast's default `max_queued_frames`).
const QUEUE_CAPACITY: usize = 4096;
/// Largest accepted message and frame (shardcast's defaults).
const MAX_MESSAGE: usize = 1 << 20;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
const WS_PATH: &str = "/socket/websocket";

#[derive(Parser, Debug)]
#[command(about = "tokio + tokio-tungstenite broadcast server (shardcast benchmark peer)")]
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
    let next_id = AtomicU64::new(1);
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(connection(stream, registry.clone(), id));
            }
            // EMFILE and friends: back off briefly instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Topic registry
// ---------------------------------------------------------------------------------------------

type ConnId = u64;

/// How the rest of the server reaches a connection: its outbound queue, and a signal that it
/// fell behind and must be closed.
#[derive(Clone)]
struct Subscriber {
    tx: mpsc::Sender<Message>,
    slow: Arc<Notify>,
}

#[derive(Default)]
struct Registry {
    topics: DashMap<String, HashMap<ConnId, Subscriber>>,
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
    fn broadcast(&self, topic: &str, msg: &Message) {
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

type Ws = WebSocketStream<TcpStream>;

async fn connection(stream: TcpStream, registry: Arc<Registry>, id: ConnId) {
    let _ = stream.set_nodelay(true);
    if is_health_check(&stream).await {
        answer_health(stream).await;
        return;
    }

    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(config));
    let ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(ws)) => ws,
        _ => return,
    };

    let (sink, mut source) = ws.split();
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let slow = Arc::new(Notify::new());
    let mut writer = tokio::spawn(write_loop(sink, rx, slow.clone()));
    let mut conn = Conn {
        id,
        registry,
        me: Subscriber { tx, slow },
        joined: HashSet::new(),
    };

    loop {
        let next = tokio::select! {
            next = source.next() => next,
            // The writer stopped (socket error, or closed as a slow consumer).
            _ = &mut writer => {
                conn.leave_all();
                return;
            }
        };
        let keep_going = match next {
            Some(Ok(Message::Text(text))) => conn.on_text(&text).await,
            Some(Ok(Message::Binary(data))) => conn.on_binary(&data).await,
            // Pings are answered by tungstenite itself.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => true,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => false,
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

/// Only `/socket/websocket` upgrades (any query string, e.g. `?vsn=2.0.0`).
// The signature is tungstenite's `Callback`; its error type is not ours to shrink.
#[allow(clippy::result_large_err)]
fn check_path(req: &Request, resp: Response) -> Result<Response, ErrorResponse> {
    if req.uri().path() == WS_PATH {
        Ok(resp)
    } else {
        let mut err = ErrorResponse::new(Some("not found".to_owned()));
        *err.status_mut() = StatusCode::NOT_FOUND;
        Err(err)
    }
}

/// Owns the sink half: feeds every message that is ready, then flushes once.
async fn write_loop(
    mut sink: SplitSink<Ws, Message>,
    mut rx: mpsc::Receiver<Message>,
    slow: Arc<Notify>,
) {
    loop {
        let first = tokio::select! {
            biased;
            _ = slow.notified() => {
                // Slow consumer: drop the backlog and close with 1013 "try again later".
                let close = CloseFrame {
                    code: CloseCode::Again,
                    reason: Utf8Bytes::from_static("slow consumer: outbound backlog over limit"),
                };
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(close)))).await;
                return;
            }
            msg = rx.recv() => msg,
        };
        let Some(first) = first else {
            // The reader is done: send/flush the close handshake and stop.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
            return;
        };
        if sink.feed(first).await.is_err() {
            return;
        }
        while let Ok(msg) = rx.try_recv() {
            if sink.feed(msg).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
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
    async fn send(&self, msg: Message) -> bool {
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
                self.registry
                    .broadcast(topic, &Message::Text(Utf8Bytes::from(out)));
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
                self.send(Message::Text(Utf8Bytes::from(out))).await
            }
            _ => {
                self.send(json_reply(jr, r, topic, "error", UNKNOWN_EVENT))
                    .await
            }
        }
    }

    /// A V2 binary client push:
    /// `0, len(join_ref), len(ref), len(topic), len(event), join_ref, ref, topic, event, payload`.
    async fn on_binary(&mut self, frame: &Bytes) -> bool {
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
                self.send(Message::Binary(Bytes::from(out))).await
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
                self.registry
                    .broadcast(topic, &Message::Binary(Bytes::from(out)));
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
) -> Message {
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
    Message::Text(Utf8Bytes::from(out))
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

// ---------------------------------------------------------------------------------------------
// GET /health
// ---------------------------------------------------------------------------------------------

/// Peeks (without consuming) at the request line: is this `GET /health`?
async fn is_health_check(stream: &TcpStream) -> bool {
    const PREFIX: &[u8] = b"GET /health";
    let mut buf = [0u8; PREFIX.len() + 1];
    // The request line nearly always arrives in one segment; wait a little if it did not.
    for _ in 0..100 {
        let n = match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        let m = n.min(PREFIX.len());
        if buf[..m] != PREFIX[..m] {
            return false;
        }
        if n > PREFIX.len() {
            return matches!(buf[PREFIX.len()], b' ' | b'?');
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

async fn answer_health(mut stream: TcpStream) {
    // Read the request head first so that closing does not reset the connection.
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    };
    if !matches!(
        tokio::time::timeout(HANDSHAKE_TIMEOUT, read_head).await,
        Ok(true)
    ) {
        return;
    }
    let response = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
    let _ = stream.write_all(response).await;
    let _ = stream.shutdown().await;
}
