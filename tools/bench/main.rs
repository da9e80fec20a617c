//! `shardcast-bench`: load generator and latency meter for shardcast (and any server speaking the
//! same Phoenix V2 subset, such as the peer in `perf/peers/`).
//!
//! Every scenario is bounded in time and connections and stops by itself. Latency is measured
//! from the publish (a timestamp in the payload) to each delivery, into HDR histograms.

mod client;
mod stats;

use clap::{Parser, ValueEnum};
use client::{connect, put_binary_push, put_frame, SharedClient};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use stats::{cpu_seconds, histogram, now_ns, print_result, rss_bytes, Latency, RunResult};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Scenario {
    /// N connections each pushing `echo` and awaiting the reply (closed loop).
    Echo,
    /// N subscribers in one topic, P publishers at a total rate (0 = as fast as possible).
    Fanout,
    /// M rooms of K members, everyone publishing at a rate (chat-like).
    Rooms,
    /// M rooms of K players, each sending binary state at 60 Hz.
    Game,
    /// M rooms of K speakers, 50 binary frames/s each.
    Audio,
    /// Handshake + join rate.
    Connect,
    /// Hold N idle connections; report the server's RSS per connection (needs --server-pid).
    Idle,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "shardcast-bench",
    about = "Load generator and latency meter for shardcast"
)]
struct Args {
    scenario: Scenario,
    /// Server socket URL (the Phoenix `/socket` path; `/websocket?vsn=2.0.0` is appended).
    #[arg(long, default_value = "ws://127.0.0.1:4000/socket")]
    url: String,
    /// Connections: subscribers (fanout), clients (echo), concurrency (connect), held (idle).
    #[arg(long)]
    connections: Option<usize>,
    /// Publish rate: total publishes/s (fanout), per member per second (rooms/game/audio).
    /// 0 = saturation (as fast as the server takes them).
    #[arg(long)]
    rate: Option<f64>,
    /// Payload bytes per message.
    #[arg(long)]
    payload: Option<usize>,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Load threads (each a glommio executor).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// CPUs to pin load threads to (e.g. `1` or `2-3`); unpinned if absent.
    #[arg(long)]
    cpus: Option<String>,
    /// Spread connections over this many loopback source addresses (127.0.0.1, .2, ...).
    #[arg(long, default_value_t = 1)]
    sources: u8,
    /// Socket token (query parameter `token`), for servers that require one.
    #[arg(long)]
    token: Option<String>,
    /// Mint a token per connection (user `bench-N`) with the secret `shardcast serve` uses for
    /// the same --config / --data-dir (as `shardcast token` does).
    #[arg(long)]
    mint: bool,
    /// With --mint: the server's config file.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// With --mint: the server's data directory (where a generated secret is kept).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Server process id: its CPU use and RSS are reported.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Publishers (fanout).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Rooms (rooms/game/audio).
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    /// Members per room (rooms/game/audio).
    #[arg(long, default_value_t = 10)]
    members: usize,
    /// Send binary Phoenix frames instead of JSON text (game/audio always do).
    #[arg(long)]
    binary: bool,
    /// Topic prefix and event used to publish.
    #[arg(long, default_value = "echo:")]
    topic_prefix: String,
    #[arg(long, default_value = "broadcast")]
    event: String,
    /// Search for the highest rate whose p99 stays under --p99-bound-ms (fanout/rooms).
    #[arg(long)]
    search: bool,
    #[arg(long, default_value_t = 10.0)]
    p99_bound_ms: f64,
    /// Seconds per search step.
    #[arg(long, default_value_t = 4.0)]
    step_secs: f64,
    /// Also print the full latency percentile ladder of each run.
    #[arg(long)]
    histogram: bool,
    /// Saturation mode (--rate 0): publishes allowed in flight (undelivered to some subscriber).
    #[arg(long, default_value_t = 256)]
    window: u64,
    /// Label for this run in the output (e.g. the server's name).
    #[arg(long, default_value = "shardcast")]
    label: String,
}

