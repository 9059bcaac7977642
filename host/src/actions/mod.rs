//! Actions: deliver rule outputs to the configured sinks — S3 objects, SNS
//! notifications, device MQTT topics, local files — through bounded per-sink
//! queues with ordered workers, retries with backoff, and counters.
//!
//! Does not render keys, subjects or topics from message data (the pipeline
//! does, and hands over a finished [`Delivery`]) and does not run error actions
//! (failed deliveries go back on the `failures` channel). Called by the pipeline.

mod aws;
mod config;
mod destination;
mod file;
mod republish;
mod s3;
mod sns;
mod stats;
mod worker;

pub use config::{SinkConfig, SinkConfigError, SinkKind};
pub use stats::SinkStats;

use crate::message::{Property, QoS};
use anyhow::Context as _;
use bytes::Bytes;
use destination::Destination;
use std::collections::BTreeMap;
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::mpsc;
use worker::SinkLane;

/// One payload for one sink, ready to send.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The rule that produced the payload, for logs and failure handling.
    pub rule: Arc<str>,
    /// Deliveries with the same key are delivered one after another, in the
    /// order they were submitted; the pipeline derives it from rule and source
    /// topic. Different keys may be delivered in parallel.
    pub ordering_key: u64,
    /// The bytes to deliver, unchanged.
    pub payload: Bytes,
    /// Where in the sink the payload goes.
    pub target: Target,
}

/// Where in a sink a payload goes; the variant must fit the sink's kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An object (s3 sink) or a file (file sink) with this key. For a file sink
    /// the key is a relative path that must stay inside the sink's directory.
    Object { key: String },
    /// An SNS notification; each attribute becomes a `String` message attribute.
    Notification {
        subject: Option<String>,
        attributes: Vec<Property>,
    },
    /// An MQTT message on a device topic.
    Publish {
        topic: String,
        qos: QoS,
        retain: bool,
        user_properties: Vec<Property>,
    },
}

impl Target {
    /// The variant's name, for error messages.
    fn name(&self) -> &'static str {
        match self {
            Target::Object { .. } => "object",
            Target::Notification { .. } => "notification",
            Target::Publish { .. } => "publish",
        }
    }

    fn fits(&self, kind: SinkKind) -> bool {
        matches!(
            (self, kind),
            (Target::Object { .. }, SinkKind::S3 | SinkKind::File)
                | (Target::Notification { .. }, SinkKind::Sns)
                | (Target::Publish { .. }, SinkKind::Mqtt)
        )
    }
}

/// How the mqtt sink publishes: implemented by the gateway's MQTT client for
/// MQTT 3.1.1 and 5 (3.1.1 drops `user_properties`).
#[async_trait::async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes one message; an `Err` names the cause and is retried.
    async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        user_properties: &[Property],
    ) -> Result<(), String>;
}

/// What the sinks need from the rest of the gateway.
#[derive(Clone, Default)]
pub struct SinkEnv {
    /// The AWS configuration for s3 and sns sinks. `None` loads it from the
    /// standard chain (environment, profile, instance role) when such a sink
    /// exists. Each sink's `region` and `endpoint` apply on top.
    pub aws: Option<aws_config::SdkConfig>,
    /// The gateway's MQTT connection; required when an mqtt sink exists.
    pub publisher: Option<Arc<dyn Publisher>>,
}

impl SinkEnv {
    /// No AWS configuration (loaded from the standard chain when needed) and no
    /// publisher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `aws` for the s3 and sns sinks instead of the standard chain.
    pub fn with_aws(mut self, aws: aws_config::SdkConfig) -> Self {
        self.aws = Some(aws);
        self
    }

    /// Publishes the mqtt sinks' deliveries through `publisher`.
    pub fn with_publisher(mut self, publisher: Arc<dyn Publisher>) -> Self {
        self.publisher = Some(publisher);
        self
    }

    /// The AWS configuration: the given one, else the standard chain's, loaded
    /// once on first use.
    async fn aws(&mut self) -> &aws_config::SdkConfig {
        let aws = match self.aws.take() {
            Some(aws) => aws,
            None => aws::load_standard_config().await,
        };
        self.aws.insert(aws)
    }
}

