//! The plain types that pass between the pipeline's stages: an inbound
//! [`Message`] and the [`Output`]s a rule produces for the actions.
//!
//! Defined once here so that no stage needs another stage's internals.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// MQTT delivery guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum QoS {
    AtMostOnce,
    #[default]
    AtLeastOnce,
    ExactlyOnce,
}

/// A key/value pair: an MQTT 5 user property or an output attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Property {
    pub key: String,
    pub value: String,
}

/// What a rule sees of one message: the topic, the payload its SQL selected, and
/// the MQTT metadata.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub client_id: Option<String>,
    /// When the gateway received the message, in milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    pub qos: QoS,
    pub user_properties: Vec<Property>,
}

/// What a rule asks the gateway to do with a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A payload for the rule's configured actions; `attributes` override action
    /// parameters (`subject`, `key`, `topic`) for this output only.
    Emit {
        payload: Vec<u8>,
        attributes: Vec<Property>,
    },
    /// A message for a device topic.
    Publish {
        topic: String,
        payload: Vec<u8>,
        qos: QoS,
        retain: bool,
        user_properties: Vec<Property>,
    },
    /// The rule discarded the message on purpose.
    Drop { reason: String },
}

impl Output {
    /// The bytes this output carries, for size limits and accounting.
    pub fn size(&self) -> usize {
        let properties =
            |list: &[Property]| -> usize { list.iter().map(|p| p.key.len() + p.value.len()).sum() };
        match self {
            Output::Emit {
                payload,
                attributes,
            } => payload.len() + properties(attributes),
            Output::Publish {
                topic,
                payload,
                user_properties,
                ..
            } => topic.len() + payload.len() + properties(user_properties),
            Output::Drop { reason } => reason.len(),
        }
    }

    /// The value of attribute `key` on an emitted payload.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        match self {
            Output::Emit { attributes, .. } => attributes
                .iter()
                .find(|property| property.key == key)
                .map(|property| property.value.as_str()),
            _ => None,
        }
    }

    /// A JSON rendering for people and scripts (`rulegate rule test` prints one per
    /// line). A payload is shown as text when it is UTF-8, else as base64.
    pub fn to_json(&self) -> Value {
        match self {
            Output::Emit {
                payload,
                attributes,
            } => {
                let mut object = json!({ "type": "emit" });
                insert_payload(&mut object, payload);
                object["attributes"] = properties_json(attributes);
                object
            }
            Output::Publish {
                topic,
                payload,
                qos,
                retain,
                user_properties,
            } => {
                let mut object = json!({
                    "type": "publish",
                    "topic": topic,
                    "qos": *qos as u8,
                    "retain": retain,
                });
                insert_payload(&mut object, payload);
                object["user_properties"] = properties_json(user_properties);
                object
            }
            Output::Drop { reason } => json!({ "type": "drop", "reason": reason }),
        }
    }
}

fn insert_payload(object: &mut Value, payload: &[u8]) {
    use base64::Engine as _;
    match std::str::from_utf8(payload) {
        Ok(text) => object["payload"] = Value::from(text),
        Err(_) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(payload);
            object["payload_base64"] = Value::from(encoded);
        }
    }
}

fn properties_json(properties: &[Property]) -> Value {
    let map: Map<String, Value> = properties
        .iter()
        .map(|property| (property.key.clone(), Value::from(property.value.as_str())))
        .collect();
    Value::Object(map)
}
