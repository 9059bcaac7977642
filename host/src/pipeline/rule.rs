//! A rule compiled from its configuration: the SQL statement, the optional Wasm
//! module, the actions with their substitution templates, and what the rule is
//! allowed to publish. Compiled once per version; nothing here is parsed per
//! message.

use super::stats::RuleCounters;
use crate::actions::{SinkKind, Target};
use crate::config::{ActionSpec, ConfigError, GatewayConfig, RuleSpec};
use crate::engine::{RuleInstance, RuleModule};
use crate::message::{Property, QoS};
use rulegate_sql::{MessageContext, PayloadFields, Statement, Template, TopicFilter};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

pub(crate) struct CompiledRule {
    pub(crate) name: Arc<str>,
    pub(crate) statement: Statement,
    pub(crate) actions: Vec<CompiledAction>,
    pub(crate) error_action: Option<CompiledAction>,
    /// What of the payload the SQL and the actions' templates read.
    pub(crate) payload_fields: PayloadFields,
    /// Topic filters the rule may publish to; any topic when `None`.
    pub(crate) publish_allowed: Option<Vec<TopicFilter>>,
    pub(crate) counters: Arc<RuleCounters>,
    pub(crate) version: RuleVersion,
}

/// Which version of a rule runs: what it was built from and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleVersion {
    /// 1 for the version the gateway started with, one more at each change.
    pub number: u64,
    /// BLAKE3 of the module's bytes, in hex; `None` for a rule without one.
    pub module_hash: Option<String>,
    /// Where the module came from: the configured file or an uploaded copy.
    pub module_path: Option<PathBuf>,
    /// BLAKE3 of the rule's configuration entry, in hex.
    pub config_hash: String,
    /// When this version started serving, in ms since the Unix epoch.
    pub loaded_at_ms: u64,
}

/// A rule ready to be swapped into the pipeline: compiled, and with a module,
/// its instance already started (so a module whose `init` fails never serves).
pub struct PreparedRule {
    pub(crate) rule: CompiledRule,
    pub(crate) instance: Option<RuleInstance>,
}

impl PreparedRule {
    /// Compiles rule `index` of `config` with `module` (the rule's module, already
    /// loaded) and starts its instance. `counters` carries a previous version's
    /// counters over. Errors name the configuration key at fault.
    pub fn compile(
        config: &GatewayConfig,
        index: usize,
        module: Option<RuleModule>,
        version: RuleVersion,
        counters: Option<Arc<RuleCounters>>,
    ) -> Result<PreparedRule, ConfigError> {
        let (rule, instance) =
            CompiledRule::compile(config, index, module, version, counters.unwrap_or_default())?;
        Ok(PreparedRule { rule, instance })
    }

    pub fn name(&self) -> &str {
        &self.rule.name
    }
}

/// Output attributes a rule sets to override action parameters; the others
/// travel on as SNS message attributes.
const OVERRIDE_ATTRIBUTES: [&str; 3] = ["key", "subject", "topic"];

