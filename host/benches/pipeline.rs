//! The pipeline alone, without a network: messages go straight into the
//! intake channel, through the router, the rule (SQL only, or SQL and the
//! humidity-alert Wasm rule) and its action, to an `mqtt` sink whose publisher
//! only counts. Reports messages per second of wall time and per second of
//! CPU time (every thread of the process), so "per core" reads directly.
//! Each scenario runs on tokio's multi-thread runtime (what `rulegate run`
//! uses) and on a current-thread one, whose tasks never wake another worker.
//!
//! Run with `cargo bench -p rulegate --bench pipeline`.

#[path = "../../tests/harness/mod.rs"]
mod harness;

use bytes::Bytes;
use rulegate::actions::{Confirmation, Publisher, SinkEnv, Sinks, confirmed_at_once};
use rulegate::config::GatewayConfig;
use rulegate::engine::{EngineOptions, RuleEngine};
use rulegate::loadgen::process_cpu_time;
use rulegate::message::{Property, QoS};
use rulegate::mqtt::Inbound;
use rulegate::pipeline::{Pipeline, PipelineSettings};
use rulegate::ruleset::RuleSet;
use rulegate_sql::MqttProperties;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Builder;
use tokio::sync::mpsc;

// The binary's allocator (see main.rs), so that the figures are the gateway's.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MESSAGES: u64 = 500_000;
const RUNS: usize = 3;
const REFERENCE_PAYLOAD: &str = r#"{"name":"soilSensor3","humidity":29,"timeStampEpoch":1598536072677,"timeStampIso":"2020-08-27T13:47:52.677721"}"#;

/// A publisher that counts what it is given and sends nothing.
#[derive(Default)]
struct CountingPublisher {
    published: AtomicU64,
}

#[async_trait::async_trait]
impl Publisher for CountingPublisher {
    async fn publish(
        &self,
        _: &str,
        _: Bytes,
        _: QoS,
        _: bool,
        _: &[Property],
    ) -> Result<Confirmation, String> {
        self.published.fetch_add(1, Ordering::Relaxed);
        Ok(confirmed_at_once())
    }
}

/// Makes the builder of one flavour of tokio runtime.
type NewRuntime = fn() -> Builder;

struct Measured {
    wall: Duration,
    cpu: Duration,
}

async fn run(rules: &str) -> Measured {
    let dir = tempfile::tempdir().expect("a directory");
    let text = format!(
        "[gateway]\nstate_dir = \"state\"\ncache_dir = \"cache\"\n\
         [broker]\nurl = \"mqtt://127.0.0.1:1\"\n[sinks.out]\ntype = \"mqtt\"\n{rules}"
    );
    let config = GatewayConfig::parse(&text, Path::new("bench.toml"), dir.path().to_owned())
        .unwrap_or_else(|error| panic!("{error}"));
    let engine = RuleEngine::new(EngineOptions {
        cache_dir: Some(dir.path().join("cache")),
        ..EngineOptions::default()
    })
    .expect("creating the engine");
    let counter = Arc::new(CountingPublisher::default());
    let (failures, failed) = mpsc::channel(256);
    let env = SinkEnv {
        aws: None,
        publisher: Some(counter.clone()),
    };
    let outbox = config.outbox_settings().expect("the outbox settings");
    let sinks = Arc::new(
        Sinks::start(&config.sinks, env, &outbox, failures)
            .await
            .expect("starting the sinks"),
    );
    let (inbound, intake) = mpsc::channel(config.gateway.rule_queue);
    let settings = PipelineSettings {
        max_payload_bytes: config.gateway.max_payload_bytes,
        rule_queue: config.gateway.rule_queue,
    };
    let (pipeline, task) = Pipeline::start(settings, intake, sinks, failed);
    let rule_set = RuleSet::start(config, Arc::new(engine), pipeline)
        .await
        .expect("starting the rules");

    let payload = Bytes::from_static(REFERENCE_PAYLOAD.as_bytes());
    let cpu_before = process_cpu_time(None).expect("reading /proc/self/stat");
    let started = Instant::now();
    for _ in 0..MESSAGES {
        let message = Inbound {
            topic: "device/soilSensor3/devicePayload".to_owned(),
            payload: payload.clone(),
            qos: QoS::AtLeastOnce,
            received_at_ms: 0,
            properties: MqttProperties::NONE,
            receipt: None,
        };
        inbound
            .send(message)
            .await
            .expect("the pipeline takes messages");
    }
    while counter.published.load(Ordering::Relaxed) < MESSAGES {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let measured = Measured {
        wall: started.elapsed(),
        cpu: process_cpu_time(None).expect("reading /proc/self/stat") - cpu_before,
    };
    drop(inbound);
    task.await.expect("the pipeline ends");
    drop(rule_set);
    measured
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that names another bench skips this one.
    if std::env::args()
        .skip(1)
        .any(|arg| !arg.starts_with('-') && !"pipeline".contains(&arg))
    {
        return;
    }
    let humidity_alert = harness::rule_module("humidity-alert");
    let scenarios = [
        (
            "SQL republish",
            "[[rules]]\nname = \"republish\"\nsql = \"SELECT * FROM 'device/+/devicePayload'\"\n\
             [[rules.actions]]\nsink = \"out\"\ntopic = \"out/${topic(2)}\"\n"
                .to_owned(),
        ),
        (
            "SQL + Wasm humidity-alert",
            format!(
                "[[rules]]\nname = \"humidity-alert\"\n\
                 sql = \"SELECT * FROM 'device/+/devicePayload' WHERE humidity < 35\"\n\
                 module = \"{}\"\n[[rules.actions]]\nsink = \"out\"\ntopic = \"alerts/${{topic(2)}}\"\n",
                humidity_alert.display()
            ),
        ),
    ];
    let runtimes: [(&str, NewRuntime); 2] = [
        ("multi-thread", Builder::new_multi_thread),
        ("current-thread", Builder::new_current_thread),
    ];
    println!("| scenario | runtime | run | messages | wall msg/s | CPU s | msg per CPU-second |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (name, rules) in &scenarios {
        for (flavour, builder) in runtimes {
            let runtime = builder().enable_all().build().expect("a tokio runtime");
            for run_number in 1..=RUNS {
                let measured = runtime.block_on(run(rules));
                println!(
                    "| {name} | {flavour} | {run_number} | {MESSAGES} | {:.0} | {:.2} | {:.0} |",
                    MESSAGES as f64 / measured.wall.as_secs_f64(),
                    measured.cpu.as_secs_f64(),
                    MESSAGES as f64 / measured.cpu.as_secs_f64(),
                );
            }
        }
    }
}
