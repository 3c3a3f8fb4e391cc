//! The JWT filter inside a real Envoy 1.40: every rejection on the wire,
//! scopes per route, identity headers at the upstream, remote key sets
//! served over loopback (rotation, endpoint down, slow, garbage), the
//! host's `verify_signature`, and the chain with `headers` and `errors`.
//!
//! Tokens are minted by an independent library (`jsonwebtoken`, see
//! `filters/jwt/examples/mint_tokens.rs`) into `tests/tests/jwt/tokens.json`.
//! Build first: `cargo build --release --target wasm32-wasip1 -p palisade-jwt`
//! and copy `palisade_jwt.wasm` into `dist/` (`make build` does both).

use std::time::{Duration, Instant};

use palisade_tests::jwt_fixtures::{jwks, token};
use palisade_tests::ports::ClosedPort;
use palisade_tests::tls;
use palisade_tests::*;
use serde_json::{json, Value};

const STAT: &str = "wasmcustom.palisade.jwt.";
const WAIT: Duration = Duration::from_secs(5);
const ISSUER: &str = "https://id.example.com";

fn provider(extra: Value) -> Value {
    let mut p = json!({
        "issuer": ISSUER,
        "audiences": ["orders-api"],
        "algorithms": ["RS256", "ES256", "PS256", "EdDSA"],
        "local_jwks": jwks(&["rsa1", "ec1", "ed1"]),
        "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
        "from_params": ["access_token"],
        "claim_to_headers": [{"claim": "sub", "header": "x-jwt-sub"},
                             {"claim": "tenant.id", "header": "x-jwt-tenant"}]
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        if v.is_null() {
            p.as_object_mut().unwrap().remove(&k);
        } else {
            p[k] = v;
        }
    }
    p
}

fn rules() -> Value {
    json!([
        {"match": {"prefix": "/health"}},
        {"match": {"prefix": "/admin"}, "requires": {"provider": "corp", "scopes": ["admin"]}},
        {"match": {"prefix": "/orders"}, "requires": {"provider": "corp"}}
    ])
}

fn jwt_filter(config: &Value) -> WasmFilter {
    WasmFilter::new("jwt", dist_wasm("jwt")).config_json(config)
}

fn bearer(name: &str) -> String {
    format!("Bearer {}", token(name))
}

fn stat(envoy: &Envoy, event: &str, at_least: u64) -> u64 {
    envoy
        .wait_for_counter(&format!("{STAT}{event}"), at_least, WAIT)
        .unwrap_or(0)
}

/// Polls until `f` holds, for at most `timeout`.
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_rejection_on_the_wire_and_scopes_per_route() {
    let upstream = Upstream::start();
    let config = json!({"providers": {"corp": provider(json!({}))}, "rules": rules()});
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .wasm(jwt_filter(&config)),
    );
    let url = envoy.url("/orders/1");

    // Missing: 401 with the bare challenge, as problem+json with the request id.
    let r = get(&url, &[]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"api\""));
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let body = r.json();
    assert_eq!(body["type"], "urn:palisade:problem:missing-token");
    assert_eq!(body["request_id"].as_str(), r.header("x-request-id"));

    let invalid = [
        ("expired", "the token has expired", "expired"),
        (
            "not_yet_valid",
            "the token is not valid yet",
            "not_yet_valid",
        ),
        ("no_exp", "the token has no expiry (exp)", "malformed"),
        (
            "wrong_issuer",
            "the token's issuer is not accepted",
            "issuer",
        ),
        (
            "wrong_audience",
            "the token's audience is not accepted",
            "audience",
        ),
        ("none", "the token's algorithm is not accepted", "signature"),
        (
            "hs256_with_rsa_key",
            "the token's algorithm is not accepted",
            "signature",
        ),
        ("unknown_kid", "the token's key id is unknown", "signature"),
        (
            "wrong_key",
            "the token's signature does not verify",
            "signature",
        ),
        (
            "jku",
            "keys referenced by the token itself are not accepted",
            "signature",
        ),
        (
            "x5u",
            "keys referenced by the token itself are not accepted",
            "signature",
        ),
    ];
    for (name, detail, _) in invalid {
        let auth = bearer(name);
        let r = get(&url, &[("authorization", &auth)]);
        assert_eq!(r.status, 401, "{name}: {}", r.text());
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer realm=\"api\", error=\"invalid_token\""),
            "{name}: {challenge}"
        );
        assert_eq!(r.json()["detail"], detail, "{name}");
        assert!(
            !r.text().contains(&token(name)[..40]),
            "{name}: token echoed"
        );
        assert_eq!(r.header("x-palisade-denied-by"), Some("jwt"));
    }
    for garbage in [
        "abc",
        "a.b.c",
        "a..b",
        "eyJhbGciOiJSUzI1NiJ9.e30.",
        &"A".repeat(9000),
    ] {
        let auth = format!("Bearer {garbage}");
        let r = get(&url, &[("authorization", &auth)]);
        assert_eq!(r.status, 401, "{garbage:.20}: {}", r.text());
        assert_eq!(r.json()["type"], "urn:palisade:problem:invalid-token");
    }
    // Non-UTF-8 bytes in the header value: 401, and the VM lives on.
    let raw = client::raw_http(
        envoy.listener_addr(),
        &[
            &b"GET /orders/1 HTTP/1.1\r\nhost: test\r\nauthorization: Bearer \xff\xfe.\x80.\x81\r\nconnection: close\r\n\r\n"[..],
        ]
        .concat(),
    );
    assert_eq!(raw.status, Some(401), "{}", raw.text());

    // Two tokens (header and query): ambiguous.
    let auth = bearer("valid");
    let r = get(
        &envoy.url(&format!("/orders/1?access_token={}", token("valid"))),
        &[("authorization", &auth)],
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r
        .header("www-authenticate")
        .unwrap_or_default()
        .contains("invalid_request"));

    // Scopes per route: /admin needs `admin`.
    let r = get(&envoy.url("/admin/users"), &[("authorization", &auth)]);
    assert_eq!(r.status, 403);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"admin\"")
    );
    let admin = bearer("admin");
    assert_eq!(
        get(&envoy.url("/admin/users"), &[("authorization", &admin)]).status,
        200
    );
    // Unchecked and unmatched routes, CORS preflight.
    assert_eq!(get(&envoy.url("/health"), &[]).status, 200);
    let r = get(&envoy.url("/elsewhere"), &[("authorization", &auth)]);
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["type"], "urn:palisade:problem:no-matching-rule");
    let preflight = request(
        "OPTIONS",
        &url,
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
        ],
        b"",
    );
    assert_eq!(preflight.status, 200);
    // Every accepted algorithm; PS256 and EdDSA go through the pure path.
    for name in ["valid", "es256", "ps256", "eddsa"] {
        let auth = bearer(name);
        assert_eq!(get(&url, &[("authorization", &auth)]).status, 200, "{name}");
    }

    assert_eq!(stat(&envoy, "denied.missing", 1), 1);
    assert_eq!(stat(&envoy, "denied.expired", 1), 1);
    assert_eq!(stat(&envoy, "denied.issuer", 1), 1);
    assert_eq!(stat(&envoy, "denied.audience", 1), 1);
    assert!(stat(&envoy, "denied.signature", 6) >= 6);
    assert!(stat(&envoy, "denied.malformed", 6) >= 6);
    assert_eq!(stat(&envoy, "denied.scope", 1), 1);
    assert_eq!(stat(&envoy, "denied.ambiguous", 1), 1);
    assert_eq!(stat(&envoy, "denied.unmatched", 1), 1);
}

