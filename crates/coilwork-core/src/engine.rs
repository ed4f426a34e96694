//! The engine: executes request PDUs against a [`ServerContext`].
//!
//! For each request it runs the spec's validation order (function supported
//! → 01, quantity / value / byte count → 03, address range → 02, execution →
//! 04), applies the options (missing devices, broadcast, listen-only),
//! checks the [`Authorizer`] if one is installed (Modbus/TCP Security roles:
//! a denied request gets exception 01 before hooks and storage see it),
//! counts diagnostics, calls hooks and custom handlers, and writes the
//! response PDU into a caller's [`PduBuf`]. It holds no connection state and
//! is shared by every connection of a server (`Arc<Engine>`).
//!
//! Diagnostics follow the serial line spec, counted on every transport:
//! - bus message count: every PDU handed to [`Engine::handle`] (any unit)
//!   plus frames dropped for CRC/LRC/hex/truncation (which also count as
//!   bus communication errors); a frame too long counts as an overrun;
//! - per device: server message count for every message addressed to it or
//!   broadcast; no-response count for broadcasts, listen-only and FC8 0x04;
//!   exception count (and NAK/busy counts for 07/06) for every exception sent;
//! - comm event counter (FC11): each successful completion, answered or not
//!   (broadcast writes, FC8 0x04), except FC11/FC12 and exceptions;
//! - event log (FC12): a receive event per message, then a send event per
//!   processed message (answered, exception or deliberately silent). In
//!   listen-only mode only the receive event is logged (nothing is processed);
//!   FC8 0x04 logs "entered listen-only" (0x04) instead of a send event.
//! - FC8 0x01 (restart): answered (echo) unless the device was in
//!   listen-only mode, as the spec says; the restart runs after the answer is
//!   counted: listen-only ends, the device's and the bus counters are
//!   cleared, the log too for data 0xFF00, then event 0x00 is logged. FC8
//!   0x0A clears the device's and the bus counters the same way, after its
//!   own answer is counted, so they read 0 afterwards.

use crate::ExceptionCode;
use crate::address::AddressRange;
use crate::diagnostics::{DiagnosticCounter, Diagnostics, EVENT_LOG_LEN, event};
use crate::error::{ConfigError, FrameError};
use crate::frame::PduLength;
use crate::identity::Identity;
use crate::pdu::response::{write_bits, write_fifo, write_registers};
use crate::pdu::{DecodeError, DeviceIdCode, DiagnosticRequest, EncodeError, PduBuf, RegisterBytes, Request};
use crate::storage::server::DeviceCache;
use crate::storage::{Device, RequestContext, ServerContext, Storage, Table};
use std::sync::Arc;
use std::time::Duration;

/// Engine options, mirroring pymodbus's server options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineOptions {
    /// What an unknown unit id gets. `Some(true)`: no answer at all.
    /// `Some(false)`: exception 0x0B (gateway target failed to respond).
    /// `None` (default): per transport — on a serial line never answered
    /// (the bus carries other devices' traffic), on TCP/UDP/TLS exception 0x0B
    /// as pymodbus does.
    pub ignore_missing_devices: Option<bool>,
    /// Serial unit 0 is a broadcast: writes execute on every device and are
    /// never answered. Off: unit 0 is ignored on a serial line. On TCP, UDP
    /// and TLS, units 0 and 0xFF are ordinary ids either way.
    pub broadcast_enable: bool,
}

/// A handler for a function code the spec leaves to users (65–72, 100–110)
/// or any code not taken.
pub trait CustomFunction: Send + Sync {
    /// The function code handled (1..=127, not a public code).
    fn function_code(&self) -> u8;

    /// Length of a request PDU (function code included) from its first bytes,
    /// for RTU framing over streams. Default: unknown (framed by CRC scan).
    fn request_pdu_length(&self, pdu: &[u8]) -> PduLength {
        let _ = pdu;
        PduLength::Unknown
    }

