//! Runs the custom function of `examples/custom_function_server.rs` (the
//! example file itself, compiled in as a module) behind a real TCP server.
//! The other examples are only compiled (`cargo test --all-targets`, clippy).

#[path = "../examples/custom_function_server.rs"]
#[allow(dead_code)] // the example's `main` is not called here
mod custom_function_server;

use coilwork::tokio::{TcpServer, TcpServerConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const STEP: Duration = Duration::from_secs(10);

/// Sends one MBAP request (unit 1) and returns the answer's PDU.
async fn call(stream: &mut TcpStream, tid: u16, pdu: &[u8]) -> Vec<u8> {
    let mut adu = tid.to_be_bytes().to_vec();
    adu.extend_from_slice(&[0, 0]);
    adu.extend_from_slice(&u16::try_from(pdu.len() + 1).unwrap().to_be_bytes());
    adu.push(1);
    adu.extend_from_slice(pdu);
    tokio::time::timeout(STEP, async {
        stream.write_all(&adu).await.unwrap();
        let mut head = [0u8; 7];
        stream.read_exact(&mut head).await.unwrap();
        assert_eq!(&head[..4], &[tid.to_be_bytes()[0], tid.to_be_bytes()[1], 0, 0]);
        assert_eq!(head[6], 1, "unit echoed");
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes([head[4], head[5]])) - 1];
        stream.read_exact(&mut answer).await.unwrap();
        answer
    })
    .await
    .expect("answer in time")
}

#[tokio::test]
async fn custom_function_example_sums_registers_over_tcp() {
    let engine = custom_function_server::engine().expect("engine");
    let server = Arc::new(TcpServer::new(
        Arc::new(engine),
        TcpServerConfig::new("127.0.0.1:0".parse().unwrap()),
    ));
    let addr = server.bind().expect("bind");
    let s = Arc::clone(&server);
    let task = tokio::spawn(async move { s.serve_forever().await });
    let mut stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();

    // Registers hold 0..100: 10 + 11 + 12 + 13 + 14 = 60.
    assert_eq!(call(&mut stream, 1, &[0x41, 0, 10, 0, 5]).await, [0x41, 0, 0, 0, 60]);
    // All 100: 0 + 1 + … + 99 = 4950 = 0x1356.
    assert_eq!(
        call(&mut stream, 2, &[0x41, 0, 0, 0, 100]).await,
        [0x41, 0, 0, 0x13, 0x56]
    );
    // Quantity 0 and quantity 126: exception 03.
    assert_eq!(call(&mut stream, 3, &[0x41, 0, 0, 0, 0]).await, [0xC1, 0x03]);
    assert_eq!(call(&mut stream, 4, &[0x41, 0, 0, 0, 126]).await, [0xC1, 0x03]);
    // Past the 100 registers: exception 02 from the storage.
    assert_eq!(call(&mut stream, 5, &[0x41, 0, 98, 0, 5]).await, [0xC1, 0x02]);
    // A short request: exception 03.
    assert_eq!(call(&mut stream, 6, &[0x41, 0, 1]).await, [0xC1, 0x03]);
    // The ordinary functions still work: FC3 reads the same registers.
    assert_eq!(
        call(&mut stream, 7, &[0x03, 0, 10, 0, 2]).await,
        [0x03, 4, 0, 10, 0, 11]
    );

    tokio::time::timeout(STEP, server.shutdown()).await.expect("stops");
    assert!(tokio::time::timeout(STEP, task).await.unwrap().unwrap().is_ok());
}
