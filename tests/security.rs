//! Security against real services: TLS and mutual TLS to Mosquitto with
//! certificates the tests generate (rcgen) — a gateway with the right CA and
//! a client certificate relays messages; a wrong CA or an expired server
//! certificate stops the connection with an error that says so and names the
//! settings — and no secret in the logs of a full run.

mod harness;

use harness::mosquitto::{Mosquitto, TlsListener, free_port};
use harness::moto::Moto;
use harness::pki::Pki;
use harness::recorder::Recorder;
use rulegate::config::GatewayConfig;
use rulegate::gateway::Gateway;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

fn start_broker(pki: &Pki, certificate: &str, require_client_certificate: bool) -> Mosquitto {
    Mosquitto::start_tls(&TlsListener {
        ca: &pki.path("ca.pem"),
        certificate: &pki.path(certificate),
        key: &pki.path("server.key"),
        require_client_certificate,
    })
}

/// A gateway configuration that relays `tls/in` to `tls/out` over the
/// broker's TLS listener, trusting `ca` and, with `client_certificate`,
/// presenting the client certificate.
fn write_config(dir: &Path, broker: &Mosquitto, pki: &Pki, ca: &str, client_certificate: bool) {
    let client = if client_certificate {
        format!(
            "client_cert_file = {:?}\nclient_key_file = {:?}\n",
            pki.path("client.pem"),
            pki.path("client.key")
        )
    } else {
        String::new()
    };
    let config = format!(
        r#"
[gateway]
state_dir = "state"
stats_interval_secs = 0
watch = false

[broker]
url = "mqtts://127.0.0.1:{port}"
client_id = "tls-{id}"
ca_file = {ca:?}
{client}
[sinks.out]
type = "mqtt"

[[rules]]
name = "relay"
sql = "SELECT * FROM 'tls/in'"
[[rules.actions]]
sink = "out"
topic = "tls/out"
"#,
        port = broker.tls_port(),
        id = uuid::Uuid::new_v4().simple(),
        ca = pki.path(ca),
    );
    std::fs::write(dir.join("gateway.toml"), config).expect("writing the config");
}

