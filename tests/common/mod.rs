//! Shared test support: an in-process server on its own loopback port, and a blocking WebSocket
//! client (tungstenite) that talks to it the way a real client does.
#![allow(dead_code)]

use shardcast::channel::App;
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
