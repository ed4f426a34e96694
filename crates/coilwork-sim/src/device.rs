//! The simulated device: pymodbus's flat register array, its layout rules,
//! and the [`Storage`] implementation the engine serves.

use crate::actions::{self, ActionKind, ActionTable, CustomAction, Effect};
use crate::config::DeviceConfig;
use crate::counters::{RangeCounters, ShardedCount};
use crate::error::ConfigError;
use crate::generators::Generator;
use crate::layout::{self, Layout};
use crate::mirror::{Mirror, load_be};
use crate::model::{self, encode};
pub use crate::model::{Cell, CellType, DecodedValue, RegisterInfo};
use coilwork_core::{ExceptionCode, RequestContext, Storage, Table};
use serde_json::{Map, Value};
use std::sync::RwLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Most registers one request reads or writes (FC3, FC4, FC16, FC23).
const MAX_REGISTERS: usize = 125;

/// Most registers one value spans past its first (float64: 4): how far an
/// action or generator run on a cell may change cells after it.
const WIDEST: usize = 4;

/// Registers in `len` big-endian bytes: 04 for an odd length or more than
/// [`MAX_REGISTERS`], as the engine's defaults answer.
fn be_len(len: usize) -> Result<usize, ExceptionCode> {
    if !len.is_multiple_of(2) || len / 2 > MAX_REGISTERS {
        return Err(ExceptionCode::ServerDeviceFailure);
    }
    Ok(len / 2)
}

struct State {
    cells: Vec<Cell>,
    started: Instant,
}

/// A simulated device built from a `device_list` entry.
pub struct SimDevice {
    /// The authority: cells and start time, changed under the write lock.
    state: RwLock<State>,
    /// The cells' values, published under the write lock after each change
    /// and read without a lock by reads of plain registers.
    values: Mirror,
    initial: Vec<Cell>,
    counts: RangeCounters,
    actions: ActionTable,
    type_exception: bool,
    /// (offset, size in cells) per table: coils, discrete inputs, holding, input.
    tables: [(usize, usize); 4],
    /// Time-based values, indexed by `Cell::generator`.
    generators: Vec<Generator>,
    /// Simulated seconds per real second.
    time_scale: f64,
    /// Names of values (CSV register maps), by address.
    names: std::collections::BTreeMap<usize, String>,
    /// Count of changes by writes (clients, API) and resets: what
    /// `--state-file` saves. Sharded by thread: connections writing on
    /// different threads do not share its cache line.
    changes: ShardedCount,
    /// Per cell, how many cells from it on are plain (defined, no action):
    /// a read of them copies values and nothing else. Kinds and actions
    /// never change after the build, so this needs no lock.
    plain_run: Box<[u32]>,
    /// Per cell, how many cells from it on are defined and writable: a
    /// write of them needs no check (without `type exception`).
    writable_run: Box<[u32]>,
}

/// Per cell, the length of the run of cells from it on that `keep` accepts.
fn runs(cells: &[Cell], keep: impl Fn(&Cell) -> bool) -> Box<[u32]> {
    let mut runs = vec![0u32; cells.len()];
    let mut run = 0u32;
    for (slot, c) in runs.iter_mut().zip(cells).rev() {
        run = if keep(c) { run.saturating_add(1) } else { 0 };
        *slot = run;
    }
    runs.into_boxed_slice()
}

impl std::fmt::Debug for SimDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDevice")
            .field("size", &self.initial.len())
            .field("type_exception", &self.type_exception)
            .field("tables", &self.tables)
            .finish_non_exhaustive()
    }
}

impl SimDevice {
    /// Builds the device named `name` from its configuration, with `custom` actions.
    pub fn build(name: &str, cfg: &DeviceConfig, custom: &[(String, CustomAction)]) -> Result<Self, ConfigError> {
        Self::build_in(name, cfg, custom, None, 1.0)
    }

