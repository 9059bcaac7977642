//! The s3 sink: one `PutObject` per delivery, the payload byte for byte as the
//! object body under the delivery's key. Works with S3-compatible stores
//! through the sink's `endpoint` and `path_style`.

use super::config::AwsOverrides;
use super::destination::DeliveryError;
use super::{Delivery, Target, aws};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation};
use aws_sdk_s3::primitives::ByteStream;

pub(crate) struct S3Sink {
    client: Client,
    bucket: String,
}

impl S3Sink {
    pub fn new(
        shared: &aws_config::SdkConfig,
        overrides: &AwsOverrides,
        bucket: String,
        path_style: bool,
    ) -> Self {
        // The worker owns retries, so that its counters and backoff are the
        // whole story; the SDK's own would multiply every attempt.
        let mut config = aws_sdk_s3::config::Builder::from(shared)
            .retry_config(RetryConfig::disabled())
            .force_path_style(path_style);
        if let Some(region) = &overrides.region {
            config = config.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &overrides.endpoint {
            // S3-compatible stores do not all accept the streaming checksum
            // trailers the SDK sends by default; they are optional for PutObject.
            config = config
                .endpoint_url(endpoint)
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
        }
        S3Sink {
            client: Client::from_conf(config.build()),
            bucket,
        }
    }

    pub async fn deliver(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        let Target::Object { key } = &delivery.target else {
            return Err(DeliveryError::permanent(
                "an s3 sink takes only object deliveries",
            ));
        };
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(delivery.payload.clone()))
            .send()
            .await
            .map(drop)
            .map_err(|error| aws::classify(&format!("PutObject s3://{}/{key}", self.bucket), error))
    }
}
