//! Every lifecycle rule of a session on a virtual clock: `t0` plus offsets,
//! no sleeping, no sockets.

use super::*;
use crate::engine::RequestHook;
use crate::frame::rtu::RtuTiming;
use crate::pdu::Request;
use crate::storage::{DeviceContext, RequestContext, ServerContext};
use crate::{Delivery, Engine};
use proptest::prelude::*;

const MS: Duration = Duration::from_millis(1);

/// FC3 is delayed 50 ms and split after 3 bytes with a 20 ms pause.
struct Pauses;
impl RequestHook for Pauses {
    fn delivery(&self, ctx: &RequestContext<'_>, _: &Request<'_>, _: &[u8]) -> Option<Delivery> {
        (ctx.function == 0x03).then_some(Delivery {
            delay: MS * 50,
            split: Some((3, MS * 20)),
            garble: false,
        })
    }
}

fn engine(hooked: bool) -> Arc<Engine> {
    let device = DeviceContext::with_sizes(10, 10, 10, 10).expect("device"); // ok: test code
    let builder = Engine::builder(ServerContext::single(device));
    let builder = if hooked {
        builder.hook(Arc::new(Pauses))
    } else {
        builder
    };
    Arc::new(builder.build())
}

fn config(kind: SessionKind, framing: Framing, hooked: bool) -> SessionConfig {
    let transport = match kind {
        SessionKind::Stream => Transport::Tcp,
        SessionKind::Line => Transport::Serial,
        SessionKind::Datagram => Transport::Udp,
    };
    let mut c = SessionConfig::new(engine(hooked), kind, framing, transport);
    if kind == SessionKind::Stream {
        c.timeouts = StreamTimeoutConfig {
            partial_frame: Some(MS * 500),
            idle: Some(MS * 10_000),
            release_buffers_after: MS * 1000,
        };
    }
    c
}

fn tcp(hooked: bool) -> (Session, Instant) {
    let t0 = Instant::now();
    let shared = Arc::new(config(SessionKind::Stream, Framing::Mbap, hooked));
    (Session::new(shared, t0, 0, None, None), t0)
}

/// FC3 (read 1 holding register) or FC1 (read 1 coil), MBAP, transaction `tid`.
fn mbap(tid: u8, function: u8) -> [u8; 12] {
    [0, tid, 0, 0, 0, 6, 1, function, 0, 0, 0, 1]
}

/// The adapter's timer fired at `now`: the session hears of it, then is polled.
fn tick(s: &mut Session, now: Instant) -> Output<'_> {
    s.handle(now, Input::Timeout);
    s.poll(now)
}

/// Polls until a wait or a close, writing everything; returns (bytes written, last output).
fn run(s: &mut Session, now: Instant) -> (Vec<u8>, Output<'static>) {
    let mut written = Vec::new();
    loop {
        match s.poll(now) {
            Output::Transmit(bytes) => {
                written.extend_from_slice(bytes);
                let n = bytes.len();
                s.handle(now, Input::Sent(n));
            }
            Output::ReleaseBuffers => return (written, Output::ReleaseBuffers),
            Output::Discarded => return (written, Output::Discarded),
            Output::ReadQueued => return (written, Output::ReadQueued),
            Output::Wait(d) => return (written, Output::Wait(d)),
            Output::Pause(d) => return (written, Output::Pause(d)),
            Output::Close(c) => return (written, Output::Close(c)),
        }
    }
}

#[test]
fn a_request_is_answered_and_the_release_deadline_armed() {
    let (mut s, t0) = tcp(false);
    assert_eq!(s.poll(t0), Output::Wait(Some(t0 + MS * 10_000)));
    let t1 = t0 + MS * 10;
    s.handle(t1, Input::Bytes(&mbap(1, 3)));
    let (out, next) = run(&mut s, t1);
    assert_eq!(out, [0, 1, 0, 0, 0, 5, 1, 3, 2, 0, 0]);
    assert_eq!(next, Output::Wait(Some(t1 + MS * 1000)));
}

#[test]
fn quiet_buffers_are_released_once_and_the_connection_stays_open() {
    let (mut s, t0) = tcp(false);
    s.handle(t0, Input::Bytes(&mbap(1, 3)));
    run(&mut s, t0);
    assert_eq!(tick(&mut s, t0 + MS * 1000), Output::ReleaseBuffers);
    assert_eq!(s.poll(t0 + MS * 1000), Output::Wait(Some(t0 + MS * 10_000)));
    s.handle(t0 + MS * 2000, Input::Bytes(&mbap(2, 3)));
    assert_eq!(run(&mut s, t0 + MS * 2000).0.len(), 11);
}

