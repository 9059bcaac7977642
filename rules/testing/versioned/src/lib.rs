//! A test fixture for hot reload: prefixes each payload with a version label
//! kept in the module's data, `version:00000000|<payload>`. Tests make new
//! versions of the module by overwriting the eight digits in the `.wasm` file,
//! so every output tells which version of the module produced it.

use rulegate_sdk::prelude::*;

/// Read through `black_box`, so it stays a data segment the tests can find and
/// rewrite instead of being folded into the code.
static VERSION_LABEL: [u8; 16] = *b"version:00000000";

#[rule]
fn versioned(msg: Message) -> Result<Vec<Output>> {
    let label = core::hint::black_box(&VERSION_LABEL);
    let mut payload = Vec::with_capacity(label.len() + 1 + msg.payload.len());
    payload.extend_from_slice(label);
    payload.push(b'|');
    payload.extend_from_slice(&msg.payload);
    Ok(vec![Emit::new(payload).into()])
}
