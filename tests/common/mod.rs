//! Shared test support: an in-process server on its own loopback port, and a blocking WebSocket
//! client (tungstenite) that talks to it the way a real client does.
#![allow(dead_code)]

use shardcast::core::App;
use shardcast::{Config, Server, ServerHandle};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Ports below the ephemeral range, spread by process id so parallel test binaries do not meet.
fn next_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 400) as u16 * 25;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 2000;
        // A plain bind (no SO_REUSEPORT) fails if anything holds the port.
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub struct TestServer {
    handle: Option<ServerHandle>,
    pub addr: SocketAddr,
}

impl TestServer {
    pub fn start(app: App, configure: impl Fn(&mut Config)) -> TestServer {
        for _ in 0..20 {
            let mut config = Config::default();
            config.shards = 1;
            config.pin_shards = false;
            config.listen = SocketAddr::from(([127, 0, 0, 1], next_port()));
            config.data_dir = std::env::temp_dir().join(format!(
                "shardcast-test-{}-{}",
                std::process::id(),
                config.listen.port()
            ));
            configure(&mut config);
            match Server::start(config.clone(), app.clone()) {
                Ok(handle) => {
                    return TestServer {
                        addr: handle.local_addr(),
                        handle: Some(handle),
                    }
                }
                Err(shardcast::ServerError::Bind { .. }) => continue,
                Err(e) => panic!("server failed to start: {e}"),
            }
        }
        panic!("no free port found");
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }

    pub fn metric(&self, name: &str) -> u64 {
        let text = http_get(self.addr, "/metrics").1;
        text.lines()
            .filter(|l| l.starts_with(&format!("shardcast_{name}{{")))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    }

    /// Waits (polling `/metrics`, 10 s at most) until metric `name` reads `want`.
    pub fn wait_for_metric(&self, name: &str, want: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.metric(name);
            if now == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} is {now}, expected {want}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn shutdown(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().expect("clean shutdown");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.shutdown();
        }
    }
}

/// A plain HTTP/1.1 GET; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split(' ').nth(1).unwrap().parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

pub fn connect(url: &str) -> Ws {
    let (ws, _) = tungstenite::connect(url).unwrap_or_else(|e| panic!("connect {url}: {e}"));
    set_timeout(&ws, Duration::from_secs(5));
    ws
}

pub fn set_timeout(ws: &Ws, dur: Duration) {
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(dur)).unwrap();
    }
}

pub fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).unwrap();
}

pub fn send_binary(ws: &mut Ws, data: Vec<u8>) {
    ws.send(Message::binary(data)).unwrap();
}

/// The next data message (pings are answered by tungstenite itself).
pub fn recv(ws: &mut Ws) -> Message {
    loop {
        match ws.read() {
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
            Ok(m) => return m,
            Err(e) => panic!("expected a message, got {e}"),
        }
    }
}

