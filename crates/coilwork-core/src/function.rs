//! Function codes of the Modbus Application Protocol v1.1b3.

/// A function code byte (1..=127; the high bit marks an exception response).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionCode(pub u8);

impl FunctionCode {
    /// 0x01 Read Coils.
    pub const READ_COILS: Self = Self(0x01);
    /// 0x02 Read Discrete Inputs.
    pub const READ_DISCRETE_INPUTS: Self = Self(0x02);
    /// 0x03 Read Holding Registers.
    pub const READ_HOLDING_REGISTERS: Self = Self(0x03);
    /// 0x04 Read Input Registers.
    pub const READ_INPUT_REGISTERS: Self = Self(0x04);
    /// 0x05 Write Single Coil.
    pub const WRITE_SINGLE_COIL: Self = Self(0x05);
    /// 0x06 Write Single Register.
    pub const WRITE_SINGLE_REGISTER: Self = Self(0x06);
    /// 0x07 Read Exception Status (serial line only in the spec).
    pub const READ_EXCEPTION_STATUS: Self = Self(0x07);
    /// 0x08 Diagnostics.
    pub const DIAGNOSTICS: Self = Self(0x08);
    /// 0x0B Get Comm Event Counter.
    pub const GET_COMM_EVENT_COUNTER: Self = Self(0x0B);
    /// 0x0C Get Comm Event Log.
    pub const GET_COMM_EVENT_LOG: Self = Self(0x0C);
    /// 0x0F Write Multiple Coils.
    pub const WRITE_MULTIPLE_COILS: Self = Self(0x0F);
    /// 0x10 Write Multiple Registers.
    pub const WRITE_MULTIPLE_REGISTERS: Self = Self(0x10);
    /// 0x11 Report Server ID.
    pub const REPORT_SERVER_ID: Self = Self(0x11);
    /// 0x14 Read File Record.
    pub const READ_FILE_RECORD: Self = Self(0x14);
    /// 0x15 Write File Record.
    pub const WRITE_FILE_RECORD: Self = Self(0x15);
    /// 0x16 Mask Write Register.
    pub const MASK_WRITE_REGISTER: Self = Self(0x16);
    /// 0x17 Read/Write Multiple Registers.
    pub const READ_WRITE_MULTIPLE_REGISTERS: Self = Self(0x17);
    /// 0x18 Read FIFO Queue.
    pub const READ_FIFO_QUEUE: Self = Self(0x18);
    /// 0x2B Encapsulated Interface Transport (MEI 0x0E: Read Device Identification).
    pub const ENCAPSULATED_INTERFACE: Self = Self(0x2B);

    /// True for the codes this crate implements itself (the public codes above).
    pub const fn is_standard(self) -> bool {
        matches!(
            self.0,
            0x01..=0x08 | 0x0B | 0x0C | 0x0F | 0x10 | 0x11 | 0x14..=0x18 | 0x2B
        )
    }

    /// True for the user-defined ranges 65..=72 and 100..=110.
    pub const fn is_user_defined(self) -> bool {
        matches!(self.0, 65..=72 | 100..=110)
    }
}

impl From<u8> for FunctionCode {
    fn from(v: u8) -> Self {
        Self(v)
    }
}
