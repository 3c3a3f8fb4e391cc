//! `palisade.wasm` inside a real Envoy 1.40: a whole chain file in one
//! module and one VM. Order on both paths, a local reply mid-chain that the
//! response controls still see, a paused JWKS fetch resuming the rest of the
//! chain, body holding, different chains on different routes (by path and
//! by Envoy's route name), and a request no route matches.
//!
//! Build first: `make build` (writes `dist/palisade.wasm`).

use std::time::Duration;

use palisade_tests::jwt_fixtures::{self, jwks};
use palisade_tests::*;
use serde_json::{json, Value};

const ISSUER: &str = "https://id.example.com";
const WAIT: Duration = Duration::from_secs(5);

/// A `Bearer` header with the minted token `name`.
fn token(name: &str) -> String {
    format!("Bearer {}", jwt_fixtures::token(name))
}

fn jwt(keys: Value) -> Value {
    let mut provider = json!({
        "issuer": ISSUER,
        "audiences": ["orders-api"],
        "claim_to_headers": [{"claim": "sub", "header": "x-jwt-sub"}]
    });
    for (k, v) in keys.as_object().cloned().unwrap_or_default() {
        provider[k] = v;
    }
    json!({"providers": {"corp": provider},
           "rules": [{"match": {"prefix": "/"}, "requires": {"provider": "corp"}}]})
}

fn ratelimit(requests: u32) -> Value {
    json!({"rules": [{"match": {"prefix": "/"}, "limits": [
        {"name": "per-user", "key": [{"claim": "sub"}], "requests": requests, "per_s": 60}]}]})
}

fn chain(filters: Value, routes: Value) -> Value {
    // `idp`: the key server the JWKS test's jwt calls (an Envoy cluster of that name).
    json!({"version": 1, "upstreams": {"shop": "http://127.0.0.1:8080", "idp": "http://127.0.0.1:1"},
           "filters": filters, "routes": routes})
}

fn palisade(config: &Value) -> WasmFilter {
    WasmFilter::new("palisade", dist_module()).config_json(config)
}

fn counter(envoy: &Envoy, name: &str, at_least: u64) -> u64 {
    envoy
        .wait_for_counter(&format!("wasmcustom.{name}"), at_least, WAIT)
        .unwrap_or(0)
}

/// The edge chain of the docs (module.md), one module: errors, headers, jwt and a
/// per-subject limit on `/api/`; a read-only `/admin/` without tokens.
fn edge() -> Value {
    chain(
        json!({"errors": {}, "headers": {}, "jwt": jwt(json!({"local_jwks": jwks(&["rsa1"])})),
               "ratelimit": ratelimit(3)}),
        json!([
            {"name": "api", "match": {"prefix": "/api/"}, "upstream": "shop",
             "filters": ["errors", "headers", "jwt", "ratelimit"]},
            {"name": "admin", "match": {"prefix": "/admin/"}, "upstream": "shop",
             "filters": ["errors", {"headers": {"request": {"allowed_methods": ["GET"]}}}]}
        ]),
    )
}

#[test]
fn one_module_runs_each_routes_chain_in_order() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .wasm(palisade(&edge())),
    );
    assert!(
        envoy
            .log()
            .contains("palisade.chain: configured (on envoy)"),
        "{}",
        envoy.log()
    );
    let valid = token("valid");

    // headers (before jwt) strips the forged identity, jwt sets the real one.
    let r = get(
        &envoy.url("/api/orders"),
        &[("authorization", &valid), ("x-jwt-sub", "mallory")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = upstream.last().unwrap();
    assert_eq!(seen.header_all("x-jwt-sub"), vec!["user-1"]);
    assert_eq!(seen.header("authorization"), None);
    // On the way out headers hardened the response.
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));

    // A local reply mid-chain (jwt's 401): ratelimit never counts it, and
    // the response controls still see it (errors lets Palisade's own
    // problem pass, headers hardens it).
    let r = get(&envoy.url("/api/orders"), &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(r.header("www-authenticate").is_some());
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(counter(&envoy, "palisade.errors.own_problem_passed", 1), 1);

    // The per-subject limit, keyed by jwt's verified claim in memory.
    for _ in 0..2 {
        assert_eq!(
            get(&envoy.url("/api/orders"), &[("authorization", &valid)]).status,
            200
        );
    }
    let r = get(&envoy.url("/api/orders"), &[("authorization", &valid)]);
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.header("retry-after").is_some());

    // An upstream 500 on /api/ is masked by errors, outermost.
    upstream.respond("/api/boom", Canned::status(500).body(BodyKind::JavaStack));
    let r = get(
        &envoy.url("/api/boom"),
        &[("authorization", &token("other_user"))],
    );
    assert_eq!(r.status, 500);
    assert!(!r.text().contains("Exception"), "{}", r.text());

    // /admin/ has its own chain: no token needed, read-only.
    assert_eq!(get(&envoy.url("/admin/users"), &[]).status, 200);
    let r = request("DELETE", &envoy.url("/admin/users/7"), &[], b"");
    assert_eq!(r.status, 405);

    // No route matches: no control runs.
    let r = get(&envoy.url("/other"), &[("x-palisade-jwt", "allow")]);
    assert_eq!(r.status, 200);
    assert_eq!(
        upstream.last().unwrap().header("x-palisade-jwt"),
        Some("allow")
    );
    assert_eq!(r.header("x-content-type-options"), None);
}

