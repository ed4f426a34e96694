//! Serial-line diagnostics (FC8), the comm event counter (FC11) and the comm
//! event log (FC12), counted from real traffic.
//!
//! Everything is atomics: counting never takes a lock, so connections that
//! share a device never wait on each other. The engine keeps one
//! [`Diagnostics`] for the bus (bus message, bus communication error and
//! character overrun counts) and one per device (the rest).
//!
//! The three values every request moves (server message count, comm event
//! counter, event log head) share one 64-bit word, so an ordinary request
//! updates its device with a single atomic add (see `Diagnostics::record_exchange`):
//! every atomic read-modify-write on a line shared by all connections costs
//! tens of cycles, more when cores contend for it.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU64, Ordering};

/// The packed word's lanes: event count (bits 0..21), server message count
/// (bits 21..42) and event log head (bits 42..64), each an unsigned counter.
///
/// The 16-bit counters are a lane's low 16 bits, so they wrap at 65535 as
/// the spec's counters do; the head is used modulo [`EVENT_LOG_LEN`] and as
/// "the log is full" once it reaches it. A lane's top bit is a guard: once
/// an add sets it, [`Diagnostics::normalize`] takes `2^(width-1)` back off
/// (`2^(width-1) - 64` for the head, which stays full), which no reader can
/// see, long before a carry could reach the next lane.
mod lane {
    /// Event count lane: shift.
    pub const EVENT_SHIFT: u32 = 0;
    /// Server message count lane: shift.
    pub const MESSAGE_SHIFT: u32 = 21;
    /// Event log head lane: shift (the top lane: its carry falls off the word).
    pub const HEAD_SHIFT: u32 = 42;
    /// Event count lane: one.
    pub const EVENT: u64 = 1 << EVENT_SHIFT;
    /// Server message count lane: one.
    pub const MESSAGE: u64 = 1 << MESSAGE_SHIFT;
    /// Event log head lane: one.
    pub const HEAD: u64 = 1 << HEAD_SHIFT;
    /// Mask of a 21-bit lane before shifting.
    pub const MASK21: u64 = (1 << 21) - 1;
    /// Both counters (what FC8 0x0A clears).
    pub const COUNTERS: u64 = (MASK21 << EVENT_SHIFT) | (MASK21 << MESSAGE_SHIFT);
    /// The head lane.
    pub const HEAD_MASK: u64 = !((1 << HEAD_SHIFT) - 1);
    /// Guard bits of the three lanes.
    pub const GUARDS: u64 = (1 << 20) << EVENT_SHIFT | (1 << 20) << MESSAGE_SHIFT | 1 << 63;

    /// The low 16 bits of the lane at `shift` (a 16-bit counter's value).
    pub const fn counter(word: u64, shift: u32) -> u16 {
        (word >> shift) as u16
    }

    /// The head lane's value.
    pub const fn head(word: u64) -> u64 {
        word >> HEAD_SHIFT
    }
}

/// The counters returned by diagnostics sub-functions 0x0B..=0x12.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum DiagnosticCounter {
    /// 0x0B: messages detected on the bus.
    BusMessage = 0x0B,
    /// 0x0C: CRC/LRC errors.
    BusCommunicationError = 0x0C,
    /// 0x0D: exception responses returned.
    BusExceptionError = 0x0D,
    /// 0x0E: messages addressed to this device (or broadcast).
    ServerMessage = 0x0E,
    /// 0x0F: messages that got no response.
    ServerNoResponse = 0x0F,
    /// 0x10: negative acknowledge exceptions returned.
    ServerNak = 0x10,
    /// 0x11: busy exceptions returned.
    ServerBusy = 0x11,
    /// 0x12: character overruns.
    BusCharacterOverrun = 0x12,
}

impl DiagnosticCounter {
    /// All counters in sub-function order.
    pub const ALL: [Self; 8] = [
        Self::BusMessage,
        Self::BusCommunicationError,
        Self::BusExceptionError,
        Self::ServerMessage,
        Self::ServerNoResponse,
        Self::ServerNak,
        Self::ServerBusy,
        Self::BusCharacterOverrun,
    ];

    /// The sub-function code that returns this counter.
    pub const fn sub_function(self) -> u16 {
        self as u16
    }

    /// The counter for a sub-function code.
    pub const fn from_sub_function(sub: u16) -> Option<Self> {
        Some(match sub {
            0x0B => Self::BusMessage,
            0x0C => Self::BusCommunicationError,
            0x0D => Self::BusExceptionError,
            0x0E => Self::ServerMessage,
            0x0F => Self::ServerNoResponse,
            0x10 => Self::ServerNak,
            0x11 => Self::ServerBusy,
            0x12 => Self::BusCharacterOverrun,
            _ => return None,
        })
    }

