//! A deliberately small WebSocket + Phoenix V2 client for load generation: it must cost less per
//! message than the server it measures. Frames are sent with a zero mask key (legal, and no XOR
//! pass); received frames are parsed in place. Subscribers receive through the load thread's
//! socket ring (shardcast's own: multishot receives, completions reaped in batches), as the
//! server does, so the harness is not the one paying a syscall per read.

use bytes::{Buf, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use shardcast::runtime::transport::ring::{Received, RecvHandle, SocketRing};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

pub struct WsClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// One server frame, borrowed from the client's receive buffer.
pub struct Frame<'a> {
    pub opcode: u8,
    pub payload: &'a [u8],
}

/// Opens a TCP connection from `source` (any 127.0.0.x, to hold more ephemeral ports than one
/// address has) and completes the WebSocket upgrade on `path_and_query`.
pub async fn connect(
    server: SocketAddr,
    source: Option<IpAddr>,
    path_and_query: &str,
) -> io::Result<WsClient> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(server),
        socket2::Type::STREAM,
        None,
    )?;
    if let Some(ip) = source {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.set_nodelay(true)?;
    // Loopback connects complete at once; a blocking connect keeps this simple.
    socket.connect_timeout(&server.into(), Duration::from_secs(5))?;
    let stream = TcpStream::from(socket);
    let mut client = WsClient {
        stream,
        buf: vec![0; 64 * 1024],
        start: 0,
        end: 0,
    };
    let req = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    client.stream.write_all(req.as_bytes()).await?;
    loop {
        let n = client.stream.read(&mut client.buf[client.end..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed during handshake",
            ));
        }
        client.end += n;
        if let Some(pos) = client.buf[..client.end]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
        {
            if !client.buf.starts_with(b"HTTP/1.1 101") {
                let head = String::from_utf8_lossy(&client.buf[..pos]).into_owned();
                return Err(io::Error::other(format!("upgrade refused: {head}")));
            }
            client.start = pos + 4;
            return Ok(client);
        }
        if client.end == client.buf.len() {
            return Err(io::Error::other("handshake response too large"));
        }
    }
}

/// Appends a masked (zero key) client frame.
pub fn put_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
}

/// Appends a Phoenix V2 binary push: `0, jrl, rl, tl, el, join_ref, ref, topic, event, payload`.
pub fn put_binary_push(
    out: &mut Vec<u8>,
    join_ref: &str,
    msg_ref: &str,
    topic: &str,
    event: &str,
    payload: &[u8],
) {
    let mut body = Vec::with_capacity(
        5 + join_ref.len() + msg_ref.len() + topic.len() + event.len() + payload.len(),
    );
    body.extend_from_slice(&[
        0,
        join_ref.len() as u8,
        msg_ref.len() as u8,
        topic.len() as u8,
        event.len() as u8,
    ]);
    for part in [join_ref, msg_ref, topic, event] {
        body.extend_from_slice(part.as_bytes());
    }
    body.extend_from_slice(payload);
    put_frame(out, 2, &body);
}

