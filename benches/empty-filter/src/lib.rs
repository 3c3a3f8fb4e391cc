//! `palisade-empty`: a proxy-wasm HTTP filter that does nothing.
//!
//! It exists only for `make bench`: Envoy with this module in the chain, minus
//! Envoy with the router alone, is the fixed cost of *any* wasm filter (VM
//! entry/exit for each callback, header map marshalling set up by the host).
//! Palisade filters are judged against this floor, not against zero.
//!
//! It overrides nothing beyond what the SDK needs to create contexts, so every
//! callback takes the SDK's default (`Continue`), the cheapest path the host has.
//!
//! Host-call probes (`make bench-probes`): each cargo feature adds exactly one
//! kind of host call to this otherwise empty filter, so that the probe module
//! minus the plain one is what that call costs per request:
//!
//! | feature              | callback                   | host call                                           |
//! |----------------------|----------------------------|-----------------------------------------------------|
//! | `probe-get-header`   | `on_http_request_headers`  | `get_map_value_bytes(HttpRequestHeaders, "x-request-id")` |
//! | `probe-request-map`  | `on_http_request_headers`  | `get_map_bytes(HttpRequestHeaders)`                 |
//! | `probe-response-map` | `on_http_response_headers` | `get_map_bytes(HttpResponseHeaders)`                |
//! | `probe-add-header`   | `on_http_response_headers` | `add_map_value(HttpResponseHeaders, "x-probe", "1")` |
//! | `probe-metric`       | `on_http_response_headers` | `increment_metric` (counter defined in `on_configure`) |
//!
//! Results go through `std::hint::black_box` so the optimiser keeps the work
//! of copying them into the module. Without features none of this is compiled.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

#[cfg(any(
    feature = "probe-get-header",
    feature = "probe-request-map",
    feature = "probe-response-map",
    feature = "probe-add-header"
))]
use proxy_wasm::types::MapType;
#[cfg(any(
    feature = "probe-get-header",
    feature = "probe-request-map",
    feature = "probe-response-map",
    feature = "probe-add-header",
    feature = "probe-metric"
))]
use {proxy_wasm::hostcalls, proxy_wasm::types::Action, std::hint::black_box};
#[cfg(feature = "probe-metric")]
use {proxy_wasm::types::MetricType, std::cell::Cell};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(EmptyRoot) });
}}

/// Root context: accepts any configuration and hands out HTTP contexts.
struct EmptyRoot;

// `probe-metric`: the counter defined in `on_configure`, if the host agreed.
// Kept out of the context structs so that, without features, they stay the
// unit structs of the plain filter (the module is byte-for-byte the same).
#[cfg(feature = "probe-metric")]
thread_local! {
    static COUNTER: Cell<Option<u32>> = const { Cell::new(None) };
}

impl Context for EmptyRoot {}

impl RootContext for EmptyRoot {
    #[cfg(feature = "probe-metric")]
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let id = hostcalls::define_metric(MetricType::Counter, "palisade_probe.responses");
        COUNTER.with(|c| c.set(id.ok()));
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(EmptyHttp))
    }
}

/// Per-request context: every callback keeps the SDK default, `Action::Continue`,
/// unless a probe feature overrides it with its one host call.
struct EmptyHttp;

impl Context for EmptyHttp {}

impl HttpContext for EmptyHttp {
    #[cfg(any(feature = "probe-get-header", feature = "probe-request-map"))]
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        #[cfg(feature = "probe-get-header")]
        if let Ok(value) =
            hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "x-request-id")
        {
            black_box(value);
        }
        #[cfg(feature = "probe-request-map")]
        if let Ok(map) = hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
            black_box(map);
        }
        Action::Continue
    }

    #[cfg(any(
        feature = "probe-response-map",
        feature = "probe-add-header",
        feature = "probe-metric"
    ))]
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        #[cfg(feature = "probe-response-map")]
        if let Ok(map) = hostcalls::get_map_bytes(MapType::HttpResponseHeaders) {
            black_box(map);
        }
        #[cfg(feature = "probe-add-header")]
        black_box(hostcalls::add_map_value(MapType::HttpResponseHeaders, "x-probe", "1").is_ok());
        #[cfg(feature = "probe-metric")]
        if let Some(id) = COUNTER.with(|c| c.get()) {
            black_box(hostcalls::increment_metric(id, 1).is_ok());
        }
        Action::Continue
    }
}
