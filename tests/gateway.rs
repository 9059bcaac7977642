//! The gateway end to end, against real services on loopback: the simulator
//! publishes soil readings through Mosquitto (or the embedded broker), the
//! gateway archives them to S3, alerts through SNS (read back via SQS) and
//! republishes to device topics, all in moto; plus faults: S3 down for a
//! while, malformed and oversized messages among good ones, a failing rule.

mod harness;

use harness::mosquitto::{Mosquitto, free_port};
use harness::moto::Moto;
use harness::recorder::Recorder;
use harness::rule_module;
use rulegate::config::GatewayConfig;
use rulegate::gateway::Gateway;
use rulegate::mqtt::BrokerEndpoint;
use rulegate::simulate::{self, SimulatorOptions};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const SUBJECT: &str = "Attention:Humidity Under Threshold";

/// The soil-moisture configuration: archive to S3, alert through SNS with the
/// humidity-alert module, republish a summary to a device topic.
fn soil_config(broker: &str, moto: &Moto, topic_arn: &str) -> String {
    format!(
        r#"
[broker]
{broker}
client_id = "gateway-{id}"

[sinks.archive]
type = "s3"
bucket = "sensor-archive"
endpoint = "{endpoint}"
path_style = true
region = "us-east-1"

[sinks.alerts]
type = "sns"
topic_arn = "{topic_arn}"
endpoint = "{endpoint}"
region = "us-east-1"

[sinks.dashboard]
type = "mqtt"

[[rules]]
name = "archive"
sql = "SELECT * FROM 'device/+/devicePayload'"
[[rules.actions]]
sink = "archive"
key = "device/${{topic(2)}}/devicePayload/${{timeStampEpoch}}"

[[rules]]
name = "humidity-alert"
sql = "SELECT * FROM 'device/+/devicePayload' WHERE humidity < 35"
module = "{module}"
[[rules.actions]]
sink = "alerts"
subject = "set by the module"

[[rules]]
name = "dashboard"
sql = "SELECT topic(2) AS device, humidity FROM 'device/+/devicePayload'"
[[rules.actions]]
sink = "dashboard"
topic = "dashboard/${{topic(2)}}"
"#,
        id = uuid::Uuid::new_v4().simple(),
        endpoint = moto.endpoint(),
        module = rule_module("humidity-alert").display(),
    )
}

fn parse_config(text: &str) -> GatewayConfig {
    GatewayConfig::parse(text, Path::new("test.toml"), std::env::temp_dir())
        .unwrap_or_else(|error| panic!("{error}"))
}

async fn publish_readings(port: u16, count: u64, seed: u64) -> u64 {
    let endpoint = BrokerEndpoint::plain("127.0.0.1", port, "simulator");
    let options = SimulatorOptions {
        sensors: 10,
        rate: 0.0,
        count: Some(count),
        seed: Some(seed),
        ..SimulatorOptions::default()
    };
    let (_stop, stopped) = watch::channel(false);
    simulate::run(&endpoint, &options, stopped).await.unwrap()
}

