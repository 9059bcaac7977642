//! Fuzzes the statement parser and template compiler; statements that parse are also evaluated
//! against a fixed JSON message, so the evaluator is covered too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rulegate_sql::{MessageContext, Payload, Statement, Template};

const PAYLOAD: &[u8] = br#"{"a":1,"b":"two","c":[1,2.5,{"d":null}],"e":{"f":true}}"#;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Template::compile(text);
    if let Ok(statement) = Statement::parse(text) {
        let payload = Payload::parse(PAYLOAD);
        let message = MessageContext::new("a/b/c", &payload, PAYLOAD);
        if let Some(selected) = statement.evaluate(&message) {
            let _ = selected.to_json_line(&message);
        }
    }
});
