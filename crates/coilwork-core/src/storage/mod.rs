//! Storage: where the four tables live.
//!
//! Users put their own data behind the server by implementing [`Storage`] for
//! one device (unit id). Every method takes `&self`, so many connections read
//! at once; an implementation picks its own synchronisation. The engine has
//! already validated quantities and that `start + len <= 65536` (and that the
//! slice is not empty) before it calls a method, so an implementation only
//! decides whether the addresses exist (exception 02) and whether it can do
//! the work (exception 04, or 06 when busy).
//!
//! Built-ins mirror what pymodbus users know: [`SequentialBlock`],
//! [`SparseBlock`], [`DeviceContext`] (four tables, which may share one block)
//! and [`ServerContext`] (one device for every unit, or a map of unit ids).

pub mod block;
pub mod device;
mod seqlock;
pub mod server;

pub use block::{DataBlock, SequentialBlock, SparseBlock};
pub use device::{AddressMode, DeviceContext, FileStore};
pub use server::{Device, ServerContext};

use crate::ExceptionCode;
use core::net::SocketAddr;
use std::time::Instant;

/// The transport a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Modbus/TCP.
    Tcp,
    /// Modbus over UDP.
    Udp,
    /// Modbus/TCP Security (TLS).
    Tls,
    /// A serial line (RTU or ASCII).
    Serial,
    /// The application itself (direct reads and writes, not a client).
    Application,
}

impl Transport {
    /// True for a serial line, where a bus carries other devices' traffic.
    pub fn is_serial(self) -> bool {
        matches!(self, Self::Serial)
    }
}

/// One of the four data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Read-write bits.
    Coils,
    /// Read-only bits.
    DiscreteInputs,
    /// Read-write registers.
    HoldingRegisters,
    /// Read-only registers.
    InputRegisters,
}

/// Who is asking, passed to every storage call so a backend can decide per caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestContext<'a> {
    /// Unit id the request was addressed to (0 for a serial broadcast).
    pub unit: u8,
    /// Function code being executed.
    pub function: u8,
    /// Transport the request arrived on.
    pub transport: Transport,
    /// The client's address, where the transport has one.
    pub peer: Option<SocketAddr>,
    /// The role from the client's TLS certificate (Modbus/TCP Security), if any.
    pub tls_role: Option<&'a str>,
    /// When the bytes holding the request were received: the `now` given to
    /// [`crate::Connection::handle_input`]. `None` where the caller gave no
    /// time ([`crate::Connection::handle_datagram`], the application).
    pub received: Option<Instant>,
}

impl RequestContext<'_> {
    /// A context for the application's own direct access to a device.
    pub const fn application(unit: u8) -> Self {
        Self {
            unit,
            function: 0,
            transport: Transport::Application,
            peer: None,
            tls_role: None,
            received: None,
        }
    }
}

