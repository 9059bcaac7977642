//! The gateway configuration file: broker, sinks and rules, in TOML.
//!
//! Deserialised with serde and checked once at start; every error names the
//! file and the offending key. Compiling what the keys hold (SQL, templates,
//! modules) is the pipeline's job, which reports with the same key paths.
//! `gateway-config/` holds documented examples.

use crate::actions::{SinkConfig, SinkKind};
use crate::admin::AdminConfig;
use crate::engine::{RuleConfig, RuleLimits};
use crate::invoke::InvokeConfig;
use crate::outbox::{OutboxSettings, WhenFull};
use crate::pipeline::DEVICE_TOPICS_SINK;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

/// A whole gateway configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    #[serde(default)]
    pub gateway: GatewaySettings,
    pub broker: BrokerConfig,
    /// Where actions deliver, by name: `[sinks.archive]`.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkConfig>,
    /// The rules, in the order they appear: `[[rules]]`.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// The synchronous invocation endpoint, off unless present: `[invoke]`.
    pub invoke: Option<InvokeConfig>,
    /// The admin API (rules, reload, module upload, metrics), off unless
    /// present: `[admin]`.
    pub admin: Option<AdminConfig>,
    /// Where rule outputs wait for their sinks: `[outbox]`.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// The directory relative paths (rule modules, file sinks) start from: the
    /// configuration file's own directory.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file the configuration came from, for error messages.
    #[serde(skip)]
    pub origin: PathBuf,
}

/// `[gateway]`: settings of the process itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    /// Messages with a larger payload are refused, counted and logged.
    pub max_payload_bytes: usize,
    /// Directory for precompiled rule modules; default `$XDG_CACHE_HOME/rulegate`.
    pub cache_dir: Option<PathBuf>,
    /// How often the counters are summarised in the log, in seconds; 0 turns it off.
    pub stats_interval_secs: u64,
    /// Messages waiting in front of each rule; when full, intake waits.
    pub rule_queue: usize,
    /// Where the outbox and modules uploaded through the admin API are kept,
    /// so they survive a restart; default `$STATE_DIRECTORY` (systemd), else
    /// `$XDG_STATE_HOME/rulegate`, else `$HOME/.local/state/rulegate`.
    pub state_dir: Option<PathBuf>,
    /// Reload the rules when the configuration file or a rule's module changes.
    pub watch: bool,
    /// On shutdown, how long the sinks may go on delivering what the outbox
    /// holds, in seconds; what is left goes out after the next start.
    pub shutdown_grace_secs: u64,
    /// How many Wasm rule instances may exist at once; default twice the rules
    /// with a module, plus 4, so every rule can be replaced while its previous
    /// version finishes its queue. Each reserves address space (see README).
    pub instance_slots: Option<u32>,
    /// Threads that run the gateway's tasks (MQTT, routing, SQL, the outbox
    /// and the sinks; a Wasm rule has a thread of its own besides); default
    /// one per core. `1` runs them all on the main thread, which costs the
    /// least CPU per message: no task is woken on another thread. Read by
    /// `rulegate run` when it starts.
    pub worker_threads: Option<NonZeroUsize>,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            // AWS IoT Core's own limit for a message.
            max_payload_bytes: 128 * 1024,
            cache_dir: None,
            stats_interval_secs: 60,
            rule_queue: 1024,
            state_dir: None,
            watch: true,
            shutdown_grace_secs: 10,
            instance_slots: None,
            worker_threads: None,
        }
    }
}

impl GatewaySettings {
    /// `state_dir`, else the default state directory; `None` when the
    /// environment names none.
    pub fn state_dir(&self) -> Option<PathBuf> {
        self.state_dir.clone().or_else(default_state_dir)
    }
}

/// `$STATE_DIRECTORY` (systemd's `StateDirectory=`), else
/// `$XDG_STATE_HOME/rulegate`, else `$HOME/.local/state/rulegate`.
fn default_state_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state"))
        })?;
    Some(base.join("rulegate"))
}

