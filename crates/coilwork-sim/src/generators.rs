//! Values that move with time (coilwork's actions `sine`, `ramp`, `square`,
//! `random_walk`, `counter`, `series`).
//!
//! A generator is a function of the device's simulated time, evaluated when
//! a client reads the value: nothing ticks for registers nobody reads, and
//! the value is exact at the instant of the read. Only `random_walk` keeps
//! state (the step it last took).

use crate::model::{Cell, CellType, read_float, read_int, write_float, write_int};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The action names that are generators.
pub(crate) const NAMES: [&str; 6] = ["sine", "ramp", "square", "random_walk", "counter", "series"];

/// Most `random_walk` steps taken in one read (after a long idle time).
const MAX_STEPS_PER_READ: u64 = 10_000;

/// The shape of a generated value.
#[derive(Debug)]
enum Wave {
    Sine {
        period: f64,
        min: f64,
        max: f64,
        phase: f64,
    },
    Ramp {
        period: f64,
        min: f64,
        max: f64,
    },
    Square {
        period: f64,
        min: f64,
        max: f64,
        duty: f64,
    },
    RandomWalk {
        step: f64,
        min: f64,
        max: f64,
        interval: f64,
    },
    Counter {
        rate: f64,
        start: f64,
        max: Option<f64>,
    },
    Series {
        points: Vec<(f64, f64)>,
        looped: bool,
    },
}

/// A parsed generator attached to the first register of a value.
#[derive(Debug)]
pub(crate) struct Generator {
    wave: Wave,
    /// `random_walk`: the interval index of the last step taken.
    last_tick: AtomicU64,
}

impl PartialEq for Generator {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Generator {
    /// A copy with its own state (for `repeat`ed registers).
    pub(crate) fn fresh_copy(&self) -> Self {
        let wave = match &self.wave {
            Wave::Sine {
                period,
                min,
                max,
                phase,
            } => Wave::Sine {
                period: *period,
                min: *min,
                max: *max,
                phase: *phase,
            },
            Wave::Ramp { period, min, max } => Wave::Ramp {
                period: *period,
                min: *min,
                max: *max,
            },
            Wave::Square { period, min, max, duty } => Wave::Square {
                period: *period,
                min: *min,
                max: *max,
                duty: *duty,
            },
            Wave::RandomWalk {
                step,
                min,
                max,
                interval,
            } => Wave::RandomWalk {
                step: *step,
                min: *min,
                max: *max,
                interval: *interval,
            },
            Wave::Counter { rate, start, max } => Wave::Counter {
                rate: *rate,
                start: *start,
                max: *max,
            },
            Wave::Series { points, looped } => Wave::Series {
                points: points.clone(),
                looped: *looped,
            },
        };
        Self {
            wave,
            last_tick: AtomicU64::new(0),
        }
    }

    /// The value at simulated time `t` seconds; `current` is the value the
    /// register holds now (the walk's starting point).
    pub(crate) fn value_at(&self, t: f64, current: f64) -> f64 {
        match &self.wave {
            Wave::Sine {
                period,
                min,
                max,
                phase,
            } => {
                let angle = std::f64::consts::TAU * (t + phase) / period;
                min + (max - min) * (1.0 + angle.sin()) / 2.0
            }
            Wave::Ramp { period, min, max } => min + (max - min) * (t / period).rem_euclid(1.0),
            Wave::Square { period, min, max, duty } => {
                if (t / period).rem_euclid(1.0) < *duty {
                    *max
                } else {
                    *min
                }
            }
            Wave::RandomWalk {
                step,
                min,
                max,
                interval,
            } => self.walk(t, current, *step, (*min, *max), *interval),
            Wave::Counter { rate, start, max } => {
                let v = start + rate * t;
                match max {
                    Some(m) => v.rem_euclid(m + 1.0),
                    None => v,
                }
            }
            Wave::Series { points, looped } => series_at(points, *looped, t),
        }
    }

    fn walk(&self, t: f64, current: f64, step: f64, (min, max): (f64, f64), interval: f64) -> f64 {
        let tick = (t / interval).floor().max(0.0) as u64;
        let last = self.last_tick.swap(tick, Ordering::Relaxed);
        let steps = tick.saturating_sub(last).min(MAX_STEPS_PER_READ);
        let mut v = current.clamp(min, max);
        for _ in 0..steps {
            v = (v + step * (2.0 * fastrand::f64() - 1.0)).clamp(min, max);
        }
        v
    }

