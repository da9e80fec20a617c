//! `fanout`, `rooms`, `game`, `audio`: publishers on a schedule, subscribers timing every
//! delivery; the p99-bounded rate `search`.

use crate::client::{connect, put_binary_push, put_frame, SharedClient};
use crate::setup::*;
use crate::stats::{histogram, now_ns, print_result, Latency, RunResult};
use crate::{Args, Scenario};
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier};
use std::task::Poll;
use std::time::{Duration, Instant};

#[derive(Clone)]
pub(crate) struct Role {
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

pub(crate) struct Shared {
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

pub(crate) fn roles(args: &Args, rate: f64) -> (Vec<Role>, usize) {
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
pub(crate) fn run_pubsub(
    args: &Args,
    server: SocketAddr,
    rate: f64,
    secs: f64,
) -> anyhow::Result<RunResult> {
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
                let ring = socket_ring().expect("the load thread's socket ring (io_uring)");
                let hist = Rc::new(std::cell::RefCell::new(histogram()));
                let mut conns = Vec::new();
                for (i, role) in roles.iter().enumerate().filter(|(i, _)| i % threads == t) {
                    let topic = format!("{}bench{}", args.topic_prefix, role.topic_index);
                    match connect(server, source_ip(&args, i), &conn_path(&path, i)).await {
                        Ok(mut c) => match c.join(&topic).await {
                            Ok(()) => conns.push((role.clone(), topic, c.into_shared(&ring))),
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
                let mut readers = Vec::new();
                for (role, topic, client) in conns {
                    let shared = shared.clone();
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
                    readers.push((role, client));
                }
                tasks.push(glommio::spawn_local(read_all_deliveries(
                    readers,
                    shared.clone(),
                    hist.clone(),
                    start,
                    publish_for,
                )));
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
pub(crate) fn in_flight(shared: &Shared) -> u64 {
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
pub(crate) async fn publish(
    stream: Rc<crate::client::SharedStream>,
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

/// Reads every connection of this load thread in one task, recording publish-to-delivery
/// latency of broadcasts, until the run is over and everything expected has arrived (or a drain
/// timeout passes). One task for all (each wakeup scans the connections whose receives the ring
/// has completed) rather than a task per connection: the harness must not spend more per
/// delivered frame than the server does.
pub(crate) async fn read_all_deliveries(
    mut clients: Vec<(Role, SharedClient)>,
    shared: Arc<Shared>,
    hist: Rc<std::cell::RefCell<Histogram<u64>>>,
    start: Instant,
    secs: Duration,
) {
    let drain_deadline = secs + Duration::from_secs(3);
    let mut received = vec![0u64; clients.len()];
    let mut done = vec![false; clients.len()];
    let mut open = clients.len();
    std::future::poll_fn(|cx| {
        let mut h = hist.borrow_mut();
        for (i, (role, client)) in clients.iter_mut().enumerate() {
            while !done[i] {
                match client.poll_fill(cx) {
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(_)) => {
                        shared.errors.fetch_add(1, Relaxed);
                        done[i] = true;
                        open -= 1;
                        break;
                    }
                    Poll::Pending => break,
                }
                if role.subscriber {
                    let now = now_ns(shared.base);
                    let got = &mut received[i];
                    client.drain_frames(|f| {
                        if let Some(t) = broadcast_timestamp(f.opcode, f.payload) {
                            let _ = h.record((now.saturating_sub(t) / 1000).max(1));
                            *got += 1;
                            shared.delivered.fetch_add(1, Relaxed);
                        }
                    });
                } else {
                    client.drain_frames(|_| {});
                }
                if shared.publish_done.load(Relaxed) {
                    let expected = shared.sent[role.topic_index].load(Relaxed);
                    if !role.subscriber
                        || received[i] >= expected
                        || start.elapsed() > drain_deadline
                    {
                        done[i] = true;
                        open -= 1;
                    }
                }
            }
        }
        if open == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Added to JSON timestamps so they always have 16 digits.
pub(crate) const TS_OFFSET: u64 = 1_000_000_000_000_000;

/// The publish timestamp in a broadcast frame: JSON `{"t":<16 digits>` or binary kind 2 whose
/// payload starts with the timestamp.
pub(crate) fn broadcast_timestamp(opcode: u8, p: &[u8]) -> Option<u64> {
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

/// Finds the highest rate whose p99 stays under the bound with nothing lost.
pub(crate) fn search(args: &Args, server: SocketAddr) -> anyhow::Result<Vec<RunResult>> {
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
