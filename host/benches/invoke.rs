//! Round trip of a synchronous invocation on loopback, through a real
//! Mosquitto: HTTP caller → gateway → device → gateway → caller, against the
//! bare MQTT round trip (request published, answer received, no gateway) in
//! the same run, so the gateway's own cost shows as a difference. Then
//! invocations per second with concurrent callers. Prints a markdown table.
//!
//! Run with `cargo bench -p rulegate --bench invoke` (needs `mosquitto`).

#[path = "../../tests/harness/mod.rs"]
mod harness;

use harness::mosquitto::Mosquitto;
use rulegate::config::GatewayConfig;
use rulegate::device_sim::{Device, DeviceOptions};
use rulegate::gateway::Gateway;
use rulegate::loadgen::percentiles;
use rulegate::mqtt::BrokerEndpoint;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-token-0123456789abcdef";
const WARM_UP: usize = 200;
const SEQUENTIAL: usize = 3000;
const CONCURRENT_CALLERS: usize = 64;
const DEVICES: usize = 16;
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; a filter that names another bench skips this one.
    if std::env::args()
        .skip(1)
        .any(|arg| !arg.starts_with('-') && !"invoke".contains(&arg))
    {
        return;
    }
    let broker = Mosquitto::start();
    let mut devices = Vec::new();
    for number in 0..DEVICES {
        let id = format!("Device{number:03}");
        let endpoint = BrokerEndpoint::from_url(&broker.url(), &id).unwrap();
        let mut device = Device::start(
            &endpoint,
            DeviceOptions {
                client_id: id,
                delay: Duration::ZERO,
                answers: true,
            },
        );
        device.ready().await;
        devices.push(device);
    }

    let mut mqtt_only = mqtt_round_trips(&broker).await;

    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("token"), TOKEN).unwrap();
    let text = format!(
        "[gateway]\nstats_interval_secs = 0\n[broker]\nurl = \"{}\"\nclient_id = \"bench-gateway\"\n\
         [invoke]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\nallowed_targets = [\"Device*\"]\n",
        broker.url()
    );
    let config =
        GatewayConfig::parse(&text, Path::new("bench.toml"), secrets.path().into()).unwrap();
    let gateway = Gateway::start(config, None).await.unwrap();
    let url = format!("http://{}/invoke", gateway.invoke_address().unwrap());
    let http = rulegate::tls::http_client_builder().build().unwrap();

    for call in 0..WARM_UP {
        invoke(&http, &url, call).await;
    }
    let mut through_gateway = Vec::with_capacity(SEQUENTIAL);
    for call in 0..SEQUENTIAL {
        let started = Instant::now();
        invoke(&http, &url, call).await;
        through_gateway.push(started.elapsed());
    }

    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + THROUGHPUT_WINDOW;
    let callers: Vec<_> = (0..CONCURRENT_CALLERS)
        .map(|caller| {
            let (http, url, done) = (http.clone(), url.clone(), done.clone());
            tokio::spawn(async move {
                let mut call = caller;
                while Instant::now() < deadline {
                    invoke(&http, &url, call).await;
                    done.fetch_add(1, Ordering::Relaxed);
                    call += CONCURRENT_CALLERS;
                }
            })
        })
        .collect();
    let started = Instant::now();
    for caller in callers {
        caller.await.unwrap();
    }
    let per_second = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let stats = gateway.invoke_stats().unwrap();
    gateway.shutdown().await.unwrap();
    for device in devices {
        device.stop().await;
    }

    let gateway_p = percentiles(&mut through_gateway).map(|p| p.expect("calls were timed"));
    let mqtt_p = percentiles(&mut mqtt_only).map(|p| p.expect("calls were timed"));
    println!("| round trip on loopback (sequential, {SEQUENTIAL} calls) | p50 | p99 | p99.9 |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| HTTP → gateway → device → HTTP | {} | {} | {} |",
        ms(gateway_p[0]),
        ms(gateway_p[1]),
        ms(gateway_p[2])
    );
    println!(
        "| bare MQTT request → answer (baseline) | {} | {} | {} |",
        ms(mqtt_p[0]),
        ms(mqtt_p[1]),
        ms(mqtt_p[2])
    );
    println!(
        "| ratio gateway / baseline | {:.2} | {:.2} | {:.2} |",
        ratio(gateway_p[0], mqtt_p[0]),
        ratio(gateway_p[1], mqtt_p[1]),
        ratio(gateway_p[2], mqtt_p[2])
    );
    println!();
    println!(
        "{CONCURRENT_CALLERS} concurrent callers over {DEVICES} devices: {per_second:.0} invocations/s \
         ({} answered, {} timed out in all)",
        stats.answered, stats.timed_out
    );
}

async fn invoke(http: &reqwest::Client, url: &str, call: usize) {
    let target = format!("Device{:03}", call % DEVICES);
    let response = http
        .get(url)
        .query(&[
            ("request", "ping"),
            ("method", "bench"),
            ("target", &target),
            ("timeout", "10"),
        ])
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("invoking");
    assert_eq!(response.status(), 200, "invocation of {target} failed");
}

/// The same request and answer as an invocation, by a bare MQTT client.
async fn mqtt_round_trips(broker: &Mosquitto) -> Vec<std::time::Duration> {
    let options = MqttOptions::new("bench-baseline", "127.0.0.1", broker.port());
    let (client, mut events) = AsyncClient::new(options, 64);
    events.set_network_options(rulegate::mqtt::network_options());
    client
        .subscribe("+/+/baseline/+/ack", QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.unwrap() {
            break;
        }
    }
    let mut times = Vec::with_capacity(SEQUENTIAL);
    for call in 0..WARM_UP + SEQUENTIAL {
        let topic = format!(
            "Device{:03}/bench/baseline/{}",
            call % DEVICES,
            uuid::Uuid::new_v4()
        );
        let answer = format!("{topic}/ack");
        let started = Instant::now();
        client
            .publish(&topic, QoS::AtLeastOnce, false, "ping")
            .await
            .unwrap();
        loop {
            if let Event::Incoming(Packet::Publish(publish)) = events.poll().await.unwrap()
                && publish.topic == answer
            {
                break;
            }
        }
        if call >= WARM_UP {
            times.push(started.elapsed());
        }
    }
    times
}

fn ms(time: Duration) -> String {
    format!("{:.3} ms", time.as_secs_f64() * 1000.0)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}
