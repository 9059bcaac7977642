//! The Wasm rule engine over real modules built from `rules/`: the example
//! rules behave as documented, hostile modules hit their limits, and the engine
//! serves normally afterwards.

mod harness;

use harness::rule_module;
use rulegate::engine::{
    EngineOptions, LoadError, RuleConfig, RuleEngine, RuleInstance, RuleLimits, RunErrorKind,
};
use rulegate::message::{Message, Output};
use serde_json::{Value, json};
use std::path::Path;

const REFERENCE_PAYLOAD: &str = r#"{"name":"soilSensor3","humidity":29,"timeStampEpoch":1598536072677,"timeStampIso":"2020-08-27T13:47:52.677721"}"#;

fn engine() -> RuleEngine {
    RuleEngine::new(EngineOptions::default()).expect("creating the rule engine")
}

fn instance_with(name: &str, config: &[(&str, &str)], limits: RuleLimits) -> RuleInstance {
    let config: RuleConfig = config
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    engine()
        .load_file(&rule_module(name))
        .expect("loading the rule")
        .instantiate(name, config, limits)
        .expect("starting the rule")
}

fn instance(name: &str) -> RuleInstance {
    instance_with(name, &[], RuleLimits::default())
}

fn message(topic: &str, payload: impl Into<Vec<u8>>) -> Message {
    Message {
        topic: topic.into(),
        payload: payload.into(),
        ..Message::default()
    }
}

fn emitted_text(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .map(|output| match output {
            Output::Emit { payload, .. } => String::from_utf8_lossy(payload).into_owned(),
            other => panic!("expected an emit, got {other:?}"),
        })
        .collect()
}

fn reading(name: &str, humidity: impl Into<Value>) -> Vec<u8> {
    let humidity: Value = humidity.into();
    json!({"name": name, "humidity": humidity, "timeStampEpoch": 1598536072677u64})
        .to_string()
        .into_bytes()
}

#[test]
fn humidity_alert_body_and_subject_match_reference_text() {
    let mut rule = instance("humidity-alert");
    let outputs = rule
        .on_message(&message(
            "device/soilSensor2/devicePayload",
            reading("soilSensor2", 32),
        ))
        .unwrap();
    assert_eq!(
        emitted_text(&outputs),
        ["Humidity 32 under threshold for device name soilSensor2"]
    );
    assert_eq!(
        outputs[0].attribute("subject"),
        Some("Attention:Humidity Under Threshold")
    );
}

#[test]
fn humidity_alert_keeps_decimal_readings_as_sent() {
    let mut rule = instance("humidity-alert");
    let outputs = rule
        .on_message(&message("device/s/devicePayload", reading("s", 12.5)))
        .unwrap();
    assert_eq!(
        emitted_text(&outputs),
        ["Humidity 12.5 under threshold for device name s"]
    );
}

#[test]
fn humidity_alert_is_silent_at_or_above_default_threshold_of_35() {
    let mut rule = instance("humidity-alert");
    for humidity in [35, 36, 90] {
        let outputs = rule
            .on_message(&message("device/s/devicePayload", reading("s", humidity)))
            .unwrap();
        assert!(
            outputs.is_empty(),
            "humidity {humidity} alerted: {outputs:?}"
        );
    }
    let below = rule
        .on_message(&message("device/s/devicePayload", reading("s", 34)))
        .unwrap();
    assert_eq!(below.len(), 1);
}

#[test]
fn humidity_alert_threshold_comes_from_config() {
    let mut rule = instance_with(
        "humidity-alert",
        &[("threshold", "50")],
        RuleLimits::default(),
    );
    let outputs = rule
        .on_message(&message("device/s/devicePayload", reading("s", 40)))
        .unwrap();
    assert_eq!(
        emitted_text(&outputs),
        ["Humidity 40 under threshold for device name s"]
    );
}

#[test]
fn humidity_alert_refuses_to_start_with_a_bad_threshold() {
    let module = engine().load_file(&rule_module("humidity-alert")).unwrap();
    let config = RuleConfig::from([("threshold".to_string(), "low".to_string())]);
    let error = module
        .instantiate("soil-alert", config, RuleLimits::default())
        .err()
        .expect("a non-numeric threshold must stop the rule");
    let text = error.to_string();
    assert!(matches!(error, LoadError::Init { .. }), "{text}");
    assert!(
        text.contains("soil-alert") && text.contains("`threshold` = `low`"),
        "{text}"
    );
}

#[test]
fn malformed_payload_is_rejected_and_the_next_message_served() {
    let mut rule = instance("humidity-alert");
    let error = rule
        .on_message(&message("device/s/devicePayload", "{not json"))
        .unwrap_err();
    assert!(
        matches!(error.kind, RunErrorKind::InvalidMessage(_)),
        "{error}"
    );
    assert!(
        error.to_string().contains("device/s/devicePayload"),
        "{error}"
    );
    let outputs = rule
        .on_message(&message("device/s/devicePayload", reading("s", 3)))
        .unwrap();
    assert_eq!(outputs.len(), 1);
}

