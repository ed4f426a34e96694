//! Register maps in CSV (`--register-map plant.csv`): one row per value,
//! columns `address,type,access,value,action,parameters,name`, read into
//! the same device configuration as pymodbus's JSON.
//!
//! Every error names the file, the line and the column.

use crate::config::{AddrSpec, DefaultsConfig, DeviceConfig, SetupConfig, TypeEntry};
use crate::device::SimDevice;
use crate::error::ConfigError;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The columns a register map may have (`address` and `type` are required).
pub const COLUMNS: [&str; 7] = ["address", "type", "access", "value", "action", "parameters", "name"];

/// The last address a Modbus request can reach.
const MAX_ADDRESS: u64 = 0xFFFF;

const TYPES: [&str; 7] = ["bits", "int16", "uint16", "uint32", "float32", "float64", "string"];

/// A device read from CSV, with the names of its values and where each
/// configuration entry came from.
#[derive(Debug, Clone)]
pub struct RegisterMap {
    /// The device, as if written in JSON (one block shared by the four tables).
    pub device: DeviceConfig,
    /// `(address, name)` of every named value.
    pub names: Vec<(usize, String)>,
    /// Line of each entry: `(section, index in it, line)`.
    lines: Vec<(String, usize, usize)>,
}

/// A line's error: `(line, column, value, reason)`.
type RowError = (usize, String, String, String);

impl RegisterMap {
    /// Reads the CSV file at `path`. The error is one line naming the file,
    /// line and column.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|(line, column, value, why)| {
            format!("{} line {line}, column {column}: {value}: {why}", path.display())
        })
    }

    /// Parses register-map CSV text and builds its device as `--register-map`
    /// does for a file (no custom actions, real time; `series` files are
    /// resolved against `base_dir`). The error is one line naming the line and
    /// column. The in-process entry for fuzzing and tests.
    pub fn build_text(text: &str, base_dir: Option<&Path>) -> Result<(Self, SimDevice), String> {
        let here = Path::new("register map");
        let map = Self::parse(text)
            .map_err(|(line, column, value, why)| format!("line {line}, column {column}: {value}: {why}"))?;
        let device = SimDevice::build_in("device", &map.device, &[], base_dir, 1.0)
            .map_err(|e| map.locate(here, &e))?
            .with_names(map.names.clone());
        Ok((map, device))
    }

    /// Parses CSV text.
    fn parse(text: &str) -> Result<Self, RowError> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
        let (_, header) = lines.next().ok_or_else(|| {
            (
                1,
                "header".to_owned(),
                "(empty)".to_owned(),
                "no header line".to_owned(),
            )
        })?;
        let columns = header_columns(header)?;
        let mut map = Self {
            device: empty_device(),
            names: Vec::new(),
            lines: Vec::new(),
        };
        let mut last = 0u64;
        for (n, line) in lines {
            let fields = split(line).map_err(|why| (n + 1, "(line)".into(), format!("{line:?}"), why))?;
            if fields.len() > columns.len() {
                return Err((
                    n + 1,
                    "(line)".into(),
                    format!("{} fields", fields.len()),
                    format!("the header has {}", columns.len()),
                ));
            }
            let row = Row {
                line: n + 1,
                columns: &columns,
                fields,
            };
            last = last.max(map.add(&row)?);
        }
        if map.lines.is_empty() {
            return Err((1, "header".into(), format!("{header:?}"), "no register rows".into()));
        }
        let size = usize::try_from(last.saturating_add(1)).unwrap_or(usize::MAX);
        let setup = &mut map.device.setup;
        (setup.co_size, setup.di_size, setup.hr_size, setup.ir_size) = (size, size, size, size);
        Ok(map)
    }

    /// Adds one row; the last register it covers.
    fn add(&mut self, row: &Row<'_>) -> Result<u64, RowError> {
        let ty = row.get("type");
        if !TYPES.contains(&ty) {
            return Err(row.bad("type", ty, &format!("not a type (one of: {})", TYPES.join(", "))));
        }
        let value = row.value(ty)?;
        let addr = row.address(ty, value.as_ref())?;
        let writable = match row.get("access") {
            "" | "r" | "R" => false,
            "rw" | "RW" | "w" | "W" => true,
            other => return Err(row.bad("access", other, "expected r or rw")),
        };
        let action = match row.get("action") {
            "" => Some(None),
            a => Some(Some(a.to_owned())),
        };
        let parameters = match row.get("parameters") {
            "" => None,
            p => match serde_json::from_str::<Value>(p) {
                Ok(Value::Object(m)) => Some(m),
                _ => return Err(row.bad("parameters", p, "expected a JSON object, e.g. {\"period_s\": 60}")),
            },
        };
        let name = row.get("name");
        if !name.is_empty() {
            check_name(name).map_err(|why| row.bad("name", name, why))?;
            if self.names.iter().any(|(_, n)| n == name) {
                return Err(row.bad("name", name, "used by an earlier row"));
            }
            self.names.push((addr.first as usize, name.to_owned()));
        }
        let entry = TypeEntry {
            addr,
            value,
            action,
            parameters,
        };
        let section = section_mut(&mut self.device, ty);
        self.lines.push((ty.to_owned(), section.len(), row.line));
        section.push(entry);
        if writable {
            self.lines.push(("write".to_owned(), self.device.write.len(), row.line));
            self.device.write.push(addr);
        }
        Ok(addr.last)
    }

    /// Turns an error of the device built from this map (its keys are
    /// `device_list.NAME.SECTION[i].FIELD`) into one naming `file`'s line and column.
    pub fn locate(&self, file: &Path, error: &ConfigError) -> String {
        let key = error.key.as_str();
        let found = self.lines.iter().find_map(|(sec, i, line)| {
            let marker = format!(".{sec}[{i}]");
            let at = key.find(&marker)?;
            let rest = key.get(at + marker.len()..).unwrap_or("").trim_start_matches('.');
            Some((*line, column_of(sec, rest)))
        });
        match found {
            Some((line, column)) => format!(
                "{} line {line}, column {column}: {}: {}",
                file.display(),
                error.value,
                error.reason
            ),
            None => format!("{}: {error}", file.display()),
        }
    }
}

