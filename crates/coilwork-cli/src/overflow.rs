//! `--overflow`: what `serve` and `gateway` do with a client past
//! `--max-connections` (the core's `Admission` decides; this is the flag).

use clap::ValueEnum;
use coilwork_core::Overflow;

/// What happens to a client past `--max-connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OverflowArg {
    /// Close the new connection at once.
    RefuseNew,
    /// Close the oldest open connection and serve the new one.
    EvictOldest,
}

impl From<OverflowArg> for Overflow {
    fn from(o: OverflowArg) -> Self {
        match o {
            OverflowArg::RefuseNew => Overflow::RefuseNew,
            OverflowArg::EvictOldest => Overflow::EvictOldest,
        }
    }
}
