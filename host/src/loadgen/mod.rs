//! `rulegate bench`: the end-to-end load generator. It starts a broker on
//! loopback, publishes soil readings through it, and measures what reaches a
//! subscriber: throughput, latency percentiles, loss. Each gateway scenario is
//! set beside the broker alone (publisher straight to subscriber) on the same
//! load in the same run, so every figure is also a ratio to that baseline.
//!
//! The gateway runs in this process, as does the load; on a small machine they
//! share its cores, as they would share them with the broker on a gateway box.

mod broker;
mod cpu;
mod peer;
mod relay;
mod traffic;

pub use broker::BrokerKind;
pub use cpu::{process_cpu_time, process_tree};
pub use peer::PeerCommand;

use crate::config::GatewayConfig;
use crate::gateway::Gateway;
use anyhow::Context;
use broker::BenchBroker;
use peer::{Peer, PeerUsage};
use relay::Relay;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use traffic::{Arrivals, OUTPUT_FILTER, Receiver, SendLog};

/// Payload sizes of the runs: about the reference reading, and 10 KB.
const SMALL_PAYLOAD: usize = 100;
const LARGE_PAYLOAD: usize = 10 * 1024;
/// Sensors the load cycles through when one rule takes all of it.
const SENSORS: usize = 100;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub broker: BrokerKind,
    /// Messages per run with the small payload.
    pub messages: usize,
    /// Messages per run with the 10 KB payload.
    pub large_messages: usize,
    /// Where `humidity_alert.wasm` is.
    pub rules_dir: PathBuf,
    /// Gateways in processes of their own, each run beside `wasm-alert`.
    pub peers: Vec<PeerCommand>,
    /// The command line, for the report.
    pub command: String,
}

/// What a run puts between publisher and subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The broker alone: the baseline.
    Broker,
    /// A plain MQTT client republishing each reading: the second hop through
    /// the broker alone, the ceiling for any gateway (see `relay.rs`).
    Relay,
    /// `SELECT *` republished by an `mqtt` action.
    SqlRepublish,
    /// `WHERE humidity < 35`, the humidity-alert Wasm rule, its alert republished.
    WasmAlert,
    /// `SELECT *` archived by a `file` action.
    FileArchive,
    /// `LoadOptions::peers[n]`: what `WasmAlert` does, in a process of its own.
    Peer(usize),
}

impl Stage {
    /// The rules a one-rule run of this stage loads: none without a gateway.
    fn single_rule(self) -> usize {
        match self {
            Stage::Broker | Stage::Relay => 0,
            _ => 1,
        }
    }

    /// Whether it adds a hop through the broker whose latency is measured.
    fn is_hop(self) -> bool {
        matches!(
            self,
            Stage::Relay | Stage::SqlRepublish | Stage::WasmAlert | Stage::Peer(_)
        )
    }

    /// Its name in the report: a peer by the name it was given.
    fn label(self, peers: &[PeerCommand]) -> String {
        match self {
            Stage::Broker => "broker".to_owned(),
            Stage::Relay => "relay".to_owned(),
            Stage::SqlRepublish => "sql-republish".to_owned(),
            Stage::WasmAlert => "wasm-alert".to_owned(),
            Stage::FileArchive => "file-archive".to_owned(),
            Stage::Peer(index) => format!("peer:{}", peers[index].name),
        }
    }
}

