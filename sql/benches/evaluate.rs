//! Per-message cost of the SQL stage on the reference payload: payload parse (of the members the
//! rules read, as the gateway does), topic match, WHERE, projection. One rule, then 1,000 rules on
//! distinct topics behind the topic index.
//!
//! `CARGO_TARGET_DIR=/work/target-sql cargo bench -p rulegate-sql -j2`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rulegate_sql::{MessageContext, Payload, PayloadFields, Selected, Statement, TopicIndex};

const PAYLOAD: &[u8] = br#"{"name":"soilSensor3","humidity":29,"timeStampEpoch":1598536072677,"timeStampIso":"2020-08-27T13:47:52.677721"}"#;
const TOPIC: &str = "device/soilSensor3/devicePayload";
const RULES: usize = 1_000;

/// Everything the SQL stage does for one message, given the rules indexed by topic and the
/// members of the payload they read.
fn process(index: &TopicIndex<Statement>, fields: &PayloadFields, topic: &str) -> usize {
    let payload = Payload::parse_fields(PAYLOAD, fields);
    let message = MessageContext::new(topic, &payload, PAYLOAD);
    let mut selected = 0;
    index.for_each_match(topic, |statement| {
        if let Some(output) = statement.evaluate(&message) {
            selected += usize::from(matches!(output, Selected::Payload));
        }
    });
    selected
}

fn index_of(filters: impl Iterator<Item = String>) -> (TopicIndex<Statement>, PayloadFields) {
    let mut index = TopicIndex::new();
    let mut fields = PayloadFields::default();
    for filter in filters {
        let sql = format!("SELECT * FROM '{filter}' WHERE humidity < 35");
        let statement = Statement::parse(&sql).expect("benchmark statement parses");
        fields.add(&statement.payload_fields());
        index.insert(statement.topic_filter().clone(), statement);
    }
    (index, fields)
}

fn per_message(c: &mut Criterion) {
    let (one, one_reads) = index_of(std::iter::once("device/+/devicePayload".to_owned()));
    // The message's own rule plus 999 rules on other devices' topics.
    let (many, many_reads) = index_of(
        std::iter::once("device/+/devicePayload".to_owned())
            .chain((1..RULES).map(|i| format!("site/{i}/sensor{i}/devicePayload"))),
    );
    assert_eq!(process(&one, &one_reads, TOPIC), 1);
    assert_eq!(process(&many, &many_reads, TOPIC), 1);

    let mut group = c.benchmark_group("sql");
    group.throughput(Throughput::Elements(1));
    group.bench_function("1 rule", |b| {
        b.iter(|| process(black_box(&one), &one_reads, black_box(TOPIC)))
    });
    group.bench_function("1000 rules", |b| {
        b.iter(|| process(black_box(&many), &many_reads, black_box(TOPIC)))
    });
    group.bench_function("payload parse only, whole", |b| {
        b.iter(|| Payload::parse(black_box(PAYLOAD)))
    });
    // What the gateway builds for this rule: the one member its WHERE reads.
    group.bench_function("payload parse only, members read", |b| {
        b.iter(|| Payload::parse_fields(black_box(PAYLOAD), black_box(&one_reads)))
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