#[test]
fn a_partial_frame_times_out_counted_and_the_close_is_final() {
    let (mut s, t0) = tcp(false);
    s.handle(t0, Input::Bytes(&mbap(1, 3)[..5]));
    assert_eq!(s.poll(t0), Output::Wait(Some(t0 + MS * 500)));
    // Growing the partial frame keeps its start.
    s.handle(t0 + MS * 300, Input::Bytes(&mbap(1, 3)[5..8]));
    assert_eq!(s.poll(t0 + MS * 499), Output::Wait(Some(t0 + MS * 500)));
    assert_eq!(tick(&mut s, t0 + MS * 500), Output::Close(CloseCause::PartialTimeout));
    assert_eq!(s.config().stats.partial_timeouts(), 1);
    s.handle(t0 + MS * 501, Input::Bytes(&mbap(1, 3)[8..]));
    s.handle(t0 + MS * 501, Input::Stop);
    assert_eq!(tick(&mut s, t0 + MS * 600), Output::Close(CloseCause::PartialTimeout));
    assert_eq!(s.config().stats.partial_timeouts(), 1);
}

#[test]
fn an_idle_connection_is_closed_and_input_moves_the_deadline() {
    let (mut s, t0) = tcp(false);
    let t1 = t0 + MS * 9000;
    s.handle(t1, Input::Bytes(&mbap(1, 3)));
    run(&mut s, t1);
    assert_eq!(tick(&mut s, t0 + MS * 10_000), Output::ReleaseBuffers);
    assert_eq!(s.poll(t0 + MS * 10_000), Output::Wait(Some(t1 + MS * 10_000)));
    // A timer that fires late: the deadline counts at its `now`.
    assert_eq!(tick(&mut s, t1 + MS * 60_000), Output::Close(CloseCause::IdleTimeout));
    assert_eq!(s.config().stats.idle_timeouts(), 1);
}

#[test]
fn input_read_before_a_late_timer_is_served_and_the_deadlines_move() {
    let (mut s, t0) = tcp(false);
    s.handle(t0, Input::Bytes(&mbap(1, 3)[..5]));
    let t1 = t0 + MS * 700;
    s.handle(t1, Input::Bytes(&mbap(1, 3)[5..]));
    let (out, next) = run(&mut s, t1);
    assert_eq!((out.len(), next), (11, Output::Wait(Some(t1 + MS * 1000))));
    // Polled at the deadline with nothing read: it closes.
    s.handle(t1, Input::Bytes(&mbap(1, 3)[..5]));
    assert_eq!(tick(&mut s, t1 + MS * 500), Output::Close(CloseCause::PartialTimeout));
}

#[test]
fn answers_before_a_fatal_frame_go_out_then_the_session_closes() {
    let (mut s, t0) = tcp(false);
    let mut input = mbap(1, 3).to_vec();
    input.extend_from_slice(&[0, 2, 0x12, 0x34, 0, 6, 1, 3]); // protocol id 0x1234
    s.handle(t0, Input::Bytes(&input));
    let (out, next) = run(&mut s, t0);
    assert_eq!(out.len(), 11);
    assert_eq!(next, Output::Close(CloseCause::BadFrame));
    assert_eq!(s.config().stats.bad_frames(), 1);
}

#[test]
fn end_of_stream_closes_after_the_answers() {
    let (mut s, t0) = tcp(false);
    s.handle(t0, Input::Bytes(&mbap(1, 3)));
    s.handle(t0, Input::Eof);
    let (out, next) = run(&mut s, t0);
    assert_eq!((out.len(), next), (11, Output::Close(CloseCause::PeerClosed)));
}

#[test]
fn delivery_pauses_are_waited_for_in_pieces() {
    let (mut s, t0) = tcp(true);
    let mut input = mbap(1, 1).to_vec();
    input.extend_from_slice(&mbap(2, 3));
    s.handle(t0, Input::Bytes(&input));
    // The FC1 answer at once, then the 50 ms delay.
    let (out, next) = run(&mut s, t0);
    assert_eq!(out.len(), 10);
    assert_eq!(next, Output::Pause(t0 + MS * 50));
    assert_eq!(s.poll(t0 + MS * 49), Output::Pause(t0 + MS * 50));
    let (out, next) = run(&mut s, t0 + MS * 50);
    assert_eq!(out, [0, 2, 0]);
    assert_eq!(next, Output::Pause(t0 + MS * 70));
    let (out, next) = run(&mut s, t0 + MS * 70);
    assert_eq!(out.len(), 8);
    // The release counts from the last input.
    assert_eq!(next, Output::Wait(Some(t0 + MS * 1000)));
}

