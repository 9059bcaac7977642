//! The `[sinks.NAME]` tables of the gateway configuration: one flat, documented
//! struct as the operator writes it, checked once by [`SinkConfig::validate`]
//! into the typed settings each sink is built from.

use serde::Deserialize;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// Which service a sink delivers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// Amazon S3 or an S3-compatible store: one object per delivery.
    S3,
    /// Amazon SNS: one notification per delivery.
    Sns,
    /// A local directory: one file per delivery.
    File,
    /// Device topics, through the gateway's own MQTT connection.
    Mqtt,
}

impl SinkKind {
    /// The name used for this kind in the configuration (`type = "..."`).
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::S3 => "s3",
            SinkKind::Sns => "sns",
            SinkKind::File => "file",
            SinkKind::Mqtt => "mqtt",
        }
    }
}

impl std::fmt::Display for SinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[sinks.NAME]` table: where deliveries go and how hard to try.
///
/// ```toml
/// [sinks.archive]
/// type = "s3"
/// bucket = "sensor-archive"
/// region = "eu-west-1"
/// attempts = 8
/// ```
///
/// Keys that do not apply to the sink's `type` are rejected by
/// [`SinkConfig::validate`], unknown keys already when the file is read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// The service: `"s3"`, `"sns"`, `"file"` or `"mqtt"`.
    #[serde(rename = "type")]
    pub kind: SinkKind,

    /// s3: the bucket that receives one object per delivery. Required.
    pub bucket: Option<String>,

    /// s3, sns: the AWS region of the bucket or topic. Defaults to the region of
    /// the standard AWS configuration (`AWS_REGION`, profile).
    pub region: Option<String>,

    /// s3, sns: the service endpoint URL, for S3- or SNS-compatible services
    /// (MinIO, moto, LocalStack). Defaults to the AWS endpoint of the region.
    pub endpoint: Option<String>,

    /// s3: address the bucket in the URL path (`https://host/bucket/key`) rather
    /// than in the host name. Most S3-compatible stores need this. Default `false`.
    pub path_style: Option<bool>,

    /// sns: the ARN of the topic that receives one notification per delivery.
    /// Required.
    pub topic_arn: Option<String>,

    /// file: the directory under which each delivery's key becomes a relative
    /// file path. Created when missing. Required.
    pub directory: Option<PathBuf>,

    /// How many times a delivery the service fails or refuses is tried before
    /// it is handed back as failed (the rule's error action then runs).
    /// Default 5; at least 1. While the service cannot be reached at all
    /// (connection refused, no answer within `timeout_ms`), deliveries wait in
    /// the outbox and are retried until it can, without using up attempts.
    #[serde(default = "defaults::attempts")]
    pub attempts: u32,

    /// The wait before the first retry, in milliseconds; each further retry waits
    /// twice as long, with random jitter, up to `max_backoff_ms`. Default 200.
    #[serde(default = "defaults::initial_backoff_ms")]
    pub initial_backoff_ms: u64,

    /// The longest wait between two attempts, in milliseconds. Default 30000.
    #[serde(default = "defaults::max_backoff_ms")]
    pub max_backoff_ms: u64,

    /// How long one attempt may take before it counts as failed, in
    /// milliseconds. Default 30000.
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,

    /// How many deliveries the sink takes from the outbox into memory at once
    /// (waiting for a worker or under way); the rest wait on disk. Default 1024.
    #[serde(default = "defaults::queue_capacity")]
    pub queue_capacity: usize,

    /// How many workers deliver in parallel. Deliveries of one rule and source
    /// topic go to one worker, which sends them one after another, in order
    /// (an mqtt sink's worker without waiting for each acknowledgement: up to
    /// 32 publishes in flight). Default 4.
    #[serde(default = "defaults::concurrency")]
    pub concurrency: usize,
}

