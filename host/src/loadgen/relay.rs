//! The least a gateway can do: a plain MQTT client that republishes each
//! reading as it arrives, with no rule, no outbox and no wait for the broker's
//! acknowledgement. Its throughput is what the second hop through the broker
//! costs on this machine: the ceiling for any gateway between two MQTT hops.

use anyhow::Context as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Where the relay republishes, under the load receiver's `bench/out/#`.
const RELAY_TOPIC: &str = "bench/out/relay";

pub struct Relay {
    tasks: [JoinHandle<()>; 2],
}

impl Relay {
    /// Subscribes to `filter` and returns once the broker acknowledged it.
    pub async fn start(port: u16, filter: &str, max_payload_bytes: usize) -> anyhow::Result<Relay> {
        let id = format!("bench-relay-{}", uuid::Uuid::new_v4().simple());
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options
            .set_max_packet_size(max_payload_bytes + 4096, max_payload_bytes + 4096)
            .set_inflight(1000);
        let (client, mut events) = AsyncClient::new(options, 1000);
        events.set_network_options(crate::mqtt::network_options());
        client.subscribe(filter, QoS::AtLeastOnce).await?;
        // The event loop must keep polling while a publish waits for room in
        // the client's queue (the acknowledgements that make room arrive
        // through it), so republishing runs in a task of its own, fed by a
        // queue the event loop never waits on: a run's load is finite.
        let (arrived, mut to_publish) = mpsc::unbounded_channel();
        let (subscribed, mut ready) = watch::channel(false);
        let receiving = tokio::spawn(async move {
            while let Ok(event) = events.poll().await {
                match event {
                    Event::Incoming(Packet::SubAck(_)) => {
                        let _ = subscribed.send(true);
                    }
                    Event::Incoming(Packet::Publish(publish)) => {
                        // Fails only once the republishing task has ended (the
                        // relay stopping, or its connection gone); the receiver
                        // counts what then never arrives.
                        let _ = arrived.send(publish.payload);
                    }
                    _ => {}
                }
            }
        });
        let republishing = tokio::spawn(async move {
            while let Some(payload) = to_publish.recv().await {
                if client
                    .publish_bytes(RELAY_TOPIC, QoS::AtLeastOnce, false, payload)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|&done| done))
            .await
            .context("the relay's subscription was not acknowledged in 10 s")??;
        Ok(Relay {
            tasks: [receiving, republishing],
        })
    }

    pub fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}
