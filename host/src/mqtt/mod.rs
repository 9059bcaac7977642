//! The gateway's MQTT connections: intake (subscribes to the rules' `FROM`
//! filters and feeds a bounded channel) and egress (publishes for the `mqtt`
//! sink); the invocation service and the device simulator use the same two
//! kinds. Two connections, so a full pipeline that stops intake can never block
//! the publishes that would drain it.
//!
//! Each connection's event loop runs in its own task and reconnects with
//! backoff; everything else talks to it through channels. MQTT 3.1.1 or 5, per
//! `broker.protocol`; [`connection`] hides which.

mod confirmations;
mod connection;
mod receipts;

pub use crate::config::MqttVersion;
pub use receipts::Receipt;

use crate::actions::{Confirmation, Publisher, confirmed_at_once};
use crate::config::BrokerConfig;
use crate::message::{Property, QoS};
use anyhow::{Context, bail};
use bytes::Bytes;
use confirmations::Confirmations;
use connection::{Client, EventLoop, Happening};
use receipts::AckQueue;
use rulegate_sql::MqttProperties;
use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How long a subscriber that is told to stop waits for the messages it took
/// to be acknowledged before it disconnects anyway (the broker then sends
/// the unacknowledged ones again next time).
const ACK_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);
/// How long a persistent MQTT 5 session outlives its connection at the broker.
const SESSION_EXPIRY_SECS: u32 = 7 * 24 * 3600;

/// A message as it came off the wire.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub received_at_ms: u64,
    /// MQTT 5 publish properties; none on an MQTT 3.1.1 connection.
    pub properties: MqttProperties,
    /// Acknowledges the message to the broker when the last clone is dropped;
    /// `None` for QoS 0 and for messages that did not come from a broker.
    pub receipt: Option<Receipt>,
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
    version: MqttVersion,
}

impl BrokerEndpoint {
    /// The broker of `config`: its `url`, or the embedded broker's `listen` address.
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
            version: config.protocol,
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
            version: MqttVersion::V311,
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
        if let Some(user) = &self.username {
            options.set_credentials(user, self.password.as_deref().unwrap_or_default());
        }
        if let Some(tls) = &self.tls {
            options.set_transport(Transport::tls_with_config(tls.clone()));
        }
        options
    }

    fn options_v5(&self, client_id: &str, max_packet: usize) -> rumqttc::v5::MqttOptions {
        let mut options = rumqttc::v5::MqttOptions::new(client_id, &self.host, self.port);
        options
            .set_keep_alive(self.keep_alive)
            .set_clean_start(self.clean_session)
            .set_max_packet_size(u32::try_from(max_packet).ok());
        if !self.clean_session {
            options.set_session_expiry_interval(Some(SESSION_EXPIRY_SECS));
        }
        if let Some(user) = &self.username {
            options.set_credentials(user, self.password.as_deref().unwrap_or_default());
        }
        if let Some(tls) = &self.tls {
            options.set_transport(Transport::tls_with_config(tls.clone()));
        }
        options
    }

    /// The client id the gateway's connections derive theirs from.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The same broker, spoken to in MQTT `version`.
    pub fn with_version(mut self, version: MqttVersion) -> Self {
        self.version = version;
        self
    }

    /// `host:port`, for logs.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Socket options of every connection. TCP_NODELAY: publishes are small and
