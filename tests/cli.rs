//! The `rulegate` command line as users and scripts call it: `rule check`,
//! `rule test` (over real built modules), the `sql eval` contract that
//! external conformance checks rely on, and the `bench` load generator.

mod harness;

use harness::rule_module;
use serde_json::{Value, json};
use std::process::Command;

fn rulegate(args: &[&str]) -> std::process::Output {
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

#[test]
fn cli_rule_test_prints_each_output_as_a_json_line() {
    let module = rule_module("humidity-alert");
    let run = rulegate(&[
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
    ]);
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

#[test]
fn cli_bench_runs_every_scenario_through_mosquitto_without_loss() {
    let rules_dir = rule_module("humidity-alert");
    let rules_dir = rules_dir.parent().unwrap().to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
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
        "\"sql-republish\"/1/100",
        "\"wasm-alert\"/1/100",
        "\"file-archive\"/1/100",
        "\"sql-republish\"/10/100",
        "\"sql-republish\"/1000/100",
        "\"broker\"/0/10240",
        "\"wasm-alert\"/1/10240",
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
    }
}
