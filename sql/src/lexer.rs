//! Splits AWS IoT SQL text into tokens on demand, remembering where each one starts so errors can
//! point at it. Keywords are case-insensitive; strings take single or double quotes, as AWS does.

use serde_json::Value;

use crate::error::{ErrorKind, SqlError};
use crate::value::Num;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub kind: TokenKind,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokenKind {
    Ident,
    Keyword(Keyword),
    Number(Value),
    Str(String),
    Punct(Punct),
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keyword {
    Select,
    From,
    Where,
    As,
    And,
    Or,
    Not,
    In,
    Contains,
    Case,
    When,
    Then,
    Else,
    End,
    True,
    False,
    Null,
}

const KEYWORDS: [(&str, Keyword); 17] = [
    ("select", Keyword::Select),
    ("from", Keyword::From),
    ("where", Keyword::Where),
    ("as", Keyword::As),
    ("and", Keyword::And),
    ("or", Keyword::Or),
    ("not", Keyword::Not),
    ("in", Keyword::In),
    ("contains", Keyword::Contains),
    ("case", Keyword::Case),
    ("when", Keyword::When),
    ("then", Keyword::Then),
    ("else", Keyword::Else),
    ("end", Keyword::End),
    ("true", Keyword::True),
    ("false", Keyword::False),
    ("null", Keyword::Null),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Punct {
    Comma,
    Dot,
    Colon,
    OpenParen,
    CloseParen,
    OpenBracket,
    CloseBracket,
    OpenBrace,
    CloseBrace,
    Star,
    Plus,
    Minus,
    Slash,
    Percent,
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    Concat,
}

/// A cursor over the source; cheap to copy for lookahead.
#[derive(Debug, Clone)]
pub(crate) struct Lexer<'s> {
    source: &'s str,
    at: usize,
}

impl<'s> Lexer<'s> {
    pub(crate) fn new(source: &'s str, at: usize) -> Self {
        Lexer { source, at }
    }

    pub(crate) fn source(&self) -> &'s str {
        self.source
    }

    pub(crate) fn next_token(&mut self) -> Result<Token, SqlError> {
        let rest = &self.source[self.at..];
        let trimmed = rest.trim_start();
        let start = self.at + (rest.len() - trimmed.len());
        self.at = start;
        let Some(first) = trimmed.chars().next() else {
            return Ok(self.token(TokenKind::End, start));
        };
        let kind = match first {
            '\'' | '"' => TokenKind::Str(self.string(first)?),
            '0'..='9' => TokenKind::Number(self.number()?),
            c if c.is_ascii_alphabetic() || c == '_' => self.word(),
            _ => TokenKind::Punct(self.punct(first)?),
        };
        Ok(self.token(kind, start))
    }

    fn token(&self, kind: TokenKind, start: usize) -> Token {
        Token {
            kind,
            start,
            end: self.at,
        }
    }

    fn error(&self, start: usize, end: usize, message: &str) -> SqlError {
        SqlError::at(ErrorKind::Syntax, self.source, start, end, message)
    }

    fn word(&mut self) -> TokenKind {
        let start = self.at;
        let len = self.source[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.source.len() - start);
        self.at += len;
        let word = &self.source[start..self.at];
        KEYWORDS
            .iter()
            .find(|(name, _)| word.eq_ignore_ascii_case(name))
            .map_or(TokenKind::Ident, |&(_, keyword)| {
                TokenKind::Keyword(keyword)
            })
    }

    fn number(&mut self) -> Result<Value, SqlError> {
        let start = self.at;
        let bytes = self.source.as_bytes();
        let digits_from = |mut at: usize| {
            while bytes.get(at).is_some_and(u8::is_ascii_digit) {
                at += 1;
            }
            at
        };
        let mut end = digits_from(start);
        let mut whole = true;
        if bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) {
            end = digits_from(end + 1);
            whole = false;
        }
        if matches!(bytes.get(end), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(bytes.get(end + 1), Some(b'+' | b'-')));
            if bytes.get(end + 1 + sign).is_some_and(u8::is_ascii_digit) {
                end = digits_from(end + 1 + sign);
                whole = false;
            }
        }
        self.at = end;
        let text = &self.source[start..end];
        let number = match text.parse::<i64>() {
            Ok(int) if whole => Num::Int(int),
            _ => Num::Decimal(text.parse().unwrap_or(f64::INFINITY)),
        };
        number
            .into_value()
            .ok_or_else(|| self.error(start, end, "number out of range"))
    }

    fn string(&mut self, quote: char) -> Result<String, SqlError> {
        let start = self.at;
        let mut text = String::new();
        let mut chars = self.source[start + 1..].char_indices();
        while let Some((offset, c)) = chars.next() {
            match c {
                c if c == quote => {
                    // A doubled quote stands for one quote character.
                    if self.source[start + 1 + offset + 1..].starts_with(quote) {
                        chars.next();
                        text.push(quote);
                    } else {
                        self.at = start + 1 + offset + 1;
                        return Ok(text);
                    }
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => text.push('\n'),
                    Some((_, 't')) => text.push('\t'),
                    Some((_, 'r')) => text.push('\r'),
                    Some((_, escaped @ ('\\' | '\'' | '"' | '/'))) => text.push(escaped),
                    // Unknown escapes stay as written, so regular expressions like '\d+' work.
                    Some((_, other)) => {
                        text.push('\\');
                        text.push(other);
                    }
                    None => text.push('\\'),
                },
                c => text.push(c),
            }
        }
        Err(self.error(start, start + 1, "string is never closed"))
    }

    fn punct(&mut self, first: char) -> Result<Punct, SqlError> {
        let start = self.at;
        let second = self.source[start + first.len_utf8()..].chars().next();
        let (punct, len) = match (first, second) {
            ('<', Some('>')) => (Punct::NotEqual, 2),
            ('!', Some('=')) => (Punct::NotEqual, 2),
            ('<', Some('=')) => (Punct::LessOrEqual, 2),
            ('>', Some('=')) => (Punct::GreaterOrEqual, 2),
            ('|', Some('|')) => (Punct::Concat, 2),
            ('<', _) => (Punct::Less, 1),
            ('>', _) => (Punct::Greater, 1),
            ('=', _) => (Punct::Equal, 1),
            (',', _) => (Punct::Comma, 1),
            ('.', _) => (Punct::Dot, 1),
            (':', _) => (Punct::Colon, 1),
            ('(', _) => (Punct::OpenParen, 1),
            (')', _) => (Punct::CloseParen, 1),
            ('[', _) => (Punct::OpenBracket, 1),
            (']', _) => (Punct::CloseBracket, 1),
            ('{', _) => (Punct::OpenBrace, 1),
            ('}', _) => (Punct::CloseBrace, 1),
            ('*', _) => (Punct::Star, 1),
            ('+', _) => (Punct::Plus, 1),
            ('-', _) => (Punct::Minus, 1),
            ('/', _) => (Punct::Slash, 1),
            ('%', _) => (Punct::Percent, 1),
            _ => {
                let end = start + first.len_utf8();
                return Err(self.error(start, end, "unexpected character"));
            }
        };
        self.at += len;
        Ok(punct)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kinds(source: &str) -> Vec<TokenKind> {
        let mut lexer = Lexer::new(source, 0);
        let mut out = Vec::new();
        loop {
            let token = lexer.next_token().unwrap();
            if token.kind == TokenKind::End {
                return out;
            }
            out.push(token.kind);
        }
    }

    #[test]
    fn numbers_follow_the_whole_number_rule() {
        assert_eq!(
            kinds("10 10.0 2.5 1e3 5E-1"),
            vec![
                TokenKind::Number(json!(10)),
                TokenKind::Number(json!(10)),
                TokenKind::Number(json!(2.5)),
                TokenKind::Number(json!(1000)),
                TokenKind::Number(json!(0.5)),
            ]
        );
    }

    #[test]
    fn strings_take_either_quote_and_escapes() {
        assert_eq!(
            kinds(r#"'it''s' "a\"b" '\d+'"#),
            vec![
                TokenKind::Str("it's".into()),
                TokenKind::Str("a\"b".into()),
                TokenKind::Str("\\d+".into()),
            ]
        );
    }

    #[test]
    fn keywords_are_case_insensitive_and_value_is_an_identifier() {
        assert_eq!(
            kinds("SeLeCt value"),
            vec![TokenKind::Keyword(Keyword::Select), TokenKind::Ident]
        );
    }

    #[test]
    fn unclosed_string_points_at_its_quote() {
        let error = Lexer::new("SELECT 'abc", 0);
        let mut lexer = error;
        lexer.next_token().unwrap();
        let error = lexer.next_token().unwrap_err();
        assert_eq!((error.line, error.column), (1, 8));
    }
}
