//! What the gateway's HTTP endpoints (the invocation endpoint, the admin API)
//! share: bearer-token authentication and a server that binds, serves and
//! stops gracefully. The endpoints' routes live with the endpoints.

mod auth;

pub use auth::{BearerToken, check_token_source, require_token};

use anyhow::Context;
use std::net::SocketAddr;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// An axum server running on its own task.
pub struct HttpServer {
    address: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl HttpServer {
    /// Binds `listen` (configuration key `key`, named in errors) and serves `router`.
    pub async fn start(
        key: &str,
        listen: SocketAddr,
        router: axum::Router,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("{key}: binding {listen}"))?;
        let address = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|&stop| stop).await;
                })
                .await
        });
        Ok(HttpServer {
            address,
            stop,
            task,
        })
    }

    /// The address the server is bound to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops accepting, lets the requests in progress finish, then returns.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task
            .await
            .context("waiting for the HTTP server to stop")?
            .context("serving HTTP")
    }
}
