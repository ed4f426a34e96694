//! The open connections of a TCP or TLS server as the accept loop sees
//! them: one slot per connection thread, the admission (from the core)
//! behind one lock, and the watchdog pass that wakes a thread blocked in a
//! read once its partial-frame or idle deadline has passed.

use coilwork_core::{Admission, AdmissionOptions, ServerStats};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// [`Slot::state`] while the thread is not in a read (setting up, handling input, writing).
pub(crate) const BUSY: u64 = u64::MAX;
/// [`Slot::state`] once the watchdog has shut the socket down at the thread's deadline.
pub(crate) const FIRED: u64 = u64::MAX - 1;
/// [`Slot::state`] while the thread reads, with no closing deadline.
pub(crate) const NO_DEADLINE: u64 = u64::MAX - 2;
/// The latest deadline a slot can hold.
const LAST_DEADLINE: u64 = u64::MAX - 3;

/// One open connection as the accept loop and the watchdog see it.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) id: u64,
    /// Set to make the connection's thread close it (eviction, or a cut at shutdown).
    pub(crate) close: AtomicBool,
    /// The connection's socket, shared with its thread: shutting its reading
    /// side down wakes the thread from a blocking read.
    pub(crate) socket: Arc<TcpStream>,
    /// While the thread reads: its earliest closing deadline (partial frame,
    /// idle) in nanoseconds since [`ConnTable::epoch`], or [`NO_DEADLINE`];
    /// [`FIRED`] once the watchdog woke it for that deadline; [`BUSY`] out of a read.
    pub(crate) state: AtomicU64,
}

impl Slot {
    /// Wakes the connection's thread from its read: the read returns what is
    /// already queued, then end of stream.
    pub(crate) fn wake(&self) {
        let _ = self.socket.shutdown(Shutdown::Read);
    }

    /// Wakes the thread if it is in (or about to enter) a read; call after
    /// raising the flag it checks once it has announced the read. A thread
    /// out of a read sees the flag before its next read. (A shutdown also
    /// wakes a write waiting for buffer space, which may then go on: a
    /// thread stuck writing to a client that does not read is left alone.)
    pub(crate) fn wake_if_reading(&self) {
        if self.state.load(Ordering::SeqCst) != BUSY {
            self.wake();
        }
    }
}

/// Open connections, oldest first; `changed` is signalled when one closes.
#[derive(Debug)]
pub(crate) struct ConnTable {
    pub(crate) open: Mutex<Admission<Arc<Slot>>>,
    pub(crate) changed: Condvar,
    /// Origin of the deadlines held in the slots.
    pub(crate) epoch: Instant,
    /// Set by the accept loop once it has stopped (before it wakes the readers).
    pub(crate) stopping: AtomicBool,
}

impl ConnTable {
    pub(crate) fn new(options: AdmissionOptions) -> Self {
        Self {
            open: Mutex::new(Admission::new(options)),
            changed: Condvar::new(),
            epoch: Instant::now(),
            stopping: AtomicBool::new(false),
        }
    }

    /// `t` as a slot deadline: nanoseconds since the epoch.
    pub(crate) fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(LAST_DEADLINE)
            .min(LAST_DEADLINE)
    }

    /// Raises `stopping` and wakes every connection thread blocked in a read
    /// (they see the stop).
    pub(crate) fn wake_for_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for slot in self.lock().open() {
            slot.wake_if_reading();
        }
    }

    /// The watchdog's pass, made by the accept loop: shuts down, once, the
    /// socket of each connection whose closing deadline passed; returns how
    /// long until the next deadline, at most `poll` and at least 1 ms.
    pub(crate) fn watch(&self, poll: Duration) -> Duration {
        let now = self.nanos(Instant::now());
        let mut next = NO_DEADLINE;
        for slot in self.lock().open() {
            let d = slot.state.load(Ordering::Acquire);
            if d > LAST_DEADLINE {
                continue;
            }
            if d > now {
                next = next.min(d);
            } else if slot
                .state
                .compare_exchange(d, FIRED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                // Fails when the thread woke first: it then left its read (BUSY).
                slot.wake();
            }
        }
        Duration::from_nanos(next.saturating_sub(now))
            .min(poll)
            .max(Duration::from_millis(1))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Admission<Arc<Slot>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until no connection is open or `timeout` passed; true if none is open.
    pub(crate) fn wait_empty(&self, timeout: Duration) -> bool {
        let open = self.lock();
        let (open, _) = self
            .changed
            .wait_timeout_while(open, timeout, |o| !o.is_empty())
            .unwrap_or_else(PoisonError::into_inner);
        open.is_empty()
    }
}

