//! Bearer-token authentication for the gateway's HTTP endpoints: reading the
//! token from the environment or a file, keeping it only as a hash, and the
//! axum layer that refuses a request without it.

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

/// A bearer token shorter than this is refused at start: it would be guessable.
const MIN_TOKEN_LEN: usize = 16;

/// The secret callers present, kept only as its BLAKE3 hash: comparing hashes
/// takes the same time wherever the presented token differs (blake3's `Hash`
/// compares in constant time), and the token's length does not leak either.
pub struct BearerToken(blake3::Hash);

impl BearerToken {
    pub fn new(token: &str) -> Self {
        BearerToken(blake3::hash(token.as_bytes()))
    }

    /// Reads the token of configuration section `section` from the environment
    /// variable `env` or the file `file` (one trailing newline ignored).
    pub fn load(
        section: &str,
        env: Option<&str>,
        file: Option<&PathBuf>,
    ) -> anyhow::Result<BearerToken> {
        let (key, token) = match (env, file) {
            (Some(variable), _) => (
                "token_env",
                std::env::var(variable).with_context(|| {
                    format!("{section}.token_env: environment variable `{variable}` is not set")
                })?,
            ),
            (None, Some(path)) => (
                "token_file",
                std::fs::read_to_string(path)
                    .with_context(|| format!("{section}.token_file: reading {}", path.display()))?,
            ),
            (None, None) => anyhow::bail!("{section}: no bearer token configured"),
        };
        let token = token.strip_suffix('\n').unwrap_or(&token);
        if token.len() < MIN_TOKEN_LEN {
            anyhow::bail!("{section}.{key}: the token is shorter than {MIN_TOKEN_LEN} characters");
        }
        Ok(BearerToken::new(token))
    }

    fn admits(&self, presented: &str) -> bool {
        blake3::hash(presented.as_bytes()) == self.0
    }
}

/// The configuration check both endpoints share: exactly one token source.
pub fn check_token_source(
    section: &str,
    env: Option<&str>,
    file: Option<&PathBuf>,
) -> Result<(), (String, String)> {
    if env.is_some() == file.is_some() {
        return Err((
            format!("{section}.token_env"),
            "set either `token_env` (an environment variable) or `token_file` for the bearer token"
                .into(),
        ));
    }
    Ok(())
}

/// Middleware (`axum::middleware::from_fn_with_state`): passes a request with
/// the right `Authorization: Bearer` header on, answers any other with 401.
pub async fn require_token(
    State(token): State<Arc<BearerToken>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if presented.is_some_and(|presented| token.admits(presented)) {
        return next.run(request).await;
    }
    let mut response = (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({
            "result": "error",
            "error": "missing or wrong bearer token (send `Authorization: Bearer <token>`)",
        })),
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}
