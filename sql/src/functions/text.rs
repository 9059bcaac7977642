//! String functions. Non-string arguments go through AWS's standard conversion to String first
//! (so `upper(["a"])` is `["A"]` as text); Null and Undefined arguments give Undefined.
//! Positions and lengths count characters.

use std::borrow::Cow;

use regex::{Regex, RegexBuilder};
use serde_json::Value;

use super::{Invocation, Prepared, literal};
use crate::ast::Expr;
use crate::value::{Datum, owned, to_text};

/// Upper bound on a compiled regular expression, so a hostile pattern in a payload cannot make
/// the gateway allocate without limit.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Padding counts are clamped to this, as AWS documents.
const MAX_PADDING: f64 = 1000.0;

pub(super) fn map<'d>(mut inv: Invocation<'d>, f: fn(&str) -> String) -> Datum<'d> {
    owned(Value::String(f(&inv.text(0)?)))
}

pub(super) fn measure<'d>(mut inv: Invocation<'d>, f: fn(&str) -> usize) -> Datum<'d> {
    owned(Value::from(f(&inv.text(0)?)))
}

/// `startswith`, `endswith`.
pub(super) fn test2<'d>(mut inv: Invocation<'d>, f: fn(&str, &str) -> bool) -> Datum<'d> {
    let (a, b) = (inv.text(0)?, inv.text(1)?);
    owned(Value::Bool(f(&a, &b)))
}

/// Java's `trim` family removes every character up to and including the space.
fn is_blank(c: char) -> bool {
    c <= ' '
}

pub(super) fn trim_start(s: &str) -> &str {
    s.trim_start_matches(is_blank)
}

pub(super) fn trim_end(s: &str) -> &str {
    s.trim_end_matches(is_blank)
}

#[derive(Clone, Copy)]
pub(super) enum Side {
    Left,
    Right,
}

/// `lpad`/`rpad` add that many spaces (not pad to a width).
pub(super) fn pad<'d>(mut inv: Invocation<'d>, side: Side) -> Datum<'d> {
    let count = inv.decimal(1)?.as_f64().floor().clamp(0.0, MAX_PADDING) as usize;
    let text = inv.text(0)?;
    let spaces = " ".repeat(count);
    owned(Value::String(match side {
        Side::Left => spaces + &text,
        Side::Right => text.into_owned() + &spaces,
    }))
}

pub(super) fn indexof<'d>(mut inv: Invocation<'d>) -> Datum<'d> {
    let (text, part) = (inv.text(0)?, inv.text(1)?);
    let index = text
        .find(&*part)
        .map_or(-1, |at| text[..at].chars().count() as i64);
    owned(Value::from(index))
}

/// `substring(text, start[, end])`: indices clamped to the text, empty when start >= end.
pub(super) fn substring<'d>(mut inv: Invocation<'d>) -> Datum<'d> {
    let text = inv.text(0)?;
    let length = text.chars().count();
    let clamp = |n: f64| n.floor().clamp(0.0, length as f64) as usize;
    let start = clamp(inv.decimal(1)?.as_f64());
    let end = match inv.args.len() {
        3 => clamp(inv.decimal(2)?.as_f64()),
        _ => length,
    };
    let part: String = text
        .chars()
        .skip(start)
        .take(end.saturating_sub(start))
        .collect();
    owned(Value::String(part))
}

pub(super) fn replace<'d>(mut inv: Invocation<'d>) -> Datum<'d> {
    let (text, from, to) = (inv.text(0)?, inv.text(1)?, inv.text(2)?);
    owned(Value::String(text.replace(&*from, &to)))
}

/// `chr(code)`: the ASCII character for a code in 0..=127.
pub(super) fn chr<'d>(inv: Invocation<'d>) -> Datum<'d> {
    let code = u8::try_from(inv.decimal(0)?.floor()?).ok()?;
    code.is_ascii()
        .then(|| owned(Value::String(char::from(code).to_string())))?
}

fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// A literal pattern is compiled once, at load, and must be valid.
pub(super) fn check_regexp(args: &[Expr]) -> Result<Prepared, String> {
    let Some(pattern) = literal(args, 1).and_then(to_text) else {
        return Ok(Prepared::Nothing);
    };
    compile(&pattern)
        .map(Prepared::Regex)
        .map_err(|error| format!("invalid regular expression `{pattern}`: {error}"))
}

/// The call's pattern: compiled at load if literal, otherwise now (Undefined if invalid).
fn pattern<'p>(inv: &'p mut Invocation<'_>) -> Option<Cow<'p, Regex>> {
    if let Prepared::Regex(regex) = &inv.call.prepared {
        return Some(Cow::Borrowed(regex));
    }
    let text = inv.text(1)?;
    compile(&text).ok().map(Cow::Owned)
}

pub(super) fn regexp_matches<'d>(mut inv: Invocation<'d>) -> Datum<'d> {
    let text = inv.text(0)?;
    let matched = pattern(&mut inv)?.is_match(&text);
    owned(Value::Bool(matched))
}

/// First match of the pattern; Undefined when there is none.
pub(super) fn regexp_substr<'d>(mut inv: Invocation<'d>) -> Datum<'d> {
    let text = inv.text(0)?;
    let found = pattern(&mut inv)?.find(&text)?.as_str().to_owned();
    owned(Value::String(found))
}

pub(super) fn regexp_replace<'d>(mut inv: Invocation<'d>) -> Datum<'d> {
    let text = inv.text(0)?;
    let replacement = java_replacement(&inv.text(2)?);
    let replaced = pattern(&mut inv)?
        .replace_all(&text, replacement.as_str())
        .into_owned();
    owned(Value::String(replaced))
}

/// Java writes group references `$1` and escapes with `\`; the regex crate would read `$1a` as a
/// group named `1a`, so references are braced and escapes turned into `$$`.
fn java_replacement(java: &str) -> String {
    let mut out = String::with_capacity(java.len());
    let mut chars = java.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(other) => out.push(other),
                None => {}
            },
            '$' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push_str("${");
                while let Some(digit) = chars.next_if(char::is_ascii_digit) {
                    out.push(digit);
                }
                out.push('}');
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_group_references_become_braced() {
        assert_eq!(java_replacement("$1a"), "${1}a");
        assert_eq!(java_replacement(r"\$5 and $"), "$$5 and $$");
    }
}
