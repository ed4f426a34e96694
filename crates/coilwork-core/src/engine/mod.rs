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
//! One request is a pipeline: [`Engine::handle`] finds the device (or the
//! broadcast), the PDU is decoded ([`Request::decode`]), `serve` runs the
//! listen-only and broadcast gates, the authorizer and the hooks, one
//! private module per function-code family executes it and encodes the
//! answer (bits; registers; serial-line diagnostics; file records and FIFO;
//! device identification; custom functions), and `serve` then records the
//! exchange in the diagnostics, in one place for every path. What users
//! plug in ([`RequestHook`], [`RequestObserver`], [`CustomFunction`],
//! [`Authorizer`], [`WriteListener`]) is defined here too.
//!
//! The fast path: with no authorizer and no [`RequestHook::engaged`] hook,
//! an ordinary request (not FC8, FC11, FC12 or a custom function, to a
//! device not in listen-only mode) executes and records its whole exchange
//! in one atomic add. A [`RequestObserver`] is told about every request after
//! its answer, on either path, with a small copied [`Observation`]; a
//! connection hands over those of one input in one batch.
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

mod family;
mod hooks;
mod serve;

pub use hooks::{
    Access, AccessRequest, Authorizer, CustomFunction, Delivery, HookAction, Observation, RequestHook, RequestObserver,
    WriteListener, authorized,
};

use crate::ExceptionCode;
use crate::diagnostics::{DiagnosticCounter, Diagnostics};
use crate::error::{ConfigError, FrameError};
use crate::frame::PduLength;
use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::pdu::{PduBuf, Request};
use crate::storage::server::DeviceCache;
use crate::storage::{RequestContext, ServerContext};
use std::sync::Arc;

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
    metrics: Option<Arc<Metrics>>,
    observer: Option<Arc<dyn RequestObserver>>,
    /// No hook and no authorizer: ordinary requests always take [`Engine::serve_plain`].
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
    metrics: Option<Arc<Metrics>>,
    observer: Option<Arc<dyn RequestObserver>>,
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

    /// Installs a request observer: told about every request after its
    /// answer, without taking requests off the fast path.
    pub fn observer(mut self, observer: Arc<dyn RequestObserver>) -> Self {
        self.observer = Some(observer);
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

    /// Counts requests, exceptions, latency and dropped frames into
    /// `metrics` (every session keeps local counts and folds them in at a
    /// low rate; the request path itself is unchanged).
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
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
            metrics: self.metrics,
            observer: self.observer,
            bus: Diagnostics::new(),
        }
    }
}

/// Most observations a connection collects before handing them over: an
/// input with more requests is handed over in several batches.
const BATCH_MAX: usize = 64;

/// [`Engine::observe`] once there is an observer, but for the usual case (a
/// batch with room): the request told at once (no batch, or an engaged hook
/// saw it: the batch before it first), or the full batch handed over and the
/// observation kept. Out of line, so that the engine's fast path stays short.
#[inline(never)]
fn tell(
    observer: &dyn RequestObserver,
    ctx: &RequestContext<'_>,
    request: Option<&Request<'_>>,
    respond: bool,
    out: &PduBuf,
    batch: Batch<'_>,
) {
    let seen = Observation::of(ctx, request, respond, out);
    match batch {
        Batch::Keep(batch) => {
            if batch.len() >= BATCH_MAX {
                observer.observe_batch(ctx, batch);
                batch.clear();
            }
            batch.push(seen);
        }
        Batch::Alone(batch) => {
            if !batch.is_empty() {
                observer.observe_batch(ctx, batch);
                batch.clear();
            }
            observer.observe(ctx, seen);
        }
        Batch::None => observer.observe(ctx, seen),
    }
}

