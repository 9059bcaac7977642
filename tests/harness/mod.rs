//! Shared set-up for the behaviour tests: the example and fixture rules, built
//! from `rules/` on first use (cargo rebuilds them only when stale).

#![allow(dead_code)] // each test binary uses part of the harness

pub mod mosquitto;
pub mod moto;
pub mod pki;
pub mod recorder;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn repository_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ sits in the repository root")
}

/// The built `.wasm` of rule crate `name` (e.g. `humidity-alert`).
pub fn rule_module(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(build_rules);
    dir.join(format!("{}.wasm", name.replace('-', "_")))
}

fn build_rules() -> PathBuf {
    let root = repository_root();
    let target_dir = root.join("rules/target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(root.join("rules/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .expect("running cargo to build the rules");
    assert!(
        status.success(),
        "building the rules failed; is the target installed? `rustup target add wasm32-wasip2`"
    );
    target_dir.join("wasm32-wasip2/release")
}

/// What the `versioned` fixture writes before each payload, as built.
pub const VERSION_LABEL: &[u8] = b"version:00000000";

/// The `versioned` fixture with its label set to `version`: the same code in
/// new bytes, whose outputs tell which version made them.
pub fn versioned_module(version: u32) -> Vec<u8> {
    let mut bytes = std::fs::read(rule_module("versioned")).expect("reading the versioned fixture");
    let at = bytes
        .windows(VERSION_LABEL.len())
        .position(|window| window == VERSION_LABEL)
        .expect("the label sits in the module's data");
    let label = format!("version:{version:08}");
    bytes[at..at + VERSION_LABEL.len()].copy_from_slice(label.as_bytes());
    bytes
}

/// Writes `bytes` over `path` as deploy tools do: beside it, then renamed.
pub fn replace_file(path: &Path, bytes: &[u8]) {
    let temporary = path.with_extension("partial");
    std::fs::write(&temporary, bytes).expect("writing beside the file");
    std::fs::rename(&temporary, path).expect("renaming over the file");
}

/// Sends `signal` (`TERM`, `HUP`, ...) to process `pid`, as a service manager
/// would.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Stops a gateway process with SIGTERM and checks that it exited cleanly.
pub fn terminate(mut process: std::process::Child) {
    send_signal(process.id(), "TERM");
    let status = process.wait().expect("reaping the process");
    assert!(status.success(), "exited with {status}");
}
