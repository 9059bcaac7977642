//! Numeric functions: AWS converts numeric strings to Decimals first, computes trigonometry and
//! logarithms in double precision, and returns Undefined for anything else (including imaginary
//! or infinite results).

use serde_json::Value;

use super::Invocation;
use crate::ast::BinaryOp;
use crate::eval::arithmetic;
use crate::value::{Datum, Num, float_to_int, owned};

/// A double-precision function of one number.
pub(super) fn double<'d>(inv: Invocation<'d>, f: fn(f64) -> f64) -> Datum<'d> {
    Num::Decimal(f(inv.decimal(0)?.as_f64())).into_datum()
}

/// A double-precision function of two numbers.
pub(super) fn double2<'d>(inv: Invocation<'d>, f: fn(f64, f64) -> f64) -> Datum<'d> {
    let (a, b) = (inv.decimal(0)?, inv.decimal(1)?);
    Num::Decimal(f(a.as_f64(), b.as_f64())).into_datum()
}

pub(super) fn abs<'d>(inv: Invocation<'d>) -> Datum<'d> {
    match inv.decimal(0)? {
        Num::Int(i) => i
            .checked_abs()
            .map_or(Num::Decimal((i as f64).abs()), Num::Int),
        Num::Decimal(d) => Num::Decimal(d.abs()),
    }
    .into_datum()
}

/// `ceil`, `floor`, `round`: Ints unchanged, Decimals (and numeric strings) rounded to an Int.
pub(super) fn to_int<'d>(inv: Invocation<'d>, rounding: fn(f64) -> f64) -> Datum<'d> {
    let int = match inv.decimal(0)? {
        Num::Int(i) => i,
        Num::Decimal(d) => float_to_int(rounding(d))?,
    };
    owned(Value::from(int))
}

pub(super) fn sign<'d>(inv: Invocation<'d>) -> Datum<'d> {
    let sign = match inv.decimal(0)? {
        Num::Int(i) => i.signum(),
        Num::Decimal(d) if d > 0.0 => 1,
        Num::Decimal(d) if d < 0.0 => -1,
        Num::Decimal(_) => 0,
    };
    owned(Value::from(sign))
}

/// `mod` and `remainder`, the same as the `%` operator.
pub(super) fn remainder<'d>(inv: Invocation<'d>) -> Datum<'d> {
    arithmetic(BinaryOp::Remainder, inv.decimal(0)?, inv.decimal(1)?)?.into_datum()
}

/// Bit functions round their arguments down to Ints.
pub(super) fn bits2<'d>(inv: Invocation<'d>, f: fn(i64, i64) -> i64) -> Datum<'d> {
    let (a, b) = (inv.decimal(0)?.floor()?, inv.decimal(1)?.floor()?);
    owned(Value::from(f(a, b)))
}

pub(super) fn bitnot<'d>(inv: Invocation<'d>) -> Datum<'d> {
    owned(Value::from(!inv.decimal(0)?.floor()?))
}

/// `trunc(number, places)`: cuts (does not round) to 0..=34 decimal places, working on the decimal
/// text so that binary floating point does not turn 0.29 into 0.28.
pub(super) fn trunc<'d>(inv: Invocation<'d>) -> Datum<'d> {
    let number = inv.decimal(0)?;
    let places = inv.decimal(1)?.as_f64().floor().clamp(0.0, 34.0) as usize;
    let Num::Decimal(d) = number else {
        return number.into_datum();
    };
    let text = d.to_string();
    let cut = match text.find('.') {
        Some(point) if places == 0 => &text[..point],
        Some(point) => &text[..text.len().min(point + 1 + places)],
        None => &text,
    };
    Num::Decimal(cut.parse().ok()?).into_datum()
}

pub(super) fn rand<'d>(_: Invocation<'d>) -> Datum<'d> {
    Num::Decimal(fastrand::f64()).into_datum()
}
