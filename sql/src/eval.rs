//! Evaluates a compiled expression tree against one message, with AWS IoT SQL's semantics:
//! anything that cannot be computed (missing field, wrong type, failed conversion, binary payload)
//! is `Undefined`, never an error and never a panic.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::ast::{BinaryOp, Case, CastType, Expr, Projection, Query};
use crate::functions::Invocation;
use crate::message::MessageContext;
use crate::value::{
    Datum, Num, compare_numbers, datum_text, is_true, negate, number_of, owned, sql_equal,
    to_boolean, to_decimal, to_text,
};

/// What names resolve against: the current document (the payload, or one element of a nested
/// query's source) and the message it came with.
#[derive(Clone, Copy)]
pub(crate) struct Scope<'d> {
    /// `None` for a binary payload: every field reference is then Undefined.
    pub document: Option<&'d Value>,
    pub message: &'d MessageContext<'d>,
}

impl<'d> Scope<'d> {
    pub(crate) fn of_message(message: &'d MessageContext<'d>) -> Self {
        Scope {
            document: message.payload.as_json(),
            message,
        }
    }
}

/// Evaluates `expr`; literals are lent from the tree, which outlives the evaluation.
pub(crate) fn eval<'d>(expr: &'d Expr, scope: &Scope<'d>) -> Datum<'d> {
    match expr {
        Expr::Literal(value) => Some(Cow::Borrowed(value)),
        Expr::Field(name) => scope.document?.get(&**name).map(Cow::Borrowed),
        Expr::Member(base, name) => member(eval(base, scope)?, name),
        Expr::Index(base, index) => {
            let base = eval(base, scope)?;
            let index = eval(index, scope)?;
            element(base, &index)
        }
        Expr::Payload => scope.document.map(Cow::Borrowed),
        Expr::Not(operand) => {
            let value = to_boolean(&*eval(operand, scope)?)?;
            owned(Value::Bool(!value))
        }
        Expr::Negate(operand) => negate(to_decimal(&*eval(operand, scope)?)?).into_datum(),
        Expr::Binary(op, left, right) => binary(*op, eval(left, scope), eval(right, scope)),
        Expr::Case(case) => eval_case(case, scope),
        Expr::Call(call) => {
            let args = call.args.iter().map(|arg| eval(arg, scope)).collect();
            (call.function.evaluate)(Invocation {
                args,
                call,
                scope: *scope,
            })
        }
        Expr::Cast(value, target) => cast(&*eval(value, scope)?, *target),
        Expr::Object(members) => {
            let mut object = Map::with_capacity(members.len());
            for (key, value) in members {
                if let Some(value) = eval(value, scope) {
                    object.insert(key.to_string(), value.into_owned());
                }
            }
            owned(Value::Object(object))
        }
        Expr::Array(elements) => owned(Value::Array(
            elements
                .iter()
                .filter_map(|element| eval(element, scope).map(Cow::into_owned))
                .collect(),
        )),
        Expr::Subquery(query) => subquery(query, scope),
    }
}

fn member<'d>(base: Cow<'d, Value>, name: &str) -> Datum<'d> {
    match base {
        Cow::Borrowed(value) => value.get(name).map(Cow::Borrowed),
        Cow::Owned(Value::Object(mut object)) => object.remove(name).map(Cow::Owned),
        Cow::Owned(_) => None,
    }
}

/// `base[index]`: arrays by position (Undefined out of bounds), objects by string key.
fn element<'d>(base: Cow<'d, Value>, index: &Value) -> Datum<'d> {
    let position = match (&*base, index) {
        (Value::Object(_), Value::String(key)) => return member(base, key),
        (Value::Array(items), index) => {
            let position = usize::try_from(to_decimal(index)?.floor()?).ok()?;
            (position < items.len()).then_some(position)?
        }
        _ => return None,
    };
    match base {
        Cow::Borrowed(value) => value.get(position).map(Cow::Borrowed),
        Cow::Owned(Value::Array(mut items)) => Some(Cow::Owned(items.swap_remove(position))),
        Cow::Owned(_) => None,
    }
}

fn binary<'d>(op: BinaryOp, left: Datum<'d>, right: Datum<'d>) -> Datum<'d> {
    let (left, right) = (left?, right?);
    let boolean = |b: bool| owned(Value::Bool(b));
    match op {
        BinaryOp::And => boolean(to_boolean(&left)? && to_boolean(&right)?),
        BinaryOp::Or => boolean(to_boolean(&left)? || to_boolean(&right)?),
        BinaryOp::Equal => boolean(sql_equal(&left, &right)),
        BinaryOp::NotEqual => boolean(!sql_equal(&left, &right)),
        BinaryOp::Less => boolean(order(&left, &right)? == Ordering::Less),
        BinaryOp::LessOrEqual => boolean(order(&left, &right)? != Ordering::Greater),
        BinaryOp::Greater => boolean(order(&left, &right)? == Ordering::Greater),
        BinaryOp::GreaterOrEqual => boolean(order(&left, &right)? != Ordering::Less),
        BinaryOp::In => match &*right {
            Value::Array(items) => boolean(items.iter().any(|item| sql_equal(&left, item))),
            _ => None,
        },
        BinaryOp::Contains => match (&*left, &*right) {
            (Value::String(text), Value::String(part)) => boolean(text.contains(part.as_str())),
            (Value::Array(items), needle) => boolean(items.iter().any(|i| sql_equal(i, needle))),
            _ => None,
        },
        BinaryOp::Add if left.is_string() || right.is_string() => {
            let mut text = datum_text(Some(left))?.into_owned();
            text.push_str(&to_text(&right)?);
            owned(Value::String(text))
        }
        BinaryOp::Add => {
            let (Value::Number(a), Value::Number(b)) = (&*left, &*right) else {
                return None;
            };
            arithmetic(op, number_of(a), number_of(b))?.into_datum()
        }
        BinaryOp::Subtract | BinaryOp::Multiply | BinaryOp::Divide | BinaryOp::Remainder => {
            arithmetic(op, to_decimal(&left)?, to_decimal(&right)?)?.into_datum()
        }
        BinaryOp::Concat => crate::functions::concat_values(vec![Some(left), Some(right)]),
    }
}

