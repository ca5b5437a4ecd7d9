//! Histograms, CPU and RSS readings, and the table and JSON output.

use super::*;

/// Latency histogram in microseconds, 1 us .. 60 s, 3 significant figures.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// Per-operation results of one worker (or merged).
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) ops: BTreeMap<&'static str, Histogram<u64>>,
    pub(crate) errors: BTreeMap<String, u64>,
}

impl Stats {
    pub(crate) fn record(&mut self, op: &'static str, d: Duration) {
        CALLS.fetch_add(1, Ordering::Relaxed);
        let us = (d.as_micros() as u64).clamp(1, 60_000_000);
        self.ops.entry(op).or_insert_with(histogram).record(us).ok();
    }
    pub(crate) fn error(&mut self, op: &str, code: Code) {
        CALLS.fetch_add(1, Ordering::Relaxed);
        *self.errors.entry(format!("{op}:{code:?}")).or_default() += 1;
    }
    pub(crate) fn merge(&mut self, other: Stats) {
        for (op, h) in other.ops {
            self.ops.entry(op).or_insert_with(histogram).add(h).ok();
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// VmRSS of `pid` in KiB.
pub(crate) fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime of a process in clock ticks (1/100 s on Linux), from /proc.
pub(crate) fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces) end with ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub(crate) fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub(crate) fn op_json(h: &Histogram<u64>, secs: f64) -> serde_json::Value {
    serde_json::json!({
        "count": h.len(),
        "rate": h.len() as f64 / secs,
        "mean_ms": h.mean() / 1000.0,
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

pub(crate) fn print_table(title: &str, stats: &Stats, secs: f64) {
    println!("{title}");
    println!(
        "  {:<14} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "op", "count", "rate/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    for (op, h) in &stats.ops {
        println!(
            "  {:<14} {:>9} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            op,
            h.len(),
            h.len() as f64 / secs,
            ms(h.value_at_quantile(0.50)),
            ms(h.value_at_quantile(0.90)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max()),
        );
    }
    for (k, v) in &stats.errors {
        println!("  error {k}: {v}");
    }
}

pub(crate) fn stats_json(stats: &Stats, secs: f64) -> serde_json::Value {
    let ops: serde_json::Map<String, serde_json::Value> = stats
        .ops
        .iter()
        .map(|(op, h)| (op.to_string(), op_json(h, secs)))
        .collect();
    serde_json::json!({ "ops": ops, "errors": stats.errors })
}