#[test]
fn identity_reaches_the_upstream_forgeries_and_the_token_do_not_and_signatures_use_the_host() {
    let upstream = Upstream::start();
    let config = json!({"providers": {"corp": provider(json!({}))}, "rules": rules()});
    // The access log prints the claims property, as a later filter would read it.
    let access_log = json!({"access_log": [{
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {"text_format_source": {"inline_string":
                "JWTLOG claims=%FILTER_STATE(wasm.palisade_jwt_claims:PLAIN)% end\n"}}
        }
    }]});
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .hcm_extra(access_log)
            .wasm(jwt_filter(&config)),
    );
    let auth = bearer("valid");
    let r = get(
        &envoy.url("/orders/1?x=1"),
        &[
            ("authorization", &auth),
            ("x-jwt-sub", "admin"),
            ("x-jwt-tenant", "t-0"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = upstream.last().expect("the upstream got the request");
    assert_eq!(seen.header_all("x-jwt-sub"), vec!["user-1"]);
    assert_eq!(seen.header_all("x-jwt-tenant"), vec!["t-9"]);
    assert_eq!(seen.header("authorization"), None, "token stripped");
    assert_eq!(seen.header("x-palisade-jwt"), Some("allow"));
    assert_eq!(seen.path, "/orders/1?x=1");

    // Token in the query: removed from the path the upstream sees.
    let r = get(
        &envoy.url(&format!("/orders/2?access_token={}&y=2", token("valid"))),
        &[],
    );
    assert_eq!(r.status, 200);
    assert_eq!(upstream.last().unwrap().path, "/orders/2?y=2");

    // Forged identity on an unchecked route never reaches the upstream.
    assert_eq!(
        get(&envoy.url("/health"), &[("x-jwt-sub", "admin")]).status,
        200
    );
    assert_eq!(upstream.last().unwrap().header("x-jwt-sub"), None);

    // RS256 and ES256 went to Envoy's verify_signature, once each: the
    // repeated token was answered by the cache.
    for _ in 0..5 {
        assert_eq!(
            get(&envoy.url("/orders/1"), &[("authorization", &auth)]).status,
            200
        );
    }
    let es = bearer("es256");
    assert_eq!(
        get(&envoy.url("/orders/1"), &[("authorization", &es)]).status,
        200
    );
    assert_eq!(stat(&envoy, "verified_host", 2), 2);
    assert_eq!(
        envoy.counter(&format!("{STAT}verified_pure")).unwrap_or(0),
        0
    );
    assert_eq!(stat(&envoy, "allowed", 8), 8);
    // The decision is kept as filter state for later filters (ratelimit by `sub`).
    assert!(
        eventually(WAIT, || envoy.log().contains("JWTLOG claims={")),
        "{}",
        envoy.log()
    );
    let log = envoy.log();
    let line = log
        .lines()
        .find(|l| l.contains("JWTLOG claims={"))
        .expect("claims logged");
    assert!(line.contains("\"sub\":\"user-1\""), "{line}");
    assert!(!log.contains("set_property"), "the host refused a property");
}

#[test]
fn remote_jwks_one_fetcher_rotation_and_an_endpoint_down_slow_or_garbage() {
    let upstream = Upstream::start();
    let idp = Upstream::start();
    let serve = |kids: &[&str]| {
        idp.clear_responses();
        idp.respond(
            "/jwks",
            Canned::status(200)
                .header("content-type", "application/json")
                .body(BodyKind::Literal(jwks(kids).to_string().into_bytes())),
        );
    };
    serve(&["rsa1"]);
    let closed = ClosedPort::reserve();
    let remote = |cluster: &str| {
        json!({"cluster": cluster, "path": "/jwks", "authority": "idp.test",
               "cache_duration_s": 2, "timeout_ms": 400, "min_refetch_interval_s": 1})
    };
    let config = json!({
        "providers": {
            "corp": provider(json!({"local_jwks": null, "remote_jwks": remote("idp")})),
            "down": provider(json!({"local_jwks": null, "remote_jwks": remote("idp_down"),
                                    "on_jwks_unavailable": "unavailable"}))
        },
        "rules": [
            {"match": {"prefix": "/down"}, "requires": {"provider": "down"}},
            {"match": {"prefix": "/"}, "requires": {"provider": "corp"}}
        ]
    });
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .cluster("idp", idp.port())
            .cluster("idp_down", closed.port())
            .concurrency(2)
            .wasm(jwt_filter(&config)),
    );
    let valid = bearer("valid");
    assert!(
        eventually(WAIT, || get(&envoy.url("/a"), &[("authorization", &valid)])
            .status
            == 200),
        "the first fetch never made the token valid"
    );
    // No good set ever for `down`: 503 (on_jwks_unavailable: unavailable).
    let r = get(&envoy.url("/down"), &[("authorization", &valid)]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("5"));

    // One fetch per period for 3 VMs (2 workers + main): the election works.
    idp.clear_received();
    std::thread::sleep(Duration::from_secs(6));
    let fetches = idp.received().len();
    assert!(
        (2..=5).contains(&fetches),
        "{fetches} fetches in 6 s with a 2 s period"
    );

    // Rotation: the IdP now signs with rsa2 only. The first request with the
    // new kid triggers an early refetch and passes.
    serve(&["rsa2"]);
    let rotated = bearer("rotated");
    let r = get(&envoy.url("/a"), &[("authorization", &rotated)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(stat(&envoy, "jwks_refetch_unknown_kid", 1) >= 1);
    // The retired key stops working once every VM has the new set.
    assert!(eventually(WAIT, || get(
        &envoy.url("/a"),
        &[("authorization", &valid)]
    )
    .status
        == 401));

    // Down (500), garbage, slow (past timeout_ms), no usable key: the last
    // good set keeps serving; failures are counted.
    let failed_before = envoy
        .counter(&format!("{STAT}jwks_fetch_failed"))
        .unwrap_or(0);
    for canned in [
        Canned::status(500).body(BodyKind::Literal(b"oops".to_vec())),
        Canned::status(200).body(BodyKind::Literal(b"<html>garbage</html>".to_vec())),
        Canned::status(200)
            .body(BodyKind::Literal(jwks(&["rsa2"]).to_string().into_bytes()))
            .delay(Duration::from_millis(1500)),
        Canned::status(200).body(BodyKind::Literal(br#"{"keys":[]}"#.to_vec())),
    ] {
        idp.clear_responses();
        idp.respond("/jwks", canned);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let r = get(&envoy.url("/a"), &[("authorization", &rotated)]);
            assert_eq!(r.status, 200, "{}", r.text());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let failed = stat(&envoy, "jwks_fetch_failed", failed_before + 4);
    assert!(failed >= failed_before + 4, "{failed_before} -> {failed}");
    assert!(envoy.log().contains("keeping the last good set"));
}

#[test]
fn remote_jwks_the_first_request_on_a_fresh_envoy_fetches_the_keys_and_waits() {
    // Nothing fetches from on_configure any more (Kong traps a call made
    // there): the first request, arriving before any tick (500 ms), finds
    // no keys, starts the fetch itself, is held until the answer and passes.
    let upstream = Upstream::start();
    let idp = Upstream::start();
    idp.respond(
        "/jwks",
        Canned::status(200)
            .header("content-type", "application/json")
            .body(BodyKind::Literal(jwks(&["rsa1"]).to_string().into_bytes()))
            .delay(Duration::from_millis(150)),
    );
    let remote = json!({"cluster": "idp", "path": "/jwks", "authority": "idp.test",
                        "cache_duration_s": 600, "timeout_ms": 1000});
    let config = json!({
        "providers": {"corp": provider(json!({"local_jwks": null, "remote_jwks": remote}))},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider": "corp"}}]
    });
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .cluster("idp", idp.port())
            .wasm(jwt_filter(&config)),
    );
    let valid = bearer("valid");
    let started = Instant::now();
    let r = get(&envoy.url("/a"), &[("authorization", &valid)]);
    let waited = started.elapsed();
    assert_eq!(r.status, 200, "{}\n{}", r.text(), envoy.log());
    assert!(
        envoy
            .log()
            .contains("no keys yet, a request fetches the JWKS"),
        "the request did not start the fetch:\n{}",
        envoy.log()
    );
    assert!(waited >= Duration::from_millis(150), "held {waited:?}");
    assert_eq!(
        upstream.last().unwrap().header_all("x-jwt-sub"),
        vec!["user-1"]
    );
    // One fetch: later requests and ticks use the published set.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        get(&envoy.url("/a"), &[("authorization", &valid)]).status,
        200
    );
    assert_eq!(idp.received().len(), 1, "one fetch for every VM");
    assert_eq!(stat(&envoy, "jwks_fetched", 1), 1);
}

#[test]
fn remote_jwks_naming_a_cluster_envoy_does_not_have_says_so_in_the_log_and_the_counter() {
    // The cluster is missing from the bootstrap (a typo, a forgotten
    // cluster): requests are refused as "keys not available", and the
    // operator learns why from one log line per attempt and the counter.
    let upstream = Upstream::start();
    let remote = json!({"cluster": "idp-typo", "path": "/jwks", "authority": "idp.test",
                        "timeout_ms": 500});
    let config = json!({
        "providers": {"corp": provider(json!({"local_jwks": null, "remote_jwks": remote}))},
        "requires": {"provider": "corp"}
    });
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .wasm(jwt_filter(&config)),
    );
    let r = get(&envoy.url("/a"), &[("authorization", &bearer("valid"))]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(stat(&envoy, "jwks_fetch_failed", 1) >= 1);
    assert!(
        eventually(WAIT, || envoy.log().contains("JWKS fetch failed")
            && envoy.log().contains("\"idp-typo\"")
            && envoy.log().contains("does the cluster exist?")),
        "no log line naming the cluster:\n{}",
        envoy.log()
    );
    assert!(
        upstream.received().is_empty(),
        "nothing reached the upstream"
    );
}

#[test]
fn chained_after_headers_and_inside_errors() {
    let upstream = Upstream::start();
    let config = json!({"providers": {"corp": provider(json!({}))}, "rules": rules()});
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .wasm(WasmFilter::new("errors", dist_wasm("errors")).config("{}"))
            .wasm(WasmFilter::new("headers", dist_wasm("headers")).config("{}"))
            .wasm(jwt_filter(&config)),
    );
    // The JWT 401 passes the errors filter intact, hardened by headers.
    let r = get(&envoy.url("/orders/1"), &[("x-palisade-jwt", "allow")]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["type"], "urn:palisade:problem:missing-token");
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"api\""));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        r.header("x-palisade-denied-by"),
        None,
        "the errors filter removes the marker"
    );
    // A forged decision and identity are stripped by headers, the real ones set by jwt.
    let auth = bearer("valid");
    let r = get(
        &envoy.url("/orders/1"),
        &[
            ("authorization", &auth),
            ("x-jwt-sub", "admin"),
            ("x-palisade-jwt", "allow"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = upstream.last().unwrap();
    assert_eq!(seen.header_all("x-jwt-sub"), vec!["user-1"]);
    assert_eq!(seen.header_all("x-palisade-jwt"), vec!["allow"]);
    assert_eq!(seen.header_all("x-palisade-headers"), vec!["allow"]);
}

#[test]
fn a_bad_config_is_refused_naming_the_field() {
    let config = json!({"providers": {"corp": provider(json!({"algorithms": ["RS999"]}))}});
    let upstream = Upstream::start();
    let err = Envoy::try_start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .wasm(jwt_filter(&config)),
    )
    .err()
    .expect("Envoy refused the config");
    assert!(err.contains("providers.corp.algorithms[0]"), "{err}");
}

const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";

/// Workload identity on a TLS listener that verifies client certificates
/// against a CA (without requiring one): a route needing the `frontend`
/// workload *and* a corp token admits only both together; a certificate
/// from another CA never gets past Envoy's handshake; and client address
/// allow-lists read the connection's peer.
#[test]
fn peer_and_token_together_over_mtls_and_client_address_allow_lists() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::make_ca(dir.path(), "mesh-ca");
    let rogue_ca = tls::make_ca(dir.path(), "rogue-ca");
    let server = tls::make_cert(
        dir.path(),
        &ca,
        "server",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth",
    );
    let client = |ca: &tls::CertFiles, name: &str, uri: &str| {
        tls::make_cert(
            dir.path(),
            ca,
            name,
            &format!("subjectAltName=URI:{uri}\nextendedKeyUsage=clientAuth"),
        )
    };
    let frontend = client(&ca, "frontend", FRONTEND);
    let other = client(&ca, "other", "spiffe://cluster.local/ns/shop/sa/other");
    let rogue = client(&rogue_ca, "rogue", FRONTEND);
    // Verified, but no URI SAN: Envoy reports connection.mtls and no URI.
    let dns_only = tls::make_cert(
        dir.path(),
        &ca,
        "dns-only",
        "subjectAltName=DNS:frontend.shop\nextendedKeyUsage=clientAuth",
    );

    let config = json!({
        "providers": {"corp": provider(json!({}))},
        "rules": [
            {"match": {"prefix": "/east"}, "requires": {"all": [
                {"peer": {"spiffe_ids": [FRONTEND]}}, {"provider": "corp"}]}},
            {"match": {"prefix": "/local"}, "requires": {"client_ip": {"cidrs": ["127.0.0.1/32"]}}},
            {"match": {"prefix": "/vpn"}, "requires": {"client_ip": {"cidrs": ["10.0.0.0/8"]}}}
        ]
    });
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .transport_socket(tls::downstream_mtls(&server, &ca.cert))
            // palisade.wasm (PALISADE_MODULE=one) compiles slowly on a busy machine.
            .startup_timeout(Duration::from_secs(120))
            .wasm(jwt_filter(&config)),
    );
    let port = envoy.listener_addr().port();
    let auth = bearer("valid");
    let token = [("authorization", auth.as_str())];
    let call = |cert: Option<&tls::CertFiles>, path: &str, headers: &[(&str, &str)]| {
        tls::curl_get(port, path, &ca.cert, cert, headers)
    };

    assert_eq!(call(Some(&frontend), "/east/1", &token).status, 200);
    let r = call(Some(&frontend), "/east/1", &[]);
    assert_eq!(r.status, 401, "{}", r.body);
    let r = call(Some(&other), "/east/1", &token);
    assert_eq!(r.status, 403, "{}", r.body);
    let mismatch: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(mismatch["type"], "urn:palisade:problem:peer-not-allowed");
    assert!(!r.body.contains("spiffe"), "{}", r.body);
    // A forged XFCC on a connection without a certificate changes nothing.
    let forged = format!("URI={FRONTEND}");
    let r = call(
        None,
        "/east/1",
        &[token[0], ("x-forwarded-client-cert", forged.as_str())],
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let missing: Value = serde_json::from_str(&r.body).unwrap();
    for field in ["type", "title", "detail", "status"] {
        assert_eq!(missing[field], mismatch[field], "{field}");
    }
    // A verified certificate without a SPIFFE id is a wrong peer, not a
    // missing one: connection.mtls tells them apart.
    let r = call(Some(&dns_only), "/east/1", &token);
    assert_eq!(r.status, 403, "{}", r.body);
    // Another CA's certificate: Envoy refuses the handshake, no HTTP at all.
    let r = call(Some(&rogue), "/east/1", &token);
    assert_eq!(r.status, 0, "{r:?}");
    assert_ne!(r.exit, 0, "{r:?}");

    assert_eq!(stat(&envoy, "denied.peer_mismatch", 2), 2);
    assert_eq!(stat(&envoy, "denied.peer_missing", 1), 1);
    assert_eq!(stat(&envoy, "denied.missing", 1), 1);

    // The loopback client is in 127.0.0.1/32, not in 10.0.0.0/8.
    assert_eq!(call(None, "/local/x", &[]).status, 200);
    let r = call(Some(&other), "/vpn/x", &[]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("client-ip-not-allowed"), "{}", r.body);
    assert_eq!(stat(&envoy, "denied.client_ip_not_allowed", 1), 1);
    // A spoofed X-Forwarded-For does not move the client into the network.
    let r = call(None, "/vpn/x", &[("x-forwarded-for", "10.0.0.1")]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(upstream.received().len(), 2);
}
