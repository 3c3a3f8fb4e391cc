//! The chain runs natively on the fake host: route selection, order on
//! both paths, a local reply mid-chain, a paused call resuming the rest,
//! body holding, and a request no route matches.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use palisade::ChainPlugin;
use palisade_core::fake::{run, Exchange, FakeHost, RecordedCall};
use palisade_core::host::{CallResponse, Phase};
use palisade_core::{Flow, HttpFilter, Plugin};
use serde_json::{json, Value};
use std::rc::Rc;

const NOW: u64 = 1_800_000_000;
const ISSUER: &str = "https://id.example.com";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../filters/jwt/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn jwks() -> Value {
    let all: Value = serde_json::from_slice(&fixture("public_keys.json")).unwrap();
    json!({"keys": [all["rsa1"].clone()]})
}

/// A token minted with `jsonwebtoken`, not the filter's own crate.
fn token(sub: &str) -> String {
    let key = EncodingKey::from_rsa_pem(&fixture("rsa1.pem")).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa1".into());
    let claims = json!({"iss": ISSUER, "aud": "orders-api", "sub": sub,
                        "exp": NOW + 600, "iat": NOW - 10});
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn jwt_config(keys: Value) -> Value {
    let mut provider = json!({
        "issuer": ISSUER, "audiences": ["orders-api"],
        "claim_to_headers": [{"claim": "sub", "header": "x-jwt-sub"}]
    });
    for (k, v) in keys.as_object().into_iter().flatten() {
        provider[k] = v.clone();
    }
    json!({
        "providers": {"corp": provider},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider": "corp"}}]
    })
}

fn chain(routes: Value, filters: Value) -> Value {
    // `idp`: the key server of the remote_jwks tests.
    json!({"version": 1, "upstreams": {"shop": "http://127.0.0.1:8080", "idp": "https://id.example.com"},
           "filters": filters, "routes": routes})
}

fn configure(config: &Value) -> (Rc<ChainPlugin>, FakeHost) {
    let mut root = FakeHost::configuring(palisade_core::HostKind::Envoy).at_secs(NOW);
    let plugin = ChainPlugin::configure(config.to_string().as_bytes(), &mut root)
        .unwrap_or_else(|e| panic!("chain refused: {e}"));
    (Rc::new(plugin), root)
}

/// A request on a worker that shares the root's store, clock and metrics.
fn request(root: &FakeHost, method: &str, path: &str, headers: &[(&str, &str)]) -> FakeHost {
    let mut h = FakeHost::request(method, path);
    h.shared = Rc::clone(&root.shared);
    h.clock.set(root.clock.get());
    h.metric_names = root.metric_names.clone();
    for (n, v) in headers {
        h = h.with_request_header(n, v);
    }
    h
}

fn two_routes() -> Value {
    chain(
        json!([
            {"name": "api", "match": {"prefix": "/api/"}, "upstream": "shop",
             "filters": ["errors", "headers"]},
            {"name": "admin", "match": {"prefix": "/admin/"}, "upstream": "shop",
             "filters": ["errors", {"headers": {"request": {"allowed_methods": ["GET"]}}}]}
        ]),
        json!({"errors": {}, "headers": {}}),
    )
}

#[test]
fn each_route_runs_its_own_chain_and_an_unmatched_request_runs_none() {
    let (plugin, root) = configure(&two_routes());
    assert_eq!(
        plugin.route_controls(),
        [
            ("api".to_string(), vec!["errors", "headers"]),
            ("admin".to_string(), vec!["errors", "headers"])
        ]
    );
    // /admin/ refuses DELETE, /api/ does not.
    let mut host = request(&root, "DELETE", "/admin/users/7", &[]);
    let out = run(
        &mut ChainPlugin::new_filter(&plugin),
        &mut host,
        &Exchange::new(),
    );
    assert_eq!(out.client().status, 405);
    assert!(out.upstream.is_none());
    let mut host = request(&root, "DELETE", "/api/users/7", &[]);
    let out = run(
        &mut ChainPlugin::new_filter(&plugin),
        &mut host,
        &Exchange::new(),
    );
    assert_eq!(out.client().status, 200);
    // No route: no control runs (no security headers, spoofable header kept).
    let mut host = request(&root, "GET", "/other", &[("x-palisade-jwt", "allow")]);
    let out = run(
        &mut ChainPlugin::new_filter(&plugin),
        &mut host,
        &Exchange::new(),
    );
    assert_eq!(out.upstream_values("x-palisade-jwt"), ["allow"]);
    assert_eq!(out.client().header("x-content-type-options"), None);
}

#[test]
fn the_route_named_by_the_proxy_wins_over_the_path() {
    let (plugin, root) = configure(&two_routes());
    let mut host = request(&root, "DELETE", "/api/users/7", &[]);
    host.properties
        .insert("xds.route_name".into(), b"admin".to_vec());
    let out = run(
        &mut ChainPlugin::new_filter(&plugin),
        &mut host,
        &Exchange::new(),
    );
    assert_eq!(out.client().status, 405);
}

/// Envoy's default keeps `%2F` when it routes: `/admin%2Fusers/7` takes the
/// `api` route, while an upstream that decodes it serves admin's path. The
/// module refuses instead of running the weaker chain.
#[test]
fn a_proxy_route_an_escaped_slash_led_away_from_the_decoded_path_is_refused() {
    let (plugin, root) = configure(&two_routes());
    for path in ["/api/..%2Fadmin/users/7", "/api/..%5cadmin/users/7"] {
        let mut host = request(&root, "DELETE", path, &[("x-request-id", "req-9")]);
        host.properties
            .insert("xds.route_name".into(), b"api".to_vec());
        let out = run(
            &mut ChainPlugin::new_filter(&plugin),
            &mut host,
            &Exchange::new(),
        );
        let client = out.client();
        assert_eq!(client.status, 400, "{path}");
        assert_eq!(client.json()["type"], "urn:palisade:problem:ambiguous-path");
        assert_eq!(client.json()["request_id"], "req-9");
        assert!(out.upstream.is_none());
        assert!(host.logged(
            palisade_core::Level::Warn,
            "path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD"
        ));
    }
    // The same route either way, an escape in the query, or none: served.
    for path in ["/api/a%2Fb", "/api/x?next=%2Fadmin%2F", "/api/users"] {
        let mut host = request(&root, "DELETE", path, &[]);
        host.properties
            .insert("xds.route_name".into(), b"api".to_vec());
        let out = run(
            &mut ChainPlugin::new_filter(&plugin),
            &mut host,
            &Exchange::new(),
        );
        assert_eq!(out.client().status, 200, "{path}");
    }
}

#[test]
fn requests_go_in_order_and_responses_in_reverse() {
    let (plugin, root) = configure(&two_routes());
    // headers (inner) strips the spoofed decision before the upstream; on
    // the way out errors (outer) masks the 500 after headers added its
    // security headers, so the client gets both.
    let mut host = request(&root, "GET", "/api/orders", &[("x-palisade-jwt", "allow")]);
    let ex = Exchange::new().response(
        500,
        &[("content-type", "text/plain")],
        &[b"NullPointerException at Foo.java:1"],
    );
    let out = run(&mut ChainPlugin::new_filter(&plugin), &mut host, &ex);
    assert!(out.upstream_values("x-palisade-jwt").is_empty());
    let client = out.client();
    assert_eq!(client.status, 500);
    assert_eq!(
        client.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    assert!(!String::from_utf8_lossy(&client.body).contains("NullPointer"));
    assert_eq!(
        client.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
}

#[test]
fn a_local_reply_stops_later_request_controls_and_the_response_controls_see_it() {
    let config = chain(
        json!([{"name": "api", "match": {"prefix": "/"}, "upstream": "shop",
                "filters": ["errors", {"headers": {"request": {"allowed_methods": ["GET"]}}},
                            {"schema": {"unmatched": "deny", "rules": [{"match": {"path": "/orders"}}]}}]}]),
        json!({}),
    );
    let (plugin, root) = configure(&config);
    let mut host = request(&root, "DELETE", "/x", &[]);
    let out = run(
        &mut ChainPlugin::new_filter(&plugin),
        &mut host,
        &Exchange::new(),
    );
    let client = out.client();
    // The headers control answered: schema never judged it (its unmatched
    // route would have been 404), and errors let Palisade's own problem pass.
    assert_eq!(client.status, 405);
    assert_eq!(client.json()["status"], 405);
    assert_eq!(host.counter("palisade.schema.denied.no_route"), 0);
    assert_eq!(host.counter("palisade.errors.own_problem_passed"), 1);
}

#[test]
fn a_paused_call_resumes_the_rest_of_the_chain() {
    let config = chain(
        json!([{"name": "api", "match": {"prefix": "/"}, "upstream": "shop",
                "filters": ["headers", "jwt", "ratelimit"]}]),
        json!({
            "jwt": jwt_config(json!({"remote_jwks": {
                "cluster": "idp", "authority": "id.example.com", "path": "/jwks"}})),
            "ratelimit": {"rules": [{"match": {"prefix": "/"}, "limits": [
                {"name": "per-user", "key": [{"claim": "sub"}], "requests": 5, "per_s": 60}]}]}
        }),
    );
    let (plugin, root) = configure(&config);
    assert!(root.calls.is_empty(), "no call from configure");
    let bearer = format!("Bearer {}", token("user-1"));
    let mut host = request(&root, "GET", "/orders", &[("authorization", &bearer)]);
    let mut filter = ChainPlugin::new_filter(&plugin);
    let out = run(&mut filter, &mut host, &Exchange::new());
    assert!(out.awaiting_call);
    let Some(RecordedCall::Http {
        token, upstream, ..
    }) = host.calls.first().cloned()
    else {
        panic!("the first request fetches the keys: {:?}", host.calls);
    };
    assert_eq!(upstream, "idp");
    // The control after jwt has not run yet.
    assert_eq!(host.counter("palisade.ratelimit.allowed"), 0);
    host.phase = Phase::RequestHeaders;
    let answer = CallResponse::Http {
        token,
        status: Some(200),
        headers: vec![],
        body: jwks().to_string().into_bytes(),
    };
    assert_eq!(filter.on_call_response(&mut host, answer), Flow::Continue);
    assert_eq!(host.req_header("x-jwt-sub").as_deref(), Some("user-1"));
    // ratelimit ran after the answer, keyed by the verified claim.
    assert_eq!(host.counter("palisade.ratelimit.allowed"), 1);
}

#[test]
fn a_control_holding_the_headers_for_the_body_lets_later_controls_run_after_it() {
    let config = chain(
        json!([{"name": "api", "match": {"prefix": "/"}, "upstream": "shop",
                "filters": [{"schema": {"hold_headers": true, "rules": [
                    {"match": {"path": "/orders"}, "body": {"required": true,
                      "schema": {"type": "object", "required": ["qty"],
                                 "properties": {"qty": {"type": "integer"}}}}}]}},
                            "headers"]}]),
        json!({}),
    );
    let (plugin, root) = configure(&config);
    let held = |body: &[u8]| {
        let mut host = request(
            &root,
            "POST",
            "/orders",
            &[
                ("content-type", "application/json"),
                ("x-palisade-x", "forged"),
            ],
        );
        let ex = Exchange::new().body(body).with_stop_iteration_flag();
        let out = run(&mut ChainPlugin::new_filter(&plugin), &mut host, &ex);
        (out, host)
    };
    let (out, _) = held(br#"{"qty": 1}"#);
    let (headers, body) = out
        .upstream
        .clone()
        .expect("a valid body reaches the upstream");
    assert_eq!(body, br#"{"qty": 1}"#);
    // headers ran after schema let go: the forged header was stripped.
    assert!(!headers.iter().any(|(n, _)| n == "x-palisade-x"));
    let (out, host) = held(br#"{"qty": "many"}"#);
    assert_eq!(out.client().status, 400);
    assert!(out.upstream.is_none());
    assert_eq!(host.counter("palisade.headers.denied.too_many_headers"), 0);
}

#[test]
fn a_bad_chain_is_refused_with_every_problem_and_its_place() {
    let mut root = FakeHost::configuring(palisade_core::HostKind::Envoy);
    let bad = json!({"version": 1, "upstreams": {}, "routes": [
        {"name": "api", "match": {"prefix": "/"}, "upstream": "shop", "filters": ["nope"]}]});
    let e = ChainPlugin::configure(bad.to_string().as_bytes(), &mut root)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("routes[0].upstream"), "{e}");
    assert!(e.contains("unknown filter \"nope\""), "{e}");
    let bad_config = chain(
        json!([{"name": "api", "match": {"prefix": "/"}, "upstream": "shop",
                "filters": [{"headers": {"request": {"max_headers": 0}}}]}]),
        json!({}),
    );
    let e = ChainPlugin::configure(bad_config.to_string().as_bytes(), &mut root)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("routes[0] (api).filters.headers"), "{e}");
    assert!(e.contains("max_headers"), "{e}");
}

#[test]
fn decisions_and_claims_stay_in_memory_unless_published() {
    let config = |publish: bool| {
        let mut c = chain(
            json!([{"name": "api", "match": {"prefix": "/"}, "upstream": "shop",
                    "filters": ["headers", "jwt", "ratelimit"]}]),
            json!({
                "jwt": jwt_config(json!({"local_jwks": jwks()})),
                "ratelimit": {"rules": [{"match": {"prefix": "/"}, "limits": [
                    {"name": "per-user", "key": [{"claim": "sub"}], "requests": 1, "per_s": 60}]}]}
            }),
        );
        c["publish_decisions"] = json!(publish);
        c
    };
    for publish in [false, true] {
        let (plugin, root) = configure(&config(publish));
        let bearer = format!("Bearer {}", token("user-1"));
        // A forged decision never passes for the chain's, published or not.
        let forged = [
            ("authorization", bearer.as_str()),
            ("x-palisade-headers", "forged"),
        ];
        let mut host = request(&root, "GET", "/orders", &forged);
        let out = run(
            &mut ChainPlugin::new_filter(&plugin),
            &mut host,
            &Exchange::new(),
        );
        assert_eq!(out.client().status, 200);
        // The claim header is the control's output, always there.
        assert_eq!(out.upstream_values("x-jwt-sub"), ["user-1"]);
        let decisions: Vec<String> = [
            "x-palisade-headers",
            "x-palisade-jwt",
            "x-palisade-ratelimit",
        ]
        .iter()
        .flat_map(|h| out.upstream_values(h))
        .collect();
        let claims = host.properties.contains_key("palisade_jwt_claims");
        if publish {
            assert_eq!(decisions, ["allow", "allow", "allow"]);
            assert!(claims);
        } else {
            assert!(decisions.is_empty(), "{decisions:?}");
            assert!(!claims, "the claims reached the proxy");
        }
        // ratelimit read the claims either way: the second request of
        // user-1 is limited.
        let mut host = request(&root, "GET", "/orders", &[("authorization", &bearer)]);
        let out = run(
            &mut ChainPlugin::new_filter(&plugin),
            &mut host,
            &Exchange::new(),
        );
        assert_eq!(out.client().status, 429, "publish={publish}");
    }
}

#[test]
fn a_repeated_key_anywhere_in_the_chain_is_refused_with_its_place() {
    let text = r#"{"version": 1, "upstreams": {"shop": "http://127.0.0.1:8080"},
        "routes": [{"name": "api", "match": {"prefix": "/"}, "upstream": "shop",
                    "filters": [{"errors": {"hold_headers": true, "hold_headers": false}}]}]}"#;
    let mut root = FakeHost::configuring(palisade_core::HostKind::Envoy);
    let e = ChainPlugin::configure(text.as_bytes(), &mut root)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("routes[0].filters[0].errors.hold_headers: duplicate key"),
        "{e}"
    );
}

#[test]
fn the_stream_names_the_control_that_holds_it() {
    let config = chain(
        json!([{"name": "api", "match": {"prefix": "/"}, "upstream": "shop",
                "filters": ["headers", {"schema": {"hold_headers": true, "rules": [
                    {"match": {"path": "/orders"}, "body": {"schema": {"type": "object"}}}]}}]}]),
        json!({}),
    );
    let (plugin, root) = configure(&config);
    let mut host = request(
        &root,
        "POST",
        "/orders",
        &[("content-type", "application/json")],
    );
    let mut filter = ChainPlugin::new_filter(&plugin);
    assert_eq!(filter.holder(), None);
    assert_eq!(filter.on_request_headers(&mut host, false), Flow::Pause);
    assert_eq!(filter.holder(), Some("schema"));
}

#[test]
fn claims_another_filter_recorded_still_key_a_limit() {
    let config = chain(
        json!([{"name": "api", "match": {"prefix": "/"}, "upstream": "shop",
                "filters": [{"ratelimit": {"rules": [{"match": {"prefix": "/"}, "limits": [
                    {"name": "per-subject", "key": [{"claim": "sub"}], "requests": 1, "per_s": 60}]}]}}]}]),
        json!({}),
    );
    let (plugin, root) = configure(&config);
    let statuses: Vec<u16> = (0..2)
        .map(|_| {
            let mut host = request(&root, "GET", "/orders", &[]);
            // A separate jwt module in front of palisade.wasm set them.
            host.properties.insert(
                "palisade_jwt_claims".into(),
                br#"{"sub":"user-1"}"#.to_vec(),
            );
            run(
                &mut ChainPlugin::new_filter(&plugin),
                &mut host,
                &Exchange::new(),
            )
            .client()
            .status
        })
        .collect();
    assert_eq!(statuses, [200, 429]);
}
