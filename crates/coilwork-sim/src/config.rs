//! The simulator's JSON configuration, in pymodbus's format.
//!
//! A file holds a `server_list` (named Modbus servers) and a `device_list`
//! (named register layouts). One of each is selected to run. Keys pymodbus
//! rejects are rejected here too (`#[serde(deny_unknown_fields)]` on server
//! entries, identity and device sections); keys pymodbus ignores (inside
//! `setup`, inside register entries, at top level) are ignored.

use crate::error::ConfigError;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A whole configuration file.
#[derive(Debug, Clone, Deserialize)]
pub struct SimConfig {
    /// Named Modbus servers.
    pub server_list: BTreeMap<String, ServerConfig>,
    /// Named devices (register layouts).
    pub device_list: BTreeMap<String, DeviceConfig>,
}

/// `comm`: the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Comm {
    /// Modbus/TCP.
    Tcp,
    /// Modbus over UDP.
    Udp,
    /// Modbus/TCP Security.
    Tls,
    /// A serial line.
    Serial,
}

/// `framer`: the frame format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FramerName {
    /// MBAP header.
    Socket,
    /// RTU.
    Rtu,
    /// ASCII.
    Ascii,
    /// MBAP inside TLS.
    Tls,
}

/// One entry of `server_list` (keyword arguments of pymodbus's server classes).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Transport.
    pub comm: Comm,
    /// Frame format.
    pub framer: FramerName,
    /// Network: address to listen on.
    #[serde(default)]
    pub host: Option<String>,
    /// Network: TCP/UDP port (number); serial: device path (string).
    #[serde(default)]
    pub port: Option<Value>,
    /// Device identification objects by name.
    #[serde(default)]
    pub identity: Option<IdentityConfig>,
    /// No answer at all for a unit id without a device.
    #[serde(default)]
    pub ignore_missing_devices: Option<bool>,
    /// Older spelling of `ignore_missing_devices`.
    #[serde(default)]
    pub ignore_missing_slaves: Option<bool>,
    /// Serial unit 0 is a broadcast.
    #[serde(default)]
    pub broadcast_enable: Option<bool>,
    /// The `device_list` entry this server serves (a coilwork extension;
    /// default: `--modbus-device`, else `device` or the only one).
    #[serde(default)]
    pub device: Option<String>,
    /// Serve only this unit id (default: every unit id).
    #[serde(default)]
    pub device_id: Option<u8>,
    /// Serve a copy of the device, with registers of its own, under each of
    /// these unit ids: numbers and `[first, last]` ranges (a coilwork
    /// extension: 247 devices on one port). Other unit ids have no device.
    #[serde(default)]
    pub device_ids: Option<Vec<Value>>,
    /// Serial: baud rate (default 19200).
    #[serde(default)]
    pub baudrate: Option<u32>,
    /// Serial: data bits (default 8).
    #[serde(default)]
    pub bytesize: Option<u8>,
    /// Serial: parity `N`, `E` or `O` (default `N`).
    #[serde(default)]
    pub parity: Option<String>,
    /// Serial: stop bits (default 1).
    #[serde(default)]
    pub stopbits: Option<u8>,
    /// Serial: read timeout in seconds (accepted; coilwork times frames by the line speed).
    #[serde(default)]
    pub timeout: Option<f64>,
    /// Serial: seconds between attempts to reopen the port (default 2).
    #[serde(default)]
    pub reconnect_delay: Option<f64>,
    /// Serial: drop the line's echo.
    #[serde(default)]
    pub handle_local_echo: Option<bool>,
    /// TLS: certificate file.
    #[serde(default)]
    pub certfile: Option<String>,
    /// TLS: private key file.
    #[serde(default)]
    pub keyfile: Option<String>,
    /// TLS: private key password (accepted; coilwork reads unencrypted keys only).
    #[serde(default)]
    pub password: Option<String>,
    /// TLS (coilwork extension): CA certificates (PEM) client certificates
    /// must chain to. With it, the server is Modbus/TCP Security (mutual TLS,
    /// roles read from client certificates); without it, server-only TLS.
    #[serde(default)]
    pub cafile: Option<String>,
}

/// `identity`: pymodbus's `ModbusDeviceIdentification(info_name=...)` names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
pub struct IdentityConfig {
    /// Object 0x00.
    pub VendorName: Option<String>,
    /// Object 0x01.
    pub ProductCode: Option<String>,
    /// Object 0x02.
    pub MajorMinorRevision: Option<String>,
    /// Object 0x03.
    pub VendorUrl: Option<String>,
    /// Object 0x04.
    pub ProductName: Option<String>,
    /// Object 0x05.
    pub ModelName: Option<String>,
    /// Object 0x06.
    pub UserApplicationName: Option<String>,
}

