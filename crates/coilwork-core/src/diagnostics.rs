//! Serial-line diagnostics (FC8), the comm event counter (FC11) and the comm
//! event log (FC12), counted from real traffic.
//!
//! Everything is atomics: counting never takes a lock, so connections that
//! share a device never wait on each other. The engine keeps one
//! [`Diagnostics`] for the bus (bus message, bus communication error and
//! character overrun counts) and one per device (the rest).

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU32, Ordering};

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
    counters: [AtomicU16; 8],
    register: AtomicU16,
    listen_only: AtomicBool,
    overrun: AtomicBool,
    event_count: AtomicU16,
    log_head: AtomicU32,
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
            event_count: AtomicU16::new(0),
            log_head: AtomicU32::new(0),
            log: [const { AtomicU8::new(0) }; EVENT_LOG_LEN],
        }
    }

    /// Adds one to `counter` (wrapping at 65535, as 16-bit counters do).
    pub fn increment(&self, counter: DiagnosticCounter) {
        if let Some(c) = self.counters.get(counter.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Current value of `counter`.
    pub fn get(&self, counter: DiagnosticCounter) -> u16 {
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
        self.event_count.store(0, Ordering::Relaxed);
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
        self.event_count.load(Ordering::Relaxed)
    }

    /// Adds one to the comm event counter.
    pub fn increment_event_count(&self) {
        self.event_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Records an event byte in the log (the oldest falls out past 64).
    pub fn push_event(&self, byte: u8) {
        let head = self.log_head.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = self.log.get(head as usize % EVENT_LOG_LEN) {
            slot.store(byte, Ordering::Relaxed);
        }
    }

    /// Copies the log, newest first, into `out`; returns how many events.
    pub fn events(&self, out: &mut [u8; EVENT_LOG_LEN]) -> usize {
        let head = self.log_head.load(Ordering::Relaxed) as usize;
        let n = head.min(EVENT_LOG_LEN);
        for (i, dst) in out.iter_mut().take(n).enumerate() {
            let idx = (head + EVENT_LOG_LEN - 1 - i) % EVENT_LOG_LEN;
            *dst = self.log.get(idx).map_or(0, |s| s.load(Ordering::Relaxed));
        }
        n
    }

    /// Empties the event log.
    pub fn clear_log(&self) {
        self.log_head.store(0, Ordering::Relaxed);
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
