//! The pipeline alone, without a network: messages go straight into the
//! intake channel, through the router, the rule (SQL only, or SQL and the
//! humidity-alert Wasm rule) and its action, to an `mqtt` sink whose publisher
//! only counts. Reports messages per second of wall time and per second of
//! CPU time (every thread of the process), so "per core" reads directly.
//! Each scenario runs on tokio's multi-thread runtime (what `rulegate run`
//! uses) and on a current-thread one, whose tasks never wake another worker.
//! Then, paced at half of its slowest flat-out rate and at 10,000 a
//! second (about half of what it carries end to end through Mosquitto on the
//! bench machine), it times each message from the intake to its sink's
//! publish: the latency the gateway itself adds, without the broker's hops.
//!
//! Run with `cargo bench -p rulegate --bench pipeline`. To profile one
//! scenario, `PIPELINE_ONLY` picks the scenarios and runtimes whose
//! "<scenario> <runtime>" contains it (`PIPELINE_ONLY="Wasm humidity-alert
//! current"`) and runs only their flat-out runs, of `PIPELINE_MESSAGES`
//! messages (default 500,000).

#[path = "../../tests/harness/mod.rs"]
mod harness;

use bytes::Bytes;
use rulegate::actions::{Confirmation, Publisher, SinkEnv, Sinks, confirmed_at_once};
use rulegate::config::GatewayConfig;
use rulegate::engine::{EngineOptions, RuleEngine};
use rulegate::loadgen::{percentiles, process_cpu_time};
use rulegate::message::{Property, QoS};
use rulegate::mqtt::Inbound;
use rulegate::pipeline::{Pipeline, PipelineSettings};
use rulegate::ruleset::RuleSet;
use rulegate_sql::MqttProperties;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Builder;
use tokio::sync::mpsc;

// The binary's allocator (see main.rs), so that the figures are the gateway's.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Messages of a flat-out run, unless `PIPELINE_MESSAGES` says otherwise.
const MESSAGES: u64 = 500_000;
/// Messages of a paced run.
const PACED_MESSAGES: u64 = 100_000;
/// The fixed rate of a paced run, messages per second.
const FIXED_RATE: f64 = 10_000.0;
const RUNS: usize = 3;
const REFERENCE_PAYLOAD: &str = r#"{"name":"soilSensor3","humidity":29,"timeStampEpoch":1598536072677,"timeStampIso":"2020-08-27T13:47:52.677721"}"#;

/// A publisher that counts what it is given and sends nothing; in a paced
/// run it also notes when each publish came.
#[derive(Default)]
struct CountingPublisher {
    published: AtomicU64,
    published_at: Option<Mutex<Vec<Instant>>>,
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
        if let Some(published_at) = &self.published_at {
            published_at
                .lock()
                .expect("not poisoned")
                .push(Instant::now());
        }
        self.published.fetch_add(1, Ordering::Relaxed);
        Ok(confirmed_at_once())
    }
}

/// Makes the builder of one flavour of tokio runtime.
type NewRuntime = fn() -> Builder;

/// How the messages are sent.
#[derive(Clone, Copy)]
enum Load {
    /// This many, as fast as the pipeline takes them.
    FlatOut(u64),
    /// `PACED_MESSAGES` at this many a second.
    Paced(f64),
}

struct Measured {
    wall: Duration,
    cpu: Duration,
    /// From the intake to the publish, by message; in a paced run only.
    latencies: Vec<Duration>,
}

