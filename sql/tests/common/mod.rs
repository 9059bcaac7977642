//! What the property tests share: statements that parse and cover every kind of expression, and
//! JSON documents for them to read.

use proptest::prelude::*;

/// Statements that parse, so the evaluator gets exercised too.
pub const STATEMENTS: &[&str] = &[
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
    "SELECT (SELECT b, c FROM a WHERE d) AS s, e FROM '#' WHERE e <> 1",
];

pub fn json_value() -> impl Strategy<Value = serde_json::Value> {
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
