//! Engine behaviour end to end: request PDU bytes in, response PDU bytes out.
//!
//! Expected bytes come from the examples of the Modbus Application Protocol
//! v1.1b3 where the spec gives one.

use coilwork_core::diagnostics::event;
use coilwork_core::engine::{CustomFunction, Effect, EngineOptions, HookAction, RequestHook, WriteListener};
use coilwork_core::identity::Identity;
use coilwork_core::pdu::{PduBuf, Request};
use coilwork_core::storage::{DataBlock, DeviceContext, SequentialBlock, ServerContext, SparseBlock};
use coilwork_core::{Engine, ExceptionCode, FrameError, RequestContext, Storage, Table, Transport};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A simple in-memory device: dense tables from address 0, files in a map,
/// and switches to fail every call.
#[derive(Default)]
struct Mem {
    coils: Mutex<Vec<bool>>,
    discrete: Vec<bool>,
    holding: Mutex<Vec<u16>>,
    input: Vec<u16>,
    files: Mutex<BTreeMap<(u16, u16), u16>>,
    fail: Option<ExceptionCode>,
    exception_status: u8,
    seen_functions: Mutex<Vec<u8>>,
}

impl Mem {
    fn new() -> Self {
        Self {
            coils: Mutex::new(vec![false; 100]),
            discrete: vec![false; 300],
            holding: Mutex::new(vec![0; 2000]),
            input: vec![0; 100],
            ..Self::default()
        }
    }

    fn check(&self, ctx: &RequestContext<'_>, start: u16, len: usize, size: usize) -> Result<(), ExceptionCode> {
        self.seen_functions.lock().unwrap().push(ctx.function);
        if let Some(e) = self.fail {
            return Err(e);
        }
        if start as usize + len > size {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        Ok(())
    }
}

impl Storage for Mem {
    fn read_coils(&self, ctx: &RequestContext<'_>, start: u16, out: &mut [bool]) -> Result<(), ExceptionCode> {
        let c = self.coils.lock().unwrap();
        self.check(ctx, start, out.len(), c.len())?;
        out.copy_from_slice(&c[start as usize..start as usize + out.len()]);
        Ok(())
    }
    fn read_discrete_inputs(
        &self,
        ctx: &RequestContext<'_>,
        start: u16,
        out: &mut [bool],
    ) -> Result<(), ExceptionCode> {
        self.check(ctx, start, out.len(), self.discrete.len())?;
        out.copy_from_slice(&self.discrete[start as usize..start as usize + out.len()]);
        Ok(())
    }
    fn read_holding_registers(
        &self,
        ctx: &RequestContext<'_>,
        start: u16,
        out: &mut [u16],
    ) -> Result<(), ExceptionCode> {
        let h = self.holding.lock().unwrap();
        self.check(ctx, start, out.len(), h.len())?;
        out.copy_from_slice(&h[start as usize..start as usize + out.len()]);
        Ok(())
    }
    fn read_input_registers(&self, ctx: &RequestContext<'_>, start: u16, out: &mut [u16]) -> Result<(), ExceptionCode> {
        self.check(ctx, start, out.len(), self.input.len())?;
        out.copy_from_slice(&self.input[start as usize..start as usize + out.len()]);
        Ok(())
    }
    fn write_coils(&self, ctx: &RequestContext<'_>, start: u16, values: &[bool]) -> Result<(), ExceptionCode> {
        let mut c = self.coils.lock().unwrap();
        self.check(ctx, start, values.len(), c.len())?;
        c[start as usize..start as usize + values.len()].copy_from_slice(values);
        Ok(())
    }
    fn write_holding_registers(
        &self,
        ctx: &RequestContext<'_>,
        start: u16,
        values: &[u16],
    ) -> Result<(), ExceptionCode> {
        let mut h = self.holding.lock().unwrap();
        self.check(ctx, start, values.len(), h.len())?;
        h[start as usize..start as usize + values.len()].copy_from_slice(values);
        Ok(())
    }
    fn read_exception_status(&self, ctx: &RequestContext<'_>) -> Result<u8, ExceptionCode> {
        self.check(ctx, 0, 0, 0)?;
        Ok(self.exception_status)
    }
    fn read_file_record(
        &self,
        ctx: &RequestContext<'_>,
        file: u16,
        record: u16,
        out: &mut [u16],
    ) -> Result<(), ExceptionCode> {
        self.check(ctx, 0, 0, 0)?;
        let f = self.files.lock().unwrap();
        for (i, v) in out.iter_mut().enumerate() {
            *v = *f
                .get(&(file, record + i as u16))
                .ok_or(ExceptionCode::IllegalDataAddress)?;
        }
        Ok(())
    }
    fn write_file_record(
        &self,
        ctx: &RequestContext<'_>,
        file: u16,
        record: u16,
        values: &[u16],
    ) -> Result<(), ExceptionCode> {
        self.check(ctx, 0, 0, 0)?;
        let mut f = self.files.lock().unwrap();
        for (i, v) in values.iter().enumerate() {
            f.insert((file, record + i as u16), *v);
        }
        Ok(())
    }
}

fn ctx(transport: Transport, unit: u8) -> RequestContext<'static> {
    RequestContext {
        unit,
        function: 0,
        transport,
        peer: None,
        tls_role: None,
        received: None,
    }
}

/// Runs one PDU; `Some(answer)` if the engine answered.
fn run(engine: &Engine, transport: Transport, unit: u8, pdu: &[u8]) -> Option<Vec<u8>> {
    run_full(engine, transport, unit, pdu).0
}

fn run_full(engine: &Engine, transport: Transport, unit: u8, pdu: &[u8]) -> (Option<Vec<u8>>, Option<Effect>) {
    let mut out = PduBuf::new();
    let o = engine.handle(&ctx(transport, unit), pdu, &mut out);
    (o.respond.then(|| out.as_slice().to_vec()), o.effect)
}

fn tcp(engine: &Engine, pdu: &[u8]) -> Vec<u8> {
    run(engine, Transport::Tcp, 1, pdu).expect("an answer")
}

fn single(mem: Mem) -> (Engine, Arc<Mem>) {
    let mem = Arc::new(mem);
    let engine = Engine::builder(ServerContext::multi().with_device(1, mem.clone())).build();
    (engine, mem)
}

fn bits_from_bytes(bytes: &[u8], n: usize) -> Vec<bool> {
    (0..n).map(|i| bytes[i / 8] & (1 << (i % 8)) != 0).collect()
}

// ---------------------------------------------------------------- success paths

#[test]
fn fc01_read_coils_spec_example() {
    let mem = Mem::new();
    // Coils 20..=38 (addresses 19..=37) = CD 6B 05.
    mem.coils.lock().unwrap()[19..38].copy_from_slice(&bits_from_bytes(&[0xCD, 0x6B, 0x05], 19));
    let (e, _) = single(mem);
    assert_eq!(tcp(&e, &[0x01, 0x00, 0x13, 0x00, 0x13]), [0x01, 0x03, 0xCD, 0x6B, 0x05]);
}

#[test]
fn fc02_read_discrete_inputs_spec_example() {
    let mut mem = Mem::new();
    mem.discrete[196..218].copy_from_slice(&bits_from_bytes(&[0xAC, 0xDB, 0x35], 22));
    let (e, _) = single(mem);
    assert_eq!(tcp(&e, &[0x02, 0x00, 0xC4, 0x00, 0x16]), [0x02, 0x03, 0xAC, 0xDB, 0x35]);
}

#[test]
fn fc03_read_holding_spec_example() {
    let mem = Mem::new();
    mem.holding.lock().unwrap()[107..110].copy_from_slice(&[0x022B, 0x0000, 0x0064]);
    let (e, m) = single(mem);
    assert_eq!(
        tcp(&e, &[0x03, 0x00, 0x6B, 0x00, 0x03]),
        [0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64]
    );
    // The storage saw the function code in its context.
    assert_eq!(*m.seen_functions.lock().unwrap(), [0x03]);
}

