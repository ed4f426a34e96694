//! The simulator's call monitor, request counters and event log that the
//! HTTP API shows (a [`RequestObserver`]), and its fault injection (a
//! [`RequestHook`]).
//!
//! The observer keeps the engine's fast path: it is told about the requests
//! of each input once they are answered, in one batch of small copied
//! [`Observation`]s, and records them in its thread's shard under one lock
//! (no allocation, no formatting, no shared counter; the time is the
//! input's arrival time the connection already has). The hook is
//! [`RequestHook::engaged`] only while a fault is set, so a plain register
//! map never takes the engine's slow path.
//!
//! Faults are matched by function code. `exception` and `no_response`
//! decide in [`RequestHook::on_request`]; `delay`, `split` and `garble`
//! in [`RequestHook::delivery`], which hands the adapter a [`Delivery`].

use crate::sync::{shard_count, thread_shard};
use coilwork_core::engine::{HookAction, Observation, RequestHook, RequestObserver};
use coilwork_core::pdu::{PduBuf, Request};
use coilwork_core::{Delivery, ExceptionCode, RequestContext};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

thread_local! {
    /// The fault the hook applied to the request being served on this
    /// thread, taken by the observer when the same request is observed.
    static APPLIED_FAULT: std::cell::Cell<Option<Applied>> = const { std::cell::Cell::new(None) };
}

/// A fault the hook applied to a call: one byte in the call's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    Exception,
    NoResponse,
    Delay,
    Split,
    Garble,
}

impl Applied {
    /// The name [`Call::fault`] shows.
    fn name(self) -> &'static str {
        match self {
            Self::Exception => "exception",
            Self::NoResponse => "no_response",
            Self::Delay => "delay",
            Self::Split => "split",
            Self::Garble => "garble",
        }
    }
}

/// Calls kept for the monitor.
pub const CALLS_KEPT: usize = 500;
/// Log entries kept.
pub const LOG_KEPT: usize = 500;

/// What a fault does to the requests it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FaultKind {
    /// Answer this exception code instead of executing.
    Exception {
        /// The exception code (1..=8, 10, 11; e.g. 4 = server device failure).
        code: u8,
    },
    /// Execute, then send nothing.
    NoResponse,
    /// Answer after a pause.
    Delay {
        /// Milliseconds.
        delay_ms: u64,
    },
    /// Write the first `split_at` bytes of the answer, pause, then the rest.
    Split {
        /// Bytes in the first piece (at least 1).
        split_at: u16,
        /// Milliseconds between the pieces.
        pause_ms: u64,
    },
    /// Send a corrupted frame (bad CRC/LRC; MBAP: bad protocol id).
    Garble,
}

/// A fault injected for one function code (or every one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    /// Identifier for `DELETE /api/faults/{id}`.
    pub id: u64,
    /// Function code matched; `None`: every request.
    pub function: Option<u8>,
    /// What it does.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Requests it still applies to; `None`: until deleted.
    pub remaining: Option<u64>,
    /// Requests it was applied to.
    pub applied: u64,
}

/// The fields a fault spec may have (`POST /api/faults`).
pub const FAULT_FIELDS: [&str; 7] = ["function", "kind", "count", "code", "delay_ms", "split_at", "pause_ms"];

/// A fault as asked for (`POST /api/faults`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FaultSpec {
    /// Function code matched; absent or null: every request.
    #[serde(default)]
    pub function: Option<u8>,
    /// What it does.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Apply to this many requests, then remove itself; absent: until deleted.
    #[serde(default)]
    pub count: Option<u64>,
}