/// Runs `rulegate run` on the configuration in `dir` until its log has a
/// line containing `wanted`, and returns that line.
fn first_log_line_with(dir: &Path, wanted: &str) -> String {
    let log_path = dir.join("gateway.log");
    let log = std::fs::File::create(&log_path).expect("creating the log");
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_rulegate"))
        .args(["run", "--config"])
        .arg(dir.join("gateway.toml"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting rulegate run");
    let deadline = Instant::now() + Duration::from_secs(20);
    let line = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(line) = text.lines().find(|line| line.contains(wanted)) {
            break line.to_owned();
        }
        if Instant::now() > deadline {
            let _ = gateway.kill();
            panic!("no log line with {wanted:?} within 20 s:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = gateway.kill();
    let _ = gateway.wait();
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_connection_relays_messages() {
    let pki = Pki::generate();
    let broker = start_broker(&pki, "server.pem", true);
    let dir = TempDir::new().expect("a directory for the gateway");
    write_config(dir.path(), &broker, &pki, "ca.pem", true);
    let config = GatewayConfig::load(&dir.path().join("gateway.toml"))
        .unwrap_or_else(|error| panic!("{error}"));
    let gateway = Gateway::start(config, None)
        .await
        .expect("starting the gateway");

    let mut relayed = Recorder::subscribe(broker.port(), "tls/out").await;
    let (device, mut events) = AsyncClient::new(
        MqttOptions::new("tls-device", "127.0.0.1", broker.port()),
        16,
    );
    let connection = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    for n in 0..3 {
        device
            .publish("tls/in", QoS::AtLeastOnce, false, format!("{{\"n\":{n}}}"))
            .await
            .expect("publishing");
    }
    let messages = relayed.take(3, Duration::from_secs(15)).await;
    connection.abort();
    let payloads: Vec<&[u8]> = messages.iter().map(|(_, payload)| &payload[..]).collect();
    assert_eq!(
        payloads,
        [&b"{\"n\":0}"[..], b"{\"n\":1}", b"{\"n\":2}"],
        "relayed through the TLS connection"
    );
    gateway.shutdown().await.expect("stopping the gateway");
}

/// The first log line with `wanted` of a gateway process that trusts `ca`
/// and, without a client certificate, connects to a broker that presents
/// `certificate`; and the broker's TLS address.
fn refused_connection(
    certificate: &str,
    ca: &str,
    require_client_certificate: bool,
    wanted: &str,
) -> (String, String) {
    let pki = Pki::generate();
    let broker = start_broker(&pki, certificate, require_client_certificate);
    let dir = TempDir::new().expect("a directory for the gateway");
    write_config(dir.path(), &broker, &pki, ca, false);
    let line = first_log_line_with(dir.path(), wanted);
    (line, format!("127.0.0.1:{}", broker.tls_port()))
}

#[test]
fn broker_certificate_from_an_unknown_ca_is_refused_naming_the_settings() {
    let (line, broker) =
        refused_connection("server.pem", "other-ca.pem", false, "check broker.ca_file");
    assert!(line.contains("UnknownIssuer"), "{line}");
    assert!(line.contains(&broker), "{line}");
}

#[test]
fn expired_broker_certificate_is_refused_naming_the_settings() {
    let (line, _) = refused_connection(
        "expired-server.pem",
        "ca.pem",
        false,
        "check broker.ca_file",
    );
    assert!(line.contains("certificate expired"), "{line}");
}

#[test]
fn broker_that_requires_a_client_certificate_refuses_a_gateway_without_one() {
    // TLS 1.3 reports the refused handshake once the client reads: as a TLS
    // alert or a closed connection, never as a connection that works.
    let (line, _) = refused_connection("server.pem", "ca.pem", true, "connection: ");
    assert!(line.contains("retrying"), "{line}");
    assert!(!line.contains("connected"), "{line}");
}

/// Runs a whole gateway process at debug level through its paths that touch
/// secrets — mutual TLS with a client key, a broker password, AWS credentials
/// for S3 (a delivery that succeeds and one that fails), the admin API with a
/// wrong and the right token, a reload — and scans the log for every secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log_of_a_full_run() {
    let pki = Pki::generate();
    let broker = start_broker(&pki, "server.pem", true);
    let moto = Moto::start();
    moto.create_bucket("archive").await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let aws_key_id = format!("AKIA{}", &run[..16].to_uppercase());
    let aws_secret = format!("aws-secret-{run}");
    let admin_token = format!("admin-token-{run}");
    let broker_password = format!("broker-password-{run}");
    let tls_key = std::fs::read_to_string(pki.path("client.key")).expect("reading the key");
    let tls_key_body = tls_key.lines().nth(1).expect("a PEM body line").to_owned();
    let admin_port = free_port();

    let dir = TempDir::new().expect("a directory for the gateway");
    let config = format!(
        r#"
[gateway]
state_dir = "state"
stats_interval_secs = 1
watch = false

[broker]
url = "mqtts://127.0.0.1:{tls_port}"
client_id = "secrets-{run}"
username = "gateway"
password_env = "TEST_BROKER_PASSWORD"
ca_file = {ca:?}
client_cert_file = {cert:?}
client_key_file = {key:?}

[admin]
listen = "127.0.0.1:{admin_port}"
token_env = "TEST_ADMIN_TOKEN"

[sinks.archive]
type = "s3"
bucket = "archive"
endpoint = "{endpoint}"
path_style = true
region = "us-east-1"

[sinks.missing]
type = "s3"
bucket = "no-such-bucket"
endpoint = "{endpoint}"
path_style = true
region = "us-east-1"
attempts = 1

[sinks.errors]
type = "mqtt"

[[rules]]
name = "archive"
sql = "SELECT * FROM 'secrets/+/in'"
[[rules.actions]]
sink = "archive"
key = "${{topic(2)}}"
[[rules.actions]]
sink = "missing"
key = "${{topic(2)}}"
[rules.error_action]
sink = "errors"
topic = "secrets/errors"
"#,
        tls_port = broker.tls_port(),
        ca = pki.path("ca.pem"),
        cert = pki.path("client.pem"),
        key = pki.path("client.key"),
        endpoint = moto.endpoint(),
    );
    std::fs::write(dir.path().join("gateway.toml"), config).expect("writing the config");
    let log_path = dir.path().join("gateway.log");
    let gateway = Command::new(env!("CARGO_BIN_EXE_rulegate"))
        .args(["run", "--config"])
        .arg(dir.path().join("gateway.toml"))
        .env("RULEGATE_LOG", "debug")
        .env("AWS_ACCESS_KEY_ID", &aws_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &aws_secret)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("TEST_ADMIN_TOKEN", &admin_token)
        .env("TEST_BROKER_PASSWORD", &broker_password)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("stdout.log")).expect("a log file"))
        .stderr(std::fs::File::create(&log_path).expect("a log file"))
        .spawn()
        .expect("starting rulegate run");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log().contains("gateway ready") {
        assert!(
            Instant::now() < deadline,
            "the gateway did not start:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut errors = Recorder::subscribe(broker.port(), "secrets/errors").await;
    let (device, mut events) = AsyncClient::new(
        MqttOptions::new("secrets-device", "127.0.0.1", broker.port()),
        16,
    );
    let connection = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    for n in 0..3 {
        device
            .publish(
                format!("secrets/{n}/in"),
                QoS::AtLeastOnce,
                false,
                "{\"humidity\":30}",
            )
            .await
            .expect("publishing");
    }
    let reports = errors.take(3, Duration::from_secs(30)).await;
    assert_eq!(reports.len(), 3, "the failing sink's reports:\n{}", log());
    connection.abort();

    let admin = rulegate::tls::http_client_builder().build().unwrap();
    let url = format!("http://127.0.0.1:{admin_port}");
    for token in ["not-the-token-at-all", admin_token.as_str()] {
        for path in ["/rules", "/metrics", "/reload"] {
            let status = admin
                .get(format!("{url}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .expect("calling the admin API")
                .status();
            assert_eq!(
                status.is_success(),
                token == admin_token,
                "{path}: {status}"
            );
        }
    }
    let reload = admin
        .post(format!("{url}/reload"))
        .bearer_auth(&admin_token)
        .send()
        .await
        .expect("asking for a reload");
    assert!(reload.status().is_success());

    harness::terminate(gateway);
    assert_eq!(moto.list_keys("archive").await, ["0", "1", "2"]);

    let text = log() + &std::fs::read_to_string(dir.path().join("stdout.log")).unwrap_or_default();
    assert!(
        text.contains("NoSuchBucket"),
        "the failure was logged:\n{text}"
    );
    for (what, secret) in [
        ("the AWS access key id", aws_key_id.as_str()),
        ("the AWS secret key", aws_secret.as_str()),
        ("the admin token", admin_token.as_str()),
        ("the broker password", broker_password.as_str()),
        ("the TLS client key", tls_key_body.as_str()),
    ] {
        let leak = text.lines().find(|line| line.contains(secret));
        assert!(leak.is_none(), "{what} is in the log: {leak:?}");
    }
}

/// A hostile module uploaded to a running gateway meets the same sandbox as a
/// configured one: no files, directories, environment or network, and its
/// CPU, memory and output limits hold; each breach is one error report, and
/// the rule and the gateway go on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_module_loaded_at_run_time_stays_inside_the_sandbox() {
    let broker = Mosquitto::start();
    let dir = TempDir::new().expect("a directory for the gateway");
    let token = format!("admin-token-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(dir.path().join("token"), &token).expect("writing the token");
    let config = format!(
        r#"
[gateway]
state_dir = "state"
stats_interval_secs = 0
watch = false

[broker]
url = "{url}"
client_id = "hostile-{id}"

[admin]
listen = "127.0.0.1:0"
token_file = "token"

[sinks.out]
type = "mqtt"

[[rules]]
name = "guest"
sql = "SELECT * FROM 'guest/in'"
module = {module:?}
limits = {{ time_ms = 200, memory_bytes = 8388608, output_bytes = 4096 }}
[[rules.actions]]
sink = "out"
topic = "guest/out"
[rules.error_action]
sink = "out"
topic = "guest/errors"
"#,
        url = broker.url(),
        id = uuid::Uuid::new_v4().simple(),
        module = harness::rule_module("passthrough"),
    );
    std::fs::write(dir.path().join("gateway.toml"), config).expect("writing the config");
    let config = GatewayConfig::load(&dir.path().join("gateway.toml"))
        .unwrap_or_else(|error| panic!("{error}"));
    let gateway = Gateway::start(config, None)
        .await
        .expect("starting the gateway");
    let admin = format!("http://{}", gateway.admin_address().expect("the admin API"));
    let hostile = std::fs::read(harness::rule_module("hostile")).expect("the hostile module");
    let upload = rulegate::tls::http_client_builder()
        .build()
        .unwrap()
        .put(format!("{admin}/rules/guest/module"))
        .bearer_auth(&token)
        .body(hostile)
        .send()
        .await
        .expect("uploading");
    assert!(
        upload.status().is_success(),
        "{}",
        upload.text().await.unwrap_or_default()
    );

    let mut outputs = Recorder::subscribe(broker.port(), "guest/out").await;
    let mut errors = Recorder::subscribe(broker.port(), "guest/errors").await;
    let (device, mut events) = AsyncClient::new(
        MqttOptions::new("hostile-device", "127.0.0.1", broker.port()),
        32,
    );
    let connection = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let breaches = ["spin", "allocate", "panic", "oversize"];
    let probes = ["read-file", "list-dir", "env", "connect"];
    for attack in breaches.iter().chain(&probes) {
        let request = format!(r#"{{"attack":"{attack}","bytes":100000}}"#);
        device
            .publish("guest/in", QoS::AtLeastOnce, false, request)
            .await
            .expect("publishing");
    }
    device
        .publish(
            "guest/in",
            QoS::AtLeastOnce,
            false,
            r#"{"still":"serving"}"#,
        )
        .await
        .expect("publishing");

    let answers = outputs
        .take(probes.len() + 1, Duration::from_secs(30))
        .await;
    let answers: Vec<String> = answers
        .into_iter()
        .map(|(_, payload)| String::from_utf8_lossy(&payload).into_owned())
        .collect();
    assert_eq!(answers.len(), probes.len() + 1, "{answers:?}");
    for (probe, answer) in probes.iter().zip(&answers) {
        let contained = answer.starts_with("denied") || answer == "0 variables";
        assert!(contained, "{probe}: {answer}");
    }
    assert_eq!(answers[probes.len()], r#"{"still":"serving"}"#);

    let reports = errors.take(breaches.len(), Duration::from_secs(30)).await;
    connection.abort();
    let causes: Vec<String> = reports
        .iter()
        .map(|(_, report)| {
            let report: serde_json::Value = serde_json::from_slice(report).expect("a JSON report");
            report["failures"][0]["errorMessage"]
                .as_str()
                .expect("an error message")
                .to_owned()
        })
        .collect();
    assert_eq!(causes.len(), breaches.len(), "{causes:?}");
    for (breach, (cause, expected)) in breaches.iter().zip(causes.iter().zip([
        "exceeded its time limit of 200ms",
        "exceeded its memory limit of 8388608 bytes",
        "trapped",
        "over its limit of 4096 bytes",
    ])) {
        assert!(cause.contains(expected), "{breach}: {cause}");
    }
    gateway.shutdown().await.expect("stopping the gateway");
}
