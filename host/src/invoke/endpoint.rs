//! The HTTP face of invocation: `GET /invoke?request=&method=&target=&timeout=`
//! and `POST /invoke` with the same fields as a JSON object. The service puts
//! these routes behind the bearer token; parameters are checked before anything
//! is published.
//!
//! Status codes: 200 answered, 504 timed out, 400 bad parameter (named), 401
//! no or wrong token, 403 target not allowed, 503 busy or broker unreachable.

use super::InvokeConfig;
use super::round_trip::{Invocation, InvokeError, Invoker, Outcome, check_topic_level};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the handlers share.
pub(super) struct Endpoint {
    pub invoker: Arc<Invoker>,
    pub config: InvokeConfig,
    /// A request text larger than the gateway's payload limit is refused.
    pub max_request_bytes: usize,
}

/// The routes; the caller puts them behind the bearer token.
pub(super) fn router(endpoint: Endpoint) -> Router {
    Router::new()
        .route("/invoke", get(invoke_by_query).post(invoke_by_json))
        .with_state(Arc::new(endpoint))
}

async fn invoke_by_query(
    State(endpoint): State<Arc<Endpoint>>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let started = Instant::now();
    endpoint.serve(pairs, started).await
}

async fn invoke_by_json(State(endpoint): State<Arc<Endpoint>>, body: Bytes) -> Response {
    let started = Instant::now();
    match json_pairs(&body) {
        Ok(pairs) => endpoint.serve(pairs, started).await,
        Err(problem) => failure(StatusCode::BAD_REQUEST, problem),
    }
}

/// The fields of a JSON object body as text; numbers are accepted for all.
fn json_pairs(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let Ok(Value::Object(fields)) = serde_json::from_slice(body) else {
        return Err(
            "the body must be a JSON object with `request`, `method`, `target` and optionally `timeout`"
                .into(),
        );
    };
    fields
        .into_iter()
        .map(|(name, value)| match value {
            Value::String(text) => Ok((name, text)),
            Value::Number(number) => Ok((name, number.to_string())),
            _ => Err(format!("parameter `{name}` must be a string or a number")),
        })
        .collect()
}

impl Endpoint {
    async fn serve(&self, pairs: Vec<(String, String)>, started: Instant) -> Response {
        let call = match self.invocation(pairs) {
            Ok(call) => call,
            Err(Refusal(status, problem)) => return failure(status, problem),
        };
        match self.invoker.invoke(&call, started).await {
            Ok(Outcome::Answered { response, elapsed }) => (
                StatusCode::OK,
                Json(json!({
                    "result": "ok",
                    "elapsed": milliseconds(elapsed),
                    "response": String::from_utf8_lossy(&response),
                })),
            )
                .into_response(),
            Ok(Outcome::TimedOut { elapsed }) => (
                StatusCode::GATEWAY_TIMEOUT,
                Json(json!({ "result": "timeout", "elapsed": milliseconds(elapsed) })),
            )
                .into_response(),
            Err(error @ (InvokeError::Busy(_) | InvokeError::Publish(_))) => {
                failure(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
            }
        }
    }

    /// Checks the parameters.
    fn invocation(&self, pairs: Vec<(String, String)>) -> Result<Invocation, Refusal> {
        let bad = |problem: String| Refusal(StatusCode::BAD_REQUEST, problem);
        let [mut request, mut method, mut target, mut timeout] = [None, None, None, None];
        for (name, value) in pairs {
            let slot = match name.as_str() {
                "request" => &mut request,
                "method" => &mut method,
                "target" => &mut target,
                "timeout" => &mut timeout,
                _ => {
                    return Err(bad(format!(
                        "unknown parameter `{name}` (expected request, method, target, timeout)"
                    )));
                }
            };
            if slot.replace(value).is_some() {
                return Err(bad(format!("parameter `{name}` is given twice")));
            }
        }
        let required = |name: &str, value: Option<String>| {
            value.ok_or_else(|| bad(format!("parameter `{name}` is missing")))
        };
        let request = required("request", request)?;
        if request.len() > self.max_request_bytes {
            return Err(bad(format!(
                "parameter `request`: {} bytes exceed the limit of {}",
                request.len(),
                self.max_request_bytes
            )));
        }
        let method = required("method", method)?;
        check_topic_level(&method)
            .map_err(|problem| bad(format!("parameter `method` {problem}")))?;
        let target = required("target", target)?;
        check_topic_level(&target)
            .map_err(|problem| bad(format!("parameter `target` {problem}")))?;
        let timeout = match timeout {
            Some(text) => self.timeout(&text).map_err(bad)?,
            None => Duration::from_secs_f64(self.config.default_timeout_secs),
        };
        if !self.config.allows(&target) {
            return Err(Refusal(
                StatusCode::FORBIDDEN,
                format!("target `{target}` is not among the allowed devices"),
            ));
        }
        Ok(Invocation {
            target,
            method,
            request,
            timeout,
        })
    }

    fn timeout(&self, text: &str) -> Result<Duration, String> {
        let max = self.config.max_timeout_secs;
        let seconds: f64 = text
            .trim()
            .parse()
            .map_err(|_| format!("parameter `timeout`: `{text}` is not a number of seconds"))?;
        if !(seconds > 0.0 && seconds <= max) {
            return Err(format!(
                "parameter `timeout`: {seconds} is not above 0 and at most {max} seconds"
            ));
        }
        Ok(Duration::from_secs_f64(seconds))
    }
}

/// Why a request's parameters are refused, and with which status.
struct Refusal(StatusCode, String);

/// Milliseconds with microsecond precision, as the response's text field.
fn milliseconds(elapsed: Duration) -> String {
    format!("{:.3}", elapsed.as_secs_f64() * 1000.0)
}

fn failure(status: StatusCode, problem: String) -> Response {
    (status, Json(json!({ "result": "error", "error": problem }))).into_response()
}