/// `[outbox]`: the durable store every rule output passes through before the
/// message behind it is acknowledged (see docs/delivery.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// The database file; default `<state_dir>/outbox-<broker.client_id>.redb`,
    /// as the outbox belongs to the broker session of that client id.
    pub path: Option<PathBuf>,
    /// The most the stored outputs may take, in bytes (a commit may go over
    /// by one batch); default 256 MiB.
    pub max_bytes: u64,
    /// When full: `"stop_intake"` (default: take no more messages, the broker
    /// keeps them) or `"drop_oldest"` (drop the oldest outputs, counted).
    pub when_full: WhenFull,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            path: None,
            max_bytes: 256 * 1024 * 1024,
            when_full: WhenFull::default(),
        }
    }
}

/// `[broker]`: the MQTT broker the devices publish to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// An external broker: `mqtt://host:port` (default port 1883) or
    /// `mqtts://host:port` (default port 8883).
    pub url: Option<String>,
    /// Run a broker inside the gateway instead, so devices connect straight to it.
    #[serde(default)]
    pub embedded: bool,
    /// Where the embedded broker listens.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The MQTT version the gateway speaks to the broker: `"3.1.1"` (default) or
    /// `"5"`, which brings publish properties (user properties, content type,
    /// response topic) to the SQL functions and the rules. The embedded broker
    /// speaks 3.1.1.
    #[serde(default)]
    pub protocol: MqttVersion,
    /// The gateway's MQTT client id.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    pub username: Option<String>,
    /// The name of the environment variable that holds the password; the password
    /// itself never sits in the file.
    pub password_env: Option<String>,
    /// CA certificate (PEM) that signed an `mqtts://` broker's certificate
    /// (for AWS IoT Core: AmazonRootCA1.pem). Required for `mqtts://`.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// MQTT keep-alive, in seconds.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    /// Start with a clean session; the default keeps a persistent session, so the
    /// broker holds QoS 1 messages for the gateway while it reconnects.
    #[serde(default)]
    pub clean_session: bool,
    /// Share the load with the other gateways of this group: the rules'
    /// subscriptions become `$share/<group>/<filter>`, and the broker hands each
    /// message to one gateway of the group (Mosquitto 2, EMQX, HiveMQ).
    pub shared_group: Option<String>,
}

impl BrokerConfig {
    /// What to subscribe to for the rules' topic filters.
    pub fn subscriptions(&self, filters: Vec<String>) -> Vec<String> {
        match &self.shared_group {
            Some(group) => filters
                .into_iter()
                .map(|filter| format!("$share/{group}/{filter}"))
                .collect(),
            None => filters,
        }
    }
}

/// An MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum MqttVersion {
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    #[serde(rename = "5")]
    V5,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1883))
}

fn default_client_id() -> String {
    "rulegate".to_owned()
}

fn default_keep_alive() -> u64 {
    30
}

/// `[[rules]]`: one rule, as in an AWS IoT topic rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique name; it tags logs, counters and the rule's errors.
    pub name: String,
    /// An AWS IoT SQL (2016-03-23) statement: `SELECT ... FROM 'topic/+' WHERE ...`.
    pub sql: String,
    /// A Wasm rule (`.wasm` component) run on what the SQL selected; without it
    /// the selection goes straight to the actions.
    pub module: Option<PathBuf>,
    /// Values the module reads with `config::get`; numbers and booleans are
    /// passed as their text.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigValue>,
    /// The module's resource limits: time per message, memory, output size.
    #[serde(default)]
    pub limits: RuleLimits,
    /// What the rule may reach: `[rules.capabilities]`.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Where each output goes: `[[rules.actions]]`.
    #[serde(default)]
    pub actions: Vec<ActionSpec>,
    /// Where a failure of this rule goes (a failed delivery, a rule error), as
    /// AWS IoT's `errorAction`: `[rules.error_action]`.
    pub error_action: Option<ActionSpec>,
}

/// What a rule may reach, like an IoT policy; everything when not given.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// MQTT topic filters the rule may publish to, through its module's
    /// `publish` outputs and its `mqtt` actions; a publish elsewhere is refused,
    /// logged and counted as an error of the rule.
    pub publish: Option<Vec<String>>,
    /// The sinks the rule's actions and error action may use.
    pub sinks: Option<Vec<String>>,
}

/// A rule configuration value: TOML scalars are accepted and passed as text.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
}