/// What one connection does in a pub/sub run.
#[derive(Clone)]
struct Role {
    topic_index: usize,
    /// Publishes per second from this connection (0 with `publisher` = saturate).
    rate: f64,
    publisher: bool,
    /// Counts deliveries (and their latency).
    subscriber: bool,
    /// Where in each publish period this connection publishes (0..1): publishers are spread
    /// over the period rather than all firing at once.
    phase: f64,
}

struct Shared {
    base: Instant,
    /// Subscribers per topic.
    subscribers: Vec<u64>,
    /// Saturation mode: most deliveries outstanding, in messages × subscribers.
    window: u64,
    /// Publishes sent per topic.
    sent: Vec<AtomicU64>,
    delivered: AtomicU64,
    publish_done: AtomicBool,
    errors: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = parse_url(&args.url)?;
    init_minter(&args)?;
    let results = match args.scenario {
        Scenario::Echo => vec![run_echo(&args, server)?],
        Scenario::Connect => vec![run_connect(&args, server)?],
        Scenario::Idle => vec![run_idle(&args, server)?],
        Scenario::Fanout | Scenario::Rooms | Scenario::Game | Scenario::Audio if args.search => {
            search(&args, server)?
        }
        Scenario::Fanout | Scenario::Rooms | Scenario::Game | Scenario::Audio => {
            let r = run_pubsub(&args, server, rate_of(&args), args.duration)?;
            print_result(&r);
            vec![r]
        }
    };
    if args.histogram {
        for r in &results {
            if let Some(h) = &r.latency_hist {
                stats::print_ladder(&r.scenario, h);
            }
        }
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({ "label": args.label, "scenario": format!("{:?}", args.scenario).to_lowercase(), "results": results });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
    }
    Ok(())
}

fn parse_url(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| anyhow::anyhow!("only ws:// URLs are supported"))?;
    let host = rest.split('/').next().unwrap_or(rest);
    host.to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("cannot resolve {host}"))
}

/// The minting key, set once in `main` when --mint is given.
static MINTER: std::sync::OnceLock<shardcast::features::auth::Authenticator> =
    std::sync::OnceLock::new();

fn ws_path(args: &Args) -> String {
    let base = args
        .url
        .splitn(4, '/')
        .nth(3)
        .map_or(String::new(), |p| format!("/{p}"));
    let base = if base.is_empty() {
        "/socket".to_string()
    } else {
        base
    };
    match &args.token {
        Some(t) => format!("{base}/websocket?vsn=2.0.0&token={t}"),
        None => format!("{base}/websocket?vsn=2.0.0"),
    }
}

/// The upgrade path for connection `i`: with --mint, a token of its own user.
fn conn_path(base: &str, i: usize) -> std::borrow::Cow<'_, str> {
    match MINTER.get() {
        Some(auth) => {
            let claims = shardcast::features::auth::Claims::new(
                format!("bench-{i}"),
                format!("bench {i}"),
                24 * 3600,
            );
            format!("{base}&token={}", auth.sign(&claims)).into()
        }
        None => base.into(),
    }
}

fn init_minter(args: &Args) -> anyhow::Result<()> {
    if !args.mint {
        return Ok(());
    }
    let mut config = shardcast::Config::load(args.config.as_deref())?;
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    let (auth, _) = shardcast::features::auth::Authenticator::from_config(&config)?;
    let _ = MINTER.set(auth);
    Ok(())
}

fn rate_of(args: &Args) -> f64 {
    args.rate.unwrap_or(match args.scenario {
        Scenario::Fanout => 1000.0,
        Scenario::Game => 60.0,
        Scenario::Audio => 50.0,
        _ => 2.0,
    })
}

fn payload_of(args: &Args) -> usize {
    args.payload.unwrap_or(match args.scenario {
        Scenario::Echo => 32,
        Scenario::Audio => 80,
        Scenario::Game => 8 + 12 * args.members,
        _ => 64,
    })
}

fn source_ip(args: &Args, i: usize) -> Option<IpAddr> {
    (args.sources > 1).then(|| {
        IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            1 + (i % args.sources as usize) as u8,
        ))
    })
}

