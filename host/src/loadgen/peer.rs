//! A gateway in a process of its own in the load's path — another engine
//! (Node-RED, say) or rulegate itself — so that engines are set side by side on
//! the same load, broker and machine: `rulegate bench --peer NAME=COMMAND`.
//!
//! The contract: the command runs under `sh -c` in an empty directory of its
//! own, with `RULEGATE_BENCH_PORT` set to the broker's port. It subscribes to
//! `device/+/devicePayload` and, for each reading with `humidity < 35`,
//! publishes an alert under `bench/out/` whose payload holds the reading's
//! `name` — what the `wasm-alert` stage does. It is ready once it answers a
//! probe reading; it is killed, with every process it started, after its run.

use super::cpu::{TreeUsage, process_tree, process_tree_usage};
use super::traffic::{OUTPUT_FILTER, unique_id};
use crate::simulate::{reading_payload, reading_topic};
use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The name of the probe readings, which no load reading has: the receiver
/// finds no sequence number in their alerts.
const PROBE_NAME: &str = "bench-probe";
/// How often a probe reading is sent while the peer starts.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// How long a peer may take to answer its first probe.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The file in a peer's directory that takes its output.
const LOG_FILE: &str = "peer.log";
/// The lines of a peer's output that an error quotes.
const LOG_LINES_QUOTED: usize = 20;

/// A peer as given on the command line: `NAME=COMMAND`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCommand {
    pub name: String,
    pub command: String,
}

impl FromStr for PeerCommand {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, command) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}` is not NAME=COMMAND"))?;
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!(
                "peer name `{name}`: letters, digits and `-` only, at least one"
            ));
        }
        if command.trim().is_empty() {
            return Err(format!("peer `{name}` has no command"));
        }
        Ok(PeerCommand {
            name: name.to_owned(),
            command: command.to_owned(),
        })
    }
}

/// A started peer, alerting.
pub struct Peer {
    name: String,
    child: Child,
    /// Its working directory, which holds its log; removed after the peer
    /// is killed (fields drop after `Drop::drop`).
    directory: tempfile::TempDir,
    /// Its usage once ready, before the load.
    idle: TreeUsage,
}

/// What a peer used for one run.
pub struct PeerUsage {
    /// CPU time spent on the run's load.
    pub cpu: Duration,
    /// Resident memory once ready, before the load.
    pub idle_resident_bytes: u64,
    /// Resident memory after the load.
    pub resident_bytes: u64,
}

impl Peer {
    /// Starts `peer` in a new directory under `work`, against the broker on
    /// `port`, and returns once it has answered a probe. Each start has a
    /// directory of its own, so that nothing a run left (a store of outputs
    /// still to deliver) reaches the next.
    pub async fn start(peer: &PeerCommand, port: u16, work: &Path) -> anyhow::Result<Peer> {
        let directory = tempfile::tempdir_in(work).context("creating a directory for a peer")?;
        let log = directory.path().join(LOG_FILE);
        let output =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(&peer.command)
            .current_dir(directory.path())
            .env("RULEGATE_BENCH_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .with_context(|| format!("starting peer `{}`: sh -c {:?}", peer.name, peer.command))?;
        let mut started = Peer {
            name: peer.name.clone(),
            child,
            directory,
            idle: TreeUsage {
                cpu: Duration::ZERO,
                resident_bytes: 0,
            },
        };
        // Dropping `started` on an error kills it.
        started.wait_until_alerting(port).await?;
        started.idle = started.usage()?;
        Ok(started)
    }

    /// Its usage since it became ready; the peer keeps running.
    pub fn usage_since_ready(&self) -> anyhow::Result<PeerUsage> {
        let now = self.usage()?;
        Ok(PeerUsage {
            cpu: now.cpu.saturating_sub(self.idle.cpu),
            idle_resident_bytes: self.idle.resident_bytes,
            resident_bytes: now.resident_bytes,
        })
    }

    fn usage(&self) -> anyhow::Result<TreeUsage> {
        process_tree_usage(self.child.id())
            .with_context(|| format!("peer `{}` has ended: nothing to measure", self.name))
    }

    /// Publishes a probe reading every [`PROBE_INTERVAL`] until its alert
    /// comes back.
    async fn wait_until_alerting(&mut self, port: u16) -> anyhow::Result<()> {
        let options = MqttOptions::new(unique_id("bench-probe"), "127.0.0.1", port);
        let (client, mut events) = AsyncClient::new(options, 16);
        events.set_network_options(crate::mqtt::network_options());
        client.subscribe(OUTPUT_FILTER, QoS::AtLeastOnce).await?;
        let topic = reading_topic("probe");
        let probe = reading_payload(PROBE_NAME, 0, 0);
        let deadline = Instant::now() + START_TIMEOUT;
        let mut ticks = tokio::time::interval(PROBE_INTERVAL);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    if let Some(status) = self.child.try_wait()? {
                        bail!("peer `{}` ended ({status}) before it alerted{}", self.name, self.log_tail());
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "peer `{}` did not alert on a probe reading within {} s{}",
                            self.name, START_TIMEOUT.as_secs(), self.log_tail()
                        );
                    }
                    client.publish(&topic, QoS::AtLeastOnce, false, probe.clone()).await?;
                }
                event = events.poll() => {
                    if let Event::Incoming(Packet::Publish(alert)) =
                        event.context("the probe's connection to the broker")?
                        && alert.payload.windows(PROBE_NAME.len()).any(|window| window == PROBE_NAME.as_bytes())
                    {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// The last lines of the peer's output, for an error: its directory, and
    /// the log in it, go when the peer is dropped.
    fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.directory.path().join(LOG_FILE)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_LINES_QUOTED)..].join("\n");
        if tail.is_empty() {
            " (it printed nothing)".to_owned()
        } else {
            format!("; the end of its output:\n{tail}")
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // The whole tree: a command that did not `exec` leaves the peer as
        // its shell's child.
        let tree = process_tree(self.child.id());
        if !tree.is_empty() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .args(tree.iter().map(u32::to_string))
                .status();
        }
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_a_name_and_a_command() {
        let peer: PeerCommand = "node-red=exec node red.js --settings s.js".parse().unwrap();
        assert_eq!(peer.name, "node-red");
        assert_eq!(peer.command, "exec node red.js --settings s.js");
        // The command may hold `=` itself.
        let peer: PeerCommand = "rg=A=1 exec rulegate run".parse().unwrap();
        assert_eq!(
            (peer.name.as_str(), peer.command.as_str()),
            ("rg", "A=1 exec rulegate run")
        );
        for bad in ["node-red", "=exec node", "node red=exec node", "peer=  "] {
            assert!(bad.parse::<PeerCommand>().is_err(), "{bad}");
        }
    }
}