    /// Executes the request (`data` is everything after the function code)
    /// and writes the whole response PDU, function code first, into `response`.
    /// An `Err` is sent as an exception response.
    fn execute(
        &self,
        ctx: &RequestContext<'_>,
        storage: &dyn Storage,
        data: &[u8],
        response: &mut PduBuf,
    ) -> Result<(), ExceptionCode>;
}

/// What a hook decides about a request or a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookAction {
    /// Go on as normal.
    Continue,
    /// The hook wrote the whole response PDU into the buffer it was given: send it.
    Respond,
    /// Answer with this exception.
    Exception(ExceptionCode),
    /// Send nothing (the request is swallowed).
    NoResponse,
}

/// User code that sees every decoded request and every answer: the base for
/// logging, authorization, fault injection and simulators.
pub trait RequestHook: Send + Sync {
    /// Called with each decoded request before it executes. The hook may
    /// change it, answer it itself (write into `response`, return
    /// [`HookAction::Respond`]), answer an exception, or swallow it.
    fn on_request(&self, ctx: &RequestContext<'_>, request: &mut Request<'_>, response: &mut PduBuf) -> HookAction {
        let _ = (ctx, request, response);
        HookAction::Continue
    }

    /// Called with each response PDU before it is framed. The hook may
    /// rewrite `response` (and return [`HookAction::Respond`] or
    /// [`HookAction::Continue`]), replace it with an exception, or drop it.
    fn on_response(&self, ctx: &RequestContext<'_>, request: &Request<'_>, response: &mut PduBuf) -> HookAction {
        let _ = (ctx, request, response);
        HookAction::Continue
    }

    /// Called instead of [`RequestHook::on_request`] and
    /// [`RequestHook::on_response`] for a request that failed to decode:
    /// `response` already holds the exception the spec prescribes (`error`).
    /// The hook may rewrite it, replace it with another exception, or drop
    /// it, so that it sees every answer.
    fn on_rejected(&self, ctx: &RequestContext<'_>, error: &DecodeError, response: &mut PduBuf) -> HookAction {
        let _ = (ctx, error, response);
        HookAction::Continue
    }

    /// Called last, with the final response PDU of an answer that will be
    /// sent: how the adapter should deliver it (delayed, split in two
    /// writes, garbled). Default: `None`, at once and whole.
    fn delivery(&self, ctx: &RequestContext<'_>, request: &Request<'_>, response: &[u8]) -> Option<Delivery> {
        let _ = (ctx, request, response);
        None
    }
}

/// How an adapter delivers one answer: a fault-injection knob for
/// simulators and tests ([`RequestHook::delivery`]). The connection turns it
/// into pauses in its output ([`crate::Connection::next_output`]) and, for
/// `garble`, corrupts the framed bytes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delivery {
    /// Pause before the answer's first byte is written.
    pub delay: Duration,
    /// `Some((at, pause))`: write the first `at` bytes of the framed answer,
    /// pause, then write the rest.
    pub split: Option<(u16, Duration)>,
    /// Corrupt the framed answer so a client must reject it: the CRC (RTU),
    /// the LRC (ASCII) or the protocol identifier (MBAP) is made wrong.
    pub garble: bool,
}

/// Whether an access reads or changes data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// The access only reads.
    Read,
    /// The access changes data (or, for requests with no table, is a write
    /// function such as FC21).
    Write,
}

/// One access a request makes, as an [`Authorizer`] sees it.
///
/// Data functions name their table and addresses: FC1–4 and FC15/16 their
/// range, FC5/6 and FC22 one address, FC24 its FIFO pointer address; FC23
/// asks twice (the read, then the write). Other functions have `data: None`
/// and `access` [`Access::Write`] if they are writes (FC21).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessRequest<'a> {
    /// The role from the client's TLS certificate, if any.
    pub role: Option<&'a str>,
    /// Unit id the request is addressed to.
    pub unit: u8,
    /// Function code of the request.
    pub function: u8,
    /// Read or write.
    pub access: Access,
    /// The table and addresses accessed, for data functions.
    pub data: Option<(Table, AddressRange)>,
}

