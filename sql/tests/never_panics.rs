//! Property tests: the parser, the template compiler and the evaluator never panic, whatever the
//! SQL text, template or payload.

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

/// Statements that parse, so the evaluator gets exercised too.
const STATEMENTS: &[&str] = &[
    "SELECT * FROM '#' WHERE a < 35",
    "SELECT *, a + b AS s, a || b AS c, a * b / c % d AS m FROM '#'",
    "SELECT VALUE (SELECT v, upper(n) AS u FROM e WHERE v > a) FROM '#'",
    "SELECT get(a, b).c[d], substring(a, b, c), lpad(a, b), chr(a), bitnot(a) FROM '#'",
    "SELECT cast(a AS Int) AS i, cast(b AS String) AS s, cast(c AS Boolean) AS t FROM '#'",
    "SELECT CASE a WHEN b THEN c ELSE d END AS k, a IN b AS i, a CONTAINS b AS c FROM '#'",
    "SELECT regexp_replace(a, b, c) AS r, regexp_matches(a, b) AS m, decode(a, 'base64') AS d FROM '#'",
    "SELECT parse_time(a, b, c) AS p, time_to_epoch(a, b) AS e, trunc(a, b) AS t FROM '#'",
    "SELECT concat(a, b, c) AS c, transform(a, b, c) AS t, power(a, b) AS p, abs(a) AS x FROM '#'",
    "SELECT {'k': a, 'l': [b, c]} AS o, NOT a AS n, -a AS m, sqrt(a) AS s FROM '#'",
];

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "[a-z0-9 .+/'\\\\(){}$*-]{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-e]", inner, 0..5)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
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