fn cpu_list(args: &Args) -> Vec<usize> {
    let Some(spec) = &args.cpus else {
        return vec![];
    };
    let mut cpus = vec![];
    for part in spec.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                cpus.extend(a.parse::<usize>().unwrap_or(0)..=b.parse::<usize>().unwrap_or(0))
            }
            None => cpus.extend(part.parse::<usize>().ok()),
        }
    }
    cpus
}

/// Runs `work(thread_index)` on `args.threads` glommio executors and collects the outputs.
fn on_threads<T: Send + 'static, F, Fut>(args: &Args, work: F) -> Vec<T>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    let cpus = cpu_list(args);
    let handles: Vec<_> = (0..args.threads)
        .map(|t| {
            let placement = if cpus.is_empty() {
                Placement::Unbound
            } else {
                Placement::Fixed(cpus[t % cpus.len()])
            };
            let work = work.clone();
            LocalExecutorBuilder::new(placement)
                .name(&format!("load-{t}"))
                .io_memory(512 * 1024)
                .spawn(move || work(t))
                .expect("load executor starts")
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("load thread"))
        .collect()
}

struct Cpu {
    harness: Option<f64>,
    server: Option<f64>,
    started: Instant,
}

fn cpu_start(args: &Args) -> Cpu {
    Cpu {
        harness: cpu_seconds("self"),
        server: args.server_pid.and_then(|p| cpu_seconds(&p.to_string())),
        started: Instant::now(),
    }
}

fn cpu_finish(args: &Args, c: &Cpu, r: &mut RunResult) {
    let wall = c.started.elapsed().as_secs_f64();
    if let (Some(a), Some(b)) = (c.harness, cpu_seconds("self")) {
        r.harness_cpu_percent = (b - a) / wall * 100.0;
    }
    if let (Some(a), Some(b)) = (
        c.server,
        args.server_pid.and_then(|p| cpu_seconds(&p.to_string())),
    ) {
        r.server_cpu_percent = Some((b - a) / wall * 100.0);
    }
    r.server_rss_bytes = args.server_pid.and_then(|p| rss_bytes(&p.to_string()));
}

fn roles(args: &Args, rate: f64) -> (Vec<Role>, usize) {
    match args.scenario {
        Scenario::Fanout => {
            let subs = args.connections.unwrap_or(1000);
            let pubs = args.publishers.max(1);
            let mut v: Vec<Role> = (0..subs)
                .map(|_| Role {
                    topic_index: 0,
                    rate: 0.0,
                    publisher: false,
                    subscriber: true,
                    phase: 0.0,
                })
                .collect();
            v.extend((0..pubs).map(|p| Role {
                topic_index: 0,
                rate: rate / pubs as f64,
                publisher: true,
                subscriber: false,
                phase: p as f64 / pubs as f64,
            }));
            (v, 1)
        }
        _ => {
            let v = (0..args.rooms * args.members)
                .map(|i| Role {
                    topic_index: i / args.members,
                    rate,
                    publisher: true,
                    subscriber: true,
                    phase: (i as f64 * 0.618_033_988_75).fract(),
                })
                .collect();
            (v, args.rooms)
        }
    }
}

