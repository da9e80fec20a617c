//! The `shardcast` binary: configuration, logging and signals at the edge; everything else is the
//! library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use shardcast::channel::App;
use shardcast::{Config, Server};
use std::net::SocketAddr;
use std::path::PathBuf;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "shardcast",
    version,
    about = "Thread-per-core WebSocket real-time server (Phoenix Channels compatible)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server until SIGINT/SIGTERM, then drain gracefully.
    Serve {
        /// TOML config file (environment `SHARDCAST_*` overrides it; flags override both).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address [default: 127.0.0.1:4000].
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Number of shards [default: one per core].
        #[arg(long)]
        shards: Option<usize>,
        /// Data directory [default: ./data].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Serve a raw WebSocket echo endpoint at /echo (for conformance suites).
        #[arg(long)]
        echo_endpoint: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            shards,
            data_dir,
            echo_endpoint,
        } => {
            let mut cfg = Config::load(config.as_deref()).context("loading configuration")?;
            if let Some(listen) = listen {
                cfg.listen = listen;
            }
            if let Some(shards) = shards {
                cfg.shards = shards;
            }
            if let Some(dir) = data_dir {
                cfg.data_dir = dir;
            }
            cfg.echo_endpoint |= echo_endpoint;
            cfg.validate().context("invalid configuration")?;
            init_logging(&cfg);
            serve(cfg)
        }
    }
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn serve(cfg: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    // Signals are taken on this thread; register before the shards start so none is missed.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("installing signal handlers")?;
    let server = Server::start(cfg, App::default()).context("starting server")?;
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down: draining connections");
    }
    server.shutdown().context("shutting down")?;
    tracing::info!("stopped");
    Ok(())
}
