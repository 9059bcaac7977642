//! Per-message cost of the SQL stage on the reference payload: payload parse, topic match, WHERE,
//! projection. One rule, then 1,000 rules on distinct topics behind the topic index.
//!
//! `CARGO_TARGET_DIR=/work/target-sql cargo bench -p rulegate-sql -j2`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rulegate_sql::{MessageContext, Payload, Selected, Statement, TopicIndex};

const PAYLOAD: &[u8] = br#"{"name":"soilSensor3","humidity":29,"timeStampEpoch":1598536072677,"timeStampIso":"2020-08-27T13:47:52.677721"}"#;
const TOPIC: &str = "device/soilSensor3/devicePayload";
const RULES: usize = 1_000;

/// Everything the SQL stage does for one message, given the rules indexed by topic.
fn process(index: &TopicIndex<Statement>, topic: &str) -> usize {
    let payload = Payload::parse(PAYLOAD);
    let message = MessageContext::new(topic, &payload, PAYLOAD);
    let mut selected = 0;
    index.for_each_match(topic, |statement| {
        if let Some(output) = statement.evaluate(&message) {
            selected += usize::from(matches!(output, Selected::Payload));
        }
    });
    selected
}

fn index_of(filters: impl Iterator<Item = String>) -> TopicIndex<Statement> {
    let mut index = TopicIndex::new();
    for filter in filters {
        let sql = format!("SELECT * FROM '{filter}' WHERE humidity < 35");
        let statement = Statement::parse(&sql).expect("benchmark statement parses");
        index.insert(statement.topic_filter().clone(), statement);
    }
    index
}

fn per_message(c: &mut Criterion) {
    let one = index_of(std::iter::once("device/+/devicePayload".to_owned()));
    // The message's own rule plus 999 rules on other devices' topics.
    let many = index_of(
        std::iter::once("device/+/devicePayload".to_owned())
            .chain((1..RULES).map(|i| format!("site/{i}/sensor{i}/devicePayload"))),
    );
    assert_eq!(process(&one, TOPIC), 1);
    assert_eq!(process(&many, TOPIC), 1);

    let mut group = c.benchmark_group("sql");
    group.throughput(Throughput::Elements(1));
    group.bench_function("1 rule", |b| {
        b.iter(|| process(black_box(&one), black_box(TOPIC)))
    });
    group.bench_function("1000 rules", |b| {
        b.iter(|| process(black_box(&many), black_box(TOPIC)))
    });
    group.bench_function("payload parse only", |b| {
        b.iter(|| Payload::parse(black_box(PAYLOAD)))
    });
    // The parts of one message's cost, for finding where time goes.
    let payload = Payload::parse(PAYLOAD);
    let message = MessageContext::new(TOPIC, &payload, PAYLOAD);
    let mut rules = Vec::new();
    one.for_each_match(TOPIC, |statement| rules.push(statement));
    group.bench_function("evaluate only", |b| {
        b.iter(|| rules[0].evaluate(black_box(&message)))
    });
    group.bench_function("1000-rule index lookup only", |b| {
        b.iter(|| {
            let mut matched = 0;
            many.for_each_match(black_box(TOPIC), |_| matched += 1);
            matched
        })
    });
    group.finish();
}

criterion_group!(benches, per_message);
criterion_main!(benches);
