//! One MQTT connection, MQTT 3.1.1 or 5, behind a single interface: rumqttc
//! has a separate client for each version, and this is the only place that
//! knows both. The intake and egress loops see [`Happening`]s.

use super::{BrokerEndpoint, Inbound, MqttVersion, ResponseRoute};
use crate::engine::unix_time_ms;
use crate::message::{Property, QoS};
use bytes::Bytes;
use rulegate_sql::MqttProperties;
use rumqttc::v5::mqttbytes::v5 as packets5;
use rumqttc::v5::{self as mqtt5};

/// Requests (publishes, subscribes) rumqttc queues before `publish` waits.
const REQUEST_CAPACITY: usize = 256;

/// What one poll of the connection brought, in protocol-neutral terms.
pub(super) enum Happening {
    Connected {
        session_present: bool,
    },
    /// The broker answered a subscription; the positions of refused filters.
    Subscribed {
        refused: Vec<usize>,
    },
    /// A message, and the packet id its acknowledgement names.
    Message {
        message: Inbound,
        pkid: u16,
    },
    /// One of our publishes went out with this packet id (0 for QoS 0); a
    /// publish resent after a reconnection goes out again with its id.
    Sent {
        pkid: u16,
    },
    /// The broker has one of our QoS 1 or 2 publishes.
    Acknowledged {
        pkid: u16,
    },
    /// Our DISCONNECT went out.
    Disconnected,
    Other,
}

/// The event loop of a connection; owned by the task that drives it.
pub(super) enum EventLoop {
    V311(Box<rumqttc::EventLoop>),
    V5(Box<mqtt5::EventLoop>),
}

/// The client side of a connection: cheap to clone, usable from any task.
#[derive(Clone)]
pub(super) enum Client {
    V311(rumqttc::AsyncClient),
    V5(mqtt5::AsyncClient),
}

/// Opens a connection (lazily: it connects on the first poll). Received QoS 1
/// messages are acknowledged by the caller (see `receipts`).
pub(super) fn connect(
    endpoint: &BrokerEndpoint,
    client_id: &str,
    max_packet: usize,
) -> (Client, EventLoop) {
    match endpoint.version {
        MqttVersion::V311 => {
            let mut options = endpoint.options(client_id, max_packet);
            options.set_manual_acks(true);
            let (client, mut events) = rumqttc::AsyncClient::new(options, REQUEST_CAPACITY);
            events.set_network_options(super::network_options());
            (Client::V311(client), EventLoop::V311(Box::new(events)))
        }
        MqttVersion::V5 => {
            let mut options = endpoint.options_v5(client_id, max_packet);
            options.set_manual_acks(true);
            let (client, mut events) = mqtt5::AsyncClient::new(options, REQUEST_CAPACITY);
            events.options.set_network_options(super::network_options());
            (Client::V5(client), EventLoop::V5(Box::new(events)))
        }
    }
}

impl EventLoop {
    /// Drives the connection one step; an error means the connection broke (the
    /// next poll reconnects).
    pub(super) async fn poll(&mut self) -> Result<Happening, String> {
        match self {
            EventLoop::V311(events) => {
                use rumqttc::{Event, Outgoing, Packet};
                Ok(
                    match events.poll().await.map_err(|error| {
                        let tls = matches!(error, rumqttc::ConnectionError::Tls(_));
                        describe(&error, tls)
                    })? {
                        Event::Incoming(Packet::ConnAck(ack)) => Happening::Connected {
                            session_present: ack.session_present,
                        },
                        Event::Incoming(Packet::SubAck(ack)) => Happening::Subscribed {
                            refused: positions(&ack.return_codes, |code| {
                                matches!(code, rumqttc::SubscribeReasonCode::Failure)
                            }),
                        },
                        Event::Incoming(Packet::Publish(publish)) => Happening::Message {
                            pkid: publish.pkid,
                            message: Inbound {
                                topic: publish.topic,
                                payload: publish.payload,
                                qos: lift_qos(publish.qos),
                                received_at_ms: unix_time_ms(),
                                properties: MqttProperties::NONE,
                                receipt: None,
                            },
                        },
                        Event::Outgoing(Outgoing::Publish(pkid)) => Happening::Sent { pkid },
                        Event::Incoming(Packet::PubAck(ack)) => {
                            Happening::Acknowledged { pkid: ack.pkid }
                        }
                        Event::Incoming(Packet::PubComp(complete)) => Happening::Acknowledged {
                            pkid: complete.pkid,
                        },
                        Event::Outgoing(Outgoing::Disconnect) => Happening::Disconnected,
                        _ => Happening::Other,
                    },
                )
            }
            EventLoop::V5(events) => {
                use mqtt5::Event;
                use packets5::Packet;
                Ok(
                    match events.poll().await.map_err(|error| {
                        let tls = matches!(error, mqtt5::ConnectionError::Tls(_));
                        describe(&error, tls)
                    })? {
                        Event::Incoming(Packet::ConnAck(ack)) => Happening::Connected {
                            session_present: ack.session_present,
                        },
                        Event::Incoming(Packet::SubAck(ack)) => Happening::Subscribed {
                            refused: positions(&ack.return_codes, |code| {
                                !matches!(code, packets5::SubscribeReasonCode::Success(_))
                            }),
                        },
                        Event::Incoming(Packet::Publish(publish)) => Happening::Message {
                            pkid: publish.pkid,
                            message: Inbound {
                                topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                                payload: publish.payload,
                                qos: lift_qos5(publish.qos),
                                received_at_ms: unix_time_ms(),
                                properties: publish
                                    .properties
                                    .map_or(MqttProperties::NONE, lift_properties),
                                receipt: None,
                            },
                        },
                        Event::Outgoing(rumqttc::Outgoing::Publish(pkid)) => {
                            Happening::Sent { pkid }
                        }
                        Event::Incoming(Packet::PubAck(ack)) => {
                            Happening::Acknowledged { pkid: ack.pkid }
                        }
                        Event::Incoming(Packet::PubComp(complete)) => Happening::Acknowledged {
                            pkid: complete.pkid,
                        },
                        Event::Outgoing(rumqttc::Outgoing::Disconnect) => Happening::Disconnected,
                        _ => Happening::Other,
                    },
                )
            }
        }
    }
}