/// One entry of `device_list`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Sizes, sharing, defaults.
    pub setup: SetupConfig,
    /// Addresses that answer exception 02 (pymodbus: required).
    pub invalid: Vec<AddrSpec>,
    /// Addresses clients may write (pymodbus: required).
    pub write: Vec<AddrSpec>,
    /// Registers holding 16 bits (coils / discrete inputs).
    #[serde(default)]
    pub bits: Option<Vec<TypeEntry>>,
    /// Signed 16-bit registers.
    #[serde(default)]
    pub int16: Option<Vec<TypeEntry>>,
    /// Unsigned 16-bit registers.
    #[serde(default)]
    pub uint16: Option<Vec<TypeEntry>>,
    /// Unsigned 32-bit values, two registers each.
    #[serde(default)]
    pub uint32: Option<Vec<TypeEntry>>,
    /// IEEE 754 single, two registers each.
    #[serde(default)]
    pub float32: Option<Vec<TypeEntry>>,
    /// IEEE 754 double, four registers each.
    #[serde(default)]
    pub float64: Option<Vec<TypeEntry>>,
    /// One string per entry, two bytes per register.
    #[serde(default)]
    pub string: Option<Vec<TypeEntry>>,
    /// Copies of register ranges (pymodbus: required).
    pub repeat: Vec<RepeatEntry>,
}

/// `setup` of a device.
#[derive(Debug, Clone, Deserialize)]
pub struct SetupConfig {
    /// Registers (16 coils each) of the coil block.
    #[serde(rename = "co size")]
    pub co_size: usize,
    /// Registers (16 inputs each) of the discrete input block.
    #[serde(rename = "di size")]
    pub di_size: usize,
    /// Holding registers.
    #[serde(rename = "hr size")]
    pub hr_size: usize,
    /// Input registers.
    #[serde(rename = "ir size")]
    pub ir_size: usize,
    /// One block for all four tables (the largest size).
    #[serde(rename = "shared blocks")]
    pub shared_blocks: bool,
    /// Reads and writes must cover whole values.
    #[serde(rename = "type exception")]
    pub type_exception: bool,
    /// Default value and action per type.
    pub defaults: DefaultsConfig,
}

/// `setup.defaults`.
#[derive(Debug, Clone, Deserialize)]
pub struct DefaultsConfig {
    /// Initial value per type name.
    pub value: Map<String, Value>,
    /// Action per type name (`null`: none).
    pub action: BTreeMap<String, Option<String>>,
}

/// An address or an inclusive `[first, last]` range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrSpec {
    /// First address.
    pub first: u64,
    /// Last address (inclusive).
    pub last: u64,
}

impl<'de> Deserialize<'de> for AddrSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        AddrSpec::from_value(&v).map_err(de::Error::custom)
    }
}

impl AddrSpec {
    fn from_value(v: &Value) -> Result<Self, String> {
        let bad = || format!("expected an address or [first, last] of non-negative integers, found {v}");
        match v {
            Value::Number(n) => {
                let a = n.as_u64().ok_or_else(bad)?;
                Ok(Self { first: a, last: a })
            }
            Value::Array(items) => match items.as_slice() {
                [a, b] => {
                    let first = a.as_u64().ok_or_else(bad)?;
                    let last = b.as_u64().ok_or_else(bad)?;
                    if first > last {
                        return Err(format!("range {v} ends before it starts"));
                    }
                    Ok(Self { first, last })
                }
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for AddrSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "[{}, {}]", self.first, self.last)
        }
    }
}

/// One entry of a type section: `5`, `[5, 6]` or `{"addr": ..., "value": ..., "action": ..., "parameters": {...}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeEntry {
    /// Registers covered.
    pub addr: AddrSpec,
    /// Initial value (default: `setup.defaults.value`).
    pub value: Option<Value>,
    /// `None`: the default action; `Some(None)`: explicitly none.
    pub action: Option<Option<String>>,
    /// Keyword arguments of the action.
    pub parameters: Option<Map<String, Value>>,
}

