//! rulegate: a WebAssembly edge rule runtime.
//!
//! The data path, one module per stage:
//! MQTT in ─► topic index ─► SQL (filter + projection) ─► Wasm rule ─► actions ─► S3 / SNS / MQTT.
//! [`message`] holds the plain types the stages exchange; [`engine`] runs Wasm
//! rules; the SQL stage is the `rulegate-sql` crate. Beside the data path,
//! [`invoke`] carries synchronous calls from HTTP to devices and back.

pub mod actions;
pub mod admin;
pub mod broker;
pub mod config;
pub mod demo;
pub mod deploy;
pub mod device_sim;
pub mod engine;
pub mod gateway;
pub mod http;
pub mod invoke;
pub mod loadgen;
pub mod message;
pub mod mqtt;
pub mod outbox;
pub mod pipeline;
pub mod ruleset;
pub mod simulate;
pub mod tls;
