//! A tiny hand-written MBAP client, runtime selection and fixtures for the tests.
//!
//! The client runs on `async-io` directly, so the same test body runs under
//! smol and async-std (both drive the async-io reactor).
#![allow(dead_code)]

use async_io::{Async, Timer};
use futures_lite::future;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use std::future::Future;
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::time::Duration;

/// Every test step is bounded by this.
pub const STEP: Duration = Duration::from_secs(10);
/// A whole test is bounded by this.
pub const WHOLE_TEST: Duration = Duration::from_secs(90);

/// The runtime a test body runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rt {
    /// `smol::block_on` + `smol::spawn`.
    Smol,
    /// `async_std::task::block_on` + `async_std::task::spawn`.
    AsyncStd,
}

/// A spawned task's result.
pub type Join<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Rt {
    /// Spawns `f` on this runtime's executor.
    pub fn spawn<T: Send + 'static>(self, f: impl Future<Output = T> + Send + 'static) -> Join<T> {
        match self {
            Rt::Smol => Box::pin(smol::spawn(f)),
            Rt::AsyncStd => Box::pin(async_std::task::spawn(f)),
        }
    }

    /// Sleeps on this runtime's timer.
    pub async fn sleep(self, d: Duration) {
        match self {
            Rt::Smol => {
                smol::Timer::after(d).await;
            }
            Rt::AsyncStd => async_std::task::sleep(d).await,
        }
    }
}

/// Runs a test body on `rt`, bounded by [`WHOLE_TEST`].
pub fn run<F, Fut>(rt: Rt, body: F)
where
    F: FnOnce(Rt) -> Fut,
    Fut: Future<Output = ()>,
{
    let bounded = async move {
        within(WHOLE_TEST, body(rt)).await.expect("test finished in time");
    };
    match rt {
        Rt::Smol => smol::block_on(bounded),
        Rt::AsyncStd => async_std::task::block_on(bounded),
    }
}

/// Generates one `#[test]` per body and runtime: `tests!(smol: a, b; async_std: a);`.
#[macro_export]
macro_rules! tests {
    (smol: $($s:ident),* ; async_std: $($a:ident),* $(,)?) => {
        mod on_smol {
            $(#[test] fn $s() { $crate::common::run($crate::common::Rt::Smol, super::$s) })*
        }
        mod on_async_std {
            $(#[test] fn $a() { $crate::common::run($crate::common::Rt::AsyncStd, super::$a) })*
        }
    };
}

/// `Some(output)` if `f` finishes within `d`.
pub async fn within<T>(d: Duration, f: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(f.await) }, async {
        Timer::after(d).await;
        None
    })
    .await
}

/// A client stream.
pub type Client = Async<TcpStream>;

// MBAP frame and PDU builders, shared with the conformance suite's client.
#[allow(unused_imports)] // not every test file uses every builder
pub use coilwork_conformance::client::{
    Answer, adu, adu_with_protocol, fc1, fc3, fc3_answer, fc15, fc16, pack, pdu, rtu,
};
#[allow(unused_imports)] // not every test file serves it
pub use coilwork_conformance::fixture::plain_engine as engine;

/// Reads one MBAP ADU (bounded by [`STEP`]).
pub async fn read_answer(stream: &mut Client) -> Answer {
    within(STEP, async {
        let mut head = [0u8; 7];
        stream.read_exact(&mut head).await.expect("answer header");
        let mut pdu = vec![0u8; Answer::pdu_len(&head)];
        stream.read_exact(&mut pdu).await.expect("answer pdu");
        Answer::new(&head, pdu)
    })
    .await
    .expect("answer in time")
}

/// Writes all of `bytes` (bounded).
pub async fn send(stream: &mut Client, bytes: &[u8]) {
    within(STEP, stream.write_all(bytes))
        .await
        .expect("write in time")
        .expect("write");
}

/// Sends one request and reads its answer; checks the transaction id and unit echo.
pub async fn call(stream: &mut Client, tid: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    send(stream, &adu(tid, unit, pdu)).await;
    let a = read_answer(stream).await;
    assert_eq!(a.tid, tid, "transaction id echoed");
    assert_eq!(a.unit, unit, "unit echoed");
    a.pdu
}

/// Connects (bounded).
pub async fn connect(addr: SocketAddr) -> Client {
    within(STEP, Async::<TcpStream>::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Waits until the server closes the stream: true on EOF or reset, false on data or time-out.
pub async fn closed_by_server(stream: &mut Client, d: Duration) -> bool {
    let mut b = [0u8; 16];
    match within(d, stream.read(&mut b)).await {
        Some(Ok(0)) | Some(Err(_)) => true,
        Some(Ok(_)) | None => false,
    }
}

/// Polls `cond` every 10 ms for up to [`STEP`].
pub async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if cond() {
            return true;
        }
        Timer::after(Duration::from_millis(10)).await;
    }
    cond()
}

/// The FC3 delivery hook and its engine, shared with the conformance suite.
#[allow(unused_imports)] // Not every test binary uses it.
pub use coilwork_test_support::hooks::delivery_engine;