impl FaultSpec {
    /// Checks the values a client may get wrong; the reason if refused.
    pub fn check(&self) -> Result<(), String> {
        if let Some(f) = self.function
            && (f == 0 || f >= 0x80)
        {
            return Err(format!("function {f}: a function code is 1..=127"));
        }
        if self.count == Some(0) {
            return Err("count 0: a fault must apply to at least one request".into());
        }
        match self.kind {
            FaultKind::Exception { code } if ExceptionCode::from_code(code).is_none() => Err(format!(
                "exception code {code}: not a Modbus exception code (1, 2, 3, 4, 5, 6, 7, 8, 10, 11)"
            )),
            FaultKind::Delay { delay_ms } if delay_ms > 60_000 => Err(format!("delay_ms {delay_ms}: at most 60000")),
            FaultKind::Split { split_at: 0, .. } => Err("split_at 0: the first piece needs a byte".into()),
            FaultKind::Split { pause_ms, .. } if pause_ms > 60_000 => {
                Err(format!("pause_ms {pause_ms}: at most 60000"))
            }
            _ => Ok(()),
        }
    }
}

/// The outcome of one call, as the monitor shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallResult {
    /// A normal answer.
    Ok,
    /// An exception answer.
    Exception,
    /// Nothing was sent (a `no_response` fault, a broadcast, listen-only mode).
    NoResponse,
}

/// One request seen by the server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Call {
    /// Consecutive from 1: the call is the `seq`-th request the monitor
    /// recorded (`GET /api/calls?since=N`). A number once shown never
    /// changes. Calls are numbered in the order of the API reads that first
    /// saw them, and between two reads by arrival time (see [`Monitor::calls`]).
    pub seq: u64,
    /// Local time, RFC 3339 with milliseconds.
    pub time: String,
    /// Unit id.
    pub unit: u8,
    /// Function code.
    pub function: u8,
    /// First address, for requests that have one.
    pub address: Option<u16>,
    /// Number of registers or bits, for requests that have one.
    pub count: Option<u16>,
    /// What was answered.
    pub result: CallResult,
    /// The exception code, if one was answered.
    pub exception: Option<u8>,
    /// The fault applied, if any (`exception`, `no_response`, `delay`, `split`, `garble`).
    pub fault: Option<&'static str>,
    /// The client's address.
    pub peer: Option<String>,
}

/// One event of the simulator's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    /// Increasing number (`GET /api/log?since=N`).
    pub seq: u64,
    /// Local time, RFC 3339 with milliseconds.
    pub time: String,
    /// `info`, `warn` or `error`.
    pub level: &'static str,
    /// What happened.
    pub message: String,
}

#[derive(Default)]
struct Faults {
    list: Vec<Fault>,
    next_id: u64,
}

/// The observer and hook installed on the simulator's engine.
pub struct Monitor {
    faults: Mutex<Faults>,
    any_fault: AtomicBool,
    /// Recent calls and counts, sharded by thread: a request takes its
    /// thread's shard lock once, uncontended, for both.
    shards: Box<[Mutex<Shard>]>,
    /// Advanced by each read of the calls (never by a request): a call
    /// records the epoch it was recorded in, and a read shows only the calls
    /// of epochs before its own, which are then all recorded. Alone in its
    /// cache line, which requests only load.
    epoch: Epoch,
    /// When the monitor was made, on both clocks: a call's time is its
    /// arrival [`Instant`] mapped onto the wall clock from here.
    base: (Instant, SystemTime),
    log: Mutex<VecDeque<LogEntry>>,
    log_seq: AtomicU64,
}

/// The monitor's epoch counter, in a cache line of its own.
#[repr(align(128))]
#[derive(Default)]
struct Epoch(AtomicU64);

/// One shard: the last [`CALLS_KEPT`] calls (a ring) and the requests and
/// exception answers per function code of the threads using it.
///
/// A call is its observation and the place of its input in a second ring,
/// which holds what the calls of one input share (arrival time, epoch,
/// peer, fault): a request copies a few bytes, its input's details are
/// written once. Each input has a call, so the inputs of the calls kept are
/// among the last [`CALLS_KEPT`] inputs.
struct Shard {
    /// The ring, filled up to `CALLS_KEPT` then overwritten from `next`.
    calls: Vec<RawCall>,
    next: usize,
    /// The inputs' ring, filled and overwritten as `calls`.
    inputs: Vec<Input>,
    next_input: usize,
    /// Calls recorded in this shard so far (the ring holds the last ones).
    total: u64,
    /// `total` when the calls were last cleared.
    cleared_at: u64,
    /// The arrival time of the shard's last call: a later call that says
    /// it arrived earlier (another thread's input) is given this time, so
    /// that the ring is in order of (epoch, time).
    last_at: Option<Instant>,
    requests: [u64; 128],
    exceptions: [u64; 128],
}

