//! The one error type of the crate: what went wrong while loading a SQL statement, a substitution
//! template or a topic filter, with the line, column and text at fault. Message-time problems never
//! become errors: AWS turns them into `Undefined`, and so does the evaluator.

use thiserror::Error;

/// What kind of mistake a [`SqlError`] reports, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The text does not follow the AWS IoT SQL grammar.
    Syntax,
    /// A function name that AWS IoT SQL does not define.
    UnknownFunction,
    /// A function called with the wrong number of arguments.
    Arity,
    /// A function or argument form that needs AWS services (DynamoDB, Lambda, ...) and cannot run
    /// at the edge.
    NotAvailableAtEdge,
    /// An argument that must be a valid literal is not (a regular expression, an encoding scheme,
    /// a date pattern, an MQTT property name, a cast type).
    InvalidArgument,
    /// The `FROM` topic filter breaks MQTT's filter rules.
    TopicFilter,
}

/// A statement, template or topic filter that cannot be loaded.
///
/// `Display` reads `line L, column C: what is wrong near `text``, with line and column counted
/// from 1 in characters of the text that was loaded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}, column {column}: {message} near `{near}`")]
pub struct SqlError {
    /// What kind of mistake this is.
    pub kind: ErrorKind,
    /// Line of the offending text, from 1.
    pub line: usize,
    /// Column (in characters) of the offending text, from 1.
    pub column: usize,
    /// What is wrong, in words.
    pub message: String,
    /// The offending text itself (`end of input` when the text ended too early).
    pub near: String,
}

/// How much of the offending text an error quotes when the mistake has no natural end.
const NEAR_CHARS: usize = 24;

impl SqlError {
    /// An error about `source[start..end]`; an empty range quotes what follows `start`.
    pub(crate) fn at(
        kind: ErrorKind,
        source: &str,
        start: usize,
        end: usize,
        message: impl Into<String>,
    ) -> SqlError {
        let start = floor_char_boundary(source, start.min(source.len()));
        let end = floor_char_boundary(source, end.clamp(start, source.len()));
        let before = &source[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = source[line_start..start].chars().count() + 1;
        let near: String = if end > start {
            source[start..end].chars().take(NEAR_CHARS * 2).collect()
        } else {
            source[start..].chars().take(NEAR_CHARS).collect()
        };
        let near = if near.is_empty() {
            "end of input".to_owned()
        } else {
            near
        };
        SqlError {
            kind,
            line,
            column,
            message: message.into(),
            near,
        }
    }
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lines_and_columns_in_characters() {
        let source = "SELECT a\nFROM 'é/x' WHERE ?";
        let at = source.find('?').unwrap();
        let error = SqlError::at(
            ErrorKind::Syntax,
            source,
            at,
            at + 1,
            "unexpected character",
        );
        assert_eq!(
            error.to_string(),
            "line 2, column 18: unexpected character near `?`"
        );
    }

    #[test]
    fn reports_end_of_input() {
        let error = SqlError::at(ErrorKind::Syntax, "SELECT", 6, 6, "expected FROM");
        assert_eq!(error.near, "end of input");
    }
}