#[test]
fn fc04_read_input_spec_example() {
    let mut mem = Mem::new();
    mem.input[8] = 0x000A;
    let (e, _) = single(mem);
    assert_eq!(tcp(&e, &[0x04, 0x00, 0x08, 0x00, 0x01]), [0x04, 0x02, 0x00, 0x0A]);
}

#[test]
fn fc05_fc06_echo_and_write() {
    let (e, m) = single(Mem::new());
    assert_eq!(tcp(&e, &[0x05, 0x00, 0x2C, 0xFF, 0x00]), [0x05, 0x00, 0x2C, 0xFF, 0x00]);
    assert!(m.coils.lock().unwrap()[0x2C]);
    assert_eq!(tcp(&e, &[0x05, 0x00, 0x2C, 0x00, 0x00]), [0x05, 0x00, 0x2C, 0x00, 0x00]);
    assert!(!m.coils.lock().unwrap()[0x2C]);
    assert_eq!(tcp(&e, &[0x06, 0x00, 0x01, 0x00, 0x03]), [0x06, 0x00, 0x01, 0x00, 0x03]);
    assert_eq!(m.holding.lock().unwrap()[1], 3);
}

#[test]
fn fc07_read_exception_status() {
    let mut mem = Mem::new();
    mem.exception_status = 0x6D;
    let (e, _) = single(mem);
    assert_eq!(tcp(&e, &[0x07]), [0x07, 0x6D]);
}

#[test]
fn fc08_echo_register_delimiter_overrun() {
    let (e, _) = single(Mem::new());
    assert_eq!(tcp(&e, &[0x08, 0x00, 0x00, 0xA5, 0x37]), [0x08, 0x00, 0x00, 0xA5, 0x37]);
    e.context().device(1).unwrap().diagnostics().set_register(0x1234);
    assert_eq!(tcp(&e, &[0x08, 0x00, 0x02, 0x00, 0x00]), [0x08, 0x00, 0x02, 0x12, 0x34]);
    let (answer, effect) = run_full(&e, Transport::Serial, 1, &[0x08, 0x00, 0x03, 0x3B, 0x00]);
    assert_eq!(answer.unwrap(), [0x08, 0x00, 0x03, 0x3B, 0x00]);
    assert_eq!(effect, Some(Effect::SetAsciiDelimiter(b';')));
    e.note_frame_error(&FrameError::TooLong(300));
    assert_eq!(tcp(&e, &[0x08, 0x00, 0x12, 0x00, 0x00]), [0x08, 0x00, 0x12, 0x00, 0x01]);
    assert_eq!(tcp(&e, &[0x08, 0x00, 0x14, 0x00, 0x00]), [0x08, 0x00, 0x14, 0x00, 0x00]);
    assert_eq!(tcp(&e, &[0x08, 0x00, 0x12, 0x00, 0x00]), [0x08, 0x00, 0x12, 0x00, 0x00]);
}

#[test]
fn fc11_fc12_event_counter_and_log() {
    let (e, _) = single(Mem::new());
    // Nothing completed yet.
    assert_eq!(tcp(&e, &[0x0B]), [0x0B, 0x00, 0x00, 0x00, 0x00]);
    tcp(&e, &[0x03, 0x00, 0x00, 0x00, 0x01]); // ok: counts
    tcp(&e, &[0x03, 0xFF, 0x00, 0x00, 0x01]); // exception 02: does not count
    tcp(&e, &[0x06, 0x00, 0x00, 0x00, 0x01]); // ok: counts
    // FC11 itself does not count.
    assert_eq!(tcp(&e, &[0x0B]), [0x0B, 0x00, 0x00, 0x00, 0x02]);
    // Log, newest first: this FC12's receive, then FC11 send/receive, FC6
    // send/receive, FC3 exception send (read exception bit)/receive, FC3
    // send/receive, first FC11 send/receive.
    let log = tcp(&e, &[0x0C]);
    let events = [0x80, 0x40, 0x80, 0x40, 0x80, 0x41, 0x80, 0x40, 0x80, 0x40, 0x80];
    let mut expected = vec![0x0C, 6 + events.len() as u8, 0x00, 0x00, 0x00, 0x02, 0x00, 0x06];
    expected.extend_from_slice(&events);
    assert_eq!(log, expected);
}

#[test]
fn fc15_fc16_spec_examples() {
    let (e, m) = single(Mem::new());
    assert_eq!(
        tcp(&e, &[0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD, 0x01]),
        [0x0F, 0x00, 0x13, 0x00, 0x0A]
    );
    assert_eq!(
        m.coils.lock().unwrap()[0x13..0x1D],
        bits_from_bytes(&[0xCD, 0x01], 10)[..]
    );
    assert_eq!(
        tcp(&e, &[0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02]),
        [0x10, 0x00, 0x01, 0x00, 0x02]
    );
    assert_eq!(m.holding.lock().unwrap()[1..3], [0x000A, 0x0102]);
}

#[test]
fn fc17_report_server_id() {
    let mem = Arc::new(Mem::new());
    let identity = Identity::new().server_id(vec![0x42, 0x43]).unwrap().run_indicator(true);
    let e = Engine::builder(ServerContext::multi().with_device(1, mem.clone()))
        .identity(identity)
        .build();
    assert_eq!(tcp(&e, &[0x11]), [0x11, 0x03, 0x42, 0x43, 0xFF]);
    let identity = Identity::new().run_indicator(false);
    let e = Engine::builder(ServerContext::multi().with_device(1, mem))
        .identity(identity)
        .build();
    assert_eq!(tcp(&e, &[0x11]), [0x11, 0x02, 0x00, 0x00]);
}

#[test]
fn fc20_fc21_file_records_spec_examples() {
    let (e, m) = single(Mem::new());
    {
        let mut f = m.files.lock().unwrap();
        f.insert((4, 1), 0x0DFE);
        f.insert((4, 2), 0x0020);
        f.insert((3, 9), 0x33CD);
        f.insert((3, 10), 0x0040);
    }
    assert_eq!(
        tcp(
            &e,
            &[
                0x14, 0x0E, 0x06, 0x00, 0x04, 0x00, 0x01, 0x00, 0x02, 0x06, 0x00, 0x03, 0x00, 0x09, 0x00, 0x02
            ]
        ),
        [
            0x14, 0x0C, 0x05, 0x06, 0x0D, 0xFE, 0x00, 0x20, 0x05, 0x06, 0x33, 0xCD, 0x00, 0x40
        ]
    );
    let write = [
        0x15, 0x0D, 0x06, 0x00, 0x04, 0x00, 0x07, 0x00, 0x03, 0x06, 0xAF, 0x04, 0xBE, 0x10, 0x0D,
    ];
    assert_eq!(tcp(&e, &write), write);
    let f = m.files.lock().unwrap();
    assert_eq!([f[&(4, 7)], f[&(4, 8)], f[&(4, 9)]], [0x06AF, 0x04BE, 0x100D]);
}

#[test]
fn fc22_mask_write_spec_example() {
    let mem = Mem::new();
    mem.holding.lock().unwrap()[4] = 0x12;
    let (e, m) = single(mem);
    let req = [0x16, 0x00, 0x04, 0x00, 0xF2, 0x00, 0x25];
    assert_eq!(tcp(&e, &req), req);
    assert_eq!(m.holding.lock().unwrap()[4], 0x17);
}