impl Shard {
    fn new() -> Self {
        Self {
            calls: Vec::with_capacity(CALLS_KEPT),
            next: 0,
            inputs: Vec::with_capacity(CALLS_KEPT),
            next_input: 0,
            total: 0,
            cleared_at: 0,
            last_at: None,
            requests: [0; 128],
            exceptions: [0; 128],
        }
    }

    /// Keeps the calls of one input (all arrived `at`, the first with
    /// `fault`), counting them, forgetting the oldest once `CALLS_KEPT` are kept.
    #[inline(always)]
    fn push_all(
        &mut self,
        at: Instant,
        epoch: u64,
        peer: Option<SocketAddr>,
        seen: &[Observation],
        fault: Option<Applied>,
    ) {
        if seen.is_empty() {
            return;
        }
        // A call that says it arrived before the shard's last one (another
        // thread's input) is given that one's time: the ring stays in order
        // of (epoch, time).
        let at = self.last_at.map_or(at, |last| last.max(at));
        self.last_at = Some(at);
        let input = self.keep_input(Input { at, epoch, peer, fault });
        for seen in seen {
            self.count(seen);
            self.keep(RawCall { seen: *seen, input });
        }
    }

    /// Keeps the details an input's calls share; returns their place.
    #[inline]
    fn keep_input(&mut self, input: Input) -> u16 {
        let at = self.next_input;
        if self.inputs.len() < CALLS_KEPT {
            self.inputs.push(input);
        } else if let Some(slot) = self.inputs.get_mut(at) {
            *slot = input;
        }
        self.next_input = if at + 1 == CALLS_KEPT { 0 } else { at + 1 };
        // ok: `at` is below CALLS_KEPT (500), which fits a u16.
        at as u16
    }

    /// The details of the input of `call`.
    fn input_of(&self, call: &RawCall) -> Option<&Input> {
        self.inputs.get(usize::from(call.input))
    }

    /// Counts a request, and its exception answer.
    #[inline]
    fn count(&mut self, seen: &Observation) {
        let function = usize::from(seen.function & 0x7F);
        if let Some(n) = self.requests.get_mut(function) {
            *n += 1;
        }
        if seen.exception.is_some()
            && let Some(n) = self.exceptions.get_mut(function)
        {
            *n += 1;
        }
    }

    /// Keeps `call` in the ring.
    #[inline(always)]
    fn keep(&mut self, call: RawCall) {
        self.total += 1;
        if self.calls.len() < CALLS_KEPT {
            self.calls.push(call);
        } else if let Some(slot) = self.calls.get_mut(self.next) {
            *slot = call;
        }
        self.next += 1;
        if self.next == CALLS_KEPT {
            self.next = 0;
        }
    }

    /// The calls kept, oldest first, each with its place in the order of
    /// `seq` (this shard being `shard`) and its input.
    fn kept(&self, shard: usize) -> impl Iterator<Item = (Order, &RawCall, &Input)> {
        let split = if self.calls.len() < CALLS_KEPT { 0 } else { self.next };
        let (newer, older) = self.calls.split_at(split.min(self.calls.len()));
        let first = self.total - self.calls.len() as u64;
        (first..).zip(older.iter().chain(newer)).filter_map(move |(n, c)| {
            let input = self.input_of(c)?;
            Some(((input.epoch, input.at, shard, n), c, input))
        })
    }
}

/// Where a call stands in the order of `seq`: epoch, arrival time, shard,
/// and its number among the shard's calls. Increasing along each shard's ring.
type Order = (u64, Instant, usize, u64);

/// A call as recorded on the request path: no formatting, no allocation;
/// [`Call`] is made from it (and its [`Input`]) when someone asks.
#[derive(Debug, Clone, Copy)]
struct RawCall {
    seen: Observation,
    /// The place of its input in the shard's inputs ring.
    input: u16,
}

