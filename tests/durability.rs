//! Never losing a message: the gateway killed with SIGKILL mid-stream, the
//! broker killed and restarted mid-stream, S3 down mid-stream, against real Mosquitto and
//! S3 (moto). Every reading goes to its own S3 key, so a test counts what
//! arrived (keys), what arrived twice (versions in a versioned bucket, or
//! repeated PUTs in moto's access log) and what was lost (readings without a
//! key).

mod harness;

use harness::mosquitto::Mosquitto;
use harness::moto::Moto;
use harness::recorder::Recorder;
use rulegate::config::GatewayConfig;
use rulegate::gateway::Gateway;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::task::JoinHandle;

const BUCKET: &str = "readings";
/// Readings per test, published at [`RATE`]: a six-second stream.
const READINGS: u64 = 3_000;
const RATE: u64 = 500;
/// Where in the stream a test's fault strikes: a third in.
const FAULT_AT: usize = READINGS as usize / 3;
/// How long S3 is down in the outage test: a tenth of the stream.
const OUTAGE: Duration = Duration::from_secs(5);

/// A gateway's directory: its configuration (archive every reading to S3
/// under `readings/<seq>`) and its state directory, which holds the outbox.
/// `rulegate run` runs it on its main thread (`worker_threads = 1`); a
/// gateway started in the test's process runs on the test's runtime.
struct Site {
    dir: TempDir,
}

impl Site {
    fn new(mosquitto: &Mosquitto, moto: &Moto) -> Site {
        let dir = tempfile::tempdir().expect("a directory for the gateway");
        let config = format!(
            r#"
[gateway]
state_dir = "state"
stats_interval_secs = 0
watch = false
worker_threads = 1

[broker]
url = "{broker}"
client_id = "durable-{id}"

[sinks.archive]
type = "s3"
bucket = "{BUCKET}"
endpoint = "{endpoint}"
path_style = true
region = "us-east-1"
initial_backoff_ms = 50
max_backoff_ms = 1000

[sinks.relay]
type = "mqtt"

[[rules]]
name = "archive"
sql = "SELECT * FROM 'sensors/+/reading'"
[[rules.actions]]
sink = "archive"
key = "readings/${{seq}}"

[[rules]]
name = "relay"
sql = "SELECT seq FROM 'sensors/+/reading'"
[[rules.actions]]
sink = "relay"
topic = "relayed/${{topic(2)}}"
"#,
            broker = mosquitto.url(),
            id = uuid::Uuid::new_v4().simple(),
            endpoint = moto.endpoint(),
        );
        std::fs::write(dir.path().join("gateway.toml"), config).expect("writing the config");
        Site { dir }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.toml")
    }

    fn config(&self) -> GatewayConfig {
        GatewayConfig::load(&self.config_path()).unwrap_or_else(|error| panic!("{error}"))
    }