mod defaults {
    pub fn attempts() -> u32 {
        5
    }
    pub fn initial_backoff_ms() -> u64 {
        200
    }
    pub fn max_backoff_ms() -> u64 {
        30_000
    }
    pub fn timeout_ms() -> u64 {
        30_000
    }
    pub fn queue_capacity() -> usize {
        1024
    }
    pub fn concurrency() -> usize {
        4
    }
}

/// A `[sinks.NAME]` table that cannot be used as written.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SinkConfigError {
    #[error("[sinks.{sink}]: `{key}` is required for a sink of type \"{kind}\"")]
    Missing {
        sink: String,
        kind: SinkKind,
        key: &'static str,
    },
    #[error(
        "[sinks.{sink}]: `{key}` does not apply to a sink of type \"{kind}\"; remove it or change `type`"
    )]
    NotApplicable {
        sink: String,
        kind: SinkKind,
        key: &'static str,
    },
    #[error("[sinks.{sink}]: `{key}` {reason}")]
    Invalid {
        sink: String,
        key: &'static str,
        reason: &'static str,
    },
}

/// Where a validated sink delivers to.
#[derive(Debug, Clone)]
pub(crate) enum DestinationSettings {
    S3 {
        bucket: String,
        aws: AwsOverrides,
        path_style: bool,
    },
    Sns {
        topic_arn: String,
        aws: AwsOverrides,
    },
    File {
        directory: PathBuf,
    },
    Mqtt,
}

/// Per-sink changes to the shared AWS configuration.
#[derive(Debug, Clone, Default)]
pub(crate) struct AwsOverrides {
    pub region: Option<String>,
    pub endpoint: Option<String>,
}

/// How a validated sink queues, retries and times out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeliveryPolicy {
    pub attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub timeout: Duration,
    pub queue_capacity: usize,
    pub concurrency: usize,
}

/// A sink configuration that passed [`SinkConfig::validate`].
#[derive(Debug, Clone)]
pub(crate) struct ValidSink {
    pub destination: DestinationSettings,
    pub policy: DeliveryPolicy,
}

impl SinkConfig {
    /// An mqtt sink with the default delivery options: what the gateway uses
    /// for device topics when no `[sinks.NAME]` of its name is configured.
    pub fn mqtt() -> Self {
        Self::with_defaults(SinkKind::Mqtt)
    }

    /// A file sink under `directory` with the default delivery options: the
    /// embedded default when no cloud sink is configured.
    pub fn file(directory: impl Into<PathBuf>) -> Self {
        SinkConfig {
            directory: Some(directory.into()),
            ..Self::with_defaults(SinkKind::File)
        }
    }

    /// A sink of `kind` with no destination keys and the default delivery
    /// options, as if its table held only `type`.
    fn with_defaults(kind: SinkKind) -> Self {
        SinkConfig {
            kind,
            bucket: None,
            region: None,
            endpoint: None,
            path_style: None,
            topic_arn: None,
            directory: None,
            attempts: defaults::attempts(),
            initial_backoff_ms: defaults::initial_backoff_ms(),
            max_backoff_ms: defaults::max_backoff_ms(),
            timeout_ms: defaults::timeout_ms(),
            queue_capacity: defaults::queue_capacity(),
            concurrency: defaults::concurrency(),
        }
    }

    /// Which service this sink delivers to.
    pub fn kind(&self) -> SinkKind {
        self.kind
    }

    /// Checks that the keys fit the sink's `type` and the delivery options are
    /// usable; `sink` is the table's name, for the error message. The gateway
    /// calls this when it loads its configuration; [`super::Sinks::start`]
    /// calls it again.
    pub fn validate(&self, sink: &str) -> Result<(), SinkConfigError> {
        self.to_valid(sink).map(drop)
    }

