//! Every config loader on arbitrary input: raw bytes, JSON built from the
//! control's own field names, and the example configs edited. A loader
//! never panics; a config it accepts then serves a few exchanges (with
//! ticks and call answers, garbage included) without a panic.

use crate::drive::{drive, Answer};
use crate::gen::{self, Vocab};
use crate::{request_host, root, unstructured, Proxy};
use arbitrary::{Arbitrary, Result, Unstructured};
use palisade::ChainPlugin;
use palisade_core::fake::{FakeHost, RecordedCall};
use palisade_core::host::{CallResponse, Phase};
use palisade_core::Plugin;
use palisade_errors::ErrorsPlugin;
use palisade_headers::HeadersPlugin;
use palisade_jwt::JwtPlugin;
use palisade_ratelimit::RateLimitPlugin;
use palisade_schema::SchemaPlugin;
use serde_json::Value;
use std::rc::Rc;

/// Route-rule words every control shares.
const ROUTE: &[&str] = &[
    "rules",
    "match",
    "prefix",
    "path",
    "path_template",
    "methods",
    "method",
    "route_name",
    "dry_run",
    "audit",
    "xff_num_trusted_hops",
    "client_ip",
];
const JWT: &[&str] = &[
    "providers",
    "corp",
    "issuer",
    "audiences",
    "algorithms",
    "local_jwks",
    "keys",
    "kty",
    "kid",
    "n",
    "e",
    "crv",
    "x",
    "y",
    "remote_jwks",
    "cluster",
    "authority",
    "cache_duration_s",
    "timeout_ms",
    "min_refetch_interval_s",
    "from_headers",
    "from_params",
    "from_cookies",
    "name",
    "value_prefix",
    "forward",
    "claim_to_headers",
    "claim",
    "header",
    "clock_skew_s",
    "max_token_bytes",
    "max_lifetime_s",
    "on_jwks_unavailable",
    "requires",
    "provider",
    "scopes",
    "claims",
    "any",
    "all",
    "allow_missing",
    "equals",
    "contains",
    "peer",
    "spiffe_ids",
    "trust_domains",
    "cidrs",
    "bypass_cors_preflight",
    "realm",
    "token_cache_entries",
    "signature_backend",
    "unmatched",
    "forwarded_client_cert",
];
const JWT_STRINGS: &[&str] = &[
    "https://id.example.com",
    "orders-api",
    "RS256",
    "ES256",
    "EdDSA",
    "HS256",
    "none",
    "RSA",
    "EC",
    "OKP",
    "oct",
    "P-256",
    "Ed25519",
    "AQAB",
    "corp",
    "sub",
    "x-jwt-sub",
    "tenant.id",
    "Bearer ",
    "deny",
    "allow",
    "unavailable",
    "host",
    "wasm",
    "spiffe://example.org/ns/a",
    "10.0.0.0/8",
    "/",
    "/health",
    "sanitize",
    "append_forward",
];
const RATELIMIT: &[&str] = &[
    "limits",
    "name",
    "key",
    "requests",
    "per_s",
    "burst",
    "count",
    "response_status",
    "max_in_flight",
    "header",
    "claim",
    "property",
    "route",
    "v4_prefix",
    "v6_prefix",
    "on_missing_key",
    "response_headers",
    "mode",
    "global",
    "cluster",
    "domain",
    "timeout_ms",
    "on_error",
    "local",
    "slots",
    "entries_per_slot",
    "claims",
    "from",
    "header_prefix",
];
const RATELIMIT_STRINGS: &[&str] = &[
    "client_ip",
    "route",
    "x-api-key",
    "sub",
    "skip",
    "shared",
    "deny",
    "allow",
    "draft",
    "x-ratelimit",
    "none",
    "local",
    "global",
    "ratelimit",
    "palisade",
    "/",
    "/login",
    "POST",
];
const SCHEMA: &[&str] = &[
    "max_body_bytes",
    "unmatched",
    "limits",
    "max_depth",
    "max_members",
    "max_items",
    "max_string_bytes",
    "validate_formats",
    "hold_headers",
    "openapi",
    "body",
    "schema",
    "required",
    "content_types",
    "query",
    "path_params",
    "type",
    "properties",
    "items",
    "$ref",
    "$defs",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "format",
    "oneOf",
    "anyOf",
    "allOf",
    "not",
    "additionalProperties",
    "paths",
    "components",
    "schemas",
    "parameters",
    "requestBody",
    "content",
    "in",
    "name",
    "get",
    "post",
    "$schema",
];
const SCHEMA_STRINGS: &[&str] = &[
    "object",
    "array",
    "string",
    "integer",
    "number",
    "boolean",
    "null",
    "deny",
    "allow",
    "application/json",
    "#/$defs/item",
    "#/components/schemas/Pet",
    "^[a-z]+$",
    "(a+)+$",
    "email",
    "date-time",
    "3.0.3",
    "3.1.0",
    "query",
    "path",
    "/orders",
    "/pets/{id}",
    "https://json-schema.org/draft/2020-12/schema",
    "http://json-schema.org/draft-04/schema#",
];
const HEADERS: &[&str] = &[
    "request",
    "response",
    "allow_only",
    "allowed_methods",
    "max_headers",
    "max_header_bytes",
    "reject_control_characters",
    "method_override",
    "remove",
    "add_if_absent",
    "expose_request_id",
];
const HEADERS_STRINGS: &[&str] = &[
    "accept",
    "x-api-*",
    "*",
    "GET",
    "POST",
    "server",
    "x-debug-*",
    "no-store",
    "reject",
    "allow",
    "ignore",
    "cache-control",
    "",
];
const ERRORS: &[&str] = &[
    "statuses",
    "default",
    "enabled",
    "leaks",
    "leak_patterns",
    "extra_leak_patterns",
    "disabled_leak_patterns",
    "detect_leaks_in",
    "scan_bytes",
    "log_body_bytes",
    "hold_headers",
    "strip_headers",
    "stream_content_types",
    "undecodable",
    "needs_route_name",
];
const ERRORS_STRINGS: &[&str] = &[
    "5xx",
    "500",
    "502",
    "file_path",
    "stack_trace",
    "sql",
    "internal_host",
    "mask",
    "pass",
    "\\bat [a-z]+\\b",
    "(?u)\\w",
    "[",
    "text/event-stream",
    "application/grpc",
    "server",
];
const CHAIN: &[&str] = &[
    "version",
    "upstreams",
    "filters",
    "routes",
    "name",
    "match",
    "prefix",
    "path",
    "upstream",
    "url",
    "tls",
    "ca",
    "sni",
    "http2",
    "publish_decisions",
    "istio",
    "target_refs",
    "selector",
    "namespace",
    "errors",
    "headers",
    "jwt",
    "ratelimit",
    "schema",
    "host",
    "port",
];
const CHAIN_STRINGS: &[&str] = &[
    "http://127.0.0.1:8080",
    "https://id.example.com",
    "shop",
    "idp",
    "errors",
    "headers",
    "jwt",
    "ratelimit",
    "schema",
    "api",
    "/",
    "envoy",
    "kong",
    "1",
];

