//! `palisade-empty`: a proxy-wasm HTTP filter that does nothing.
//!
//! It exists only for `make bench`: Envoy with this module in the chain, minus
//! Envoy with the router alone, is the fixed cost of *any* wasm filter (VM
//! entry/exit for each callback, header map marshalling set up by the host).
//! Palisade filters are judged against this floor, not against zero.
//!
//! It overrides nothing beyond what the SDK needs to create contexts, so every
//! callback takes the SDK's default (`Continue`), the cheapest path the host has.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(EmptyRoot) });
}}

/// Root context: accepts any configuration and hands out HTTP contexts.
struct EmptyRoot;

impl Context for EmptyRoot {}

impl RootContext for EmptyRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(EmptyHttp))
    }
}

/// Per-request context: every callback keeps the SDK default, `Action::Continue`.
struct EmptyHttp;

impl Context for EmptyHttp {}

impl HttpContext for EmptyHttp {}