/// One pub/sub run at `rate` for `secs`.
fn run_pubsub(args: &Args, server: SocketAddr, rate: f64, secs: f64) -> anyhow::Result<RunResult> {
    let (roles, topics) = roles(args, rate);
    let binary = args.binary || matches!(args.scenario, Scenario::Game | Scenario::Audio);
    let subscribers_per_topic: Vec<u64> = (0..topics)
        .map(|t| {
            roles
                .iter()
                .filter(|r| r.subscriber && r.topic_index == t)
                .count() as u64
        })
        .collect();
    let total_subs: u64 = subscribers_per_topic.iter().sum();
    let shared = Arc::new(Shared {
        base: Instant::now(),
        subscribers: subscribers_per_topic.clone(),
        window: args.window * total_subs.max(1),
        sent: (0..topics).map(|_| AtomicU64::new(0)).collect(),
        delivered: AtomicU64::new(0),
        publish_done: AtomicBool::new(false),
        errors: AtomicU64::new(0),
    });
    let barrier = Arc::new(Barrier::new(args.threads + 1));
    let path = ws_path(args);
    let payload = payload_of(args);
    let (args2, shared2, barrier2, roles2) = (
        args.clone(),
        shared.clone(),
        barrier.clone(),
        Arc::new(roles.clone()),
    );
    let threads = args.threads;
    let publish_for = Duration::from_secs_f64(secs);

    let driver = std::thread::spawn(move || {
        on_threads(&args2.clone(), move |t| {
            let (args, shared, barrier, roles, path) = (
                args2.clone(),
                shared2.clone(),
                barrier2.clone(),
                roles2.clone(),
                path.clone(),
            );
            async move {
                let hist = Rc::new(std::cell::RefCell::new(histogram()));
                let mut conns = Vec::new();
                for (i, role) in roles.iter().enumerate().filter(|(i, _)| i % threads == t) {
                    let topic = format!("{}bench{}", args.topic_prefix, role.topic_index);
                    match connect(server, source_ip(&args, i), &conn_path(&path, i)).await {
                        Ok(mut c) => match c.join(&topic).await {
                            Ok(()) => conns.push((role.clone(), topic, c.into_shared())),
                            Err(e) => {
                                eprintln!("join failed: {e}");
                                shared.errors.fetch_add(1, Relaxed);
                            }
                        },
                        Err(e) => {
                            eprintln!("connect failed: {e}");
                            shared.errors.fetch_add(1, Relaxed);
                        }
                    }
                }
                barrier.wait();
                let start = Instant::now();
                let mut tasks = Vec::new();
                for (role, topic, client) in conns {
                    let (shared, hist) = (shared.clone(), hist.clone());
                    if role.publisher {
                        let writer = client.stream.clone();
                        let (shared_w, event) = (shared.clone(), args.event.clone());
                        let topic_w = topic.clone();
                        tasks.push(glommio::spawn_local(async move {
                            publish(
                                writer,
                                &shared_w,
                                role.topic_index,
                                &topic_w,
                                &event,
                                role.rate,
                                role.phase,
                                payload,
                                binary,
                                start,
                                publish_for,
                            )
                            .await;
                        }));
                    }
                    tasks.push(glommio::spawn_local(read_deliveries(
                        client,
                        shared,
                        hist,
                        role.clone(),
                        start,
                        publish_for,
                    )));
                }
                for task in tasks {
                    task.await;
                }
                Rc::try_unwrap(hist)
                    .map(|h| h.into_inner())
                    .unwrap_or_else(|h| h.borrow().clone())
            }
        })
    });
    barrier.wait();
    let cpu = cpu_start(args);
    let started = Instant::now();
    // Publishers stop on their own after `secs`; then the readers drain.
    std::thread::sleep(publish_for);
    shared.publish_done.store(true, Relaxed);
    let hists = driver.join().expect("driver thread");
    let wall = started
        .elapsed()
        .as_secs_f64()
        .min(secs.max(f64::MIN_POSITIVE));
    let mut merged = histogram();
    for h in &hists {
        merged.add(h).expect("same bounds");
    }
    let sent: u64 = shared.sent.iter().map(|s| s.load(Relaxed)).sum();
    let expected: u64 = shared
        .sent
        .iter()
        .zip(&subscribers_per_topic)
        .map(|(s, n)| s.load(Relaxed) * n)
        .sum();
    let delivered = shared.delivered.load(Relaxed);
    let mut r = RunResult {
        scenario: format!("{:?}", args.scenario).to_lowercase(),
        connections: roles.len(),
        target_rate: rate,
        seconds: secs,
        sent,
        delivered,
        expected,
        lost: expected.saturating_sub(delivered),
        delivered_per_sec: delivered as f64 / wall,
        latency: Latency::of(&merged),
        latency_hist: Some(merged),
        ..Default::default()
    };
    let errors = shared.errors.load(Relaxed);
    if errors > 0 {
        r.notes.push(format!("{errors} connection errors"));
    }
    cpu_finish(args, &cpu, &mut r);
    Ok(r)
}

