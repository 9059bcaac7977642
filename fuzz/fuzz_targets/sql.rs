//! Any text as a rule's SQL and as a substitution template: parsed, and when
//! it parses, evaluated against the reference reading. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rulegate_sql::{MessageContext, Payload, Statement, Template};

const READING: &[u8] = br#"{"name":"soilSensor3","humidity":29,"timeStampEpoch":1598536072677,"timeStampIso":"2020-08-27T13:47:52.677721"}"#;

fuzz_target!(|text: &str| {
    let _ = Template::compile(text);
    let Ok(statement) = Statement::parse(text) else {
        return;
    };
    let payload = Payload::parse(READING);
    let message = MessageContext::new("device/soilSensor3/devicePayload", &payload, READING);
    if let Some(selected) = statement.evaluate(&message) {
        let _ = selected.to_json_line(&message);
    }
});
