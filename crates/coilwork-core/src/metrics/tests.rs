use super::*;
use crate::metrics::tally::FOLD_INTERVAL;
use crate::server::ServerStats;
use crate::session::CloseCause;
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Instant;

#[test]
fn a_tally_folds_requests_exceptions_latency_and_drops() {
    let metrics = Arc::new(Metrics::new());
    let t0 = Instant::now();
    let mut tally = Tally::new(Arc::clone(&metrics), 3);
    tally.input(t0);
    tally.request(1, 3, true, false);
    tally.request(1, 3, true, true);
    tally.request(2, 6, false, false);
    tally.dropped(DropReason::Checksum);
    tally.sent(t0 + Duration::from_micros(300));
    // Nothing reaches the shared metrics before a fold.
    assert_eq!(metrics.snapshot(), Snapshot::default());
    tally.fold();
    let snap = metrics.snapshot();
    assert_eq!(
        snap.requests[&(1, 3)],
        RequestCount {
            requests: 2,
            exceptions: 1
        }
    );
    assert_eq!(
        snap.requests[&(2, 6)],
        RequestCount {
            requests: 1,
            exceptions: 0
        }
    );
    assert_eq!(snap.latency.count, 2);
    // 300 µs falls in the 500 µs bucket (index 3).
    assert_eq!(snap.latency.buckets[3], 2);
    assert_eq!(snap.latency.sum_nanos, 600_000);
    assert_eq!(snap.dropped(DropReason::Checksum), 1);
    // A fold clears the tally: folding again adds nothing.
    tally.fold();
    assert_eq!(metrics.snapshot(), snap);
}

#[test]
fn a_full_table_folds_and_a_dropped_tally_folds_the_rest() {
    let metrics = Arc::new(Metrics::new());
    let mut tally = Tally::new(Arc::clone(&metrics), 0);
    for function in 1..=20u8 {
        tally.request(1, function, true, false);
    }
    // The 17th pair found the table full: the first 16 were folded.
    assert_eq!(metrics.snapshot().requests.len(), 16);
    drop(tally);
    let snap = metrics.snapshot();
    assert_eq!(snap.requests.len(), 20);
    assert!(snap.requests.values().all(|c| c.requests == 1));
}

#[test]
fn fold_if_due_folds_at_most_once_a_second() {
    let metrics = Arc::new(Metrics::new());
    let t0 = Instant::now();
    let mut tally = Tally::new(Arc::clone(&metrics), 0);
    tally.request(1, 3, true, false);
    tally.fold_if_due(t0);
    tally.request(1, 3, true, false);
    tally.fold_if_due(t0 + Duration::from_millis(500));
    assert_eq!(metrics.snapshot().requests[&(1, 3)].requests, 1);
    tally.fold_if_due(t0 + Duration::from_millis(1000));
    assert_eq!(metrics.snapshot().requests[&(1, 3)].requests, 2);
}

#[test]
fn late_exceptions_and_observed_latency_fold_and_the_deadline_says_when() {
    let metrics = Arc::new(Metrics::new());
    let t0 = Instant::now();
    let mut tally = Tally::new(Arc::clone(&metrics), 0);
    assert_eq!(tally.fold_deadline(t0), None, "nothing waits");
    // A gateway counts the request when it arrives, the exception and the
    // latency when the upstream's answer is written.
    tally.request(1, 3, false, false);
    tally.request(1, 3, false, false);
    tally.exception(1, 3);
    tally.observe(Duration::from_millis(2));
    tally.observe(Duration::from_micros(40));
    // Never folded: due at once.
    assert_eq!(tally.fold_deadline(t0), Some(t0));
    tally.fold_if_due(t0);
    let snap = metrics.snapshot();
    assert_eq!(
        snap.requests[&(1, 3)],
        RequestCount {
            requests: 2,
            exceptions: 1
        }
    );
    assert_eq!(snap.latency.count, 2);
    // 2 ms falls in the 2.5 ms bucket (index 5), 40 µs in the first.
    assert_eq!((snap.latency.buckets[5], snap.latency.buckets[0]), (1, 1));
    assert_eq!(tally.fold_deadline(t0), None, "a fold leaves nothing waiting");
    tally.exception(2, 6);
    let later = t0 + Duration::from_millis(300);
    assert_eq!(tally.fold_deadline(later), Some(t0 + FOLD_INTERVAL));
    assert_eq!(
        tally.fold_deadline(t0 + Duration::from_secs(5)),
        Some(t0 + Duration::from_secs(5))
    );
}