/// The data of one device (unit). Implement it to serve your own data.
///
/// Reads fill `out` completely or fail; writes apply completely or not at all
/// (a rejected write must leave the data unchanged).
pub trait Storage: Send + Sync {
    /// Reads `out.len()` coils from `start`.
    fn read_coils(&self, ctx: &RequestContext<'_>, start: u16, out: &mut [bool]) -> Result<(), ExceptionCode>;

    /// Reads `out.len()` discrete inputs from `start`.
    fn read_discrete_inputs(&self, ctx: &RequestContext<'_>, start: u16, out: &mut [bool])
    -> Result<(), ExceptionCode>;

    /// Reads `out.len()` holding registers from `start`.
    fn read_holding_registers(
        &self,
        ctx: &RequestContext<'_>,
        start: u16,
        out: &mut [u16],
    ) -> Result<(), ExceptionCode>;

    /// Reads `out.len()` input registers from `start`.
    fn read_input_registers(&self, ctx: &RequestContext<'_>, start: u16, out: &mut [u16]) -> Result<(), ExceptionCode>;

    /// Reads `out.len() / 2` holding registers from `start` into `out`,
    /// big-endian (the bytes of an FC3 answer; at most 125 registers, 04
    /// for an odd length or more). The engine reads FC3 through this. The
    /// default calls [`Storage::read_holding_registers`] and encodes;
    /// override it only to skip that copy.
    fn read_holding_registers_be(
        &self,
        ctx: &RequestContext<'_>,
        start: u16,
        out: &mut [u8],
    ) -> Result<(), ExceptionCode> {
        block::read_be_with(out, |regs| self.read_holding_registers(ctx, start, regs))
    }

    /// [`Storage::read_holding_registers_be`] for the input registers (FC4):
    /// the default calls [`Storage::read_input_registers`] and encodes.
    fn read_input_registers_be(
        &self,
        ctx: &RequestContext<'_>,
        start: u16,
        out: &mut [u8],
    ) -> Result<(), ExceptionCode> {
        block::read_be_with(out, |regs| self.read_input_registers(ctx, start, regs))
    }

    /// Writes `values` to the coils from `start`, all or nothing.
    fn write_coils(&self, ctx: &RequestContext<'_>, start: u16, values: &[bool]) -> Result<(), ExceptionCode>;

    /// Writes `values` to the holding registers from `start`, all or nothing.
    fn write_holding_registers(
        &self,
        ctx: &RequestContext<'_>,
        start: u16,
        values: &[u16],
    ) -> Result<(), ExceptionCode>;

    /// Writes the big-endian values in `bytes` (the data of an FC16 request:
    /// `bytes.len() / 2` registers, at most 125; 04 for an odd length or
    /// more) to the holding registers from `start`, all or nothing. The
    /// engine writes FC16 through this. The default decodes and calls
    /// [`Storage::write_holding_registers`]; override it only to skip that copy.
    fn write_holding_registers_be(
        &self,
        ctx: &RequestContext<'_>,
        start: u16,
        bytes: &[u8],
    ) -> Result<(), ExceptionCode> {
        block::write_be_with(bytes, |regs| self.write_holding_registers(ctx, start, regs))
    }

    /// FC22: sets register `address` to `(current & and_mask) | (or_mask & !and_mask)`
    /// and returns the new value. The default reads then writes; override it
    /// to make it atomic against concurrent writers.
    fn mask_write_register(
        &self,
        ctx: &RequestContext<'_>,
        address: u16,
        and_mask: u16,
        or_mask: u16,
    ) -> Result<u16, ExceptionCode> {
        let mut cur = [0u16; 1];
        self.read_holding_registers(ctx, address, &mut cur)?;
        let new = (cur[0] & and_mask) | (or_mask & !and_mask);
        self.write_holding_registers(ctx, address, &[new])?;
        Ok(new)
    }

    /// FC23: writes `values` from `write_start`, then reads `out.len()`
    /// registers from `read_start`. The default validates the read range
    /// first (so a failing read leaves no half-done write), then writes, then
    /// reads.
    fn write_read_holding_registers(
        &self,
        ctx: &RequestContext<'_>,
        write_start: u16,
        values: &[u16],
        read_start: u16,
        out: &mut [u16],
    ) -> Result<(), ExceptionCode> {
        self.read_holding_registers(ctx, read_start, out)?;
        self.write_holding_registers(ctx, write_start, values)?;
        self.read_holding_registers(ctx, read_start, out)
    }

    /// FC7: the eight exception status outputs. Default 0.
    fn read_exception_status(&self, ctx: &RequestContext<'_>) -> Result<u8, ExceptionCode> {
        let _ = ctx;
        Ok(0)
    }

    /// FC24: fills `out` with the FIFO queue at `address` and returns how many
    /// values it holds (the engine answers exception 03 above 31). The default
    /// reads the count from holding register `address` and the values from
    /// the registers after it.
    fn read_fifo_queue(
        &self,
        ctx: &RequestContext<'_>,
        address: u16,
        out: &mut [u16; 31],
    ) -> Result<usize, ExceptionCode> {
        let mut count = [0u16; 1];
        self.read_holding_registers(ctx, address, &mut count)?;
        let n = count[0] as usize;
        if n == 0 {
            return Ok(0);
        }
        if n > out.len() {
            return Ok(n);
        }
        let first = address.checked_add(1).ok_or(ExceptionCode::IllegalDataAddress)?;
        if first as usize + n > 0x1_0000 {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let dst = out.get_mut(..n).ok_or(ExceptionCode::ServerDeviceFailure)?;
        self.read_holding_registers(ctx, first, dst)?;
        Ok(n)
    }

    /// FC20: reads `out.len()` records of `file` from `record`. Default: no files (02).
    fn read_file_record(
        &self,
        ctx: &RequestContext<'_>,
        file: u16,
        record: u16,
        out: &mut [u16],
    ) -> Result<(), ExceptionCode> {
        let _ = (ctx, file, record, out);
        Err(ExceptionCode::IllegalDataAddress)
    }

    /// FC21: writes `values` into `file` from `record`. Default: no files (02).
    fn write_file_record(
        &self,
        ctx: &RequestContext<'_>,
        file: u16,
        record: u16,
        values: &[u16],
    ) -> Result<(), ExceptionCode> {
        let _ = (ctx, file, record, values);
        Err(ExceptionCode::IllegalDataAddress)
    }

    /// Restores the initial values, where the storage keeps them. Default: nothing.
    fn reset(&self) {}
}

impl<S: Storage + ?Sized> Storage for std::sync::Arc<S> {
    fn read_coils(&self, ctx: &RequestContext<'_>, start: u16, out: &mut [bool]) -> Result<(), ExceptionCode> {
        (**self).read_coils(ctx, start, out)
    }
    fn read_discrete_inputs(
        &self,
        ctx: &RequestContext<'_>,
        start: u16,
        out: &mut [bool],
    ) -> Result<(), ExceptionCode> {
        (**self).read_discrete_inputs(ctx, start, out)
    }
    fn read_holding_registers(
        &self,
        ctx: &RequestContext<'_>,
        start: u16,
        out: &mut [u16],
    ) -> Result<(), ExceptionCode> {
        (**self).read_holding_registers(ctx, start, out)
    }
    fn read_input_registers(&self, ctx: &RequestContext<'_>, start: u16, out: &mut [u16]) -> Result<(), ExceptionCode> {
        (**self).read_input_registers(ctx, start, out)
    }
    #[inline]
    fn read_holding_registers_be(
        &self,
        ctx: &RequestContext<'_>,
        start: u16,
        out: &mut [u8],
    ) -> Result<(), ExceptionCode> {
        (**self).read_holding_registers_be(ctx, start, out)
    }
    #[inline]
    fn read_input_registers_be(
        &self,
        ctx: &RequestContext<'_>,
        start: u16,
        out: &mut [u8],
    ) -> Result<(), ExceptionCode> {
        (**self).read_input_registers_be(ctx, start, out)
    }
    fn write_coils(&self, ctx: &RequestContext<'_>, start: u16, values: &[bool]) -> Result<(), ExceptionCode> {
        (**self).write_coils(ctx, start, values)
    }
    fn write_holding_registers(
        &self,
        ctx: &RequestContext<'_>,
        start: u16,
        values: &[u16],
    ) -> Result<(), ExceptionCode> {
        (**self).write_holding_registers(ctx, start, values)
    }
    #[inline]
    fn write_holding_registers_be(
        &self,
        ctx: &RequestContext<'_>,
        start: u16,
        bytes: &[u8],
    ) -> Result<(), ExceptionCode> {
        (**self).write_holding_registers_be(ctx, start, bytes)
    }
    fn mask_write_register(
        &self,
        ctx: &RequestContext<'_>,
        address: u16,
        and_mask: u16,
        or_mask: u16,
    ) -> Result<u16, ExceptionCode> {
        (**self).mask_write_register(ctx, address, and_mask, or_mask)
    }
    fn write_read_holding_registers(
        &self,
        ctx: &RequestContext<'_>,
        write_start: u16,
        values: &[u16],
        read_start: u16,
        out: &mut [u16],
    ) -> Result<(), ExceptionCode> {
        (**self).write_read_holding_registers(ctx, write_start, values, read_start, out)
    }
    fn read_exception_status(&self, ctx: &RequestContext<'_>) -> Result<u8, ExceptionCode> {
        (**self).read_exception_status(ctx)
    }
    fn read_fifo_queue(
        &self,
        ctx: &RequestContext<'_>,
        address: u16,
        out: &mut [u16; 31],
    ) -> Result<usize, ExceptionCode> {
        (**self).read_fifo_queue(ctx, address, out)
    }
    fn read_file_record(
        &self,
        ctx: &RequestContext<'_>,
        file: u16,
        record: u16,
        out: &mut [u16],
    ) -> Result<(), ExceptionCode> {
        (**self).read_file_record(ctx, file, record, out)
    }
    fn write_file_record(
        &self,
        ctx: &RequestContext<'_>,
        file: u16,
        record: u16,
        values: &[u16],
    ) -> Result<(), ExceptionCode> {
        (**self).write_file_record(ctx, file, record, values)
    }
    fn reset(&self) {
        (**self).reset()
    }
}