/// What the calls of one input share.
#[derive(Debug, Clone, Copy)]
struct Input {
    /// When it arrived.
    at: Instant,
    /// The monitor's epoch when it was recorded.
    epoch: u64,
    peer: Option<SocketAddr>,
    /// The fault applied to its call (an input a hook saw has one call).
    fault: Option<Applied>,
}

impl RawCall {
    fn call(&self, input: &Input, seq: u64, base: (Instant, SystemTime)) -> Call {
        let time: chrono::DateTime<chrono::Local> = (base.1 + input.at.saturating_duration_since(base.0)).into();
        let seen = &self.seen;
        let result = match (seen.respond, seen.exception) {
            (false, _) => CallResult::NoResponse,
            (true, Some(_)) => CallResult::Exception,
            (true, None) => CallResult::Ok,
        };
        Call {
            seq,
            time: time.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
            unit: seen.unit,
            function: seen.function,
            address: seen.data.map(|(_, r)| r.start()),
            count: seen.data.map(|(_, r)| r.count()),
            result,
            exception: seen.exception,
            fault: input.fault.map(Applied::name),
            peer: input.peer.map(|p| p.to_string()),
        }
    }
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").finish_non_exhaustive()
    }
}

impl Default for Monitor {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

impl Monitor {
    /// An empty monitor.
    pub fn new() -> Self {
        Self {
            faults: Mutex::new(Faults::default()),
            any_fault: AtomicBool::new(false),
            shards: (0..shard_count()).map(|_| Mutex::new(Shard::new())).collect(),
            epoch: Epoch::default(),
            base: (Instant::now(), SystemTime::now()),
            log: Mutex::new(VecDeque::with_capacity(LOG_KEPT)),
            log_seq: AtomicU64::new(0),
        }
    }

    /// Adds a fault; returns it with its id.
    pub fn add_fault(&self, spec: FaultSpec) -> Fault {
        let mut f = lock(&self.faults);
        f.next_id += 1;
        let fault = Fault {
            id: f.next_id,
            function: spec.function,
            kind: spec.kind,
            remaining: spec.count,
            applied: 0,
        };
        f.list.push(fault.clone());
        self.any_fault.store(true, Ordering::Release);
        drop(f);
        self.log("info", format!("fault {} added: {}", fault.id, describe(&fault)));
        fault
    }

    /// The active faults.
    pub fn faults(&self) -> Vec<Fault> {
        lock(&self.faults).list.clone()
    }

    /// Removes fault `id`; false if there is none.
    pub fn remove_fault(&self, id: u64) -> bool {
        let mut f = lock(&self.faults);
        let before = f.list.len();
        f.list.retain(|x| x.id != id);
        let removed = f.list.len() != before;
        self.any_fault.store(!f.list.is_empty(), Ordering::Release);
        drop(f);
        if removed {
            self.log("info", format!("fault {id} removed"));
        }
        removed
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        let mut f = lock(&self.faults);
        f.list.clear();
        self.any_fault.store(false, Ordering::Release);
        drop(f);
        self.log("info", "all faults removed".into());
    }

