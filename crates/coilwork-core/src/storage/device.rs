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
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let holding: Arc<dyn DataBlock> = Arc::new(SequentialBlock::new(0, vec![10, 11, 12])?);
/// let empty: Arc<dyn DataBlock> = Arc::new(SequentialBlock::zeroed(0, 0)?);
/// let device = DeviceContext::new(empty.clone(), empty.clone(), holding, empty);
/// let mut out = [0u16; 2];
/// // A request for protocol address 0 reads block address 0.
/// device.get_registers(Table::HoldingRegisters, 0, &mut out)?;
/// assert_eq!(out, [10, 11]);
/// # Ok(())
/// # }
/// ```
///
/// One-based, with the same block:
///
/// ```
/// use std::sync::Arc;
/// use coilwork_core::{ExceptionCode, Table};
/// use coilwork_core::storage::{AddressMode, DataBlock, DeviceContext, SequentialBlock};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let holding: Arc<dyn DataBlock> = Arc::new(SequentialBlock::new(0, vec![10, 11, 12])?);
/// let empty: Arc<dyn DataBlock> = Arc::new(SequentialBlock::zeroed(0, 0)?);
/// let device = DeviceContext::new(empty.clone(), empty.clone(), holding, empty)
///     .with_address_mode(AddressMode::OneBased);
/// let mut out = [0u16; 2];
/// // A request for protocol address 0 reads block addresses 1 and 2.
/// device.get_registers(Table::HoldingRegisters, 0, &mut out)?;
/// assert_eq!(out, [11, 12]);
/// // Block address 0 cannot be reached from the wire; protocol address 2
/// // would need block address 3, which the block does not hold.
/// assert_eq!(
///     device.get_registers(Table::HoldingRegisters, 2, &mut out[..1]),
///     Err(ExceptionCode::IllegalDataAddress),
/// );
/// # Ok(())
/// # }
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
    #[inline]
    fn read_holding_registers_be(
        &self,
        _ctx: &RequestContext<'_>,
        start: u16,
        out: &mut [u8],
    ) -> Result<(), ExceptionCode> {
        self.holding_registers.read_registers_be(self.map(start)?, out)
    }
    #[inline]
    fn read_input_registers_be(
        &self,
        _ctx: &RequestContext<'_>,
        start: u16,
        out: &mut [u8],
    ) -> Result<(), ExceptionCode> {
        self.input_registers.read_registers_be(self.map(start)?, out)
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
    #[inline]
    fn write_holding_registers_be(
        &self,
        _ctx: &RequestContext<'_>,
        start: u16,
        bytes: &[u8],
    ) -> Result<(), ExceptionCode> {
        self.holding_registers.write_registers_be(self.map(start)?, bytes)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SparseBlock;

    const E02: Result<(), ExceptionCode> = Err(ExceptionCode::IllegalDataAddress);
    const CTX: RequestContext<'static> = RequestContext::application(1);

    fn block(start: u16, values: &[u16]) -> Arc<dyn DataBlock> {
        Arc::new(SequentialBlock::new(start, values.to_vec()).unwrap())
    }

    fn holding(values: &[u16]) -> DeviceContext {
        let empty = block(0, &[]);
        DeviceContext::new(empty.clone(), empty.clone(), block(0, values), empty)
    }

    #[test]
    fn with_sizes_builds_zeroed_tables() {
        let d = DeviceContext::with_sizes(16, 8, 10, 4).unwrap();
        let mut regs = [1u16; 10];
        d.read_holding_registers(&CTX, 0, &mut regs).unwrap();
        assert_eq!(regs, [0; 10]);
        assert_eq!(d.read_holding_registers(&CTX, 1, &mut regs), E02);
        let mut bits = [true; 16];
        d.read_coils(&CTX, 0, &mut bits).unwrap();
        assert_eq!(bits, [false; 16]);
        assert_eq!(d.read_discrete_inputs(&CTX, 0, &mut bits), E02);
        d.read_discrete_inputs(&CTX, 0, &mut bits[..8]).unwrap();
        assert_eq!(d.read_input_registers(&CTX, 0, &mut regs[..5]), E02);
        d.read_input_registers(&CTX, 0, &mut regs[..4]).unwrap();
        assert_eq!(
            DeviceContext::with_sizes(65537, 0, 0, 0).err(),
            Some(ConfigError::BlockTooLarge)
        );
        assert!(DeviceContext::with_sizes(0, 0, 65536, 0).is_ok());
    }

    #[test]
    fn tables_are_separate() {
        let d = DeviceContext::with_sizes(4, 4, 4, 4).unwrap();
        d.write_coils(&CTX, 1, &[true, true]).unwrap();
        d.write_holding_registers(&CTX, 0, &[0x1234]).unwrap();
        d.set_registers(Table::InputRegisters, 3, &[0xBEEF]).unwrap();
        d.set_bits(Table::DiscreteInputs, 0, &[true]).unwrap();
        let mut bits = [false; 4];
        d.read_coils(&CTX, 0, &mut bits).unwrap();
        assert_eq!(bits, [false, true, true, false]);
        d.read_discrete_inputs(&CTX, 0, &mut bits).unwrap();
        assert_eq!(bits, [true, false, false, false]);
        let mut regs = [0u16; 4];
        d.read_holding_registers(&CTX, 0, &mut regs).unwrap();
        assert_eq!(regs, [0x1234, 0, 0, 0]);
        d.read_input_registers(&CTX, 0, &mut regs).unwrap();
        assert_eq!(regs, [0, 0, 0, 0xBEEF]);
        d.get_registers(Table::Coils, 0, &mut regs).unwrap();
        assert_eq!(regs, [0, 1, 1, 0]);
        d.get_bits(Table::InputRegisters, 2, &mut bits[..2]).unwrap();
        assert_eq!(bits[..2], [false, true]);
    }

    #[test]
    fn shared_block_is_seen_by_every_table() {
        let d = DeviceContext::shared(block(0, &[0; 8]));
        d.write_coils(&CTX, 2, &[true, true]).unwrap();
        let mut regs = [9u16; 5];
        d.read_holding_registers(&CTX, 0, &mut regs).unwrap();
        assert_eq!(regs, [0, 0, 1, 1, 0]);
        d.write_holding_registers(&CTX, 4, &[0x8000]).unwrap();
        let mut bits = [false; 3];
        d.read_discrete_inputs(&CTX, 3, &mut bits).unwrap();
        assert_eq!(bits, [true, true, false]);
        d.read_input_registers(&CTX, 4, &mut regs[..1]).unwrap();
        assert_eq!(regs[0], 0x8000);
    }

    #[test]
    fn zero_based_addresses() {
        // Block at 0 holding 100, 101, 102, 103.
        let d = holding(&[100, 101, 102, 103]);
        assert_eq!(d.address_mode(), AddressMode::ZeroBased);
        let mut out = [0u16; 2];
        d.read_holding_registers(&CTX, 0, &mut out).unwrap();
        assert_eq!(out, [100, 101]);
        d.read_holding_registers(&CTX, 2, &mut out).unwrap();
        assert_eq!(out, [102, 103]);
        assert_eq!(d.read_holding_registers(&CTX, 3, &mut out), E02);
        d.write_holding_registers(&CTX, 3, &[7]).unwrap();
        assert_eq!(d.read_holding_registers(&CTX, 3, &mut out[..1]), Ok(()));
        assert_eq!(out[0], 7);
    }

    #[test]
    fn one_based_addresses() {
        // Same block: protocol address a reads block address a + 1.
        let d = holding(&[100, 101, 102, 103]).with_address_mode(AddressMode::OneBased);
        assert_eq!(d.address_mode(), AddressMode::OneBased);
        let mut out = [0u16; 2];
        d.read_holding_registers(&CTX, 0, &mut out).unwrap();
        assert_eq!(out, [101, 102]);
        d.read_holding_registers(&CTX, 1, &mut out).unwrap();
        assert_eq!(out, [102, 103]);
        // Protocol 2..=3 would be block 3..=4: 4 is outside.
        assert_eq!(d.read_holding_registers(&CTX, 2, &mut out), E02);
        d.write_holding_registers(&CTX, 2, &[7]).unwrap();
        let mut all = [0u16; 4];
        d.holding_registers.read_registers(0, &mut all).unwrap();
        assert_eq!(all, [100, 101, 102, 7]);
        // FC22 and FC23 are mapped too.
        assert_eq!(
            d.mask_write_register(&CTX, 0, 0x00F0, 0x0025),
            Ok((101 & 0xF0) | (0x25 & !0xF0))
        );
        d.write_read_holding_registers(&CTX, 1, &[55], 0, &mut out).unwrap();
        assert_eq!(out, [0x65, 55]);
    }

    #[test]
    fn one_based_top_address_is_02() {
        let d = DeviceContext::with_sizes(0, 0, 65536, 0)
            .unwrap()
            .with_address_mode(AddressMode::OneBased);
        let mut out = [0u16; 1];
        d.read_holding_registers(&CTX, 0xFFFE, &mut out).unwrap();
        assert_eq!(d.read_holding_registers(&CTX, 0xFFFF, &mut out), E02);
        assert_eq!(d.write_holding_registers(&CTX, 0xFFFF, &[1]), E02);
        assert_eq!(
            d.mask_write_register(&CTX, 0xFFFF, 0, 0),
            Err(ExceptionCode::IllegalDataAddress)
        );
        // In zero-based mode the same address is fine.
        let z = DeviceContext::with_sizes(0, 0, 65536, 0).unwrap();
        z.read_holding_registers(&CTX, 0xFFFF, &mut out).unwrap();
        assert_eq!(AddressMode::OneBased.to_block(0xFFFF), None);
        assert_eq!(AddressMode::OneBased.to_block(9), Some(10));
        assert_eq!(AddressMode::ZeroBased.to_block(0xFFFF), Some(0xFFFF));
    }

    #[test]
    fn sparse_tables_answer_02_for_gaps() {
        let sparse: Arc<dyn DataBlock> = Arc::new(SparseBlock::new([(0, 1), (1, 2), (5, 6)]));
        let empty = block(0, &[]);
        let d = DeviceContext::new(empty.clone(), empty.clone(), sparse, empty);
        let mut out = [0u16; 2];
        d.read_holding_registers(&CTX, 0, &mut out).unwrap();
        assert_eq!(out, [1, 2]);
        assert_eq!(d.read_holding_registers(&CTX, 1, &mut out), E02);
        assert_eq!(d.write_holding_registers(&CTX, 1, &[8, 9]), E02);
        assert_eq!(
            d.mask_write_register(&CTX, 2, 0, 0),
            Err(ExceptionCode::IllegalDataAddress)
        );
        d.read_holding_registers(&CTX, 0, &mut out).unwrap();
        assert_eq!(out, [1, 2]);
    }

    #[test]
    fn mask_write_matches_spec_example() {
        // Spec 6.16: current 0x12, AND 0xF2, OR 0x25 → 0x17.
        let d = holding(&[0, 0, 0, 0, 0x12]);
        assert_eq!(d.mask_write_register(&CTX, 4, 0x00F2, 0x0025), Ok(0x0017));
        let mut out = [0u16; 1];
        d.read_holding_registers(&CTX, 4, &mut out).unwrap();
        assert_eq!(out, [0x0017]);
        assert_eq!(
            d.mask_write_register(&CTX, 5, 0, 0),
            Err(ExceptionCode::IllegalDataAddress)
        );
    }

    #[test]
    fn write_read_is_all_or_nothing() {
        let d = holding(&[1, 2, 3, 4]);
        let mut out = [0u16; 2];
        d.write_read_holding_registers(&CTX, 0, &[10, 20], 1, &mut out).unwrap();
        assert_eq!(out, [20, 3]);
        assert_eq!(d.write_read_holding_registers(&CTX, 0, &[0, 0], 3, &mut out), E02);
        assert_eq!(d.write_read_holding_registers(&CTX, 3, &[0, 0], 0, &mut out), E02);
        let mut all = [0u16; 4];
        d.read_holding_registers(&CTX, 0, &mut all).unwrap();
        assert_eq!(all, [10, 20, 3, 4]);
    }

    #[test]
    fn failed_writes_change_nothing() {
        let d = DeviceContext::with_sizes(8, 0, 8, 0).unwrap();
        assert_eq!(d.write_coils(&CTX, 6, &[true, true, true]), E02);
        assert_eq!(d.write_holding_registers(&CTX, 7, &[1, 2]), E02);
        let mut bits = [true; 8];
        d.read_coils(&CTX, 0, &mut bits).unwrap();
        assert_eq!(bits, [false; 8]);
        let mut regs = [1u16; 8];
        d.read_holding_registers(&CTX, 0, &mut regs).unwrap();
        assert_eq!(regs, [0; 8]);
    }

    #[test]
    fn reset_restores_all_tables_and_files() {
        let files = FileStore::new().with_file(4, vec![0x0DFE, 0x0020]).unwrap();
        let shared = block(0, &[5, 6]);
        let d = DeviceContext::new(shared.clone(), block(0, &[1]), shared, block(0, &[2])).with_files(files);
        d.write_holding_registers(&CTX, 0, &[0, 0]).unwrap();
        d.set_bits(Table::DiscreteInputs, 0, &[false]).unwrap();
        d.set_registers(Table::InputRegisters, 0, &[0]).unwrap();
        d.write_file_record(&CTX, 4, 1, &[0xFFFF]).unwrap();
        d.reset();
        let mut out = [0u16; 2];
        d.read_holding_registers(&CTX, 0, &mut out).unwrap();
        assert_eq!(out, [5, 6]);
        d.get_registers(Table::DiscreteInputs, 0, &mut out[..1]).unwrap();
        assert_eq!(out[0], 1);
        d.read_input_registers(&CTX, 0, &mut out[..1]).unwrap();
        assert_eq!(out[0], 2);
        d.read_file_record(&CTX, 4, 0, &mut out).unwrap();
        assert_eq!(out, [0x0DFE, 0x0020]);
    }

    #[test]
    fn file_store_limits() {
        let store = FileStore::new();
        assert_eq!(store.add_file(0, vec![1]), Err(ConfigError::BadFile(0)));
        assert_eq!(store.add_file(3, vec![0; 10_001]), Err(ConfigError::BadFile(3)));
        assert_eq!(store.add_file(0xFFFF, vec![0; 10_000]), Ok(()));
        assert_eq!(store.add_file(1, vec![]), Ok(()));
        assert_eq!(store.file_len(0xFFFF), Some(10_000));
        assert_eq!(store.file_len(3), None);
        let mut out = [0u16; 2];
        store.read(0xFFFF, 9998, &mut out).unwrap();
        assert_eq!(store.read(0xFFFF, 9999, &mut out), E02);
        assert_eq!(store.read(1, 0, &mut out[..1]), E02);
        assert_eq!(store.write(0xFFFF, 0xFFFF, &[1]), E02);
        // Replacing a file.
        store.add_file(1, vec![7]).unwrap();
        store.read(1, 0, &mut out[..1]).unwrap();
        assert_eq!(out[0], 7);
    }

    #[test]
    fn file_records_through_storage() {
        // Spec 6.14 example: file 4, records 1..=2 hold 0x0DFE 0x0020; file 3, records 9..=10 hold 0x33CD 0x0040.
        let mut f4 = vec![0u16; 10];
        f4[1] = 0x0DFE;
        f4[2] = 0x0020;
        let mut f3 = vec![0u16; 11];
        f3[9] = 0x33CD;
        f3[10] = 0x0040;
        let files = FileStore::new().with_file(4, f4).unwrap().with_file(3, f3).unwrap();
        let d = DeviceContext::with_sizes(0, 0, 0, 0).unwrap().with_files(files);
        assert!(d.files().is_some());
        let mut out = [0u16; 2];
        d.read_file_record(&CTX, 4, 1, &mut out).unwrap();
        assert_eq!(out, [0x0DFE, 0x0020]);
        d.read_file_record(&CTX, 3, 9, &mut out).unwrap();
        assert_eq!(out, [0x33CD, 0x0040]);
        // Unknown file, and record + length past the end.
        assert_eq!(d.read_file_record(&CTX, 5, 0, &mut out), E02);
        assert_eq!(d.read_file_record(&CTX, 3, 10, &mut out), E02);
        // A write past the end changes nothing.
        assert_eq!(d.write_file_record(&CTX, 4, 9, &[1, 2]), E02);
        d.read_file_record(&CTX, 4, 8, &mut out).unwrap();
        assert_eq!(out, [0, 0]);
        // Spec 6.15 example: write 0x06AF 0x04BE 0x100D to file 4 record 7.
        d.write_file_record(&CTX, 4, 7, &[0x06AF, 0x04BE, 0x100D]).unwrap();
        let mut three = [0u16; 3];
        d.read_file_record(&CTX, 4, 7, &mut three).unwrap();
        assert_eq!(three, [0x06AF, 0x04BE, 0x100D]);
        // No store at all.
        let bare = DeviceContext::with_sizes(0, 0, 0, 0).unwrap();
        assert!(bare.files().is_none());
        assert_eq!(bare.read_file_record(&CTX, 4, 1, &mut out), E02);
        assert_eq!(bare.write_file_record(&CTX, 4, 1, &out), E02);
    }

    #[test]
    fn block_accessor_returns_the_tables() {
        let hr = block(0, &[1]);
        let empty = block(0, &[]);
        let d = DeviceContext::new(empty.clone(), empty.clone(), hr.clone(), empty.clone());
        assert!(Arc::ptr_eq(d.block(Table::HoldingRegisters), &hr));
        assert!(Arc::ptr_eq(d.block(Table::Coils), &empty));
        assert!(format!("{d:?}").contains("ZeroBased"));
    }

    #[test]
    fn concurrent_device_writes_are_whole() {
        let d = Arc::new(DeviceContext::with_sizes(0, 0, 10, 0).unwrap());
        let mut handles = Vec::new();
        for t in 0..4u16 {
            let d = d.clone();
            handles.push(std::thread::spawn(move || {
                for i in 0..1000u16 {
                    d.write_holding_registers(&CTX, 0, &[t * 1000 + i + 1; 10]).unwrap();
                }
            }));
        }
        for _ in 0..4 {
            let d = d.clone();
            handles.push(std::thread::spawn(move || {
                let mut out = [0u16; 10];
                for _ in 0..1000 {
                    d.read_holding_registers(&CTX, 0, &mut out).unwrap();
                    assert!(out.iter().all(|&v| v == out[0]), "torn read {out:?}");
                }
            }));
        }
        for h in handles {
            h.join().unwrap();
        }
    }
}
