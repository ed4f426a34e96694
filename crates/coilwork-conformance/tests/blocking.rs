//! The conformance suite on the blocking adapter.

coilwork_conformance::conformance_suite!(coilwork_conformance::adapters::Blocking);

// Not run here: `cases::idle_timeout_after_answers_waited_for_the_client`.
// The blocking server resets a connection whose answers wait for a client
// that does not read for longer than `idle_timeout` (the async driver keeps
// it and closes it only once it is quiet); the case runs on the three
// async harnesses until the blocking adapter does the same.
