//! The conformance suite on the smol adapter.

coilwork_conformance::conformance_suite!(coilwork_conformance::adapters::Smol);