/// Deliveries expected but not yet seen.
fn in_flight(shared: &Shared) -> u64 {
    let expected: u64 = shared
        .sent
        .iter()
        .zip(&shared.subscribers)
        .map(|(s, n)| s.load(Relaxed) * n)
        .sum();
    expected.saturating_sub(shared.delivered.load(Relaxed))
}

/// Sends publishes at `rate` per second (0 = as fast as the socket takes them) until `secs`.
#[allow(clippy::too_many_arguments)]
async fn publish(
    stream: Rc<shardcast::runtime::transport::stream::SharedStream>,
    shared: &Shared,
    topic_index: usize,
    topic: &str,
    event: &str,
    rate: f64,
    phase: f64,
    payload: usize,
    binary: bool,
    start: Instant,
    secs: Duration,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut sent: u64 = 0;
    let pad = "x".repeat(payload.saturating_sub(30));
    let bin_pad = vec![0u8; payload.saturating_sub(8)];
    while start.elapsed() < secs {
        if rate <= 0.0 && in_flight(shared) > shared.window {
            // Saturation: keep a bounded number of publishes undelivered, so the figure is the
            // server's sustained rate rather than how fast its queues can grow.
            glommio::timer::sleep(Duration::from_micros(100)).await;
            continue;
        }
        let due = if rate > 0.0 {
            (start.elapsed().as_secs_f64() * rate + phase) as u64
        } else {
            sent + 16
        };
        let batch = due.saturating_sub(sent).min(1024);
        if batch == 0 {
            // Sleep until the next publish is due (slow publishers must not spin the harness).
            let next = Duration::from_secs_f64(((sent + 1) as f64 - phase).max(0.0) / rate);
            let wait = next
                .saturating_sub(start.elapsed())
                .max(Duration::from_micros(50));
            glommio::timer::sleep(wait.min(secs.saturating_sub(start.elapsed()))).await;
            continue;
        }
        buf.clear();
        for _ in 0..batch {
            let t = now_ns(shared.base);
            if binary {
                let mut body = Vec::with_capacity(payload.max(8));
                body.extend_from_slice(&t.to_le_bytes());
                body.extend_from_slice(&bin_pad);
                put_binary_push(&mut buf, "1", "p", topic, event, &body);
            } else {
                // A fixed-width number (JSON allows no leading zeros) keeps every frame one size.
                let text = format!(
                    r#"["1","p","{topic}","{event}",{{"t":{},"p":"{pad}"}}]"#,
                    t + TS_OFFSET
                );
                put_frame(&mut buf, 1, text.as_bytes());
            }
        }
        if stream.write_all(&buf).await.is_err() {
            shared.errors.fetch_add(1, Relaxed);
            return;
        }
        sent += batch;
        shared.sent[topic_index].fetch_add(batch, Relaxed);
    }
}

/// Reads a connection's frames, recording publish-to-delivery latency of broadcasts, until the
/// run is over and everything expected has arrived (or a drain timeout passes).
async fn read_deliveries(
    mut client: SharedClient,
    shared: Arc<Shared>,
    hist: Rc<std::cell::RefCell<Histogram<u64>>>,
    role: Role,
    start: Instant,
    secs: Duration,
) {
    client.stream.set_read_timeout(Duration::from_millis(50));
    let received = Cell::new(0u64);
    let drain_deadline = secs + Duration::from_secs(3);
    loop {
        match client.fill().await {
            Ok(_) => {}
            Err(_) => {
                shared.errors.fetch_add(1, Relaxed);
                return;
            }
        }
        if role.subscriber {
            let now = now_ns(shared.base);
            let mut h = hist.borrow_mut();
            client.drain_frames(|f| {
                if let Some(t) = broadcast_timestamp(f.opcode, f.payload) {
                    let _ = h.record((now.saturating_sub(t) / 1000).max(1));
                    received.set(received.get() + 1);
                    shared.delivered.fetch_add(1, Relaxed);
                }
            });
        } else {
            client.drain_frames(|_| {});
        }
        if shared.publish_done.load(Relaxed) {
            let expected = shared.sent[role.topic_index].load(Relaxed);
            if !role.subscriber || received.get() >= expected || start.elapsed() > drain_deadline {
                return;
            }
        }
    }
}