struct Scenario {
    stage: Stage,
    rules: usize,
    payload_bytes: usize,
    messages: usize,
    /// Messages per second; `None` is flat out.
    rate: Option<f64>,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    stage: String,
    rules: usize,
    payload_bytes: usize,
    /// Messages per second offered; `None` is flat out.
    offered_rate: Option<f64>,
    sent: usize,
    received: usize,
    duplicates: usize,
    lost: usize,
    seconds: f64,
    per_second: f64,
    /// Throughput relative to the broker alone on the same payload, flat out.
    ratio_to_broker: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    p999_ms: Option<f64>,
    /// The p99 less the broker alone's at the same offered rate: what the
    /// gateway adds.
    added_p99_ms: Option<f64>,
    /// The broker's CPU time per message received, in microseconds: a
    /// gateway between two MQTT hops makes the broker handle each twice.
    /// Known for Mosquitto, which runs in a process of its own.
    broker_cpu_us_per_message: Option<f64>,
    /// A peer's CPU time per message received, in microseconds.
    peer_cpu_us_per_message: Option<f64>,
    /// A peer's resident memory once ready, before the load, in MiB.
    peer_idle_rss_mib: Option<f64>,
    /// A peer's resident memory after the load, in MiB.
    peer_rss_mib: Option<f64>,
}

/// A whole benchmark: the machine and every run.
#[derive(Debug, Serialize)]
pub struct Report {
    command: String,
    rulegate: &'static str,
    broker: String,
    machine: Machine,
    runs: Vec<RunResult>,
    second_hop_ceilings: Vec<SecondHopCeiling>,
}

/// The most a gateway between two topics of a single-threaded broker
/// (Mosquitto) carries when its MQTT traffic costs the broker what the
/// relay's does: each reading crosses the broker twice, and one core is all
/// the broker can use. Derived from the relay's run.
#[derive(Debug, Serialize)]
struct SecondHopCeiling {
    payload_bytes: usize,
    /// The broker's CPU time per reading with the relay in the path, flat out.
    broker_cpu_us_per_message: f64,
    /// Readings per second a whole core allows at that cost.
    per_second: f64,
    /// `per_second` over what the broker alone carried flat out.
    ratio_to_broker: f64,
}

#[derive(Debug, Serialize)]
struct Machine {
    cpu: String,
    cores: usize,
    kernel: String,
    memory_kib: u64,
}

/// Runs every scenario flat out, then the relay and the one-rule gateways at
/// half of their own and of the broker's throughput, beside the broker alone
/// at the same rates.
pub async fn run(options: &LoadOptions) -> anyhow::Result<Report> {
    // The runs' configurations live in a temporary directory; a relative path
    // from the command line means the working directory.
    let rules_dir = std::path::absolute(&options.rules_dir)
        .with_context(|| format!("--rules-dir {}", options.rules_dir.display()))?;
    let broker = BenchBroker::start(options.broker, LARGE_PAYLOAD * 2)?;
    let work = tempfile::tempdir().context("creating a directory for the runs")?;
    let bench = Bench {
        broker: &broker,
        work: work.path(),
        rules_dir: &rules_dir,
        peers: &options.peers,
    };
    let flat = |stage, rules, payload_bytes, messages| Scenario {
        stage,
        rules,
        payload_bytes,
        messages,
        rate: None,
    };
    let (small, large) = (options.messages, options.large_messages);
    let peers = (0..options.peers.len()).map(Stage::Peer);
    let mut runs = Vec::new();
    let mut second_hop_ceilings = Vec::new();
    for (payload, messages, stages) in [
        (
            SMALL_PAYLOAD,
            small,
            [
                Stage::Relay,
                Stage::SqlRepublish,
                Stage::WasmAlert,
                Stage::FileArchive,
            ]
            .into_iter()
            .chain(peers.clone())
            .collect::<Vec<_>>(),
        ),
        (
            LARGE_PAYLOAD,
            large,
            [Stage::Relay, Stage::SqlRepublish, Stage::WasmAlert]
                .into_iter()
                .chain(peers.clone())
                .collect(),
        ),
    ] {
        let baseline = bench
            .run(&flat(Stage::Broker, 0, payload, messages))
            .await?;
        let base_rate = baseline.per_second;
        // Each stage's flat-out rate, for the latency runs below.
        let mut flat_out = vec![(Stage::Broker, base_rate)];
        runs.push(baseline);
        for stage in stages {
            let run = bench
                .run(&flat(stage, stage.single_rule(), payload, messages))
                .await?;
            flat_out.push((stage, run.per_second));
            if stage == Stage::Relay {
                second_hop_ceilings.extend(SecondHopCeiling::of(&run, base_rate));
            }
            runs.push(run.against(base_rate));
        }
        if payload == SMALL_PAYLOAD {
            for rules in [10, 1000] {
                let scenario = flat(Stage::SqlRepublish, rules, payload, messages);
                runs.push(bench.run(&scenario).await?.against(base_rate));
            }
            // Latency without queueing: the relay and each gateway stage at
            // half of what it carries flat out, beside the broker alone at the
            // same rate, so what the second hop and the gateway add is read at
            // the same load; and at half of the broker's rate, where a stage
            // slower than that queues.
            let at = |stage: Stage, rate: f64| Scenario {
                rate: Some(rate),
                ..flat(stage, stage.single_rule(), payload, messages)
            };
            let broker_at_half = bench.run(&at(Stage::Broker, base_rate / 2.0)).await?;
            let hop_stages = flat_out.into_iter().filter(|(stage, _)| stage.is_hop());
            let mut at_broker_half = Vec::new();
            for (stage, own_rate) in hop_stages {
                let broker = bench.run(&at(Stage::Broker, own_rate / 2.0)).await?;
                let hop = bench.run(&at(stage, own_rate / 2.0)).await?;
                runs.push(hop.beside(&broker));
                runs.push(broker);
                let hop = bench.run(&at(stage, base_rate / 2.0)).await?;
                at_broker_half.push(hop.beside(&broker_at_half));
            }
            runs.push(broker_at_half);
            runs.extend(at_broker_half);
        }
    }
    Ok(Report {
        command: options.command.clone(),
        rulegate: env!("CARGO_PKG_VERSION"),
        broker: broker.description.clone(),
        machine: Machine::describe(),
        runs,
        second_hop_ceilings,
    })
}

