//! Every filter the command knows, in one table.
//!
//! A row says how to check a config (the filter crate's own `check_config`,
//! the same code `configure` runs in the proxy), where its JSON Schema comes
//! from, and how the filter is placed on each platform. Wiring a new filter in
//! is one row here plus its crate in `Cargo.toml`.

use palisade_core::filter::{configure, Control};
use palisade_core::{ConfigError, Host, HostKind};
use serde_json::Value;
use std::rc::Rc;

/// Where a filter sits in Istio's filter chain, and what happens when its VM
/// fails (`failStrategy`), with the reason operators read in the rendered YAML.
#[derive(Debug, Clone, Copy)]
pub struct IstioPlacement {
    /// `AUTHN`, `AUTHZ`, `STATS` or `UNSPECIFIED_PHASE`.
    pub phase: &'static str,
    /// Higher runs first within a phase (on requests; last on responses).
    pub priority: i32,
    /// `FAIL_CLOSE` or `FAIL_OPEN`.
    pub fail_strategy: &'static str,
    pub why_placed: &'static str,
    pub why_fail: &'static str,
}

/// A filter crate's `check_config`: the validation its `configure` runs.
pub type CheckFn = fn(&[u8], HostKind) -> Result<(), ConfigError>;

/// A filter crate's `Plugin::configure`, type erased: `palisade.wasm` runs it.
pub type ConfigureFn = fn(&[u8], &mut dyn Host) -> Result<Rc<dyn Control>, ConfigError>;

/// One filter.
#[derive(Debug, Clone, Copy)]
pub struct Filter {
    /// `headers` for `dist/palisade_headers.wasm`.
    pub name: &'static str,
    pub summary: &'static str,
    /// The filter crate's `check_config`.
    pub check: CheckFn,
    /// The filter crate's plugin, configured.
    pub configure: ConfigureFn,
    /// The filter crate's `config_schema` (schemars' draft 2020-12).
    pub schema: fn() -> Value,
    /// Position in a chain when routes do not order two filters themselves:
    /// lower is outermost (sees requests first and responses last).
    pub rank: u32,
    /// Envoy `allow_on_headers_stop_iteration` (body callbacks after a paused
    /// headers callback).
    pub envoy_allow_on_headers_stop_iteration: bool,
    /// Default of the filter's `hold_headers` option, which needs
    /// `allow_on_headers_stop_iteration` (Istio's WasmPlugin cannot set it);
    /// `None` for filters without that option.
    pub hold_headers_default: Option<bool>,
    pub istio: IstioPlacement,
}

impl Filter {
    /// The module's file stem: `palisade_headers` (also Kong's filter name).
    pub fn module(&self) -> String {
        format!("palisade_{}", self.name)
    }

    /// Envoy `failure_policy`, the same choice as Istio's `failStrategy`,
    /// with Envoy's reload for the controls that fail closed: a VM that
    /// fails refuses the request it failed on and is replaced by a fresh
    /// one (after a 1 s backoff), where `FAIL_CLOSED` would refuse every
    /// later request until Envoy restarts (both seen in tests/tests/faults.rs).
    pub fn envoy_failure_policy(&self) -> &'static str {
        if self.istio.fail_strategy == "FAIL_OPEN" {
            "FAIL_OPEN"
        } else {
            "FAIL_RELOAD"
        }
    }
}

