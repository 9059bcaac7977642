//! The gateway's MQTT connections: intake (subscribes to the rules' `FROM`
//! filters and feeds a bounded channel) and egress (publishes for the `mqtt`
//! sink). Two connections, so a full pipeline that stops intake can never block
//! the publishes that would drain it.
//!
//! Each connection's rumqttc event loop runs in its own task and reconnects with
//! backoff; everything else talks to it through channels.

use crate::actions::Publisher;
use crate::config::BrokerConfig;
use crate::engine::unix_time_ms;
use crate::message::{Property, QoS};
use anyhow::{Context, bail};
use bytes::Bytes;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, SubscribeFilter,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Longest wait between reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);
/// Requests (publishes, subscribes) rumqttc queues before `publish` waits.
const REQUEST_CAPACITY: usize = 256;

/// A message as it came off the wire.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub received_at_ms: u64,
}

/// Where to connect and how, resolved from [`BrokerConfig`].
#[derive(Clone)]
pub struct BrokerEndpoint {
    host: String,
    port: u16,
    tls: Option<TlsConfiguration>,
    username: Option<String>,
    password: Option<String>,
    keep_alive: Duration,
    clean_session: bool,
    client_id: String,
}

impl BrokerEndpoint {
    /// The broker of `config`; `embedded_addr` is where the embedded broker
    /// listens when the gateway runs one.
    pub fn from_config(config: &BrokerConfig) -> anyhow::Result<Self> {
        let (tls, host, port) = match &config.url {
            Some(url) => parse_url(url).with_context(|| format!("broker.url `{url}`"))?,
            None => (false, config.listen.ip().to_string(), config.listen.port()),
        };
        let tls = if tls {
            Some(tls_configuration(config)?)
        } else {
            None
        };
        let password = match &config.password_env {
            Some(variable) => Some(std::env::var(variable).with_context(|| {
                format!("broker.password_env: environment variable `{variable}` is not set")
            })?),
            None => None,
        };
        Ok(BrokerEndpoint {
            host,
            port,
            tls,
            username: config.username.clone(),
            password,
            keep_alive: Duration::from_secs(config.keep_alive_secs.max(5)),
            clean_session: config.clean_session,
            client_id: config.client_id.clone(),
        })
    }

    /// A plain-TCP endpoint, for tools such as the simulator.
    pub fn plain(host: &str, port: u16, client_id: &str) -> Self {
        BrokerEndpoint {
            host: host.to_owned(),
            port,
            tls: None,
            username: None,
            password: None,
            keep_alive: Duration::from_secs(30),
            clean_session: true,
            client_id: client_id.to_owned(),
        }
    }

    /// Parses `mqtt://host:port` for tools that take a URL on the command line.
    pub fn from_url(url: &str, client_id: &str) -> anyhow::Result<Self> {
        let (tls, host, port) = parse_url(url).with_context(|| format!("broker URL `{url}`"))?;
        if tls {
            bail!(
                "broker URL `{url}`: use a configuration file for mqtts:// (it needs certificates)"
            );
        }
        Ok(Self::plain(&host, port, client_id))
    }

    pub(crate) fn options(&self, client_id: &str, max_packet: usize) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, &self.host, self.port);
        options
            .set_keep_alive(self.keep_alive)
            .set_clean_session(self.clean_session)
            .set_max_packet_size(max_packet, max_packet);
        if let (Some(user), Some(password)) = (&self.username, &self.password) {
            options.set_credentials(user, password);
        } else if let Some(user) = &self.username {
            options.set_credentials(user, "");
        }
        if let Some(tls) = &self.tls {
            options.set_transport(Transport::tls_with_config(tls.clone()));
        }
        options
    }

    /// `host:port`, for logs.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Splits `mqtt://host:port` / `mqtts://host:port` into (tls, host, port).
fn parse_url(url: &str) -> anyhow::Result<(bool, String, u16)> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("mqtt://") {
        (false, rest)
    } else {
        bail!("must start with mqtt:// or mqtts://");
    };
    let rest = rest.trim_end_matches('/');
    let default_port = if tls { 8883 } else { 1883 };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') => {
            let port = port
                .parse()
                .with_context(|| format!("`{port}` is not a port number"))?;
            (host, port)
        }
        _ => (rest, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("has no host");
    }
    Ok((tls, host.to_owned(), port))
}

fn tls_configuration(config: &BrokerConfig) -> anyhow::Result<TlsConfiguration> {
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("broker.{key}: reading {}", path.display()))
    };
    let Some(ca_file) = &config.ca_file else {
        bail!("broker.ca_file: an mqtts:// broker needs the CA certificate (PEM) that signed it");
    };
    let client_auth = match (&config.client_cert_file, &config.client_key_file) {
        (Some(cert), Some(key)) => Some((
            read("client_cert_file", cert)?,
            read("client_key_file", key)?,
        )),
        _ => None,
    };
    Ok(TlsConfiguration::Simple {
        ca: read("ca_file", ca_file)?,
        alpn: None,
        client_auth,
    })
}

