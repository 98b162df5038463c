//! A small checker for the Swagger 2.0 schemas of the spec files: `$ref`, `type`,
//! `required`, `properties`, `additionalProperties`, `items`, `enum`, `minimum`/`maximum`.
//! Strict on one point: an object property the schema does not name is an error (unless
//! `additionalProperties` allows it), so a misspelt field in a reply is caught.

use std::path::{Path, PathBuf};

use serde_json::Value;
use serde_yaml::Value as Yaml;

pub struct Spec {
    pub doc: Yaml,
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl Spec {
    pub fn load(path: &Path) -> Spec {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Spec {
            doc: serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }

    pub fn hearth() -> Spec {
        Spec::load(&repo_root().join("crates/api/hearth-api.yaml"))
    }

    /// Firecracker's spec from the shared anchors (beside the repository or two levels up,
    /// or $HEARTH_FIRECRACKER_SPEC).
    pub fn firecracker() -> Spec {
        let mut candidates: Vec<PathBuf> = std::env::var_os("HEARTH_FIRECRACKER_SPEC")
            .map(PathBuf::from)
            .into_iter()
            .collect();
        for up in ["..", "../.."] {
            candidates.push(repo_root().join(up).join("shared/anchors/firecracker-api.yaml"));
        }
        let found = candidates
            .iter()
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("Firecracker's spec not found in {candidates:?}: set HEARTH_FIRECRACKER_SPEC"));
        Spec::load(found)
    }

    /// Every (METHOD, path) in the spec.
    pub fn operations(&self) -> Vec<(String, String)> {
        let mut ops = Vec::new();
        for (path, item) in self.doc["paths"].as_mapping().expect("paths") {
            for (method, _) in item.as_mapping().expect("path item") {
                ops.push((
                    method.as_str().unwrap().to_uppercase(),
                    path.as_str().unwrap().to_string(),
                ));
            }
        }
        ops
    }

    pub fn definition(&self, name: &str) -> &Yaml {
        let d = &self.doc["definitions"][name];
        assert!(!d.is_null(), "no definition {name}");
        d
    }

    /// The schema of the `status` response of METHOD path.
    pub fn response_schema(&self, method: &str, path: &str, status: u16) -> Option<&Yaml> {
        let op = &self.doc["paths"][path][method.to_lowercase().as_str()];
        assert!(!op.is_null(), "{method} {path} not in the spec");
        let responses = &op["responses"];
        let key = Yaml::Number(u64::from(status).into());
        let r = match responses.as_mapping().and_then(|m| m.get(&key)) {
            Some(r) => r,
            None => &responses["default"],
        };
        let s = &r["schema"];
        (!s.is_null()).then_some(s)
    }

    /// Errors of `value` against `schema` (empty: valid).
    pub fn check(&self, value: &Value, schema: &Yaml) -> Vec<String> {
        let mut errors = Vec::new();
        self.walk(value, schema, "$", &mut errors);
        errors
    }

    fn resolve<'a>(&'a self, schema: &'a Yaml) -> &'a Yaml {
        match schema["$ref"].as_str() {
            Some(r) => self.definition(r.trim_start_matches("#/definitions/")),
            None => schema,
        }
    }

    fn walk(&self, v: &Value, schema: &Yaml, at: &str, errors: &mut Vec<String>) {
        let s = self.resolve(schema);
        if let Some(values) = s["enum"].as_sequence() {
            let ok = values.iter().any(|e| match (e, v) {
                (Yaml::String(a), Value::String(b)) => a == b,
                (Yaml::Number(a), Value::Number(b)) => a.as_i64() == b.as_i64(),
                _ => false,
            });
            if !ok {
                errors.push(format!("{at}: {v} is not one of the enum"));
            }
        }
        let ty = s["type"]
            .as_str()
            .unwrap_or(if s["properties"].is_mapping() { "object" } else { "" });
        match (ty, v) {
            ("object", Value::Object(map)) => {
                for r in s["required"].as_sequence().into_iter().flatten() {
                    let name = r.as_str().unwrap();
                    if !map.contains_key(name) {
                        errors.push(format!("{at}: missing required `{name}`"));
                    }
                }
                for (k, fv) in map {
                    let prop = &s["properties"][k.as_str()];
                    if !prop.is_null() {
                        self.walk(fv, prop, &format!("{at}.{k}"), errors);
                    } else {
                        match &s["additionalProperties"] {
                            Yaml::Bool(true) => {}
                            Yaml::Mapping(_) => self.walk(fv, &s["additionalProperties"], &format!("{at}.{k}"), errors),
                            _ => errors.push(format!("{at}: `{k}` is not in the schema")),
                        }
                    }
                }
            }
            ("array", Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    self.walk(item, &s["items"], &format!("{at}[{i}]"), errors);
                }
            }
            ("string", Value::String(_)) | ("boolean", Value::Bool(_)) | ("", _) => {}
            ("integer", Value::Number(n)) if n.is_i64() || n.is_u64() => {
                let n = n.as_f64().unwrap_or(0.0);
                if s["minimum"].as_f64().is_some_and(|m| n < m) || s["maximum"].as_f64().is_some_and(|m| n > m) {
                    errors.push(format!("{at}: {n} is out of range"));
                }
            }
            ("number", Value::Number(_)) => {}
            (t, v) => errors.push(format!("{at}: {v} is not of type {t}")),
        }
    }

    /// A value with every property of the schema filled in with a plausible value.
    pub fn maximal_example(&self, schema: &Yaml, name: &str) -> Value {
        let s = self.resolve(schema);
        if let Some(first) = s["enum"].as_sequence().and_then(|e| e.first()) {
            return serde_json::to_value(first).unwrap();
        }
        let ty = s["type"]
            .as_str()
            .unwrap_or(if s["properties"].is_mapping() { "object" } else { "" });
        match ty {
            "object" => {
                let mut map = serde_json::Map::new();
                for (k, prop) in s["properties"].as_mapping().into_iter().flatten() {
                    let k = k.as_str().unwrap();
                    map.insert(k.to_string(), self.maximal_example(prop, k));
                }
                if map.is_empty() && s["additionalProperties"].is_mapping() {
                    map.insert("key".into(), self.maximal_example(&s["additionalProperties"], "value"));
                }
                Value::Object(map)
            }
            "array" => Value::Array(vec![self.maximal_example(&s["items"], name)]),
            "integer" => Value::from(s["minimum"].as_i64().unwrap_or(1).max(1)),
            "boolean" => Value::Bool(true),
            "string" => Value::String(example_string(name)),
            _ => Value::Null,
        }
    }
}

/// Strings that pass hearth's value checks, by field name.
fn example_string(name: &str) -> String {
    match name {
        "guest_mac" => "06:00:ac:10:00:02".into(),
        "ipv4_address" => "169.254.169.254".into(),
        "host_dev_name" => "tap0".into(),
        "leaf" | "subleaf" | "addr" => "0x1".into(),
        "kvm_capabilities" => "171".into(),
        n if n.ends_with("_path") || n == "socket" => format!("/tmp/{n}"),
        _ => "id_1".into(),
    }
}
