//! The actions stage against real services on loopback: S3 and SNS (moto),
//! device topics (Mosquitto) and local files, through `Sinks` as the pipeline
//! uses it — including dead services, failing deliveries, order and
//! backpressure.

mod harness;

use bytes::Bytes;
use harness::mosquitto::Mosquitto;
use harness::moto::Moto;
use rulegate::actions::{
    Confirmation, Delivery, FailedDelivery, Publisher, SinkConfig, SinkConfigError, SinkEnv,
    SinkKind, SinkStats, Sinks, SubmitError, Target, confirmed_at_once,
};
use rulegate::message::{Property, QoS};
use rulegate::outbox::{OutboxSettings, WhenFull};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio::time::{Instant, timeout};

/// The longest any single wait in these tests may take.
const PATIENCE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- helpers ---

/// The `[sinks.NAME]` tables of a gateway configuration file.
fn sink_tables(toml_text: &str) -> BTreeMap<String, SinkConfig> {
    let mut file: BTreeMap<String, BTreeMap<String, SinkConfig>> =
        toml::from_str(toml_text).unwrap_or_else(|error| panic!("bad test TOML: {error}"));
    file.remove("sinks").expect("the TOML has [sinks.*] tables")
}

fn object(key: &str, payload: impl Into<Bytes>) -> Delivery {
    Delivery {
        rule: Arc::from("soil_archive"),
        ordering_key: 1,
        payload: payload.into(),
        target: Target::Object {
            key: key.to_owned(),
        },
    }
}

fn publish(topic: &str, ordering_key: u64, payload: impl Into<Bytes>) -> Delivery {
    Delivery {
        rule: Arc::from("humidity_alert"),
        ordering_key,
        payload: payload.into(),
        target: Target::Publish {
            topic: topic.to_owned(),
            qos: QoS::AtLeastOnce,
            retain: false,
            user_properties: Vec::new(),
        },
    }
}

fn notification(subject: Option<&str>, payload: impl Into<Bytes>) -> Delivery {
    Delivery {
        rule: Arc::from("humidity_alert"),
        ordering_key: 1,
        payload: payload.into(),
        target: Target::Notification {
            subject: subject.map(String::from),
            attributes: vec![Property {
                key: "device".into(),
                value: "soilSensor3".into(),
            }],
        },
    }
}

/// Running sinks, the failures they hand back, and the directory of their
/// outbox (removed when dropped).
type Started = (Sinks, mpsc::Receiver<FailedDelivery>, TempDir);

async fn start(configs: &BTreeMap<String, SinkConfig>, env: SinkEnv) -> Started {
    let state = tempfile::tempdir().expect("a directory for the outbox");
    let (sinks, failed) = start_with_outbox(configs, env, &outbox_in(state.path())).await;
    (sinks, failed, state)
}

fn outbox_in(directory: &Path) -> OutboxSettings {
    OutboxSettings {
        path: directory.join("outbox.redb"),
        max_bytes: 64 * 1024 * 1024,
        when_full: WhenFull::StopIntake,
    }
}

async fn start_with_outbox(
    configs: &BTreeMap<String, SinkConfig>,
    env: SinkEnv,
    outbox: &OutboxSettings,
) -> (Sinks, mpsc::Receiver<FailedDelivery>) {
    let (failures, failed) = mpsc::channel(64);
    let sinks = Sinks::start(configs, env, outbox, failures)
        .await
        .unwrap_or_else(|error| panic!("starting the sinks: {error:#}"));
    (sinks, failed)
}

fn stats_of(sinks: &Sinks, sink: &str) -> SinkStats {
    sinks
        .stats()
        .into_iter()
        .find_map(|(name, stats)| (name == sink).then_some(stats))
        .unwrap_or_else(|| panic!("no stats for sink {sink}"))
}

/// Polls `condition` until it holds; panics naming `what` after [`PATIENCE`].
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("gave up waiting: {what}"))
}

/// The next failed delivery, settled (with no report) as the pipeline would.
async fn next_failure(
    sinks: &Sinks,
    failed: &mut mpsc::Receiver<FailedDelivery>,
) -> FailedDelivery {
    let failure = within("a failed delivery", failed.recv())
        .await
        .expect("the failures channel stays open while the sinks run");
    sinks
        .failure_settler()
        .settle(&failure, None)
        .expect("settling a failed delivery");
    failure
}

/// Sink `archive`: bucket `bucket` on `moto`, plus `delivery_options` lines.
fn s3_sink(moto: &Moto, bucket: &str, delivery_options: &str) -> BTreeMap<String, SinkConfig> {
    sink_tables(&format!(
        "[sinks.archive]\ntype = \"s3\"\nbucket = {bucket:?}\nendpoint = {:?}\n\
         path_style = true\n{delivery_options}\n",
        moto.endpoint()
    ))
}

/// Sink `alerts`: SNS topic `topic_arn` on `moto`.
fn sns_sink(moto: &Moto, topic_arn: &str) -> BTreeMap<String, SinkConfig> {
    sink_tables(&format!(
        "[sinks.alerts]\ntype = \"sns\"\ntopic_arn = {topic_arn:?}\nendpoint = {:?}\n",
        moto.endpoint()
    ))
}

