//! A real Mosquitto broker on a free loopback port, for tests: started with a
//! config written to its own temporary directory, stopped and restarted on the
//! same port for fault tests, killed when dropped.
//!
//! Also home to [`LocalServer`] and [`free_port`], which the moto harness
//! shares.

use std::ffi::OsString;
use std::fs;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub struct Mosquitto {
    server: LocalServer,
    /// The TLS listener's port, when the broker has one.
    tls_port: Option<u16>,
}

/// A TLS listener: the CA that signed client certificates, the server's
/// certificate and key, and whether clients must present a certificate.
pub struct TlsListener<'a> {
    pub ca: &'a Path,
    pub certificate: &'a Path,
    pub key: &'a Path,
    pub require_client_certificate: bool,
}

impl Mosquitto {
    /// A broker without persistence: a restart forgets sessions and retained
    /// messages.
    pub fn start() -> Mosquitto {
        Self::start_with(false)
    }

    /// A broker that keeps sessions, queued and retained messages in its
    /// temporary directory across [`Mosquitto::restart`], saved after every
    /// change.
    pub fn start_persistent() -> Mosquitto {
        Self::start_with(true)
    }

    /// A broker with a plain listener ([`Mosquitto::port`]) for the tests'
    /// own clients and a TLS listener ([`Mosquitto::tls_port`]).
    pub fn start_tls(tls: &TlsListener<'_>) -> Mosquitto {
        let port = free_port();
        // `user root`: as root, mosquitto would read the keys as its own user,
        // which cannot enter this test's directories.
        let listener = format!(
            "user root\nlistener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
            tls.ca.display(),
            tls.certificate.display(),
            tls.key.display(),
            tls.require_client_certificate,
        );
        let mut broker = Self::start_with_listeners(false, &listener);
        broker.tls_port = Some(port);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !accepts_tcp(port) {
            assert!(Instant::now() < deadline, "the TLS listener did not open");
            thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    pub fn tls_port(&self) -> u16 {
        self.tls_port.expect("a broker started with start_tls")
    }

    fn start_with(persistence: bool) -> Mosquitto {
        Self::start_with_listeners(persistence, "")
    }

    fn start_with_listeners(persistence: bool, more_listeners: &str) -> Mosquitto {
        let directory = tempfile::tempdir().expect("creating a directory for mosquitto");
        let port = free_port();
        // TCP_NODELAY, as a latency-minded deployment sets it: with Nagle's
        // algorithm every request/answer exchange waits out a delayed ACK. No
        // cap on a client's queue: by default Mosquitto drops QoS 1 messages
        // beyond 1,000 waiting for a subscriber (the gateway, when it applies
        // backpressure), and a gateway's broker should hold them instead.
        let mut config = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\nmax_queued_messages 0\npersistence {persistence}\n"
        );
        if persistence {
            // Started as root, mosquitto would switch to its own user, which
            // cannot write to this test's directory.
            // Saved after every change, so that even SIGKILL loses at most
            // the change under way.
            config.push_str(&format!(
                "persistence_location {}/\nuser root\nautosave_interval 1\nautosave_on_changes true\n",
                directory.path().display()
            ));
        }
        config.push_str(more_listeners);
        let config_path = directory.path().join("mosquitto.conf");
        fs::write(&config_path, config).expect("writing mosquitto.conf");
        let server = LocalServer {
            name: "mosquitto",
            program: executable(),
            args: vec!["-c".into(), config_path.into()],
            port,
            directory,
            ready: accepts_tcp,
            ready_within: Duration::from_secs(10),
            child: None,
        };
        Mosquitto {
            server: server.started(),
            tls_port: None,
        }
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// `mqtt://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.server.port)
    }

    /// Kills the broker; connected clients see the connection drop.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Stops the broker if it runs, then starts it again on the same port.
    pub fn restart(&mut self) {
        self.server.restart();
    }
}

/// `mosquitto` from PATH, else the Debian package's location.
fn executable() -> PathBuf {
    let packaged = Path::new("/usr/sbin/mosquitto");
    match find_in_path("mosquitto") {
        Some(path) => path,
        None if packaged.is_file() => packaged.to_path_buf(),
        None => panic!(
            "mosquitto not found in PATH or /usr/sbin; install it: apt-get install mosquitto"
        ),
    }
}

/// A server process for tests on a loopback port, its log kept in its own
/// temporary directory and shown when it fails to start; killed when dropped.
pub struct LocalServer {
    /// For messages: "mosquitto", "moto_server".
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub port: u16,
    /// Holds the log and any files the server needs.
    pub directory: TempDir,
    /// Whether the server on this port serves yet.
    pub ready: fn(u16) -> bool,
    /// How long it may take to start serving.
    pub ready_within: Duration,
    pub child: Option<Child>,
}

impl LocalServer {
    /// Spawns the server and waits until it serves.
    pub fn started(mut self) -> Self {
        self.spawn();
        self
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already gone is fine: the point is that it no longer runs.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn log_path(&self) -> PathBuf {
        self.directory.path().join(format!("{}.log", self.name))
    }

    fn spawn(&mut self) {
        // Appended to, so the log of a restarted server keeps its history.
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|error| panic!("opening the log of {}: {error}", self.name));
        let stderr = log.try_clone().expect("sharing the server's log file");
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|error| panic!("spawning {}: {error}", self.program.display()));
        self.child = Some(child);
        self.wait_until_ready();
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + self.ready_within;
        while !(self.ready)(self.port) {
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            let log = || fs::read_to_string(self.log_path()).unwrap_or_default();
            if let Some(status) = exited {
                panic!(
                    "{} exited with {status} before serving:\n{}",
                    self.name,
                    log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not serve on port {} within {:?}:\n{}",
                    self.name,
                    self.port,
                    self.ready_within,
                    log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether something accepts TCP connections on loopback `port`.
pub fn accepts_tcp(port: u16) -> bool {
    TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("finding a free loopback port")
}

/// `program` in one of PATH's directories.
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
