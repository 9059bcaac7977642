//! The mqtt sink: republishes each delivery to its device topic through the
//! gateway's own MQTT connection (a [`Publisher`]). Topics no broker would
//! accept for a publish fail at once.

use super::destination::DeliveryError;
use super::{Confirmation, Delivery, Publisher, Target};
use std::sync::Arc;

/// MQTT encodes a topic's length in two bytes.
const MAX_TOPIC_BYTES: usize = u16::MAX as usize;

pub(crate) struct RepublishSink {
    publisher: Arc<dyn Publisher>,
}

impl RepublishSink {
    pub fn new(publisher: Arc<dyn Publisher>) -> Self {
        RepublishSink { publisher }
    }

    /// Queues the publish; the broker has it once the confirmation resolves.
    pub async fn send(&self, delivery: &Delivery) -> Result<Confirmation, DeliveryError> {
        let Target::Publish {
            topic,
            qos,
            retain,
            user_properties,
        } = &delivery.target
        else {
            return Err(DeliveryError::permanent(
                "an mqtt sink takes only publish deliveries",
            ));
        };
        check_topic(topic)?;
        self.publisher
            .publish(
                topic,
                delivery.payload.clone(),
                *qos,
                *retain,
                user_properties,
            )
            .await
            .map_err(|cause| DeliveryError::transient(format!("publishing to {topic:?}: {cause}")))
    }
}

/// A topic name for a publish: not empty, no wildcards, no NUL, within MQTT's
/// length limit.
fn check_topic(topic: &str) -> Result<(), DeliveryError> {
    // One pass over the bytes: this runs for every publish.
    let forbidden = topic
        .bytes()
        .find(|byte| matches!(byte, b'+' | b'#' | b'\0'));
    let why = if topic.is_empty() {
        "it is empty"
    } else if topic.len() > MAX_TOPIC_BYTES {
        "it is longer than 65535 bytes"
    } else if forbidden == Some(b'\0') {
        "it contains a NUL character"
    } else if forbidden.is_some() {
        "wildcards `+` and `#` are for subscriptions only"
    } else {
        return Ok(());
    };
    Err(DeliveryError::permanent(format!(
        "cannot publish to topic {topic:?}: {why}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::destination::Retry;

    #[test]
    fn a_topic_a_broker_would_refuse_fails_for_good_with_the_reason() {
        assert!(check_topic("alerts/soilSensor3").is_ok());
        let too_long = "a".repeat(MAX_TOPIC_BYTES + 1);
        for (topic, why) in [
            ("", "empty"),
            ("alerts/+/x", "wildcards"),
            ("alerts/#", "wildcards"),
            ("alerts/a\0b", "NUL"),
            (too_long.as_str(), "longer than 65535 bytes"),
        ] {
            let error = check_topic(topic).expect_err(why);
            assert!(error.cause.contains(why), "{topic:?}: {}", error.cause);
            assert_eq!(error.retry, Retry::Never, "{topic:?}");
        }
    }
}
