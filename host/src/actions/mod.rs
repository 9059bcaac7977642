//! Actions: deliver rule outputs to the configured sinks — S3 objects, SNS
//! notifications, device MQTT topics, local files — from the durable outbox,
//! with ordered workers, retries with backoff, and counters.
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
use crate::mqtt::Receipt;
use crate::outbox::{Outbox, OutboxSettings, OutboxStats, SinkId};
use anyhow::Context as _;
use bytes::Bytes;
use destination::Destination;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use worker::SinkLane;

/// How long shutdown waits, after the grace period, for the outbox to write
/// the last settled deliveries before it counts what is left.
const FINAL_SYNC_TIMEOUT: Duration = Duration::from_secs(1);

/// One payload for one sink, ready to send; stored as it is in the outbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    /// The rule that produced the payload, for logs and failure handling.
    pub rule: Arc<str>,
    /// Deliveries with the same key are sent one after another, in the order
    /// they were submitted (an mqtt sink's without waiting for the broker's
    /// acknowledgement of the one before; one tried again after a failure may
    /// then arrive after those behind it); the pipeline derives the key from
    /// rule and source topic. Different keys may be delivered in parallel.
    pub ordering_key: u64,
    /// The bytes to deliver, unchanged.
    pub payload: Bytes,
    /// Where in the sink the payload goes.
    pub target: Target,
}

/// Where in a sink a payload goes; the variant must fit the sink's kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Queues one message on the connection, behind those queued before it,
    /// and returns what resolves once the broker has it (its PUBACK, for QoS
    /// 1): only then does the delivery leave the outbox. The sink queues the
    /// next publish without waiting for that, as one connection's publishes
    /// reach the broker in order. An `Err` from either names the cause and is
    /// retried.
    async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        user_properties: &[Property],
    ) -> Result<Confirmation, String>;
}

