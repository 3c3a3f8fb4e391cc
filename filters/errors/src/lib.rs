//! Palisade `errors` filter: no stack trace or internal detail leaves the proxy.
//!
//! Every 5xx (the upstream's or the proxy's own: no healthy upstream, timeout,
//! reset) reaches the client as an `application/problem+json` with the same
//! status, the reason phrase as title and the request id; 4xx bodies are
//! masked when they look like a leak (stack traces, SQL errors, server paths,
//! credentials); gRPC errors keep their framing with a generic `grpc-message`.
//! The original body's first bytes are logged for operators.
//!
//! Layout: [`config`] (JSON in, compiled policy out), [`status`] (status
//! classes), [`strip`] (leaky headers), [`leaks`] (leak patterns), [`decode`]
//! (compressed bodies), [`grpc`] (gRPC status handling), [`excerpt`] (log-safe body excerpts) and [`mask`]
//! (the per-response state machine). Decisions are plain Rust over
//! [`palisade_core::Host`]; the proxy-wasm glue is the core's.

pub mod config;
pub mod decode;
pub mod excerpt;
pub mod grpc;
pub mod leaks;
pub mod mask;
pub mod status;
pub mod strip;

use palisade_core::metrics::Metrics;
use palisade_core::{ConfigError, Host, Plugin};
use std::rc::Rc;

pub use config::Config;
pub use mask::{ErrorsFilter, EVENTS};

/// Metric, log and decision-header name.
pub const NAME: &str = "errors";

/// The JSON Schema of the config (schemars' draft 2020-12), for Kong's
/// `meta.json` and `palisade schema errors`.
pub fn config_schema() -> serde_json::Value {
    schemars::schema_for!(config::RawConfig).to_value()
}

/// The validation `configure` does (leak patterns compiled included),
/// without a host: for `palisade check`. The errors filter behaves the same
/// on every host, so `host` changes nothing.
pub fn check_config(json: &[u8], _host: palisade_core::HostKind) -> Result<(), ConfigError> {
    Config::load(json).map(|_| ())
}

/// The configured filter, shared by every request of a VM.
pub struct ErrorsPlugin {
    pub config: Config,
    pub metrics: Metrics,
}

impl Plugin for ErrorsPlugin {
    const NAME: &'static str = NAME;
    type Filter = ErrorsFilter;

    fn configure(config: &[u8], host: &mut dyn Host) -> Result<Self, ConfigError> {
        let config = Config::load(config)?;
        let metrics = Metrics::define(host, NAME, EVENTS, &[]);
        Ok(ErrorsPlugin { config, metrics })
    }

    fn new_filter(plugin: &Rc<Self>) -> ErrorsFilter {
        ErrorsFilter::new(plugin.clone())
    }

    /// `hold_headers` pauses a leak candidate's response headers until its
    /// body is scanned: without `allow_on_headers_stop_iteration` Envoy never
    /// delivers that body, and the glue's watchdog then answers and names it.
    fn audit_mode(&self) -> palisade_core::audit::AuditMode {
        self.config.audit
    }

    fn holds_response_headers(&self) -> bool {
        let config = &self.config;
        config.default.hold_headers || config.rules.iter().any(|(_, p)| p.hold_headers)
    }
}

palisade_core::export_plugin!(ErrorsPlugin);
