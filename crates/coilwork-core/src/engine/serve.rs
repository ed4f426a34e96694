//! One request on one device: the listen-only and broadcast gates, the
//! authorizer and hooks around execution, and the diagnostics of the
//! exchange, recorded in one place ([`Engine::record`]) for every path.

use super::hooks::authorized;
use super::{Effect, Engine, HookAction, Outcome, RequestHook};
use crate::ExceptionCode;
use crate::diagnostics::{DiagnosticCounter, Diagnostics, event};
use crate::pdu::{DecodeError, DiagnosticRequest, PduBuf, Request};
use crate::storage::{Device, RequestContext};

/// What the diagnostics record of one exchange (see [`Engine::record`]).
#[derive(Debug, Clone, Copy)]
struct Exchange {
    /// The receive event (with its broadcast / listen-only bits).
    receive: u8,
    /// The exception code answered, if the answer is an exception.
    exception: Option<u8>,
    /// True if an answer is sent.
    respond: bool,
    /// True if the request executed successfully.
    executed: bool,
    /// False for FC11 and FC12, which do not count as comm events.
    counts_as_event: bool,
    /// False when no send event is logged (FC8 0x04 logs its own event).
    log_send: bool,
    /// True if the device was in listen-only mode.
    listen_only: bool,
    /// True if the server message and receive event were not recorded yet:
    /// the whole exchange goes in with one atomic add.
    batched: bool,
}

impl Exchange {
    /// An ordinary request's exchange, recorded in one add.
    #[inline]
    fn plain(exception: Option<u8>, respond: bool) -> Self {
        Self {
            receive: event::RECEIVE,
            exception,
            respond,
            executed: true,
            counts_as_event: true,
            log_send: true,
            listen_only: false,
            batched: true,
        }
    }
}

/// True for requests that read or change the device's diagnostics, or run
/// user code: they record their exchange step by step.
#[inline]
fn touches_diagnostics(request: &Request<'_>) -> bool {
    matches!(
        request,
        Request::Diagnostics(_) | Request::GetCommEventCounter | Request::GetCommEventLog | Request::Custom { .. }
    )
}

/// The exception code in `out`, if it holds an exception answer.
#[inline]
pub(super) fn answered_exception(out: &PduBuf) -> Option<u8> {
    match out.as_slice() {
        [function, code, ..] if function & 0x80 != 0 => Some(*code),
        _ => None,
    }
}

/// The send-event bits for an exception code (Modbus spec, FC12).
fn exception_event_bits(code: u8) -> u8 {
    match code {
        0x01..=0x03 => event::SEND_READ_EXCEPTION,
        0x04 => event::SEND_ABORT_EXCEPTION,
        0x05 | 0x06 => event::SEND_BUSY_EXCEPTION,
        0x07 => event::SEND_NAK_EXCEPTION,
        _ => 0,
    }
}

/// A request that failed to decode: the exception the spec prescribes,
/// which the hook may rewrite or drop.
fn reject(ctx: &RequestContext<'_>, e: &DecodeError, out: &mut PduBuf, hook: Option<&dyn RequestHook>) -> Outcome {
    out.set_exception(e.function, e.exception);
    let mut outcome = Outcome::RESPOND;
    if let Some(hook) = hook {
        match hook.on_rejected(ctx, e, out) {
            HookAction::Continue | HookAction::Respond => {}
            HookAction::Exception(x) => out.set_exception(e.function, x),
            HookAction::NoResponse => outcome.respond = false,
        }
    }
    outcome
}