impl<'de> Deserialize<'de> for TypeEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let Value::Object(map) = &v else {
            return AddrSpec::from_value(&v)
                .map(|addr| TypeEntry {
                    addr,
                    value: None,
                    action: None,
                    parameters: None,
                })
                .map_err(de::Error::custom);
        };
        let addr = map
            .get("addr")
            .ok_or_else(|| de::Error::custom(format!("missing \"addr\" in {v}")))?;
        let addr = AddrSpec::from_value(addr).map_err(|e| de::Error::custom(format!("\"addr\": {e}")))?;
        let action = match map.get("action") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::String(s)) => Some(Some(s.clone())),
            Some(other) => {
                return Err(de::Error::custom(format!(
                    "\"action\": expected a name or null, found {other}"
                )));
            }
        };
        let parameters = match map.get("parameters") {
            None | Some(Value::Null) => None,
            Some(Value::Object(p)) => Some(p.clone()),
            Some(other) => {
                return Err(de::Error::custom(format!(
                    "\"parameters\": expected an object, found {other}"
                )));
            }
        };
        Ok(TypeEntry {
            addr,
            value: map.get("value").cloned(),
            action,
            parameters,
        })
    }
}

/// An entry of `repeat`: copy `addr` cyclically over `to`.
#[derive(Debug, Clone, Deserialize)]
pub struct RepeatEntry {
    /// Source range.
    pub addr: AddrSpec,
    /// Destination range.
    pub to: AddrSpec,
}

/// Which tables of a device a server serves, resolved from a [`ServerConfig`].
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    /// TCP listener.
    Tcp {
        /// Host to bind.
        host: String,
        /// Port.
        port: u16,
        /// Frame format.
        framer: FramerName,
    },
    /// UDP socket.
    Udp {
        /// Host to bind.
        host: String,
        /// Port.
        port: u16,
        /// Frame format.
        framer: FramerName,
    },
    /// TLS listener (Modbus/TCP Security with `cafile`, else server-only TLS).
    Tls {
        /// Host to bind.
        host: String,
        /// Port.
        port: u16,
        /// Certificate (chain) file, as written in the configuration.
        certfile: String,
        /// Key file, as written in the configuration.
        keyfile: String,
        /// CA file for client certificates, as written (none: server-only TLS).
        cafile: Option<String>,
    },
    /// Serial line.
    Serial {
        /// Device path.
        port: String,
        /// RTU or ASCII.
        framer: FramerName,
        /// Baud rate.
        baudrate: u32,
        /// Data bits.
        bytesize: u8,
        /// `N`, `E` or `O`.
        parity: char,
        /// Stop bits.
        stopbits: u8,
        /// Drop the line's echo.
        local_echo: bool,
        /// Seconds between reopen attempts.
        reconnect_delay: f64,
    },
}

impl ServerConfig {
    /// The unit ids of `device_ids`, in order, each once; `None` without the key.
    pub fn unit_ids(&self, name: &str) -> Result<Option<Vec<u8>>, ConfigError> {
        let Some(list) = &self.device_ids else { return Ok(None) };
        let key = |i: usize| format!("server_list.{name}.device_ids[{i}]");
        if self.device_id.is_some() {
            return Err(ConfigError::new(
                format!("server_list.{name}.device_ids"),
                "(given)",
                "give device_id or device_ids, not both",
            ));
        }
        let unit = |i: usize, v: &Value| -> Result<u8, ConfigError> {
            v.as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(|| ConfigError::new(key(i), v, "a unit id is a number 0..=255"))
        };
        let mut ids: Vec<u8> = Vec::new();
        for (i, item) in list.iter().enumerate() {
            let (first, last) = match item.as_array().map(Vec::as_slice) {
                Some([a, b]) => (unit(i, a)?, unit(i, b)?),
                Some(_) => return Err(ConfigError::new(key(i), item, "a range is [first, last]")),
                None => (unit(i, item)?, unit(i, item)?),
            };
            if first > last {
                return Err(ConfigError::new(key(i), item, "first is past last"));
            }
            for id in first..=last {
                if ids.contains(&id) {
                    return Err(ConfigError::new(key(i), item, format!("unit id {id} is listed twice")));
                }
                ids.push(id);
            }
        }
        if ids.is_empty() {
            return Err(ConfigError::new(
                format!("server_list.{name}.device_ids"),
                "[]",
                "lists no unit id",
            ));
        }
        Ok(Some(ids))
    }

