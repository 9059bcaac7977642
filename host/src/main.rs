//! The `rulegate` command: parses arguments and calls the library.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use rulegate::config::GatewayConfig;
use rulegate::demo::{self, DemoOptions};
use rulegate::deploy;
use rulegate::device_sim::{Device, DeviceOptions};
#[cfg(feature = "compiler")]
use rulegate::engine::CompileTarget;
use rulegate::engine::{EngineOptions, RuleConfig, RuleEngine, RuleLimits, unix_time_ms};
use rulegate::gateway::{self, Gateway};
use rulegate::loadgen::{self, BrokerKind, LoadOptions, PeerCommand};
use rulegate::message::Message;
use rulegate::mqtt::{BrokerEndpoint, MqttVersion};
use rulegate::ruleset::Trigger;
use rulegate::simulate::{self, SimulatorOptions};
use rulegate_sql::{MessageContext, Payload, Statement};
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

// The pipeline allocates a little for every message (its payload, the SQL
// selection, the outputs) on several threads; mimalloc does that with less
// CPU than glibc's allocator: about +30 % messages per CPU-second with the
// Wasm rule in `cargo bench -p rulegate --bench pipeline`.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "rulegate",
    version,
    about = "WebAssembly edge rule runtime for MQTT devices"
)]
struct Cli {
    /// Log filter, in `tracing` env-filter syntax (e.g. `info`, `rulegate=debug`)
    /// [default: `info` for `run`, `warn` otherwise; the embedded broker's own log
    /// is off unless named, e.g. `rumqttd=warn`; the AWS SDK logs at `info` at
    /// most unless named, e.g. `aws_smithy_runtime=debug`]
    #[arg(long, global = true, env = "RULEGATE_LOG")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a configuration file until SIGINT or SIGTERM;
    /// SIGHUP reloads the rules.
    Run {
        /// The gateway configuration (TOML); see gateway-config/.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// The soil-moisture demo: embedded broker, simulator, archive and alert rules.
    Demo {
        /// The demo's gateway configuration.
        #[arg(long, default_value = "gateway-config/demo.toml")]
        config: PathBuf,
        /// Stop after this many seconds instead of waiting for Ctrl-C.
        #[arg(long)]
        duration_secs: Option<u64>,
        #[command(flatten)]
        simulator: SimulatorArgs,
    },
    /// Simulate soil sensors publishing to a broker.
    Simulate {
        /// The broker to publish to.
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
        /// Stop after this many readings (default: until Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        simulator: SimulatorArgs,
    },
    /// Simulate a device that answers synchronous invocations until Ctrl-C.
    DeviceSim {
        /// The broker the device connects to.
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
        /// The device's client id; it takes requests on `<client id>/#`.
        #[arg(long, default_value = "Device001")]
        client_id: String,
        /// MQTT version: 3.1.1 answers on `<request topic>/ack`, 5 on the
        /// request's response topic with its correlation data.
        #[arg(long, default_value = "3.1.1", value_parser = parse_mqtt_version)]
        protocol: MqttVersion,
        /// Wait this long before answering, in milliseconds.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Take requests but never answer (to see timeouts).
        #[arg(long)]
        silent: bool,
    },
    /// Measure throughput, latency and loss end to end through a broker on
    /// loopback, beside the broker alone; writes a markdown and a JSON report.
    Bench {
        /// The broker the load goes through.
        #[arg(long, value_enum, default_value = "mosquitto")]
        broker: BrokerKind,
        /// Messages per run with the ~100-byte reading.
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        /// Messages per run with the 10 KB payload.
        #[arg(long, default_value_t = 5_000)]
        large_messages: usize,
        /// Where the built example rules are (`cargo build-rules`).
        #[arg(long, default_value = "rules/target/wasm32-wasip2/release")]
        rules_dir: PathBuf,
        /// Where the report goes.
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        /// A gateway in a process of its own, run beside the Wasm rule:
        /// `NAME=COMMAND`, run under `sh -c` with RULEGATE_BENCH_PORT set
        /// (see scripts/compare-peers.sh). Repeatable.
        #[arg(long = "peer", value_name = "NAME=COMMAND")]
        peers: Vec<PeerCommand>,
    },
    /// Upload a rule's module to a running gateway (its admin API), which
    /// checks it, keeps it across restarts and hot-loads it.
    Deploy {
        /// The gateway's admin API, e.g. `http://raspberrypi.local:9180`.
        #[arg(long)]
        gateway: String,
        /// The admin API's bearer token.
        #[arg(long, env = "RULEGATE_TOKEN", hide_env_values = true)]
        token: String,
        /// The rule whose module this is.
        #[arg(long)]
        rule: String,
        /// The rule's `.wasm` component.
        module: PathBuf,
    },
    /// Check and try out rule modules.
    #[command(subcommand)]
    Rule(RuleCommand),
    /// Evaluate AWS IoT SQL.
    #[command(subcommand)]
    Sql(SqlCommand),
}

#[derive(Subcommand)]
enum SqlCommand {
    /// Evaluate a statement on one message and print the output JSON, or `null`
    /// when the message does not match. An invalid statement exits with status 2.
    Eval {
        #[arg(long)]
        sql: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        payload: String,
        #[arg(long)]
        clientid: Option<String>,
    },
}

#[derive(Args)]
struct SimulatorArgs {
    /// Number of sensors, named soilSensor1..N.
    #[arg(long, default_value_t = 5)]
    sensors: usize,
    /// Readings per second over all sensors; 0 publishes flat out.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Seed for repeatable readings.
    #[arg(long)]
    seed: Option<u64>,
}

impl SimulatorArgs {
    fn options(&self, count: Option<u64>) -> SimulatorOptions {
        SimulatorOptions {
            sensors: self.sensors,
            rate: self.rate,
            count,
            seed: self.seed,
            ..SimulatorOptions::default()
        }
    }
}

#[derive(Subcommand)]
enum RuleCommand {
    /// Validate a rule module against the rulegate:rule world.
    Check {
        /// The rule's `.wasm` component, or a `.cwasm` from `rule compile`.
        module: PathBuf,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Run a rule once on one message and print each output as a JSON line.
    Test {
        /// The rule's `.wasm` component, or a `.cwasm` from `rule compile`.
        module: PathBuf,
        /// The topic the message arrived on.
        #[arg(long)]
        topic: String,
        /// The message payload (what the rule's SQL selected).
        #[arg(long)]
        payload: String,
        /// The publishing client's id.
        #[arg(long)]
        client_id: Option<String>,
        /// A configuration value for the rule; repeat for more.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config_entry)]
        config: Vec<(String, String)>,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Precompile a rule to native code for a gateway on this or another machine,
    /// which then loads it without compiling (a runtime-only build can load
    /// nothing else). The artifact is machine code that runs as it is: load only
    /// artifacts you built or trust.
    #[cfg(feature = "compiler")]
    Compile {
        /// The rule's `.wasm` component.
        module: PathBuf,
        /// `aarch64` (Raspberry Pi OS 64-bit), `x86_64`, or a full target triple
        /// [default: this machine's architecture]
        #[arg(long)]
        target: Option<CompileTarget>,
        /// Where the artifact goes [default: the module's path with `.cwasm`]
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Taken in a runtime-only build only to say where precompiling happens.
    #[cfg(not(feature = "compiler"))]
    #[command(hide = true)]
    Compile {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        _arguments: Vec<String>,
    },
}

#[derive(Args)]
struct CacheArgs {
    /// Directory for precompiled modules [default: $XDG_CACHE_HOME/rulegate]
    #[arg(long, env = "RULEGATE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile the module afresh and keep nothing on disk.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
}

impl CacheArgs {
    /// Options for an engine that runs one rule instance with `memory_bytes`
    /// of memory at most.
    fn engine_options(&self, memory_bytes: usize) -> EngineOptions {
        EngineOptions {
            cache_dir: if self.no_cache {
                None
            } else {
                self.cache_dir
                    .clone()
                    .or_else(EngineOptions::default_cache_dir)
            },
            max_instances: 1,
            max_memory_bytes: memory_bytes,
        }
    }
}

#[derive(Args)]
struct LimitArgs {
    /// Time limit of the call, in milliseconds.
    #[arg(long, default_value_t = RuleLimits::default().time_ms)]
    time_limit_ms: u64,
    /// Memory limit of the instance, in bytes.
    #[arg(long, default_value_t = RuleLimits::default().memory_bytes)]
    memory_limit: usize,
    /// Limit on the total size of the outputs, in bytes.
    #[arg(long, default_value_t = RuleLimits::default().output_bytes)]
    output_limit: usize,
}

fn parse_mqtt_version(text: &str) -> Result<MqttVersion, String> {
    match text {
        "3.1.1" => Ok(MqttVersion::V311),
        "5" => Ok(MqttVersion::V5),
        _ => Err(format!("`{text}` is not an MQTT version (3.1.1 or 5)")),
    }
}

fn parse_config_entry(entry: &str) -> Result<(String, String), String> {
    entry
        .split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("`{entry}` is not KEY=VALUE"))
}

/// `requested`, with the AWS SDK held at `info` unless it names the SDK
/// itself: at `debug` the SDK logs each request's credentials identity,
/// access key id included, and the log is no place for credentials.
fn log_filter(requested: &str) -> String {
    if requested.contains("aws") {
        requested.to_owned()
    } else {
        // A target directive matches every target it prefixes: aws_config,
        // aws_sdk_s3, aws_sigv4, aws_smithy_runtime, ...
        format!("{requested},aws=info")
    }
}

/// Exit status of `sql eval` for a statement that does not compile.
const INVALID_SQL: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Run { .. } => "info,rumqttd=off",
        _ => "warn,rumqttd=off",
    };
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(cli.log.as_deref().unwrap_or(default_log)))
        .with_writer(std::io::stderr)
        // Colours only on a terminal: not as escape codes in a journal or a file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(cli.command) {
        Ok(status) => status,
        Err(error) => {
            eprintln!("rulegate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn sql_eval(sql: &str, topic: &str, payload: &str, client_id: Option<&str>) -> ExitCode {
    let statement = match Statement::parse(sql) {
        Ok(statement) => statement,
        Err(error) => {
            eprintln!("rulegate: invalid SQL: {error}");
            return ExitCode::from(INVALID_SQL);
        }
    };
    let parsed = Payload::parse(payload.as_bytes());
    let mut message = MessageContext::new(topic, &parsed, payload.as_bytes());
    message.client_id = client_id;
    match statement.evaluate(&message) {
        Some(selected) => println!("{}", selected.to_json_line(&message)),
        None => println!("null"),
    }
    ExitCode::SUCCESS
}

/// Runs `command` on a tokio runtime; `run` on the one its configuration
/// asks for (`gateway.worker_threads`).
fn run(command: Command) -> anyhow::Result<ExitCode> {
    let gateway_config = match &command {
        Command::Run { config } => Some(GatewayConfig::load(config)?),
        _ => None,
    };
    let threads = gateway_config
        .as_ref()
        .and_then(|config| config.gateway.worker_threads);
    let runtime = gateway::runtime(threads).context("starting the tokio runtime")?;
    match gateway_config {
        Some(config) => runtime
            .block_on(run_gateway(config))
            .map(|()| ExitCode::SUCCESS),
        None => runtime.block_on(run_tool(command)),
    }
}

/// `rulegate run`: the gateway, until SIGTERM or Ctrl-C; SIGHUP reloads its rules.
async fn run_gateway(config: GatewayConfig) -> anyhow::Result<()> {
    let gateway = Gateway::start(config, None).await?;
    let rules = gateway.rules().clone();
    let mut hangups = signal(SignalKind::hangup())?;
    let reloads = tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            // The outcome is logged and recorded by the rule set.
            let _ = rules.reload(Trigger::Signal).await;
        }
    });
    shutdown_signal().await?;
    reloads.abort();
    tracing::info!("shutting down: draining in-flight messages");
    gateway.shutdown().await?;
    Ok(())
}