    /// Writes the value at time `t` into the value starting at `cells[index]`.
    pub(crate) fn apply(&self, cells: &mut [Cell], index: usize, t: f64) {
        let Some(ty) = cells.get(index).map(|c| c.kind) else {
            return;
        };
        if ty.is_float() {
            let v = self.value_at(t, read_float(cells, index, ty));
            write_float(cells, index, ty, v);
        } else {
            let v = self.value_at(t, read_int(cells, index, ty) as f64);
            let (lo, hi) = ty.int_range();
            let v = if matches!(self.wave, Wave::Counter { max: None, .. }) {
                // Wraps at the type's width, as a hardware counter does.
                v.floor() as i64
            } else {
                (v.round() as i64).clamp(lo, hi)
            };
            write_int(cells, index, ty, v);
        }
    }
}

/// The value of a `time_s,value` series at `t` (each value holds until the next time).
fn series_at(points: &[(f64, f64)], looped: bool, t: f64) -> f64 {
    let end = points.last().map_or(0.0, |p| p.0);
    let t = if looped && end > 0.0 { t.rem_euclid(end) } else { t };
    let i = points.partition_point(|p| p.0 <= t);
    points.get(i.saturating_sub(1)).map_or(0.0, |p| p.1)
}

/// Where to find files named in parameters, and the initial value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin<'a> {
    /// Directory of the configuration file (relative `file` paths).
    pub(crate) base_dir: Option<&'a Path>,
    /// The configured value (the counter's start).
    pub(crate) initial: f64,
}

/// Parses and checks a generator's parameters for a value of type `ty`.
/// Errors name the parameter: `(field, value, reason)`.
pub(crate) fn parse(
    name: &str,
    ty: CellType,
    params: &Map<String, Value>,
    origin: Origin<'_>,
) -> Result<Generator, (String, String, String)> {
    if matches!(ty, CellType::String | CellType::Bits) {
        return Err((
            "action".into(),
            format!("{name:?}"),
            format!(
                "{name} needs a numeric value (uint16, int16, uint32, float32, float64), not {}",
                ty.name()
            ),
        ));
    }
    let p = Params { name, params };
    let wave = match name {
        "sine" => {
            p.only(&["period_s", "min", "max", "phase_s"])?;
            let (min, max) = p.range()?;
            Wave::Sine {
                period: p.positive("period_s")?,
                min,
                max,
                phase: p.number_or("phase_s", 0.0)?,
            }
        }
        "ramp" => {
            p.only(&["period_s", "min", "max"])?;
            let (min, max) = p.range()?;
            Wave::Ramp {
                period: p.positive("period_s")?,
                min,
                max,
            }
        }
        "square" => {
            p.only(&["period_s", "min", "max", "duty"])?;
            let (min, max) = p.range()?;
            let duty = p.number_or("duty", 0.5)?;
            if !(0.0..=1.0).contains(&duty) {
                return Err(p.bad("duty", "must be between 0 and 1"));
            }
            Wave::Square {
                period: p.positive("period_s")?,
                min,
                max,
                duty,
            }
        }
        "random_walk" => {
            p.only(&["step", "min", "max", "interval_s"])?;
            let (min, max) = p.range()?;
            Wave::RandomWalk {
                step: p.positive("step")?,
                min,
                max,
                interval: p.positive("interval_s")?,
            }
        }
        "counter" => {
            p.only(&["rate_per_s", "max"])?;
            let max = p.optional("max")?;
            if max.is_some_and(|m| m < 0.0) {
                return Err(p.bad("max", "must be 0 or more"));
            }
            Wave::Counter {
                rate: p.number("rate_per_s")?,
                start: origin.initial,
                max,
            }
        }
        "series" => {
            p.only(&["file", "loop"])?;
            let looped = match params.get("loop") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(v) => return Err(("loop".into(), v.to_string(), "must be true or false".into())),
            };
            let file = match params.get("file") {
                Some(Value::String(f)) => f,
                Some(v) => return Err(("file".into(), v.to_string(), "must be a file name".into())),
                None => return Err(p.missing("file")),
            };
            let points = read_series(&resolve(file, origin.base_dir))
                .map_err(|why| ("file".to_owned(), format!("{file:?}"), why))?;
            Wave::Series { points, looped }
        }
        _ => return Err(("action".into(), format!("{name:?}"), "not a generator".into())),
    };
    Ok(Generator {
        wave,
        last_tick: AtomicU64::new(0),
    })
}

