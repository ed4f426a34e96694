//! Modbus/TCP Security role policy: which role may do what, from a TOML file.
//!
//! The spec (R-27/R-28) leaves the mapping from roles to rights to the user.
//! A [`RolePolicy`] is that mapping, parsed from TOML text with
//! [`RolePolicy::parse`], and is an [`Authorizer`]: install it with
//! [`EngineBuilder::authorizer`](crate::EngineBuilder::authorizer). Deny is
//! the default; a denied request gets exception 01 (R-31).
//!
//! ```toml
//! [[role]]
//! name = "operator"                  # the certificate's role (1.3.6.1.4.1.50316.802.1)
//! units = [1, "10-19"]               # unit ids: numbers or "first-last"
//! access = ["read"]                  # classes allowed: "read", "write"
//! functions = [6]                    # and/or function codes allowed
//! holding_registers = ["0-99"]       # addresses per table; a table left out is denied
//! input_registers = ["0-65535"]
//!
//! [no_role]                          # clients whose certificate has no role
//! units = [1]
//! access = ["read"]
//! input_registers = ["0-9"]
//! ```
//!
//! A request is allowed when its role has an entry (or, without a role, the
//! `[no_role]` entry exists), its unit is listed, its function code is listed
//! or its class (read or write) is, and every address it touches lies in one
//! listed range of its table (adjacent ranges join). Requests without a table
//! (FC8, FC17, FC43 ...) need only the unit and the function or class.
//!
//! The text is refused, with its line and reason, for an unknown key, a
//! value of the wrong type, an empty range (`"10-5"`) or an empty list, ranges
//! that overlap within one list, a role listed twice, or a role entry with no
//! name. Sans-IO: the caller reads the file and passes its name for messages.
//! Available with the `role-policy` feature.

use crate::engine::{Access, AccessRequest, Authorizer};
use crate::storage::Table;
use serde::Deserialize;
use std::collections::HashMap;
use toml::Spanned;

/// Why a policy text was refused: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct PolicyError {
    /// The file name the caller gave.
    pub file: String,
    /// One-based line of the offending item.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// The rights of one role: units, functions or classes, and address ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rights {
    units: [u64; 4],
    functions: [u64; 4],
    read: bool,
    write: bool,
    /// Sorted, joined, inclusive ranges per table (coils, discrete inputs,
    /// holding registers, input registers).
    tables: [Vec<(u16, u16)>; 4],
}

/// A parsed role policy; an [`Authorizer`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolePolicy {
    roles: HashMap<String, Rights>,
    no_role: Option<Rights>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePolicy {
    #[serde(default)]
    role: Vec<Spanned<FileEntry>>,
    no_role: Option<Spanned<FileEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    name: Option<Spanned<String>>,
    units: Option<Spanned<Vec<Spanned<RangeSpec>>>>,
    functions: Option<Spanned<Vec<Spanned<u8>>>>,
    access: Option<Spanned<Vec<Spanned<ClassSpec>>>>,
    coils: Option<Spanned<Vec<Spanned<RangeSpec>>>>,
    discrete_inputs: Option<Spanned<Vec<Spanned<RangeSpec>>>>,
    holding_registers: Option<Spanned<Vec<Spanned<RangeSpec>>>>,
    input_registers: Option<Spanned<Vec<Spanned<RangeSpec>>>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RangeSpec {
    One(i64),
    Span(String),
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum ClassSpec {
    Read,
    Write,
}

/// Locates byte offsets of the text as lines, for messages.
struct Source<'a> {
    file: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn error(&self, offset: usize, reason: impl Into<String>) -> PolicyError {
        let before = self.text.get(..offset).unwrap_or(self.text);
        PolicyError {
            file: self.file.to_owned(),
            line: before.matches('\n').count().saturating_add(1),
            reason: reason.into(),
        }
    }
}

impl RolePolicy {
    /// Parses a policy from TOML `text`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, PolicyError> {
        let src = Source { file, text };
        let parsed: FilePolicy = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            src.error(offset, e.message().trim_end().to_owned())
        })?;
        let mut roles = HashMap::with_capacity(parsed.role.len());
        for entry in &parsed.role {
            let Some(name) = &entry.get_ref().name else {
                return Err(src.error(entry.span().start, "a [[role]] entry needs a name"));
            };
            let rights = rights(&src, entry.get_ref())?;
            if roles.insert(name.get_ref().clone(), rights).is_some() {
                let reason = format!("role {:?} is listed twice", name.get_ref());
                return Err(src.error(name.span().start, reason));
            }
        }
        let no_role = match &parsed.no_role {
            None => None,
            Some(entry) => {
                if let Some(name) = &entry.get_ref().name {
                    return Err(src.error(name.span().start, "[no_role] takes no name"));
                }
                Some(rights(&src, entry.get_ref())?)
            }
        };
        Ok(Self { roles, no_role })
    }

    /// The rights of a role (`None`: the "no role" entry), if it has an entry.
    pub fn rights(&self, role: Option<&str>) -> Option<&Rights> {
        match role {
            Some(role) => self.roles.get(role),
            None => self.no_role.as_ref(),
        }
    }

    /// Number of named roles.
    pub fn len(&self) -> usize {
        self.roles.len()
    }

    /// True if there is no named role and no "no role" entry (denies all).
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty() && self.no_role.is_none()
    }
}

impl Authorizer for RolePolicy {
    fn authorize(&self, request: &AccessRequest<'_>) -> bool {
        self.rights(request.role).is_some_and(|r| r.allows(request))
    }
}

fn bit(set: &[u64; 4], n: u8) -> bool {
    set.get(usize::from(n >> 6))
        .is_some_and(|w| w & (1u64 << (n & 63)) != 0)
}