#[test]
fn fc23_read_write_spec_example() {
    let mem = Mem::new();
    mem.holding.lock().unwrap()[3..9].copy_from_slice(&[0x00FE, 0x0ACD, 0x0001, 0x0003, 0x000D, 0x00FF]);
    let (e, m) = single(mem);
    let answer = tcp(
        &e,
        &[
            0x17, 0x00, 0x03, 0x00, 0x06, 0x00, 0x0E, 0x00, 0x03, 0x06, 0x00, 0xFF, 0x00, 0xFF, 0x00, 0xFF,
        ],
    );
    assert_eq!(
        answer,
        [
            0x17, 0x0C, 0x00, 0xFE, 0x0A, 0xCD, 0x00, 0x01, 0x00, 0x03, 0x00, 0x0D, 0x00, 0xFF
        ]
    );
    assert_eq!(m.holding.lock().unwrap()[14..17], [0x00FF; 3]);
}

#[test]
fn fc23_write_happens_before_read() {
    let (e, _) = single(Mem::new());
    let answer = tcp(
        &e,
        &[0x17, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x02, 0x12, 0x34],
    );
    assert_eq!(answer, [0x17, 0x02, 0x12, 0x34]);
}

#[test]
fn fc24_fifo_spec_example_and_too_long() {
    let mem = Mem::new();
    mem.holding.lock().unwrap()[0x04DE..0x04E1].copy_from_slice(&[2, 0x01B8, 0x1284]);
    mem.holding.lock().unwrap()[0x0100] = 32;
    let (e, _) = single(mem);
    assert_eq!(
        tcp(&e, &[0x18, 0x04, 0xDE]),
        [0x18, 0x00, 0x06, 0x00, 0x02, 0x01, 0xB8, 0x12, 0x84]
    );
    assert_eq!(tcp(&e, &[0x18, 0x01, 0x00]), [0x98, 0x03]);
}

fn identity() -> Identity {
    Identity::new()
        .vendor_name("Coil")
        .product_code("CW")
        .major_minor_revision("1.0")
}

#[test]
fn fc43_basic_stream_and_individual() {
    let mem = Arc::new(Mem::new());
    let e = Engine::builder(ServerContext::multi().with_device(1, mem))
        .identity(identity().vendor_url("http://x"))
        .build();
    let mut expected = vec![0x2B, 0x0E, 0x01, 0x82, 0x00, 0x00, 0x03];
    expected.extend_from_slice(&[
        0x00, 4, b'C', b'o', b'i', b'l', 0x01, 2, b'C', b'W', 0x02, 3, b'1', b'.', b'0',
    ]);
    assert_eq!(tcp(&e, &[0x2B, 0x0E, 0x01, 0x00]), expected);
    // Unknown start object (0x05 is not set): restart at 0.
    assert_eq!(tcp(&e, &[0x2B, 0x0E, 0x01, 0x05]), expected);
    // Object 0x03 exists but is not a basic object: restart at 0 too.
    assert_eq!(tcp(&e, &[0x2B, 0x0E, 0x01, 0x03]), expected);
    // Regular stream from object 2.
    assert_eq!(
        tcp(&e, &[0x2B, 0x0E, 0x02, 0x02]),
        [
            0x2B, 0x0E, 0x02, 0x82, 0x00, 0x00, 0x02, 0x02, 3, b'1', b'.', b'0', 0x03, 8, b'h', b't', b't', b'p', b':',
            b'/', b'/', b'x'
        ]
    );
    // Individual access.
    assert_eq!(
        tcp(&e, &[0x2B, 0x0E, 0x04, 0x01]),
        [0x2B, 0x0E, 0x04, 0x82, 0x00, 0x00, 0x01, 0x01, 2, b'C', b'W']
    );
    assert_eq!(tcp(&e, &[0x2B, 0x0E, 0x04, 0x06]), [0xAB, 0x02]);
}

#[test]
fn fc43_extended_paging_with_more_follows() {
    let mem = Arc::new(Mem::new());
    let id = identity()
        .object(0x80, vec![b'a'; 200])
        .unwrap()
        .object(0x81, vec![b'b'; 200])
        .unwrap()
        .object(0x82, vec![b'c'; 10])
        .unwrap();
    let e = Engine::builder(ServerContext::multi().with_device(1, mem))
        .identity(id)
        .build();
    // 7 header + 6 + 4 + 5 + 202 = 224: object 0x81 (202 bytes) does not fit.
    let first = tcp(&e, &[0x2B, 0x0E, 0x03, 0x00]);
    assert_eq!(&first[..7], &[0x2B, 0x0E, 0x03, 0x83, 0xFF, 0x81, 0x04]);
    assert_eq!(first.len(), 7 + 6 + 4 + 5 + 202);
    assert_eq!(&first[first.len() - 202..first.len() - 200], &[0x80, 200]);
    let second = tcp(&e, &[0x2B, 0x0E, 0x03, 0x81]);
    assert_eq!(&second[..7], &[0x2B, 0x0E, 0x03, 0x83, 0x00, 0x00, 0x02]);
    assert_eq!(second.len(), 7 + 202 + 12);
    assert_eq!(&second[7..9], &[0x81, 200]);
    assert_eq!(&second[209..211], &[0x82, 10]);
    // The basic stream stops at object 2 whatever else is set.
    let basic = tcp(&e, &[0x2B, 0x0E, 0x01, 0x00]);
    assert_eq!(&basic[..7], &[0x2B, 0x0E, 0x01, 0x83, 0x00, 0x00, 0x03]);
}

// ---------------------------------------------------------------- exceptions

#[test]
fn exception_01_unknown_function() {
    let (e, _) = single(Mem::new());
    assert_eq!(tcp(&e, &[0x09]), [0x89, 0x01]);
    assert_eq!(tcp(&e, &[0x41, 0x01]), [0xC1, 0x01]);
}

#[test]
fn exception_03_each_limit() {
    let (e, _) = single(Mem::new());
    assert_eq!(tcp(&e, &[0x01, 0x00, 0x00, 0x00, 0x00]), [0x81, 0x03]);
    assert_eq!(tcp(&e, &[0x01, 0x00, 0x00, 0x07, 0xD1]), [0x81, 0x03]);
    assert_eq!(tcp(&e, &[0x02, 0x00, 0x00, 0x07, 0xD1]), [0x82, 0x03]);
    assert_eq!(tcp(&e, &[0x03, 0x00, 0x00, 0x00, 0x7E]), [0x83, 0x03]);
    assert_eq!(tcp(&e, &[0x04, 0x00, 0x00, 0x00, 0x00]), [0x84, 0x03]);
    assert_eq!(tcp(&e, &[0x05, 0x00, 0x00, 0x12, 0x34]), [0x85, 0x03]);
    // FC15: 1969 coils; byte count not matching the quantity.
    assert_eq!(tcp(&e, &[0x0F, 0x00, 0x00, 0x07, 0xB1, 0x01, 0x00]), [0x8F, 0x03]);
    assert_eq!(tcp(&e, &[0x0F, 0x00, 0x00, 0x00, 0x09, 0x01, 0xFF]), [0x8F, 0x03]);
    // FC16: 124 registers; byte count mismatch.
    assert_eq!(tcp(&e, &[0x10, 0x00, 0x00, 0x00, 0x7C, 0x02, 0x00, 0x00]), [0x90, 0x03]);
    assert_eq!(
        tcp(&e, &[0x10, 0x00, 0x00, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00]),
        [0x90, 0x03]
    );
    // FC23: read 126.
    assert_eq!(
        tcp(
            &e,
            &[0x17, 0x00, 0x00, 0x00, 0x7E, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00]
        ),
        [0x97, 0x03]
    );
}

