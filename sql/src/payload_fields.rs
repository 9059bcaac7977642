//! Which members of a JSON payload statements and templates read, found once from their
//! expression trees, and a parse that builds only those members.
//!
//! Most rules read a few top-level fields (`WHERE humidity < 35`, `${timeStampEpoch}`) and hand
//! the payload itself on as received (`SELECT *`). Building every member of the document only to
//! drop it was most of what the SQL stage cost, so the host parses each message for the members
//! its rules read. The parse accepts and refuses exactly what a whole parse does: a payload is
//! JSON or binary for every rule the same way.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::ast::{Expr, Projection, Query};

/// The members of a payload that some statements and templates read. `Default` reads nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayloadFields {
    /// Something reads the document as a whole (`SELECT *, ...`, `*` as an argument).
    whole: bool,
    /// Top-level members read by name, when not `whole`.
    members: BTreeSet<Box<str>>,
}

impl PayloadFields {
    /// Adds what `other` reads.
    pub fn add(&mut self, other: &PayloadFields) {
        if self.whole || other.whole {
            *self = PayloadFields::whole();
        } else {
            self.members.extend(other.members.iter().cloned());
        }
    }

    /// Whether the document is read as a whole, not member by member.
    pub fn reads_whole(&self) -> bool {
        self.whole
    }

    /// The top-level members read by name, in order; empty when read as a whole.
    pub fn members(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|member| &**member)
    }

    fn whole() -> PayloadFields {
        PayloadFields {
            whole: true,
            members: BTreeSet::new(),
        }
    }

    /// Adds what a top-level statement's query reads.
    pub(crate) fn add_statement(&mut self, query: &Query) {
        if let Some(filter) = &query.filter {
            self.add_expr(filter);
        }
        match &query.projection {
            // `SELECT *` and `SELECT VALUE *` hand on the bytes as received.
            Projection::Value(Expr::Payload) => {}
            Projection::Fields {
                wildcard: true,
                items,
            } if items.is_empty() => {}
            Projection::Fields { wildcard: true, .. } => *self = PayloadFields::whole(),
            Projection::Value(expr) => self.add_expr(expr),
            Projection::Fields { items, .. } => {
                for item in items {
                    self.add_expr(&item.expr);
                }
            }
        }
    }

    /// Adds what `expr`, evaluated against the payload, reads. Depth is bounded by the parser.
    pub(crate) fn add_expr(&mut self, expr: &Expr) {
        if self.whole {
            return;
        }
        match expr {
            Expr::Literal(_) => {}
            Expr::Field(name) => {
                self.members.insert(name.clone());
            }
            Expr::Payload => *self = PayloadFields::whole(),
            Expr::Member(base, _) | Expr::Not(base) | Expr::Negate(base) | Expr::Cast(base, _) => {
                self.add_expr(base);
            }
            Expr::Index(base, index) | Expr::Binary(_, base, index) => {
                self.add_expr(base);
                self.add_expr(index);
            }
            Expr::Case(case) => {
                let branches = case.branches.iter().flat_map(|(when, then)| [when, then]);
                for expr in case.operand.iter().chain(branches).chain(&case.otherwise) {
                    self.add_expr(expr);
                }
            }
            Expr::Call(call) => call.args.iter().for_each(|arg| self.add_expr(arg)),
            Expr::Object(members) => members.iter().for_each(|(_, value)| self.add_expr(value)),
            Expr::Array(elements) => elements.iter().for_each(|element| self.add_expr(element)),
            // Its SELECT list and WHERE read the elements of its source, not the payload.
            Expr::Subquery(query) => {
                if let Some(source) = &query.source {
                    self.add_expr(source);
                }
            }
        }
    }
}

/// The payload with only the top-level members in `fields` of an object built; any other
/// document whole. `None` where a whole parse fails.
pub(crate) fn parse_members(bytes: &[u8], fields: &PayloadFields) -> Option<Value> {
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return serde_json::from_slice(bytes).ok();
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let object = Members(&fields.members)
        .deserialize(&mut deserializer)
        .ok()?;
    deserializer.end().ok()?;
    Some(object)
}

/// Builds an object of the members it names and checks the others without building them.
struct Members<'m>(&'m BTreeSet<Box<str>>);

impl<'de> DeserializeSeed<'de> for Members<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Members<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(wanted) = map.next_key_seed(Wanted(self.0))? {
            match wanted {
                // A repeated key replaces the value and keeps its place, as in a whole parse.
                Some(name) => {
                    object.insert(name.to_owned(), map.next_value()?);
                }
                None => {
                    map.next_value::<Checked>()?;
                }
            }
        }
        Ok(Value::Object(object))
    }
}

/// A member's key: the name in the set when it is one of them.
struct Wanted<'m>(&'m BTreeSet<Box<str>>);

impl<'de, 'm> DeserializeSeed<'de> for Wanted<'m> {
    type Value = Option<&'m str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, 'm> Visitor<'de> for Wanted<'m> {
    type Value = Option<&'m str>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.get(key).map(|name| &**name))
    }
}

