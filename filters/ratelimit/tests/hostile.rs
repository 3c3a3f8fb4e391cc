//! Property tests: random configs and hostile requests never panic (a panic
//! kills the proxy's VM).

mod common;

use common::Worker;
use palisade_core::fake::FakeHost;
use palisade_core::{HostKind, HttpFilter};
use palisade_ratelimit::check_config;
use palisade_ratelimit::config::{ClaimFrom, ClaimSource, ClientIpConfig, IpGrouping, KeyPart};
use palisade_ratelimit::key::{build, parse_ip, KeyInput};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestRunner};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Same cases on every run (CI included); `PROPTEST_RNG_SEED=n` explores
/// others. XorShift: ChaCha makes generating cost more than the filter in
/// unoptimised test builds.
fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: match Config::default().rng_seed {
            RngSeed::Random => RngSeed::Fixed(0x9E37_79B9_7F4A_7C15),
            chosen => chosen,
        },
        rng_algorithm: RngAlgorithm::XorShift,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Runs `test` on `cases` inputs from `strategy`; a failure panics with the
/// shrunk input.
fn check<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    if let Err(e) = TestRunner::new(config(cases)).run(&strategy, test) {
        panic!("{e}");
    }
}

/// Up to `max` random bytes, drawn as 64-bit words: one value tree per
/// word instead of per byte keeps generating cheaper than the code tested.
fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    (0..=max, vec(any::<u64>(), max.div_ceil(8))).prop_map(|(len, words)| {
        words
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .take(len)
            .collect()
    })
}

