//! One task per upstream: connect (with backoff), take queued requests,
//! drive the core's [`Upstream`], answer the clients.

use super::{Job, Lane, ReplyTo};
use coilwork_core::client::{ClientConfig, Event, Started, Upstream};
#[cfg(feature = "serial")]
use coilwork_core::frame::rtu::RtuTiming;
use coilwork_core::gateway::{Backoff, LinkState, StateTracker, UpstreamStats};
use coilwork_core::{ExceptionCode, Framing};
use core::sync::atomic::Ordering::Relaxed;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A serial line an upstream is on (feature `serial`).
#[cfg(feature = "serial")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialUpstream {
    /// Device path.
    pub port: String,
    /// RTU or ASCII.
    pub framing: Framing,
    /// Baud rate.
    pub baud_rate: u32,
    /// Data bits (7 or 8).
    pub data_bits: u8,
    /// Parity.
    pub parity: coilwork_core::Parity,
    /// Stop bits (1 or 2).
    pub stop_bits: u8,
}

/// Where an upstream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTarget {
    /// Modbus/TCP (MBAP) at `host:port`.
    Tcp(String),
    /// RTU framing over a TCP connection to `host:port` (serial device servers).
    RtuOverTcp(String),
    /// A serial line.
    #[cfg(feature = "serial")]
    Serial(SerialUpstream),
}

/// Settings of one upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Name in logs and metrics.
    pub name: String,
    /// Where it is.
    pub target: UpstreamTarget,
    /// No answer in this time: exception 0x0B (default 1 s).
    pub response_timeout: Duration,
    /// Requests in flight at once on a TCP upstream (default 1; pymodbus's
    /// server answers one at a time). RTU and ASCII are always 1.
    pub max_in_flight: usize,
    /// Requests waiting at most (default 64); past it: exception 06.
    pub queue_depth: usize,
    /// First reconnect wait (default 100 ms), doubling up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnect wait (default 2 s).
    pub backoff_max: Duration,
    /// Longest a connect (or open) may take (default 2 s).
    pub connect_timeout: Duration,
}

impl UpstreamConfig {
    /// Defaults for `target`, named after it.
    pub fn new(name: impl Into<String>, target: UpstreamTarget) -> Self {
        Self {
            name: name.into(),
            target,
            response_timeout: Duration::from_secs(1),
            max_in_flight: 1,
            queue_depth: 64,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
        }
    }

    /// The core client settings for this upstream.
    fn client_config(&self) -> ClientConfig {
        let framing = match &self.target {
            UpstreamTarget::Tcp(_) => Framing::Mbap,
            UpstreamTarget::RtuOverTcp(_) => Framing::Rtu,
            #[cfg(feature = "serial")]
            UpstreamTarget::Serial(s) => s.framing,
        };
        let mut c = ClientConfig::new(framing, self.response_timeout);
        c.max_in_flight = self.max_in_flight.max(1);
        #[cfg(feature = "serial")]
        if let UpstreamTarget::Serial(s) = &self.target
            && s.framing == Framing::Rtu
        {
            let bits = coilwork_core::options::bits_per_char(s.data_bits, s.parity, s.stop_bits);
            c.rtu_timing = Some(RtuTiming::new(s.baud_rate, bits));
        }
        c
    }
}

/// A byte stream to an upstream.
trait Link: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Link for T {}

/// Opens the upstream's connection or port.
async fn connect(target: &UpstreamTarget) -> std::io::Result<Box<dyn Link>> {
    match target {
        UpstreamTarget::Tcp(addr) | UpstreamTarget::RtuOverTcp(addr) => {
            let s = tokio::net::TcpStream::connect(addr.as_str()).await?;
            s.set_nodelay(true)?;
            Ok(Box::new(s))
        }
        #[cfg(feature = "serial")]
        UpstreamTarget::Serial(s) => Ok(Box::new(open_serial(s)?)),
    }
}

/// Opens a serial line with the upstream's settings.
#[cfg(feature = "serial")]
fn open_serial(s: &SerialUpstream) -> std::io::Result<tokio_serial::SerialStream> {
    use coilwork_core::Parity;
    use tokio_serial::SerialPortBuilderExt;
    let data_bits = match s.data_bits {
        7 => tokio_serial::DataBits::Seven,
        _ => tokio_serial::DataBits::Eight,
    };
    let parity = match s.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let stop_bits = if s.stop_bits == 2 {
        tokio_serial::StopBits::Two
    } else {
        tokio_serial::StopBits::One
    };
    tokio_serial::new(&s.port, s.baud_rate)
        .data_bits(data_bits)
        .parity(parity)
        .stop_bits(stop_bits)
        .flow_control(tokio_serial::FlowControl::None)
        .open_native_async()
        .map_err(std::io::Error::other)
}

