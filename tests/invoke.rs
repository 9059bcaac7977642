//! Synchronous invocation end to end through a real Mosquitto: an HTTP caller
//! asks the gateway for a device, simulated devices answer (or do not), and
//! each caller gets its own answer, a timeout, or a refusal that names why.

mod harness;

use harness::mosquitto::Mosquitto;
use rulegate::config::GatewayConfig;
use rulegate::device_sim::{Device, DeviceOptions, answer_text};
use rulegate::gateway::Gateway;
use rulegate::mqtt::{BrokerEndpoint, MqttVersion};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const TOKEN: &str = "invoke-test-token-9f3b2c71";

/// A gateway with nothing but the invocation endpoint, on an ephemeral port.
struct InvokeGateway {
    gateway: Gateway,
    base: String,
    http: reqwest::Client,
    _secrets: TempDir,
}

impl InvokeGateway {
    async fn start(broker: &Mosquitto, protocol: MqttVersion) -> InvokeGateway {
        let secrets = tempfile::tempdir().expect("creating a directory for the token");
        std::fs::write(secrets.path().join("token"), format!("{TOKEN}\n")).unwrap();
        let protocol = match protocol {
            MqttVersion::V311 => "3.1.1",
            MqttVersion::V5 => "5",
        };
        let text = format!(
            r#"
[broker]
url = "{url}"
protocol = "{protocol}"
client_id = "gateway-{id}"

[invoke]
listen = "127.0.0.1:0"
token_file = "token"
allowed_targets = ["Device*", "door-1"]
default_timeout_secs = 5
"#,
            url = broker.url(),
            id = uuid::Uuid::new_v4().simple(),
        );
        let config = GatewayConfig::parse(&text, Path::new("invoke.toml"), secrets.path().into())
            .unwrap_or_else(|error| panic!("{error}"));
        let gateway = Gateway::start(config, None)
            .await
            .expect("starting the gateway");
        let address = gateway.invoke_address().expect("[invoke] is configured");
        InvokeGateway {
            gateway,
            base: format!("http://{address}/invoke"),
            http: rulegate::tls::http_client_builder().build().unwrap(),
            _secrets: secrets,
        }
    }

    /// `GET /invoke` with the token; the status and the JSON body.
    async fn get(&self, query: &[(&str, &str)]) -> (u16, Value) {
        let response = self
            .http
            .get(&self.base)
            .query(query)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("sending the invocation");
        read(response).await
    }

    /// `POST /invoke` with the token and a JSON body.
    async fn post(&self, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(&self.base)
            .json(body)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("sending the invocation");
        read(response).await
    }

    fn stats(&self) -> rulegate::invoke::InvokeStats {
        self.gateway.invoke_stats().expect("[invoke] is configured")
    }
}

async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json().await.expect("a JSON body");
    (status, body)
}

async fn start_device(broker: &Mosquitto, id: &str, delay: Duration, answers: bool) -> Device {
    let endpoint = BrokerEndpoint::from_url(&broker.url(), id).unwrap();
    let mut device = Device::start(
        &endpoint,
        DeviceOptions {
            client_id: id.into(),
            delay,
            answers,
        },
    );
    device.ready().await;
    device
}

/// The device's answer to `request`, whatever its random number.
fn assert_answers(body: &Value, request: &str) {
    assert_eq!(body["result"], "ok", "{body}");
    let response = body["response"].as_str().expect("a response text");
    let expected = answer_text(request, 0);
    let stem = expected.trim_end_matches("0'");
    assert!(
        response.starts_with(stem) && response.ends_with('\''),
        "{response:?} is not the answer to {request:?}"
    );
    let number = &response[stem.len()..response.len() - 1];
    assert!(number.parse::<u32>().is_ok(), "{response:?}");
}

fn elapsed_ms(body: &Value) -> f64 {
    body["elapsed"]
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("`elapsed` is not milliseconds as text: {body}"))
}

