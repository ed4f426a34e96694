//! The timer rule on tokio's paused clock: a wait polls the timer again
//! when its wake may have gone to another poll. These tests hand the
//! timer's wake to a read and to a blocked write, and then send no wake at
//! all: the connection must still see the deadline.

use super::*;
use tokio::task::JoinHandle;

const STEP: Duration = Duration::from_millis(10);

/// Spawns the loop on `stream` as a task of its own: the task's waker is
/// the only one the connection sees, and nothing the test awaits wakes it.
fn spawn_serve(config: TcpServerConfig, stream: MockStream) -> (JoinHandle<CloseCause>, Arc<ServerStats>) {
    let (shared, stats) = shared(&config);
    let served = tokio::spawn(serve_mock::<TokioRt>(shared, Arc::new(CloseSignal::new()), stream));
    (served, stats)
}

/// Lets the connection task run until `done` holds. Yields only: on a
/// paused clock a yield does not move time.
async fn settle(what: &str, done: impl Fn() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the connection never got to: {what}");
}

/// The connection's end, or a failure if it is still open long after
/// its last deadline (the paused clock gets there at once).
async fn closed(served: JoinHandle<CloseCause>, what: &str) -> CloseCause {
    tokio::time::timeout(100 * IDLE, served)
        .await
        .unwrap_or_else(|_| panic!("{what}"))
        .expect("join")
}

/// A socket that takes an answer in part: the rest is written in order,
/// nothing twice, in one write of the whole batch.
#[tokio::test(start_paused = true)]
async fn an_answer_written_in_part_goes_out_whole() {
    let stream = MockStream::default();
    stream.pipe().max_write = 4;
    let (served, _stats) = spawn_serve(idle_config(), stream.clone());
    settle("the first wait", || stream.pipe().reader.is_some()).await;
    stream.feed(&[READ_ONE, READ_ONE].concat());
    let answers = [READ_ONE_ANSWER, READ_ONE_ANSWER].concat();
    settle("both answers", || stream.pipe().written == answers).await;
    // 22 bytes, 4 at a time: six polls, both answers in one write.
    assert_eq!(stream.pipe().write_polls, 6);
    assert_eq!(
        closed(served, "the idle timeout never fired").await,
        CloseCause::IdleTimeout
    );
}

/// The timer fires while the connection waits, and the poll its wake
/// brings finds a request (which came without a wake of its own) and
/// returns the read. The wait after the answer must still look at the
/// fired timer: it re-arms at the new idle deadline, which then closes.
#[tokio::test(start_paused = true)]
async fn a_timer_wake_taken_by_a_read_is_not_lost() {
    let stream = MockStream::default();
    let start = tokio::time::Instant::now();
    let (served, stats) = spawn_serve(idle_config(), stream.clone());
    settle("the first wait", || stream.pipe().reader.is_some()).await;
    stream.feed_quietly(&READ_ONE);
    // Past the deadline: the timer's wake is the only one, and its poll returns the read.
    tokio::time::advance(IDLE + STEP).await;
    settle("the answer", || stream.pipe().written == READ_ONE_ANSWER).await;
    assert_eq!(stream.pipe().write_polls, 1, "the answer's write did not wait");
    let close = closed(
        served,
        "the idle timeout never fired: the timer's wake went to the read",
    )
    .await;
    assert_eq!(close, CloseCause::IdleTimeout);
    assert_eq!(stats.idle_timeouts(), 1);
    // The idle deadline of the request (read at IDLE + STEP), not an earlier one.
    let elapsed = start.elapsed();
    assert!(
        elapsed >= 2 * IDLE + STEP && elapsed <= 2 * IDLE + 2 * STEP,
        "closed {elapsed:?} after the start"
    );
}

/// The same with the buffer release as the deadline (no idle timeout):
/// after a timer wake taken by a read, the buffers must still be released,
/// the connection going back to waiting without a buffer.
#[tokio::test(start_paused = true)]
async fn a_buffer_release_after_a_timer_wake_taken_by_a_read_is_not_lost() {
    const RELEASE: Duration = Duration::from_millis(100);
    let stream = MockStream::default();
    let config = TcpServerConfig {
        idle_timeout: None,
        release_buffers_after: RELEASE,
        ..idle_config()
    };
    let (served, stats) = spawn_serve(config, stream.clone());
    // A first request arms the timer at its release deadline.
    settle("the first wait", || stream.pipe().reader.is_some()).await;
    stream.feed(&READ_ONE);
    settle("the first answer", || stream.pipe().written.len() == 11).await;
    // The next request comes without a wake; the release deadline's wake returns it.
    stream.feed_quietly(&READ_ONE);
    tokio::time::advance(RELEASE + STEP).await;
    settle("the second answer", || stream.pipe().written.len() == 22).await;
    let bufferless = stream.pipe().bufferless_waits;
    // Every task waits now: the paused clock runs to the next timer, if the connection looks at it.
    tokio::time::sleep(10 * RELEASE).await;
    // A third request: only a connection without a buffer asks `has_input` first.
    stream.feed(&READ_ONE);
    settle("the third answer", || stream.pipe().written.len() == 33).await;
    assert!(
        stream.pipe().bufferless_waits > bufferless,
        "the buffers were never released: the timer's wake went to the read"
    );
    assert!(!served.is_finished());
    assert_eq!(stats.bytes_out(), 33);
    served.abort();
}

/// The answer's write waits, and the timer fires meanwhile: its wake polls
/// the blocked write. The write then completes on its own wake, and nothing
/// wakes the connection after: the wait after the write must still look at
/// the fired timer.
#[tokio::test(start_paused = true)]
async fn a_timer_that_fires_during_a_blocked_write_still_closes() {
    let stream = MockStream::default();
    stream.set_write_blocked(true);
    let start = tokio::time::Instant::now();
    let (served, stats) = spawn_serve(idle_config(), stream.clone());
    settle("the first wait", || stream.pipe().reader.is_some()).await;
    // A request half-way to the first idle deadline: the timer stays armed at start + IDLE.
    tokio::time::advance(IDLE / 2).await;
    stream.feed(&READ_ONE);
    settle("the blocked write", || stream.pipe().writer.is_some()).await;
    let write_polls = stream.pipe().write_polls;
    // The timer fires during the write: its wake polls the write, which still waits.
    tokio::time::advance(IDLE / 2 + STEP).await;
    settle("the write polled by the timer's wake", || {
        stream.pipe().write_polls > write_polls
    })
    .await;
    stream.set_write_blocked(false);
    settle("the answer", || stream.pipe().written == READ_ONE_ANSWER).await;
    let close = closed(
        served,
        "the idle timeout never fired: the timer's wake went to the write",
    )
    .await;
    assert_eq!(close, CloseCause::IdleTimeout);
    assert_eq!(stats.idle_timeouts(), 1);
    // The idle deadline of the request (read at IDLE / 2).
    let elapsed = start.elapsed();
    assert!(
        elapsed >= IDLE / 2 + IDLE && elapsed <= IDLE / 2 + IDLE + STEP,
        "closed {elapsed:?} after the start"
    );
}
