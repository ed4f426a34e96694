//! `--state-file`: register values saved when they change (coalesced, at
//! most [`SAVES_PER_SECOND`] times a second) and at stop, restored at start.
//!
//! Saves are atomic: the state goes to a temporary file beside the target,
//! is flushed to disk and renamed over it, so a crash leaves the old or the
//! new state, never half of one.

use crate::device::SimDevice;
use crate::error::SimError;
use crate::model::CellType;
use crate::monitor::Monitor;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Most saves a second while registers keep changing.
pub const SAVES_PER_SECOND: u32 = 4;

const FORMAT: &str = "coilwork-sim-state 2";
/// One server's device, as files of the first format held.
const FORMAT_1: &str = "coilwork-sim-state 1";

/// A server's device as the state file holds it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceState {
    /// The `server_list` entry (absent in files of the first format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    server: Option<String>,
    device: String,
    size: usize,
    /// `[address, type, raw value]` of every defined register.
    registers: Vec<(usize, String, u16)>,
}

/// The file's content: every server's device, in the order served.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: String,
    servers: Vec<DeviceState>,
}

/// The first format: one device, its fields beside `format`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile1 {
    #[allow(dead_code)] // checked before this is parsed
    format: String,
    device: String,
    size: usize,
    registers: Vec<(usize, String, u16)>,
}

/// A served device: `(server entry, device entry, device)`.
pub(crate) type Served<'a> = (&'a str, &'a str, &'a SimDevice);

fn refuse(path: &Path, why: impl std::fmt::Display) -> SimError {
    SimError::State(format!("state file {}: {why}", path.display()))
}

/// The file's devices, whichever format it has.
fn parse(path: &Path, text: &str) -> Result<Vec<DeviceState>, SimError> {
    let bad = |e: serde_json::Error| refuse(path, format!("not a coilwork state file: {e}"));
    let value: serde_json::Value = serde_json::from_str(text).map_err(bad)?;
    match value.get("format").and_then(serde_json::Value::as_str) {
        Some(FORMAT) => Ok(serde_json::from_value::<StateFile>(value).map_err(bad)?.servers),
        Some(FORMAT_1) => {
            let one: StateFile1 = serde_json::from_value(value).map_err(bad)?;
            Ok(vec![DeviceState {
                server: None,
                device: one.device,
                size: one.size,
                registers: one.registers,
            }])
        }
        other => Err(refuse(
            path,
            format!("format {:?}, expected {FORMAT:?}", other.unwrap_or("(none)")),
        )),
    }
}

/// Restores the registers of every served device from `path`; a missing
/// file is a first start. A file of another configuration is refused,
/// naming the first difference, and nothing is restored.
pub(crate) fn restore(path: &Path, served: &[Served<'_>]) -> Result<(), SimError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(refuse(path, format!("cannot read it: {e}"))),
    };
    let saved = parse(path, &text)?;
    let mut pairs = Vec::with_capacity(served.len());
    for (i, &(server, device_name, device)) in served.iter().enumerate() {
        // A first-format file has one device and names no server.
        let found = saved.iter().find(|s| s.server.as_deref() == Some(server));
        let found = found.or_else(|| saved.first().filter(|s| s.server.is_none() && i == 0));
        let file = found.ok_or_else(|| refuse(path, format!("server {server:?} is not in the file")))?;
        check_device(path, server, device_name, device, file)?;
        pairs.push((device, file));
    }
    if let Some(extra) = saved.iter().find(|s| {
        s.server
            .as_deref()
            .is_some_and(|n| !served.iter().any(|(server, _, _)| *server == n))
    }) {
        let name = extra.server.as_deref().unwrap_or_default();
        return Err(refuse(path, format!("server {name:?} in the file is not served")));
    }
    for (device, file) in pairs {
        device.restore(file.registers.iter().map(|&(a, _, v)| (a, v)));
    }
    Ok(())
}