    /// Runs `rulegate run` on this site, its log appended to `gateway.log`.
    fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("gateway.log"))
            .expect("opening the gateway log");
        Command::new(env!("CARGO_BIN_EXE_rulegate"))
            .args(["run", "--config"])
            .arg(self.config_path())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting rulegate run")
    }

    /// Runs `rulegate run` and waits until it is subscribed: only then does
    /// the broker keep messages for its session.
    fn spawn_ready(&self) -> Child {
        let gateway = self.spawn();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.log().contains("gateway ready") {
            assert!(
                Instant::now() < deadline,
                "the gateway did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        gateway
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }
}

/// A device that publishes readings `{"seq": n}` with QoS 1 at `RATE` per
/// second and keeps its session (and its unacknowledged publishes) across a
/// broker restart. Stops publishing when dropped.
struct Device {
    task: JoinHandle<()>,
    /// How many of its publishes the broker acknowledged.
    acknowledged: Arc<AtomicUsize>,
}

impl Device {
    fn start(port: u16) -> Device {
        let mut options = MqttOptions::new("durable-device", "127.0.0.1", port);
        options
            .set_clean_session(false)
            .set_keep_alive(Duration::from_secs(5));
        let (client, mut events) = AsyncClient::new(options, 1024);
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let counter = acknowledged.clone();
        let task = tokio::spawn(async move {
            let publishing = async {
                let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
                for seq in 0..READINGS {
                    ticks.tick().await;
                    let payload = format!(r#"{{"seq":{seq}}}"#);
                    client
                        .publish("sensors/s1/reading", QoS::AtLeastOnce, false, payload)
                        .await
                        .expect("queueing a reading");
                }
                std::future::pending::<()>().await;
            };
            // The event loop sends what is queued, and again after a reconnection.
            let connection = async {
                loop {
                    match events.poll().await {
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            };
            tokio::join!(publishing, connection);
        });
        Device { task, acknowledged }
    }

    fn acknowledged(&self) -> usize {
        self.acknowledged.load(Ordering::Relaxed)
    }

    /// Waits until the broker acknowledged [`FAULT_AT`] readings, the moment
    /// a test's fault strikes (mid-stream by construction), and returns how
    /// many it acknowledged by then.
    async fn fault_point(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.acknowledged() < FAULT_AT {
            assert!(
                Instant::now() < deadline,
                "the broker acknowledged only {} readings",
                self.acknowledged()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.acknowledged()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What reached S3 of the `READINGS` readings.
#[derive(Debug, PartialEq, Eq)]
struct Tally {
    delivered: usize,
    duplicated: usize,
    lost: usize,
    /// The first few readings without a key.
    missing: Vec<u64>,
}

impl Tally {
    /// The tally of the readings that arrived, in `sequence`, repeats included.
    fn of(sequence: &[u64]) -> Tally {
        let distinct: HashSet<u64> = sequence.iter().copied().collect();
        Tally {
            delivered: distinct.len(),
            duplicated: sequence.len() - distinct.len(),
            lost: READINGS as usize - distinct.len(),
            missing: (0..READINGS)
                .filter(|seq| !distinct.contains(seq))
                .take(20)
                .collect(),
        }
    }
}

/// How long delivery may make no progress before a test counts what arrived.
/// Progress, not a fixed deadline: on a loaded machine moto stores a few dozen
/// readings a second, and a slow tail is not a lost one.
const STALL: Duration = Duration::from_secs(30);

/// The sequence numbers S3 stored, in the order it stored them, repeats
/// included: read from moto's access log, which costs moto nothing (listing
/// thousands of keys while it stores would slow it down) and outlives its
/// restart.
fn stored(moto: &Moto) -> Vec<u64> {
    let prefix = format!("/{BUCKET}/readings/");
    moto.successful_puts()
        .iter()
        .filter_map(|path| path.strip_prefix(&prefix)?.parse().ok())
        .collect()
}

/// Waits until S3 stored every reading, or stored no new one for [`STALL`],
/// and returns what it stored.
async fn settle(moto: &Moto) -> Vec<u64> {
    let (mut most, mut progressed) = (0, Instant::now());
    loop {
        let sequence = stored(moto);
        let count = Tally::of(&sequence).delivered;
        if count as u64 >= READINGS || progressed.elapsed() > STALL {
            return sequence;
        }
        if count > most {
            (most, progressed) = (count, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Once delivery settled, counts the readings with a key in S3 and their
/// versions.
async fn tally(moto: &Moto) -> Tally {
    settle(moto).await;
    let keys = moto.list_keys(BUCKET).await;
    let versions = moto.count_versions(BUCKET).await;
    let missing = (0..READINGS)
        .filter(|seq| keys.binary_search(&format!("readings/{seq}")).is_err())
        .take(20)
        .collect();
    Tally {
        delivered: keys.len(),
        duplicated: versions - keys.len(),
        lost: READINGS as usize - keys.len(),
        missing,
    }
}

/// moto with a versioned bucket for the readings, so repeats can be counted.
async fn moto_with_versioned_bucket() -> Moto {
    let moto = Moto::start();
    moto.create_bucket(BUCKET).await;
    moto.enable_versioning(BUCKET).await;
    moto
}

/// Reports the tally of `fault`, which struck after the broker acknowledged
/// `at` of the device's readings, and checks that it struck mid-stream and
/// that nothing was lost.
fn check(fault: &str, at: usize, tally: &Tally) {
    println!("{fault} after {at} readings published: sent {READINGS}, {tally:?}");
    assert!(
        (at as u64) < READINGS,
        "the {fault} came after the stream ended"
    );
    assert_eq!(tally.lost, 0, "{fault}: {tally:?}");
}

fn outbox_files(state: &Path) -> usize {
    std::fs::read_dir(state).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("outbox-"))
            .count()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_delivers_every_acknowledged_reading() {
    let mosquitto = Mosquitto::start();
    let moto = moto_with_versioned_bucket().await;
    let site = Site::new(&mosquitto, &moto);

    let mut relayed = Recorder::subscribe(mosquitto.port(), "relayed/#").await;
    let mut gateway = site.spawn_ready();
    assert!(
        site.log().contains("worker_threads=1"),
        "the gateway runs on its main thread:\n{}",
        site.log()
    );
    let device = Device::start(mosquitto.port());
    let at_fault = device.fault_point().await;
    gateway.kill().expect("kill -9 the gateway");
    gateway.wait().expect("reaping the gateway");
    // The device goes on publishing; the broker keeps the gateway's share.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let gateway = site.spawn();
    let tally = tally(&moto).await;
    check("kill -9", at_fault, &tally);
    // The same readings republished through the mqtt sink, which counts a
    // publish only once the broker acknowledged it.
    let republished = relayed.take(usize::MAX, Duration::from_secs(5)).await;
    let seqs: Vec<u64> = republished
        .iter()
        .map(|(_, payload)| {
            let reading: serde_json::Value = serde_json::from_slice(payload).expect("JSON");
            reading["seq"].as_u64().expect("a sequence number")
        })
        .collect();
    check("kill -9 (mqtt sink)", at_fault, &Tally::of(&seqs));

    harness::terminate(gateway);
    assert_eq!(
        outbox_files(&site.dir.path().join("state")),
        0,
        "an emptied outbox is removed at a clean stop"
    );
}

/// Readings acknowledged before the test decides to kill the broker that it
/// may not have saved yet: it saves from its main loop, so at most those of
/// the loop's last turn.
const UNSAVED_BEFORE_KILL: usize = 5;

/// Mosquitto keeps its database in memory and writes it after acknowledging a
/// publish (here after every change), so a SIGKILL can take with it a reading
/// it acknowledged in its last moments: from every subscriber, and the device
/// does not send it again. What else is missing, the gateway lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_and_restarted_mid_stream_loses_nothing_it_had_saved() {
    let mut mosquitto = Mosquitto::start_persistent();
    let moto = moto_with_versioned_bucket().await;
    let site = Site::new(&mosquitto, &moto);
    let gateway = Gateway::start(site.config(), Some(moto.sdk_config().await))
        .await
        .expect("starting the gateway");

    let device = Device::start(mosquitto.port());
    let at_fault = device.fault_point().await;
    mosquitto.stop();
    // The acknowledgements the broker sent before it died reach the device.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let acknowledged_at_kill = device.acknowledged();
    mosquitto.restart();

    let tally = tally(&moto).await;
    println!(
        "broker kill -9 after {at_fault}..{acknowledged_at_kill} readings acknowledged: \
         sent {READINGS}, {tally:?}"
    );
    assert!(
        (at_fault as u64) < READINGS,
        "the kill came after the stream ended"
    );
    let unsaved = at_fault.saturating_sub(UNSAVED_BEFORE_KILL) as u64..acknowledged_at_kill as u64;
    assert!(
        tally.lost <= unsaved.clone().count()
            && tally.missing.iter().all(|seq| unsaved.contains(seq)),
        "lost readings the broker had saved (it may lose only {unsaved:?}): {tally:?}"
    );
    gateway.shutdown().await.expect("stopping the gateway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_down_mid_stream_then_back_delivers_everything_in_order() {
    let mosquitto = Mosquitto::start();
    let mut moto = Moto::start();
    moto.create_bucket(BUCKET).await;
    let site = Site::new(&mosquitto, &moto);
    let gateway = Gateway::start(site.config(), Some(moto.sdk_config().await))
        .await
        .expect("starting the gateway");

    let device = Device::start(mosquitto.port());
    let at_fault = device.fault_point().await;
    moto.stop();
    tokio::time::sleep(OUTAGE).await;
    // moto comes back empty: the bucket is created again, as an operator would.
    moto.restart();
    moto.create_bucket(BUCKET).await;

    let sequence = settle(&moto).await;
    let tally = Tally::of(&sequence);
    check(&format!("S3 outage of {OUTAGE:?}"), at_fault, &tally);
    // One rule, one topic: one ordering key, delivered one after another. A
    // repeat (an attempt that timed out after S3 stored it) follows its
    // original at once.
    let mut firsts = sequence.clone();
    firsts.dedup();
    assert!(
        firsts.windows(2).all(|pair| pair[0] < pair[1]),
        "stored out of order: {:?}",
        firsts.windows(2).find(|pair| pair[0] >= pair[1])
    );
    let sinks = gateway.shutdown().await.expect("stopping the gateway");
    assert_eq!(sinks.iter().map(|(_, stats)| stats.failed).sum::<u64>(), 0);
}
