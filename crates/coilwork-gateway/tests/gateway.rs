//! The gateway over real loopback sockets: coilwork and hand-written fake
//! upstreams, a hand-written MBAP client.

mod common;

use coilwork_core::Engine;
use coilwork_core::frame::rtu;
use coilwork_core::gateway::{Policy, Route, Target};
use coilwork_core::storage::{DeviceContext, ServerContext};
use coilwork_gateway::{Gateway, GatewayConfig, UpstreamConfig, UpstreamTarget};
use coilwork_tokio::{TcpServerConfig, start_tcp_server};
use common::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn route(units: std::ops::RangeInclusive<u8>, target: Target) -> Route {
    Route {
        units,
        target,
        rewrite_base: None,
    }
}

async fn coilwork_upstream() -> SocketAddr {
    let h = start_tcp_server(engine(), TcpServerConfig::new("127.0.0.1:0".parse().unwrap()))
        .await
        .expect("upstream");
    h.local_addr().expect("addr")
}

fn upstream(name: &str, target: UpstreamTarget) -> UpstreamConfig {
    let mut u = UpstreamConfig::new(name, target);
    u.response_timeout = Duration::from_millis(300);
    u.backoff_min = Duration::from_millis(50);
    u.backoff_max = Duration::from_millis(200);
    u
}

async fn gateway(config: GatewayConfig) -> (Gateway, SocketAddr) {
    let gw = Gateway::start(config).expect("gateway");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let g = gw.clone();
    tokio::spawn(async move { g.serve_tcp(listener).await });
    (gw, addr)
}

