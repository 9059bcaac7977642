//! Alerts when a soil sensor's humidity is under a threshold (config `threshold`,
//! default 35). The emitted text is the SNS message; the `subject` attribute its subject.

use rulegate_sdk::prelude::*;
use std::sync::OnceLock;

static THRESHOLD: OnceLock<f64> = OnceLock::new();

#[derive(Deserialize)]
struct Reading {
    name: String,
    humidity: f64,
}

fn load_threshold() -> Result<()> {
    let threshold = config::parse_or("threshold", 35.0)?;
    THRESHOLD.get_or_init(|| threshold);
    Ok(())
}

#[rule(init = load_threshold)]
fn humidity_alert(msg: Message) -> Result<Vec<Output>> {
    let reading: Reading = msg.json()?;
    if reading.humidity >= *THRESHOLD.get_or_init(|| 35.0) {
        return Ok(Vec::new());
    }
    let text = format!(
        "Humidity {} under threshold for device name {}",
        reading.humidity, reading.name
    );
    Ok(vec![Emit::new(text).attribute("subject", "Attention:Humidity Under Threshold").into()])
}
