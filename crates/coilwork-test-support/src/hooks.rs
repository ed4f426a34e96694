//! A hook that delivers FC3 answers as a [`Delivery`] says (fault
//! injection: delay, split) and an engine with it, for the conformance
//! suite's delivery cases and the adapters' own UDP and serial delivery tests.

use coilwork_core::engine::RequestHook;
use coilwork_core::pdu::Request;
use coilwork_core::storage::{DeviceContext, ServerContext};
use coilwork_core::{Delivery, Engine, RequestContext};
use std::sync::Arc;
use std::time::Duration;

/// A hook that asks FC3 answers to be delivered as `0` says (others at once).
pub struct Fc3Delivery(pub Delivery);

impl RequestHook for Fc3Delivery {
    fn delivery(&self, ctx: &RequestContext<'_>, _request: &Request<'_>, _response: &[u8]) -> Option<Delivery> {
        (ctx.function == 0x03).then_some(self.0)
    }
}

/// An engine of 1000 zeroed entries per table with an [`Fc3Delivery`] hook:
/// FC3 answers delayed by `delay`, then split after `split.0` bytes with a
/// pause of `split.1`.
pub fn delivery_engine(delay: Duration, split: Option<(u16, Duration)>) -> Arc<Engine> {
    let device = DeviceContext::with_sizes(1000, 1000, 1000, 1000).expect("device");
    let delivery = Delivery {
        delay,
        split,
        garble: false,
    };
    Arc::new(
        Engine::builder(ServerContext::single(device))
            .hook(Arc::new(Fc3Delivery(delivery)))
            .build(),
    )
}
