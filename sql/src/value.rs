//! AWS IoT SQL data types over JSON values, and AWS's conversion rules between them.
//!
//! A value is a `serde_json::Value`; `Undefined` is the absence of one (`Datum` is `None`).
//! Numbers are typed by value, as SQL version 2016-03-23 does: a whole number, even written `10.0`,
//! is an `Int`; anything else is a `Decimal`. Ints are 64-bit and Decimals are doubles, where AWS
//! keeps 34 digits: an Int result that overflows 64 bits becomes a Decimal.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Number, Value};

/// The result of evaluating an expression: a borrowed or computed value, or `None` for
/// `Undefined`.
pub(crate) type Datum<'d> = Option<Cow<'d, Value>>;

/// Largest magnitude at which a whole double is still represented as an `Int`.
const INT_LIMIT: f64 = 9_223_372_036_854_775_807.0;

/// A number with its AWS type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    Int(i64),
    Decimal(f64),
}

impl Num {
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            // Precision loss past 2^53 is what AWS's double-precision functions do too.
            Num::Int(i) => i as f64,
            Num::Decimal(d) => d,
        }
    }

    /// The JSON value for this number: whole Decimals become Ints (SQL 2016-03-23), and NaN or
    /// infinite results are `Undefined`, since JSON cannot carry them.
    pub(crate) fn into_value(self) -> Option<Value> {
        match self {
            Num::Int(i) => Some(Value::from(i)),
            Num::Decimal(d) if !d.is_finite() => None,
            Num::Decimal(d) if d.fract() == 0.0 && d.abs() < INT_LIMIT => {
                // In range and whole, so the cast is exact.
                Some(Value::from(d as i64))
            }
            Num::Decimal(d) => Number::from_f64(d).map(Value::Number),
        }
    }

    pub(crate) fn into_datum<'d>(self) -> Datum<'d> {
        self.into_value().map(Cow::Owned)
    }

    /// Rounds down to an Int; `None` when out of the 64-bit range.
    pub(crate) fn floor(self) -> Option<i64> {
        match self {
            Num::Int(i) => Some(i),
            Num::Decimal(d) => float_to_int(d.floor()),
        }
    }
}

pub(crate) fn float_to_int(whole: f64) -> Option<i64> {
    (whole.is_finite() && whole.abs() < INT_LIMIT).then_some(whole as i64)
}

/// The AWS type of a JSON number.
pub(crate) fn number_of(number: &Number) -> Num {
    if let Some(i) = number.as_i64() {
        return Num::Int(i);
    }
    let d = number.as_f64().unwrap_or(f64::NAN);
    match float_to_int(d) {
        Some(i) if d.fract() == 0.0 => Num::Int(i),
        _ => Num::Decimal(d),
    }
}

/// Whether `text` is a number AWS converts from a string: `^-?\d+(\.\d+)?([eE]-?\d+)?$`.
fn is_decimal_text(text: &str) -> bool {
    fn digits(bytes: &[u8], mut at: usize) -> Option<usize> {
        let start = at;
        while bytes.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        (at > start).then_some(at)
    }
    let bytes = text.as_bytes();
    let sign = usize::from(bytes.first() == Some(&b'-'));
    let Some(mut at) = digits(bytes, sign) else {
        return false;
    };
    if bytes.get(at) == Some(&b'.') {
        let Some(after) = digits(bytes, at + 1) else {
            return false;
        };
        at = after;
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        if bytes.get(at) == Some(&b'-') {
            at += 1;
        }
        let Some(after) = digits(bytes, at) else {
            return false;
        };
        at = after;
    }
    at == bytes.len()
}

/// AWS's "to Decimal" conversion: numbers as they are, numeric strings as Decimals.
pub(crate) fn to_decimal(value: &Value) -> Option<Num> {
    match value {
        Value::Number(n) => Some(number_of(n)),
        Value::String(s) if is_decimal_text(s) => s.parse().ok().map(Num::Decimal),
        _ => None,
    }
}

/// AWS's conversion to Boolean: Booleans, and the strings "true"/"false" in any case.
pub(crate) fn to_boolean(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// AWS's conversion to String; `Null` has none.
pub(crate) fn to_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(format_number(number_of(n)))),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::Array(_) | Value::Object(_) => Some(Cow::Owned(value.to_string())),
        Value::Null => None,
    }
}