    /// Checks the entry named `name` and resolves where it serves.
    pub fn endpoint(&self, name: &str) -> Result<Endpoint, ConfigError> {
        let key = |k: &str| format!("server_list.{name}.{k}");
        let framer_err = |allowed: &str| {
            ConfigError::new(
                key("framer"),
                format!("{:?}", self.framer).to_lowercase(),
                format!("comm {:?} needs framer {allowed}", self.comm).to_lowercase(),
            )
        };
        let host_port = || -> Result<(String, u16), ConfigError> {
            let host = self
                .host
                .clone()
                .ok_or_else(|| ConfigError::new(key("host"), "(missing)", "a network server needs a host"))?;
            let port = self
                .port
                .as_ref()
                .ok_or_else(|| ConfigError::new(key("port"), "(missing)", "a network server needs a port"))?;
            let p = port
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| ConfigError::new(key("port"), port, "expected a port number 0..=65535"))?;
            Ok((host, p))
        };
        match self.comm {
            Comm::Tcp | Comm::Udp => {
                if self.framer == FramerName::Tls {
                    return Err(framer_err("socket, rtu or ascii"));
                }
                let (host, port) = host_port()?;
                Ok(if self.comm == Comm::Tcp {
                    Endpoint::Tcp {
                        host,
                        port,
                        framer: self.framer,
                    }
                } else {
                    Endpoint::Udp {
                        host,
                        port,
                        framer: self.framer,
                    }
                })
            }
            Comm::Tls => {
                if !matches!(self.framer, FramerName::Tls | FramerName::Socket) {
                    return Err(framer_err("tls"));
                }
                let (host, port) = host_port()?;
                let file = |k: &str, v: &Option<String>, what: &str| match v {
                    Some(f) if !f.is_empty() => Ok(f.clone()),
                    Some(f) => Err(ConfigError::new(
                        key(k),
                        format!("{f:?}"),
                        format!("a TLS server needs {what}"),
                    )),
                    None => Err(ConfigError::new(
                        key(k),
                        "(missing)",
                        format!("a TLS server needs {what}"),
                    )),
                };
                let certfile = file("certfile", &self.certfile, "a certificate file (PEM)")?;
                let keyfile = file("keyfile", &self.keyfile, "a private key file (PEM)")?;
                let cafile = match &self.cafile {
                    Some(_) => Some(file("cafile", &self.cafile, "a CA file (PEM) when cafile is given")?),
                    None => None,
                };
                Ok(Endpoint::Tls {
                    host,
                    port,
                    certfile,
                    keyfile,
                    cafile,
                })
            }
            Comm::Serial => {
                if !matches!(self.framer, FramerName::Rtu | FramerName::Ascii) {
                    return Err(framer_err("rtu or ascii"));
                }
                let port = match &self.port {
                    Some(Value::String(s)) if !s.is_empty() => s.clone(),
                    Some(other) => {
                        return Err(ConfigError::new(
                            key("port"),
                            other,
                            "a serial server needs a device path",
                        ));
                    }
                    None => {
                        return Err(ConfigError::new(
                            key("port"),
                            "(missing)",
                            "a serial server needs a device path",
                        ));
                    }
                };
                let parity = match self.parity.as_deref().unwrap_or("N") {
                    "N" => 'N',
                    "E" => 'E',
                    "O" => 'O',
                    other => {
                        return Err(ConfigError::new(
                            key("parity"),
                            format!("{other:?}"),
                            "expected \"N\", \"E\" or \"O\"",
                        ));
                    }
                };
                let bytesize = self.bytesize.unwrap_or(8);
                if !(7..=8).contains(&bytesize) {
                    return Err(ConfigError::new(
                        key("bytesize"),
                        bytesize,
                        "coilwork supports 7 or 8 data bits",
                    ));
                }
                let stopbits = self.stopbits.unwrap_or(1);
                if !(1..=2).contains(&stopbits) {
                    return Err(ConfigError::new(key("stopbits"), stopbits, "expected 1 or 2"));
                }
                let baudrate = self.baudrate.unwrap_or(19_200);
                if baudrate == 0 {
                    return Err(ConfigError::new(key("baudrate"), baudrate, "must be positive"));
                }
                let reconnect_delay = self.reconnect_delay.unwrap_or(2.0);
                if !(reconnect_delay.is_finite() && reconnect_delay >= 0.0) {
                    return Err(ConfigError::new(
                        key("reconnect_delay"),
                        reconnect_delay,
                        "expected seconds >= 0",
                    ));
                }
                Ok(Endpoint::Serial {
                    port,
                    framer: self.framer,
                    baudrate,
                    bytesize,
                    parity,
                    stopbits,
                    local_echo: self.handle_local_echo.unwrap_or(false),
                    reconnect_delay,
                })
            }
        }
    }
}
