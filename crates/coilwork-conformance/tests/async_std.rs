//! The conformance suite on the async_std adapter.

coilwork_conformance::conformance_suite!(coilwork_conformance::adapters::AsyncStd);
