#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use devices::metrics::Field;

use super::*;

fn field(name: &'static str, value: u64) -> Field {
    Field { name, help: "h", value }
}

fn drives(a: u64, b: u64) -> Vec<Sample> {
    let mut s = Vec::new();
    device(&mut s, "block", Some(("drive", "a")), vec![field("read_bytes", a)]);
    device(&mut s, "block", Some(("drive", "b\"x")), vec![field("read_bytes", b)]);
    device(&mut s, "entropy", None, vec![field("entropy_bytes", 7)]);
    s.push(Sample {
        family: "latency_us".into(),
        help: "h",
        gauge: true,
        labels: vec![("operation", "pause_vm".into())],
        group: Some("latencies_us".into()),
        aggregate: None,
        field: "pause_vm".into(),
        value: 33,
    });
    s
}

#[test]
fn json_lines_report_changes_per_device_and_summed() {
    let mut last = HashMap::new();
    let line = json_line(&drives(100, 50), &mut last, 1234);
    assert!(line.starts_with("{\"utc_timestamp_ms\":1234,"), "{line}");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["block_a"]["read_bytes"], 100);
    assert_eq!(v["block_b\"x"]["read_bytes"], 50);
    assert_eq!(v["block"]["read_bytes"], 150);
    assert_eq!(v["entropy"]["entropy_bytes"], 7);
    let v: serde_json::Value = serde_json::from_str(&json_line(&drives(110, 50), &mut last, 1)).unwrap();
    assert_eq!(v["block_a"]["read_bytes"], 10, "a counter reports its change");
    assert_eq!(v["block_b\"x"]["read_bytes"], 0);
    assert_eq!(v["block"]["read_bytes"], 10);
    assert_eq!(v["entropy"]["entropy_bytes"], 0);
    assert_eq!(v["latencies_us"]["pause_vm"], 33, "a gauge reports its value");
}

/// A Prometheus text-format reader, enough to check what `prometheus` writes: families with
/// HELP and TYPE before their samples, label sets, values.
/// (name, labels, value) of one parsed sample.
type Parsed = (String, Vec<(String, String)>, u64);

fn parse(text: &str) -> Vec<Parsed> {
    let mut out = Vec::new();
    let mut declared: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(rest.len() > name.len() + 1, "HELP has text: {line}");
            declared.push((name.to_string(), String::new()));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            let last = declared.last_mut().unwrap();
            assert_eq!(last.0, name, "TYPE follows its HELP");
            assert!(kind == "counter" || kind == "gauge");
            last.1 = kind.to_string();
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: u64 = value.parse().unwrap();
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), Vec::new()),
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').unwrap();
                let mut labels = Vec::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
                    assert_eq!(chars.next(), Some('"'));
                    let mut val = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => val.push(match chars.next().unwrap() {
                                'n' => '\n',
                                c => c,
                            }),
                            '"' => break,
                            c => val.push(c),
                        }
                    }
                    labels.push((key, val));
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                }
                (n.to_string(), labels)
            }
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "metric name {name}"
        );
        assert_eq!(
            declared.last().map(|d| d.0.as_str()),
            Some(name.as_str()),
            "{name} declared first"
        );
        out.push((name, labels, value));
    }
    let mut names: Vec<_> = declared.iter().map(|d| &d.0).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), declared.len(), "each family declared once");
    out
}

#[test]
fn prometheus_text_parses_with_totals_and_labels() {
    let text = prometheus(&drives(110, 50));
    let samples = parse(&text);
    let get = |name: &str, label: Option<(&str, &str)>| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && label.is_none_or(|(k, v)| l.iter().any(|(a, b)| a == k && b == v)))
            .map(|s| s.2)
    };
    assert_eq!(get("hearth_block_read_bytes_total", Some(("drive", "a"))), Some(110));
    assert_eq!(get("hearth_block_read_bytes_total", Some(("drive", "b\"x"))), Some(50));
    assert_eq!(get("hearth_entropy_bytes_total", None), Some(7));
    assert_eq!(get("hearth_latency_us", Some(("operation", "pause_vm"))), Some(33));
    assert!(text.contains("# TYPE hearth_latency_us gauge"));
    assert!(text.contains("# TYPE hearth_block_read_bytes_total counter"));
    assert_eq!(samples.len(), 4);
}
