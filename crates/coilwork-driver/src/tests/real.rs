//! The same races on async-io's timer and the real clock, with one waker
//! polled by hand (as an executor's task is).

use super::*;

/// The idle timer fires while an answer's write waits: the wake goes to
/// the write, and the wait after it must still see the timer.
#[test]
fn a_timer_that_fires_during_a_blocked_write_still_closes() {
    let (shared, stats) = shared(&idle_config());
    let stream = MockStream::default();
    stream.set_write_blocked(true);
    let served = serve_mock::<AsyncIoRt>(shared, Arc::new(CloseSignal::new()), stream.clone());
    let out = run_with_one_waker(served, Duration::from_secs(3), |polls| match polls {
        // The first wait found nothing and polled the timer: it holds the waker.
        1 => stream.feed(&READ_ONE),
        // The answer's write waits past the idle deadline; the timer's wake polls the write.
        2 => {
            std::thread::sleep(3 * IDLE);
            stream.set_write_blocked(false);
        }
        _ => {}
    });
    assert_eq!(out, Some(CloseCause::IdleTimeout));
    assert_eq!(stats.idle_timeouts(), 1);
    assert_eq!(stream.pipe().written, READ_ONE_ANSWER);
}

/// The timer fires while the connection waits, but the poll its wake
/// brings finds a request too and returns it: the wait after must still
/// look at the (fired) timer, or the idle timeout is lost.
#[test]
fn a_timer_wake_taken_by_a_read_is_not_lost() {
    let (shared, stats) = shared(&idle_config());
    let stream = MockStream::default();
    let served = serve_mock::<AsyncIoRt>(shared, Arc::new(CloseSignal::new()), stream.clone());
    let t0 = Instant::now();
    let out = run_with_one_waker(served, Duration::from_secs(3), |polls| {
        if polls == 1 {
            // Past the deadline (the timer fires and wakes), then a request.
            std::thread::sleep(IDLE + Duration::from_millis(50));
            stream.feed(&READ_ONE);
        }
    });
    assert_eq!(out, Some(CloseCause::IdleTimeout));
    assert!(t0.elapsed() >= 2 * IDLE, "closed {:?} after start", t0.elapsed());
    assert_eq!(stats.idle_timeouts(), 1);
    assert_eq!(stream.pipe().written.len(), 11);
}

/// A connection registers its waker with the close signal once; a raise
/// later still wakes it and closes it for that reason.
#[test]
fn a_raise_wakes_a_waiting_connection_that_registered_once() {
    let (shared, _stats) = shared(&TcpServerConfig {
        idle_timeout: None,
        ..idle_config()
    });
    let signal = Arc::new(CloseSignal::new());
    let stream = MockStream::default();
    let served = serve_mock::<AsyncIoRt>(shared, Arc::clone(&signal), stream.clone());
    let out = run_with_one_waker(served, Duration::from_secs(3), |polls| match polls {
        1 => stream.feed(&READ_ONE),
        _ => signal.raise(CloseReason::Evict),
    });
    assert_eq!(out, Some(CloseCause::Evicted));
    assert_eq!(stream.pipe().written.len(), 11);
}
