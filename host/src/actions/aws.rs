//! What the s3 and sns sinks share about AWS: loading the standard
//! configuration and sorting SDK errors into worth-retrying or not.
//! Credentials stay inside the SDK's configuration and are never logged.

use super::destination::DeliveryError;
#[cfg(doc)]
use super::destination::Retry;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use std::error::Error;

/// The AWS configuration from the standard chain (environment, profile,
/// credential process, web identity, instance role), over the gateway's TLS.
pub(crate) async fn load_standard_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(crate::tls::aws_http_client())
        .load()
        .await
}

/// Turns a failed SDK call into a delivery error. `operation` names the call
/// and its input (`PutObject s3://bucket/key`) for the log.
///
/// A service that cannot be reached is waited for (see [`Retry`]). Only
/// rejections of the request itself are permanent. Missing buckets or
/// topics and denied access are retried: an operator can fix them while the
/// attempts last, and a restarted S3-compatible store may not have its
/// buckets back yet. Some services report throttling, timeouts and expired
/// credentials as 400, so those codes are retried too.
pub(crate) fn classify<E>(operation: &str, error: SdkError<E, HttpResponse>) -> DeliveryError
where
    E: Error + ProvideErrorMetadata + 'static,
{
    let cause = format!("{operation}: {}", DisplayErrorContext(&error));
    match &error {
        SdkError::ConstructionFailure(_) => DeliveryError::permanent(cause),
        // No connection, or no answer: the uplink or the service is down.
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            DeliveryError::unreachable(cause)
        }
        SdkError::ServiceError(service) => {
            let rejected = matches!(service.raw().status().as_u16(), 400 | 405 | 411 | 413 | 414);
            let code = service.err().code().unwrap_or_default();
            if rejected && !TRANSIENT_CODES.contains(&code) {
                DeliveryError::permanent(cause)
            } else {
                DeliveryError::transient(cause)
            }
        }
        _ => DeliveryError::transient(cause),
    }
}

/// Error codes that come with a 400 status but pass with time.
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestLimitExceeded",
    "SlowDown",
    "RequestTimeout",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
];
