//! What user code plugs into the engine: request hooks and their
//! [`Delivery`], request observers, custom function handlers, the
//! [`Authorizer`] and write listeners.

use crate::ExceptionCode;
use crate::address::AddressRange;
use crate::frame::PduLength;
use crate::pdu::{DecodeError, PduBuf, Request};
use crate::storage::{RequestContext, Storage, Table};
use std::time::Duration;

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
///
/// Any installed hook takes requests off the engine's fast path (each one
/// goes through the hook's calls and is recorded step by step) while it is
/// [`RequestHook::engaged`]. Code that only watches should be a
/// [`RequestObserver`] instead.
pub trait RequestHook: Send + Sync {
    /// False while the hook would do nothing (for example a fault injector
    /// with no fault set): the engine then skips all of its calls for that
    /// request and keeps its fast path. Asked once per request. Default: true.
    fn engaged(&self) -> bool {
        true
    }

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

/// What a [`RequestObserver`] is told about one request: a few bytes,
/// copied, made without allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Unit id the request was addressed to (0 for a serial broadcast).
    pub unit: u8,
    /// Function code of the request (without the exception bit).
    pub function: u8,
    /// The table and addresses the request names, for data functions:
    /// FC1-4 and FC15/16 their range, FC5/6 and FC22 one address, FC24 its
    /// FIFO pointer address, FC23 its write range. `None` for other
    /// functions and requests that failed to decode.
    pub data: Option<(Table, AddressRange)>,
    /// True for a write function (FC5, 6, 15, 16, 21, 22, 23).
    pub write: bool,
    /// True if an answer is sent.
    pub respond: bool,
    /// The exception code answered, if the answer sent is an exception.
    pub exception: Option<u8>,
}

impl Observation {
    /// The observation of `request` (or of a request that failed to decode)
    /// with its answer: `respond`, and the exception in `out` if it is one.
    #[inline(always)]
    pub(crate) fn of(ctx: &RequestContext<'_>, request: Option<&Request<'_>>, respond: bool, out: &PduBuf) -> Self {
        let (data, write) = match request {
            Some(r) => (data_of(r), r.is_write()),
            None => (None, false),
        };
        Self {
            unit: ctx.unit,
            function: ctx.function,
            data,
            write,
            respond,
            exception: if respond {
                super::serve::answered_exception(out)
            } else {
                None
            },
        }
    }
}

/// The table and addresses `request` names (see [`Observation::data`]).
#[inline(always)]
fn data_of(request: &Request<'_>) -> Option<(Table, AddressRange)> {
    let one = |table: Table, address: u16| AddressRange::new(address, 1).map(|r| (table, r));
    match *request {
        Request::ReadCoils(r) | Request::WriteMultipleCoils { range: r, .. } => Some((Table::Coils, r)),
        Request::ReadDiscreteInputs(r) => Some((Table::DiscreteInputs, r)),
        Request::ReadHoldingRegisters(r)
        | Request::WriteMultipleRegisters { range: r, .. }
        | Request::ReadWriteMultipleRegisters { write: r, .. } => Some((Table::HoldingRegisters, r)),
        Request::ReadInputRegisters(r) => Some((Table::InputRegisters, r)),
        Request::WriteSingleCoil { address, .. } => one(Table::Coils, address),
        Request::WriteSingleRegister { address, .. }
        | Request::MaskWriteRegister { address, .. }
        | Request::ReadFifoQueue { address } => one(Table::HoldingRegisters, address),
        _ => None,
    }
}

/// User code told about every request a device served, once its answer is
/// final: call monitors, per-function counts, traffic logs. It cannot change
/// or refuse anything, so installing one keeps the engine's fast path.
///
/// Told about each request addressed to a device (answered, exception,
/// silent, or failed to decode) and once for each serial broadcast; not for
/// a unit no device serves. The time the request arrived is
/// `ctx.received`. It runs on the request path, on the thread of the
/// connection: it must not block, and should keep shared state sharded
/// (connections on other threads call it at the same time).
///
/// A [`crate::Connection`] collects the observations of one input (one
/// read, which may hold several pipelined requests) and hands them over in
/// one [`RequestObserver::observe_batch`] once the input is handled, before
/// any of their answers can be written (an input of one request, as a
/// client that does not pipeline sends, is handed over with
/// [`RequestObserver::observe`]). A request that an engaged
/// [`RequestHook`] saw is handed over alone with
/// [`RequestObserver::observe`] as soon as it is answered (after the batch
/// before it), so that an observer can pair it with what the hook did on
/// the same thread. [`crate::Engine::handle`] tells each request at once.
pub trait RequestObserver: Send + Sync {
    /// One request and its outcome.
    fn observe(&self, ctx: &RequestContext<'_>, seen: Observation);

    /// Several requests of one input, in the order they were served, none
    /// of them seen by an engaged hook. `ctx` is the input's (transport,
    /// peer, role, arrival time); each request's unit and function are in
    /// its observation. Default: [`RequestObserver::observe`] for each.
    fn observe_batch(&self, ctx: &RequestContext<'_>, seen: &[Observation]) {
        for s in seen {
            let one = RequestContext {
                unit: s.unit,
                function: s.function,
                ..*ctx
            };
            self.observe(&one, *s);
        }
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

/// Asks `auth` about every access of `request`; true if all are allowed.
/// (also the gateway's check before it forwards a request)
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
