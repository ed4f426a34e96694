//! Register actions: what runs on a register each time a client reads it.
//!
//! Built-ins, as pymodbus's `ModbusSimulatorContext` defines them:
//! `increment`, `random`, `reset`, `timestamp`, `uptime`. Custom actions are
//! registered by name (a custom action with a built-in's name replaces it,
//! as pymodbus's `custom_actions` dict does). coilwork's time-based actions
//! (`sine`, `ramp`, ...) are named here and evaluated by `generators`.

use crate::model::{Cell, CellType, read_float, read_int, write_float, write_int};
use coilwork_core::ExceptionCode;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// What a custom action is given: the device's cells, the index of the cell
/// read, its parameters from the configuration and the device's uptime.
pub struct ActionContext<'a> {
    /// Every cell of the device (the flat register array of pymodbus).
    pub cells: &'a mut [Cell],
    /// The cell being read (the first register of its value).
    pub index: usize,
    /// The entry's `parameters` (empty when none).
    pub parameters: &'a Map<String, Value>,
    /// Time since the device started (or was last reset).
    pub uptime: Duration,
}

/// A custom action. Returning an exception makes the read answer it (pymodbus
/// answers 04 when an action raises).
pub type CustomAction = Arc<dyn Fn(&mut ActionContext<'_>) -> Result<(), ExceptionCode> + Send + Sync>;

/// The action attached to a cell.
#[derive(Clone)]
pub(crate) enum ActionKind {
    Increment,
    Random,
    Reset,
    Timestamp,
    Uptime,
    /// A time-based value (`sine`, `ramp`, ...): the device evaluates it, see `generators`.
    Generator,
    Custom(CustomAction),
}

/// Names and implementations, in pymodbus's order; a cell holds an index.
#[derive(Clone)]
pub(crate) struct ActionTable {
    pub(crate) entries: Vec<(String, ActionKind)>,
}

impl ActionTable {
    pub(crate) fn new(custom: &[(String, CustomAction)]) -> Self {
        let mut entries: Vec<(String, ActionKind)> = vec![
            ("increment".into(), ActionKind::Increment),
            ("random".into(), ActionKind::Random),
            ("reset".into(), ActionKind::Reset),
            ("timestamp".into(), ActionKind::Timestamp),
            ("uptime".into(), ActionKind::Uptime),
        ];
        entries.extend(crate::generators::NAMES.map(|n| (n.to_owned(), ActionKind::Generator)));
        for (name, f) in custom {
            match entries.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = ActionKind::Custom(f.clone()),
                None => entries.push((name.clone(), ActionKind::Custom(f.clone()))),
            }
        }
        Self { entries }
    }

    pub(crate) fn id(&self, name: &str) -> Option<u16> {
        self.entries
            .iter()
            .position(|(n, _)| n == name)
            .and_then(|i| u16::try_from(i).ok())
    }

    pub(crate) fn name(&self, id: u16) -> &str {
        self.entries.get(id as usize).map_or("?", |(n, _)| n.as_str())
    }

    pub(crate) fn kind(&self, id: u16) -> Option<&ActionKind> {
        self.entries.get(id as usize).map(|(_, k)| k)
    }
}

/// What a built-in action asks of the device besides changing cells.
pub(crate) enum Effect {
    None,
    Reset,
}

fn param(parameters: &Map<String, Value>, name: &str) -> Option<f64> {
    parameters.get(name).and_then(Value::as_f64)
}