impl Engine {
    /// [`Engine::serve`] for an ordinary request (not FC8, FC11, FC12 or a
    /// custom function) to a device not in listen-only mode, on an engine
    /// with no authorizer and no engaged hook: execution, then the whole exchange
    /// recorded in one atomic add. `None`: not such a request, take
    /// [`Engine::serve`] (nothing was done).
    #[inline]
    pub(super) fn serve_plain(
        &self,
        ctx: &RequestContext<'_>,
        device: &Device,
        request: &Request<'_>,
        out: &mut PduBuf,
    ) -> Option<Outcome> {
        if touches_diagnostics(request) {
            return None;
        }
        let diag = device.diagnostics();
        if diag.listen_only() {
            return None;
        }
        // A decoded request's function code is `ctx.function`. The
        // commonest requests inline; the rest through `execute`.
        let result = match *request {
            Request::ReadHoldingRegisters(range) | Request::ReadInputRegisters(range) => {
                self.read_registers(ctx, device.storage(), range, out)
            }
            Request::WriteMultipleRegisters { range, values } => {
                self.write_registers(ctx, device.storage(), range, values, out)
            }
            _ => self.execute(ctx, device, request, out),
        };
        Some(match result {
            Ok(outcome) => {
                self.record(diag, Exchange::plain(None, outcome.respond));
                outcome
            }
            Err(code) => {
                out.set_exception(ctx.function, code);
                self.record(diag, Exchange::plain(Some(code.code()), true));
                Outcome::RESPOND
            }
        })
    }

    /// Runs one decoded request on one device: listen-only gate, hooks,
    /// execution, diagnostics and event log. `hook`: the engine's hook if
    /// it is engaged for this request.
    pub(super) fn serve(
        &self,
        ctx: &RequestContext<'_>,
        device: &Device,
        decoded: Result<Request<'_>, DecodeError>,
        out: &mut PduBuf,
        broadcast: bool,
        hook: Option<&dyn RequestHook>,
    ) -> Outcome {
        let diag = device.diagnostics();
        let listen_only = diag.listen_only();
        let mut receive = event::RECEIVE;
        if broadcast {
            receive |= event::RECEIVE_BROADCAST;
        }
        if listen_only {
            receive |= event::RECEIVE_LISTEN_ONLY;
        }
        // An ordinary request records its whole exchange (server message,
        // receive event, comm event, send event) in one atomic add once it
        // is answered: nothing it runs reads the device's diagnostics, so
        // the counts and the log come out as if recorded step by step.
        let batched = !broadcast && !listen_only && hook.is_none() && decoded.is_ok_and(|r| !touches_diagnostics(&r));
        if !batched {
            diag.increment(DiagnosticCounter::ServerMessage);
            diag.push_event(receive);
        }
        let restart = match decoded {
            Ok(Request::Diagnostics(DiagnosticRequest::RestartCommunications { clear_log })) => Some(clear_log),
            _ => None,
        };
        // Listen-only: the device monitors but executes and answers nothing,
        // except the restart that ends the mode. A broadcast executes writes
        // only; anything else (reads, decode errors) is ignored.
        if listen_only && restart.is_none() {
            diag.increment(DiagnosticCounter::ServerNoResponse);
            return Outcome::SILENT;
        }
        if broadcast && !decoded.is_ok_and(|r| r.is_write()) {
            diag.increment(DiagnosticCounter::ServerNoResponse);
            diag.push_event(event::SEND);
            return Outcome::SILENT;
        }
        let (mut outcome, executed) = match decoded {
            Err(e) => (reject(ctx, &e, out, hook), false),
            Ok(request) => self.answer(ctx, device, request, out, hook),
        };
        outcome.respond &= !broadcast;
        // Diagnostics, in the order the spec's event log expects: the answer
        // (or its absence) first, then a restart's clearing.
        let forced = matches!(decoded, Ok(Request::Diagnostics(DiagnosticRequest::ForceListenOnly)));
        let exchange = Exchange {
            receive,
            exception: if outcome.respond { answered_exception(out) } else { None },
            respond: outcome.respond,
            executed,
            counts_as_event: !matches!(ctx.function, 0x0B | 0x0C),
            log_send: !(forced && executed),
            listen_only,
            batched,
        };
        self.record(diag, exchange);
        let cleared = executed && matches!(decoded, Ok(Request::Diagnostics(DiagnosticRequest::ClearCounters)));
        self.after_answer(diag, cleared, restart, outcome.effect);
        outcome
    }

