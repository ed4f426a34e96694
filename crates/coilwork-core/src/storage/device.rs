//! A device: the four tables, with protocol-to-block address mapping.

use super::block::DataBlock;
use super::{RequestContext, Storage, Table};
use crate::ExceptionCode;
use std::sync::Arc;

/// How protocol addresses map onto block addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AddressMode {
    /// Protocol address `a` is block address `a` (the Modbus spec; default).
    #[default]
    ZeroBased,
    /// Protocol address `a` is block address `a + 1` (pymodbus's
    /// `zero_mode=False`: a request for address 0 reads the block's address 1).
    OneBased,
}

/// Files for FC20/FC21: file number (1..=0xFFFF) → records (at most 10000).
#[derive(Debug, Default)]
pub struct FileStore {
    _todo: (),
}

/// The four tables of one device, like pymodbus's `ModbusDeviceContext`.
pub struct DeviceContext {
    _todo: (),
}

impl core::fmt::Debug for DeviceContext {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DeviceContext").finish_non_exhaustive()
    }
}

impl DeviceContext {
    /// A device from four blocks (the same `Arc` may be passed several times to share it).
    pub fn new(
        coils: Arc<dyn DataBlock>,
        discrete_inputs: Arc<dyn DataBlock>,
        holding_registers: Arc<dyn DataBlock>,
        input_registers: Arc<dyn DataBlock>,
    ) -> Self {
        let _ = (coils, discrete_inputs, holding_registers, input_registers);
        Self { _todo: () }
    }

    /// A device whose four tables are zero-filled sequential blocks at address 0.
    pub fn with_sizes(
        coils: usize,
        discrete_inputs: usize,
        holding: usize,
        input: usize,
    ) -> Result<Self, crate::error::ConfigError> {
        let _ = (coils, discrete_inputs, holding, input);
        Err(crate::error::ConfigError::BlockTooLarge)
    }

    /// Sets the address mapping.
    pub fn with_address_mode(self, mode: AddressMode) -> Self {
        let _ = mode;
        self
    }

    /// Serves FC20/FC21 from `files`.
    pub fn with_files(self, files: FileStore) -> Self {
        let _ = files;
        self
    }

    /// The application's read of any table at protocol addresses (pymodbus `getValues`).
    pub fn get_registers(&self, table: Table, address: u16, out: &mut [u16]) -> Result<(), ExceptionCode> {
        let _ = (table, address, out);
        Err(ExceptionCode::IllegalDataAddress)
    }

    /// The application's write of any table, input tables included (pymodbus `setValues`).
    pub fn set_registers(&self, table: Table, address: u16, values: &[u16]) -> Result<(), ExceptionCode> {
        let _ = (table, address, values);
        Err(ExceptionCode::IllegalDataAddress)
    }

    /// Bit read of any table at protocol addresses.
    pub fn get_bits(&self, table: Table, address: u16, out: &mut [bool]) -> Result<(), ExceptionCode> {
        let _ = (table, address, out);
        Err(ExceptionCode::IllegalDataAddress)
    }

    /// Bit write of any table at protocol addresses.
    pub fn set_bits(&self, table: Table, address: u16, values: &[bool]) -> Result<(), ExceptionCode> {
        let _ = (table, address, values);
        Err(ExceptionCode::IllegalDataAddress)
    }
}

impl Storage for DeviceContext {
    fn read_coils(&self, _ctx: &RequestContext<'_>, start: u16, out: &mut [bool]) -> Result<(), ExceptionCode> {
        self.get_bits(Table::Coils, start, out)
    }
    fn read_discrete_inputs(
        &self,
        _ctx: &RequestContext<'_>,
        start: u16,
        out: &mut [bool],
    ) -> Result<(), ExceptionCode> {
        self.get_bits(Table::DiscreteInputs, start, out)
    }
    fn read_holding_registers(
        &self,
        _ctx: &RequestContext<'_>,
        start: u16,
        out: &mut [u16],
    ) -> Result<(), ExceptionCode> {
        self.get_registers(Table::HoldingRegisters, start, out)
    }
    fn read_input_registers(
        &self,
        _ctx: &RequestContext<'_>,
        start: u16,
        out: &mut [u16],
    ) -> Result<(), ExceptionCode> {
        self.get_registers(Table::InputRegisters, start, out)
    }
    fn write_coils(&self, _ctx: &RequestContext<'_>, start: u16, values: &[bool]) -> Result<(), ExceptionCode> {
        self.set_bits(Table::Coils, start, values)
    }
    fn write_holding_registers(
        &self,
        _ctx: &RequestContext<'_>,
        start: u16,
        values: &[u16],
    ) -> Result<(), ExceptionCode> {
        self.set_registers(Table::HoldingRegisters, start, values)
    }
}
