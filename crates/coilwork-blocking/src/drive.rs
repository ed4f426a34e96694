//! The one loop every blocking server runs over its [`Session`]: poll, do
//! what it says (write, sleep, read or wait), hand back what happened. The
//! transports differ only in their [`Link`]: how to write, wait and sleep.

use crate::handle::ServerHandle;
use coilwork_core::{CloseCause, Input, Output, Session};
use std::io::ErrorKind;
use std::time::{Duration, Instant};
use tracing::debug;

/// One transport as the loop sees it.
pub(crate) trait Link {
    /// The stop switch of the server.
    fn handle(&self) -> &ServerHandle;

    /// Writes all of `out` (a datagram: sends it to the last sender).
    fn write(&mut self, out: &[u8]) -> std::io::Result<()>;

    /// Waits for input, at most until `deadline`, and hands it to `session`
    /// (or nothing, if the wait ended with none).
    fn wait(&mut self, session: &mut Session, deadline: Option<Instant>);

    /// Reads what is already received, without waiting (streams only).
    fn read_queued(&mut self, session: &mut Session) {
        session.handle(Instant::now(), Input::Eof);
    }

    /// The server's request to this session, if any.
    fn signal(&self) -> Option<Input<'static>> {
        self.handle().is_stopping().then_some(Input::Stop)
    }

    /// Sleeps up to `d`, cut short by a [`Link::signal`].
    fn sleep(&self, d: Duration) {
        self.handle().sleep_unless_stopped(d);
    }
}

/// Drives `session` over `link` until it closes; returns why.
pub(crate) fn drive<L: Link>(session: &mut Session, link: &mut L) -> CloseCause {
    loop {
        let now = Instant::now();
        match session.poll(now) {
            Output::Transmit(out) => {
                let n = out.len();
                let input = link.write(out).map_or(Input::Failed, |()| Input::Sent(n));
                session.handle(Instant::now(), input);
            }
            Output::Pause(until) => {
                link.sleep(until.saturating_duration_since(now));
                if let Some(input) = link.signal() {
                    session.handle(Instant::now(), input);
                }
            }
            Output::Wait(deadline) => match link.signal() {
                Some(input) => session.handle(now, input),
                None => link.wait(session, deadline),
            },
            Output::ReadQueued => link.read_queued(session),
            Output::Discarded => debug!("input dropped"),
            // Read buffers are reused while the session lives.
            Output::ReleaseBuffers => {}
            Output::Close(cause) => return cause,
        }
    }
}

/// True for the error a read returns when its read timeout passed
/// (`WouldBlock` on Unix, `TimedOut` on Windows and from serial ports), or
/// when a signal interrupted it.
pub(crate) fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// A read timeout for the next read: until `deadline` but at most `poll`,
/// and at least 1 ms (a zero read timeout is an error for std sockets).
pub(crate) fn read_timeout(now: Instant, deadline: Option<Instant>, poll: Duration) -> Duration {
    let until = deadline.map_or(poll, |d| d.saturating_duration_since(now).min(poll));
    until.max(Duration::from_millis(1))
}

/// Runs `serve` on a new thread named `name`, logging its failure.
pub(crate) fn in_background(
    name: &str,
    serve: impl FnOnce() -> Result<(), crate::ServerError> + Send + 'static,
) -> std::io::Result<()> {
    let label = name.to_owned();
    std::thread::Builder::new().name(name.into()).spawn(move || {
        if let Err(e) = serve() {
            tracing::warn!(error = %e, "{label} failed");
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_timeout_is_bounded_both_ways() {
        let now = Instant::now();
        let poll = Duration::from_millis(100);
        assert_eq!(read_timeout(now, None, poll), poll);
        assert_eq!(
            read_timeout(now, Some(now + Duration::from_millis(30)), poll),
            Duration::from_millis(30)
        );
        assert_eq!(read_timeout(now, Some(now + Duration::from_secs(9)), poll), poll);
        assert_eq!(read_timeout(now, Some(now), poll), Duration::from_millis(1));
    }
}
