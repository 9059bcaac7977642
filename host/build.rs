//! Packs the binary's relative relocations (DT_RELR) when it is built for, and
//! on, a Linux with glibc 2.36 or newer: the position-independent binary keeps
//! its address randomisation, and the loader no longer reads (and keeps
//! resident) a 1.2 MB relocation table at start (docs/performance.md).
//!
//! A packed binary needs glibc 2.36 where it runs. A glibc binary already needs
//! about the glibc it was linked against, so the rule stays the usual one:
//! build on the oldest system you deploy to (Amazon Linux 2023 and RHEL 9 have
//! glibc 2.34: built there, the binary is not packed), or set
//! `RULEGATE_PACK_RELOCATIONS=no` to build for an older glibc on a newer one.
//! Cross builds get their linker's options from .cargo/config.toml instead.

use std::env;
use std::process::Command;

/// The first glibc whose loader reads packed relative relocations.
const FIRST_GLIBC_WITH_RELR: (u32, u32) = (2, 36);

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=RULEGATE_PACK_RELOCATIONS");
    let wanted = env::var("RULEGATE_PACK_RELOCATIONS").as_deref() != Ok("no");
    let target = env::var("TARGET").unwrap_or_default();
    let native = env::var("HOST").is_ok_and(|host| host == target);
    if wanted
        && native
        && target.ends_with("-linux-gnu")
        && build_machine_glibc().is_some_and(|version| version >= FIRST_GLIBC_WITH_RELR)
    {
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// The build machine's glibc version, from `getconf GNU_LIBC_VERSION`
/// ("glibc 2.36"); `None` when that does not answer.
fn build_machine_glibc() -> Option<(u32, u32)> {
    let output = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let mut numbers = text.trim().strip_prefix("glibc ")?.split('.');
    Some((numbers.next()?.parse().ok()?, numbers.next()?.parse().ok()?))
}
