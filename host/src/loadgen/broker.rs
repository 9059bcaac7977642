//! The broker a load run goes through: a Mosquitto started for the run on a
//! free loopback port (stopped when dropped), or the gateway's embedded broker.

use anyhow::{Context, bail};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which broker carries the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// `mosquitto` from PATH or /usr/sbin.
    Mosquitto,
    /// rumqttd inside this process.
    Embedded,
}

/// A broker listening on loopback for the length of a run.
pub struct BenchBroker {
    pub port: u16,
    /// What it is, for the report: "mosquitto 2.0.11" or "embedded (rumqttd)".
    pub description: String,
    mosquitto: Option<Child>,
    _directory: tempfile::TempDir,
}

impl BenchBroker {
    pub fn start(kind: BrokerKind, max_payload_bytes: usize) -> anyhow::Result<BenchBroker> {
        let directory = tempfile::tempdir().context("creating a directory for the broker")?;
        let port = free_port()?;
        let (mosquitto, description) = match kind {
            BrokerKind::Mosquitto => {
                let program = mosquitto_program()?;
                // No cap on a subscriber's queue: a flat-out run measures
                // throughput, not the broker's policy of dropping for slow
                // readers. 1,000 unacknowledged messages in flight per client,
                // not 20: the gateway acknowledges a message once its outputs
                // are in the outbox (docs/scaling.md). TCP_NODELAY, or Nagle's
                // algorithm adds up to 40 ms.
                let config = format!(
                    "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 1000\nset_tcp_nodelay true\n"
                );
                let config_path = directory.path().join("mosquitto.conf");
                std::fs::write(&config_path, config).context("writing mosquitto.conf")?;
                let log = std::fs::File::create(directory.path().join("mosquitto.log"))?;
                let child = Command::new(&program)
                    .arg("-c")
                    .arg(&config_path)
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .with_context(|| format!("starting {}", program.display()))?;
                (Some(child), mosquitto_version(&program))
            }
            BrokerKind::Embedded => {
                crate::broker::start_embedded(
                    SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                    max_payload_bytes,
                )?;
                (None, "embedded (rumqttd)".to_owned())
            }
        };
        let broker = BenchBroker {
            port,
            description,
            mosquitto,
            _directory: directory,
        };
        broker.wait_until_listening()?;
        Ok(broker)
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Mosquitto's CPU time so far; `None` for the embedded broker, which
    /// shares this process.
    pub fn cpu_time(&self) -> Option<Duration> {
        super::cpu::process_cpu_time(Some(self.mosquitto.as_ref()?.id()))
    }

    fn wait_until_listening(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "the broker does not accept connections on port {}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for BenchBroker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.mosquitto {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn mosquitto_program() -> anyhow::Result<PathBuf> {
    let in_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("mosquitto"))
            .find(|candidate| candidate.is_file())
    });
    let packaged = Path::new("/usr/sbin/mosquitto");
    in_path
        .or_else(|| packaged.is_file().then(|| packaged.to_owned()))
        .context("mosquitto is not installed (apt-get install mosquitto), or use --broker embedded")
}

/// "mosquitto 2.0.11", from the first line of its help.
fn mosquitto_version(program: &Path) -> String {
    Command::new(program)
        .arg("-h")
        .output()
        .ok()
        .and_then(|output| {
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            let line = text.lines().next()?.to_owned();
            line.split_whitespace()
                .find(|word| word.starts_with(|c: char| c.is_ascii_digit()))
                .map(|version| format!("mosquitto {version}"))
        })
        .unwrap_or_else(|| "mosquitto".to_owned())
}
