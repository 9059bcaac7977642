//! rulegate: a WebAssembly edge rule runtime.
//!
//! The data path, one module per stage:
//! MQTT in ─► topic index ─► SQL (filter + projection) ─► Wasm rule ─► actions ─► S3 / SNS / MQTT.
//! [`message`] holds the plain types the stages exchange; [`engine`] runs Wasm
//! rules; the SQL stage is the `rulegate-sql` crate.

pub mod actions;
pub mod broker;
pub mod config;
pub mod demo;
pub mod engine;
pub mod gateway;
pub mod message;
pub mod mqtt;
pub mod pipeline;
pub mod simulate;
