//! A tiny HTTP endpoint for Prometheus: `GET /metrics` answers the text
//! exposition, anything else 404 (405 for another method on /metrics). One
//! request per connection; the request head is bounded in size and time;
//! at most [`MAX_SCRAPES`] connections are served at once (others are
//! closed). Shared by `serve`, `simulate` and `gateway`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// Largest request head read (request line and headers).
pub const MAX_HEAD: usize = 8192;
/// Scrape connections served at once.
pub const MAX_SCRAPES: usize = 16;
/// Time a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Renders the exposition text for one scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Binds the metrics address now (before any Modbus port opens), so that an
/// address in use is a clear error at start.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            format!("cannot serve metrics on {addr}: address already in use")
        } else {
            format!("cannot serve metrics on {addr}: {e}")
        }
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    Ok(listener)
}

/// Serves `listener` (from [`bind`]) in the background with `render`;
/// returns the address it listens on.
pub fn spawn(listener: std::net::TcpListener, render: Render) -> Result<SocketAddr, String> {
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| format!("metrics on {local}: {e}"))?;
    tokio::spawn(accept_loop(listener, render));
    Ok(local)
}

/// Accepts scrapes until the runtime stops.
async fn accept_loop(listener: tokio::net::TcpListener, render: Render) {
    let permits = Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: wait a little, go on.
                tracing::debug!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            continue; // Too many at once: this one is closed.
        };
        let render = Arc::clone(&render);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(HEAD_TIMEOUT * 2, answer(stream, render)).await;
            drop(permit);
        });
    }
}

/// Reads one request head and writes the answer.
async fn answer(mut stream: tokio::net::TcpStream, render: Render) {
    let mut head = vec![0u8; MAX_HEAD];
    let mut len = 0;
    let complete = tokio::time::timeout(HEAD_TIMEOUT, async {
        while len < head.len() {
            match stream.read(head.get_mut(len..).unwrap_or_default()).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => len += n,
            }
            if head.get(..len).is_some_and(|h| h.windows(4).any(|w| w == b"\r\n\r\n")) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    let reply = match route(head.get(..len).unwrap_or_default(), complete) {
        Route::Metrics { head_only } => {
            let body = render();
            let mut reply = response("200 OK", "text/plain; version=0.0.4; charset=utf-8", body.len());
            if !head_only {
                reply.push_str(&body);
            }
            reply
        }
        Route::Status(status) => {
            let body = format!("{status}\n");
            let mut reply = response(status, "text/plain; charset=utf-8", body.len());
            reply.push_str(&body);
            reply
        }
    };
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A response head.
fn response(status: &str, content_type: &str, len: usize) -> String {
    format!("HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n")
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// The exposition (`HEAD`: its head only).
    Metrics {
        /// A `HEAD` request.
        head_only: bool,
    },
    /// Answer this status.
    Status(&'static str),
}

/// Routes a request head (`complete`: its blank line arrived).
fn route(head: &[u8], complete: bool) -> Route {
    if !complete {
        return if head.len() >= MAX_HEAD {
            Route::Status("431 Request Header Fields Too Large")
        } else {
            Route::Status("400 Bad Request")
        };
    }
    let line = head.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::Status("400 Bad Request");
    };
    if !version.starts_with(b"HTTP/1.") {
        return Route::Status("400 Bad Request");
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    match (method, path) {
        (b"GET", b"/metrics") => Route::Metrics { head_only: false },
        (b"HEAD", b"/metrics") => Route::Metrics { head_only: true },
        (_, b"/metrics") => Route::Status("405 Method Not Allowed"),
        _ => Route::Status("404 Not Found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn get_metrics_is_served_and_everything_else_is_not() {
        let get = |h: &str| route(h.as_bytes(), true);
        assert_eq!(
            get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics { head_only: false }
        );
        assert_eq!(
            get("GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Route::Metrics { head_only: false }
        );
        assert_eq!(
            get("HEAD /metrics HTTP/1.1\r\n\r\n"),
            Route::Metrics { head_only: true }
        );
        assert_eq!(
            get("POST /metrics HTTP/1.1\r\n\r\n"),
            Route::Status("405 Method Not Allowed")
        );
        assert_eq!(get("GET / HTTP/1.1\r\n\r\n"), Route::Status("404 Not Found"));
        assert_eq!(get("GET /metricsx HTTP/1.1\r\n\r\n"), Route::Status("404 Not Found"));
        assert_eq!(get("GET /metrics\r\n\r\n"), Route::Status("400 Bad Request"));
        assert_eq!(get("GET /metrics SPDY/3\r\n\r\n"), Route::Status("400 Bad Request"));
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\n", false),
            Route::Status("400 Bad Request")
        );
        assert_eq!(
            route(&[b'a'; MAX_HEAD], false),
            Route::Status("431 Request Header Fields Too Large")
        );
    }

    proptest! {
        #[test]
        fn any_head_gets_a_route(head in proptest::collection::vec(any::<u8>(), 0..300), complete in any::<bool>()) {
            let _ = route(&head, complete);
        }
    }
}
