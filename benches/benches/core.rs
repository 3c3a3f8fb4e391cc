//! Pieces of `palisade-core` that every filter runs on every request: path
//! normalisation, route matching, the correlation id and problem+json bodies.
//! A regression here shows up in every filter at once.

use criterion::{criterion_group, criterion_main, Criterion};
use palisade_benches::typical_request;
use palisade_core::fake::FakeHost;
use palisade_core::path::normalize;
use palisade_core::problem::Problem;
use palisade_core::request_id::correlation_id;
use palisade_core::route::{first_match, Match, RouteInput, Rule};
use palisade_core::RequestContext;
use std::hint::black_box;

/// A rule carrying only its match: route matching cost without any override.
struct BenchRule(Match);

impl Rule for BenchRule {
    fn matcher(&self) -> &Match {
        &self.0
    }
}

/// Twenty rules the request does not match, then the catch-all: the worst
/// realistic case, every rule is tried.
fn rules() -> Vec<BenchRule> {
    let mut rules: Vec<BenchRule> = (0..20)
        .map(|i| {
            let m: Match = match i % 3 {
                0 => serde_json_match(&format!(r#"{{"prefix": "/internal/{i}/"}}"#)),
                1 => serde_json_match(&format!(
                    r#"{{"path_template": "/v{i}/users/{{id}}/keys"}}"#
                )),
                _ => serde_json_match(&format!(r#"{{"path": "/health/{i}", "methods": ["GET"]}}"#)),
            };
            BenchRule(m)
        })
        .collect();
    rules.push(BenchRule(Match::default()));
    rules
}

fn serde_json_match(json: &str) -> Match {
    let m: Match = serde_json::from_str(json).expect("bench rule is valid JSON");
    m.validate().expect("bench rule is a valid match");
    m
}

fn bench_core(c: &mut Criterion) {
    let mut g = c.benchmark_group("core");

    g.bench_function("normalize/plain", |b| {
        b.iter(|| normalize(black_box("/api/v1/orders/42?expand=items")))
    });
    g.bench_function("normalize/hostile", |b| {
        b.iter(|| normalize(black_box("/public/..%2f%2E%2e/./admin//%61pi\\v1?x=1#frag")))
    });

    let rules = rules();
    let path = normalize("/api/v1/orders/42");
    let input = RouteInput {
        method: "GET",
        path: &path,
        route_name: Some("orders"),
    };
    g.bench_function("route/first_match_21_rules", |b| {
        b.iter(|| first_match(black_box(&rules), black_box(&input)).is_some())
    });

    g.bench_function("request_id/correlation_id", |b| {
        b.iter(|| {
            correlation_id(
                black_box(Some(b"0b6e2f1c-6d2a-4c1e-9b7a-3f5d8e2a1c4b".as_slice())),
                black_box(Some(
                    b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".as_slice(),
                )),
            )
        })
    });

    let host: FakeHost = typical_request();
    g.bench_function("context/request_context_new", |b| {
        b.iter(|| RequestContext::new("bench", black_box(&host)))
    });

    g.bench_function("problem/to_json", |b| {
        b.iter(|| {
            Problem::of_kind(403, "path-denied", "Forbidden")
                .detail("this path is not allowed")
                .request_id(Some("0b6e2f1c-6d2a-4c1e-9b7a-3f5d8e2a1c4b"))
                .to_json()
        })
    });
    g.bench_function("problem/masked_500", |b| {
        b.iter(|| Problem::new(black_box(500)).to_json())
    });
    g.finish();
}

criterion_group!(benches, bench_core);
criterion_main!(benches);
