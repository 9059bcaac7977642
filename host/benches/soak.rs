//! Soak: a `rulegate run` process under a steady load for a long while (10
//! minutes by default), its resident memory and its outbox sampled as it goes,
//! so that a leak or an outbox that never drains shows as a curve. Not run in
//! CI.
//!
//! The gateway archives every reading to a file sink (one file per sensor,
//! rewritten) and runs the humidity-alert Wasm rule on each, republishing
//! its alerts; Mosquitto carries the load on loopback. Samples go to stdout
//! and, as a markdown table, to `bench/results/soak.md`.
//!
//! `cargo bench -p rulegate --bench soak`; `RULEGATE_SOAK_SECS` and
//! `RULEGATE_SOAK_RATE` (messages per second) change the length and the load.

#[path = "../../tests/harness/mod.rs"]
mod harness;

use harness::mosquitto::{Mosquitto, free_port};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SENSORS: u64 = 50;
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
const TOKEN: &str = "soak-token-0123456789abcdef";

struct Sample {
    at: Duration,
    published: u64,
    received: u64,
    rss_kib: u64,
    outbox_records: u64,
    outbox_file_kib: u64,
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn config(broker: &str, admin_port: u16, module: &Path) -> String {
    format!(
        r#"
[gateway]
state_dir = "state"
cache_dir = "cache"
stats_interval_secs = 0
watch = false

[broker]
url = "{broker}"
client_id = "soak-gateway"

[admin]
listen = "127.0.0.1:{admin_port}"
token_file = "token"

[sinks.archive]
type = "file"
directory = "archive"

[sinks.alerts]
type = "mqtt"

[[rules]]
name = "archive"
sql = "SELECT * FROM 'device/+/devicePayload'"
[[rules.actions]]
sink = "archive"
key = "${{topic(2)}}.json"

[[rules]]
name = "humidity-alert"
sql = "SELECT * FROM 'device/+/devicePayload' WHERE humidity < 35"
module = "{module}"
[[rules.actions]]
sink = "alerts"
topic = "alerts/${{topic(2)}}"
"#,
        module = module.display(),
    )
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A gauge or counter from the admin API's Prometheus text.
async fn metric(client: &reqwest::Client, admin_port: u16, name: &str) -> u64 {
    let Ok(response) = client
        .get(format!("http://127.0.0.1:{admin_port}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
    else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

fn outbox_file_kib(state: &Path) -> u64 {
    std::fs::read_dir(state)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("outbox-"))
        .filter_map(|entry| entry.metadata().ok())
        .map(|metadata| metadata.len() / 1024)
        .sum()
}

fn main() {
    // `cargo bench` passes `--bench`; this harness takes no arguments.
    let seconds = setting("RULEGATE_SOAK_SECS", 600);
    let rate = setting("RULEGATE_SOAK_RATE", 1000).max(1);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let mosquitto = Mosquitto::start();
    let site = tempfile::tempdir().expect("a directory for the gateway");
    let admin_port = free_port();
    let module = harness::rule_module("humidity-alert");
    std::fs::write(site.path().join("token"), TOKEN).expect("writing the token");
    std::fs::write(
        site.path().join("gateway.toml"),
        config(&mosquitto.url(), admin_port, &module),
    )
    .expect("writing the configuration");
    let gateway = Command::new(env!("CARGO_BIN_EXE_rulegate"))
        .args(["run", "--config"])
        .arg(site.path().join("gateway.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting rulegate run");
    let pid = gateway.id();

    let samples = runtime.block_on(async {
        let admin = rulegate::tls::http_client_builder().build().unwrap();
        // Ready once the admin API answers.
        while metric(&admin, admin_port, "rulegate_outbox_max_bytes").await == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut options = MqttOptions::new("soak-device", "127.0.0.1", mosquitto.port());
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(options, 1024);
        tokio::spawn(async move {
            loop {
                if events.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        let started = Instant::now();
        let published = Arc::new(AtomicU64::new(0));
        let counted = published.clone();
        let publisher = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
            let mut sequence = 0u64;
            while started.elapsed() < Duration::from_secs(seconds) {
                ticks.tick().await;
                let sensor = sequence % SENSORS;
                let humidity = 20 + sequence % 40;
                let payload = format!(
                    r#"{{"name":"soilSensor{sensor}","humidity":{humidity},"timeStampEpoch":{sequence}}}"#
                );
                let topic = format!("device/soilSensor{sensor}/devicePayload");
                if client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .is_err()
                {
                    break;
                }
                sequence += 1;
                counted.store(sequence, Ordering::Relaxed);
            }
        });
        let mut samples = Vec::new();
        let mut next = Duration::ZERO;
        let state = site.path().join("state");
        while !publisher.is_finished() {
            tokio::time::sleep(next.saturating_sub(started.elapsed())).await;
            samples.push(Sample {
                at: started.elapsed(),
                published: published.load(Ordering::Relaxed),
                received: metric(&admin, admin_port, "rulegate_messages_received_total").await,
                rss_kib: resident_kib(pid),
                outbox_records: metric(&admin, admin_port, "rulegate_outbox_records").await,
                outbox_file_kib: outbox_file_kib(&state),
            });
            next += SAMPLE_EVERY;
        }
        publisher.await.expect("the publisher ran");
        samples
    });
    harness::terminate(gateway);

    let mut table = format!(
        "# Soak: {seconds} s at {rate} msg/s\n\n`cargo bench -p rulegate --bench soak` \
         (RULEGATE_SOAK_SECS={seconds}, RULEGATE_SOAK_RATE={rate}); archive to a file sink and \
         the humidity-alert Wasm rule republishing its alerts, through Mosquitto on loopback.\n\n\
         | t (s) | published | received by the gateway | RSS (MiB) | outbox records | outbox file (KiB) |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    );
    for sample in &samples {
        let _ = writeln!(
            table,
            "| {} | {} | {} | {:.1} | {} | {} |",
            sample.at.as_secs(),
            sample.published,
            sample.received,
            sample.rss_kib as f64 / 1024.0,
            sample.outbox_records,
            sample.outbox_file_kib
        );
    }
    print!("{table}");
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/results");
    std::fs::create_dir_all(&results).expect("creating bench/results");
    std::fs::write(results.join("soak.md"), table).expect("writing soak.md");
}
