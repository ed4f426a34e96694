//! From a `device_list` entry to the device's flat register array:
//! pymodbus's layout rules (table offsets, typed sections, `write`,
//! `repeat`), checked entry by entry with the configuration key in every
//! error.

use crate::actions::{self, ActionTable};
use crate::config::{AddrSpec, DeviceConfig, SetupConfig, TypeEntry};
use crate::error::ConfigError;
use crate::generators::{self, Generator, Origin};
use crate::model::{Cell, CellType, encode};
use serde_json::Map;
use std::path::Path;
use std::sync::Arc;

/// The registers of a device and where its four tables lie in them.
#[derive(Debug)]
pub(crate) struct Layout {
    /// One cell per register.
    pub(crate) cells: Vec<Cell>,
    /// (offset, size in cells) per table: coils, discrete inputs, holding, input.
    pub(crate) tables: [(usize, usize); 4],
    /// The time-based values, indexed by `Cell::generator`.
    pub(crate) generators: Vec<Generator>,
}

/// What laying out a device needs besides its configuration.
#[derive(Clone, Copy)]
pub(crate) struct Env<'a> {
    /// Names and kinds of the actions.
    pub(crate) actions: &'a ActionTable,
    /// Directory of the configuration file (relative file names in parameters).
    pub(crate) base_dir: Option<&'a Path>,
}

const TYPE_SECTIONS: [(&str, CellType); 7] = [
    ("bits", CellType::Bits),
    ("int16", CellType::Int16),
    ("uint16", CellType::Uint16),
    ("uint32", CellType::Uint32),
    ("float32", CellType::Float32),
    ("float64", CellType::Float64),
    ("string", CellType::String),
];

fn section<'a>(cfg: &'a DeviceConfig, name: &str) -> Option<&'a Vec<TypeEntry>> {
    match name {
        "bits" => cfg.bits.as_ref(),
        "int16" => cfg.int16.as_ref(),
        "uint16" => cfg.uint16.as_ref(),
        "uint32" => cfg.uint32.as_ref(),
        "float32" => cfg.float32.as_ref(),
        "float64" => cfg.float64.as_ref(),
        "string" => cfg.string.as_ref(),
        _ => None,
    }
}

pub(crate) fn out_of_range(key: String, spec: AddrSpec, size: usize) -> ConfigError {
    ConfigError::new(
        key,
        spec,
        format!("outside the device ({size} registers: 0..={})", size.saturating_sub(1)),
    )
}

/// Lays out the device `dev` (`device_list.NAME`) of `cfg`.
pub(crate) fn build(dev: &str, cfg: &DeviceConfig, env: Env<'_>) -> Result<Layout, ConfigError> {
    let s = &cfg.setup;
    let actions = env.actions;
    let (total, tables) = tables(dev, s)?;
    // Defaults: pymodbus checks every default action name.
    for (ty_name, action) in &s.defaults.action {
        if let Some(a) = action
            && actions.id(a).is_none()
        {
            return Err(ConfigError::new(
                format!("{dev}.setup.defaults.action.{ty_name}"),
                format!("{a:?}"),
                "unknown action",
            ));
        }
    }
    for (i, spec) in cfg.invalid.iter().enumerate() {
        if spec.last as usize >= total {
            return Err(out_of_range(format!("{dev}.invalid[{i}]"), *spec, total));
        }
    }
    let mut layout = Layout {
        cells: vec![Cell::INVALID; total],
        tables,
        generators: Vec::new(),
    };
    for (sec, ty) in TYPE_SECTIONS {
        let Some(entries) = section(cfg, sec) else { continue };
        for (i, entry) in entries.iter().enumerate() {
            let key = format!("{dev}.{sec}[{i}]");
            place(&mut layout, &key, (sec, ty), entry, s, env)?;
        }
    }
    writable(dev, cfg, &mut layout.cells)?;
    repeat(dev, cfg, &mut layout)?;
    Ok(layout)
}