/// Whole requests past the 253-byte PDU limit (as the framing now hands
/// them over for byte-counted functions): exception 03, before any address
/// check, nothing written, and counted as an exception like any other.
#[test]
fn exception_03_for_pdus_past_the_limit() {
    let (e, mem) = single(Mem::new());
    let with_data = |head: &[u8], n: usize| [head, &vec![0xAB; n]].concat();
    // FC16 of 124 registers at an address past the table (03 wins over 02).
    assert_eq!(
        tcp(&e, &with_data(&[0x10, 0xFF, 0xFF, 0x00, 124, 248], 248)),
        [0x90, 0x03]
    );
    // FC23 writing 122 registers; FC15 of 2040 coils; FC21 with 255 bytes.
    let fc23 = with_data(&[0x17, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 122, 244], 244);
    assert_eq!(tcp(&e, &fc23), [0x97, 0x03]);
    assert_eq!(
        tcp(&e, &with_data(&[0x0F, 0x00, 0x00, 0x07, 0xF8, 255], 255)),
        [0x8F, 0x03]
    );
    assert_eq!(tcp(&e, &with_data(&[0x15, 255], 255)), [0x95, 0x03]);
    assert!(mem.holding.lock().unwrap().iter().all(|&v| v == 0), "nothing written");
    assert!(mem.seen_functions.lock().unwrap().is_empty(), "the storage saw nothing");
    let device = e.context().device(1).unwrap();
    let exceptions = coilwork_core::diagnostics::DiagnosticCounter::BusExceptionError;
    assert_eq!(device.diagnostics().get(exceptions), 4);
}

#[test]
fn exception_02_overflow_and_undefined() {
    let (e, _) = single(Mem::new());
    assert_eq!(tcp(&e, &[0x03, 0xFF, 0xFF, 0x00, 0x02]), [0x83, 0x02]);
    assert_eq!(tcp(&e, &[0x03, 0x07, 0xD0, 0x00, 0x01]), [0x83, 0x02]);
    // A sparse block holding 10 and 11 only.
    let sparse: Arc<dyn DataBlock> = Arc::new(SparseBlock::new([(10, 7), (11, 8)]));
    let dense: Arc<dyn DataBlock> = Arc::new(SequentialBlock::zeroed(0, 10).unwrap());
    let device = DeviceContext::new(dense.clone(), dense.clone(), sparse, dense);
    let e = Engine::builder(ServerContext::multi().with_device(1, device)).build();
    assert_eq!(
        tcp(&e, &[0x03, 0x00, 0x0A, 0x00, 0x02]),
        [0x03, 0x04, 0x00, 0x07, 0x00, 0x08]
    );
    assert_eq!(tcp(&e, &[0x03, 0x00, 0x0A, 0x00, 0x03]), [0x83, 0x02]);
    assert_eq!(tcp(&e, &[0x03, 0x00, 0x09, 0x00, 0x01]), [0x83, 0x02]);
}

#[test]
fn exception_04_and_06_pass_through_and_count() {
    let mut mem = Mem::new();
    mem.fail = Some(ExceptionCode::ServerDeviceFailure);
    let (e, _) = single(mem);
    assert_eq!(tcp(&e, &[0x03, 0x00, 0x00, 0x00, 0x01]), [0x83, 0x04]);
    assert_eq!(tcp(&e, &[0x06, 0x00, 0x00, 0x00, 0x01]), [0x86, 0x04]);
    let mut mem = Mem::new();
    mem.fail = Some(ExceptionCode::ServerDeviceBusy);
    let (e, _) = single(mem);
    assert_eq!(tcp(&e, &[0x10, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00]), [0x90, 0x06]);
    // Busy count (0x11) and exception count (0x0D).
    assert_eq!(tcp(&e, &[0x08, 0x00, 0x11, 0x00, 0x00]), [0x08, 0x00, 0x11, 0x00, 0x01]);
    assert_eq!(tcp(&e, &[0x08, 0x00, 0x0D, 0x00, 0x00]), [0x08, 0x00, 0x0D, 0x00, 0x01]);
    // Log: busy exception send event.
    let log = tcp(&e, &[0x0C]);
    assert_eq!(&log[8..], &[0x80, 0x40, 0x80, 0x40, 0x80, 0x44, 0x80]);
}

#[test]
fn unknown_unit_per_transport_and_option() {
    let (e, _) = single(Mem::new());
    assert_eq!(
        run(&e, Transport::Tcp, 7, &[0x03, 0x00, 0x00, 0x00, 0x01]).unwrap(),
        [0x83, 0x0B]
    );
    assert_eq!(
        run(&e, Transport::Udp, 7, &[0x03, 0x00, 0x00, 0x00, 0x01]).unwrap(),
        [0x83, 0x0B]
    );
    assert_eq!(run(&e, Transport::Serial, 7, &[0x03, 0x00, 0x00, 0x00, 0x01]), None);
    // On TCP, units 0 and 0xFF are ordinary ids: unknown here.
    assert_eq!(
        run(&e, Transport::Tcp, 0, &[0x03, 0x00, 0x00, 0x00, 0x01]).unwrap(),
        [0x83, 0x0B]
    );
    assert_eq!(
        run(&e, Transport::Tcp, 0xFF, &[0x03, 0x00, 0x00, 0x00, 0x01]).unwrap(),
        [0x83, 0x0B]
    );

    let mem = Arc::new(Mem::new());
    let quiet = Engine::builder(ServerContext::multi().with_device(1, mem.clone()))
        .options(EngineOptions {
            ignore_missing_devices: Some(true),
            broadcast_enable: false,
        })
        .build();
    assert_eq!(run(&quiet, Transport::Tcp, 7, &[0x03, 0x00, 0x00, 0x00, 0x01]), None);
    let loud = Engine::builder(ServerContext::multi().with_device(1, mem))
        .options(EngineOptions {
            ignore_missing_devices: Some(false),
            broadcast_enable: false,
        })
        .build();
    assert_eq!(
        run(&loud, Transport::Serial, 7, &[0x03, 0x00, 0x00, 0x00, 0x01]).unwrap(),
        [0x83, 0x0B]
    );
}

#[test]
fn tcp_unit_zero_is_an_ordinary_id() {
    let mem = Arc::new(Mem::new());
    mem.holding.lock().unwrap()[0] = 9;
    let e = Engine::builder(ServerContext::multi().with_device(0, mem)).build();
    assert_eq!(
        run(&e, Transport::Tcp, 0, &[0x03, 0x00, 0x00, 0x00, 0x01]).unwrap(),
        [0x03, 0x02, 0x00, 0x09]
    );
}

// ---------------------------------------------------------------- broadcast

#[test]
fn serial_broadcast_writes_every_device_and_never_answers() {
    let a = Arc::new(Mem::new());
    let b = Arc::new(Mem::new());
    let e = Engine::builder(
        ServerContext::multi()
            .with_device(1, a.clone())
            .with_device(2, b.clone()),
    )
    .options(EngineOptions {
        ignore_missing_devices: None,
        broadcast_enable: true,
    })
    .build();
    assert_eq!(run(&e, Transport::Serial, 0, &[0x06, 0x00, 0x05, 0x12, 0x34]), None);
    assert_eq!(a.holding.lock().unwrap()[5], 0x1234);
    assert_eq!(b.holding.lock().unwrap()[5], 0x1234);
    // Reads and failing writes: still silent.
    assert_eq!(run(&e, Transport::Serial, 0, &[0x03, 0x00, 0x05, 0x00, 0x01]), None);
    assert_eq!(run(&e, Transport::Serial, 0, &[0x06, 0xFF, 0x05, 0x00, 0x01]), None);
    assert_eq!(run(&e, Transport::Serial, 0, &[0x03, 0x00, 0x00, 0x00, 0x00]), None);
    // Each device counted 4 server messages, 4 no-responses, 1 completed event.
    for unit in [1, 2] {
        let d = e.context().device(unit).unwrap();
        let diag = d.diagnostics();
        use coilwork_core::diagnostics::DiagnosticCounter::*;
        assert_eq!(diag.get(ServerMessage), 4);
        assert_eq!(diag.get(ServerNoResponse), 4);
        assert_eq!(diag.get(BusExceptionError), 0);
        assert_eq!(diag.event_count(), 1);
        let mut log = [0; 64];
        let n = diag.events(&mut log);
        assert_eq!(&log[..n], &[0x40, 0xC0, 0x40, 0xC0, 0x40, 0xC0, 0x40, 0xC0]);
    }
    // The read was not executed at all.
    assert!(!a.seen_functions.lock().unwrap().contains(&0x03));
}

