//! The server context: which device answers which unit id.

use super::Storage;
use crate::diagnostics::Diagnostics;
use std::sync::{Arc, PoisonError, RwLock};

/// Reads a slot, recovering from poisoning (a slot is only ever replaced whole).
fn get(slot: &RwLock<Option<Arc<Device>>>) -> Option<Arc<Device>> {
    slot.read().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Replaces a slot's device; returns the old one.
fn put(slot: &RwLock<Option<Arc<Device>>>, device: Option<Arc<Device>>) -> Option<Arc<Device>> {
    core::mem::replace(&mut *slot.write().unwrap_or_else(PoisonError::into_inner), device)
}

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

    /// Restores the storage's initial values (the counters are left alone).
    pub fn reset(&self) {
        self.storage.reset();
    }
}

/// Which devices a context holds.
enum Devices {
    /// One device for every unit id (replaceable).
    Single(RwLock<Arc<Device>>),
    /// A slot per unit id, and a device for unit ids whose slot is empty.
    Multi {
        /// 256 slots, indexed by unit id.
        slots: Box<[RwLock<Option<Arc<Device>>>]>,
        /// Answers unit ids whose slot is empty.
        default: RwLock<Option<Arc<Device>>>,
    },
}

/// Maps unit ids to devices, like pymodbus's `ModbusServerContext`.
///
/// Single-device: every unit id is served by one device. Multi-device: a map
/// of unit ids with an optional default device for ids not in it. Devices can
/// be added, replaced and removed while the server runs.
///
/// In single-device mode (pymodbus `single=True`) the unit id is ignored:
/// [`ServerContext::insert`] and [`ServerContext::set_default`] with a
/// storage replace the one device, and [`ServerContext::remove`] and
/// `set_default(None)` do nothing, since the context always has its device.
///
/// A lookup costs one read lock and one `Arc` clone.
pub struct ServerContext {
    devices: Devices,
}

impl core::fmt::Debug for ServerContext {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerContext")
            .field("single", &self.is_single())
            .finish_non_exhaustive()
    }
}

impl Default for ServerContext {
    fn default() -> Self {
        Self::multi()
    }
}

impl ServerContext {
    /// Every unit id served by `storage`.
    pub fn single(storage: impl Storage + 'static) -> Self {
        Self {
            devices: Devices::Single(RwLock::new(Arc::new(Device::new(Arc::new(storage))))),
        }
    }

    /// No devices yet; add them with [`ServerContext::with_device`] or [`ServerContext::insert`].
    pub fn multi() -> Self {
        Self {
            devices: Devices::Multi {
                slots: (0..=u8::MAX).map(|_| RwLock::new(None)).collect(),
                default: RwLock::new(None),
            },
        }
    }

    /// Adds a device for `unit` (builder form).
    pub fn with_device(self, unit: u8, storage: impl Storage + 'static) -> Self {
        self.insert(unit, Arc::new(storage));
        self
    }

    /// Sets the default device (builder form).
    pub fn with_default(self, storage: impl Storage + 'static) -> Self {
        self.set_default(Some(Arc::new(storage)));
        self
    }

    /// Adds or replaces the device for `unit` while running; returns the old one.
    ///
    /// In single-device mode it replaces the one device, whatever `unit` is.
    pub fn insert(&self, unit: u8, storage: Arc<dyn Storage>) -> Option<Arc<Device>> {
        self.insert_device(unit, Arc::new(Device::new(storage)))
    }

    /// Like [`ServerContext::insert`] with a ready device, so several unit
    /// ids can share one device (and its diagnostics counters).
    pub fn insert_device(&self, unit: u8, device: Arc<Device>) -> Option<Arc<Device>> {
        match &self.devices {
            Devices::Single(one) => Some(core::mem::replace(
                &mut *one.write().unwrap_or_else(PoisonError::into_inner),
                device,
            )),
            Devices::Multi { slots, .. } => slots.get(usize::from(unit)).and_then(|slot| put(slot, Some(device))),
        }
    }