/// Decides, per request, whether a client may make it (Modbus/TCP Security
/// role-based authorization). A denied request is answered with exception
/// 01 (Illegal Function), as the Modbus/TCP Security spec says: the request
/// hook's `on_request` and the storage never see it (`on_response` sees the
/// exception). Requests that fail to decode get their own exception first.
pub trait Authorizer: Send + Sync {
    /// True if the access is allowed.
    fn authorize(&self, request: &AccessRequest<'_>) -> bool;
}

/// Asks `auth` about every access of `request`; true if all are allowed
/// (the engine's check, also used by the gateway before forwarding).
pub fn authorized(auth: &dyn Authorizer, ctx: &RequestContext<'_>, request: &Request<'_>) -> bool {
    let function = request.function();
    let ask = |access: Access, data: Option<(Table, AddressRange)>| {
        auth.authorize(&AccessRequest {
            role: ctx.tls_role,
            unit: ctx.unit,
            function,
            access,
            data,
        })
    };
    let one = |table: Table, address: u16| AddressRange::new(address, 1).map(|r| (table, r));
    match *request {
        Request::ReadCoils(r) => ask(Access::Read, Some((Table::Coils, r))),
        Request::ReadDiscreteInputs(r) => ask(Access::Read, Some((Table::DiscreteInputs, r))),
        Request::ReadHoldingRegisters(r) => ask(Access::Read, Some((Table::HoldingRegisters, r))),
        Request::ReadInputRegisters(r) => ask(Access::Read, Some((Table::InputRegisters, r))),
        Request::WriteSingleCoil { address, .. } => ask(Access::Write, one(Table::Coils, address)),
        Request::WriteSingleRegister { address, .. } | Request::MaskWriteRegister { address, .. } => {
            ask(Access::Write, one(Table::HoldingRegisters, address))
        }
        Request::WriteMultipleCoils { range, .. } => ask(Access::Write, Some((Table::Coils, range))),
        Request::WriteMultipleRegisters { range, .. } => ask(Access::Write, Some((Table::HoldingRegisters, range))),
        Request::ReadWriteMultipleRegisters { read, write, .. } => {
            ask(Access::Read, Some((Table::HoldingRegisters, read)))
                && ask(Access::Write, Some((Table::HoldingRegisters, write)))
        }
        Request::ReadFifoQueue { address } => ask(Access::Read, one(Table::HoldingRegisters, address)),
        _ => ask(
            if request.is_write() {
                Access::Write
            } else {
                Access::Read
            },
            None,
        ),
    }
}

/// Told after a client's write changed data.
pub trait WriteListener: Send + Sync {
    /// `count` entries of `table` from `start` were written by the request in `ctx`.
    fn on_write(&self, ctx: &RequestContext<'_>, table: Table, start: u16, count: u16);

    /// Records of `file` from `record` were written (FC21). Default: nothing.
    fn on_file_write(&self, ctx: &RequestContext<'_>, file: u16, record: u16, count: u16) {
        let _ = (ctx, file, record, count);
    }
}

/// A change the connection must apply after a request (connection state the
/// engine does not own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// FC8 0x03: use this byte as the ASCII end-of-message delimiter.
    SetAsciiDelimiter(u8),
    /// FC8 0x01: communications restarted.
    RestartCommunications,
}

/// What came of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Outcome {
    /// True if the PDU buffer holds a response to send.
    pub respond: bool,
    /// A change for the connection to apply.
    pub effect: Option<Effect>,
    /// How to deliver the answer (from [`RequestHook::delivery`]); `None`:
    /// at once. Boxed: only fault injection sets it, and a pointer keeps an
    /// `Outcome` two registers wide for every other answer.
    pub delivery: Option<Box<Delivery>>,
}

impl Outcome {
    /// Send the response in the buffer.
    pub const RESPOND: Self = Self {
        respond: true,
        effect: None,
        delivery: None,
    };
    /// Send nothing.
    pub const SILENT: Self = Self {
        respond: false,
        effect: None,
        delivery: None,
    };
}

