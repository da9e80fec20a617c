//! End-to-end benchmarks: `cargo bench --bench fanout`. Starts shardcast in-process on loopback
//! (one shard), drives it with the `shardcast-bench` harness for short runs, and prints the HDR
//! latency histograms. For the recorded figures, see perf/README.md (longer runs, pinned CPUs).

use shardcast::core::App;
use shardcast::{Config, Server};
use std::net::SocketAddr;
use std::process::Command;

fn free_port() -> u16 {
    (24_000..25_000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port")
}

fn run(label: &str, args: &[&str], url: &str) {
    println!("\n== {label}: shardcast-bench {}", args.join(" "));
    let status = Command::new(env!("CARGO_BIN_EXE_shardcast-bench"))
        .args(args)
        .args(["--url", url, "--histogram"])
        .status()
        .expect("harness runs");
    assert!(status.success(), "harness failed");
}

fn main() {
    let config = Config {
        shards: 1,
        pin_shards: false,
        listen: SocketAddr::from(([127, 0, 0, 1], free_port())),
        ..Config::default()
    };
    let server = Server::start(config.clone(), App::default()).expect("server starts");
    let url = format!("ws://{}/socket", config.listen);
    let pid = std::process::id().to_string();
    run(
        "fanout, 500 subscribers, 64 B, 500 publishes/s",
        &[
            "fanout",
            "--connections",
            "500",
            "--rate",
            "500",
            "--duration",
            "3",
            "--server-pid",
            &pid,
        ],
        &url,
    );
    run(
        "fanout, 500 subscribers, 64 B, saturation",
        &[
            "fanout",
            "--connections",
            "500",
            "--rate",
            "0",
            "--duration",
            "3",
            "--server-pid",
            &pid,
        ],
        &url,
    );
    run(
        "echo, 50 connections, 32 B binary",
        &[
            "echo",
            "--connections",
            "50",
            "--duration",
            "3",
            "--server-pid",
            &pid,
        ],
        &url,
    );
    run(
        "rooms, 20 rooms x 10 members, 5 msg/s each",
        &[
            "rooms",
            "--rooms",
            "20",
            "--members",
            "10",
            "--rate",
            "5",
            "--duration",
            "3",
            "--server-pid",
            &pid,
        ],
        &url,
    );
    server.shutdown().expect("clean shutdown");
}