/// The number of registers and the four tables' places.
fn tables(dev: &str, s: &SetupConfig) -> Result<(usize, [(usize, usize); 4]), ConfigError> {
    for (k, v) in [
        ("co size", s.co_size),
        ("di size", s.di_size),
        ("hr size", s.hr_size),
        ("ir size", s.ir_size),
    ] {
        if v > 0x1_0000 {
            return Err(ConfigError::new(
                format!("{dev}.setup.{k}"),
                v,
                "more than 65536 registers",
            ));
        }
    }
    Ok(if s.shared_blocks {
        let total = s.co_size.max(s.di_size).max(s.hr_size).max(s.ir_size);
        (total, [(0, total); 4])
    } else {
        let di = s.co_size;
        let ir = di + s.di_size;
        let hr = ir + s.ir_size;
        (
            hr + s.hr_size,
            [(0, s.co_size), (di, s.di_size), (hr, s.hr_size), (ir, s.ir_size)],
        )
    })
}

/// The action id of an entry (its own or the section's default), checked
/// against the type and parameters.
fn action_of(
    key: &str,
    sec: &str,
    ty: CellType,
    entry: &TypeEntry,
    s: &SetupConfig,
    actions: &ActionTable,
) -> Result<Option<u16>, ConfigError> {
    let name = match &entry.action {
        Some(a) => a.clone(),
        None => s.defaults.action.get(sec).cloned().flatten(),
    };
    let Some(a) = name else { return Ok(None) };
    let id = actions
        .id(&a)
        .ok_or_else(|| ConfigError::new(format!("{key}.action"), format!("{a:?}"), "unknown action"))?;
    let empty = Map::new();
    if let Some(kind) = actions.kind(id) {
        actions::check(kind, &a, ty, entry.parameters.as_ref().unwrap_or(&empty))
            .map_err(|why| ConfigError::new(format!("{key}.action"), format!("{a:?}"), why))?;
    }
    Ok(Some(id))
}

/// Places one entry of a typed section (`key`, e.g. `device_list.d.uint16[3]`).
fn place(
    layout: &mut Layout,
    key: &str,
    (sec, ty): (&str, CellType),
    entry: &TypeEntry,
    s: &SetupConfig,
    env: Env<'_>,
) -> Result<(), ConfigError> {
    let total = layout.cells.len();
    let spec = entry.addr;
    if spec.last as usize >= total {
        return Err(out_of_range(format!("{key}.addr"), spec, total));
    }
    let (first, last) = (spec.first as usize, spec.last as usize);
    let len = last - first + 1;
    let per = ty.register_count();
    if ty != CellType::String && len % per != 0 {
        return Err(ConfigError::new(
            format!("{key}.addr"),
            spec,
            format!("{len} registers are not a whole number of {sec} values ({per} registers each)"),
        ));
    }
    let value = match &entry.value {
        Some(v) => v.clone(),
        None => s.defaults.value.get(sec).cloned().ok_or_else(|| {
            ConfigError::new(
                format!(
                    "{}.setup.defaults.value.{sec}",
                    key.rsplit_once('.').map_or(key, |(d, _)| d)
                ),
                "(missing)",
                format!("{key} has no value and there is no default"),
            )
        })?,
    };
    let words_per_value = if ty == CellType::String { len } else { per };
    let words =
        encode(ty, &value, words_per_value).map_err(|why| ConfigError::new(format!("{key}.value"), &value, why))?;
    let action = action_of(key, sec, ty, entry, s, env.actions)?;
    let mut head = Cell {
        kind: ty,
        writable: false,
        value: 0,
        action,
        parameters: entry.parameters.clone().map(Arc::new),
        generator: None,
    };
    let generator = generator_of(key, ty, entry, &value, &head, env)?;
    let mut start = first;
    while start <= last {
        if let Some(g) = &generator {
            head.generator = Some(push(&mut layout.generators, g.fresh_copy()));
        }
        define(&mut layout.cells, start, &words, &head)
            .map_err(|why| ConfigError::new(format!("{key}.addr"), spec, why))?;
        start += words_per_value;
    }
    Ok(())
}

