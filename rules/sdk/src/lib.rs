//! Write rulegate rules in Rust.
//!
//! A rule is one function marked `#[rule]`: it receives each [`Message`] the rule's SQL
//! statement selected and returns the [`Output`]s for the gateway to deliver. The SDK
//! hides the WebAssembly component ABI; build the crate as a `cdylib` for
//! `wasm32-wasip2` and the resulting `.wasm` is a rule.
//!
//! ```ignore
//! use rulegate_sdk::prelude::*;
//!
//! #[rule]
//! fn passthrough(msg: Message) -> Result<Vec<Output>> {
//!     Ok(vec![Emit::new(msg.payload).into()])
//! }
//! ```

pub mod config;
pub mod log;
mod message;

/// The bindings generated from `wit/rule.wit`. Rules use the re-exports below;
/// the `#[rule]` attribute uses the export macro.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "rule",
        pub_export_macro: true,
        export_macro_name: "__export_rule",
        default_bindings_module: "::rulegate_sdk::bindings",
    });
}

pub use bindings::rulegate::rule::types::{
    Emit, Message, Output, Property, Publish, Qos, RuleError,
};
pub use rulegate_sdk_macros::rule;

/// The result type of rule functions.
pub type Result<T, E = RuleError> = core::result::Result<T, E>;

/// Wall-clock time in milliseconds since the Unix epoch, from the gateway.
pub fn now_ms() -> u64 {
    bindings::rulegate::rule::host::now_ms()
}

/// Everything a rule usually needs, in one import.
pub mod prelude {
    pub use crate::{Emit, Message, Output, Publish, Qos, Result, RuleError, config, log, rule};
    pub use serde::{Deserialize, Serialize};
    pub use serde_json::{Value, json};
}