/// How the config text is made.
#[derive(Debug, Arbitrary)]
enum Source {
    Raw,
    Generated,
    Example,
}

/// The config bytes for one run: raw, generated from `names`, or an
/// example edited.
fn config_bytes(
    u: &mut Unstructured,
    names: &[&str],
    strings: &[&str],
    examples: &[&str],
) -> Result<Vec<u8>> {
    let all_names: Vec<&str> = names.iter().chain(ROUTE).copied().collect();
    Ok(match Source::arbitrary(u)? {
        Source::Raw => {
            let n = u.arbitrary_len::<u8>()?;
            u.bytes(n)?.to_vec()
        }
        Source::Generated => {
            let mut doc = serde_json::Map::new();
            for _ in 0..u.int_in_range(0u8..=6)? {
                let key = gen::text_like(u, &all_names, 20)?;
                doc.insert(key, gen::json(u, &all_names, strings, 4)?);
            }
            Value::Object(doc).to_string().into_bytes()
        }
        Source::Example => {
            let text = u.choose(examples)?;
            match serde_json::from_str::<Value>(text) {
                Ok(v) => gen::mutate_json(u, &v, &all_names, strings)?
                    .to_string()
                    .into_bytes(),
                Err(_) => gen::mutate(u, text.as_bytes().to_vec())?,
            }
        }
    })
}

