//! Functions over values of any type: `get`, `concat`, `transform`, `nanvl`, `get_or_default`
//! and the `isNull`/`isUndefined` tests.

use std::borrow::Cow;

use serde_json::Value;

use super::Invocation;
use crate::value::{Datum, datum_text, owned, to_decimal};

/// `get(collection, key)`: an array element or string character by 0-based position, or an
/// object member by string key.
pub(super) fn get<'d>(mut inv: Invocation<'d>) -> Datum<'d> {
    let key = inv.take(1)?;
    let collection = inv.take(0)?;
    match (&*collection, &*key) {
        (Value::Object(_), Value::String(name)) => match collection {
            Cow::Borrowed(value) => value.get(name.as_str()).map(Cow::Borrowed),
            Cow::Owned(Value::Object(mut object)) => object.remove(name.as_str()).map(Cow::Owned),
            Cow::Owned(_) => None,
        },
        (Value::Array(items), _) => {
            let index = usize::try_from(to_decimal(&key)?.floor()?).ok()?;
            match collection {
                Cow::Borrowed(Value::Array(items)) => items.get(index).map(Cow::Borrowed),
                _ => items.get(index).cloned().map(Cow::Owned),
            }
        }
        (Value::String(text), _) => {
            let index = usize::try_from(to_decimal(&key)?.floor()?).ok()?;
            let c = text.chars().nth(index)?;
            owned(Value::String(c.to_string()))
        }
        _ => None,
    }
}

pub(super) fn concat<'d>(inv: Invocation<'d>) -> Datum<'d> {
    concat_values(inv.args)
}

/// `concat(...)` and `||`: one argument comes back unchanged; with any array among them, one
/// array of everything (arrays spliced in); otherwise, if any is a string, the concatenated
/// text of all; otherwise Undefined.
pub(crate) fn concat_values(args: Vec<Datum<'_>>) -> Datum<'_> {
    let mut args = args;
    if args.len() == 1 {
        return args.pop()?;
    }
    if args
        .iter()
        .any(|arg| matches!(arg.as_deref(), Some(Value::Array(_))))
    {
        let mut items = Vec::new();
        for arg in args {
            match arg?.into_owned() {
                Value::Array(inner) => items.extend(inner),
                other => items.push(other),
            }
        }
        return owned(Value::Array(items));
    }
    if !args
        .iter()
        .any(|arg| matches!(arg.as_deref(), Some(Value::String(_))))
    {
        return None;
    }
    let mut text = String::new();
    for arg in args {
        text.push_str(&datum_text(arg)?);
    }
    owned(Value::String(text))
}

pub(super) fn is<'d>(inv: Invocation<'d>, test: fn(Option<&Value>) -> bool) -> Datum<'d> {
    owned(Value::Bool(test(inv.arg(0))))
}

/// `nanvl(value, fallback)`: the fallback when value is Undefined, Null or not a number.
pub(super) fn nanvl<'d>(mut inv: Invocation<'d>) -> Datum<'d> {
    match inv.arg(0) {
        None | Some(Value::Null) => inv.take(1),
        _ => inv.take(0),
    }
}

/// `get_or_default(value, default)`: the default when value is Undefined.
pub(super) fn get_or_default<'d>(mut inv: Invocation<'d>) -> Datum<'d> {
    inv.take(0).or_else(|| inv.take(1))
}

/// `transform('enrichArray', object, array)`: each object of the array with the object's members
/// added.
pub(super) fn transform<'d>(mut inv: Invocation<'d>) -> Datum<'d> {
    let mode = inv.take(0)?;
    if mode.as_str() != Some("enrichArray") {
        return None;
    }
    let Value::Object(attributes) = &*inv.take(1)? else {
        return None;
    };
    let Value::Array(items) = inv.take(2)?.into_owned() else {
        return None;
    };
    let enriched = items
        .into_iter()
        .filter_map(|item| match item {
            Value::Object(mut object) => {
                object.extend(attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
                Some(Value::Object(object))
            }
            _ => None,
        })
        .collect();
    owned(Value::Array(enriched))
}
