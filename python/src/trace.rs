//! Rust-side log events (coilwork-tokio's `tracing` warnings and errors)
//! forwarded to Python's `logging`, under the logger `coilwork`.

use pyo3::prelude::*;
use std::fmt::Write;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Most detailed level forwarded: warnings and errors (never a hot path).
const MAX: Level = Level::WARN;

/// A `tracing` subscriber that logs each event through Python's `logging`.
pub struct PyLogging;

/// Collects an event's message and fields into one line.
struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let sep = if self.0.is_empty() { "" } else { " " };
        let _ = if field.name() == "message" {
            write!(self.0, "{sep}{value:?}")
        } else {
            write!(self.0, "{sep}{}={value:?}", field.name())
        };
    }
}

/// Python's level number for a `tracing` level.
fn python_level(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        _ => 10,
    }
}

impl Subscriber for PyLogging {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= MAX
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::from_level(MAX))
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = Line(String::new());
        event.record(&mut line);
        let level = python_level(event.metadata().level());
        Python::with_gil(|py| {
            let logged = py
                .import("logging")
                .and_then(|l| l.call_method1("getLogger", ("coilwork",)))
                .and_then(|logger| logger.call_method1("log", (level, "%s", line.0)));
            if let Err(err) = logged {
                err.print(py);
            }
        });
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// Sends the process's `tracing` events to Python (once; a subscriber
/// installed earlier by someone else is left in place).
pub fn install() {
    let _ = tracing::subscriber::set_global_default(PyLogging);
}
