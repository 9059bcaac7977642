//! A real moto server (AWS S3, SNS and SQS on loopback) for tests, with helpers
//! that set up and read back through the real AWS APIs. Killed when dropped.
//!
//! moto keeps everything in memory: after [`Moto::restart`] buckets, topics and
//! queues are gone and a test has to create them again.

use super::mosquitto::{LocalServer, find_in_path, free_port};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::Credentials;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct Moto {
    server: LocalServer,
}

/// An SNS topic with an SQS queue subscribed to it.
pub struct TopicWithQueue {
    pub topic_arn: String,
    pub queue_url: String,
}

/// One SNS notification as read back from a subscribed SQS queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub subject: Option<String>,
    pub message: String,
    /// Message attributes by name, with their string values.
    pub attributes: BTreeMap<String, String>,
}

impl Moto {
    pub fn start() -> Moto {
        let port = free_port();
        let server = LocalServer {
            name: "moto_server",
            program: executable(),
            args: vec![
                "-H".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string().into(),
            ],
            port,
            directory: tempfile::tempdir().expect("creating a directory for moto's log"),
            ready: answers_http,
            // Python's imports make the first start slow.
            ready_within: Duration::from_secs(60),
            child: None,
        };
        Moto {
            server: server.started(),
        }
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    /// AWS configuration for this server: static credentials `testing`/`testing`,
    /// region us-east-1, this server's endpoint, short timeouts.
    pub async fn sdk_config(&self) -> SdkConfig {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(2))
            .operation_timeout(Duration::from_secs(20))
            .build();
        aws_config::defaults(BehaviorVersion::latest())
            .http_client(rulegate::tls::aws_http_client())
            .region(Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
            .timeout_config(timeouts)
            .load()
            .await
    }

    /// The paths (without the query) of the successful (200) PUT requests the
    /// server answered, in the order it answered them, across restarts: its
    /// access log.
    pub fn successful_puts(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.server.log_path()).unwrap_or_default();
        log.lines()
            .filter_map(|line| {
                let request = line.split('"').nth(1)?;
                let status = line.split('"').nth(2)?.split_whitespace().next()?;
                let target = request.strip_prefix("PUT ")?.split(' ').next()?;
                let path = target.split('?').next()?;
                (status == "200").then(|| path.to_owned())
            })
            .collect()
    }

    /// Kills the server; its state is lost.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Stops the server if it runs, then starts an empty one on the same port.
    pub fn restart(&mut self) {
        self.server.restart();
    }

    pub async fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::from(&self.sdk_config().await)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub async fn create_bucket(&self, bucket: &str) {
        self.s3()
            .await
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap_or_else(|error| panic!("creating bucket {bucket}: {}", show(error)));
    }

    /// Keeps every version of every object in `bucket`, so that a test can
    /// count how often each key was written.
    pub async fn enable_versioning(&self, bucket: &str) {
        use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
        let enabled = VersioningConfiguration::builder()
            .status(BucketVersioningStatus::Enabled)
            .build();
        self.s3()
            .await
            .put_bucket_versioning()
            .bucket(bucket)
            .versioning_configuration(enabled)
            .send()
            .await
            .unwrap_or_else(|error| panic!("versioning bucket {bucket}: {}", show(error)));
    }

    /// How many versions `bucket` holds in all (see [`Moto::enable_versioning`]).
    pub async fn count_versions(&self, bucket: &str) -> usize {
        let s3 = self.s3().await;
        let mut count = 0;
        let mut marker: Option<(String, String)> = None;
        loop {
            let mut request = s3.list_object_versions().bucket(bucket);
            if let Some((key, version)) = &marker {
                request = request.key_marker(key).version_id_marker(version);
            }
            let page = request
                .send()
                .await
                .unwrap_or_else(|error| panic!("listing versions of {bucket}: {}", show(error)));
            count += page.versions().len();
            if !page.is_truncated().unwrap_or(false) {
                return count;
            }
            marker = Some((
                page.next_key_marker().unwrap_or_default().to_owned(),
                page.next_version_id_marker().unwrap_or_default().to_owned(),
            ));
        }
    }

