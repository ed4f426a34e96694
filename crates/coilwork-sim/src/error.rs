//! Errors of the simulator: configuration, I/O and serving.

use std::path::PathBuf;

/// A configuration value that cannot be used: the key, the value and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} = {value}: {reason}")]
pub struct ConfigError {
    /// Path of the key, e.g. `device_list.device.uint32[1].addr`.
    pub key: String,
    /// The offending value as written in JSON.
    pub value: String,
    /// Why it is refused.
    pub reason: String,
}

impl ConfigError {
    /// Builds an error for `key` holding `value`.
    pub fn new(key: impl Into<String>, value: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// Everything that can go wrong building or running a simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration is not JSON of the expected shape.
    #[error("{origin}: {source}")]
    Json {
        /// Where the configuration came from.
        origin: String,
        /// serde_json's error (with line and column).
        source: serde_json::Error,
    },
    /// A configuration value was refused.
    #[error("{origin}: {error}")]
    Config {
        /// Where the configuration came from.
        origin: String,
        /// The refused value.
        error: ConfigError,
    },
    /// The configuration asks for something coilwork cannot do yet.
    #[error("{0}")]
    Unsupported(String),
    /// The Modbus server failed (bind, open, serve).
    #[error(transparent)]
    Server(#[from] coilwork_tokio::ServerError),
    /// A register address outside the device.
    #[error("register {0} is outside the device")]
    NoSuchRegister(usize),
    /// A value that does not fit the register's type.
    #[error("register {address}: {reason}")]
    BadValue {
        /// The register.
        address: usize,
        /// Why the value is refused.
        reason: String,
    },
    /// A `--state-file` was refused (the message names the file and the first mismatch).
    #[error("{0}")]
    State(String),
    /// A CSV register map was refused (the message names file, line and column).
    #[error("{0}")]
    RegisterMap(String),
    /// The HTTP server failed (bind).
    #[error("HTTP server on {addr}: {source}")]
    Http {
        /// The address asked for.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
}
