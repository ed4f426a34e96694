//! Server-level policy, sans-IO and in one place: which connections are
//! admitted ([`Admission`]), the counters every server keeps
//! ([`ServerStats`], and [`SerialStats`] for a serial line) and the one
//! error a server returns ([`ServerError`]).
//!
//! An adapter asks [`Admission::admit`] for every accepted connection and
//! does what the [`Verdict`] says: close the new socket, or serve it (and
//! first evict the connection the verdict names). When a connection ends it
//! calls [`Admission::release`]. The admission holds the adapter's handle
//! to each open connection (`T`: whatever wakes or closes it), oldest first.

use crate::options::{AdmissionOptions, Overflow};
use crate::session::CloseCause;
use core::net::{IpAddr, SocketAddr};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one server (any transport); cheap to bump from any thread.
#[derive(Debug, Default)]
pub struct ServerStats {
    accepted: AtomicU64,
    refused: AtomicU64,
    evicted: AtomicU64,
    bad_frames: AtomicU64,
    partial_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
    active: AtomicU64,
    handshake_failures: AtomicU64,
    received: AtomicU64,
    answered: AtomicU64,
    malformed: AtomicU64,
    bytes_in: ShardedCounter,
    bytes_out: ShardedCounter,
    /// Closes not counted above: peer closed, stopped, evicted, I/O error.
    closed_peer: AtomicU64,
    closed_stopped: AtomicU64,
    closed_evicted: AtomicU64,
    closed_io: AtomicU64,
}

/// Counters of a serial server, the same for every adapter.
#[derive(Debug, Default)]
pub struct SerialStats {
    opened: AtomicU64,
    open_failures: AtomicU64,
    line_errors: AtomicU64,
}

impl SerialStats {
    /// Times the port was opened.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
    /// Failed open attempts.
    pub fn open_failures(&self) -> u64 {
        self.open_failures.load(Ordering::Relaxed)
    }
    /// Times an open line failed while serving.
    pub fn line_errors(&self) -> u64 {
        self.line_errors.load(Ordering::Relaxed)
    }
    /// Counts the port opened.
    pub fn count_opened(&self) {
        bump(&self.opened);
    }
    /// Counts a failed open attempt.
    pub fn count_open_failure(&self) {
        bump(&self.open_failures);
    }
    /// Counts an open line that failed while serving.
    pub fn count_line_error(&self) {
        bump(&self.line_errors);
    }
}

/// Shards of a [`ShardedCounter`]: sessions spread over them by id.
const SHARDS: usize = 8;

/// One counter on its own cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Shard(AtomicU64);

/// A counter that many sessions add to on every read and write without all
/// of them contending for one cache line; reading it sums the shards.
#[derive(Debug, Default)]
struct ShardedCounter([Shard; SHARDS]);

