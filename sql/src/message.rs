//! What a statement may look at for one message: the topic, the payload parsed once and shared by
//! every rule the message reaches, the raw bytes, the client id, the receive time and the MQTT 5
//! properties. The host builds these; the evaluator only reads them.

use serde_json::Value;

use crate::payload_fields::{PayloadFields, parse_members};

/// A message payload, parsed once per message.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// The payload parsed as JSON (any JSON value, not only objects).
    Json(Value),
    /// Anything that is not JSON, kept as bytes: `SELECT *` passes it through and
    /// `encode(*, 'base64')` encodes it; field references on it are `Undefined`.
    Binary(Vec<u8>),
}

impl Payload {
    /// JSON if `bytes` parse as JSON, binary otherwise. Never fails: serde_json's recursion limit
    /// bounds how deep a hostile payload may nest.
    pub fn parse(bytes: &[u8]) -> Payload {
        match serde_json::from_slice(bytes) {
            Ok(value) => Payload::Json(value),
            Err(_) => Payload::Binary(bytes.to_vec()),
        }
    }

    /// Like [`Payload::parse`], but of an object only the members in `fields` are built (all
    /// when it reads the whole document): for rules that read those alone. JSON and binary
    /// exactly where [`Payload::parse`] says so.
    pub fn parse_fields(bytes: &[u8], fields: &PayloadFields) -> Payload {
        if fields.reads_whole() {
            return Payload::parse(bytes);
        }
        match parse_members(bytes, fields) {
            Some(value) => Payload::Json(value),
            None => Payload::Binary(bytes.to_vec()),
        }
    }

    /// The JSON document, if the payload is JSON.
    pub fn as_json(&self) -> Option<&Value> {
        match self {
            Payload::Json(value) => Some(value),
            Payload::Binary(_) => None,
        }
    }
}

/// MQTT 5 publish properties that `get_mqtt_property` and `get_user_properties` read.
/// `Default` is a message without any (an MQTT 3.1.1 publish).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MqttProperties {
    /// Content Type.
    pub content_type: Option<String>,
    /// Payload Format Indicator byte: 0 unspecified bytes, 1 UTF-8 data.
    pub format_indicator: Option<u8>,
    /// Response Topic.
    pub response_topic: Option<String>,
    /// Correlation Data, as received.
    pub correlation_data: Option<Vec<u8>>,
    /// User Properties, in the order received; a key may repeat.
    pub user_properties: Vec<(String, String)>,
}

impl MqttProperties {
    /// No properties at all, usable in `const` and `static` items.
    pub const NONE: MqttProperties = MqttProperties {
        content_type: None,
        format_indicator: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
    };
}

static NO_PROPERTIES: MqttProperties = MqttProperties::NONE;

/// Everything a statement or template may look at for one message.
#[derive(Debug, Clone, Copy)]
pub struct MessageContext<'a> {
    /// The topic the message was published on.
    pub topic: &'a str,
    /// The payload, parsed once and shared by every rule the message reaches.
    pub payload: &'a Payload,
    /// The bytes as received, for `SELECT *` passthrough and `encode(*, ...)`.
    pub raw_payload: &'a [u8],
    /// The publishing client's id, if known (`clientid()` returns `n/a` otherwise, as AWS does).
    pub client_id: Option<&'a str>,
    /// Gateway receive time in milliseconds since the Unix epoch, for `timestamp()`.
    pub timestamp_ms: i64,
    /// MQTT 5 properties of the publish.
    pub mqtt: &'a MqttProperties,
}

impl<'a> MessageContext<'a> {
    /// A context with no client id, no MQTT 5 properties and the current time.
    pub fn new(topic: &'a str, payload: &'a Payload, raw_payload: &'a [u8]) -> Self {
        let timestamp_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
            });
        MessageContext {
            topic,
            payload,
            raw_payload,
            client_id: None,
            timestamp_ms,
            mqtt: &NO_PROPERTIES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_payloads_parse_and_everything_else_is_binary() {
        assert!(matches!(Payload::parse(br#"{"a":1}"#), Payload::Json(_)));
        assert!(matches!(Payload::parse(b"80"), Payload::Json(_)));
        assert_eq!(Payload::parse(b"\xff\x00"), Payload::Binary(vec![0xff, 0]));
        assert_eq!(Payload::parse(b""), Payload::Binary(Vec::new()));
    }

    #[test]
    fn deep_nesting_is_binary_not_a_stack_overflow() {
        let deep = "[".repeat(100_000);
        assert!(matches!(
            Payload::parse(deep.as_bytes()),
            Payload::Binary(_)
        ));
    }
}