pub fn recv_text(ws: &mut Ws) -> String {
    match recv(ws) {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

pub fn recv_json(ws: &mut Ws) -> serde_json::Value {
    serde_json::from_str(&recv_text(ws)).unwrap()
}

/// Reads until the server's close frame; returns its code.
pub fn recv_close(ws: &mut Ws) -> u16 {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => return u16::from(frame.code),
            Ok(Message::Close(None)) => return 1005,
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    }
}

pub fn close_code(code: u16) -> CloseCode {
    CloseCode::from(code)
}

/// Joins `topic` over V2 and checks the ok reply.
pub fn join(ws: &mut Ws, join_ref: &str, topic: &str) {
    send_text(
        ws,
        &format!(r#"["{join_ref}","{join_ref}","{topic}","phx_join",{{}}]"#),
    );
    let reply = recv_json(ws);
    assert_eq!(reply[3], "phx_reply", "{reply}");
    assert_eq!(reply[4]["status"], "ok", "{reply}");
}

// --- Built-in features (auth, rooms, presence, storage) ------------------------------------

/// The signing secret of feature test servers (tokens are minted in-process with it).
pub const TEST_SECRET: &str = "shardcast-test-secret-0123456789abcdef";

/// A fresh data directory, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let path = std::env::temp_dir().join(format!(
            "shardcast-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server running `app::default_app` with its storage thread, on `data_dir`.
pub struct FeatureServer {
    server: Option<TestServer>,
    storage: Option<shardcast::storage::StorageThread>,
    pub config: Config,
    pub addr: SocketAddr,
}

impl FeatureServer {
    /// `configure` sees the feature sections before the app is built (`auth.secret` is
    /// [`TEST_SECRET`] unless it clears it).
    pub fn start(data_dir: &std::path::Path, configure: impl Fn(&mut Config)) -> FeatureServer {
        let mut base = Config {
            data_dir: data_dir.to_owned(),
            shards: 1,
            ..Config::default()
        };
        base.auth.secret = TEST_SECRET.into();
        configure(&mut base);
        let storage = shardcast::storage::StorageThread::start(&base.storage, &base.data_dir)
            .expect("storage starts");
        let app = shardcast::app::default_app(&base, storage.handle()).expect("app builds");
        let server = TestServer::start(app, |c| {
            c.shards = base.shards;
            c.data_dir = base.data_dir.clone();
            c.auth = base.auth.clone();
            c.rooms = base.rooms.clone();
            c.storage = base.storage.clone();
        });
        FeatureServer {
            addr: server.addr,
            server: Some(server),
            storage: Some(storage),
            config: base,
        }
    }

    pub fn storage(&self) -> shardcast::storage::Storage {
        self.storage.as_ref().unwrap().handle()
    }

    pub fn server(&self) -> &TestServer {
        self.server.as_ref().unwrap()
    }

    /// A token for `sub` signed with this server's secret.
    pub fn token(&self, sub: &str, name: &str, rooms: Option<&[&str]>) -> String {
        let key =
            shardcast::features::auth::resolve_secret(&self.config.auth, &self.config.data_dir)
                .unwrap()
                .0;
        let mut claims = shardcast::features::Claims::new(sub, name, 3600);
        claims.rooms = rooms.map(|r| r.iter().map(|s| s.to_string()).collect());
        shardcast::features::Authenticator::new(key, false).sign(&claims)
    }

    /// The socket URL (V2) with `token`.
    pub fn socket_url(&self, token: &str) -> String {
        format!(
            "ws://{}/socket/websocket?vsn=2.0.0&token={token}",
            self.addr
        )
    }

    /// Connects as `sub`.
    pub fn client(&self, sub: &str, name: &str) -> Client {
        Client::connect(&self.socket_url(&self.token(sub, name, None)))
    }

    /// Connection counts per shard, from `/metrics`.
    pub fn per_shard_connections(&self) -> Vec<u64> {
        http_get(self.addr, "/metrics")
            .1
            .lines()
            .filter(|l| l.starts_with("shardcast_connections{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect()
    }

    /// One client per `(sub, name)`, reconnecting some (bounded) until every shard holds one:
    /// the kernel picks a connection's shard.
    pub fn clients_on_both_shards(&self, subs: &[(&str, &str)]) -> Vec<Client> {
        let mut clients: Vec<Client> = subs.iter().map(|(s, n)| self.client(s, n)).collect();
        let mut attempts = 0;
        while self.per_shard_connections().contains(&0) {
            attempts += 1;
            assert!(attempts < 100, "connections never reached every shard");
            let i = attempts % clients.len();
            let (s, n) = subs[i];
            let old = std::mem::replace(&mut clients[i], self.client(s, n));
            old.close();
        }
        clients
    }

    /// Graceful stop: the shards drain, then storage answers what is queued and stops.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
        if let Some(s) = self.storage.take() {
            s.stop().expect("storage stops");
        }
    }
}

impl Drop for FeatureServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            drop(s);
        }
        if let Some(s) = self.storage.take() {
            let _ = s.stop();
        }
    }
}

/// How long a client waits for an expected message.
pub const WAIT: Duration = Duration::from_secs(10);

/// A V2 Phoenix client that keeps what it read but has not been asked for yet, so tests can
/// wait for one message (with a deadline) without losing the others.
pub struct Client {
    pub ws: Ws,
    unread: std::collections::VecDeque<serde_json::Value>,
    next_ref: u64,
}

impl Client {
    pub fn connect(url: &str) -> Client {
        Client {
            ws: connect(url),
            unread: Default::default(),
            next_ref: 0,
        }
    }

    fn fresh_ref(&mut self) -> String {
        self.next_ref += 1;
        self.next_ref.to_string()
    }

    /// Sends `[join_ref, ref, topic, event, payload]`; returns the ref.
    pub fn push(
        &mut self,
        join_ref: &str,
        topic: &str,
        event: &str,
        payload: serde_json::Value,
    ) -> String {
        let r = self.fresh_ref();
        let msg = serde_json::json!([join_ref, r, topic, event, payload]);
        send_text(&mut self.ws, &msg.to_string());
        r
    }

    /// Joins `topic`; returns the join ref and the reply's `{status, response}`.
    pub fn join(&mut self, topic: &str, payload: serde_json::Value) -> (String, serde_json::Value) {
        let join_ref = format!("j{}", self.next_ref + 1);
        self.next_ref += 1;
        let msg = serde_json::json!([join_ref, join_ref, topic, "phx_join", payload]);
        send_text(&mut self.ws, &msg.to_string());
        let reply = self.reply(&join_ref);
        (join_ref, reply)
    }

