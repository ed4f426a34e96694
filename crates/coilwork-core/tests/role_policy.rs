//! Role policy: parsing, refusals with line and reason, and decisions.
#![cfg(feature = "role-policy")]

use coilwork_core::AddressRange;
use coilwork_core::Table;
use coilwork_core::engine::{Access, AccessRequest, Authorizer};
use coilwork_core::role_policy::RolePolicy;

const POLICY: &str = r#"
[[role]]
name = "operator"
units = [1, "10-11"]
access = ["read"]
functions = [6]
holding_registers = ["0-9", "10-19", 100]
input_registers = ["0-65535"]

[[role]]
name = "engineer"
units = ["0-255"]
access = ["read", "write"]
coils = ["0-65535"]
holding_registers = ["0-65535"]

[no_role]
units = [1]
access = ["read"]
input_registers = ["0-9"]
"#;

fn req(
    role: Option<&str>,
    unit: u8,
    function: u8,
    access: Access,
    data: Option<(Table, u16, u16)>,
) -> AccessRequest<'_> {
    AccessRequest {
        role,
        unit,
        function,
        access,
        data: data.and_then(|(t, s, c)| AddressRange::new(s, c).map(|r| (t, r))),
    }
}

fn policy() -> RolePolicy {
    match RolePolicy::parse("p.toml", POLICY) {
        Ok(p) => p,
        Err(e) => panic!("policy refused: {e}"),
    }
}

#[test]
fn reads_within_ranges_are_allowed_and_joined_ranges_count_as_one() {
    let p = policy();
    let op = Some("operator");
    assert!(p.authorize(&req(op, 1, 3, Access::Read, Some((Table::HoldingRegisters, 0, 20)))));
    assert!(p.authorize(&req(op, 11, 4, Access::Read, Some((Table::InputRegisters, 65000, 536)))));
    assert!(p.authorize(&req(op, 1, 3, Access::Read, Some((Table::HoldingRegisters, 100, 1)))));
    // One past the joined range, a gap, an unlisted table, an unlisted unit.
    assert!(!p.authorize(&req(op, 1, 3, Access::Read, Some((Table::HoldingRegisters, 0, 21)))));
    assert!(!p.authorize(&req(op, 1, 3, Access::Read, Some((Table::HoldingRegisters, 99, 2)))));
    assert!(!p.authorize(&req(op, 1, 1, Access::Read, Some((Table::Coils, 0, 1)))));
    assert!(!p.authorize(&req(op, 2, 3, Access::Read, Some((Table::HoldingRegisters, 0, 1)))));
}

#[test]
fn writes_need_the_class_or_the_function_code() {
    let p = policy();
    let op = Some("operator");
    // FC6 is listed; FC16 is a write and the operator has no write class.
    assert!(p.authorize(&req(op, 1, 6, Access::Write, Some((Table::HoldingRegisters, 5, 1)))));
    assert!(!p.authorize(&req(op, 1, 16, Access::Write, Some((Table::HoldingRegisters, 5, 1)))));
    assert!(p.authorize(&req(
        Some("engineer"),
        200,
        15,
        Access::Write,
        Some((Table::Coils, 0, 8))
    )));
    // Functions without a table: unit and class decide.
    assert!(p.authorize(&req(op, 1, 17, Access::Read, None)));
    assert!(!p.authorize(&req(op, 1, 21, Access::Write, None)));
}

#[test]
fn unknown_roles_are_denied_and_no_role_gets_its_entry() {
    let p = policy();
    assert!(!p.authorize(&req(
        Some("intruder"),
        1,
        4,
        Access::Read,
        Some((Table::InputRegisters, 0, 1))
    )));
    assert!(p.authorize(&req(None, 1, 4, Access::Read, Some((Table::InputRegisters, 0, 10)))));
    assert!(!p.authorize(&req(None, 1, 4, Access::Read, Some((Table::InputRegisters, 0, 11)))));
    // Without a [no_role] entry, a client with no role gets nothing.
    let Ok(bare) = RolePolicy::parse("b.toml", "[[role]]\nname = \"a\"\nunits = [1]\naccess = [\"read\"]\n") else {
        panic!("refused");
    };
    assert!(!bare.authorize(&req(None, 1, 17, Access::Read, None)));
    assert!(bare.authorize(&req(Some("a"), 1, 17, Access::Read, None)));
    // An empty file denies everything.
    let Ok(empty) = RolePolicy::parse("e.toml", "") else {
        panic!("refused")
    };
    assert!(empty.is_empty());
    assert!(!empty.authorize(&req(None, 0, 17, Access::Read, None)));
}

/// The error for `text`, as "line: reason".
fn refused(text: &str) -> (usize, String) {
    match RolePolicy::parse("bad.toml", text) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => {
            assert_eq!(e.file, "bad.toml");
            assert!(e.to_string().starts_with(&format!("bad.toml:{}: ", e.line)), "{e}");
            (e.line, e.reason)
        }
    }
}

#[test]
fn bad_files_are_refused_with_line_and_reason() {
    let head = "[[role]]\nname = \"a\"\nunits = [1]\n";
    let (line, reason) = refused(&format!("{head}acess = [\"read\"]\n"));
    assert_eq!(line, 4);
    assert!(reason.contains("unknown field `acess`"), "{reason}");
    let (line, reason) = refused(&format!("{head}coils = [\"0-9\", 2]\n"));
    assert_eq!(line, 4);
    assert!(reason.contains("overlaps"), "{reason}");
    let (line, reason) = refused(&format!("{head}coils = [\n  \"0-9\",\n  \"20-10\"]\n"));
    assert_eq!(line, 6);
    assert!(reason.contains("empty"), "{reason}");
    let (line, reason) = refused(&format!("{head}coils = []\n"));
    assert_eq!(line, 4);
    assert!(reason.contains("empty"), "{reason}");
    let (line, reason) = refused(&format!("{head}\n[[role]]\nname = \"a\"\nunits = [2]\n"));
    assert_eq!(line, 6);
    assert!(reason.contains("listed twice"), "{reason}");
    let (line, reason) = refused("[[role]]\nunits = [1]\n");
    assert_eq!(line, 1);
    assert!(reason.contains("needs a name"), "{reason}");
    let (line, reason) = refused(&format!("{head}holding_registers = [65536]\n"));
    assert_eq!(line, 4);
    assert!(reason.contains("out of range"), "{reason}");
    let (line, reason) = refused("[[role]]\nname = \"a\"\nunits = [256]\n");
    assert_eq!(line, 3);
    assert!(reason.contains("out of range"), "{reason}");
    let (line, reason) = refused(&format!("{head}access = [\"delete\"]\n"));
    assert_eq!(line, 4);
    assert!(reason.contains("unknown variant"), "{reason}");
    let (line, _) = refused("[no_role]\nname = \"x\"\nunits = [1]\n");
    assert_eq!(line, 2);
    let (line, reason) = refused("[nobody]\n");
    assert_eq!(line, 1);
    assert!(reason.contains("unknown field"), "{reason}");
    let (_, reason) = refused("[[role]]\nname = \"a\"\n");
    assert!(reason.contains("units"), "{reason}");
}
