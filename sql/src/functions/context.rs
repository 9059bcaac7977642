//! Functions that read the message rather than the payload: `topic`, `clientid`, `timestamp`,
//! MQTT 5 properties, plus `newuuid` and `sql_version`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use super::{Invocation, Prepared, literal};
use crate::ast::{Call, Expr};
use crate::value::{Datum, owned};

/// The only SQL version this engine implements.
pub(crate) const SQL_VERSION: &str = "2016-03-23";

/// MQTT 5 properties `get_mqtt_property` knows.
const MQTT_PROPERTIES: [&str; 4] = [
    "format_indicator",
    "content_type",
    "response_topic",
    "correlation_data",
];

pub(super) fn topic<'d>(inv: Invocation<'d>) -> Datum<'d> {
    let topic = inv.message().topic;
    if inv.args.is_empty() {
        return owned(Value::String(topic.to_owned()));
    }
    let segment = usize::try_from(inv.decimal(0)?.floor()?).ok()?;
    let level = topic_level(topic, segment)?;
    owned(Value::String(level.to_owned()))
}

/// Level `segment` of `topic`, counting from 1.
fn topic_level(topic: &str, segment: usize) -> Option<&str> {
    topic.split('/').nth(segment.checked_sub(1)?)
}

/// What a `topic()` or `topic(n)` call with a whole-number literal reads of the topic, found at
/// load: a template writes it straight from the topic, as `device/${topic(2)}` is the commonest
/// substitution there is. Any other call is evaluated.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TopicPart {
    Whole,
    Level(usize),
}

impl TopicPart {
    pub(crate) fn of(call: &Call) -> Option<TopicPart> {
        if call.function.name != "topic" {
            return None;
        }
        match literal(&call.args, 0) {
            None if call.args.is_empty() => Some(TopicPart::Whole),
            Some(Value::Number(level)) => Some(TopicPart::Level(level.as_u64()?.try_into().ok()?)),
            _ => None,
        }
    }

    /// The part of `topic` the call returns; `None` where it returns Undefined.
    pub(crate) fn read(self, topic: &str) -> Option<&str> {
        match self {
            TopicPart::Whole => Some(topic),
            TopicPart::Level(segment) => topic_level(topic, segment),
        }
    }
}

/// The publishing client's id, or `n/a` as AWS answers for messages that did not come over MQTT.
pub(super) fn clientid<'d>(inv: Invocation<'d>) -> Datum<'d> {
    let id = inv.message().client_id.unwrap_or("n/a");
    owned(Value::String(id.to_owned()))
}

pub(super) fn timestamp<'d>(inv: Invocation<'d>) -> Datum<'d> {
    owned(Value::from(inv.message().timestamp_ms))
}

pub(super) fn newuuid<'d>(_: Invocation<'d>) -> Datum<'d> {
    owned(Value::String(uuid::Uuid::new_v4().to_string()))
}

pub(super) fn sql_version<'d>(_: Invocation<'d>) -> Datum<'d> {
    owned(Value::String(SQL_VERSION.to_owned()))
}

pub(super) fn check_mqtt_property(args: &[Expr]) -> Result<Prepared, String> {
    match literal(args, 0) {
        Some(Value::String(name))
            if !MQTT_PROPERTIES
                .iter()
                .any(|known| name.eq_ignore_ascii_case(known)) =>
        {
            Err(format!(
                "unknown MQTT property '{name}'; known: {}",
                MQTT_PROPERTIES.join(", ")
            ))
        }
        _ => Ok(Prepared::Nothing),
    }
}

/// `get_mqtt_property(name)`: the property of the publish, Undefined when absent. Correlation
/// data is binary and comes back base64-encoded.
pub(super) fn get_mqtt_property<'d>(mut inv: Invocation<'d>) -> Datum<'d> {
    let name = inv.text(0)?.to_ascii_lowercase();
    let mqtt = inv.message().mqtt;
    let value = match name.as_str() {
        "format_indicator" => match mqtt.format_indicator? {
            1 => "UTF8_DATA".to_owned(),
            _ => "UNSPECIFIED_BYTES".to_owned(),
        },
        "content_type" => mqtt.content_type.clone()?,
        "response_topic" => mqtt.response_topic.clone()?,
        "correlation_data" => STANDARD.encode(mqtt.correlation_data.as_ref()?),
        _ => return None,
    };
    owned(Value::String(value))
}

/// `get_user_properties(key)`: every value sent under `key`, in order (Undefined if none);
/// without a key, every property as a `{key: value}` object.
pub(super) fn get_user_properties<'d>(mut inv: Invocation<'d>) -> Datum<'d> {
    let properties = &inv.message().mqtt.user_properties;
    let values: Vec<Value> = if inv.args.is_empty() {
        properties
            .iter()
            .map(|(key, value)| {
                Value::Object(Map::from_iter([(
                    key.clone(),
                    Value::String(value.clone()),
                )]))
            })
            .collect()
    } else {
        let key = inv.text(0)?;
        let properties = &inv.message().mqtt.user_properties;
        properties
            .iter()
            .filter(|(name, _)| *name == *key)
            .map(|(_, value)| Value::String(value.clone()))
            .collect()
    };
    if values.is_empty() {
        return None;
    }
    owned(Value::Array(values))
}
