//! hearth's HTTP API: a Firecracker-compatible REST server on a Unix stream socket.
//!
//! The flow of one call:
//! ```text
//! client ──HTTP/1.1──▶ ApiServer (server.rs: one epoll fd, non-blocking)
//!            └─ Conn (conn.rs): bytes in ─▶ http.rs: request head + Content-Length body
//!                 └─ router.rs: (method, path, body) ─▶ ApiRequest (typed, validated models/)
//!                      └─ Backend::handle (the VMM, outside this crate) ─▶ ApiReply | ApiFault
//!                 ◀─ http.rs: 204 / 200 JSON / 200 text / 4xx {"fault_message": "..."}
//! ```
//! This crate parses, validates, routes and serializes; it knows nothing about KVM or the
//! `vmm` crate. What is allowed before or after boot is the backend's decision.
//! `hearth-api.yaml` next to this crate is the spec of what is routed (Firecracker's paths plus
//! the "hearth extensions"); `tests/spec.rs` keeps the router and that file in step.

pub mod client;
pub mod config_file;
mod conn;
pub mod http;
pub mod models;
mod request;
pub mod router;
mod server;

pub use config_file::{parse_config_file, VmmConfigFile};
pub use request::{ApiFault, ApiReply, ApiRequest, Backend};
pub use server::{ApiError, ApiServer, Limits};
