//! Property tests: the parser, the template compiler and the evaluator never panic, whatever the
//! SQL text, template or payload.

mod common;

use common::{STATEMENTS, json_value};
use proptest::prelude::*;
use rulegate_sql::{MessageContext, Payload, Statement, Template};

/// Fragments of AWS IoT SQL, so random statements get past the first token often.
const FRAGMENTS: &[&str] = &[
    "SELECT ",
    "VALUE ",
    "* ",
    ", ",
    "FROM ",
    "'a/+/#' ",
    "WHERE ",
    "AS ",
    "x",
    "a.b",
    "[0]",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    "'s'",
    "\"d\"",
    "1",
    "2.5",
    "-",
    "+",
    "*",
    "/",
    "%",
    "||",
    "=",
    "<>",
    "<",
    ">=",
    "AND ",
    "OR ",
    "NOT ",
    "IN ",
    "CONTAINS ",
    "CASE ",
    "WHEN ",
    "THEN ",
    "ELSE ",
    "END ",
    "null ",
    "true ",
    "upper(",
    "get(",
    "concat(",
    "substring(",
    "cast(",
    " AS Int)",
    "encode(*, 'base64')",
    "decode(",
    "topic(",
    "regexp_replace(",
    "parse_time(",
    "trunc(",
    "(SELECT ",
    "${",
    ":",
    ".",
];

fn sql_like() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..40).prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn parser_never_panics_on_arbitrary_text(text in any::<String>()) {
        let _ = Statement::parse(&text);
        let _ = Template::compile(&text);
    }

    #[test]
    fn parser_never_panics_on_sql_like_text(text in sql_like()) {
        let _ = Statement::parse(&text);
        let _ = Template::compile(&text);
    }

    #[test]
    fn evaluator_never_panics(
        statement in prop::sample::select(STATEMENTS),
        document in json_value(),
        binary in prop::collection::vec(any::<u8>(), 0..16),
        use_binary in any::<bool>(),
    ) {
        let statement = Statement::parse(statement).unwrap();
        let raw = if use_binary { binary } else { document.to_string().into_bytes() };
        let payload = Payload::parse(&raw);
        let message = MessageContext::new("a/b", &payload, &raw);
        if let Some(selected) = statement.evaluate(&message) {
            let _ = selected.to_json_line(&message);
        }
    }
}

#[test]
fn deep_nesting_is_a_load_error_not_a_stack_overflow() {
    for sql in [
        format!("SELECT {} FROM 'a'", "(".repeat(100_000)),
        format!("SELECT {}1 FROM 'a'", "-".repeat(100_000)),
        format!("SELECT 1{} FROM 'a'", " + 1".repeat(100_000)),
        format!("SELECT a{} FROM 'a'", ".b".repeat(100_000)),
        format!("SELECT {} FROM 'a'", "NOT ".repeat(100_000)),
        format!("SELECT {} FROM 'a'", "[".repeat(100_000)),
    ] {
        assert!(Statement::parse(&sql).is_err());
    }
}
