//! # coilwork-gateway: a Modbus gateway on tokio
//!
//! A Modbus gateway: TCP, UDP and TLS clients onto upstream Modbus servers
//! (TCP, RTU over TCP, serial RTU/ASCII) and an optional local device.
//!
//! Every decision is the core's: [`coilwork_core::gateway::Router`] picks
//! the upstream, [`coilwork_core::gateway::Policy`] refuses writes or
//! roles, each upstream has a [`coilwork_core::gateway::FairQueue`]
//! (full: exception 06) drained by one task that drives a
//! [`coilwork_core::client::Upstream`] (no answer in time: 0x0B; upstream
//! unreachable: 0x0A, reconnected with backoff). One slow or dead upstream
//! holds only its own queue.
//!
//! With [`GatewayConfig::metrics`] on, the client side counts into the same
//! `coilwork_core::metrics` families as a server ([`Gateway::metrics`],
//! [`Gateway::client_stats`]); each upstream has its `UpstreamStats`
//! (`coilwork_core::gateway`); [`Gateway::prometheus`] renders both. Off
//! (the default), a forwarded request counts nothing.
//!
//! The gateway is a product built on the adapters, as the simulator is:
//! `coilwork gateway` runs it, and it can be embedded in a program.
#![forbid(unsafe_code)]

mod client;
mod signal;
mod upstream;

#[cfg(feature = "serial")]
pub use upstream::SerialUpstream;
pub use upstream::{UpstreamConfig, UpstreamTarget};

use coilwork_core::gateway::{FairQueue, Policy, Route, RouteError, Router, Target, UpstreamStats, exception_pdu};
use coilwork_core::metrics::{Source, render};
use coilwork_core::pdu::PduBuf;
use coilwork_core::{
    Admission, AdmissionOptions, Engine, ExceptionCode, Metrics, RequestContext, ServerStats, Verdict,
};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use signal::Signal;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Everything a [`Gateway`] is built from.
#[derive(Debug, Clone, Default)]
pub struct GatewayConfig {
    /// The upstreams; routes name them by index.
    pub upstreams: Vec<UpstreamConfig>,
    /// Unit id → upstream (or local) rules.
    pub routes: Vec<Route>,
    /// Where units no route names go (`None`: exception 0x0A).
    pub fallback: Option<Target>,
    /// The local device behind [`Target::Local`].
    pub local: Option<Arc<Engine>>,
    /// Read-only mode and mbaps roles.
    pub policy: Policy,
    /// Stream clients (TCP and TLS together) open at once, overflow policy
    /// and allow-list, decided by the core's [`Admission`].
    pub admission: AdmissionOptions,
    /// Count requests, answers, bytes and latency for [`Gateway::prometheus`]
    /// (default off: then nothing is counted per request, and only the
    /// connection counts and each upstream's `up` state are kept).
    pub metrics: bool,
}

/// Why a gateway could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The routes are inconsistent.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// A route names an upstream that does not exist, or a local device with none configured.
    #[error("route target {0:?} is not configured")]
    NoTarget(Target),
    /// Binding a listener failed.
    #[error("bind failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Which client request an answer belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tag {
    pub(crate) transaction_id: u16,
    pub(crate) unit: u8,
    pub(crate) peer: Option<SocketAddr>,
    /// The request's function code (its metrics row).
    pub(crate) function: u8,
    /// When the read that completed the request returned (its latency's
    /// start); `None` with metrics off.
    pub(crate) at: Option<Instant>,
}

/// Answers on their way back to one client (a stream, or the UDP socket):
/// the upstream tasks frame them straight into its bytes, the client's task
/// takes them all at once and writes them. No per-answer message or copy of
/// a PDU buffer, and one wake-up for every answer that arrives before the
/// client's task runs.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    frames: Mutex<Frames>,
    ready: Signal,
}

/// The bytes an [`Outbox`] holds; for UDP also where each datagram ends.
#[derive(Debug, Default)]
pub(crate) struct Frames {
    pub(crate) bytes: Vec<u8>,
    /// UDP only: each answer's peer and the end of its frame in `bytes`.
    pub(crate) datagrams: Vec<(SocketAddr, usize)>,
    /// Each framed answer, counted in the client's metrics once written
    /// (empty with metrics off).
    pub(crate) answers: Vec<Framed>,
}

impl Frames {
    /// Frames `pdu` as the answer to `tag`, and keeps it to be counted
    /// if it is (metrics on: `tag` has its start time).
    pub(crate) fn push(&mut self, tag: &Tag, pdu: &[u8]) {
        coilwork_core::frame::mbap::encode(tag.transaction_id, tag.unit, pdu, &mut self.bytes);
        if tag.at.is_some() {
            let exception = pdu.first().is_some_and(|f| f & 0x80 != 0);
            self.answers.push(Framed { tag: *tag, exception });
        }
    }

