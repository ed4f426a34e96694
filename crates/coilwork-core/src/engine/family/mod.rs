//! Execution, one module per function-code family. Each takes a request
//! the decoder has validated, runs it against the device's storage and
//! writes the answer PDU into the caller's buffer. An `Err` is the
//! exception to answer; diagnostics are recorded by the caller, once.

mod bits;
mod custom;
mod device_id;
mod diagnostic;
mod files;
mod registers;

use super::{Engine, Outcome};
use crate::ExceptionCode;
use crate::pdu::{EncodeError, PduBuf, Request};
use crate::storage::{Device, RequestContext, Table};

impl Engine {
    /// Executes a validated request on a device, writing the answer into `out`.
    pub(super) fn execute(
        &self,
        ctx: &RequestContext<'_>,
        device: &Device,
        request: &Request<'_>,
        out: &mut PduBuf,
    ) -> Result<Outcome, ExceptionCode> {
        let storage = device.storage();
        match *request {
            Request::ReadCoils(range) | Request::ReadDiscreteInputs(range) => {
                self.read_bits(ctx, storage, range, out)?
            }
            Request::WriteSingleCoil { address, value } => self.write_coil(ctx, storage, address, value, out)?,
            Request::WriteMultipleCoils { range, values } => self.write_coils(ctx, storage, range, values, out)?,
            Request::ReadHoldingRegisters(range) | Request::ReadInputRegisters(range) => {
                return self.read_registers(ctx, storage, range, out);
            }
            Request::WriteSingleRegister { address, value } => {
                self.write_register(ctx, storage, address, value, out)?
            }
            Request::WriteMultipleRegisters { range, values } => {
                return self.write_registers(ctx, storage, range, values, out);
            }
            Request::MaskWriteRegister {
                address,
                and_mask,
                or_mask,
            } => self.mask_write(ctx, storage, address, and_mask, or_mask, out)?,
            Request::ReadWriteMultipleRegisters { read, write, values } => {
                self.read_write_registers(ctx, storage, read, write, values, out)?
            }
            Request::ReadExceptionStatus => self.exception_status(ctx, storage, out)?,
            Request::Diagnostics(sub) => return self.diagnostics(device, sub, out),
            Request::GetCommEventCounter => self.comm_event_counter(device, out)?,
            Request::GetCommEventLog => self.comm_event_log(device, out)?,
            Request::ReadFileRecord(reads) => self.read_files(ctx, storage, reads, out)?,
            Request::WriteFileRecord(writes) => self.write_files(ctx, storage, writes, out)?,
            Request::ReadFifoQueue { address } => self.read_fifo(ctx, storage, address, out)?,
            Request::ReportServerId => self.report_server_id(out)?,
            Request::ReadDeviceIdentification { code, object_id } => {
                self.device_identification(code, object_id, out)?
            }
            Request::Custom { function, data } => self.custom(ctx, storage, function, data, out)?,
        }
        Ok(Outcome::RESPOND)
    }

    /// Tells the write listener, if any.
    #[inline]
    fn wrote(&self, ctx: &RequestContext<'_>, table: Table, start: u16, count: u16) {
        if let Some(l) = &self.listener {
            l.on_write(ctx, table, start, count);
        }
    }
}

/// An answer that does not fit a PDU is a server failure (the decoder's
/// limits should make it impossible).
fn encode_failure(_: EncodeError) -> ExceptionCode {
    ExceptionCode::ServerDeviceFailure
}

/// Appends bytes to the answer.
#[inline]
fn put(out: &mut PduBuf, bytes: &[u8]) -> Result<(), ExceptionCode> {
    out.extend(bytes).map_err(encode_failure)
}

/// Appends big-endian u16s to the answer.
#[inline]
fn put_u16s(out: &mut PduBuf, values: &[u16]) -> Result<(), ExceptionCode> {
    for v in values {
        out.push_u16(*v).map_err(encode_failure)?;
    }
    Ok(())
}