impl CompiledRule {
    /// Compiles rule `index` of `config`; with a module, also starts the
    /// instance that will run it, so a broken module or configuration is
    /// refused before the rule serves, not at the first message.
    fn compile(
        config: &GatewayConfig,
        index: usize,
        module: Option<RuleModule>,
        version: RuleVersion,
        counters: Arc<RuleCounters>,
    ) -> Result<(CompiledRule, Option<RuleInstance>), ConfigError> {
        let spec: &RuleSpec = &config.rules[index];
        let key = config.rule_key(index);
        let invalid = |field: String, problem: String| ConfigError::Invalid {
            path: config.origin.clone(),
            key: field,
            problem,
        };
        let statement = Statement::parse(&spec.sql)
            .map_err(|error| invalid(format!("{key}.sql"), error.to_string()))?;
        let instance = module
            .map(|module| module.instantiate(&spec.name, spec.module_config(), spec.limits))
            .transpose()
            .map_err(|error| invalid(format!("{key}.module"), error.to_string()))?;
        let publish_allowed = spec
            .capabilities
            .publish
            .as_ref()
            .map(|filters| {
                filters
                    .iter()
                    .map(|filter| TopicFilter::parse(filter))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(|error| invalid(format!("{key}.capabilities.publish"), error.to_string()))?;
        let compile_action = |field: String, action: &ActionSpec| {
            CompiledAction::compile(config, action)
                .map_err(|(param, problem)| invalid(format!("{field}.{param}"), problem))
        };
        let actions: Vec<_> = spec
            .actions
            .iter()
            .enumerate()
            .map(|(position, action)| compile_action(format!("{key}.actions[{position}]"), action))
            .collect::<Result<_, _>>()?;
        let error_action = spec
            .error_action
            .as_ref()
            .map(|action| compile_action(format!("{key}.error_action"), action))
            .transpose()?;
        if instance.is_some() && spec.actions.is_empty() {
            tracing::warn!(
                rule = spec.name,
                "the rule has no actions: only its publish outputs go anywhere"
            );
        }
        let mut payload_fields = statement.payload_fields();
        for action in actions.iter().chain(&error_action) {
            payload_fields.add(&action.payload_fields());
        }
        let rule = CompiledRule {
            name: Arc::from(spec.name.as_str()),
            statement,
            actions,
            error_action,
            payload_fields,
            publish_allowed,
            counters,
            version,
        };
        Ok((rule, instance))
    }

    /// Whether the rule's capabilities let it publish to `topic`.
    pub(crate) fn may_publish(&self, topic: &str) -> bool {
        self.publish_allowed
            .as_ref()
            .is_none_or(|filters| filters.iter().any(|filter| filter.matches(topic)))
    }
}

/// One action of a rule, with its templates compiled.
pub(crate) struct CompiledAction {
    pub(crate) sink: String,
    params: ActionParams,
}

enum ActionParams {
    Object {
        key: Template,
    },
    Notification {
        subject: Option<Template>,
    },
    Publish {
        topic: Template,
        qos: QoS,
        retain: bool,
    },
}

impl CompiledAction {
    /// Compiles an action whose sink exists and whose parameters fit it (the
    /// configuration check saw to both). Errors name the parameter.
    fn compile(config: &GatewayConfig, spec: &ActionSpec) -> Result<Self, (&'static str, String)> {
        let template =
            |param: &'static str, text: &Option<String>| -> Result<Option<Template>, _> {
                text.as_deref()
                    .map(Template::compile)
                    .transpose()
                    .map_err(|error| (param, format!("template: {error}")))
            };
        let kind = config
            .sinks
            .get(&spec.sink)
            .map(|sink| sink.kind())
            .ok_or_else(|| ("sink", format!("no sink named `{}`", spec.sink)))?;
        let missing = |param: &'static str| (param, format!("a {kind} sink needs `{param}`"));
        let params = match kind {
            SinkKind::S3 | SinkKind::File => ActionParams::Object {
                key: template("key", &spec.key)?.ok_or_else(|| missing("key"))?,
            },
            SinkKind::Sns => ActionParams::Notification {
                subject: template("subject", &spec.subject)?,
            },
            SinkKind::Mqtt => ActionParams::Publish {
                topic: template("topic", &spec.topic)?.ok_or_else(|| missing("topic"))?,
                qos: match spec.qos {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => QoS::ExactlyOnce,
                },
                retain: spec.retain,
            },
        };
        Ok(CompiledAction {
            sink: spec.sink.clone(),
            params,
        })
    }

    /// What of the payload the action's templates read.
    fn payload_fields(&self) -> PayloadFields {
        let mut fields = PayloadFields::default();
        let templates = match &self.params {
            ActionParams::Object { key } => vec![key],
            ActionParams::Notification { subject } => subject.iter().collect(),
            ActionParams::Publish { topic, .. } => vec![topic],
        };
        for template in templates {
            fields.add(&template.payload_fields());
        }
        fields
    }

    /// Where this action sends one output: templates rendered against the
    /// message, then overridden by the output's own attributes.
    pub(crate) fn target(&self, message: &MessageContext<'_>, attributes: &[Property]) -> Target {
        let attribute = |name: &str| {
            attributes
                .iter()
                .find(|property| property.key == name)
                .map(|property| property.value.clone())
        };
        match &self.params {
            ActionParams::Object { key } => Target::Object {
                key: attribute("key").unwrap_or_else(|| key.render(message)),
            },
            ActionParams::Notification { subject } => Target::Notification {
                subject: attribute("subject")
                    .or_else(|| subject.as_ref().map(|subject| subject.render(message))),
                attributes: attributes
                    .iter()
                    .filter(|property| !OVERRIDE_ATTRIBUTES.contains(&property.key.as_str()))
                    .cloned()
                    .collect(),
            },
            ActionParams::Publish { topic, qos, retain } => Target::Publish {
                topic: attribute("topic").unwrap_or_else(|| topic.render(message)),
                qos: *qos,
                retain: *retain,
                user_properties: Vec::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_rule_reads_the_members_its_sql_and_every_action_template_name() {
        let text = r#"
[gateway]
state_dir = "state"
[broker]
url = "mqtt://127.0.0.1:1"
[sinks.device]
type = "mqtt"
[sinks.archive]
type = "file"
directory = "archive"

[[rules]]
name = "alert"
sql = "SELECT * FROM 'device/+/devicePayload' WHERE humidity < 35"
[[rules.actions]]
sink = "device"
topic = "alerts/${name}"
[[rules.actions]]
sink = "archive"
key = "${topic(2)}/${timeStampEpoch}"
[rules.error_action]
sink = "device"
topic = "errors/${timeStampIso}"
"#;
        let config = GatewayConfig::parse(text, Path::new("test.toml"), "/tmp".into()).unwrap();
        let version = RuleVersion {
            number: 1,
            module_hash: None,
            module_path: None,
            config_hash: String::new(),
            loaded_at_ms: 0,
        };
        let (rule, _) = CompiledRule::compile(&config, 0, None, version, Arc::default()).unwrap();
        let read: Vec<_> = rule.payload_fields.members().collect();
        assert_eq!(read, ["humidity", "name", "timeStampEpoch", "timeStampIso"]);
    }
}
