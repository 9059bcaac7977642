//! Hands every message to the rule's actions unchanged: SQL does all the work.

use rulegate_sdk::prelude::*;

#[rule]
fn passthrough(msg: Message) -> Result<Vec<Output>> {
    Ok(vec![Emit::new(msg.payload).into()])
}
