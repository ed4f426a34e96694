//! The crate's promise: no async runtime anywhere in its dependency tree.
//!
//! Runs `cargo tree` on this crate (normal dependencies, every feature,
//! every target platform) and fails if a runtime or futures crate shows up.

use std::process::Command;

/// Crates that would mean an async runtime (or its plumbing) came in.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "tokio-util",
    "tokio-serial",
    "mio",
    "mio-serial",
    "async-std",
    "async-io",
    "async-executor",
    "async-task",
    "smol",
    "futures",
    "futures-core",
    "futures-util",
    "futures-executor",
    "futures-io",
    "futures-lite",
];

#[test]
fn dependency_tree_has_no_async_runtime() {
    let cargo = std::env::var("CARGO")
        .ok()
        .or_else(|| option_env!("CARGO").map(str::to_owned))
        .unwrap_or_else(|| "cargo".to_owned());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = Command::new(cargo)
        .args(["tree", "--manifest-path", manifest, "-p", "coilwork-blocking"])
        .args(["-e", "normal", "--all-features", "--target", "all", "--prefix", "none"])
        .arg("--locked")
        .output()
        .expect("run cargo tree");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(
        names.contains(&"coilwork-blocking"),
        "tree lists the crate itself:\n{text}"
    );
    assert!(names.contains(&"socket2"), "tree lists its dependencies:\n{text}");
    let found: Vec<&str> = names.iter().copied().filter(|n| FORBIDDEN.contains(n)).collect();
    assert!(
        found.is_empty(),
        "async crates in the dependency tree: {found:?}\n{text}"
    );
}