/// A datum as text, taking an owned string without copying it.
pub(crate) fn datum_text(datum: Datum<'_>) -> Option<Cow<'_, str>> {
    match datum? {
        Cow::Borrowed(value) => to_text(value),
        Cow::Owned(Value::String(s)) => Some(Cow::Owned(s)),
        Cow::Owned(value) => to_text(&value).map(|text| Cow::Owned(text.into_owned())),
    }
}

/// How AWS writes a number as a string: Ints in standard notation, Decimals like Java's
/// `BigDecimal.toString`, which switches to scientific notation below 1E-6.
pub(crate) fn format_number(number: Num) -> String {
    match number {
        Num::Int(i) => i.to_string(),
        Num::Decimal(d) if d != 0.0 && d.abs() < 1e-6 => format!("{d:e}").replace('e', "E"),
        Num::Decimal(d) => d.to_string(),
    }
}

/// Unary minus: Ints stay Ints unless they overflow.
pub(crate) fn negate(number: Num) -> Num {
    match number {
        Num::Int(i) => i.checked_neg().map_or(Num::Decimal(-(i as f64)), Num::Int),
        Num::Decimal(d) => Num::Decimal(-d),
    }
}

/// Equality as the `=` operator defines it: numbers compare by value across Int and Decimal,
/// arrays in order, objects regardless of key order; different types are never equal.
pub(crate) fn sql_equal(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(a), Value::Number(b)) => {
            compare_numbers(number_of(a), number_of(b)) == Some(Ordering::Equal)
        }
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Null, Value::Null) => true,
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| sql_equal(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, x)| b.get(key).is_some_and(|y| sql_equal(x, y)))
        }
        _ => false,
    }
}

pub(crate) fn compare_numbers(left: Num, right: Num) -> Option<Ordering> {
    match (left, right) {
        (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
        _ => left.as_f64().partial_cmp(&right.as_f64()),
    }
}

/// Whether a `WHERE` result lets the message through: only a true Boolean (or "true") does;
/// false, Undefined and every other value do not.
pub(crate) fn is_true(datum: &Datum<'_>) -> bool {
    datum.as_deref().and_then(to_boolean) == Some(true)
}

/// An owned datum from a value.
pub(crate) fn owned<'d>(value: Value) -> Datum<'d> {
    Some(Cow::Owned(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_numbers_are_ints_even_with_a_decimal_point() {
        assert_eq!(to_decimal(&json!(10.0)), Some(Num::Int(10)));
        assert_eq!(to_decimal(&json!(10.5)), Some(Num::Decimal(10.5)));
        assert_eq!(Num::Decimal(32.0).into_value(), Some(json!(32)));
    }

    #[test]
    fn strings_convert_to_decimal_only_in_aws_number_syntax() {
        assert_eq!(to_decimal(&json!("-1.2")), Some(Num::Decimal(-1.2)));
        assert_eq!(to_decimal(&json!("5E-12")), Some(Num::Decimal(5e-12)));
        assert_eq!(to_decimal(&json!("0")), Some(Num::Decimal(0.0)));
        for bad in [
            "", "-", "1.", ".5", "+1", " 1", "1e", "abc", "1.2.3", "0x10",
        ] {
            assert_eq!(to_decimal(&json!(bad)), None, "{bad:?}");
        }
        assert_eq!(to_decimal(&json!(true)), None);
    }

    #[test]
    fn text_conversion_follows_the_aws_table() {
        assert_eq!(to_text(&json!(false)).as_deref(), Some("false"));
        assert_eq!(to_text(&json!(22.5)).as_deref(), Some("22.5"));
        assert_eq!(
            to_text(&json!(["a", 1, null])).as_deref(),
            Some(r#"["a",1,null]"#)
        );
        assert_eq!(to_text(&json!(null)), None);
        assert_eq!(format_number(Num::Decimal(5e-12)), "5E-12");
    }

    #[test]
    fn equality_ignores_key_order_but_not_types() {
        assert!(sql_equal(&json!({"a":1,"b":2}), &json!({"b":2,"a":1.0})));
        assert!(!sql_equal(&json!([1, 2]), &json!([2, 1])));
        assert!(!sql_equal(&json!("5"), &json!(5)));
        assert!(sql_equal(&json!(null), &json!(null)));
    }
}
