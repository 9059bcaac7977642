//! A simulated device for synchronous invocation (`rulegate device-sim`): it
//! subscribes to `<client id>/#` and answers each request with
//! `Your request was '<request>'. Some random response: '<number>'`, after an
//! optional delay, or not at all. It follows both conventions of
//! [`crate::invoke`]: an MQTT 5 request's response topic and correlation
//! data, else the request topic with `/ack` appended.

use crate::mqtt::{self, BrokerEndpoint, Egress, Inbound};
use bytes::Bytes;
use rand::Rng;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The largest request the simulated device takes.
const MAX_REQUEST_BYTES: usize = 128 * 1024;

#[derive(Debug, Clone)]
pub struct DeviceOptions {
    /// The device's MQTT client id, which is also its topic space.
    pub client_id: String,
    /// How long the device takes to answer.
    pub delay: Duration,
    /// Whether it answers at all.
    pub answers: bool,
}

/// The device's own text for a request.
pub fn answer_text(request: &str, number: u32) -> String {
    format!("Your request was '{request}'. Some random response: '{number}'")
}

/// A running simulated device.
pub struct Device {
    stop: watch::Sender<bool>,
    ready: watch::Receiver<bool>,
    connection: JoinHandle<()>,
    worker: JoinHandle<()>,
    counters: Arc<DeviceCounters>,
}

/// What a device saw and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStats {
    pub requests: u64,
    pub answered: u64,
}

#[derive(Default)]
struct DeviceCounters {
    requests: AtomicU64,
    answered: AtomicU64,
}

impl Device {
    /// Connects and starts answering; `endpoint`'s own client id is replaced by
    /// the device's.
    pub fn start(endpoint: &BrokerEndpoint, options: DeviceOptions) -> Device {
        let (stop, stopped) = watch::channel(false);
        let (subscribed, ready) = watch::channel(false);
        let (requests, mut queue) = mpsc::channel(256);
        let (link, connection) = mqtt::spawn_subscriber(
            endpoint,
            &options.client_id,
            mqtt::fixed_filters(vec![format!("{}/#", options.client_id)]),
            MAX_REQUEST_BYTES,
            requests,
            subscribed,
            stopped,
        );
        let link = Arc::new(link);
        let counters = Arc::new(DeviceCounters::default());
        let worker = tokio::spawn({
            let counters = counters.clone();
            async move {
                while let Some(request) = queue.recv().await {
                    // Its own answers come back on its topic space under 3.1.1.
                    if request.topic.ends_with("/ack") {
                        continue;
                    }
                    counters.requests.fetch_add(1, Ordering::Relaxed);
                    if options.answers {
                        // Each answer waits on its own, so one slow request does
                        // not hold up the next.
                        tokio::spawn(answer(
                            link.clone(),
                            request,
                            options.delay,
                            counters.clone(),
                        ));
                    }
                }
            }
        });
        Device {
            stop,
            ready,
            connection,
            worker,
            counters,
        }
    }

    /// Resolves once the broker acknowledged the device's subscription.
    pub async fn ready(&mut self) {
        let _ = self.ready.wait_for(|&ready| ready).await;
    }

    /// Disconnects; answers still waiting out their delay are abandoned.
    pub async fn stop(self) -> DeviceStats {
        let _ = self.stop.send(true);
        let _ = self.connection.await;
        self.worker.abort();
        self.counters.snapshot()
    }
}

impl DeviceCounters {
    fn snapshot(&self) -> DeviceStats {
        DeviceStats {
            requests: self.requests.load(Ordering::Relaxed),
            answered: self.answered.load(Ordering::Relaxed),
        }
    }
}

async fn answer(
    link: Arc<Egress>,
    request: Inbound,
    delay: Duration,
    counters: Arc<DeviceCounters>,
) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let properties = &request.properties;
    let topic = properties
        .response_topic
        .clone()
        .unwrap_or_else(|| format!("{}/ack", request.topic));
    let number: u32 = rand::rng().random_range(0..1_000_000);
    let text = answer_text(&String::from_utf8_lossy(&request.payload), number);
    match link
        .answer(
            &topic,
            Bytes::from(text),
            properties.correlation_data.as_deref(),
        )
        .await
    {
        Ok(()) => {
            counters.answered.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => tracing::warn!(topic, "answering: {error}"),
    }
}