/// Added to JSON timestamps so they always have 16 digits.
const TS_OFFSET: u64 = 1_000_000_000_000_000;

/// The publish timestamp in a broadcast frame: JSON `{"t":<16 digits>` or binary kind 2 whose
/// payload starts with the timestamp.
fn broadcast_timestamp(opcode: u8, p: &[u8]) -> Option<u64> {
    match opcode {
        1 => {
            if p.len() < 5 || &p[..5] != b"[null" {
                return None;
            }
            let at = p.windows(4).position(|w| w == b"\"t\":")? + 4;
            let t: u64 = std::str::from_utf8(p.get(at..at + 16)?)
                .ok()?
                .parse()
                .ok()?;
            t.checked_sub(TS_OFFSET)
        }
        2 if p.first() == Some(&2) && p.len() >= 3 => {
            let at = 3 + p[1] as usize + p[2] as usize;
            Some(u64::from_le_bytes(p.get(at..at + 8)?.try_into().ok()?))
        }
        _ => None,
    }
}

/// Setup failures end the run with a clear message (a refused upgrade usually means the server
/// wants a token: `--token` or `--mint`).
fn fail_setup(e: &std::io::Error) -> ! {
    eprintln!(
        "shardcast-bench: cannot set up a connection: {e} (token required? use --token or --mint)"
    );
    std::process::exit(2);
}

/// Finds the highest rate whose p99 stays under the bound with nothing lost.
fn search(args: &Args, server: SocketAddr) -> anyhow::Result<Vec<RunResult>> {
    let bound_us = (args.p99_bound_ms * 1000.0) as u64;
    let ok = |r: &RunResult| r.latency.p99_us <= bound_us && r.lost == 0 && r.latency.count > 0;
    let mut results = vec![];
    let mut rate = rate_of(args).max(1.0);
    let (mut good, mut bad): (Option<f64>, Option<f64>) = (None, None);
    println!(
        "search: highest rate with p99 <= {} ms, {} s steps",
        args.p99_bound_ms, args.step_secs
    );
    for _ in 0..12 {
        let r = run_pubsub(args, server, rate, args.step_secs)?;
        print_result(&r);
        let passed = ok(&r);
        results.push(r);
        if passed {
            good = Some(good.map_or(rate, |g: f64| g.max(rate)));
        } else {
            bad = Some(bad.map_or(rate, |b: f64| b.min(rate)));
        }
        if rate < 1.0 {
            break;
        }
        rate = match (good, bad) {
            (Some(g), None) => g * 2.0,
            (None, Some(b)) if b / 2.0 >= 1.0 => b / 2.0,
            (None, Some(_)) => break,
            (Some(g), Some(b)) if b / g > 1.1 => (g + b) / 2.0,
            _ => break,
        };
    }
    match good {
        Some(g) => {
            let best = results
                .iter()
                .filter(|r| ok(r) && r.target_rate == g)
                .map(|r| r.delivered_per_sec)
                .fold(0.0, f64::max);
            println!("HEADLINE {}: highest rate with p99 <= {} ms: {g:.0} publishes/s = {best:.0} deliveries/s", args.label, args.p99_bound_ms);
        }
        None => println!(
            "HEADLINE {}: no tested rate kept p99 <= {} ms",
            args.label, args.p99_bound_ms
        ),
    }
    Ok(results)
}

