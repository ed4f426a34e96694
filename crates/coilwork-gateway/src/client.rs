//! The client side: Modbus/TCP (and TLS) connections and UDP datagrams,
//! each request dispatched to a local answer or an upstream queue.

use super::{Frames, Outbox, ReplyTo, Shared, Tag};
use coilwork_core::frame::{Decoded, mbap};
use coilwork_core::{RequestContext, Transport};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Accepts TCP clients until the gateway stops.
pub(crate) async fn serve_tcp(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shared.stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Refused (full, or not on the allow-list): closed at once.
                let Some((id, switch)) = shared.admit(peer) else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    serve_stream(&shared, stream, Some(peer), Transport::Tcp, None, &switch).await;
                    shared.release(id);
                });
            }
            Err(e) => {
                // Out of descriptors, say: do not spin on it.
                debug!(error = %e, "gateway accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}

/// Accepts TLS clients until the gateway stops; the role of each client's
/// certificate goes into its requests' context.
#[cfg(feature = "tls")]
pub(crate) async fn serve_tls(shared: Arc<Shared>, listener: TcpListener, tls: coilwork_tls::TlsConfig) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(tls.rustls()));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shared.stop.cancelled() => return,
        };
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let Some((id, switch)) = shared.admit(peer) else {
            continue;
        };
        let shared = Arc::clone(&shared);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            serve_tls_stream(&shared, &acceptor, stream, peer, &switch).await;
            shared.release(id);
        });
    }
}

/// Shakes hands with one admitted TLS client, then serves it.
#[cfg(feature = "tls")]
async fn serve_tls_stream(
    shared: &Shared,
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    switch: &CancellationToken,
) {
    let limit = coilwork_tls::DEFAULT_HANDSHAKE_TIMEOUT;
    let handshake = tokio::time::timeout(limit, acceptor.accept(stream));
    let tls = tokio::select! {
        r = handshake => r,
        () = switch.cancelled() => return,
    };
    let Ok(Ok(tls)) = tls else {
        shared.clients.count_handshake_failure();
        debug!(%peer, "gateway TLS handshake failed");
        return;
    };
    let Some(role) = coilwork_tls::session_role(tls.get_ref().1, peer) else {
        return;
    };
    serve_stream(shared, tls, Some(peer), Transport::Tls, role, switch).await;
}

/// Serves one MBAP stream: requests in, answers out in whatever order the
/// upstreams give them (each carries its own transaction id).
async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    stream: S,
    peer: Option<SocketAddr>,
    transport: Transport,
    role: Option<String>,
    switch: &CancellationToken,
) {
    let client = shared.client_id();
    // Writes happen between reads, never during one: no split (and no lock) needed.
    let mut stream = stream;
    let outbox = Arc::new(Outbox::default());
    let mut rbuf: Vec<u8> = Vec::with_capacity(1024);
    // Answers from the outbox, and immediate ones framed after them.
    let mut out = Frames::default();
    out.bytes.reserve(1024);
    let mut chunk = [0u8; 1024];
    let gone = switch.cancelled();
    tokio::pin!(gone);
    loop {
        // Checked here, as `gone` below is polled only when nothing else is ready.
        if switch.is_cancelled() {
            break;
        }
        tokio::select! {
            // Answers first, then more requests: a client that keeps
            // sending still gets its answers.
            biased;
            () = outbox.ready() => outbox.take(&mut out),
            r = stream.read(&mut chunk) => {
                let n = match r { Ok(0) | Err(_) => break, Ok(n) => n };
                rbuf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
                let ctx = RequestContext {
                    unit: 0,
                    function: 0,
                    transport,
                    peer,
                    tls_role: role.as_deref(),
                };
                let Some(used) = frames(shared, client, &ctx, &rbuf, &outbox, &mut out.bytes) else { break };
                rbuf.drain(..used);
            }
            // Evicted, or the gateway stops.
            () = &mut gone => break,
        }
        if !out.bytes.is_empty() {
            if stream.write_all(&out.bytes).await.is_err() {
                break;
            }
            out.bytes.clear();
        }
    }
    shared.client_gone(client);
}

