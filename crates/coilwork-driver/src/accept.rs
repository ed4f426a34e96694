//! The accept loop of a TCP or TLS server: admission, one task per
//! connection, and the stop drain bounded by `shutdown_timeout`.

use crate::conn::{Accepted, serve};
use crate::seam::{ByteStream, Listener, Runtime, Stop, TaskSet, Timer, Upgrade};
use coilwork_core::options::TcpServerConfig;
use coilwork_core::{
    Admission, CloseCause, CloseReason, CloseSignal, Engine, ServerStats, Session, SessionConfig, Verdict,
};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;
use tracing::{debug, warn};

/// Open connections, oldest first, each with the signal that closes it.
type ConnTable = Mutex<Admission<Arc<CloseSignal>>>;

/// What every connection of one server shares (one `Arc`: a task stays small).
pub(crate) struct Shared {
    pub(crate) session: Arc<SessionConfig>,
    table: ConnTable,
    read_buffer_size: usize,
    nodelay: bool,
}

impl Shared {
    pub(crate) fn new(
        engine: Arc<Engine>,
        c: &TcpServerConfig,
        stats: Arc<ServerStats>,
        transport: coilwork_core::Transport,
    ) -> Self {
        Self {
            session: Arc::new(c.session(engine, stats, transport)),
            table: Mutex::new(Admission::new(c.admission())),
            read_buffer_size: c.read_buffer_size,
            nodelay: c.nodelay,
        }
    }

    /// Asks the admission whether a new client is served (evicting the
    /// oldest if the policy says so).
    pub(crate) fn admit(&self, peer: SocketAddr) -> Option<Accepted> {
        let signal = Arc::new(CloseSignal::new());
        let verdict =
            self.table
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .admit(peer.ip(), &self.session.stats, |_| Arc::clone(&signal));
        match verdict {
            Verdict::Admit { id, evict } => {
                if let Some(oldest) = evict {
                    oldest.raise(CloseReason::Evict);
                }
                Some(Accepted { id, peer, signal })
            }
            Verdict::Refuse(why) => {
                debug!(%peer, ?why, "refused");
                None
            }
        }
    }
}

/// Leaves the table however the connection's task ends (even when cut).
struct Entry<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        let stats = &self.shared.session.stats;
        self.shared
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .release(self.id, stats);
    }
}

/// One accepted connection, from the upgrade to the close.
pub(crate) async fn connection<R: Runtime, In: Send, U: Upgrade<In>>(
    shared: Arc<Shared>,
    conn: Accepted,
    stream: In,
    upgrade: Arc<U>,
) {
    let _entry = Entry {
        shared: &shared,
        id: conn.id,
    };
    let peer = conn.peer;
    debug!(%peer, "connection opened");
    // The upgrade first: plain TCP's is ready at once, so a stop that comes
    // now still drains (in `serve`), as for any open connection.
    // In a block of its own: the upgrade's state is gone (its space reused) while serving.
    let upgraded = {
        let mut up = pin!(upgrade.upgrade(stream, peer));
        std::future::poll_fn(|cx| {
            if let Poll::Ready(up) = up.as_mut().poll(cx) {
                return Poll::Ready(up.ok_or(None));
            }
            conn.signal.poll(cx).map(|why| Err(Some(why)))
        })
        .await
    };
    let cause = match upgraded {
        Ok((mut stream, role)) => {
            let session = Session::new(Arc::clone(&shared.session), R::now(), conn.id, Some(peer), role);
            let cause = serve::<R, U::Stream>(&mut stream, session, &conn.signal, shared.read_buffer_size).await;
            if cause == CloseCause::Stopped {
                let _ = std::future::poll_fn(|cx| stream.poll_shutdown(cx)).await;
            }
            Some(cause)
        }
        Err(None) => {
            shared.session.stats.count_handshake_failure();
            None
        }
        Err(Some(why)) => Some(if why == CloseReason::Stop {
            CloseCause::Stopped
        } else {
            CloseCause::Evicted
        }),
    };
    debug!(%peer, ?cause, "connection closed (None: refused)");
}

