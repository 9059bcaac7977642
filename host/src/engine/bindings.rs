//! Host-side bindings generated from `wit/rule.wit`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "rule",
});

pub use self::rulegate::rule::host::Level;
pub use self::rulegate::rule::types;