impl Client {
    /// Queues one SUBSCRIBE for all `filters` at QoS 1.
    pub(super) fn subscribe(&self, filters: &[String]) -> Result<(), String> {
        match self {
            Client::V311(client) => client.try_subscribe_many(filters.iter().map(|filter| {
                rumqttc::SubscribeFilter::new(filter.clone(), rumqttc::QoS::AtLeastOnce)
            })),
            Client::V5(client) => {
                return client
                    .try_subscribe_many(filters.iter().map(|filter| {
                        packets5::Filter::new(filter.clone(), mqtt5::mqttbytes::QoS::AtLeastOnce)
                    }))
                    .map_err(|error| error.to_string());
            }
        }
        .map_err(|error| error.to_string())
    }

    /// Queues an UNSUBSCRIBE for each of `filters`.
    pub(super) fn unsubscribe(&self, filters: &[String]) -> Result<(), String> {
        for filter in filters {
            match self {
                Client::V311(client) => client
                    .try_unsubscribe(filter.clone())
                    .map_err(|error| error.to_string()),
                Client::V5(client) => client
                    .try_unsubscribe(filter.clone())
                    .map_err(|error| error.to_string()),
            }?;
        }
        Ok(())
    }

    /// Queues a publish; waits while rumqttc's request queue is full.
    pub(super) async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        user_properties: &[Property],
        route: Option<&ResponseRoute<'_>>,
    ) -> Result<(), String> {
        match self {
            // MQTT 3.1.1 has no properties: they are dropped.
            Client::V311(client) => client
                .publish_bytes(topic, lower_qos(qos), retain, payload)
                .await
                .map_err(|error| error.to_string()),
            Client::V5(client) => {
                let properties = packets5::PublishProperties {
                    user_properties: user_properties
                        .iter()
                        .map(|property| (property.key.clone(), property.value.clone()))
                        .collect(),
                    response_topic: route
                        .filter(|route| !route.topic.is_empty())
                        .map(|route| route.topic.to_owned()),
                    correlation_data: route.map(|route| Bytes::copy_from_slice(route.correlation)),
                    ..Default::default()
                };
                client
                    .publish_bytes_with_properties(
                        topic,
                        lower_qos5(qos),
                        retain,
                        payload,
                        properties,
                    )
                    .await
                    .map_err(|error| error.to_string())
            }
        }
    }

    /// Queues the acknowledgement of message `pkid` received with `qos`; fails
    /// when the request queue is full.
    pub(super) fn ack(&self, qos: QoS, pkid: u16) -> Result<(), String> {
        match self {
            Client::V311(client) => {
                let mut publish = rumqttc::Publish::new("", lower_qos(qos), Vec::new());
                publish.pkid = pkid;
                client.try_ack(&publish).map_err(|error| error.to_string())
            }
            Client::V5(client) => {
                let mut publish =
                    mqtt5::mqttbytes::v5::Publish::new("", lower_qos5(qos), Vec::new(), None);
                publish.pkid = pkid;
                client.try_ack(&publish).map_err(|error| error.to_string())
            }
        }
    }

    /// Queues a DISCONNECT behind whatever is queued.
    pub(super) fn disconnect(&self) -> Result<(), String> {
        match self {
            Client::V311(client) => client.try_disconnect().map_err(|error| error.to_string()),
            Client::V5(client) => client.try_disconnect().map_err(|error| error.to_string()),
        }
    }
}

/// A connection error as the log shows it; a TLS failure (unknown CA, expired
/// or mismatched certificate) names the settings that decide it.
fn describe(error: &dyn std::fmt::Display, tls: bool) -> String {
    if tls {
        format!("{error} (check broker.ca_file, client_cert_file and client_key_file)")
    } else {
        error.to_string()
    }
}

fn positions<T>(codes: &[T], refused: impl Fn(&T) -> bool) -> Vec<usize> {
    codes
        .iter()
        .enumerate()
        .filter(|(_, code)| refused(code))
        .map(|(position, _)| position)
        .collect()
}

fn lift_properties(properties: packets5::PublishProperties) -> MqttProperties {
    MqttProperties {
        content_type: properties.content_type,
        format_indicator: properties.payload_format_indicator,
        response_topic: properties.response_topic,
        correlation_data: properties.correlation_data.map(|data| data.to_vec()),
        user_properties: properties.user_properties,
    }
}

fn lower_qos(qos: QoS) -> rumqttc::QoS {
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

fn lower_qos5(qos: QoS) -> mqtt5::mqttbytes::QoS {
    match qos {
        QoS::AtMostOnce => mqtt5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => mqtt5::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => mqtt5::mqttbytes::QoS::ExactlyOnce,
    }
}

fn lift_qos5(qos: mqtt5::mqttbytes::QoS) -> QoS {
    match qos {
        mqtt5::mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
        mqtt5::mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
        mqtt5::mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}
