//! Bits: FC1 / FC2 (read coils, discrete inputs), FC5 (write single coil),
//! FC15 (write multiple coils).

use super::{encode_failure, put, put_u16s};
use crate::ExceptionCode;
use crate::address::AddressRange;
use crate::engine::Engine;
use crate::pdu::response::write_bits;
use crate::pdu::{PackedBits, PduBuf};
use crate::storage::{RequestContext, Storage, Table};

impl Engine {
    /// FC1 / FC2 (`ctx.function`): the bits packed into the answer.
    pub(super) fn read_bits(
        &self,
        ctx: &RequestContext<'_>,
        storage: &dyn Storage,
        range: AddressRange,
        out: &mut PduBuf,
    ) -> Result<(), ExceptionCode> {
        let mut buf = [false; 2000];
        let bits = buf.get_mut(..range.len()).ok_or(ExceptionCode::IllegalDataValue)?;
        if ctx.function == 0x01 {
            storage.read_coils(ctx, range.start(), bits)?;
        } else {
            storage.read_discrete_inputs(ctx, range.start(), bits)?;
        }
        write_bits(out, ctx.function, bits).map_err(encode_failure)
    }

    /// FC5: one coil, then the echo of address and value.
    pub(super) fn write_coil(
        &self,
        ctx: &RequestContext<'_>,
        storage: &dyn Storage,
        address: u16,
        value: bool,
        out: &mut PduBuf,
    ) -> Result<(), ExceptionCode> {
        storage.write_coils(ctx, address, &[value])?;
        self.wrote(ctx, Table::Coils, address, 1);
        put(out, &[0x05])?;
        put_u16s(out, &[address, if value { 0xFF00 } else { 0x0000 }])
    }

    /// FC15: the coils unpacked to the storage, then the echo of start and quantity.
    pub(super) fn write_coils(
        &self,
        ctx: &RequestContext<'_>,
        storage: &dyn Storage,
        range: AddressRange,
        values: PackedBits<'_>,
        out: &mut PduBuf,
    ) -> Result<(), ExceptionCode> {
        let mut buf = [false; 1968];
        let bits = buf.get_mut(..range.len()).ok_or(ExceptionCode::IllegalDataValue)?;
        for (i, dst) in bits.iter_mut().enumerate() {
            *dst = values.get(i).ok_or(ExceptionCode::IllegalDataValue)?;
        }
        storage.write_coils(ctx, range.start(), bits)?;
        self.wrote(ctx, Table::Coils, range.start(), range.count());
        put(out, &[0x0F])?;
        put_u16s(out, &[range.start(), range.count()])
    }
}
