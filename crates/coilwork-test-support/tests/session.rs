//! The support pieces together, as a sans-IO test uses them: a core
//! `Session` fed from a `MockStream` on a `VirtualClock`, with the delivery
//! hook's engine. Deadlines are hit exactly and nothing sleeps.

use coilwork_core::storage::Transport;
use coilwork_core::{CloseCause, Framing, Input, Output, Session, SessionConfig, SessionKind};
use coilwork_test_support::hooks::delivery_engine;
use coilwork_test_support::{MockStream, VirtualClock};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

const MS: Duration = Duration::from_millis(1);

/// FC3 of one register at 0, MBAP, transaction 1.
const READ: [u8; 12] = [0, 1, 0, 0, 0, 6, 1, 0x03, 0, 0, 0, 1];

/// Runs the adapter loop once: writes what the session sends to `line`,
/// feeds it one read, and returns the output it stopped at.
fn turn(session: &mut Session, line: &mut MockStream, clock: &VirtualClock) -> Output<'static> {
    loop {
        match session.poll(clock.now()) {
            Output::Transmit(out) => {
                let n = out.len();
                line.write_all(out).unwrap();
                session.handle(clock.now(), Input::Sent(n));
            }
            Output::Wait(d) => {
                let mut buf = [0u8; 64];
                match line.read(&mut buf) {
                    Ok(n) => session.handle(clock.now(), Input::Bytes(&buf[..n])),
                    Err(_) => return Output::Wait(d),
                }
            }
            Output::Pause(until) => return Output::Pause(until),
            Output::Close(cause) => return Output::Close(cause),
            Output::ReleaseBuffers | Output::Discarded | Output::ReadQueued => {}
        }
    }
}

#[test]
fn a_delayed_answer_then_a_partial_frame_timeout_on_the_virtual_clock() {
    let mut clock = VirtualClock::new();
    let engine = delivery_engine(MS * 50, None);
    let mut config = SessionConfig::new(engine, SessionKind::Stream, Framing::Mbap, Transport::Tcp);
    config.timeouts.partial_frame = Some(MS * 500);
    let mut session = Session::new(Arc::new(config), clock.now(), 0, None, None);
    let probe = MockStream::new();
    let mut line = probe.clone();

    probe.push_bytes(&READ);
    // The hook holds the answer back 50 ms: nothing written until then.
    let Output::Pause(until) = turn(&mut session, &mut line, &clock) else {
        panic!("expected the hook's pause")
    };
    assert_eq!(until, clock.now() + MS * 50);
    assert!(probe.written().is_empty());
    clock.advance_to(until);
    assert!(matches!(turn(&mut session, &mut line, &clock), Output::Wait(_)));
    assert_eq!(probe.take_written(), [0, 1, 0, 0, 0, 5, 1, 0x03, 2, 0, 0]);

    // Half a request, then silence: closed exactly at the partial-frame deadline.
    probe.push_bytes(&READ[..5]);
    let Output::Wait(Some(deadline)) = turn(&mut session, &mut line, &clock) else {
        panic!("expected a deadline")
    };
    assert_eq!(deadline, clock.now() + MS * 500);
    clock.advance(MS * 499);
    session.handle(clock.now(), Input::Timeout);
    assert!(matches!(session.poll(clock.now()), Output::Wait(_)), "not a tick early");
    clock.advance_to(deadline);
    session.handle(clock.now(), Input::Timeout);
    assert_eq!(session.poll(clock.now()), Output::Close(CloseCause::PartialTimeout));
}
