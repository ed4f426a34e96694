//! Device identity: served by FC 0x2B/0x0E (Read Device Identification) and
//! FC 0x11 (Report Server ID).

use crate::error::ConfigError;
use std::collections::BTreeMap;

/// Object ids of the standard identification objects.
pub mod object {
    /// 0x00 VendorName (basic, mandatory).
    pub const VENDOR_NAME: u8 = 0x00;
    /// 0x01 ProductCode (basic, mandatory).
    pub const PRODUCT_CODE: u8 = 0x01;
    /// 0x02 MajorMinorRevision (basic, mandatory).
    pub const MAJOR_MINOR_REVISION: u8 = 0x02;
    /// 0x03 VendorUrl (regular).
    pub const VENDOR_URL: u8 = 0x03;
    /// 0x04 ProductName (regular).
    pub const PRODUCT_NAME: u8 = 0x04;
    /// 0x05 ModelName (regular).
    pub const MODEL_NAME: u8 = 0x05;
    /// 0x06 UserApplicationName (regular).
    pub const USER_APPLICATION_NAME: u8 = 0x06;
}

/// Longest object value that fits one Read Device Identification response.
pub const MAX_OBJECT_LEN: usize = 244;

/// A device's identification objects and its Report Server ID answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    objects: BTreeMap<u8, Vec<u8>>,
    server_id: Vec<u8>,
    run_indicator: bool,
}

impl Default for Identity {
    fn default() -> Self {
        Self::new()
    }
}

impl Identity {
    /// Empty basic objects (they are mandatory, so they are served as empty
    /// strings until set), server id `[0x00]`, run indicator on.
    pub fn new() -> Self {
        let mut objects = BTreeMap::new();
        objects.insert(object::VENDOR_NAME, Vec::new());
        objects.insert(object::PRODUCT_CODE, Vec::new());
        objects.insert(object::MAJOR_MINOR_REVISION, Vec::new());
        Self {
            objects,
            server_id: vec![0],
            run_indicator: true,
        }
    }

    fn set(mut self, id: u8, value: &str) -> Self {
        let mut v = value.as_bytes().to_vec();
        v.truncate(MAX_OBJECT_LEN);
        self.objects.insert(id, v);
        self
    }

    /// Sets VendorName (0x00); values longer than 244 bytes are cut.
    pub fn vendor_name(self, v: &str) -> Self {
        self.set(object::VENDOR_NAME, v)
    }
    /// Sets ProductCode (0x01).
    pub fn product_code(self, v: &str) -> Self {
        self.set(object::PRODUCT_CODE, v)
    }
    /// Sets MajorMinorRevision (0x02).
    pub fn major_minor_revision(self, v: &str) -> Self {
        self.set(object::MAJOR_MINOR_REVISION, v)
    }
    /// Sets VendorUrl (0x03).
    pub fn vendor_url(self, v: &str) -> Self {
        self.set(object::VENDOR_URL, v)
    }
    /// Sets ProductName (0x04).
    pub fn product_name(self, v: &str) -> Self {
        self.set(object::PRODUCT_NAME, v)
    }
    /// Sets ModelName (0x05).
    pub fn model_name(self, v: &str) -> Self {
        self.set(object::MODEL_NAME, v)
    }
    /// Sets UserApplicationName (0x06).
    pub fn user_application_name(self, v: &str) -> Self {
        self.set(object::USER_APPLICATION_NAME, v)
    }

    /// Sets a regular (0x07..=0x7F) or extended (0x80..=0xFF) object.
    pub fn object(mut self, id: u8, value: impl Into<Vec<u8>>) -> Result<Self, ConfigError> {
        if id < 0x07 {
            return Err(ConfigError::BadIdentityObject(
                id,
                "use the named setter for objects 0x00..=0x06",
            ));
        }
        let v = value.into();
        if v.len() > MAX_OBJECT_LEN {
            return Err(ConfigError::IdentityObjectTooLong(id, v.len()));
        }
        self.objects.insert(id, v);
        Ok(self)
    }

    /// Sets the server id bytes of FC 0x11 (device specific; at most 249 bytes).
    pub fn server_id(mut self, id: impl Into<Vec<u8>>) -> Result<Self, ConfigError> {
        let v = id.into();
        if v.len() > 249 {
            return Err(ConfigError::IdentityObjectTooLong(0x11, v.len()));
        }
        self.server_id = v;
        Ok(self)
    }

    /// Sets the run indicator of FC 0x11 (0xFF on, 0x00 off).
    pub fn run_indicator(mut self, on: bool) -> Self {
        self.run_indicator = on;
        self
    }

    /// The value of object `id`, if set.
    pub fn get(&self, id: u8) -> Option<&[u8]> {
        self.objects.get(&id).map(Vec::as_slice)
    }

    /// All objects with id `>= from`, in id order.
    pub fn objects_from(&self, from: u8) -> impl Iterator<Item = (u8, &[u8])> {
        self.objects.range(from..).map(|(k, v)| (*k, v.as_slice()))
    }

    /// Server id bytes for FC 0x11.
    pub fn server_id_bytes(&self) -> &[u8] {
        &self.server_id
    }

    /// Run indicator for FC 0x11.
    pub fn is_running(&self) -> bool {
        self.run_indicator
    }

    /// Conformity level for FC 0x2B/0x0E: 0x81 basic, 0x82 regular, 0x83
    /// extended (individual access always supported).
    pub fn conformity(&self) -> u8 {
        if self.objects.range(0x80..).next().is_some() {
            0x83
        } else if self.objects.range(0x03..0x80).next().is_some() {
            0x82
        } else {
            0x81
        }
    }
}