#[tokio::test]
async fn device_answers_get_and_post_invocations() {
    let broker = Mosquitto::start();
    let device = start_device(&broker, "Device001", Duration::ZERO, true).await;
    let gateway = InvokeGateway::start(&broker, MqttVersion::V311).await;

    let (status, body) = gateway
        .get(&[
            ("request", "unlock the door"),
            ("method", "command"),
            ("target", "Device001"),
            ("timeout", "5"),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_answers(&body, "unlock the door");
    assert!(elapsed_ms(&body) < 5000.0, "{body}");

    let (status, body) = gateway
        .post(&json!({"request": "lower window", "method": "command", "target": "Device001", "timeout": 2.5}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_answers(&body, "lower window");

    let stats = gateway.stats();
    assert_eq!((stats.invoked, stats.answered, stats.timed_out), (2, 2, 0));
    assert_eq!(device.stop().await.requests, 2);
    gateway.gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn mqtt5_request_carries_response_topic_and_correlation_data() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    let broker = Mosquitto::start();
    // A hand-written MQTT 5 device, to see exactly what the gateway sends.
    let mut options = MqttOptions::new("Device005", "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(10));
    let (device, mut events) = AsyncClient::new(options, 16);
    device
        .subscribe("Device005/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.unwrap() {
            break;
        }
    }
    let gateway = InvokeGateway::start(&broker, MqttVersion::V5).await;
    let call = tokio::spawn({
        let http = gateway.http.clone();
        let base = gateway.base.clone();
        async move {
            read(
                http.get(&base)
                    .query(&[
                        ("request", "ping"),
                        ("method", "diag"),
                        ("target", "Device005"),
                    ])
                    .bearer_auth(TOKEN)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    });

    let request = loop {
        if let Event::Incoming(Packet::Publish(publish)) = events.poll().await.unwrap() {
            break publish;
        }
    };
    let topic = String::from_utf8(request.topic.to_vec()).unwrap();
    let levels: Vec<&str> = topic.split('/').collect();
    assert_eq!(levels[..3], ["Device005", "diag", "rulegate"], "{topic}");
    let id = uuid::Uuid::parse_str(levels[3]).expect("the fourth level is the message id");
    assert_eq!(request.payload.as_ref(), b"ping");
    let properties = request.properties.expect("MQTT 5 request properties");
    assert_eq!(properties.response_topic, Some(format!("{topic}/ack")));
    let correlation = properties.correlation_data.expect("correlation data");
    assert_eq!(correlation.as_ref(), id.as_bytes());

    let answer = PublishProperties {
        correlation_data: Some(correlation),
        ..Default::default()
    };
    device
        .publish_with_properties(
            properties.response_topic.unwrap(),
            QoS::AtLeastOnce,
            false,
            "pong",
            answer,
        )
        .await
        .unwrap();
    let poll = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let (status, body) = call.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"], "pong");
    poll.abort();
    gateway.gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn absent_device_times_out_with_504() {
    let broker = Mosquitto::start();
    let gateway = InvokeGateway::start(&broker, MqttVersion::V311).await;
    let started = Instant::now();
    let (status, body) = gateway
        .get(&[
            ("request", "anyone?"),
            ("method", "command"),
            ("target", "Device404"),
            ("timeout", "0.3"),
        ])
        .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["result"], "timeout");
    assert!(body.get("response").is_none(), "{body}");
    let elapsed = elapsed_ms(&body);
    assert!((300.0..2000.0).contains(&elapsed), "{body}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(gateway.stats().timed_out, 1);
    gateway.gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn late_answer_is_counted_and_never_reaches_another_caller() {
    let broker = Mosquitto::start();
    let device = start_device(&broker, "Device002", Duration::from_millis(700), true).await;
    let gateway = InvokeGateway::start(&broker, MqttVersion::V311).await;

    let (status, body) = gateway
        .get(&[
            ("request", "first"),
            ("method", "command"),
            ("target", "Device002"),
            ("timeout", "0.2"),
        ])
        .await;
    assert_eq!(status, 504, "{body}");
    // Asked while the first answer is still on its way; it must get its own.
    let (status, body) = gateway
        .get(&[
            ("request", "second"),
            ("method", "command"),
            ("target", "Device002"),
            ("timeout", "5"),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_answers(&body, "second");

    let stats = gateway.stats();
    assert_eq!(stats.late_answers, 1, "{stats:?}");
    assert_eq!((stats.answered, stats.timed_out), (1, 1), "{stats:?}");
    assert_eq!(device.stop().await.answered, 2);
    gateway.gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_and_missing_parameters_get_400_naming_the_parameter() {
    let broker = Mosquitto::start();
    let gateway = InvokeGateway::start(&broker, MqttVersion::V311).await;
    let complete = [
        ("request", "x"),
        ("method", "command"),
        ("target", "Device001"),
    ];
    let without = |name: &str| -> Vec<(&str, &str)> {
        complete
            .iter()
            .copied()
            .filter(|(key, _)| *key != name)
            .collect()
    };
    let with = |extra: (&'static str, &'static str)| -> Vec<(&str, &str)> {
        let mut query = complete.to_vec();
        query.push(extra);
        query
    };
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (without("request"), "`request` is missing"),
        (without("method"), "`method` is missing"),
        (without("target"), "`target` is missing"),
        (
            with(("timeout", "soon")),
            "`timeout`: `soon` is not a number",
        ),
        (with(("timeout", "0")), "`timeout`"),
        (with(("timeout", "3600")), "`timeout`"),
        (with(("tiemout", "1")), "unknown parameter `tiemout`"),
        (with(("target", "Device002")), "`target` is given twice"),
        (
            vec![("request", "x"), ("method", "a/b"), ("target", "Device001")],
            "`method`",
        ),
        (
            vec![("request", "x"), ("method", "m"), ("target", "Device+")],
            "`target`",
        ),
    ];
    for (query, expected) in cases {
        let (status, body) = gateway.get(&query).await;
        assert_eq!(status, 400, "{query:?}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(expected),
            "{query:?}: {error:?} should name {expected:?}"
        );
    }
    let (status, body) = gateway.post(&json!(["not", "an", "object"])).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = gateway
        .post(&json!({"request": "x", "method": "m", "target": "Device001", "timeout": [1]}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("`timeout`"),
        "{body}"
    );
    assert_eq!(gateway.stats().invoked, 0, "nothing may be published");
    gateway.gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn unauthenticated_requests_get_401_and_other_targets_403() {
    let broker = Mosquitto::start();
    let gateway = InvokeGateway::start(&broker, MqttVersion::V311).await;
    let query = [
        ("request", "x"),
        ("method", "command"),
        ("target", "Device001"),
    ];

    let unauthenticated = [
        gateway.http.get(&gateway.base).query(&query),
        gateway
            .http
            .get(&gateway.base)
            .query(&query)
            .bearer_auth("wrong-token-0000000000"),
        gateway
            .http
            .get(&gateway.base)
            .query(&query)
            .basic_auth("admin", Some(TOKEN)),
        gateway
            .http
            .post(&gateway.base)
            .json(&json!({"request": "x"})),
    ];
    for request in unauthenticated {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }

    for target in ["window-1", "door-2"] {
        let (status, body) = gateway
            .get(&[("request", "x"), ("method", "command"), ("target", target)])
            .await;
        assert_eq!(status, 403, "{body}");
        assert!(body["error"].as_str().unwrap().contains(target), "{body}");
    }
    assert_eq!(gateway.stats().invoked, 0, "nothing may be published");
    gateway.gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn thousand_concurrent_invocations_over_hundred_devices_each_get_their_own_answer() {
    let broker = Mosquitto::start();
    let mut devices = Vec::new();
    for number in 0..100 {
        let id = format!("Device{number:03}");
        devices.push(start_device(&broker, &id, Duration::from_millis(5), true).await);
    }
    let gateway = InvokeGateway::start(&broker, MqttVersion::V311).await;

    let calls = (0..1000).map(|call| {
        let http = gateway.http.clone();
        let base = gateway.base.clone();
        async move {
            let target = format!("Device{:03}", call % 100);
            let request = format!("call-{call}");
            let response = http
                .get(&base)
                .query(&[
                    ("request", request.as_str()),
                    ("method", "command"),
                    ("target", target.as_str()),
                    ("timeout", "30"),
                ])
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("sending the invocation");
            (request, read(response).await)
        }
    });
    let results = spawn_all(calls).await;
    for (request, (status, body)) in &results {
        assert_eq!(*status, 200, "{request}: {body}");
        assert_answers(body, request);
    }
    let stats = gateway.stats();
    assert_eq!((stats.invoked, stats.answered), (1000, 1000), "{stats:?}");
    assert_eq!(stats.unmatched_answers + stats.late_answers, 0, "{stats:?}");
    let mut requests = 0;
    for device in devices {
        let seen = device.stop().await.requests;
        assert_eq!(seen, 10, "every device gets its ten requests");
        requests += seen;
    }
    assert_eq!(requests, 1000);
    gateway.gateway.shutdown().await.unwrap();
}

/// Runs the futures concurrently, each as its own task; their outputs in order.
async fn spawn_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        outputs.push(task.await.expect("invocation task"));
    }
    outputs
}

#[tokio::test]
async fn device_sim_command_answers_until_terminated() {
    let broker = Mosquitto::start();
    let mut device = Command::new(env!("CARGO_BIN_EXE_rulegate"))
        .args([
            "device-sim",
            "--client-id",
            "Device077",
            "--broker",
            &broker.url(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting rulegate device-sim");
    // Kept open until the end, so the device never writes into a closed pipe.
    let mut stderr = BufReader::new(device.stderr.take().unwrap()).lines();
    let waiting = stderr
        .by_ref()
        .map_while(Result::ok)
        .find(|line| line.contains("waiting for requests on Device077/#"));
    assert!(waiting.is_some(), "device-sim never said it was waiting");

    let gateway = InvokeGateway::start(&broker, MqttVersion::V311).await;
    let (status, body) = gateway
        .get(&[
            ("request", "status"),
            ("method", "query"),
            ("target", "Device077"),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_answers(&body, "status");
    gateway.gateway.shutdown().await.unwrap();

    harness::send_signal(device.id(), "TERM");
    let output = device.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("Device077: 1 requests, 1 answered"),
        "{stdout}"
    );
}
