//! Substitution templates: `${expression}` inside action parameters (S3 key, SNS subject and
//! message, republish topic), compiled once and rendered per message.
//!
//! As in AWS IoT rule actions, the expressions are evaluated against the *incoming* message (its
//! payload, topic, client id and time), not against the SELECT output, so SELECT aliases are not
//! visible: `device/${topic(2)}/devicePayload/${timestamp()}`. A value renders as AWS's
//! conversion to String does (strings without quotes, objects and arrays as JSON); Undefined and
//! Null render as nothing.

use crate::ast::Expr;
use crate::error::{ErrorKind, SqlError};
use crate::eval::{Scope, eval};
use crate::functions::TopicPart;
use crate::message::MessageContext;
use crate::parser::Parser;
use crate::payload_fields::PayloadFields;
use crate::value::datum_text;

/// A compiled substitution template.
#[derive(Debug)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug)]
enum Part {
    Text(String),
    /// `${topic()}` or `${topic(n)}`, written without evaluating the call.
    Topic(TopicPart),
    Substitution(Expr),
}

impl Part {
    fn substitution(expr: Expr) -> Part {
        if let Expr::Call(call) = &expr
            && let Some(part) = TopicPart::of(call)
        {
            return Part::Topic(part);
        }
        Part::Substitution(expr)
    }
}

impl Template {
    /// Splits `text` into literal text and `${...}` expressions, parsing each expression.
    pub fn compile(text: &str) -> Result<Template, SqlError> {
        let mut parts = Vec::new();
        let mut literal_start = 0;
        let mut search_from = 0;
        while let Some(found) = text[search_from..].find("${") {
            let open = search_from + found;
            if open > literal_start {
                parts.push(Part::Text(text[literal_start..open].to_owned()));
            }
            let inner = open + 2;
            if text[inner..].trim_start().starts_with('}') {
                return Err(SqlError::at(
                    ErrorKind::Syntax,
                    text,
                    open,
                    inner + 1,
                    "empty substitution",
                ));
            }
            let (expr, end) = Parser::new(text, inner).template_expression()?;
            parts.push(Part::substitution(expr));
            literal_start = end;
            search_from = end;
        }
        if literal_start < text.len() {
            parts.push(Part::Text(text[literal_start..].to_owned()));
        }
        Ok(Template {
            text: text.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the template has no substitution (it renders to its own text).
    pub fn is_constant(&self) -> bool {
        self.parts.iter().all(|part| matches!(part, Part::Text(_)))
    }

    /// The members of the payload the substitutions read.
    pub fn payload_fields(&self) -> PayloadFields {
        let mut fields = PayloadFields::default();
        for part in &self.parts {
            if let Part::Substitution(expr) = part {
                fields.add_expr(expr);
            }
        }
        fields
    }

    /// The text with every substitution evaluated against `message`.
    pub fn render(&self, message: &MessageContext<'_>) -> String {
        let scope = Scope::of_message(message);
        // Room for the literal text and some for the substitutions: one allocation, mostly.
        let mut out = String::with_capacity(self.text.len() + 32);
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Topic(part) => out.push_str(part.read(message.topic).unwrap_or_default()),
                Part::Substitution(expr) => {
                    if let Some(text) = datum_text(eval(expr, &scope)) {
                        out.push_str(&text);
                    }
                }
            }
        }
        out
    }
}