/// The shared request executor of one server.
pub struct Engine {
    context: ServerContext,
    options: EngineOptions,
    identity: Identity,
    custom: Vec<Arc<dyn CustomFunction>>,
    hook: Option<Arc<dyn RequestHook>>,
    listener: Option<Arc<dyn WriteListener>>,
    authorizer: Option<Arc<dyn Authorizer>>,
    /// No hook and no authorizer: ordinary requests take [`Engine::serve_plain`].
    plain: bool,
    bus: Diagnostics,
}

impl core::fmt::Debug for Engine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Engine")
            .field("options", &self.options)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Builds an [`Engine`].
pub struct EngineBuilder {
    context: ServerContext,
    options: EngineOptions,
    identity: Identity,
    custom: Vec<Arc<dyn CustomFunction>>,
    hook: Option<Arc<dyn RequestHook>>,
    listener: Option<Arc<dyn WriteListener>>,
    authorizer: Option<Arc<dyn Authorizer>>,
}

impl EngineBuilder {
    /// Sets the options.
    pub fn options(mut self, options: EngineOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets the identity served by FC 0x2B/0x0E and FC 0x11.
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = identity;
        self
    }

    /// Registers a custom function handler; fails for a public code, an
    /// invalid code or a code registered twice.
    pub fn custom_function(mut self, handler: Arc<dyn CustomFunction>) -> Result<Self, ConfigError> {
        let code = handler.function_code();
        if code == 0 || code >= 0x80 {
            return Err(ConfigError::BadFunctionCode(code));
        }
        if crate::FunctionCode(code).is_standard() || self.custom.iter().any(|h| h.function_code() == code) {
            return Err(ConfigError::FunctionCodeTaken(code));
        }
        self.custom.push(handler);
        Ok(self)
    }

    /// Installs a request hook.
    pub fn hook(mut self, hook: Arc<dyn RequestHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Installs a write listener.
    pub fn write_listener(mut self, listener: Arc<dyn WriteListener>) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Installs an authorizer: every decoded request is checked before hooks
    /// and execution; a denied one gets exception 01.
    pub fn authorizer(mut self, authorizer: Arc<dyn Authorizer>) -> Self {
        self.authorizer = Some(authorizer);
        self
    }

    /// Finishes the engine.
    pub fn build(self) -> Engine {
        Engine {
            context: self.context,
            options: self.options,
            identity: self.identity,
            custom: self.custom,
            plain: self.hook.is_none() && self.authorizer.is_none(),
            hook: self.hook,
            listener: self.listener,
            authorizer: self.authorizer,
            bus: Diagnostics::new(),
        }
    }
}

impl Engine {
    /// Starts building an engine over `context`.
    pub fn builder(context: ServerContext) -> EngineBuilder {
        EngineBuilder {
            context,
            options: EngineOptions::default(),
            identity: Identity::new(),
            custom: Vec::new(),
            hook: None,
            listener: None,
            authorizer: None,
        }
    }

    /// The devices.
    pub fn context(&self) -> &ServerContext {
        &self.context
    }

    /// The options.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// The identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Bus-level diagnostics (bus message, communication error, overrun counts).
    pub fn bus_diagnostics(&self) -> &Diagnostics {
        &self.bus
    }

    /// The custom handler for `function`, if one is registered.
    pub fn custom_function(&self, function: u8) -> Option<&Arc<dyn CustomFunction>> {
        self.custom.iter().find(|h| h.function_code() == function)
    }

    /// PDU length of a custom request from its first bytes (for RTU framing).
    pub fn custom_pdu_length(&self, pdu: &[u8]) -> PduLength {
        match pdu.first().and_then(|f| self.custom_function(*f)) {
            Some(h) => h.request_pdu_length(pdu),
            None => PduLength::Unknown,
        }
    }