/// latency-bound, and with Nagle's algorithm a lone packet waits for the
/// peer's delayed ACK, up to 40 ms on Linux, on every request/answer exchange.
pub fn network_options() -> rumqttc::NetworkOptions {
    let mut options = rumqttc::NetworkOptions::new();
    options.set_tcp_nodelay(true);
    options
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
        // `[::1]` alone: the colons belong to the address.
        Some((host, port)) if !host.ends_with(':') && !port.ends_with(']') => {
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
    let ca = read("ca_file", ca_file)?;
    let client_auth = client_auth
        .as_ref()
        .map(|(cert, key)| (&cert[..], &key[..]));
    let tls = crate::tls::client_config(&ca, client_auth)
        .map_err(|error| anyhow::anyhow!("broker.{error:#}"))?;
    Ok(TlsConfiguration::Rustls(Arc::new(tls)))
}

/// Connects a subscriber (the gateway's intake, the invocation service's
/// answers, a simulated device): holds the subscriptions `filters` names (at
/// QoS 1), renewed after every (re)connection and changed when `filters`
/// changes, and sends each message into `inbound`, waiting when it is full.
/// `subscribed` turns true once the broker acknowledged the first subscription
/// (at once when there is nothing to subscribe to). A QoS 1 message is
/// acknowledged once its [`Inbound::receipt`] is dropped. When `shutdown`
/// turns true it closes `inbound`, waits (a bounded time) until the messages
/// it took are acknowledged, then disconnects and ends; it also ends when
/// `inbound`'s receiver is gone. The returned [`Egress`] publishes on the same
/// connection.
pub fn spawn_subscriber(
    endpoint: &BrokerEndpoint,
    client_id: &str,
    mut filters: watch::Receiver<Vec<String>>,
    max_payload_bytes: usize,
    inbound: mpsc::Sender<Inbound>,
    subscribed: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) -> (Egress, tokio::task::JoinHandle<()>) {
    // Room above the payload limit for the topic and headers, so an oversized
    // payload reaches the pipeline to be counted rather than breaking the link.
    let max_packet = packet_room(max_payload_bytes);
    let (client, events) = connection::connect(endpoint, client_id, max_packet);
    let address = endpoint.address();
    // The connection closes only once the messages taken are acknowledged.
    let (close, closing) = watch::channel(false);
    let mut connection = Driver::new(client_id, client.clone(), events, address.clone(), closing);
    let egress = Egress {
        client: client.clone(),
        max_packet,
        confirmations: None,
    };
    let task = tokio::spawn(async move {
        let mut subscriptions = Subscriptions::new(filters.borrow_and_update().clone(), address);
        let (mut acks, mut settled) = AckQueue::new();
        let mut inbound = Some(inbound);
        // Set at shutdown: until then, acknowledgements may still go out.
        let mut draining_until: Option<Instant> = None;
        // A fixed list's sender is gone from the start: nothing to follow.
        let mut following = true;
        loop {
            if let Some(deadline) = draining_until
                && (acks.is_empty() || Instant::now() >= deadline)
                && !*close.borrow()
            {
                close.send_replace(true);
            }
            let happening = tokio::select! {
                happening = connection.next() => match happening {
                    Some(happening) => happening,
                    None => break,
                },
                Some(position) = settled.recv() => {
                    acks.settle(position, &client);
                    continue;
                }
                changed = filters.changed(), if following => {
                    match changed {
                        Ok(()) => {
                            let wanted = filters.borrow_and_update().clone();
                            subscriptions.change(&client, wanted);
                        }
                        Err(_) => following = false,
                    }
                    continue;
                }
                _ = shutdown.wait_for(|&stop| stop), if draining_until.is_none() => {
                    // Take nothing more; what the broker sends from now on
                    // stays unacknowledged, and comes again next time.
                    inbound = None;
                    draining_until = Some(Instant::now() + ACK_DRAIN_TIMEOUT);
                    continue;
                }
                () = tokio::time::sleep_until(draining_until.unwrap_or_else(Instant::now)),
                    if draining_until.is_some() && !*close.borrow() => continue,
            };
            // Acknowledgements a full request queue held back.
            acks.flush(&client);
            match happening {
                Happening::Connected { .. } => {
                    acks.reconnected();
                    subscriptions.renew(&client);
                    if subscriptions.settled() {
                        let _ = subscribed.send(true);
                    }
                }
                Happening::Subscribed { refused } => {
                    subscriptions.acknowledged(&client, &refused);
                    if subscriptions.settled() {
                        let _ = subscribed.send(true);
                    }
                }
                Happening::Message { mut message, pkid } => {
                    let Some(taker) = &inbound else {
                        continue;
                    };
                    message.receipt = acks.receive(message.qos, pkid);
                    if taker.send(message).await.is_err() {
                        break;
                    }
                }
                Happening::Sent { .. }
                | Happening::Acknowledged { .. }
                | Happening::Disconnected
                | Happening::Other => {}
            }
        }
    });
    (egress, task)
}

/// Subscriptions that do not change, for [`spawn_subscriber`].
pub fn fixed_filters(filters: Vec<String>) -> watch::Receiver<Vec<String>> {
    watch::channel(filters).1
}

/// Filters per SUBSCRIBE packet: brokers cap a packet's size and its filters
/// (AWS IoT Core takes 8), and a gateway may hold thousands.
const FILTERS_PER_SUBSCRIBE: usize = 8;
/// SUBSCRIBE packets sent ahead of their acknowledgements.
const SUBSCRIBES_IN_FLIGHT: usize = 16;

/// The subscriptions of one connection: the filters it should hold, and the
/// SUBSCRIBE packets still to send or to be acknowledged.
struct Subscriptions {
    held: Vec<String>,
    to_send: VecDeque<Vec<String>>,
    awaiting: VecDeque<Vec<String>>,
    /// The broker, for logs.
    address: String,
}

impl Subscriptions {
    fn new(held: Vec<String>, address: String) -> Self {
        Subscriptions {
            held,
            to_send: VecDeque::new(),
            awaiting: VecDeque::new(),
            address,
        }
    }

    /// After a (re)connection: subscribe to every filter again.
    fn renew(&mut self, client: &Client) {
        self.awaiting.clear();
        self.to_send = self
            .held
            .chunks(FILTERS_PER_SUBSCRIBE)
            .map(<[String]>::to_vec)
            .collect();
        self.send(client);
    }

    /// Subscribes to what `wanted` adds and unsubscribes from what it drops.
    /// While disconnected the requests wait in the client's queue; the next
    /// connection renews the whole list anyway.
    fn change(&mut self, client: &Client, wanted: Vec<String>) {
        let added: Vec<String> = wanted
            .iter()
            .filter(|filter| !self.held.contains(filter))
            .cloned()
            .collect();
        let dropped: Vec<String> = self
            .held
            .iter()
            .filter(|filter| !wanted.contains(filter))
            .cloned()
            .collect();
        let address = &self.address;
        if !added.is_empty() {
            tracing::info!(broker = %address, ?added, "subscribing");
            self.to_send
                .extend(added.chunks(FILTERS_PER_SUBSCRIBE).map(<[String]>::to_vec));
        }
        if !dropped.is_empty() {
            tracing::info!(broker = %address, ?dropped, "unsubscribing");
            if let Err(error) = client.unsubscribe(&dropped) {
                tracing::error!(broker = %address, "unsubscribing from {dropped:?}: {error}");
            }
        }
        self.held = wanted;
        self.send(client);
    }

    /// A SUBACK for the oldest SUBSCRIBE under way; `refused` are positions in it.
    fn acknowledged(&mut self, client: &Client, refused: &[usize]) {
        if let Some(chunk) = self.awaiting.pop_front() {
            for filter in refused.iter().filter_map(|&position| chunk.get(position)) {
                tracing::error!(broker = %self.address, filter, "the broker refused the subscription");
            }
        }
        self.send(client);
    }

    /// Whether every filter has been acknowledged (or refused).
    fn settled(&self) -> bool {
        self.to_send.is_empty() && self.awaiting.is_empty()
    }

    fn send(&mut self, client: &Client) {
        while self.awaiting.len() < SUBSCRIBES_IN_FLIGHT {
            let Some(chunk) = self.to_send.pop_front() else {
                return;
            };
            // Queued on the request channel; sent by the next polls.
            if let Err(error) = client.subscribe(&chunk) {
                tracing::error!(broker = %self.address, "subscribing to {chunk:?}: {error}");
                continue;
            }
            self.awaiting.push_back(chunk);
        }
    }
}

/// The largest MQTT packet that carries a payload of `payload_bytes`: room for
/// the topic and headers, with a margin so a slightly oversized payload is
/// counted by the gateway rather than cutting the connection.
pub fn packet_room(payload_bytes: usize) -> usize {
    payload_bytes.saturating_mul(2).saturating_add(64 * 1024)
}

/// The egress connection, used by the `mqtt` sink to publish to device topics.
pub struct Egress {
    client: Client,
    max_packet: usize,
    /// On the egress connection: when the broker has each publish, so the
    /// mqtt sink counts a delivery only then.
    confirmations: Option<Arc<Confirmations>>,
}

impl Egress {
    /// Connects and keeps the connection's event loop running until `shutdown`.
    pub fn spawn(
        endpoint: &BrokerEndpoint,
        max_packet: usize,
        shutdown: watch::Receiver<bool>,
    ) -> (Egress, tokio::task::JoinHandle<()>) {
        let client_id = format!("{}-egress", endpoint.client_id);
        let (client, events) = connection::connect(endpoint, &client_id, max_packet);
        let mut connection = Driver::new(
            &client_id,
            client.clone(),
            events,
            endpoint.address(),
            shutdown,
        );
        let confirmations = Arc::new(Confirmations::default());
        let tracked = confirmations.clone();
        let task = tokio::spawn(async move {
            while let Some(happening) = connection.next().await {
                match happening {
                    Happening::Connected { session_present } => tracked.connected(session_present),
                    Happening::Sent { pkid } => tracked.sent(pkid),
                    Happening::Acknowledged { pkid } => tracked.acknowledged(pkid),
                    _ => {}
                }
            }
            tracked.abandon();
        });
        let egress = Egress {
            client,
            max_packet,
            confirmations: Some(confirmations),
        };
        (egress, task)
    }

    /// Publishes a request that expects an answer on `route`: on MQTT 5 the
    /// route travels as the response topic and correlation data; on 3.1.1 the
    /// device must know it by convention.
    pub async fn request(
        &self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        route: &ResponseRoute<'_>,
    ) -> Result<(), String> {
        self.check_size(topic, &payload)?;
        self.client
            .publish(topic, payload, qos, false, &[], Some(route))
            .await
            .map_err(|error| format!("publishing to `{topic}`: {error}"))
    }

    /// Publishes an answer to a request, echoing its correlation data on MQTT 5.
    pub async fn answer(
        &self,
        topic: &str,
        payload: Bytes,
        correlation: Option<&[u8]>,
    ) -> Result<(), String> {
        self.check_size(topic, &payload)?;
        let route = correlation.map(|correlation| ResponseRoute {
            topic: "",
            correlation,
        });
        self.client
            .publish(topic, payload, QoS::AtLeastOnce, false, &[], route.as_ref())
            .await
            .map_err(|error| format!("publishing to `{topic}`: {error}"))
    }

    /// rumqttc would keep a packet over the limit queued and replay it after
    /// every reconnect; refuse it here instead.
    fn check_size(&self, topic: &str, payload: &[u8]) -> Result<(), String> {
        let size = topic.len() + payload.len();
        if size > self.max_packet {
            return Err(format!(
                "publishing to `{topic}`: {size} bytes exceed the connection's packet limit of {}",
                self.max_packet
            ));
        }
        Ok(())
    }
}

/// Where the answer to a request goes (MQTT 5 request/response): the response
/// topic and the correlation data that ties the answer to its request. An empty
/// topic sends the correlation data alone, as an answer does.
pub struct ResponseRoute<'a> {
    pub topic: &'a str,
    pub correlation: &'a [u8],
}

