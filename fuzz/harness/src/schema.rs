//! The schema control. `schema`: bodies near the configured JSON Schema
//! (valid documents edited a little, then maybe bytes mutated) in chunks,
//! with trailers, on Envoy and Kong; a body the upstream receives on the
//! validated route must be one the `jsonschema` crate itself accepts.
//! `schema_body`: the body parser against serde_json. `schema_request`:
//! whole requests against the pet store OpenAPI document.

use crate::check::{self, Known};
use crate::gen::{self, Vocab};
use crate::{check_exchange, configured, request_host, unstructured, Proxy};
use arbitrary::{Arbitrary, Result, Unstructured};
use palisade_core::fake::{run, Exchange, FakeHost};
use palisade_core::Plugin;
use palisade_schema::body::{parse, BodyError};
use palisade_schema::config::Limits;
use palisade_schema::SchemaPlugin;
use serde_json::{json, Value};
use std::rc::Rc;

const NOW: u64 = 1_800_000_000;
const PATHS: &[&str] = &[
    "/orders",
    "/orders/12",
    "/orders/0",
    "/orders?dry_run=true",
    "/orders/",
    "/health",
    "/Orders",
];
pub(crate) const NAMES: &[&str] = &[
    "sku", "qty", "items", "note", "email", "when", "tags", "kind", "price", "dry_run",
];
pub(crate) const STRINGS: &[&str] = &[
    "AB-123",
    "ab-1",
    "AB-1234567",
    "x@example.com",
    "2026-01-02T03:04:05Z",
    "not-a-date",
    "a",
    "book",
    "pen",
    "",
];

/// The schemas the validated route may carry.
pub(crate) fn schemas() -> [Value; 3] {
    [
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object", "required": ["sku", "qty"], "additionalProperties": false,
            "properties": {
                "sku": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{1,6}$"},
                "qty": {"type": "integer", "minimum": 1, "maximum": 100},
                "note": {"type": "string", "maxLength": 8},
                "items": {"type": "array", "maxItems": 3, "items": {"$ref": "#/$defs/item"}}
            },
            "$defs": {"item": {"type": "object", "required": ["sku"], "properties": {"sku": {"type": "string"}}}}
        }),
        json!({
            "type": "object",
            "properties": {
                "email": {"type": "string", "format": "email"},
                "when": {"type": "string", "format": "date-time"},
                "tags": {"type": "array", "uniqueItems": true, "items": {"enum": ["book", "pen"]}},
                "kind": {"oneOf": [{"const": "a"}, {"type": "integer", "multipleOf": 3}]},
                "price": {"type": "number", "exclusiveMinimum": 0}
            },
            "anyOf": [{"required": ["email"]}, {"required": ["kind"]}]
        }),
        json!({"type": "array", "items": {"type": "number"}, "maxItems": 3, "minItems": 1}),
    ]
}

/// A valid body for each schema, edited into near-misses.
pub(crate) fn examples() -> [Value; 3] {
    [
        json!({"sku": "AB-123", "qty": 2, "items": [{"sku": "x"}]}),
        json!({"email": "x@example.com", "kind": 3, "tags": ["book"], "price": 1.5}),
        json!([1, 2.5]),
    ]
}

/// Fuzz entry: see the module doc.
pub fn schema(data: &[u8]) {
    let _ = scenario(&mut unstructured(data));
}

