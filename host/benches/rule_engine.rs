//! Cost of the Wasm stage: one `on-message` call of `humidity-alert` on the
//! reference payload with a reused instance (and of `passthrough`, whose rule
//! does next to nothing: the call's own cost), loading a cached module, and
//! creating an instance (alone, and with the drop of the previous one). Also
//! the whole computation one message takes on one core, without the queues,
//! threads and outbox of the pipeline bench: parsing what the rule reads of
//! the payload, the rule's SQL, and the module call. Run with
//! `cargo bench -p rulegate --bench rule_engine`.

#[path = "../../tests/harness/mod.rs"]
mod harness;

use criterion::{Criterion, criterion_group, criterion_main};
use rulegate::engine::{EngineOptions, RuleConfig, RuleEngine, RuleLimits};
use rulegate::message::Message;
use rulegate_sql::{MessageContext, Payload, Statement};
use std::hint::black_box;

const REFERENCE_PAYLOAD: &str = r#"{"name":"soilSensor3","humidity":29,"timeStampEpoch":1598536072677,"timeStampIso":"2020-08-27T13:47:52.677721"}"#;

fn rule_engine(c: &mut Criterion) {
    let cache = tempfile::tempdir().expect("creating a cache directory");
    let engine = RuleEngine::new(EngineOptions {
        cache_dir: Some(cache.path().to_owned()),
        // `iter_with_large_drop` keeps a whole batch of instances alive (several
        // thousand during warm-up), and each needs a slot of the pool.
        max_instances: 16_384,
        ..EngineOptions::default()
    })
    .expect("creating the engine");
    let path = harness::rule_module("humidity-alert");
    let module = engine.load_file(&path).expect("loading humidity-alert");

    let mut instance = module
        .instantiate("humidity-alert", RuleConfig::new(), RuleLimits::default())
        .expect("starting humidity-alert");
    let message = Message {
        topic: "device/soilSensor3/devicePayload".into(),
        payload: REFERENCE_PAYLOAD.into(),
        ..Message::default()
    };
    c.bench_function("on_message/humidity_alert", |b| {
        b.iter(|| instance.on_message(black_box(&message)).expect("rule call"))
    });
    // The same call of a rule that hands the payload back: what the call
    // itself costs, lowering the message and lifting the output included.
    let passthrough = engine
        .load_file(&harness::rule_module("passthrough"))
        .expect("loading passthrough");
    let mut passthrough = passthrough
        .instantiate("passthrough", RuleConfig::new(), RuleLimits::default())
        .expect("starting passthrough");
    c.bench_function("on_message/passthrough", |b| {
        b.iter(|| {
            passthrough
                .on_message(black_box(&message))
                .expect("rule call")
        })
    });

    // What the router and the rule's worker compute for one message.
    let statement = Statement::parse("SELECT * FROM 'device/+/devicePayload' WHERE humidity < 35")
        .expect("the humidity rule's SQL");
    let reads = statement.payload_fields();
    let mut selected_message = Message::default();
    c.bench_function("message_path/sql_and_wasm", |b| {
        b.iter(|| {
            let raw = black_box(REFERENCE_PAYLOAD.as_bytes());
            let payload = Payload::parse_fields(raw, &reads);
            let context = MessageContext::new(&message.topic, &payload, raw);
            let selected = statement
                .evaluate(&context)
                .expect("humidity 29 is selected");
            selected_message.topic.clone_from(&message.topic);
            selected_message.payload.clear();
            selected_message
                .payload
                .extend_from_slice(&selected.to_bytes(raw));
            instance.on_message(&selected_message).expect("rule call")
        })
    });

    c.bench_function("load/cached_module", |b| {
        b.iter(|| engine.load_file(black_box(&path)).expect("cached load"))
    });

    let instantiate = || {
        module
            .instantiate("humidity-alert", RuleConfig::new(), RuleLimits::default())
            .expect("instantiate")
    };
    // Creation alone (the instance is dropped outside the timing), then the
    // whole cycle a trapped instance goes through: drop and create again.
    c.bench_function("instantiate/humidity_alert", |b| {
        b.iter_with_large_drop(instantiate)
    });
    c.bench_function("instantiate_and_drop/humidity_alert", |b| {
        b.iter(instantiate)
    });
}

criterion_group!(benches, rule_engine);
criterion_main!(benches);
