//! `connect`: connection setup rate and latency (TCP, upgrade, join).

use crate::client::connect;
use crate::setup::*;
use crate::stats::{histogram, print_result, Latency, RunResult};
use crate::Args;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Opens connections as fast as `connections` concurrent loops can: TCP connect, upgrade, join,
/// close. Latency is connect-to-join-reply.
pub(crate) fn run_connect(args: &Args, server: SocketAddr) -> anyhow::Result<RunResult> {
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
