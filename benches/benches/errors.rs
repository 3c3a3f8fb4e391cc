//! `palisade-errors`' pure core over the fake host: a clean 200 passing
//! through (the common case, judged against the empty filter), a 500 being
//! masked, and 4xx leak detection (body buffered and scanned by regexes).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use palisade_benches::{
    clean_404_exchange, configure, exchange, leaky_404_exchange, ok_exchange, once,
    stack_trace_exchange, STACK_TRACE_BODY,
};
use palisade_core::fake::FakeHost;
use palisade_core::Host;
use palisade_errors::ErrorsPlugin;
use std::hint::black_box;
use std::rc::Rc;

/// Whether the client would still see any part of the leaked trace.
fn leaked(host: &FakeHost) -> bool {
    let body = match &host.sent {
        Some(sent) => &sent.body,
        None => &host.response_body,
    };
    let text = String::from_utf8_lossy(body);
    STACK_TRACE_BODY
        .lines()
        .any(|line| line.len() > 20 && text.contains(line.trim()))
}

fn run(c: &mut Criterion, name: &str, plugin: &Rc<ErrorsPlugin>, make: fn() -> FakeHost) {
    c.bench_function(name, |b| {
        b.iter_batched_ref(
            make,
            |host| black_box(exchange(plugin, host)),
            BatchSize::SmallInput,
        )
    });
}

fn bench_errors(c: &mut Criterion) {
    let default = configure::<ErrorsPlugin>("{}");

    let ok = once(&default, ok_exchange);
    assert!(
        ok.sent.is_none() && ok.response_status() == 200,
        "200 must pass"
    );
    run(c, "errors/default/ok_200", &default, ok_exchange);

    let masked = once(&default, stack_trace_exchange);
    assert!(!leaked(&masked), "the 500's trace must be masked");
    run(
        c,
        "errors/default/mask_500_stack_trace",
        &default,
        stack_trace_exchange,
    );

    let leak = once(&default, leaky_404_exchange);
    assert!(!leaked(&leak), "the 404's trace must be masked");
    run(
        c,
        "errors/default/scan_404_leak",
        &default,
        leaky_404_exchange,
    );

    let clean = once(&default, clean_404_exchange);
    assert!(clean.sent.is_none(), "a clean 404 must pass");
    assert_eq!(clean.response_body, clean_404_exchange().response_body);
    run(
        c,
        "errors/default/scan_404_clean",
        &default,
        clean_404_exchange,
    );

    c.bench_function("errors/configure/default", |b| {
        b.iter(|| configure::<ErrorsPlugin>(black_box("{}")))
    });
}

criterion_group!(benches, bench_errors);
criterion_main!(benches);
