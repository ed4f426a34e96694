//! Prometheus text exposition (format 0.0.4): `# HELP` and `# TYPE` once per
//! family, then its samples; label values escaped.

use super::{DropReason, LATENCY_BUCKETS_US, Snapshot};
use crate::server::ServerStats;
use crate::session::CloseCause;
use core::fmt::Write;

/// A label value with `\`, `"` and newlines escaped as the format asks.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Writes a family's `# HELP` and `# TYPE` lines.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One server's part of an exposition: its name (the `server` label), the
/// metrics of its engine and its counters, either of which may be absent.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The `server` label value (escaped when written).
    pub name: &'a str,
    /// Requests, latency and dropped frames (the engine's [`Metrics`](super::Metrics)).
    pub metrics: Option<&'a super::Metrics>,
    /// Connections, closes, bytes and datagrams.
    pub stats: Option<&'a ServerStats>,
}

/// The Prometheus text exposition of `sources`: every family once, with
/// `# HELP` and `# TYPE`, then the samples of each source.
pub fn render(sources: &[Source<'_>]) -> String {
    let mut out = String::new();
    let labels: Vec<String> = sources.iter().map(|s| escape_label_value(s.name)).collect();
    let snaps: Vec<(&str, Snapshot)> = labels
        .iter()
        .zip(sources)
        .filter_map(|(l, s)| Some((l.as_str(), s.metrics?.snapshot())))
        .collect();
    render_snapshots(&snaps, &mut out);
    let stats: Vec<(&str, &ServerStats)> = labels
        .iter()
        .zip(sources)
        .filter_map(|(l, s)| Some((l.as_str(), s.stats?)))
        .collect();
    render_servers(&stats, &mut out);
    out
}

/// Writes the request, latency and frame families of each (escaped label, snapshot).
fn render_snapshots(snaps: &[(&str, Snapshot)], out: &mut String) {
    for (name, help, exceptions) in [
        (
            "coilwork_requests_total",
            "Modbus requests received, by unit id and function code.",
            false,
        ),
        (
            "coilwork_exceptions_total",
            "Exception responses sent, by unit id and function code.",
            true,
        ),
    ] {
        header(out, name, "counter", help);
        for (server, snap) in snaps {
            for ((unit, function), c) in &snap.requests {
                let v = if exceptions { c.exceptions } else { c.requests };
                let _ = writeln!(
                    out,
                    "{name}{{server=\"{server}\",unit=\"{unit}\",function=\"{function}\"}} {v}"
                );
            }
        }
    }
    let name = "coilwork_request_duration_seconds";
    header(
        out,
        name,
        "histogram",
        "Time from the read that completed a request to the write that sent its answer.",
    );
    for (server, snap) in snaps {
        let mut cumulative = 0u64;
        for (bound, count) in LATENCY_BUCKETS_US.iter().zip(snap.latency.buckets) {
            cumulative = cumulative.saturating_add(count);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{server=\"{server}\",le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{server=\"{server}\",le=\"+Inf\"}} {}",
            snap.latency.count
        );
        let _ = writeln!(
            out,
            "{name}_sum{{server=\"{server}\"}} {}",
            snap.latency.sum_nanos as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count{{server=\"{server}\"}} {}", snap.latency.count);
    }
    let name = "coilwork_frames_dropped_total";
    header(
        out,
        name,
        "counter",
        "Frames (or bytes meant to be one) dropped, by reason.",
    );
    for (server, snap) in snaps {
        for reason in DropReason::ALL {
            let (label, v) = (reason.label(), snap.dropped(reason));
            let _ = writeln!(out, "{name}{{server=\"{server}\",reason=\"{label}\"}} {v}");
        }
    }
}

/// Every close cause with its label value.
const CLOSES: [(CloseCause, &str); 7] = [
    (CloseCause::PeerClosed, "peer_closed"),
    (CloseCause::Stopped, "stopped"),
    (CloseCause::Evicted, "evicted"),
    (CloseCause::BadFrame, "bad_frame"),
    (CloseCause::PartialTimeout, "partial_timeout"),
    (CloseCause::IdleTimeout, "idle_timeout"),
    (CloseCause::IoError, "io_error"),
];

/// A per-server family: (name, type, help, value).
type Family = (&'static str, &'static str, &'static str, fn(&ServerStats) -> u64);

/// The families read from each [`ServerStats`].
const SERVER_FAMILIES: [Family; 10] = [
    (
        "coilwork_connections_open",
        "gauge",
        "Connections open now.",
        ServerStats::active,
    ),
    (
        "coilwork_connections_accepted_total",
        "counter",
        "Connections accepted and served.",
        ServerStats::accepted,
    ),
    (
        "coilwork_connections_refused_total",
        "counter",
        "Connections or datagrams refused (allow-list, --max-connections).",
        ServerStats::refused,
    ),
    (
        "coilwork_connections_evicted_total",
        "counter",
        "Connections evicted to make room for a new one.",
        ServerStats::evicted,
    ),
    (
        "coilwork_tls_handshake_failures_total",
        "counter",
        "TLS connections closed before serving (handshake, role).",
        ServerStats::handshake_failures,
    ),
    (
        "coilwork_bytes_in_total",
        "counter",
        "Bytes received from Modbus clients.",
        ServerStats::bytes_in,
    ),
    (
        "coilwork_bytes_out_total",
        "counter",
        "Bytes sent to Modbus clients.",
        ServerStats::bytes_out,
    ),
    (
        "coilwork_datagrams_received_total",
        "counter",
        "Datagrams received.",
        ServerStats::received,
    ),
    (
        "coilwork_datagrams_answered_total",
        "counter",
        "Datagrams answered.",
        ServerStats::answered,
    ),
    (
        "coilwork_datagrams_malformed_total",
        "counter",
        "Datagrams dropped for not being exactly one valid ADU.",
        ServerStats::malformed,
    ),
];

/// Writes the connection, byte and datagram families of `servers`, each
/// `(escaped label, stats)`: the label becomes the `server` label.
fn render_servers(servers: &[(&str, &ServerStats)], out: &mut String) {
    for (name, kind, help, read) in SERVER_FAMILIES {
        header(out, name, kind, help);
        for (label, stats) in servers {
            let _ = writeln!(out, "{name}{{server=\"{label}\"}} {}", read(stats));
        }
    }
    let name = "coilwork_connections_closed_total";
    header(out, name, "counter", "Connections closed, by reason.");
    for (label, stats) in servers {
        for (cause, reason) in CLOSES {
            let _ = writeln!(
                out,
                "{name}{{server=\"{label}\",reason=\"{reason}\"}} {}",
                stats.closed(cause)
            );
        }
    }
}
