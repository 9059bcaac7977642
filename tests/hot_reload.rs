//! Rules changed on a running gateway, against a real Mosquitto: a module
//! swapped 20 times (some versions broken) under a steady stream of 100,000
//! messages, each processed exactly once and by a known version; the admin API
//! and its token; `rulegate deploy` and uploads that survive a restart;
//! configuration reloads; SIGHUP on the binary; capabilities.
//!
//! Versions are told apart by the `versioned` fixture, whose outputs carry a
//! label the tests rewrite in the module's bytes.

mod harness;

use harness::mosquitto::Mosquitto;
use harness::recorder::Recorder;
use harness::{replace_file, rule_module, versioned_module};
use rulegate::config::GatewayConfig;
use rulegate::gateway::Gateway;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const TOKEN: &str = "admin-token-for-tests-0123456789";

/// An output of the fixture: which version produced it, for which sequence number.
fn version_and_sequence(payload: &[u8]) -> (u32, u64) {
    let text = std::str::from_utf8(payload).expect("outputs are text");
    let (label, body) = text.split_once('|').expect("label|payload");
    let version = label["version:".len()..].parse().expect("eight digits");
    let body: Value = serde_json::from_str(body).expect("the payload as published");
    (version, body["seq"].as_u64().expect("a sequence number"))
}

/// A gateway's directory: configuration, module, token, state and cache.
struct Site {
    dir: TempDir,
}

impl Site {
    /// `rules` is the `[[rules]]` part; `gateway` extra `[gateway]` keys.
    fn new(mosquitto: &Mosquitto, gateway: &str, rules: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("versioned.wasm"), versioned_module(0)).unwrap();
        fs::write(dir.path().join("token"), TOKEN).unwrap();
        let site = Site { dir };
        site.write_config(mosquitto, gateway, rules);
        site
    }

    /// A site whose one rule, `versioned`, runs the fixture's version 0.
    fn with_versioned_rule(mosquitto: &Mosquitto, gateway: &str) -> Site {
        Site::new(
            mosquitto,
            gateway,
            &versioned_rule("versioned", "versioned.wasm"),
        )
    }

    fn write_config(&self, mosquitto: &Mosquitto, gateway: &str, rules: &str) {
        let config = format!(
            r#"
[gateway]
state_dir = "state"
cache_dir = "cache"
stats_interval_secs = 0
{gateway}

[broker]
url = "{url}"

[admin]
listen = "127.0.0.1:0"
token_file = "token"

[sinks.out]
type = "mqtt"

{rules}
"#,
            url = mosquitto.url()
        );
        replace_file(&self.config_path(), config.as_bytes());
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config_path(&self) -> PathBuf {
        self.path("gateway.toml")
    }

    fn config(&self) -> GatewayConfig {
        GatewayConfig::load(&self.config_path()).unwrap_or_else(|error| panic!("{error}"))
    }
}

/// A rule running `module` on `<name>/in`, republishing to `<name>/out`.
fn versioned_rule(name: &str, module: &str) -> String {
    format!(
        r#"
[[rules]]
name = "{name}"
sql = "SELECT * FROM '{name}/in'"
module = "{module}"
[[rules.actions]]
sink = "out"
topic = "{name}/out"
"#
    )
}

/// A connection that publishes `{"seq":N}` messages at QoS 1.
struct Publisher {
    client: AsyncClient,
    topic: String,
    next: u64,
}

