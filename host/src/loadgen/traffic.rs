//! Both ends of a load run: a publisher of soil readings, each named
//! `bench-<sequence>`, at a rate or flat out; and a receiver that finds the
//! sequence number in whatever arrives (the JSON reading or the alert text both
//! carry the name) and records the end-to-end latency of each message.

use crate::simulate::reading_payload;
use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Marks the sequence number inside every payload.
const NAME_PREFIX: &str = "bench-";
/// Every reading is under the alert threshold, so the Wasm rule alerts on each.
const HUMIDITY: u32 = 20;
/// Where every gateway stage publishes what it makes of the readings.
pub const OUTPUT_FILTER: &str = "bench/out/#";
/// How long the receiver waits for the next message before it calls the rest lost.
pub const QUIET_PERIOD: Duration = Duration::from_secs(3);

/// Send times of each message, in nanoseconds after the run's start; 0 = not sent.
pub struct SendLog {
    start: Instant,
    sent_at: Vec<AtomicU64>,
}

impl SendLog {
    pub fn new(messages: usize) -> Arc<SendLog> {
        Arc::new(SendLog {
            start: Instant::now(),
            sent_at: (0..messages).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    fn mark(&self, sequence: usize) {
        let nanos = self.start.elapsed().as_nanos().max(1) as u64;
        self.sent_at[sequence].store(nanos, Ordering::Relaxed);
    }

    fn latency(&self, sequence: usize, arrived: Instant) -> Option<Duration> {
        let sent = self.sent_at.get(sequence)?.load(Ordering::Relaxed);
        (sent != 0).then(|| arrived.duration_since(self.start) - Duration::from_nanos(sent))
    }
}

/// A reading named `bench-<sequence>`, padded with a `pad` field to about
/// `payload_bytes`.
pub fn bench_payload(sequence: usize, payload_bytes: usize) -> String {
    let reading = reading_payload(
        &format!("{NAME_PREFIX}{sequence}"),
        HUMIDITY,
        1_598_536_072_677 + sequence as u64,
    );
    let padding = payload_bytes.saturating_sub(reading.len() + 10);
    if padding == 0 {
        return reading;
    }
    format!(
        "{},\"pad\":\"{}\"}}",
        reading.trim_end_matches('}'),
        "x".repeat(padding)
    )
}

/// Publishes `messages` readings at QoS 1 on `device/s<n>/devicePayload`, `n`
/// cycling through `sensors`; `rate` 0 is flat out. Returns once the broker
/// acknowledged them all.
pub async fn publish(
    port: u16,
    messages: usize,
    sensors: usize,
    rate: f64,
    payload_bytes: usize,
    log: Arc<SendLog>,
) -> anyhow::Result<()> {
    let mut options = MqttOptions::new(unique_id("bench-publisher"), "127.0.0.1", port);
    options
        .set_max_packet_size(payload_bytes + 4096, payload_bytes + 4096)
        .set_inflight(1000);
    let (client, mut events) = AsyncClient::new(options, 1000);
    events.set_network_options(crate::mqtt::network_options());
    let (acked_tx, mut acked) = watch::channel(0usize);
    let driver = tokio::spawn(async move {
        let mut count = 0;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    count += 1;
                    let _ = acked_tx.send(count);
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return Ok(()),
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
    });
    let topics: Vec<String> = (0..sensors.max(1))
        .map(|sensor| format!("device/s{sensor}/devicePayload"))
        .collect();
    let started = Instant::now();
    for sequence in 0..messages {
        if rate > 0.0 {
            // Paced against the schedule, not the previous send, so timer
            // granularity shows as small bursts and the average rate holds.
            let due = started + Duration::from_secs_f64(sequence as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
        }
        let payload = bench_payload(sequence, payload_bytes);
        log.mark(sequence);
        client
            .publish(
                &topics[sequence % topics.len()],
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .context("load publisher: queueing a publish")?;
    }
    let all_acked = acked.wait_for(|&count| count >= messages);
    if tokio::time::timeout(Duration::from_secs(60), all_acked)
        .await
        .is_err()
    {
        bail!("load publisher: the broker did not acknowledge all {messages} messages in 60 s");
    }
    let _ = client.disconnect().await;
    let _ = driver.await;
    Ok(())
}

/// What the receiver saw.
#[derive(Debug, Default)]
pub struct Arrivals {
    /// Distinct messages that arrived.
    pub received: usize,
    pub duplicates: usize,
    /// End-to-end latency of each distinct message.
    pub latencies: Vec<Duration>,
    /// When the last distinct message arrived.
    pub last: Option<Instant>,
}

/// A subscriber on `filter`, recording what arrives until [`Receiver::finish`].
pub struct Receiver {
    tally: Arc<Mutex<Tally>>,
    task: tokio::task::JoinHandle<()>,
}

/// The arrivals so far and which sequence numbers they covered.
#[derive(Default)]
struct Tally {
    arrivals: Arrivals,
    seen: Vec<bool>,
}

impl Tally {
    fn record(&mut self, sequence: usize, arrived: Instant, log: &SendLog) {
        match self.seen.get_mut(sequence) {
            Some(true) => self.arrivals.duplicates += 1,
            Some(seen) => {
                *seen = true;
                self.arrivals.received += 1;
                self.arrivals.last = Some(arrived);
                if let Some(latency) = log.latency(sequence, arrived) {
                    self.arrivals.latencies.push(latency);
                }
            }
            None => {}
        }
    }
}

fn lock(tally: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    tally
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Receiver {
    /// Subscribes and returns once the broker acknowledged the subscription.
    pub async fn subscribe(
        port: u16,
        filter: &str,
        max_payload_bytes: usize,
        log: Arc<SendLog>,
    ) -> anyhow::Result<Receiver> {
        let mut options = MqttOptions::new(unique_id("bench-receiver"), "127.0.0.1", port);
        options.set_max_packet_size(max_payload_bytes + 4096, max_payload_bytes + 4096);
        let (client, mut events) = AsyncClient::new(options, 64);
        events.set_network_options(crate::mqtt::network_options());
        client.subscribe(filter, QoS::AtLeastOnce).await?;
        let tally = Arc::new(Mutex::new(Tally {
            seen: vec![false; log.sent_at.len()],
            ..Tally::default()
        }));
        let (subscribed, mut ready) = watch::channel(false);
        let task = tokio::spawn({
            let tally = tally.clone();
            async move {
                let _client = client;
                while let Ok(event) = events.poll().await {
                    match event {
                        Event::Incoming(Packet::SubAck(_)) => {
                            let _ = subscribed.send(true);
                        }
                        Event::Incoming(Packet::Publish(publish)) => {
                            let arrived = Instant::now();
                            if let Some(sequence) = sequence_in(&publish.payload) {
                                lock(&tally).record(sequence, arrived, &log);
                            }
                        }
                        _ => {}
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|&done| done))
            .await
            .context("the load receiver's subscription was not acknowledged in 10 s")??;
        Ok(Receiver { tally, task })
    }

    /// Waits until `expected` messages arrived or none came for [`QUIET_PERIOD`].
    pub async fn finish(self, expected: usize) -> Arrivals {
        let mut last_count = 0;
        let mut last_change = Instant::now();
        loop {
            let count = lock(&self.tally).arrivals.received;
            if count >= expected || last_change.elapsed() > QUIET_PERIOD {
                break;
            }
            if count != last_count {
                (last_count, last_change) = (count, Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.task.abort();
        std::mem::take(&mut lock(&self.tally).arrivals)
    }
}

/// A client id no earlier run's lingering connection holds.
pub fn unique_id(role: &str) -> String {
    format!("{role}-{}", uuid::Uuid::new_v4().simple())
}

/// The number after the first `bench-` in a payload.
fn sequence_in(payload: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(payload).ok()?;
    let digits = &text[text.find(NAME_PREFIX)? + NAME_PREFIX.len()..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_padded_and_carry_their_sequence() {
        let small = bench_payload(7, 100);
        assert!(small.len() <= 120, "{small}");
        let large = bench_payload(123, 10 * 1024);
        assert!((10 * 1024 - 20..=10 * 1024 + 20).contains(&large.len()));
        let value: serde_json::Value = serde_json::from_str(&large).unwrap();
        assert_eq!(value["name"], "bench-123");
        assert_eq!(sequence_in(large.as_bytes()), Some(123));
        assert_eq!(
            sequence_in(b"Humidity 20 under threshold for device name bench-42"),
            Some(42)
        );
        assert_eq!(sequence_in(b"no marker"), None);
    }
}