/// A delivery that did not succeed after its attempts, or that cannot succeed
/// at all; the pipeline runs the rule's error action for it.
#[derive(Debug)]
pub struct FailedDelivery {
    /// The sink's name, as in `[sinks.NAME]`.
    pub sink: String,
    pub delivery: Delivery,
    /// The last attempt's error.
    pub cause: String,
    /// How many attempts were made (1 for errors that retrying cannot cure).
    pub attempts: u32,
}

/// Why [`Sinks::submit`] refused a delivery.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("no sink named `{sink}` is configured (see the [sinks.NAME] tables)")]
    UnknownSink { sink: String },
    #[error("sink `{sink}` is of type \"{kind}\" and cannot take a {target} delivery")]
    TargetMismatch {
        sink: String,
        kind: SinkKind,
        target: &'static str,
    },
    #[error("sink `{sink}` has stopped and takes no more deliveries")]
    Stopped { sink: String },
    #[error("sink `{sink}` has no room in its queue")]
    Full { sink: String },
}

/// The running sinks: one bounded queue and a set of workers per sink.
pub struct Sinks {
    lanes: BTreeMap<String, SinkLane>,
}

impl Sinks {
    /// Validates `configs`, builds each sink's client and starts its workers.
    /// Deliveries that finally fail are sent to `failures`.
    pub async fn start(
        configs: &BTreeMap<String, SinkConfig>,
        mut env: SinkEnv,
        failures: mpsc::Sender<FailedDelivery>,
    ) -> anyhow::Result<Sinks> {
        let mut lanes = BTreeMap::new();
        for (name, config) in configs {
            let valid = config.to_valid(name)?;
            let destination = Destination::build(name, valid.destination, &mut env)
                .await
                .with_context(|| format!("starting sink `{name}`"))?;
            let lane = SinkLane::start(
                name,
                config.kind,
                destination,
                valid.policy,
                failures.clone(),
            );
            lanes.insert(name.clone(), lane);
        }
        Ok(Sinks { lanes })
    }

    /// Queues `delivery` for `sink`, waiting while the sink's queue is full.
    ///
    /// A delivery that is being retried holds up the later deliveries of its
    /// worker — that keeps each ordering key in order — but never another sink.
    pub async fn submit(&self, sink: &str, delivery: Delivery) -> Result<(), SubmitError> {
        self.lane_for(sink, &delivery)?.submit(delivery).await
    }

    /// Queues `delivery` for `sink` only if its queue has room now. For callers
    /// that must never wait on a sink, such as the reporter of failed
    /// deliveries, which the sinks themselves wait on.
    pub fn try_submit(&self, sink: &str, delivery: Delivery) -> Result<(), SubmitError> {
        self.lane_for(sink, &delivery)?.try_submit(delivery)
    }

    fn lane_for(&self, sink: &str, delivery: &Delivery) -> Result<&SinkLane, SubmitError> {
        let lane = self
            .lanes
            .get(sink)
            .ok_or_else(|| SubmitError::UnknownSink {
                sink: sink.to_owned(),
            })?;
        if !delivery.target.fits(lane.kind()) {
            return Err(SubmitError::TargetMismatch {
                sink: sink.to_owned(),
                kind: lane.kind(),
                target: delivery.target.name(),
            });
        }
        Ok(lane)
    }

    /// A snapshot of each sink's counters, by sink name.
    pub fn stats(&self) -> Vec<(String, SinkStats)> {
        self.lanes
            .iter()
            .map(|(name, lane)| (name.clone(), lane.stats()))
            .collect()
    }

    /// Takes no more work, delivers everything queued (with its retries), then
    /// returns each sink's final counters. Keep reading the `failures` channel
    /// meanwhile: a worker with a failed delivery waits for room there.
    pub async fn shutdown(self) -> Vec<(String, SinkStats)> {
        // Close every queue first so that the sinks drain in parallel.
        let draining: Vec<_> = self
            .lanes
            .into_iter()
            .map(|(name, lane)| (name, lane.close()))
            .collect();
        let mut final_stats = Vec::with_capacity(draining.len());
        for (name, lane) in draining {
            final_stats.push((name, lane.await));
        }
        final_stats
    }
}