/// What every run shares.
struct Bench<'a> {
    broker: &'a BenchBroker,
    work: &'a Path,
    rules_dir: &'a Path,
    peers: &'a [PeerCommand],
}

impl Bench<'_> {
    async fn run(&self, scenario: &Scenario) -> anyhow::Result<RunResult> {
        tracing::info!(stage = ?scenario.stage, rules = scenario.rules, payload = scenario.payload_bytes, rate = ?scenario.rate, "run");
        let port = self.broker.port;
        let log = SendLog::new(scenario.messages);
        let gateway = match scenario.stage {
            Stage::Broker | Stage::Relay | Stage::Peer(_) => None,
            _ => Some(Gateway::start(self.gateway_config(scenario)?, None).await?),
        };
        let peer = match scenario.stage {
            Stage::Peer(index) => Some(Peer::start(&self.peers[index], port, self.work).await?),
            _ => None,
        };
        let relay = match scenario.stage {
            Stage::Relay => {
                Some(Relay::start(port, "device/+/devicePayload", scenario.payload_bytes).await?)
            }
            _ => None,
        };
        let output_filter = match scenario.stage {
            Stage::Broker => "device/+/devicePayload",
            _ => OUTPUT_FILTER,
        };
        let receiver = match scenario.stage {
            Stage::FileArchive => None,
            _ => Some(
                Receiver::subscribe(port, output_filter, scenario.payload_bytes, log.clone())
                    .await?,
            ),
        };
        let sensors = if scenario.rules > 1 {
            scenario.rules
        } else {
            SENSORS
        };
        let broker_cpu_before = self.broker.cpu_time();
        let started = Instant::now();
        traffic::publish(
            port,
            scenario.messages,
            sensors,
            scenario.rate.unwrap_or(0.0),
            scenario.payload_bytes,
            log,
        )
        .await?;
        let arrivals = match receiver {
            Some(receiver) => receiver.finish(scenario.messages).await,
            None => {
                let gateway = gateway
                    .as_ref()
                    .context("the file scenario runs a gateway")?;
                archived(gateway, scenario.messages).await
            }
        };
        let broker_cpu = self
            .broker
            .cpu_time()
            .zip(broker_cpu_before)
            .map(|(after, before)| after.saturating_sub(before));
        let peer_usage = peer.as_ref().map(Peer::usage_since_ready).transpose()?;
        drop(peer);
        if let Some(gateway) = gateway {
            gateway.shutdown().await?;
        }
        if let Some(relay) = relay {
            relay.stop();
        }
        Ok(RunResult::new(
            scenario,
            scenario.stage.label(self.peers),
            arrivals,
            started,
            broker_cpu,
            peer_usage,
        ))
    }

    fn gateway_config(&self, scenario: &Scenario) -> anyhow::Result<GatewayConfig> {
        // The outbox in the bench's own directory, not the user's state
        // directory, which a gateway or another bench may be using.
        let mut text = format!(
            "[gateway]\nstats_interval_secs = 0\nmax_payload_bytes = {}\nstate_dir = \"state\"\ncache_dir = \"cache\"\n\
             [broker]\nurl = \"{}\"\nclient_id = \"bench-gateway\"\nclean_session = true\n\
             [sinks.out]\ntype = \"mqtt\"\n\
             [sinks.archive]\ntype = \"file\"\ndirectory = \"archive\"\n",
            LARGE_PAYLOAD * 2,
            self.broker.url(),
        );
        for rule in 0..scenario.rules {
            let from = if scenario.rules > 1 {
                format!("device/s{rule}/devicePayload")
            } else {
                "device/+/devicePayload".to_owned()
            };
            let (sql, module, action) = match scenario.stage {
                Stage::WasmAlert => (
                    format!("SELECT * FROM '{from}' WHERE humidity < 35"),
                    format!(
                        "module = \"{}\"\n",
                        self.rules_dir.join("humidity_alert.wasm").display()
                    ),
                    "sink = \"out\"\ntopic = \"bench/out/alert\"",
                ),
                Stage::FileArchive => (
                    format!("SELECT * FROM '{from}'"),
                    String::new(),
                    "sink = \"archive\"\nkey = \"${name}\"",
                ),
                _ => (
                    format!("SELECT * FROM '{from}'"),
                    String::new(),
                    "sink = \"out\"\ntopic = \"bench/out/${topic(2)}\"",
                ),
            };
            write!(
                text,
                "[[rules]]\nname = \"rule-{rule}\"\nsql = \"{sql}\"\n{module}[[rules.actions]]\n{action}\n"
            )?;
        }
        // A fresh archive per run; the compiled-module cache is kept across runs.
        let _ = std::fs::remove_dir_all(self.work.join("archive"));
        GatewayConfig::parse(&text, Path::new("bench.toml"), self.work.to_owned())
            .context("the benchmark's own gateway configuration")
    }
}

