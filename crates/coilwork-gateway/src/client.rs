//! The client side: Modbus/TCP (and TLS) connections and UDP datagrams,
//! each request dispatched to a local answer or an upstream queue.

use super::{Framed, Frames, Outbox, ReplyTo, Shared, Tag};
use coilwork_core::frame::{Decoded, mbap};
use coilwork_core::metrics::DropReason;
use coilwork_core::{CloseCause, RequestContext, Tally, Transport};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
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
        // A certificate with two roles or a malformed one: closed before
        // any request is read.
        shared.clients.count_handshake_failure();
        return;
    };
    serve_stream(shared, tls, Some(peer), Transport::Tls, role, switch).await;
}

/// One client's metrics: its tally, `None` with metrics off (then nothing
/// is counted and no clock is read per request).
struct Counts {
    tally: Option<Tally>,
}

impl Counts {
    /// Empty counts of client `id`, folded into the gateway's metrics.
    fn new(shared: &Shared, id: u64) -> Self {
        Self {
            tally: shared.counting.then(|| Tally::new(Arc::clone(&shared.metrics), id)),
        }
    }

    /// The time requests read now start their latency at (metrics on).
    fn now(&self) -> Option<Instant> {
        self.tally.as_ref().map(|_| Instant::now())
    }

    /// Counts a request to `unit` for `function`.
    fn request(&mut self, unit: u8, function: u8) {
        if let Some(t) = &mut self.tally {
            t.request(unit, function, false, false);
        }
    }

    /// Counts a frame dropped for `reason`.
    fn dropped(&mut self, reason: DropReason) {
        if let Some(t) = &mut self.tally {
            t.dropped(reason);
        }
    }

    /// The `answers` were written: their exceptions and latency.
    fn written(&mut self, answers: &[Framed]) {
        let Some(tally) = &mut self.tally else { return };
        let now = Instant::now();
        for f in answers {
            if f.exception {
                tally.exception(f.tag.unit, f.tag.function);
            }
            if let Some(at) = f.tag.at {
                tally.observe(now.saturating_duration_since(at));
            }
        }
    }
}

/// Serves one MBAP stream: requests in, answers out in whatever order the
/// upstreams give them (each carries its own transaction id). Counts bytes,
/// requests, answers and the close in the client side's metrics.
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
    let mut counts = Counts::new(shared, client);
    let gone = switch.cancelled();
    tokio::pin!(gone);
    // Folds the counts in at most once a second, also when the client goes quiet.
    let fold = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(fold);
    let mut armed = false;
    let cause = loop {
        if !armed && let Some(at) = counts.tally.as_ref().and_then(|t| t.fold_deadline(Instant::now())) {
            fold.as_mut().reset(at.into());
            armed = true;
        }
        // Checked here, as `gone` below is polled only when nothing else is ready.
        if switch.is_cancelled() {
            break closed_by(shared);
        }
        tokio::select! {
            // Answers first, then more requests: a client that keeps
            // sending still gets its answers.
            biased;
            () = outbox.ready() => outbox.take(&mut out),
            r = stream.read(&mut chunk) => {
                let n = match r { Ok(0) => break CloseCause::PeerClosed, Err(_) => break CloseCause::IoError, Ok(n) => n };
                if shared.counting {
                    shared.clients.count_in(client, n);
                }
                rbuf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
                let ctx = RequestContext {
                    unit: 0,
                    function: 0,
                    transport,
                    peer,
                    tls_role: role.as_deref(),
                    received: None,
                };
                let at = counts.now();
                let mut io = Io { client, outbox: &outbox, out: &mut out, counts: &mut counts, at };
                let Some(used) = frames(shared, &ctx, &rbuf, &mut io) else { break CloseCause::BadFrame };
                rbuf.drain(..used);
            }
            () = &mut fold, if armed => {
                armed = false;
                if let Some(t) = &mut counts.tally {
                    t.fold_if_due(Instant::now());
                }
            }
            // Evicted, or the gateway stops.
            () = &mut gone => break closed_by(shared),
        }
        if !out.bytes.is_empty() {
            if stream.write_all(&out.bytes).await.is_err() {
                break CloseCause::IoError;
            }
            if shared.counting {
                shared.clients.count_out(client, out.bytes.len());
                counts.written(&out.answers);
            }
            out.clear();
        }
    };
    shared.clients.count_stream_close(cause);
    shared.client_gone(client);
}

/// Why a client's switch was thrown: the gateway stops, or it was evicted.
fn closed_by(shared: &Shared) -> CloseCause {
    if shared.stop.is_cancelled() {
        CloseCause::Stopped
    } else {
        CloseCause::Evicted
    }
}

/// Where the requests of one read go: the client's id, its outbox (for
/// queued answers), its output (for immediate ones) and counts, and when
/// the read returned.
struct Io<'a> {
    client: u64,
    outbox: &'a Arc<Outbox>,
    out: &'a mut Frames,
    counts: &'a mut Counts,
    /// When the read returned (metrics on).
    at: Option<Instant>,
}

