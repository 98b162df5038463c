//! Metrics as text: one [`Sample`] list rendered two ways. As a Firecracker JSON line each
//! counter is the change since the previous line (Firecracker's "incremental" metrics; gauges
//! such as latencies are their current value), per-device groups (`block_<id>`) next to their
//! sum (`block`). As Prometheus text exposition (version 0.0.4) every counter is its total
//! since start, one `# HELP`/`# TYPE` pair per family.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// One value, with where it goes in each format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Prometheus family name without the `hearth_` prefix (counters end in `_total`).
    pub family: String,
    pub help: &'static str,
    pub gauge: bool,
    pub labels: Vec<(&'static str, String)>,
    /// The JSON object it is a field of (`block_rootfs`), if it has its own.
    pub group: Option<String>,
    /// The JSON object it is summed into (`block`), if any.
    pub aggregate: Option<&'static str>,
    pub field: String,
    pub value: u64,
}

/// Samples for a device's counters: JSON group `kind` (or `kind_<id>` plus the `kind` sum when
/// `id` is given); Prometheus family `kind_<field>_total` with the field's own `kind_` prefix
/// dropped (`entropy_bytes` → `hearth_entropy_bytes_total`), labelled with the id.
pub fn device(
    out: &mut Vec<Sample>,
    kind: &'static str,
    id: Option<(&'static str, &str)>,
    fields: Vec<devices::metrics::Field>,
) {
    for f in fields {
        let stem = f
            .name
            .strip_prefix(kind)
            .and_then(|s| s.strip_prefix('_'))
            .unwrap_or(f.name);
        out.push(Sample {
            family: format!("{kind}_{stem}_total"),
            help: f.help,
            gauge: false,
            labels: id.map(|(k, v)| vec![(k, v.to_string())]).unwrap_or_default(),
            group: Some(match id {
                Some((_, v)) => format!("{kind}_{v}"),
                None => kind.to_string(),
            }),
            aggregate: id.map(|_| kind),
            field: f.name.to_string(),
            value: f.value,
        });
    }
}

/// Sums samples into their JSON groups: group → field → (total, is a gauge).
fn groups(samples: &[Sample]) -> BTreeMap<String, BTreeMap<String, (u64, bool)>> {
    let mut groups: BTreeMap<String, BTreeMap<String, (u64, bool)>> = BTreeMap::new();
    for s in samples {
        let targets = s.group.iter().cloned().chain(s.aggregate.map(String::from));
        for g in targets {
            let e = groups
                .entry(g)
                .or_default()
                .entry(s.field.clone())
                .or_insert((0, s.gauge));
            e.0 = e.0.saturating_add(s.value);
        }
    }
    groups
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"?\"".into())
}

/// One Firecracker metrics line (no newline): `utc_timestamp_ms` first, then every group.
/// Counters are reported as their change since `last` (which is updated).
pub fn json_line(samples: &[Sample], last: &mut HashMap<String, u64>, utc_ms: u64) -> String {
    let mut out = format!("{{\"utc_timestamp_ms\":{utc_ms}");
    for (g, fields) in groups(samples) {
        let _ = write!(out, ",{}:{{", quoted(&g));
        for (i, (f, (total, gauge))) in fields.iter().enumerate() {
            let value = if *gauge {
                *total
            } else {
                let prev = last.insert(format!("{g}.{f}"), *total).unwrap_or(0);
                total.saturating_sub(prev)
            };
            let _ = write!(out, "{}{}:{value}", if i == 0 { "" } else { "," }, quoted(f));
        }
        out.push('}');
    }
    out.push('}');
    out
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The Prometheus text exposition of `samples`: families in first-seen order.
pub fn prometheus(samples: &[Sample]) -> String {
    let mut order: Vec<&str> = Vec::new();
    let mut by_family: HashMap<&str, Vec<&Sample>> = HashMap::new();
    for s in samples {
        by_family
            .entry(&s.family)
            .or_insert_with(|| {
                order.push(&s.family);
                Vec::new()
            })
            .push(s);
    }
    let mut out = String::new();
    for fam in order {
        let list = &by_family[fam];
        let first = list[0];
        let kind = if first.gauge { "gauge" } else { "counter" };
        let _ = writeln!(out, "# HELP hearth_{fam} {}", first.help);
        let _ = writeln!(out, "# TYPE hearth_{fam} {kind}");
        for s in list {
            let _ = write!(out, "hearth_{fam}");
            if !s.labels.is_empty() {
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                    .collect();
                let _ = write!(out, "{{{}}}", labels.join(","));
            }
            let _ = writeln!(out, " {}", s.value);
        }
    }
    out
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
