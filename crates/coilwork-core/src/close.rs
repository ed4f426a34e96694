//! A request to close one connection, raised by its server and seen by the
//! connection's task.
//!
//! A server closes a connection for two reasons: it stops (the connection
//! answers what already arrived, then closes) or it evicts the connection to
//! make room for a new one. The server keeps a [`CloseSignal`] per connection
//! and [raises](CloseSignal::raise) it; the connection's loop checks it with
//! one atomic load per wait ([`CloseSignal::get`]) and
//! [registers](CloseSignal::register) its task's waker once, again only if the
//! waker changes. Per connection, so no connection polls state that every
//! other connection shares.
//!
//! No runtime: a [`Waker`] is all it knows of tasks. The first reason raised
//! wins; a signal is never lowered.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::Waker;

/// Why a connection is asked to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The server stops: answer what already arrived, then close.
    Stop,
    /// The server evicts the connection (to admit a newer one): close now.
    Evict,
}

impl CloseReason {
    const fn code(self) -> u8 {
        match self {
            Self::Stop => 1,
            Self::Evict => 2,
        }
    }

    const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Stop),
            2 => Some(Self::Evict),
            _ => None,
        }
    }
}

/// One connection's close request: raised once by the server, read by the connection.
#[derive(Debug, Default)]
pub struct CloseSignal {
    reason: AtomicU8,
    /// The task to wake on raise; taken only on registration and on raise.
    waker: Mutex<Option<Waker>>,
}

impl CloseSignal {
    /// A signal not raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the request (a later reason does not replace the first) and wakes the registered task.
    pub fn raise(&self, reason: CloseReason) {
        let _ = self
            .reason
            .compare_exchange(0, reason.code(), Ordering::AcqRel, Ordering::Acquire);
        let waker = self.waker.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The reason, once raised.
    pub fn get(&self) -> Option<CloseReason> {
        CloseReason::from_code(self.reason.load(Ordering::Acquire))
    }

    /// Registers the task to wake on [`raise`](Self::raise) (replacing any
    /// earlier one) and returns the reason if it was raised meanwhile.
    ///
    /// A loop calls this on its first wait and whenever its task's waker
    /// changes; between those, [`get`](Self::get) is enough.
    pub fn register(&self, waker: &Waker) -> Option<CloseReason> {
        {
            let mut slot = self.waker.lock().unwrap_or_else(PoisonError::into_inner);
            match slot.as_mut() {
                Some(old) if old.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
        }
        // A raise between the caller's last `get` and this registration
        // found no waker: it is seen here (the lock orders the two).
        self.get()
    }

    /// Polls for the request: ready with the reason once raised, else
    /// registers `cx`'s waker. For loops that do not track their waker.
    pub fn poll(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<CloseReason> {
        match self.get().or_else(|| self.register(cx.waker())) {
            Some(reason) => std::task::Poll::Ready(reason),
            None => std::task::Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Poll, Wake};

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting_waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (Arc::clone(&count), Waker::from(Arc::clone(&count)))
    }

    #[test]
    fn raise_wakes_the_registered_task_once_and_the_first_reason_wins() {
        let signal = CloseSignal::new();
        let (count, waker) = counting_waker();
        assert_eq!(signal.register(&waker), None);
        assert_eq!(signal.get(), None);
        signal.raise(CloseReason::Evict);
        signal.raise(CloseReason::Stop);
        assert_eq!(signal.get(), Some(CloseReason::Evict));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_raise_before_registration_is_seen_by_register() {
        let signal = CloseSignal::new();
        signal.raise(CloseReason::Stop);
        let (count, waker) = counting_waker();
        assert_eq!(signal.register(&waker), Some(CloseReason::Stop));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_latest_registered_waker_is_woken() {
        let signal = CloseSignal::new();
        let (first, w1) = counting_waker();
        let (second, w2) = counting_waker();
        signal.register(&w1);
        signal.register(&w2);
        signal.raise(CloseReason::Stop);
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn poll_is_pending_until_raised() {
        let signal = CloseSignal::new();
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(signal.poll(&mut cx), Poll::Pending);
        signal.raise(CloseReason::Stop);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(signal.poll(&mut cx), Poll::Ready(CloseReason::Stop));
    }

    #[test]
    fn a_raise_from_another_thread_wakes_a_waiting_thread() {
        let signal = Arc::new(CloseSignal::new());
        let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
        assert_eq!(signal.register(&waker), None);
        let raiser = {
            let signal = Arc::clone(&signal);
            std::thread::spawn(move || signal.raise(CloseReason::Evict))
        };
        while signal.get().is_none() {
            std::thread::park_timeout(std::time::Duration::from_millis(100));
        }
        raiser.join().expect("raiser");
        assert_eq!(signal.get(), Some(CloseReason::Evict));
    }

    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
}
