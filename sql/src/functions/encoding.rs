//! `encode`, `decode` and the hash functions. `encode(*, 'base64')` reads the raw payload, so it
//! works on binary messages; every other argument is converted to String first.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use sha2::Digest;

use super::{Invocation, Prepared, literal};
use crate::ast::Expr;
use crate::value::{Datum, owned};

/// The only scheme AWS documents for `encode`/`decode` that works without AWS.
const BASE64: &str = "base64";

fn check_scheme(args: &[Expr], function: &str) -> Result<Prepared, String> {
    match literal(args, 1) {
        Some(Value::String(scheme)) if scheme.eq_ignore_ascii_case(BASE64) => Ok(Prepared::Nothing),
        _ => Err(format!(
            "`{function}` takes a literal encoding scheme, and only 'base64' is supported"
        )),
    }
}

pub(super) fn check_encode(args: &[Expr]) -> Result<Prepared, String> {
    check_scheme(args, "encode")
}

/// `decode(value, 'base64')`; the six-argument `'proto'` form reads a descriptor from S3.
pub(super) fn check_decode(args: &[Expr]) -> Result<Prepared, String> {
    if let Some(Value::String(scheme)) = literal(args, 1)
        && scheme.eq_ignore_ascii_case("proto")
    {
        return Err(
            "`decode(..., 'proto', ...)` reads its descriptor from Amazon S3, so it is not \
             available at the edge"
                .to_owned(),
        );
    }
    if args.len() != 2 {
        return Err("`decode` takes 2 arguments: a value and 'base64'".to_owned());
    }
    check_scheme(args, "decode")
}

pub(super) fn encode<'d>(mut inv: Invocation<'d>) -> Datum<'d> {
    let encoded = if matches!(inv.call.args.first(), Some(Expr::Payload)) {
        STANDARD.encode(inv.message().raw_payload)
    } else {
        STANDARD.encode(inv.text(0)?.as_bytes())
    };
    owned(Value::String(encoded))
}

/// Decoded JSON comes back as a value one can address (`decode(x, 'base64').temperature`);
/// other bytes as a string; text that is not base64 as Null, as AWS documents.
pub(super) fn decode<'d>(mut inv: Invocation<'d>) -> Datum<'d> {
    let text = inv.text(0)?;
    let Ok(bytes) = STANDARD.decode(text.trim().as_bytes()) else {
        return owned(Value::Null);
    };
    match serde_json::from_slice(&bytes) {
        Ok(value) => owned(value),
        Err(_) => owned(Value::String(String::from_utf8_lossy(&bytes).into_owned())),
    }
}

/// A hash of the argument's text, as lower-case hex.
pub(super) fn hash<'d, H: Digest>(mut inv: Invocation<'d>) -> Datum<'d> {
    let digest = H::digest(inv.text(0)?.as_bytes());
    let hex = digest.iter().fold(String::new(), |mut hex, byte| {
        hex.push_str(&format!("{byte:02x}"));
        hex
    });
    owned(Value::String(hex))
}
