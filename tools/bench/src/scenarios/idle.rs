//! `idle`: many joined connections doing nothing; server memory per connection.

use crate::client::connect;
use crate::setup::*;
use crate::stats::{rss_bytes, RunResult};
use crate::Args;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::Duration;

/// Holds `connections` idle, joined connections for the duration; reports server RSS growth per
/// connection.
pub(crate) fn run_idle(args: &Args, server: SocketAddr) -> anyhow::Result<RunResult> {
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
    // Again at the end of the hold: by then the server has parked its idle sessions (compact
    // state, no task), which is what an idle connection costs for as long as it stays idle.
    let settled = pid.as_deref().and_then(rss_bytes);
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
    match (before, during, settled) {
        (Some(b), Some(d), Some(s)) if held > 0 => {
            let per = (d.saturating_sub(b)) as f64 / held as f64;
            let per_settled = (s.saturating_sub(b)) as f64 / held as f64;
            r.server_rss_bytes = Some(s);
            r.notes.push(format!("server RSS {b} -> {d} bytes with {held} connections held: {per:.0} bytes/connection; {s} bytes ({per_settled:.0} bytes/connection) at the end of the hold"));
            println!("idle: {held} connections held ({failed} failed); server RSS {:.1} MiB -> {:.1} MiB = {per:.0} bytes per connection 1 s after the last join; {:.1} MiB = {per_settled:.0} bytes per connection after {:.0} s idle", b as f64 / 1048576.0, d as f64 / 1048576.0, s as f64 / 1048576.0, args.duration);
        }
        _ => println!(
            "idle: {held} connections held ({failed} failed); pass --server-pid to measure RSS"
        ),
    }
    Ok(r)
}