    /// Takes one use of the first fault for `function` that `pick` accepts.
    fn take_fault<T>(&self, function: u8, pick: impl Fn(&FaultKind) -> Option<T>) -> Option<T> {
        if !self.any_fault.load(Ordering::Acquire) {
            return None;
        }
        let mut f = lock(&self.faults);
        let (i, out) = f.list.iter().enumerate().find_map(|(i, x)| {
            if x.function.is_some_and(|fc| fc != function) {
                return None;
            }
            pick(&x.kind).map(|o| (i, o))
        })?;
        let fault = f.list.get_mut(i)?;
        fault.applied += 1;
        if let Some(n) = fault.remaining.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                let id = fault.id;
                f.list.remove(i);
                self.any_fault.store(!f.list.is_empty(), Ordering::Release);
                drop(f);
                self.log("info", format!("fault {id} used up and removed"));
            }
        }
        Some(out)
    }

    /// The recent calls, oldest first, filtered.
    ///
    /// Numbering without a counter shared by the requests: this read starts
    /// a new epoch, and shows the calls of the epochs before (every one of
    /// them recorded by the time it has locked each shard: a request loads
    /// the epoch under its shard's lock). They are ordered by (epoch,
    /// arrival time, shard, number in the shard), which is also each
    /// shard's ring order, so a call's `seq` is the calls forgotten from
    /// the rings plus its place among those kept. A call older than the
    /// oldest one kept by a shard that has forgotten calls is not shown: how
    /// many of that shard's forgotten calls came before it is unknown (that
    /// shard's kept calls are newer and number at least [`CALLS_KEPT`]).
    pub fn calls(&self, filter: &CallFilter) -> Vec<Call> {
        let epoch = self.epoch.0.fetch_add(1, Ordering::AcqRel);
        let mut all: Vec<(Order, RawCall, Input)> = Vec::new();
        let (mut forgotten, mut floor) = (0u64, None::<Order>);
        for (i, shard) in self.shards.iter().enumerate() {
            let shard = lock(shard);
            let kept = shard.calls.len() as u64;
            forgotten += shard.total - kept;
            if shard.total - shard.cleared_at > kept
                && let Some((oldest, _, _)) = shard.kept(i).next()
            {
                floor = floor.max(Some(oldest));
            }
            let shown = shard.kept(i).filter(|(_, _, input)| input.epoch <= epoch);
            all.extend(shown.map(|(order, c, input)| (order, *c, *input)));
        }
        all.sort_unstable_by_key(|(order, _, _)| *order);
        let first = all
            .partition_point(|(order, _, _)| floor.is_some_and(|f| *order < f))
            .max(all.len().saturating_sub(CALLS_KEPT));
        let mut out: Vec<Call> = (first..)
            .zip(all.get(first..).unwrap_or(&[]))
            .map(|(place, (_, c, input))| c.call(input, forgotten + place as u64 + 1, self.base))
            .filter(|c| filter.matches(c))
            .collect();
        if let Some(limit) = filter.limit
            && out.len() > limit
        {
            out.drain(..out.len() - limit);
        }
        out
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        for shard in &*self.shards {
            let mut shard = lock(shard);
            shard.calls.clear();
            shard.next = 0;
            shard.inputs.clear();
            shard.next_input = 0;
            shard.cleared_at = shard.total;
        }
    }

    /// Records the calls of one input in this thread's shard (its counts
    /// and the ring) under one lock, the first with `fault`.
    #[inline(always)]
    fn record(&self, ctx: &RequestContext<'_>, seen: &[Observation], fault: Option<Applied>) {
        // The input's arrival time, which the connection read anyway; a
        // clock read only for callers that gave none.
        let at = ctx.received.unwrap_or_else(Instant::now);
        let Some(shard) = self.shards.get(thread_shard(self.shards.len())) else {
            return;
        };
        let mut shard = lock(shard);
        let epoch = self.epoch.0.load(Ordering::Relaxed);
        shard.push_all(at, epoch, ctx.peer, seen, fault);
    }

    /// Requests and exception answers counted per function code (non-zero only).
    pub fn counters(&self) -> Vec<(u8, u64, u64)> {
        let mut requests = [0u64; 128];
        let mut exceptions = [0u64; 128];
        for shard in &*self.shards {
            let shard = lock(shard);
            for (total, n) in requests.iter_mut().zip(&shard.requests) {
                *total += n;
            }
            for (total, n) in exceptions.iter_mut().zip(&shard.exceptions) {
                *total += n;
            }
        }
        (0u8..128)
            .zip(requests.into_iter().zip(exceptions))
            .filter(|(_, (r, e))| *r > 0 || *e > 0)
            .map(|(f, (r, e))| (f, r, e))
            .collect()
    }

    /// Adds a log entry.
    pub fn log(&self, level: &'static str, message: String) {
        match level {
            "error" => tracing::error!("{message}"),
            "warn" => tracing::warn!("{message}"),
            _ => tracing::info!("{message}"),
        }
        self.remember(level, message);
    }

    /// Adds an entry to the web page's log only (for what the server already
    /// reported on stderr).
    pub fn remember(&self, level: &'static str, message: String) {
        let entry = LogEntry {
            seq: self.log_seq.fetch_add(1, Ordering::Relaxed) + 1,
            time: now(),
            level,
            message,
        };
        let mut log = lock(&self.log);
        if log.len() >= LOG_KEPT {
            log.pop_front();
        }
        log.push_back(entry);
    }

    /// Log entries after `since`, oldest first.
    pub fn log_entries(&self, since: u64) -> Vec<LogEntry> {
        lock(&self.log).iter().filter(|e| e.seq > since).cloned().collect()
    }
}

