//! Request and reply bodies of the API, one file per resource group, mirroring the definitions
//! of Firecracker's OpenAPI spec (names, required/optional fields, enums, value checks).
//!
//! Every body type is `#[serde(deny_unknown_fields)]` and implements [`Validate`] for the value
//! checks serde cannot express (ranges, id syntax, "exactly one of"). The same types serve the
//! HTTP routes, `--config-file` and the GET replies (their `Serialize` impls). What is allowed
//! before or after boot is the backend's business, not this module's.

pub mod actions;
pub mod balloon;
pub mod boot_source;
pub mod cpu_config;
pub mod drive;
pub mod entropy;
pub mod instance;
pub mod logger;
pub mod machine_config;
pub mod metrics;
pub mod mmds;
pub mod net;
pub mod rate_limiter;
pub mod serial;
pub mod snapshot;
pub mod vm;
pub mod vm_config;
pub mod vsock;

use serde::de::DeserializeOwned;

use crate::ApiFault;

/// Value checks beyond what serde's types express. `Err` is a message naming the field.
pub trait Validate {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

impl<T: Validate> Validate for Option<T> {
    fn validate(&self) -> Result<(), String> {
        self.as_ref().map_or(Ok(()), Validate::validate)
    }
}

impl<T: Validate> Validate for Vec<T> {
    fn validate(&self) -> Result<(), String> {
        self.iter().try_for_each(Validate::validate)
    }
}

/// Deserializes a JSON body into `T` and validates it. Errors are Firecracker's
/// "An error occurred when deserializing the json body of a request: ..." with the field path
/// (e.g. `rate_limiter.bandwidth.size: invalid type: string "x", expected u64`).
pub fn parse_body<T: DeserializeOwned + Validate>(body: &[u8]) -> Result<T, ApiFault> {
    let value = parse_json::<T>(body)?;
    value.validate().map_err(ApiFault::bad_request)?;
    Ok(value)
}

/// Deserializes without [`Validate`] (for bodies that are free-form JSON).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiFault> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let what = if path == "." || path.is_empty() {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        };
        ApiFault::bad_request(format!(
            "An error occurred when deserializing the json body of a request: {what}."
        ))
    })?;
    de.end().map_err(|e| {
        ApiFault::bad_request(format!(
            "An error occurred when deserializing the json body of a request: {e}."
        ))
    })?;
    Ok(value)
}

/// Resource ids (`drive_id`, `iface_id`, ...): non-empty, alphanumeric or `_`, at most 64
/// characters (Firecracker's rule, plus a length bound).
pub fn check_id(field: &str, id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("{field}: the ID cannot be empty."));
    }
    if id.len() > 64 || !id.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()) {
        return Err(format!(
            "{field} '{}': API Resource IDs can only contain alphanumeric characters and underscores (at most 64).",
            id.escape_debug()
        ));
    }
    Ok(())
}

/// A host path field: non-empty and without NUL bytes.
pub fn check_path(field: &str, path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err(format!("{field} cannot be empty."));
    }
    if path.contains('\0') {
        return Err(format!("{field} contains a NUL byte."));
    }
    Ok(())
}

fn is_false(b: &bool) -> bool {
    !*b
}
