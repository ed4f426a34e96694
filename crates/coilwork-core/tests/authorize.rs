//! Role-based authorization in the engine: what an `Authorizer` is asked,
//! and what a denied request gets (exception 01, nothing executed).

use coilwork_core::engine::{Access, AccessRequest, Authorizer, HookAction, RequestHook};
use coilwork_core::pdu::{PduBuf, Request};
use coilwork_core::storage::{DeviceContext, ServerContext};
use coilwork_core::{Connection, ConnectionConfig, Engine, RequestContext, Table, Transport};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What one `authorize` call saw, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    role: Option<String>,
    unit: u8,
    function: u8,
    access: Access,
    data: Option<(Table, u16, u16)>,
}

/// Records every question; denies writes for role "viewer" and everything
/// for role "nobody".
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
}

impl Authorizer for Recorder {
    fn authorize(&self, r: &AccessRequest<'_>) -> bool {
        self.seen.lock().unwrap().push(Seen {
            role: r.role.map(str::to_owned),
            unit: r.unit,
            function: r.function,
            access: r.access,
            data: r.data.map(|(t, range)| (t, range.start(), range.count())),
        });
        match r.role {
            Some("nobody") => false,
            Some("viewer") => r.access == Access::Read,
            _ => true,
        }
    }
}

/// Counts hook calls.
#[derive(Default)]
struct CountingHook {
    requests: AtomicUsize,
    responses: AtomicUsize,
}

impl RequestHook for CountingHook {
    fn on_request(&self, _: &RequestContext<'_>, _: &mut Request<'_>, _: &mut PduBuf) -> HookAction {
        self.requests.fetch_add(1, Ordering::Relaxed);
        HookAction::Continue
    }
    fn on_response(&self, _: &RequestContext<'_>, _: &Request<'_>, _: &mut PduBuf) -> HookAction {
        self.responses.fetch_add(1, Ordering::Relaxed);
        HookAction::Continue
    }
}

struct Setup {
    engine: Engine,
    auth: Arc<Recorder>,
    hook: Arc<CountingHook>,
}

fn setup() -> Setup {
    let device = DeviceContext::with_sizes(100, 100, 100, 100).unwrap();
    let auth = Arc::new(Recorder::default());
    let hook = Arc::new(CountingHook::default());
    let engine = Engine::builder(ServerContext::multi().with_device(1, device))
        .authorizer(auth.clone())
        .hook(hook.clone())
        .build();
    Setup { engine, auth, hook }
}

fn run(engine: &Engine, role: Option<&str>, pdu: &[u8]) -> Vec<u8> {
    let ctx = RequestContext {
        unit: 1,
        function: 0,
        transport: Transport::Tls,
        peer: None,
        tls_role: role,
        received: None,
    };
    let mut out = PduBuf::new();
    let o = engine.handle(&ctx, pdu, &mut out);
    assert!(o.respond);
    out.as_slice().to_vec()
}

fn take(auth: &Recorder) -> Vec<Seen> {
    std::mem::take(&mut *auth.seen.lock().unwrap())
}

fn seen(role: &str, function: u8, access: Access, data: Option<(Table, u16, u16)>) -> Seen {
    Seen {
        role: Some(role.to_owned()),
        unit: 1,
        function,
        access,
        data,
    }
}

const FC16_5_2: [u8; 10] = [0x10, 0x00, 0x05, 0x00, 0x02, 0x04, 0x12, 0x34, 0xAB, 0xCD];
const FC3_5_2: [u8; 5] = [0x03, 0x00, 0x05, 0x00, 0x02];

