//! The serial loop: RTU or ASCII over one byte stream (a serial port, a
//! pty, any byte pipe), with the line's silences on the runtime's timer.

use crate::conn::transmit;
use crate::seam::{ByteStream, Runtime, Stop, Timer};
use coilwork_core::{Input, Output, Session, SessionConfig};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;
use tracing::{debug, warn};

/// Why a line stopped being served.
#[derive(Debug)]
pub enum LineError {
    /// Reading failed, or the line ended.
    Read(std::io::Error),
    /// Writing an answer failed.
    Write(std::io::Error),
}

/// What ended a wait on the line.
enum Event {
    Stop,
    Read(std::io::Result<usize>),
    Timeout,
}

/// Serves `line` with a session of `config` (the line kind) until `stop`
/// (`Ok`) or until the line fails or ends. Once stopped, an answer being
/// written gets at most `shutdown_timeout` more.
pub async fn serve_line<R: Runtime, S: ByteStream>(
    line: &mut S,
    config: SessionConfig,
    stop: &impl Stop,
    shutdown_timeout: Duration,
) -> Result<(), LineError> {
    let mut session = Session::new(std::sync::Arc::new(config), R::now(), 0, None, None);
    let mut stopped = pin!(stop.raised());
    let mut timer: Option<R::Timer> = None;
    // One buffer per line, reused for every read.
    let mut buf = vec![0u8; 512];
    loop {
        let now = R::now();
        match session.poll(now) {
            Output::Transmit(out) => {
                let n = out.len();
                if !write::<R, S>(line, out, stop, shutdown_timeout).await? {
                    return Ok(());
                }
                session.handle(R::now(), Input::Sent(n));
            }
            Output::Pause(until) => {
                if crate::time::sleep_unless_stopped::<R>(until, stop).await {
                    session.handle(R::now(), Input::Stop);
                }
            }
            Output::Wait(deadline) => {
                if let Some(d) = deadline {
                    match timer.as_mut() {
                        Some(t) => t.reset(d),
                        None => timer = Some(R::timer(d)),
                    }
                }
                let event = std::future::poll_fn(|cx| {
                    if stopped.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::Stop);
                    }
                    if let Poll::Ready(r) = line.poll_read(cx, &mut buf) {
                        return Poll::Ready(Event::Read(r));
                    }
                    match (deadline, timer.as_mut()) {
                        (Some(_), Some(t)) => t.poll_fired(cx).map(|()| Event::Timeout),
                        _ => Poll::Pending,
                    }
                })
                .await;
                let input = match event {
                    Event::Stop => Input::Stop,
                    Event::Timeout => Input::Timeout,
                    Event::Read(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Event::Read(Ok(0)) => return Err(LineError::Read(std::io::ErrorKind::UnexpectedEof.into())),
                    Event::Read(Ok(n)) => Input::Bytes(buf.get(..n).unwrap_or(&[])),
                    Event::Read(Err(e)) => return Err(LineError::Read(e)),
                };
                session.handle(R::now(), input);
            }
            Output::Discarded => debug!("serial input discarded"),
            Output::ReleaseBuffers => {}
            Output::ReadQueued | Output::Close(_) => return Ok(()),
        }
    }
}

/// Writes one piece of an answer; once stopped, the line gets at most
/// `shutdown_timeout` to take it (false: given up).
async fn write<R: Runtime, S: ByteStream>(
    line: &mut S,
    out: &[u8],
    stop: &impl Stop,
    shutdown_timeout: Duration,
) -> Result<bool, LineError> {
    let mut write = pin!(async {
        let mut waited = false;
        transmit(line, out, &mut waited).await
    });
    let mut given_up = pin!(async {
        stop.raised().await;
        crate::time::sleep::<R>(shutdown_timeout).await;
    });
    let written = std::future::poll_fn(|cx| {
        if let Poll::Ready(w) = write.as_mut().poll(cx) {
            return Poll::Ready(Some(w));
        }
        given_up.as_mut().poll(cx).map(|()| None)
    })
    .await;
    match written {
        Some(Ok(_)) => Ok(true),
        Some(Err(e)) => Err(LineError::Write(e)),
        None => {
            warn!("the line took no answer within the shutdown timeout; letting it go");
            Ok(false)
        }
    }
}
