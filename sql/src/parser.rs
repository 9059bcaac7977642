//! Recursive-descent parser from AWS IoT SQL text to the expression tree in `ast`.
//!
//! Written by hand rather than on `sqlparser`: AWS IoT SQL is not ANSI SQL. Its `FROM` takes a
//! quoted MQTT topic filter or, in nested queries, a JSON path; it has `SELECT VALUE`, `*` as a
//! function argument (`encode(*, 'base64')`), JSON object and array literals, strings in double
//! quotes, `a.b[0].c` paths on any expression, dotted aliases, and `${...}` templates that embed an
//! expression in free text. Bending a general SQL grammar to all of that would cost fidelity and
//! the exact line and column of each error. Function names are resolved and their arity checked
//! here, so a wrong call fails when the rule is loaded.

use serde_json::Value;

use crate::ast::{BinaryOp, Call, Case, CastType, Expr, Projection, Query, SelectItem};
use crate::error::{ErrorKind, SqlError};
use crate::functions;
use crate::lexer::{Keyword, Lexer, Punct, Token, TokenKind};
use crate::topic::TopicFilter;
use crate::value::{negate, number_of};

/// Deepest nesting of expressions accepted, so that evaluating (and dropping) a tree cannot
/// exhaust the stack on hostile input.
const MAX_DEPTH: usize = 128;

/// A parsed top-level statement.
pub(crate) struct ParsedStatement {
    pub query: Query,
    pub from: TopicFilter,
}

pub(crate) struct Parser<'s> {
    lexer: Lexer<'s>,
    peeked: Option<Token>,
    depth: usize,
    /// End of the last token consumed, so errors can span a whole call.
    last_end: usize,
}

impl<'s> Parser<'s> {
    /// A parser reading `source` from byte `at` (templates start inside the text).
    pub(crate) fn new(source: &'s str, at: usize) -> Self {
        Parser {
            lexer: Lexer::new(source, at),
            peeked: None,
            depth: 0,
            last_end: at,
        }
    }

    /// `SELECT ... FROM 'filter' [WHERE ...]` and nothing after it.
    pub(crate) fn statement(mut self) -> Result<ParsedStatement, SqlError> {
        self.expect_keyword(Keyword::Select, "a statement starts with SELECT")?;
        let projection = self.projection()?;
        self.expect_keyword(Keyword::From, "expected FROM after the SELECT list")?;
        let token = self.next()?;
        let TokenKind::Str(filter) = &token.kind else {
            return Err(self.error_at(
                &token,
                "FROM takes a topic filter in quotes, such as 'device/+/data'",
            ));
        };
        // Point filter errors at the filter inside the statement, not at the bare filter text.
        let from = TopicFilter::parse(filter).map_err(|error| {
            SqlError::at(
                ErrorKind::TopicFilter,
                self.lexer.source(),
                token.start,
                token.end,
                error.message,
            )
        })?;
        let filter = self.where_clause()?;
        let end = self.next()?;
        if end.kind != TokenKind::End {
            return Err(self.error_at(&end, "unexpected text after the statement"));
        }
        Ok(ParsedStatement {
            query: Query {
                projection,
                source: None,
                filter,
            },
            from,
        })
    }

    /// One expression followed by `}`, for `${...}` templates; returns it and the byte after `}`.
    pub(crate) fn template_expression(mut self) -> Result<(Expr, usize), SqlError> {
        let expr = self.expr()?;
        let close = self.next()?;
        if close.kind != TokenKind::Punct(Punct::CloseBrace) {
            return Err(self.error_at(&close, "expected `}` to close the substitution"));
        }
        Ok((expr, close.end))
    }

    fn where_clause(&mut self) -> Result<Option<Expr>, SqlError> {
        if self.eat_keyword(Keyword::Where)? {
            Ok(Some(self.expr()?))
        } else {
            Ok(None)
        }
    }

