//! A compiled rule statement (`SELECT ... FROM 'filter' WHERE ...`) and what it selects for one
//! message. Compiling checks everything that can be checked without a message; evaluating never
//! fails, it selects or does not.

use std::borrow::Cow;

use serde_json::Value;

use crate::ast::{Expr, Projection, Query};
use crate::error::SqlError;
use crate::eval::{Scope, eval, project};
use crate::message::{MessageContext, Payload};
use crate::parser::Parser;
use crate::payload_fields::PayloadFields;
use crate::topic::TopicFilter;
use crate::value::is_true;

/// A compiled AWS IoT SQL statement.
#[derive(Debug)]
pub struct Statement {
    sql: String,
    query: Query,
    from: TopicFilter,
}

/// What a statement selected from a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Selected {
    /// The original payload bytes, unchanged (`SELECT *` alone), so archives stay byte-identical.
    Payload,
    /// A JSON document built by the SELECT list.
    Json(Value),
    /// Bytes that are not a JSON document: empty when `SELECT VALUE` selected Undefined, which AWS
    /// serializes as an empty string.
    Binary(Vec<u8>),
}

impl Statement {
    /// Parses and checks `sql`: grammar, topic filter, function names, arities, literal arguments,
    /// and functions that would need AWS. Errors point at the offending line and column.
    pub fn parse(sql: &str) -> Result<Statement, SqlError> {
        let parsed = Parser::new(sql, 0).statement()?;
        Ok(Statement {
            sql: sql.to_owned(),
            query: parsed.query,
            from: parsed.from,
        })
    }

    /// The statement as written.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The `FROM` topic filter.
    pub fn topic_filter(&self) -> &TopicFilter {
        &self.from
    }

    /// Whether the statement is `SELECT *` with no WHERE: it selects every message unchanged.
    pub fn is_passthrough(&self) -> bool {
        self.query.filter.is_none() && passes_payload_through(&self.query.projection)
    }

    /// The members of the payload the statement reads (see [`Payload::parse_fields`]).
    pub fn payload_fields(&self) -> PayloadFields {
        let mut fields = PayloadFields::default();
        fields.add_statement(&self.query);
        fields
    }

    /// What the statement selects from `message`, or `None` when the topic is outside `FROM` or
    /// `WHERE` is not true (false, Undefined or not a Boolean).
    pub fn evaluate(&self, message: &MessageContext<'_>) -> Option<Selected> {
        if !self.from.matches(message.topic) {
            return None;
        }
        self.evaluate_matched(message)
    }

    /// [`Statement::evaluate`] for a message whose topic is known to match `FROM`, as a lookup
    /// in a [`crate::TopicIndex`] of the statements' filters finds them.
    pub fn evaluate_matched(&self, message: &MessageContext<'_>) -> Option<Selected> {
        let scope = Scope::of_message(message);
        if let Some(filter) = &self.query.filter
            && !is_true(&eval(filter, &scope))
        {
            return None;
        }
        if passes_payload_through(&self.query.projection) {
            return Some(Selected::Payload);
        }
        Some(match project(&self.query.projection, &scope) {
            Some(value) => Selected::Json(value),
            None => Selected::Binary(Vec::new()),
        })
    }
}

/// `SELECT *` and `SELECT VALUE *` hand on the payload as received, binary or JSON.
fn passes_payload_through(projection: &Projection) -> bool {
    match projection {
        Projection::Value(expr) => matches!(expr, Expr::Payload),
        Projection::Fields { wildcard, items } => *wildcard && items.is_empty(),
    }
}

impl Selected {
    /// The bytes to deliver: the raw payload for [`Selected::Payload`], compact JSON for
    /// [`Selected::Json`].
    pub fn to_bytes<'a>(&'a self, raw_payload: &'a [u8]) -> Cow<'a, [u8]> {
        match self {
            Selected::Payload => Cow::Borrowed(raw_payload),
            Selected::Json(value) => Cow::Owned(value.to_string().into_bytes()),
            Selected::Binary(bytes) => Cow::Borrowed(bytes),
        }
    }

    /// One line of JSON, as `rulegate sql eval` prints it: the selected document compact, keys
    /// with Undefined values absent. Bytes that are not JSON print as a JSON string of their
    /// (lossily decoded) text.
    pub fn to_json_line(&self, message: &MessageContext<'_>) -> String {
        let bytes: &[u8] = match self {
            Selected::Json(value) => return value.to_string(),
            Selected::Payload => match message.payload {
                Payload::Json(value) => return value.to_string(),
                Payload::Binary(bytes) => bytes,
            },
            Selected::Binary(bytes) => bytes,
        };
        match serde_json::from_slice::<Value>(bytes) {
            Ok(value) => value.to_string(),
            Err(_) => Value::String(String::from_utf8_lossy(bytes).into_owned()).to_string(),
        }
    }
}