/// Drives one connection's event loop: reconnects with backoff after errors,
/// and on `shutdown` queues a DISCONNECT behind what is already queued and
/// keeps polling until it is sent, so nothing read or queued is cut off.
struct Driver {
    /// The connection's client id, naming it in logs.
    role: String,
    client: Client,
    events: EventLoop,
    address: String,
    shutdown: watch::Receiver<bool>,
    closing: bool,
    backoff: Backoff,
}

impl Driver {
    fn new(
        role: &str,
        client: Client,
        events: EventLoop,
        address: String,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Driver {
            role: role.to_owned(),
            client,
            events,
            address,
            shutdown,
            closing: false,
            backoff: Backoff::new(),
        }
    }

    /// The next thing that happened on the connection; `None` once it is closed.
    async fn next(&mut self) -> Option<Happening> {
        loop {
            let happening = tokio::select! {
                happening = self.events.poll() => happening,
                _ = self.shutdown.changed(), if !self.closing => {
                    self.close()?;
                    continue;
                }
            };
            match happening {
                Ok(Happening::Disconnected) => return None,
                Ok(connected @ Happening::Connected { session_present }) => {
                    self.backoff.reset();
                    tracing::info!(broker = %self.address, session_present, "{} connected", self.role);
                    return Some(connected);
                }
                Ok(happening) => return Some(happening),
                Err(_) if self.closing => return None,
                Err(error) => {
                    let delay = self.backoff.next();
                    tracing::warn!(broker = %self.address, "{} connection: {error}; retrying in {delay:?}", self.role);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.shutdown.changed(), if !self.closing => self.close()?,
                    }
                }
            }
        }
    }

    /// Queues the DISCONNECT; `None` when there is nothing left to drive.
    fn close(&mut self) -> Option<()> {
        self.closing = true;
        self.client.disconnect().ok()
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
        user_properties: &[Property],
    ) -> Result<Confirmation, String> {
        self.check_size(topic, &payload)?;
        let queue = async {
            self.client
                .publish(topic, payload, qos, retain, user_properties, None)
                .await
                .map_err(|error| format!("publishing to `{topic}`: {error}"))
        };
        let Some(confirmations) = &self.confirmations else {
            queue.await?;
            return Ok(confirmed_at_once());
        };
        let confirmed = confirmations.queue(queue).await?;
        let topic = topic.to_owned();
        Ok(Box::pin(async move {
            confirmed.await.map_err(|_| {
                format!(
                    "publishing to `{topic}`: the connection lost it before the broker acknowledged it"
                )
            })
        }))
    }
}

/// Reconnection delays: doubling from 100 ms up to [`MAX_RECONNECT_DELAY`].
struct Backoff {
    delay: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);

    fn new() -> Self {
        Backoff { delay: Self::FIRST }
    }

    fn reset(&mut self) {
        self.delay = Self::FIRST;
    }

    fn next(&mut self) -> Duration {
        let delay = self.delay;
        self.delay = (self.delay * 2).min(MAX_RECONNECT_DELAY);
        delay
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
            parse_url("mqtt://[::1]").unwrap(),
            (false, "::1".into(), 1883)
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
