//! Property tests: a statement evaluated, or a template rendered, against a payload parsed for
//! only the members it reads gives what it gives against the whole payload.

mod common;

use common::{STATEMENTS, json_value};
use proptest::prelude::*;
use rulegate_sql::{MessageContext, Payload, PayloadFields, Statement, Template};

/// Templates that read members in every way an expression can, and the topic and raw bytes.
const TEMPLATES: &[&str] = &[
    "${a}/${topic(2)}",
    "${get(b, 'c')}-${c[0].d}-${e.a}",
    "${CASE a WHEN 1 THEN b ELSE e.d END}",
    "${(SELECT VALUE b FROM a WHERE c)}",
    "${encode(*, 'base64')}",
];

/// A JSON object with the keys the statements and templates name, as a payload.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::btree_map("[a-e]", json_value(), 0..6).prop_map(|members| {
        serde_json::Value::Object(members.into_iter().collect())
            .to_string()
            .into_bytes()
    })
}

/// What `outcome` gives against the whole payload, and against the payload parsed for `fields`.
fn whole_and_read<T>(
    raw: &[u8],
    fields: &PayloadFields,
    outcome: impl Fn(&MessageContext<'_>) -> T,
) -> (T, T) {
    let (whole, read) = (Payload::parse(raw), Payload::parse_fields(raw, fields));
    (
        outcome(&MessageContext::new("a/b", &whole, raw)),
        outcome(&MessageContext::new("a/b", &read, raw)),
    )
}

proptest! {
    #[test]
    fn a_statement_selects_the_same_from_the_members_it_reads(
        statement in prop::sample::select(STATEMENTS),
        raw in payload(),
    ) {
        let statement = Statement::parse(statement).unwrap();
        let (expected, selected) =
            whole_and_read(&raw, &statement.payload_fields(), |message| statement.evaluate(message));
        prop_assert_eq!(selected, expected);
    }

    #[test]
    fn a_template_renders_the_same_from_the_members_it_reads(
        template in prop::sample::select(TEMPLATES),
        raw in payload(),
    ) {
        let template = Template::compile(template).unwrap();
        let (expected, rendered) =
            whole_and_read(&raw, &template.payload_fields(), |message| template.render(message));
        prop_assert_eq!(rendered, expected);
    }
}
