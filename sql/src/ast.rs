//! The typed expression tree a statement or template compiles to. The parser builds it once per
//! rule; the evaluator walks it per message. Nothing here is text any more.

use serde_json::Value;

use crate::functions::{Function, Prepared};

/// An expression of the SELECT list, WHERE clause, nested query or substitution template.
#[derive(Debug)]
pub(crate) enum Expr {
    /// A literal value, or `NULL`.
    Literal(Value),
    /// A top-level field of the current document (the payload, or an element in a nested query).
    Field(Box<str>),
    /// `base.name`
    Member(Box<Expr>, Box<str>),
    /// `base[index]`
    Index(Box<Expr>, Box<Expr>),
    /// `*` given as a function argument: the whole payload.
    Payload,
    Not(Box<Expr>),
    Negate(Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    Case(Box<Case>),
    Call(Box<Call>),
    Cast(Box<Expr>, CastType),
    /// `{'key': expr, ...}`; members whose value is Undefined are left out.
    Object(Vec<(Box<str>, Expr)>),
    /// `[expr, ...]`; Undefined elements are left out.
    Array(Vec<Expr>),
    /// `(SELECT ... FROM expr WHERE ...)` over an array or object of the document.
    Subquery(Box<Query>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinaryOp {
    And,
    Or,
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    In,
    Contains,
    Add,
    Subtract,
    Multiply,
    Divide,
    Remainder,
    Concat,
}

/// `CASE [operand] WHEN .. THEN .. [ELSE ..] END`: with an operand, each `WHEN` value is compared
/// for equality; without one, each `WHEN` is a condition.
#[derive(Debug)]
pub(crate) struct Case {
    pub operand: Option<Expr>,
    pub branches: Vec<(Expr, Expr)>,
    pub otherwise: Option<Expr>,
}

/// A call of a library function, resolved and checked when the statement was loaded.
#[derive(Debug)]
pub(crate) struct Call {
    pub function: &'static Function,
    pub args: Vec<Expr>,
    /// Work done once at load on literal arguments (compiled regular expressions, date patterns).
    pub prepared: Prepared,
}

/// Target of `cast(value AS type)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CastType {
    String,
    Int,
    Decimal,
    Boolean,
}

/// A SELECT list, WHERE clause and source: the top-level statement's body or a nested query.
#[derive(Debug)]
pub(crate) struct Query {
    pub projection: Projection,
    /// For nested queries, the array or object iterated; the top level reads the payload.
    pub source: Option<Expr>,
    pub filter: Option<Expr>,
}

/// What a SELECT produces.
#[derive(Debug)]
pub(crate) enum Projection {
    /// `SELECT VALUE expr`: the value itself, not wrapped in an object.
    Value(Expr),
    /// `SELECT [*,] expr [AS name], ...`: an object, starting from the document's members when `*`
    /// is listed. `SELECT *` alone is the document unchanged.
    Fields {
        wildcard: bool,
        items: Vec<SelectItem>,
    },
}

/// One `expr [AS name]` of a SELECT list.
#[derive(Debug)]
pub(crate) struct SelectItem {
    pub expr: Expr,
    /// Output key; a dotted alias (`AS state.desired.color`) builds nested objects.
    pub key: Vec<Box<str>>,
}
