//! The rule's configuration values, read-only, from the gateway configuration
//! or `rulegate rule test --config key=value`.

use crate::RuleError;
use crate::bindings::rulegate::rule::host;
use core::str::FromStr;

/// The raw value of `key`, if configured.
pub fn get(key: &str) -> Option<String> {
    host::config_get(key)
}

/// All configured keys, sorted.
pub fn keys() -> Vec<String> {
    host::config_keys()
}

/// The value of `key` parsed as `T`, or `default` when the key is not configured.
/// A value that does not parse is an [`RuleError::InvalidConfig`] naming the key.
pub fn parse_or<T>(key: &str, default: T) -> Result<T, RuleError>
where
    T: FromStr,
    T::Err: core::fmt::Display,
{
    match get(key) {
        None => Ok(default),
        Some(text) => text.trim().parse().map_err(|error| {
            RuleError::InvalidConfig(format!("config key `{key}` = `{text}`: {error}"))
        }),
    }
}
