//! Synchronous cloud-to-device invocation: an HTTP caller asks for a device,
//! the gateway publishes the request into the device's topic space and answers
//! the caller with the device's acknowledgement or a timeout.
//!
//! [`round_trip`] matches answers to requests over MQTT; [`endpoint`] is the
//! authenticated endpoint in front of it. The gateway starts an
//! [`InvokeService`] when the configuration has an `[invoke]` section.

mod endpoint;
mod round_trip;

pub use round_trip::InvokeStats;

use crate::http::{self, BearerToken, HttpServer};
use crate::mqtt::{self, BrokerEndpoint};
use anyhow::Context;
use round_trip::{Invoker, answer_filter};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Answers waiting to be matched; the connection waits when it is full.
const ANSWER_QUEUE: usize = 1024;
/// How long start waits for the broker to acknowledge the answer subscription.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// `[invoke]`: the synchronous invocation endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvokeConfig {
    /// Where the HTTP endpoint listens; loopback unless set otherwise.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The name of the environment variable holding the bearer token callers
    /// must present (`Authorization: Bearer <token>`); at least 16 characters.
    pub token_env: Option<String>,
    /// Or a file holding the token (a systemd credential, a mounted secret);
    /// one trailing newline is ignored.
    pub token_file: Option<PathBuf>,
    /// The devices that may be invoked: exact ids, prefixes ending in `*`
    /// (`"door-*"`), or `"*"` for any.
    pub allowed_targets: Vec<String>,
    /// The third level of request topics, telling devices who asks.
    #[serde(default = "default_client_prefix")]
    pub client_prefix: String,
    /// The timeout of a request that names none, in seconds.
    #[serde(default = "default_timeout")]
    pub default_timeout_secs: f64,
    /// The longest timeout a caller may ask for, in seconds.
    #[serde(default = "max_timeout")]
    pub max_timeout_secs: f64,
    /// Invocations waiting for their device at once; more get HTTP 503.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_client_prefix() -> String {
    "rulegate".to_owned()
}

fn default_timeout() -> f64 {
    10.0
}

fn max_timeout() -> f64 {
    60.0
}

fn default_max_in_flight() -> usize {
    10_000
}

impl InvokeConfig {
    /// Checks what serde cannot; the error names the key under `invoke.`.
    pub fn check(&self) -> Result<(), (String, String)> {
        let invalid = |key: &str, problem: String| Err((format!("invoke.{key}"), problem));
        if let Err(problem) = round_trip::check_topic_level(&self.client_prefix) {
            return invalid("client_prefix", problem);
        }
        if let Some(pattern) = self
            .allowed_targets
            .iter()
            .find(|pattern| round_trip::check_topic_level(pattern.trim_end_matches('*')).is_err())
            .filter(|pattern| pattern.as_str() != "*")
        {
            return invalid(
                "allowed_targets",
                format!("`{pattern}` is not a device id, a prefix ending in `*`, or `*`"),
            );
        }
        if !(self.max_timeout_secs > 0.0 && self.max_timeout_secs <= 3600.0) {
            return invalid(
                "max_timeout_secs",
                "must be above 0 and at most 3600".into(),
            );
        }
        if !(self.default_timeout_secs > 0.0 && self.default_timeout_secs <= self.max_timeout_secs)
        {
            return invalid(
                "default_timeout_secs",
                "must be above 0 and at most `max_timeout_secs`".into(),
            );
        }
        if self.max_in_flight == 0 {
            return invalid("max_in_flight", "must be at least 1".into());
        }
        http::check_token_source(
            "invoke",
            self.token_env.as_deref(),
            self.token_file.as_ref(),
        )
    }

    /// Whether `target` is among the allowed devices.
    pub fn allows(&self, target: &str) -> bool {
        self.allowed_targets
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => target.starts_with(prefix),
                None => pattern == target,
            })
    }
}

/// The running invocation service: its MQTT connection and its HTTP endpoint.
pub struct InvokeService {
    invoker: Arc<Invoker>,
    server: HttpServer,
    stop_link: watch::Sender<bool>,
    connection: JoinHandle<()>,
    matcher: JoinHandle<()>,
}