    /// As [`SimDevice::build`], with files named in parameters looked up in
    /// `base_dir` first, and simulated time running `time_scale` times as
    /// fast as real time.
    pub(crate) fn build_in(
        name: &str,
        cfg: &DeviceConfig,
        custom: &[(String, CustomAction)],
        base_dir: Option<&std::path::Path>,
        time_scale: f64,
    ) -> Result<Self, ConfigError> {
        let actions = ActionTable::new(custom);
        let env = layout::Env {
            actions: &actions,
            base_dir,
        };
        let Layout {
            cells,
            tables,
            generators,
        } = layout::build(&format!("device_list.{name}"), cfg, env)?;
        let total = cells.len();
        let counts = RangeCounters::new(total);
        let plain_run = runs(&cells, |c| c.kind != CellType::Invalid && c.action.is_none());
        let writable_run = runs(&cells, |c| c.kind != CellType::Invalid && c.writable);
        Ok(Self {
            values: Mirror::new(&cells),
            state: RwLock::new(State {
                cells: cells.clone(),
                started: Instant::now(),
            }),
            initial: cells,
            counts,
            actions,
            type_exception: cfg.setup.type_exception,
            tables,
            generators,
            time_scale,
            names: std::collections::BTreeMap::new(),
            changes: ShardedCount::new(),
            plain_run,
            writable_run,
        })
    }

    /// Gives the values at these addresses names (shown and usable in the REST API).
    pub fn with_names(mut self, names: impl IntoIterator<Item = (usize, String)>) -> Self {
        self.names.extend(names);
        self
    }

    /// How many writes and resets changed the registers so far.
    pub fn changes(&self) -> u64 {
        self.changes.total()
    }

    fn changed(&self) {
        self.changes.add();
    }

    /// `(address, type, raw value)` of every defined register, in address order.
    pub fn snapshot(&self) -> Vec<(usize, CellType, u16)> {
        let st = self.read_state();
        st.cells
            .iter()
            .enumerate()
            .filter(|(_, c)| c.kind != CellType::Invalid)
            .map(|(i, c)| (i, c.kind, c.value))
            .collect()
    }

    /// Sets the raw values of registers (a saved state); addresses outside are skipped.
    pub(crate) fn restore(&self, values: impl IntoIterator<Item = (usize, u16)>) {
        let mut st = self.write_state();
        for (a, v) in values {
            if let Some(c) = st.cells.get_mut(a) {
                c.value = v;
            }
        }
        self.values.publish(&mut st.cells, 0..usize::MAX);
    }

    /// True when some value has a name.
    pub fn has_names(&self) -> bool {
        !self.names.is_empty()
    }

    /// The address of the value named `name`.
    pub fn address_of(&self, name: &str) -> Option<usize> {
        self.names.iter().find(|(_, n)| n.as_str() == name).map(|(a, _)| *a)
    }

    /// The name of the value at `address`, if it has one.
    pub fn name_of(&self, address: usize) -> Option<&str> {
        self.names.get(&address).map(String::as_str)
    }

    /// Number of registers (cells) of the device.
    pub fn size(&self) -> usize {
        self.initial.len()
    }

