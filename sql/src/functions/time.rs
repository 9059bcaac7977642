//! `parse_time` (format epoch milliseconds with a Joda-Time pattern in a time zone) and
//! `time_to_epoch` (read a date with a java.time pattern back into epoch milliseconds).
//!
//! Patterns are compiled once when literal. The pattern letters supported are the ones these two
//! libraries share and rules use: `G y u Y M L d D E a H k K h m s S z Z X x V` and quoted text;
//! any other letter is rejected at load rather than misformatted. Zones come from the IANA
//! database bundled with `jiff`, so results do not depend on the gateway's own zone files.

use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};
use jiff::{Timestamp, Zoned};
use serde_json::Value;

use super::{Invocation, Prepared, literal};
use crate::ast::Expr;
use crate::value::{Datum, owned, to_text};

const PATTERN_LETTERS: &str = "GyuYMLdDEaHkKhmsSzZXxV";

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// A compiled date/time pattern.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pattern {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    /// A pattern letter and how many times it repeats.
    Field(char, usize),
}

impl Pattern {
    pub(crate) fn compile(pattern: &str) -> Result<Pattern, String> {
        let mut pieces = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\'' {
                let mut text = String::new();
                loop {
                    match chars.next() {
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            text.push('\'');
                        }
                        Some('\'') => break,
                        Some(c) => text.push(c),
                        None => return Err(format!("unclosed quote in date pattern `{pattern}`")),
                    }
                }
                // `''` outside quoted text is a literal quote.
                pieces.push(Piece::Text(if text.is_empty() { "'".into() } else { text }));
            } else if c.is_ascii_alphabetic() {
                if !PATTERN_LETTERS.contains(c) {
                    return Err(format!(
                        "unsupported letter `{c}` in date pattern `{pattern}`"
                    ));
                }
                let mut count = 1;
                while chars.next_if_eq(&c).is_some() {
                    count += 1;
                }
                pieces.push(Piece::Field(c, count));
            } else {
                match pieces.last_mut() {
                    Some(Piece::Text(text)) => text.push(c),
                    _ => pieces.push(Piece::Text(c.to_string())),
                }
            }
        }
        Ok(Pattern { pieces })
    }

    fn format(&self, time: &Zoned) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Field(letter, count) => format_field(&mut out, time, *letter, *count),
            }
        }
        out
    }

    fn parse(&self, input: &str) -> Option<Timestamp> {
        let mut fields = ParsedFields::default();
        let mut rest = input;
        for (index, piece) in self.pieces.iter().enumerate() {
            rest = match piece {
                Piece::Text(text) => rest.strip_prefix(text.as_str())?,
                Piece::Field(letter, count) => {
                    let adjacent = matches!(self.pieces.get(index + 1), Some(Piece::Field(..)));
                    fields.read(rest, *letter, *count, adjacent)?
                }
            };
        }
        rest.is_empty().then_some(())?;
        fields.timestamp()
    }
}

fn pad(out: &mut String, value: i64, width: usize) {
    out.push_str(&format!("{value:0width$}"));
}