    /// Counts a frame the bus carried that could not be used (CRC/LRC error, garbage).
    ///
    /// CRC, LRC, hex and truncated frames are messages the bus carried that
    /// could not be used: they count as bus messages and bus communication
    /// errors. A frame too long for the receive buffer counts as a character
    /// overrun. Garbage between frames and empty PDUs are not messages.
    pub fn note_frame_error(&self, error: &FrameError) {
        match error {
            FrameError::BadCrc { .. } | FrameError::BadLrc { .. } | FrameError::BadHex | FrameError::Truncated(_) => {
                self.bus.increment(DiagnosticCounter::BusMessage);
                self.bus.increment(DiagnosticCounter::BusCommunicationError);
            }
            FrameError::TooLong(_) => {
                self.bus.increment(DiagnosticCounter::BusMessage);
                self.bus.increment(DiagnosticCounter::BusCharacterOverrun);
            }
            FrameError::Garbage(_) | FrameError::EmptyPdu | FrameError::BadProtocolId(_) | FrameError::BadLength(_) => {
            }
        }
    }

    /// Executes one request PDU that arrived for `ctx.unit` and writes the
    /// answer into `out`. `ctx.function` is filled in by the engine.
    ///
    /// On a serial line unit 0 is a broadcast (executed on every device when
    /// [`EngineOptions::broadcast_enable`], never answered) and an unknown
    /// unit is not answered by default; elsewhere an unknown unit gets
    /// exception 0x0B by default (see [`EngineOptions::ignore_missing_devices`]).
    pub fn handle(&self, ctx: &RequestContext<'_>, pdu: &[u8], out: &mut PduBuf) -> Outcome {
        let ctx = RequestContext {
            function: pdu.first().copied().unwrap_or(0) & 0x7F,
            ..*ctx
        };
        self.handle_cached(&ctx, pdu, out, &mut DeviceCache::default())
    }

    /// [`Engine::handle`] with the caller's device lookup cache (a
    /// connection keeps one, so steady traffic to one unit takes no lock and
    /// touches no shared reference count to find its device).
    /// `ctx.function` must be the PDU's function code without the
    /// exception bit (the connection sets it once per request, into a
    /// context it builds once per input).
    pub(crate) fn handle_cached(
        &self,
        ctx: &RequestContext<'_>,
        pdu: &[u8],
        out: &mut PduBuf,
        devices: &mut DeviceCache,
    ) -> Outcome {
        self.bus.increment(DiagnosticCounter::BusMessage);
        out.clear();
        let function = ctx.function;
        let serial = ctx.transport.is_serial();
        if serial && ctx.unit == 0 {
            if self.options.broadcast_enable {
                let decoded = Request::decode(pdu);
                self.context.for_each_device(&mut |_, device| {
                    let _ = self.serve(ctx, device, decoded, out, true);
                });
                out.clear();
            }
            return Outcome::SILENT;
        }
        match devices.get(&self.context, ctx.unit) {
            Some(device) => {
                let decoded = Request::decode(pdu);
                if self.plain
                    && let Ok(request) = &decoded
                    && let Some(outcome) = self.serve_plain(ctx, device, request, out)
                {
                    return outcome;
                }
                self.serve(ctx, device, decoded, out, false)
            }
            None => {
                if self.options.ignore_missing_devices.unwrap_or(serial) {
                    Outcome::SILENT
                } else {
                    out.set_exception(function, ExceptionCode::GatewayTargetFailedToRespond);
                    Outcome::RESPOND
                }
            }
        }
    }

