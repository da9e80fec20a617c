//! What every scenario shares: URLs and paths, token minting, rates and payload sizes, source
//! addresses, CPU pinning and accounting.

use crate::stats::{cpu_seconds, rss_bytes, RunResult};
use crate::{Args, Scenario};
use glommio::{LocalExecutorBuilder, Placement};
use shardcast::ops::metrics::Metrics;
use shardcast::runtime::transport::ring::SocketRing;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The minting key, set once in `main` when --mint is given.
pub(crate) static MINTER: std::sync::OnceLock<shardcast::features::auth::Authenticator> =
    std::sync::OnceLock::new();

pub(crate) fn ws_path(args: &Args) -> String {
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
pub(crate) fn conn_path(base: &str, i: usize) -> std::borrow::Cow<'_, str> {
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

pub(crate) fn init_minter(args: &Args) -> anyhow::Result<()> {
    if !args.mint {
        return Ok(());
    }
    let mut config = shardcast::Config::load(args.config.as_deref())?;
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    let (auth, _) =
        shardcast::features::auth::Authenticator::from_config(&config.auth, &config.data_dir)?;
    let _ = MINTER.set(auth);
    Ok(())
}

pub(crate) fn rate_of(args: &Args) -> f64 {
    args.rate.unwrap_or(match args.scenario {
        Scenario::Fanout => 1000.0,
        Scenario::Game => 60.0,
        Scenario::Audio => 50.0,
        _ => 2.0,
    })
}

pub(crate) fn payload_of(args: &Args) -> usize {
    args.payload.unwrap_or(match args.scenario {
        Scenario::Echo => 32,
        Scenario::Audio => 80,
        Scenario::Game => 8 + 12 * args.members,
        _ => 64,
    })
}

pub(crate) fn source_ip(args: &Args, i: usize) -> Option<IpAddr> {
    (args.sources > 1).then(|| {
        IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            1 + (i % args.sources as usize) as u8,
        ))
    })
}

pub(crate) fn cpu_list(args: &Args) -> Vec<usize> {
    let Some(spec) = &args.cpus else {
        return vec![];
    };
    let cpus = parse_cpus(spec);
    // A CPU the machine lacks would leave its load thread unable to start: say so at once.
    // (Not `available_parallelism`: that counts only the CPUs the harness was `taskset` to.)
    if let Ok(online) = std::fs::read_to_string("/sys/devices/system/cpu/online") {
        let online = parse_cpus(online.trim());
        if let Some(bad) = cpus.iter().find(|c| !online.contains(c)) {
            eprintln!("--cpus {spec}: CPU {bad} is not online (online: {online:?})");
            std::process::exit(2);
        }
    }
    cpus
}

/// A CPU list as `taskset` and the kernel write it: `1`, `0-3`, `0,2-3`.
fn parse_cpus(spec: &str) -> Vec<usize> {
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
pub(crate) fn on_threads<T: Send + 'static, F, Fut>(args: &Args, work: F) -> Vec<T>
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

pub(crate) struct Cpu {
    harness: Option<f64>,
    server: Option<f64>,
    started: Instant,
}

pub(crate) fn cpu_start(args: &Args) -> Cpu {
    Cpu {
        harness: cpu_seconds("self"),
        server: args.server_pid.and_then(|p| cpu_seconds(&p.to_string())),
        started: Instant::now(),
    }
}

pub(crate) fn cpu_finish(args: &Args, c: &Cpu, r: &mut RunResult) {
    let wall = c.started.elapsed().as_secs_f64();
    if let (Some(a), Some(b)) = (c.harness, cpu_seconds("self")) {
        r.harness_cpu_percent = (b - a) / wall * 100.0;
        r.harness_bound = r.harness_cpu_percent / args.threads.max(1) as f64 > 90.0;
    }
    if let (Some(a), Some(b)) = (
        c.server,
        args.server_pid.and_then(|p| cpu_seconds(&p.to_string())),
    ) {
        r.server_cpu_percent = Some((b - a) / wall * 100.0);
    }
    r.server_rss_bytes = args.server_pid.and_then(|p| rss_bytes(&p.to_string()));
}

/// A load thread's socket ring: the harness receives as it asks the server to (multishot
/// receives into shared buffers, completions reaped in batches), so that it costs less per
/// message than the server it measures. Its tasks run on the calling executor.
pub(crate) fn socket_ring() -> std::io::Result<Rc<SocketRing>> {
    let ring = Rc::new(SocketRing::new(
        Arc::new(Metrics::new(1)),
        0,
        Duration::from_secs(30),
        Duration::from_millis(10),
    )?);
    glommio::spawn_local(ring.clone().run_flusher()).detach();
    glommio::spawn_local(ring.clone().run_completions()).detach();
    glommio::spawn_local(ring.clone().run_sweeper()).detach();
    Ok(ring)
}

/// Setup failures end the run with a clear message (a refused upgrade usually means the server
/// wants a token: `--token` or `--mint`).
pub(crate) fn fail_setup(e: &std::io::Error) -> ! {
    eprintln!(
        "shardcast-bench: cannot set up a connection: {e} (token required? use --token or --mint)"
    );
    std::process::exit(2);
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_lists_read_as_taskset_writes_them() {
        assert_eq!(super::parse_cpus("1"), vec![1]);
        assert_eq!(super::parse_cpus("0-3"), vec![0, 1, 2, 3]);
        assert_eq!(super::parse_cpus("0,2-3"), vec![0, 2, 3]);
    }
}
