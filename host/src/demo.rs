//! `rulegate demo`: the soil-moisture scenario on one machine. Runs the gateway
//! from `gateway-config/demo.toml` (embedded broker, archive and alert rules,
//! file sinks), feeds it with the simulator, shows live progress, and on Ctrl-C
//! (or after `--duration`) shuts down cleanly and says where the results are.

use crate::actions::SinkStats;
use crate::config::GatewayConfig;
use crate::gateway::Gateway;
use crate::mqtt::BrokerEndpoint;
use crate::simulate::{self, SimulatorOptions};
use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub struct DemoOptions {
    /// The demo's gateway configuration.
    pub config: PathBuf,
    pub simulator: SimulatorOptions,
    /// Stop after this long; `None` runs until Ctrl-C.
    pub duration: Option<Duration>,
}

/// What the demo did, printed at the end.
#[derive(Debug)]
pub struct DemoSummary {
    pub published: u64,
    pub archived: u64,
    pub alerts: u64,
    pub archive_dir: Option<PathBuf>,
    pub alerts_dir: Option<PathBuf>,
}

/// Runs the demo to its end and returns what it did.
pub async fn run(options: DemoOptions) -> anyhow::Result<DemoSummary> {
    let config = GatewayConfig::load(&options.config)?;
    let archive_dir = file_sink_dir(&config, "archive");
    let alerts_dir = file_sink_dir(&config, "alerts");
    let listen = config.broker.listen;
    let gateway = Gateway::start(config, None).await?;

    let endpoint = BrokerEndpoint::plain(&listen.ip().to_string(), listen.port(), "simulator");
    let (stop, stopped) = watch::channel(false);
    let simulator_options = options.simulator.clone();
    let simulator =
        tokio::spawn(async move { simulate::run(&endpoint, &simulator_options, stopped).await });
    println!(
        "rulegate demo: {} soil sensors publishing to the embedded broker on {listen}; Ctrl-C to stop",
        options.simulator.sensors
    );

    let started = Instant::now();
    let mut progress = tokio::time::interval(Duration::from_secs(1));
    let mut last_received = 0;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = progress.tick() => {}
            _ = &mut ctrl_c => break,
        }
        let received = gateway.stats().intake().received;
        let sinks = gateway.sink_stats();
        print!(
            "\r{:>6.1} msg/s | received {received:>7} | archived {:>7} | alerts {:>6}   ",
            (received - last_received) as f64,
            delivered(&sinks, "archive"),
            delivered(&sinks, "alerts"),
        );
        let _ = std::io::stdout().flush();
        last_received = received;
        if options
            .duration
            .is_some_and(|limit| started.elapsed() >= limit)
        {
            break;
        }
    }
    println!();

    let _ = stop.send(true);
    let published = simulator
        .await
        .context("simulator task")?
        .context("simulator")?;
    // Let the last readings reach the gateway before it stops taking messages.
    wait_until_received(&gateway, published, Duration::from_secs(5)).await;
    let sinks = gateway.shutdown().await?;
    Ok(DemoSummary {
        published,
        archived: delivered(&sinks, "archive"),
        alerts: delivered(&sinks, "alerts"),
        archive_dir,
        alerts_dir,
    })
}

/// The directory of file sink `name`, if the configuration has one.
fn file_sink_dir(config: &GatewayConfig, name: &str) -> Option<PathBuf> {
    config.sinks.get(name)?.directory.clone()
}

fn delivered(stats: &[(String, SinkStats)], sink: &str) -> u64 {
    stats
        .iter()
        .find(|(name, _)| name == sink)
        .map_or(0, |(_, stats)| stats.delivered)
}

async fn wait_until_received(gateway: &Gateway, count: u64, timeout: Duration) {
    let started = Instant::now();
    while gateway.stats().intake().received < count && started.elapsed() < timeout {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl DemoSummary {
    /// The closing lines for the person who ran the demo.
    pub fn describe(&self) -> String {
        let place = |dir: &Option<PathBuf>| {
            dir.as_deref()
                .map_or("(not a file sink)".to_owned(), display_path)
        };
        format!(
            "published {} readings; archived {}, alerts {}\narchive: {}\nalerts:  {}",
            self.published,
            self.archived,
            self.alerts,
            place(&self.archive_dir),
            place(&self.alerts_dir),
        )
    }
}

fn display_path(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_owned())
        .display()
        .to_string()
}
