//! The engine every case serves: one device answering every unit id; and
//! the plain engine the adapters' own tests serve.

use coilwork_core::storage::{DeviceContext, FileStore, SequentialBlock, ServerContext};
use coilwork_core::{Engine, EngineOptions, Identity};
use std::sync::Arc;

/// Entries per table.
pub const TABLE_LEN: usize = 2000;

/// The discrete inputs from 0xC4 of the spec's FC2 example (answer `AC DB 35`).
pub const DISCRETE_AT_C4: [u8; 3] = [0xAC, 0xDB, 0x35];

/// Input register `i` holds this (register 8 holds 0x000A, the spec's FC4 example).
pub fn input_register(i: u16) -> u16 {
    if i == 8 { 0x000A } else { 0x1000 | i }
}

/// A fresh engine: coils and holding registers zero; discrete inputs and
/// input registers preset (see [`DISCRETE_AT_C4`], [`input_register`]);
/// files 3 and 4 of 16 records (file 4 record 1..2 = `0DFE 0020`, file 3
/// record 9..10 = `33CD 0040`, the spec's FC20 example); identity
/// "Coilwork" / "CW" / "1.0", server id "CW"; broadcast on (serial unit 0).
pub fn engine() -> Arc<Engine> {
    let mut bits = vec![false; TABLE_LEN];
    for i in 0..22usize {
        bits[0xC4 + i] = DISCRETE_AT_C4[i / 8] >> (i % 8) & 1 == 1;
    }
    let inputs: Vec<u16> = (0..TABLE_LEN as u16).map(input_register).collect();
    let mut file3 = vec![0u16; 16];
    file3[9] = 0x33CD;
    file3[10] = 0x0040;
    let mut file4 = vec![0u16; 16];
    file4[1] = 0x0DFE;
    file4[2] = 0x0020;
    let files = FileStore::new()
        .with_file(3, file3)
        .and_then(|f| f.with_file(4, file4))
        .expect("files");
    let device = DeviceContext::new(
        Arc::new(SequentialBlock::zeroed(0, TABLE_LEN).expect("coils")),
        Arc::new(SequentialBlock::from_bits(0, &bits).expect("discrete inputs")),
        Arc::new(SequentialBlock::zeroed(0, TABLE_LEN).expect("holding")),
        Arc::new(SequentialBlock::new(0, inputs).expect("input registers")),
    )
    .with_files(files);
    let identity = Identity::new()
        .vendor_name("Coilwork")
        .product_code("CW")
        .major_minor_revision("1.0")
        .server_id(b"CW".to_vec())
        .expect("server id");
    Arc::new(
        Engine::builder(ServerContext::single(device))
            .identity(identity)
            .options(EngineOptions {
                broadcast_enable: true,
                ..EngineOptions::default()
            })
            .build(),
    )
}

/// A plain engine: one zeroed device of 1000 entries per table serving every
/// unit, nothing else (the adapters' and the gateway's own tests).
pub fn plain_engine() -> Arc<Engine> {
    let device = DeviceContext::with_sizes(1000, 1000, 1000, 1000).expect("device");
    Arc::new(Engine::builder(ServerContext::single(device)).build())
}
