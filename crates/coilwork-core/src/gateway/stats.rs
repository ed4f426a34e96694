//! Per-upstream statistics (Prometheus text) and link state changes.

use core::fmt::Write as _;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the round-trip latency histogram.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Whether an upstream can be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not yet tried, or being (re)connected.
    Connecting,
    /// Connected (or the serial port open).
    Up,
    /// Unreachable: requests get 0x0A until a reconnect succeeds.
    Down,
}

impl LinkState {
    /// Lower-case name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// Reports a state only when it changes (one log line per change, not per retry).
#[derive(Debug)]
pub struct StateTracker {
    state: LinkState,
}

impl Default for StateTracker {
    fn default() -> Self {
        Self {
            state: LinkState::Connecting,
        }
    }
}

impl StateTracker {
    /// The current state.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// Moves to `next`; `Some(previous)` if that is a change.
    pub fn set(&mut self, next: LinkState) -> Option<LinkState> {
        let prev = core::mem::replace(&mut self.state, next);
        (prev != next).then_some(prev)
    }
}

/// Counters of one upstream, shared between its driver and a metrics reader.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    /// Requests handed to the upstream's queue.
    pub requests: AtomicU64,
    /// Answers passed back (normal or exception).
    pub answers: AtomicU64,
    /// Exception answers from the upstream itself.
    pub exceptions: AtomicU64,
    /// Requests with no answer in time (0x0B).
    pub timeouts: AtomicU64,
    /// Requests failed because the upstream was unreachable (0x0A).
    pub unavailable: AtomicU64,
    /// Requests refused because the queue was full (06).
    pub busy: AtomicU64,
    /// Requests waiting in the queue now.
    pub queue_depth: AtomicU64,
    /// 1 while the upstream is up.
    pub up: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

impl UpstreamStats {
    /// Records one round trip (request sent upstream to answer received).
    pub fn observe_latency(&self, rtt: Duration) {
        // One bucket per sample (the first bound it fits), summed into the
        // cumulative Prometheus buckets when written: one atomic, not ten.
        let secs = rtt.as_secs_f64();
        if let Some(bucket) = BUCKETS
            .iter()
            .zip(&self.latency_buckets)
            .find_map(|(bound, bucket)| (secs <= *bound).then_some(bucket))
        {
            bucket.fetch_add(1, Relaxed);
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us
            .fetch_add(u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// This upstream's counters and gauges, by metric name.
    fn counters(&self) -> [(&'static str, &AtomicU64); 8] {
        [
            ("requests_total", &self.requests),
            ("answers_total", &self.answers),
            ("exceptions_total", &self.exceptions),
            ("timeouts_total", &self.timeouts),
            ("unavailable_total", &self.unavailable),
            ("busy_total", &self.busy),
            ("queue_depth", &self.queue_depth),
            ("up", &self.up),
        ]
    }

    /// Appends every upstream's metrics, each labelled `upstream="name"`, in
    /// Prometheus text format: one family at a time, its `# HELP` and
    /// `# TYPE` lines right before all of its samples.
    pub fn write_prometheus(upstreams: &[(&str, &UpstreamStats)], out: &mut String) {
        let labels: Vec<String> = upstreams.iter().map(|(name, _)| escape(name)).collect();
        for (i, (metric, kind, help)) in FAMILIES.iter().enumerate() {
            let _ = writeln!(out, "# HELP coilwork_gateway_{metric} {help}");
            let _ = writeln!(out, "# TYPE coilwork_gateway_{metric} {kind}");
            for (label, (_, stats)) in labels.iter().zip(upstreams) {
                match stats.counters().get(i) {
                    Some((_, value)) => {
                        let v = value.load(Relaxed);
                        let _ = writeln!(out, "coilwork_gateway_{metric}{{upstream=\"{label}\"}} {v}");
                    }
                    None => stats.write_latency(label, out),
                }
            }
        }
    }

    /// Appends the latency histogram's samples, labelled `upstream="label"`.
    fn write_latency(&self, label: &str, out: &mut String) {
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.latency_buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(
                out,
                "coilwork_gateway_latency_seconds_bucket{{upstream=\"{label}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.latency_count.load(Relaxed);
        let sum = self.latency_sum_us.load(Relaxed) as f64 / 1e6;
        let name = "coilwork_gateway_latency_seconds";
        let _ = writeln!(out, "{name}_bucket{{upstream=\"{label}\",le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{upstream=\"{label}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{upstream=\"{label}\"}} {count}");
    }
}

/// Every family: name, type and help, in the order of
/// [`UpstreamStats::counters`], then the latency histogram.
const FAMILIES: [(&str, &str, &str); 9] = [
    ("requests_total", "counter", "requests queued for the upstream"),
    ("answers_total", "counter", "answers passed back from the upstream"),
    ("exceptions_total", "counter", "exception answers from the upstream"),
    ("timeouts_total", "counter", "requests with no answer in time (0x0B)"),
    ("unavailable_total", "counter", "requests failed as unreachable (0x0A)"),
    ("busy_total", "counter", "requests refused with a full queue (06)"),
    ("queue_depth", "gauge", "requests waiting in the queue"),
    ("up", "gauge", "1 while the upstream is connected"),
    ("latency_seconds", "histogram", "round trip to the upstream"),
];

/// A label value with `\` and `"` escaped (and a newline, which would end the line).
fn escape(name: &str) -> String {
    name.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_changes_reported_once() {
        let mut s = StateTracker::default();
        assert_eq!(s.set(LinkState::Down), Some(LinkState::Connecting));
        assert_eq!(s.set(LinkState::Down), None);
        assert_eq!(s.set(LinkState::Up), Some(LinkState::Down));
        assert_eq!(s.state(), LinkState::Up);
    }

    #[test]
    fn prometheus_text() {
        let st = UpstreamStats::default();
        st.requests.fetch_add(3, Relaxed);
        st.observe_latency(Duration::from_millis(3));
        let mut out = String::new();
        UpstreamStats::write_prometheus(&[("tcp:\"x\"", &st)], &mut out);
        assert!(out.contains("coilwork_gateway_requests_total{upstream=\"tcp:\\\"x\\\"\"} 3\n"));
        assert!(out.contains("le=\"0.0025\"} 0\n"));
        assert!(out.contains("le=\"0.005\"} 1\n"));
        assert!(out.contains("coilwork_gateway_latency_seconds_count{upstream=\"tcp:\\\"x\\\"\"} 1\n"));
    }

    #[test]
    fn latency_buckets_are_cumulative() {
        let st = UpstreamStats::default();
        for ms in [2, 3, 30, 2000] {
            st.observe_latency(Duration::from_millis(ms));
        }
        let mut out = String::new();
        UpstreamStats::write_prometheus(&[("u", &st)], &mut out);
        let bucket = |le: &str| format!("coilwork_gateway_latency_seconds_bucket{{upstream=\"u\",le=\"{le}\"}} ");
        for (le, n) in [
            ("0.001", 0),
            ("0.0025", 1),
            ("0.005", 2),
            ("0.025", 2),
            ("0.05", 3),
            ("1", 3),
            ("+Inf", 4),
        ] {
            assert!(out.contains(&format!("{}{n}\n", bucket(le))), "le={le}: {out}");
        }
    }

    #[test]
    fn each_family_is_grouped_under_its_type_line() {
        let (a, b) = (UpstreamStats::default(), UpstreamStats::default());
        let mut out = String::new();
        UpstreamStats::write_prometheus(&[("a", &a), ("b", &b)], &mut out);
        let mut family = "";
        let mut seen = Vec::new();
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap_or("");
                assert!(!seen.contains(&family), "{family} typed twice");
                seen.push(family);
            } else if !line.starts_with('#') {
                assert!(line.starts_with(family), "{line:?} outside its family {family}");
            }
        }
        assert_eq!(seen.len(), FAMILIES.len());
        assert_eq!(
            out.matches("upstream=\"b\"").count(),
            out.matches("upstream=\"a\"").count()
        );
    }
}
