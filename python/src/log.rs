//! Messages to Python's `logging`, under the logger `coilwork`.

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The `coilwork` logger.
fn logger(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    py.import("logging")?.call_method1("getLogger", ("coilwork",))
}

/// Logs `message` at ERROR with `err`'s traceback; a failing logger is ignored.
pub fn exception(py: Python<'_>, message: &str, err: &PyErr) {
    let logged = logger(py).and_then(|logger| {
        let kwargs = PyDict::new(py);
        kwargs.set_item("exc_info", err.value(py))?;
        logger.call_method("error", ("%s", message), Some(&kwargs))
    });
    if logged.is_err() {
        err.print(py);
    }
}