/// Sends readings through a pipeline of `rules`.
async fn run(rules: &str, load: Load) -> Measured {
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
    let counter = Arc::new(CountingPublisher {
        published_at: match load {
            Load::FlatOut(_) => None,
            Load::Paced(_) => Some(Mutex::new(Vec::with_capacity(PACED_MESSAGES as usize))),
        },
        ..CountingPublisher::default()
    });
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

    let cpu_before = process_cpu_time(None).expect("reading /proc/self/stat");
    let started = Instant::now();
    let (messages, sent_at) = match load {
        Load::FlatOut(messages) => {
            for _ in 0..messages {
                inbound
                    .send(reading())
                    .await
                    .expect("the pipeline takes messages");
            }
            (messages, Vec::new())
        }
        Load::Paced(rate) => {
            let inbound = inbound.clone();
            let pacer = tokio::task::spawn_blocking(move || pace(&inbound, rate));
            (PACED_MESSAGES, pacer.await.expect("the pacer ends"))
        }
    };
    while counter.published.load(Ordering::Relaxed) < messages {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let wall = started.elapsed();
    let cpu = process_cpu_time(None).expect("reading /proc/self/stat") - cpu_before;
    // One sensor, so one ordering key: the outputs come in the messages' order.
    let published_at = counter
        .published_at
        .as_ref()
        .map(|published_at| std::mem::take(&mut *published_at.lock().expect("not poisoned")))
        .unwrap_or_default();
    let latencies = sent_at
        .iter()
        .zip(&published_at)
        .map(|(sent, published)| published.duration_since(*sent))
        .collect();
    let measured = Measured {
        wall,
        cpu,
        latencies,
    };
    drop(inbound);
    task.await.expect("the pipeline ends");
    drop(rule_set);
    measured
}

fn reading() -> Inbound {
    Inbound {
        topic: "device/soilSensor3/devicePayload".to_owned(),
        payload: Bytes::from_static(REFERENCE_PAYLOAD.as_bytes()),
        qos: QoS::AtLeastOnce,
        received_at_ms: 0,
        properties: MqttProperties::NONE,
        receipt: None,
    }
}

/// Sends `PACED_MESSAGES` readings at `rate` a second, against the schedule,
/// from a thread that sleeps between them (tokio's 1 ms timer would send them
/// in bursts); returns when each was sent.
fn pace(inbound: &mpsc::Sender<Inbound>, rate: f64) -> Vec<Instant> {
    let started = Instant::now();
    (0..PACED_MESSAGES)
        .map(|sequence| {
            let due = started + Duration::from_secs_f64(sequence as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let sent = Instant::now();
            inbound
                .blocking_send(reading())
                .expect("the pipeline takes messages");
            sent
        })
        .collect()
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that names another bench skips this one.
    if std::env::args()
        .skip(1)
        .any(|arg| !arg.starts_with('-') && !"pipeline".contains(&arg))
    {
        return;
    }
    let only = std::env::var("PIPELINE_ONLY").ok();
    let messages: u64 = match std::env::var("PIPELINE_MESSAGES") {
        Ok(count) => count
            .parse()
            .unwrap_or_else(|_| panic!("PIPELINE_MESSAGES is a count, not {count:?}")),
        Err(_) => MESSAGES,
    };
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
    let mut paced = Vec::new();
    for (name, rules) in &scenarios {
        for (flavour, builder) in runtimes {
            if only
                .as_ref()
                .is_some_and(|only| !format!("{name} {flavour}").contains(only.as_str()))
            {
                continue;
            }
            let runtime = builder().enable_all().build().expect("a tokio runtime");
            let mut slowest = f64::MAX;
            for run_number in 1..=RUNS {
                let measured = runtime.block_on(run(rules, Load::FlatOut(messages)));
                let per_second = messages as f64 / measured.wall.as_secs_f64();
                slowest = slowest.min(per_second);
                println!(
                    "| {name} | {flavour} | {run_number} | {messages} | {per_second:.0} | {:.2} | {:.0} |",
                    measured.cpu.as_secs_f64(),
                    messages as f64 / measured.cpu.as_secs_f64(),
                );
            }
            // A filtered run is for profiling the flat-out path alone.
            if only.is_some() {
                continue;
            }
            for rate in [slowest / 2.0, FIXED_RATE] {
                let mut measured = runtime.block_on(run(rules, Load::Paced(rate)));
                paced.push((name, flavour, rate, percentiles(&mut measured.latencies)));
            }
        }
    }
    if paced.is_empty() {
        return;
    }
    println!(
        "\n| scenario | runtime | paced at msg/s | intake to publish p50 µs | p99 µs | p99.9 µs |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, flavour, rate, latencies) in paced {
        let [p50, p99, p999] = latencies
            .map(|latency| latency.expect("every message was published").as_secs_f64() * 1e6);
        println!("| {name} | {flavour} | {rate:.0} | {p50:.0} | {p99:.0} | {p999:.0} |");
    }
}