/// A human description of a fault, for the log.
fn describe(f: &Fault) -> String {
    let what = match f.kind {
        FaultKind::Exception { code } => format!("exception {code:02X}"),
        FaultKind::NoResponse => "no response".into(),
        FaultKind::Delay { delay_ms } => format!("delay {delay_ms} ms"),
        FaultKind::Split { split_at, pause_ms } => format!("split after {split_at} bytes, {pause_ms} ms pause"),
        FaultKind::Garble => "garbled frame".into(),
    };
    let on = f
        .function
        .map_or_else(|| "every function".into(), |fc| format!("function {fc}"));
    let n = f.remaining.map_or_else(String::new, |n| format!(", {n} times"));
    format!("{what} on {on}{n}")
}

/// Which calls `GET /api/calls` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallFilter {
    /// Only this function code.
    pub function: Option<u8>,
    /// Only calls touching addresses `>= start`.
    pub start: Option<u16>,
    /// Only calls touching addresses `<= end`.
    pub end: Option<u16>,
    /// Only calls with `seq > since`.
    pub since: Option<u64>,
    /// At most this many (the newest).
    pub limit: Option<usize>,
}

impl CallFilter {
    fn matches(&self, c: &Call) -> bool {
        if self.function.is_some_and(|f| f != c.function) || self.since.is_some_and(|s| c.seq <= s) {
            return false;
        }
        if self.start.is_none() && self.end.is_none() {
            return true;
        }
        let Some(first) = c.address else { return false };
        let last = u32::from(first) + u32::from(c.count.unwrap_or(1).max(1)) - 1;
        self.start.is_none_or(|s| last >= u32::from(s)) && self.end.is_none_or(|e| u32::from(first) <= u32::from(e))
    }
}

impl RequestObserver for Monitor {
    /// A request an engaged hook saw: recorded with the fault it applied.
    fn observe(&self, ctx: &RequestContext<'_>, seen: Observation) {
        let fault = APPLIED_FAULT.with(std::cell::Cell::take);
        self.record(ctx, &[seen], fault);
    }

    /// The requests of one input no engaged hook saw (so with no fault):
    /// one shard lock for all of them.
    fn observe_batch(&self, ctx: &RequestContext<'_>, seen: &[Observation]) {
        self.record(ctx, seen, None);
    }
}

/// Notes the fault applied to the request being served on this thread.
fn applied(fault: Applied) {
    APPLIED_FAULT.with(|f| f.set(Some(fault)));
}

impl RequestHook for Monitor {
    /// Only while a fault is set: otherwise the engine keeps its fast path.
    fn engaged(&self) -> bool {
        self.any_fault.load(Ordering::Acquire)
    }

    fn on_request(&self, ctx: &RequestContext<'_>, _request: &mut Request<'_>, _response: &mut PduBuf) -> HookAction {
        let fault = self.take_fault(ctx.function, |k| match *k {
            FaultKind::Exception { code } => ExceptionCode::from_code(code).map(HookAction::Exception),
            FaultKind::NoResponse => Some(HookAction::NoResponse),
            _ => None,
        });
        match fault {
            Some(HookAction::NoResponse) => applied(Applied::NoResponse),
            Some(HookAction::Exception(_)) => applied(Applied::Exception),
            _ => {}
        }
        fault.unwrap_or(HookAction::Continue)
    }