/// A value read through and dropped. Unlike serde's `IgnoredAny`, which serde_json skips without
/// its nesting limit or number range checks, this goes the way a [`Value`] is built, so it
/// refuses what a whole parse refuses, without allocating.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Checked, D::Error> {
        deserializer.deserialize_any(Checked)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = Checked;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Payload, Statement, Template};

    fn read_by(sql: &str) -> PayloadFields {
        Statement::parse(sql).unwrap().payload_fields()
    }

    fn members(names: &[&str]) -> PayloadFields {
        PayloadFields {
            whole: false,
            members: names.iter().map(|&name| name.into()).collect(),
        }
    }

    #[test]
    fn a_statement_reads_the_members_its_where_and_select_name() {
        assert_eq!(
            read_by("SELECT * FROM 'd/+' WHERE humidity < 35"),
            members(&["humidity"])
        );
        assert_eq!(
            read_by("SELECT a.b AS x, c[n] AS y, upper(d) FROM 'd' WHERE NOT e"),
            members(&["a", "c", "d", "e", "n"])
        );
        assert_eq!(
            read_by("SELECT CASE k WHEN 1 THEN v ELSE w END AS z FROM 'd'"),
            members(&["k", "v", "w"])
        );
        assert_eq!(read_by("SELECT VALUE * FROM 'd'"), members(&[]));
        assert_eq!(read_by("SELECT topic(2) AS t FROM 'd'"), members(&[]));
    }

    #[test]
    fn a_nested_query_reads_its_source_not_its_elements_fields() {
        assert_eq!(
            read_by("SELECT (SELECT v FROM readings WHERE ok) AS good FROM 'd'"),
            members(&["readings"])
        );
    }

    #[test]
    fn the_wildcard_beside_other_items_or_star_as_an_argument_reads_the_whole_document() {
        assert!(read_by("SELECT *, topic() AS t FROM 'd'").reads_whole());
        assert!(read_by("SELECT VALUE get(*, 'a') FROM 'd'").reads_whole());
        assert!(read_by("SELECT a FROM 'd' WHERE isUndefined(*)").reads_whole());
    }

    #[test]
    fn templates_read_the_members_they_substitute() {
        let key = Template::compile("device/${topic(2)}/${timeStampEpoch}").unwrap();
        assert_eq!(key.payload_fields(), members(&["timeStampEpoch"]));
        let mut both = key.payload_fields();
        both.add(&read_by("SELECT * FROM 'd' WHERE humidity < 35"));
        assert_eq!(both, members(&["humidity", "timeStampEpoch"]));
        both.add(&read_by("SELECT *, 1 AS one FROM 'd'"));
        assert!(both.reads_whole());
    }

    #[test]
    fn only_the_members_read_are_built() {
        let raw = br#"{"name":"soilSensor3","humidity":29,"deep":{"a":[1,2]},"humidity":31}"#;
        let payload = Payload::parse_fields(raw, &members(&["humidity", "absent"]));
        assert_eq!(payload, Payload::Json(serde_json::json!({"humidity": 31})));
        let payload = Payload::parse_fields(raw, &members(&["deep"]));
        assert_eq!(
            payload,
            Payload::Json(serde_json::json!({"deep": {"a": [1, 2]}}))
        );
    }

    #[test]
    fn documents_other_than_objects_are_built_whole() {
        let fields = members(&["a"]);
        let array = Payload::parse_fields(b" [1,{\"b\":2}]", &fields);
        assert_eq!(array, Payload::Json(serde_json::json!([1, {"b": 2}])));
        assert_eq!(
            Payload::parse_fields(b"80", &fields),
            Payload::Json(80.into())
        );
    }

    #[test]
    fn what_a_whole_parse_refuses_in_a_member_not_read_is_refused_too() {
        let fields = members(&["a"]);
        let deep = format!(r#"{{"a":1,"b":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
        let refused: [&[u8]; 5] = [
            deep.as_bytes(),
            br#"{"a":1,"b":1e999}"#,
            b"{\"a\":1,\"b\":\"\xff\"}",
            br#"{"a":1,"b":"\ud800"}"#,
            br#"{"a":1,"b":[1,]}"#,
        ];
        for raw in refused {
            assert!(
                matches!(Payload::parse(raw), Payload::Binary(_)),
                "{raw:?} is not JSON"
            );
            assert_eq!(Payload::parse_fields(raw, &fields), Payload::parse(raw));
        }
    }

    proptest::proptest! {
        #[test]
        fn a_member_read_is_what_a_whole_parse_gives(
            raw in json_text(),
            names in proptest::collection::vec("[a-d]", 0..3),
        ) {
            let fields = members(&names.iter().map(String::as_str).collect::<Vec<_>>());
            let whole = Payload::parse(raw.as_bytes());
            let read = Payload::parse_fields(raw.as_bytes(), &fields);
            match (&whole, &read) {
                (Payload::Json(Value::Object(all)), Payload::Json(Value::Object(some))) => {
                    for name in &names {
                        proptest::prop_assert_eq!(all.get(name), some.get(name));
                    }
                    proptest::prop_assert!(some.keys().all(|key| names.contains(key)));
                }
                _ => proptest::prop_assert_eq!(&whole, &read),
            }
        }
    }

    /// JSON text, mostly objects with short keys, sometimes cut or padded so that it is not JSON.
    fn json_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just("null".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|n| n.to_string()),
            "\"[a-z\\\\u0-9 ]{0,6}\"",
            Just("1e999".to_owned()),
        ];
        let value = leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                proptest::collection::vec(("[a-d]", inner), 0..4).prop_map(|members| {
                    let members: Vec<_> = members
                        .iter()
                        .map(|(key, value)| format!("\"{key}\":{value}"))
                        .collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        });
        (value, 0..4usize, any::<bool>()).prop_map(|(text, cut, pad)| {
            let text = if pad { format!(" {text} ") } else { text };
            text[..text.len() - cut.min(text.len())].to_owned()
        })
    }
}
