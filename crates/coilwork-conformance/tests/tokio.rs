//! The conformance suite on the tokio adapter.

coilwork_conformance::conformance_suite!(coilwork_conformance::adapters::Tokio);