/// Int with Int stays Int (Java semantics: division truncates, remainder takes the dividend's
/// sign); anything else, or an Int result that overflows, is computed as a Decimal. Division by
/// zero is Undefined.
pub(crate) fn arithmetic(op: BinaryOp, left: Num, right: Num) -> Option<Num> {
    if let (Num::Int(a), Num::Int(b)) = (left, right) {
        let exact = match op {
            BinaryOp::Add => a.checked_add(b),
            BinaryOp::Subtract => a.checked_sub(b),
            BinaryOp::Multiply => a.checked_mul(b),
            BinaryOp::Divide | BinaryOp::Remainder if b == 0 => return None,
            BinaryOp::Divide => a.checked_div(b),
            BinaryOp::Remainder => Some(a.checked_rem(b).unwrap_or(0)),
            _ => return None,
        };
        if let Some(result) = exact {
            return Some(Num::Int(result));
        }
    }
    let (a, b) = (left.as_f64(), right.as_f64());
    let result = match op {
        BinaryOp::Add => a + b,
        BinaryOp::Subtract => a - b,
        BinaryOp::Multiply => a * b,
        BinaryOp::Divide => a / b,
        BinaryOp::Remainder => a % b,
        _ => return None,
    };
    result.is_finite().then_some(Num::Decimal(result))
}

/// `<`, `>` and friends: both sides converted to Decimal, Undefined if either cannot be.
fn order(left: &Value, right: &Value) -> Option<Ordering> {
    compare_numbers(to_decimal(left)?, to_decimal(right)?)
}

fn eval_case<'d>(case: &'d Case, scope: &Scope<'d>) -> Datum<'d> {
    let operand = match &case.operand {
        Some(operand) => Some(eval(operand, scope)?),
        None => None,
    };
    for (when, then) in &case.branches {
        let when = eval(when, scope);
        let matched = match &operand {
            Some(operand) => when.is_some_and(|when| sql_equal(operand, &when)),
            None => is_true(&when),
        };
        if matched {
            return eval(then, scope);
        }
    }
    eval(case.otherwise.as_ref()?, scope)
}

/// `cast(value AS type)`: the standard conversions plus numbers to and from Booleans; Decimals
/// round down to Ints.
pub(crate) fn cast<'d>(value: &Value, target: CastType) -> Datum<'d> {
    let result = match (target, value) {
        (CastType::String, Value::String(_)) => value.clone(),
        (CastType::String, _) => Value::String(to_text(value)?.into_owned()),
        (CastType::Int, Value::Bool(b)) => Value::from(i64::from(*b)),
        (CastType::Int, _) => Value::from(to_decimal(value)?.floor()?),
        (CastType::Decimal, Value::Bool(b)) => Value::from(i64::from(*b)),
        (CastType::Decimal, _) => to_decimal(value)?.into_value()?,
        (CastType::Boolean, Value::Number(n)) => Value::Bool(number_of(n).as_f64() != 0.0),
        (CastType::Boolean, _) => Value::Bool(to_boolean(value)?),
    };
    owned(result)
}

/// A nested `(SELECT ... FROM path WHERE ...)`: over an array, the array of each element's
/// result (elements failing WHERE or selecting Undefined are left out); over an object, that one
/// result; over anything else, Undefined.
fn subquery<'d>(query: &'d Query, scope: &Scope<'d>) -> Datum<'d> {
    let source = eval(query.source.as_ref()?, scope)?;
    let select = |document: &Value| {
        let inner = Scope {
            document: Some(document),
            message: scope.message,
        };
        let passes = query
            .filter
            .as_ref()
            .is_none_or(|filter| is_true(&eval(filter, &inner)));
        if passes {
            project(&query.projection, &inner)
        } else {
            None
        }
    };
    match &*source {
        Value::Array(items) => owned(Value::Array(items.iter().filter_map(select).collect())),
        Value::Object(_) => select(&source).map(Cow::Owned),
        _ => None,
    }
}

/// The value a SELECT list produces for `scope`'s document; `SELECT *` alone is the document.
pub(crate) fn project<'d>(projection: &'d Projection, scope: &Scope<'d>) -> Option<Value> {
    match projection {
        Projection::Value(expr) => eval(expr, scope).map(Cow::into_owned),
        Projection::Fields { wildcard, items } if items.is_empty() && *wildcard => {
            scope.document.cloned()
        }
        Projection::Fields { wildcard, items } => {
            let mut object = match scope.document {
                Some(Value::Object(members)) if *wildcard => members.clone(),
                _ => Map::with_capacity(items.len()),
            };
            for item in items {
                if let Some(value) = eval(&item.expr, scope) {
                    insert_path(&mut object, &item.key, value.into_owned());
                }
            }
            Some(Value::Object(object))
        }
    }
}

/// Inserts `value` at a dotted key, creating (or replacing non-object values with) the objects
/// on the way.
fn insert_path(object: &mut Map<String, Value>, path: &[Box<str>], value: Value) {
    match path {
        [] => {}
        [last] => {
            object.insert(last.to_string(), value);
        }
        [first, rest @ ..] => {
            let slot = object
                .entry(first.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(inner) = slot {
                insert_path(inner, rest, value);
            }
        }
    }
}
