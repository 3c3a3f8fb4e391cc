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
//! Contract floors (`floor-jwt`, `floor-ratelimit`, to `dist/bench/floor_<x>.wasm`)
//! make, with no logic at all, exactly the host calls a filter's contract
//! demands per request for the bench's config: the cost no implementation of
//! that control as a proxy-wasm filter can go below on this host.
//!
//! Test fixture (`fixture-trap`, to `dist/test/trap.wasm`, built by `make
//! integration`): traps the VM on a request carrying `x-palisade-test-trap`,
//! so the real-Envoy tests can check what a VM failure does to the chain.
//!
//! Results go through `std::hint::black_box` so the optimiser keeps the work
//! of copying them into the module. Without features none of this is compiled.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

#[cfg(any(feature = "calls", feature = "fixture-trap"))]
use proxy_wasm::types::Action;
#[cfg(feature = "maps")]
use proxy_wasm::types::MapType;
#[cfg(feature = "calls")]
use {proxy_wasm::hostcalls, std::hint::black_box};
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

#[cfg(feature = "floor-schema")]
thread_local! {
    static VALIDATOR: std::cell::RefCell<Option<jsonschema::Validator>> =
        const { std::cell::RefCell::new(None) };
}

impl RootContext for EmptyRoot {
    #[cfg(feature = "floor-schema")]
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = hostcalls::get_buffer(
            proxy_wasm::types::BufferType::PluginConfiguration,
            0,
            usize::MAX,
        );
        let schema: Option<serde_json::Value> = config
            .ok()
            .flatten()
            .and_then(|raw| serde_json::from_slice(&raw).ok());
        let validator = schema.and_then(|s| {
            jsonschema::options()
                .offline()
                .should_validate_formats(true)
                .build(&s)
                .ok()
        });
        let ok = validator.is_some();
        VALIDATOR.with(|v| *v.borrow_mut() = validator);
        ok
    }

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
    #[cfg(any(
        feature = "probe-get-header",
        feature = "probe-request-map",
        feature = "floor-jwt",
        feature = "floor-jwt-map",
        feature = "floor-ratelimit",
        feature = "floor-schema",
        feature = "fixture-trap"
    ))]
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // The test fixture's fault: a request carrying this header traps
        // the VM, as a filter bug would (a Rust panic is a wasm trap).
        #[cfg(feature = "fixture-trap")]
        if let Ok(Some(_)) = proxy_wasm::hostcalls::get_map_value_bytes(
            proxy_wasm::types::MapType::HttpRequestHeaders,
            "x-palisade-test-trap",
        ) {
            panic!("fixture-trap: trapping on request");
        }
        #[cfg(all(feature = "floor-schema", not(feature = "floor-schema-bare")))]
        black_box(hostcalls::get_map_bytes(proxy_wasm::types::MapType::HttpRequestHeaders).ok());
        #[cfg(feature = "floor-jwt")]
        floor_jwt();
        #[cfg(feature = "floor-jwt-map")]
        floor_jwt_map();
        #[cfg(feature = "floor-ratelimit")]
        floor_ratelimit();
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
        // The schema floors hold the headers until the body is in: with a
        // `direct_response` route, headers let through are answered at once
        // and the body callback never comes.
        if cfg!(feature = "floor-schema") {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    #[cfg(feature = "floor-schema")]
    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let body =
            hostcalls::get_buffer(proxy_wasm::types::BufferType::HttpRequestBody, 0, body_size);
        let valid = body
            .ok()
            .flatten()
            .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok())
            .is_some_and(|doc| {
                VALIDATOR.with(|v| v.borrow().as_ref().is_some_and(|v| v.is_valid(&doc)))
            });
        #[cfg(not(feature = "floor-schema-bare"))]
        {
            let decision: &[u8] = if valid { b"allow" } else { b"deny" };
            let _ = hostcalls::set_map_value_bytes(
                proxy_wasm::types::MapType::HttpRequestHeaders,
                "x-palisade-schema",
                Some(decision),
            );
        }
        black_box(valid);
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

/// What both JWT floors record as the claims property: a verified token's claims.
#[cfg(any(feature = "floor-jwt", feature = "floor-jwt-map"))]
const CLAIMS: &[u8] =
    br#"{"iss":"https://id.example.com","sub":"user-1","aud":"orders-api","exp":4102444800}"#;

/// The JWT filter's contract for a valid token (bench config): read the token,
/// publish `sub`, strip the token (`forward: false`), record the decision.
#[cfg(feature = "floor-jwt")]
fn floor_jwt() {
    let token = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "authorization");
    if let Ok(Some(token)) = black_box(token) {
        let _ = hostcalls::set_map_value_bytes(
            MapType::HttpRequestHeaders,
            "x-jwt-sub",
            Some(b"user-1"),
        );
        let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, "authorization", None);
        let _ = hostcalls::set_property(vec!["palisade_jwt_claims"], Some(CLAIMS));
        black_box(token);
    }
}

/// The local rate limiter's contract (bench config, key = one header): read
/// the key, read its bucket from shared data, write the bucket back with CAS.
#[cfg(feature = "floor-ratelimit")]
fn floor_ratelimit() {
    let key = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "x-rl-client");
    if let Ok(Some(key)) = black_box(key) {
        let slot = if key.first() == Some(&b'a') {
            "floor.a"
        } else {
            "floor.b"
        };
        if let Ok((bucket, cas)) = hostcalls::get_shared_data(slot) {
            let mut bucket = bucket.unwrap_or_else(|| vec![0; 16]);
            if let Some(b) = bucket.first_mut() {
                *b = b.wrapping_add(1);
            }
            black_box(hostcalls::set_shared_data(slot, Some(&bucket), cas).is_ok());
        }
    }
}

/// The JWT contract with one map round trip instead of single-header calls.
#[cfg(feature = "floor-jwt-map")]
fn floor_jwt_map() {
    if let Ok(map) = hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
        if map.iter().any(|(n, _)| n == "authorization") {
            let mut out: Vec<(&str, &[u8])> = map
                .iter()
                .filter(|(n, _)| n != "authorization" && n != "x-jwt-sub")
                .map(|(n, v)| (n.as_str(), v.as_slice()))
                .collect();
            out.push(("x-jwt-sub", b"user-1"));
            let _ = hostcalls::set_map_bytes(MapType::HttpRequestHeaders, out);
            let _ = hostcalls::set_property(vec!["palisade_jwt_claims"], Some(CLAIMS));
        }
        black_box(map);
    }
}