#[test]
fn viewer_may_read_but_not_write() {
    let s = setup();
    // Denied write: exception 01, nothing written, no hook call.
    assert_eq!(run(&s.engine, Some("viewer"), &FC16_5_2), [0x90, 0x01]);
    assert_eq!(s.hook.requests.load(Ordering::Relaxed), 0);
    assert_eq!(run(&s.engine, Some("viewer"), &FC3_5_2), [0x03, 0x04, 0, 0, 0, 0]);
    assert_eq!(s.hook.requests.load(Ordering::Relaxed), 1);
    // An operator may write; the viewer then reads the new values.
    assert_eq!(
        run(&s.engine, Some("operator"), &FC16_5_2),
        [0x10, 0x00, 0x05, 0x00, 0x02]
    );
    assert_eq!(
        run(&s.engine, Some("viewer"), &FC3_5_2),
        [0x03, 0x04, 0x12, 0x34, 0xAB, 0xCD]
    );
    assert_eq!(
        take(&s.auth),
        vec![
            seen("viewer", 0x10, Access::Write, Some((Table::HoldingRegisters, 5, 2))),
            seen("viewer", 0x03, Access::Read, Some((Table::HoldingRegisters, 5, 2))),
            seen("operator", 0x10, Access::Write, Some((Table::HoldingRegisters, 5, 2))),
            seen("viewer", 0x03, Access::Read, Some((Table::HoldingRegisters, 5, 2))),
        ]
    );
}

#[test]
fn every_data_function_names_its_table_and_addresses() {
    let s = setup();
    let cases: &[(&[u8], &[Seen])] = &[
        (
            &[0x01, 0x00, 0x02, 0x00, 0x0A],
            &[seen("r", 0x01, Access::Read, Some((Table::Coils, 2, 10)))],
        ),
        (
            &[0x02, 0x00, 0x03, 0x00, 0x01],
            &[seen("r", 0x02, Access::Read, Some((Table::DiscreteInputs, 3, 1)))],
        ),
        (
            &[0x04, 0x00, 0x04, 0x00, 0x03],
            &[seen("r", 0x04, Access::Read, Some((Table::InputRegisters, 4, 3)))],
        ),
        (
            &[0x05, 0x00, 0x07, 0xFF, 0x00],
            &[seen("r", 0x05, Access::Write, Some((Table::Coils, 7, 1)))],
        ),
        (
            &[0x06, 0x00, 0x08, 0x12, 0x34],
            &[seen("r", 0x06, Access::Write, Some((Table::HoldingRegisters, 8, 1)))],
        ),
        (
            &[0x0F, 0x00, 0x09, 0x00, 0x03, 0x01, 0x05],
            &[seen("r", 0x0F, Access::Write, Some((Table::Coils, 9, 3)))],
        ),
        (
            &[0x16, 0x00, 0x0A, 0x00, 0xF2, 0x00, 0x25],
            &[seen("r", 0x16, Access::Write, Some((Table::HoldingRegisters, 10, 1)))],
        ),
        (
            // FC23: read 3 from 20, write 1 at 30 — asked twice, read first.
            &[0x17, 0x00, 0x14, 0x00, 0x03, 0x00, 0x1E, 0x00, 0x01, 0x02, 0x00, 0xFF],
            &[
                seen("r", 0x17, Access::Read, Some((Table::HoldingRegisters, 20, 3))),
                seen("r", 0x17, Access::Write, Some((Table::HoldingRegisters, 30, 1))),
            ],
        ),
        (
            &[0x18, 0x00, 0x0B],
            &[seen("r", 0x18, Access::Read, Some((Table::HoldingRegisters, 11, 1)))],
        ),
        // Non-data functions: no table.
        (&[0x08, 0x00, 0x00, 0xA5, 0x37], &[seen("r", 0x08, Access::Read, None)]),
        (&[0x2B, 0x0E, 0x01, 0x00], &[seen("r", 0x2B, Access::Read, None)]),
        (&[0x11], &[seen("r", 0x11, Access::Read, None)]),
        (
            &[0x15, 0x09, 0x06, 0x00, 0x04, 0x00, 0x07, 0x00, 0x01, 0x06, 0xAF],
            &[seen("r", 0x15, Access::Write, None)],
        ),
        // Unknown function: asked too (and then exception 01 from the engine).
        (&[0x41, 0x00], &[seen("r", 0x41, Access::Read, None)]),
    ];
    for (pdu, expected) in cases {
        let _ = run(&s.engine, Some("r"), pdu);
        assert_eq!(take(&s.auth), *expected, "pdu {pdu:02X?}");
    }
}