fn format_field(out: &mut String, time: &Zoned, letter: char, count: usize) {
    let hour = i64::from(time.hour());
    match letter {
        'G' => out.push_str(if time.year() > 0 { "AD" } else { "BC" }),
        'y' | 'u' | 'Y' if count == 2 => pad(out, i64::from(time.year()).rem_euclid(100), 2),
        'y' | 'u' | 'Y' => pad(out, i64::from(time.year()), count),
        'M' | 'L' if count >= 3 => {
            let name = MONTHS[usize::from(time.month().unsigned_abs()).saturating_sub(1) % 12];
            out.push_str(if count == 3 { &name[..3] } else { name });
        }
        'M' | 'L' => pad(out, i64::from(time.month()), count),
        'd' => pad(out, i64::from(time.day()), count),
        'D' => pad(out, i64::from(time.day_of_year()), count),
        'E' => {
            let name = WEEKDAYS[usize::from(time.weekday().to_monday_zero_offset().unsigned_abs())];
            out.push_str(if count <= 3 { &name[..3] } else { name });
        }
        'a' => out.push_str(if hour < 12 { "AM" } else { "PM" }),
        'H' => pad(out, hour, count),
        'k' => pad(out, if hour == 0 { 24 } else { hour }, count),
        'K' => pad(out, hour % 12, count),
        'h' => pad(out, if hour % 12 == 0 { 12 } else { hour % 12 }, count),
        'm' => pad(out, i64::from(time.minute()), count),
        's' => pad(out, i64::from(time.second()), count),
        'S' => {
            let nanos = format!("{:09}", time.subsec_nanosecond());
            out.push_str(&nanos[..count.min(9)]);
            out.extend(std::iter::repeat_n('0', count.saturating_sub(9)));
        }
        'z' if count < 4 => {
            let info = time.time_zone().to_offset_info(time.timestamp());
            out.push_str(info.abbreviation());
        }
        'z' | 'V' => out.push_str(time.time_zone().iana_name().unwrap_or("UTC")),
        'Z' if count >= 3 => out.push_str(time.time_zone().iana_name().unwrap_or("UTC")),
        'Z' => format_offset(out, time.offset(), count == 2, false),
        'X' if time.offset() == Offset::UTC => out.push('Z'),
        'X' | 'x' => format_offset(out, time.offset(), count >= 3, count == 1),
        _ => {}
    }
}

fn format_offset(out: &mut String, offset: Offset, colon: bool, hours_only: bool) {
    let seconds = offset.seconds();
    let sign = if seconds < 0 { '-' } else { '+' };
    let (hours, minutes) = (seconds.abs() / 3600, seconds.abs() % 3600 / 60);
    out.push(sign);
    out.push_str(&format!("{hours:02}"));
    if hours_only && minutes == 0 {
        return;
    }
    if colon {
        out.push(':');
    }
    out.push_str(&format!("{minutes:02}"));
}

/// What a pattern has read from a date so far.
#[derive(Default)]
struct ParsedFields {
    year: Option<i64>,
    month: Option<i64>,
    day: Option<i64>,
    day_of_year: Option<i64>,
    hour: i64,
    afternoon: Option<bool>,
    minute: i64,
    second: i64,
    nanosecond: i64,
    zone: Option<TimeZone>,
}

impl ParsedFields {
    /// Reads one field from the front of `input`; returns what is left.
    fn read<'i>(
        &mut self,
        input: &'i str,
        letter: char,
        count: usize,
        adjacent: bool,
    ) -> Option<&'i str> {
        let number = |input: &'i str| read_number(input, if adjacent { count } else { 10 });
        match letter {
            'G' => strip_word(input, &["AD", "BC"]).map(|(_, rest)| rest),
            'M' | 'L' if count >= 3 => {
                let (month, rest) = strip_month(input)?;
                self.month = Some(month);
                Some(rest)
            }
            'E' => strip_word(input, &WEEKDAYS)
                .or_else(|| strip_word(input, &WEEKDAYS.map(|day| &day[..3])))
                .map(|(_, rest)| rest),
            'a' => {
                let (index, rest) = strip_word(input, &["AM", "PM"])?;
                self.afternoon = Some(index == 1);
                Some(rest)
            }
            'S' => {
                let (digits, rest) = split_digits(input, if adjacent { count } else { 9 });
                let scale = 10_i64.pow(9 - u32::try_from(digits.len()).ok()?.min(9));
                self.nanosecond = digits.get(..digits.len().min(9))?.parse::<i64>().ok()? * scale;
                Some(rest)
            }
            'z' | 'V' => {
                let (zone, rest) = read_zone(input)?;
                self.zone = Some(zone);
                Some(rest)
            }
            'Z' | 'X' | 'x' => {
                let (zone, rest) = read_zone(input)?;
                self.zone = Some(zone);
                Some(rest)
            }
            _ => {
                let (value, rest) = number(input)?;
                let slot = match letter {
                    'y' | 'u' | 'Y' => {
                        self.year = Some(if count == 2 { 2000 + value } else { value });
                        return Some(rest);
                    }
                    'M' | 'L' => &mut self.month,
                    'd' => &mut self.day,
                    'D' => &mut self.day_of_year,
                    'H' | 'k' | 'K' | 'h' => {
                        self.hour = if letter == 'k' && value == 24 {
                            0
                        } else {
                            value
                        };
                        return Some(rest);
                    }
                    'm' => {
                        self.minute = value;
                        return Some(rest);
                    }
                    's' => {
                        self.second = value;
                        return Some(rest);
                    }
                    _ => return None,
                };
                *slot = Some(value);
                Some(rest)
            }
        }
    }

    fn timestamp(self) -> Option<Timestamp> {
        let small = |value: i64| i8::try_from(value).ok();
        let hour = match self.afternoon {
            Some(true) => self.hour % 12 + 12,
            Some(false) => self.hour % 12,
            None => self.hour,
        };
        let year = i16::try_from(self.year.unwrap_or(1970)).ok()?;
        let mut date = DateTime::new(
            year,
            small(self.month.unwrap_or(1))?,
            small(self.day.unwrap_or(1))?,
            small(hour)?,
            small(self.minute)?,
            small(self.second)?,
            i32::try_from(self.nanosecond).ok()?,
        )
        .ok()?;
        if let Some(day) = self.day_of_year {
            date = date
                .with()
                .day_of_year(i16::try_from(day).ok()?)
                .build()
                .ok()?;
        }
        self.zone.unwrap_or(TimeZone::UTC).to_timestamp(date).ok()
    }
}