/// Closed-loop request/reply: each connection pushes `echo` (binary, `payload` bytes with a
/// timestamp) and waits for the reply before the next.
fn run_echo(args: &Args, server: SocketAddr) -> anyhow::Result<RunResult> {
    let conns = args.connections.unwrap_or(100);
    let payload = payload_of(args).max(8);
    let secs = Duration::from_secs_f64(args.duration);
    let path = ws_path(args);
    let base = Instant::now();
    let barrier = Arc::new(Barrier::new(args.threads + 1));
    let (a, b2) = (args.clone(), barrier.clone());
    let driver = std::thread::spawn(move || {
        on_threads(&a.clone(), move |t| {
            let (args, barrier, path) = (a.clone(), b2.clone(), path.clone());
            async move {
                let mut clients = vec![];
                for i in (0..conns).filter(|i| i % args.threads == t) {
                    let mut c =
                        match connect(server, source_ip(&args, i), &conn_path(&path, i)).await {
                            Ok(c) => c,
                            Err(e) => fail_setup(&e),
                        };
                    if let Err(e) = c.join(&format!("{}bench-echo", args.topic_prefix)).await {
                        fail_setup(&e);
                    }
                    clients.push(c);
                }
                barrier.wait();
                let start = Instant::now();
                let tasks: Vec<_> = clients
                    .into_iter()
                    .map(|mut c| {
                        let topic = format!("{}bench-echo", args.topic_prefix);
                        glommio::spawn_local(async move {
                            let mut h = histogram();
                            let mut frame = Vec::with_capacity(payload + 64);
                            let mut body = vec![0u8; payload];
                            while start.elapsed() < secs {
                                body[..8].copy_from_slice(&now_ns(base).to_le_bytes());
                                frame.clear();
                                put_binary_push(&mut frame, "1", "e", &topic, "echo", &body);
                                if c.send_raw(&frame).await.is_err() {
                                    break;
                                }
                                loop {
                                    let Ok(f) = c.next_frame().await else {
                                        return h;
                                    };
                                    // Binary reply: kind 1, five length bytes, then the fields.
                                    if f.opcode == 2 && f.payload.first() == Some(&1) {
                                        let p = f.payload;
                                        let at =
                                            5 + p[1..5].iter().map(|&b| b as usize).sum::<usize>();
                                        if let Some(t) = p.get(at..at + 8) {
                                            let t = u64::from_le_bytes(t.try_into().unwrap());
                                            let _ = h.record(
                                                (now_ns(base).saturating_sub(t) / 1000).max(1),
                                            );
                                        }
                                        break;
                                    }
                                }
                            }
                            h
                        })
                    })
                    .collect();
                let mut merged = histogram();
                for t in tasks {
                    merged.add(t.await).unwrap();
                }
                merged
            }
        })
    });
    barrier.wait();
    let cpu = cpu_start(args);
    let hists = driver.join().expect("driver");
    let mut merged = histogram();
    for h in &hists {
        merged.add(h).unwrap();
    }
    let mut r = RunResult {
        scenario: "echo".into(),
        connections: conns,
        seconds: args.duration,
        sent: merged.len(),
        delivered: merged.len(),
        expected: merged.len(),
        delivered_per_sec: merged.len() as f64 / args.duration,
        latency: Latency::of(&merged),
        latency_hist: Some(merged.clone()),
        ..Default::default()
    };
    r.notes
        .push(format!("{payload}-byte binary push/reply round trips"));
    cpu_finish(args, &cpu, &mut r);
    print_result(&r);
    Ok(r)
}