async fn wait_for_keys(moto: &Moto, bucket: &str, count: usize, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let keys = moto.list_keys(bucket).await;
        if keys.len() >= count || Instant::now() > deadline {
            return keys;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn reading(body: &[u8]) -> (String, i64, i64) {
    let value: Value = serde_json::from_slice(body).expect("an archived reading is JSON");
    (
        value["name"].as_str().expect("name").to_owned(),
        value["humidity"].as_i64().expect("humidity"),
        value["timeStampEpoch"].as_i64().expect("timeStampEpoch"),
    )
}

/// Runs the whole soil-moisture scenario through the broker on `port` and
/// checks S3, SNS and the republished topic.
async fn assert_soil_scenario(
    port: u16,
    moto: &Moto,
    topic_arn: &str,
    queue_url: &str,
    gateway: Gateway,
) {
    const READINGS: u64 = 1000;
    let mut devices = Recorder::subscribe(port, "device/+/devicePayload").await;
    let mut dashboard = Recorder::subscribe(port, "dashboard/#").await;

    let published = publish_readings(port, READINGS, 7).await;
    assert_eq!(published, READINGS);
    let sent = devices
        .take(READINGS as usize, Duration::from_secs(30))
        .await;
    assert_eq!(
        sent.len(),
        READINGS as usize,
        "the observer saw every reading"
    );

    let keys = wait_for_keys(
        moto,
        "sensor-archive",
        READINGS as usize,
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(
        keys.len(),
        READINGS as usize,
        "S3 holds one object per reading"
    );

    let sent_by_key: BTreeMap<String, Vec<u8>> = sent
        .into_iter()
        .map(|(topic, body)| {
            let (_, _, epoch) = reading(&body);
            (format!("{topic}/{epoch}"), body)
        })
        .collect();
    let mut expected_alerts = Vec::new();
    for key in &keys {
        let body = moto.get_object("sensor-archive", key).await;
        assert_eq!(
            Some(&body),
            sent_by_key.get(key),
            "object {key} is the reading, byte for byte"
        );
        let (name, humidity, _) = reading(&body);
        if humidity < 35 {
            expected_alerts.push(format!(
                "Humidity {humidity} under threshold for device name {name}"
            ));
        }
    }
    assert!(
        !expected_alerts.is_empty(),
        "the seed gives some dry readings"
    );

    let notifications = moto
        .receive_notifications(queue_url, expected_alerts.len(), Duration::from_secs(90))
        .await;
    let extra = moto
        .receive_notifications(queue_url, 1, Duration::from_secs(2))
        .await;
    assert!(
        extra.is_empty(),
        "no more notifications than dry readings: {extra:?}"
    );
    let mut messages: Vec<String> = notifications
        .iter()
        .map(|notification| {
            assert_eq!(notification.subject.as_deref(), Some(SUBJECT));
            notification.message.clone()
        })
        .collect();
    messages.sort();
    expected_alerts.sort();
    assert_eq!(
        messages, expected_alerts,
        "one notification per dry reading, exact text"
    );

    let republished = dashboard
        .take(READINGS as usize, Duration::from_secs(30))
        .await;
    assert_eq!(republished.len(), READINGS as usize);
    let (topic, body) = &republished[0];
    let summary: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        topic,
        &format!("dashboard/{}", summary["device"].as_str().unwrap())
    );
    assert!(summary["humidity"].is_i64());
    let _ = topic_arn;

    let sinks = gateway.shutdown().await.unwrap();
    let archive = sinks.iter().find(|(name, _)| name == "archive").unwrap();
    assert_eq!(archive.1.delivered, READINGS);
    assert_eq!(archive.1.failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soil_moisture_scenario_through_mosquitto() {
    let mosquitto = Mosquitto::start();
    let moto = Moto::start();
    moto.create_bucket("sensor-archive").await;
    let alerts = moto.create_topic_with_queue("humidity-alerts").await;
    let broker = format!("url = \"{}\"", mosquitto.url());
    let config = parse_config(&soil_config(&broker, &moto, &alerts.topic_arn));
    let gateway = Gateway::start(config, Some(moto.sdk_config().await))
        .await
        .unwrap();
    assert_soil_scenario(
        mosquitto.port(),
        &moto,
        &alerts.topic_arn,
        &alerts.queue_url,
        gateway,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soil_moisture_scenario_through_the_embedded_broker() {
    let port = free_port();
    let moto = Moto::start();
    moto.create_bucket("sensor-archive").await;
    let alerts = moto.create_topic_with_queue("humidity-alerts").await;
    let broker = format!("embedded = true\nlisten = \"127.0.0.1:{port}\"");
    let config = parse_config(&soil_config(&broker, &moto, &alerts.topic_arn));
    let gateway = Gateway::start(config, Some(moto.sdk_config().await))
        .await
        .unwrap();
    assert_soil_scenario(port, &moto, &alerts.topic_arn, &alerts.queue_url, gateway).await;
}

/// An archive-only gateway whose S3 sink keeps retrying for a long outage.
fn archive_config(broker_url: &str, moto: &Moto, extra: &str) -> GatewayConfig {
    parse_config(&format!(
        r#"
[gateway]
max_payload_bytes = 4096

[broker]
url = "{broker_url}"
client_id = "archiver-{id}"

[sinks.archive]
type = "s3"
bucket = "sensor-archive"
endpoint = "{endpoint}"
path_style = true
region = "us-east-1"
attempts = 1000
initial_backoff_ms = 50
max_backoff_ms = 500
timeout_ms = 2000

[[rules]]
name = "archive"
sql = "SELECT * FROM 'device/+/devicePayload' WHERE humidity >= 0"
[[rules.actions]]
sink = "archive"
key = "device/${{topic(2)}}/devicePayload/${{timeStampEpoch}}"
{extra}
"#,
        id = uuid::Uuid::new_v4().simple(),
        endpoint = moto.endpoint(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_down_for_a_while_then_back_loses_nothing() {
    let mosquitto = Mosquitto::start();
    let mut moto = Moto::start();
    moto.create_bucket("sensor-archive").await;
    let config = archive_config(&mosquitto.url(), &moto, "");
    let gateway = Gateway::start(config, Some(moto.sdk_config().await))
        .await
        .unwrap();

    publish_readings(mosquitto.port(), 50, 1).await;
    assert_eq!(
        wait_for_keys(&moto, "sensor-archive", 50, Duration::from_secs(30))
            .await
            .len(),
        50
    );

    moto.stop();
    publish_readings(mosquitto.port(), 100, 2).await;
    let started = Instant::now();
    while gateway.sink_stats()[0].1.retried == 0 && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gateway.sink_stats()[0].1.retried > 0,
        "deliveries were retried while S3 was down"
    );

    // moto comes back empty: the bucket is created again, as an operator would.
    moto.restart();
    moto.create_bucket("sensor-archive").await;
    let keys = wait_for_keys(&moto, "sensor-archive", 100, Duration::from_secs(60)).await;
    assert_eq!(
        keys.len(),
        100,
        "every reading taken during the outage reached S3"
    );
    let sinks = gateway.shutdown().await.unwrap();
    assert_eq!(sinks[0].1.delivered, 150);
    assert_eq!(sinks[0].1.failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_messages_do_not_stop_the_good_ones() {
    let mosquitto = Mosquitto::start();
    let moto = Moto::start();
    moto.create_bucket("sensor-archive").await;
    let gateway = Gateway::start(
        archive_config(&mosquitto.url(), &moto, ""),
        Some(moto.sdk_config().await),
    )
    .await
    .unwrap();

    let mut options = MqttOptions::new("bad-device", "127.0.0.1", mosquitto.port());
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(options, 64);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let topic = "device/broken/devicePayload";
    client
        .publish(
            topic,
            QoS::AtLeastOnce,
            false,
            "{\"name\":\"broken\",\"humidity\":",
        )
        .await
        .unwrap();
    client
        .publish(topic, QoS::AtLeastOnce, false, vec![0xff, 0xfe, 0x00, 0x80])
        .await
        .unwrap();
    client
        .publish(topic, QoS::AtLeastOnce, false, vec![b'7'; 10_000])
        .await
        .unwrap();
    // Nested past serde_json's depth limit, yet under the size limit.
    let deep = format!("{}1{}", "[".repeat(2000), "]".repeat(2000));
    client
        .publish(topic, QoS::AtLeastOnce, false, deep)
        .await
        .unwrap();
    publish_readings(mosquitto.port(), 40, 3).await;

    let keys = wait_for_keys(&moto, "sensor-archive", 40, Duration::from_secs(30)).await;
    assert_eq!(
        keys.len(),
        40,
        "all good readings archived, none of the bad ones: {keys:?}"
    );
    assert!(keys.iter().all(|key| key.starts_with("device/soilSensor")));
    let intake = gateway.stats().intake();
    assert_eq!(intake.received, 44);
    assert_eq!(intake.oversized, 1, "only the 10 kB payload is over 4 kB");
    assert_eq!(
        intake.not_json, 3,
        "cut-off JSON, binary bytes, nesting past the limit"
    );
    gateway.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_rule_goes_to_its_error_action_and_the_gateway_keeps_running() {
    let mosquitto = Mosquitto::start();
    let config = parse_config(&format!(
        r#"
[broker]
url = "{url}"
client_id = "errors-{id}"

[sinks.device]
type = "mqtt"

[[rules]]
name = "fragile"
sql = "SELECT * FROM 'cmd/+'"
module = "{module}"
[[rules.actions]]
sink = "device"
topic = "echo/${{topic(2)}}"
[rules.error_action]
sink = "device"
topic = "errors/${{topic(2)}}"
"#,
        url = mosquitto.url(),
        id = uuid::Uuid::new_v4().simple(),
        module = rule_module("hostile").display(),
    ));
    let gateway = Gateway::start(config, None).await.unwrap();
    let mut errors = Recorder::subscribe(mosquitto.port(), "errors/#").await;
    let mut echoes = Recorder::subscribe(mosquitto.port(), "echo/#").await;

    let (client, mut events) = AsyncClient::new(
        MqttOptions::new("commander", "127.0.0.1", mosquitto.port()),
        16,
    );
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    client
        .publish("cmd/a", QoS::AtLeastOnce, false, r#"{"attack":"panic"}"#)
        .await
        .unwrap();
    client
        .publish("cmd/b", QoS::AtLeastOnce, false, r#"{"ok":true}"#)
        .await
        .unwrap();

    let reported = errors.take(1, Duration::from_secs(20)).await;
    assert_eq!(reported.len(), 1);
    let (topic, body) = &reported[0];
    assert_eq!(topic, "errors/a");
    let report: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(report["ruleName"], "fragile");
    assert_eq!(report["topic"], "cmd/a");
    assert_eq!(report["failures"][0]["failedAction"], "WasmRule");
    assert!(
        report["failures"][0]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("trapped")
    );

    let echoed = echoes.take(1, Duration::from_secs(20)).await;
    assert_eq!(echoed, [("echo/b".to_owned(), br#"{"ok":true}"#.to_vec())]);
    let stats = gateway.stats().rules();
    assert_eq!(stats[0].1.errors, 1);
    gateway.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_that_keeps_failing_goes_to_the_error_action() {
    let mosquitto = Mosquitto::start();
    let moto = Moto::start(); // no bucket: every PutObject fails
    let config = archive_config(
        &mosquitto.url(),
        &moto,
        "[rules.error_action]\nsink = \"device\"\ntopic = \"errors/archive\"\n\n[sinks.device]\ntype = \"mqtt\"",
    );
    let mut config = config;
    config.sinks.get_mut("archive").unwrap().attempts = 2;
    let gateway = Gateway::start(config, Some(moto.sdk_config().await))
        .await
        .unwrap();
    let mut errors = Recorder::subscribe(mosquitto.port(), "errors/#").await;

    publish_readings(mosquitto.port(), 3, 5).await;
    let reported = errors.take(3, Duration::from_secs(30)).await;
    assert_eq!(
        reported.len(),
        3,
        "one report per reading that could not be archived"
    );
    for (_, body) in &reported {
        let report: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(report["ruleName"], "archive");
        assert_eq!(report["failures"][0]["failedAction"], "Delivery");
        assert_eq!(report["failures"][0]["failedResource"], "archive");
        assert!(
            report["base64OriginalPayload"]
                .as_str()
                .is_some_and(|payload| !payload.is_empty())
        );
    }
    let sinks = gateway.shutdown().await.unwrap();
    let archive = &sinks.iter().find(|(name, _)| name == "archive").unwrap().1;
    assert_eq!((archive.delivered, archive.failed), (0, 3));
}

#[test]
fn example_configurations_load_and_compile() {
    rule_module("humidity-alert"); // the examples name the built module
    let engine = rulegate::engine::RuleEngine::new(Default::default()).unwrap();
    let examples = harness::repository_root().join("gateway-config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path
            .extension()
            .is_some_and(|extension| extension == "toml")
        {
            let config = GatewayConfig::load(&path).unwrap_or_else(|error| panic!("{error}"));
            rulegate::ruleset::check(&config, &engine).unwrap_or_else(|error| panic!("{error}"));
            checked += 1;
        }
    }
    assert_eq!(
        checked, 4,
        "demo, invoke, soil-moisture-aws, soil-moisture-local"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_publish_properties_reach_the_sql() {
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    let mosquitto = Mosquitto::start();
    let config = parse_config(&format!(
        r#"
[broker]
url = "{url}"
protocol = "5"
client_id = "v5-{id}"

[sinks.device]
type = "mqtt"

[[rules]]
name = "tagged"
sql = "SELECT humidity, get_user_properties('site') AS site, get_mqtt_property('content_type') AS ct FROM 'device/+/devicePayload'"
[[rules.actions]]
sink = "device"
topic = "tagged/${{topic(2)}}"
"#,
        url = mosquitto.url(),
        id = uuid::Uuid::new_v4().simple(),
    ));
    let gateway = Gateway::start(config, None).await.unwrap();
    let mut tagged = Recorder::subscribe(mosquitto.port(), "tagged/#").await;

    let options = rumqttc::v5::MqttOptions::new("v5-device", "127.0.0.1", mosquitto.port());
    let (client, mut events) = rumqttc::v5::AsyncClient::new(options, 16);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let properties = PublishProperties {
        content_type: Some("application/json".into()),
        user_properties: vec![("site".into(), "north".into())],
        ..Default::default()
    };
    client
        .publish_with_properties(
            "device/s1/devicePayload",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            r#"{"humidity":30}"#,
            properties,
        )
        .await
        .unwrap();

    let received = tagged.take(1, Duration::from_secs(20)).await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].0, "tagged/s1");
    let selected: Value = serde_json::from_slice(&received[0].1).unwrap();
    assert_eq!(
        selected,
        serde_json::json!({"humidity": 30, "site": ["north"], "ct": "application/json"})
    );
    gateway.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_in_a_shared_group_process_each_message_exactly_once() {
    const READINGS: u64 = 10_000;
    let broker = Mosquitto::start();
    let config = |name: &str| {
        parse_config(&format!(
            r#"
[gateway]
stats_interval_secs = 0

[broker]
url = "{url}"
client_id = "{name}-{id}"
shared_group = "soil"

[sinks.processed]
type = "mqtt"

[[rules]]
name = "tag"
sql = "SELECT name, timeStampEpoch FROM 'device/+/devicePayload'"
[[rules.actions]]
sink = "processed"
topic = "processed/{name}"
"#,
            url = broker.url(),
            id = uuid::Uuid::new_v4().simple(),
        ))
    };
    let mut processed = Recorder::subscribe(broker.port(), "processed/#").await;
    let first = Gateway::start(config("first"), None).await.unwrap();
    let second = Gateway::start(config("second"), None).await.unwrap();

    assert_eq!(
        publish_readings(broker.port(), READINGS, 11).await,
        READINGS
    );
    let mut outputs = processed
        .take(READINGS as usize, Duration::from_secs(60))
        .await;
    // Anything processed twice would still be on its way.
    outputs.extend(processed.take(1, Duration::from_millis(500)).await);

    let mut readings = HashSet::new();
    let mut by_gateway: BTreeMap<String, u64> = BTreeMap::new();
    for (topic, body) in &outputs {
        let value: Value = serde_json::from_slice(body).unwrap();
        let reading = (
            value["name"].to_string(),
            value["timeStampEpoch"].to_string(),
        );
        assert!(readings.insert(reading), "{body:?} was processed twice");
        *by_gateway.entry(topic.clone()).or_default() += 1;
    }
    assert_eq!(
        readings.len(),
        READINGS as usize,
        "every reading processed once"
    );
    for gateway in ["processed/first", "processed/second"] {
        let share = by_gateway.get(gateway).copied().unwrap_or_default();
        assert!(
            share >= READINGS / 10,
            "{gateway} did {share} of {READINGS}: {by_gateway:?}"
        );
    }
    let received = first.stats().intake().received + second.stats().intake().received;
    assert_eq!(received, READINGS);
    first.shutdown().await.unwrap();
    second.shutdown().await.unwrap();
}
