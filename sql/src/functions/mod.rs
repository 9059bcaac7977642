//! The function library as one table, in the manner of LF Edge eKuiper: each entry declares its
//! name, arity, load-time checks on literal arguments and its evaluation. The parser consults the
//! table when a rule is loaded, so an unknown function, a wrong number of arguments, a bad literal
//! or a function that needs AWS services fails then, not per message. Adding a function touches
//! only `FUNCTIONS` (and the module holding its body).

mod collection;
mod context;
mod encoding;
mod math;
mod text;
mod time;

use std::borrow::Cow;

use serde_json::Value;

use crate::ast::{Call, Expr};
use crate::error::ErrorKind;
use crate::eval::Scope;
use crate::message::MessageContext;
use crate::value::{Datum, Num, datum_text, to_decimal};

pub(crate) use collection::concat_values;
pub(crate) use context::TopicPart;

/// How many arguments a function takes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arity {
    Exactly(usize),
    Between(usize, usize),
    AtLeast(usize),
}

impl Arity {
    fn accepts(self, count: usize) -> bool {
        match self {
            Arity::Exactly(n) => count == n,
            Arity::Between(min, max) => (min..=max).contains(&count),
            Arity::AtLeast(min) => count >= min,
        }
    }

    fn describe(self) -> String {
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        match self {
            Arity::Exactly(n) => format!("{n} argument{}", plural(n)),
            Arity::Between(min, max) => format!("{min} to {max} arguments"),
            Arity::AtLeast(min) => format!("at least {min} argument{}", plural(min)),
        }
    }
}

/// Where a function can run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Availability {
    Edge,
    /// Needs an AWS service or AWS IoT Core's own connection metadata; the reason says which.
    NeedsAws(&'static str),
}

/// Work done once, at load, on literal arguments.
#[derive(Debug)]
pub(crate) enum Prepared {
    Nothing,
    Regex(regex::Regex),
    DatePattern(time::Pattern),
}

pub(crate) type Evaluate = for<'d> fn(Invocation<'d>) -> Datum<'d>;
pub(crate) type Prepare = fn(&[Expr]) -> Result<Prepared, String>;

/// One entry of the function table.
pub(crate) struct Function {
    /// Lower-case name; calls match it case-insensitively (`Round(1.5)` works, as in AWS).
    pub name: &'static str,
    pub arity: Arity,
    pub evaluate: Evaluate,
    pub prepare: Prepare,
    pub availability: Availability,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Function {
    const fn edge(name: &'static str, arity: Arity, evaluate: Evaluate) -> Function {
        Function {
            name,
            arity,
            evaluate,
            prepare: |_| Ok(Prepared::Nothing),
            availability: Availability::Edge,
        }
    }

    const fn prepared(mut self, prepare: Prepare) -> Function {
        self.prepare = prepare;
        self
    }

    const fn needs_aws(name: &'static str, reason: &'static str) -> Function {
        Function {
            name,
            arity: Arity::AtLeast(0),
            evaluate: |_| None,
            prepare: |_| Ok(Prepared::Nothing),
            availability: Availability::NeedsAws(reason),
        }
    }

    /// The load-time checks: availability, arity, then the function's own literal checks.
    pub(crate) fn check(&self, args: &[Expr]) -> Result<Prepared, (ErrorKind, String)> {
        if let Availability::NeedsAws(reason) = self.availability {
            return Err((
                ErrorKind::NotAvailableAtEdge,
                format!(
                    "`{}` {reason}, so it is not available at the edge",
                    self.name
                ),
            ));
        }
        if !self.arity.accepts(args.len()) {
            return Err((
                ErrorKind::Arity,
                format!(
                    "`{}` takes {}, not {}",
                    self.name,
                    self.arity.describe(),
                    args.len()
                ),
            ));
        }
        (self.prepare)(args).map_err(|message| (ErrorKind::InvalidArgument, message))
    }
}

/// A call being evaluated: its evaluated arguments, the call node and the scope.
pub(crate) struct Invocation<'d> {
    pub args: Vec<Datum<'d>>,
    pub call: &'d Call,
    pub scope: Scope<'d>,
}

impl<'d> Invocation<'d> {
    /// Moves argument `index` out (Undefined if absent).
    fn take(&mut self, index: usize) -> Datum<'d> {
        self.args.get_mut(index).and_then(Option::take)
    }

    fn arg(&self, index: usize) -> Option<&Value> {
        self.args.get(index)?.as_deref()
    }

    /// Argument `index` converted to String by the standard rules.
    fn text(&mut self, index: usize) -> Option<Cow<'d, str>> {
        datum_text(self.take(index))
    }

    /// Argument `index` converted to Decimal by the standard rules.
    fn decimal(&self, index: usize) -> Option<Num> {
        to_decimal(self.arg(index)?)
    }

    fn message(&self) -> &MessageContext<'d> {
        self.scope.message
    }
}