impl InvokeService {
    /// Connects to the broker as `<client_id>-invoke`, subscribes to the answer
    /// topics and starts serving HTTP on `config.listen`.
    pub async fn start(
        config: &InvokeConfig,
        endpoint: &BrokerEndpoint,
        max_payload_bytes: usize,
    ) -> anyhow::Result<InvokeService> {
        let token = BearerToken::load(
            "invoke",
            config.token_env.as_deref(),
            config.token_file.as_ref(),
        )?;

        let (stop_link, link_stopped) = watch::channel(false);
        let (answers, mut answer_queue) = mpsc::channel(ANSWER_QUEUE);
        let (subscribed, mut ready) = watch::channel(false);
        let client_id = format!("{}-invoke", endpoint.client_id());
        let (link, connection) = mqtt::spawn_subscriber(
            endpoint,
            &client_id,
            mqtt::fixed_filters(vec![answer_filter(&config.client_prefix)]),
            max_payload_bytes,
            answers,
            subscribed,
            link_stopped,
        );
        let invoker = Arc::new(Invoker::new(link, config));
        let matcher = tokio::spawn({
            let invoker = invoker.clone();
            async move {
                while let Some(answer) = answer_queue.recv().await {
                    invoker.on_answer(&answer);
                }
            }
        });
        if tokio::time::timeout(READY_TIMEOUT, ready.wait_for(|&done| done))
            .await
            .is_err()
        {
            tracing::warn!(
                broker = endpoint.address(),
                "invocation answers not subscribed after {READY_TIMEOUT:?}; still trying"
            );
        }

        let router = endpoint::router(endpoint::Endpoint {
            invoker: invoker.clone(),
            config: config.clone(),
            max_request_bytes: max_payload_bytes,
        })
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(token),
            http::require_token,
        ));
        let server = HttpServer::start("invoke.listen", config.listen, router).await?;
        tracing::info!(address = %server.address(), "invocation endpoint listening");
        Ok(InvokeService {
            invoker,
            server,
            stop_link,
            connection,
            matcher,
        })
    }

    /// The address the HTTP endpoint is bound to.
    pub fn address(&self) -> SocketAddr {
        self.server.address()
    }

    /// The invocation counters.
    pub fn stats(&self) -> InvokeStats {
        self.invoker.stats()
    }

    /// Stops taking requests, lets those in flight finish (each within its
    /// timeout), then closes the connection.
    pub async fn shutdown(self) -> anyhow::Result<InvokeStats> {
        self.server
            .shutdown()
            .await
            .context("stopping the invocation endpoint")?;
        // Only now: the invocations in flight were still waiting for answers.
        let _ = self.stop_link.send(true);
        self.connection
            .await
            .context("waiting for the invocation connection to close")?;
        self.matcher.abort();
        Ok(self.invoker.stats())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(allowed: &[&str]) -> InvokeConfig {
        InvokeConfig {
            listen: default_listen(),
            token_env: Some("TOKEN".into()),
            token_file: None,
            allowed_targets: allowed.iter().map(|target| target.to_string()).collect(),
            client_prefix: default_client_prefix(),
            default_timeout_secs: default_timeout(),
            max_timeout_secs: max_timeout(),
            max_in_flight: default_max_in_flight(),
        }
    }

    #[test]
    fn allowed_targets_match_exactly_or_by_prefix() {
        let config = config(&["Device001", "door-*"]);
        assert!(config.allows("Device001"));
        assert!(!config.allows("Device0011"));
        assert!(config.allows("door-7"));
        assert!(!config.allows("window-1"));
        assert!(self::config(&["*"]).allows("anything"));
        assert!(!self::config(&[]).allows("Device001"));
    }

    #[test]
    fn wildcards_inside_targets_and_bad_timeouts_are_refused() {
        assert_eq!(
            config(&["a/b"]).check().unwrap_err().0,
            "invoke.allowed_targets"
        );
        assert_eq!(
            config(&["dev+"]).check().unwrap_err().0,
            "invoke.allowed_targets"
        );
        let mut too_long = config(&["*"]);
        too_long.default_timeout_secs = 120.0;
        assert_eq!(
            too_long.check().unwrap_err().0,
            "invoke.default_timeout_secs"
        );
        assert!(config(&["*", "door-*"]).check().is_ok());
    }
}
