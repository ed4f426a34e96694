//! The conformance suite on the blocking adapter.

coilwork_conformance::conformance_suite!(coilwork_conformance::adapters::Blocking);