/// Adds a generator; its index.
fn push(generators: &mut Vec<Generator>, g: Generator) -> u32 {
    generators.push(g);
    u32::try_from(generators.len() - 1).unwrap_or(u32::MAX)
}

/// The parsed generator of an entry whose action is time-based.
fn generator_of(
    key: &str,
    ty: CellType,
    entry: &TypeEntry,
    value: &serde_json::Value,
    head: &Cell,
    env: Env<'_>,
) -> Result<Option<Generator>, ConfigError> {
    let Some(id) = head.action else { return Ok(None) };
    if !matches!(env.actions.kind(id), Some(actions::ActionKind::Generator)) {
        return Ok(None);
    }
    let empty = Map::new();
    let origin = Origin {
        base_dir: env.base_dir,
        initial: value.as_f64().unwrap_or(0.0),
    };
    generators::parse(
        env.actions.name(id),
        ty,
        entry.parameters.as_ref().unwrap_or(&empty),
        origin,
    )
    .map(Some)
    .map_err(|(field, value, why)| ConfigError::new(format!("{key}.{field}"), value, why))
}

/// Defines one value at `start`: `head` with the first word, `next` cells after.
pub(crate) fn define(cells: &mut [Cell], start: usize, words: &[u16], head: &Cell) -> Result<(), String> {
    let total = cells.len();
    for (j, w) in words.iter().enumerate() {
        let at = start + j;
        let cell = cells
            .get_mut(at)
            .ok_or_else(|| format!("register {at} is outside the device ({total} registers)"))?;
        if cell.kind != CellType::Invalid {
            return Err(format!("register {at} is already defined as {}", cell.kind.name()));
        }
        *cell = if j == 0 {
            Cell {
                value: *w,
                ..head.clone()
            }
        } else {
            Cell {
                kind: CellType::Next,
                value: *w,
                ..Cell::INVALID
            }
        };
    }
    Ok(())
}

/// Marks the `write` ranges writable.
fn writable(dev: &str, cfg: &DeviceConfig, cells: &mut [Cell]) -> Result<(), ConfigError> {
    let total = cells.len();
    for (i, spec) in cfg.write.iter().enumerate() {
        let key = format!("{dev}.write[{i}]");
        if spec.last as usize >= total {
            return Err(out_of_range(key, *spec, total));
        }
        for at in spec.first as usize..=spec.last as usize {
            let Some(cell) = cells.get_mut(at) else {
                return Err(out_of_range(key, *spec, total));
            };
            if cell.kind == CellType::Invalid {
                return Err(ConfigError::new(key, spec, format!("register {at} is not defined")));
            }
            cell.writable = true;
        }
    }
    Ok(())
}

/// Copies the `repeat` ranges cyclically.
fn repeat(dev: &str, cfg: &DeviceConfig, layout: &mut Layout) -> Result<(), ConfigError> {
    let Layout { cells, generators, .. } = layout;
    let total = cells.len();
    for (i, r) in cfg.repeat.iter().enumerate() {
        let key = format!("{dev}.repeat[{i}]");
        if r.addr.last as usize >= total {
            return Err(out_of_range(format!("{key}.addr"), r.addr, total));
        }
        if r.to.last as usize >= total {
            return Err(out_of_range(format!("{key}.to"), r.to, total));
        }
        let (cs, ce) = (r.addr.first as usize, r.addr.last as usize);
        let mut copy = cs;
        for to in r.to.first as usize..=r.to.last as usize {
            let mut src = cells.get(copy).cloned().unwrap_or(Cell::INVALID);
            // A copy moves on its own (a random walk of its own).
            if let Some(fresh) = src
                .generator
                .and_then(|g| generators.get(g as usize))
                .map(Generator::fresh_copy)
            {
                src.generator = Some(push(generators, fresh));
            }
            if let Some(dst) = cells.get_mut(to) {
                *dst = src;
            }
            copy = if copy >= ce { cs } else { copy + 1 };
        }
    }
    Ok(())
}