    /// [`Engine::serve`] for an ordinary request (not FC8, FC11, FC12 or a
    /// custom function) to a device not in listen-only mode, on an engine
    /// with no hook and no authorizer: execution, then the whole exchange
    /// recorded in one atomic add. `None`: not such a request, take
    /// [`Engine::serve`] (nothing was done).
    #[inline]
    fn serve_plain(
        &self,
        ctx: &RequestContext<'_>,
        device: &Device,
        request: &Request<'_>,
        out: &mut PduBuf,
    ) -> Option<Outcome> {
        if matches!(
            request,
            Request::Diagnostics(_) | Request::GetCommEventCounter | Request::GetCommEventLog | Request::Custom { .. }
        ) {
            return None;
        }
        let diag = device.diagnostics();
        if diag.listen_only() {
            return None;
        }
        // As `serve` records it: a decoded request's function code is
        // `ctx.function`, and none of these is FC11/FC12 (not events).
        // The commonest requests inline; the rest through `execute`.
        let result = match *request {
            Request::ReadHoldingRegisters(range) | Request::ReadInputRegisters(range) => {
                self.read_registers(ctx, device.storage(), range, out)
            }
            Request::WriteMultipleRegisters { range, values } => {
                self.write_registers(ctx, device.storage(), range, values, out)
            }
            _ => self.execute(ctx, device, request, out),
        };
        let outcome = match result {
            Ok(outcome) => {
                if !outcome.respond {
                    diag.increment(DiagnosticCounter::ServerNoResponse);
                }
                diag.record_exchange(event::RECEIVE, Some(event::SEND), true);
                outcome
            }
            Err(code) => {
                out.set_exception(ctx.function, code);
                self.count_exception(diag, code.code());
                diag.record_exchange(
                    event::RECEIVE,
                    Some(event::SEND | exception_event_bits(code.code())),
                    false,
                );
                Outcome::RESPOND
            }
        };
        Some(outcome)
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

    /// Runs one decoded request on one device: listen-only gate, hooks,
    /// execution, diagnostics and event log.
    fn serve(
        &self,
        ctx: &RequestContext<'_>,
        device: &Device,
        decoded: Result<Request<'_>, DecodeError>,
        out: &mut PduBuf,
        broadcast: bool,
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
        // Requests that read or change them (FC8, FC11, FC12), custom
        // functions, hooks, broadcasts and listen-only record step by step.
        let batched = !broadcast
            && !listen_only
            && self.hook.is_none()
            && decoded.is_ok_and(|r| {
                !matches!(
                    r,
                    Request::Diagnostics(_)
                        | Request::GetCommEventCounter
                        | Request::GetCommEventLog
                        | Request::Custom { .. }
                )
            });
        if !batched {
            diag.increment(DiagnosticCounter::ServerMessage);
            diag.push_event(receive);
        }

        let restart = match decoded {
            Ok(Request::Diagnostics(DiagnosticRequest::RestartCommunications { clear_log })) => Some(clear_log),
            _ => None,
        };
        // Listen-only: the device monitors but executes and answers nothing,
        // except the restart that ends the mode.
        if listen_only && restart.is_none() {
            diag.increment(DiagnosticCounter::ServerNoResponse);
            return Outcome::SILENT;
        }
        // A broadcast executes writes only; anything else (reads, decode
        // errors) is ignored.
        if broadcast && !decoded.is_ok_and(|r| r.is_write()) {
            diag.increment(DiagnosticCounter::ServerNoResponse);
            diag.push_event(event::SEND);
            return Outcome::SILENT;
        }

        let mut executed = false;
        let mut outcome = match decoded {
            Err(e) => {
                out.set_exception(e.function, e.exception);
                let mut outcome = Outcome::RESPOND;
                if let Some(hook) = &self.hook {
                    match hook.on_rejected(ctx, &e, out) {
                        HookAction::Continue | HookAction::Respond => {}
                        HookAction::Exception(x) => out.set_exception(e.function, x),
                        HookAction::NoResponse => outcome.respond = false,
                    }
                }
                outcome
            }
            Ok(mut request) => {
                let denied = self
                    .authorizer
                    .as_deref()
                    .is_some_and(|auth| !authorized(auth, ctx, &request));
                let action = if denied {
                    HookAction::Exception(ExceptionCode::IllegalFunction)
                } else {
                    match &self.hook {
                        Some(hook) => hook.on_request(ctx, &mut request, out),
                        None => HookAction::Continue,
                    }
                };
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
                let mut outcome = match result {
                    Ok(o) => o,
                    Err(e) => {
                        out.set_exception(ctx.function, e);
                        Outcome::RESPOND
                    }
                };
                if outcome.respond
                    && let Some(hook) = &self.hook
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
                outcome
            }
        };
        if broadcast {
            outcome.respond = false;
        }

        // Diagnostics, in the order the spec's event log expects: the answer
        // (or its absence) first, then a restart's clearing.
        let exception = if outcome.respond && out.as_slice().first().is_some_and(|f| f & 0x80 != 0) {
            out.as_slice().get(1).copied()
        } else {
            None
        };
        let counts_as_event = !matches!(ctx.function, 0x0B | 0x0C);
        let mut completed = false;
        let mut send_event = None;
        if let Some(code) = exception {
            self.count_exception(diag, code);
            send_event = Some(event::SEND | exception_event_bits(code));
        } else {
            if outcome.respond {
                completed = counts_as_event;
            } else {
                diag.increment(DiagnosticCounter::ServerNoResponse);
                completed = executed && counts_as_event;
            }
            // Force listen-only logs its own "entered listen-only" event instead.
            let forced = matches!(decoded, Ok(Request::Diagnostics(DiagnosticRequest::ForceListenOnly)));
            if !(forced && executed) {
                let mut send = event::SEND;
                if listen_only {
                    send |= event::SEND_LISTEN_ONLY;
                }
                send_event = Some(send);
            }
        }
        if batched {
            diag.record_exchange(receive, send_event, completed);
        } else {
            if completed {
                diag.increment_event_count();
            }
            if let Some(send) = send_event {
                diag.push_event(send);
            }
        }
        if executed && matches!(decoded, Ok(Request::Diagnostics(DiagnosticRequest::ClearCounters))) {
            diag.clear_counters();
            self.bus.clear_counters();
        }
        if let (Some(clear_log), Some(Effect::RestartCommunications)) = (restart, outcome.effect) {
            diag.set_listen_only(false);
            diag.clear_counters();
            self.bus.clear_counters();
            if clear_log {
                diag.clear_log();
            }
            diag.push_event(event::COMM_RESTART);
        }
        outcome
    }

    /// Executes a validated request on a device, writing the answer into `out`.
    fn execute(
        &self,
        ctx: &RequestContext<'_>,
        device: &Device,
        request: &Request<'_>,
        out: &mut PduBuf,
    ) -> Result<Outcome, ExceptionCode> {
        let storage = device.storage();
        let function = request.function();
        match *request {
            Request::ReadCoils(range) | Request::ReadDiscreteInputs(range) => {
                let mut buf = [false; 2000];
                let bits = buf.get_mut(..range.len()).ok_or(ExceptionCode::IllegalDataValue)?;
                if function == 0x01 {
                    storage.read_coils(ctx, range.start(), bits)?;
                } else {
                    storage.read_discrete_inputs(ctx, range.start(), bits)?;
                }
                write_bits(out, function, bits).map_err(encode_failure)?;
            }
            Request::ReadHoldingRegisters(range) | Request::ReadInputRegisters(range) => {
                return self.read_registers(ctx, storage, range, out);
            }
            Request::WriteSingleCoil { address, value } => {
                storage.write_coils(ctx, address, &[value])?;
                self.wrote(ctx, Table::Coils, address, 1);
                put(out, &[function])?;
                put_u16s(out, &[address, if value { 0xFF00 } else { 0x0000 }])?;
            }
            Request::WriteSingleRegister { address, value } => {
                storage.write_holding_registers(ctx, address, &[value])?;
                self.wrote(ctx, Table::HoldingRegisters, address, 1);
                put(out, &[function])?;
                put_u16s(out, &[address, value])?;
            }
            Request::ReadExceptionStatus => {
                let status = storage.read_exception_status(ctx)?;
                put(out, &[function, status])?;
            }
            Request::Diagnostics(sub) => return self.diagnostics(device, sub, out),
            Request::GetCommEventCounter => {
                put(out, &[function])?;
                put_u16s(out, &[0x0000, device.diagnostics().event_count()])?;
            }
            Request::GetCommEventLog => {
                let diag = device.diagnostics();
                let mut events = [0u8; EVENT_LOG_LEN];
                let n = diag.events(&mut events);
                let events = events.get(..n).unwrap_or(&[]);
                // ok: n <= 64, so 6 + n fits a byte.
                let byte_count = u8::try_from(6 + n).map_err(|_| ExceptionCode::ServerDeviceFailure)?;
                put(out, &[function, byte_count])?;
                put_u16s(
                    out,
                    &[0x0000, diag.event_count(), self.bus.get(DiagnosticCounter::BusMessage)],
                )?;
                put(out, events)?;
            }
            Request::WriteMultipleCoils { range, values } => {
                let mut buf = [false; 1968];
                let bits = buf.get_mut(..range.len()).ok_or(ExceptionCode::IllegalDataValue)?;
                for (i, dst) in bits.iter_mut().enumerate() {
                    *dst = values.get(i).ok_or(ExceptionCode::IllegalDataValue)?;
                }
                storage.write_coils(ctx, range.start(), bits)?;
                self.wrote(ctx, Table::Coils, range.start(), range.count());
                put(out, &[function])?;
                put_u16s(out, &[range.start(), range.count()])?;
            }
            Request::WriteMultipleRegisters { range, values } => {
                return self.write_registers(ctx, storage, range, values, out);
            }
            Request::ReportServerId => {
                let id = self.identity.server_id_bytes();
                let byte_count = u8::try_from(id.len() + 1).map_err(|_| ExceptionCode::ServerDeviceFailure)?;
                put(out, &[function, byte_count])?;
                put(out, id)?;
                put(out, &[if self.identity.is_running() { 0xFF } else { 0x00 }])?;
            }
            Request::ReadFileRecord(reads) => {
                // Response: fc, data length, then per sub-request its length
                // (1 + 2 × records), reference type 6 and the records.
                let mut total = 2usize;
                for r in reads.iter() {
                    total = total.saturating_add(2 + 2 * r.length as usize);
                }
                if total > crate::frame::MAX_PDU {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                put(out, &[function, 0])?;
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
                let data_len =
                    u8::try_from(out.len().saturating_sub(2)).map_err(|_| ExceptionCode::ServerDeviceFailure)?;
                if let Some(b) = out.as_mut_slice().get_mut(1) {
                    *b = data_len;
                }
            }
            Request::WriteFileRecord(writes) => {
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
                put(out, &[function, len])?;
                put(out, raw)?;
            }
            Request::MaskWriteRegister {
                address,
                and_mask,
                or_mask,
            } => {
                storage.mask_write_register(ctx, address, and_mask, or_mask)?;
                self.wrote(ctx, Table::HoldingRegisters, address, 1);
                put(out, &[function])?;
                put_u16s(out, &[address, and_mask, or_mask])?;
            }
            Request::ReadWriteMultipleRegisters { read, write, values } => {
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
                write_registers(out, function, rregs).map_err(encode_failure)?;
            }
            Request::ReadFifoQueue { address } => {
                let mut buf = [0u16; 31];
                let n = storage.read_fifo_queue(ctx, address, &mut buf)?;
                // Spec: more than 31 values in the queue is exception 03.
                let values = buf.get(..n).ok_or(ExceptionCode::IllegalDataValue)?;
                write_fifo(out, values).map_err(encode_failure)?;
            }
            Request::ReadDeviceIdentification { code, object_id } => {
                self.device_identification(code, object_id, out)?
            }
            Request::Custom { function, data } => {
                let handler = self.custom_function(function).ok_or(ExceptionCode::IllegalFunction)?;
                out.clear();
                handler.execute(ctx, storage, data, out)?;
            }
        }
        Ok(Outcome::RESPOND)
    }

    /// FC3 / FC4 (`ctx.function`): the registers straight into the answer,
    /// big-endian: fc, byte count, registers.
    #[inline]
    fn read_registers(
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
    fn write_registers(
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

    /// FC 0x08: every sub-function.
    fn diagnostics(
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

    /// FC 0x2B / MEI 0x0E: Read Device Identification.
    fn device_identification(&self, code: DeviceIdCode, object_id: u8, out: &mut PduBuf) -> Result<(), ExceptionCode> {
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

    /// Tells the write listener, if any.
    #[inline]
    fn wrote(&self, ctx: &RequestContext<'_>, table: Table, start: u16, count: u16) {
        if let Some(l) = &self.listener {
            l.on_write(ctx, table, start, count);
        }
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