    fn projection(&mut self) -> Result<Projection, SqlError> {
        if self.at_value_keyword()? {
            self.next()?;
            if self.eat_punct(Punct::Star)? {
                return Ok(Projection::Value(Expr::Payload));
            }
            return Ok(Projection::Value(self.expr()?));
        }
        let mut wildcard = false;
        let mut items = Vec::new();
        loop {
            if self.eat_punct(Punct::Star)? {
                wildcard = true;
            } else {
                let expr = self.expr()?;
                let key = if self.eat_keyword(Keyword::As)? {
                    self.alias()?
                } else {
                    vec![default_key(&expr, items.len() + 1)]
                };
                items.push(SelectItem { expr, key });
            }
            if !self.eat_punct(Punct::Comma)? {
                return Ok(Projection::Fields { wildcard, items });
            }
        }
    }

    /// `SELECT VALUE x` versus a field named `value`: the keyword is followed by the start of an
    /// expression, the field by an operator, `,`, `AS` or `FROM`.
    fn at_value_keyword(&mut self) -> Result<bool, SqlError> {
        let token = self.peek()?;
        if token.kind != TokenKind::Ident || !self.text(&token).eq_ignore_ascii_case("value") {
            return Ok(false);
        }
        let mut ahead = self.lexer.clone();
        let next = ahead.next_token()?;
        Ok(match next.kind {
            TokenKind::Ident | TokenKind::Number(_) | TokenKind::Str(_) => true,
            TokenKind::Punct(Punct::OpenParen | Punct::OpenBrace) => true,
            TokenKind::Keyword(
                Keyword::Case | Keyword::Not | Keyword::True | Keyword::False | Keyword::Null,
            ) => true,
            TokenKind::Punct(Punct::Star) => matches!(
                ahead.next_token()?.kind,
                TokenKind::Keyword(Keyword::From) | TokenKind::End
            ),
            _ => false,
        })
    }

    fn alias(&mut self) -> Result<Vec<Box<str>>, SqlError> {
        let mut path = vec![self.identifier("expected a name after AS")?];
        while self.eat_punct(Punct::Dot)? {
            path.push(self.identifier("expected a name after `.` in the alias")?);
        }
        Ok(path)
    }

    fn identifier(&mut self, expectation: &str) -> Result<Box<str>, SqlError> {
        let token = self.next()?;
        if token.kind == TokenKind::Ident {
            Ok(self.text(&token).into())
        } else {
            Err(self.error_at(&token, expectation))
        }
    }

    pub(crate) fn expr(&mut self) -> Result<Expr, SqlError> {
        self.nest(|parser| parser.or())
    }