    /// True for the counters kept per bus rather than per device.
    pub const fn is_bus(self) -> bool {
        matches!(
            self,
            Self::BusMessage | Self::BusCommunicationError | Self::BusCharacterOverrun
        )
    }

    const fn index(self) -> usize {
        self as usize - 0x0B
    }
}

/// Event log bytes (Modbus spec, FC12).
pub mod event {
    /// Receive event: base bit.
    pub const RECEIVE: u8 = 0x80;
    /// Receive event: communication error.
    pub const RECEIVE_COMM_ERROR: u8 = 0x02;
    /// Receive event: character overrun.
    pub const RECEIVE_OVERRUN: u8 = 0x10;
    /// Receive event: currently in listen-only mode.
    pub const RECEIVE_LISTEN_ONLY: u8 = 0x20;
    /// Receive event: broadcast received.
    pub const RECEIVE_BROADCAST: u8 = 0x40;
    /// Send event: base bit.
    pub const SEND: u8 = 0x40;
    /// Send event: read exception sent (codes 1-3).
    pub const SEND_READ_EXCEPTION: u8 = 0x01;
    /// Send event: server abort exception sent (code 4).
    pub const SEND_ABORT_EXCEPTION: u8 = 0x02;
    /// Send event: busy exception sent (codes 5-6).
    pub const SEND_BUSY_EXCEPTION: u8 = 0x04;
    /// Send event: NAK exception sent (code 7).
    pub const SEND_NAK_EXCEPTION: u8 = 0x08;
    /// Send event: write timeout.
    pub const SEND_WRITE_TIMEOUT: u8 = 0x10;
    /// Send event: currently in listen-only mode.
    pub const SEND_LISTEN_ONLY: u8 = 0x20;
    /// Entered listen-only mode.
    pub const ENTERED_LISTEN_ONLY: u8 = 0x04;
    /// Communication restart.
    pub const COMM_RESTART: u8 = 0x00;
}

/// Number of events the log keeps.
pub const EVENT_LOG_LEN: usize = 64;

/// Counters, diagnostic register, listen-only flag, event counter and event log.
#[derive(Debug)]
pub struct Diagnostics {
    /// Every counter but the server message count (which lives in `packed`).
    counters: [AtomicU16; 8],
    register: AtomicU16,
    listen_only: AtomicBool,
    overrun: AtomicBool,
    /// Event count, server message count and log head; see [`lane`].
    packed: AtomicU64,
    log: [AtomicU8; EVENT_LOG_LEN],
}

impl Default for Diagnostics {
    fn default() -> Self {
        Self::new()
    }
}

impl Diagnostics {
    /// All zero, not in listen-only mode, empty log.
    pub fn new() -> Self {
        Self {
            counters: Default::default(),
            register: AtomicU16::new(0),
            listen_only: AtomicBool::new(false),
            overrun: AtomicBool::new(false),
            packed: AtomicU64::new(0),
            log: [const { AtomicU8::new(0) }; EVENT_LOG_LEN],
        }
    }