/// A literal argument, if argument `index` is one.
fn literal(args: &[Expr], index: usize) -> Option<&Value> {
    match args.get(index) {
        Some(Expr::Literal(value)) => Some(value),
        _ => None,
    }
}

/// Why each AWS-bound function cannot run here.
const CALLS_AWS: &str = "calls an AWS service";
const AWS_IDENTITY: &str = "reads AWS IoT Core connection metadata the gateway does not have";

/// Every function of the AWS IoT SQL reference, alphabetically.
static FUNCTIONS: &[Function] = &[
    Function::edge("abs", Arity::Exactly(1), math::abs),
    Function::needs_aws("accountid", AWS_IDENTITY),
    Function::edge("acos", Arity::Exactly(1), |i| math::double(i, f64::acos)),
    Function::edge("asin", Arity::Exactly(1), |i| math::double(i, f64::asin)),
    Function::edge("atan", Arity::Exactly(1), |i| math::double(i, f64::atan)),
    Function::edge("atan2", Arity::Exactly(2), |i| math::double2(i, f64::atan2)),
    Function::needs_aws("aws_lambda", CALLS_AWS),
    Function::edge("bitand", Arity::Exactly(2), |i| {
        math::bits2(i, |a, b| a & b)
    }),
    Function::edge("bitnot", Arity::Exactly(1), math::bitnot),
    Function::edge("bitor", Arity::Exactly(2), |i| math::bits2(i, |a, b| a | b)),
    Function::edge("bitxor", Arity::Exactly(2), |i| {
        math::bits2(i, |a, b| a ^ b)
    }),
    Function::edge("ceil", Arity::Exactly(1), |i| math::to_int(i, f64::ceil)),
    Function::edge("chr", Arity::Exactly(1), text::chr),
    Function::edge("clientid", Arity::Exactly(0), context::clientid),
    Function::edge("concat", Arity::AtLeast(0), collection::concat),
    Function::edge("cos", Arity::Exactly(1), |i| math::double(i, f64::cos)),
    Function::edge("cosh", Arity::Exactly(1), |i| math::double(i, f64::cosh)),
    Function::edge("decode", Arity::Between(2, 6), encoding::decode)
        .prepared(encoding::check_decode),
    Function::edge("encode", Arity::Exactly(2), encoding::encode).prepared(encoding::check_encode),
    Function::edge("endswith", Arity::Exactly(2), |i| {
        text::test2(i, |a, b| a.ends_with(b))
    }),
    Function::edge("exp", Arity::Exactly(1), |i| math::double(i, f64::exp)),
    Function::edge("floor", Arity::Exactly(1), |i| math::to_int(i, f64::floor)),
    Function::edge("get", Arity::Exactly(2), collection::get),
    Function::needs_aws("get_dynamodb", CALLS_AWS),
    Function::edge(
        "get_mqtt_property",
        Arity::Exactly(1),
        context::get_mqtt_property,
    )
    .prepared(context::check_mqtt_property),
    Function::edge(
        "get_or_default",
        Arity::Exactly(2),
        collection::get_or_default,
    ),
    Function::needs_aws("get_registry_data", CALLS_AWS),
    Function::needs_aws("get_secret", CALLS_AWS),
    Function::needs_aws("get_thing_shadow", CALLS_AWS),
    Function::edge(
        "get_user_properties",
        Arity::Between(0, 1),
        context::get_user_properties,
    ),
    Function::edge("indexof", Arity::Exactly(2), text::indexof),
    Function::edge("isnull", Arity::Exactly(1), |i| {
        collection::is(i, |v| v == Some(&Value::Null))
    }),
    Function::edge("isundefined", Arity::Exactly(1), |i| {
        collection::is(i, |v| v.is_none())
    }),
    Function::edge("length", Arity::Exactly(1), |i| {
        text::measure(i, |s| s.chars().count())
    }),
    Function::edge("ln", Arity::Exactly(1), |i| math::double(i, f64::ln)),
    Function::edge("log", Arity::Exactly(1), |i| math::double(i, f64::log10)),
    Function::edge("lower", Arity::Exactly(1), |i| {
        text::map(i, |s| s.to_lowercase())
    }),
    Function::edge("lpad", Arity::Exactly(2), |i| {
        text::pad(i, text::Side::Left)
    }),
    Function::edge("ltrim", Arity::Exactly(1), |i| {
        text::map(i, |s| text::trim_start(s).to_owned())
    }),
    Function::needs_aws("machinelearning_predict", CALLS_AWS),
    Function::edge("md2", Arity::Exactly(1), encoding::hash::<md2::Md2>),
    Function::edge("md5", Arity::Exactly(1), encoding::hash::<md5::Md5>),
    Function::edge("mod", Arity::Exactly(2), math::remainder),
    Function::edge("nanvl", Arity::Exactly(2), collection::nanvl),
    Function::edge("newuuid", Arity::Exactly(0), context::newuuid),
    Function::edge("numbytes", Arity::Exactly(1), |i| {
        text::measure(i, str::len)
    }),
    Function::edge("parse_time", Arity::Between(2, 3), time::parse_time)
        .prepared(time::check_parse_time),
    Function::edge("power", Arity::Exactly(2), |i| math::double2(i, f64::powf)),
    Function::needs_aws("principal", AWS_IDENTITY),
    Function::edge("rand", Arity::Exactly(0), math::rand),
    Function::edge("regexp_matches", Arity::Exactly(2), text::regexp_matches)
        .prepared(text::check_regexp),
    Function::edge("regexp_replace", Arity::Exactly(3), text::regexp_replace)
        .prepared(text::check_regexp),
    Function::edge("regexp_substr", Arity::Exactly(2), text::regexp_substr)
        .prepared(text::check_regexp),
    Function::edge("remainder", Arity::Exactly(2), math::remainder),
    Function::edge("replace", Arity::Exactly(3), text::replace),
    Function::edge("round", Arity::Exactly(1), |i| math::to_int(i, f64::round)),
    Function::edge("rpad", Arity::Exactly(2), |i| {
        text::pad(i, text::Side::Right)
    }),
    Function::edge("rtrim", Arity::Exactly(1), |i| {
        text::map(i, |s| text::trim_end(s).to_owned())
    }),
    Function::edge("sha1", Arity::Exactly(1), |i| {
        encoding::hash::<sha1::Sha1>(i)
    }),
    Function::edge("sha224", Arity::Exactly(1), |i| {
        encoding::hash::<sha2::Sha224>(i)
    }),
    Function::edge("sha256", Arity::Exactly(1), |i| {
        encoding::hash::<sha2::Sha256>(i)
    }),
    Function::edge("sha384", Arity::Exactly(1), |i| {
        encoding::hash::<sha2::Sha384>(i)
    }),
    Function::edge("sha512", Arity::Exactly(1), |i| {
        encoding::hash::<sha2::Sha512>(i)
    }),
    Function::edge("sign", Arity::Exactly(1), math::sign),
    Function::edge("sin", Arity::Exactly(1), |i| math::double(i, f64::sin)),
    Function::edge("sinh", Arity::Exactly(1), |i| math::double(i, f64::sinh)),
    Function::needs_aws("sourceip", AWS_IDENTITY),
    Function::edge("sql_version", Arity::Exactly(0), context::sql_version),
    Function::edge("sqrt", Arity::Exactly(1), |i| math::double(i, f64::sqrt)),
    Function::edge("startswith", Arity::Exactly(2), |i| {
        text::test2(i, |a, b| a.starts_with(b))
    }),
    Function::edge("substring", Arity::Between(2, 3), text::substring),
    Function::edge("tan", Arity::Exactly(1), |i| math::double(i, f64::tan)),
    Function::edge("tanh", Arity::Exactly(1), |i| math::double(i, f64::tanh)),
    Function::edge("time_to_epoch", Arity::Exactly(2), time::time_to_epoch)
        .prepared(time::check_time_to_epoch),
    Function::edge("timestamp", Arity::Exactly(0), context::timestamp),
    Function::edge("topic", Arity::Between(0, 1), context::topic),
    Function::needs_aws("traceid", AWS_IDENTITY),
    Function::edge("transform", Arity::Exactly(3), collection::transform),
    Function::edge("trim", Arity::Exactly(1), |i| {
        text::map(i, |s| text::trim_end(text::trim_start(s)).to_owned())
    }),
    Function::edge("trunc", Arity::Exactly(2), math::trunc),
    Function::edge("upper", Arity::Exactly(1), |i| {
        text::map(i, |s| s.to_uppercase())
    }),
];

