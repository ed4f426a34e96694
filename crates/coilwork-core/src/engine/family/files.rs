//! File records and FIFO: FC20 (read file record), FC21 (write file
//! record), FC24 (read FIFO queue).

use super::{encode_failure, put, put_u16s};
use crate::ExceptionCode;
use crate::engine::Engine;
use crate::frame::MAX_PDU;
use crate::pdu::response::write_fifo;
use crate::pdu::{FileRecordReads, FileRecordWrites, PduBuf};
use crate::storage::{RequestContext, Storage};

impl Engine {
    /// FC20: fc, data length, then per sub-request its length (1 + 2 ×
    /// records), reference type 6 and the records.
    pub(super) fn read_files(
        &self,
        ctx: &RequestContext<'_>,
        storage: &dyn Storage,
        reads: FileRecordReads<'_>,
        out: &mut PduBuf,
    ) -> Result<(), ExceptionCode> {
        let mut total = 2usize;
        for r in reads.iter() {
            total = total.saturating_add(2 + 2 * r.length as usize);
        }
        if total > MAX_PDU {
            return Err(ExceptionCode::IllegalDataValue);
        }
        put(out, &[0x14, 0])?;
        for r in reads.iter() {
            let mut buf = [0u16; 125];
            let records = buf
                .get_mut(..r.length as usize)
                .ok_or(ExceptionCode::IllegalDataValue)?;
            storage.read_file_record(ctx, r.file, r.record, records)?;
            let sub_len = u8::try_from(1 + 2 * records.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
            put(out, &[sub_len, 6])?;
            put_u16s(out, records)?;
        }
        let data_len = u8::try_from(out.len().saturating_sub(2)).map_err(|_| ExceptionCode::ServerDeviceFailure)?;
        if let Some(b) = out.as_mut_slice().get_mut(1) {
            *b = data_len;
        }
        Ok(())
    }

    /// FC21: each sub-request's records to the storage, then the echo.
    pub(super) fn write_files(
        &self,
        ctx: &RequestContext<'_>,
        storage: &dyn Storage,
        writes: FileRecordWrites<'_>,
        out: &mut PduBuf,
    ) -> Result<(), ExceptionCode> {
        for (r, data) in writes.iter() {
            let mut buf = [0u16; 125];
            let records = buf.get_mut(..data.len()).ok_or(ExceptionCode::IllegalDataValue)?;
            data.copy_into(records);
            storage.write_file_record(ctx, r.file, r.record, records)?;
            if let Some(l) = &self.listener {
                l.on_file_write(ctx, r.file, r.record, r.length);
            }
        }
        let raw = writes.raw();
        let len = u8::try_from(raw.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
        put(out, &[0x15, len])?;
        put(out, raw)
    }

    /// FC24: the queue at `address`; more than 31 values is exception 03.
    pub(super) fn read_fifo(
        &self,
        ctx: &RequestContext<'_>,
        storage: &dyn Storage,
        address: u16,
        out: &mut PduBuf,
    ) -> Result<(), ExceptionCode> {
        let mut buf = [0u16; 31];
        let n = storage.read_fifo_queue(ctx, address, &mut buf)?;
        let values = buf.get(..n).ok_or(ExceptionCode::IllegalDataValue)?;
        write_fifo(out, values).map_err(encode_failure)
    }
}
