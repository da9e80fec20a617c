//! Zero-copy proof for `game_state`: a counting global allocator shows that decoding and
//! validating a message (and running a studio hook over it) performs no heap allocation, and
//! measures what one message costs end to end through a real server, per message relayed.
//!
//! Its own test binary, because the allocator is process-wide.

mod common;
use common::*;
use shardcast::core::{App, Channel, ChannelCtx, Delivery, HandleIn, Payload, Router};
use shardcast::features::game::{GameHook, HookContext, StateVerdict};
use shardcast::features::{GameChannel, GameSettings};
use shardcast::protocol::binary::game_state::{self, GameState, ObjectRecord, Position};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Counts allocations (and reallocations): those of threads that turned tracking on, and —
/// while `COUNT_ALL` is set — those of every thread.
struct Counting;

static ALL: AtomicU64 = AtomicU64::new(0);
/// Allocations of tracking threads while `COUNT_ALL` is set (the shard's channel callbacks).
static IN_CALLBACKS: AtomicU64 = AtomicU64::new(0);
static COUNT_ALL: AtomicBool = AtomicBool::new(false);

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static MINE: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    if COUNT_ALL.load(Relaxed) {
        ALL.fetch_add(1, Relaxed);
    }
    // `try_with`: the thread-locals (const-initialized, no destructor) may be gone at thread exit.
    let _ = TRACK.try_with(|t| {
        if t.get() {
            let _ = MINE.try_with(|m| m.set(m.get() + 1));
            if COUNT_ALL.load(Relaxed) {
                IN_CALLBACKS.fetch_add(1, Relaxed);
            }
        }
    });
}

// SAFETY: every method forwards to the system allocator with the caller's own arguments, which
// upholds the `GlobalAlloc` contract; the counting touches only atomics and const thread-locals,
// which never allocate. Exercised by every test below.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded as is (see above).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded as is (see above).
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded as is (see above).
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is (see above).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The tests of this binary count process-wide: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Allocations made by this thread while `f` runs.
fn allocations_in<R>(f: impl FnOnce() -> R) -> (u64, R) {
    MINE.with(|m| m.set(0));
    TRACK.with(|t| t.set(true));
    let r = f();
    TRACK.with(|t| t.set(false));
    (MINE.with(|m| m.get()), r)
}

fn sample_state(players: u32) -> Vec<u8> {
    let positions: Vec<Position> = (0..players)
        .map(|i| Position::new(i, i as f32 * 1.5, -(i as f32)))
        .collect();
    let objects = [
        ObjectRecord {
            kind: "projectile",
            x: 1.0,
            y: 2.0,
            data: &[1, 2, 3, 4],
        },
        ObjectRecord {
            kind: "pickup",
            x: -3.0,
            y: 4.5,
            data: &[],
        },
    ];
    let mut out = Vec::new();
    game_state::encode(&positions, &objects, &mut out).unwrap();
    out
}

/// A studio hook that reads everything and allocates nothing.
struct SumHook;

impl GameHook for SumHook {
    fn validate_game_state(&self, _ctx: &HookContext<'_>, s: &GameState<'_>) -> StateVerdict {
        let sum: f32 = s.positions().iter().map(|p| p.x() + p.y()).sum::<f32>()
            + s.objects().map(|o| o.x + o.data.len() as f32).sum::<f32>();
        if sum.is_finite() {
            StateVerdict::Accept
        } else {
            StateVerdict::Reject("not finite".into())
        }
    }
}

