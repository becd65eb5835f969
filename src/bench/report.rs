//! Latency histograms per operation type, and the printed/JSON report.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::BenchArgs;

/// Latencies are recorded in microseconds, up to an hour, 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

#[derive(Default)]
pub struct Recorder {
    ops: BTreeMap<&'static str, OpStats>,
    /// Connection-level failures, by message.
    connect_errors: BTreeMap<String, u64>,
    /// Open-loop sends skipped because too much was in flight.
    pub dropped: u64,
}

struct OpStats {
    latency: Histogram<u64>,
    errors: BTreeMap<i32, u64>,
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats {
            latency: new_histogram(),
            errors: BTreeMap::new(),
        }
    }
}

impl Recorder {
    pub fn record(&mut self, op: &'static str, latency: Duration, err: Option<i32>) {
        let stats = self.ops.entry(op).or_default();
        let us = (latency.as_micros() as u64).clamp(1, 3_600_000_000);
        // Saturating record: a value out of range cannot fail after the clamp.
        let _ = stats.latency.record(us);
        if let Some(code) = err {
            *stats.errors.entry(code).or_default() += 1;
        }
    }

    pub fn connect_error(&mut self, msg: &str) {
        *self.connect_errors.entry(msg.to_string()).or_default() += 1;
    }

    pub fn merge(&mut self, other: Recorder) {
        for (op, s) in other.ops {
            let mine = self.ops.entry(op).or_default();
            let _ = mine.latency.add(&s.latency);
            for (code, n) in s.errors {
                *mine.errors.entry(code).or_default() += n;
            }
        }
        for (m, n) in other.connect_errors {
            *self.connect_errors.entry(m).or_default() += n;
        }
        self.dropped += other.dropped;
    }

    pub fn report(&self, args: &BenchArgs, measured: Duration) -> Report {
        let secs = measured.as_secs_f64().max(1e-9);
        let ops = self
            .ops
            .iter()
            .map(|(name, s)| s.report(name, secs))
            .collect::<Vec<_>>();
        let total: u64 = ops.iter().map(|o| o.count).sum();
        let errors: u64 = ops.iter().map(|o| o.errors).sum();
        let primary_name = super::primary_op(args.workload);
        let primary = match primary_name {
            // Every op of the run together (mixed, and single-op workloads alike).
            "all" => {
                let mut all = OpStats::default();
                for s in self.ops.values() {
                    let _ = all.latency.add(&s.latency);
                    for (code, n) in &s.errors {
                        *all.errors.entry(*code).or_default() += n;
                    }
                }
                all.report("all", secs)
            }
            name => self
                .ops
                .get(name)
                .map(|s| s.report(name, secs))
                .unwrap_or_else(|| OpStats::default().report(name, secs)),
        };
        let connect_errors_total = self.connect_errors.values().sum();
        Report {
            workload: super::workload_name(args.workload).to_string(),
            servers: args.servers.join(","),
            sessions: args.sessions,
            depth: args.depth,
            rate: args.rate,
            data_size: args.data_size,
            measured_secs: secs,
            total_ops: total,
            total_errors: errors,
            ops_per_sec: total as f64 / secs,
            primary,
            ops,
            connect_errors: self.connect_errors.clone(),
            connect_errors_total,
            dropped: self.dropped,
            params: super::workload_params(args),
        }
    }
}

impl OpStats {
    fn report(&self, name: &str, secs: f64) -> OpReport {
        let h = &self.latency;
        let count = h.len();
        let errors: u64 = self.errors.values().sum();
        let q = |p: f64| {
            if count == 0 {
                0
            } else {
                h.value_at_quantile(p)
            }
        };
        OpReport {
            op: name.to_string(),
            count,
            errors,
            errors_by_code: self
                .errors
                .iter()
                .map(|(c, n)| (c.to_string(), *n))
                .collect(),
            ops_per_sec: count as f64 / secs,
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
            cdf: if count == 0 {
                Vec::new()
            } else {
                cdf_percentiles()
                    .into_iter()
                    .map(|p| (p, h.value_at_quantile(p / 100.0)))
                    .collect()
            },
        }
    }
}

/// The percentiles the CDF is sampled at: every 1% to 99, then nine steps per further nine
/// (99.1..99.9, 99.91..99.99, 99.991..99.999), then 100 (the maximum): 128 points.
fn cdf_percentiles() -> Vec<f64> {
    let mut ps: Vec<f64> = (0..=99).map(f64::from).collect();
    for (base, step) in [(99.0, 0.1), (99.9, 0.01), (99.99, 0.001)] {
        for i in 1..10 {
            ps.push(((base + step * f64::from(i)) * 1000.0_f64).round() / 1000.0);
        }
    }
    ps.push(100.0);
    ps
}

