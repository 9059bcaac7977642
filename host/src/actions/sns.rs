//! The sns sink: one `Publish` per delivery, the payload as the message text,
//! the subject and `String` message attributes from the delivery. Deliveries
//! SNS would reject (non-UTF-8 text, bad subject or attribute) fail at once.
//! To a FIFO topic (`.fifo`), deliveries of one rule and source topic form a
//! message group, and each carries its own deduplication id, so SNS drops a
//! delivery repeated after a crash.

use super::config::AwsOverrides;
use super::destination::DeliveryError;
use super::{Delivery, Target, aws};
use crate::message::Property;
use crate::outbox::DeliveryName;
use aws_sdk_sns::Client;
use aws_sdk_sns::config::Region;
use aws_sdk_sns::config::retry::RetryConfig;
use aws_sdk_sns::types::MessageAttributeValue;
use std::collections::HashMap;

/// SNS's limit on a message, attributes included.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// SNS's limit on a subject, in characters.
const MAX_SUBJECT_CHARS: usize = 99;
/// SNS's limit on an attribute name.
const MAX_ATTRIBUTE_NAME_CHARS: usize = 256;

pub(crate) struct SnsSink {
    client: Client,
    topic_arn: String,
    /// A FIFO topic, which needs a message group and a deduplication id.
    fifo: bool,
}

impl SnsSink {
    pub fn new(
        shared: &aws_config::SdkConfig,
        overrides: &AwsOverrides,
        topic_arn: String,
    ) -> Self {
        // As for S3: the worker owns retries.
        let mut config =
            aws_sdk_sns::config::Builder::from(shared).retry_config(RetryConfig::disabled());
        if let Some(region) = &overrides.region {
            config = config.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &overrides.endpoint {
            config = config.endpoint_url(endpoint);
        }
        SnsSink {
            client: Client::from_conf(config.build()),
            fifo: topic_arn.ends_with(".fifo"),
            topic_arn,
        }
    }

    /// Publishes `delivery`; `name`, the delivery's own, is its deduplication
    /// id on a FIFO topic.
    pub async fn deliver(
        &self,
        delivery: &Delivery,
        name: DeliveryName<'_>,
    ) -> Result<(), DeliveryError> {
        let Target::Notification {
            subject,
            attributes,
        } = &delivery.target
        else {
            return Err(DeliveryError::permanent(
                "an sns sink takes only notification deliveries",
            ));
        };
        let message = notification_text(&delivery.payload, attributes)?;
        if let Some(subject) = subject {
            check_subject(subject)?;
        }
        let (group, deduplication) = if self.fifo {
            let group = format!("{:016x}", delivery.ordering_key);
            (Some(group), Some(name.to_string()))
        } else {
            (None, None)
        };
        self.client
            .publish()
            .topic_arn(&self.topic_arn)
            .message(message)
            .set_subject(subject.clone())
            .set_message_attributes(message_attributes(attributes)?)
            .set_message_group_id(group)
            .set_message_deduplication_id(deduplication)
            .send()
            .await
            .map(drop)
            .map_err(|error| aws::classify(&format!("Publish to {}", self.topic_arn), error))
    }
}

/// The payload as SNS message text, within SNS's size limit.
fn notification_text<'a>(
    payload: &'a [u8],
    attributes: &[Property],
) -> Result<&'a str, DeliveryError> {
    let text = std::str::from_utf8(payload).map_err(|error| {
        DeliveryError::permanent(format!(
            "the payload is not UTF-8 text ({error}); SNS messages must be text"
        ))
    })?;
    let attribute_bytes: usize = attributes
        .iter()
        .map(|attribute| attribute.key.len() + attribute.value.len())
        .sum();
    let size = text.len() + attribute_bytes;
    if size > MAX_MESSAGE_BYTES {
        return Err(DeliveryError::permanent(format!(
            "the message and its attributes take {size} bytes; SNS takes at most {MAX_MESSAGE_BYTES}"
        )));
    }
    Ok(text)
}

/// SNS subjects are printable ASCII on one line, starting with a letter, digit
/// or punctuation, shorter than 100 characters.
fn check_subject(subject: &str) -> Result<(), DeliveryError> {
    let reject = |why: &str| {
        Err(DeliveryError::permanent(format!(
            "invalid SNS subject {subject:?}: {why}"
        )))
    };
    match subject.chars().next() {
        None => return reject("it is empty"),
        Some(first) if !first.is_ascii_graphic() => {
            return reject("it must start with a letter, digit or punctuation");
        }
        Some(_) => {}
    }
    if subject.chars().count() > MAX_SUBJECT_CHARS {
        return reject("it must be shorter than 100 characters");
    }
    if !subject
        .chars()
        .all(|c| c.is_ascii() && !c.is_ascii_control())
    {
        return reject("it must be ASCII without line breaks or control characters");
    }
    Ok(())
}

/// The delivery's attributes as SNS `String` message attributes.
fn message_attributes(
    attributes: &[Property],
) -> Result<Option<HashMap<String, MessageAttributeValue>>, DeliveryError> {
    if attributes.is_empty() {
        return Ok(None);
    }
    let mut map = HashMap::with_capacity(attributes.len());
    for Property { key, value } in attributes {
        check_attribute_name(key)?;
        if value.is_empty() {
            return Err(DeliveryError::permanent(format!(
                "SNS message attribute `{key}` has an empty value, which SNS rejects"
            )));
        }
        let attribute = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .map_err(|error| {
                DeliveryError::permanent(format!("SNS message attribute `{key}`: {error}"))
            })?;
        map.insert(key.clone(), attribute);
    }
    Ok(Some(map))
}

/// SNS attribute names: letters, digits, `_`, `-` and `.`, no leading,
/// trailing or doubled `.`, and no `AWS.` or `Amazon.` prefix.
fn check_attribute_name(name: &str) -> Result<(), DeliveryError> {
    let valid = !name.is_empty()
        && name.chars().count() <= MAX_ATTRIBUTE_NAME_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && !starts_with_ignoring_case(name, "aws.")
        && !starts_with_ignoring_case(name, "amazon.");
    if valid {
        Ok(())
    } else {
        Err(DeliveryError::permanent(format!(
            "invalid SNS message attribute name {name:?}: use letters, digits, `_`, `-` and \
             single inner `.`, at most 256 characters, not starting with `AWS.` or `Amazon.`"
        )))
    }
}

fn starts_with_ignoring_case(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}
