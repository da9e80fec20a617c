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
//! The protocol handling and the registry are shared with the other peers (`phoenix_subset`,
//! in `perf/peers/phoenix-subset/`); this file is the tokio-tungstenite transport.

use clap::Parser;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use phoenix_subset::{ConnId, Outbound};
use std::io;
use std::net::SocketAddr;
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
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let id = registry.next_id();
                tokio::spawn(connection(stream, registry.clone(), id));
            }
            // EMFILE and friends: back off briefly instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Outbound frames
// ---------------------------------------------------------------------------------------------

/// The protocol handling lives in `phoenix_subset`; this tells it that a connection's outbound
/// queue carries tungstenite `Message`s, whose `Utf8Bytes`/`Bytes` payload is reference counted.
enum Tungstenite {}

impl Outbound for Tungstenite {
    type Frame = Message;

    fn text(s: String) -> Message {
        Message::Text(Utf8Bytes::from(s))
    }

    fn binary(v: Vec<u8>) -> Message {
        Message::Binary(Bytes::from(v))
    }
}

type Registry = phoenix_subset::Registry<Tungstenite>;
type Conn = phoenix_subset::Conn<Tungstenite>;

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
    let mut conn = Conn::new(id, registry, tx, slow);

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
