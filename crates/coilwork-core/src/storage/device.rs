//! A device: the four tables, with protocol-to-block address mapping.

use super::block::{DataBlock, SequentialBlock};
use super::{RequestContext, Storage, Table};
use crate::ExceptionCode;
use crate::error::ConfigError;
use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

/// Exception 02, the answer for any undefined address.
const BAD_ADDRESS: ExceptionCode = ExceptionCode::IllegalDataAddress;

/// How protocol addresses map onto block addresses.
///
/// The Modbus spec numbers data from 0 on the wire: "coil 1" in a data
/// sheet is protocol address 0. pymodbus's `zero_mode=False` (its historical
/// default) instead adds 1 to every protocol address before looking in the
/// block, so values meant for protocol address 0 must sit at block address 1.
/// Porting a pymodbus setup without matching the mode shifts every value by
/// one register.
///
/// Zero-based (the default), with a block starting at 0 holding `[10, 11, 12]`:
///
/// ```
/// use std::sync::Arc;
/// use coilwork_core::Table;
/// use coilwork_core::storage::{AddressMode, DataBlock, DeviceContext, SequentialBlock};
///
/// let holding: Arc<dyn DataBlock> = Arc::new(SequentialBlock::new(0, vec![10, 11, 12]).unwrap());
/// let empty: Arc<dyn DataBlock> = Arc::new(SequentialBlock::zeroed(0, 0).unwrap());
/// let device = DeviceContext::new(empty.clone(), empty.clone(), holding, empty);
/// let mut out = [0u16; 2];
/// // A request for protocol address 0 reads block address 0.
/// device.get_registers(Table::HoldingRegisters, 0, &mut out).unwrap();
/// assert_eq!(out, [10, 11]);
/// ```
///
/// One-based, with the same block:
///
/// ```
/// use std::sync::Arc;
/// use coilwork_core::{ExceptionCode, Table};
/// use coilwork_core::storage::{AddressMode, DataBlock, DeviceContext, SequentialBlock};
///
/// let holding: Arc<dyn DataBlock> = Arc::new(SequentialBlock::new(0, vec![10, 11, 12]).unwrap());
/// let empty: Arc<dyn DataBlock> = Arc::new(SequentialBlock::zeroed(0, 0).unwrap());
/// let device = DeviceContext::new(empty.clone(), empty.clone(), holding, empty)
///     .with_address_mode(AddressMode::OneBased);
/// let mut out = [0u16; 2];
/// // A request for protocol address 0 reads block addresses 1 and 2.
/// device.get_registers(Table::HoldingRegisters, 0, &mut out).unwrap();
/// assert_eq!(out, [11, 12]);
/// // Block address 0 cannot be reached from the wire; protocol address 2
/// // would need block address 3, which the block does not hold.
/// assert_eq!(
///     device.get_registers(Table::HoldingRegisters, 2, &mut out[..1]),
///     Err(ExceptionCode::IllegalDataAddress),
/// );
/// ```
///
/// In one-based mode protocol address 0xFFFF would be block address 0x10000,
/// which no block holds: it always answers exception 02.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AddressMode {
    /// Protocol address `a` is block address `a` (the Modbus spec; default).
    #[default]
    ZeroBased,
    /// Protocol address `a` is block address `a + 1` (pymodbus's
    /// `zero_mode=False`: a request for address 0 reads the block's address 1).
    OneBased,
}

impl AddressMode {
    /// The block address for protocol address `address`; `None` if there is none (one-based 0xFFFF).
    pub const fn to_block(self, address: u16) -> Option<u16> {
        match self {
            Self::ZeroBased => Some(address),
            Self::OneBased => address.checked_add(1),
        }
    }
}

/// One file: its records now and as built.
#[derive(Debug)]
struct File {
    initial: Box<[u16]>,
    records: Vec<u16>,
}

/// Most records a file may hold (record numbers 0..=9999, spec 6.14).
const MAX_RECORDS: usize = 10_000;