#[test]
fn decoding_and_validating_game_state_allocates_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let settings = GameSettings::default();
    let state = sample_state(64);
    // Every alignment of the receive buffer.
    let buffers: Vec<Vec<u8>> = (0..8)
        .map(|offset| {
            let mut b = vec![0u8; offset];
            b.extend_from_slice(&state);
            b
        })
        .collect();
    let hook = SumHook;
    let ctx = HookContext {
        topic: "game:1",
        user_id: "ada",
        conn_id: 1,
    };
    let (allocs, accepted) = allocations_in(|| {
        let mut accepted = 0u32;
        for round in 0..10_000 {
            let offset = round % 8;
            let msg = &buffers[offset][offset..];
            let parsed = GameState::parse(msg, &settings.limits).expect("valid");
            let objects = parsed.objects().filter(|o| !o.kind.is_empty()).count();
            if objects == 2 && hook.validate_game_state(&ctx, &parsed) == StateVerdict::Accept {
                accepted += 1;
            }
        }
        accepted
    });
    assert_eq!(accepted, 10_000);
    assert_eq!(allocs, 0, "decode + validate + hook allocated");

    // Refusals allocate nothing either (the error is a plain value).
    let mut bad = state.clone();
    bad[8 + 4..8 + 8].copy_from_slice(&f32::NAN.to_le_bytes());
    let (allocs, errors) = allocations_in(|| {
        (0..1000)
            .filter(|_| GameState::parse(&bad, &settings.limits).is_err())
            .count()
    });
    assert_eq!((allocs, errors), (0, 1000));

    // The counter works: something that allocates is seen.
    let (allocs, _) = allocations_in(|| vec![0u8; 16]);
    assert_eq!(allocs, 1);
}

// --- End to end, through a server in this process -------------------------------------------

