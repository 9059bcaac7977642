//! The `rulegate` command: parses arguments and calls the library.

use clap::{Args, Parser, Subcommand};
use rulegate::engine::{EngineOptions, RuleConfig, RuleEngine, RuleLimits, unix_time_ms};
use rulegate::message::Message;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "rulegate",
    version,
    about = "WebAssembly edge rule runtime for MQTT devices"
)]
struct Cli {
    /// Log filter, in `tracing` env-filter syntax (e.g. `info`, `rulegate=debug`).
    #[arg(long, global = true, env = "RULEGATE_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check and try out rule modules.
    #[command(subcommand)]
    Rule(RuleCommand),
}

#[derive(Subcommand)]
enum RuleCommand {
    /// Validate a rule module against the rulegate:rule world.
    Check {
        /// The rule's `.wasm` component.
        module: PathBuf,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Run a rule once on one message and print each output as a JSON line.
    Test {
        /// The rule's `.wasm` component.
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
    fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            cache_dir: if self.no_cache {
                None
            } else {
                self.cache_dir
                    .clone()
                    .or_else(EngineOptions::default_cache_dir)
            },
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

fn parse_config_entry(entry: &str) -> Result<(String, String), String> {
    entry
        .split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("`{entry}` is not KEY=VALUE"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(&cli.log)
        .with_writer(std::io::stderr)
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rulegate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Rule(RuleCommand::Check { module, cache }) => {
            let engine = RuleEngine::new(cache.engine_options())?;
            let loaded = engine.load_file(&module)?;
            println!(
                "{}: ok (rulegate:rule@0.1.0, blake3 {})",
                module.display(),
                loaded.hash()
            );
            Ok(())
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
            let engine = RuleEngine::new(cache.engine_options())?;
            let limits = RuleLimits {
                time_ms: limits.time_limit_ms,
                memory_bytes: limits.memory_limit,
                output_bytes: limits.output_limit,
            };
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
        }
    }
}