/// Files for FC20/FC21: file number (1..=0xFFFF) → records (at most 10000).
///
/// A request must stay inside one file's records: an unknown file, or a
/// record number plus length past the file's end, is exception 02.
#[derive(Debug, Default)]
pub struct FileStore {
    files: RwLock<BTreeMap<u16, File>>,
}

impl FileStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) file `number` holding `records`, which are also its reset values.
    pub fn add_file(&self, number: u16, records: Vec<u16>) -> Result<(), ConfigError> {
        if number == 0 || records.len() > MAX_RECORDS {
            return Err(ConfigError::BadFile(number));
        }
        let file = File {
            initial: records.clone().into_boxed_slice(),
            records,
        };
        self.files
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(number, file);
        Ok(())
    }

    /// Builder form of [`FileStore::add_file`].
    pub fn with_file(self, number: u16, records: Vec<u16>) -> Result<Self, ConfigError> {
        self.add_file(number, records)?;
        Ok(self)
    }

    /// Number of records in file `number`, if it exists.
    pub fn file_len(&self, number: u16) -> Option<usize> {
        let files = self.files.read().unwrap_or_else(PoisonError::into_inner);
        files.get(&number).map(|file| file.records.len())
    }

    /// Reads `out.len()` records of `file` from `record`; 02 if any is missing.
    pub fn read(&self, file: u16, record: u16, out: &mut [u16]) -> Result<(), ExceptionCode> {
        let files = self.files.read().unwrap_or_else(PoisonError::into_inner);
        let file = files.get(&file).ok_or(BAD_ADDRESS)?;
        let span = span(record, out.len())?;
        // ok: `span` has out.len() elements, so the lengths match.
        out.copy_from_slice(file.records.get(span).ok_or(BAD_ADDRESS)?);
        Ok(())
    }

    /// Writes `values` into `file` from `record`; 02 and nothing written if any is missing.
    pub fn write(&self, file: u16, record: u16, values: &[u16]) -> Result<(), ExceptionCode> {
        let mut files = self.files.write().unwrap_or_else(PoisonError::into_inner);
        let file = files.get_mut(&file).ok_or(BAD_ADDRESS)?;
        let span = span(record, values.len())?;
        // ok: `span` has values.len() elements, so the lengths match.
        file.records.get_mut(span).ok_or(BAD_ADDRESS)?.copy_from_slice(values);
        Ok(())
    }

    /// Restores every file's initial records.
    pub fn reset(&self) {
        let mut files = self.files.write().unwrap_or_else(PoisonError::into_inner);
        for file in files.values_mut() {
            file.records.clear();
            file.records.extend_from_slice(&file.initial);
        }
    }
}

/// Record indexes `record .. record + len`.
fn span(record: u16, len: usize) -> Result<core::ops::Range<usize>, ExceptionCode> {
    let start = usize::from(record);
    Ok(start..start.checked_add(len).ok_or(BAD_ADDRESS)?)
}

/// The four tables of one device, like pymodbus's `ModbusDeviceContext`.
///
/// Addresses given to its methods (and to [`Storage`]) are protocol
/// addresses, mapped onto block addresses by the [`AddressMode`].
pub struct DeviceContext {
    coils: Arc<dyn DataBlock>,
    discrete_inputs: Arc<dyn DataBlock>,
    holding_registers: Arc<dyn DataBlock>,
    input_registers: Arc<dyn DataBlock>,
    mode: AddressMode,
    files: Option<FileStore>,
}