/// Every command but `run`.
async fn run_tool(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { .. } => unreachable!("`run` starts its own runtime"),
        Command::Demo {
            config,
            duration_secs,
            simulator,
        } => {
            let summary = demo::run(DemoOptions {
                config,
                simulator: simulator.options(None),
                duration: duration_secs.map(Duration::from_secs),
            })
            .await?;
            println!("{}", summary.describe());
        }
        Command::Simulate {
            broker,
            count,
            simulator,
        } => {
            let endpoint = BrokerEndpoint::from_url(&broker, "rulegate-simulator")?;
            let (stop, stopped) = watch::channel(false);
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                let _ = stop.send(true);
            });
            let published = simulate::run(&endpoint, &simulator.options(count), stopped).await?;
            println!("published {published} readings to {broker}");
        }
        Command::DeviceSim {
            broker,
            client_id,
            protocol,
            delay_ms,
            silent,
        } => {
            let endpoint = BrokerEndpoint::from_url(&broker, &client_id)?.with_version(protocol);
            let mut device = Device::start(
                &endpoint,
                DeviceOptions {
                    client_id: client_id.clone(),
                    delay: Duration::from_millis(delay_ms),
                    answers: !silent,
                },
            );
            device.ready().await;
            eprintln!("{client_id}: waiting for requests on {client_id}/# at {broker}");
            shutdown_signal().await?;
            let stats = device.stop().await;
            println!(
                "{client_id}: {} requests, {} answered",
                stats.requests, stats.answered
            );
        }
        Command::Bench {
            broker,
            messages,
            large_messages,
            rules_dir,
            out,
            peers,
        } => {
            let options = LoadOptions {
                broker,
                messages,
                large_messages,
                rules_dir,
                peers,
                command: std::env::args().collect::<Vec<_>>().join(" "),
            };
            // Stopping the run drops what it started: its Mosquitto and peers
            // end with it instead of outliving a `kill` or a CI timeout.
            let report = tokio::select! {
                report = loadgen::run(&options) => report?,
                stopped = shutdown_signal() => {
                    stopped?;
                    anyhow::bail!("bench stopped by a signal; its broker and peers are stopped, no report written");
                }
            };
            print!("{}", report.markdown());
            println!("\nwritten to {}", report.write(&out)?.display());
        }
        Command::Deploy {
            gateway,
            token,
            rule,
            module,
        } => {
            let deployed = deploy::deploy(&gateway, &token, &rule, &module).await?;
            println!(
                "{}: version {} serving (module blake3 {})",
                deployed.rule, deployed.version, deployed.module_hash
            );
        }
        Command::Sql(SqlCommand::Eval {
            sql,
            topic,
            payload,
            clientid,
        }) => {
            return Ok(sql_eval(&sql, &topic, &payload, clientid.as_deref()));
        }
        Command::Rule(RuleCommand::Check { module, cache }) => {
            let engine = RuleEngine::new(cache.engine_options(RuleLimits::default().memory_bytes))?;
            let loaded = engine.load_file(&module)?;
            println!(
                "{}: ok (rulegate:rule@0.1.0, blake3 {})",
                module.display(),
                loaded.hash()
            );
        }
        Command::Rule(RuleCommand::Test {
            module,
            topic,
            payload,
            client_id,
            config,
            limits,
            cache,
        }) => {
            // The rule's stdout and stderr are WASI streams that block on a
            // runtime, which a thread of this one must not do: run it beside.
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                let limits = RuleLimits {
                    time_ms: limits.time_limit_ms,
                    memory_bytes: limits.memory_limit,
                    output_bytes: limits.output_limit,
                };
                let engine = RuleEngine::new(cache.engine_options(limits.memory_bytes))?;
                let config: RuleConfig = config.into_iter().collect();
                let mut instance = engine
                    .load_file(&module)?
                    .instantiate("test", config, limits)?;
                let message = Message {
                    topic,
                    payload: payload.into_bytes(),
                    client_id,
                    received_at_ms: unix_time_ms(),
                    ..Message::default()
                };
                let outputs = instance.on_message(&message)?;
                for output in outputs {
                    println!("{}", output.to_json());
                }
                Ok(())
            })
            .await??;
        }
        #[cfg(feature = "compiler")]
        Command::Rule(RuleCommand::Compile {
            module,
            target,
            out,
        }) => rule_compile(&module, target.unwrap_or_else(CompileTarget::host), out)?,
        #[cfg(not(feature = "compiler"))]
        Command::Rule(RuleCommand::Compile { .. }) => anyhow::bail!(
            "`rule compile` needs the compiler, and this rulegate was built without it (runtime \
             only): precompile the rule with a full build of the same rulegate version, e.g. \
             `rulegate rule compile --target aarch64 rule.wasm` on your laptop"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `rule compile`: precompiles `module` for `target` and writes the artifact.
#[cfg(feature = "compiler")]
fn rule_compile(
    module: &std::path::Path,
    target: CompileTarget,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let out = out.unwrap_or_else(|| module.with_extension("cwasm"));
    let bytes = std::fs::read(module)
        .with_context(|| format!("reading rule module {}", module.display()))?;
    let engine = RuleEngine::new(EngineOptions {
        max_instances: 1,
        ..EngineOptions::default()
    })?;
    let artifact = engine.precompile(module, &bytes, &target)?;
    std::fs::write(&out, &artifact)
        .with_context(|| format!("writing the precompiled rule to {}", out.display()))?;
    println!(
        "{}: {} bytes of native code for {}",
        out.display(),
        artifact.len(),
        target.triple()
    );
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (systemd, docker stop).
async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
