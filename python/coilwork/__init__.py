"""coilwork: pymodbus's server API, served by the coilwork Rust Modbus stack.

Change ``pymodbus`` to ``coilwork`` in a server's imports; the servers,
data stores, device identity and custom function codes keep their names
and keywords. Plain data blocks are served without entering Python.
"""

import enum

__all__ = ["FramerType", "ModbusDeviceIdentification", "__version__"]
__version__ = "0.1.0"


class FramerType(str, enum.Enum):
    """The framing of a server's requests (pymodbus's ``FramerType``)."""

    SOCKET = "socket"
    RTU = "rtu"
    ASCII = "ascii"
    TLS = "tls"


class ModbusDeviceIdentification:
    """Device identity served by FC43/14 (Read Device Identification) and FC17."""

    _OBJECTS = (
        (0x00, "VendorName"),
        (0x01, "ProductCode"),
        (0x02, "MajorMinorRevision"),
        (0x03, "VendorUrl"),
        (0x04, "ProductName"),
        (0x05, "ModelName"),
        (0x06, "UserApplicationName"),
    )

    def __init__(self, info=None, info_name=None):
        for _, name in self._OBJECTS:
            setattr(self, name, "")
        self._extra = {}
        for key, value in dict(info or {}).items():
            self[key] = value
        for name, value in dict(info_name or {}).items():
            setattr(self, name, value)

    def __setitem__(self, key, value):
        names = dict(self._OBJECTS)
        if key in names:
            setattr(self, names[key], value)
        elif isinstance(key, int) and 0x07 <= key <= 0xFF:
            self._extra[key] = value
        else:
            raise KeyError(f"identification object id {key!r} is not in 0..=255")

    def __getitem__(self, key):
        names = dict(self._OBJECTS)
        return getattr(self, names[key]) if key in names else self._extra[key]

    def update(self, value):
        """Sets several objects from a dict of object id to value."""
        for key, item in dict(value).items():
            self[key] = item

    def _objects(self):
        """(object id, text) pairs to serve; empty optional objects are left out."""
        out = []
        for object_id, name in self._OBJECTS:
            value = getattr(self, name) or ""
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            if value or object_id < 3:
                out.append((object_id, str(value)))
        for object_id, value in sorted(self._extra.items()):
            out.append((object_id, value.decode("latin-1") if isinstance(value, bytes) else str(value)))
        return out

    def __repr__(self):
        return f"ModbusDeviceIdentification({dict(self._objects())!r})"
