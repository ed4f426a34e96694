//! The hand-written MBAP client of [`crate::client`] on tokio streams, for
//! the tests of the tokio adapter and of the gateway (both tokio). Every
//! step is bounded by [`STEP`].

use crate::client::{Answer, adu};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every step of these helpers is bounded by this.
pub const STEP: Duration = Duration::from_secs(10);

/// Reads one MBAP ADU.
pub async fn read_answer(stream: &mut TcpStream) -> Answer {
    tokio::time::timeout(STEP, async {
        let mut head = [0u8; 7];
        stream.read_exact(&mut head).await.expect("answer header");
        let mut pdu = vec![0u8; Answer::pdu_len(&head)];
        stream.read_exact(&mut pdu).await.expect("answer pdu");
        Answer::new(&head, pdu)
    })
    .await
    .expect("answer in time")
}

/// Sends one request and reads its answer; checks the transaction id and unit echo.
pub async fn call(stream: &mut TcpStream, tid: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    tokio::time::timeout(STEP, stream.write_all(&adu(tid, unit, pdu)))
        .await
        .expect("write in time")
        .expect("write");
    let a = read_answer(stream).await;
    assert_eq!(a.tid, tid, "transaction id echoed");
    assert_eq!(a.unit, unit, "unit echoed");
    a.pdu
}

/// Connects.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(STEP, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Waits until the server closes the stream: true on EOF or reset, false on data or time-out.
pub async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 16];
    match tokio::time::timeout(within, stream.read(&mut b)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}