impl Publisher {
    async fn connect(mosquitto: &Mosquitto, topic: &str) -> Publisher {
        let id = format!("publisher-{}", uuid::Uuid::new_v4().simple());
        let options = MqttOptions::new(id, "127.0.0.1", mosquitto.port());
        let (client, mut events) = AsyncClient::new(options, 1000);
        tokio::spawn(async move {
            loop {
                if events.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Publisher {
            client,
            topic: topic.to_owned(),
            next: 0,
        }
    }

    async fn publish(&mut self, count: u64) {
        for _ in 0..count {
            let payload = format!(r#"{{"seq":{}}}"#, self.next);
            self.client
                .publish(&self.topic, QoS::AtLeastOnce, false, payload)
                .await
                .expect("queueing a publish");
            self.next += 1;
        }
    }
}

/// Polls `condition` every 20 ms until it holds; panics after `within`.
async fn wait_until(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn selected(gateway: &Gateway, rule: &str) -> u64 {
    gateway
        .stats()
        .rules()
        .into_iter()
        .find(|(name, _)| name == rule)
        .map_or(0, |(_, stats)| stats.selected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_swapped_20_times_under_a_steady_stream_processes_each_message_exactly_once() {
    const SWAPS: u32 = 20;
    const MIN_MESSAGES: u64 = 100_000;
    /// Messages each version serves at least before the next swap is written.
    const SHARE: u64 = MIN_MESSAGES / (SWAPS as u64 + 1) + 1;
    let mosquitto = Mosquitto::start();
    let site = Site::with_versioned_rule(&mosquitto, "");
    let gateway = Gateway::start(site.config(), None).await.unwrap();
    let mut outputs = Recorder::subscribe(mosquitto.port(), "versioned/out").await;

    // A steady 10,000 messages a second until told to stop.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut publisher = Publisher::connect(&mosquitto, "versioned/in").await;
    let stream = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(10));
        while !*stopped.borrow() || publisher.next < MIN_MESSAGES {
            ticks.tick().await;
            publisher.publish(100).await;
        }
        publisher.next
    });

    let module = site.path("versioned.wasm");
    let half_module = {
        let bytes = versioned_module(99);
        bytes[..bytes.len() / 2].to_vec()
    };
    let broken: BTreeMap<u32, (&str, Vec<u8>)> = BTreeMap::from([
        (4, ("truncated", half_module)),
        (9, ("not Wasm", b"#!/bin/sh\necho not a rule\n".to_vec())),
        (
            13,
            ("wrong world", fs::read(rule_module("wrong-world")).unwrap()),
        ),
        (17, ("empty", Vec::new())),
    ]);
    let mut served_by = vec![0];
    for swap in 1..=SWAPS {
        let routed = selected(&gateway, "versioned");
        wait_until(
            "the running version served its share",
            Duration::from_secs(120),
            || selected(&gateway, "versioned") >= routed + SHARE,
        )
        .await;
        let before = gateway.rules().history();
        let bytes = match broken.get(&swap) {
            Some((_, bytes)) => bytes.clone(),
            None => versioned_module(swap),
        };
        replace_file(&module, &bytes);
        wait_until(
            "the change was applied or refused",
            Duration::from_secs(60),
            || {
                let now = gateway.rules().history();
                now.applied + now.rejected > before.applied + before.rejected
            },
        )
        .await;
        let after = gateway.rules().history();
        let running = gateway.stats().reports().remove(0).version;
        match broken.get(&swap) {
            Some((kind, _)) => {
                assert_eq!(
                    after.rejected,
                    before.rejected + 1,
                    "{kind} version {swap} refused"
                );
                let error = after.last.and_then(|record| record.error).unwrap();
                assert!(error.contains("versioned.wasm"), "{kind}: {error}");
                assert_eq!(
                    running.number,
                    served_by.len() as u64,
                    "the running version stays"
                );
            }
            None => {
                assert_eq!(after.applied, before.applied + 1, "version {swap} applied");
                assert_eq!(
                    running.module_hash.as_deref(),
                    Some(blake3::hash(&bytes).to_hex().as_str())
                );
                served_by.push(swap);
                assert_eq!(running.number, served_by.len() as u64);
            }
        }
    }
    let routed = selected(&gateway, "versioned");
    wait_until(
        "the last version served its share",
        Duration::from_secs(120),
        || selected(&gateway, "versioned") >= routed + SHARE,
    )
    .await;
    stop.send(true).unwrap();
    let published = stream.await.unwrap();
    assert!(published >= MIN_MESSAGES);

    let received = outputs
        .take(published as usize, Duration::from_secs(300))
        .await;
    let mut version_of: Vec<Option<u32>> = vec![None; published as usize];
    for (_, payload) in &received {
        let (version, sequence) = version_and_sequence(payload);
        let earlier = version_of[sequence as usize].replace(version);
        assert_eq!(earlier, None, "message {sequence} processed twice");
    }
    let lost: Vec<usize> = (0..version_of.len())
        .filter(|&sequence| version_of[sequence].is_none())
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {published} messages lost, the first {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    // In publishing order, the versions only move forward, and every version
    // that was applied, and only those, processed a share.
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    let mut previous = 0;
    for (sequence, version) in version_of.iter().flatten().enumerate() {
        assert!(
            *version >= previous,
            "message {sequence} went back to version {version}"
        );
        previous = *version;
        *counts.entry(*version).or_default() += 1;
    }
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        served_by,
        "messages per version: {counts:?}"
    );
    assert!(counts.values().all(|&count| count >= SHARE), "{counts:?}");
    let history = gateway.rules().history();
    assert_eq!((history.applied, history.rejected), (1 + 16, 4));
    let stats = gateway.stats().rules();
    assert_eq!(stats[0].1.errors, 0);
    assert_eq!(stats[0].1.outputs, published);
    eprintln!(
        "{published} messages over {} versions: {counts:?}",
        counts.len()
    );
    gateway.shutdown().await.unwrap();
}

/// An HTTP client for the admin API of `gateway`.
struct Admin {
    client: reqwest::Client,
    base: String,
}

impl Admin {
    fn of(gateway: &Gateway) -> Admin {
        let address = gateway.admin_address().expect("the admin API runs");
        Admin {
            client: rulegate::tls::http_client_builder().build().unwrap(),
            base: format!("http://{address}"),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> (u16, String) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, Some(TOKEN)).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Vec<u8>) -> (u16, Value) {
        let response = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .body(body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

/// A change refused with 422 and an error that names `expected`.
fn assert_refused(status: u16, answer: &Value, expected: &str) {
    assert_eq!(status, 422, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.contains(expected), "{answer}");
}

/// Writes a new configuration and asks the gateway to reload it.
async fn reload_with(
    site: &Site,
    mosquitto: &Mosquitto,
    admin: &Admin,
    gateway: &str,
    rules: &str,
) -> (u16, Value) {
    site.write_config(mosquitto, gateway, rules);
    admin
        .send(reqwest::Method::POST, "/reload", Vec::new())
        .await
}

/// The version serving a topic the gateway subscribes to at run time: a
/// reload answers once the rules route by the new set, and the broker takes
/// the new SUBSCRIBE a moment later, so this publishes until an output comes
/// back, then lets the stragglers arrive and drops them.
async fn version_once_subscribed(publisher: &mut Publisher, outputs: &mut Recorder) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        publisher.publish(1).await;
        if let Some((_, payload)) = outputs.take(1, Duration::from_millis(500)).await.first() {
            outputs.take(usize::MAX, Duration::from_millis(500)).await;
            return version_and_sequence(payload).0;
        }
        assert!(Instant::now() < deadline, "no output after subscribing");
    }
}

/// Publishes one message and returns the version label of its output.
async fn version_serving(publisher: &mut Publisher, outputs: &mut Recorder) -> u32 {
    publisher.publish(1).await;
    let received = outputs.take(1, Duration::from_secs(20)).await;
    let (_, payload) = received.first().expect("an output for the message");
    version_and_sequence(payload).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_its_token_and_reports_versions_counters_and_metrics() {
    let mosquitto = Mosquitto::start();
    let site = Site::with_versioned_rule(&mosquitto, "");
    let gateway = Gateway::start(site.config(), None).await.unwrap();
    let admin = Admin::of(&gateway);

    let (status, body) = admin.call(reqwest::Method::GET, "/health", None).await;
    assert_eq!(
        (status, body.contains(r#""rules":1"#)),
        (200, true),
        "{body}"
    );
    let protected = [
        (reqwest::Method::GET, "/rules"),
        (reqwest::Method::GET, "/rules/versioned"),
        (reqwest::Method::PUT, "/rules/versioned/module"),
        (reqwest::Method::DELETE, "/rules/versioned/module"),
        (reqwest::Method::GET, "/reload"),
        (reqwest::Method::POST, "/reload"),
        (reqwest::Method::GET, "/metrics"),
    ];
    for (method, path) in protected {
        for token in [None, Some("wrong-token-wrong-token-wrong")] {
            let (status, body) = admin.call(method.clone(), path, token).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}: {body}");
        }
    }

    let mut outputs = Recorder::subscribe(mosquitto.port(), "versioned/out").await;
    let mut publisher = Publisher::connect(&mosquitto, "versioned/in").await;
    publisher.publish(20).await;
    assert_eq!(outputs.take(20, Duration::from_secs(20)).await.len(), 20);
    wait_until("the sink delivered all", Duration::from_secs(10), || {
        gateway
            .sink_stats()
            .iter()
            .any(|(sink, stats)| sink == "out" && stats.delivered == 20)
    })
    .await;

    let rules = admin.get("/rules").await;
    assert_eq!(rules["rules"].as_array().unwrap().len(), 1);
    let rule = admin.get("/rules/versioned").await;
    let module_hash = blake3::hash(&versioned_module(0)).to_hex().to_string();
    assert_eq!(rule["version"]["number"], 1);
    assert_eq!(rule["version"]["module_hash"], module_hash.as_str());
    assert_eq!(rule["counters"]["selected"], 20);
    assert_eq!(rule["latency_us"]["count"], 20);
    assert!(rule["latency_us"]["p99"].as_u64().is_some(), "{rule}");
    assert!(rule["loaded_at"].as_str().unwrap().ends_with('Z'), "{rule}");
    let (status, _) = admin
        .call(reqwest::Method::GET, "/rules/nothing", Some(TOKEN))
        .await;
    assert_eq!(status, 404);

    let (status, metrics) = admin
        .call(reqwest::Method::GET, "/metrics", Some(TOKEN))
        .await;
    assert_eq!(status, 200);
    for line in [
        "rulegate_messages_received_total 20",
        r#"rulegate_rule_selected_total{rule="versioned"} 20"#,
        r#"rulegate_rule_processing_seconds_count{rule="versioned"} 20"#,
        r#"rulegate_rule_processing_seconds_bucket{rule="versioned",le="+Inf"} 20"#,
        r#"rulegate_sink_delivered_total{sink="out"} 20"#,
        r#"rulegate_rule_changes_total{result="applied"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|sample| sample == line),
            "no `{line}` in\n{metrics}"
        );
    }
    assert!(metrics.contains(&format!(r#"module_hash="{module_hash}""#)));
    gateway.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployed_module_is_hot_loaded_kept_across_a_restart_and_a_broken_one_refused() {
    let mosquitto = Mosquitto::start();
    let site = Site::with_versioned_rule(&mosquitto, "");
    let gateway = Gateway::start(site.config(), None).await.unwrap();
    let admin = Admin::of(&gateway);
    let mut outputs = Recorder::subscribe(mosquitto.port(), "versioned/out").await;
    let mut publisher = Publisher::connect(&mosquitto, "versioned/in").await;
    assert_eq!(version_serving(&mut publisher, &mut outputs).await, 0);

    // The laptop side: `rulegate deploy`.
    let upload = site.path("v7.wasm");
    fs::write(&upload, versioned_module(7)).unwrap();
    let deploy = |token: &str| {
        Command::new(env!("CARGO_BIN_EXE_rulegate"))
            .args(["deploy", "--gateway", &admin.base, "--rule", "versioned"])
            .arg(&upload)
            .env("RULEGATE_TOKEN", token)
            .output()
            .unwrap()
    };
    let refused = deploy("not-the-token-not-the-token");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    let deployed = deploy(TOKEN);
    let printed = String::from_utf8_lossy(&deployed.stdout);
    assert!(
        deployed.status.success(),
        "{}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    assert!(
        printed.contains("versioned: version 2 serving"),
        "{printed}"
    );
    assert_eq!(version_serving(&mut publisher, &mut outputs).await, 7);

    // A broken upload is refused and the deployed version keeps serving.
    let truncated = versioned_module(8)[..1000].to_vec();
    let (status, answer) = admin
        .send(reqwest::Method::PUT, "/rules/versioned/module", truncated)
        .await;
    assert_refused(status, &answer, "versioned");
    let (status, _) = admin
        .send(
            reqwest::Method::PUT,
            "/rules/nothing/module",
            versioned_module(9),
        )
        .await;
    assert_eq!(status, 404);
    let rule = admin.get("/rules/versioned").await;
    assert_eq!(rule["version"]["number"], 2);
    assert!(rule["last_rejection"]["error"].is_string(), "{rule}");
    assert_eq!(version_serving(&mut publisher, &mut outputs).await, 7);
    gateway.shutdown().await.unwrap();

    // The upload survives a restart.
    let gateway = Gateway::start(site.config(), None).await.unwrap();
    let admin = Admin::of(&gateway);
    let rule = admin.get("/rules/versioned").await;
    let path = rule["version"]["module_path"].as_str().unwrap();
    assert!(path.ends_with("state/modules/versioned.wasm"), "{rule}");
    assert_eq!(version_serving(&mut publisher, &mut outputs).await, 7);
    // Removing it goes back to the configured module.
    let (status, answer) = admin
        .send(
            reqwest::Method::DELETE,
            "/rules/versioned/module",
            Vec::new(),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(version_serving(&mut publisher, &mut outputs).await, 0);
    gateway.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_rules_and_refuses_broken_or_restart_only_changes() {
    let mosquitto = Mosquitto::start();
    let first = versioned_rule("first", "versioned.wasm");
    let site = Site::new(&mosquitto, "watch = false", &first);
    let gateway = Gateway::start(site.config(), None).await.unwrap();
    let admin = Admin::of(&gateway);
    let mut first_out = Recorder::subscribe(mosquitto.port(), "first/out").await;
    let mut second_out = Recorder::subscribe(mosquitto.port(), "second/out").await;
    let mut first_in = Publisher::connect(&mosquitto, "first/in").await;
    let mut second_in = Publisher::connect(&mosquitto, "second/in").await;

    // A new rule, on a topic nothing subscribed to before.
    let second = versioned_rule("second", "versioned.wasm");
    let (status, answer) = reload_with(
        &site,
        &mosquitto,
        &admin,
        "watch = false",
        &format!("{first}{second}"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changes"]["started"], serde_json::json!(["second"]));
    assert_eq!(answer["changes"]["unchanged"], 1);
    assert_eq!(
        version_once_subscribed(&mut second_in, &mut second_out).await,
        0
    );

    // Broken SQL: refused with the key at fault; both rules keep serving.
    let broken = second.replace("SELECT *", "SELECT * WHERE");
    let (status, answer) = reload_with(
        &site,
        &mosquitto,
        &admin,
        "watch = false",
        &format!("{first}{broken}"),
    )
    .await;
    assert_refused(status, &answer, "rules[1] (second).sql");
    assert_eq!(version_serving(&mut second_in, &mut second_out).await, 0);
    let history = admin.get("/reload").await;
    assert_eq!(
        (history["applied"].as_u64(), history["rejected"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(
        history["rule_rejections"]["second"]["error"].is_string(),
        "{history}"
    );

    // Sections other than the rules take a restart.
    let (status, answer) = reload_with(
        &site,
        &mosquitto,
        &admin,
        "watch = false\nrule_queue = 8",
        &format!("{first}{second}"),
    )
    .await;
    assert_refused(status, &answer, "`gateway` changed");

    // A rule removed stops taking messages; the other is untouched.
    let (status, answer) = reload_with(&site, &mosquitto, &admin, "watch = false", &first).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changes"]["removed"], serde_json::json!(["second"]));
    second_in.publish(1).await;
    assert!(second_out.take(1, Duration::from_secs(1)).await.is_empty());
    assert_eq!(version_serving(&mut first_in, &mut first_out).await, 0);
    let rule = admin.get("/rules/first").await;
    assert_eq!(
        rule["version"]["number"], 1,
        "an unchanged rule keeps its version"
    );
    gateway.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_makes_a_running_gateway_process_reload_its_rules() {
    let mosquitto = Mosquitto::start();
    let site = Site::with_versioned_rule(&mosquitto, "watch = false");
    let mut outputs = Recorder::subscribe(mosquitto.port(), "versioned/out").await;
    let mut publisher = Publisher::connect(&mosquitto, "versioned/in").await;
    let gateway = Command::new(env!("CARGO_BIN_EXE_rulegate"))
        .args(["run", "--config"])
        .arg(site.config_path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = gateway.id();
    // Running once an output comes back.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        publisher.publish(1).await;
        if !outputs.take(1, Duration::from_millis(200)).await.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway process never answered"
        );
    }

    fs::write(site.path("v3.wasm"), versioned_module(3)).unwrap();
    site.write_config(
        &mosquitto,
        "watch = false",
        &versioned_rule("versioned", "v3.wasm"),
    );
    harness::send_signal(pid, "HUP");
    let deadline = Instant::now() + Duration::from_secs(30);
    while version_serving(&mut publisher, &mut outputs).await != 3 {
        assert!(Instant::now() < deadline, "SIGHUP did not bring version 3");
    }
    harness::terminate(gateway);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_outside_a_rule_s_capabilities_is_refused_and_counted() {
    let mosquitto = Mosquitto::start();
    let rule = r#"
[[rules]]
name = "guarded"
sql = "SELECT * FROM 'guarded/+'"
capabilities = { publish = ["out/allowed"], sinks = ["out"] }
[[rules.actions]]
sink = "out"
topic = "out/${topic(2)}"
"#;
    let site = Site::new(&mosquitto, "", rule);
    let gateway = Gateway::start(site.config(), None).await.unwrap();
    let mut outputs = Recorder::subscribe(mosquitto.port(), "out/#").await;
    for topic in ["guarded/allowed", "guarded/denied", "guarded/also"] {
        let mut publisher = Publisher::connect(&mosquitto, topic).await;
        publisher.publish(3).await;
    }
    let received = outputs.take(4, Duration::from_secs(3)).await;
    let topics: Vec<&str> = received.iter().map(|(topic, _)| topic.as_str()).collect();
    assert_eq!(
        topics, ["out/allowed"; 3],
        "only the allowed topic is published to"
    );
    wait_until("the refusals are counted", Duration::from_secs(10), || {
        gateway.stats().rules()[0].1.errors == 6
    })
    .await;

    let outside = rule.replace(r#"sinks = ["out"]"#, r#"sinks = ["archive"]"#);
    site.write_config(&mosquitto, "", &outside);
    let error = GatewayConfig::load(&site.config_path())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("rules[0] (guarded).actions[0].sink")
            && error.contains("capabilities.sinks"),
        "{error}"
    );
    gateway.shutdown().await.unwrap();
}