#[test]
fn serial_unit_zero_without_broadcast_is_ignored() {
    let a = Arc::new(Mem::new());
    let e = Engine::builder(ServerContext::multi().with_device(1, a.clone())).build();
    assert_eq!(run(&e, Transport::Serial, 0, &[0x06, 0x00, 0x05, 0x12, 0x34]), None);
    assert_eq!(a.holding.lock().unwrap()[5], 0);
}

// ---------------------------------------------------------------- listen-only, counters

#[test]
fn listen_only_then_restart() {
    let (e, m) = single(Mem::new());
    let diag = || e.context().device(1).unwrap();
    assert_eq!(run(&e, Transport::Serial, 1, &[0x08, 0x00, 0x04, 0x00, 0x00]), None);
    assert!(diag().diagnostics().listen_only());
    // Nothing executes or answers, not even exceptions.
    assert_eq!(run(&e, Transport::Serial, 1, &[0x06, 0x00, 0x00, 0x00, 0x07]), None);
    assert_eq!(run(&e, Transport::Serial, 1, &[0x03, 0xFF, 0xFF, 0x00, 0x07]), None);
    assert_eq!(run(&e, Transport::Serial, 1, &[0x08, 0x00, 0x00, 0x00, 0x00]), None);
    assert_eq!(m.holding.lock().unwrap()[0], 0);
    {
        let d = diag();
        let mut log = [0; 64];
        let n = d.diagnostics().events(&mut log);
        // Receive events flagged listen-only, after "entered listen-only" (0x04).
        assert_eq!(&log[..n], &[0xA0, 0xA0, 0xA0, 0x04, 0x80]);
    }
    // Restart from listen-only: not answered (spec), but it ends the mode.
    let (answer, effect) = run_full(&e, Transport::Serial, 1, &[0x08, 0x00, 0x01, 0x00, 0x00]);
    assert_eq!(answer, None);
    assert_eq!(effect, Some(Effect::RestartCommunications));
    assert!(!diag().diagnostics().listen_only());
    assert_eq!(
        run(&e, Transport::Serial, 1, &[0x06, 0x00, 0x00, 0x00, 0x07]).unwrap(),
        [0x06, 0x00, 0x00, 0x00, 0x07]
    );
    // Restart outside listen-only is answered (echo), clears counters, and
    // FF00 clears the log, leaving only the restart event.
    let (answer, effect) = run_full(&e, Transport::Serial, 1, &[0x08, 0x00, 0x01, 0xFF, 0x00]);
    assert_eq!(answer.unwrap(), [0x08, 0x00, 0x01, 0xFF, 0x00]);
    assert_eq!(effect, Some(Effect::RestartCommunications));
    let d = diag();
    let mut log = [0; 64];
    let n = d.diagnostics().events(&mut log);
    assert_eq!(&log[..n], &[event::COMM_RESTART]);
    assert_eq!(d.diagnostics().event_count(), 0);
    assert_eq!(
        d.diagnostics()
            .get(coilwork_core::diagnostics::DiagnosticCounter::ServerMessage),
        0
    );
}

#[test]
fn counters_after_mixed_serial_traffic() {
    let (e, _) = single(Mem::new());
    let s = |pdu: &[u8]| run(&e, Transport::Serial, 1, pdu);
    s(&[0x03, 0x00, 0x00, 0x00, 0x01]).unwrap(); // ok
    s(&[0x03, 0xFF, 0x00, 0x00, 0x01]).unwrap(); // 02
    s(&[0x41]).unwrap(); // 01
    assert_eq!(run(&e, Transport::Serial, 9, &[0x03, 0x00, 0x00, 0x00, 0x01]), None); // other unit
    e.note_frame_error(&FrameError::BadCrc {
        expected: 1,
        computed: 2,
    });
    e.note_frame_error(&FrameError::Garbage(3)); // not a message
    s(&[0x08, 0x00, 0x04, 0x00, 0x00]); // listen-only: no response
    s(&[0x03, 0x00, 0x00, 0x00, 0x01]); // monitored only: no response
    s(&[0x08, 0x00, 0x01, 0x00, 0x00]); // restart: not answered, clears counters
    s(&[0x03, 0x00, 0x00, 0x00, 0x01]).unwrap(); // ok
    s(&[0x03, 0x00, 0x00, 0x00, 0x00]).unwrap(); // 03
    assert_eq!(run(&e, Transport::Serial, 9, &[0x03, 0x00, 0x00, 0x00, 0x01]), None);
    e.note_frame_error(&FrameError::BadCrc {
        expected: 1,
        computed: 2,
    });
    // Bus messages since restart: 2 to us + 1 other + 1 CRC + this one.
    assert_eq!(
        s(&[0x08, 0x00, 0x0B, 0x00, 0x00]).unwrap(),
        [0x08, 0x00, 0x0B, 0x00, 0x05]
    );
    assert_eq!(
        s(&[0x08, 0x00, 0x0C, 0x00, 0x00]).unwrap(),
        [0x08, 0x00, 0x0C, 0x00, 0x01]
    );
    assert_eq!(
        s(&[0x08, 0x00, 0x0D, 0x00, 0x00]).unwrap(),
        [0x08, 0x00, 0x0D, 0x00, 0x01]
    );
    // Server messages: 2 + 4 FC8 queries, this one included.
    assert_eq!(
        s(&[0x08, 0x00, 0x0E, 0x00, 0x00]).unwrap(),
        [0x08, 0x00, 0x0E, 0x00, 0x06]
    );
    assert_eq!(
        s(&[0x08, 0x00, 0x0F, 0x00, 0x00]).unwrap(),
        [0x08, 0x00, 0x0F, 0x00, 0x00]
    );
    assert_eq!(
        s(&[0x08, 0x00, 0x10, 0x00, 0x00]).unwrap(),
        [0x08, 0x00, 0x10, 0x00, 0x00]
    );
    // Event count: FC3 ok + 6 FC8 answers.
    assert_eq!(s(&[0x0B]).unwrap(), [0x0B, 0x00, 0x00, 0x00, 0x07]);
    // Clear counters: everything back to zero (bus too).
    assert_eq!(
        s(&[0x08, 0x00, 0x0A, 0x00, 0x00]).unwrap(),
        [0x08, 0x00, 0x0A, 0x00, 0x00]
    );
    assert_eq!(
        e.bus_diagnostics()
            .get(coilwork_core::diagnostics::DiagnosticCounter::BusMessage),
        0
    );
    assert_eq!(s(&[0x0B]).unwrap(), [0x0B, 0x00, 0x00, 0x00, 0x00]);
    assert_eq!(
        s(&[0x08, 0x00, 0x0F, 0x00, 0x00]).unwrap(),
        [0x08, 0x00, 0x0F, 0x00, 0x00]
    );
}

#[test]
fn no_response_counted_before_restart_clears() {
    let (e, _) = single(Mem::new());
    let s = |pdu: &[u8]| run(&e, Transport::Serial, 1, pdu);
    s(&[0x08, 0x00, 0x04, 0x00, 0x00]);
    s(&[0x03, 0x00, 0x00, 0x00, 0x01]);
    let d = e.context().device(1).unwrap();
    assert_eq!(
        d.diagnostics()
            .get(coilwork_core::diagnostics::DiagnosticCounter::ServerNoResponse),
        2
    );
    // Force listen-only completed: comm event counter 1.
    assert_eq!(d.diagnostics().event_count(), 1);
}