    /// True when reads and writes must cover whole values (`type exception`).
    pub fn type_exception(&self) -> bool {
        self.type_exception
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A snapshot of register `address`.
    pub fn register(&self, address: usize) -> Option<RegisterInfo> {
        self.evaluate(address..address.saturating_add(1));
        let n = self
            .counts
            .totals(address..address.saturating_add(1))
            .first()
            .copied()?;
        let st = self.read_state();
        let cell = st.cells.get(address)?;
        Some(self.info(address, cell, n))
    }

    /// Brings the time-based values in `range` to now (a listing is a read too).
    fn evaluate(&self, range: std::ops::Range<usize>) {
        let has = |cells: &[Cell]| {
            cells
                .get(range.clone())
                .is_some_and(|c| c.iter().any(|c| c.generator.is_some()))
        };
        if !has(&self.read_state().cells) {
            return;
        }
        let mut st = self.write_state();
        let t = st.started.elapsed().as_secs_f64() * self.time_scale;
        for i in range.clone() {
            if let Some(g) = st
                .cells
                .get(i)
                .and_then(|c| c.generator)
                .and_then(|g| self.generators.get(g as usize))
            {
                g.apply(&mut st.cells, i, t);
            }
        }
        self.values
            .publish(&mut st.cells, range.start..range.end.saturating_add(WIDEST));
    }

    fn info(&self, address: usize, cell: &Cell, (r, w): (u64, u64)) -> RegisterInfo {
        RegisterInfo {
            address,
            kind: cell.kind,
            writable: cell.writable,
            value: cell.value,
            action: cell.action.map(|a| self.actions.name(a).to_owned()),
            name: self.names.get(&address).cloned(),
            parameters: cell.parameters.as_deref().cloned(),
            count_read: r,
            count_write: w,
        }
    }

    /// Snapshots of the defined registers (not `invalid`) in `range`.
    pub fn registers(&self, range: std::ops::Range<usize>) -> Vec<RegisterInfo> {
        self.evaluate(range.clone());
        let end = range.end.min(self.size());
        let start = range.start.min(end);
        let counts = self.counts.totals(start..end);
        let st = self.read_state();
        st.cells
            .iter()
            .enumerate()
            .skip(start)
            .take(end - start)
            .zip(counts)
            .filter(|((_, c), _)| c.kind != CellType::Invalid)
            .map(|((i, c), n)| self.info(i, c, n))
            .collect()
    }

    /// Sets register `address` to `value`, write protection aside (the
    /// simulator's own control, not a client).
    pub fn set_register(&self, address: usize, value: u16) -> Result<(), crate::SimError> {
        let mut st = self.write_state();
        let cell = st
            .cells
            .get_mut(address)
            .ok_or(crate::SimError::NoSuchRegister(address))?;
        cell.value = value;
        self.values.publish(&mut st.cells, address..address + 1);
        self.changed();
        Ok(())
    }

    /// Sets the value defined at `address` (the first register of a
    /// definition) from JSON, encoded as the configuration defines the
    /// register (`uint32`: an integer, `float32`: a number, `string`: text
    /// that fits...). Write protection aside, like [`SimDevice::set_register`].
    pub fn set_value(&self, address: usize, value: &Value) -> Result<(), crate::SimError> {
        let mut st = self.write_state();
        let refuse = |why: String| crate::SimError::BadValue { address, reason: why };
        let cells = &mut st.cells;
        let cell = cells.get(address).ok_or(crate::SimError::NoSuchRegister(address))?;
        let kind = cell.kind;
        let registers = match kind {
            CellType::Invalid => return Err(refuse("the register is not defined".into())),
            CellType::Next => {
                let first = cells
                    .iter()
                    .take(address)
                    .rposition(|c| c.kind != CellType::Next)
                    .unwrap_or(0);
                let of = cells.get(first).map_or("value", |c| c.kind.name());
                return Err(refuse(format!("part of the {of} at {first}: set that address")));
            }
            CellType::String => {
                1 + cells
                    .iter()
                    .skip(address + 1)
                    .take_while(|c| c.kind == CellType::Next)
                    .count()
            }
            other => other.register_count(),
        };
        let words = encode(kind, value, registers).map_err(refuse)?;
        for (c, w) in cells.iter_mut().skip(address).zip(words) {
            c.value = w;
        }
        self.values.publish(cells, address..address + registers);
        self.changed();
        Ok(())
    }

    /// The value defined at `address` (the first register of a definition), decoded.
    pub fn decoded(&self, address: usize) -> Option<DecodedValue> {
        let st = self.read_state();
        let cells = &st.cells;
        let cell = cells.get(address)?;
        Some(match cell.kind {
            CellType::Bits => DecodedValue::Bits(cell.value),
            CellType::Int16 => DecodedValue::Int16(cell.value as i16),
            CellType::Uint16 => DecodedValue::Uint16(cell.value),
            CellType::Uint32 => DecodedValue::Uint32(model::read_int(cells, address, CellType::Uint32) as u32),
            CellType::Float32 => DecodedValue::Float32(model::read_float(cells, address, CellType::Float32) as f32),
            CellType::Float64 => DecodedValue::Float64(model::read_float(cells, address, CellType::Float64)),
            CellType::String => {
                let mut bytes = cell.value.to_be_bytes().to_vec();
                for c in cells.iter().skip(address + 1).take_while(|c| c.kind == CellType::Next) {
                    bytes.extend_from_slice(&c.value.to_be_bytes());
                }
                DecodedValue::String(String::from_utf8_lossy(&bytes).into_owned())
            }
            CellType::Invalid | CellType::Next => return None,
        })
    }

    /// Time since the device started or was last reset.
    pub fn uptime(&self) -> Duration {
        self.read_state().started.elapsed()
    }

    fn table(&self, t: Table) -> (usize, usize) {
        let i = match t {
            Table::Coils => 0,
            Table::DiscreteInputs => 1,
            Table::HoldingRegisters => 2,
            Table::InputRegisters => 3,
        };
        self.tables.get(i).copied().unwrap_or((0, 0))
    }

    /// Cells `[first, end)` for `count` registers (or bits) from `start` of `t`.
    fn span(&self, t: Table, start: u16, count: usize, bits: bool) -> Result<(usize, usize), ExceptionCode> {
        let (offset, size) = self.table(t);
        let (first, end) = if bits {
            let last_bit = start as usize + count.max(1) - 1;
            (start as usize / 16, last_bit / 16 + 1)
        } else {
            (start as usize, start as usize + count)
        };
        if end > size {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        Ok((offset + first, offset + end))
    }

    /// pymodbus's `loop_validate` over cells `[first, end)`.
    fn validate(&self, cells: &[Cell], first: usize, end: usize, write: bool) -> Result<(), ExceptionCode> {
        let bad = Err(ExceptionCode::IllegalDataAddress);
        let mut i = first;
        while i < end {
            let Some(cell) = cells.get(i) else { return bad };
            if cell.kind == CellType::Invalid {
                return bad;
            }
            if !self.type_exception {
                if write && !cell.writable {
                    return bad;
                }
                i += 1;
                continue;
            }
            match cell.kind {
                CellType::Next => return bad,
                CellType::String => {
                    if write && !cell.writable {
                        return bad;
                    }
                    let rest = cells.get(i + 1..end).unwrap_or(&[]);
                    let ok = rest.iter().all(|c| c.kind == CellType::Next && (!write || c.writable));
                    return if ok { Ok(()) } else { bad };
                }
                ty => {
                    let step = ty.register_count();
                    if i + step > end {
                        return bad;
                    }
                    if write && cells.get(i..i + step).is_none_or(|s| s.iter().any(|c| !c.writable)) {
                        return bad;
                    }
                    i += step;
                }
            }
        }
        Ok(())
    }

    /// Reads cells `[first, end)`, running their actions, and calls `emit` for each value.
    fn read_cells(&self, first: usize, end: usize, mut emit: impl FnMut(usize, u16)) -> Result<(), ExceptionCode> {
        if self.is_plain(first, end) {
            // Plain registers: copied without a lock.
            let read = self.values.read(first..end, |values| {
                for (i, v) in values.iter().enumerate() {
                    emit(i, v.load(Ordering::Relaxed));
                }
            });
            if read.is_some() {
                self.count(first, end, false);
                return Ok(());
            }
        }
        {
            // One pass for the usual case: defined registers without actions.
            let st = self.read_state();
            let cells = st.cells.get(first..end).ok_or(ExceptionCode::IllegalDataAddress)?;
            if self.type_exception {
                self.validate(&st.cells, first, end, false)?;
            }
            let mut plain = true;
            for (i, c) in cells.iter().enumerate() {
                if c.kind == CellType::Invalid {
                    return Err(ExceptionCode::IllegalDataAddress);
                }
                if c.action.is_some() {
                    plain = false;
                    break;
                }
                emit(i, c.value);
            }
            if plain {
                self.count(first, end, false);
                return Ok(());
            }
        }
        // Actions change cells: take the write lock and validate again.
        let mut st = self.write_state();
        self.validate(&st.cells, first, end, false)?;
        let uptime = st.started.elapsed();
        let t = uptime.as_secs_f64() * self.time_scale;
        let empty = Map::new();
        let mut touched = first..end.saturating_add(WIDEST);
        for i in first..end {
            let (action, params, generator) = match st.cells.get(i) {
                Some(c) => (c.action, c.parameters.clone(), c.generator),
                None => return Err(ExceptionCode::IllegalDataAddress),
            };
            if let Some(g) = generator.and_then(|g| self.generators.get(g as usize)) {
                g.apply(&mut st.cells, i, t);
            } else if let Some(kind) = action.and_then(|a| self.actions.kind(a)).cloned() {
                if matches!(kind, ActionKind::Custom(_)) {
                    // A custom action may change any cell.
                    touched = 0..usize::MAX;
                }
                let params = params.as_deref().unwrap_or(&empty);
                match actions::run(&kind, &mut st.cells, i, params, uptime) {
                    Ok(Effect::None) => {}
                    Ok(Effect::Reset) => {
                        st.cells.clone_from(&self.initial);
                        st.started = Instant::now();
                        self.values.publish(&mut st.cells, 0..usize::MAX);
                        self.changed();
                        return Err(ExceptionCode::ServerDeviceFailure);
                    }
                    Err(e) => {
                        self.values.publish(&mut st.cells, touched);
                        return Err(e);
                    }
                }
            }
            let v = st.cells.get(i).map_or(0, |c| c.value);
            emit(i - first, v);
        }
        self.values.publish(&mut st.cells, touched);
        self.count(first, end, false);
        Ok(())
    }

    #[inline]
    fn count(&self, first: usize, end: usize, write: bool) {
        self.counts.add(first, end, write);
    }

    fn read_bits(&self, t: Table, start: u16, out: &mut [bool]) -> Result<(), ExceptionCode> {
        let (first, end) = self.span(t, start, out.len(), true)?;
        let base = start as usize;
        let n = out.len();
        self.read_cells(first, end, |i, v| {
            // Bits of cell i cover coil addresses (first_cell + i) * 16 ..
            let cell_bit0 = (base / 16 + i) * 16;
            for b in 0..16 {
                let addr = cell_bit0 + b;
                if addr >= base
                    && addr < base + n
                    && let Some(slot) = out.get_mut(addr - base)
                {
                    *slot = v & (1 << b) != 0;
                }
            }
        })
    }

    fn read_regs(&self, t: Table, start: u16, out: &mut [u16]) -> Result<(), ExceptionCode> {
        let (first, end) = self.span(t, start, out.len(), false)?;
        self.read_cells(first, end, |i, v| {
            if let Some(slot) = out.get_mut(i) {
                *slot = v;
            }
        })
    }

    /// FC3/FC4 straight into the answer's big-endian bytes: registers
    /// that are all plain (defined, no action) are copied in one pass under
    /// the read lock; anything else goes through [`SimDevice::read_regs`].
    fn read_regs_be(&self, t: Table, start: u16, out: &mut [u8]) -> Result<(), ExceptionCode> {
        let n = be_len(out.len())?;
        let (first, end) = self.span(t, start, n, false)?;
        if self.is_plain(first, end) && self.values.read(first..end, |v| load_be(v, out)).is_some() {
            self.count(first, end, false);
            return Ok(());
        }
        let mut buf = [0u16; MAX_REGISTERS];
        let regs = buf.get_mut(..n).ok_or(ExceptionCode::ServerDeviceFailure)?;
        self.read_regs(t, start, regs)?;
        for (o, v) in out.chunks_exact_mut(2).zip(regs.iter()) {
            o.copy_from_slice(&v.to_be_bytes());
        }
        Ok(())
    }

    fn write_regs_locked(
        &self,
        cells: &mut [Cell],
        first: usize,
        n: usize,
        values: impl Iterator<Item = u16>,
    ) -> Result<(), ExceptionCode> {
        let end = first + n;
        let checked = !self.type_exception && self.writable_run.get(first).is_some_and(|&r| r as usize >= n);
        if !checked {
            self.validate(cells, first, end, true)?;
        }
        let span = cells.get_mut(first..end).ok_or(ExceptionCode::IllegalDataAddress)?;
        self.values.set(span, first, values);
        self.changed();
        self.count(first, end, true);
        Ok(())
    }

    /// True when cells `[first, end)` are all plain (defined, no action) and
    /// reads need no check: their values can be copied from the mirror.
    #[inline]
    fn is_plain(&self, first: usize, end: usize) -> bool {
        !self.type_exception
            && self
                .plain_run
                .get(first)
                .is_some_and(|&r| r as usize >= end.saturating_sub(first))
    }
}

impl Storage for SimDevice {
    fn read_coils(&self, _ctx: &RequestContext<'_>, start: u16, out: &mut [bool]) -> Result<(), ExceptionCode> {
        self.read_bits(Table::Coils, start, out)
    }

    fn read_discrete_inputs(
        &self,
        _ctx: &RequestContext<'_>,
        start: u16,
        out: &mut [bool],
    ) -> Result<(), ExceptionCode> {
        self.read_bits(Table::DiscreteInputs, start, out)
    }

    fn read_holding_registers(
        &self,
        _ctx: &RequestContext<'_>,
        start: u16,
        out: &mut [u16],
    ) -> Result<(), ExceptionCode> {
        self.read_regs(Table::HoldingRegisters, start, out)
    }

    fn read_input_registers(
        &self,
        _ctx: &RequestContext<'_>,
        start: u16,
        out: &mut [u16],
    ) -> Result<(), ExceptionCode> {
        self.read_regs(Table::InputRegisters, start, out)
    }

    fn write_coils(&self, _ctx: &RequestContext<'_>, start: u16, values: &[bool]) -> Result<(), ExceptionCode> {
        let (first, end) = self.span(Table::Coils, start, values.len(), true)?;
        let mut st = self.write_state();
        self.validate(&st.cells, first, end, true)?;
        let base_cell = start as usize / 16;
        for (k, v) in values.iter().enumerate() {
            let addr = start as usize + k;
            let idx = first + addr / 16 - base_cell;
            let Some(cell) = st.cells.get_mut(idx) else {
                return Err(ExceptionCode::IllegalDataAddress);
            };
            let mask = 1u16 << (addr % 16);
            if *v {
                cell.value |= mask;
            } else {
                cell.value &= !mask;
            }
        }
        self.values.publish(&mut st.cells, first..end);
        self.changed();
        self.count(first, end, true);
        Ok(())
    }

    fn write_holding_registers(
        &self,
        _ctx: &RequestContext<'_>,
        start: u16,
        values: &[u16],
    ) -> Result<(), ExceptionCode> {
        let (first, _) = self.span(Table::HoldingRegisters, start, values.len(), false)?;
        let mut st = self.write_state();
        self.write_regs_locked(&mut st.cells, first, values.len(), values.iter().copied())
    }

    fn write_holding_registers_be(
        &self,
        _ctx: &RequestContext<'_>,
        start: u16,
        bytes: &[u8],
    ) -> Result<(), ExceptionCode> {
        let n = be_len(bytes.len())?;
        let (first, _) = self.span(Table::HoldingRegisters, start, n, false)?;
        let values = bytes.chunks_exact(2).map(|b| match *b {
            [hi, lo] => u16::from_be_bytes([hi, lo]),
            _ => 0,
        });
        let mut st = self.write_state();
        self.write_regs_locked(&mut st.cells, first, n, values)
    }

    fn read_holding_registers_be(
        &self,
        _ctx: &RequestContext<'_>,
        start: u16,
        out: &mut [u8],
    ) -> Result<(), ExceptionCode> {
        self.read_regs_be(Table::HoldingRegisters, start, out)
    }

    fn read_input_registers_be(
        &self,
        _ctx: &RequestContext<'_>,
        start: u16,
        out: &mut [u8],
    ) -> Result<(), ExceptionCode> {
        self.read_regs_be(Table::InputRegisters, start, out)
    }

    fn mask_write_register(
        &self,
        _ctx: &RequestContext<'_>,
        address: u16,
        and_mask: u16,
        or_mask: u16,
    ) -> Result<u16, ExceptionCode> {
        let (first, _) = self.span(Table::HoldingRegisters, address, 1, false)?;
        let mut st = self.write_state();
        let cur = st
            .cells
            .get(first)
            .map(|c| c.value)
            .ok_or(ExceptionCode::IllegalDataAddress)?;
        let new = (cur & and_mask) | (or_mask & !and_mask);
        self.write_regs_locked(&mut st.cells, first, 1, std::iter::once(new))?;
        Ok(new)
    }

    fn write_read_holding_registers(
        &self,
        ctx: &RequestContext<'_>,
        write_start: u16,
        values: &[u16],
        read_start: u16,
        out: &mut [u16],
    ) -> Result<(), ExceptionCode> {
        let (rf, re) = self.span(Table::HoldingRegisters, read_start, out.len(), false)?;
        self.validate(&self.read_state().cells, rf, re, false)?;
        self.write_holding_registers(ctx, write_start, values)?;
        self.read_regs(Table::HoldingRegisters, read_start, out)
    }

    fn reset(&self) {
        let mut st = self.write_state();
        st.cells.clone_from(&self.initial);
        st.started = Instant::now();
        self.values.publish(&mut st.cells, 0..usize::MAX);
        self.changed();
    }
}
