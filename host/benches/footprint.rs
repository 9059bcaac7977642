//! The gateway process's footprint, through a real Mosquitto: time from start
//! to ready (subscribed) with 10 Wasm rules whose modules are precompiled (in
//! the artifact cache), the idle resident memory with those 10 rules, and the
//! resident memory each additional SQL-only rule costs (1 rule against 10,000).
//! Each figure is the median of a few starts of the `rulegate` binary: the
//! one cargo built for the bench, or the one `RULEGATE_BIN` names (e.g. the
//! `dist` build that goes on a device).
//!
//! Resident memory is reported whole and split into the process's own
//! (anonymous) memory and the pages of the binary and libraries it maps. The
//! latter are clean, shared and reclaimable, and how many count depends on the
//! page cache: the kernel maps cached neighbours of each page touched.
//!
//! Run with `cargo bench -p rulegate --bench footprint`.

#[path = "../../tests/harness/mod.rs"]
mod harness;

use harness::mosquitto::Mosquitto;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STARTS: usize = 5;
/// How long a started gateway idles before its memory is read.
const SETTLE: Duration = Duration::from_secs(1);

/// `count` rules reading their own topic; with `module`, each runs it.
fn config(broker: &str, count: usize, module: Option<&Path>) -> String {
    let mut text = format!(
        "[gateway]\ncache_dir = \"cache\"\nstate_dir = \"state\"\nstats_interval_secs = 0\n\
         [broker]\nurl = \"{broker}\"\nclean_session = true\n[sinks.out]\ntype = \"mqtt\"\n"
    );
    for rule in 0..count {
        let _ = write!(
            text,
            "[[rules]]\nname = \"rule-{rule}\"\nsql = \"SELECT * FROM 'device/{rule}/devicePayload' WHERE humidity < 35\"\n"
        );
        if let Some(module) = module {
            let _ = writeln!(text, "module = \"{}\"", module.display());
        }
        let _ = write!(
            text,
            "[[rules.actions]]\nsink = \"out\"\ntopic = \"out/{rule}\"\n"
        );
    }
    text
}

/// A started gateway, and how long it took to say it was ready.
struct Started {
    child: Child,
    ready_after: Duration,
}

fn gateway_binary() -> PathBuf {
    std::env::var_os("RULEGATE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_rulegate")),
        PathBuf::from,
    )
}

fn start(config: &Path) -> Started {
    let started = Instant::now();
    let mut child = Command::new(gateway_binary())
        .args(["run", "--config"])
        .arg(config)
        .env("RULEGATE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting rulegate");
    let stderr = child.stderr.take().expect("the gateway's log");
    let mut lines = BufReader::new(stderr).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.contains("gateway ready"));
    let ready_after = started.elapsed();
    assert!(ready, "the gateway never said it was ready");
    // Keep draining the log so the gateway never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Started { child, ready_after }
}

/// Resident memory of a process, in KiB.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Resident {
    total: u64,
    /// The process's own memory: heap, stacks, Wasm instances. The rest is
    /// mapped pages of the binary and libraries (and shared memory).
    anonymous: u64,
}

impl Resident {
    fn of(child: &Child) -> Resident {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
            .expect("reading the gateway's /proc status");
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} line in /proc status"))
        };
        Resident {
            total: field("VmRSS:"),
            anonymous: field("RssAnon:"),
        }
    }

    fn describe(self) -> String {
        format!(
            "{:.1} MiB ({:.1} MB): own {:.1} MiB, mapped binary and libraries {:.1} MiB",
            mib(self.total),
            self.total as f64 * 1024.0 / 1e6,
            mib(self.anonymous),
            mib(self.total - self.anonymous),
        )
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn stop(mut started: Started) {
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", started.child.id())])
        .status();
    let _ = started.child.wait();
}

/// Median start-to-ready time and idle RSS over [`STARTS`] starts.
fn measure(config: &Path) -> (Duration, Resident) {
    let mut ready = Vec::new();
    let mut resident = Vec::new();
    for _ in 0..STARTS {
        let started = start(config);
        std::thread::sleep(SETTLE);
        ready.push(started.ready_after);
        resident.push(Resident::of(&started.child));
        stop(started);
    }
    ready.sort();
    resident.sort();
    (ready[STARTS / 2], resident[STARTS / 2])
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that names another bench skips this one.
    if std::env::args()
        .skip(1)
        .any(|arg| !arg.starts_with('-') && !"footprint".contains(&arg))
    {
        return;
    }
    let mosquitto = Mosquitto::start();
    let dir = tempfile::tempdir().expect("a directory");
    let module = harness::rule_module("humidity-alert");
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("writing a configuration");
        path
    };
    let wasm10 = write("wasm-10.toml", config(&mosquitto.url(), 10, Some(&module)));
    let sql1 = write("sql-1.toml", config(&mosquitto.url(), 1, None));
    let sql10k = write("sql-10000.toml", config(&mosquitto.url(), 10_000, None));

    // A first start compiles the module into the artifact cache.
    stop(start(&wasm10));
    let (wasm_ready, wasm_resident) = measure(&wasm10);
    let (_, one_resident) = measure(&sql1);
    let (many_ready, many_resident) = measure(&sql10k);
    let per_rule =
        (many_resident.total.saturating_sub(one_resident.total)) as f64 * 1024.0 / 9_999.0;

    println!("binary: {}\n", gateway_binary().display());

    println!("| measure | result | goal |");
    println!("| --- | --- | --- |");
    println!(
        "| start to ready, 10 Wasm rules, precompiled | {:.1} ms | < 100 ms |",
        wasm_ready.as_secs_f64() * 1e3
    );
    println!(
        "| idle RSS, 10 Wasm rules | {} | < 20 MB |",
        wasm_resident.describe()
    );
    println!("| idle RSS, 1 SQL rule | {} | – |", one_resident.describe());
    println!(
        "| idle RSS, 10,000 SQL rules (ready after {:.0} ms) | {} | – |",
        many_ready.as_secs_f64() * 1e3,
        many_resident.describe()
    );
    println!(
        "| RSS per additional SQL rule | {:.1} KiB | < 20 KB |",
        per_rule / 1024.0
    );
}
