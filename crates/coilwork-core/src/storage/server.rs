//! The server context: which device answers which unit id.

use super::Storage;
use crate::diagnostics::Diagnostics;
use core::sync::atomic::{AtomicU64, Ordering};
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
/// A lookup costs one read lock and one `Arc` clone. A connection's engine
/// calls skip even that: they keep the device they last used and only look
/// again once the context has changed (a generation counter that every
/// change bumps, read with one plain atomic load).
pub struct ServerContext {
    devices: Devices,
    /// Bumped after every change of a slot, so cached lookups know to look again.
    generation: AtomicU64,
}

/// One connection's last device lookup: the device for `unit` as of
/// `generation` of the context.
#[derive(Default)]
pub(crate) struct DeviceCache {
    entry: Option<(u64, u8, Option<Arc<Device>>)>,
}

impl DeviceCache {
    /// The device answering `unit` in `context`, looked up again only if the
    /// unit differs from last time or the context has changed since.
    ///
    /// The generation is read before the lookup, so a change racing with the
    /// lookup at worst makes the next call look again.
    #[inline]
    pub(crate) fn get(&mut self, context: &ServerContext, unit: u8) -> Option<&Arc<Device>> {
        let generation = context.generation.load(Ordering::Acquire);
        let fresh = matches!(&self.entry, Some((g, u, _)) if *g == generation && *u == unit);
        if !fresh {
            self.entry = Some((generation, unit, context.device(unit)));
        }
        self.entry.as_ref().and_then(|(_, _, d)| d.as_ref())
    }
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
            generation: AtomicU64::new(0),
        }
    }

    /// No devices yet; add them with [`ServerContext::with_device`] or [`ServerContext::insert`].
    pub fn multi() -> Self {
        Self {
            devices: Devices::Multi {
                slots: (0..=u8::MAX).map(|_| RwLock::new(None)).collect(),
                default: RwLock::new(None),
            },
            generation: AtomicU64::new(0),
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
        let old = match &self.devices {
            Devices::Single(one) => Some(core::mem::replace(
                &mut *one.write().unwrap_or_else(PoisonError::into_inner),
                device,
            )),
            Devices::Multi { slots, .. } => slots.get(usize::from(unit)).and_then(|slot| put(slot, Some(device))),
        };
        self.changed();
        old
    }

    /// Tells cached lookups that a slot changed (after the change is made).
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Removes the device for `unit`; returns it.
    ///
    /// In single-device mode nothing is removed and the result is `None`.
    pub fn remove(&self, unit: u8) -> Option<Arc<Device>> {
        match &self.devices {
            Devices::Single(_) => None,
            Devices::Multi { slots, .. } => {
                let old = slots.get(usize::from(unit)).and_then(|slot| put(slot, None));
                self.changed();
                old
            }
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
        self.changed();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{DeviceContext, RequestContext};

    const CTX: RequestContext<'static> = RequestContext::application(1);

    /// A device whose holding register 0 holds `tag`.
    fn tagged(tag: u16) -> DeviceContext {
        let d = DeviceContext::with_sizes(0, 0, 1, 0).unwrap();
        d.write_holding_registers(&CTX, 0, &[tag]).unwrap();
        d
    }

    fn tag_of(device: &Device) -> u16 {
        let mut out = [0u16; 1];
        device.storage().read_holding_registers(&CTX, 0, &mut out).unwrap();
        out[0]
    }

    fn tag_at(ctx: &ServerContext, unit: u8) -> Option<u16> {
        ctx.device(unit).map(|d| tag_of(&d))
    }

    #[test]
    fn single_serves_every_unit() {
        let ctx = ServerContext::single(tagged(7));
        assert!(ctx.is_single());
        let a = ctx.device(0).unwrap();
        let b = ctx.device(255).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(tag_of(&a), 7);
        assert_eq!(ctx.units().len(), 256);
        assert!(ctx.default_device().is_some());
    }

    #[test]
    fn single_insert_replaces_and_remove_is_a_no_op() {
        let ctx = ServerContext::single(tagged(1));
        let old = ctx.insert(9, Arc::new(tagged(2))).unwrap();
        assert_eq!(tag_of(&old), 1);
        assert_eq!(tag_at(&ctx, 0), Some(2));
        assert_eq!(tag_at(&ctx, 9), Some(2));
        assert!(ctx.remove(9).is_none());
        assert_eq!(tag_at(&ctx, 9), Some(2));
        ctx.set_default(None);
        assert_eq!(tag_at(&ctx, 3), Some(2));
        ctx.set_default(Some(Arc::new(tagged(3))));
        assert_eq!(tag_at(&ctx, 3), Some(3));
        let mut calls = Vec::new();
        ctx.for_each_device(&mut |unit, d| calls.push((unit, tag_of(d))));
        assert_eq!(calls, vec![(0, 3)]);
    }

    #[test]
    fn multi_lookup_insert_replace_remove() {
        let ctx = ServerContext::multi()
            .with_device(1, tagged(10))
            .with_device(17, tagged(170));
        assert!(!ctx.is_single());
        assert_eq!(tag_at(&ctx, 1), Some(10));
        assert_eq!(tag_at(&ctx, 17), Some(170));
        assert_eq!(tag_at(&ctx, 2), None);
        assert_eq!(ctx.units(), vec![1, 17]);
        // Replace.
        let old = ctx.insert(1, Arc::new(tagged(11))).unwrap();
        assert_eq!(tag_of(&old), 10);
        assert_eq!(tag_at(&ctx, 1), Some(11));
        // Add.
        assert!(ctx.insert(255, Arc::new(tagged(2550))).is_none());
        assert!(ctx.insert(0, Arc::new(tagged(5))).is_none());
        assert_eq!(ctx.units(), vec![0, 1, 17, 255]);
        // Remove.
        assert_eq!(ctx.remove(17).map(|d| tag_of(&d)), Some(170));
        assert!(ctx.remove(17).is_none());
        assert_eq!(tag_at(&ctx, 17), None);
        assert_eq!(ctx.units(), vec![0, 1, 255]);
    }

    #[test]
    fn multi_default_device() {
        let ctx = ServerContext::multi().with_device(1, tagged(10));
        assert!(ctx.default_device().is_none());
        ctx.set_default(Some(Arc::new(tagged(99))));
        assert_eq!(tag_at(&ctx, 1), Some(10));
        assert_eq!(tag_at(&ctx, 2), Some(99));
        assert_eq!(tag_at(&ctx, 0), Some(99));
        // Default does not count as a unit's own device.
        assert_eq!(ctx.units(), vec![1]);
        // Removing a unit falls back to the default.
        ctx.remove(1);
        assert_eq!(tag_at(&ctx, 1), Some(99));
        ctx.set_default(None);
        assert_eq!(tag_at(&ctx, 1), None);
        let built = ServerContext::default().with_default(tagged(4));
        assert_eq!(tag_at(&built, 200), Some(4));
    }

    #[test]
    fn for_each_device_visits_distinct_devices_once() {
        let ctx = ServerContext::multi()
            .with_device(3, tagged(30))
            .with_device(8, tagged(80));
        let shared = Arc::new(Device::new(Arc::new(tagged(50))));
        ctx.insert_device(5, shared.clone());
        ctx.insert_device(200, shared.clone());
        ctx.set_default_device(Some(shared));
        ctx.set_default(Some(Arc::new(tagged(90))));
        let mut calls = Vec::new();
        ctx.for_each_device(&mut |unit, d| calls.push((unit, tag_of(d))));
        assert_eq!(calls, vec![(3, 30), (5, 50), (8, 80), (0, 90)]);

        // A default that also serves a unit is visited once, at its unit.
        let shared = Arc::new(Device::new(Arc::new(tagged(60))));
        let ctx = ServerContext::multi();
        ctx.insert_device(6, shared.clone());
        ctx.set_default_device(Some(shared));
        let mut calls = Vec::new();
        ctx.for_each_device(&mut |unit, d| calls.push((unit, tag_of(d))));
        assert_eq!(calls, vec![(6, 60)]);

        // An empty context visits nothing.
        let mut n = 0;
        ServerContext::multi().for_each_device(&mut |_, _| n += 1);
        assert_eq!(n, 0);
    }

    #[test]
    fn for_each_device_may_modify_the_context() {
        let ctx = ServerContext::multi()
            .with_device(1, tagged(1))
            .with_device(2, tagged(2));
        ctx.for_each_device(&mut |unit, _| {
            ctx.remove(unit);
        });
        assert!(ctx.units().is_empty());
    }

    #[test]
    fn device_reset_and_accessors() {
        let ctx = ServerContext::multi().with_device(1, tagged(0));
        let d = ctx.device(1).unwrap();
        d.storage().write_holding_registers(&CTX, 0, &[42]).unwrap();
        assert_eq!(tag_of(&d), 42);
        d.reset();
        // `tagged` wrote after building, so the initial value is 0.
        assert_eq!(tag_of(&d), 0);
        assert_eq!(d.diagnostics().event_count(), 0);
        assert!(Arc::strong_count(d.storage_arc()) >= 1);
        assert!(format!("{ctx:?}").contains("single: false"));
    }

    #[test]
    fn cached_lookup_follows_every_change() {
        let ctx = ServerContext::multi().with_device(1, tagged(10));
        let mut cache = DeviceCache::default();
        let tag = |cache: &mut DeviceCache, unit| cache.get(&ctx, unit).map(|d| tag_of(d));
        assert_eq!(tag(&mut cache, 1), Some(10));
        let first = cache.get(&ctx, 1).cloned().unwrap();
        assert!(
            Arc::ptr_eq(&first, cache.get(&ctx, 1).unwrap()),
            "unchanged context: same device"
        );
        assert_eq!(tag(&mut cache, 2), None);
        ctx.insert(1, Arc::new(tagged(11)));
        assert_eq!(tag(&mut cache, 1), Some(11));
        ctx.set_default(Some(Arc::new(tagged(99))));
        assert_eq!(tag(&mut cache, 2), Some(99));
        ctx.set_default_device(None);
        assert_eq!(tag(&mut cache, 2), None);
        ctx.remove(1);
        assert_eq!(tag(&mut cache, 1), None);

        let single = ServerContext::single(tagged(1));
        let mut cache = DeviceCache::default();
        assert_eq!(cache.get(&single, 5).map(|d| tag_of(d)), Some(1));
        single.insert(0, Arc::new(tagged(2)));
        assert_eq!(cache.get(&single, 5).map(|d| tag_of(d)), Some(2));
        single.set_default(Some(Arc::new(tagged(3))));
        assert_eq!(cache.get(&single, 5).map(|d| tag_of(d)), Some(3));
    }

    #[test]
    fn lookups_during_replacement() {
        let ctx = Arc::new(ServerContext::multi().with_device(1, tagged(1)));
        let writer = {
            let ctx = ctx.clone();
            std::thread::spawn(move || {
                for i in 0..500u16 {
                    ctx.insert(1, Arc::new(tagged(i % 2 + 1)));
                }
            })
        };
        for _ in 0..500 {
            let tag = tag_at(&ctx, 1).unwrap();
            assert!(tag == 1 || tag == 2);
        }
        writer.join().unwrap();
    }
}