/// Removes a connection from the table when its thread ends (even by a panic).
pub(crate) struct SlotGuard {
    pub(crate) slot: Arc<Slot>,
    pub(crate) table: Arc<ConnTable>,
    pub(crate) stats: Arc<ServerStats>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.table.lock().release(self.slot.id, &self.stats);
        self.table.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coilwork_core::Verdict;
    use std::io::{ErrorKind, Read, Write};
    use std::net::{IpAddr, Ipv4Addr, TcpListener};

    /// A connected pair: (the server side in a slot, the client side).
    fn slot_pair(id: u64, state: u64) -> (Arc<Slot>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let slot = Arc::new(Slot {
            id,
            close: AtomicBool::new(false),
            socket: Arc::new(server),
            state: AtomicU64::new(state),
        });
        (slot, client)
    }

    /// Admits `slots` into `table`, in order.
    fn insert(table: &ConnTable, slots: [Arc<Slot>; 3]) {
        let stats = ServerStats::default();
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        for slot in slots {
            let verdict = table.lock().admit(localhost, &stats, |_| slot);
            assert!(matches!(verdict, Verdict::Admit { evict: None, .. }));
        }
    }

    #[test]
    fn watchdog_wakes_only_the_reader_whose_deadline_passed_keeping_queued_bytes() {
        let table = ConnTable::new(AdmissionOptions::default());
        let (due, mut due_client) = slot_pair(0, 0);
        let (later, _later_client) = slot_pair(1, table.nanos(Instant::now() + Duration::from_secs(60)));
        let (none, _none_client) = slot_pair(2, NO_DEADLINE);
        insert(&table, [Arc::clone(&due), Arc::clone(&later), Arc::clone(&none)]);
        due_client.write_all(&[7, 8, 9]).unwrap();
        // The next deadline is a minute away: the pass asks to come back within `poll`.
        assert_eq!(table.watch(Duration::from_millis(5)), Duration::from_millis(5));
        let mut buf = [0u8; 8];
        // Blocks with no read timeout: the bytes queued first, then the wake's end of stream.
        let mut got = Vec::new();
        loop {
            let n = (&*due.socket).read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, [7, 8, 9]);
        assert_eq!(due.state.load(Ordering::Acquire), FIRED);
        assert_ne!(later.state.load(Ordering::Acquire), FIRED);
        assert_eq!(none.state.load(Ordering::Acquire), NO_DEADLINE);
        // The others were not shut down.
        later.socket.set_nonblocking(true).unwrap();
        let e = (&*later.socket).read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WouldBlock);
        // A deadline sooner than `poll` is when the pass asks to come back.
        later
            .state
            .store(table.nanos(Instant::now() + Duration::from_secs(2)), Ordering::SeqCst);
        let wait = table.watch(Duration::from_secs(5));
        assert!(wait <= Duration::from_secs(2), "{wait:?}");
    }

    /// True if the server side of `slot` was shut for reading (a read returns 0 at once).
    fn shut_for_reading(slot: &Slot) -> bool {
        slot.socket.set_nonblocking(true).unwrap();
        let r = (&*slot.socket).read(&mut [0u8; 4]);
        slot.socket.set_nonblocking(false).unwrap();
        matches!(r, Ok(0))
    }

    #[test]
    fn stop_and_eviction_wake_only_threads_in_a_read() {
        let table = ConnTable::new(AdmissionOptions::default());
        let (reading, _c1) = slot_pair(0, NO_DEADLINE);
        let (waiting, _c2) = slot_pair(1, table.nanos(Instant::now() + Duration::from_secs(60)));
        let (busy, _c3) = slot_pair(2, BUSY);
        insert(&table, [Arc::clone(&reading), Arc::clone(&waiting), Arc::clone(&busy)]);
        table.wake_for_stop();
        assert!(table.stopping.load(Ordering::SeqCst));
        assert!(shut_for_reading(&reading));
        assert!(shut_for_reading(&waiting));
        // A thread writing (perhaps blocked on a client that does not read)
        // is not disturbed: it sees the stop before its next read.
        assert!(!shut_for_reading(&busy));
        busy.state.store(NO_DEADLINE, Ordering::SeqCst);
        busy.wake_if_reading();
        assert!(shut_for_reading(&busy));
    }

    #[test]
    fn slot_deadlines_never_collide_with_the_markers() {
        let table = ConnTable::new(AdmissionOptions::default());
        assert_eq!(table.nanos(table.epoch), 0);
        assert_eq!(table.nanos(table.epoch + Duration::from_nanos(1500)), 1500);
        // 600 years: past what u64 nanoseconds hold.
        let far = table
            .epoch
            .checked_add(Duration::from_secs(600 * 365 * 86_400))
            .unwrap();
        assert_eq!(table.nanos(far), LAST_DEADLINE);
        let earlier = table.epoch.checked_sub(Duration::from_millis(1));
        if let Some(t) = earlier {
            assert_eq!(table.nanos(t), 0);
        }
    }
}
