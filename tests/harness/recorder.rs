//! An MQTT subscriber for tests: records everything published on a filter,
//! in the background, for the test to take when it is ready.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Everything published on `filter`, collected in the background.
pub struct Recorder {
    received: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
}

impl Recorder {
    pub async fn subscribe(port: u16, filter: &str) -> Recorder {
        let id = format!("recorder-{}", uuid::Uuid::new_v4().simple());
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = AsyncClient::new(options, 64);
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let (sender, received) = mpsc::unbounded_channel();
        let (subscribed, mut acked) = watch::channel(false);
        tokio::spawn(async move {
            let _client = client;
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subscribed.send(true);
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let _ = sender.send((publish.topic, publish.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), acked.wait_for(|&done| done))
            .await
            .expect("the recorder's subscription was acknowledged")
            .unwrap();
        Recorder { received }
    }

    /// Waits until `count` messages arrived (or `within` passed) and returns them.
    pub async fn take(&mut self, count: usize, within: Duration) -> Vec<(String, Vec<u8>)> {
        let deadline = Instant::now() + within;
        let mut messages = Vec::new();
        while messages.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.received.recv()).await {
                Ok(Some(message)) => messages.push(message),
                _ => break,
            }
        }
        messages
    }
}
