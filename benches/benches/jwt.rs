//! `palisade-jwt`'s pure core over the fake host, natively: one request's
//! header callback per iteration. The pure-Rust signature path (what Kong,
//! and Envoy for PS*/EdDSA, run), the verified-token cache, and a denial.
//! Inside Envoy (V8, the host's `verify_signature`) see `variants_jwt.py`.
//! Tokens are the fixtures minted by `jsonwebtoken`
//! (`tests/tests/jwt/tokens.json`, keys in `filters/jwt/tests/fixtures/`).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use palisade_benches::typical_request;
use palisade_core::fake::FakeHost;
use palisade_core::{Flow, HttpFilter, Plugin};
use palisade_jwt::jwks::{Alg, KeySet};
use palisade_jwt::signature::{split_compact, verify_pure};
use palisade_jwt::JwtPlugin;
use serde_json::{json, Value};
use std::hint::black_box;
use std::rc::Rc;

const NOW_S: u64 = 1_800_000_000;

fn read_json(path: &str) -> Value {
    let full = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}")))
        .unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn token(name: &str) -> String {
    read_json("tests/tests/jwt/tokens.json")[name]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn jwks() -> Value {
    let keys = read_json("filters/jwt/tests/fixtures/public_keys.json");
    json!({"keys": [keys["rsa1"], keys["ec1"]]})
}

fn plugin(cache_entries: usize) -> Rc<JwtPlugin> {
    let config = json!({
        "providers": {"corp": {
            "issuer": "https://id.example.com", "audiences": ["orders-api"],
            "local_jwks": jwks(),
            "claim_to_headers": [{"claim": "sub", "header": "x-jwt-sub"}]
        }},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider": "corp"}}],
        "token_cache_entries": cache_entries,
        "signature_backend": "pure"
    });
    let mut host = FakeHost::new().at_secs(NOW_S);
    Rc::new(
        JwtPlugin::configure(config.to_string().as_bytes(), &mut host)
            .unwrap_or_else(|e| panic!("bench config refused: {e}")),
    )
}

fn request(token: &str) -> FakeHost {
    let auth = format!("Bearer {token}");
    typical_request()
        .with_request_header("authorization", &auth)
        .at_secs(NOW_S)
}

fn run(c: &mut Criterion, name: &str, plugin: &Rc<JwtPlugin>, token: &str, expect: Option<u16>) {
    let mut probe = request(token);
    JwtPlugin::new_filter(plugin).on_request_headers(&mut probe, true);
    assert_eq!(
        probe.sent.as_ref().map(|s| s.status),
        expect,
        "{name}: wrong path"
    );
    c.bench_function(name, |b| {
        b.iter_batched_ref(
            || request(token),
            |host| -> Flow {
                black_box(JwtPlugin::new_filter(plugin).on_request_headers(host, true))
            },
            BatchSize::SmallInput,
        )
    });
}

fn bench_jwt(c: &mut Criterion) {
    let uncached = plugin(0);
    let cached = plugin(1024);
    let rs = token("valid");
    let es = token("es256");
    run(c, "jwt/rs256_verify_pure", &uncached, &rs, None);
    run(c, "jwt/es256_verify_pure", &uncached, &es, None);
    run(c, "jwt/rs256_cache_hit", &cached, &rs, None);
    run(c, "jwt/es256_cache_hit", &cached, &es, None);
    run(c, "jwt/missing_token_401", &cached, "", Some(401));
    run(
        c,
        "jwt/expired_401",
        &uncached,
        &token("expired"),
        Some(401),
    );

    // The signature alone, to separate crypto from parsing and claims.
    let set = KeySet::from_value(&jwks(), &Alg::ALL).unwrap_or_else(|e| panic!("{e}"));
    let (signed, sig) = split_compact(&rs).unwrap_or_default();
    c.bench_function("jwt/rs256_signature_only", |b| {
        b.iter(|| {
            black_box(verify_pure(
                Alg::RS256,
                &set.keys[0],
                signed.as_bytes(),
                &sig,
            ))
        })
    });
    let (signed, sig) = split_compact(&es).unwrap_or_default();
    c.bench_function("jwt/es256_signature_only", |b| {
        b.iter(|| {
            black_box(verify_pure(
                Alg::ES256,
                &set.keys[1],
                signed.as_bytes(),
                &sig,
            ))
        })
    });
}

criterion_group!(benches, bench_jwt);
criterion_main!(benches);