/// Waits until the file sink wrote `expected` messages or stopped making progress.
async fn archived(gateway: &Gateway, expected: usize) -> Arrivals {
    let delivered = || -> u64 {
        gateway
            .sink_stats()
            .iter()
            .filter(|(name, _)| name == "archive")
            .map(|(_, stats)| stats.delivered)
            .sum()
    };
    let mut last = (0, Instant::now());
    loop {
        let count = delivered();
        if count as usize >= expected || last.1.elapsed() > traffic::QUIET_PERIOD {
            return Arrivals {
                received: count as usize,
                last: Some(last.1),
                ..Arrivals::default()
            };
        }
        if count != last.0 {
            last = (count, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

impl RunResult {
    fn new(
        scenario: &Scenario,
        stage: String,
        mut arrivals: Arrivals,
        started: Instant,
        broker_cpu: Option<Duration>,
        peer: Option<PeerUsage>,
    ) -> RunResult {
        let seconds = arrivals
            .last
            .map_or(0.0, |last| last.duration_since(started).as_secs_f64());
        let [p50, p99, p999] = percentiles(&mut arrivals.latencies)
            .map(|latency| latency.map(|latency| latency.as_secs_f64() * 1000.0));
        let per_message_us = |cpu: Duration| {
            (arrivals.received > 0).then(|| cpu.as_secs_f64() * 1e6 / arrivals.received as f64)
        };
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        RunResult {
            stage,
            rules: scenario.rules,
            payload_bytes: scenario.payload_bytes,
            offered_rate: scenario.rate,
            sent: scenario.messages,
            received: arrivals.received,
            duplicates: arrivals.duplicates,
            lost: scenario.messages.saturating_sub(arrivals.received),
            seconds,
            per_second: if seconds > 0.0 {
                arrivals.received as f64 / seconds
            } else {
                0.0
            },
            ratio_to_broker: None,
            p50_ms: p50,
            p99_ms: p99,
            p999_ms: p999,
            added_p99_ms: None,
            broker_cpu_us_per_message: broker_cpu.and_then(per_message_us),
            peer_cpu_us_per_message: peer.as_ref().and_then(|peer| per_message_us(peer.cpu)),
            peer_idle_rss_mib: peer.as_ref().map(|peer| mib(peer.idle_resident_bytes)),
            peer_rss_mib: peer.as_ref().map(|peer| mib(peer.resident_bytes)),
        }
    }

    fn against(mut self, broker_rate: f64) -> RunResult {
        self.ratio_to_broker = (broker_rate > 0.0).then(|| self.per_second / broker_rate);
        self
    }

    /// Sets what this run adds to the p99 of `broker`, a run of the broker
    /// alone at the same rate.
    fn beside(mut self, broker: &RunResult) -> RunResult {
        self.added_p99_ms = self
            .p99_ms
            .zip(broker.p99_ms)
            .map(|(own, broker)| own - broker);
        self
    }
}

impl SecondHopCeiling {
    /// The ceiling `relay`'s run shows, beside the broker alone's
    /// `broker_rate`; `None` where the broker's CPU time is not known (the
    /// embedded broker, which also runs on several threads).
    fn of(relay: &RunResult, broker_rate: f64) -> Option<SecondHopCeiling> {
        let cpu = relay.broker_cpu_us_per_message.filter(|cpu| *cpu > 0.0)?;
        let per_second = 1e6 / cpu;
        (broker_rate > 0.0).then(|| SecondHopCeiling {
            payload_bytes: relay.payload_bytes,
            broker_cpu_us_per_message: cpu,
            per_second,
            ratio_to_broker: per_second / broker_rate,
        })
    }
}

/// p50, p99 and p99.9 of `latencies` (sorted in place); `None` without any.
pub fn percentiles(latencies: &mut [Duration]) -> [Option<Duration>; 3] {
    latencies.sort_unstable();
    [0.50, 0.99, 0.999].map(|quantile| {
        let count = latencies.len();
        let rank = ((count as f64 * quantile).ceil() as usize).clamp(1, count.max(1));
        latencies.get(rank - 1).copied()
    })
}

impl Machine {
    fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |text: &str, name: &str| {
            text.lines()
                .find(|line| line.starts_with(name))
                .and_then(|line| line.split_once(':'))
                .map(|(_, value)| value.trim().to_owned())
        };
        Machine {
            cpu: field(&cpuinfo, "model name").unwrap_or_else(|| std::env::consts::ARCH.into()),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|text| text.trim().to_owned())
                .unwrap_or_default(),
            memory_kib: field(&meminfo, "MemTotal")
                .and_then(|value| value.trim_end_matches(" kB").parse().ok())
                .unwrap_or(0),
        }
    }
}

impl Report {
    /// The report as a markdown page.
    pub fn markdown(&self) -> String {
        let machine = &self.machine;
        let mut page = format!(
            "# rulegate bench\n\n- command: `{}`\n- rulegate {}, broker: {}\n- machine: {} ({} cores), \
             Linux {}, {} MiB\n\n",
            self.command,
            self.rulegate,
            self.broker,
            machine.cpu,
            machine.cores,
            machine.kernel,
            machine.memory_kib / 1024,
        );
        page.push_str(
            "| stage | rules | payload | load | sent | received | lost | dup | msg/s | × broker | p50 ms | p99 ms | p99.9 ms | added p99 ms | broker CPU µs/msg | peer CPU µs/msg | peer RSS MiB, idle → loaded |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        let number = |value: Option<f64>, digits: usize| {
            value.map_or_else(|| "–".to_owned(), |value| format!("{value:.digits$}"))
        };
        for run in &self.runs {
            let peer_rss = match (run.peer_idle_rss_mib, run.peer_rss_mib) {
                (Some(idle), Some(loaded)) => format!("{idle:.1} → {loaded:.1}"),
                _ => "–".to_owned(),
            };
            let _ = writeln!(
                page,
                "| {} | {} | {} B | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
                run.stage,
                run.rules,
                run.payload_bytes,
                run.offered_rate
                    .map_or_else(|| "flat out".to_owned(), |rate| format!("{rate:.0}/s")),
                run.sent,
                run.received,
                run.lost,
                run.duplicates,
                run.per_second,
                number(run.ratio_to_broker, 2),
                number(run.p50_ms, 3),
                number(run.p99_ms, 3),
                number(run.p999_ms, 3),
                number(run.added_p99_ms, 3),
                number(run.broker_cpu_us_per_message, 1),
                number(run.peer_cpu_us_per_message, 1),
                peer_rss,
            );
        }
        for ceiling in &self.second_hop_ceilings {
            let _ = write!(
                page,
                "\n- second hop, {} B: with the relay in the path the broker spent {:.1} µs of CPU a \
                 reading; at that cost one core, all a one-thread broker uses, carries {:.0} readings/s, \
                 {:.2} × the broker alone: the ceiling of a gateway whose MQTT traffic costs the broker \
                 what the relay's does.",
                ceiling.payload_bytes,
                ceiling.broker_cpu_us_per_message,
                ceiling.per_second,
                ceiling.ratio_to_broker,
            );
        }
        if !self.second_hop_ceilings.is_empty() {
            page.push('\n');
        }
        page
    }

    /// Writes `<stamp>.md` and `<stamp>.json` into `dir`; returns the markdown path.
    pub fn write(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace(':', "-");
        let markdown = dir.join(format!("{stamp}.md"));
        std::fs::write(&markdown, self.markdown())
            .with_context(|| format!("writing {}", markdown.display()))?;
        let json = dir.join(format!("{stamp}.json"));
        std::fs::write(&json, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", json.display()))?;
        Ok(markdown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flat-out relay run of 1,000 100-byte readings over one second.
    fn relay_run(broker_cpu: Option<Duration>) -> RunResult {
        let started = Instant::now();
        let arrivals = Arrivals {
            received: 1000,
            last: Some(started + Duration::from_secs(1)),
            ..Arrivals::default()
        };
        let scenario = Scenario {
            stage: Stage::Relay,
            rules: 0,
            payload_bytes: 100,
            messages: 1000,
            rate: None,
        };
        RunResult::new(
            &scenario,
            "relay".into(),
            arrivals,
            started,
            broker_cpu,
            None,
        )
    }

    #[test]
    fn the_second_hop_ceiling_is_a_whole_core_over_the_brokers_cost_per_relayed_reading() {
        // 16 ms of the broker's CPU for 1,000 readings: 16 µs each, 62,500 a second.
        let relay = relay_run(Some(Duration::from_millis(16)));
        let ceiling = SecondHopCeiling::of(&relay, 80_000.0).unwrap();
        assert_eq!(ceiling.payload_bytes, 100);
        assert!((ceiling.broker_cpu_us_per_message - 16.0).abs() < 1e-9);
        assert!((ceiling.per_second - 62_500.0).abs() < 1e-6);
        assert!((ceiling.ratio_to_broker - 0.78125).abs() < 1e-9);
        // The embedded broker's CPU time is not known: no ceiling.
        assert!(SecondHopCeiling::of(&relay_run(None), 80_000.0).is_none());
    }
}