fn set_bit(set: &mut [u64; 4], n: u8) {
    if let Some(w) = set.get_mut(usize::from(n >> 6)) {
        *w |= 1u64 << (n & 63);
    }
}

const fn table_index(table: Table) -> usize {
    match table {
        Table::Coils => 0,
        Table::DiscreteInputs => 1,
        Table::HoldingRegisters => 2,
        Table::InputRegisters => 3,
    }
}

impl Rights {
    /// True if these rights allow the access.
    pub fn allows(&self, request: &AccessRequest<'_>) -> bool {
        let class = match request.access {
            Access::Read => self.read,
            Access::Write => self.write,
        };
        if !bit(&self.units, request.unit) || !(class || bit(&self.functions, request.function)) {
            return false;
        }
        let Some((table, range)) = request.data else {
            return true;
        };
        let (first, last) = (range.start(), range.last());
        self.tables
            .get(table_index(table))
            .is_some_and(|ranges| ranges.iter().any(|&(lo, hi)| lo <= first && last <= hi))
    }
}

/// Builds the rights of one entry, checking its lists.
fn rights(src: &Source<'_>, entry: &FileEntry) -> Result<Rights, PolicyError> {
    let mut out = Rights::default();
    let units = entry
        .units
        .as_ref()
        .ok_or_else(|| src.error(entry_offset(entry), "the entry needs `units`"))?;
    for (lo, hi) in ranges(src, units, u16::from(u8::MAX))? {
        for unit in lo..=hi {
            set_bit(&mut out.units, u8::try_from(unit).unwrap_or(u8::MAX));
        }
    }
    if let Some(functions) = &entry.functions {
        non_empty(src, functions)?;
        for code in functions.get_ref() {
            if bit(&out.functions, *code.get_ref()) {
                return Err(src.error(code.span().start, format!("function {} listed twice", code.get_ref())));
            }
            set_bit(&mut out.functions, *code.get_ref());
        }
    }
    if let Some(classes) = &entry.access {
        non_empty(src, classes)?;
        for class in classes.get_ref() {
            let slot = match class.get_ref() {
                ClassSpec::Read => &mut out.read,
                ClassSpec::Write => &mut out.write,
            };
            if *slot {
                return Err(src.error(class.span().start, "access class listed twice"));
            }
            *slot = true;
        }
    }
    let tables = [
        &entry.coils,
        &entry.discrete_inputs,
        &entry.holding_registers,
        &entry.input_registers,
    ];
    for (slot, list) in out.tables.iter_mut().zip(tables) {
        if let Some(list) = list {
            *slot = join(ranges(src, list, u16::MAX)?);
        }
    }
    Ok(out)
}

/// Where an entry's first key is, for an error about the entry as a whole.
fn entry_offset(entry: &FileEntry) -> usize {
    entry
        .name
        .as_ref()
        .map(|n| n.span().start)
        .or_else(|| entry.functions.as_ref().map(|f| f.span().start))
        .or_else(|| entry.access.as_ref().map(|f| f.span().start))
        .unwrap_or(0)
}

fn non_empty<T>(src: &Source<'_>, list: &Spanned<Vec<T>>) -> Result<(), PolicyError> {
    if list.get_ref().is_empty() {
        return Err(src.error(list.span().start, "the list is empty"));
    }
    Ok(())
}

/// The inclusive ranges of a list, each within `0..=max`, none overlapping,
/// sorted by start.
fn ranges(src: &Source<'_>, list: &Spanned<Vec<Spanned<RangeSpec>>>, max: u16) -> Result<Vec<(u16, u16)>, PolicyError> {
    non_empty(src, list)?;
    let mut out: Vec<((u16, u16), usize)> = Vec::with_capacity(list.get_ref().len());
    for item in list.get_ref() {
        let at = item.span().start;
        let range = parse_range(item.get_ref(), max).map_err(|reason| src.error(at, reason))?;
        out.push((range, at));
    }
    out.sort_unstable_by_key(|&((lo, hi), _)| (lo, hi));
    for pair in out.windows(2) {
        if let [((alo, ahi), _), ((blo, bhi), at)] = *pair
            && blo <= ahi
        {
            let reason = format!("range {blo}-{bhi} overlaps range {alo}-{ahi}");
            return Err(src.error(at, reason));
        }
    }
    Ok(out.into_iter().map(|(r, _)| r).collect())
}

/// One range item: a number, `"n"` or `"first-last"`, within `0..=max`.
fn parse_range(item: &RangeSpec, max: u16) -> Result<(u16, u16), String> {
    let number = |n: i64| {
        u16::try_from(n)
            .ok()
            .filter(|&v| v <= max)
            .ok_or_else(|| format!("{n} is out of range 0-{max}"))
    };
    let text_number = |s: &str| {
        let s = s.trim();
        s.parse::<i64>()
            .map_err(|_| format!("{s:?} is not a number"))
            .and_then(number)
    };
    match item {
        RangeSpec::One(n) => number(*n).map(|v| (v, v)),
        RangeSpec::Span(s) => {
            let (lo, hi) = match s.split_once('-') {
                Some((lo, hi)) => (text_number(lo)?, text_number(hi)?),
                None => {
                    let v = text_number(s)?;
                    (v, v)
                }
            };
            if lo > hi {
                return Err(format!("range {s:?} is empty (first above last)"));
            }
            Ok((lo, hi))
        }
    }
}

/// Joins adjacent sorted, non-overlapping ranges (0-9 and 10-19 become 0-19).
fn join(sorted: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(sorted.len());
    for (lo, hi) in sorted {
        match out.last_mut() {
            Some(last) if u32::from(last.1).saturating_add(1) == u32::from(lo) => last.1 = hi,
            _ => out.push((lo, hi)),
        }
    }
    out
}
