//! AWS IoT rules SQL (version 2016-03-23) for the rulegate gateway: a statement is parsed and
//! checked once per rule into a typed expression tree, then evaluated per message against a
//! payload parsed once and shared by every rule. Also substitution templates (`${...}` in action
//! parameters) and the topic index that routes each message only to rules whose `FROM` matches.
//! The host's rule table and actions call this crate; it does no I/O.

mod ast;
mod error;
mod eval;
mod functions;
mod lexer;
mod message;
mod parser;
mod statement;
mod template;
mod topic;
mod value;

pub use error::{ErrorKind, SqlError};
pub use message::{MessageContext, MqttProperties, Payload};
pub use statement::{Selected, Statement};
pub use template::Template;
pub use topic::{TopicFilter, TopicIndex};
