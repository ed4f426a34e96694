//! The real clients some tests drive (pymodbus, socat, mbpoll): where to
//! find them, and whether a missing one skips the test or fails it.
//!
//! `bash .ci/test` installs them, sets `COILWORK_PYTHON` to a python with
//! pymodbus and sets `COILWORK_REQUIRE_CLIENTS`: then a missing client is a
//! failure. Without that variable a missing client skips the test with a
//! message.

use std::path::PathBuf;

/// True if `COILWORK_REQUIRE_CLIENTS` is set: a missing client is then a failure.
pub fn required() -> bool {
    std::env::var_os("COILWORK_REQUIRE_CLIENTS").is_some()
}

/// `COILWORK_PYTHON` (a python with pymodbus), or `None` with a message.
///
/// # Panics
/// If it is missing while `COILWORK_REQUIRE_CLIENTS` is set (test code only).
pub fn python_or_skip() -> Option<PathBuf> {
    let py = std::env::var_os("COILWORK_PYTHON")
        .map(PathBuf::from)
        .filter(|p| p.exists());
    if py.is_none() {
        assert!(!required(), "COILWORK_PYTHON (a python with pymodbus) is required"); // ok: test code
        eprintln!("skipped: set COILWORK_PYTHON to a python with pymodbus 3.16 (bash .ci/test does)");
    }
    py
}