impl std::fmt::Display for ConfigValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigValue::Text(text) => f.write_str(text),
            ConfigValue::Integer(value) => write!(f, "{value}"),
            ConfigValue::Float(value) => write!(f, "{value}"),
            ConfigValue::Boolean(value) => write!(f, "{value}"),
        }
    }
}

/// An action: a sink plus its parameters. Parameters are substitution templates
/// (`device/${topic(2)}/devicePayload/${timestamp()}`) evaluated per message.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    /// The name of a `[sinks.NAME]` entry.
    pub sink: String,
    /// Object key (s3) or relative path (file).
    pub key: Option<String>,
    /// Notification subject (sns).
    pub subject: Option<String>,
    /// Topic to publish to (mqtt).
    pub topic: Option<String>,
    /// QoS of the publish (mqtt): 0, 1 or 2.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Retain flag of the publish (mqtt).
    #[serde(default)]
    pub retain: bool,
}

fn default_qos() -> u8 {
    1
}

/// A configuration that cannot be used, with the file and key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("configuration {path}: `{key}`: {problem}")]
    Invalid {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

impl GatewayConfig {
    /// Reads, parses and checks a configuration file.
    pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = path.parent().unwrap_or(Path::new(".")).to_owned();
        Self::parse(&text, path, base_dir)
    }

    /// Parses and checks configuration text; `origin` names it in errors.
    pub fn parse(
        text: &str,
        origin: &Path,
        base_dir: PathBuf,
    ) -> Result<GatewayConfig, ConfigError> {
        let mut config: GatewayConfig =
            toml::from_str(text).map_err(|error| ConfigError::Parse {
                path: origin.to_owned(),
                message: error.to_string(),
            })?;
        config.base_dir = base_dir;
        config.origin = origin.to_owned();
        config
            .check()
            .map_err(|(key, problem)| ConfigError::Invalid {
                path: origin.to_owned(),
                key,
                problem,
            })?;
        config.resolve_paths();
        Ok(config)
    }

    /// Makes every path in the file relative to the file's directory, once,
    /// so no later stage depends on the working directory.
    fn resolve_paths(&mut self) {
        let base = self.base_dir.clone();
        let broker = &mut self.broker;
        let paths = [
            &mut broker.ca_file,
            &mut broker.client_cert_file,
            &mut broker.client_key_file,
            &mut self.gateway.cache_dir,
            &mut self.outbox.path,
        ];
        let sink_dirs = self.sinks.values_mut().map(|sink| &mut sink.directory);
        let token_files = [
            self.invoke.as_mut().map(|invoke| &mut invoke.token_file),
            self.admin.as_mut().map(|admin| &mut admin.token_file),
        ];
        for path in paths
            .into_iter()
            .chain([&mut self.gateway.state_dir])
            .chain(sink_dirs)
            .chain(token_files.into_iter().flatten())
            .flatten()
        {
            *path = base.join(&*path);
        }
    }

    /// Where the outbox lives and how large it may grow.
    pub fn outbox_settings(&self) -> Result<OutboxSettings, ConfigError> {
        let path = match &self.outbox.path {
            Some(path) => path.clone(),
            None => self
                .gateway
                .state_dir()
                .ok_or_else(|| ConfigError::Invalid {
                    path: self.origin.clone(),
                    key: "outbox.path".to_owned(),
                    problem: "no state directory to keep the outbox in: set `gateway.state_dir` or `outbox.path`".to_owned(),
                })?
                .join(format!("outbox-{}.redb", self.broker.client_id)),
        };
        Ok(OutboxSettings {
            path,
            max_bytes: self.outbox.max_bytes,
            when_full: self.outbox.when_full,
        })
    }

    /// A path from the file, resolved against the file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
    }

    /// The key path of rule `index` in messages: `rules[1] (humidity-alert)`.
    pub fn rule_key(&self, index: usize) -> String {
        format!("rules[{index}] ({})", self.rules[index].name)
    }

    /// Checks what serde cannot: choices that exclude each other, references
    /// between sections, parameters that fit their sink.
    fn check(&self) -> Result<(), (String, String)> {
        let broker = &self.broker;
        match (&broker.url, broker.embedded) {
            (Some(_), true) => {
                return Err((
                    "broker".into(),
                    "set either `url` or `embedded = true`, not both".into(),
                ));
            }
            (None, false) => {
                return Err((
                    "broker".into(),
                    "set `url` of an external broker or `embedded = true`".into(),
                ));
            }
            _ => {}
        }
        if broker.embedded && broker.protocol != MqttVersion::V311 {
            return Err((
                "broker.protocol".into(),
                "the embedded broker speaks MQTT 3.1.1; remove `protocol`".into(),
            ));
        }
        if let Some(group) = &broker.shared_group {
            if broker.embedded {
                return Err((
                    "broker.shared_group".into(),
                    "shared subscriptions spread the load of an external broker; remove it with `embedded = true`".into(),
                ));
            }
            if group.is_empty() || group.contains(['/', '+', '#']) {
                return Err((
                    "broker.shared_group".into(),
                    "must be one non-empty topic level (no `/`, `+` or `#`)".into(),
                ));
            }
        }
        if broker.client_cert_file.is_some() != broker.client_key_file.is_some() {
            return Err((
                "broker.client_cert_file".into(),
                "mutual TLS needs both `client_cert_file` and `client_key_file`".into(),
            ));
        }
        // The MQTT limit on a packet's remaining length.
        const MQTT_MAX_PAYLOAD: usize = 268_435_455;
        if !(1..=MQTT_MAX_PAYLOAD).contains(&self.gateway.max_payload_bytes) {
            return Err((
                "gateway.max_payload_bytes".into(),
                format!("must be between 1 and {MQTT_MAX_PAYLOAD} (MQTT's limit)"),
            ));
        }
        if let Some(sink) = self.sinks.get(DEVICE_TOPICS_SINK)
            && sink.kind() != SinkKind::Mqtt
        {
            return Err((
                format!("sinks.{DEVICE_TOPICS_SINK}"),
                "this name is for the sink of rules' publish outputs; it must be of type \"mqtt\""
                    .into(),
            ));
        }
        if let Some(invoke) = &self.invoke {
            invoke.check()?;
        }
        if let Some(admin) = &self.admin {
            admin.check()?;
        }
        if self.gateway.rule_queue == 0 {
            return Err(("gateway.rule_queue".into(), "must be at least 1".into()));
        }
        for (name, sink) in &self.sinks {
            sink.validate(name)
                .map_err(|error| (format!("sinks.{name}"), error.to_string()))?;
        }
        let mut names = HashSet::new();
        for (index, rule) in self.rules.iter().enumerate() {
            let key = self.rule_key(index);
            if !is_rule_name(&rule.name) {
                return Err((
                    format!("rules[{index}].name"),
                    format!(
                        "`{}`: a rule name is 1 to 128 letters, digits, `-`, `_` or `.`, not starting with `.` \
                         (it names the rule in URLs and file names)",
                        rule.name
                    ),
                ));
            }
            if !names.insert(rule.name.as_str()) {
                return Err((format!("{key}.name"), "another rule has this name".into()));
            }
            if rule.actions.is_empty() && rule.module.is_none() {
                return Err((
                    format!("{key}.actions"),
                    "a rule without a module needs at least one action".into(),
                ));
            }
            for (position, action) in rule.actions.iter().enumerate() {
                self.check_action(action).map_err(|(field, problem)| {
                    (format!("{key}.actions[{position}].{field}"), problem)
                })?;
            }
            if let Some(action) = &rule.error_action {
                self.check_action(action)
                    .map_err(|(field, problem)| (format!("{key}.error_action.{field}"), problem))?;
            }
            check_capabilities(rule)
                .map_err(|(field, problem)| (format!("{key}.{field}"), problem))?;
        }
        Ok(())
    }

    /// Checks one action against its sink; errors name the action's own field.
    fn check_action(&self, action: &ActionSpec) -> Result<(), (&'static str, String)> {
        let Some(sink) = self.sinks.get(&action.sink) else {
            let known: Vec<&str> = self.sinks.keys().map(String::as_str).collect();
            return Err((
                "sink",
                format!(
                    "no sink named `{}` (configured: {})",
                    action.sink,
                    known.join(", ")
                ),
            ));
        };
        if action.qos > 2 {
            return Err((
                "qos",
                format!("{} is not an MQTT QoS (0, 1 or 2)", action.qos),
            ));
        }
        let kind = sink.kind();
        let parameters = [
            (
                "key",
                action.key.is_some(),
                matches!(kind, SinkKind::S3 | SinkKind::File),
            ),
            ("subject", action.subject.is_some(), kind == SinkKind::Sns),
            ("topic", action.topic.is_some(), kind == SinkKind::Mqtt),
        ];
        if let Some((field, ..)) = parameters
            .iter()
            .find(|(_, present, applies)| *present && !applies)
        {
            return Err((field, format!("a {kind} sink does not use `{field}`")));
        }
        Ok(())
    }
}

