//! Custom function codes: the registered [`crate::engine::CustomFunction`]
//! writes the whole answer; none registered is exception 01.

use crate::ExceptionCode;
use crate::engine::Engine;
use crate::pdu::PduBuf;
use crate::storage::{RequestContext, Storage};

impl Engine {
    /// A custom function: its handler's answer, or exception 01 without one.
    pub(super) fn custom(
        &self,
        ctx: &RequestContext<'_>,
        storage: &dyn Storage,
        function: u8,
        data: &[u8],
        out: &mut PduBuf,
    ) -> Result<(), ExceptionCode> {
        let handler = self.custom_function(function).ok_or(ExceptionCode::IllegalFunction)?;
        out.clear();
        handler.execute(ctx, storage, data, out)
    }
}
