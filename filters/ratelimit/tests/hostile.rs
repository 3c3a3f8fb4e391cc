//! Fuzz-style: random configs and requests never panic.

mod common;

use common::Worker;
use palisade_core::fake::FakeHost;
use palisade_core::{HostKind, HttpFilter};
use palisade_ratelimit::check_config;
use palisade_ratelimit::config::{ClaimSource, ClientIpConfig, KeyPart};
use palisade_ratelimit::key::{build, parse_ip, KeyInput};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.next() % (max as u64 + 1)) as usize;
        (0..n).map(|_| (self.next() & 0xff) as u8).collect()
    }
}

const FRAGMENTS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"rules\"",
    "\"limits\"",
    "\"name\"",
    "\"a\"",
    "\"key\"",
    "\"client_ip\"",
    "\"header\"",
    "\"x-k\"",
    "\"requests\"",
    "\"per_s\"",
    "\"burst\"",
    "0",
    "1",
    "-1",
    "18446744073709551616",
    "1e9",
    "null",
    "true",
    "\"mode\"",
    "\"global\"",
    "\"local\"",
    "\"slots\"",
    "\"v4_prefix\"",
    "200",
    "\"claim\"",
    "\"\"",
    "\"match\"",
    "\"prefix\"",
    "\"/\"",
];

#[test]
fn random_configs_are_accepted_or_refused_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let n = rng.next() % 24;
        let text: String = (0..n).map(|_| rng.pick(FRAGMENTS)).collect();
        for kind in [HostKind::Envoy, HostKind::Kong] {
            let _ = check_config(text.as_bytes(), kind);
        }
        let _ = check_config(&rng.bytes(64), HostKind::Envoy);
    }
}

#[test]
fn random_request_values_never_panic_key_extraction() {
    let mut rng = Rng(42);
    let parts = [
        KeyPart::ClientIp(Default::default()),
        KeyPart::Header("x-api-key".into()),
        KeyPart::Route,
        KeyPart::Method,
        KeyPart::Path,
        KeyPart::Claim("a.b".into()),
    ];
    for _ in 0..20_000 {
        let xff = rng.bytes(40);
        let key = rng.bytes(40);
        let sub = rng.bytes(10);
        let headers = vec![
            ("x-forwarded-for".to_string(), xff),
            ("x-api-key".to_string(), key),
            ("x-jwt-a-b".to_string(), sub),
        ];
        let source = String::from_utf8_lossy(&rng.bytes(30)).into_owned();
        let claims: serde_json::Value =
            serde_json::from_slice(&rng.bytes(20)).unwrap_or(serde_json::json!({"a": [1]}));
        let input = KeyInput {
            source_address: Some(&source),
            headers: &headers,
            method: "GET",
            path: "/",
            route_name: None,
            claims: if rng.next().is_multiple_of(2) {
                Some(&claims)
            } else {
                None
            },
        };
        let hops = ClientIpConfig {
            xff_num_trusted_hops: (rng.next() % 4) as u8,
        };
        let _ = build("l", &parts, &input, &hops, &ClaimSource::default());
        let _ = parse_ip(&source);
    }
}

#[test]
fn hostile_requests_through_the_filter_never_panic() {
    let w = Worker::new(
        r#"{"client_ip": {"xff_num_trusted_hops": 2}, "on_missing_key": "shared", "rules": [
            {"match": {"route_name": "r"}, "limits": [{"name": "r", "key": ["route"], "requests": 1, "per_s": 1}]},
            {"limits": [{"name": "x", "key": [{"client_ip": {"v4_prefix": 8, "v6_prefix": 1}}, {"header": "x-api-key"}, "path", "method"], "requests": 3, "per_s": 1}]}]}"#,
    );
    let mut rng = Rng(7);
    for _ in 0..5_000 {
        let mut h = FakeHost::request(
            &String::from_utf8_lossy(&rng.bytes(8)),
            &String::from_utf8_lossy(&rng.bytes(30)),
        );
        h.shared = w.root.shared.clone();
        h.metric_names = w.root.metric_names.clone();
        h.clock.set(rng.next());
        h.request_headers
            .push(("x-forwarded-for".into(), rng.bytes(30)));
        h.request_headers.push(("x-api-key".into(), rng.bytes(30)));
        h.request_headers
            .push(("content-type".into(), rng.bytes(20)));
        h.properties.insert("source.address".into(), rng.bytes(20));
        h.properties.insert("xds.route_name".into(), rng.bytes(3));
        let mut f = w.filter();
        f.on_request_headers(&mut h, rng.next().is_multiple_of(2));
        f.on_response_headers(&mut h, true);
    }
    // Garbage in the shared slots themselves.
    let keys = w.root.shared.borrow().keys();
    for key in keys.into_iter().take(50) {
        let mut root = w.root.sibling();
        let _ = palisade_core::Host::shared_set(&mut root, &key, b"\x01\x02garbage", None);
    }
    for _ in 0..200 {
        let mut h = w.request("GET", "/");
        h.request_headers.push(("x-api-key".into(), rng.bytes(4)));
        let mut f = w.filter();
        f.on_request_headers(&mut h, true);
    }
}