/// Connects the intake: subscribes to `filters` (at QoS 1) after every
/// (re)connection and sends each message into `inbound`, waiting when it is
/// full. `subscribed` turns true once the broker acknowledged the first
/// subscription. Ends when `shutdown` turns true or `inbound` closes.
pub fn spawn_intake(
    endpoint: &BrokerEndpoint,
    filters: Vec<String>,
    max_payload_bytes: usize,
    inbound: mpsc::Sender<Inbound>,
    subscribed: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    // Room above the payload limit for the topic and headers, so an oversized
    // payload reaches the pipeline to be counted rather than breaking the link.
    let options = endpoint.options(&endpoint.client_id, max_payload_bytes * 2 + 64 * 1024);
    let address = endpoint.address();
    let (client, mut events) = AsyncClient::new(options, REQUEST_CAPACITY);
    tokio::spawn(async move {
        let mut reconnect_delay = Duration::from_millis(100);
        loop {
            let event = tokio::select! {
                event = events.poll() => event,
                _ = shutdown.changed() => break,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    reconnect_delay = Duration::from_millis(100);
                    tracing::info!(broker = %address, session_present = ack.session_present, "intake connected");
                    let subscriptions = filters.iter().map(|filter| {
                        SubscribeFilter::new(filter.clone(), rumqttc::QoS::AtLeastOnce)
                    });
                    // Queued on the request channel; sent by the next polls.
                    if let Err(error) = client.try_subscribe_many(subscriptions) {
                        tracing::error!("subscribing to {filters:?}: {error}");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    for (filter, code) in filters.iter().zip(&ack.return_codes) {
                        if matches!(code, SubscribeReasonCode::Failure) {
                            tracing::error!(broker = %address, filter, "the broker refused the subscription");
                        }
                    }
                    let _ = subscribed.send(true);
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let message = Inbound {
                        topic: publish.topic,
                        payload: publish.payload,
                        qos: lift_qos(publish.qos),
                        received_at_ms: unix_time_ms(),
                    };
                    if inbound.send(message).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(broker = %address, "intake connection: {error}; retrying in {reconnect_delay:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(reconnect_delay) => {}
                        _ = shutdown.changed() => break,
                    }
                    reconnect_delay = (reconnect_delay * 2).min(MAX_RECONNECT_DELAY);
                }
            }
        }
        let _ = client.try_disconnect();
    })
}

/// The egress connection, used by the `mqtt` sink to publish to device topics.
pub struct Egress {
    client: AsyncClient,
}

impl Egress {
    /// Connects and keeps the connection's event loop running until `shutdown`.
    pub fn spawn(
        endpoint: &BrokerEndpoint,
        max_packet: usize,
        shutdown: watch::Receiver<bool>,
    ) -> (Egress, tokio::task::JoinHandle<()>) {
        let client_id = format!("{}-egress", endpoint.client_id);
        let options = endpoint.options(&client_id, max_packet);
        let (client, events) = AsyncClient::new(options, REQUEST_CAPACITY);
        let task = tokio::spawn(drive_egress(
            client.clone(),
            events,
            endpoint.address(),
            shutdown,
        ));
        (Egress { client }, task)
    }

    pub fn client(&self) -> &AsyncClient {
        &self.client
    }
}

/// Runs the egress event loop. On `shutdown` it queues a DISCONNECT behind the
/// publishes already queued and polls until it is sent, so none is cut off.
async fn drive_egress(
    client: AsyncClient,
    mut events: EventLoop,
    address: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut reconnect_delay = Duration::from_millis(100);
    let mut closing = false;
    loop {
        let event = tokio::select! {
            event = events.poll() => event,
            _ = shutdown.changed(), if !closing => {
                closing = true;
                if client.try_disconnect().is_err() {
                    break;
                }
                continue;
            }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                reconnect_delay = Duration::from_millis(100);
                tracing::info!(broker = %address, "egress connected");
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(_) if closing => break,
            Err(error) => {
                tracing::warn!(broker = %address, "egress connection: {error}; retrying in {reconnect_delay:?}");
                tokio::time::sleep(reconnect_delay).await;
                reconnect_delay = (reconnect_delay * 2).min(MAX_RECONNECT_DELAY);
            }
        }
    }
}

#[async_trait::async_trait]
impl Publisher for Egress {
    async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        _user_properties: &[Property],
    ) -> Result<(), String> {
        // MQTT 3.1.1 has no user properties; they are dropped here.
        self.client
            .publish_bytes(topic, lower_qos(qos), retain, payload)
            .await
            .map_err(|error| format!("publishing to `{topic}`: {error}"))
    }
}

pub fn lower_qos(qos: QoS) -> rumqttc::QoS {
    match qos {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

fn lift_qos(qos: rumqttc::QoS) -> QoS {
    match qos {
        rumqttc::QoS::AtMostOnce => QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce => QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn parses_broker_urls_with_default_ports() {
        assert_eq!(
            parse_url("mqtt://broker").unwrap(),
            (false, "broker".into(), 1883)
        );
        assert_eq!(
            parse_url("mqtts://broker").unwrap(),
            (true, "broker".into(), 8883)
        );
        assert_eq!(
            parse_url("mqtt://127.0.0.1:1884/").unwrap(),
            (false, "127.0.0.1".into(), 1884)
        );
        assert_eq!(
            parse_url("mqtt://[::1]:1885").unwrap(),
            (false, "::1".into(), 1885)
        );
    }

    #[test]
    fn rejects_other_schemes_and_bad_ports() {
        assert!(parse_url("http://broker").is_err());
        assert!(parse_url("mqtt://broker:port").is_err());
        assert!(parse_url("mqtt://").is_err());
    }
}