#[derive(Serialize, Clone, Debug)]
pub struct OpReport {
    pub op: String,
    pub count: u64,
    pub errors: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    pub ops_per_sec: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
    /// Latency CDF for plots: (percentile 0..=100, µs at that percentile), fine steps in the
    /// tail.
    pub cdf: Vec<(f64, u64)>,
}

#[derive(Serialize, Clone, Debug)]
pub struct Report {
    pub workload: String,
    pub servers: String,
    pub sessions: usize,
    pub depth: usize,
    pub rate: Option<f64>,
    pub data_size: usize,
    pub measured_secs: f64,
    pub total_ops: u64,
    pub total_errors: u64,
    /// Every op of the run together: throughput counts an op of any type.
    pub ops_per_sec: f64,
    /// The op that defines the workload's figures (see `bench::primary_op`): its own
    /// throughput and latency, or "all" for every op together.
    pub primary: OpReport,
    pub ops: Vec<OpReport>,
    pub connect_errors: BTreeMap<String, u64>,
    pub connect_errors_total: u64,
    pub dropped: u64,
    /// Workload parameters beyond the common ones (watchers, hold time, ...).
    pub params: BTreeMap<String, String>,
}

impl Report {
    /// True when the run's figures mean nothing: the server answered errors for most
    /// operations, nothing of the workload's primary op was measured, or sessions failed
    /// (connections refused or lost, watch rounds timed out: such a run was cut short).
    pub fn mostly_failed(&self) -> bool {
        self.total_ops == 0
            || self.primary.count == 0
            || self.total_errors * 2 > self.total_ops
            || self.connect_errors_total > 0
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    pub fn to_text(&self) -> String {
        let mut s = format!(
            "workload {}  servers {}  sessions {}  depth {}{}  data {} B{}\n",
            self.workload,
            self.servers,
            self.sessions,
            self.depth,
            self.rate
                .map(|r| format!("  open loop {r:.0} ops/s"))
                .unwrap_or_default(),
            self.data_size,
            self.params
                .iter()
                .map(|(k, v)| format!("  {k} {v}"))
                .collect::<String>()
        );
        s.push_str(&format!(
            "{:<14} {:>10} {:>8} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "op", "count", "errors", "ops/s", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs"
        ));
        for o in &self.ops {
            s.push_str(&format!(
                "{:<14} {:>10} {:>8} {:>12.0} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                o.op,
                o.count,
                o.errors,
                o.ops_per_sec,
                o.p50_us,
                o.p90_us,
                o.p99_us,
                o.p999_us,
                o.max_us
            ));
            for (code, n) in &o.errors_by_code {
                s.push_str(&format!("    error {code}: {n}\n"));
            }
        }
        s.push_str(&format!(
            "total {:.0} ops/s over {:.1} s ({} ops, {} errors)\n",
            self.ops_per_sec, self.measured_secs, self.total_ops, self.total_errors
        ));
        let p = &self.primary;
        s.push_str(&format!(
            "{}: {:.0}/s  p50 {} µs  p99 {} µs  p99.9 {} µs\n",
            p.op, p.ops_per_sec, p.p50_us, p.p99_us, p.p999_us
        ));
        for (m, n) in &self.connect_errors {
            s.push_str(&format!(
                "FAILED (connection/protocol/timeout): {n} x {m}\n"
            ));
        }
        if self.dropped > 0 {
            s.push_str(&format!(
                "open loop: {} sends skipped (too many in flight)\n",
                self.dropped
            ));
        }
        if self.connect_errors_total > 0 {
            s.push_str("WARNING: sessions FAILED (above); the figures above are not a valid run\n");
        } else if self.mostly_failed() {
            s.push_str("WARNING: most operations FAILED; the throughput above is meaningless\n");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_steps_increase_and_end_at_the_maximum() {
        let ps = cdf_percentiles();
        assert_eq!(ps.len(), 128);
        assert!(ps.windows(2).all(|w| w[0] < w[1]), "{ps:?}");
        assert_eq!(ps.last(), Some(&100.0));

        let mut s = OpStats::default();
        for us in 1..=1000u64 {
            let _ = s.latency.record(us);
        }
        let r = s.report("x", 1.0);
        assert_eq!(r.cdf.len(), 128);
        assert!(r.cdf.windows(2).all(|w| w[0].1 <= w[1].1));
        assert_eq!(r.cdf.last().map(|c| c.1), Some(r.max_us));
        assert!((r.cdf[50].1 as i64 - 500).abs() <= 1);
    }
}