#[test]
fn passthrough_emits_the_payload_unchanged() {
    let mut rule = instance("passthrough");
    let outputs = rule
        .on_message(&message("device/s/devicePayload", REFERENCE_PAYLOAD))
        .unwrap();
    assert_eq!(emitted_text(&outputs), [REFERENCE_PAYLOAD]);
}

#[test]
fn temperature_convert_reshapes_and_derives_frost_risk() {
    let mut rule = instance("temperature-convert");
    let mild = rule
        .on_message(&message("t", r#"{"name":"greenhouse","celsius":21.5}"#))
        .unwrap();
    let report: Value = serde_json::from_str(&emitted_text(&mild)[0]).unwrap();
    assert_eq!(
        report,
        json!({"device":"greenhouse","celsius":21.5,"fahrenheit":70.7,"frost_risk":false})
    );
    let cold = rule
        .on_message(&message("t", r#"{"name":"field","celsius":1}"#))
        .unwrap();
    let report: Value = serde_json::from_str(&emitted_text(&cold)[0]).unwrap();
    assert_eq!(report["frost_risk"], json!(true));
    assert_eq!(report["fahrenheit"], json!(33.8));
}

/// Sends a hostile request, checks the failure, then checks a normal message.
fn assert_recovers_after(
    attack: Value,
    limits: RuleLimits,
    expected: impl Fn(&RunErrorKind) -> bool,
) {
    let mut rule = instance_with("hostile", &[], limits);
    let error = rule
        .on_message(&message("attack", attack.to_string()))
        .unwrap_err();
    assert!(expected(&error.kind), "unexpected failure: {error}");
    assert!(
        error
            .to_string()
            .contains("rule `hostile` on topic `attack`"),
        "{error}"
    );
    let outputs = rule.on_message(&message("normal", "{\"n\":1}")).unwrap();
    assert_eq!(emitted_text(&outputs), ["{\"n\":1}"]);
}

#[test]
fn infinite_loop_hits_the_time_limit() {
    let limits = RuleLimits {
        time_ms: 20,
        ..RuleLimits::default()
    };
    assert_recovers_after(
        json!({"attack": "spin"}),
        limits,
        |kind| matches!(kind, RunErrorKind::TimeLimit(limit) if limit.as_millis() == 20),
    );
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    let limits = RuleLimits {
        memory_bytes: 8 << 20,
        ..RuleLimits::default()
    };
    assert_recovers_after(
        json!({"attack": "allocate"}),
        limits,
        |kind| matches!(kind, RunErrorKind::MemoryLimit(limit) if *limit == 8 << 20),
    );
}

#[test]
fn panic_becomes_a_trap() {
    assert_recovers_after(json!({"attack": "panic"}), RuleLimits::default(), |kind| {
        matches!(kind, RunErrorKind::Trap(_))
    });
}

#[test]
fn oversized_output_is_refused() {
    let limits = RuleLimits {
        output_bytes: 1000,
        ..RuleLimits::default()
    };
    assert_recovers_after(
        json!({"attack": "oversize", "bytes": 5000}),
        limits,
        |kind| {
            matches!(
                kind,
                RunErrorKind::OutputTooLarge {
                    size: 5000,
                    limit: 1000
                }
            )
        },
    );
}

#[test]
fn guest_stdout_and_stderr_reach_the_log_under_the_rule_name() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let mut rule = instance("hostile");
    tracing::subscriber::with_default(subscriber, || {
        let outputs = rule
            .on_message(&message("probe", r#"{"attack":"print"}"#))
            .unwrap();
        assert_eq!(emitted_text(&outputs), ["printed"]);
        // The log streams flush whole lines as they come; dropping the rule
        // flushes anything left.
        drop(rule);
    });
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let stdout_line = log
        .lines()
        .find(|line| line.contains("hostile rule writes to stdout"))
        .unwrap_or_else(|| panic!("stdout line missing from the log:\n{log}"));
    assert!(
        stdout_line.contains("INFO") && stdout_line.contains("rule=\"hostile\""),
        "{stdout_line}"
    );
    let stderr_line = log
        .lines()
        .find(|line| line.contains("hostile rule writes to stderr"))
        .unwrap_or_else(|| panic!("stderr line missing from the log:\n{log}"));
    assert!(stderr_line.contains("WARN"), "{stderr_line}");
}

#[test]
fn rules_reach_no_files_environment_or_network() {
    let mut rule = instance("hostile");
    for (attack, expected) in [
        ("read-file", "denied"),
        ("list-dir", "denied"),
        ("connect", "denied"),
        ("env", "0 variables"),
    ] {
        let outputs = rule
            .on_message(&message("probe", json!({"attack": attack}).to_string()))
            .unwrap();
        let text = &emitted_text(&outputs)[0];
        assert!(text.starts_with(expected), "{attack}: {text}");
    }
}

#[test]
fn refuses_to_start_a_rule_with_more_memory_than_a_pool_slot() {
    let engine = RuleEngine::new(EngineOptions {
        max_memory_bytes: 16 << 20,
        ..EngineOptions::default()
    })
    .unwrap();
    let module = engine.load_file(&rule_module("passthrough")).unwrap();
    let limits = RuleLimits {
        memory_bytes: 32 << 20,
        ..RuleLimits::default()
    };
    let error = module
        .instantiate("passthrough", RuleConfig::new(), limits)
        .err()
        .expect("the rule must not start");
    assert!(matches!(error, LoadError::Init { .. }), "{error}");
    assert!(error.to_string().contains("memory limit"), "{error}");
}

#[test]
fn a_full_instance_pool_refuses_one_more_and_frees_slots_on_drop() {
    let engine = RuleEngine::new(EngineOptions {
        max_instances: 2,
        ..EngineOptions::default()
    })
    .unwrap();
    let module = engine.load_file(&rule_module("passthrough")).unwrap();
    let start = || module.instantiate("passthrough", RuleConfig::new(), RuleLimits::default());
    let first = start().unwrap();
    let _second = start().unwrap();
    let error = start().err().expect("a third instance has no slot");
    assert!(matches!(error, LoadError::Init { .. }), "{error}");
    assert!(
        error.to_string().contains("no free instance slot"),
        "{error}"
    );
    drop(first);
    start().expect("the dropped instance's slot is free again");
}

fn load_error(path: &Path, bytes: Option<&[u8]>) -> LoadError {
    let engine = engine();
    let result = match bytes {
        Some(bytes) => engine.load_bytes(path, bytes),
        None => engine.load_file(path),
    };
    result.err().expect("the module must be refused")
}

#[test]
fn refuses_core_module_with_its_own_error() {
    let error = load_error(Path::new("core.wasm"), Some(b"\0asm\x01\0\0\0"));
    assert!(matches!(error, LoadError::CoreModule { .. }), "{error}");
    assert!(error.to_string().contains("core.wasm"), "{error}");
}

#[test]
fn refuses_module_exporting_wrong_world() {
    let error = load_error(&rule_module("wrong-world"), None);
    assert!(matches!(error, LoadError::WrongWorld { .. }), "{error}");
    assert!(error.to_string().contains("wrong_world.wasm"), "{error}");
}

#[test]
fn refuses_truncated_and_random_files() {
    let bytes = std::fs::read(rule_module("humidity-alert")).unwrap();
    let truncated = load_error(Path::new("cut.wasm"), Some(&bytes[..bytes.len() / 2]));
    assert!(
        matches!(truncated, LoadError::Invalid { .. }),
        "{truncated}"
    );
    assert!(truncated.to_string().contains("cut.wasm"), "{truncated}");

    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let noise = load_error(Path::new("noise.wasm"), Some(&random));
    assert!(matches!(noise, LoadError::NotWasm { .. }), "{noise}");

    let missing = load_error(Path::new("/nonexistent/rule.wasm"), None);
    assert!(matches!(missing, LoadError::Read { .. }), "{missing}");
}

#[test]
fn cached_artifact_is_reused_and_a_corrupt_one_rebuilt() {
    let cache = tempfile::tempdir().unwrap();
    let engine = RuleEngine::new(EngineOptions {
        cache_dir: Some(cache.path().to_owned()),
        ..EngineOptions::default()
    })
    .unwrap();
    let path = rule_module("humidity-alert");
    engine.load_file(&path).unwrap();
    let entries: Vec<_> = std::fs::read_dir(cache.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "one artifact per module");
    let entry = entries[0].as_ref().unwrap().path();
    let written = std::fs::metadata(&entry).unwrap().modified().unwrap();

    engine.load_file(&path).unwrap();
    let reused = std::fs::metadata(&entry).unwrap().modified().unwrap();
    assert_eq!(written, reused, "a sound entry is loaded, not rewritten");

    let mut corrupt = std::fs::read(&entry).unwrap();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    std::fs::write(&entry, &corrupt).unwrap();
    let module = engine.load_file(&path).unwrap();
    assert_ne!(
        std::fs::read(&entry).unwrap(),
        corrupt,
        "the corrupt entry was rebuilt"
    );
    let mut rule = module
        .instantiate("alert", RuleConfig::new(), RuleLimits::default())
        .unwrap();
    let outputs = rule
        .on_message(&message("device/s/devicePayload", reading("s", 1)))
        .unwrap();
    assert_eq!(outputs.len(), 1);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// A damaged module — bytes changed anywhere, or cut short — is refused
    /// with an error, or loads when the change happens to keep it valid; it
    /// never brings the engine down.
    #[test]
    fn damaged_modules_are_refused_without_panicking(
        changes in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()), 1..8),
        cut in proptest::prelude::any::<proptest::sample::Index>(),
        truncate in proptest::prelude::any::<bool>(),
    ) {
        let mut bytes = std::fs::read(rule_module("passthrough")).expect("reading the module");
        for (position, value) in changes {
            let position = position.index(bytes.len());
            bytes[position] = value;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        let _ = damaged_engine().load_bytes(Path::new("damaged.wasm"), &bytes);
    }
}

/// One engine for every case of the property test above: creating one per
/// case would dominate its time.
fn damaged_engine() -> &'static RuleEngine {
    static ENGINE: std::sync::OnceLock<RuleEngine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(engine)
}