#[test]
fn latency_waits_for_the_answers_already_pending() {
    let metrics = Arc::new(Metrics::new());
    let t0 = Instant::now();
    let mut tally = Tally::new(Arc::clone(&metrics), 0);
    tally.input(t0);
    tally.request(1, 3, true, false);
    // More input before the answer went out: timed from the first.
    tally.input(t0 + Duration::from_millis(1));
    tally.sent(t0 + Duration::from_millis(2));
    tally.fold();
    let snap = metrics.snapshot();
    assert_eq!(snap.latency.sum_nanos, 2_000_000);
    // 2 ms is in the 2.5 ms bucket (index 5).
    assert_eq!(snap.latency.buckets[5], 1);
}

#[test]
fn frame_errors_map_to_their_reasons() {
    use crate::error::{ConnectionError, FrameError};
    assert_eq!(
        DropReason::of_frame(&FrameError::BadLrc {
            expected: 1,
            computed: 2
        }),
        DropReason::Checksum
    );
    assert_eq!(DropReason::of_frame(&FrameError::BadLength(300)), DropReason::Mbap);
    assert_eq!(DropReason::of_frame(&FrameError::TooLong(300)), DropReason::Oversize);
    assert_eq!(DropReason::of_frame(&FrameError::Garbage(3)), DropReason::Garbage);
    assert_eq!(
        DropReason::of_connection(&ConnectionError::BufferFull(4096)),
        DropReason::Oversize
    );
}

