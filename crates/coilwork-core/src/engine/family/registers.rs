//! Registers: FC3 / FC4 (read holding, input registers), FC6 (write single
//! register), FC16 (write multiple), FC22 (mask write), FC23 (read/write).
//! FC3, FC4 and FC16 are the hot path: they move the wire's big-endian
//! bytes straight to and from the storage.

use super::{encode_failure, put, put_u16s};
use crate::ExceptionCode;
use crate::address::AddressRange;
use crate::engine::{Engine, Outcome};
use crate::pdu::response::write_registers;
use crate::pdu::{PduBuf, RegisterBytes};
use crate::storage::{RequestContext, Storage, Table};

impl Engine {
    /// FC3 / FC4 (`ctx.function`): the registers straight into the answer,
    /// big-endian: fc, byte count, registers.
    #[inline]
    pub(in crate::engine) fn read_registers(
        &self,
        ctx: &RequestContext<'_>,
        storage: &dyn Storage,
        range: AddressRange,
        out: &mut PduBuf,
    ) -> Result<Outcome, ExceptionCode> {
        let function = ctx.function;
        // ok: the decoder allows at most 125 registers, 250 bytes.
        let n = range.len().checked_mul(2).ok_or(ExceptionCode::IllegalDataValue)?;
        let byte_count = u8::try_from(n).map_err(|_| ExceptionCode::IllegalDataValue)?;
        out.clear();
        put(out, &[function, byte_count])?;
        out.append_with(n, ExceptionCode::ServerDeviceFailure, |dst| {
            if function == 0x03 {
                storage.read_holding_registers_be(ctx, range.start(), dst)
            } else {
                storage.read_input_registers_be(ctx, range.start(), dst)
            }
        })?;
        Ok(Outcome::RESPOND)
    }

    /// FC16: the request's bytes to the storage, then the echo of start and quantity.
    #[inline]
    pub(in crate::engine) fn write_registers(
        &self,
        ctx: &RequestContext<'_>,
        storage: &dyn Storage,
        range: AddressRange,
        values: RegisterBytes<'_>,
        out: &mut PduBuf,
    ) -> Result<Outcome, ExceptionCode> {
        if values.len() != range.len() {
            return Err(ExceptionCode::IllegalDataValue);
        }
        storage.write_holding_registers_be(ctx, range.start(), values.bytes())?;
        self.wrote(ctx, Table::HoldingRegisters, range.start(), range.count());
        let [s0, s1] = range.start().to_be_bytes();
        let [c0, c1] = range.count().to_be_bytes();
        put(out, &[0x10, s0, s1, c0, c1])?;
        Ok(Outcome::RESPOND)
    }

    /// FC6: one register, then the echo of address and value.
    pub(super) fn write_register(
        &self,
        ctx: &RequestContext<'_>,
        storage: &dyn Storage,
        address: u16,
        value: u16,
        out: &mut PduBuf,
    ) -> Result<(), ExceptionCode> {
        storage.write_holding_registers(ctx, address, &[value])?;
        self.wrote(ctx, Table::HoldingRegisters, address, 1);
        put(out, &[0x06])?;
        put_u16s(out, &[address, value])
    }

    /// FC22: `(register AND and_mask) OR (or_mask AND NOT and_mask)`, then the echo.
    pub(super) fn mask_write(
        &self,
        ctx: &RequestContext<'_>,
        storage: &dyn Storage,
        address: u16,
        and_mask: u16,
        or_mask: u16,
        out: &mut PduBuf,
    ) -> Result<(), ExceptionCode> {
        storage.mask_write_register(ctx, address, and_mask, or_mask)?;
        self.wrote(ctx, Table::HoldingRegisters, address, 1);
        put(out, &[0x16])?;
        put_u16s(out, &[address, and_mask, or_mask])
    }

    /// FC23: the write, then the read, in one storage call; the read registers answered.
    pub(super) fn read_write_registers(
        &self,
        ctx: &RequestContext<'_>,
        storage: &dyn Storage,
        read: AddressRange,
        write: AddressRange,
        values: RegisterBytes<'_>,
        out: &mut PduBuf,
    ) -> Result<(), ExceptionCode> {
        let mut wbuf = [0u16; 121];
        let wregs = wbuf.get_mut(..write.len()).ok_or(ExceptionCode::IllegalDataValue)?;
        if values.len() != wregs.len() {
            return Err(ExceptionCode::IllegalDataValue);
        }
        values.copy_into(wregs);
        let mut rbuf = [0u16; 125];
        let rregs = rbuf.get_mut(..read.len()).ok_or(ExceptionCode::IllegalDataValue)?;
        storage.write_read_holding_registers(ctx, write.start(), wregs, read.start(), rregs)?;
        self.wrote(ctx, Table::HoldingRegisters, write.start(), write.count());
        write_registers(out, 0x17, rregs).map_err(encode_failure)
    }
}