fn split_digits(input: &str, max: usize) -> (&str, &str) {
    let len = input
        .bytes()
        .take(max)
        .take_while(u8::is_ascii_digit)
        .count();
    input.split_at(len)
}

fn read_number(input: &str, max: usize) -> Option<(i64, &str)> {
    let (digits, rest) = split_digits(input, max);
    Some((digits.parse().ok()?, rest))
}

/// Matches one of `words` (case-insensitively, longest listed first wins) at the front.
fn strip_word<'i>(input: &'i str, words: &[&str]) -> Option<(usize, &'i str)> {
    words.iter().enumerate().find_map(|(index, word)| {
        let head = input.get(..word.len())?;
        head.eq_ignore_ascii_case(word)
            .then(|| (index, &input[word.len()..]))
    })
}

fn strip_month(input: &str) -> Option<(i64, &str)> {
    let (index, rest) = strip_word(input, &MONTHS)
        .or_else(|| strip_word(input, &MONTHS.map(|month| &month[..3])))?;
    Some((i64::try_from(index).ok()? + 1, rest))
}

/// A zone at the front of `input`: an IANA id, `UTC`/`GMT`/`Z`, an offset, or `UTC+01:00`.
fn read_zone(input: &str) -> Option<(TimeZone, &str)> {
    let len = input
        .find(|c: char| !(c.is_ascii_alphanumeric() || "/_+-:".contains(c)))
        .unwrap_or(input.len());
    let (id, rest) = input.split_at(len);
    Some((zone(id)?, rest))
}

/// Resolves a zone name as Joda-Time and java.time accept them.
fn zone(id: &str) -> Option<TimeZone> {
    if ["Z", "UTC", "GMT", "UT"]
        .iter()
        .any(|utc| id.eq_ignore_ascii_case(utc))
    {
        return Some(TimeZone::UTC);
    }
    for prefix in ["UTC", "GMT", "UT"] {
        if let Some(offset) = id.strip_prefix(prefix).and_then(parse_offset) {
            return Some(offset.to_time_zone());
        }
    }
    parse_offset(id)
        .map(Offset::to_time_zone)
        .or_else(|| TimeZone::get(id).ok())
}

/// `+01`, `+0100`, `+01:00`, `-05:30`.
fn parse_offset(text: &str) -> Option<Offset> {
    let sign = match text.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: String = text[1..].chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(digits.len(), 2 | 4 | 6) {
        return None;
    }
    let part = |range: std::ops::Range<usize>| {
        digits.get(range).map_or(Some(0), |d| d.parse::<i32>().ok())
    };
    let seconds = part(0..2)? * 3600 + part(2..4)? * 60 + part(4..6)?;
    Offset::from_seconds(sign * seconds).ok()
}