#[test]
fn envoys_route_name_selects_the_chain_route() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .wasm(palisade(&edge()))
            // Envoy's route `admin` serves /backoffice/: the chain route of
            // that name applies, whatever the path.
            .route(Route::prefix("admin", "/backoffice/"))
            .route(Route::prefix("catch-all", "/")),
    );
    assert_eq!(
        request("DELETE", &envoy.url("/backoffice/x"), &[], b"").status,
        405
    );
    assert_eq!(get(&envoy.url("/backoffice/x"), &[]).status, 200);
}

/// Envoy as configured by default keeps `%2F` when it routes, so
/// `/admin%2Fusers` takes Envoy's `api` route (a catch-all here) while an
/// upstream that decodes it serves admin's path: the module refuses it
/// rather than run api's chain, and says which setting avoids it.
#[test]
fn an_escaped_slash_that_moves_the_route_is_refused_under_envoys_default() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .wasm(palisade(&edge()))
            .route(Route::prefix("admin", "/admin/"))
            .route(Route::prefix("api", "/")),
    );
    let valid = token("valid");
    let auth = [("authorization", valid.as_str())];
    let r = request("DELETE", &envoy.url("/admin%2Fusers"), &auth, b"");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(
        r.text().contains("urn:palisade:problem:ambiguous-path"),
        "{}",
        r.text()
    );
    assert!(envoy
        .log()
        .contains("path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD"));
    assert_eq!(
        request("DELETE", &envoy.url("/admin/users"), &auth, b"").status,
        405
    );
    assert_eq!(
        request("DELETE", &envoy.url("/api/orders"), &auth, b"").status,
        200
    );
    assert!(upstream
        .received()
        .iter()
        .all(|r| !r.path.contains("admin")));
}

#[test]
fn a_paused_jwks_fetch_resumes_the_rest_of_the_chain() {
    let upstream = Upstream::start();
    let idp = Upstream::start();
    idp.respond(
        "/jwks",
        Canned::status(200)
            .header("content-type", "application/json")
            .body(BodyKind::Literal(jwks(&["rsa1"]).to_string().into_bytes()))
            .delay(Duration::from_millis(100)),
    );
    let remote = json!({"remote_jwks": {"cluster": "idp", "path": "/jwks",
                        "authority": "idp.test", "cache_duration_s": 600, "timeout_ms": 1000}});
    let config = chain(
        json!({}),
        json!([{"name": "api", "match": {"prefix": "/"}, "upstream": "shop",
                "filters": ["headers", {"jwt": jwt(remote)}, {"ratelimit": ratelimit(5)}]}]),
    );
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .cluster("idp", idp.port())
            .wasm(palisade(&config)),
    );
    let r = get(&envoy.url("/orders"), &[("authorization", &token("valid"))]);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), envoy.log());
    assert!(envoy
        .log()
        .contains("no keys yet, a request fetches the JWKS"));
    // ratelimit ran after the answer, with the verified claim.
    assert_eq!(counter(&envoy, "palisade.ratelimit.allowed", 1), 1);
    assert_eq!(
        upstream.last().unwrap().header_all("x-jwt-sub"),
        vec!["user-1"]
    );
    // The draft RateLimit fields of the limit that ran.
    assert!(r.header("ratelimit-policy").is_some() || r.header("ratelimit").is_some());
}

#[test]
fn body_holding_and_the_defaults_without_envoys_flag() {
    let schema = |hold: bool| {
        json!({"hold_headers": hold, "rules": [{"match": {"path": "/orders"}, "body": {
            "schema": {"type": "object", "required": ["qty"],
                       "properties": {"qty": {"type": "integer", "maximum": 100}}}}}]})
    };
    for hold in [false, true] {
        let upstream = Upstream::start();
        let config = chain(
            json!({}),
            json!([{"name": "api", "match": {"prefix": "/"}, "upstream": "shop",
                    "filters": ["errors", {"schema": schema(hold)}, "headers"]}]),
        );
        let envoy = Envoy::start(
            &EnvoyConfig::new()
                .upstream(&upstream)
                .wasm(palisade(&config).allow_on_headers_stop_iteration(hold)),
        );
        let json_ct = [
            ("content-type", "application/json"),
            ("x-palisade-x", "forged"),
        ];
        let r = request("POST", &envoy.url("/orders"), &json_ct, br#"{"qty": 3}"#);
        assert_eq!(r.status, 200, "hold={hold}: {}", r.text());
        let seen = upstream.last().unwrap();
        assert_eq!(seen.body, br#"{"qty": 3}"#);
        // headers ran after schema let the request go.
        assert_eq!(seen.header("x-palisade-x"), None, "hold={hold}");
        let before = upstream.received().len();
        let r = request("POST", &envoy.url("/orders"), &json_ct, br#"{"qty": 1000}"#);
        assert_eq!(r.status, 400, "hold={hold}: {}", r.text());
        assert_eq!(r.json()["status"], 400);
        let bodies: Vec<Vec<u8>> = upstream.received()[before..]
            .iter()
            .map(|r| r.body.clone())
            .collect();
        assert!(
            bodies.iter().all(|b| b.is_empty()),
            "hold={hold}: a refused body reached the upstream: {bodies:?}"
        );
    }
}
