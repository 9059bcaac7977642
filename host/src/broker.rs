//! The embedded MQTT broker (rumqttd), for a gateway that is itself the broker
//! its devices connect to, as on a Raspberry Pi with no other broker.
//!
//! It runs on threads of its own for the life of the process; the gateway then
//! connects to it like to any external broker.

use anyhow::{Context, bail};
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// How long the broker may take to accept connections after start.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts a broker listening on `listen` (MQTT 3.1.1) and returns once it
/// accepts connections. `max_payload_bytes` bounds what a device may publish.
pub fn start_embedded(listen: SocketAddr, max_payload_bytes: usize) -> anyhow::Result<()> {
    // rumqttd reports a failed bind only in its log; find out here instead.
    TcpListener::bind(listen)
        .with_context(|| format!("embedded broker: cannot listen on {listen}"))?;
    let mut broker = Broker::new(broker_config(listen, max_payload_bytes));
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            if let Err(error) = broker.start() {
                tracing::error!("embedded broker stopped: {error}");
            }
        })
        .context("embedded broker: starting its thread")?;
    let started = Instant::now();
    while TcpStream::connect(listen).is_err() {
        if started.elapsed() > READY_TIMEOUT {
            bail!("embedded broker: not accepting connections on {listen} after {READY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::info!(%listen, "embedded broker ready");
    Ok(())
}

fn broker_config(listen: SocketAddr, max_payload_bytes: usize) -> Config {
    let server = ServerSettings {
        name: "devices".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            // Headroom over the gateway's limit, so the gateway counts oversized
            // payloads instead of the broker cutting the device off.
            max_payload_size: crate::mqtt::packet_room(max_payload_bytes),
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    Config {
        router: RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 200,
            // What the broker keeps in memory per topic for slow subscribers:
            // small, for a Raspberry Pi. A subscriber further behind loses the
            // oldest messages, so the gateway's intake must keep up.
            max_segment_size: 4 << 20,
            max_segment_count: 4,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("devices".to_owned(), server)])),
        ..Config::default()
    }
}