impl ShardedCounter {
    /// Adds `n` on the shard of session `id`.
    #[inline]
    fn add(&self, id: u64, n: usize) {
        // ok: `id % SHARDS` is below SHARDS, so the index is in bounds.
        if let Some(shard) = self.0.get((id % SHARDS as u64) as usize) {
            shard.0.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// The total over all shards.
    fn sum(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

/// Adds one to a counter.
fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl ServerStats {
    /// Connections accepted and served.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
    /// Connections (or datagrams) refused: allow-list, `max_connections` with [`Overflow::RefuseNew`].
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
    /// Connections evicted to make room ([`Overflow::EvictOldest`]).
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }
    /// Connections closed because the stream could never be valid again.
    pub fn bad_frames(&self) -> u64 {
        self.bad_frames.load(Ordering::Relaxed)
    }
    /// Connections closed by the partial-frame timeout.
    pub fn partial_timeouts(&self) -> u64 {
        self.partial_timeouts.load(Ordering::Relaxed)
    }
    /// Connections closed by the idle timeout.
    pub fn idle_timeouts(&self) -> u64 {
        self.idle_timeouts.load(Ordering::Relaxed)
    }
    /// Connections open now.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }
    /// TLS: connections closed before serving (handshake failed, bad role).
    pub fn handshake_failures(&self) -> u64 {
        self.handshake_failures.load(Ordering::Relaxed)
    }
    /// Datagrams received.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
    /// Datagrams answered.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }
    /// Datagrams dropped because they were not exactly one valid ADU.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// Bytes read from clients.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.sum()
    }
    /// Bytes written to clients.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.sum()
    }
    /// Counts `n` bytes read by session `id` (a [`Session`](crate::Session)
    /// does; an adapter that frames its own streams, as a gateway, calls it).
    #[inline]
    pub fn count_in(&self, id: u64, n: usize) {
        self.bytes_in.add(id, n);
    }
    /// Counts `n` bytes written by session `id` (as [`ServerStats::count_in`]).
    #[inline]
    pub fn count_out(&self, id: u64, n: usize) {
        self.bytes_out.add(id, n);
    }

    /// Counts a connection or datagram refused.
    pub fn count_refused(&self) {
        bump(&self.refused);
    }
    /// Counts a failed TLS handshake.
    pub fn count_handshake_failure(&self) {
        bump(&self.handshake_failures);
    }
    /// Counts a datagram received.
    pub fn count_received(&self) {
        bump(&self.received);
    }
    /// Counts a datagram answered.
    pub fn count_answered(&self) {
        bump(&self.answered);
    }
    /// Counts a malformed datagram.
    pub fn count_malformed(&self) {
        bump(&self.malformed);
    }
    /// Counts a close for a fatal frame error.
    pub(crate) fn count_bad_frame(&self) {
        bump(&self.bad_frames);
    }
    /// Counts a close for a partial-frame timeout.
    pub(crate) fn count_partial_timeout(&self) {
        bump(&self.partial_timeouts);
    }
    /// Counts a close for an idle timeout.
    pub(crate) fn count_idle_timeout(&self) {
        bump(&self.idle_timeouts);
    }

    /// The counter of closes for `cause`.
    fn close_counter(&self, cause: CloseCause) -> &AtomicU64 {
        match cause {
            CloseCause::PeerClosed => &self.closed_peer,
            CloseCause::Stopped => &self.closed_stopped,
            CloseCause::Evicted => &self.closed_evicted,
            CloseCause::BadFrame => &self.bad_frames,
            CloseCause::PartialTimeout => &self.partial_timeouts,
            CloseCause::IdleTimeout => &self.idle_timeouts,
            CloseCause::IoError => &self.closed_io,
        }
    }

    /// Stream connections closed for `cause` (bad frames and timeouts are
    /// the counters above; the others are counted when the close is output).
    pub fn closed(&self, cause: CloseCause) -> u64 {
        self.close_counter(cause).load(Ordering::Relaxed)
    }

    /// Counts a stream connection closed for `cause`, whatever the cause:
    /// for an adapter that runs no [`Session`](crate::Session) (a gateway's
    /// client side), once per connection.
    pub fn count_stream_close(&self, cause: CloseCause) {
        bump(self.close_counter(cause));
    }

    /// Counts a stream connection's close, once, when it is output; bad
    /// frames and timeouts were counted when they were decided.
    pub(crate) fn count_close(&self, cause: CloseCause) {
        if !matches!(
            cause,
            CloseCause::BadFrame | CloseCause::PartialTimeout | CloseCause::IdleTimeout
        ) {
            bump(self.close_counter(cause));
        }
    }
}

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address is not in the allow-list.
    NotAllowed,
    /// `max_connections` are open and the overflow policy refuses.
    Full,
}

/// What to do with a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<T> {
    /// Serve it as connection `id`; first evict `evict` (raise
    /// [`Input::Evict`](crate::session::Input::Evict) on it), if named.
    Admit {
        /// The new connection's id (for [`Admission::release`]).
        id: u64,
        /// The connection to evict to make room.
        evict: Option<T>,
    },
    /// Close it at once.
    Refuse(Refusal),
}

/// One open connection as the admission sees it.
#[derive(Debug)]
struct Entry<T> {
    id: u64,
    /// Being evicted: on its way out, not counted against `max_connections`.
    evicting: bool,
    handle: T,
}

/// Admission of connections: `max_connections`, overflow, allow-list; counts in [`ServerStats`].
#[derive(Debug)]
pub struct Admission<T> {
    options: AdmissionOptions,
    open: VecDeque<Entry<T>>,
    next_id: u64,
}

impl<T: Clone> Admission<T> {
    /// No connection open yet.
    pub fn new(options: AdmissionOptions) -> Self {
        Self {
            options,
            open: VecDeque::new(),
            next_id: 0,
        }
    }

