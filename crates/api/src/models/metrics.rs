//! `/metrics`: where the JSON metrics lines are flushed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{check_path, is_false, Validate};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub metrics_path: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub emit_id: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

impl Validate for Metrics {
    fn validate(&self) -> Result<(), String> {
        check_path("metrics_path", &self.metrics_path)
    }
}