/// Caps rate-limit tables in a JSON config at 1024 slots (each slot is a
/// shared-data write at configure time: the default 16384 would spend
/// the run there): any object with `limits` gets a small `local`.
fn small_tables(config: &[u8]) -> Vec<u8> {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                if map.contains_key("limits") && !map.contains_key("local") {
                    map.insert("local".into(), serde_json::json!({"slots": 64}));
                }
                if let Some(Value::Object(local)) = map.get_mut("local") {
                    if local
                        .get("slots")
                        .and_then(Value::as_u64)
                        .is_none_or(|s| s > 1024)
                    {
                        local.insert("slots".into(), Value::from(1024));
                    }
                }
                map.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    match serde_json::from_slice::<Value>(config) {
        Ok(mut v) => {
            walk(&mut v);
            v.to_string().into_bytes()
        }
        Err(_) => config.to_vec(),
    }
}

/// Configures `P` from `config`; when accepted, ticks and serves requests.
fn serve<P: Plugin>(u: &mut Unstructured, config: &[u8]) -> Result<()> {
    let config = &small_tables(config);
    let kind = Proxy::arbitrary(u)?.kind();
    let mut r = root(kind, 1_800_000_000);
    let Ok(plugin) = P::configure(config, &mut r) else {
        return Ok(());
    };
    let plugin = Rc::new(plugin);
    if plugin.check_host(kind).is_err() {
        return Ok(());
    }
    r.believed = None;
    let mut now_ns = 1_800_000_000 * 1_000_000_000;
    for _ in 0..u.int_in_range(1u8..=3)? {
        if plugin.tick_period_ms().is_some() && bool::arbitrary(u)? {
            r.phase = Phase::Tick;
            let before = r.calls.len();
            plugin.on_tick(&mut r);
            if let Some(call) = r.calls.get(before..).and_then(|c| c.last()).cloned() {
                r.phase = Phase::CallResponse;
                plugin.on_call_response(&mut r, garbage(u, &call)?);
            }
        }
        let vocab = Vocab {
            methods: gen::METHODS,
            paths: &["/", "/orders", "/health", "/login", "/pets/1"],
            header_names: gen::COMMON_HEADERS,
            header_values: gen::COMMON_VALUES,
        };
        let req = gen::request(u, &vocab, Vec::new())?;
        let body = gen::bytes_like(u, &["{\"sku\":\"AB-1\",\"qty\":1}", "[]"], 64)?;
        let ex = gen::exchange(u, &body, &["{}", "error at x.java:1"], gen::COMMON_HEADERS)?;
        let mut host: FakeHost = request_host(&r, &req, now_ns);
        host.kind = kind;
        let mut filter = P::new_filter(&plugin);
        let mut answer = |call: &RecordedCall| match garbage(u, call) {
            Ok(a) => Answer::Respond(a),
            Err(_) => Answer::Reset,
        };
        drive(&mut filter, &mut host, &ex, &mut answer);
        now_ns += u64::from(u16::arbitrary(u)?) * 1_000_000;
        r.clock.set(now_ns);
    }
    Ok(())
}

/// Any answer to any call: a status and raw bytes.
fn garbage(u: &mut Unstructured, call: &RecordedCall) -> Result<CallResponse> {
    let n = u.int_in_range(0..=128)?;
    let body = u.bytes(n.min(u.len()))?.to_vec();
    Ok(match call {
        RecordedCall::Http { token, .. } => CallResponse::Http {
            token: *token,
            status: Option::<u16>::arbitrary(u)?,
            headers: vec![],
            body,
        },
        RecordedCall::Grpc { token, .. } => CallResponse::Grpc {
            token: *token,
            status: u32::from(u8::arbitrary(u)? % 17),
            message: body,
        },
    })
}

fn loader<P: Plugin>(data: &[u8], names: &[&str], strings: &[&str], examples: &[&str]) {
    let mut u = unstructured(data);
    if let Ok(config) = config_bytes(&mut u, names, strings, examples) {
        let _ = serve::<P>(&mut u, &config);
    }
}