/// With nothing in flight the link's timer is parked this far ahead (a
/// spurious `handle_timeout` then is harmless).
const IDLE: Duration = Duration::from_secs(3600);

/// Bytes read from an upstream at once.
const READ_BUFFER: usize = 16 * 1024;

/// A link that lived this long is reopened at once when it closes.
const RECONNECT_AT_ONCE_AFTER: Duration = Duration::from_secs(1);

/// The upstream task: (re)connects with backoff until the gateway stops.
pub(crate) async fn run(config: UpstreamConfig, lane: Arc<Lane>, stop: CancellationToken) {
    let mut backoff = Backoff::new(config.backoff_min, config.backoff_max);
    let mut state = StateTracker::default();
    let mut upstream = Upstream::new(config.client_config());
    let mut pending = Pending::default();
    while !stop.is_cancelled() {
        let attempt = tokio::time::timeout(config.connect_timeout, connect(&config.target));
        let link = tokio::select! {
            r = attempt => r.map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut)).and_then(|r| r),
            () = stop.cancelled() => return,
        };
        let error = match link {
            Ok(link) => {
                set_state(&mut state, &lane, LinkState::Up, None);
                backoff.succeeded();
                let since = std::time::Instant::now();
                let e = serve(link, &mut upstream, &mut pending, &lane, &stop).await;
                let now = std::time::Instant::now();
                upstream.reset(&mut |e| pending.settle(&lane, e, now));
                match e {
                    Ok(()) => return,
                    // A link that served a while and then closed (an idle
                    // timeout upstream, say) is reopened at once, not marked
                    // down; one that fails again at once backs off.
                    Err(_) if since.elapsed() >= RECONNECT_AT_ONCE_AFTER => continue,
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        set_state(&mut state, &lane, LinkState::Down, Some(&error));
        lane.with_queue(|q| q.drain_all(|job| fail(&lane, job, ExceptionCode::GatewayPathUnavailable)));
        let retry = backoff.failed(std::time::Instant::now());
        tokio::select! {
            () = tokio::time::sleep_until(Instant::from_std(retry)) => {}
            () = stop.cancelled() => return,
        }
        // Accept requests again for the next attempt (they fail with 0x0A if it fails).
        lane.reachable.store(true, Relaxed);
    }
}

/// Moves to `next`, logging once per change.
fn set_state(state: &mut StateTracker, lane: &Lane, next: LinkState, error: Option<&std::io::Error>) {
    lane.reachable.store(next != LinkState::Down, Relaxed);
    lane.stats.up.store(u64::from(next == LinkState::Up), Relaxed);
    if let Some(prev) = state.set(next) {
        match error {
            Some(e) => {
                warn!(upstream = %lane.name, from = prev.as_str(), to = next.as_str(), error = %e, "upstream state changed")
            }
            None => info!(upstream = %lane.name, from = prev.as_str(), to = next.as_str(), "upstream state changed"),
        }
    }
}

/// Counts a failure with `code` (metrics on).
fn count_failure(lane: &Lane, code: ExceptionCode) {
    let Some(stats) = lane.counted() else { return };
    match code {
        ExceptionCode::GatewayTargetFailedToRespond => stats.timeouts.fetch_add(1, Relaxed),
        _ => stats.unavailable.fetch_add(1, Relaxed),
    };
}

/// Counts an answer `pdu` that took `rtt`.
fn count_answer(stats: &UpstreamStats, pdu: &[u8], rtt: Duration) {
    stats.answers.fetch_add(1, Relaxed);
    stats.observe_latency(rtt);
    if pdu.first().is_some_and(|f| f & 0x80 != 0) {
        stats.exceptions.fetch_add(1, Relaxed);
    }
}

/// Fails a queued job with `code`, counted.
fn fail(lane: &Lane, job: Job, code: ExceptionCode) {
    count_failure(lane, code);
    job.fail(code);
}

/// A request sent upstream: its token, where the answer goes, its function
/// (for an exception answer) and when it left.
struct Sent {
    token: u64,
    reply: ReplyTo,
    function: u8,
    at: std::time::Instant,
}

/// Requests sent upstream, waiting for their answer, oldest first:
/// answers mostly come in order, so the search ends at the front.
#[derive(Default)]
struct Pending {
    jobs: VecDeque<Sent>,
}

impl Pending {
    /// Answers the request an event (seen at `now`) is about.
    fn settle(&mut self, lane: &Lane, event: Event<'_>, now: std::time::Instant) {
        let token = match event {
            Event::Answer { token, .. } | Event::TimedOut { token } | Event::Lost { token } => token,
        };
        let Some(i) = self.jobs.iter().position(|s| s.token == token) else {
            return;
        };
        let Some(sent) = self.jobs.remove(i) else {
            return;
        };
        match event {
            Event::Answer { pdu, .. } => {
                if let Some(stats) = lane.counted() {
                    count_answer(stats, pdu, now.saturating_duration_since(sent.at));
                }
                sent.reply.answer(pdu);
            }
            other => {
                if let Some(code) = other.failure() {
                    count_failure(lane, code);
                    sent.reply.fail(sent.function, code);
                }
            }
        }
    }
}

/// Serves one open link until it fails (`Err`) or the gateway stops (`Ok`).
async fn serve(
    mut link: Box<dyn Link>,
    upstream: &mut Upstream,
    pending: &mut Pending,
    lane: &Lane,
    stop: &CancellationToken,
) -> std::io::Result<()> {
    let mut next_token: u64 = 0;
    // Room for a whole window of answers (64 in flight x 256 bytes): one read takes them all.
    let mut buf = vec![0u8; READ_BUFFER];
    // One timer and one stop waiter for the link's life, not one per wake.
    let timer = tokio::time::sleep_until(Instant::now() + IDLE);
    tokio::pin!(timer);
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        start_queued(upstream, lane, pending, &mut next_token);
        while !upstream.output().is_empty() {
            // An upstream that stops taking bytes is as good as gone.
            let limit = upstream.config().response_timeout;
            let n = tokio::time::timeout(limit, link.write(upstream.output()))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            upstream.consume_output(n);
        }
        let now = std::time::Instant::now();
        // A line still in its silence wakes us when it ends, or a request
        // queued meanwhile would wait for the next event.
        let quiet_at = upstream.ready_at().filter(|&t| t > now);
        let wake_at = match (upstream.poll_timeout(), quiet_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let can_take = upstream.can_start(now);
        match wake_at.map(Instant::from_std) {
            Some(at) if at != timer.deadline() => timer.as_mut().reset(at),
            None if timer.deadline() < Instant::now() + IDLE / 2 => timer.as_mut().reset(Instant::now() + IDLE),
            _ => {}
        }
        tokio::select! {
            r = link.read(&mut buf) => {
                let n = r?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                let data = buf.get(..n).unwrap_or(&[]);
                let now = std::time::Instant::now();
                upstream.handle_input(now, data, &mut |e| pending.settle(lane, e, now));
            }
            () = lane.wake.wait(), if can_take => {}
            () = &mut timer => {
                let now = std::time::Instant::now();
                upstream.handle_timeout(now, &mut |e| pending.settle(lane, e, now));
            }
            () = &mut stopped => return Ok(()),
        }
    }
}

/// Hands queued jobs to the upstream while it can take them, all under
/// one lock: they leave in one write.
fn start_queued(upstream: &mut Upstream, lane: &Lane, pending: &mut Pending, next_token: &mut u64) {
    let now = std::time::Instant::now();
    if !upstream.can_start(now) {
        return;
    }
    lane.with_queue(|q| {
        while upstream.can_start(now) {
            let Some(job) = q.pop() else { return };
            *next_token = next_token.wrapping_add(1);
            let function = job.pdu.as_slice().first().copied().unwrap_or(0);
            match upstream.start(now, *next_token, job.unit, job.pdu.as_slice()) {
                Ok(Started::AwaitAnswer) => pending.jobs.push_back(Sent {
                    token: *next_token,
                    function,
                    reply: job.reply,
                    at: now,
                }),
                // A broadcast is never answered; the client gets nothing, as on the bus.
                Ok(Started::Broadcast) => {}
                Err(_) => job.fail(ExceptionCode::IllegalDataValue),
            }
        }
    });
}