/// Checks an entry's action against its type and parameters at load time,
/// where pymodbus would fail only on the first read.
pub(crate) fn check(
    kind: &ActionKind,
    name: &str,
    cell: CellType,
    parameters: &Map<String, Value>,
) -> Result<(), String> {
    match kind {
        ActionKind::Increment | ActionKind::Random => {
            if cell == CellType::String {
                return Err(format!("action {name:?} cannot run on a string"));
            }
            for (k, v) in parameters {
                if k != "minval" && k != "maxval" {
                    return Err(format!(
                        "action {name:?} takes parameters \"minval\" and \"maxval\", not {k:?}"
                    ));
                }
                if !v.is_number() {
                    return Err(format!(
                        "parameter {k:?} of action {name:?} must be a number, found {v}"
                    ));
                }
            }
            if let (Some(lo), Some(hi)) = (param(parameters, "minval"), param(parameters, "maxval"))
                && kind_is_random(kind)
                && lo > hi
            {
                return Err(format!("action {name:?}: minval {lo} is above maxval {hi}"));
            }
            Ok(())
        }
        ActionKind::Generator => Ok(()),
        ActionKind::Uptime if cell == CellType::String => Err(format!("action {name:?} cannot run on a string")),
        _ => Ok(()),
    }
}

fn kind_is_random(kind: &ActionKind) -> bool {
    matches!(kind, ActionKind::Random)
}

/// Runs the action `kind` on `cells[index]`.
pub(crate) fn run(
    kind: &ActionKind,
    cells: &mut [Cell],
    index: usize,
    parameters: &Map<String, Value>,
    uptime: Duration,
) -> Result<Effect, ExceptionCode> {
    let Some(cell) = cells.get(index) else {
        return Ok(Effect::None);
    };
    let ty = cell.kind;
    match kind {
        ActionKind::Increment => {
            let lo = param(parameters, "minval");
            let hi = param(parameters, "maxval");
            if ty.is_float() {
                let mut v = read_float(cells, index, ty) + 1.0;
                if let (Some(hi), Some(lo)) = (hi, lo)
                    && v > hi
                {
                    v = lo;
                }
                if let Some(lo) = lo
                    && v < lo
                {
                    v = lo;
                }
                write_float(cells, index, ty, v);
            } else {
                let mut v = read_int(cells, index, ty) + 1;
                if let (Some(hi), Some(lo)) = (hi, lo)
                    && v as f64 > hi
                {
                    v = lo as i64;
                }
                if let Some(lo) = lo
                    && (v as f64) < lo
                {
                    v = lo as i64;
                }
                write_int(cells, index, ty, v);
            }
            Ok(Effect::None)
        }
        ActionKind::Random => {
            let lo = param(parameters, "minval").unwrap_or(1.0);
            let hi = param(parameters, "maxval").unwrap_or(65536.0);
            if ty.is_float() {
                let v = lo + (hi - lo) * fastrand::f64();
                write_float(cells, index, ty, v);
            } else {
                let (tmin, tmax) = ty.int_range();
                let lo = (lo as i64).clamp(tmin, tmax);
                let hi = (hi as i64).clamp(lo, tmax);
                write_int(cells, index, ty, fastrand::i64(lo..=hi));
            }
            Ok(Effect::None)
        }
        ActionKind::Reset => Ok(Effect::Reset),
        ActionKind::Generator => Ok(Effect::None),
        ActionKind::Timestamp => {
            use chrono::{Datelike, Timelike};
            let now = chrono::Local::now();
            let values = [
                u16::try_from(now.year()).unwrap_or(0),
                now.month0() as u16,
                now.day() as u16,
                now.weekday().number_from_monday() as u16,
                now.hour() as u16,
                now.minute() as u16,
                now.second() as u16,
            ];
            for (cell, v) in cells.iter_mut().skip(index).zip(values) {
                cell.value = v;
            }
            Ok(Effect::None)
        }
        ActionKind::Uptime => {
            let secs = uptime.as_secs().saturating_add(1);
            if ty.is_float() {
                write_float(cells, index, ty, secs as f64);
            } else {
                write_int(cells, index, ty, i64::try_from(secs).unwrap_or(i64::MAX));
            }
            Ok(Effect::None)
        }
        ActionKind::Custom(f) => {
            let mut ctx = ActionContext {
                cells,
                index,
                parameters,
                uptime,
            };
            f(&mut ctx).map(|()| Effect::None)
        }
    }
}