async fn start_on_moto(moto: &Moto, configs: &BTreeMap<String, SinkConfig>) -> Started {
    start(configs, SinkEnv::new().with_aws(moto.sdk_config().await)).await
}

fn file_sink(directory: &Path) -> BTreeMap<String, SinkConfig> {
    BTreeMap::from([("local".to_owned(), SinkConfig::file(directory))])
}

// ------------------------------------------------- an MQTT client for tests ---

fn rumqttc_qos(qos: QoS) -> rumqttc::QoS {
    match qos {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

/// Connects to `broker` and keeps the connection's event loop running; each
/// incoming publish goes to the returned channel.
async fn mqtt_client(
    broker: &Mosquitto,
    client_id: &str,
) -> (
    rumqttc::AsyncClient,
    mpsc::UnboundedReceiver<rumqttc::Publish>,
) {
    let mut options = rumqttc::MqttOptions::new(client_id, "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut event_loop) = rumqttc::AsyncClient::new(options, 256);
    let (incoming, received) = mpsc::unbounded_channel();
    let (connected, is_connected) = tokio::sync::oneshot::channel();
    // The event loop stops once every client handle is gone; this one keeps
    // it serving until the test's runtime ends.
    let keep_serving = client.clone();
    tokio::spawn(async move {
        let _keep_serving = keep_serving;
        let mut connected = Some(connected);
        loop {
            match event_loop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    if let Some(connected) = connected.take() {
                        let _ = connected.send(());
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(message))) => {
                    // A publish-only client has nobody reading; that is fine.
                    let _ = incoming.send(message);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    within("connecting to mosquitto", is_connected)
        .await
        .expect("the event loop reports the connection");
    (client, received)
}

/// Subscribes to `filter` and returns the messages that arrive on it.
async fn subscriber(broker: &Mosquitto, filter: &str) -> mpsc::UnboundedReceiver<rumqttc::Publish> {
    let (client, received) = mqtt_client(broker, "test-subscriber").await;
    client
        .subscribe(filter, rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribing");
    // Mosquitto handles one connection's packets in order: once a probe
    // published after both subscriptions comes back, they are in place.
    let mut received = received;
    let probe = "probe/subscribed";
    client
        .subscribe(probe, rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribing to the probe");
    client
        .publish(probe, rumqttc::QoS::AtLeastOnce, false, "probe")
        .await
        .expect("publishing the probe");
    let echo = within("the subscription to take effect", received.recv())
        .await
        .expect("the subscriber runs");
    assert_eq!(echo.topic, probe);
    client
        .unsubscribe(probe)
        .await
        .expect("unsubscribing the probe");
    received
}

/// Submits `count` deliveries to `devices/a` of sink `devices`, under one
/// ordering key, carrying "0", "1", ... in turn.
async fn submit_numbered(sinks: &Sinks, count: usize) {
    for n in 0..count {
        sinks
            .submit("devices", publish("devices/a", 1, n.to_string()), None)
            .await
            .expect("submitting");
    }
}

/// Receives `count` messages and checks that they carry "0", "1", ... in order.
async fn expect_numbered(
    received: &mut mpsc::UnboundedReceiver<rumqttc::Publish>,
    count: usize,
    what: &str,
) {
    for expected in 0..count {
        let message = within(what, received.recv())
            .await
            .expect("the subscriber runs");
        assert_eq!(message.payload, expected.to_string().as_bytes(), "in order");
    }
}

/// Waits until sink `devices` has delivered `count` in all and the outbox is empty.
async fn all_delivered(sinks: &Sinks, count: u64, what: &str) {
    eventually(what, || {
        stats_of(sinks, "devices").delivered == count && sinks.outbox_stats().records == 0
    })
    .await;
}

/// The gateway's side of the mqtt sink, as a plain MQTT 3.1.1 client.
struct MqttPublisher {
    client: rumqttc::AsyncClient,
}

impl MqttPublisher {
    async fn connect(broker: &Mosquitto) -> Arc<Self> {
        let (client, _) = mqtt_client(broker, "test-gateway").await;
        Arc::new(MqttPublisher { client })
    }
}

#[async_trait::async_trait]
impl Publisher for MqttPublisher {
    async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        _user_properties: &[Property],
    ) -> Result<Confirmation, String> {
        self.client
            .publish_bytes(topic, rumqttc_qos(qos), retain, payload)
            .await
            .map_err(|error| error.to_string())?;
        Ok(confirmed_at_once())
    }
}

/// A publisher that holds every publish until the test lets it through: a
/// stand-in for a slow broker connection.
struct GatedPublisher {
    gate: Semaphore,
    inner: Arc<MqttPublisher>,
}

impl GatedPublisher {
    /// Connected to `broker`, letting nothing through until `gate` has permits.
    async fn closed(broker: &Mosquitto) -> Arc<Self> {
        Arc::new(GatedPublisher {
            gate: Semaphore::new(0),
            inner: MqttPublisher::connect(broker).await,
        })
    }
}

#[async_trait::async_trait]
impl Publisher for GatedPublisher {
    async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        user_properties: &[Property],
    ) -> Result<Confirmation, String> {
        self.gate
            .acquire()
            .await
            .map_err(|error| error.to_string())?
            .forget();
        self.inner
            .publish(topic, payload, qos, retain, user_properties)
            .await
    }
}

/// A publisher that sends at once but confirms each publish only with the
/// outcome the test gives next: a stand-in for a broker's acknowledgements.
struct HeldConfirmations {
    inner: Arc<MqttPublisher>,
    outcomes: Arc<Mutex<mpsc::UnboundedReceiver<Result<(), String>>>>,
}

impl HeldConfirmations {
    /// Connected to `broker`; publishes are confirmed, in order, by what is
    /// sent on the returned channel.
    async fn connect(broker: &Mosquitto) -> (Arc<Self>, mpsc::UnboundedSender<Result<(), String>>) {
        let (confirm, outcomes) = mpsc::unbounded_channel();
        let publisher = HeldConfirmations {
            inner: MqttPublisher::connect(broker).await,
            outcomes: Arc::new(Mutex::new(outcomes)),
        };
        (Arc::new(publisher), confirm)
    }
}

#[async_trait::async_trait]
impl Publisher for HeldConfirmations {
    async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        user_properties: &[Property],
    ) -> Result<Confirmation, String> {
        // The plain client's own confirmation is ready at once: the test
        // gives this one's.
        let _at_once = self
            .inner
            .publish(topic, payload, qos, retain, user_properties)
            .await?;
        let outcomes = self.outcomes.clone();
        Ok(Box::pin(async move {
            let outcome = outcomes.lock().await.recv().await;
            outcome.unwrap_or_else(|| Err("the test ended".to_owned()))
        }))
    }
}

// ------------------------------------------------------------ configuration ---

#[test]
fn sink_tables_of_every_kind_parse_and_validate() {
    let configs = sink_tables(
        r#"
        [sinks.archive]
        type = "s3"
        bucket = "sensor-archive"
        region = "eu-west-1"
        endpoint = "http://127.0.0.1:9000"
        path_style = true

        [sinks.alerts]
        type = "sns"
        topic_arn = "arn:aws:sns:eu-west-1:123456789012:alerts"
        attempts = 3

        [sinks.local]
        type = "file"
        directory = "/var/lib/rulegate/out"

        [sinks.devices]
        type = "mqtt"
        queue_capacity = 16
        concurrency = 1
        "#,
    );
    let kinds: Vec<(&str, SinkKind)> = configs
        .iter()
        .map(|(name, config)| (name.as_str(), config.kind()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("alerts", SinkKind::Sns),
            ("archive", SinkKind::S3),
            ("devices", SinkKind::Mqtt),
            ("local", SinkKind::File),
        ]
    );
    for (name, config) in &configs {
        config.validate(name).expect("a valid sink table");
    }
    assert_eq!(configs["alerts"].attempts, 3);
    assert_eq!(configs["archive"].attempts, 5, "default attempts");
    assert_eq!(configs["archive"].initial_backoff_ms, 200);
    assert_eq!(configs["archive"].max_backoff_ms, 30_000);
    assert_eq!(configs["archive"].queue_capacity, 1024);
    assert_eq!(configs["archive"].concurrency, 4);
}

#[test]
fn unknown_sink_key_is_rejected_naming_the_key() {
    let error = toml::from_str::<BTreeMap<String, BTreeMap<String, SinkConfig>>>(
        "[sinks.archive]\ntype = \"s3\"\nbukket = \"x\"\n",
    )
    .expect_err("a misspelt key");
    assert!(error.to_string().contains("bukket"), "{error}");
}

#[test]
fn keys_that_do_not_fit_the_sink_type_are_rejected_naming_them() {
    let configs = sink_tables(
        r#"
        [sinks.local]
        type = "file"
        directory = "out"
        bucket = "sensor-archive"

        [sinks.archive]
        type = "s3"

        [sinks.devices]
        type = "mqtt"
        concurrency = 0
        "#,
    );
    let error = configs["local"]
        .validate("local")
        .expect_err("bucket on a file sink");
    assert!(matches!(
        error,
        SinkConfigError::NotApplicable { key: "bucket", .. }
    ));
    assert!(error.to_string().contains("[sinks.local]"), "{error}");

    let error = configs["archive"]
        .validate("archive")
        .expect_err("s3 without bucket");
    assert!(matches!(
        error,
        SinkConfigError::Missing { key: "bucket", .. }
    ));

    let error = configs["devices"]
        .validate("devices")
        .expect_err("no workers");
    assert!(matches!(
        error,
        SinkConfigError::Invalid {
            key: "concurrency",
            ..
        }
    ));
}

#[tokio::test]
async fn mqtt_sink_without_a_publisher_fails_to_start_naming_the_sink() {
    let configs = sink_tables("[sinks.devices]\ntype = \"mqtt\"\n");
    let (failures, _failed) = mpsc::channel(1);
    let state = tempfile::tempdir().expect("a directory for the outbox");
    let error = Sinks::start(&configs, SinkEnv::new(), &outbox_in(state.path()), failures)
        .await
        .err()
        .expect("an mqtt sink needs a publisher");
    let message = format!("{error:#}");
    assert!(
        message.contains("devices") && message.contains("publisher"),
        "{message}"
    );
}

#[tokio::test]
async fn submit_rejects_unknown_sinks_and_targets_of_another_kind() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let (sinks, _failed, _outbox) = start(&file_sink(directory.path()), SinkEnv::new()).await;

    let error = sinks
        .submit("archive", object("a", "x"), None)
        .await
        .expect_err("no such sink");
    assert_eq!(
        error,
        SubmitError::UnknownSink {
            sink: "archive".into()
        }
    );

    let error = sinks
        .submit("local", publish("devices/1", 1, "x"), None)
        .await
        .expect_err("a publish on a file sink");
    assert!(matches!(
        error,
        SubmitError::TargetMismatch {
            kind: SinkKind::File,
            target: "publish",
            ..
        }
    ));
    sinks.shutdown(PATIENCE).await;
}

// ---------------------------------------------------------------------- s3 ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_object_is_stored_under_the_exact_key_with_identical_bytes() {
    let moto = Moto::start();
    moto.create_bucket("sensor-archive").await;
    let (sinks, _failed, _outbox) =
        start_on_moto(&moto, &s3_sink(&moto, "sensor-archive", "")).await;

    // Not UTF-8, with bytes that text handling would mangle.
    let body: Vec<u8> = (0..=255u8).chain([0, 13, 10, 0xff]).collect();
    let key = "soil/soilSensor3/2020-08-27T13:47:52 #1.bin";
    sinks
        .submit("archive", object(key, body.clone()), None)
        .await
        .expect("submitting");
    sinks.shutdown(PATIENCE).await;

    assert_eq!(moto.list_keys("sensor-archive").await, [key]);
    assert_eq!(moto.get_object("sensor-archive", key).await, body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_to_a_stopped_service_are_retried_and_all_arrive_after_restart() {
    let mut moto = Moto::start();
    moto.create_bucket("sensor-archive").await;
    let retry_quickly_for_long =
        "attempts = 100\ninitial_backoff_ms = 20\nmax_backoff_ms = 300\ntimeout_ms = 2000";
    let configs = s3_sink(&moto, "sensor-archive", retry_quickly_for_long);
    let (sinks, mut failed, _outbox) = start_on_moto(&moto, &configs).await;

    moto.stop();
    let keys: Vec<String> = (0..6).map(|n| format!("reading-{n}.json")).collect();
    for (n, key) in keys.iter().enumerate() {
        let mut delivery = object(key, format!("{{\"n\":{n}}}"));
        delivery.ordering_key = n as u64;
        sinks
            .submit("archive", delivery, None)
            .await
            .expect("submitting");
    }
    eventually("retries while moto is down", || {
        stats_of(&sinks, "archive").retried >= 6
    })
    .await;
    assert_eq!(stats_of(&sinks, "archive").delivered, 0);
    assert_eq!(stats_of(&sinks, "archive").queued, 6);

    // moto comes back empty; the bucket is the operator's to restore.
    moto.restart();
    moto.create_bucket("sensor-archive").await;
    eventually("every delivery after the restart", || {
        stats_of(&sinks, "archive").delivered == 6
    })
    .await;

    let stats = stats_of(&sinks, "archive");
    assert_eq!((stats.failed, stats.queued), (0, 0));
    assert_eq!(stats.latency_count, 6);
    assert!(stats.latency_total > Duration::ZERO);
    assert!(
        failed.try_recv().is_err(),
        "nothing was handed back as failed"
    );
    assert_eq!(moto.list_keys("sensor-archive").await, keys);
    sinks.shutdown(PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_service_is_waited_for_beyond_the_attempts_and_across_a_restart() {
    let mut moto = Moto::start();
    moto.create_bucket("sensor-archive").await;
    let two_quick_attempts =
        "attempts = 2\ninitial_backoff_ms = 20\nmax_backoff_ms = 100\ntimeout_ms = 1000";
    let configs = s3_sink(&moto, "sensor-archive", two_quick_attempts);
    let state = tempfile::tempdir().expect("a directory for the outbox");
    let outbox = outbox_in(state.path());
    let env = SinkEnv::new().with_aws(moto.sdk_config().await);
    let (sinks, mut failed) = start_with_outbox(&configs, env.clone(), &outbox).await;

    moto.stop();
    let keys: Vec<String> = (0..5).map(|n| format!("reading-{n}.json")).collect();
    for key in &keys {
        sinks
            .submit("archive", object(key, "{}"), None)
            .await
            .expect("submitting");
    }
    eventually("retries well beyond the two attempts", || {
        stats_of(&sinks, "archive").retried >= 10
    })
    .await;
    assert!(failed.try_recv().is_err(), "nothing failed for good");
    assert_eq!(stats_of(&sinks, "archive").delivered, 0);
    let stopping = Instant::now();
    sinks.shutdown(Duration::from_millis(300)).await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "shutdown stops at its grace period"
    );

    // Started again on the same outbox once the service is back, the sinks
    // deliver what the previous run left.
    moto.restart();
    moto.create_bucket("sensor-archive").await;
    let (sinks, _failed) = start_with_outbox(&configs, env, &outbox).await;
    eventually("the deliveries left in the outbox arrive", || {
        stats_of(&sinks, "archive").delivered == 5
    })
    .await;
    assert_eq!(moto.list_keys("sensor-archive").await, keys);
    sinks.shutdown(PATIENCE).await;
    assert!(
        !outbox.path.exists(),
        "an outbox emptied at a clean stop is removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_that_keeps_failing_is_handed_back_with_cause_and_attempts() {
    let moto = Moto::start();
    let three_quick_attempts = "attempts = 3\ninitial_backoff_ms = 10\nmax_backoff_ms = 50";
    let configs = s3_sink(&moto, "no-such-bucket", three_quick_attempts);
    let (sinks, mut failed, _outbox) = start_on_moto(&moto, &configs).await;

    sinks
        .submit("archive", object("reading.json", "{}"), None)
        .await
        .expect("submitting");
    let failure = next_failure(&sinks, &mut failed).await;

    assert_eq!(failure.sink, "archive");
    assert_eq!(failure.attempts, 3);
    assert_eq!(&*failure.delivery.rule, "soil_archive");
    assert!(failure.cause.contains("NoSuchBucket"), "{}", failure.cause);
    assert!(
        failure.cause.contains("no-such-bucket/reading.json"),
        "{}",
        failure.cause
    );
    let stats = stats_of(&sinks, "archive");
    assert_eq!(
        (stats.delivered, stats.retried, stats.failed, stats.queued),
        (0, 2, 1, 0)
    );
    sinks.shutdown(PATIENCE).await;
}

// --------------------------------------------------------------------- sns ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_notification_carries_exact_subject_message_and_attribute() {
    let moto = Moto::start();
    let alerts = moto.create_topic_with_queue("humidity-alerts").await;
    let (sinks, _failed, _outbox) = start_on_moto(&moto, &sns_sink(&moto, &alerts.topic_arn)).await;

    let message = "soilSensor3: humidity 29% is below 30% (2020-08-27T13:47:52.677721)";
    sinks
        .submit(
            "alerts",
            notification(Some("Low humidity: soilSensor3"), message),
            None,
        )
        .await
        .expect("submitting");
    sinks.shutdown(PATIENCE).await;

    let received = moto
        .receive_notifications(&alerts.queue_url, 1, Duration::from_secs(10))
        .await;
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(
        received[0].subject.as_deref(),
        Some("Low humidity: soilSensor3")
    );
    assert_eq!(received[0].message, message);
    assert_eq!(received[0].attributes["device"], "soilSensor3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_fifo_topic_gets_each_delivery_with_its_group_and_deduplication_id_in_order() {
    let moto = Moto::start();
    let alerts = moto.create_topic_with_queue("humidity-alerts.fifo").await;
    let (sinks, mut failed, _outbox) =
        start_on_moto(&moto, &sns_sink(&moto, &alerts.topic_arn)).await;

    // SNS refuses a FIFO publish without a message group and a deduplication id.
    for n in 0..3 {
        sinks
            .submit(
                "alerts",
                notification(Some("fifo"), format!("alert {n}")),
                None,
            )
            .await
            .expect("submitting");
    }
    sinks.shutdown(PATIENCE).await;
    assert!(failed.try_recv().is_err(), "no delivery failed");
    let received = moto
        .receive_notifications(&alerts.queue_url, 3, PATIENCE)
        .await;
    let messages: Vec<&str> = received.iter().map(|n| n.message.as_str()).collect();
    assert_eq!(messages, ["alert 0", "alert 1", "alert 2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_deliveries_that_cannot_succeed_fail_at_once() {
    let moto = Moto::start();
    let alerts = moto.create_topic_with_queue("humidity-alerts").await;
    let (sinks, mut failed, _outbox) =
        start_on_moto(&moto, &sns_sink(&moto, &alerts.topic_arn)).await;

    let binary = notification(Some("ok"), vec![0xff, 0xfe, 0x00]);
    let bad_subject = notification(Some("two\nlines"), "text");
    sinks
        .submit("alerts", binary, None)
        .await
        .expect("submitting");
    let failure = next_failure(&sinks, &mut failed).await;
    assert_eq!(failure.attempts, 1);
    assert!(failure.cause.contains("UTF-8"), "{}", failure.cause);

    sinks
        .submit("alerts", bad_subject, None)
        .await
        .expect("submitting");
    let failure = next_failure(&sinks, &mut failed).await;
    assert_eq!(failure.attempts, 1);
    assert!(failure.cause.contains("subject"), "{}", failure.cause);

    assert_eq!(stats_of(&sinks, "alerts").retried, 0);
    sinks.shutdown(PATIENCE).await;
    let received = moto
        .receive_notifications(&alerts.queue_url, 1, Duration::from_secs(2))
        .await;
    assert!(received.is_empty(), "{received:?}");
}

// -------------------------------------------------------------------- file ---

#[tokio::test]
async fn file_sink_writes_the_key_path_atomically() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let (sinks, _failed, _outbox) = start(&file_sink(directory.path()), SinkEnv::new()).await;

    let key = "soil/soilSensor3/1598536072677.json";
    sinks
        .submit("local", object(key, "first"), None)
        .await
        .expect("submitting");
    sinks
        .submit("local", object(key, "second, replacing the first"), None)
        .await
        .expect("submitting");
    sinks.shutdown(PATIENCE).await;

    let written = directory.path().join(key);
    assert_eq!(
        std::fs::read_to_string(&written).expect("reading the file"),
        "second, replacing the first"
    );
    let beside: Vec<_> = std::fs::read_dir(written.parent().expect("a parent"))
        .expect("listing")
        .map(|entry| entry.expect("an entry").file_name())
        .collect();
    assert_eq!(
        beside,
        ["1598536072677.json"],
        "no temporary files are left"
    );
}

#[tokio::test]
async fn file_sink_refuses_keys_that_escape_its_directory() {
    let root = tempfile::tempdir().expect("temporary directory");
    let directory = root.path().join("out");
    let (sinks, mut failed, _outbox) = start(&file_sink(&directory), SinkEnv::new()).await;

    for key in [
        "../escaped.json",
        "soil/../../escaped.json",
        "/tmp/escaped.json",
        "",
    ] {
        sinks
            .submit("local", object(key, "x"), None)
            .await
            .expect("submitting");
        let failure = next_failure(&sinks, &mut failed).await;
        assert_eq!(failure.attempts, 1, "{key:?} is not retried");
        assert!(
            failure.cause.contains(&format!("{key:?}")),
            "{}",
            failure.cause
        );
    }
    sinks.shutdown(PATIENCE).await;
    assert!(!root.path().join("escaped.json").exists());
    assert_eq!(std::fs::read_dir(&directory).expect("listing").count(), 0);
}

// -------------------------------------------------------------------- mqtt ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_sink_republishes_to_the_device_topic() {
    let broker = Mosquitto::start();
    let mut received = subscriber(&broker, "devices/#").await;
    let configs = BTreeMap::from([("devices".to_owned(), SinkConfig::mqtt())]);
    let env = SinkEnv::new().with_publisher(MqttPublisher::connect(&broker).await);
    let (sinks, _failed, _outbox) = start(&configs, env).await;

    sinks
        .submit(
            "devices",
            publish("devices/soilSensor3/valve", 1, "{\"open\":true}"),
            None,
        )
        .await
        .expect("submitting");

    let message = within("the republished message", received.recv())
        .await
        .expect("the subscriber runs");
    assert_eq!(message.topic, "devices/soilSensor3/valve");
    assert_eq!(&message.payload[..], b"{\"open\":true}");
    sinks.shutdown(PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_with_one_ordering_key_arrive_in_submission_order() {
    let broker = Mosquitto::start();
    let mut received = subscriber(&broker, "devices/#").await;
    let configs = sink_tables("[sinks.devices]\ntype = \"mqtt\"\nconcurrency = 4\n");
    let env = SinkEnv::new().with_publisher(MqttPublisher::connect(&broker).await);
    let (sinks, _failed, _outbox) = start(&configs, env).await;

    // Two interleaved streams, each with its own ordering key.
    const COUNT: usize = 200;
    for n in 0..COUNT {
        for (key, topic) in [(7, "devices/a"), (8, "devices/b")] {
            sinks
                .submit("devices", publish(topic, key, n.to_string()), None)
                .await
                .expect("submitting");
        }
    }
    sinks.shutdown(PATIENCE).await;

    let mut by_topic: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for _ in 0..2 * COUNT {
        let message = within("all republished messages", received.recv())
            .await
            .expect("the subscriber runs");
        let n = std::str::from_utf8(&message.payload)
            .ok()
            .and_then(|text| text.parse().ok())
            .expect("a counter payload");
        by_topic.entry(message.topic).or_default().push(n);
    }
    let in_order: Vec<usize> = (0..COUNT).collect();
    assert_eq!(by_topic["devices/a"], in_order);
    assert_eq!(by_topic["devices/b"], in_order);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_worker_publishes_ahead_of_acknowledgements_and_settles_each_on_its_own() {
    let broker = Mosquitto::start();
    let mut received = subscriber(&broker, "devices/#").await;
    let (publisher, confirm) = HeldConfirmations::connect(&broker).await;
    let configs = sink_tables("[sinks.devices]\ntype = \"mqtt\"\nconcurrency = 1\n");
    let (sinks, _failed, _outbox) = start(&configs, SinkEnv::new().with_publisher(publisher)).await;

    submit_numbered(&sinks, 5).await;
    expect_numbered(
        &mut received,
        5,
        "publishes sent before any acknowledgement",
    )
    .await;
    eventually("the outbox stores all five", || {
        sinks.outbox_stats().records == 5
    })
    .await;
    assert_eq!(
        stats_of(&sinks, "devices").delivered,
        0,
        "nothing counts as delivered before its acknowledgement"
    );

    for _ in 0..2 {
        confirm.send(Ok(())).expect("the publisher waits");
    }
    eventually("the two acknowledged deliveries leave the outbox", || {
        stats_of(&sinks, "devices").delivered == 2 && sinks.outbox_stats().records == 3
    })
    .await;
    for _ in 0..3 {
        confirm.send(Ok(())).expect("the publisher waits");
    }
    all_delivered(&sinks, 5, "the rest leave the outbox").await;
    sinks.shutdown(PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_broker_may_not_have_is_sent_again() {
    let broker = Mosquitto::start();
    let mut received = subscriber(&broker, "devices/#").await;
    let (publisher, confirm) = HeldConfirmations::connect(&broker).await;
    let configs =
        sink_tables("[sinks.devices]\ntype = \"mqtt\"\nconcurrency = 1\ninitial_backoff_ms = 10\n");
    let (sinks, _failed, _outbox) = start(&configs, SinkEnv::new().with_publisher(publisher)).await;

    sinks
        .submit("devices", publish("devices/a", 1, "lost"), None)
        .await
        .expect("submitting");
    confirm
        .send(Err("the connection lost it".to_owned()))
        .expect("the publisher waits");
    for copy in ["first", "second"] {
        let message = within("the publish and its repeat", received.recv())
            .await
            .unwrap_or_else(|| panic!("the {copy} copy"));
        assert_eq!(&message.payload[..], b"lost");
    }
    assert_eq!(stats_of(&sinks, "devices").delivered, 0);
    confirm.send(Ok(())).expect("the publisher waits");
    eventually("the repeat is delivered and settled", || {
        let stats = stats_of(&sinks, "devices");
        stats.delivered == 1 && stats.retried == 1 && sinks.outbox_stats().records == 0
    })
    .await;
    sinks.shutdown(PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_unacknowledged_at_shutdown_stay_stored_and_go_out_after_a_restart() {
    let broker = Mosquitto::start();
    let mut received = subscriber(&broker, "devices/#").await;
    let state = tempfile::tempdir().expect("a directory for the outbox");
    let settings = outbox_in(state.path());
    let configs = sink_tables("[sinks.devices]\ntype = \"mqtt\"\n");
    let (publisher, _never_confirmed) = HeldConfirmations::connect(&broker).await;
    let (sinks, _failed) = start_with_outbox(
        &configs,
        SinkEnv::new().with_publisher(publisher),
        &settings,
    )
    .await;
    submit_numbered(&sinks, 3).await;
    expect_numbered(&mut received, 3, "the publishes, unacknowledged").await;
    let final_stats = sinks.shutdown(Duration::from_millis(300)).await;
    assert_eq!(final_stats[0].1.delivered, 0);

    let env = SinkEnv::new().with_publisher(MqttPublisher::connect(&broker).await);
    let (sinks, _failed) = start_with_outbox(&configs, env, &settings).await;
    expect_numbered(&mut received, 3, "the stored publishes, again").await;
    all_delivered(&sinks, 3, "the outbox empties").await;
    sinks.shutdown(PATIENCE).await;
}

// ------------------------------------------------------------ backpressure ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sink_holds_its_queue_capacity_and_the_outbox_keeps_the_rest() {
    let broker = Mosquitto::start();
    let mut received = subscriber(&broker, "devices/#").await;
    let publisher = GatedPublisher::closed(&broker).await;
    let configs =
        sink_tables("[sinks.devices]\ntype = \"mqtt\"\nqueue_capacity = 2\nconcurrency = 1\n");
    let (sinks, _failed, _outbox) =
        start(&configs, SinkEnv::new().with_publisher(publisher.clone())).await;

    for n in 0..10 {
        within(
            "storing in the outbox while the sink is stalled",
            sinks.submit("devices", publish("devices/a", 1, n.to_string()), None),
        )
        .await
        .expect("submitting");
    }
    eventually("the outbox holds all ten", || {
        sinks.outbox_stats().records == 10
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        stats_of(&sinks, "devices").queued,
        2,
        "the sink takes no more than its queue_capacity into memory"
    );

    publisher.gate.add_permits(10);
    expect_numbered(&mut received, 10, "the republished messages").await;
    eventually("the outbox empties", || sinks.outbox_stats().records == 0).await;
    sinks.shutdown(PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_stores_nothing_more_and_submit_waits_until_deliveries_make_room() {
    let broker = Mosquitto::start();
    let publisher = GatedPublisher::closed(&broker).await;
    let configs = sink_tables("[sinks.devices]\ntype = \"mqtt\"\n");
    let state = tempfile::tempdir().expect("a directory for the outbox");
    let settings = OutboxSettings {
        max_bytes: 1,
        ..outbox_in(state.path())
    };
    let env = SinkEnv::new().with_publisher(publisher.clone());
    let (sinks, _failed) = start_with_outbox(&configs, env, &settings).await;

    within("the first delivery, into an empty outbox", async {
        sinks
            .submit("devices", publish("devices/a", 1, "0"), None)
            .await
    })
    .await
    .expect("submitting");
    eventually("the first delivery is stored", || {
        sinks.outbox_stats().records == 1
    })
    .await;
    // Further deliveries wait in the writer's queue, unstored; once that is
    // full, submit waits.
    let mut submitted = 1u64;
    loop {
        let next = sinks.submit(
            "devices",
            publish("devices/a", 1, submitted.to_string()),
            None,
        );
        if timeout(Duration::from_millis(300), next).await.is_err() {
            break;
        }
        submitted += 1;
        assert!(submitted < 100_000, "submit never waited");
    }
    assert_eq!(sinks.outbox_stats().records, 1, "nothing more was stored");

    publisher.gate.add_permits(usize::MAX >> 4);
    all_delivered(
        &sinks,
        submitted,
        "everything taken is delivered once the sink has room",
    )
    .await;
    assert_eq!(sinks.outbox_stats().dropped, 0);
    sinks.shutdown(PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_keeps_the_newest_deliveries_and_counts_the_dropped() {
    let broker = Mosquitto::start();
    let mut received = subscriber(&broker, "devices/#").await;
    let publisher = GatedPublisher::closed(&broker).await;
    let configs =
        sink_tables("[sinks.devices]\ntype = \"mqtt\"\nqueue_capacity = 1\nconcurrency = 1\n");
    let state = tempfile::tempdir().expect("a directory for the outbox");
    let settings = OutboxSettings {
        // Room for a few of these deliveries (about 45 bytes each).
        max_bytes: 240,
        when_full: WhenFull::DropOldest,
        ..outbox_in(state.path())
    };
    let env = SinkEnv::new().with_publisher(publisher.clone());
    let (sinks, _failed) = start_with_outbox(&configs, env, &settings).await;

    for n in 0..20 {
        within(
            "a full outbox never makes submit wait with drop_oldest",
            sinks.submit("devices", publish("devices/a", 1, format!("{n:02}")), None),
        )
        .await
        .expect("submitting");
    }
    eventually("all twenty stored or dropped", || {
        let stats = sinks.outbox_stats();
        stats.records + stats.dropped == 20
    })
    .await;
    let stats = sinks.outbox_stats();
    assert!(stats.dropped >= 15, "{stats:?}");
    assert!(stats.bytes <= settings.max_bytes, "{stats:?}");

    publisher.gate.add_permits(20);
    eventually("the rest is delivered", || {
        sinks.outbox_stats().records == 0
    })
    .await;
    let mut payloads = Vec::new();
    while let Ok(Some(message)) = timeout(Duration::from_millis(500), received.recv()).await {
        payloads.push(String::from_utf8(message.payload.to_vec()).expect("text"));
    }
    assert!(
        payloads.last().is_some_and(|last| last == "19"),
        "the newest survives: {payloads:?}"
    );
    assert!(payloads.len() < 20, "some were dropped: {payloads:?}");
    sinks.shutdown(PATIENCE).await;
}

/// Far more than a stalled sink's hand-over queue and `queue_capacity` hold:
/// were the outbox writer to wait for that sink at each of them (20 ms), the
/// file sink behind them would wait longer than the test's patience.
const STALLED: u32 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sink_does_not_hold_up_the_others() {
    let broker = Mosquitto::start();
    let publisher = GatedPublisher::closed(&broker).await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let configs = sink_tables(&format!(
        r#"
        [sinks.devices]
        type = "mqtt"
        queue_capacity = 1
        concurrency = 1

        [sinks.local]
        type = "file"
        directory = {:?}
        "#,
        directory.path().display().to_string()
    ));
    let (sinks, _failed, _outbox) =
        start(&configs, SinkEnv::new().with_publisher(publisher.clone())).await;

    for _ in 0..STALLED {
        sinks
            .submit("devices", publish("devices/a", 1, "held"), None)
            .await
            .expect("submitting");
    }
    for n in 0..20 {
        within(
            "the file sink while the mqtt sink is stalled",
            sinks.submit("local", object(&format!("{n}.json"), "{}"), None),
        )
        .await
        .expect("submitting");
    }
    eventually("the file sink delivers", || {
        stats_of(&sinks, "local").delivered == 20
    })
    .await;
    assert_eq!(stats_of(&sinks, "devices").delivered, 0);

    publisher.gate.add_permits(STALLED as usize);
    eventually("the mqtt sink catches up", || {
        stats_of(&sinks, "devices").delivered == u64::from(STALLED)
    })
    .await;
    sinks.shutdown(PATIENCE).await;
}

// ----------------------------------------------------------------- shutdown ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_everything_queued() {
    let broker = Mosquitto::start();
    let mut received = subscriber(&broker, "devices/#").await;
    let publisher = GatedPublisher::closed(&broker).await;
    let configs = sink_tables("[sinks.devices]\ntype = \"mqtt\"\nconcurrency = 2\n");
    let (sinks, _failed, _outbox) =
        start(&configs, SinkEnv::new().with_publisher(publisher.clone())).await;

    const COUNT: u64 = 50;
    for n in 0..COUNT {
        sinks
            .submit("devices", publish("devices/a", n, n.to_string()), None)
            .await
            .expect("submitting");
    }
    let shutdown = tokio::spawn(sinks.shutdown(PATIENCE));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !shutdown.is_finished(),
        "shutdown waits for queued deliveries"
    );

    publisher.gate.add_permits(COUNT as usize);
    let final_stats = within("shutdown", shutdown)
        .await
        .expect("shutdown completes");
    assert_eq!(final_stats.len(), 1);
    let (name, stats) = &final_stats[0];
    assert_eq!(name, "devices");
    assert_eq!((stats.delivered, stats.queued, stats.failed), (COUNT, 0, 0));
    let mut payloads = Vec::new();
    for _ in 0..COUNT {
        let message = within("the drained messages", received.recv())
            .await
            .expect("the subscriber runs");
        payloads.push(String::from_utf8_lossy(&message.payload).into_owned());
    }
    payloads.sort_by_key(|payload| payload.parse::<u64>().unwrap_or(u64::MAX));
    let expected: Vec<String> = (0..COUNT).map(|n| n.to_string()).collect();
    assert_eq!(payloads, expected);
}
