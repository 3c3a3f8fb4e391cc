//! Shared core of the Palisade filters.
//!
//! Everything a filter needs besides its own decision lives here once: the host
//! layer ([`host`]) that hides Envoy's and Kong's proxy-wasm differences, route
//! rules ([`route`]), RFC 9457 problem responses ([`problem`]), config loading
//! with field paths ([`config`]), metric naming ([`metrics`]), the correlation id
//! ([`request_id`]) and the per-request plumbing every filter shares
//! ([`context`]). The proxy-wasm glue ([`glue`]) is compiled only for the proxy target (wasm32-wasip1) so
//! that all decisions stay testable natively against [`fake::FakeHost`].

pub mod audit;
pub mod client_ip;
pub mod config;
pub mod context;
pub mod fake;
pub mod filter;
pub mod header_pattern;
pub mod headers;
pub mod host;
pub mod method;
pub mod metrics;
pub mod path;
pub mod problem;
pub mod request_id;
pub mod route;

#[cfg(target_os = "wasi")]
pub mod glue;

/// Re-exported so filter crates need no direct dependency to export themselves.
#[cfg(target_os = "wasi")]
pub use proxy_wasm;

pub use config::ConfigError;
pub use context::{Denial, RequestContext};
pub use filter::{Flow, HttpFilter, Plugin};
pub use host::{Host, HostKind, Level};
