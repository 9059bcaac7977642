//! Log records in the gateway's log, tagged with the rule's name.
//!
//! `println!` and `eprintln!` also reach the log (at info and warn level); these
//! functions add the severity.

use crate::bindings::rulegate::rule::host::{self, Level};

pub fn trace(message: impl AsRef<str>) {
    host::log(Level::Trace, message.as_ref());
}

pub fn debug(message: impl AsRef<str>) {
    host::log(Level::Debug, message.as_ref());
}

pub fn info(message: impl AsRef<str>) {
    host::log(Level::Info, message.as_ref());
}

pub fn warn(message: impl AsRef<str>) {
    host::log(Level::Warn, message.as_ref());
}

pub fn error(message: impl AsRef<str>) {
    host::log(Level::Error, message.as_ref());
}