    /// Removes the device for `unit`; returns it.
    ///
    /// In single-device mode nothing is removed and the result is `None`.
    pub fn remove(&self, unit: u8) -> Option<Arc<Device>> {
        match &self.devices {
            Devices::Single(_) => None,
            Devices::Multi { slots, .. } => slots.get(usize::from(unit)).and_then(|slot| put(slot, None)),
        }
    }

    /// Sets or clears the device that answers unit ids with no device of their own.
    ///
    /// In single-device mode `Some` replaces the one device and `None` does nothing.
    pub fn set_default(&self, storage: Option<Arc<dyn Storage>>) {
        self.set_default_device(storage.map(|storage| Arc::new(Device::new(storage))));
    }

    /// Like [`ServerContext::set_default`] with a ready device (which may also serve unit ids of its own).
    pub fn set_default_device(&self, device: Option<Arc<Device>>) {
        match (&self.devices, device) {
            (Devices::Single(_), None) => {}
            (Devices::Single(one), Some(device)) => {
                *one.write().unwrap_or_else(PoisonError::into_inner) = device;
            }
            (Devices::Multi { default, .. }, device) => {
                put(default, device);
            }
        }
    }

    /// The default device, if any (the one device in single-device mode).
    pub fn default_device(&self) -> Option<Arc<Device>> {
        match &self.devices {
            Devices::Single(one) => Some(one.read().unwrap_or_else(PoisonError::into_inner).clone()),
            Devices::Multi { default, .. } => get(default),
        }
    }

    /// The device answering `unit`, if any.
    pub fn device(&self, unit: u8) -> Option<Arc<Device>> {
        match &self.devices {
            Devices::Single(one) => Some(one.read().unwrap_or_else(PoisonError::into_inner).clone()),
            Devices::Multi { slots, default } => slots.get(usize::from(unit)).and_then(get).or_else(|| get(default)),
        }
    }

    /// True in single-device mode.
    pub fn is_single(&self) -> bool {
        matches!(self.devices, Devices::Single(_))
    }

    /// Unit ids with a device of their own, ascending (every unit id in single-device mode).
    pub fn units(&self) -> Vec<u8> {
        match &self.devices {
            Devices::Single(_) => (0..=u8::MAX).collect(),
            Devices::Multi { slots, .. } => (0..=u8::MAX)
                .zip(slots.iter())
                .filter(|(_, slot)| slot.read().unwrap_or_else(PoisonError::into_inner).is_some())
                .map(|(unit, _)| unit)
                .collect(),
        }
    }

    /// Calls `f` once for each distinct device (for broadcasts).
    ///
    /// Devices are told apart by `Arc` pointer. `f` gets the lowest unit id
    /// the device serves, or 0 for a device that is only the default. `f`
    /// runs on a snapshot with no lock held, so it may insert or remove
    /// devices.
    pub fn for_each_device(&self, f: &mut dyn FnMut(u8, &Arc<Device>)) {
        match &self.devices {
            Devices::Single(one) => {
                let device = one.read().unwrap_or_else(PoisonError::into_inner).clone();
                f(0, &device);
            }
            Devices::Multi { slots, default } => {
                let mut seen: Vec<(u8, Arc<Device>)> = Vec::new();
                for (unit, slot) in (0..=u8::MAX).zip(slots.iter()) {
                    if let Some(device) = get(slot)
                        && !seen.iter().any(|(_, d)| Arc::ptr_eq(d, &device))
                    {
                        seen.push((unit, device));
                    }
                }
                if let Some(device) = get(default)
                    && !seen.iter().any(|(_, d)| Arc::ptr_eq(d, &device))
                {
                    seen.push((0, device));
                }
                for (unit, device) in &seen {
                    f(*unit, device);
                }
            }
        }
    }
}
