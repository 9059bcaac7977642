//! Host-side bindings generated from `wit/rule.wit`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "rule",
});

pub use rulegate::rule::host::Level;
pub use rulegate::rule::types;