fn scenario(u: &mut Unstructured) -> Result<()> {
    let kind = Proxy::arbitrary(u)?.kind();
    let which = u.choose_index(3)?;
    let schema = schemas()[which].clone();
    let mut config = json!({
        "max_body_bytes": *u.choose(&[65_536u64, 64, 1024])?,
        "unmatched": *u.choose(&["deny", "allow"])?,
        "hold_headers": bool::arbitrary(u)?,
        "rules": [
            {"match": {"path": "/orders", "methods": ["POST", "PUT"]},
             "body": {"required": true, "schema": schema}},
            {"match": {"path_template": "/orders/{id}", "methods": ["GET", "DELETE"]},
             "path_params": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1}}}},
            {"match": {"path": "/health"}}
        ]
    });
    if u.ratio(1u8, 4)? {
        config["limits"] =
            json!({"max_depth": 3, "max_members": 4, "max_items": 4, "max_string_bytes": 16});
    }
    let config = config.to_string();
    let Ok(validator) = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
    else {
        panic!("the harness's schema does not compile");
    };

    let (plugin, r) = match configured::<SchemaPlugin>(&config, kind, NOW) {
        Ok(p) => p,
        Err(e) => panic!("the harness's schema config is refused: {e}"),
    };

    let mut body = match u.int_in_range(0u8..=3)? {
        0 => gen::json(u, NAMES, STRINGS, 3)?,
        _ => gen::mutate_json(u, &examples()[which], NAMES, STRINGS)?,
    }
    .to_string()
    .into_bytes();
    if u.ratio(1u8, 4)? {
        body = gen::mutate(u, body)?;
    }
    let content_type = gen::bytes_like(
        u,
        &[
            "application/json",
            "application/json; charset=utf-8",
            "text/plain",
            "application/merge-patch+json",
            "APPLICATION/JSON",
        ],
        40,
    )?;
    let vocab = Vocab {
        methods: &["POST", "PUT", "GET", "DELETE", "post"],
        paths: PATHS,
        header_names: &["content-type", "content-encoding", "content-length"],
        header_values: &["application/json", "gzip", "5"],
    };
    let req = gen::request(u, &vocab, vec![("content-type".into(), content_type)])?;
    let ex = gen::exchange(u, &body, &["{}", "created"], &["content-type"])?;

    let mut known = Known::default();
    known.add(config.as_bytes());
    known.add_all(PATHS);
    known.add_all(NAMES);
    known.add_all(STRINGS);
    known.add_all(gen::COMMON_HEADERS);
    known.add_all(gen::COMMON_VALUES);
    known.add_all(gen::REQUEST_IDS);
    known.add(gen::TRACEPARENT.as_bytes());
    known.add(req.path.as_bytes());
    for (n, _) in &req.headers {
        known.add(n.as_bytes());
    }

    let mut host = request_host(&r, &req, NOW * 1_000_000_000);
    host.kind = kind;
    let mut filter = SchemaPlugin::new_filter(&plugin);
    let out = run(&mut filter, &mut host, &ex);
    check_exchange(&host, &req, &body, &out, &known, held(&*plugin, kind, &ex));

    if let Some((_, upstream_body)) = &out.upstream {
        if matches!(req.method.as_str(), "POST" | "PUT") && req.path == "/orders" {
            let doc: Value = match serde_json::from_slice(upstream_body) {
                Ok(v) => v,
                Err(e) => panic!(
                    "the upstream got a body that is not JSON ({e}): {:?}",
                    String::from_utf8_lossy(upstream_body)
                ),
            };
            assert!(
                validator.is_valid(&doc),
                "the upstream got a body the schema refuses: {doc}"
            );
        }
    }
    Ok(())
}

/// Whether the input staged a hang the glue's watchdog answers: a control
/// holding headers for the body, without the proxy setting for it.
fn held<P: Plugin>(plugin: &P, kind: palisade_core::HostKind, ex: &Exchange) -> bool {
    (plugin.holds_request_headers() || plugin.holds_response_headers())
        && (kind == palisade_core::HostKind::Kong || !ex.allow_on_headers_stop_iteration)
}

/// The body parser on arbitrary bytes, under tight and default limits: it
/// never panics, and whatever it accepts serde_json reads the same way.
pub fn schema_body(data: &[u8]) {
    let tight = Limits {
        max_depth: 4,
        max_members: 4,
        max_items: 4,
        max_string_bytes: 8,
    };
    for limits in [Limits::default(), tight] {
        let ours = parse(data, &limits);
        let reference = serde_json::from_slice::<Value>(data);
        match (ours, reference) {
            (Ok(v), Ok(r)) => assert_eq!(v, r),
            (Ok(_), Err(_)) => panic!("accepted what serde_json refuses"),
            (Err(BodyError::Syntax), Ok(_)) => panic!("syntax error on valid JSON"),
            _ => {}
        }
    }
}

fn petstore() -> &'static Rc<SchemaPlugin> {
    thread_local! {
        static PLUGIN: &'static Rc<SchemaPlugin> = Box::leak(Box::new(Rc::new({
            let doc = include_str!("../../../filters/schema/tests/fixtures/petstore.json");
            let config = format!(r#"{{"unmatched": "deny", "openapi": {doc}}}"#);
            match SchemaPlugin::configure(config.as_bytes(), &mut FakeHost::new()) {
                Ok(p) => p,
                Err(e) => panic!("the pet store does not load: {e}"),
            }
        })));
    }
    PLUGIN.with(|p| *p)
}

/// Whole requests (first line: method and path; the rest: the body)
/// against the pet store contract: every input gets an answer, never a
/// panic, and a denial is a problem.
pub fn schema_request(data: &[u8]) {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let line = String::from_utf8_lossy(&data[..split]);
    let (method, path) = line.split_once(' ').unwrap_or(("POST", "/pets"));
    let body = data.get(split + 1..).unwrap_or(&[]);
    let plugin = petstore();
    let mut host = FakeHost::request(method, path)
        .with_request_header("content-type", "application/json")
        .with_request_header("x-request-id", "req-petstore-1");
    let mut filter = SchemaPlugin::new_filter(plugin);
    let out = run(
        &mut filter,
        &mut host,
        &Exchange::new().body(body).with_stop_iteration_flag(),
    );
    check::no_hang(&out, false);
    if let Some(c) = &out.client {
        check::client(c, Some("req-petstore-1"));
        if c.local {
            assert!(
                matches!(c.status, 400 | 404 | 405 | 413 | 415),
                "status {}",
                c.status
            );
        }
    }
}