/// Resolves once the broker has a publish that [`Publisher::publish`] queued;
/// an `Err` says why it may not have it.
pub type Confirmation = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// The confirmation of a publish that is confirmed once queued: a connection
/// that does not track acknowledgements, or a publisher that sends nothing.
pub fn confirmed_at_once() -> Confirmation {
    Box::pin(std::future::ready(Ok(())))
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
/// at all; the pipeline runs the rule's error action for it, and settles it
/// with a [`FailureSettler`].
#[derive(Debug)]
pub struct FailedDelivery {
    /// The sink's name, as in `[sinks.NAME]`.
    pub sink: String,
    /// Its id in the outbox.
    pub id: u64,
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
    #[error("the outbox has stopped and takes no more deliveries")]
    Stopped,
}

/// The running sinks: the outbox they read from, and per sink a reader and
/// its workers.
pub struct Sinks {
    lanes: BTreeMap<String, SinkLane>,
    settler: FailureSettler,
    writer: JoinHandle<()>,
    closing: watch::Sender<bool>,
}

/// Settles deliveries that failed for good: removes each from the outbox and
/// stores the report for its rule's error action in its place, in one
/// transaction. Whoever handles [`FailedDelivery`]s holds one; it works until
/// the sinks have shut down, which wait for every stored delivery to settle.
#[derive(Clone)]
pub struct FailureSettler {
    outbox: Outbox,
    /// Each sink's place in the outbox and kind, by name.
    sinks: Arc<BTreeMap<String, (SinkId, SinkKind)>>,
}

impl FailureSettler {
    /// Settles `failed`, storing `report` — a sink's name and the delivery
    /// for it — in its place. Never waits: the sinks wait on whoever handles
    /// their failures. A report that cannot be stored is refused with the
    /// reason, and the failure is settled all the same.
    pub fn settle(
        &self,
        failed: &FailedDelivery,
        report: Option<(String, Delivery)>,
    ) -> Result<(), SubmitError> {
        let (failed_sink, _) = self.sink(&failed.sink)?;
        let replacement = report
            .map(|(sink, delivery)| Ok((self.sink_for(&sink, &delivery)?, delivery)))
            .transpose();
        let (replacement, refused) = match replacement {
            Ok(replacement) => (replacement, None),
            Err(error) => (None, Some(error)),
        };
        self.outbox
            .settle(failed_sink, failed.id, replacement)
            .map_err(|_| SubmitError::Stopped)?;
        refused.map_or(Ok(()), Err)
    }

    fn sink(&self, sink: &str) -> Result<(SinkId, SinkKind), SubmitError> {
        self.sinks
            .get(sink)
            .copied()
            .ok_or_else(|| SubmitError::UnknownSink {
                sink: sink.to_owned(),
            })
    }

    /// Sink `sink`'s id, when it can take `delivery`.
    fn sink_for(&self, sink: &str, delivery: &Delivery) -> Result<SinkId, SubmitError> {
        let (id, kind) = self.sink(sink)?;
        if !delivery.target.fits(kind) {
            return Err(SubmitError::TargetMismatch {
                sink: sink.to_owned(),
                kind,
                target: delivery.target.name(),
            });
        }
        Ok(id)
    }
}

impl Sinks {
    /// Validates `configs`, opens the outbox, builds each sink's client and
    /// starts delivering, beginning with what the outbox held from before.
    /// Deliveries that finally fail are sent to `failures`.
    pub async fn start(
        configs: &BTreeMap<String, SinkConfig>,
        mut env: SinkEnv,
        outbox: &OutboxSettings,
        failures: mpsc::Sender<FailedDelivery>,
    ) -> anyhow::Result<Sinks> {
        let mut valid = Vec::with_capacity(configs.len());
        for (name, config) in configs {
            valid.push((name, config.kind, config.to_valid(name)?));
        }
        let names: Vec<String> = configs.keys().cloned().collect();
        let (outbox, writer) = Outbox::open(outbox, &names)?;
        let (closing, closed) = watch::channel(false);
        let mut lanes = BTreeMap::new();
        for (position, (name, kind, valid)) in valid.into_iter().enumerate() {
            let destination = Destination::build(name, valid.destination, &mut env)
                .await
                .with_context(|| format!("starting sink `{name}`"))?;
            let lane = SinkLane::start(
                name,
                kind,
                outbox.sink(position),
                destination,
                valid.policy,
                outbox.clone(),
                closed.clone(),
                failures.clone(),
            );
            lanes.insert(name.clone(), lane);
        }
        let ids = lanes
            .iter()
            .map(|(name, lane)| (name.clone(), (lane.id(), lane.kind())))
            .collect();
        let settler = FailureSettler {
            outbox,
            sinks: Arc::new(ids),
        };
        Ok(Sinks {
            lanes,
            settler,
            writer,
            closing,
        })
    }

    /// Stores `delivery` for `sink` in the outbox; `receipt` (the message's) is
    /// released once it is on disk. Waits while the outbox is behind or full.
    pub async fn submit(
        &self,
        sink: &str,
        delivery: Delivery,
        receipt: Option<Receipt>,
    ) -> Result<(), SubmitError> {
        let sink = self.settler.sink_for(sink, &delivery)?;
        self.settler
            .outbox
            .append(sink, delivery, receipt)
            .await
            .map_err(|_| SubmitError::Stopped)
    }

    /// What settles failed deliveries; see [`FailureSettler`].
    pub fn failure_settler(&self) -> FailureSettler {
        self.settler.clone()
    }

    /// A snapshot of each sink's counters, by sink name.
    pub fn stats(&self) -> Vec<(String, SinkStats)> {
        self.lanes
            .iter()
            .map(|(name, lane)| (name.clone(), lane.stats()))
            .collect()
    }

    /// The outbox's counters.
    pub fn outbox_stats(&self) -> OutboxStats {
        self.settler.outbox.stats()
    }

    /// Delivers what the outbox holds (with retries, and the failure reports
    /// of what fails) for at most `grace`, then stops: what is left stays in
    /// the outbox for the next start. Closes the outbox and returns each
    /// sink's final counters. Keep reading the `failures` channel meanwhile: a
    /// worker with a failed delivery waits for room there.
    pub async fn shutdown(self, grace: Duration) -> Vec<(String, SinkStats)> {
        let deadline = tokio::time::Instant::now() + grace;
        let Sinks {
            lanes,
            settler,
            writer,
            closing,
        } = self;
        // What was submitted is stored before the readers may find the outbox
        // empty. A full outbox takes it only as deliveries make room: bounded.
        let _ = tokio::time::timeout_at(deadline, settler.outbox.sync()).await;
        closing.send_replace(true);
        let mut final_stats = Vec::with_capacity(lanes.len());
        for (name, lane) in lanes {
            final_stats.push((name, lane.finish(deadline).await));
        }
        // The last settles are on disk before the count is read.
        let _ = tokio::time::timeout(FINAL_SYNC_TIMEOUT, settler.outbox.sync()).await;
        let left = settler.outbox.stats().records;
        if left > 0 {
            tracing::warn!(
                deliveries = left,
                "stopping with deliveries in the outbox; they go out after the next start"
            );
        }
        // The writer ends once the last handle is gone (the failure handler's
        // goes with the workers' failure channel), after its last commit.
        drop(settler);
        if let Err(error) = writer.await {
            tracing::error!(%error, "the outbox writer ended abnormally");
        }
        final_stats
    }
}
