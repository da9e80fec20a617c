//! `shardcast-bench`: load generator and latency meter for shardcast (and any server speaking the
//! same Phoenix V2 subset, such as the peer in `perf/peers/`).
//!
//! Every scenario is bounded in time and connections and stops by itself. Latency is measured
//! from the publish (a timestamp in the payload) to each delivery, into HDR histograms.

//!
//! One file per scenario under `scenarios/` (fan-out, rooms, game and audio share the
//! publish/deliver engine in `scenarios/pubsub.rs`); `setup.rs` holds what they share
//! (URLs, token minting, CPU pinning, accounting); `client.rs` the WebSocket client.

mod client;
mod scenarios;
mod setup;
mod stats;

use clap::{Parser, ValueEnum};
use scenarios::{connect::run_connect, echo::run_echo, idle::run_idle, pubsub};
use setup::{init_minter, rate_of};
use stats::print_result;
use std::net::{SocketAddr, ToSocketAddrs};

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
fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = parse_url(&args.url)?;
    init_minter(&args)?;
    let results = match args.scenario {
        Scenario::Echo => vec![run_echo(&args, server)?],
        Scenario::Connect => vec![run_connect(&args, server)?],
        Scenario::Idle => vec![run_idle(&args, server)?],
        Scenario::Fanout | Scenario::Rooms | Scenario::Game | Scenario::Audio if args.search => {
            pubsub::search(&args, server)?
        }
        Scenario::Fanout | Scenario::Rooms | Scenario::Game | Scenario::Audio => {
            let r = pubsub::run_pubsub(&args, server, rate_of(&args), args.duration)?;
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