#[test]
fn no_deadline_cuts_an_answer_held_by_a_pause() {
    let t0 = Instant::now();
    let mut c = config(SessionKind::Stream, Framing::Mbap, true);
    c.timeouts.idle = Some(MS * 10);
    let mut s = Session::new(Arc::new(c), t0, 0, None, None);
    s.handle(t0, Input::Bytes(&mbap(2, 3)));
    assert_eq!(s.poll(t0), Output::Pause(t0 + MS * 50));
    assert_eq!(run(&mut s, t0 + MS * 50).0, [0, 2, 0]);
    let (out, next) = run(&mut s, t0 + MS * 70);
    // The idle deadline passed during the pause: due at once, once the answer is out.
    assert_eq!((out.len(), next), (8, Output::Wait(Some(t0 + MS * 10))));
    assert_eq!(tick(&mut s, t0 + MS * 70), Output::Close(CloseCause::IdleTimeout));
}

#[test]
fn a_stop_cuts_the_pauses_short_and_sends_the_rest_at_once() {
    let (mut s, t0) = tcp(true);
    s.handle(t0, Input::Bytes(&mbap(2, 3)));
    assert_eq!(s.poll(t0), Output::Pause(t0 + MS * 50));
    s.handle(t0 + MS, Input::Stop);
    let (out, next) = run(&mut s, t0 + MS);
    assert_eq!((out.len(), next), (11, Output::ReadQueued));
    s.handle(t0 + MS, Input::Eof);
    assert_eq!(s.poll(t0 + MS), Output::Close(CloseCause::Stopped));
}

#[test]
fn an_eviction_drops_the_rest_and_closes_at_once() {
    let (mut s, t0) = tcp(true);
    s.handle(t0, Input::Bytes(&mbap(2, 3)));
    assert_eq!(s.poll(t0), Output::Pause(t0 + MS * 50));
    let (out, _) = run(&mut s, t0 + MS * 50);
    assert_eq!(out, [0, 2, 0]);
    s.handle(t0 + MS * 51, Input::Evict);
    assert_eq!(run(&mut s, t0 + MS * 80), (vec![], Output::Close(CloseCause::Evicted)));
}

#[test]
fn a_stop_drains_what_arrived_then_closes() {
    let (mut s, t0) = tcp(false);
    s.handle(t0, Input::Stop);
    assert_eq!(s.poll(t0), Output::ReadQueued);
    s.handle(t0, Input::Bytes(&mbap(1, 3)));
    let (out, next) = run(&mut s, t0);
    assert_eq!((out.len(), next), (11, Output::ReadQueued));
    s.handle(t0, Input::Eof);
    assert_eq!(s.poll(t0), Output::Close(CloseCause::Stopped));
}

#[test]
fn a_drain_takes_a_bounded_number_of_reads() {
    let (mut s, t0) = tcp(false);
    s.handle(t0, Input::Stop);
    let mut reads = 0;
    while run(&mut s, t0).1 == Output::ReadQueued {
        s.handle(t0, Input::Bytes(&mbap(1, 3)));
        reads += 1;
        assert!(reads <= 1000, "the drain never ends");
    }
    assert_eq!(reads, usize::from(DEFAULT_DRAIN_READS));
    assert_eq!(s.poll(t0), Output::Close(CloseCause::Stopped));
}

fn rtu_line() -> (Session, Instant) {
    let mut c = config(SessionKind::Line, Framing::Rtu, false);
    c.rtu_timing = Some(RtuTiming::new(9600, 11));
    c.max_buffered = 16;
    let t0 = Instant::now();
    (Session::new(Arc::new(c), t0, 0, None, None), t0)
}

/// FC3 read 1 register from 0 at unit 1, RTU with its CRC.
const RTU_FC3: [u8; 8] = [0x01, 0x03, 0x00, 0x00, 0x00, 0x01, 0x84, 0x0A];

#[test]
fn a_line_drops_a_partial_frame_after_t3_5_and_stays_open() {
    let (mut s, t0) = rtu_line();
    assert_eq!(s.poll(t0), Output::Wait(None));
    s.handle(t0, Input::Bytes(&RTU_FC3[..4]));
    let Output::Wait(Some(t35)) = s.poll(t0) else {
        panic!("no t3.5 deadline") // ok: test code
    };
    assert!(t35 > t0 && t35 < t0 + MS * 10);
    assert_eq!(tick(&mut s, t35), Output::Wait(None));
    s.handle(t35, Input::Bytes(&RTU_FC3));
    let (out, next) = run(&mut s, t35);
    assert_eq!(out.len(), 7);
    assert_eq!(next, Output::Wait(None));
}