    fn delivery(&self, ctx: &RequestContext<'_>, _request: &Request<'_>, _response: &[u8]) -> Option<Delivery> {
        let (name, delivery) = self.take_fault(ctx.function, |k| match *k {
            FaultKind::Delay { delay_ms } => Some((
                Applied::Delay,
                Delivery {
                    delay: Duration::from_millis(delay_ms),
                    ..Delivery::default()
                },
            )),
            FaultKind::Split { split_at, pause_ms } => Some((
                Applied::Split,
                Delivery {
                    split: Some((split_at, Duration::from_millis(pause_ms))),
                    ..Delivery::default()
                },
            )),
            FaultKind::Garble => Some((
                Applied::Garble,
                Delivery {
                    garble: true,
                    ..Delivery::default()
                },
            )),
            _ => None,
        })?;
        applied(name);
        Some(delivery)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coilwork_core::{AddressRange, Table, Transport};

    fn seen(address: u16) -> Observation {
        Observation {
            unit: 1,
            function: 3,
            data: AddressRange::new(address, 2).map(|r| (Table::HoldingRegisters, r)),
            write: false,
            respond: true,
            exception: None,
        }
    }

    fn ctx(peer: u16, at: Instant) -> RequestContext<'static> {
        RequestContext {
            unit: 1,
            function: 3,
            transport: Transport::Tcp,
            peer: Some(SocketAddr::from(([127, 0, 0, 1], peer))),
            tls_role: None,
            received: Some(at),
        }
    }

    /// More calls than the ring keeps, in inputs of 1 to 7 calls: the last
    /// `CALLS_KEPT` are shown in order, numbered to the total, each with
    /// the peer of its own input, and a fault only on the call it hit.
    #[test]
    fn the_ring_keeps_the_last_calls_with_their_inputs() {
        let m = Monitor::new();
        let t0 = Instant::now();
        let (mut address, mut input) = (0u16, 0u16);
        while usize::from(address) < CALLS_KEPT + 300 {
            let n = 1 + input % 7;
            let batch: Vec<Observation> = (address..address + n).map(seen).collect();
            let c = ctx(1000 + input, t0 + Duration::from_millis(u64::from(input)));
            if input % 5 == 4 {
                // As the engine tells a request an engaged hook saw.
                applied(Applied::Delay);
                m.observe(&c, batch[0]);
                address += 1;
            } else {
                m.observe_batch(&c, &batch);
                address += n;
            }
            input += 1;
        }
        let calls = m.calls(&CallFilter::default());
        assert_eq!(calls.len(), CALLS_KEPT);
        let total = u64::from(address);
        for (i, call) in calls.iter().enumerate() {
            let expected = total - CALLS_KEPT as u64 + i as u64;
            assert_eq!(call.seq, expected + 1);
            assert_eq!(call.address, Some(expected as u16));
            assert_eq!(call.count, Some(2));
        }
        // Replay the inputs to know each address's peer and fault.
        let (mut a, mut k, mut peers) = (0u16, 0u16, Vec::new());
        while a < address {
            let n = if k % 5 == 4 { 1 } else { 1 + k % 7 };
            for _ in 0..n {
                peers.push((1000 + k, k % 5 == 4));
            }
            a += n;
            k += 1;
        }
        for call in &calls {
            let (peer, fault) = peers[usize::from(call.address.unwrap_or(0))];
            assert_eq!(call.peer.as_deref(), Some(format!("127.0.0.1:{peer}").as_str()));
            assert_eq!(call.fault, fault.then_some("delay"));
        }
        m.clear_calls();
        assert!(m.calls(&CallFilter::default()).is_empty());
        m.observe_batch(&ctx(9, t0), &[seen(7), seen(8)]);
        let after = m.calls(&CallFilter::default());
        assert_eq!(after.iter().map(|c| c.address).collect::<Vec<_>>(), [Some(7), Some(8)]);
        assert_eq!(after[1].seq, total + 2);
        assert_eq!(after[0].peer.as_deref(), Some("127.0.0.1:9"));
    }
}
