//! The server context: which device answers which unit id.

use super::Storage;
use crate::diagnostics::Diagnostics;
use std::sync::Arc;

/// A device as the server sees it: its storage and its diagnostics counters.
pub struct Device {
    storage: Arc<dyn Storage>,
    diagnostics: Diagnostics,
}

impl core::fmt::Debug for Device {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Device").finish_non_exhaustive()
    }
}

impl Device {
    /// Wraps a storage with fresh counters.
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self {
            storage,
            diagnostics: Diagnostics::new(),
        }
    }

    /// The device's data.
    pub fn storage(&self) -> &dyn Storage {
        &*self.storage
    }

    /// The storage handle, to keep.
    pub fn storage_arc(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The device's diagnostics counters and event log.
    pub fn diagnostics(&self) -> &Diagnostics {
        &self.diagnostics
    }
}

/// Maps unit ids to devices, like pymodbus's `ModbusServerContext`.
///
/// Single-device: every unit id is served by one device. Multi-device: a map
/// of unit ids with an optional default device for ids not in it. Devices can
/// be added, replaced and removed while the server runs.
pub struct ServerContext {
    _todo: (),
}

impl core::fmt::Debug for ServerContext {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerContext").finish_non_exhaustive()
    }
}

impl ServerContext {
    /// Every unit id served by `storage`.
    pub fn single(storage: impl Storage + 'static) -> Self {
        let _ = storage;
        Self { _todo: () }
    }

    /// No devices yet; add them with [`ServerContext::with_device`] or [`ServerContext::insert`].
    pub fn multi() -> Self {
        Self { _todo: () }
    }

    /// Adds a device for `unit` (builder form).
    pub fn with_device(self, unit: u8, storage: impl Storage + 'static) -> Self {
        let _ = (unit, storage);
        self
    }

    /// Adds or replaces the device for `unit` while running; returns the old one.
    pub fn insert(&self, unit: u8, storage: Arc<dyn Storage>) -> Option<Arc<Device>> {
        let _ = (unit, storage);
        None
    }

    /// Removes the device for `unit`; returns it.
    pub fn remove(&self, unit: u8) -> Option<Arc<Device>> {
        let _ = unit;
        None
    }

    /// Sets or clears the device that answers unit ids with no device of their own.
    pub fn set_default(&self, storage: Option<Arc<dyn Storage>>) {
        let _ = storage;
    }

    /// The device answering `unit`, if any.
    pub fn device(&self, unit: u8) -> Option<Arc<Device>> {
        let _ = unit;
        None
    }

    /// True in single-device mode.
    pub fn is_single(&self) -> bool {
        false
    }

    /// Calls `f` once for each distinct device (for broadcasts).
    pub fn for_each_device(&self, f: &mut dyn FnMut(u8, &Arc<Device>)) {
        let _ = f;
    }
}
