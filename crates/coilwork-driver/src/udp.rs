//! The datagram loop: each datagram is one ADU, answered to its sender.

use crate::seam::{Datagram, Runtime, Stop};
use crate::time::sleep_unless_stopped;
use coilwork_core::options::MAX_DATAGRAM;
use coilwork_core::{Input, Output, Session, SessionConfig};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use tracing::{debug, warn};

/// Serves `socket` with a session of `config` (the datagram kind) until
/// `stop`; a receive error that is not about one datagram ends it.
pub async fn serve_datagrams<R: Runtime>(
    socket: &impl Datagram,
    config: SessionConfig,
    stop: &impl Stop,
) -> std::io::Result<()> {
    let mut session = Session::new(Arc::new(config), R::now(), 0, None, None);
    // One byte more than the largest ADU read, so an oversized datagram is seen as such.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    // Made once and polled only while the socket has nothing.
    let mut stopped = pin!(stop.raised());
    loop {
        if stop.is_raised() {
            return Ok(());
        }
        let received = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = socket.poll_recv_from(cx, &mut buf) {
                return Poll::Ready(Some(r));
            }
            stopped.as_mut().poll(cx).map(|()| None)
        })
        .await;
        let (n, peer) = match received {
            None => return Ok(()),
            Some(Ok(r)) => r,
            Some(Err(e)) if is_transient(&e) => continue,
            Some(Err(e)) => {
                warn!(error = %e, "udp receive failed");
                return Err(e);
            }
        };
        let bytes = buf.get(..n).unwrap_or(&[]);
        session.handle(
            R::now(),
            Input::Datagram {
                bytes,
                from: Some(peer),
            },
        );
        answer::<R>(socket, &mut session, peer, stop).await;
    }
}

/// Sends what the session answered to `peer`: one datagram, or one per
/// piece when a hook's delivery asked for pauses (a stop ends a pause: the
/// rest goes out at once).
async fn answer<R: Runtime>(socket: &impl Datagram, session: &mut Session, peer: SocketAddr, stop: &impl Stop) {
    loop {
        match session.poll(R::now()) {
            Output::Transmit(out) => {
                if let Err(e) = std::future::poll_fn(|cx| socket.poll_send_to(cx, out, peer)).await {
                    debug!(%peer, error = %e, "udp send failed");
                }
                let n = out.len();
                session.handle(R::now(), Input::Sent(n));
            }
            Output::Pause(until) => {
                if sleep_unless_stopped::<R>(until, stop).await {
                    session.handle(R::now(), Input::Stop);
                }
            }
            Output::Discarded => debug!(%peer, "datagram dropped"),
            Output::ReleaseBuffers => {}
            Output::Wait(_) | Output::ReadQueued | Output::Close(_) => return,
        }
    }
}

/// Receive errors that concern one datagram only (ICMP port unreachable and the like).
fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused | ErrorKind::Interrupted | ErrorKind::WouldBlock
    )
}
