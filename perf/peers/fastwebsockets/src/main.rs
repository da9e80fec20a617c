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
//! The protocol handling and the registry are shared with the other peers (`phoenix_subset`,
//! in `perf/peers/phoenix-subset/`); this file is the hyper + fastwebsockets transport.

use bytes::Bytes;
use clap::Parser;
use fastwebsockets::upgrade::{self, UpgradeFut};
use fastwebsockets::{FragmentCollectorRead, Frame, OpCode, Payload, Role, WebSocketWrite};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use phoenix_subset::Outbound;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
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
// Outbound frames
// ---------------------------------------------------------------------------------------------

/// One frame waiting in a connection's outbound queue. Cloning it only bumps a refcount.
#[derive(Clone)]
struct Out {
    opcode: OpCode,
    payload: Bytes,
}

/// The protocol handling lives in `phoenix_subset`; this tells it how to build an `Out`.
impl Outbound for Out {
    type Frame = Out;

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

type Registry = phoenix_subset::Registry<Out>;
type Conn = phoenix_subset::Conn<Out>;

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
    let id = registry.next_id();
    let mut conn = Conn::new(id, registry, tx, slow);

    loop {
        // Pongs and the close echo that fastwebsockets owes the peer go through our queue.
        let tx = conn.tx();
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
