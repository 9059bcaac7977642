//! The soil-moisture device simulator (`rulegate simulate`): N sensors named
//! `soilSensor1..N` publish readings with a random humidity and both
//! timestamps on `device/<name>/devicePayload`, at a given rate, to any broker.

use crate::engine::unix_time_ms;
use crate::mqtt::BrokerEndpoint;
use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use std::ops::RangeInclusive;
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::watch;

/// How long the simulator waits for the broker to acknowledge its last
/// publishes before it gives up.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct SimulatorOptions {
    /// Number of sensors; they take turns.
    pub sensors: usize,
    /// Messages per second over all sensors; 0 publishes as fast as the broker takes them.
    pub rate: f64,
    /// Stop after this many messages; `None` runs until stopped.
    pub count: Option<u64>,
    /// The humidity readings are drawn uniformly from this range.
    pub humidity: RangeInclusive<u32>,
    /// Seed of the random readings, for a repeatable run.
    pub seed: Option<u64>,
}

impl Default for SimulatorOptions {
    fn default() -> Self {
        SimulatorOptions {
            sensors: 5,
            rate: 10.0,
            count: None,
            humidity: 0..=100,
            seed: None,
        }
    }
}

/// One sensor's reading, serialised exactly like the reference devices'.
pub fn reading_payload(name: &str, humidity: u32, epoch_ms: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(epoch_ms);
    let iso = humantime::format_rfc3339_micros(at).to_string();
    let iso = iso.trim_end_matches('Z');
    format!(
        r#"{{"name":"{name}","humidity":{humidity},"timeStampEpoch":{epoch_ms},"timeStampIso":"{iso}"}}"#
    )
}

/// The topic sensor `name` publishes on.
pub fn reading_topic(name: &str) -> String {
    format!("device/{name}/devicePayload")
}

/// Publishes readings until `options.count` is reached or `stop` turns true,
/// then waits until the broker acknowledged every one (QoS 1). Returns the
/// number published.
pub async fn run(
    endpoint: &BrokerEndpoint,
    options: &SimulatorOptions,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<u64> {
    if options.sensors == 0 {
        bail!("the simulator needs at least one sensor");
    }
    // 0 means flat out; otherwise one reading per interval of at least 1 µs.
    if !(options.rate == 0.0 || (options.rate >= 1e-3 && options.rate <= 1e6)) {
        bail!(
            "simulator rate {}: use 0 (flat out) or 0.001 to 1000000 readings/s",
            options.rate
        );
    }
    let client_id = format!("rulegate-simulator-{}", uuid::Uuid::new_v4().simple());
    let (client, mut events) = AsyncClient::new(endpoint.options(&client_id, 64 * 1024), 1024);
    let (acked_tx, mut acked_rx) = watch::channel(0u64);
    let address = endpoint.address();
    let driver = tokio::spawn(async move {
        let mut acked = 0u64;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acked += 1;
                    let _ = acked_tx.send(acked);
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(broker = %address, "simulator connection: {error}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });

    let mut rng = match options.seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_os_rng(),
    };
    let names: Vec<String> = (1..=options.sensors)
        .map(|number| format!("soilSensor{number}"))
        .collect();
    let mut last_epoch = vec![0u64; options.sensors];
    let mut pacing = (options.rate > 0.0)
        .then(|| tokio::time::interval(Duration::from_secs_f64(1.0 / options.rate)));
    let mut published = 0u64;
    while options.count.is_none_or(|count| published < count) && !*stop.borrow() {
        if let Some(pacing) = &mut pacing {
            tokio::select! {
                _ = pacing.tick() => {}
                _ = stop.changed() => break,
            }
        }
        let sensor = (published % options.sensors as u64) as usize;
        // A device's own timestamp is unique per reading, so archive keys built
        // from it never collide even when readings come faster than 1 per ms.
        let epoch = unix_time_ms().max(last_epoch[sensor] + 1);
        last_epoch[sensor] = epoch;
        let humidity = rng.random_range(options.humidity.clone());
        let name = &names[sensor];
        client
            .publish(
                reading_topic(name),
                QoS::AtLeastOnce,
                false,
                reading_payload(name, humidity, epoch),
            )
            .await
            .context("simulator: queueing a publish")?;
        published += 1;
    }

    let all_acked = acked_rx.wait_for(|&acked| acked >= published);
    if tokio::time::timeout(ACK_TIMEOUT, all_acked).await.is_err() {
        bail!(
            "simulator: the broker did not acknowledge all {published} readings in {ACK_TIMEOUT:?}"
        );
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
    Ok(published)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_matches_the_reference_device_format() {
        assert_eq!(
            reading_payload("soilSensor3", 29, 1598536072677),
            r#"{"name":"soilSensor3","humidity":29,"timeStampEpoch":1598536072677,"timeStampIso":"2020-08-27T13:47:52.677000"}"#
        );
        assert_eq!(
            reading_topic("soilSensor3"),
            "device/soilSensor3/devicePayload"
        );
    }
}