impl core::fmt::Debug for DeviceContext {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DeviceContext")
            .field("mode", &self.mode)
            .field("files", &self.files.is_some())
            .finish_non_exhaustive()
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
        Self {
            coils,
            discrete_inputs,
            holding_registers,
            input_registers,
            mode: AddressMode::ZeroBased,
            files: None,
        }
    }

    /// A device whose four tables share one block (pymodbus's shared block).
    pub fn shared(block: Arc<dyn DataBlock>) -> Self {
        Self::new(block.clone(), block.clone(), block.clone(), block)
    }

    /// A device whose four tables are zero-filled sequential blocks at address 0.
    pub fn with_sizes(coils: usize, discrete_inputs: usize, holding: usize, input: usize) -> Result<Self, ConfigError> {
        Ok(Self::new(
            Arc::new(SequentialBlock::zeroed(0, coils)?),
            Arc::new(SequentialBlock::zeroed(0, discrete_inputs)?),
            Arc::new(SequentialBlock::zeroed(0, holding)?),
            Arc::new(SequentialBlock::zeroed(0, input)?),
        ))
    }

    /// Sets the address mapping.
    pub fn with_address_mode(mut self, mode: AddressMode) -> Self {
        self.mode = mode;
        self
    }

    /// Serves FC20/FC21 from `files`.
    pub fn with_files(mut self, files: FileStore) -> Self {
        self.files = Some(files);
        self
    }

    /// The address mapping in use.
    pub fn address_mode(&self) -> AddressMode {
        self.mode
    }

    /// The files served by FC20/FC21, if any.
    pub fn files(&self) -> Option<&FileStore> {
        self.files.as_ref()
    }

    /// The block behind `table`.
    pub fn block(&self, table: Table) -> &Arc<dyn DataBlock> {
        match table {
            Table::Coils => &self.coils,
            Table::DiscreteInputs => &self.discrete_inputs,
            Table::HoldingRegisters => &self.holding_registers,
            Table::InputRegisters => &self.input_registers,
        }
    }

    /// The block address for a protocol address, or 02.
    fn map(&self, address: u16) -> Result<u16, ExceptionCode> {
        self.mode.to_block(address).ok_or(BAD_ADDRESS)
    }

    /// The application's read of any table at protocol addresses (pymodbus `getValues`).
    pub fn get_registers(&self, table: Table, address: u16, out: &mut [u16]) -> Result<(), ExceptionCode> {
        self.block(table).read_registers(self.map(address)?, out)
    }

    /// The application's write of any table, input tables included (pymodbus `setValues`).
    pub fn set_registers(&self, table: Table, address: u16, values: &[u16]) -> Result<(), ExceptionCode> {
        self.block(table).write_registers(self.map(address)?, values)
    }

    /// Bit read of any table at protocol addresses.
    pub fn get_bits(&self, table: Table, address: u16, out: &mut [bool]) -> Result<(), ExceptionCode> {
        self.block(table).read_bits(self.map(address)?, out)
    }

    /// Bit write of any table at protocol addresses.
    pub fn set_bits(&self, table: Table, address: u16, values: &[bool]) -> Result<(), ExceptionCode> {
        self.block(table).write_bits(self.map(address)?, values)
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
    fn mask_write_register(
        &self,
        _ctx: &RequestContext<'_>,
        address: u16,
        and_mask: u16,
        or_mask: u16,
    ) -> Result<u16, ExceptionCode> {
        self.holding_registers.update(self.map(address)?, &mut |current| {
            (current & and_mask) | (or_mask & !and_mask)
        })
    }
    fn write_read_holding_registers(
        &self,
        _ctx: &RequestContext<'_>,
        write_start: u16,
        values: &[u16],
        read_start: u16,
        out: &mut [u16],
    ) -> Result<(), ExceptionCode> {
        self.holding_registers
            .write_read(self.map(write_start)?, values, self.map(read_start)?, out)
    }
    fn read_file_record(
        &self,
        _ctx: &RequestContext<'_>,
        file: u16,
        record: u16,
        out: &mut [u16],
    ) -> Result<(), ExceptionCode> {
        self.files.as_ref().ok_or(BAD_ADDRESS)?.read(file, record, out)
    }
    fn write_file_record(
        &self,
        _ctx: &RequestContext<'_>,
        file: u16,
        record: u16,
        values: &[u16],
    ) -> Result<(), ExceptionCode> {
        self.files.as_ref().ok_or(BAD_ADDRESS)?.write(file, record, values)
    }
    fn reset(&self) {
        // A block shared by several tables is reset more than once; that is harmless.
        self.coils.reset();
        self.discrete_inputs.reset();
        self.holding_registers.reset();
        self.input_registers.reset();
        if let Some(files) = &self.files {
            files.reset();
        }
    }
}