// ---------------------------------------------------------------- custom functions, hooks, listener

struct Reverse;
impl CustomFunction for Reverse {
    fn function_code(&self) -> u8 {
        0x41
    }
    fn execute(
        &self,
        ctx: &RequestContext<'_>,
        storage: &dyn Storage,
        data: &[u8],
        response: &mut PduBuf,
    ) -> Result<(), ExceptionCode> {
        assert_eq!(ctx.function, 0x41);
        if data.is_empty() {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let mut r = [0u16; 1];
        storage.read_holding_registers(ctx, 0, &mut r)?;
        response.push(0x41).unwrap();
        response.push_u16(r[0]).unwrap();
        for b in data.iter().rev() {
            response.push(*b).unwrap();
        }
        Ok(())
    }
}

#[test]
fn custom_function_registered_and_unregistered() {
    let mem = Arc::new(Mem::new());
    mem.holding.lock().unwrap()[0] = 0xBEEF;
    let e = Engine::builder(ServerContext::multi().with_device(1, mem))
        .custom_function(Arc::new(Reverse))
        .unwrap()
        .build();
    assert_eq!(tcp(&e, &[0x41, 1, 2, 3]), [0x41, 0xBE, 0xEF, 3, 2, 1]);
    assert_eq!(tcp(&e, &[0x41]), [0xC1, 0x03]);
    assert_eq!(tcp(&e, &[0x42, 1]), [0xC2, 0x01]);
    assert!(
        Engine::builder(ServerContext::multi())
            .custom_function(Arc::new(Reverse))
            .unwrap()
            .custom_function(Arc::new(Reverse))
            .is_err()
    );
}

/// Hook: unit 1 reads shifted by one register; FC7 answered by the hook;
/// FC6 to register 99 swallowed; FC4 refused with 0x01; FC5 answers dropped.
struct TestHook;
impl RequestHook for TestHook {
    fn on_request(&self, ctx: &RequestContext<'_>, request: &mut Request<'_>, response: &mut PduBuf) -> HookAction {
        match *request {
            Request::ReadHoldingRegisters(range) => {
                assert_eq!(ctx.function, 0x03);
                *request = Request::ReadHoldingRegisters(
                    coilwork_core::AddressRange::new(range.start() + 1, range.count()).unwrap(),
                );
                HookAction::Continue
            }
            Request::ReadExceptionStatus => {
                response.set(&[0x07, 0x99]).unwrap();
                HookAction::Respond
            }
            Request::WriteSingleRegister { address: 99, .. } => HookAction::NoResponse,
            Request::ReadInputRegisters(_) => HookAction::Exception(ExceptionCode::IllegalFunction),
            _ => HookAction::Continue,
        }
    }
    fn on_response(&self, _ctx: &RequestContext<'_>, request: &Request<'_>, response: &mut PduBuf) -> HookAction {
        match request {
            Request::WriteSingleCoil { .. } => HookAction::NoResponse,
            Request::ReadCoils(_) => {
                response.set(&[0x01, 0x01, 0x55]).unwrap();
                HookAction::Respond
            }
            _ => HookAction::Continue,
        }
    }
}

#[test]
fn hook_changes_answers_and_swallows() {
    let mem = Arc::new(Mem::new());
    mem.holding.lock().unwrap()[0..3].copy_from_slice(&[1, 2, 3]);
    let e = Engine::builder(ServerContext::multi().with_device(1, mem.clone()))
        .hook(Arc::new(TestHook))
        .build();
    assert_eq!(
        tcp(&e, &[0x03, 0x00, 0x00, 0x00, 0x02]),
        [0x03, 0x04, 0x00, 0x02, 0x00, 0x03]
    );
    assert_eq!(tcp(&e, &[0x07]), [0x07, 0x99]);
    assert_eq!(run(&e, Transport::Tcp, 1, &[0x06, 0x00, 0x63, 0x00, 0x01]), None);
    assert_eq!(mem.holding.lock().unwrap()[99], 0);
    assert_eq!(tcp(&e, &[0x04, 0x00, 0x00, 0x00, 0x01]), [0x84, 0x01]);
    // on_response: drop (the write still happened) and rewrite.
    assert_eq!(run(&e, Transport::Tcp, 1, &[0x05, 0x00, 0x01, 0xFF, 0x00]), None);
    assert!(mem.coils.lock().unwrap()[1]);
    assert_eq!(tcp(&e, &[0x01, 0x00, 0x00, 0x00, 0x08]), [0x01, 0x01, 0x55]);
    // FC7 never reached storage.
    assert!(!mem.seen_functions.lock().unwrap().contains(&0x07));
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(u8, Table, u16, u16)>>, Mutex<Vec<(u16, u16, u16)>>);
impl WriteListener for Recorder {
    fn on_write(&self, ctx: &RequestContext<'_>, table: Table, start: u16, count: u16) {
        self.0.lock().unwrap().push((ctx.function, table, start, count));
    }
    fn on_file_write(&self, _ctx: &RequestContext<'_>, file: u16, record: u16, count: u16) {
        self.1.lock().unwrap().push((file, record, count));
    }
}

#[test]
fn write_listener_sees_every_successful_write() {
    let rec = Arc::new(Recorder::default());
    let e = Engine::builder(ServerContext::multi().with_device(1, Mem::new()))
        .write_listener(rec.clone())
        .build();
    tcp(&e, &[0x05, 0x00, 0x03, 0xFF, 0x00]);
    tcp(&e, &[0x06, 0x00, 0x04, 0x00, 0x01]);
    tcp(&e, &[0x0F, 0x00, 0x05, 0x00, 0x0A, 0x02, 0xFF, 0x03]);
    tcp(&e, &[0x10, 0x00, 0x06, 0x00, 0x02, 0x04, 0, 1, 0, 2]);
    tcp(&e, &[0x16, 0x00, 0x07, 0x00, 0xF2, 0x00, 0x25]);
    tcp(
        &e,
        &[0x17, 0x00, 0x00, 0x00, 0x01, 0x00, 0x08, 0x00, 0x02, 0x04, 0, 1, 0, 2],
    );
    tcp(&e, &[0x03, 0x00, 0x00, 0x00, 0x01]); // a read: not told
    tcp(&e, &[0x06, 0xFF, 0x00, 0x00, 0x01]); // failed write: not told
    tcp(&e, &[0x15, 0x09, 0x06, 0x00, 0x02, 0x00, 0x05, 0x00, 0x01, 0x12, 0x34]);
    assert_eq!(
        *rec.0.lock().unwrap(),
        [
            (0x05, Table::Coils, 3, 1),
            (0x06, Table::HoldingRegisters, 4, 1),
            (0x0F, Table::Coils, 5, 10),
            (0x10, Table::HoldingRegisters, 6, 2),
            (0x16, Table::HoldingRegisters, 7, 1),
            (0x17, Table::HoldingRegisters, 8, 2),
        ]
    );
    assert_eq!(*rec.1.lock().unwrap(), [(2, 5, 1)]);
}

#[test]
fn frame_errors_are_counted_on_the_bus() {
    let (e, _) = single(Mem::new());
    use coilwork_core::diagnostics::DiagnosticCounter::*;
    e.note_frame_error(&FrameError::BadLrc {
        expected: 1,
        computed: 2,
    });
    e.note_frame_error(&FrameError::BadHex);
    e.note_frame_error(&FrameError::Truncated(3));
    e.note_frame_error(&FrameError::Garbage(3));
    assert_eq!(e.bus_diagnostics().get(BusCommunicationError), 3);
    assert_eq!(e.bus_diagnostics().get(BusMessage), 3);
}

/// Rough FC3 timing (decode + execute + encode of 10 registers on a built-in
/// device). Run with `cargo test --release -p coilwork-core --test engine -- --ignored --nocapture`.
#[test]
#[ignore]
fn fc3_rough_timing() {
    let device = DeviceContext::with_sizes(10, 10, 100, 10).unwrap();
    let e = Engine::builder(ServerContext::single(device)).build();
    let c = ctx(Transport::Tcp, 1);
    let pdu = [0x03, 0x00, 0x00, 0x00, 0x0A];
    let mut out = PduBuf::new();
    let n = 2_000_000u32;
    let t = std::time::Instant::now();
    for _ in 0..n {
        let o = e.handle(std::hint::black_box(&c), std::hint::black_box(&pdu), &mut out);
        assert!(o.respond);
    }
    let per = t.elapsed() / n;
    println!("FC3 x10: {per:?} per request");
    assert_eq!(out.len(), 22);
}

#[test]
fn through_a_tcp_connection() {
    use coilwork_core::{Connection, ConnectionConfig};
    let mem = Mem::new();
    mem.holding.lock().unwrap()[107..110].copy_from_slice(&[0x022B, 0x0000, 0x0064]);
    let engine = Arc::new(Engine::builder(ServerContext::multi().with_device(1, mem)).build());
    let mut conn = Connection::new(engine, ConnectionConfig::tcp(None));
    let now = std::time::Instant::now();
    conn.handle_input(
        now,
        &[0x00, 0x01, 0x00, 0x00, 0x00, 0x06, 0x01, 0x03, 0x00, 0x6B, 0x00, 0x03],
    )
    .unwrap();
    assert_eq!(
        conn.output(),
        [
            0x00, 0x01, 0x00, 0x00, 0x00, 0x09, 0x01, 0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64
        ]
    );
}

/// A hook sees answers to requests that failed to decode too.
struct Rejects;

impl RequestHook for Rejects {
    fn on_rejected(
        &self,
        _ctx: &RequestContext<'_>,
        error: &coilwork_core::pdu::DecodeError,
        _response: &mut PduBuf,
    ) -> HookAction {
        match error.exception {
            // Quantity 0 on FC3: replace the spec's 03 with 04.
            ExceptionCode::IllegalDataValue if error.function == 0x03 => {
                HookAction::Exception(ExceptionCode::ServerDeviceFailure)
            }
            // Function code 0 (never valid) gets no answer at all.
            ExceptionCode::IllegalFunction => HookAction::NoResponse,
            _ => HookAction::Continue,
        }
    }
}

#[test]
fn hook_sees_rejected_requests() {
    let engine = Engine::builder(ServerContext::single(
        DeviceContext::with_sizes(10, 10, 10, 10).unwrap(),
    ))
    .hook(Arc::new(Rejects))
    .build();
    assert_eq!(
        run(&engine, Transport::Tcp, 1, &[0x03, 0, 0, 0, 0]),
        Some(vec![0x83, 0x04])
    );
    assert_eq!(run(&engine, Transport::Tcp, 1, &[0x00, 1, 2]), None);
    // Other rejections pass through unchanged; good requests are untouched.
    assert_eq!(
        run(&engine, Transport::Tcp, 1, &[0x01, 0, 0, 0, 0]),
        Some(vec![0x81, 0x03])
    );
    assert_eq!(
        run(&engine, Transport::Tcp, 1, &[0x03, 0, 0, 0, 1]),
        Some(vec![0x03, 0x02, 0, 0])
    );
}

// ---------------------------------------------------------------- fast path equivalence

/// A hook that changes nothing: its engine takes the general path.
struct NoopHook;
impl RequestHook for NoopHook {}

/// An engine with neither hook nor authorizer takes a shorter path for
/// ordinary requests; it must answer and count exactly as the general path.
#[test]
fn plain_engine_counts_as_the_general_path() {
    let build = |hook: bool| {
        let block: Arc<dyn DataBlock> = Arc::new(SparseBlock::from_range(0, &[7u16; 50]));
        let device = DeviceContext::shared(block);
        let builder = Engine::builder(ServerContext::multi().with_device(1, device));
        if hook {
            builder.hook(Arc::new(NoopHook))
        } else {
            builder
        }
        .build()
    };
    let (plain, general) = (build(false), build(true));
    let requests: &[&[u8]] = &[
        &[0x03, 0x00, 0x00, 0x00, 0x0A],                               // read
        &[0x03, 0x00, 0x30, 0x00, 0x0A],                               // 02: past the block
        &[0x03, 0x00, 0x00, 0x00, 0x00],                               // 03: decode error
        &[0x04, 0x00, 0x02, 0x00, 0x03],                               // input registers
        &[0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x12, 0x34, 0x56, 0x78], // write
        &[0x10, 0x00, 0x31, 0x00, 0x01, 0x02, 0x00, 0x01],             // 02
        &[0x06, 0x00, 0x05, 0xAB, 0xCD],
        &[0x05, 0x00, 0x01, 0xFF, 0x00],
        &[0x01, 0x00, 0x00, 0x00, 0x10],
        &[0x16, 0x00, 0x01, 0x00, 0xF0, 0x00, 0x0F], // mask write
        &[0x17, 0x00, 0x00, 0x00, 0x02, 0x00, 0x03, 0x00, 0x01, 0x02, 0x00, 0x09],
        &[0x07],
        &[0x2B, 0x0E, 0x01, 0x00],
        &[0x55], // 01: unknown function
        &[0x03, 0x00, 0x00, 0x00, 0x02],
    ];
    let probes: &[&[u8]] = &[
        &[0x0B],                         // comm event counter
        &[0x0C],                         // event log
        &[0x08, 0x00, 0x0B, 0x00, 0x00], // bus message count
        &[0x08, 0x00, 0x0C, 0x00, 0x00], // bus communication errors
        &[0x08, 0x00, 0x0D, 0x00, 0x00], // exception count
        &[0x08, 0x00, 0x0E, 0x00, 0x00], // server message count
        &[0x08, 0x00, 0x0F, 0x00, 0x00], // no response count
    ];
    for round in 0..3 {
        for pdu in requests {
            assert_eq!(tcp(&plain, pdu), tcp(&general, pdu), "round {round}: {pdu:02X?}");
        }
        for pdu in probes {
            assert_eq!(tcp(&plain, pdu), tcp(&general, pdu), "round {round}: probe {pdu:02X?}");
        }
    }
    // The counts are real: 3 rounds of 15 requests and 7 probes.
    for engine in [&plain, &general] {
        let count = tcp(engine, &[0x08, 0x00, 0x0E, 0x00, 0x00]);
        assert_eq!(count, [0x08, 0x00, 0x0E, 0x00, 3 * 22 + 1]);
    }
    // Listen-only, then restart: both paths again.
    for engine in [&plain, &general] {
        assert_eq!(run(engine, Transport::Tcp, 1, &[0x08, 0x00, 0x04, 0x00, 0x00]), None);
        assert_eq!(run(engine, Transport::Tcp, 1, &[0x03, 0x00, 0x00, 0x00, 0x01]), None);
        assert!(run(engine, Transport::Tcp, 1, &[0x08, 0x00, 0x01, 0x00, 0x00]).is_none());
    }
    for pdu in requests.iter().chain(probes) {
        assert_eq!(tcp(&plain, pdu), tcp(&general, pdu), "after restart: {pdu:02X?}");
    }
}

// ---------------------------------------------------------------- observers and disengaged hooks

/// An observer that keeps what it is told, and the arrival times.
#[derive(Default)]
struct Seen(
    Mutex<Vec<coilwork_core::engine::Observation>>,
    Mutex<Vec<Option<std::time::Instant>>>,
);

impl coilwork_core::engine::RequestObserver for Seen {
    fn observe(&self, ctx: &RequestContext<'_>, seen: coilwork_core::engine::Observation) {
        assert_eq!((ctx.unit, ctx.function), (seen.unit, seen.function));
        self.0.lock().unwrap().push(seen);
        self.1.lock().unwrap().push(ctx.received);
    }
}

/// A hook that counts its calls and answers FC3 with exception 06 while engaged.
#[derive(Default)]
struct Switch {
    on: std::sync::atomic::AtomicBool,
    calls: std::sync::atomic::AtomicUsize,
}

impl RequestHook for Switch {
    fn engaged(&self) -> bool {
        self.on.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn on_request(&self, _ctx: &RequestContext<'_>, request: &mut Request<'_>, _out: &mut PduBuf) -> HookAction {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match request {
            Request::ReadHoldingRegisters(_) => HookAction::Exception(ExceptionCode::ServerDeviceBusy),
            _ => HookAction::Continue,
        }
    }
}

/// The observer is told about every request a device served, on the fast
/// path and the general one, with its range, kind and answer; a hook that
/// is not engaged is never called, and counts come out as with no hook.
#[test]
fn observer_sees_every_request_and_a_disengaged_hook_is_skipped() {
    use coilwork_core::AddressRange;
    use std::sync::atomic::Ordering;
    let seen = Arc::new(Seen::default());
    let switch = Arc::new(Switch::default());
    let engine =
        Engine::builder(ServerContext::multi().with_device(1, DeviceContext::with_sizes(10, 10, 10, 10).unwrap()))
            .observer(seen.clone())
            .hook(switch.clone())
            .build();
    let range = |start, count| AddressRange::new(start, count).unwrap();
    assert_eq!(
        tcp(&engine, &[0x03, 0x00, 0x02, 0x00, 0x03]),
        [0x03, 6, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        tcp(&engine, &[0x06, 0x00, 0x04, 0x12, 0x34]),
        [0x06, 0x00, 0x04, 0x12, 0x34]
    );
    assert_eq!(tcp(&engine, &[0x01, 0x00, 0x08, 0x00, 0x05]), [0x81, 0x02]);
    assert_eq!(tcp(&engine, &[0x03, 0x00, 0x00, 0x00, 0x00]), [0x83, 0x03]);
    assert_eq!(
        run(&engine, Transport::Tcp, 9, &[0x03, 0x00, 0x00, 0x00, 0x01]),
        Some(vec![0x83, 0x0B])
    );
    assert_eq!(switch.calls.load(Ordering::Relaxed), 0, "a disengaged hook is skipped");
    switch.on.store(true, Ordering::Relaxed);
    assert_eq!(tcp(&engine, &[0x03, 0x00, 0x02, 0x00, 0x03]), [0x83, 0x06]);
    assert_eq!(
        tcp(&engine, &[0x10, 0x00, 0x01, 0x00, 0x01, 0x02, 0xAB, 0xCD]),
        [0x10, 0x00, 0x01, 0x00, 0x01]
    );
    assert_eq!(switch.calls.load(Ordering::Relaxed), 2);
    let seen = seen.0.lock().unwrap();
    let got: Vec<_> = seen
        .iter()
        .map(|s| (s.function, s.data, s.write, s.respond, s.exception))
        .collect();
    assert_eq!(
        got,
        [
            (0x03, Some((Table::HoldingRegisters, range(2, 3))), false, true, None),
            (0x06, Some((Table::HoldingRegisters, range(4, 1))), true, true, None),
            (0x01, Some((Table::Coils, range(8, 5))), false, true, Some(0x02)),
            (0x03, None, false, true, Some(0x03)),
            (
                0x03,
                Some((Table::HoldingRegisters, range(2, 3))),
                false,
                true,
                Some(0x06)
            ),
            (0x10, Some((Table::HoldingRegisters, range(1, 1))), true, true, None),
        ],
        "unit 9 has no device: not observed"
    );
    assert!(seen.iter().all(|s| s.unit == 1));
    // The counts are those of an engine with no hook: 6 messages, 3 exceptions.
    drop(seen);
    assert_eq!(
        tcp(&engine, &[0x08, 0x00, 0x0E, 0x00, 0x00]),
        [0x08, 0x00, 0x0E, 0x00, 7]
    );
    assert_eq!(
        tcp(&engine, &[0x08, 0x00, 0x0D, 0x00, 0x00]),
        [0x08, 0x00, 0x0D, 0x00, 3]
    );
}

/// Through a connection the observer gets the input's arrival time.
#[test]
fn observer_gets_the_time_the_input_arrived() {
    let seen = Arc::new(Seen::default());
    let engine = Arc::new(
        Engine::builder(ServerContext::single(
            DeviceContext::with_sizes(10, 10, 10, 10).unwrap(),
        ))
        .observer(seen.clone())
        .build(),
    );
    let mut conn = coilwork_core::Connection::new(engine, coilwork_core::ConnectionConfig::tcp(None));
    let at = std::time::Instant::now() + std::time::Duration::from_secs(5);
    conn.handle_input(at, &[0, 1, 0, 0, 0, 6, 1, 0x03, 0, 0, 0, 2]).unwrap();
    assert_eq!(conn.output().len(), 13);
    assert_eq!(seen.0.lock().unwrap().len(), 1);
    assert_eq!(*seen.1.lock().unwrap(), [Some(at)]);
}

/// Records how it was told: each call's kind and the functions it carried.
#[derive(Default)]
struct Batches(Mutex<Vec<(&'static str, Vec<u8>)>>);

impl coilwork_core::engine::RequestObserver for Batches {
    fn observe(&self, ctx: &RequestContext<'_>, seen: coilwork_core::engine::Observation) {
        assert_eq!((ctx.unit, ctx.function), (seen.unit, seen.function));
        self.0.lock().unwrap().push(("one", vec![seen.function]));
    }
    fn observe_batch(&self, _ctx: &RequestContext<'_>, seen: &[coilwork_core::engine::Observation]) {
        self.0
            .lock()
            .unwrap()
            .push(("batch", seen.iter().map(|s| s.function).collect()));
    }
}

/// The requests of one input are handed over in one batch, in order (an
/// input of one request with `observe`, in its own context); with an
/// engaged hook each is told alone, after the batch before it.
#[test]
fn observer_gets_one_batch_per_input_and_hooked_requests_alone() {
    use std::sync::atomic::Ordering;
    let batches = Arc::new(Batches::default());
    let switch = Arc::new(Switch::default());
    let engine =
        Engine::builder(ServerContext::multi().with_device(1, DeviceContext::with_sizes(10, 10, 10, 10).unwrap()))
            .observer(batches.clone())
            .hook(switch.clone())
            .build();
    let mut conn = coilwork_core::Connection::new(Arc::new(engine), coilwork_core::ConnectionConfig::tcp(None));
    let read = [0, 1, 0, 0, 0, 6, 1, 0x03, 0, 0, 0, 2];
    let write = [0, 2, 0, 0, 0, 6, 1, 0x06, 0, 1, 0, 7];
    let elsewhere = [0, 3, 0, 0, 0, 6, 9, 0x04, 0, 0, 0, 1];
    let now = std::time::Instant::now();
    conn.handle_input(now, &[&read[..], &write[..], &read[..]].concat())
        .unwrap();
    conn.handle_input(now, &read).unwrap();
    // Unit 9 has no device: not observed, but the context is now its.
    conn.handle_input(now, &[&read[..], &elsewhere[..]].concat()).unwrap();
    switch.on.store(true, Ordering::Relaxed);
    conn.handle_input(now, &[&write[..], &read[..]].concat()).unwrap();
    // Half a frame: nothing answered, nothing told.
    conn.handle_input(now, &read[..5]).unwrap();
    let got = batches.0.lock().unwrap().clone();
    assert_eq!(
        got,
        [
            ("batch", vec![0x03, 0x06, 0x03]),
            ("one", vec![0x03]),
            ("batch", vec![0x03]),
            ("one", vec![0x06]),
            ("one", vec![0x03])
        ]
    );
}
