//! Identification: FC17 (report server id) and FC43 / MEI 14 (read device
//! identification), both from the engine's [`crate::Identity`].

use super::put;
use crate::ExceptionCode;
use crate::engine::Engine;
use crate::pdu::{DeviceIdCode, PduBuf};

impl Engine {
    /// FC17: byte count, the server id, run indicator.
    pub(super) fn report_server_id(&self, out: &mut PduBuf) -> Result<(), ExceptionCode> {
        let id = self.identity.server_id_bytes();
        let byte_count = u8::try_from(id.len() + 1).map_err(|_| ExceptionCode::ServerDeviceFailure)?;
        put(out, &[0x11, byte_count])?;
        put(out, id)?;
        put(out, &[if self.identity.is_running() { 0xFF } else { 0x00 }])
    }

    /// FC 0x2B / MEI 0x0E: Read Device Identification.
    pub(super) fn device_identification(
        &self,
        code: DeviceIdCode,
        object_id: u8,
        out: &mut PduBuf,
    ) -> Result<(), ExceptionCode> {
        let conformity = self.identity.conformity();
        put(out, &[0x2B, 0x0E, code as u8, conformity])?;
        if code == DeviceIdCode::Individual {
            let value = self.identity.get(object_id).ok_or(ExceptionCode::IllegalDataAddress)?;
            let len = u8::try_from(value.len()).map_err(|_| ExceptionCode::ServerDeviceFailure)?;
            put(out, &[0x00, 0x00, 1, object_id, len])?;
            put(out, value)?;
            return Ok(());
        }
        let last: u8 = match code {
            DeviceIdCode::Basic => 0x02,
            DeviceIdCode::Regular => 0x7F,
            _ => 0xFF,
        };
        // Spec: an object id that does not match a known object (of the
        // category asked for) restarts the stream at object 0.
        let first = if object_id <= last && self.identity.get(object_id).is_some() {
            object_id
        } else {
            0
        };
        // Header: more follows, next object id, number of objects (patched below).
        put(out, &[0x00, 0x00, 0x00])?;
        let mut count: u8 = 0;
        let mut next = None;
        for (id, value) in self.identity.objects_from(first).take_while(|(id, _)| *id <= last) {
            let len = u8::try_from(value.len()).map_err(|_| ExceptionCode::ServerDeviceFailure)?;
            if out.remaining() < 2 + value.len() {
                next = Some(id);
                break;
            }
            put(out, &[id, len])?;
            put(out, value)?;
            count = count.saturating_add(1);
        }
        if let Some(header) = out.as_mut_slice().get_mut(4..7) {
            header.copy_from_slice(&[if next.is_some() { 0xFF } else { 0x00 }, next.unwrap_or(0), count]);
        }
        Ok(())
    }
}