/// Where [`Engine::handle_cached`] puts an observation.
enum Batch<'a> {
    /// Into the connection's batch.
    Keep(&'a mut Vec<Observation>),
    /// To the observer at once, after the connection's batch (an engaged hook saw the request).
    Alone(&'a mut Vec<Observation>),
    /// To the observer at once: the caller keeps no batch.
    None,
}

impl<'a> Batch<'a> {
    /// The connection's batch (if any), where a request `hook` saw must be told alone.
    #[inline(always)]
    fn of(batch: Option<&'a mut Vec<Observation>>, hook: Option<&dyn RequestHook>) -> Self {
        match (batch, hook) {
            (Some(b), None) => Self::Keep(b),
            (Some(b), Some(_)) => Self::Alone(b),
            (None, _) => Self::None,
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
            metrics: None,
            observer: None,
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

    /// The metrics sessions fold into, if installed.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
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
        self.handle_cached(&ctx, pdu, out, &mut DeviceCache::default(), None)
    }

    /// True if ordinary requests may take [`Engine::serve_plain`] now: no
    /// authorizer, and no hook or one not engaged.
    #[inline(always)]
    fn fast(&self) -> bool {
        self.plain || (self.authorizer.is_none() && self.hook.as_deref().is_some_and(|h| !h.engaged()))
    }

    /// The hook, if one is installed and [`RequestHook::engaged`] now.
    #[inline]
    fn active_hook(&self) -> Option<&dyn RequestHook> {
        self.hook.as_deref().filter(|h| h.engaged())
    }

    /// Tells the observer (if any) about a request and whether (and what) it answered.
    #[inline(always)]
    fn observe(
        &self,
        ctx: &RequestContext<'_>,
        request: Option<&Request<'_>>,
        respond: bool,
        out: &PduBuf,
        batch: Batch<'_>,
    ) {
        if let Some(observer) = &self.observer {
            match batch {
                // The usual case in line: the observation kept for the input's batch.
                Batch::Keep(batch) if batch.len() < BATCH_MAX => {
                    batch.push(Observation::of(ctx, request, respond, out))
                }
                batch => tell(&**observer, ctx, request, respond, out, batch),
            }
        }
    }

    /// Hands the observations a connection collected for one input to the
    /// observer and empties `batch`.
    #[inline]
    pub(crate) fn flush_observed(&self, ctx: &RequestContext<'_>, batch: &mut Vec<Observation>) {
        if let Some(observer) = &self.observer {
            match batch.as_slice() {
                [] => return,
                // An input of one request (no pipelining): the usual call,
                // in that request's context (unless a later request of the
                // input, to a unit no device serves, has changed it).
                [seen] if (seen.unit, seen.function) == (ctx.unit, ctx.function) => observer.observe(ctx, *seen),
                seen => observer.observe_batch(ctx, seen),
            }
        }
        batch.clear();
    }

    /// [`Engine::handle`] with the caller's device lookup cache (a
    /// connection keeps one, so steady traffic to one unit takes no lock and
    /// touches no shared reference count to find its device).
    /// `ctx.function` must be the PDU's function code without the
    /// exception bit (the connection sets it once per request, into a
    /// context it builds once per input). `batch`: where the connection
    /// collects the input's observations ([`Engine::flush_observed`] at its
    /// end); `None`: each is told at once.
    pub(crate) fn handle_cached(
        &self,
        ctx: &RequestContext<'_>,
        pdu: &[u8],
        out: &mut PduBuf,
        devices: &mut DeviceCache,
        batch: Option<&mut Vec<Observation>>,
    ) -> Outcome {
        self.bus.increment(DiagnosticCounter::BusMessage);
        out.clear();
        let function = ctx.function;
        let serial = ctx.transport.is_serial();
        if serial && ctx.unit == 0 {
            if self.options.broadcast_enable {
                let decoded = Request::decode(pdu);
                let hook = self.active_hook();
                self.context.for_each_device(&mut |_, device| {
                    let _ = self.serve(ctx, device, decoded, out, true, hook);
                });
                out.clear();
                self.observe(ctx, decoded.as_ref().ok(), false, out, Batch::of(batch, hook));
            }
            return Outcome::SILENT;
        }
        match devices.get(&self.context, ctx.unit) {
            Some(device) => {
                let decoded = Request::decode(pdu);
                if self.fast()
                    && let Ok(request) = &decoded
                    && let Some(outcome) = self.serve_plain(ctx, device, request, out)
                {
                    self.observe(ctx, Some(request), outcome.respond, out, Batch::of(batch, None));
                    return outcome;
                }
                let hook = self.active_hook();
                let outcome = self.serve(ctx, device, decoded, out, false, hook);
                self.observe(ctx, decoded.as_ref().ok(), outcome.respond, out, Batch::of(batch, hook));
                outcome
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
}
