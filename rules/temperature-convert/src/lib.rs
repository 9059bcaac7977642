//! Reshapes a temperature reading: Celsius to Fahrenheit, plus a derived
//! `frost_risk` flag (at or below the `frost_celsius` config value, default 2).

use rulegate_sdk::prelude::*;

#[derive(Deserialize)]
struct Reading {
    name: String,
    celsius: f64,
}

#[derive(Serialize)]
struct Report<'a> {
    device: &'a str,
    celsius: f64,
    fahrenheit: f64,
    frost_risk: bool,
}

#[rule]
fn temperature_convert(msg: Message) -> Result<Vec<Output>> {
    let reading: Reading = msg.json()?;
    let frost_celsius = config::parse_or("frost_celsius", 2.0)?;
    let report = Report {
        device: &reading.name,
        celsius: reading.celsius,
        fahrenheit: ((reading.celsius * 9.0 / 5.0 + 32.0) * 10.0).round() / 10.0,
        frost_risk: reading.celsius <= frost_celsius,
    };
    Ok(vec![Emit::json(&report)?.into()])
}
