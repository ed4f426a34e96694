//! The device model: what a register holds, a register, and how typed
//! values are laid out in registers (big-endian words, as pymodbus).
//! Imports nothing else of the crate; actions and the device build on it.

use serde_json::{Map, Value};
use std::sync::Arc;

/// What a register holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CellType {
    /// Not defined: exception 02.
    Invalid,
    /// 16 bits (coils or discrete inputs).
    Bits,
    /// Signed 16-bit integer.
    Int16,
    /// Unsigned 16-bit integer.
    Uint16,
    /// Unsigned 32-bit integer, first of two registers.
    Uint32,
    /// IEEE 754 single, first of two registers.
    Float32,
    /// IEEE 754 double, first of four registers.
    Float64,
    /// First register of a string.
    String,
    /// A following register of a multi-register value.
    Next,
}

impl CellType {
    /// Registers per value (strings: 1 here; their length is their range).
    pub fn register_count(self) -> usize {
        match self {
            Self::Uint32 | Self::Float32 => 2,
            Self::Float64 => 4,
            _ => 1,
        }
    }

    /// True for float32 and float64.
    pub fn is_float(self) -> bool {
        matches!(self, Self::Float32 | Self::Float64)
    }

    /// Range of an integer type.
    pub(crate) fn int_range(self) -> (i64, i64) {
        match self {
            Self::Int16 => (-32768, 32767),
            Self::Uint32 => (0, 0xFFFF_FFFF),
            _ => (0, 0xFFFF),
        }
    }

    /// The name used in the configuration and by pymodbus's web page.
    pub fn name(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Bits => "bits",
            Self::Int16 => "int16",
            Self::Uint16 => "uint16",
            Self::Uint32 => "uint32",
            Self::Float32 => "float32",
            Self::Float64 => "float64",
            Self::String => "string",
            Self::Next => "next",
        }
    }
}

/// One register of the device (pymodbus's `Cell`).
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// What the register holds.
    pub kind: CellType,
    /// Clients may write it.
    pub writable: bool,
    /// Current value.
    pub value: u16,
    pub(crate) action: Option<u16>,
    pub(crate) parameters: Option<Arc<Map<String, Value>>>,
    /// Index of the value's generator in the device's list (time-based actions).
    pub(crate) generator: Option<u32>,
}

impl Cell {
    pub(crate) const INVALID: Cell = Cell {
        kind: CellType::Invalid,
        writable: false,
        value: 0,
        action: None,
        parameters: None,
        generator: None,
    };
}

/// A snapshot of one register, for listings (the HTTP page of a later slice).
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterInfo {
    /// Index in the flat register array (the configuration's address).
    pub address: usize,
    /// What it holds.
    pub kind: CellType,
    /// Clients may write it.
    pub writable: bool,
    /// Current raw value.
    pub value: u16,
    /// Action name, if any.
    pub action: Option<String>,
    /// The value's name (CSV register maps), if any.
    pub name: Option<String>,
    /// Action parameters, if any.
    pub parameters: Option<Map<String, Value>>,
    /// Reads by clients.
    pub count_read: u64,
    /// Writes by clients.
    pub count_write: u64,
}

/// A decoded value at the first register of a definition.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodedValue {
    /// Bits register.
    Bits(u16),
    /// int16.
    Int16(i16),
    /// uint16.
    Uint16(u16),
    /// uint32.
    Uint32(u32),
    /// float32.
    Float32(f32),
    /// float64.
    Float64(f64),
    /// The string's bytes, trailing padding included.
    String(String),
}

/// The registers of `value` for a type, or why it does not fit.
pub(crate) fn encode(ty: CellType, value: &Value, registers: usize) -> Result<Vec<u16>, String> {
    match ty {
        CellType::String => {
            let Value::String(s) = value else {
                return Err("a string needs a string value".into());
            };
            let bytes = s.as_bytes();
            let room = registers * 2;
            if bytes.len() > room {
                return Err(format!("{} bytes do not fit in {registers} registers", bytes.len()));
            }
            let mut padded = bytes.to_vec();
            padded.resize(room, b' ');
            Ok(padded
                .chunks(2)
                .map(|c| u16::from_be_bytes([c.first().copied().unwrap_or(b' '), c.get(1).copied().unwrap_or(b' ')]))
                .collect())
        }
        CellType::Float32 | CellType::Float64 => {
            let v = value.as_f64().ok_or_else(|| format!("{} needs a number", ty.name()))?;
            if ty == CellType::Float32 && v.is_finite() && (v as f32).is_infinite() {
                return Err("out of range for float32".into());
            }
            Ok(float_words(ty, v))
        }
        _ => {
            let v = value
                .as_i64()
                .ok_or_else(|| format!("{} needs an integer", ty.name()))?;
            let (lo, hi) = ty.int_range();
            if v < lo || v > hi {
                return Err(format!("out of range {lo}..={hi} for {}", ty.name()));
            }
            let n = ty.register_count();
            let raw = v as u64;
            Ok((0..n).map(|i| (raw >> (16 * (n - 1 - i))) as u16).collect())
        }
    }
}

/// Reads the value starting at `index` as an integer (big-endian words).
pub(crate) fn read_int(cells: &[Cell], index: usize, ty: CellType) -> i64 {
    let n = ty.register_count();
    let raw = cells
        .iter()
        .skip(index)
        .take(n)
        .fold(0u64, |acc, c| (acc << 16) | u64::from(c.value));
    if ty == CellType::Int16 {
        i64::from(raw as u16 as i16)
    } else {
        raw as i64
    }
}

/// Writes `v` (wrapped to the type's width) from `index`, high word first.
pub(crate) fn write_int(cells: &mut [Cell], index: usize, ty: CellType, v: i64) {
    let n = ty.register_count();
    let bits = 16 * n as u32;
    let raw = (v as u64) & (u64::MAX >> (64 - bits));
    for (i, cell) in cells.iter_mut().skip(index).take(n).enumerate() {
        let shift = 16 * (n - 1 - i) as u32;
        cell.value = (raw >> shift) as u16;
    }
}

/// Reads the float starting at `index` (big-endian words).
pub(crate) fn read_float(cells: &[Cell], index: usize, ty: CellType) -> f64 {
    let raw = cells
        .iter()
        .skip(index)
        .take(ty.register_count())
        .fold(0u64, |acc, c| (acc << 16) | u64::from(c.value));
    if ty == CellType::Float64 {
        f64::from_bits(raw)
    } else {
        f64::from(f32::from_bits(raw as u32))
    }
}

/// Writes a float from `index`, high word first.
pub(crate) fn write_float(cells: &mut [Cell], index: usize, ty: CellType, v: f64) {
    let words = float_words(ty, v);
    for (cell, w) in cells.iter_mut().skip(index).zip(words) {
        cell.value = w;
    }
}

/// The registers of a float of type `ty`, high word first.
pub(crate) fn float_words(ty: CellType, v: f64) -> Vec<u16> {
    if ty == CellType::Float64 {
        let b = v.to_bits();
        (0..4).map(|i| (b >> (48 - 16 * i)) as u16).collect()
    } else {
        let b = (v as f32).to_bits();
        vec![(b >> 16) as u16, b as u16]
    }
}