impl WsClient {
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        let mut out = Vec::with_capacity(text.len() + 14);
        put_frame(&mut out, 1, text.as_bytes());
        self.send_raw(&out).await
    }

    /// Joins `topic` and waits for the reply.
    pub async fn join(&mut self, topic: &str) -> io::Result<()> {
        self.send_text(&format!(r#"["1","j","{topic}","phx_join",{{}}]"#))
            .await?;
        loop {
            let f = self.next_frame().await?;
            if f.opcode == 1
                && contains(f.payload, b"\"phx_reply\"")
                && contains(f.payload, b"\"j\"")
            {
                return if contains(f.payload, b"\"ok\"") {
                    Ok(())
                } else {
                    Err(io::Error::other(format!(
                        "join {topic} refused: {}",
                        String::from_utf8_lossy(f.payload)
                    )))
                };
            }
        }
    }

    /// Header and payload length of the complete frame at the front of the buffer, if any.
    fn complete_frame(&self) -> Option<(usize, usize)> {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < 2 {
            return None;
        }
        let (hlen, len) = match avail[1] & 0x7f {
            126 if avail.len() >= 4 => (4, u16::from_be_bytes([avail[2], avail[3]]) as usize),
            127 if avail.len() >= 10 => (
                10,
                u64::from_be_bytes(avail[2..10].try_into().unwrap()) as usize,
            ),
            126 | 127 => return None,
            n => (2, n as usize),
        };
        (avail.len() >= hlen + len).then_some((hlen, len))
    }

    /// The next complete frame already buffered, or `None` if more bytes are needed.
    pub fn try_frame(&mut self) -> Option<Frame<'_>> {
        let (hlen, len) = self.complete_frame()?;
        let opcode = self.buf[self.start] & 0x0f;
        let s = self.start + hlen;
        self.start += hlen + len;
        Some(Frame {
            opcode,
            payload: &self.buf[s..s + len],
        })
    }

    /// Reads more bytes from the socket into the buffer (compacting or growing it first).
    pub async fn fill(&mut self) -> io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let n = self.buf.len();
                self.buf.resize(n * 2, 0);
            }
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        self.end += n;
        Ok(())
    }

    pub async fn next_frame(&mut self) -> io::Result<Frame<'_>> {
        while self.complete_frame().is_none() {
            self.fill().await?;
        }
        Ok(self.try_frame().expect("checked complete"))
    }

    /// Splits off a writer half (the same socket, written from another task) and receives
    /// through the load thread's socket ring from now on.
    pub fn into_shared(self, ring: &Rc<SocketRing>) -> SharedClient {
        let recv = ring.start_recv(self.stream.as_raw_fd());
        // Wakes the reader now and then while nothing arrives, so it can see the run end.
        recv.set_idle_timeout(Some(Duration::from_millis(50)));
        let mut buf = BytesMut::with_capacity(64 * 1024);
        buf.extend_from_slice(&self.buf[self.start..self.end]);
        SharedClient {
            recv,
            stream: Rc::new(SharedStream::new(self.stream)),
            buf,
        }
    }
}

/// A client whose socket is written by a writer task (through glommio) and read through the
/// load thread's socket ring.
pub struct SharedClient {
    /// Declared first: the receive is cancelled before the socket closes.
    recv: RecvHandle,
    pub stream: Rc<SharedStream>,
    buf: BytesMut,
}

impl SharedClient {
    /// Appends what has arrived; `Ok(false)` when nothing arrived for a while.
    pub fn poll_fill(&mut self, cx: &std::task::Context<'_>) -> std::task::Poll<io::Result<bool>> {
        self.recv
            .poll_recv(cx, &mut self.buf)
            .map(|received| match received {
                Received::Data(_) => Ok(true),
                Received::TimedOut | Received::Idle => Ok(false),
                Received::Eof => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                )),
                Received::Error => Err(io::Error::other("receive failed")),
            })
    }

    /// Calls `f` on every complete buffered frame.
    pub fn drain_frames(&mut self, mut f: impl FnMut(Frame<'_>)) {
        let mut start = 0;
        loop {
            let avail = &self.buf[start..];
            if avail.len() < 2 {
                break;
            }
            let (hlen, len) = match avail[1] & 0x7f {
                126 if avail.len() >= 4 => (4, u16::from_be_bytes([avail[2], avail[3]]) as usize),
                127 if avail.len() >= 10 => (
                    10,
                    u64::from_be_bytes(avail[2..10].try_into().unwrap()) as usize,
                ),
                126 | 127 => break,
                n => (2, n as usize),
            };
            if avail.len() < hlen + len {
                break;
            }
            let opcode = avail[0] & 0x0f;
            let s = start + hlen;
            start += hlen + len;
            f(Frame {
                opcode,
                payload: &self.buf[s..s + len],
            });
        }
        self.buf.advance(start);
    }
}

/// A subscriber's socket once its reads go through the ring: written by the publisher task
/// (through glommio), borrowed only inside a `poll`.
pub struct SharedStream {
    inner: std::cell::RefCell<TcpStream>,
}

impl SharedStream {
    pub fn new(stream: TcpStream) -> SharedStream {
        SharedStream {
            inner: std::cell::RefCell::new(stream),
        }
    }

    /// Writes all of `buf`, waiting for the socket as needed.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        use futures_lite::AsyncWrite;
        while !buf.is_empty() {
            let n = std::future::poll_fn(|cx| {
                std::pin::Pin::new(&mut *self.inner.borrow_mut()).poll_write(cx, buf)
            })
            .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = &buf[n..];
        }
        Ok(())
    }
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