#[test]
fn a_line_drops_bad_input_and_never_closes_itself() {
    let (mut s, t0) = rtu_line();
    // FC16 announcing 246 data bytes: more than the 16 bytes a line may hold.
    let mut fc16 = vec![0x01, 0x10, 0, 0, 0, 0x7B, 0xF6];
    fc16.extend_from_slice(&[0; 20]);
    s.handle(t0, Input::Bytes(&fc16));
    let (_, next) = run(&mut s, t0);
    assert_eq!(next, Output::Discarded);
    s.handle(t0, Input::Bytes(&RTU_FC3));
    assert_eq!(run(&mut s, t0).0.len(), 7);
    s.handle(t0, Input::Stop);
    assert_eq!(s.poll(t0), Output::Close(CloseCause::Stopped));
}

#[test]
fn datagrams_are_answered_one_each_and_malformed_ones_counted() {
    let t0 = Instant::now();
    let shared = Arc::new(config(SessionKind::Datagram, Framing::Mbap, false));
    let mut s = Session::new(Arc::clone(&shared), t0, 0, None, None);
    let from = Some(SocketAddr::from(([127, 0, 0, 1], 5020)));
    s.handle(
        t0,
        Input::Datagram {
            bytes: &mbap(1, 3)[..7],
            from,
        },
    );
    assert_eq!(run(&mut s, t0), (vec![], Output::Discarded));
    s.handle(
        t0,
        Input::Datagram {
            bytes: &mbap(1, 3),
            from,
        },
    );
    let (out, next) = run(&mut s, t0);
    assert_eq!((out.len(), next), (11, Output::Wait(None)));
    assert_eq!(
        (
            shared.stats.received(),
            shared.stats.malformed(),
            shared.stats.answered()
        ),
        (2, 1, 1)
    );
}

#[test]
fn datagrams_from_outside_the_allow_list_are_refused() {
    let t0 = Instant::now();
    let mut c = config(SessionKind::Datagram, Framing::Mbap, false);
    c.allow_list = Some(vec![core::net::IpAddr::from([10, 0, 0, 1])]);
    let shared = Arc::new(c);
    let mut s = Session::new(Arc::clone(&shared), t0, 0, None, None);
    let from = Some(SocketAddr::from(([127, 0, 0, 1], 5020)));
    s.handle(
        t0,
        Input::Datagram {
            bytes: &mbap(1, 3),
            from,
        },
    );
    assert_eq!(run(&mut s, t0), (vec![], Output::Discarded));
    let from = Some(SocketAddr::from(([10, 0, 0, 1], 5020)));
    s.handle(
        t0,
        Input::Datagram {
            bytes: &mbap(1, 3),
            from,
        },
    );
    assert_eq!(run(&mut s, t0).0.len(), 11);
    assert_eq!((shared.stats.refused(), shared.stats.answered()), (1, 1));
}

#[test]
fn a_session_is_small() {
    // Everything per server is behind one Arc and the connection state is
    // boxed on the first input: an idle connection's task stays small.
    assert!(
        core::mem::size_of::<Session>() <= 200,
        "{}",
        core::mem::size_of::<Session>()
    );
}

/// One step of a random run.
#[derive(Debug, Clone)]
enum Step {
    Bytes(Vec<u8>),
    Advance(u32),
    Stop,
    Evict,
    Eof,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..20).prop_map(Step::Bytes),
        2 => Just(Step::Bytes(mbap(7, 3).to_vec())),
        3 => (0u32..3000).prop_map(Step::Advance),
        1 => Just(Step::Stop),
        1 => Just(Step::Evict),
        1 => Just(Step::Eof),
    ]
}

proptest! {
    /// Whatever happens: every wait is in the future, a close is final, a
    /// poll loop reaches a wait or a close in a bounded number of steps.
    #[test]
    fn random_lives_keep_the_invariants(steps in prop::collection::vec(step(), 0..40), hooked in any::<bool>()) {
        let (mut s, t0) = tcp(hooked);
        let mut now = t0;
        let mut closed: Option<CloseCause> = None;
        for st in steps {
            match st {
                Step::Bytes(b) => s.handle(now, Input::Bytes(&b)),
                Step::Advance(ms) => now += MS * ms,
                Step::Stop => s.handle(now, Input::Stop),
                Step::Evict => s.handle(now, Input::Evict),
                Step::Eof => s.handle(now, Input::Eof),
            }
            let mut polls = 0;
            loop {
                polls += 1;
                prop_assert!(polls < 100, "the poll loop does not settle");
                match s.poll(now) {
                    Output::Transmit(b) => {
                        prop_assert!(closed.is_none());
                        prop_assert!(!b.is_empty() && b.len() <= 4096);
                        let n = b.len();
                        s.handle(now, Input::Sent(n));
                    }
                    Output::Wait(d) => {
                        prop_assert!(closed.is_none());
                        if d.is_some_and(|d| d <= now) {
                            // Due already: the adapter's timer fires at once.
                            s.handle(now, Input::Timeout);
                            continue;
                        }
                        break;
                    }
                    Output::Pause(d) => {
                        prop_assert!(closed.is_none());
                        prop_assert!(d > now, "a pause in the past");
                        break;
                    }
                    Output::Close(c) => {
                        prop_assert!(closed.is_none_or(|old| old == c), "a close changed");
                        closed = Some(c);
                        break;
                    }
                    Output::ReleaseBuffers | Output::Discarded => {}
                    Output::ReadQueued => break,
                }
            }
        }
    }
}

