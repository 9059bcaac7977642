//! The `rulegate` command line as users and scripts call it: `rule check`,
//! `rule test` (over real built modules), `rule compile` and the precompiled
//! artifacts it writes, the `sql eval` contract that external conformance checks
//! rely on, and the `bench` load generator.

mod harness;

use harness::rule_module;
use rulegate::loadgen::process_tree;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn rulegate(args: &[impl AsRef<std::ffi::OsStr>]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rulegate"))
        .args(args)
        .output()
        .expect("running rulegate")
}

#[test]
fn cli_rule_check_accepts_a_rule_and_names_a_bad_file() {
    let good = rule_module("passthrough");
    let accepted = rulegate(&["rule", "check", "--no-cache", good.to_str().unwrap()]);
    assert!(accepted.status.success(), "{accepted:?}");

    let bad = rule_module("wrong-world");
    let refused = rulegate(&["rule", "check", "--no-cache", bad.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("wrong_world.wasm") && stderr.contains("rulegate:rule@0.1.0"),
        "{stderr}"
    );
}

/// `rule test` of the humidity alert on a dry reading, plus `extra` arguments.
fn humidity_alert_test(module: &Path, extra: &[&str]) -> std::process::Output {
    let args = [
        "rule",
        "test",
        module.to_str().unwrap(),
        "--topic",
        "device/soilSensor2/devicePayload",
        "--payload",
        r#"{"name":"soilSensor2","humidity":32}"#,
        "--config",
        "threshold=35",
        "--no-cache",
    ];
    rulegate(&[&args[..], extra].concat())
}

#[test]
fn cli_rule_test_prints_each_output_as_a_json_line() {
    let run = humidity_alert_test(&rule_module("humidity-alert"), &[]);
    assert!(run.status.success(), "{run:?}");
    let stdout = String::from_utf8(run.stdout).unwrap();
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(
        lines,
        [json!({
            "type": "emit",
            "payload": "Humidity 32 under threshold for device name soilSensor2",
            "attributes": {"subject": "Attention:Humidity Under Threshold"},
        })]
    );
}

#[test]
fn cli_rule_test_survives_a_rule_that_prints_or_panics() {
    let hostile = rule_module("hostile");
    let hostile = hostile.to_str().unwrap();
    let attack = |name: &str| {
        let payload = format!(r#"{{"attack":"{name}"}}"#);
        rulegate(&[
            "rule",
            "test",
            hostile,
            "--topic",
            "t",
            "--payload",
            &payload,
            "--no-cache",
        ])
    };

    let printed = attack("print");
    assert!(printed.status.success(), "{printed:?}");
    let stdout = String::from_utf8_lossy(&printed.stdout);
    assert!(stdout.contains(r#""payload":"printed""#), "{stdout}");
    let stderr = String::from_utf8_lossy(&printed.stderr);
    assert!(stderr.contains("hostile rule writes to stderr"), "{stderr}");

    let panicked = attack("panic");
    assert_eq!(panicked.status.code(), Some(1), "{panicked:?}");
    let stderr = String::from_utf8_lossy(&panicked.stderr);
    assert!(
        stderr.contains("hostile rule panicked on purpose"),
        "{stderr}"
    );
    assert!(stderr.contains("rulegate: rule `test`"), "{stderr}");
}

/// `rule compile` of rule crate `name` into `dir`, with `extra` arguments.
fn compile_rule(name: &str, dir: &Path, extra: &[&str]) -> (PathBuf, std::process::Output) {
    let module = rule_module(name);
    let out = dir.join(format!("{name}.cwasm"));
    let args = [
        "rule",
        "compile",
        module.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let run = rulegate(&[&args[..], extra].concat());
    (out, run)
}

/// The architecture that is not this machine's, of the two rulegate builds for.
fn other_architecture() -> &'static str {
    if std::env::consts::ARCH == "aarch64" {
        "x86_64"
    } else {
        "aarch64"
    }
}

#[test]
fn cli_rule_test_of_a_precompiled_rule_prints_what_the_wasm_prints() {
    let dir = tempfile::tempdir().unwrap();
    let (artifact, compiled) = compile_rule("humidity-alert", dir.path(), &[]);
    assert!(compiled.status.success(), "{compiled:?}");
    let from_wasm = humidity_alert_test(&rule_module("humidity-alert"), &[]);
    // Another memory limit sizes the pool differently; the code does not change.
    let from_artifact = humidity_alert_test(&artifact, &["--memory-limit", "67108864"]);
    assert!(from_artifact.status.success(), "{from_artifact:?}");
    assert_eq!(
        String::from_utf8_lossy(&from_artifact.stdout),
        String::from_utf8_lossy(&from_wasm.stdout)
    );
    assert!(!from_wasm.stdout.is_empty());

    let checked = rulegate(&["rule", "check", artifact.to_str().unwrap()]);
    assert!(checked.status.success(), "{checked:?}");
}

#[test]
fn cli_refuses_an_artifact_compiled_for_the_other_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let other = other_architecture();
    let (artifact, compiled) = compile_rule("humidity-alert", dir.path(), &["--target", other]);
    assert!(compiled.status.success(), "{compiled:?}");
    let refused = humidity_alert_test(&artifact, &[]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let host = std::env::consts::ARCH;
    assert!(
        stderr.contains(&format!(
            "was precompiled for {other} but this gateway runs on {host}: \
             recompile it with `rulegate rule compile --target {host}`"
        )),
        "{stderr}"
    );
}

#[test]
fn cli_refuses_truncated_and_corrupted_artifacts_with_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (artifact, compiled) = compile_rule("humidity-alert", dir.path(), &[]);
    assert!(compiled.status.success(), "{compiled:?}");
    let sound = std::fs::read(&artifact).unwrap();
    let mut corrupted = sound.clone();
    // In the middle of the code: only the digest can tell.
    corrupted[sound.len() / 2] ^= 0x01;
    for (case, bytes) in [
        ("truncated", &sound[..sound.len() * 2 / 3]),
        ("corrupted", &corrupted[..]),
    ] {
        let path = dir.path().join(format!("{case}.cwasm"));
        std::fs::write(&path, bytes).unwrap();
        let refused = humidity_alert_test(&path, &[]);
        assert_eq!(refused.status.code(), Some(1), "{case}: {refused:?}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains(&format!("{case}.cwasm is a damaged precompiled artifact")),
            "{case}: {stderr}"
        );
    }
}

#[test]
fn cli_rule_compile_refuses_a_module_that_is_not_a_rule() {
    let dir = tempfile::tempdir().unwrap();
    let (artifact, refused) = compile_rule("wrong-world", dir.path(), &["--target", "aarch64"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("rulegate:rule@0.1.0"), "{stderr}");
    assert!(
        !artifact.exists(),
        "no artifact for a module that is not a rule"
    );
}

fn sql_eval(sql: &str, topic: &str, payload: &str) -> std::process::Output {
    rulegate(&[
        "sql",
        "eval",
        "--sql",
        sql,
        "--topic",
        topic,
        "--payload",
        payload,
    ])
}

#[test]
fn cli_sql_eval_prints_one_line_of_output_json() {
    let run = sql_eval(
        "SELECT humidity, topic(2) AS device FROM 'device/+/devicePayload' WHERE humidity < 35",
        "device/soilSensor2/devicePayload",
        r#"{"name":"soilSensor2","humidity":32}"#,
    );
    assert_eq!(run.status.code(), Some(0));
    let stdout = String::from_utf8(run.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let output: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(output, json!({"humidity": 32, "device": "soilSensor2"}));
}

#[test]
fn cli_sql_eval_prints_null_when_the_message_does_not_match() {
    let sql = "SELECT * FROM 'device/+/devicePayload' WHERE humidity < 35";
    for (topic, payload) in [
        ("device/s/devicePayload", r#"{"humidity":80}"#),
        ("other/s/devicePayload", r#"{"humidity":3}"#),
    ] {
        let run = sql_eval(sql, topic, payload);
        assert_eq!(run.status.code(), Some(0));
        assert_eq!(String::from_utf8(run.stdout).unwrap(), "null\n");
    }
}

#[test]
fn cli_sql_eval_exits_2_with_the_position_of_an_invalid_statement() {
    let run = sql_eval(
        "SELECT humidity FROM 'device/+' WHERE humidity <",
        "device/x",
        "{}",
    );
    assert_eq!(run.status.code(), Some(2));
    assert!(run.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("line 1, column"), "{stderr}");
}

/// The arguments of a short `rulegate bench` (50 small and 10 large readings
/// a run) that writes to `out`, with one peer.
fn short_bench(out: &Path, peer: &str) -> Vec<String> {
    let module = rule_module("humidity-alert");
    let rules_dir = module.parent().unwrap().to_str().unwrap();
    let out = out.to_str().unwrap();
    [
        "bench",
        "--messages",
        "50",
        "--large-messages",
        "10",
        "--rules-dir",
        rules_dir,
        "--out",
        out,
        "--peer",
        peer,
    ]
    .map(str::to_owned)
    .to_vec()
}

#[test]
fn cli_bench_names_a_peer_that_ends_before_it_alerts_and_quotes_its_output() {
    let out = tempfile::tempdir().unwrap();
    let run = rulegate(&short_bench(
        out.path(),
        "broken=echo cannot reach port $RULEGATE_BENCH_PORT; exit 3",
    ));
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    let stderr = String::from_utf8_lossy(&run.stderr);
    // The peer's output, with the broker's port it was given.
    let quoted = stderr
        .split_once("cannot reach port ")
        .map(|(_, rest)| rest.starts_with(|c: char| c.is_ascii_digit()));
    assert_eq!(quoted, Some(true), "{stderr}");
    assert!(
        stderr.contains(
            "peer `broken` ended (exit status: 3) before it alerted; the end of its output:"
        ),
        "{stderr}"
    );
}

#[test]
fn cli_bench_stopped_by_sigterm_stops_its_broker_and_peers() {
    let out = tempfile::tempdir().unwrap();
    let pid_file = out.path().join("peer.pid");
    // A peer that never alerts: the bench waits for it, with Mosquitto running.
    let peer = format!("hang=echo $$ > {}; exec sleep 600", pid_file.display());
    let mut bench = Command::new(env!("CARGO_BIN_EXE_rulegate"))
        .args(short_bench(&out.path().join("reports"), &peer))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting rulegate bench");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::fs::read_to_string(&pid_file).map_or(true, |pid| !pid.ends_with('\n')) {
        assert!(
            std::time::Instant::now() < deadline,
            "the peer never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // What the bench started: the tree less the bench itself.
    let started = process_tree(bench.id())[1..].to_vec();
    assert_eq!(started.len(), 2, "Mosquitto and the peer: {started:?}");

    harness::send_signal(bench.id(), "TERM");
    let status = bench.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut bench.stderr.take().unwrap(), &mut stderr).unwrap();
    let left: Vec<u32> = started.into_iter().filter(|pid| running(*pid)).collect();
    for &pid in &left {
        harness::send_signal(pid, "KILL");
    }
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bench stopped by a signal"), "{stderr}");
    assert!(left.is_empty(), "still running after the bench: {left:?}");
    assert!(!out.path().join("reports").exists(), "no report is written");
}

/// Whether process `pid` exists and has not ended (a zombie has).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses.
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

#[test]
fn cli_bench_runs_every_scenario_through_mosquitto_without_loss() {
    let module = rule_module("humidity-alert");
    let rules_dir = module.parent().unwrap().to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    // rulegate itself as a peer, from the template scripts/compare-peers.sh fills in.
    let peer_dir = tempfile::tempdir().unwrap();
    let template = std::fs::read_to_string(
        harness::repository_root().join("bench/peers/rulegate/gateway.toml"),
    )
    .unwrap()
    .replace("@MODULE@", module.to_str().unwrap())
    .replace("@CACHE@", peer_dir.path().join("cache").to_str().unwrap());
    let template_path = peer_dir.path().join("gateway.toml.in");
    std::fs::write(&template_path, template).unwrap();
    let peer = format!(
        "rulegate=sed \"s/@PORT@/$RULEGATE_BENCH_PORT/\" {} > gateway.toml && exec {} run --config gateway.toml",
        template_path.display(),
        env!("CARGO_BIN_EXE_rulegate"),
    );
    let run = rulegate(&[
        "bench",
        "--messages",
        "300",
        "--large-messages",
        "40",
        "--rules-dir",
        rules_dir,
        "--out",
        out.path().to_str().unwrap(),
        "--peer",
        &peer,
    ]);
    assert!(run.status.success(), "{run:?}");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("| stage | rules |"), "{stdout}");

    let json = std::fs::read_dir(out.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .expect("a JSON report");
    let report: Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    assert!(
        report["broker"].as_str().unwrap().starts_with("mosquitto"),
        "{report}"
    );
    let runs = report["runs"].as_array().unwrap();
    let described: Vec<String> = runs
        .iter()
        .map(|run| format!("{}/{}/{}", run["stage"], run["rules"], run["payload_bytes"]))
        .collect();
    for expected in [
        "\"broker\"/0/100",
        "\"relay\"/0/100",
        "\"sql-republish\"/1/100",
        "\"wasm-alert\"/1/100",
        "\"file-archive\"/1/100",
        "\"sql-republish\"/10/100",
        "\"sql-republish\"/1000/100",
        "\"broker\"/0/10240",
        "\"wasm-alert\"/1/10240",
        "\"peer:rulegate\"/1/100",
        "\"peer:rulegate\"/1/10240",
    ] {
        assert!(
            described.iter().any(|run| run == expected),
            "{expected} missing: {described:?}"
        );
    }
    for run in runs {
        assert_eq!(run["lost"], 0, "{run}");
        assert_eq!(run["duplicates"], 0, "{run}");
        assert!(run["per_second"].as_f64().unwrap() > 0.0, "{run}");
        // Only a peer, a process of its own, is measured apart from the load.
        let is_peer = run["stage"] == "peer:rulegate";
        assert_eq!(run["peer_cpu_us_per_message"].is_f64(), is_peer, "{run}");
        for memory in ["peer_idle_rss_mib", "peer_rss_mib"] {
            match run[memory].as_f64() {
                Some(mib) => assert!(is_peer && mib > 1.0 && mib < 500.0, "{run}"),
                None => assert!(!is_peer, "{run}"),
            }
        }
    }
    // Each hop at a set rate is set beside the broker alone at that rate.
    let paced_hops: Vec<_> = runs
        .iter()
        .filter(|run| !run["offered_rate"].is_null() && run["stage"] != "broker")
        .collect();
    assert_eq!(paced_hops.len(), 8, "{described:?}");
    for run in paced_hops {
        assert!(run["added_p99_ms"].is_f64(), "{run}");
    }
    // What Mosquitto, one thread, leaves a gateway like the relay, from each run
    // of it whose broker CPU time reached a clock tick (10 ms: not always in runs
    // this short).
    let ceilings = report["second_hop_ceilings"].as_array().unwrap();
    for ceiling in ceilings {
        assert!(
            [100, 10240].contains(&ceiling["payload_bytes"].as_u64().unwrap()),
            "{ceiling}"
        );
        let cpu = ceiling["broker_cpu_us_per_message"].as_f64().unwrap();
        let per_second = ceiling["per_second"].as_f64().unwrap();
        assert!((per_second * cpu - 1e6).abs() < 1.0, "{ceiling}");
        assert!(
            ceiling["ratio_to_broker"].as_f64().unwrap() > 0.0,
            "{ceiling}"
        );
    }
    assert_eq!(
        stdout.matches("\n- second hop, ").count(),
        ceilings.len(),
        "{stdout}"
    );
}