    /// Empties it, keeping the capacity.
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.datagrams.clear();
        self.answers.clear();
    }
}

/// An answer framed into a client's output, counted once it is written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Framed {
    pub(crate) tag: Tag,
    pub(crate) exception: bool,
}

impl Outbox {
    /// Frames `pdu` as the answer to `tag` and wakes the client's task if
    /// it was not already woken for earlier answers.
    pub(crate) fn push(&self, tag: &Tag, pdu: &[u8], datagram: bool) {
        let was_empty = {
            let mut f = self.frames.lock().unwrap_or_else(PoisonError::into_inner);
            let was_empty = f.bytes.is_empty();
            f.push(tag, pdu);
            if datagram && let Some(peer) = tag.peer {
                let end = f.bytes.len();
                f.datagrams.push((peer, end));
            }
            was_empty
        };
        if was_empty {
            self.ready.raise();
        }
    }

    /// Waits until answers are there (or were pushed since the last take).
    pub(crate) async fn ready(&self) {
        self.ready.wait().await;
    }

    /// Swaps every framed answer into `into` (left empty by the caller), keeping both buffers' capacity.
    pub(crate) fn take(&self, into: &mut Frames) {
        let mut f = self.frames.lock().unwrap_or_else(PoisonError::into_inner);
        core::mem::swap(&mut *f, into);
    }
}

/// A request PDU held by a queued job: inline when short (every read and
/// most writes), on the heap otherwise, so a job moves as a few words.
#[derive(Debug, Clone)]
pub(crate) enum ReqPdu {
    /// Up to [`INLINE_PDU`] bytes.
    Inline(u8, [u8; INLINE_PDU]),
    /// Longer PDUs.
    Heap(Box<[u8]>),
}

/// Request PDUs up to this length are kept inline in their job.
pub(crate) const INLINE_PDU: usize = 30;

impl ReqPdu {
    /// Copies `pdu` (at most 253 bytes, checked by the caller).
    pub(crate) fn new(pdu: &[u8]) -> Self {
        let mut bytes = [0u8; INLINE_PDU];
        match bytes.get_mut(..pdu.len()) {
            Some(head) => {
                head.copy_from_slice(pdu);
                Self::Inline(pdu.len() as u8, bytes)
            }
            None => Self::Heap(pdu.into()),
        }
    }

    /// The PDU bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline(len, bytes) => bytes.get(..usize::from(*len)).unwrap_or(&[]),
            Self::Heap(b) => b,
        }
    }
}

/// Where an answer goes: the client's outbox and the request it answers.
#[derive(Debug, Clone)]
pub(crate) struct ReplyTo {
    pub(crate) tag: Tag,
    pub(crate) outbox: Arc<Outbox>,
    /// The outbox is the UDP socket's: keep each answer's peer.
    pub(crate) datagram: bool,
}

impl ReplyTo {
    /// Sends the answer `pdu`.
    pub(crate) fn answer(&self, pdu: &[u8]) {
        self.outbox.push(&self.tag, pdu, self.datagram);
    }

    /// Answers exception `code` to a request with `function`.
    pub(crate) fn fail(&self, function: u8, code: ExceptionCode) {
        self.answer(&exception_pdu(function, code));
    }
}

/// A request waiting for its upstream.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) unit: u8,
    pub(crate) pdu: ReqPdu,
    pub(crate) reply: ReplyTo,
}

impl Job {
    /// Answers the client with exception `code`.
    pub(crate) fn fail(self, code: ExceptionCode) {
        let function = self.pdu.as_slice().first().copied().unwrap_or(0);
        self.reply.fail(function, code);
    }
}

/// The shared side of one upstream: its queue and its counters.
#[derive(Debug)]
pub(crate) struct Lane {
    pub(crate) name: String,
    pub(crate) queue: Mutex<FairQueue<Job>>,
    pub(crate) wake: Signal,
    pub(crate) stats: Arc<UpstreamStats>,
    /// Metrics on: the per-request counters of `stats` are kept.
    pub(crate) counting: bool,
    /// False while the upstream is down: requests get 0x0A at once.
    pub(crate) reachable: AtomicBool,
}

impl Lane {
    /// Runs `f` on the queue (a poisoned lock is still a valid queue).
    pub(crate) fn with_queue<R>(&self, f: impl FnOnce(&mut FairQueue<Job>) -> R) -> R {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let r = f(&mut q);
        if let Some(stats) = self.counted() {
            stats.queue_depth.store(q.len() as u64, Relaxed);
        }
        r
    }

