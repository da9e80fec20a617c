//! Measurement plumbing: HDR histograms (µs), counters, CPU time from /proc, and reports.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Instant;

/// A latency histogram in microseconds, 1 µs to 100 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid bounds")
}

/// Nanoseconds since the harness started; every thread of the harness shares the same base, so
/// a timestamp written by a publisher can be compared by any subscriber.
pub fn now_ns(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// CPU seconds (user + system) used by process `pid` (`self` for the harness).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is parenthesised and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// Resident memory of `pid` in bytes.
pub fn rss_bytes(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// One measured run (or one step of a rate search).
#[derive(Debug, Clone, Serialize, Default)]
pub struct RunResult {
    pub scenario: String,
    pub connections: usize,
    pub target_rate: f64,
    pub seconds: f64,
    pub sent: u64,
    pub delivered: u64,
    pub expected: u64,
    pub lost: u64,
    pub delivered_per_sec: f64,
    pub latency: Latency,
    pub harness_cpu_percent: f64,
    /// The harness's cores were above 90 % busy: the figures may be the harness's, not the
    /// server's.
    pub harness_bound: bool,
    pub server_cpu_percent: Option<f64>,
    pub server_rss_bytes: Option<u64>,
    pub notes: Vec<String>,
    #[serde(skip)]
    pub latency_hist: Option<Histogram<u64>>,
}

/// Prints the latency distribution as a percentile ladder (HDR style).
pub fn print_ladder(title: &str, h: &Histogram<u64>) {
    println!("{title}: latency histogram ({} samples, µs)", h.len());
    println!("{:>12} {:>12} {:>12}", "percentile", "value_us", "count");
    for q in [
        0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0,
    ] {
        let v = h.value_at_quantile(q);
        println!(
            "{:>11.4}% {:>12} {:>12}",
            q * 100.0,
            v,
            h.count_between(0, v)
        );
    }
}

pub fn print_result(r: &RunResult) {
    println!(
        "{:<8} conns={:<6} target={:>10.0}/s sent={:>9} delivered={:>10} lost={:>7} rate={:>11.0}/s p50={:>7}µs p90={:>7}µs p99={:>7}µs p99.9={:>7}µs max={:>7}µs cpu(harness)={:>5.1}% cpu(server)={}",
        r.scenario,
        r.connections,
        r.target_rate,
        r.sent,
        r.delivered,
        r.lost,
        r.delivered_per_sec,
        r.latency.p50_us,
        r.latency.p90_us,
        r.latency.p99_us,
        r.latency.p999_us,
        r.latency.max_us,
        r.harness_cpu_percent,
        r.server_cpu_percent.map_or("-".into(), |c| format!("{c:.1}%")),
    );
    if r.harness_bound {
        println!("         note: HARNESS-BOUND (its cores were above 90 % busy): this result may measure the harness, not the server");
    }
    for n in &r.notes {
        println!("         note: {n}");
    }
}
