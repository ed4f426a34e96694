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
use tokio::sync::watch;

/// Most saves a second while registers keep changing.
pub const SAVES_PER_SECOND: u32 = 4;

const FORMAT: &str = "coilwork-sim-state 1";

/// The file's content.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: String,
    device: String,
    size: usize,
    /// `[address, type, raw value]` of every defined register.
    registers: Vec<(usize, String, u16)>,
}

fn refuse(path: &Path, why: impl std::fmt::Display) -> SimError {
    SimError::State(format!("state file {}: {why}", path.display()))
}

/// Restores the registers of `device` from `path`; a missing file is a
/// first start. A file of another configuration is refused, naming the
/// first difference.
pub(crate) fn restore(path: &Path, device_name: &str, device: &SimDevice) -> Result<(), SimError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(refuse(path, format!("cannot read it: {e}"))),
    };
    let file: StateFile =
        serde_json::from_str(&text).map_err(|e| refuse(path, format!("not a coilwork state file: {e}")))?;
    if file.format != FORMAT {
        return Err(refuse(path, format!("format {:?}, expected {FORMAT:?}", file.format)));
    }
    if file.device != device_name {
        return Err(refuse(
            path,
            format!(
                "saved for device {:?}, the configuration serves device {device_name:?}",
                file.device
            ),
        ));
    }
    if file.size != device.size() {
        return Err(refuse(
            path,
            format!("saved for {} registers, the device has {}", file.size, device.size()),
        ));
    }
    check_registers(path, &device.snapshot(), &file.registers)?;
    device.restore(file.registers.into_iter().map(|(a, _, v)| (a, v)));
    Ok(())
}

/// The first register (by address) whose presence or type differs.
fn check_registers(
    path: &Path,
    now: &[(usize, CellType, u16)],
    saved: &[(usize, String, u16)],
) -> Result<(), SimError> {
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
        return Err(refuse(path, why));
    }
}

/// Writes the registers of `device` to `path` atomically.
pub(crate) fn save(path: &Path, device_name: &str, device: &SimDevice) -> std::io::Result<()> {
    let file = StateFile {
        format: FORMAT.to_owned(),
        device: device_name.to_owned(),
        size: device.size(),
        registers: device
            .snapshot()
            .into_iter()
            .map(|(a, t, v): (usize, CellType, u16)| (a, t.name().to_owned(), v))
            .collect(),
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

/// Saves whenever the registers changed (checked [`SAVES_PER_SECOND`]
/// times a second) until `shutdown`, then once more if needed.
pub(crate) async fn keep_saved(
    path: PathBuf,
    device_name: String,
    device: Arc<SimDevice>,
    monitor: Arc<Monitor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut saved = device.changes();
    let period = Duration::from_secs(1) / SAVES_PER_SECOND;
    loop {
        let stop = tokio::select! {
            _ = tokio::time::sleep(period) => false,
            _ = shutdown.wait_for(|s| *s) => true,
        };
        let now = device.changes();
        if now != saved {
            let (p, n, d) = (path.clone(), device_name.clone(), device.clone());
            match tokio::task::spawn_blocking(move || save(&p, &n, &d)).await {
                Ok(Ok(())) => saved = now,
                Ok(Err(e)) => monitor.log("error", format!("cannot save state to {}: {e}", path.display())),
                Err(e) => monitor.log("error", format!("saving state failed: {e}")),
            }
        }
        if stop {
            return;
        }
    }
}