/// Whether `name` can name a rule in a URL path and a file name as it is.
fn is_rule_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte))
}

/// The rule's actions stay within its `capabilities.sinks`; the publish
/// filters parse (they are compiled with the rule).
fn check_capabilities(rule: &RuleSpec) -> Result<(), (String, String)> {
    let Some(allowed) = &rule.capabilities.sinks else {
        return Ok(());
    };
    let actions = rule
        .actions
        .iter()
        .enumerate()
        .map(|(position, action)| (format!("actions[{position}].sink"), action))
        .chain(
            rule.error_action
                .iter()
                .map(|action| ("error_action.sink".to_owned(), action)),
        );
    for (field, action) in actions {
        if !allowed.contains(&action.sink) {
            return Err((
                field,
                format!(
                    "sink `{}` is not in the rule's `capabilities.sinks` ({})",
                    action.sink,
                    allowed.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

impl RuleSpec {
    /// BLAKE3 of the entry as the gateway understood it, in hex: a change of
    /// any setting of the rule changes it. (Hashed through `Debug`, which shows
    /// every field exactly; the hash identifies versions within one build.)
    pub fn config_hash(&self) -> String {
        blake3::hash(format!("{self:?}").as_bytes())
            .to_hex()
            .to_string()
    }

    /// The configuration values as the module sees them.
    pub fn module_config(&self) -> RuleConfig {
        self.config
            .iter()
            .map(|(key, value)| (key.clone(), value.to_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<GatewayConfig, ConfigError> {
        GatewayConfig::parse(text, Path::new("gw.toml"), PathBuf::from("/etc/rulegate"))
    }

    /// Pieces of gateway configurations, so that random files get past the
    /// TOML parser often enough to reach the checks behind it.
    const FRAGMENTS: &[&str] = &[
        "[broker]\n",
        "[gateway]\n",
        "[outbox]\n",
        "[admin]\n",
        "[invoke]\n",
        "[sinks.a]\n",
        "[[rules]]\n",
        "[[rules.actions]]\n",
        "[rules.error_action]\n",
        "[rules.limits]\n",
        "[rules.capabilities]\n",
        "url = \"mqtt://h\"\n",
        "url = \"mqtts://h:1\"\n",
        "embedded = true\n",
        "type = \"s3\"\n",
        "type = \"file\"\n",
        "type = \"mqtt\"\n",
        "bucket = \"b\"\n",
        "directory = \"d\"\n",
        "name = \"r\"\n",
        "name = \"../x\"\n",
        "sql = \"SELECT * FROM 'a/#'\"\n",
        "sql = \"SELECT\"\n",
        "sink = \"a\"\n",
        "topic = \"${topic()}\"\n",
        "key = \"${x}\"\n",
        "attempts = 0\n",
        "max_bytes = -1\n",
        "when_full = \"drop_oldest\"\n",
        "time_ms = 99999999999\n",
        "listen = \"0.0.0.0:1\"\n",
        "token_env = \"X\"\n",
        "config = { a = 1 }\n",
        "publish = [\"#\"]\n",
        "= \n",
        "\"",
        "[",
        "]",
        "\n",
        "\\u0000",
    ];

    proptest::proptest! {
        #[test]
        fn any_configuration_text_is_accepted_or_refused_without_panicking(
            pieces in proptest::collection::vec(proptest::sample::select(FRAGMENTS), 0..24),
        ) {
            let _ = parse(&pieces.concat());
        }

        #[test]
        fn any_bytes_as_configuration_are_refused_without_panicking(text in ".{0,200}") {
            let _ = parse(&text);
        }
    }

    fn error_text(text: &str) -> String {
        parse(text)
            .expect_err("the configuration must be refused")
            .to_string()
    }

    const VALID: &str = r#"
        [broker]
        url = "mqtt://127.0.0.1"

        [sinks.local]
        type = "file"
        directory = "archive"

        [[rules]]
        name = "archive"
        sql = "SELECT * FROM 'device/+/devicePayload'"
        module = "rules/passthrough.wasm"
        config = { threshold = 35, label = "soil" }
        [[rules.actions]]
        sink = "local"
        key = "${topic(2)}"
    "#;

    #[test]
    fn valid_file_resolves_paths_against_its_directory() {
        let config = parse(VALID).unwrap();
        assert_eq!(
            config.sinks["local"].directory.as_deref(),
            Some(Path::new("/etc/rulegate/archive"))
        );
        let module = config.rules[0].module.as_deref().unwrap();
        assert_eq!(
            config.resolve(module),
            Path::new("/etc/rulegate/rules/passthrough.wasm")
        );
        assert_eq!(config.rules[0].module_config()["threshold"], "35");
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = error_text(&VALID.replace("sql =", "sqll ="));
        assert!(
            text.contains("gw.toml") && text.contains("sqll") && text.contains("line"),
            "{text}"
        );
    }

    #[test]
    fn action_on_an_unknown_sink_names_the_action() {
        let text = error_text(&VALID.replace("sink = \"local\"", "sink = \"lokal\""));
        assert!(
            text.contains("`rules[0] (archive).actions[0].sink`"),
            "{text}"
        );
        assert!(text.contains("no sink named `lokal`"), "{text}");
    }

    #[test]
    fn parameter_that_does_not_fit_the_sink_is_named() {
        let text = error_text(&VALID.replace("key = ", "subject = \"x\"\n        key = "));
        assert!(
            text.contains("actions[0].subject") && text.contains("file sink"),
            "{text}"
        );
    }

    #[test]
    fn worker_threads_are_counted_from_one() {
        let with = |threads: &str| format!("[gateway]\nworker_threads = {threads}\n{VALID}");
        let config = parse(&with("1")).unwrap();
        assert_eq!(
            config.gateway.worker_threads.map(NonZeroUsize::get),
            Some(1)
        );
        assert_eq!(parse(VALID).unwrap().gateway.worker_threads, None);
        let text = error_text(&with("0"));
        assert!(
            text.contains("worker_threads") && text.contains("nonzero"),
            "{text}"
        );
    }

    #[test]
    fn broker_needs_exactly_one_of_url_and_embedded() {
        let both = error_text(&VALID.replace("url =", "embedded = true\n        url ="));
        assert!(
            both.contains("`broker`") && both.contains("not both"),
            "{both}"
        );
        let neither = error_text(&VALID.replace("url = \"mqtt://127.0.0.1\"", ""));
        assert!(neither.contains("`broker`"), "{neither}");
    }

    #[test]
    fn shared_group_prefixes_every_subscription() {
        let config = parse(&VALID.replace(
            "url = \"mqtt://127.0.0.1\"",
            "url = \"mqtt://127.0.0.1\"\n        shared_group = \"soil\"",
        ))
        .unwrap();
        assert_eq!(
            config
                .broker
                .subscriptions(vec!["device/+/devicePayload".into()]),
            ["$share/soil/device/+/devicePayload"]
        );
        let text = error_text(&VALID.replace(
            "url = \"mqtt://127.0.0.1\"",
            "url = \"mqtt://127.0.0.1\"\n        shared_group = \"a/b\"",
        ));
        assert!(text.contains("`broker.shared_group`"), "{text}");
    }

    #[test]
    fn duplicate_rule_names_are_refused() {
        let rule = &VALID[VALID.find("[[rules]]").unwrap()..];
        let text = error_text(&format!("{VALID}\n{rule}"));
        assert!(text.contains("rules[1] (archive).name"), "{text}");
    }
}