/// Dispatches every whole MBAP frame at the front of `buf`; immediate
/// answers are framed into `io.out`. Returns the bytes used, `None` if the
/// stream is broken (close it).
fn frames(shared: &Shared, ctx: &RequestContext<'_>, buf: &[u8], io: &mut Io<'_>) -> Option<usize> {
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
                let function = pdu.first().copied().unwrap_or(0);
                let tag = Tag {
                    transaction_id,
                    unit,
                    peer: ctx.peer,
                    function,
                    at: io.at,
                };
                let ctx = RequestContext { unit, function, ..*ctx };
                io.counts.request(unit, function);
                let reply = ReplyTo {
                    tag,
                    outbox: Arc::clone(io.outbox),
                    datagram: false,
                };
                if let Some(answer) = shared.dispatch(io.client, &ctx, pdu, &reply) {
                    io.out.push(&tag, answer.as_slice());
                }
                pos += consumed.max(1);
            }
            Decoded::Incomplete => break,
            Decoded::Skip { consumed, error } => {
                io.counts.dropped(DropReason::of_frame(&error));
                pos += consumed.max(1);
            }
            Decoded::Fatal(e) => {
                io.counts.dropped(DropReason::of_frame(&e));
                debug!(error = %e, "gateway client stream broken");
                return None;
            }
        }
    }
    Some(pos.min(buf.len()))
}

/// Serves UDP datagrams (one ADU each) until the gateway stops, counting
/// them, their bytes, requests and answers.
pub(crate) async fn serve_udp(shared: Arc<Shared>, socket: UdpSocket) {
    let outbox = Arc::new(Outbox::default());
    let mut buf = [0u8; 512];
    // An immediate answer to one datagram; queued answers, each with its peer.
    let mut out = Frames::default();
    let mut queued = Frames::default();
    // One socket, one tally (no contention): folded after every datagram.
    let id = shared.client_id();
    let mut counts = Counts::new(&shared, id);
    loop {
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let Ok((n, peer)) = r else { continue };
                let datagram = buf.get(..n).unwrap_or(&[]);
                if shared.counting {
                    shared.clients.count_received();
                    shared.clients.count_in(id, n);
                }
                out.clear();
                let at = counts.now();
                let mut io = Io { client: peer_key(peer), outbox: &outbox, out: &mut out, counts: &mut counts, at };
                udp_request(&shared, peer, datagram, &mut io);
                if !out.bytes.is_empty() && socket.send_to(&out.bytes, peer).await.is_ok() {
                    answered(&shared, id, &mut counts, &out.answers, out.bytes.len());
                }
            }
            () = outbox.ready() => {
                outbox.take(&mut queued);
                let mut start = 0;
                // `answers` is empty with metrics off.
                for (i, &(peer, end)) in queued.datagrams.iter().enumerate() {
                    let frame = queued.bytes.get(start..end).unwrap_or(&[]);
                    if socket.send_to(frame, peer).await.is_ok() {
                        let answer = queued.answers.get(i..=i).unwrap_or(&[]);
                        answered(&shared, id, &mut counts, answer, frame.len());
                    }
                    start = end;
                }
                queued.clear();
            }
            () = shared.stop.cancelled() => return,
        }
        if let Some(t) = &mut counts.tally {
            t.fold();
        }
    }
}

/// One UDP answer of `len` bytes was sent: counted (metrics on).
fn answered(shared: &Shared, id: u64, counts: &mut Counts, answers: &[Framed], len: usize) {
    if shared.counting {
        shared.clients.count_out(id, len);
        shared.clients.count_answered();
        counts.written(answers);
    }
}

/// Dispatches one datagram; an immediate answer is framed into `io.out`.
fn udp_request(shared: &Shared, peer: SocketAddr, datagram: &[u8], io: &mut Io<'_>) {
    let (consumed, unit, transaction_id, pdu) = match mbap::decode(datagram) {
        Decoded::Frame {
            consumed,
            unit,
            transaction_id,
            pdu,
        } => (consumed, unit, transaction_id, pdu),
        Decoded::Skip { error, .. } | Decoded::Fatal(error) => {
            return malformed(shared, io, DropReason::of_frame(&error));
        }
        Decoded::Incomplete => return malformed(shared, io, DropReason::Garbage),
    };
    if consumed != datagram.len() {
        return malformed(shared, io, DropReason::Garbage);
    }
    let pdu = datagram.get(pdu).unwrap_or(&[]);
    let function = pdu.first().copied().unwrap_or(0);
    let ctx = RequestContext {
        unit,
        function,
        transport: Transport::Udp,
        peer: Some(peer),
        tls_role: None,
        received: None,
    };
    let tag = Tag {
        transaction_id,
        unit,
        peer: Some(peer),
        function,
        at: io.at,
    };
    io.counts.request(unit, function);
    let reply = ReplyTo {
        tag,
        outbox: Arc::clone(io.outbox),
        datagram: true,
    };
    // One fairness key per peer: a busy sender does not starve the others.
    if let Some(answer) = shared.dispatch(io.client, &ctx, pdu, &reply) {
        io.out.push(&tag, answer.as_slice());
    }
}
/// Counts a malformed datagram, dropped for `reason` (metrics on).
fn malformed(shared: &Shared, io: &mut Io<'_>, reason: DropReason) {
    if shared.counting {
        shared.clients.count_malformed();
    }
    io.counts.dropped(reason);
}

/// A queue key for a UDP peer (high bit set: never a stream client's id).
fn peer_key(peer: SocketAddr) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    peer.hash(&mut h);
    h.finish() | (1 << 63)
}
