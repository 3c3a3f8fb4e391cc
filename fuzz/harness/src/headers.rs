//! The headers control under its example configs: hostile header sets
//! (control characters, huge values, repeats, method overrides) on Envoy
//! and Kong; every denial a problem, nothing reflected, no hang.

use crate::check::Known;
use crate::gen::{self, Vocab};
use crate::{check_exchange, configured, request_host, unstructured, Proxy};
use arbitrary::{Arbitrary, Result, Unstructured};
use palisade_core::fake::run;
use palisade_core::Plugin;
use palisade_headers::HeadersPlugin;

pub const CONFIGS: &[&str] = &[
    "{}",
    include_str!("../../../filters/headers/examples/strict-api.json"),
    include_str!("../../../filters/headers/examples/dry-run-rollout.json"),
    r#"{"method_override": "keep", "request": {"max_headers": 4, "max_header_bytes": 64, "reject_control_characters": true, "allowed_methods": ["GET", "POST"]}, "response": {"remove": ["server", "x-debug-*"], "add_if_absent": {"x-frame-options": "DENY"}}}"#,
];
const PATHS: &[&str] = &[
    "/",
    "/health",
    "/v1/orders",
    "/v1/uploads/a",
    "/v1/orders/../health",
];
const NAMES: &[&str] = &[
    "accept",
    "x-api-key",
    "x-api-secret",
    "x-debug-token",
    "x-http-method-override",
    "x-forwarded-proto",
    "if-match",
    "server",
    "x-powered-by",
    "cache-control",
];
const VALUES: &[&str] = &["DELETE", "PUT", "a\r\nb", "a\u{1}b", "https", "\"etag\""];

/// Fuzz entry: see the module doc.
pub fn headers(data: &[u8]) {
    let _ = scenario(&mut unstructured(data));
}

fn scenario(u: &mut Unstructured) -> Result<()> {
    let kind = Proxy::arbitrary(u)?.kind();
    let config = *u.choose(CONFIGS)?;
    let (plugin, r) = match configured::<HeadersPlugin>(config, kind, 1_800_000_000) {
        Ok(p) => p,
        Err(e) => panic!("an example headers config is refused: {e}"),
    };
    let vocab = Vocab {
        methods: gen::METHODS,
        paths: PATHS,
        header_names: NAMES,
        header_values: VALUES,
    };
    let req = gen::request(u, &vocab, Vec::new())?;
    let body = gen::bytes_like(u, &["{\"a\":1}"], 64)?;
    let ex = gen::exchange(u, &body, &["{}", "ok"], NAMES)?;
    let mut known = Known::default();
    known.add(config.as_bytes());
    known.add_all(PATHS);
    known.add_all(NAMES);
    known.add_all(VALUES);
    known.add_all(gen::COMMON_HEADERS);
    known.add_all(gen::COMMON_VALUES);
    known.add_all(gen::REQUEST_IDS);
    known.add(gen::TRACEPARENT.as_bytes());
    known.add(req.path.as_bytes());
    known.add(req.method.as_bytes());
    for (n, _) in &req.headers {
        known.add(n.as_bytes());
    }
    let mut host = request_host(&r, &req, 1_800_000_000 * 1_000_000_000);
    host.kind = kind;
    let mut filter = HeadersPlugin::new_filter(&plugin);
    let out = run(&mut filter, &mut host, &ex);
    check_exchange(&host, &req, &body, &out, &known, false);
    Ok(())
}
