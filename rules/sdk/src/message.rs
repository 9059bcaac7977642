//! Typed helpers on the WIT types: reading a message as JSON, building outputs.

use crate::{Emit, Message, Output, Property, Publish, Qos, RuleError};
use serde::Serialize;
use serde::de::DeserializeOwned;

impl Message {
    /// Deserialises the payload (what the rule's SQL selected) as JSON into `T`.
    /// A payload of the wrong shape is an [`RuleError::InvalidMessage`].
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, RuleError> {
        serde_json::from_slice(&self.payload).map_err(|error| {
            RuleError::InvalidMessage(format!("payload on `{}`: {error}", self.topic))
        })
    }

    /// The payload as UTF-8 text.
    pub fn text(&self) -> Result<&str, RuleError> {
        core::str::from_utf8(&self.payload).map_err(|error| {
            RuleError::InvalidMessage(format!("payload on `{}` is not UTF-8: {error}", self.topic))
        })
    }

    /// The MQTT 5 user property `key`, if the message carries it.
    pub fn user_property(&self, key: &str) -> Option<&str> {
        find_property(&self.user_properties, key)
    }

    /// The `index`th level of the topic, counting from 1 as the SQL `topic(n)` does.
    pub fn topic_level(&self, index: usize) -> Option<&str> {
        self.topic.split('/').nth(index.checked_sub(1)?)
    }
}

impl Emit {
    /// A payload for the rule's configured actions.
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        Emit {
            payload: payload.into(),
            attributes: Vec::new(),
        }
    }

    /// A value serialised as JSON for the rule's configured actions.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, RuleError> {
        serde_json::to_vec(value)
            .map(Emit::new)
            .map_err(|error| RuleError::Failed(format!("serialising output: {error}")))
    }

    /// Sets an action parameter for this output only: `subject` (SNS), `key` (S3,
    /// file) or `topic` (republish).
    pub fn attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.push(Property {
            key: key.into(),
            value: value.into(),
        });
        self
    }
}

impl Publish {
    /// A QoS 1, non-retained publish to a device topic.
    pub fn new(topic: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Publish {
            topic: topic.into(),
            payload: payload.into(),
            qos: Qos::AtLeastOnce,
            retain: false,
            user_properties: Vec::new(),
        }
    }

    pub fn qos(mut self, qos: Qos) -> Self {
        self.qos = qos;
        self
    }

    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }

    pub fn user_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.user_properties.push(Property {
            key: key.into(),
            value: value.into(),
        });
        self
    }
}

impl From<Emit> for Output {
    fn from(emit: Emit) -> Self {
        Output::Emit(emit)
    }
}

impl From<Publish> for Output {
    fn from(publish: Publish) -> Self {
        Output::Publish(publish)
    }
}

impl Output {
    /// Discards the message on purpose; the gateway counts and logs the reason.
    pub fn drop(reason: impl Into<String>) -> Self {
        Output::Drop(reason.into())
    }
}

fn find_property<'a>(properties: &'a [Property], key: &str) -> Option<&'a str> {
    properties
        .iter()
        .find(|property| property.key == key)
        .map(|property| property.value.as_str())
}
