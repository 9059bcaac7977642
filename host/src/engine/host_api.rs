//! What a rule instance can reach: the `host` interface of the WIT world (log,
//! clock, configuration) and a WASI context that grants nothing but stdout and
//! stderr, which go to the gateway's log under the rule's name.

use super::bindings::{Level, rulegate::rule};
use super::limits::MemoryLimiter;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// A rule's configuration values (`threshold = "35"`), as strings; the guest SDK
/// parses them. Sorted, so `config-keys` is stable.
pub type RuleConfig = BTreeMap<String, String>;

/// The store data of one rule instance.
pub(crate) struct RuleState {
    rule: Arc<str>,
    config: Arc<RuleConfig>,
    pub(crate) limiter: MemoryLimiter,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl RuleState {
    pub(crate) fn new(rule: Arc<str>, config: Arc<RuleConfig>, limiter: MemoryLimiter) -> Self {
        // No preopened directories, environment, arguments or sockets: the
        // builder grants none of them unless asked, and sockets are shut off too.
        let mut wasi = WasiCtx::builder();
        wasi.stdout(GuestLog::new(rule.clone(), GuestStream::Stdout))
            .stderr(GuestLog::new(rule.clone(), GuestStream::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        RuleState {
            rule,
            config,
            limiter,
            wasi: wasi.build(),
            table: ResourceTable::new(),
        }
    }
}

impl WasiView for RuleState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl rule::types::Host for RuleState {}

impl rule::host::Host for RuleState {
    fn log(&mut self, level: Level, message: String) {
        let rule = &*self.rule;
        match level {
            Level::Trace => tracing::trace!(rule, "{message}"),
            Level::Debug => tracing::debug!(rule, "{message}"),
            Level::Info => tracing::info!(rule, "{message}"),
            Level::Warn => tracing::warn!(rule, "{message}"),
            Level::Error => tracing::error!(rule, "{message}"),
        }
    }

    fn now_ms(&mut self) -> u64 {
        unix_time_ms()
    }

    fn config_get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }

    fn config_keys(&mut self) -> Vec<String> {
        self.config.keys().cloned().collect()
    }
}

/// Milliseconds since the Unix epoch; 0 on a clock set before 1970.
pub fn unix_time_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[derive(Clone, Copy)]
enum GuestStream {
    Stdout,
    Stderr,
}

/// A guest's stdout or stderr: whole lines become log records tagged with the
/// rule's name; stdout at info level, stderr at warn.
#[derive(Clone)]
struct GuestLog {
    rule: Arc<str>,
    stream: GuestStream,
    pending: Vec<u8>,
}

/// A line longer than this is logged in pieces, so a guest cannot make the host
/// buffer without bound.
const MAX_LINE_BYTES: usize = 4096;

impl GuestLog {
    fn new(rule: Arc<str>, stream: GuestStream) -> Self {
        GuestLog {
            rule,
            stream,
            pending: Vec::new(),
        }
    }

    fn emit(&self, line: &[u8]) {
        let rule = &*self.rule;
        let line = String::from_utf8_lossy(line);
        match self.stream {
            GuestStream::Stdout => tracing::info!(rule, stream = "stdout", "{line}"),
            GuestStream::Stderr => tracing::warn!(rule, stream = "stderr", "{line}"),
        }
    }

    fn flush_pending(&mut self) {
        if !self.pending.is_empty() {
            self.emit(&self.pending);
            self.pending.clear();
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(GuestLog::new(self.rule.clone(), self.stream))
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASIp3 guests use the async stream, and rules are WASIp2.
        Box::new(tokio::io::sink())
    }
}

#[async_trait::async_trait]
impl Pollable for GuestLog {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestLog {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        for chunk in bytes.split_inclusive(|&byte| byte == b'\n') {
            self.pending.extend_from_slice(chunk);
            if chunk.ends_with(b"\n") {
                self.pending.pop();
                self.flush_pending();
            } else if self.pending.len() >= MAX_LINE_BYTES {
                self.flush_pending();
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE_BYTES)
    }
}

impl Drop for GuestLog {
    fn drop(&mut self) {
        self.flush_pending();
    }
}
