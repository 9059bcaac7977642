//! Any bytes as a message payload, through statements that use most of the
//! SQL (projections, nested selects, functions, casts). Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rulegate_sql::{MessageContext, Payload, Statement};
use std::sync::OnceLock;

const STATEMENTS: &[&str] = &[
    "SELECT * FROM 'device/+/devicePayload' WHERE humidity < 35",
    "SELECT topic(2) AS device, humidity, name || '-' || timeStampIso AS label FROM '#'",
    "SELECT VALUE (SELECT v, upper(n) AS u FROM readings WHERE v > 3) FROM '#'",
    "SELECT get(a, 0).b[1], substring(name, 1, 4), cast(humidity AS Int) AS h FROM '#'",
    "SELECT encode(*, 'base64') AS raw, md5(name) AS m, regexp_replace(name, '[0-9]+', 'N') AS r FROM '#'",
    "SELECT parse_time('yyyy', timeStampEpoch) AS y, abs(humidity) AS a, sqrt(humidity) AS s FROM '#'",
];

fn statements() -> &'static [Statement] {
    static PARSED: OnceLock<Vec<Statement>> = OnceLock::new();
    PARSED.get_or_init(|| {
        STATEMENTS
            .iter()
            .map(|sql| Statement::parse(sql).expect("the fuzz statements parse"))
            .collect()
    })
}

fuzz_target!(|bytes: &[u8]| {
    let payload = Payload::parse(bytes);
    let message = MessageContext::new("device/soilSensor3/devicePayload", &payload, bytes);
    for statement in statements() {
        if let Some(selected) = statement.evaluate(&message) {
            let _ = selected.to_json_line(&message);
            let _ = selected.to_bytes(bytes);
        }
    }
});