/// Fuzz entry: the jwt config loader.
pub fn config_jwt(data: &[u8]) {
    loader::<JwtPlugin>(
        data,
        JWT,
        JWT_STRINGS,
        &[
            include_str!("../../../filters/jwt/examples/default.json"),
            include_str!("../../../filters/jwt/examples/east-west.json"),
        ],
    );
}

/// Fuzz entry: the ratelimit config loader.
pub fn config_ratelimit(data: &[u8]) {
    loader::<RateLimitPlugin>(
        data,
        RATELIMIT,
        RATELIMIT_STRINGS,
        &[
            include_str!("../../../filters/ratelimit/examples/local.json"),
            include_str!("../../../filters/ratelimit/examples/global.json"),
            include_str!("../../../filters/ratelimit/examples/dry-run.json"),
        ],
    );
}

/// Fuzz entry: the schema config loader (JSON Schema rules and OpenAPI).
pub fn config_schema(data: &[u8]) {
    loader::<SchemaPlugin>(
        data,
        SCHEMA,
        SCHEMA_STRINGS,
        &[
            include_str!("../../../filters/schema/examples/orders-rules.json"),
            include_str!("../../../filters/schema/examples/shadow-rollout.json"),
        ],
    );
}

/// Fuzz entry: the headers config loader.
pub fn config_headers(data: &[u8]) {
    loader::<HeadersPlugin>(data, HEADERS, HEADERS_STRINGS, crate::headers::CONFIGS);
}

/// Fuzz entry: the errors config loader.
pub fn config_errors(data: &[u8]) {
    loader::<ErrorsPlugin>(data, ERRORS, ERRORS_STRINGS, crate::errors::CONFIGS);
}

/// Fuzz entry: chain files as text (`chain::load`, YAML or JSON) and as
/// JSON (`chain::load_json`, then the chain plugin serving requests).
pub fn config_chain(data: &[u8]) {
    let mut u = unstructured(data);
    let names: Vec<&str> = CHAIN
        .iter()
        .chain(HEADERS)
        .chain(RATELIMIT)
        .chain(ERRORS)
        .copied()
        .collect();
    let examples = [
        include_str!("../../../examples/chain.yaml"),
        include_str!("../../../examples/edge-jwt-ratelimit.yaml"),
        include_str!("../../../examples/openapi-masking.yaml"),
    ];
    let Ok(as_text) = bool::arbitrary(&mut u) else {
        return;
    };
    if as_text {
        let Ok(text) = (match u.choose(&examples) {
            Ok(t) => gen::mutate(&mut u, t.as_bytes().to_vec()),
            Err(e) => Err(e),
        }) else {
            return;
        };
        let _ = palisade::chain::load(&String::from_utf8_lossy(&text));
        return;
    }
    let Ok(config) = config_bytes(&mut u, &names, CHAIN_STRINGS, &[CHAIN_SEED]) else {
        return;
    };
    let _ = palisade::chain::load_json(&config);
    let _ = palisade::chain::load(&String::from_utf8_lossy(&config));
    let _ = serve::<ChainPlugin>(&mut u, &config);
}

/// A JSON chain with every control, as a seed for edits.
const CHAIN_SEED: &str = r#"{"version": 1,
 "upstreams": {"shop": "http://127.0.0.1:8080", "idp": "https://id.example.com"},
 "filters": {"errors": {}, "headers": {}, "ratelimit": {"limits": [{"name": "l", "key": [], "requests": 2, "per_s": 1}]},
             "schema": {"rules": [{"match": {"path": "/orders"}, "body": {"schema": {"type": "object"}}}]},
             "jwt": {"providers": {"corp": {"issuer": "https://id.example.com",
                     "remote_jwks": {"cluster": "idp", "path": "/jwks", "authority": "id.example.com"}}},
                     "rules": [{"match": {"prefix": "/"}, "requires": {"provider": "corp"}}]}},
 "routes": [{"name": "api", "match": {"prefix": "/"}, "upstream": "shop",
             "filters": ["errors", "headers", "jwt", "ratelimit", "schema"]}]}"#;
