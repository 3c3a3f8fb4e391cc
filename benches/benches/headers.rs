//! `palisade-headers`' pure core over the fake host: one whole request
//! (request headers, response headers, body) per iteration. Building the fake
//! request is setup, not measured.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use palisade_benches::{configure, exchange, ok_exchange};
use palisade_core::fake::FakeHost;
use palisade_core::Host;
use palisade_headers::HeadersPlugin;
use std::hint::black_box;
use std::rc::Rc;

/// Ten rules the request does not match before the one it does: what a
/// per-route setup costs compared with the preset alone.
const RULES_CONFIG: &str = r#"{
  "rules": [
    {"match": {"prefix": "/admin/"}, "request": {"allowed_methods": ["GET"]}},
    {"match": {"path_template": "/v1/users/{id}/keys"}, "response": {"expose_request_id": false}},
    {"match": {"path": "/health"}, "response": {"add_if_absent": {"cache-control": "no-store"}}},
    {"match": {"prefix": "/internal/"}, "request": {"max_headers": 32}},
    {"match": {"prefix": "/static/"}, "response": {"add_if_absent": {"content-security-policy": null}}},
    {"match": {"path_template": "/v2/orders/{id}/items/{item}"}, "dry_run": true},
    {"match": {"prefix": "/upload/"}, "request": {"max_header_bytes": 8192}},
    {"match": {"path": "/login", "methods": ["POST"]}, "request": {"allowed_methods": ["POST"]}},
    {"match": {"prefix": "/graphql"}, "request": {"allowed_methods": ["GET", "POST"]}},
    {"match": {"prefix": "/legacy/"}, "request": {"remove": ["x-legacy-*"]}},
    {"match": {"prefix": "/api/"}, "response": {"add_if_absent": {"cache-control": "no-store"}}}
  ]
}"#;

/// Only GET and HEAD: a POST is answered with a 405 problem+json.
const METHODS_CONFIG: &str = r#"{"request": {"allowed_methods": ["GET", "HEAD"]}}"#;

/// Benches one exchange after checking once that it takes the intended path
/// (`expect`: the status of the filter's own reply, `None` for pass-through).
fn run(
    c: &mut Criterion,
    name: &str,
    plugin: &Rc<HeadersPlugin>,
    make: fn() -> FakeHost,
    expect: Option<u16>,
) {
    let mut probe = make();
    exchange(plugin, &mut probe);
    assert_eq!(
        probe.sent.as_ref().map(|s| s.status),
        expect,
        "{name}: wrong path"
    );
    c.bench_function(name, |b| {
        b.iter_batched_ref(
            make,
            |host| black_box(exchange(plugin, host)),
            BatchSize::SmallInput,
        )
    });
}

fn bench_headers(c: &mut Criterion) {
    let preset = configure::<HeadersPlugin>("{}");
    run(c, "headers/preset/ok_200", &preset, ok_exchange, None);
    run(
        c,
        "headers/preset/spoofed_decision_headers",
        &preset,
        || {
            ok_exchange()
                .with_request_header("x-palisade-denied-by", "jwt")
                .with_request_header("x-jwt-sub", "admin")
        },
        None,
    );

    let rules = configure::<HeadersPlugin>(RULES_CONFIG);
    run(c, "headers/11_rules/ok_200", &rules, ok_exchange, None);

    let methods = configure::<HeadersPlugin>(METHODS_CONFIG);
    run(
        c,
        "headers/allowed_methods/405",
        &methods,
        || {
            let mut host = ok_exchange();
            host.set_request_header(":method", b"POST");
            host
        },
        Some(405),
    );

    c.bench_function("headers/configure/preset", |b| {
        b.iter(|| configure::<HeadersPlugin>(black_box("{}")))
    });
    c.bench_function("headers/configure/11_rules", |b| {
        b.iter(|| configure::<HeadersPlugin>(black_box(RULES_CONFIG)))
    });
}

criterion_group!(benches, bench_headers);
criterion_main!(benches);