/// The chain order every platform follows: `errors` outermost (it sees every
/// response last, other filters' local replies included), then `headers`
/// (strips spoofable identity headers before authentication publishes its
/// own), then the controls, cheapest refusal first.
pub const FILTERS: &[Filter] = &[
    Filter {
        name: "errors",
        summary: "error masking: no stack traces or internals leave the proxy",
        check: palisade_errors::check_config,
        configure: configure::<palisade_errors::ErrorsPlugin>,
        schema: palisade_errors::config_schema,
        rank: 10,
        envoy_allow_on_headers_stop_iteration: true,
        hold_headers_default: Some(false),
        istio: IstioPlacement {
            phase: "AUTHN",
            priority: 1000,
            fail_strategy: "FAIL_OPEN",
            why_placed: "AUTHN with the highest priority: the first Palisade filter on requests, \
                         so the last on responses, after every other filter's local reply",
            why_fail: "FAIL_OPEN: a dead masking VM lets upstream errors through unmasked \
                       instead of turning every response into a 503",
        },
    },
    Filter {
        name: "headers",
        summary: "request/response header sanitization, security headers",
        check: palisade_headers::check_config,
        configure: configure::<palisade_headers::HeadersPlugin>,
        schema: palisade_headers::config_schema,
        rank: 20,
        envoy_allow_on_headers_stop_iteration: false,
        hold_headers_default: None,
        istio: IstioPlacement {
            phase: "AUTHN",
            priority: 900,
            fail_strategy: "FAIL_OPEN",
            why_placed: "AUTHN before jwt: client-sent x-palisade-* and x-jwt-* headers are gone \
                         before authentication publishes its own",
            why_fail: "FAIL_OPEN: hardening, not a gate; the jwt filter overwrites its claim \
                       headers itself, so a dead VM costs the security headers, not identity",
        },
    },
    Filter {
        name: "jwt",
        summary: "JWT checking",
        check: palisade_jwt::check_config,
        configure: configure::<palisade_jwt::JwtPlugin>,
        schema: palisade_jwt::config_schema,
        rank: 30,
        envoy_allow_on_headers_stop_iteration: false,
        hold_headers_default: None,
        istio: IstioPlacement {
            phase: "AUTHN",
            priority: 100,
            fail_strategy: "FAIL_CLOSE",
            why_placed: "AUTHN, after headers: authenticates before Istio's own authn and \
                         authz filters, which can then use the subject",
            why_fail: "FAIL_CLOSE: a request must never reach the upstream unauthenticated \
                       because the checking VM died",
        },
    },
    Filter {
        name: "ratelimit",
        summary: "per-client rate limits",
        check: palisade_ratelimit::check_config,
        configure: configure::<palisade_ratelimit::RateLimitPlugin>,
        schema: palisade_ratelimit::config_schema,
        rank: 40,
        envoy_allow_on_headers_stop_iteration: false,
        hold_headers_default: None,
        istio: IstioPlacement {
            phase: "AUTHZ",
            priority: 200,
            fail_strategy: "FAIL_OPEN",
            why_placed: "AUTHZ, after every AUTHN filter: limits are keyed by the subject jwt \
                         published",
            why_fail: "FAIL_OPEN: a broken limiter must not refuse all traffic (as Envoy's \
                       ratelimit filter, failure_mode_deny off)",
        },
    },
    Filter {
        name: "schema",
        summary: "JSON Schema / OpenAPI validation",
        check: palisade_schema::check_config,
        configure: configure::<palisade_schema::SchemaPlugin>,
        schema: palisade_schema::config_schema,
        rank: 50,
        envoy_allow_on_headers_stop_iteration: true,
        hold_headers_default: Some(palisade_schema::config::DEFAULT_HOLD_HEADERS),
        istio: IstioPlacement {
            phase: "AUTHZ",
            priority: 100,
            fail_strategy: "FAIL_CLOSE",
            why_placed: "AUTHZ after ratelimit: the costliest check runs last, on requests \
                         that are authenticated and within their limits",
            why_fail: "FAIL_CLOSE: unvalidated bodies must not reach an upstream that relies \
                       on the validation",
        },
    },
];

/// The row for `name`.
pub fn find(name: &str) -> Option<&'static Filter> {
    FILTERS.iter().find(|f| f.name == name)
}

/// `"errors, headers, ..."`, for error messages.
pub fn names() -> String {
    FILTERS
        .iter()
        .map(|f| f.name)
        .collect::<Vec<_>>()
        .join(", ")
}
