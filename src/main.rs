//! The `shardcast` binary: configuration, logging and signals at the edge; everything else is the
//! library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use shardcast::app::default_app;
use shardcast::config::LogFormat;
use shardcast::features::auth::{resolve_secret, Authenticator, Claims, SecretSource};
use shardcast::storage::StorageThread;
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
    /// Print a token signed with the secret `serve` uses for the same config and data directory
    /// (for development and tests).
    Token {
        /// User id (the `sub` claim).
        #[arg(long)]
        sub: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Avatar URL.
        #[arg(long)]
        avatar: Option<String>,
        /// Topic patterns the user may join (`room:*`, `document:42`); default: any.
        #[arg(long, num_args = 1.., value_name = "PATTERN")]
        rooms: Vec<String>,
        /// Seconds until the token expires.
        #[arg(long, default_value_t = 86_400)]
        ttl: u64,
        /// TOML config file, as for `serve`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory, as for `serve` [default: ./data].
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print the effective configuration (defaults, file, `SHARDCAST_*` environment) and every
    /// invalid value with the reason; exit non-zero when there is one.
    Checkconfig {
        /// TOML config file, as for `serve`.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    disable_transparent_huge_pages();
    shardcast::runtime::memory::set_release(release_free_pages);
    let cli = Cli::parse();
    match cli.command {
        Command::Checkconfig { config } => checkconfig(config.as_deref()),
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
            serve(cfg).map(|()| std::process::ExitCode::SUCCESS)
        }
        Command::Token {
            sub,
            name,
            avatar,
            rooms,
            ttl,
            config,
            data_dir,
        } => {
            let mut cfg = Config::load(config.as_deref()).context("loading configuration")?;
            if let Some(dir) = data_dir {
                cfg.data_dir = dir;
            }
            cfg.validate().context("invalid configuration")?;
            let (key, source) =
                resolve_secret(&cfg.auth, &cfg.data_dir).context("resolving the auth secret")?;
            if let SecretSource::Generated(path) = &source {
                eprintln!("generated a new auth secret in {}", path.display());
            }
            let mut claims = Claims::new(sub, name, ttl);
            claims.avatar = avatar;
            claims.rooms = (!rooms.is_empty()).then_some(rooms);
            let auth = Authenticator::new(key, cfg.auth.allow_anonymous);
            // What `serve` would check: refuse to print a token it would refuse.
            if ttl > 0 {
                auth.verify(&auth.sign(&claims))
                    .context("the token would be refused")?;
            }
            println!("{}", auth.sign(&claims));
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

/// `shardcast checkconfig`: the effective configuration on stdout, problems on stderr.
fn checkconfig(file: Option<&std::path::Path>) -> anyhow::Result<std::process::ExitCode> {
    let cfg = match Config::load_unchecked(file, std::env::vars()) {
        Ok(cfg) => cfg,
        Err(e) => {
            // Unknown keys and wrongly typed values stop parsing: report the first one.
            eprintln!("error: {e}");
            return Ok(std::process::ExitCode::FAILURE);
        }
    };
    print!("{}", cfg.effective_toml());
    let mut problems = cfg.problems();
    for k in &cfg.auth.public_keys {
        let name = k.kid.clone().unwrap_or_else(|| format!("{:?}", k.alg));
        let pem = match (&k.pem, &k.pem_file) {
            (Some(pem), _) => Ok(pem.clone().into_bytes()),
            (None, Some(path)) => {
                std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
            }
            (None, None) => Err("needs pem or pem_file".to_string()),
        };
        let checked = pem.and_then(|pem| {
            Authenticator::new(vec![0u8; 32], false)
                .with_public_key(k.alg, k.kid.clone(), &pem)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        if let Err(e) = checked {
            problems.push(format!("auth.public_keys ({name}): {e}"));
        }
    }
    for p in &problems {
        eprintln!("invalid: {p}");
    }
    if problems.is_empty() {
        eprintln!("configuration is valid");
        Ok(std::process::ExitCode::SUCCESS)
    } else {
        eprintln!("{} invalid value(s)", problems.len());
        Ok(std::process::ExitCode::FAILURE)
    }
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log.format == LogFormat::Json {
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
    // Storage first: channels reach it from the first connection on; it stops after the
    // shards, once everything they queued is answered.
    let storage = StorageThread::start(&cfg.storage, &cfg.data_dir).context("opening storage")?;
    let app = default_app(&cfg, storage.handle()).context("setting up the channels")?;
    let server = Server::start(cfg, app).context("starting server")?;
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down: draining connections");
    }
    server.shutdown().context("shutting down")?;
    storage.stop().context("stopping storage")?;
    tracing::info!("stopped");
    Ok(())
}

/// Keeps the heap out of transparent huge pages. With them, mimalloc's arenas become resident
/// 2 MiB at a time, which for a server of many mostly idle sockets means memory it does not use:
/// 15,000 idle joined connections cost 2,240–2,810 bytes of RSS each with them and ~1,790
/// without (`perf/README.md`, 2026-12-02). The kernel ignores this where THP is off anyway.
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        // Not fatal: only memory use is at stake. Logging is not set up yet.
        eprintln!(
            "note: transparent huge pages stay on: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Gives the calling shard thread's free allocator pages back to the system.
fn release_free_pages() {
    // SAFETY: mi_collect takes a flag and no memory; it works on the calling thread's heap.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn transparent_huge_pages_are_off_for_the_process() {
        super::disable_transparent_huge_pages();
        // SAFETY: PR_GET_THP_DISABLE takes no memory argument.
        let state = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(state, 1);
    }

    #[test]
    fn free_pages_go_back_and_the_heap_still_works() {
        let freed: Vec<Vec<u8>> = (0..1000).map(|i| vec![i as u8; 1000]).collect();
        drop(freed);
        super::release_free_pages();
        let again: Vec<Vec<u8>> = (0..1000).map(|i| vec![i as u8; 1000]).collect();
        assert!(again.iter().enumerate().all(|(i, v)| v[999] == i as u8));
    }
}