/// Checks one saved device against the configuration's.
fn check_device(
    path: &Path,
    server: &str,
    device_name: &str,
    device: &SimDevice,
    file: &DeviceState,
) -> Result<(), SimError> {
    if file.device != device_name {
        return Err(refuse(
            path,
            format!(
                "server {server:?}: saved for device {:?}, the configuration serves device {device_name:?}",
                file.device
            ),
        ));
    }
    if file.size != device.size() {
        return Err(refuse(
            path,
            format!(
                "server {server:?}: saved for {} registers, the device has {}",
                file.size,
                device.size()
            ),
        ));
    }
    check_registers(&device.snapshot(), &file.registers)
        .map_err(|why| refuse(path, format!("server {server:?}: {why}")))
}

/// The first register (by address) whose presence or type differs.
fn check_registers(now: &[(usize, CellType, u16)], saved: &[(usize, String, u16)]) -> Result<(), String> {
    let mut now = now.iter().peekable();
    let mut saved = saved.iter().peekable();
    loop {
        let why = match (now.peek(), saved.peek()) {
            (None, None) => return Ok(()),
            (Some((a, ty, _)), Some((fa, fty, _))) if a == fa => {
                if fty != ty.name() {
                    format!(
                        "register {a} is {fty} in the file but {} in the configuration",
                        ty.name()
                    )
                } else {
                    now.next();
                    saved.next();
                    continue;
                }
            }
            (Some((a, ty, _)), f) if f.is_none_or(|(fa, _, _)| a < fa) => {
                format!("register {a} ({}) of the configuration is not in the file", ty.name())
            }
            (_, Some((fa, fty, _))) => format!("register {fa} ({fty}) in the file is not defined by the configuration"),
            (_, None) => return Ok(()),
        };
        return Err(why);
    }
}

/// A served device the saver keeps: `(server entry, device entry, device)`.
pub(crate) type Kept = (String, String, Arc<SimDevice>);

/// Writes the registers of every device to `path` atomically.
pub(crate) fn save(path: &Path, devices: &[Kept]) -> std::io::Result<()> {
    let servers = devices
        .iter()
        .map(|(server, name, device)| DeviceState {
            server: Some(server.clone()),
            device: name.clone(),
            size: device.size(),
            registers: device
                .snapshot()
                .into_iter()
                .map(|(a, t, v): (usize, CellType, u16)| (a, t.name().to_owned(), v))
                .collect(),
        })
        .collect();
    let file = StateFile {
        format: FORMAT.to_owned(),
        servers,
    };
    let text = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
    let tmp = temporary(path);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// `dir/.name.tmp`: beside the target, so the rename stays on one file system.
fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.tmp"))
}

/// The sum of the devices' change counts: it moves when any of them changed.
fn changes(devices: &[Kept]) -> u64 {
    devices.iter().map(|(_, _, d)| d.changes()).fold(0, u64::wrapping_add)
}

/// Saves whenever a device's registers changed (checked
/// [`SAVES_PER_SECOND`] times a second) until `stop` completes (every
/// server has stopped), then once more if needed.
pub(crate) async fn keep_saved(
    path: PathBuf,
    devices: Vec<Kept>,
    monitor: Arc<Monitor>,
    stop: impl std::future::Future<Output = ()>,
) {
    let devices = Arc::new(devices);
    let mut saved = changes(&devices);
    let period = Duration::from_secs(1) / SAVES_PER_SECOND;
    tokio::pin!(stop);
    loop {
        let stopped = tokio::select! {
            _ = tokio::time::sleep(period) => false,
            _ = &mut stop => true,
        };
        let now = changes(&devices);
        if now != saved {
            let (p, d) = (path.clone(), devices.clone());
            match tokio::task::spawn_blocking(move || save(&p, &d)).await {
                Ok(Ok(())) => saved = now,
                Ok(Err(e)) => monitor.log("error", format!("cannot save state to {}: {e}", path.display())),
                Err(e) => monitor.log("error", format!("saving state failed: {e}")),
            }
        }
        if stopped {
            return;
        }
    }
}