    /// The stats to count a request's progress into; `None` with metrics off.
    #[inline]
    pub(crate) fn counted(&self) -> Option<&UpstreamStats> {
        self.counting.then_some(&*self.stats)
    }
}

/// State shared by the listeners and upstream tasks of one gateway.
#[derive(Debug)]
pub(crate) struct Shared {
    router: Router,
    lanes: Vec<Arc<Lane>>,
    local: Option<Arc<Engine>>,
    policy: Policy,
    next_client: AtomicU64,
    /// Open stream clients: each one's close switch, by admission id.
    admission: Mutex<Admission<CancellationToken>>,
    /// The client side's counters: stream clients accepted, refused,
    /// evicted, open and closed; bytes; datagrams.
    pub(crate) clients: ServerStats,
    /// The client side's requests and exceptions by unit and function,
    /// latency and dropped frames (each client folds its tally in).
    pub(crate) metrics: Arc<Metrics>,
    /// Metrics on: requests, answers and bytes are counted.
    pub(crate) counting: bool,
    /// Cancelled when the gateway stops.
    pub(crate) stop: CancellationToken,
}

/// A running gateway: upstream tasks started, listeners added with
/// [`Gateway::serve_tcp`], [`Gateway::serve_udp`] and `serve_tls`.
#[derive(Debug, Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

impl Gateway {
    /// Checks the routes and starts one task per upstream (call inside a tokio runtime).
    pub fn start(config: GatewayConfig) -> Result<Self, GatewayError> {
        let router = Router::new(&config.routes, config.fallback)?;
        for target in config.routes.iter().map(|r| r.target).chain(config.fallback) {
            let ok = match target {
                Target::Upstream(i) => i < config.upstreams.len(),
                Target::Local => config.local.is_some(),
            };
            if !ok {
                return Err(GatewayError::NoTarget(target));
            }
        }
        let stop = CancellationToken::new();
        let lanes: Vec<_> = config
            .upstreams
            .iter()
            .map(|u| {
                Arc::new(Lane {
                    name: u.name.clone(),
                    queue: Mutex::new(FairQueue::new(u.queue_depth)),
                    wake: Signal::default(),
                    stats: Arc::new(UpstreamStats::default()),
                    counting: config.metrics,
                    reachable: AtomicBool::new(true),
                })
            })
            .collect();
        for (u, lane) in config.upstreams.into_iter().zip(&lanes) {
            tokio::spawn(upstream::run(u, Arc::clone(lane), stop.clone()));
        }
        let shared = Shared {
            router,
            lanes,
            local: config.local,
            policy: config.policy,
            next_client: AtomicU64::new(1),
            admission: Mutex::new(Admission::new(config.admission)),
            clients: ServerStats::default(),
            metrics: Arc::new(Metrics::new()),
            counting: config.metrics,
            stop,
        };
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// Serves Modbus/TCP clients accepted on `listener` until the gateway stops.
    pub async fn serve_tcp(&self, listener: tokio::net::TcpListener) {
        client::serve_tcp(Arc::clone(&self.shared), listener).await;
    }

    /// Serves Modbus/UDP datagrams on `socket` until the gateway stops.
    pub async fn serve_udp(&self, socket: tokio::net::UdpSocket) {
        client::serve_udp(Arc::clone(&self.shared), socket).await;
    }

    /// Serves Modbus/TCP Security (mbaps) clients on `listener` until the
    /// gateway stops; roles from client certificates reach the policy's
    /// `Authorizer`.
    #[cfg(feature = "tls")]
    pub async fn serve_tls(&self, listener: tokio::net::TcpListener, tls: coilwork_tls::TlsConfig) {
        client::serve_tls(Arc::clone(&self.shared), listener, tls).await;
    }

    /// Per-upstream statistics, by upstream name.
    pub fn stats(&self) -> Vec<(String, Arc<UpstreamStats>)> {
        self.shared
            .lanes
            .iter()
            .map(|l| (l.name.clone(), Arc::clone(&l.stats)))
            .collect()
    }

    /// The client side's counters (TCP, TLS and UDP together): stream
    /// clients accepted, refused, evicted, open and closed by reason; bytes
    /// in and out and datagrams (these two only with metrics on).
    pub fn client_stats(&self) -> &ServerStats {
        &self.shared.clients
    }

    /// The client side's requests and exceptions by unit and function
    /// code, answer latency and dropped frames (as the request arrived,
    /// before any unit renumbering). Each client folds its counts in at most
    /// about once a second and when it leaves. Empty unless
    /// [`GatewayConfig::metrics`] is on.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// The statistics in Prometheus text format: the client side's families
    /// (as `serve --metrics`, labelled `server="gateway"`), then each
    /// upstream's.
    pub fn prometheus(&self) -> String {
        let mut out = render(&[Source {
            name: "gateway",
            metrics: Some(&self.shared.metrics),
            stats: Some(&self.shared.clients),
        }]);
        let lanes: Vec<(&str, &UpstreamStats)> =
            self.shared.lanes.iter().map(|l| (l.name.as_str(), &*l.stats)).collect();
        UpstreamStats::write_prometheus(&lanes, &mut out);
        out
    }

    /// Stops the gateway: listeners, client connections and upstream tasks
    /// end (requests in flight are dropped unanswered). Never blocks.
    pub fn stop(&self) {
        self.shared.stop.cancel();
    }

    /// True once [`Gateway::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.shared.stop.is_cancelled()
    }
}

