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

/// Writes the request, latency and frame families.
pub(super) fn render_snapshot(snap: &Snapshot, out: &mut String) {
    header(
        out,
        "coilwork_requests_total",
        "counter",
        "Modbus requests received, by unit id and function code.",
    );
    for ((unit, function), c) in &snap.requests {
        let _ = writeln!(
            out,
            "coilwork_requests_total{{unit=\"{unit}\",function=\"{function}\"}} {}",
            c.requests
        );
    }
    header(
        out,
        "coilwork_exceptions_total",
        "counter",
        "Exception responses sent, by unit id and function code.",
    );
    for ((unit, function), c) in &snap.requests {
        let _ = writeln!(
            out,
            "coilwork_exceptions_total{{unit=\"{unit}\",function=\"{function}\"}} {}",
            c.exceptions
        );
    }
    let name = "coilwork_request_duration_seconds";
    header(
        out,
        name,
        "histogram",
        "Time from the read that completed a request to the write that sent its answer.",
    );
    let mut cumulative = 0u64;
    for (bound, count) in LATENCY_BUCKETS_US.iter().zip(snap.latency.buckets) {
        cumulative = cumulative.saturating_add(count);
        let le = *bound as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", snap.latency.count);
    let _ = writeln!(out, "{name}_sum {}", snap.latency.sum_nanos as f64 / 1e9);
    let _ = writeln!(out, "{name}_count {}", snap.latency.count);
    header(
        out,
        "coilwork_frames_dropped_total",
        "counter",
        "Frames (or bytes meant to be one) dropped, by reason.",
    );
    for reason in DropReason::ALL {
        let _ = writeln!(
            out,
            "coilwork_frames_dropped_total{{reason=\"{}\"}} {}",
            reason.label(),
            snap.dropped(reason)
        );
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
/// `(label, stats)`: the label becomes the `server` label.
pub fn render_servers(servers: &[(&str, &ServerStats)], out: &mut String) {
    let labels: Vec<String> = servers.iter().map(|(l, _)| escape_label_value(l)).collect();
    for (name, kind, help, read) in SERVER_FAMILIES {
        header(out, name, kind, help);
        for (label, (_, stats)) in labels.iter().zip(servers) {
            let _ = writeln!(out, "{name}{{server=\"{label}\"}} {}", read(stats));
        }
    }
    let name = "coilwork_connections_closed_total";
    header(out, name, "counter", "Connections closed, by reason.");
    for (label, (_, stats)) in labels.iter().zip(servers) {
        for (cause, reason) in CLOSES {
            let _ = writeln!(
                out,
                "{name}{{server=\"{label}\",reason=\"{reason}\"}} {}",
                stats.closed(cause)
            );
        }
    }
}