    /// Every key in `bucket`, sorted.
    pub async fn list_keys(&self, bucket: &str) -> Vec<String> {
        let s3 = self.s3().await;
        let mut pages = s3.list_objects_v2().bucket(bucket).into_paginator().send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page =
                page.unwrap_or_else(|error| panic!("listing bucket {bucket}: {}", show(error)));
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|object| object.key().map(String::from)),
            );
        }
        keys.sort();
        keys
    }

    /// The body of object `key` in `bucket`.
    pub async fn get_object(&self, bucket: &str, key: &str) -> Vec<u8> {
        let object = self
            .s3()
            .await
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|error| panic!("getting s3://{bucket}/{key}: {}", show(error)));
        object
            .body
            .collect()
            .await
            .unwrap_or_else(|error| panic!("reading s3://{bucket}/{key}: {error}"))
            .to_vec()
    }

    /// Creates SNS topic `name` and an SQS queue of the same name subscribed to
    /// it; both FIFO when `name` ends with `.fifo`. moto delivers each
    /// notification to the queue as a JSON envelope.
    pub async fn create_topic_with_queue(&self, name: &str) -> TopicWithQueue {
        let config = self.sdk_config().await;
        let sns = aws_sdk_sns::Client::new(&config);
        let sqs = aws_sdk_sqs::Client::new(&config);
        let fifo = name.ends_with(".fifo");
        let mut topic = sns.create_topic().name(name);
        let mut queue = sqs.create_queue().queue_name(name);
        if fifo {
            topic = topic.attributes("FifoTopic", "true");
            queue = queue.attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true");
        }
        let topic_arn = topic
            .send()
            .await
            .unwrap_or_else(|error| panic!("creating topic {name}: {}", show(error)))
            .topic_arn
            .expect("CreateTopic answers with the topic's ARN");
        let queue_url = queue
            .send()
            .await
            .unwrap_or_else(|error| panic!("creating queue {name}: {}", show(error)))
            .queue_url
            .expect("CreateQueue answers with the queue's URL");
        let queue_arn = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap_or_else(|error| panic!("reading the ARN of queue {name}: {}", show(error)))
            .attributes
            .and_then(|mut attributes| {
                attributes.remove(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            })
            .expect("GetQueueAttributes answers with the queue's ARN");
        sns.subscribe()
            .topic_arn(&topic_arn)
            .protocol("sqs")
            .endpoint(queue_arn)
            .send()
            .await
            .unwrap_or_else(|error| {
                panic!("subscribing queue {name} to its topic: {}", show(error))
            });
        TopicWithQueue {
            topic_arn,
            queue_url,
        }
    }

    /// Receives notifications from `queue_url` until `expected` have arrived or
    /// `within` has passed, and returns those that arrived.
    pub async fn receive_notifications(
        &self,
        queue_url: &str,
        expected: usize,
        within: Duration,
    ) -> Vec<Notification> {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk_config().await);
        let deadline = Instant::now() + within;
        let mut notifications = Vec::new();
        while notifications.len() < expected && Instant::now() < deadline {
            let received = sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap_or_else(|error| panic!("receiving from {queue_url}: {}", show(error)));
            for message in received.messages() {
                let body = message.body().expect("an SQS message has a body");
                notifications.push(parse_envelope(body));
                sqs.delete_message()
                    .queue_url(queue_url)
                    .set_receipt_handle(message.receipt_handle().map(String::from))
                    .send()
                    .await
                    .unwrap_or_else(|error| panic!("deleting from {queue_url}: {}", show(error)));
            }
        }
        notifications
    }
}

/// Whether an HTTP server answers a plain GET on `port`.
fn answers_http(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let timeout = Some(Duration::from_secs(2));
    let request = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    let mut status_line = [0u8; 8];
    stream.set_read_timeout(timeout).is_ok()
        && stream.set_write_timeout(timeout).is_ok()
        && stream.write_all(request.as_bytes()).is_ok()
        && stream.read_exact(&mut status_line).is_ok()
        && status_line.starts_with(b"HTTP/1.")
}

/// The notification inside moto's SNS-to-SQS JSON envelope.
fn parse_envelope(body: &str) -> Notification {
    let envelope: Value = serde_json::from_str(body)
        .unwrap_or_else(|error| panic!("SNS envelope is not JSON ({error}): {body}"));
    let text = |field: &str| {
        envelope
            .get(field)
            .and_then(Value::as_str)
            .map(String::from)
    };
    let attributes = envelope
        .get("MessageAttributes")
        .and_then(Value::as_object)
        .map(|attributes| {
            attributes
                .iter()
                .filter_map(|(name, attribute)| {
                    let value = attribute.get("Value")?.as_str()?;
                    Some((name.clone(), value.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default();
    Notification {
        subject: text("Subject"),
        message: text("Message")
            .unwrap_or_else(|| panic!("SNS envelope without a Message: {body}")),
        attributes,
    }
}

/// `moto_server` from PATH.
fn executable() -> PathBuf {
    find_in_path("moto_server").unwrap_or_else(|| {
        panic!("moto_server not found in PATH; install it: pip install 'moto[server]'")
    })
}

/// An SDK error with its chain of causes.
fn show(error: impl std::error::Error + 'static) -> String {
    aws_sdk_s3::error::DisplayErrorContext(error).to_string()
}