fn prepared_pattern(args: &[Expr], index: usize) -> Result<Prepared, String> {
    match literal(args, index).and_then(to_text) {
        Some(pattern) => Pattern::compile(&pattern).map(Prepared::DatePattern),
        None => Ok(Prepared::Nothing),
    }
}

pub(super) fn check_parse_time(args: &[Expr]) -> Result<Prepared, String> {
    if let Some(id) = literal(args, 2).and_then(to_text)
        && zone(&id).is_none()
    {
        return Err(format!("unknown time zone `{id}`"));
    }
    prepared_pattern(args, 0)
}

pub(super) fn check_time_to_epoch(args: &[Expr]) -> Result<Prepared, String> {
    prepared_pattern(args, 1)
}

/// The call's pattern, compiled at load when literal.
fn pattern(inv: &mut Invocation<'_>, index: usize) -> Option<Pattern> {
    if let Prepared::DatePattern(pattern) = &inv.call.prepared {
        return Some(pattern.clone());
    }
    Pattern::compile(&inv.text(index)?).ok()
}

/// `parse_time(pattern, epoch_ms[, zone])`, zone UTC by default.
pub(super) fn parse_time<'d>(mut inv: Invocation<'d>) -> Datum<'d> {
    let millis = inv.decimal(1)?.floor()?;
    let zone = match inv.args.len() {
        3 => zone(&inv.text(2)?)?,
        _ => TimeZone::UTC,
    };
    let pattern = pattern(&mut inv, 0)?;
    let time = Timestamp::from_millisecond(millis).ok()?.to_zoned(zone);
    owned(Value::String(pattern.format(&time)))
}

/// `time_to_epoch(text, pattern)`: epoch milliseconds, in UTC unless the text names a zone.
pub(super) fn time_to_epoch<'d>(mut inv: Invocation<'d>) -> Datum<'d> {
    let text = inv.text(0)?;
    let pattern = pattern(&mut inv, 1)?;
    owned(Value::from(pattern.parse(&text)?.as_millisecond()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(pattern: &str, millis: i64, zone_id: &str) -> String {
        let time = Timestamp::from_millisecond(millis)
            .unwrap()
            .to_zoned(zone(zone_id).unwrap());
        Pattern::compile(pattern).unwrap().format(&time)
    }

    fn epoch(text: &str, pattern: &str) -> Option<i64> {
        Pattern::compile(pattern)
            .unwrap()
            .parse(text)
            .map(Timestamp::as_millisecond)
    }

    #[test]
    fn formats_the_documented_belize_example() {
        assert_eq!(
            format(
                "yyyy.MM.dd G 'at' HH:mm:ss z",
                100_000_000,
                "America/Belize"
            ),
            "1970.01.01 AD at 21:46:40 CST"
        );
    }

    #[test]
    fn formats_names_fractions_and_offsets() {
        let millis = 1_598_536_072_677;
        assert_eq!(format("EEE, d MMM yyyy", millis, "UTC"), "Thu, 27 Aug 2020");
        assert_eq!(format("HH:mm:ss.SSS", millis, "UTC"), "13:47:52.677");
        assert_eq!(format("hh a ZZ", millis, "Europe/Paris"), "03 PM +02:00");
        assert_eq!(format("yyyy", millis, "UTC"), "2020");
    }

    #[test]
    fn parses_the_documented_examples() {
        assert_eq!(
            epoch("2020-04-03 09:45:18 UTC+01:00", "yyyy-MM-dd HH:mm:ss VV"),
            Some(1_585_903_518_000)
        );
        assert_eq!(
            epoch("18 December 2015", "dd MMMM yyyy"),
            Some(1_450_396_800_000)
        );
        assert_eq!(
            epoch(
                "2007-12-03 10:15:30.592 America/Los_Angeles",
                "yyyy-MM-dd HH:mm:ss.SSS z"
            ),
            Some(1_196_705_730_592)
        );
    }

    #[test]
    fn rejects_unknown_letters_and_mismatched_text() {
        assert!(Pattern::compile("yyyy-ww").is_err());
        assert_eq!(epoch("2020/01/01", "yyyy-MM-dd"), None);
    }
}