#[test]
fn fc23_is_denied_if_either_half_is() {
    let s = setup();
    let fc23 = [0x17, 0x00, 0x05, 0x00, 0x01, 0x00, 0x05, 0x00, 0x01, 0x02, 0x11, 0x22];
    assert_eq!(run(&s.engine, Some("viewer"), &fc23), [0x97, 0x01]);
    // The write did not happen.
    assert_eq!(run(&s.engine, None, &FC3_5_2), [0x03, 0x04, 0, 0, 0, 0]);
    assert_eq!(run(&s.engine, None, &fc23), [0x17, 0x02, 0x11, 0x22]);
}

#[test]
fn denied_everything_and_no_role() {
    let s = setup();
    assert_eq!(run(&s.engine, Some("nobody"), &FC3_5_2), [0x83, 0x01]);
    assert_eq!(
        run(&s.engine, Some("nobody"), &[0x08, 0x00, 0x00, 0xA5, 0x37]),
        [0x88, 0x01]
    );
    // The hook saw no request but did see the exception answers.
    assert_eq!(s.hook.requests.load(Ordering::Relaxed), 0);
    assert_eq!(s.hook.responses.load(Ordering::Relaxed), 2);
    // No role at all: the authorizer decides (here: allowed) and sees None.
    assert_eq!(run(&s.engine, None, &FC16_5_2), [0x10, 0x00, 0x05, 0x00, 0x02]);
    assert_eq!(take(&s.auth).last().unwrap().role, None);
}

#[test]
fn malformed_requests_are_not_asked_about() {
    let s = setup();
    // Quantity 0: exception 03 from decoding, before authorization.
    assert_eq!(
        run(&s.engine, Some("nobody"), &[0x03, 0x00, 0x00, 0x00, 0x00]),
        [0x83, 0x03]
    );
    assert!(take(&s.auth).is_empty());
}

#[test]
fn role_reaches_the_authorizer_through_a_connection() {
    let s = setup();
    let engine = Arc::new(s.engine);
    let mut conn = Connection::new(
        engine,
        ConnectionConfig {
            tls_role: Some("viewer".to_owned()),
            ..ConnectionConfig::tcp(None)
        },
    );
    let mut adu = vec![0x00, 0x07, 0x00, 0x00, 0x00, 11, 0x01];
    adu.extend_from_slice(&FC16_5_2);
    conn.handle_input(Instant::now(), &adu).unwrap();
    assert_eq!(conn.output(), [0x00, 0x07, 0x00, 0x00, 0x00, 0x03, 0x01, 0x90, 0x01]);
    assert_eq!(take(&s.auth)[0].role.as_deref(), Some("viewer"));
}

/// An authorizer that allocates nothing itself, for the allocation check.
struct ReadOnly;

impl Authorizer for ReadOnly {
    fn authorize(&self, r: &AccessRequest<'_>) -> bool {
        r.access == Access::Read && r.role == Some("viewer")
    }
}

#[test]
fn authorization_allocates_nothing() {
    let device = DeviceContext::with_sizes(100, 100, 100, 100).unwrap();
    let engine = Engine::builder(ServerContext::single(device))
        .authorizer(Arc::new(ReadOnly))
        .build();
    let ctx = RequestContext {
        unit: 1,
        function: 0,
        transport: Transport::Tls,
        peer: None,
        tls_role: Some("viewer"),
        received: None,
    };
    let mut out = PduBuf::new();
    let mut answers = Vec::with_capacity(200);
    let info = allocation_counter::measure(|| {
        for _ in 0..100 {
            let _ = engine.handle(&ctx, &FC3_5_2, &mut out);
            answers.push(out.as_slice().first().copied());
            let _ = engine.handle(&ctx, &FC16_5_2, &mut out);
            answers.push(out.as_slice().first().copied());
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
    assert_eq!(answers.iter().filter(|a| **a == Some(0x03)).count(), 100);
    assert_eq!(answers.iter().filter(|a| **a == Some(0x90)).count(), 100);
}