fn lossy(max: usize) -> impl Strategy<Value = String> {
    bytes(max).prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

// Small alternatives are picked by number rather than with `prop_oneof!`,
// which clones the test runner for each alternative it does not pick: over
// 20,000 cases, that cost more than the code tested.

/// Addresses as peers and proxies write them: bare, with a port, bracketed,
/// IPv4-mapped IPv6.
fn address() -> impl Strategy<Value = String> {
    (0..5u8, any::<u32>(), any::<u128>(), any::<u16>()).prop_map(|(form, v4, v6, port)| {
        let (v4, v6) = (Ipv4Addr::from(v4), Ipv6Addr::from(v6));
        match form {
            0 => v4.to_string(),
            1 => v6.to_string(),
            2 => format!("{v4}:{port}"),
            3 => format!("[{v6}]:{port}"),
            _ => format!("[{}]:{port}", v4.to_ipv6_mapped()),
        }
    })
}

/// An `x-forwarded-for` value: random bytes, or a list of addresses with
/// stray separators and spaces.
fn forwarded_for(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let separators = select(&[",", ", ", " ,", ",,"][..]);
    (any::<bool>(), bytes(max), vec(address(), 0..5), separators).prop_map(
        |(random, raw, hops, sep)| {
            if random {
                raw
            } else {
                hops.join(sep).into_bytes()
            }
        },
    )
}

/// A peer address: random text or a well-formed address.
fn source_address(max: usize) -> impl Strategy<Value = String> {
    (any::<bool>(), lossy(max), address())
        .prop_map(|(random, raw, address)| if random { raw } else { address })
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
    // Up to 23 field-name fragments in a row (mostly malformed, now and then
    // a config), and random bytes.
    let fragments = vec(select(FRAGMENTS), 0..24).prop_map(|f| f.concat());
    check(20_000, (fragments, bytes(64)), |(text, raw)| {
        for kind in [HostKind::Envoy, HostKind::Kong] {
            let _ = check_config(text.as_bytes(), kind);
        }
        let _ = check_config(&raw, HostKind::Envoy);
        Ok(())
    });
}

/// What `key::build` reads from a request.
#[derive(Debug, Clone)]
struct Request {
    xff: Vec<u8>,
    api_key: Vec<u8>,
    claim_header: Vec<u8>,
    source: String,
    claims: Option<serde_json::Value>,
    hops: u8,
    grouping: IpGrouping,
    claims_from: ClaimFrom,
}

/// Half the time no claims; else the usual object, a value at `a` or at
/// `a.b`, or a bare value.
fn claims() -> impl Strategy<Value = Option<serde_json::Value>> {
    use serde_json::{json, Value};
    (
        0..8u8,
        0..6u8,
        any::<i64>(),
        any::<f64>(),
        lossy(10),
        bytes(2),
    )
        .prop_map(|(shape, kind, int, float, text, raw)| {
            let leaf = match kind {
                0 => Value::Null,
                1 => Value::from(int % 2 == 0),
                2 => Value::from(int),
                3 => Value::from(float),
                4 => Value::from(text),
                _ => Value::from(raw),
            };
            match shape {
                0..=3 => None,
                4 => Some(json!({"a": [1]})),
                5 => Some(json!({ "a": leaf })),
                6 => Some(json!({"a": {"b": leaf}})),
                _ => Some(leaf),
            }
        })
}

fn request() -> impl Strategy<Value = Request> {
    (
        (forwarded_for(40), bytes(40), bytes(10), source_address(30)),
        (
            claims(),
            0..4u8,
            (0..=32u8, 0..=128u8),
            select(&[ClaimFrom::Property, ClaimFrom::Headers][..]),
        ),
    )
        .prop_map(
            |((xff, api_key, claim_header, source), (claims, hops, (v4, v6), claims_from))| {
                Request {
                    xff,
                    api_key,
                    claim_header,
                    source,
                    claims,
                    hops,
                    grouping: IpGrouping {
                        v4_prefix: v4,
                        v6_prefix: v6,
                    },
                    claims_from,
                }
            },
        )
}

#[test]
fn random_request_values_never_panic_key_extraction() {
    check(20_000, request(), |r| {
        let parts = [
            KeyPart::ClientIp(r.grouping),
            KeyPart::Header("x-api-key".into()),
            KeyPart::Route,
            KeyPart::Method,
            KeyPart::Path,
            KeyPart::Claim("a.b".into()),
        ];
        let headers = vec![
            ("x-forwarded-for".to_string(), r.xff.clone()),
            ("x-api-key".to_string(), r.api_key.clone()),
            ("x-jwt-a-b".to_string(), r.claim_header.clone()),
        ];
        let input = KeyInput {
            source_address: Some(&r.source),
            headers: &headers,
            method: "GET",
            path: "/",
            route_name: None,
            claims: r.claims.as_ref(),
        };
        let hops = ClientIpConfig {
            xff_num_trusted_hops: r.hops,
        };
        let source = ClaimSource {
            from: r.claims_from,
            ..ClaimSource::default()
        };
        let _ = build("l", &parts, &input, &hops, &source);
        let _ = parse_ip(&r.source);
        Ok(())
    });
}

/// A request as a hostile client (and a confused host) could present it.
#[derive(Debug, Clone)]
struct Hostile {
    method: String,
    path: String,
    clock: u64,
    xff: Vec<u8>,
    api_key: Vec<u8>,
    content_type: Vec<u8>,
    source: Vec<u8>,
    route_name: Vec<u8>,
    end_of_stream: bool,
}

fn hostile() -> impl Strategy<Value = Hostile> {
    (
        (lossy(8), lossy(30), any::<u64>()),
        (forwarded_for(30), bytes(30), bytes(20)),
        (
            (any::<bool>(), bytes(20), address()).prop_map(|(random, raw, a)| {
                if random {
                    raw
                } else {
                    a.into_bytes()
                }
            }),
            bytes(3),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (method, path, clock),
                (xff, api_key, content_type),
                (source, route_name, end_of_stream),
            )| Hostile {
                method,
                path,
                clock,
                xff,
                api_key,
                content_type,
                source,
                route_name,
                end_of_stream,
            },
        )
}

#[test]
fn hostile_requests_through_the_filter_never_panic() {
    let w = Worker::new(
        r#"{"client_ip": {"xff_num_trusted_hops": 2}, "on_missing_key": "shared", "rules": [
            {"match": {"route_name": "r"}, "limits": [{"name": "r", "key": ["route"], "requests": 1, "per_s": 1}]},
            {"limits": [{"name": "x", "key": [{"client_ip": {"v4_prefix": 8, "v6_prefix": 1}}, {"header": "x-api-key"}, "path", "method"], "requests": 3, "per_s": 1}]}]}"#,
    );
    // One worker through every case: buckets fill, slots are reused.
    check(5_000, hostile(), |r| {
        let mut h = FakeHost::request(&r.method, &r.path);
        h.shared = w.root.shared.clone();
        h.metric_names = w.root.metric_names.clone();
        h.clock.set(r.clock);
        h.request_headers.push(("x-forwarded-for".into(), r.xff));
        h.request_headers.push(("x-api-key".into(), r.api_key));
        h.request_headers
            .push(("content-type".into(), r.content_type));
        h.properties.insert("source.address".into(), r.source);
        h.properties.insert("xds.route_name".into(), r.route_name);
        let mut f = w.filter();
        f.on_request_headers(&mut h, r.end_of_stream);
        f.on_response_headers(&mut h, true);
        Ok(())
    });
    // Garbage in the shared slots themselves.
    let keys = w.root.shared.borrow().keys();
    assert!(!keys.is_empty());
    for key in keys.into_iter().take(50) {
        let mut root = w.root.sibling();
        let _ = palisade_core::Host::shared_set(&mut root, &key, b"\x01\x02garbage", None);
    }
    check(500, bytes(4), |api_key| {
        let mut h = w.request("GET", "/");
        h.request_headers.push(("x-api-key".into(), api_key));
        let mut f = w.filter();
        f.on_request_headers(&mut h, true);
        Ok(())
    });
}
