//! `"device_ids"` (a coilwork extension): one port serves a copy of its
//! device, with registers of its own, under each listed unit id, over
//! loopback; bad lists are refused naming the key.

use coilwork_sim::{Simulator, SimulatorOptions};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(device_ids: Value) -> String {
    json!({
        "server_list": {"server": {"comm": "tcp", "host": "127.0.0.1", "port": 0, "framer": "socket",
                                   "device_ids": device_ids}},
        "device_list": {"device": {
            "setup": {"co size": 10, "di size": 10, "hr size": 10, "ir size": 10,
                      "shared blocks": true, "type exception": false,
                      "defaults": {"value": {"bits": 0, "uint16": 0, "uint32": 0, "float32": 0.0, "string": " "},
                                   "action": {"bits": null, "uint16": null, "uint32": null, "float32": null, "string": null}}},
            "invalid": [], "write": [[0, 9]], "repeat": [],
            "uint16": [{"addr": [0, 9], "value": 5}]
        }}
    })
    .to_string()
}

/// One MBAP request to `unit`; the answer's PDU.
async fn request(s: &mut TcpStream, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let len = u16::try_from(pdu.len() + 1).unwrap().to_be_bytes();
    let mut adu = vec![0, 7, 0, 0, len[0], len[1], unit];
    adu.extend_from_slice(pdu);
    s.write_all(&adu).await.unwrap();
    let mut head = [0u8; 7];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(head[6], unit, "answer from another unit");
    let mut body = vec![0u8; usize::from(u16::from_be_bytes([head[4], head[5]])) - 1];
    s.read_exact(&mut body).await.unwrap();
    body
}

#[tokio::test]
async fn each_unit_id_has_registers_of_its_own() {
    let sim = Simulator::from_json(&config(json!([1, [3, 247]])), SimulatorOptions::default()).unwrap();
    let handle = sim.start().await.unwrap();
    let addr: SocketAddr = handle.local_addr().unwrap();
    let mut s = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    // Unit 200 writes 2000 at 4; unit 3 and unit 1 still read 5 there.
    assert_eq!(
        request(&mut s, 200, &[6, 0, 4, 0x07, 0xD0]).await,
        [6, 0, 4, 0x07, 0xD0]
    );
    assert_eq!(request(&mut s, 200, &[3, 0, 4, 0, 1]).await, [3, 2, 0x07, 0xD0]);
    assert_eq!(request(&mut s, 3, &[3, 0, 4, 0, 1]).await, [3, 2, 0, 5]);
    assert_eq!(request(&mut s, 1, &[3, 0, 4, 0, 1]).await, [3, 2, 0, 5]);
    assert_eq!(request(&mut s, 247, &[3, 0, 4, 0, 1]).await, [3, 2, 0, 5]);
    // Unit 2 and unit 248 are not listed: no device there.
    for unit in [2, 248] {
        let answer = request(&mut s, unit, &[3, 0, 4, 0, 1]).await;
        assert_eq!(answer[0], 0x83, "unit {unit}: {answer:?}");
    }
    // The first unit's device is the one the API shows.
    assert_eq!(sim.device().register(4).unwrap().value, 5);
    handle.shutdown().await;
}

#[test]
fn bad_device_ids_are_refused_naming_the_key() {
    let refused = |ids: Value, extra: Option<(&str, Value)>| {
        let mut v: Value = serde_json::from_str(&config(ids)).unwrap();
        if let Some((k, x)) = extra {
            v["server_list"]["server"][k] = x;
        }
        Simulator::from_json(&v.to_string(), SimulatorOptions::default())
            .unwrap_err()
            .to_string()
    };
    let e = refused(json!([1, [1, 5]]), None);
    assert!(
        e.contains("server_list.server.device_ids[1] = [1,5]: unit id 1 is listed twice"),
        "{e}"
    );
    let e = refused(json!([[9, 3]]), None);
    assert!(e.contains("device_ids[0] = [9,3]: first is past last"), "{e}");
    let e = refused(json!([256]), None);
    assert!(e.contains("device_ids[0] = 256: a unit id is a number 0..=255"), "{e}");
    let e = refused(json!([]), None);
    assert!(e.contains("device_ids = []: lists no unit id"), "{e}");
    let e = refused(json!([1]), Some(("device_id", json!(1))));
    assert!(e.contains("give device_id or device_ids, not both"), "{e}");
}