/// A TCP session whose engine counts into the returned metrics.
fn tcp_with_metrics() -> (Session, Instant, Arc<crate::Metrics>) {
    let t0 = Instant::now();
    let metrics = Arc::new(crate::Metrics::new());
    let device = DeviceContext::with_sizes(10, 10, 10, 10).expect("device"); // ok: test code
    let engine = Engine::builder(ServerContext::single(device))
        .metrics(Arc::clone(&metrics))
        .build();
    let mut c = SessionConfig::new(Arc::new(engine), SessionKind::Stream, Framing::Mbap, Transport::Tcp);
    c.timeouts.partial_frame = Some(MS * 500);
    (Session::new(Arc::new(c), t0, 5, None, None), t0, metrics)
}

#[test]
fn metrics_count_requests_exceptions_latency_and_the_close() {
    use crate::metrics::{DropReason, RequestCount};
    let (mut s, t0, metrics) = tcp_with_metrics();
    // FC3 at address 0 is served; FC3 at address 20 is exception 02.
    let mut two = mbap(1, 3).to_vec();
    two.extend_from_slice(&[0, 2, 0, 0, 0, 6, 1, 3, 0, 20, 0, 1]);
    s.handle(t0, Input::Bytes(&two));
    // Written 3 ms after the read.
    let (out, _) = run(&mut s, t0 + MS * 3);
    assert_eq!(out.len(), 11 + 9);
    // The first answer folds at once (nothing folded before).
    let snap = metrics.snapshot();
    assert_eq!(
        snap.requests[&(1, 3)],
        RequestCount {
            requests: 2,
            exceptions: 1
        }
    );
    assert_eq!((snap.latency.count, snap.latency.sum_nanos), (2, 6_000_000));
    // Within the second, another request stays local...
    s.handle(t0 + MS * 10, Input::Bytes(&mbap(3, 1)));
    run(&mut s, t0 + MS * 10);
    assert!(!metrics.snapshot().requests.contains_key(&(1, 1)));
    // ...until a partial frame times out and the session closes.
    s.handle(t0 + MS * 20, Input::Bytes(&[0, 4, 0]));
    assert_eq!(tick(&mut s, t0 + MS * 600), Output::Close(CloseCause::PartialTimeout));
    let snap = metrics.snapshot();
    assert_eq!(snap.requests[&(1, 1)].requests, 1);
    assert_eq!(snap.dropped(DropReason::Timeout), 1);
    let stats = &s.config().stats;
    assert_eq!(stats.closed(CloseCause::PartialTimeout), 1);
}

#[test]
fn a_bad_mbap_header_is_a_dropped_frame_and_a_bad_frame_close_counted_once() {
    use crate::metrics::DropReason;
    let (mut s, t0, metrics) = tcp_with_metrics();
    s.handle(t0, Input::Bytes(&[0, 1, 0, 9, 0, 6, 1, 3, 0, 0, 0, 1]));
    assert_eq!(run(&mut s, t0).1, Output::Close(CloseCause::BadFrame));
    assert_eq!(s.poll(t0), Output::Close(CloseCause::BadFrame));
    assert_eq!(metrics.snapshot().dropped(DropReason::Mbap), 1);
    assert_eq!(s.config().stats.closed(CloseCause::BadFrame), 1);
}

#[test]
fn peer_closes_are_counted_once_when_output() {
    let (mut s, t0, _) = tcp_with_metrics();
    s.handle(t0, Input::Eof);
    assert_eq!(s.poll(t0), Output::Close(CloseCause::PeerClosed));
    assert_eq!(s.poll(t0), Output::Close(CloseCause::PeerClosed));
    assert_eq!(s.config().stats.closed(CloseCause::PeerClosed), 1);
}
