//! The service behind a sink's workers: built once from a validated
//! configuration, it makes one delivery attempt and says whether another attempt
//! could succeed. Queues and retries are the worker's job.

use super::config::DestinationSettings;
use super::file::FileSink;
use super::republish::RepublishSink;
use super::s3::S3Sink;
use super::sns::SnsSink;
use super::{Confirmation, Delivery, SinkEnv};
use crate::outbox::DeliveryName;
use anyhow::Context as _;

/// Why one delivery attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeliveryError {
    pub cause: String,
    pub retry: Retry,
}

/// Whether, and how long, a failed delivery is worth trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// The delivery itself is at fault: no attempt can succeed.
    Never,
    /// The service refused or failed it: try again, within the sink's attempts.
    WithinAttempts,
    /// The service could not be reached (connection refused, no answer): the
    /// delivery waits until it can be, without using up its attempts.
    WhenReachable,
}

impl DeliveryError {
    /// A failure that may pass: the service was slow, busy or not ready.
    pub fn transient(cause: impl Into<String>) -> Self {
        Self {
            cause: cause.into(),
            retry: Retry::WithinAttempts,
        }
    }

    /// The service is out of reach: the uplink or the service is down.
    pub fn unreachable(cause: impl Into<String>) -> Self {
        Self {
            cause: cause.into(),
            retry: Retry::WhenReachable,
        }
    }

    /// A failure that repeats on every attempt: the delivery cannot be sent.
    pub fn permanent(cause: impl Into<String>) -> Self {
        Self {
            cause: cause.into(),
            retry: Retry::Never,
        }
    }
}

/// One sink's client, of the sink's kind.
pub(crate) enum Destination {
    S3(S3Sink),
    Sns(SnsSink),
    File(FileSink),
    Mqtt(RepublishSink),
}

impl Destination {
    pub async fn build(
        name: &str,
        settings: DestinationSettings,
        env: &mut SinkEnv,
    ) -> anyhow::Result<Destination> {
        Ok(match settings {
            DestinationSettings::S3 {
                bucket,
                aws,
                path_style,
            } => Destination::S3(S3Sink::new(env.aws().await, &aws, bucket, path_style)),
            DestinationSettings::Sns { topic_arn, aws } => {
                Destination::Sns(SnsSink::new(env.aws().await, &aws, topic_arn))
            }
            DestinationSettings::File { directory } => Destination::File(
                FileSink::open(directory)
                    .await
                    .with_context(|| format!("preparing the directory of file sink `{name}`"))?,
            ),
            DestinationSettings::Mqtt => {
                let publisher = env.publisher.clone().with_context(|| {
                    format!(
                        "mqtt sink `{name}` needs the gateway's MQTT connection, \
                         but none was given (SinkEnv::publisher)"
                    )
                })?;
                Destination::Mqtt(RepublishSink::new(publisher))
            }
        })
    }

    /// Makes one attempt at `delivery`, whose target the caller checked fits;
    /// `name` is the delivery's own, the same at every attempt and after a
    /// restart, for services that deduplicate. Returns once the service has
    /// it, or, for an mqtt sink, once the publish is queued on the connection.
    pub async fn send(
        &self,
        delivery: &Delivery,
        name: DeliveryName<'_>,
    ) -> Result<Sent, DeliveryError> {
        // The AWS SDK's futures take kilobytes: boxed, they are not copied
        // into every attempt's future of the light sinks too.
        let done = match self {
            Destination::S3(sink) => Box::pin(sink.deliver(delivery)).await,
            Destination::Sns(sink) => Box::pin(sink.deliver(delivery, name)).await,
            Destination::File(sink) => sink.deliver(delivery).await,
            Destination::Mqtt(sink) => return sink.send(delivery).await.map(Sent::Queued),
        };
        done.map(|()| Sent::Done)
    }
}

/// Where an attempt stands once [`Destination::send`] returns.
pub(crate) enum Sent {
    /// The service has the delivery.
    Done,
    /// Queued on a connection: the service has it once this resolves.
    Queued(Confirmation),
}