/// The CSV column a configuration field comes from.
fn column_of(section: &str, field: &str) -> String {
    match field {
        _ if section == "write" => "access".into(),
        "" | "addr" => "address".into(),
        "file" => "parameters.file".into(),
        f if f.starts_with("parameters") => f.to_owned(),
        f => f.to_owned(),
    }
}

/// A name must not look like an address and must fit in a URL path.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return Err("a name must not be a number (it would read as an address)");
    }
    if name.chars().any(|c| !(c.is_alphanumeric() || "_-.:".contains(c))) {
        return Err("a name has letters, digits and _ - . : only");
    }
    Ok(())
}

fn header_columns(header: &str) -> Result<Vec<String>, RowError> {
    let columns: Vec<String> = split(header)
        .map_err(|why| (1, "header".to_owned(), format!("{header:?}"), why))?
        .into_iter()
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    for c in &columns {
        if !COLUMNS.contains(&c.as_str()) {
            return Err((
                1,
                "header".into(),
                format!("{c:?}"),
                format!("unknown column (columns: {})", COLUMNS.join(",")),
            ));
        }
        if columns.iter().filter(|x| *x == c).count() > 1 {
            return Err((1, "header".into(), format!("{c:?}"), "column given twice".into()));
        }
    }
    for required in ["address", "type"] {
        if !columns.iter().any(|c| c == required) {
            return Err((
                1,
                "header".into(),
                format!("{header:?}"),
                format!("no {required:?} column"),
            ));
        }
    }
    Ok(columns)
}

/// Splits a CSV line: fields separated by commas, `"quoted, with "" for a quote"`.
fn split(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (false, '"') if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            (false, ',') => fields.push(std::mem::take(&mut field).trim().to_owned()),
            (_, c) => field.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    fields.push(field.trim().to_owned());
    Ok(fields)
}

struct Row<'a> {
    line: usize,
    columns: &'a [String],
    fields: Vec<String>,
}

impl Row<'_> {
    fn get(&self, column: &str) -> &str {
        self.columns
            .iter()
            .position(|c| c == column)
            .and_then(|i| self.fields.get(i))
            .map_or("", String::as_str)
    }

    fn bad(&self, column: &str, value: &str, why: &str) -> RowError {
        (self.line, column.to_owned(), format!("{value:?}"), why.to_owned())
    }

    /// The `value` column as JSON of the type (empty: none, the default applies).
    fn value(&self, ty: &str) -> Result<Option<Value>, RowError> {
        let v = self.get("value");
        if v.is_empty() {
            return Ok(None);
        }
        let parsed = match ty {
            "string" => Some(Value::String(v.to_owned())),
            "float32" | "float64" => v
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number),
            _ => v.parse::<i64>().ok().map(Value::from),
        };
        parsed
            .map(Some)
            .ok_or_else(|| self.bad("value", v, &format!("not a {ty} value")))
    }

    /// `N` (the value's registers from N) or `N-M`.
    fn address(&self, ty: &str, value: Option<&Value>) -> Result<AddrSpec, RowError> {
        let a = self.get("address");
        let bad = |why: &str| self.bad("address", a, why);
        let number = |s: &str| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| bad("expected an address N or a range N-M"))
        };
        // Checked: a 20-digit address must be an error, not an overflow.
        let past = || bad("past the last Modbus address, 65535");
        if let Some((first, last)) = a.split_once('-') {
            let (first, last) = (number(first)?, number(last)?);
            if first > last {
                return Err(bad("the range ends before it starts"));
            }
            if last > MAX_ADDRESS {
                return Err(past());
            }
            return Ok(AddrSpec { first, last });
        }
        let first = number(a)?;
        let registers = match ty {
            "uint32" | "float32" => 2,
            "float64" => 4,
            "string" => value.and_then(Value::as_str).map_or(1, |s| s.len().div_ceil(2).max(1)) as u64,
            _ => 1,
        };
        let last = first
            .checked_add(registers - 1)
            .filter(|last| *last <= MAX_ADDRESS)
            .ok_or_else(past)?;
        Ok(AddrSpec { first, last })
    }
}