/// A relative path from the configuration's directory if it exists there,
/// else from the working directory.
fn resolve(file: &str, base_dir: Option<&Path>) -> PathBuf {
    let path = Path::new(file);
    match base_dir {
        Some(dir) if path.is_relative() && dir.join(path).exists() => dir.join(path),
        _ => path.to_owned(),
    }
}

/// Reads a CSV of `time_s,value` rows (an optional header line, times
/// increasing from 0 or more). Errors name the file, line and field.
pub(crate) fn read_series(path: &Path) -> Result<Vec<(f64, f64)>, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mut points: Vec<(f64, f64)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || (n == 0 && line.eq_ignore_ascii_case("time_s,value")) {
            continue;
        }
        let mut fields = line.split(',').map(str::trim);
        let mut number = |field: &str| -> Result<f64, String> {
            let text = fields
                .next()
                .ok_or_else(|| format!("{shown} line {line_no}: no {field} field"))?;
            text.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("{shown} line {line_no}, field {field}: {text:?} is not a number"))
        };
        let (t, v) = (number("time_s")?, number("value")?);
        if fields.next().is_some() {
            return Err(format!("{shown} line {line_no}: more than two fields (time_s,value)"));
        }
        if t < 0.0 || points.last().is_some_and(|p| t <= p.0) {
            return Err(format!(
                "{shown} line {line_no}, field time_s: {t} is not after the previous time (from 0 up)"
            ));
        }
        points.push((t, v));
    }
    if points.is_empty() {
        return Err(format!("{shown}: no time_s,value rows"));
    }
    Ok(points)
}

/// Reads a generator's parameters with errors naming the field.
struct Params<'a> {
    name: &'a str,
    params: &'a Map<String, Value>,
}

type ParamError = (String, String, String);