impl Shared {
    /// A fresh client id (fairness key of the queues).
    pub(crate) fn client_id(&self) -> u64 {
        self.next_client.fetch_add(1, Relaxed)
    }

    /// Asks the admission about a new stream client from `peer`: its id and
    /// close switch (cancelled on eviction or stop), or `None` (refused).
    pub(crate) fn admit(&self, peer: SocketAddr) -> Option<(u64, CancellationToken)> {
        let switch = self.stop.child_token();
        let verdict =
            self.admission
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .admit(peer.ip(), &self.clients, |_| switch.clone());
        match verdict {
            Verdict::Admit { id, evict } => {
                if let Some(oldest) = evict {
                    oldest.cancel();
                }
                Some((id, switch))
            }
            Verdict::Refuse(why) => {
                tracing::debug!(%peer, ?why, "gateway client refused");
                None
            }
        }
    }

    /// A stream client admitted as `id` closed.
    pub(crate) fn release(&self, id: u64) {
        let mut admission = self.admission.lock().unwrap_or_else(PoisonError::into_inner);
        admission.release(id, &self.clients);
    }

    /// Forgets a client that left, in every queue.
    pub(crate) fn client_gone(&self, client: u64) {
        for lane in &self.lanes {
            lane.with_queue(|q| q.remove_client(client));
        }
    }

    /// Routes one request: `Some(pdu)` is an answer to send now (local
    /// device, policy refusal, busy, unreachable); `None` means queued (the
    /// answer comes through `reply`'s outbox) or deliberately unanswered.
    pub(crate) fn dispatch(
        &self,
        client: u64,
        ctx: &RequestContext<'_>,
        pdu: &[u8],
        reply: &ReplyTo,
    ) -> Option<PduBuf> {
        let function = pdu.first().copied().unwrap_or(0);
        let exception = |code| {
            let mut out = PduBuf::new();
            let [f, c] = exception_pdu(function, code);
            let _ = out.set(&[f, c]);
            Some(out)
        };
        let Some((target, unit)) = self.router.resolve(reply.tag.unit) else {
            return exception(ExceptionCode::GatewayPathUnavailable);
        };
        if let Err(code) = self.policy.check(ctx, pdu) {
            return exception(code);
        }
        let lane = match target {
            Target::Local => return self.local_answer(ctx, unit, pdu),
            Target::Upstream(i) => self.lanes.get(i)?,
        };
        let stats = lane.counted();
        if let Some(s) = stats {
            s.requests.fetch_add(1, Relaxed);
        }
        if !lane.reachable.load(Relaxed) {
            if let Some(s) = stats {
                s.unavailable.fetch_add(1, Relaxed);
            }
            return exception(ExceptionCode::GatewayPathUnavailable);
        }
        if pdu.len() > coilwork_core::frame::MAX_PDU {
            return exception(ExceptionCode::IllegalDataValue);
        }
        let job = Job {
            unit,
            pdu: ReqPdu::new(pdu),
            reply: reply.clone(),
        };
        // Woken only when the queue stops being empty: the upstream task
        // takes everything queued at once, and a full window makes it look
        // again after its next answer.
        match lane.with_queue(|q| q.push(client, job).map(|()| q.len() == 1)) {
            Ok(first) => {
                if first {
                    lane.wake.raise();
                }
                None
            }
            Err(_) => {
                if let Some(s) = stats {
                    s.busy.fetch_add(1, Relaxed);
                }
                exception(ExceptionCode::ServerDeviceBusy)
            }
        }
    }

    /// Executes a request on the local device.
    fn local_answer(&self, ctx: &RequestContext<'_>, unit: u8, pdu: &[u8]) -> Option<PduBuf> {
        let engine = self.local.as_ref()?;
        let ctx = RequestContext { unit, ..*ctx };
        let mut out = PduBuf::new();
        let outcome = engine.handle(&ctx, pdu, &mut out);
        (outcome.respond && !out.is_empty()).then_some(out)
    }
}