fn section_mut<'a>(d: &'a mut DeviceConfig, ty: &str) -> &'a mut Vec<TypeEntry> {
    let slot = match ty {
        "bits" => &mut d.bits,
        "int16" => &mut d.int16,
        "uint32" => &mut d.uint32,
        "float32" => &mut d.float32,
        "float64" => &mut d.float64,
        "string" => &mut d.string,
        _ => &mut d.uint16,
    };
    slot.get_or_insert_with(Vec::new)
}

fn empty_device() -> DeviceConfig {
    let mut value = Map::new();
    let mut action = BTreeMap::new();
    for ty in TYPES {
        value.insert(
            ty.to_owned(),
            if ty == "string" {
                Value::from(" ")
            } else {
                Value::from(0)
            },
        );
        action.insert(ty.to_owned(), None);
    }
    DeviceConfig {
        setup: SetupConfig {
            co_size: 0,
            di_size: 0,
            hr_size: 0,
            ir_size: 0,
            shared_blocks: true,
            type_exception: true,
            defaults: DefaultsConfig { value, action },
        },
        invalid: Vec::new(),
        write: Vec::new(),
        bits: None,
        int16: None,
        uint16: None,
        uint32: None,
        float32: None,
        float64: None,
        string: None,
        repeat: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_typed_entries() {
        let map = RegisterMap::parse(
            "address,type,access,value,action,parameters,name\n\
             0,uint16,rw,7,,,setpoint\n\
             # a comment\n\
             2,float32,r,21.5,sine,\"{\"\"period_s\"\": 60, \"\"min\"\": 18, \"\"max\"\": 24}\",room_temp\n\
             10-13,string,r,pump\n",
        )
        .unwrap();
        assert_eq!(map.device.setup.hr_size, 14);
        assert_eq!(map.names, vec![(0, "setpoint".to_owned()), (2, "room_temp".to_owned())]);
        let f = &map.device.float32.as_ref().unwrap()[0];
        assert_eq!((f.addr.first, f.addr.last), (2, 3));
        assert_eq!(f.action, Some(Some("sine".into())));
        assert_eq!(f.parameters.as_ref().unwrap()["max"], 24);
        assert_eq!(map.device.write, vec![AddrSpec { first: 0, last: 0 }]);
    }

    #[test]
    fn bad_rows_name_line_and_column() {
        for (text, expected) in [
            ("address,type\n0,uint8\n", (2, "type")),
            ("address,type,value\n0,uint16,x\n", (2, "value")),
            ("address,type\n\n0,uint16\nfive,uint16\n", (4, "address")),
            ("address,type,access\n0,uint16,write\n", (2, "access")),
            ("address,type,parameters\n0,uint16,[1]\n", (2, "parameters")),
            ("address,type,name\n0,uint16,a\n1,uint16,a\n", (3, "name")),
            ("address,type,name\n0,uint16,42\n", (2, "name")),
            ("address,kind\n", (1, "header")),
            ("address,type\n0,uint16,1\n", (2, "(line)")),
            ("address,type\n0,\"uint16\n", (2, "(line)")),
            // These panicked (add overflow) before; found while writing the
            // sim_csv fuzz target, kept in fuzz/seeds/sim_csv as crash-* too.
            ("address,type\n18446744073709551615,uint32\n", (2, "address")),
            ("address,type\n0-18446744073709551615,uint16\n", (2, "address")),
            ("address,type\n65535,float32\n", (2, "address")),
        ] {
            let e = RegisterMap::parse(text).unwrap_err();
            assert_eq!((e.0, e.1.as_str()), expected, "{text:?}: {e:?}");
        }
    }

    #[test]
    fn an_unknown_parameter_with_a_newline_is_named_on_one_line() {
        // Found by the sim_csv fuzz smoke in CI (kept in fuzz/seeds/sim_csv):
        // a JSON key holding a newline went raw into the column name.
        let text = "address,type,action,parameters\n0,uint16,ramp,\"{\"\"a\\nb\"\": 0}\"\n";
        let Err(e) = RegisterMap::build_text(text, None) else {
            panic!("an unknown parameter is refused")
        };
        assert!(!e.contains('\n'), "{e:?}");
        assert!(e.contains("line 2, column parameters.a\\nb"), "{e:?}");
    }
}