    /// Adds one to `counter` (wrapping at 65535, as 16-bit counters do).
    pub fn increment(&self, counter: DiagnosticCounter) {
        if counter == DiagnosticCounter::ServerMessage {
            self.add(lane::MESSAGE);
        } else if let Some(c) = self.counters.get(counter.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Current value of `counter`.
    pub fn get(&self, counter: DiagnosticCounter) -> u16 {
        if counter == DiagnosticCounter::ServerMessage {
            return lane::counter(self.packed.load(Ordering::Relaxed), lane::MESSAGE_SHIFT);
        }
        self.counters
            .get(counter.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Clears all counters, the diagnostic register and the event counter (FC8 0x0A).
    pub fn clear_counters(&self) {
        for c in &self.counters {
            c.store(0, Ordering::Relaxed);
        }
        self.register.store(0, Ordering::Relaxed);
        self.packed.fetch_and(!lane::COUNTERS, Ordering::Relaxed);
        self.overrun.store(false, Ordering::Relaxed);
    }

    /// Clears the overrun counter and flag (FC8 0x14).
    pub fn clear_overrun(&self) {
        if let Some(c) = self.counters.get(DiagnosticCounter::BusCharacterOverrun.index()) {
            c.store(0, Ordering::Relaxed);
        }
        self.overrun.store(false, Ordering::Relaxed);
    }

    /// The diagnostic register (FC8 0x02).
    pub fn register(&self) -> u16 {
        self.register.load(Ordering::Relaxed)
    }

    /// Sets the diagnostic register (device-specific meaning).
    pub fn set_register(&self, value: u16) {
        self.register.store(value, Ordering::Relaxed);
    }

    /// True while in listen-only mode (FC8 0x04 until 0x01).
    pub fn listen_only(&self) -> bool {
        self.listen_only.load(Ordering::Relaxed)
    }

    /// Enters or leaves listen-only mode.
    pub fn set_listen_only(&self, on: bool) {
        self.listen_only.store(on, Ordering::Relaxed);
    }

    /// The comm event counter (FC11): successful message completions.
    pub fn event_count(&self) -> u16 {
        lane::counter(self.packed.load(Ordering::Relaxed), lane::EVENT_SHIFT)
    }

    /// Adds one to the comm event counter.
    pub fn increment_event_count(&self) {
        self.add(lane::EVENT);
    }

    /// Records an event byte in the log (the oldest falls out past 64).
    pub fn push_event(&self, byte: u8) {
        let head = lane::head(self.add(lane::HEAD));
        self.store_event(head, byte);
    }

    /// One whole exchange in one atomic add: counts a server message, logs
    /// `receive` then `send` (if any) and, if `completed`, counts a comm
    /// event. The same as [`Diagnostics::increment`] (server message),
    /// [`Diagnostics::push_event`] (`receive`), [`Diagnostics::increment_event_count`]
    /// and [`Diagnostics::push_event`] (`send`) in a row, as if no other
    /// request ran in between.
    pub(crate) fn record_exchange(&self, receive: u8, send: Option<u8>, completed: bool) {
        let events = if send.is_some() { 2 } else { 1 };
        let delta = lane::MESSAGE + lane::HEAD * events + if completed { lane::EVENT } else { 0 };
        let head = lane::head(self.add(delta));
        self.store_event(head, receive);
        if let Some(send) = send {
            self.store_event(head.wrapping_add(1), send);
        }
    }

    /// Writes event `byte` at log position `head`.
    #[inline]
    fn store_event(&self, head: u64, byte: u8) {
        // ok: the remainder is below EVENT_LOG_LEN, so it fits a usize.
        let slot = (head % EVENT_LOG_LEN as u64) as usize;
        if let Some(slot) = self.log.get(slot) {
            slot.store(byte, Ordering::Relaxed);
        }
    }

    /// Adds `delta` to the packed word; returns the old word.
    #[inline]
    fn add(&self, delta: u64) -> u64 {
        let old = self.packed.fetch_add(delta, Ordering::Relaxed);
        if old.wrapping_add(delta) & lane::GUARDS != 0 {
            self.normalize();
        }
        old
    }

    /// Takes every lane whose guard bit is set back below it without
    /// changing what it reads as (see [`lane`]). Several threads may get
    /// here for one crossing: each looks at the current word, so the lane is
    /// lowered once.
    #[cold]
    fn normalize(&self) {
        let mut current = self.packed.load(Ordering::Relaxed);
        loop {
            let mut next = current;
            // ok (each subtraction): the guard bit just tested is set, so no borrow.
            if current & ((1 << 20) << lane::EVENT_SHIFT) != 0 {
                next -= (1 << 20) << lane::EVENT_SHIFT;
            }
            if current & ((1 << 20) << lane::MESSAGE_SHIFT) != 0 {
                next -= (1 << 20) << lane::MESSAGE_SHIFT;
            }
            if current & (1 << 63) != 0 {
                // Keeps the head a multiple of the log length away and >= it (full).
                next -= ((1 << 21) - EVENT_LOG_LEN as u64) << lane::HEAD_SHIFT;
            }
            if next == current {
                return;
            }
            match self
                .packed
                .compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => current = now,
            }
        }
    }

    /// Copies the log, newest first, into `out`; returns how many events.
    pub fn events(&self, out: &mut [u8; EVENT_LOG_LEN]) -> usize {
        let head = lane::head(self.packed.load(Ordering::Relaxed)) as usize;
        let n = head.min(EVENT_LOG_LEN);
        for (i, dst) in out.iter_mut().take(n).enumerate() {
            let idx = (head + EVENT_LOG_LEN - 1 - i) % EVENT_LOG_LEN;
            *dst = self.log.get(idx).map_or(0, |s| s.load(Ordering::Relaxed));
        }
        n
    }

    /// Empties the event log.
    pub fn clear_log(&self) {
        self.packed.fetch_and(!lane::HEAD_MASK, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_is_newest_first_and_bounded() {
        let d = Diagnostics::new();
        for i in 0..70u8 {
            d.push_event(i);
        }
        let mut out = [0; EVENT_LOG_LEN];
        assert_eq!(d.events(&mut out), 64);
        assert_eq!(out[0], 69);
        assert_eq!(out[63], 6);
        d.clear_log();
        assert_eq!(d.events(&mut out), 0);
    }

    /// The packed lanes wrap like 16-bit counters and a full log stays full
    /// and in order across guard normalizations.
    #[test]
    fn packed_counters_wrap_exactly() {
        let d = Diagnostics::new();
        let n: u32 = (1 << 21) + 12_345;
        for i in 0..n {
            d.record_exchange(0x80, Some(i as u8), i % 3 != 0);
        }
        assert_eq!(d.get(DiagnosticCounter::ServerMessage), n as u16);
        let completed = n - n.div_ceil(3);
        assert_eq!(d.event_count(), completed as u16);
        let mut out = [0; EVENT_LOG_LEN];
        assert_eq!(d.events(&mut out), 64);
        for (k, pair) in out.chunks(2).enumerate() {
            let i = n - 1 - k as u32;
            assert_eq!(pair, [i as u8, 0x80], "pair {k}");
        }
        // The guard bits were cleared on the way, never carried.
        let word = d.packed.load(Ordering::Relaxed);
        assert_eq!(word & lane::GUARDS, 0);
        // Clearing the counters leaves the log, clearing the log the counters.
        d.increment_event_count();
        d.clear_counters();
        assert_eq!((d.event_count(), d.get(DiagnosticCounter::ServerMessage)), (0, 0));
        assert_eq!(d.events(&mut out), 64);
        d.increment(DiagnosticCounter::ServerMessage);
        d.increment_event_count();
        d.clear_log();
        assert_eq!(d.events(&mut out), 0);
        assert_eq!((d.event_count(), d.get(DiagnosticCounter::ServerMessage)), (1, 1));
    }

    /// One exchange is the four separate updates in a row.
    #[test]
    fn record_exchange_is_the_separate_updates() {
        let (a, b) = (Diagnostics::new(), Diagnostics::new());
        for (i, (send, completed)) in [
            (Some(0x40), true),
            (Some(0x41), false),
            (None, false),
            (Some(0x60), true),
        ]
        .into_iter()
        .enumerate()
        {
            a.record_exchange(0x80 | i as u8, send, completed);
            b.increment(DiagnosticCounter::ServerMessage);
            b.push_event(0x80 | i as u8);
            if completed {
                b.increment_event_count();
            }
            if let Some(s) = send {
                b.push_event(s);
            }
        }
        let (mut la, mut lb) = ([0; EVENT_LOG_LEN], [0; EVENT_LOG_LEN]);
        assert_eq!(a.events(&mut la), 7);
        assert_eq!(b.events(&mut lb), 7);
        assert_eq!(la, lb);
        assert_eq!(la[..7], [0x60, 0x83, 0x82, 0x41, 0x81, 0x40, 0x80]);
        assert_eq!(a.event_count(), 2);
        assert_eq!(a.get(DiagnosticCounter::ServerMessage), 4);
        assert_eq!(a.packed.load(Ordering::Relaxed), b.packed.load(Ordering::Relaxed));
    }

    /// Concurrent updates lose nothing.
    #[test]
    fn concurrent_exchanges_are_all_counted() {
        let d = std::sync::Arc::new(Diagnostics::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let d = d.clone();
                std::thread::spawn(move || {
                    for _ in 0..50_000 {
                        d.record_exchange(0x80, Some(0x40), true);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(d.get(DiagnosticCounter::ServerMessage), 200_000u32 as u16);
        assert_eq!(d.event_count(), 200_000u32 as u16);
        assert_eq!(lane::head(d.packed.load(Ordering::Relaxed)) % 64, 400_000 % 64);
    }

    #[test]
    fn counters() {
        let d = Diagnostics::new();
        d.increment(DiagnosticCounter::ServerMessage);
        d.increment(DiagnosticCounter::ServerMessage);
        assert_eq!(d.get(DiagnosticCounter::ServerMessage), 2);
        d.clear_counters();
        assert_eq!(d.get(DiagnosticCounter::ServerMessage), 0);
        for c in DiagnosticCounter::ALL {
            assert_eq!(DiagnosticCounter::from_sub_function(c.sub_function()), Some(c));
        }
    }
}