/// A bare WebSocket client that reads frames into a buffer it owns, so the client side of the
/// measurement allocates nothing per message.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(addr: std::net::SocketAddr) -> Raw {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        Raw {
            stream,
            buf: vec![0u8; 1 << 16],
        }
    }

    /// A masked client frame.
    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x11u8, 0x22, 0x33, 0x44];
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    /// Reads one frame; returns (opcode, payload length). The payload is in `self.buf`.
    fn read_frame(&mut self) -> (u8, usize) {
        let mut h = [0u8; 2];
        self.stream.read_exact(&mut h).unwrap();
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                self.stream.read_exact(&mut l).unwrap();
                usize::from(u16::from_be_bytes(l))
            }
            127 => {
                let mut l = [0u8; 8];
                self.stream.read_exact(&mut l).unwrap();
                u64::from_be_bytes(l) as usize
            }
            n => usize::from(n),
        };
        self.stream.read_exact(&mut self.buf[..len]).unwrap();
        (h[0] & 0x0f, len)
    }

    fn join(&mut self, topic: &str) {
        let join = format!(r#"["1","1","{topic}","phx_join",{{}}]"#);
        self.stream
            .write_all(&Raw::frame(1, join.as_bytes()))
            .unwrap();
        let (op, len) = self.read_frame();
        assert_eq!(op, 1);
        assert!(std::str::from_utf8(&self.buf[..len])
            .unwrap()
            .contains(r#""status":"ok""#));
    }
}

/// `game_state` pushed as a V2 binary frame with ref `r` (a fixed width, so every message is
/// prepared up front).
fn push_frame(topic: &str, r: u32, state: &[u8]) -> Vec<u8> {
    let r = format!("{r:08}");
    let event = "game_state";
    let mut m = vec![0u8, 1, 8, topic.len() as u8, event.len() as u8];
    m.extend_from_slice(b"1");
    m.extend_from_slice(r.as_bytes());
    m.extend_from_slice(topic.as_bytes());
    m.extend_from_slice(event.as_bytes());
    m.extend_from_slice(state);
    Raw::frame(2, &m)
}

/// The same relay without any decoding: what the channel API and the transport cost by
/// themselves (a `broadcast_from_with` under the latest-value policy, and the ok reply).
struct PlainRelay;

impl Channel for PlainRelay {
    type Info = ();

    fn join(&mut self, _ctx: &mut ChannelCtx<'_>, _p: Payload) -> Result<Payload, Payload> {
        Ok(Payload::empty())
    }

    fn handle_in(&mut self, ctx: &mut ChannelCtx<'_>, _event: &str, payload: Payload) -> HandleIn {
        ctx.broadcast_from_with("game_update", &payload, Delivery::Latest(1));
        HandleIn::ok(Payload::empty())
    }
}

/// Runs a channel's `handle_in` with allocation tracking on (on the shard's thread).
struct Counted<C>(C);

impl<C: Channel> Channel for Counted<C> {
    type Info = C::Info;

    fn join(&mut self, ctx: &mut ChannelCtx<'_, C::Info>, p: Payload) -> Result<Payload, Payload> {
        self.0.join(ctx, p)
    }

    fn handle_in(
        &mut self,
        ctx: &mut ChannelCtx<'_, C::Info>,
        event: &str,
        payload: Payload,
    ) -> HandleIn {
        TRACK.with(|t| t.set(true));
        let result = self.0.handle_in(ctx, event, payload);
        TRACK.with(|t| t.set(false));
        result
    }
}

/// Allocations per message relaying `N` game states from one member to another on `topic`,
/// one message per read (as at 60 Hz): (inside the channel's `handle_in`, whole process).
fn allocations_per_relay(server: &TestServer, topic: &str) -> (f64, f64) {
    let mut sender = Raw::connect(server.addr);
    let mut receiver = Raw::connect(server.addr);
    sender.join(topic);
    receiver.join(topic);
    let state = sample_state(16);
    const N: u32 = 2000;
    const WARMUP: u32 = 200;
    let frames: Vec<Vec<u8>> = (0..N + WARMUP)
        .map(|r| push_frame(topic, r, &state))
        .collect();
    let relay = |frame: &[u8], sender: &mut Raw, receiver: &mut Raw| {
        sender.stream.write_all(frame).unwrap();
        // The update reaches the other member before the sender's reply is read.
        let (op, len) = receiver.read_frame();
        assert_eq!(op, 2, "a binary game_update");
        assert_eq!(&receiver.buf[len - state.len()..len], &state[..]);
        let (op, _) = sender.read_frame();
        assert_eq!(op, 1, "the ok reply");
    };
    for frame in &frames[..WARMUP as usize] {
        relay(frame, &mut sender, &mut receiver);
    }
    ALL.store(0, Relaxed);
    IN_CALLBACKS.store(0, Relaxed);
    COUNT_ALL.store(true, Relaxed);
    for frame in &frames[WARMUP as usize..] {
        relay(frame, &mut sender, &mut receiver);
    }
    COUNT_ALL.store(false, Relaxed);
    let per = |n: u64| n as f64 / f64::from(N);
    (per(IN_CALLBACKS.load(Relaxed)), per(ALL.load(Relaxed)))
}

#[test]
fn relaying_game_state_allocates_nothing_beyond_the_plain_relay() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let settings = Arc::new(GameSettings::default());
    let app = App::new(
        |_: &shardcast::ConnectInfo| Ok(()),
        Router::new()
            .channel("game:*", move || {
                Counted(GameChannel::new(settings.clone()).with_hook(Arc::new(SumHook)))
            })
            .channel("plain:*", || Counted(PlainRelay)),
    );
    let server = TestServer::start(app, |_| {});
    let (plain, plain_all) = allocations_per_relay(&server, "plain:alloc");
    let (game, game_all) = allocations_per_relay(&server, "game:alloc");
    eprintln!(
        "allocations per relayed message: in handle_in: plain relay {plain:.3}, game_state \
         (decoded, validated, studio hook) {game:.3}; whole process (transport included): plain {plain_all:.2}, game {game_all:.2}"
    );
    // Inside the callback both make the shared outgoing broadcast: its `Arc` and the event name
    // it carries (the frame itself goes into the shard's encode arena, which grows now and
    // then). Decoding and validating the state, and the hook, add nothing.
    assert!(
        game <= plain + 0.001,
        "game_state allocates beyond the broadcast it sends: {game:.3} vs {plain:.3}"
    );
    assert!(
        game <= 2.05,
        "{game:.3} allocations per message in handle_in (the broadcast needs 2)"
    );
}