impl Params<'_> {
    fn bad(&self, field: &str, why: &str) -> ParamError {
        let value = self
            .params
            .get(field)
            .map_or_else(|| "(missing)".into(), Value::to_string);
        (format!("parameters.{field}"), value, format!("{} {why}", self.name))
    }

    fn missing(&self, field: &str) -> ParamError {
        (
            format!("parameters.{field}"),
            "(missing)".into(),
            format!("{} needs {field:?}", self.name),
        )
    }

    fn only(&self, allowed: &[&str]) -> Result<(), ParamError> {
        match self.params.keys().find(|k| !allowed.contains(&k.as_str())) {
            // The key is the user's text: escaped, so the error stays one line.
            Some(k) => Err((
                format!("parameters.{}", k.escape_debug()),
                self.params.get(k).map_or_else(String::new, Value::to_string),
                format!("{} takes no {k:?} (it takes: {})", self.name, allowed.join(", ")),
            )),
            None => Ok(()),
        }
    }

    fn optional(&self, field: &str) -> Result<Option<f64>, ParamError> {
        match self.params.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| self.bad(field, "needs a number here")),
        }
    }

    fn number(&self, field: &str) -> Result<f64, ParamError> {
        self.optional(field)?.ok_or_else(|| self.missing(field))
    }

    fn number_or(&self, field: &str, default: f64) -> Result<f64, ParamError> {
        Ok(self.optional(field)?.unwrap_or(default))
    }

    fn positive(&self, field: &str) -> Result<f64, ParamError> {
        let v = self.number(field)?;
        if v > 0.0 {
            Ok(v)
        } else {
            Err(self.bad(field, "needs a value above 0 here"))
        }
    }

    fn range(&self) -> Result<(f64, f64), ParamError> {
        let (min, max) = (self.number("min")?, self.number("max")?);
        if min > max {
            return Err(self.bad("min", "needs min <= max"));
        }
        Ok((min, max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn generator(name: &str, params: Value) -> Generator {
        let Value::Object(map) = params else {
            panic!("not an object")
        };
        parse(
            name,
            CellType::Float64,
            &map,
            Origin {
                base_dir: None,
                initial: 10.0,
            },
        )
        .unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn waves_are_exact_at_the_instant() {
        let sine = generator("sine", json!({"period_s": 4, "min": 0, "max": 10}));
        assert!(close(sine.value_at(0.0, 0.0), 5.0));
        assert!(close(sine.value_at(1.0, 0.0), 10.0));
        assert!(close(sine.value_at(3.0, 0.0), 0.0));
        let shifted = generator("sine", json!({"period_s": 4, "min": 0, "max": 10, "phase_s": 1}));
        assert!(close(shifted.value_at(0.0, 0.0), 10.0));
        let ramp = generator("ramp", json!({"period_s": 10, "min": 100, "max": 200}));
        assert!(close(ramp.value_at(2.5, 0.0), 125.0));
        assert!(close(ramp.value_at(12.5, 0.0), 125.0));
        let square = generator("square", json!({"period_s": 10, "min": 1, "max": 2, "duty": 0.3}));
        assert_eq!((square.value_at(2.9, 0.0), square.value_at(3.1, 0.0)), (2.0, 1.0));
        let counter = generator("counter", json!({"rate_per_s": 2, "max": 99}));
        assert!(close(counter.value_at(5.0, 0.0), 20.0));
        assert!(close(counter.value_at(50.0, 0.0), 10.0));
    }

    #[test]
    fn random_walk_stays_in_range_and_steps_per_interval() {
        let walk = generator("random_walk", json!({"step": 5, "min": 0, "max": 20, "interval_s": 1}));
        assert_eq!(walk.value_at(0.5, 10.0), 10.0, "no interval passed yet");
        let mut v = 10.0;
        for i in 1..500 {
            let next = walk.value_at(f64::from(i), v);
            assert!((next - v).abs() <= 5.0 && (0.0..=20.0).contains(&next), "{v} -> {next}");
            v = next;
        }
        assert_eq!(walk.value_at(499.9, v), v, "same interval, no step");
    }

    #[test]
    fn series_holds_each_value_until_the_next_time() {
        let points = [(0.0, 1.0), (2.0, 5.0), (3.0, 7.0)];
        assert_eq!(series_at(&points, false, 1.9), 1.0);
        assert_eq!(series_at(&points, false, 2.0), 5.0);
        assert_eq!(series_at(&points, false, 30.0), 7.0);
        assert_eq!(series_at(&points, true, 3.5), 1.0);
        assert_eq!(series_at(&points, true, 5.0), 5.0);
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let err = |name: &str, params: Value, ty: CellType| {
            let Value::Object(map) = params else {
                panic!("not an object")
            };
            parse(
                name,
                ty,
                &map,
                Origin {
                    base_dir: None,
                    initial: 0.0,
                },
            )
            .unwrap_err()
        };
        let e = err("sine", json!({"period_s": 0, "min": 0, "max": 1}), CellType::Uint16);
        assert_eq!((e.0.as_str(), e.1.as_str()), ("parameters.period_s", "0"));
        let e = err(
            "sine",
            json!({"period_s": 1, "min": 0, "max": 1, "amp": 2}),
            CellType::Uint16,
        );
        assert_eq!(e.0, "parameters.amp");
        let e = err("ramp", json!({"period_s": 1, "min": 5, "max": 1}), CellType::Uint16);
        assert!(e.2.contains("min <= max"), "{e:?}");
        let e = err(
            "square",
            json!({"period_s": 1, "min": 0, "max": 1, "duty": 2}),
            CellType::Int16,
        );
        assert_eq!(e.0, "parameters.duty");
        let e = err("counter", json!({}), CellType::Uint32);
        assert_eq!((e.0.as_str(), e.1.as_str()), ("parameters.rate_per_s", "(missing)"));
        let e = err("sine", json!({"period_s": 1, "min": 0, "max": 1}), CellType::String);
        assert_eq!(e.0, "action");
        let e = err("series", json!({"file": "/nonexistent/x.csv"}), CellType::Uint16);
        assert!(e.0 == "file" && e.2.contains("cannot read /nonexistent/x.csv"), "{e:?}");
    }

    #[test]
    fn series_file_errors_name_line_and_field() {
        let dir = std::env::temp_dir().join(format!("coilwork-series-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("s.csv");
        for (text, needle) in [
            ("time_s,value\n0,1\n1,x\n", "line 3, field value: \"x\" is not a number"),
            ("0,1\n0,2\n", "line 2, field time_s: 0 is not after"),
            ("0,1,2\n", "line 1: more than two fields"),
            ("0\n", "line 1: no value field"),
            ("time_s,value\n", "no time_s,value rows"),
        ] {
            std::fs::write(&file, text).unwrap();
            let e = read_series(&file).unwrap_err();
            assert!(e.contains(needle) && e.contains("s.csv"), "{text:?}: {e}");
        }
        std::fs::write(&file, "time_s,value\n0,1\n# comment\n2.5,-3\n").unwrap();
        assert_eq!(read_series(&file).unwrap(), vec![(0.0, 1.0), (2.5, -3.0)]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