/// What ended a wait of the accept loop.
enum Event<T> {
    Stop,
    Accepted(std::io::Result<T>),
}

/// A TCP (or, through `upgrade`, TLS) server's settings for [`serve_listener`].
pub struct TcpServe<'a> {
    /// The engine served.
    pub engine: Arc<Engine>,
    /// Limits, timeouts and socket options.
    pub config: &'a TcpServerConfig,
    /// The server's counters.
    pub stats: Arc<ServerStats>,
}

/// Serves `listener` until `stop`: admits each client, runs its connection
/// (after `upgrade`) as a task of `R`, and on stop raises every open
/// connection's signal and waits up to `shutdown_timeout` for them to
/// drain; the rest are cut.
pub async fn serve_listener<R: Runtime, L: Listener, U: Upgrade<L::Stream>>(
    mut listener: L,
    upgrade: Arc<U>,
    stop: &impl Stop,
    serve: TcpServe<'_>,
) where
    U::Stream: ByteStream,
{
    let shared = Arc::new(Shared::new(serve.engine, serve.config, serve.stats, U::TRANSPORT));
    let mut tasks = R::Tasks::default();
    let mut stopped = pin!(stop.raised());
    debug!("{} server listening", U::NAME);
    loop {
        // Connections first, so a stream of new clients cannot starve them.
        let event = std::future::poll_fn(|cx| {
            while let Poll::Ready(Some(())) = tasks.poll_next(cx) {}
            if stopped.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Stop);
            }
            listener.poll_accept(cx).map(Event::Accepted)
        })
        .await;
        match event {
            Event::Stop => break,
            Event::Accepted(Ok((stream, peer))) => {
                if let Some(conn) = shared.admit(peer) {
                    L::set_nodelay(&stream, shared.nodelay);
                    tasks.push(connection::<R, L::Stream, U>(
                        Arc::clone(&shared),
                        conn,
                        stream,
                        Arc::clone(&upgrade),
                    ));
                }
            }
            Event::Accepted(Err(e)) => {
                warn!(error = %e, "accept failed");
                if !coilwork_net::is_per_connection_error(&e) {
                    // Out of descriptors or memory: do not spin (connections go on meanwhile).
                    drive_until::<R, _>(&mut tasks, Duration::from_millis(50), false).await;
                }
            }
        }
    }
    drop(listener);
    // Every open connection drains and closes (admitted ones only: no more accepts).
    for signal in shared.table.lock().unwrap_or_else(PoisonError::into_inner).open() {
        signal.raise(CloseReason::Stop);
    }
    if !drive_until::<R, _>(&mut tasks, serve.config.shutdown_timeout, true).await {
        warn!(open = tasks.len(), "connections did not close in time; cutting them");
        // Spawned tasks: wait (briefly) until the cut ones are gone, so each has left the table.
        tasks.abort_all();
        drive_until::<R, _>(&mut tasks, Duration::from_secs(1), true).await;
    }
    drop(tasks);
    debug!("{} server stopped", U::NAME);
}

/// Drives `tasks` for up to `limit`; true if they all ended first (when
/// `until_empty`; else the whole `limit` is waited).
async fn drive_until<R: Runtime, F>(tasks: &mut R::Tasks<F>, limit: Duration, until_empty: bool) -> bool
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let mut timer = R::now().checked_add(limit).map(R::timer);
    std::future::poll_fn(|cx| {
        loop {
            match tasks.poll_next(cx) {
                Poll::Ready(Some(())) => {}
                Poll::Ready(None) if until_empty => return Poll::Ready(true),
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        match timer.as_mut() {
            Some(t) => t.poll_fired(cx).map(|()| false),
            None => Poll::Pending,
        }
    })
    .await
}