    /// Joins and checks the reply is ok; returns the join ref.
    pub fn join_ok(&mut self, topic: &str) -> String {
        let (join_ref, reply) = self.join(topic, serde_json::json!({}));
        assert_eq!(reply["status"], "ok", "join {topic}: {reply}");
        join_ref
    }

    /// Pushes and waits for the reply's `{status, response}`.
    pub fn call(
        &mut self,
        join_ref: &str,
        topic: &str,
        event: &str,
        payload: serde_json::Value,
    ) -> serde_json::Value {
        let r = self.push(join_ref, topic, event, payload);
        self.reply(&r)
    }

    /// The reply to push `msg_ref`: `{status, response}`.
    pub fn reply(&mut self, msg_ref: &str) -> serde_json::Value {
        let m = self.next_where(&format!("reply {msg_ref}"), |m| {
            m[3] == "phx_reply" && m[1] == msg_ref
        });
        m[4].clone()
    }

    /// The payload of the next `event` on `topic`.
    pub fn event(&mut self, topic: &str, event: &str) -> serde_json::Value {
        self.next_where(&format!("{event} on {topic}"), |m| {
            m[2] == topic && m[3] == event
        })[4]
            .clone()
    }

    /// The payload of the next `event` on `topic` that satisfies `pred`; earlier ones of the
    /// same event are dropped.
    pub fn event_where(
        &mut self,
        topic: &str,
        event: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        loop {
            let p = self.event(topic, event);
            if pred(&p) {
                return p;
            }
        }
    }

    /// The next message (any), waiting up to [`WAIT`].
    pub fn next(&mut self) -> serde_json::Value {
        self.next_where("any message", |_| true)
    }

    /// The first message (read or arriving within [`WAIT`]) matching `pred`, taken out.
    pub fn next_where(
        &mut self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        if let Some(pos) = self.unread.iter().position(&pred) {
            return self.unread.remove(pos).unwrap();
        }
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; unread: {:?}",
                self.unread
            );
            set_timeout(&self.ws, left);
            let m = match self.ws.read() {
                Ok(Message::Text(t)) => serde_json::from_str::<serde_json::Value>(&t).unwrap(),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(other) => panic!("waiting for {what}: unexpected {other:?}"),
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => panic!("waiting for {what}: {e}; unread: {:?}", self.unread),
            };
            if pred(&m) {
                return m;
            }
            self.unread.push_back(m);
        }
    }

    /// Round-trips a heartbeat: everything the server queued for this socket before it answered
    /// is read. Returns (and forgets) the `event`s on `topic` seen so far.
    pub fn drain_events(&mut self, topic: &str, event: &str) -> Vec<serde_json::Value> {
        let r = self.fresh_ref();
        let msg = serde_json::json!([null, r, "phoenix", "heartbeat", {}]);
        send_text(&mut self.ws, &msg.to_string());
        self.reply(&r);
        let (hits, rest): (Vec<_>, Vec<_>) = self
            .unread
            .drain(..)
            .partition(|m| m[2] == topic && m[3] == event);
        self.unread = rest.into();
        hits.into_iter().map(|m| m[4].clone()).collect()
    }

    /// Closes the socket (the server sees a disconnect).
    pub fn close(mut self) {
        let _ = self.ws.close(None);
        while self.ws.read().is_ok() {}
    }
}

// --- Raw frames, for tests that write what a client library would not ----------------------

/// One masked client frame: `first` is the frame's first byte (FIN, RSV1 for a compressed
/// message, opcode); the header declares `declared` payload bytes, of which only `payload` is
/// included (a header may announce more than it sends).
pub fn client_frame(first: u8, declared: usize, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    match declared {
        0..=125 => out.push(0x80 | declared as u8),
        126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(declared as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(declared as u64).to_be_bytes());
        }
    }
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A whole masked text frame.
pub fn text_frame(text: &str) -> Vec<u8> {
    client_frame(0x81, text.len(), text.as_bytes())
}

/// The raw TCP stream under a client, to write many frames in one `write`.
pub fn raw(ws: &mut Ws) -> &mut TcpStream {
    match ws.get_mut() {
        MaybeTlsStream::Plain(s) => s,
        _ => unreachable!("tests use plain sockets"),
    }
}

/// A raw socket upgraded on `path` with `extra_headers` (each ending in CRLF); returns it and
/// the response head, lower-cased.
pub fn upgraded(addr: SocketAddr, path: &str, extra_headers: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    (s, head)
}
