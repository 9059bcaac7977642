//! `GET /metrics`: the gateway's counters in the Prometheus text exposition
//! format (version 0.0.4): intake, each rule (with its processing-time
//! histogram and running version), each sink, and the rule changes.

use crate::actions::SinkStats;
use crate::outbox::OutboxStats;
use crate::pipeline::{IntakeStats, LATENCY_BOUNDS_MICROS, RuleReport};
use crate::ruleset::ChangeHistory;
use std::fmt::{Display, Write};

/// What the exposition is made of, read at one moment.
pub(super) struct Snapshot {
    pub intake: IntakeStats,
    pub rules: Vec<RuleReport>,
    pub sinks: Vec<(String, SinkStats)>,
    /// `None` once the sinks have shut down.
    pub outbox: Option<OutboxStats>,
    pub changes: ChangeHistory,
}

/// Renders `snapshot` as Prometheus text.
pub(super) fn render(snapshot: &Snapshot) -> String {
    let mut out = Exposition::default();
    let intake = &snapshot.intake;
    for (name, help, value) in [
        (
            "rulegate_messages_received_total",
            "Messages that came in from the broker.",
            intake.received,
        ),
        (
            "rulegate_messages_oversized_total",
            "Messages refused for a payload over gateway.max_payload_bytes.",
            intake.oversized,
        ),
        (
            "rulegate_messages_not_json_total",
            "Messages routed to a rule whose payload is not JSON.",
            intake.not_json,
        ),
    ] {
        out.family(name, "counter", help);
        out.sample(name, &[], value);
    }

    type RuleCounter = fn(&RuleReport) -> u64;
    let rule_counters: [(&str, &str, RuleCounter); 5] = [
        (
            "rulegate_rule_matched_total",
            "Messages whose topic matched the rule's FROM.",
            |rule| rule.counters.matched,
        ),
        (
            "rulegate_rule_selected_total",
            "Messages the rule's SQL selected.",
            |rule| rule.counters.selected,
        ),
        (
            "rulegate_rule_outputs_total",
            "Outputs the rule handed to its actions.",
            |rule| rule.counters.outputs,
        ),
        (
            "rulegate_rule_dropped_total",
            "Messages the rule's module dropped on purpose.",
            |rule| rule.counters.dropped,
        ),
        (
            "rulegate_rule_errors_total",
            "Rule failures, refused outputs and failed deliveries.",
            |rule| rule.counters.errors,
        ),
    ];
    for (name, help, value) in rule_counters {
        out.family(name, "counter", help);
        for rule in &snapshot.rules {
            out.sample(name, &[("rule", &rule.name)], value(rule));
        }
    }
    out.family(
        "rulegate_rule_version",
        "gauge",
        "The running version of each rule (1 at start, one more per change).",
    );
    for rule in &snapshot.rules {
        let version = &rule.version;
        let module = version.module_hash.as_deref().unwrap_or("");
        let labels = [
            ("rule", rule.name.as_str()),
            ("module_hash", module),
            ("config_hash", &version.config_hash),
        ];
        out.sample("rulegate_rule_version", &labels, version.number);
    }
    let histogram = "rulegate_rule_processing_seconds";
    out.family(
        histogram,
        "histogram",
        "Time each selected message took in its rule: module and hand-off to the actions.",
    );
    for rule in &snapshot.rules {
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BOUNDS_MICROS.iter().zip(rule.latency.counts) {
            cumulative += count;
            let le = (*bound as f64 / 1e6).to_string();
            out.sample(
                &format!("{histogram}_bucket"),
                &[("rule", &rule.name), ("le", &le)],
                cumulative,
            );
        }
        let count = rule.latency.total();
        out.sample(
            &format!("{histogram}_bucket"),
            &[("rule", &rule.name), ("le", "+Inf")],
            count,
        );
        let seconds = rule.counters.busy_micros as f64 / 1e6;
        out.sample(
            &format!("{histogram}_sum"),
            &[("rule", &rule.name)],
            seconds,
        );
        out.sample(
            &format!("{histogram}_count"),
            &[("rule", &rule.name)],
            count,
        );
    }

    type SinkCounter = fn(&SinkStats) -> u64;
    let sink_series: [(&str, &str, &str, SinkCounter); 4] = [
        (
            "rulegate_sink_delivered_total",
            "counter",
            "Deliveries that reached the service.",
            |sink| sink.delivered,
        ),
        (
            "rulegate_sink_retried_total",
            "counter",
            "Delivery attempts that failed and were tried again.",
            |sink| sink.retried,
        ),
        (
            "rulegate_sink_failed_total",
            "counter",
            "Deliveries given up after their last attempt.",
            |sink| sink.failed,
        ),
        (
            "rulegate_sink_queued",
            "gauge",
            "Deliveries taken from the outbox and not yet finished.",
            |sink| sink.queued,
        ),
    ];
    for (name, kind, help, value) in sink_series {
        out.family(name, kind, help);
        for (sink, stats) in &snapshot.sinks {
            out.sample(name, &[("sink", sink)], value(stats));
        }
    }

    if let Some(outbox) = &snapshot.outbox {
        for (name, kind, help, value) in [
            (
                "rulegate_outbox_records",
                "gauge",
                "Outputs stored in the outbox and not yet settled.",
                outbox.records,
            ),
            (
                "rulegate_outbox_bytes",
                "gauge",
                "Bytes the stored outputs take.",
                outbox.bytes,
            ),
            (
                "rulegate_outbox_max_bytes",
                "gauge",
                "outbox.max_bytes.",
                outbox.max_bytes,
            ),
            (
                "rulegate_outbox_dropped_total",
                "counter",
                "Outputs dropped unsent to make room (outbox.when_full = \"drop_oldest\").",
                outbox.dropped,
            ),
            (
                "rulegate_outbox_commits_total",
                "counter",
                "Outbox transactions written to disk.",
                outbox.commits,
            ),
        ] {
            out.family(name, kind, help);
            out.sample(name, &[], value);
        }
    }

    let changes = "rulegate_rule_changes_total";
    out.family(
        changes,
        "counter",
        "Rule set changes (reloads, uploads), applied or refused.",
    );
    out.sample(changes, &[("result", "applied")], snapshot.changes.applied);
    out.sample(
        changes,
        &[("result", "rejected")],
        snapshot.changes.rejected,
    );
    out.text
}

#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (position, (label, value)) in labels.iter().enumerate() {
                if position > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// Label values escape backslash, double quote and line feed.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = Exposition::default();
        out.sample("m", &[("sink", "a\"b\\c\nd")], 1);
        assert_eq!(out.text, "m{sink=\"a\\\"b\\\\c\\nd\"} 1\n");
    }

    #[test]
    fn every_family_is_declared_before_its_samples() {
        let text = render(&Snapshot {
            intake: IntakeStats::default(),
            rules: Vec::new(),
            sinks: vec![("archive".into(), SinkStats::default())],
            outbox: Some(OutboxStats::default()),
            changes: ChangeHistory::default(),
        });
        assert!(
            text.contains(
                "# TYPE rulegate_sink_queued gauge\nrulegate_sink_queued{sink=\"archive\"} 0\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("rulegate_rule_changes_total{result=\"rejected\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE rulegate_outbox_records gauge\nrulegate_outbox_records 0\n"),
            "{text}"
        );
    }
}
