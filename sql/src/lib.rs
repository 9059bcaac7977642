//! AWS IoT rules SQL (version 2016-03-23) for the rulegate gateway: a statement is parsed and
//! checked once per rule into a typed expression tree, then evaluated per message against a
//! payload parsed once and shared by every rule. Also substitution templates (`${...}` in action
//! parameters), the topic index that routes each message only to rules whose `FROM` matches, and
//! what statements and templates read of a payload ([`PayloadFields`]), so that only that is built.
//! The host's rule table and actions call this crate; it does no I/O.
//!
//! ```
//! use rulegate_sql::{MessageContext, Payload, Selected, Statement, Template};
//!
//! let statement = Statement::parse("SELECT * FROM 'device/+/devicePayload' WHERE humidity < 35")?;
//! let raw = br#"{"name":"soilSensor3","humidity":29}"#;
//! let payload = Payload::parse(raw);
//! let message = MessageContext::new("device/soilSensor3/devicePayload", &payload, raw);
//! assert_eq!(statement.evaluate(&message), Some(Selected::Payload));
//!
//! let key = Template::compile("archive/${topic(2)}/${name}.json")?;
//! assert_eq!(key.render(&message), "archive/soilSensor3/soilSensor3.json");
//! # Ok::<(), rulegate_sql::SqlError>(())
//! ```
//!
//! # Why a hand-written parser
//! `sqlparser` parses ANSI SQL dialects; AWS IoT SQL differs where it matters: `FROM` takes a
//! quoted MQTT topic filter (or a JSON path in nested queries), `SELECT VALUE`, `*` as a function
//! argument, JSON object and array literals, double-quoted strings, `a.b[0].c` on any expression,
//! dotted aliases, and `${...}` templates that embed one expression in free text. Mapping a general
//! SQL AST back onto those rules would lose fidelity and the exact position of errors, so the
//! grammar is a small recursive-descent parser (`parser.rs`) that reports line, column and text.
//!
//! # Semantics
//! Data types, conversions, operators and functions follow the AWS IoT SQL reference for version
//! 2016-03-23, including `Undefined`: a missing field or an Undefined expression is left out of the
//! output, a `WHERE` that is Undefined does not match, functions given Undefined return Undefined.
//! Known differences (64-bit Ints and double-precision Decimals instead of 34 digits, Rust regular
//! expression syntax, the keys of unaliased expressions) and the status of every function are in
//! `docs/sql-functions.md`.

mod ast;
mod error;
mod eval;
mod functions;
mod lexer;
mod message;
mod parser;
mod payload_fields;
mod statement;
mod template;
mod topic;
mod value;

pub use error::{ErrorKind, SqlError};
pub use message::{MessageContext, MqttProperties, Payload};
pub use payload_fields::PayloadFields;
pub use statement::{Selected, Statement};
pub use template::Template;
pub use topic::{TopicFilter, TopicIndex};
