//! Serial-line diagnostics: FC7 (read exception status), FC8 (diagnostics,
//! every sub-function), FC11 (comm event counter), FC12 (comm event log).
//! What they read is counted in [`crate::diagnostics`]; the clearing and
//! restart of FC8 0x0A / 0x01 run after the answer is counted (`serve`).

use super::{put, put_u16s};
use crate::ExceptionCode;
use crate::diagnostics::{EVENT_LOG_LEN, event};
use crate::engine::{Effect, Engine, Outcome};
use crate::pdu::{DiagnosticRequest, PduBuf};
use crate::storage::{Device, RequestContext, Storage};

impl Engine {
    /// FC 0x08: every sub-function.
    pub(super) fn diagnostics(
        &self,
        device: &Device,
        sub: DiagnosticRequest<'_>,
        out: &mut PduBuf,
    ) -> Result<Outcome, ExceptionCode> {
        let diag = device.diagnostics();
        let sub_function = sub.sub_function();
        put(out, &[0x08])?;
        put_u16s(out, &[sub_function])?;
        match sub {
            DiagnosticRequest::ReturnQueryData(data) => put(out, data)?,
            DiagnosticRequest::RestartCommunications { clear_log } => {
                // Spec: "If the port is currently in Listen Only Mode, no
                // response is returned"; otherwise the echo is sent before the
                // restart. The restart itself runs after the answer is counted.
                put_u16s(out, &[if clear_log { 0xFF00 } else { 0x0000 }])?;
                return Ok(Outcome {
                    respond: !diag.listen_only(),
                    effect: Some(Effect::RestartCommunications),
                    delivery: None,
                });
            }
            DiagnosticRequest::ReturnDiagnosticRegister => put_u16s(out, &[diag.register()])?,
            DiagnosticRequest::ChangeAsciiDelimiter(d) => {
                put(out, &[d, 0x00])?;
                return Ok(Outcome {
                    respond: true,
                    effect: Some(Effect::SetAsciiDelimiter(d)),
                    delivery: None,
                });
            }
            DiagnosticRequest::ForceListenOnly => {
                diag.set_listen_only(true);
                diag.push_event(event::ENTERED_LISTEN_ONLY);
                out.clear();
                return Ok(Outcome::SILENT);
            }
            // Cleared in `serve` once this answer is counted, so the counters
            // read zero afterwards.
            DiagnosticRequest::ClearCounters => put_u16s(out, &[0x0000])?,
            DiagnosticRequest::ReturnCounter(counter) => {
                let value = if counter.is_bus() {
                    self.bus.get(counter)
                } else {
                    diag.get(counter)
                };
                put_u16s(out, &[value])?;
            }
            DiagnosticRequest::ClearOverrunCounter => {
                diag.clear_overrun();
                self.bus.clear_overrun();
                put_u16s(out, &[0x0000])?;
            }
        }
        Ok(Outcome::RESPOND)
    }

    /// FC7: the storage's exception status byte.
    pub(super) fn exception_status(
        &self,
        ctx: &RequestContext<'_>,
        storage: &dyn Storage,
        out: &mut PduBuf,
    ) -> Result<(), ExceptionCode> {
        let status = storage.read_exception_status(ctx)?;
        put(out, &[0x07, status])
    }

    /// FC11: status 0 and the device's comm event counter.
    pub(super) fn comm_event_counter(&self, device: &Device, out: &mut PduBuf) -> Result<(), ExceptionCode> {
        put(out, &[0x0B])?;
        put_u16s(out, &[0x0000, device.diagnostics().event_count()])
    }

    /// FC12: status, event count, bus message count and the event log.
    pub(super) fn comm_event_log(&self, device: &Device, out: &mut PduBuf) -> Result<(), ExceptionCode> {
        let diag = device.diagnostics();
        let mut events = [0u8; EVENT_LOG_LEN];
        let n = diag.events(&mut events);
        let events = events.get(..n).unwrap_or(&[]);
        // ok: n <= 64, so 6 + n fits a byte.
        let byte_count = u8::try_from(6 + n).map_err(|_| ExceptionCode::ServerDeviceFailure)?;
        put(out, &[0x0C, byte_count])?;
        put_u16s(
            out,
            &[
                0x0000,
                diag.event_count(),
                self.bus.get(crate::diagnostics::DiagnosticCounter::BusMessage),
            ],
        )?;
        put(out, events)
    }
}