    pub(crate) fn to_valid(&self, sink: &str) -> Result<ValidSink, SinkConfigError> {
        let check = KeyCheck {
            sink,
            kind: self.kind,
        };
        let destination = match self.kind {
            SinkKind::S3 => {
                check.absent("topic_arn", &self.topic_arn)?;
                check.absent("directory", &self.directory)?;
                DestinationSettings::S3 {
                    bucket: check.required("bucket", &self.bucket)?,
                    aws: self.aws_overrides(),
                    path_style: self.path_style.unwrap_or(false),
                }
            }
            SinkKind::Sns => {
                check.absent("bucket", &self.bucket)?;
                check.absent("path_style", &self.path_style)?;
                check.absent("directory", &self.directory)?;
                DestinationSettings::Sns {
                    topic_arn: check.required("topic_arn", &self.topic_arn)?,
                    aws: self.aws_overrides(),
                }
            }
            SinkKind::File => {
                self.reject_aws_keys(&check)?;
                DestinationSettings::File {
                    directory: check.required("directory", &self.directory)?,
                }
            }
            SinkKind::Mqtt => {
                self.reject_aws_keys(&check)?;
                check.absent("directory", &self.directory)?;
                DestinationSettings::Mqtt
            }
        };
        Ok(ValidSink {
            destination,
            policy: self.policy(sink)?,
        })
    }

    fn aws_overrides(&self) -> AwsOverrides {
        AwsOverrides {
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
        }
    }

    fn reject_aws_keys(&self, check: &KeyCheck<'_>) -> Result<(), SinkConfigError> {
        check.absent("bucket", &self.bucket)?;
        check.absent("region", &self.region)?;
        check.absent("endpoint", &self.endpoint)?;
        check.absent("path_style", &self.path_style)?;
        check.absent("topic_arn", &self.topic_arn)
    }

    fn policy(&self, sink: &str) -> Result<DeliveryPolicy, SinkConfigError> {
        let invalid = |key, reason| SinkConfigError::Invalid {
            sink: sink.to_owned(),
            key,
            reason,
        };
        if self.attempts == 0 {
            return Err(invalid("attempts", "must be at least 1"));
        }
        if self.queue_capacity == 0 {
            return Err(invalid("queue_capacity", "must be at least 1"));
        }
        if self.concurrency == 0 {
            return Err(invalid("concurrency", "must be at least 1"));
        }
        if self.timeout_ms == 0 {
            return Err(invalid("timeout_ms", "must be at least 1"));
        }
        if self.max_backoff_ms < self.initial_backoff_ms {
            return Err(invalid(
                "max_backoff_ms",
                "must not be smaller than `initial_backoff_ms`",
            ));
        }
        Ok(DeliveryPolicy {
            attempts: self.attempts,
            initial_backoff: Duration::from_millis(self.initial_backoff_ms),
            max_backoff: Duration::from_millis(self.max_backoff_ms),
            timeout: Duration::from_millis(self.timeout_ms),
            queue_capacity: self.queue_capacity,
            concurrency: self.concurrency,
        })
    }
}

/// Checks keys of one table against its `type`, naming the table in errors.
struct KeyCheck<'a> {
    sink: &'a str,
    kind: SinkKind,
}

impl KeyCheck<'_> {
    fn required<T: Clone + AsRef<OsStr>>(
        &self,
        key: &'static str,
        value: &Option<T>,
    ) -> Result<T, SinkConfigError> {
        match value {
            None => Err(SinkConfigError::Missing {
                sink: self.sink.to_owned(),
                kind: self.kind,
                key,
            }),
            Some(value) if value.as_ref().is_empty() => Err(SinkConfigError::Invalid {
                sink: self.sink.to_owned(),
                key,
                reason: "must not be empty",
            }),
            Some(value) => Ok(value.clone()),
        }
    }

    fn absent<T>(&self, key: &'static str, value: &Option<T>) -> Result<(), SinkConfigError> {
        match value {
            None => Ok(()),
            Some(_) => Err(SinkConfigError::NotApplicable {
                sink: self.sink.to_owned(),
                kind: self.kind,
                key,
            }),
        }
    }
}
