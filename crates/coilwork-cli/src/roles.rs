//! `--roles FILE`: the Modbus/TCP Security role policy, read at start.

use coilwork_core::role_policy::RolePolicy;
use std::path::Path;
use std::sync::Arc;

/// Reads and checks a role policy file; the error names the file, line and
/// reason (or why the file cannot be read), so the command exits before
/// opening any socket.
pub fn load(path: &Path) -> Result<Arc<RolePolicy>, String> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read role policy {name}: {e}"))?;
    let policy = RolePolicy::parse(&name, &text).map_err(|e| format!("role policy {e}"))?;
    Ok(Arc::new(policy))
}

/// One line for the start message: how many roles, and the "no role" entry.
pub fn summary(policy: &RolePolicy) -> String {
    let no_role = if policy.rights(None).is_some() {
        "an entry for clients without a role"
    } else {
        "nothing for clients without a role"
    };
    format!("role policy: {} role(s), {no_role}; all else denied", policy.len())
}
