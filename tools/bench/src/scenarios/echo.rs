//! `echo`: connections pushing and awaiting each reply (round trips per second).

use crate::client::{connect, put_binary_push};
use crate::setup::*;
use crate::stats::{histogram, now_ns, print_result, Latency, RunResult};
use crate::Args;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Closed-loop request/reply: each connection pushes `echo` (binary, `payload` bytes with a
/// timestamp) and waits for the reply before the next.
pub(crate) fn run_echo(args: &Args, server: SocketAddr) -> anyhow::Result<RunResult> {
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
