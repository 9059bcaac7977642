//! The admin API: what the rules run and how they do, rule changes without a
//! restart (reload, module upload), and metrics for Prometheus. An axum
//! server, loopback by default; every route but `/health` needs the bearer
//! token, which the configuration must provide.
//!
//! Routes: `GET /health`, `GET /rules`, `GET /rules/{name}`,
//! `PUT /rules/{name}/module` (the `.wasm` as the body), `DELETE
//! /rules/{name}/module` (back to the configured module), `POST /reload`,
//! `GET /reload` (the change history), `GET /metrics`.

mod metrics;

use crate::actions::Sinks;
use crate::http::{self, BearerToken, HttpServer};
use crate::pipeline::RuleReport;
use crate::ruleset::{ChangeError, ChangeRecord, ChangeSummary, RuleSet, Trigger};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, UNIX_EPOCH};

/// `[admin]`: the admin API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the API listens; loopback unless set otherwise.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The name of the environment variable holding the bearer token
    /// (at least 16 characters). A token is required wherever the API listens.
    pub token_env: Option<String>,
    /// Or a file holding it; one trailing newline is ignored.
    pub token_file: Option<PathBuf>,
    /// The largest module an upload may carry, in bytes.
    #[serde(default = "default_max_module_bytes")]
    pub max_module_bytes: usize,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9180))
}

fn default_max_module_bytes() -> usize {
    32 << 20
}

impl AdminConfig {
    /// Checks what serde cannot; the error names the key under `admin.`.
    pub fn check(&self) -> Result<(), (String, String)> {
        http::check_token_source("admin", self.token_env.as_deref(), self.token_file.as_ref())?;
        if self.max_module_bytes == 0 {
            return Err(("admin.max_module_bytes".into(), "must be at least 1".into()));
        }
        Ok(())
    }
}

/// The running admin API.
pub struct AdminService {
    server: HttpServer,
}

impl AdminService {
    /// Starts serving `rules` (and the counters of `sinks`) on `config.listen`.
    pub async fn start(
        config: &AdminConfig,
        rules: Arc<RuleSet>,
        sinks: Weak<Sinks>,
    ) -> anyhow::Result<AdminService> {
        let token = BearerToken::load(
            "admin",
            config.token_env.as_deref(),
            config.token_file.as_ref(),
        )?;
        let state = Arc::new(Admin { rules, sinks });
        let protected = Router::new()
            .route("/rules", get(list_rules))
            .route("/rules/{name}", get(one_rule))
            .route(
                "/rules/{name}/module",
                put(upload_module)
                    .delete(remove_module)
                    .layer(DefaultBodyLimit::max(config.max_module_bytes)),
            )
            .route("/reload", get(change_history).post(reload))
            .route("/metrics", get(metrics))
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(token),
                http::require_token,
            ));
        let router = Router::new()
            .route("/health", get(health))
            .merge(protected)
            .with_state(state);
        let server = HttpServer::start("admin.listen", config.listen, router).await?;
        tracing::info!(address = %server.address(), "admin API listening");
        Ok(AdminService { server })
    }

    pub fn address(&self) -> SocketAddr {
        self.server.address()
    }

    /// Stops taking requests and lets those under way finish.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.server.shutdown().await
    }
}

/// What the handlers share. The sinks are held weakly: shutdown needs to be
/// their only owner.
struct Admin {
    rules: Arc<RuleSet>,
    sinks: Weak<Sinks>,
}

type AdminState = State<Arc<Admin>>;

async fn health(State(admin): AdminState) -> Json<Value> {
    Json(json!({ "status": "ok", "rules": admin.rules.stats().reports().len() }))
}

async fn list_rules(State(admin): AdminState) -> Json<Value> {
    let history = admin.rules.history();
    let rules: Vec<Value> = admin
        .rules
        .stats()
        .reports()
        .iter()
        .map(|report| rule_json(report, history.rule_rejections.get(&report.name)))
        .collect();
    Json(json!({ "rules": rules }))
}

async fn one_rule(State(admin): AdminState, Path(name): Path<String>) -> Response {
    let history = admin.rules.history();
    match admin
        .rules
        .stats()
        .reports()
        .iter()
        .find(|report| report.name == name)
    {
        Some(report) => Json(rule_json(report, history.rule_rejections.get(&name))).into_response(),
        None => failure(
            StatusCode::NOT_FOUND,
            format!("no rule named `{name}` runs"),
        ),
    }
}

async fn upload_module(
    State(admin): AdminState,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    changed(admin.rules.upload(&name, body).await)
}

async fn remove_module(State(admin): AdminState, Path(name): Path<String>) -> Response {
    changed(admin.rules.remove_upload(&name).await)
}

async fn reload(State(admin): AdminState) -> Response {
    changed(admin.rules.reload(Trigger::Api).await)
}

async fn change_history(State(admin): AdminState) -> Json<Value> {
    Json(json!(admin.rules.history()))
}

async fn metrics(State(admin): AdminState) -> Response {
    let stats = admin.rules.stats();
    let sinks = admin.sinks.upgrade();
    let snapshot = metrics::Snapshot {
        intake: stats.intake(),
        rules: stats.reports(),
        sinks: sinks
            .as_ref()
            .map(|sinks| sinks.stats())
            .unwrap_or_default(),
        outbox: sinks.as_ref().map(|sinks| sinks.outbox_stats()),
        changes: admin.rules.history(),
    };
    drop(sinks);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(&snapshot),
    )
        .into_response()
}

/// The answer to a change: what it did, or why it was refused.
fn changed(outcome: Result<ChangeSummary, ChangeError>) -> Response {
    match outcome {
        Ok(summary) => Json(json!({ "result": "ok", "changes": summary })).into_response(),
        Err(error @ ChangeError::UnknownRule(_)) => {
            failure(StatusCode::NOT_FOUND, error.to_string())
        }
        Err(error @ ChangeError::Rejected { .. }) => {
            failure(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
        }
        Err(error @ ChangeError::Stopped(_)) => {
            failure(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
        }
    }
}

fn failure(status: StatusCode, problem: String) -> Response {
    (status, Json(json!({ "result": "error", "error": problem }))).into_response()
}

/// One rule as the API shows it. Latency figures are the upper bounds of the
/// histogram buckets that hold them, in µs (`null`: no sample, or beyond the
/// last bucket).
fn rule_json(report: &RuleReport, rejection: Option<&ChangeRecord>) -> Value {
    let quantile = |q: f64| {
        report
            .latency
            .quantile_upper_bound(q)
            .filter(|&bound| bound != u64::MAX)
    };
    let loaded_at = UNIX_EPOCH + Duration::from_millis(report.version.loaded_at_ms);
    json!({
        "name": report.name,
        "state": "running",
        "version": report.version,
        "loaded_at": humantime::format_rfc3339_millis(loaded_at).to_string(),
        "counters": report.counters,
        "latency_us": {
            "count": report.latency.total(),
            "p50": quantile(0.5),
            "p99": quantile(0.99),
            "p999": quantile(0.999),
        },
        "last_rejection": rejection,
    })
}