/// A TCP upstream that accepts and reads but never answers.
async fn silent_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut b = [0u8; 512];
                while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_to_two_units_and_answers_local_unit() {
    let up = coilwork_upstream().await;
    let local = DeviceContext::with_sizes(10, 10, 10, 10).unwrap();
    local
        .set_registers(coilwork_core::Table::HoldingRegisters, 0, &[4242])
        .unwrap();
    let mut u = upstream("tcp", UpstreamTarget::Tcp(up.to_string()));
    u.max_in_flight = 4;
    let (_gw, addr) = gateway(GatewayConfig {
        upstreams: vec![u],
        routes: vec![route(1..=10, Target::Upstream(0)), route(99..=99, Target::Local)],
        local: Some(Arc::new(Engine::builder(ServerContext::single(local)).build())),
        ..GatewayConfig::default()
    })
    .await;
    let mut c = connect(addr).await;
    assert_eq!(call(&mut c, 1, 1, &fc16(5, &[11, 22])).await, vec![0x10, 0, 5, 0, 2]);
    assert_eq!(call(&mut c, 2, 2, &fc3(5, 2)).await, fc3_answer(&[11, 22]));
    assert_eq!(call(&mut c, 3, 99, &fc3(0, 1)).await, fc3_answer(&[4242]));
    // No route: gateway path unavailable.
    assert_eq!(call(&mut c, 4, 50, &fc3(0, 1)).await, vec![0x83, 0x0A]);
    // A function code with the exception bit set: the upstream's 01, not a timeout.
    assert_eq!(call(&mut c, 5, 1, &[0xFF]).await, vec![0xFF, 0x01]);
    // Two pipelined requests in one write, each answered with its own id.
    let mut both = adu(10, 1, &fc3(5, 1));
    both.extend(adu(11, 2, &fc3(6, 1)));
    c.write_all(&both).await.unwrap();
    let mut got = [read_answer(&mut c).await, read_answer(&mut c).await];
    got.sort_by_key(|a| a.tid);
    assert_eq!(
        (got[0].tid, got[0].unit, got[0].pdu.clone()),
        (10, 1, fc3_answer(&[11]))
    );
    assert_eq!(
        (got[1].tid, got[1].unit, got[1].pdu.clone()),
        (11, 2, fc3_answer(&[22]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_then_restarted_upstream() {
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port_addr = free.local_addr().unwrap();
    drop(free);
    let (gw, addr) = gateway(GatewayConfig {
        upstreams: vec![upstream("tcp", UpstreamTarget::Tcp(port_addr.to_string()))],
        fallback: Some(Target::Upstream(0)),
        ..GatewayConfig::default()
    })
    .await;
    let mut c = connect(addr).await;
    assert_eq!(call(&mut c, 1, 1, &fc3(0, 1)).await, vec![0x83, 0x0A]);
    // The upstream comes up on that port; the gateway reconnects by itself.
    let _h = start_tcp_server(engine(), TcpServerConfig::new(port_addr))
        .await
        .expect("restart");
    let mut served = false;
    for tid in 2..100 {
        if call(&mut c, tid, 1, &fc3(0, 1)).await == fc3_answer(&[0]) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "served again once the upstream is back");
    assert!(gw.prometheus().contains("coilwork_gateway_up{upstream=\"tcp\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_times_out_without_holding_another() {
    let slow = silent_upstream().await;
    let fast = coilwork_upstream().await;
    // The slow one's 0x0B comes after this: an answer from the fast one
    // while it has not come yet was not held behind it.
    let mut slow_config = upstream("slow", UpstreamTarget::Tcp(slow.to_string()));
    slow_config.response_timeout = Duration::from_secs(3);
    let (gw, addr) = gateway(GatewayConfig {
        upstreams: vec![slow_config, upstream("fast", UpstreamTarget::Tcp(fast.to_string()))],
        routes: vec![route(1..=1, Target::Upstream(0)), route(2..=2, Target::Upstream(1))],
        metrics: true,
        ..GatewayConfig::default()
    })
    .await;
    let mut c = connect(addr).await;
    c.write_all(&adu(1, 1, &fc3(0, 1))).await.unwrap();
    let mut d = connect(addr).await;
    assert_eq!(call(&mut d, 7, 2, &fc3(0, 1)).await, fc3_answer(&[0]));
    let pending = c.try_read(&mut [0u8; 1]);
    assert!(
        matches!(&pending, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the slow upstream's answer came before the fast one's: {pending:?}"
    );
    let a = read_answer(&mut c).await;
    assert_eq!((a.tid, a.pdu), (1, vec![0x83, 0x0B]));
    assert!(
        gw.prometheus()
            .contains("coilwork_gateway_timeouts_total{upstream=\"slow\"} 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_busy() {
    let slow = silent_upstream().await;
    let mut u = upstream("slow", UpstreamTarget::Tcp(slow.to_string()));
    u.queue_depth = 1;
    let (_gw, addr) = gateway(GatewayConfig {
        upstreams: vec![u],
        fallback: Some(Target::Upstream(0)),
        ..GatewayConfig::default()
    })
    .await;
    let mut c = connect(addr).await;
    // Give the upstream task time to connect.
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.write_all(&adu(1, 1, &fc3(0, 1))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut two = adu(2, 1, &fc3(0, 1));
    two.extend(adu(3, 1, &fc3(0, 1)));
    c.write_all(&two).await.unwrap();
    // One in flight, one queued, the third refused at once.
    let first = read_answer(&mut c).await;
    assert_eq!((first.tid, first.pdu), (3, vec![0x83, 0x06]));
    // The other two time out in queue order.
    let (a, b) = (read_answer(&mut c).await, read_answer(&mut c).await);
    assert_eq!((a.tid, a.pdu, b.tid, b.pdu), (1, vec![0x83, 0x0B], 2, vec![0x83, 0x0B]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_upstream_is_never_an_answer() {
    // An RTU-over-TCP upstream answering with a bad CRC, a wrong unit and a truncated frame.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut b = [0u8; 512];
                let mut round = 0;
                while matches!(s.read(&mut b).await, Ok(n) if n > 0) {
                    let mut good = Vec::new();
                    rtu::encode(1, &[3, 2, 0, 7], &mut good);
                    let reply = match round % 3 {
                        0 => {
                            let mut bad = good.clone();
                            bad[4] ^= 0xFF;
                            bad
                        }
                        1 => {
                            let mut other = Vec::new();
                            rtu::encode(9, &[3, 2, 0, 7], &mut other);
                            other
                        }
                        _ => good[..4].to_vec(),
                    };
                    round += 1;
                    let _ = s.write_all(&reply).await;
                }
            });
        }
    });
    let (_gw, addr) = gateway(GatewayConfig {
        upstreams: vec![upstream("rtu", UpstreamTarget::RtuOverTcp(up.to_string()))],
        fallback: Some(Target::Upstream(0)),
        ..GatewayConfig::default()
    })
    .await;
    let mut c = connect(addr).await;
    for tid in 1..=3 {
        assert_eq!(call(&mut c, tid, 1, &fc3(0, 1)).await, vec![0x83, 0x0B], "round {tid}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_refuses_writes() {
    let up = coilwork_upstream().await;
    let (_gw, addr) = gateway(GatewayConfig {
        upstreams: vec![upstream("tcp", UpstreamTarget::Tcp(up.to_string()))],
        fallback: Some(Target::Upstream(0)),
        policy: Policy {
            read_only: true,
            authorizer: None,
        },
        ..GatewayConfig::default()
    })
    .await;
    let mut c = connect(addr).await;
    assert_eq!(call(&mut c, 1, 1, &fc16(0, &[1])).await, vec![0x90, 0x01]);
    assert_eq!(call(&mut c, 2, 1, &fc3(0, 1)).await, fc3_answer(&[0]));
}

#[test]
fn routes_to_missing_upstreams_are_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = Gateway::start(GatewayConfig {
            routes: vec![route(1..=2, Target::Upstream(3))],
            ..GatewayConfig::default()
        });
        assert!(r.is_err());
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_idle_close_is_reopened_without_0x0a() {
    let mut cfg = TcpServerConfig::new("127.0.0.1:0".parse().unwrap());
    cfg.idle_timeout = Some(Duration::from_millis(1200));
    let up = start_tcp_server(engine(), cfg).await.unwrap().local_addr().unwrap();
    let mut u = upstream("tcp", UpstreamTarget::Tcp(up.to_string()));
    // A backoff long enough that a request during it would surely get 0x0A.
    u.backoff_min = Duration::from_secs(5);
    let (gw, addr) = gateway(GatewayConfig {
        upstreams: vec![u],
        fallback: Some(Target::Upstream(0)),
        metrics: true,
        ..GatewayConfig::default()
    })
    .await;
    let mut c = connect(addr).await;
    assert_eq!(call(&mut c, 1, 1, &fc3(0, 1)).await, fc3_answer(&[0]));
    // The upstream closes the idle link; the gateway reopens it at once.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(call(&mut c, 2, 1, &fc3(0, 1)).await, fc3_answer(&[0]));
    assert!(
        gw.prometheus()
            .contains("coilwork_gateway_unavailable_total{upstream=\"tcp\"} 0")
    );
}

/// An MBAP upstream that answers every FC3 after `delay`, one at a time,
/// with the register value set to the request's (upstream) transaction id:
/// the gateway numbers its upstream requests 1, 2, ..., so the value says
/// in which place a request went out.
async fn slow_echo_upstream(delay: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 7];
                while s.read_exact(&mut head).await.is_ok() {
                    let mut pdu = vec![0u8; usize::from(u16::from_be_bytes([head[4], head[5]])) - 1];
                    if s.read_exact(&mut pdu).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(delay).await;
                    let mut answer = Vec::new();
                    coilwork_core::frame::mbap::encode(
                        u16::from_be_bytes([head[0], head[1]]),
                        head[6],
                        &[3, 2, head[0], head[1]],
                        &mut answer,
                    );
                    if s.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_is_fair_between_clients() {
    let up = slow_echo_upstream(Duration::from_millis(30)).await;
    let (_gw, addr) = gateway(GatewayConfig {
        upstreams: vec![upstream("slow", UpstreamTarget::Tcp(up.to_string()))],
        fallback: Some(Target::Upstream(0)),
        ..GatewayConfig::default()
    })
    .await;
    let mut a = connect(addr).await;
    let mut b = connect(addr).await;
    // Client A queues eight requests, then client B one.
    let mut burst = Vec::new();
    for tid in 1..=8 {
        burst.extend(adu(tid, 1, &fc3(0, 1)));
    }
    a.write_all(&burst).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let place = call(&mut b, 100, 1, &fc3(0, 1)).await;
    // B goes out after A's request in flight and at most one more, not all
    // eight: the upstream's own count says so, whatever the timing.
    assert!(place[3] <= 3, "B's request went out in place {}", place[3]);
    let mut last = 0;
    for tid in 1..=8 {
        let answer = read_answer(&mut a).await;
        assert_eq!(answer.tid, tid, "A's answers keep their ids and order");
        assert!(answer.pdu[3] > last, "A's requests go out in A's order");
        last = answer.pdu[3];
    }
    assert_eq!(last, 9, "nine requests in all");
}

/// The client side's request count and the upstream's, as rendered.
fn counted(gw: &Gateway) -> (bool, bool) {
    let text = gw.prometheus();
    let client = text.contains("coilwork_requests_total{server=\"gateway\",unit=\"1\",function=\"3\"} 2\n");
    let upstream = text.contains("coilwork_gateway_requests_total{upstream=\"tcp\"} 2\n");
    (client, upstream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_only_with_metrics_on() {
    let up = coilwork_upstream().await;
    for metrics in [true, false] {
        let (gw, addr) = gateway(GatewayConfig {
            upstreams: vec![upstream("tcp", UpstreamTarget::Tcp(up.to_string()))],
            fallback: Some(Target::Upstream(0)),
            metrics,
            ..GatewayConfig::default()
        })
        .await;
        {
            let mut c = connect(addr).await;
            for tid in 1..=2 {
                assert_eq!(call(&mut c, tid, 1, &fc3(0, 1)).await, fc3_answer(&[0]));
            }
        }
        // The client's tally is folded in when it leaves.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while metrics && counted(&gw) != (true, true) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            counted(&gw),
            (metrics, metrics),
            "metrics {metrics}:\n{}",
            gw.prometheus()
        );
        if !metrics {
            assert!(
                gw.prometheus()
                    .contains("coilwork_gateway_requests_total{upstream=\"tcp\"} 0\n")
            );
        }
        gw.stop();
    }
}
