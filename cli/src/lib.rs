//! The `palisade` command's library: chain files, offline config checks,
//! rendering for Envoy, Istio and Kong, JSON Schemas, Kong `meta.json`,
//! OCI images, and policy tests (`palisade test`). `src/main.rs` is only argument parsing around these.

/// The chain file and the filter table live with `palisade.wasm`, which
/// runs them; the command checks and renders the same model.
pub use palisade::{chain, registry};
pub mod check;
pub mod envoy;
pub mod envoy_gateway;
pub mod istio;
pub mod kong;
pub mod meta;
pub mod observability;
pub mod oci;
pub mod policy;
pub mod schema;

/// A JSON value as YAML (the form every rendered file is written in).
pub fn to_yaml(value: &serde_json::Value) -> Result<String, String> {
    serde_norway::to_string(value).map_err(|e| e.to_string())
}