    /// A decoded request: the authorizer, the hook's `on_request`,
    /// execution, then `on_response` and `delivery`. Also returns whether
    /// the request executed successfully.
    fn answer(
        &self,
        ctx: &RequestContext<'_>,
        device: &Device,
        mut request: Request<'_>,
        out: &mut PduBuf,
        hook: Option<&dyn RequestHook>,
    ) -> (Outcome, bool) {
        let denied = self
            .authorizer
            .as_deref()
            .is_some_and(|auth| !authorized(auth, ctx, &request));
        let action = match hook {
            _ if denied => HookAction::Exception(ExceptionCode::IllegalFunction),
            Some(hook) => hook.on_request(ctx, &mut request, out),
            None => HookAction::Continue,
        };
        let mut executed = false;
        let result = match action {
            HookAction::Continue => {
                let ctx = RequestContext {
                    function: request.function(),
                    ..*ctx
                };
                let r = self.execute(&ctx, device, &request, out);
                executed = r.is_ok();
                r
            }
            HookAction::Respond => Ok(Outcome::RESPOND),
            HookAction::Exception(e) => Err(e),
            HookAction::NoResponse => Ok(Outcome::SILENT),
        };
        let mut outcome = result.unwrap_or_else(|e| {
            out.set_exception(ctx.function, e);
            Outcome::RESPOND
        });
        if outcome.respond
            && let Some(hook) = hook
        {
            match hook.on_response(ctx, &request, out) {
                HookAction::Continue | HookAction::Respond => {}
                HookAction::Exception(e) => out.set_exception(ctx.function, e),
                HookAction::NoResponse => outcome.respond = false,
            }
            if outcome.respond {
                outcome.delivery = hook.delivery(ctx, &request, out.as_slice()).map(Box::new);
            }
        }
        (outcome, executed)
    }

    /// Records one exchange in the device's diagnostics: exception counts,
    /// no-response count, comm event counter and send event. The only place
    /// an answer is counted.
    #[inline(always)]
    fn record(&self, diag: &Diagnostics, x: Exchange) {
        let mut completed = false;
        let mut send_event = None;
        if let Some(code) = x.exception {
            self.count_exception(diag, code);
            send_event = Some(event::SEND | exception_event_bits(code));
        } else {
            if x.respond {
                completed = x.counts_as_event;
            } else {
                diag.increment(DiagnosticCounter::ServerNoResponse);
                completed = x.executed && x.counts_as_event;
            }
            if x.log_send {
                send_event = Some(if x.listen_only {
                    event::SEND | event::SEND_LISTEN_ONLY
                } else {
                    event::SEND
                });
            }
        }
        if x.batched {
            diag.record_exchange(x.receive, send_event, completed);
        } else {
            if completed {
                diag.increment_event_count();
            }
            if let Some(send) = send_event {
                diag.push_event(send);
            }
        }
    }

    /// Counts an exception answer on the device.
    #[inline]
    fn count_exception(&self, diag: &Diagnostics, code: u8) {
        diag.increment(DiagnosticCounter::BusExceptionError);
        match code {
            0x06 => diag.increment(DiagnosticCounter::ServerBusy),
            0x07 => diag.increment(DiagnosticCounter::ServerNak),
            _ => {}
        }
    }

    /// What runs once the answer is counted: FC8 0x0A clears the counters
    /// (so they read 0 afterwards), FC8 0x01 restarts communications.
    fn after_answer(&self, diag: &Diagnostics, cleared: bool, restart: Option<bool>, effect: Option<Effect>) {
        if cleared {
            diag.clear_counters();
            self.bus.clear_counters();
        }
        if let (Some(clear_log), Some(Effect::RestartCommunications)) = (restart, effect) {
            diag.set_listen_only(false);
            diag.clear_counters();
            self.bus.clear_counters();
            if clear_log {
                diag.clear_log();
            }
            diag.push_event(event::COMM_RESTART);
        }
    }
}