/// The table entry for `name`, case-insensitively.
pub(crate) fn resolve(name: &str) -> Option<&'static Function> {
    FUNCTIONS.iter().find(|f| f.name.eq_ignore_ascii_case(name))
}

/// Every function of the table, for documentation and tests.
#[cfg(test)]
pub(crate) fn all() -> &'static [Function] {
    FUNCTIONS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/sql-functions.md lists every function with its status.
    const REFERENCE: &str = include_str!("../../../docs/sql-functions.md");

    #[test]
    fn every_function_is_listed_in_the_reference_with_its_status() {
        for function in all() {
            let row = REFERENCE
                .lines()
                .find(|line| line.starts_with(&format!("| `{}(", function.name)))
                .unwrap_or_else(|| {
                    panic!("{} is missing from docs/sql-functions.md", function.name)
                });
            let expected = match function.availability {
                Availability::Edge => "supported",
                Availability::NeedsAws(_) => "not available at the edge",
            };
            assert!(row.contains(expected), "{}: {row}", function.name);
        }
    }

    #[test]
    fn names_are_unique_and_lower_case() {
        for (index, function) in all().iter().enumerate() {
            assert_eq!(function.name, function.name.to_ascii_lowercase());
            assert!(
                all()[index + 1..]
                    .iter()
                    .all(|other| other.name != function.name)
            );
        }
    }
}