/// Opens connections as fast as `connections` concurrent loops can: TCP connect, upgrade, join,
/// close. Latency is connect-to-join-reply.
fn run_connect(args: &Args, server: SocketAddr) -> anyhow::Result<RunResult> {
    let conc = args.connections.unwrap_or(50);
    let secs = Duration::from_secs_f64(args.duration);
    let path = ws_path(args);
    let a = args.clone();
    let cpu = cpu_start(args);
    let hists = on_threads(&a.clone(), move |t| {
        let (args, path) = (a.clone(), path.clone());
        async move {
            let start = Instant::now();
            let tasks: Vec<_> = (0..conc)
                .filter(|i| i % args.threads == t)
                .map(|i| {
                    let (args, path) = (args.clone(), path.clone());
                    glommio::spawn_local(async move {
                        let mut h = histogram();
                        let mut n = 0usize;
                        while start.elapsed() < secs {
                            let t0 = Instant::now();
                            n += 1;
                            let Ok(mut c) = connect(
                                server,
                                source_ip(&args, i + n * conc),
                                &conn_path(&path, i),
                            )
                            .await
                            else {
                                continue;
                            };
                            if c.join(&format!("{}bench-connect", args.topic_prefix))
                                .await
                                .is_ok()
                            {
                                let _ = h.record(t0.elapsed().as_micros() as u64 + 1);
                            }
                        }
                        h
                    })
                })
                .collect();
            let mut merged = histogram();
            for t in tasks {
                merged.add(t.await).unwrap();
            }
            merged
        }
    });
    let mut merged = histogram();
    for h in &hists {
        merged.add(h).unwrap();
    }
    let mut r = RunResult {
        scenario: "connect".into(),
        connections: conc,
        seconds: args.duration,
        delivered: merged.len(),
        delivered_per_sec: merged.len() as f64 / args.duration,
        latency: Latency::of(&merged),
        latency_hist: Some(merged.clone()),
        notes: vec![
            "delivered = completed handshake+join; latency = TCP connect to join reply".into(),
        ],
        ..Default::default()
    };
    cpu_finish(args, &cpu, &mut r);
    print_result(&r);
    Ok(r)
}

/// Holds `connections` idle, joined connections for the duration; reports server RSS growth per
/// connection.
fn run_idle(args: &Args, server: SocketAddr) -> anyhow::Result<RunResult> {
    let n = args.connections.unwrap_or(10_000);
    let pid = args.server_pid.map(|p| p.to_string());
    let before = pid.as_deref().and_then(rss_bytes);
    let path = ws_path(args);
    let barrier = Arc::new(Barrier::new(args.threads + 1));
    let release = Arc::new(Barrier::new(args.threads + 1));
    let (a, b2, r2) = (args.clone(), barrier.clone(), release.clone());
    let driver = std::thread::spawn(move || {
        on_threads(&a.clone(), move |t| {
            let (args, barrier, release, path) = (a.clone(), b2.clone(), r2.clone(), path.clone());
            async move {
                let mut held = vec![];
                let mut failed = 0u64;
                for i in (0..n).filter(|i| i % args.threads == t) {
                    match connect(server, source_ip(&args, i), &conn_path(&path, i)).await {
                        Ok(mut c) => match c
                            .join(&format!("{}idle{}", args.topic_prefix, i % 100))
                            .await
                        {
                            Ok(()) => held.push(c),
                            Err(_) => failed += 1,
                        },
                        Err(_) => failed += 1,
                    }
                }
                barrier.wait();
                release.wait();
                drop(held);
                failed
            }
        })
    });
    barrier.wait();
    // Let the server settle its allocations, then read its RSS while every connection is held.
    std::thread::sleep(Duration::from_secs(1));
    let during = pid.as_deref().and_then(rss_bytes);
    std::thread::sleep(Duration::from_secs_f64(args.duration.max(1.0) - 1.0));
    release.wait();
    let failed: u64 = driver.join().expect("driver").into_iter().sum();
    let held = n as u64 - failed;
    let mut r = RunResult {
        scenario: "idle".into(),
        connections: n,
        seconds: args.duration,
        delivered: held,
        server_rss_bytes: during,
        ..Default::default()
    };
    match (before, during) {
        (Some(b), Some(d)) if held > 0 => {
            let per = (d.saturating_sub(b)) as f64 / held as f64;
            r.notes.push(format!("server RSS {b} -> {d} bytes with {held} connections held: {per:.0} bytes/connection"));
            println!("idle: {held} connections held ({failed} failed); server RSS {:.1} MiB -> {:.1} MiB = {per:.0} bytes per connection", b as f64 / 1048576.0, d as f64 / 1048576.0);
        }
        _ => println!(
            "idle: {held} connections held ({failed} failed); pass --server-pid to measure RSS"
        ),
    }
    Ok(r)
}