#[test]
fn the_exposition_has_every_family_with_help_type_and_samples() {
    let metrics = Arc::new(Metrics::new());
    let mut tally = Tally::new(Arc::clone(&metrics), 0);
    tally.request(9, 16, true, true);
    tally.dropped(DropReason::Mbap);
    drop(tally);
    let stats = ServerStats::default();
    stats.count_refused();
    stats.count_close(CloseCause::PeerClosed);
    // Counted when decided, not again when output.
    stats.count_bad_frame();
    stats.count_close(CloseCause::BadFrame);
    let text = render(&[Source {
        name: "tcp",
        metrics: Some(&metrics),
        stats: Some(&stats),
    }]);
    for family in [
        "coilwork_requests_total",
        "coilwork_exceptions_total",
        "coilwork_request_duration_seconds",
        "coilwork_frames_dropped_total",
        "coilwork_connections_open",
        "coilwork_connections_accepted_total",
        "coilwork_connections_refused_total",
        "coilwork_connections_evicted_total",
        "coilwork_connections_closed_total",
        "coilwork_bytes_in_total",
        "coilwork_bytes_out_total",
    ] {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "{family} has no HELP:\n{text}"
        );
        assert!(text.contains(&format!("# TYPE {family} ")), "{family} has no TYPE");
    }
    assert!(
        text.contains("coilwork_connections_refused_total{server=\"tcp\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("coilwork_connections_closed_total{server=\"tcp\",reason=\"peer_closed\"} 1\n"));
    assert!(text.contains("coilwork_connections_closed_total{server=\"tcp\",reason=\"bad_frame\"} 1\n"));
    assert!(text.contains("coilwork_requests_total{server=\"tcp\",unit=\"9\",function=\"16\"} 1\n"));
    assert!(text.contains("coilwork_exceptions_total{server=\"tcp\",unit=\"9\",function=\"16\"} 1\n"));
    assert!(text.contains("coilwork_frames_dropped_total{server=\"tcp\",reason=\"mbap\"} 1\n"));
    assert!(text.contains("coilwork_request_duration_seconds_bucket{server=\"tcp\",le=\"+Inf\"} 0\n"));
    assert!(
        text.contains("coilwork_request_duration_seconds_bucket{server=\"tcp\",le=\"0.00005\"} 0\n"),
        "{text}"
    );
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

/// One parsed sample line: name, labels (unescaped) and value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parses a sample line of the text format; `None` if it is not one.
fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let (name, mut rest) = line.split_at(name_end);
    let valid_name = |n: &str| {
        n.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    if !valid_name(name) {
        return None;
    }
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut pos = 0;
        loop {
            let eq = r.get(pos..)?.find('=')? + pos;
            let key = r.get(pos..eq)?;
            if !valid_name(key) || key.contains(':') || r.get(eq + 1..eq + 2)? != "\"" {
                return None;
            }
            let mut value = String::new();
            let mut it = r.get(eq + 2..)?.char_indices();
            let end = loop {
                let (i, c) = it.next()?;
                match c {
                    '\\' => match it.next()?.1 {
                        'n' => value.push('\n'),
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        _ => return None,
                    },
                    '\n' => return None,
                    '"' => break eq + 2 + i + 1,
                    c => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            match r.get(end..end + 1)? {
                "," => pos = end + 1,
                "}" => {
                    rest = r.get(end + 1..)?;
                    break;
                }
                _ => return None,
            }
        }
    }
    let value = rest.strip_prefix(' ')?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().ok()?,
    };
    Some((name.to_owned(), labels, value))
}

proptest! {
    #[test]
    fn the_exposition_parses_line_by_line(
        label in ".{0,12}",
        requests in proptest::collection::vec((any::<u8>(), 1u8..128, any::<bool>(), any::<bool>()), 0..40),
        latencies in proptest::collection::vec(0u64..3_000_000, 0..10),
        drops in proptest::collection::vec(0usize..5, 0..10),
    ) {
        let metrics = Arc::new(Metrics::new());
        let t0 = Instant::now();
        let mut tally = Tally::new(Arc::clone(&metrics), 1);
        for (unit, function, answered, exception) in &requests {
            tally.request(*unit, *function, *answered, *exception && *answered);
        }
        for us in &latencies {
            tally.input(t0);
            tally.request(1, 3, true, false);
            tally.sent(t0 + Duration::from_micros(*us));
        }
        for d in &drops {
            tally.dropped(DropReason::ALL[*d]);
        }
        drop(tally);
        let stats = ServerStats::default();
        let other = Metrics::new();
        let text = render(&[
            Source { name: &label, metrics: Some(&metrics), stats: Some(&stats) },
            Source { name: "udp", metrics: Some(&other), stats: None },
            Source { name: "serial", metrics: None, stats: Some(&stats) },
        ]);
        prop_assert!(text.ends_with('\n'));
        let mut family: Option<(String, String)> = None;
        let mut seen = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(help) = line.strip_prefix("# HELP ") {
                let name = help.split(' ').next().unwrap_or_default().to_owned();
                prop_assert!(seen.insert(name.clone()), "family {} twice", name);
                family = Some((name, String::new()));
            } else if let Some(ty) = line.strip_prefix("# TYPE ") {
                let mut parts = ty.split(' ');
                let name = parts.next().unwrap_or_default();
                let kind = parts.next().unwrap_or_default();
                prop_assert!(["counter", "gauge", "histogram"].contains(&kind));
                prop_assert_eq!(family.as_ref().map(|f| f.0.as_str()), Some(name));
                family = Some((name.to_owned(), kind.to_owned()));
            } else {
                let sample = parse_sample(line);
                prop_assert!(sample.is_some(), "not a sample: {:?}", line);
                let (name, labels, value) = sample.unwrap(); // ok: test code
                let (fam, kind) = family.clone().unwrap(); // ok: test code
                let ok = name == fam
                    || (kind == "histogram" && [format!("{fam}_bucket"), format!("{fam}_sum"), format!("{fam}_count")].contains(&name));
                prop_assert!(ok, "{} outside its family {}", name, fam);
                prop_assert!(value >= 0.0);
                if let Some((_, v)) = labels.iter().find(|(k, _)| k == "server") {
                    prop_assert!(v == &label || v == "udp" || v == "serial");
                }
            }
        }
        let expected: u64 = requests.len() as u64 + latencies.len() as u64;
        let total: u64 = metrics.snapshot().requests.values().map(|c| c.requests).sum();
        prop_assert_eq!(total, expected);
    }
}