    /// Decides on a connection from `peer`; `handle` makes the adapter's
    /// handle to it from its id. Counts refusals, evictions, accepts.
    pub fn admit(&mut self, peer: IpAddr, stats: &ServerStats, handle: impl FnOnce(u64) -> T) -> Verdict<T> {
        if !self.options.allows(peer) {
            stats.count_refused();
            return Verdict::Refuse(Refusal::NotAllowed);
        }
        let live = self.open.iter().filter(|e| !e.evicting).count();
        let mut evict = None;
        if live >= self.options.max_connections {
            let oldest = match self.options.overflow {
                Overflow::RefuseNew => None,
                Overflow::EvictOldest => self.open.iter_mut().find(|e| !e.evicting),
            };
            let Some(oldest) = oldest else {
                stats.count_refused();
                return Verdict::Refuse(Refusal::Full);
            };
            oldest.evicting = true;
            bump(&stats.evicted);
            evict = Some(oldest.handle.clone());
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.open.push_back(Entry {
            id,
            evicting: false,
            handle: handle(id),
        });
        bump(&stats.accepted);
        bump(&stats.active);
        Verdict::Admit { id, evict }
    }

    /// Connection `id` ended; returns its handle.
    pub fn release(&mut self, id: u64, stats: &ServerStats) -> Option<T> {
        let at = self.open.iter().position(|e| e.id == id)?;
        let entry = self.open.remove(at)?;
        stats.active.fetch_sub(1, Ordering::Relaxed);
        Some(entry.handle)
    }

    /// The handles of the open connections, oldest first.
    pub fn open(&self) -> impl Iterator<Item = &T> {
        self.open.iter().map(|e| &e.handle)
    }

    /// How many connections are open (including those being evicted).
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// True if no connection is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// Why a server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another socket already listens on the address.
    #[error("cannot listen on {addr}: address already in use")]
    AddrInUse {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The address could not be bound (permission, not local, ...).
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The socket could not be created or configured.
    #[error("cannot set up socket for {addr}: {source}")]
    Socket {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A serial port could not be opened (and `auto_open` is off).
    #[error("cannot open serial port {port}: {source}")]
    SerialOpen {
        /// The device path.
        port: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `serve_forever` was called while the server is already serving.
    #[error("server is already serving")]
    AlreadyServing,
    /// The server was closed (stopped or `server_close`d) and cannot serve again.
    #[error("server is closed")]
    Closed,
    /// A receive or send on the server's socket failed in a way it cannot recover from.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    fn options(max: usize, overflow: Overflow) -> AdmissionOptions {
        AdmissionOptions {
            max_connections: max,
            overflow,
            allow_list: None,
        }
    }

    #[test]
    fn refuse_new_refuses_past_the_maximum_until_one_is_released() {
        let stats = ServerStats::default();
        let mut a = Admission::new(options(2, Overflow::RefuseNew));
        assert_eq!(a.admit(A, &stats, |id| id), Verdict::Admit { id: 0, evict: None });
        assert_eq!(a.admit(A, &stats, |id| id), Verdict::Admit { id: 1, evict: None });
        assert_eq!(a.admit(A, &stats, |id| id), Verdict::Refuse(Refusal::Full));
        assert_eq!(a.release(0, &stats), Some(0));
        assert_eq!(a.admit(A, &stats, |id| id), Verdict::Admit { id: 2, evict: None });
        assert_eq!((stats.accepted(), stats.refused(), stats.active()), (3, 1, 2));
    }

    #[test]
    fn evict_oldest_skips_connections_already_being_evicted() {
        let stats = ServerStats::default();
        let mut a = Admission::new(options(2, Overflow::EvictOldest));
        a.admit(A, &stats, |id| id);
        a.admit(A, &stats, |id| id);
        assert_eq!(a.admit(A, &stats, |id| id), Verdict::Admit { id: 2, evict: Some(0) });
        // 0 is still open (its task has not ended yet) but on its way out.
        assert_eq!(a.admit(A, &stats, |id| id), Verdict::Admit { id: 3, evict: Some(1) });
        assert_eq!(a.admit(A, &stats, |id| id), Verdict::Admit { id: 4, evict: Some(2) });
        assert_eq!(a.len(), 5);
        assert_eq!(stats.evicted(), 3);
        a.release(0, &stats);
        assert_eq!(a.release(0, &stats), None);
        assert_eq!(stats.active(), 4);
    }

    #[test]
    fn evict_oldest_with_no_room_at_all_refuses() {
        let stats = ServerStats::default();
        let mut a = Admission::<u64>::new(options(0, Overflow::EvictOldest));
        assert_eq!(a.admit(A, &stats, |id| id), Verdict::Refuse(Refusal::Full));
        assert!(a.is_empty());
    }

    #[test]
    fn the_allow_list_refuses_others() {
        let stats = ServerStats::default();
        let mut a = Admission::new(AdmissionOptions {
            allow_list: Some(vec![A]),
            ..options(10, Overflow::RefuseNew)
        });
        assert_eq!(a.admit(B, &stats, |id| id), Verdict::Refuse(Refusal::NotAllowed));
        assert!(matches!(a.admit(A, &stats, |id| id), Verdict::Admit { .. }));
        assert_eq!(a.open().copied().collect::<Vec<_>>(), [0]);
        assert_eq!(stats.refused(), 1);
    }
}