/// Dispatches every whole MBAP frame at the front of `buf`; immediate
/// answers are framed into `out`. Returns the bytes used, `None` if the
/// stream is broken (close it).
fn frames(
    shared: &Shared,
    client: u64,
    ctx: &RequestContext<'_>,
    buf: &[u8],
    outbox: &Arc<Outbox>,
    out: &mut Vec<u8>,
) -> Option<usize> {
    let mut pos = 0;
    while let Some(rest) = buf.get(pos..).filter(|r| !r.is_empty()) {
        match mbap::decode(rest) {
            Decoded::Frame {
                consumed,
                unit,
                transaction_id,
                pdu,
            } => {
                let pdu = rest.get(pdu).unwrap_or(&[]);
                let reply = ReplyTo {
                    tag: Tag {
                        transaction_id,
                        unit,
                        peer: ctx.peer,
                    },
                    outbox: Arc::clone(outbox),
                    datagram: false,
                };
                let ctx = RequestContext {
                    unit,
                    function: pdu.first().copied().unwrap_or(0),
                    ..*ctx
                };
                if let Some(answer) = shared.dispatch(client, &ctx, pdu, &reply) {
                    mbap::encode(transaction_id, unit, answer.as_slice(), out);
                }
                pos += consumed.max(1);
            }
            Decoded::Incomplete => break,
            Decoded::Skip { consumed, .. } => pos += consumed.max(1),
            Decoded::Fatal(e) => {
                debug!(error = %e, "gateway client stream broken");
                return None;
            }
        }
    }
    Some(pos.min(buf.len()))
}

/// Serves UDP datagrams (one ADU each) until the gateway stops.
pub(crate) async fn serve_udp(shared: Arc<Shared>, socket: UdpSocket) {
    let outbox = Arc::new(Outbox::default());
    let mut buf = [0u8; 512];
    let mut out = Vec::with_capacity(300);
    let mut queued = Frames::default();
    loop {
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let Ok((n, peer)) = r else { continue };
                let datagram = buf.get(..n).unwrap_or(&[]);
                out.clear();
                udp_request(&shared, peer, datagram, &outbox, &mut out);
                if !out.is_empty() {
                    let _ = socket.send_to(&out, peer).await;
                }
            }
            () = outbox.ready() => {
                outbox.take(&mut queued);
                let mut start = 0;
                for &(peer, end) in &queued.datagrams {
                    let frame = queued.bytes.get(start..end).unwrap_or(&[]);
                    let _ = socket.send_to(frame, peer).await;
                    start = end;
                }
                queued.bytes.clear();
                queued.datagrams.clear();
            }
            () = shared.stop.cancelled() => return,
        }
    }
}

/// Dispatches one datagram; an immediate answer is framed into `out`.
fn udp_request(shared: &Shared, peer: SocketAddr, datagram: &[u8], outbox: &Arc<Outbox>, out: &mut Vec<u8>) {
    let Decoded::Frame {
        consumed,
        unit,
        transaction_id,
        pdu,
    } = mbap::decode(datagram)
    else {
        return;
    };
    if consumed != datagram.len() {
        return;
    }
    let pdu = datagram.get(pdu).unwrap_or(&[]);
    let ctx = RequestContext {
        unit,
        function: pdu.first().copied().unwrap_or(0),
        transport: Transport::Udp,
        peer: Some(peer),
        tls_role: None,
    };
    let reply = ReplyTo {
        tag: Tag {
            transaction_id,
            unit,
            peer: Some(peer),
        },
        outbox: Arc::clone(outbox),
        datagram: true,
    };
    // One fairness key per peer: a busy sender does not starve the others.
    let client = peer_key(peer);
    if let Some(answer) = shared.dispatch(client, &ctx, pdu, &reply) {
        mbap::encode(transaction_id, unit, answer.as_slice(), out);
    }
}

/// A queue key for a UDP peer (high bit set: never a stream client's id).
fn peer_key(peer: SocketAddr) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    peer.hash(&mut h);
    h.finish() | (1 << 63)
}
