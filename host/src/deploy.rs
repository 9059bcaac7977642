//! The laptop side of hot-loading a rule: `rulegate deploy` uploads a module to
//! a gateway's admin API (`PUT /rules/{name}/module`), which checks it, keeps
//! it and swaps it in, then reads back the version that now serves.

use anyhow::{Context, bail};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// How long the gateway may take to check, compile and swap a module.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(120);

/// What the gateway reports after a deployment.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub rule: String,
    pub version: u64,
    pub module_hash: String,
}

/// Uploads `module` as rule `rule`'s module to the admin API at `gateway`
/// (`http://host:9180`) with bearer token `token`.
pub async fn deploy(
    gateway: &str,
    token: &str,
    rule: &str,
    module: &Path,
) -> anyhow::Result<Deployed> {
    let bytes = std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
    let client = crate::tls::http_client_builder()
        .timeout(DEPLOY_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    let base = gateway.trim_end_matches('/');
    let url = format!("{base}/rules/{rule}/module");
    let response = client
        .put(&url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/wasm")
        .body(bytes)
        .send()
        .await
        .with_context(|| format!("uploading to {url}"))?;
    answer(response, &url).await?;
    let url = format!("{base}/rules/{rule}");
    let response = client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("reading {url}"))?;
    let report = answer(response, &url).await?;
    let version = &report["version"];
    Ok(Deployed {
        rule: rule.to_owned(),
        version: version["number"].as_u64().unwrap_or_default(),
        module_hash: version["module_hash"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    })
}

/// The JSON body of a successful answer; otherwise the gateway's own error.
async fn answer(response: reqwest::Response, url: &str) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("{url} answered {status} without JSON"))?;
    if !status.is_success() {
        let error = body["error"].as_str().unwrap_or("no error message");
        bail!("{url}: {status}: {error}");
    }
    Ok(body)
}
