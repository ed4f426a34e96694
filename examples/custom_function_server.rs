//! A server with a user-defined function code (pymodbus's "Server with
//! Custom Functions").
//!
//! Function 0x41 (65, in the user-defined range 65-72) sums a range of
//! holding registers:
//!
//! - request:  `41 | start (u16) | quantity (u16, 1..=125)`
//! - response: `41 | sum (u32)`
//!
//! A bad quantity is answered with exception 03, a range past the table
//! with exception 02 (from the storage). With pymodbus, a client sends it as
//! a custom `ModbusPDU` with `function_code = 0x41`.
//!
//! Run: `cargo run --example custom_function_server [ADDRESS]` (default
//! `127.0.0.1:5020`). Ctrl-C stops it.

use coilwork::core::engine::CustomFunction;
use coilwork::core::frame::PduLength;
use coilwork::core::pdu::PduBuf;
use coilwork::core::storage::{DeviceContext, SequentialBlock, ServerContext};
use coilwork::core::{Engine, ExceptionCode, RequestContext, Storage};
use coilwork::tokio::{TcpServer, TcpServerConfig};
use std::sync::Arc;

/// Function 0x41: the sum of `quantity` holding registers from `start`.
pub struct SumRegisters;

impl CustomFunction for SumRegisters {
    fn function_code(&self) -> u8 {
        0x41
    }

    /// Every request is 5 bytes (code, start, quantity). Telling the framer
    /// lets RTU over TCP cut the stream without scanning for a CRC.
    fn request_pdu_length(&self, _pdu: &[u8]) -> PduLength {
        PduLength::Exact(5)
    }

    fn execute(
        &self,
        ctx: &RequestContext<'_>,
        storage: &dyn Storage,
        data: &[u8],
        response: &mut PduBuf,
    ) -> Result<(), ExceptionCode> {
        let &[s0, s1, q0, q1] = data else {
            return Err(ExceptionCode::IllegalDataValue);
        };
        let start = u16::from_be_bytes([s0, s1]);
        let quantity = usize::from(u16::from_be_bytes([q0, q1]));
        // A stack buffer: nothing allocated per request.
        let mut values = [0u16; 125];
        let values = values
            .get_mut(..quantity)
            .filter(|v| !v.is_empty())
            .ok_or(ExceptionCode::IllegalDataValue)?;
        if usize::from(start) + quantity > 0x1_0000 {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        // The storage says whether the addresses exist (exception 02 if not).
        storage.read_holding_registers(ctx, start, values)?;
        let sum: u32 = values.iter().map(|&v| u32::from(v)).sum();
        response.clear();
        response.push(0x41).map_err(|_| ExceptionCode::ServerDeviceFailure)?;
        response
            .extend(&sum.to_be_bytes())
            .map_err(|_| ExceptionCode::ServerDeviceFailure)?;
        Ok(())
    }
}

/// The example's engine: 100 holding registers holding 0..100, and function 0x41.
pub fn engine() -> Result<Engine, Box<dyn std::error::Error>> {
    let store = Arc::new(SequentialBlock::new(0, (0..100).collect())?);
    let context = ServerContext::single(DeviceContext::shared(store));
    Ok(Engine::builder(context)
        .custom_function(Arc::new(SumRegisters))?
        .build())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:5020".to_owned());
    let server = TcpServer::new(Arc::new(engine()?), TcpServerConfig::new(address.parse()?));
    let bound = server.bind()?;
    println!("serving Modbus/TCP with function 0x41 (sum of registers) on {bound}; Ctrl-C to stop");

    let handle = server.handle();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        handle.stop();
    });
    server.serve_forever().await?;
    println!("stopped");
    Ok(())
}
