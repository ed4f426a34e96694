//! The conformance suite on the smol adapter.

coilwork_conformance::conformance_suite!(coilwork_conformance::adapters::Smol);

/// The async driver's case the blocking adapter does not pass yet (it closes
/// a connection whose answers wait for the client past `idle_timeout`), so
/// it is not in the suite's list.
#[test]
fn idle_timeout_after_answers_waited_for_the_client() {
    coilwork_conformance::cases::idle_timeout_after_answers_waited_for_the_client::<coilwork_conformance::adapters::Smol>(
    );
}