    fn nest(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<Expr, SqlError>,
    ) -> Result<Expr, SqlError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let token = self.peek()?;
            return Err(self.error_at(&token, "expression nests too deeply"));
        }
        let expr = parse(self);
        self.depth -= 1;
        expr
    }

    /// Left-associative chain of `operand (op operand)*`; each link counts as one level of
    /// nesting, since the tree it builds is that deep.
    fn chain(
        &mut self,
        operator: fn(&TokenKind) -> Option<BinaryOp>,
        operand: fn(&mut Self) -> Result<Expr, SqlError>,
    ) -> Result<Expr, SqlError> {
        let mut left = operand(self)?;
        let depth = self.depth;
        while let Some(op) = operator(&self.peek()?.kind) {
            self.next()?;
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                let token = self.peek()?;
                return Err(self.error_at(&token, "expression nests too deeply"));
            }
            let right = operand(self)?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
        self.depth = depth;
        Ok(left)
    }

    fn or(&mut self) -> Result<Expr, SqlError> {
        self.chain(
            |kind| (*kind == TokenKind::Keyword(Keyword::Or)).then_some(BinaryOp::Or),
            Self::and,
        )
    }

    fn and(&mut self) -> Result<Expr, SqlError> {
        self.chain(
            |kind| (*kind == TokenKind::Keyword(Keyword::And)).then_some(BinaryOp::And),
            Self::not,
        )
    }

    fn not(&mut self) -> Result<Expr, SqlError> {
        if self.eat_keyword(Keyword::Not)? {
            let operand = self.nest(Self::not)?;
            return Ok(Expr::Not(Box::new(operand)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, SqlError> {
        self.chain(
            |kind| match kind {
                TokenKind::Punct(Punct::Equal) => Some(BinaryOp::Equal),
                TokenKind::Punct(Punct::NotEqual) => Some(BinaryOp::NotEqual),
                TokenKind::Punct(Punct::Less) => Some(BinaryOp::Less),
                TokenKind::Punct(Punct::LessOrEqual) => Some(BinaryOp::LessOrEqual),
                TokenKind::Punct(Punct::Greater) => Some(BinaryOp::Greater),
                TokenKind::Punct(Punct::GreaterOrEqual) => Some(BinaryOp::GreaterOrEqual),
                TokenKind::Keyword(Keyword::In) => Some(BinaryOp::In),
                TokenKind::Keyword(Keyword::Contains) => Some(BinaryOp::Contains),
                _ => None,
            },
            Self::additive,
        )
    }

    fn additive(&mut self) -> Result<Expr, SqlError> {
        self.chain(
            |kind| match kind {
                TokenKind::Punct(Punct::Plus) => Some(BinaryOp::Add),
                TokenKind::Punct(Punct::Minus) => Some(BinaryOp::Subtract),
                TokenKind::Punct(Punct::Concat) => Some(BinaryOp::Concat),
                _ => None,
            },
            Self::multiplicative,
        )
    }

    fn multiplicative(&mut self) -> Result<Expr, SqlError> {
        self.chain(
            |kind| match kind {
                TokenKind::Punct(Punct::Star) => Some(BinaryOp::Multiply),
                TokenKind::Punct(Punct::Slash) => Some(BinaryOp::Divide),
                TokenKind::Punct(Punct::Percent) => Some(BinaryOp::Remainder),
                _ => None,
            },
            Self::unary,
        )
    }

    fn unary(&mut self) -> Result<Expr, SqlError> {
        if self.eat_punct(Punct::Minus)? {
            let operand = self.nest(Self::unary)?;
            // Fold `-5` into a literal so it costs nothing per message.
            if let Expr::Literal(Value::Number(n)) = &operand
                && let Some(negated) = negate(number_of(n)).into_value()
            {
                return Ok(Expr::Literal(negated));
            }
            return Ok(Expr::Negate(Box::new(operand)));
        }
        if self.eat_punct(Punct::Plus)? {
            return self.nest(Self::unary);
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Expr, SqlError> {
        let mut expr = self.primary()?;
        let depth = self.depth;
        loop {
            let access = if self.eat_punct(Punct::Dot)? {
                let name = self.identifier("expected a field name after `.`")?;
                Expr::Member(Box::new(expr), name)
            } else if self.eat_punct(Punct::OpenBracket)? {
                let index = self.expr()?;
                self.expect_punct(Punct::CloseBracket, "expected `]` after the index")?;
                Expr::Index(Box::new(expr), Box::new(index))
            } else {
                self.depth = depth;
                return Ok(expr);
            };
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                let token = self.peek()?;
                return Err(self.error_at(&token, "expression nests too deeply"));
            }
            expr = access;
        }
    }

    fn primary(&mut self) -> Result<Expr, SqlError> {
        let token = self.next()?;
        match token.kind {
            TokenKind::Number(value) => Ok(Expr::Literal(value)),
            TokenKind::Str(text) => Ok(Expr::Literal(Value::String(text))),
            TokenKind::Keyword(Keyword::True) => Ok(Expr::Literal(Value::Bool(true))),
            TokenKind::Keyword(Keyword::False) => Ok(Expr::Literal(Value::Bool(false))),
            TokenKind::Keyword(Keyword::Null) => Ok(Expr::Literal(Value::Null)),
            TokenKind::Keyword(Keyword::Case) => self.nest(Self::case),
            TokenKind::Ident => {
                if self.eat_punct(Punct::OpenParen)? {
                    self.nest(|parser| parser.call(&token))
                } else {
                    Ok(Expr::Field(self.text(&token).into()))
                }
            }
            TokenKind::Punct(Punct::OpenParen) => self.nest(Self::parenthesized),
            TokenKind::Punct(Punct::OpenBrace) => self.nest(Self::object),
            TokenKind::Punct(Punct::OpenBracket) => self.nest(Self::array),
            _ => Err(self.error_at(&token, "expected an expression")),
        }
    }

    fn parenthesized(&mut self) -> Result<Expr, SqlError> {
        let expr = if self.eat_keyword(Keyword::Select)? {
            Expr::Subquery(Box::new(self.subquery()?))
        } else {
            self.expr()?
        };
        self.expect_punct(Punct::CloseParen, "expected `)`")?;
        Ok(expr)
    }

    /// The rest of `(SELECT ... FROM path [WHERE ...])` after SELECT.
    fn subquery(&mut self) -> Result<Query, SqlError> {
        let projection = self.projection()?;
        self.expect_keyword(Keyword::From, "expected FROM in the nested SELECT")?;
        let source = self.expr()?;
        let filter = self.where_clause()?;
        Ok(Query {
            projection,
            source: Some(source),
            filter,
        })
    }

    fn object(&mut self) -> Result<Expr, SqlError> {
        let mut members = Vec::new();
        if self.eat_punct(Punct::CloseBrace)? {
            return Ok(Expr::Object(members));
        }
        loop {
            let token = self.next()?;
            let key: Box<str> = match &token.kind {
                TokenKind::Str(text) => text.as_str().into(),
                TokenKind::Ident => self.text(&token).into(),
                _ => return Err(self.error_at(&token, "expected a quoted key in the object")),
            };
            self.expect_punct(Punct::Colon, "expected `:` after the key")?;
            members.push((key, self.expr()?));
            if !self.eat_punct(Punct::Comma)? {
                self.expect_punct(Punct::CloseBrace, "expected `,` or `}` in the object")?;
                return Ok(Expr::Object(members));
            }
        }
    }

    fn array(&mut self) -> Result<Expr, SqlError> {
        let mut elements = Vec::new();
        if self.eat_punct(Punct::CloseBracket)? {
            return Ok(Expr::Array(elements));
        }
        loop {
            elements.push(self.expr()?);
            if !self.eat_punct(Punct::Comma)? {
                self.expect_punct(Punct::CloseBracket, "expected `,` or `]` in the array")?;
                return Ok(Expr::Array(elements));
            }
        }
    }

    fn case(&mut self) -> Result<Expr, SqlError> {
        let operand = if self.peek()?.kind == TokenKind::Keyword(Keyword::When) {
            None
        } else {
            Some(self.expr()?)
        };
        let mut branches = Vec::new();
        while self.eat_keyword(Keyword::When)? {
            let when = self.expr()?;
            self.expect_keyword(Keyword::Then, "expected THEN after the WHEN value")?;
            branches.push((when, self.expr()?));
        }
        if branches.is_empty() {
            let token = self.peek()?;
            return Err(self.error_at(&token, "CASE needs at least one WHEN"));
        }
        let otherwise = if self.eat_keyword(Keyword::Else)? {
            Some(self.expr()?)
        } else {
            None
        };
        self.expect_keyword(Keyword::End, "expected END to close CASE")?;
        Ok(Expr::Case(Box::new(Case {
            operand,
            branches,
            otherwise,
        })))
    }

    /// A function call after `name(`; `cast` has its own `value AS type` form.
    fn call(&mut self, name_token: &Token) -> Result<Expr, SqlError> {
        let name = self.text(name_token);
        if name.eq_ignore_ascii_case("cast") {
            return self.cast();
        }
        let Some(function) = functions::resolve(name) else {
            return Err(SqlError::at(
                ErrorKind::UnknownFunction,
                self.lexer.source(),
                name_token.start,
                name_token.end,
                format!("unknown function `{name}`"),
            ));
        };
        let mut args = Vec::new();
        if !self.eat_punct(Punct::CloseParen)? {
            loop {
                args.push(self.argument()?);
                if !self.eat_punct(Punct::Comma)? {
                    self.expect_punct(Punct::CloseParen, "expected `,` or `)` after the argument")?;
                    break;
                }
            }
        }
        let call_end = self.last_end;
        let fail = |kind, message: String| {
            SqlError::at(
                kind,
                self.lexer.source(),
                name_token.start,
                call_end,
                message,
            )
        };
        let prepared = function
            .check(&args)
            .map_err(|(kind, message)| fail(kind, message))?;
        Ok(Expr::Call(Box::new(Call {
            function,
            args,
            prepared,
        })))
    }

    /// A function argument: an expression, or `*` for the whole payload.
    fn argument(&mut self) -> Result<Expr, SqlError> {
        if self.peek()?.kind == TokenKind::Punct(Punct::Star) {
            let mut ahead = self.lexer.clone();
            if matches!(
                ahead.next_token()?.kind,
                TokenKind::Punct(Punct::Comma | Punct::CloseParen)
            ) {
                self.next()?;
                return Ok(Expr::Payload);
            }
        }
        self.expr()
    }

    fn cast(&mut self) -> Result<Expr, SqlError> {
        let value = self.expr()?;
        self.expect_keyword(Keyword::As, "cast takes `value AS type`")?;
        let token = self.next()?;
        let target = match (&token.kind, self.text(&token).to_ascii_lowercase().as_str()) {
            (TokenKind::Ident, "string" | "nvarchar" | "text" | "ntext" | "varchar") => {
                CastType::String
            }
            (TokenKind::Ident, "int" | "integer") => CastType::Int,
            (TokenKind::Ident, "decimal" | "double") => CastType::Decimal,
            (TokenKind::Ident, "bool" | "boolean") => CastType::Boolean,
            _ => {
                return Err(SqlError::at(
                    ErrorKind::InvalidArgument,
                    self.lexer.source(),
                    token.start,
                    token.end,
                    "cast type must be String, Nvarchar, Text, Ntext, Varchar, Int, Integer, \
                     Decimal, Double, Bool or Boolean",
                ));
            }
        };
        self.expect_punct(Punct::CloseParen, "expected `)` to close cast")?;
        Ok(Expr::Cast(Box::new(value), target))
    }

    fn text(&self, token: &Token) -> &'s str {
        &self.lexer.source()[token.start..token.end]
    }

    fn peek(&mut self) -> Result<Token, SqlError> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lexer.next_token()?);
        }
        match &self.peeked {
            Some(token) => Ok(token.clone()),
            None => self.lexer.clone().next_token(),
        }
    }

    fn next(&mut self) -> Result<Token, SqlError> {
        let token = match self.peeked.take() {
            Some(token) => token,
            None => self.lexer.next_token()?,
        };
        self.last_end = token.end;
        Ok(token)
    }

    fn eat_punct(&mut self, punct: Punct) -> Result<bool, SqlError> {
        self.eat(TokenKind::Punct(punct))
    }

    fn eat_keyword(&mut self, keyword: Keyword) -> Result<bool, SqlError> {
        self.eat(TokenKind::Keyword(keyword))
    }

    fn eat(&mut self, kind: TokenKind) -> Result<bool, SqlError> {
        if self.peek()?.kind == kind {
            self.next()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn expect_punct(&mut self, punct: Punct, message: &str) -> Result<(), SqlError> {
        self.expect(TokenKind::Punct(punct), message)
    }

    fn expect_keyword(&mut self, keyword: Keyword, message: &str) -> Result<(), SqlError> {
        self.expect(TokenKind::Keyword(keyword), message)
    }

    fn expect(&mut self, kind: TokenKind, message: &str) -> Result<(), SqlError> {
        let token = self.next()?;
        if token.kind == kind {
            Ok(())
        } else {
            Err(self.error_at(&token, message))
        }
    }

    fn error_at(&self, token: &Token, message: &str) -> SqlError {
        SqlError::at(
            ErrorKind::Syntax,
            self.lexer.source(),
            token.start,
            token.end,
            message,
        )
    }
}

/// The output key of an unaliased SELECT item: the last field name of a path, the function name
/// of a call, otherwise `_N` for the item's position.
fn default_key(expr: &Expr, position: usize) -> Box<str> {
    match expr {
        Expr::Field(name) | Expr::Member(_, name) => name.clone(),
        Expr::Index(base, _) => default_key(base, position),
        Expr::Call(call) => call.function.name.into(),
        Expr::Cast(..) => "cast".into(),
        _ => format!("_{position}").into(),
    }
}
