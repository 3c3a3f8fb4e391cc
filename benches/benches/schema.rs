//! `palisade-schema`'s pure core over the fake host: one POST whose JSON body
//! is buffered, parsed under the JSON-bomb limits and validated, per
//! iteration, for a 1 KB and a 64 KB order (the bodies `variants_schema.py`
//! sends through Envoy). Building the fake request is setup, not measured.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use palisade_benches::configure;
use palisade_core::fake::FakeHost;
use palisade_core::{Flow, HttpFilter, Plugin};
use palisade_schema::SchemaPlugin;
use serde_json::{json, Value};
use std::hint::black_box;
use std::rc::Rc;

/// The contract of `benches/variants_schema.py`.
fn config() -> Value {
    json!({
        "max_body_bytes": 131072,
        "rules": [{
            "match": {"path": "/bench/resource", "methods": ["POST"]},
            "body": {"schema": {
                "type": "object", "required": ["customer", "items"], "additionalProperties": false,
                "properties": {
                    "customer": {"type": "object", "required": ["id", "email"], "properties": {
                        "id": {"type": "integer", "minimum": 1},
                        "email": {"type": "string", "format": "email", "maxLength": 254},
                        "name": {"type": "string", "maxLength": 100}}},
                    "items": {"type": "array", "minItems": 1, "maxItems": 2000, "items": {
                        "type": "object", "required": ["sku", "qty", "price"], "additionalProperties": false,
                        "properties": {
                            "sku": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{4}$"},
                            "qty": {"type": "integer", "minimum": 1, "maximum": 100},
                            "price": {"type": "number", "exclusiveMinimum": 0},
                            "note": {"type": ["string", "null"], "maxLength": 200}}}},
                    "coupon": {"type": ["string", "null"]}}}}
        }]
    })
}

/// A valid order of at most `target` bytes, shaped like the Python one.
fn order_body(target: usize) -> Vec<u8> {
    let render = |n: usize| {
        let items: Vec<Value> = (0..n)
            .map(|i| {
                let note = if i % 2 == 1 {
                    Value::Null
                } else {
                    json!("gift wrap")
                };
                json!({"sku": format!("AB-{:04}", i % 10000), "qty": 1 + i % 9,
                       "price": 9.5 + i as f64, "note": note})
            })
            .collect();
        let doc = json!({"customer": {"id": 42, "email": "buyer@example.com", "name": "A. Buyer"},
                         "items": items, "coupon": null});
        serde_json::to_vec(&doc).unwrap_or_default()
    };
    let mut n = 1;
    while render(n + 1).len() <= target {
        n += 1;
    }
    render(n)
}

fn request(body: &[u8]) -> FakeHost {
    let mut host = FakeHost::request("POST", "/bench/resource")
        .with_request_header("content-type", "application/json")
        .with_request_header("content-length", &body.len().to_string())
        .with_request_header("x-request-id", "0b6e2f1c-6d2a-4c1e-9b7a-3f5d8e2a1c4b");
    host.request_body = body.to_vec();
    host
}

/// Headers then the whole body in one callback, as Envoy delivers a small POST.
fn validate(plugin: &Rc<SchemaPlugin>, host: &mut FakeHost) -> Flow {
    let mut filter = SchemaPlugin::new_filter(plugin);
    filter.on_request_headers(host, false);
    let size = host.request_body.len();
    filter.on_request_body(host, size, true)
}

fn bench_schema(c: &mut Criterion) {
    let plugin: Rc<SchemaPlugin> = configure(&config().to_string());
    let mut group = c.benchmark_group("schema");
    for (name, size) in [("validate_1kb", 1024), ("validate_64kb", 65536)] {
        let body = order_body(size);
        let mut probe = request(&body);
        assert_eq!(
            validate(&plugin, &mut probe),
            Flow::Continue,
            "{name}: refused"
        );
        assert!(probe.sent.is_none(), "{name}: refused");
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || request(&body),
                |host| black_box(validate(&plugin, host)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench_schema);
criterion_main!(benches);
