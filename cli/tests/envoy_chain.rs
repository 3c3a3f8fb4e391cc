//! `examples/chain.yaml`, rendered by `palisade render envoy`, run as is by
//! the real Envoy with the built modules: each route runs its own chain,
//! with palisade.wasm (the default: one filter, the chain as its config,
//! routes picked by Envoy's route name) and with one module per filter.
//!
//! Needs `make build` (dist/) and Envoy; run by `make integration`
//! (`cargo test -p palisade-cli -- --ignored`).

use palisade_cli::envoy::Modules;
use palisade_cli::{chain, check, envoy};
use palisade_core::HostKind;
use palisade_tests::deploy_support::RawEnvoy;
use palisade_tests::{client, dist_wasm, repo_root, Upstream};

/// The example chain with its upstream pointed at `upstream`.
fn example_chain(upstream: &Upstream) -> chain::Chain {
    let text = std::fs::read_to_string(repo_root().join("examples/chain.yaml")).unwrap();
    let local = text.replace(
        "http://127.0.0.1:8080",
        &format!("http://127.0.0.1:{}", upstream.port()),
    );
    assert_ne!(
        local, text,
        "the example's upstream moved: update this test"
    );
    let chain = chain::load(&local).unwrap();
    assert_eq!(check::check(&chain, &[HostKind::Envoy]), vec![]);
    chain
}

/// The bootstrap `palisade render envoy` writes, on loopback port 0.
fn render(chain: &chain::Chain, modules: Modules) -> String {
    let dist = repo_root().join("dist");
    match modules {
        Modules::Single => assert!(
            dist.join("palisade.wasm").is_file(),
            "dist/palisade.wasm is missing: run `make build`"
        ),
        Modules::PerFilter => {
            for u in chain.routes.iter().flat_map(|r| &r.filters) {
                dist_wasm(u.filter.name);
            }
        }
    }
    let options = envoy::Options {
        listen: "127.0.0.1:0".into(),
        admin: "127.0.0.1:0".into(),
        wasm_dir: dist.to_string_lossy().into_owned(),
        modules,
    };
    envoy::render_text(chain, &options).unwrap()
}

#[test]
#[ignore = "needs `make build` and Envoy: run by `make integration`"]
fn each_route_of_the_example_runs_its_own_chain_in_palisade_wasm() {
    let upstream = Upstream::start();
    let text = render(&example_chain(&upstream), Modules::Single);
    // One wasm filter, palisade.wasm, before the router.
    assert_eq!(
        text.matches("filters.http.wasm.v3.Wasm").count(),
        1,
        "{text}"
    );
    assert!(text.contains("/palisade.wasm"), "{text}");
    let envoy = RawEnvoy::start(&text);
    serves_the_example(&envoy, &upstream);
    // The controls counted inside the one module.
    let stats = envoy.admin_get("/stats?filter=wasmcustom.palisade");
    assert!(stats.contains("wasmcustom.palisade.headers."), "{stats}");
}

#[test]
#[ignore = "needs `make build` and Envoy: run by `make integration`"]
fn each_route_of_the_example_runs_its_own_chain_per_filter() {
    let upstream = Upstream::start();
    let envoy = RawEnvoy::start(&render(&example_chain(&upstream), Modules::PerFilter));
    serves_the_example(&envoy, &upstream);
}

/// What each route of the example does: api gets the shared configs,
/// admin its own headers config (read-only), legacy masking only, and a
/// path of no route Envoy's 404 with no control.
fn serves_the_example(envoy: &RawEnvoy, upstream: &Upstream) {
    // api: errors + headers with the shared configs.
    let api = client::get(&envoy.url("/api/items"), &[]);
    assert_eq!(api.status, 200, "{}", api.text());
    assert_eq!(api.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(api.header("x-frame-options"), Some("DENY"));
    // The admin route's GET-only instance does not run here.
    let delete = client::request("DELETE", &envoy.url("/api/items/1"), &[], b"");
    assert_eq!(delete.status, 200, "{}", delete.text());

    // admin: the route's own headers config (GET/HEAD only, cache-control added).
    let admin = client::get(&envoy.url("/admin/users"), &[]);
    assert_eq!(admin.status, 200);
    assert_eq!(admin.header("cache-control"), Some("no-store"));
    assert_eq!(admin.header("x-content-type-options"), Some("nosniff"));
    let refused = client::request("DELETE", &envoy.url("/admin/users"), &[], b"");
    assert_eq!(refused.status, 405, "{}", refused.text());
    assert_eq!(refused.header("allow"), Some("GET, HEAD"));
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );

    // legacy: errors only, so no security headers, but 5xx are masked.
    let legacy = client::get(&envoy.url("/old/page"), &[]);
    assert_eq!(legacy.status, 200);
    assert_eq!(legacy.header("x-content-type-options"), None);
    assert_eq!(legacy.header("cache-control"), None);
    let leak = client::get(
        &envoy.url("/old/page"),
        &[("x-echo-status", "500"), ("x-echo-body-kind", "java-stack")],
    );
    assert_eq!(leak.status, 500);
    assert_eq!(
        leak.header("content-type"),
        Some("application/problem+json")
    );
    assert!(
        !leak.text().contains("NullPointerException"),
        "{}",
        leak.text()
    );
    // The refused DELETE never reached the upstream; the api's did.
    let deletes: Vec<String> = upstream
        .received()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path)
        .collect();
    assert_eq!(deletes, ["/api/items/1"]);
}

#[test]
#[ignore = "needs `make build` and Envoy: run by `make integration`"]
fn a_request_no_route_matches_runs_no_palisade_filter() {
    unrouted(Modules::PerFilter);
}

#[test]
#[ignore = "needs `make build` and Envoy: run by `make integration`"]
fn a_request_no_route_matches_runs_nothing_of_palisade_wasm() {
    unrouted(Modules::Single);
}

fn unrouted(modules: Modules) {
    let upstream = Upstream::start();
    let mut chain = example_chain(&upstream);
    // Without the catch-all route, /old/page matches no route of the chain:
    // the rendered `palisade-unrouted` route answers 404 with every filter off.
    chain.routes.retain(|r| r.name != "legacy");
    let envoy = RawEnvoy::start(&render(&chain, modules));
    let r = client::get(&envoy.url("/old/page"), &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-content-type-options"), None);
    assert_eq!(r.header("content-type"), None, "{:?}", r.headers);
    assert!(upstream.received().is_empty());
    // A 404 of Envoy's own, not masked: errors did not run either.
    let deleted = client::request("DELETE", &envoy.url("/admin"), &[], b"");
    assert_eq!(deleted.status, 404, "/admin is not /admin/: no route");
    assert_eq!(deleted.header("allow"), None);
    assert!(upstream.received().is_empty());
    let api = client::get(&envoy.url("/api/x"), &[]);
    assert_eq!(api.header("x-content-type-options"), Some("nosniff"));
}

/// palisade.wasm runs each route's controls in that route's own order: two
/// routes ordering errors and headers differently, which one filter list per
/// listener cannot do (the per-filter render refuses it).
#[test]
#[ignore = "needs `make build` and Envoy: run by `make integration`"]
fn palisade_wasm_runs_each_routes_own_order() {
    let upstream = Upstream::start();
    let text = format!(
        "version: 1
upstreams: {{shop: 'http://127.0.0.1:{port}'}}
filters:
  headers: {{request: {{allowed_methods: [GET]}}}}
routes:
  - {{name: outer-errors, match: {{prefix: /a/}}, upstream: shop, filters: [errors, headers]}}
  - {{name: outer-headers, match: {{prefix: /b/}}, upstream: shop, filters: [headers, errors]}}
",
        port = upstream.port()
    );
    let chain = chain::load(&text).unwrap();
    let envoy = RawEnvoy::start(&render(&chain, Modules::Single));
    for path in ["/a/x", "/b/x"] {
        let ok = client::get(&envoy.url(path), &[]);
        assert_eq!(ok.status, 200, "{path}: {}", ok.text());
        assert_eq!(ok.header("x-content-type-options"), Some("nosniff"));
        let refused = client::request("DELETE", &envoy.url(path), &[], b"");
        assert_eq!(refused.status, 405, "{path}");
        assert_eq!(
            refused.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(refused.header("allow"), Some("GET"));
    }
    assert_eq!(upstream.received().len(), 2, "only the GETs went through");
    let per_filter = envoy::Options {
        modules: Modules::PerFilter,
        ..envoy::Options::default()
    };
    assert!(envoy::render_text(&chain, &per_filter).is_err());
}

#[test]
#[ignore = "needs `make build` and Envoy: run by `make integration`"]
fn a_rotated_forwarded_for_does_not_escape_a_client_ip_limit_in_the_rendered_config() {
    let upstream = Upstream::start();
    let text = format!(
        "version: 1
upstreams: {{shop: 'http://127.0.0.1:{port}'}}
filters:
  ratelimit:
    rules:
      - match: {{prefix: /login}}
        limits: [{{name: login-per-ip, key: [client_ip], requests: 3, per_s: 60}}]
routes:
  - {{name: login, match: {{prefix: /}}, upstream: shop, filters: [ratelimit]}}
",
        port = upstream.port()
    );
    let chain = chain::load(&text).unwrap();
    assert_eq!(check::check(&chain, &[HostKind::Envoy]), vec![]);
    let envoy = RawEnvoy::start(&render(&chain, Modules::Single));
    // Under Envoy's default use_remote_address: false, each fresh header
    // was a fresh client: 6 of 6 passed.
    let statuses: Vec<u16> = (1..=6)
        .map(|i| {
            let xff = format!("203.0.113.{i}");
            client::request(
                "POST",
                &envoy.url("/login"),
                &[("x-forwarded-for", &xff)],
                b"",
            )
            .status
        })
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    let stats = envoy.admin_get("/stats?filter=client_ip_from_xff");
    assert!(
        stats.contains("wasmcustom.palisade.ratelimit.client_ip_from_xff: 0"),
        "{stats}"
    );
}

/// A CA, and a certificate it signs for `idp.test`, made with `openssl`
/// in `dir`: (CA file, certificate chain, key).
fn make_certs(dir: &std::path::Path, ca: &str) -> (String, String, String) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (ca_key, ca_pem) = (format!("{ca}.key"), format!("{ca}.pem"));
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &ca_key,
        "-out",
        &ca_pem,
        "-days",
        "2",
        "-subj",
        &format!("/CN={ca}"),
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "idp.key",
        "-out",
        "idp.csr",
        "-subj",
        "/CN=idp.test",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:idp.test\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "idp.csr",
        "-CA",
        &ca_pem,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        "idp.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    (path(&ca_pem), path("idp.pem"), path("idp.key"))
}

/// A key server behind TLS: an Envoy answering every request with `jwks`.
fn tls_key_server(cert: &str, key: &str, jwks: &str) -> RawEnvoy {
    let boot = serde_json::json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [{
            "name": "idp",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{
                "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    "common_tls_context": {"tls_certificates": [{
                        "certificate_chain": {"filename": cert},
                        "private_key": {"filename": key}}]}}},
                "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "idp",
                    "route_config": {"virtual_hosts": [{"name": "idp", "domains": ["*"], "routes": [{
                        "match": {"prefix": "/"},
                        "direct_response": {"status": 200, "body": {"inline_string": jwks}}}]}]},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}]}
    });
    RawEnvoy::start(&boot.to_string())
}

/// The chain file a new operator writes for JWT with remote keys over TLS,
/// rendered as is: the key server is an upstream, `render envoy` makes its
/// TLS cluster, and the certificate is checked by CA and name.
#[test]
#[ignore = "needs `make build` and Envoy: run by `make integration`"]
fn remote_keys_over_tls_from_a_chain_file_as_rendered() {
    use palisade_tests::jwt_fixtures::{jwks, token};
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(dir.path(), "ca");
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (other_ca, _, _) = make_certs(&other, "other-ca");
    let idp = tls_key_server(&cert, &key, &jwks(&["rsa1"]).to_string());
    let upstream = Upstream::start();
    let chain_text = |ca_file: &str| {
        format!(
            "
version: 1
upstreams:
  shop: http://127.0.0.1:{shop}
  idp: {{url: 'https://127.0.0.1:{idp}', sni: idp.test, ca: '{ca_file}'}}
filters:
  jwt:
    providers:
      corp:
        issuer: https://id.example.com
        audiences: [orders-api]
        remote_jwks: {{cluster: idp, path: /jwks, authority: idp.test, timeout_ms: 1000}}
    requires: {{provider: corp}}
routes:
  - {{name: api, match: {{prefix: /}}, upstream: shop, filters: [jwt]}}
",
            shop = upstream.port(),
            idp = idp.listener_addr().port(),
        )
    };
    let bearer = format!("Bearer {}", token("valid"));
    let good = chain::load(&chain_text(&ca)).unwrap();
    assert_eq!(
        check::for_platforms(&good, &good.platforms, Modules::Single),
        vec![]
    );
    let envoy = RawEnvoy::start(&render(&good, Modules::Single));
    let r = client::get(&envoy.url("/orders"), &[("authorization", &bearer)]);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), envoy.log());
    assert_eq!(client::get(&envoy.url("/orders"), &[]).status, 401);

    // A certificate from another CA: the handshake is refused, the keys
    // never come, and the operator reads why in the log and the counter.
    let bad = chain::load(&chain_text(&other_ca)).unwrap();
    let envoy = RawEnvoy::start(&render(&bad, Modules::Single));
    let r = client::get(&envoy.url("/orders"), &[("authorization", &bearer)]);
    assert_eq!(r.status, 401, "{}", r.text());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let stats = envoy.admin_get("/stats?filter=jwks_fetch_failed");
        if envoy.log().contains("JWKS fetch failed") && !stats.contains("jwks_fetch_failed: 0") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{stats}\n{}",
            envoy.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// `examples/<name>`, with `from` replaced by `to` for each pair (the
/// services moved to loopback), checked as `palisade check` checks it.
fn example(name: &str, moves: &[(&str, String)]) -> chain::Chain {
    let mut text = std::fs::read_to_string(repo_root().join("examples").join(name)).unwrap();
    for (from, to) in moves {
        assert!(
            text.contains(from),
            "{name} no longer has {from:?}: update this test"
        );
        text = text.replace(from, to);
    }
    let chain = chain::load(&text).unwrap_or_else(|p| panic!("{name}: {p:?}"));
    assert_eq!(
        check::for_platforms(&chain, &chain.platforms, Modules::Single),
        vec![]
    );
    chain
}

#[test]
#[ignore = "needs `make build` and Envoy: run by `make integration`"]
fn the_edge_example_needs_a_token_from_the_tls_key_server_and_limits_each_subject() {
    use palisade_tests::jwt_fixtures::{jwks, token};
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(dir.path(), "ca");
    let idp = tls_key_server(&cert, &key, &jwks(&["rsa1"]).to_string());
    let upstream = Upstream::start();
    let chain = example(
        "edge-jwt-ratelimit.yaml",
        &[
            (
                "http://127.0.0.1:8080",
                format!("http://127.0.0.1:{}", upstream.port()),
            ),
            (
                "idp: https://id.example.com",
                format!(
                    "idp: {{url: 'https://127.0.0.1:{}', sni: idp.test, ca: '{ca}'}}",
                    idp.listener_addr().port()
                ),
            ),
        ],
    );
    let envoy = RawEnvoy::start(&render(&chain, Modules::Single));
    assert_eq!(
        client::get(&envoy.url("/healthz"), &[]).status,
        200,
        "no token for the probe"
    );
    let none = client::get(&envoy.url("/orders"), &[]);
    assert_eq!(none.status, 401, "{}", none.text());
    assert_eq!(
        none.header("content-type"),
        Some("application/problem+json")
    );
    let bearer = format!("Bearer {}", token("valid"));
    let ok = client::get(&envoy.url("/orders"), &[("authorization", &bearer)]);
    assert_eq!(ok.status, 200, "{}\n{}", ok.text(), envoy.log());
    assert_eq!(ok.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        upstream.last().unwrap().header_all("x-jwt-sub"),
        vec!["user-1"]
    );
    // 60 a minute for user-1: the 61st is refused; another subject is not.
    let statuses: Vec<u16> = (0..60)
        .map(|_| client::get(&envoy.url("/orders"), &[("authorization", &bearer)]).status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        1,
        "{statuses:?}"
    );
    let other = format!("Bearer {}", token("other_user"));
    assert_eq!(
        client::get(&envoy.url("/orders"), &[("authorization", &other)]).status,
        200
    );
}

#[test]
#[ignore = "needs `make build` and Envoy: run by `make integration`"]
fn the_openapi_example_refuses_what_the_document_does_not_allow_and_masks_errors() {
    let upstream = Upstream::start();
    let chain = example(
        "openapi-masking.yaml",
        &[(
            "http://127.0.0.1:8080",
            format!("http://127.0.0.1:{}", upstream.port()),
        )],
    );
    let envoy = RawEnvoy::start(&render(&chain, Modules::Single));
    let json = [("content-type", "application/json")];
    let post = |body: &str| client::request("POST", &envoy.url("/orders"), &json, body.as_bytes());
    assert_eq!(post(r#"{"sku": "AB-12", "quantity": 2}"#).status, 200);
    for bad in [
        r#"{"sku": "AB-12", "quantity": 0}"#,
        r#"{"sku": "AB-12"}"#,
        "not json",
    ] {
        let r = post(bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert!(
            !r.text().contains("AB-12"),
            "never echoes the request: {}",
            r.text()
        );
    }
    assert_eq!(client::get(&envoy.url("/orders/7"), &[]).status, 200);
    assert_eq!(client::get(&envoy.url("/orders/seven"), &[]).status, 400);
    assert_eq!(client::get(&envoy.url("/nope"), &[]).status, 404);
    assert_eq!(
        client::request("DELETE", &envoy.url("/orders/7"), &[], b"").status,
        405
    );
    let refused = upstream.received().len();
    assert_eq!(
        refused, 2,
        "only the valid POST and GET reached the service"
    );
    let leak = client::get(
        &envoy.url("/orders/7"),
        &[("x-echo-status", "500"), ("x-echo-body-kind", "java-stack")],
    );
    assert_eq!(leak.status, 500);
    assert!(
        !leak.text().contains("NullPointerException"),
        "{}",
        leak.text()
    );
}

/// The Envoy configuration Envoy Gateway makes of `policies` (its xDS
/// translator, `internal/xds/translator/wasm.go`): every wasm entry a
/// filter of its own VM (`vm_id` the policy's path), V8, `config` as a JSON
/// string, `fail_open` from `failOpen`, disabled on the listener and enabled
/// (`FilterConfig`) on the routes of its HTTPRoute, which Envoy Gateway
/// names `httproute/<namespace>/<name>/rule/<i>/match/<j>/<host>`. The code
/// is read from dist/ instead of Envoy Gateway's module cache.
fn as_envoy_gateway_runs(
    chain: &chain::Chain,
    policies: &[serde_json::Value],
    port: u16,
) -> String {
    use serde_json::json;
    let dist = repo_root().join("dist");
    let mut filters = Vec::new();
    let mut routes = Vec::new();
    for (route, policy) in chain.routes.iter().zip(policies) {
        let ns = policy["metadata"]["namespace"].as_str().unwrap();
        let name = policy["metadata"]["name"].as_str().unwrap();
        let mut enabled = serde_json::Map::new();
        for (i, w) in policy["spec"]["wasm"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let id = format!("envoyextensionpolicy/{ns}/{name}/wasm/{i}");
            let filter_name = format!("envoy.filters.http.wasm/{id}");
            // ghcr.io/acme/palisade/jwt:0.1.0 -> dist/palisade_jwt.wasm
            let image = w["code"]["image"]["url"].as_str().unwrap();
            let module = image.rsplit('/').next().unwrap().split(':').next().unwrap();
            let file = if module == "palisade" {
                dist.join("palisade.wasm")
            } else {
                dist_wasm(module)
            };
            filters.push(json!({
                "name": filter_name,
                "disabled": true,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": {
                        "name": w["name"],
                        "vm_config": {
                            "vm_id": id,
                            "runtime": "envoy.wasm.runtime.v8",
                            "code": {"local": {"filename": file}},
                        },
                        "configuration": {
                            "@type": "type.googleapis.com/google.protobuf.StringValue",
                            "value": w["config"].to_string(),
                        },
                        "fail_open": w["failOpen"],
                    },
                },
            }));
            enabled.insert(
                filter_name,
                json!({"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {}}),
            );
        }
        let matcher = match (&route.prefix, &route.path) {
            (Some(p), _) => json!({"prefix": p}),
            (None, Some(p)) => json!({"path": p}),
            (None, None) => json!({"prefix": "/"}),
        };
        routes.push(json!({
            "name": format!("httproute/{ns}/{}/rule/0/match/0/www_example_com", route.name),
            "match": matcher,
            "route": {"cluster": "backend"},
            "typed_per_filter_config": enabled,
        }));
    }
    filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }));
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": "envoy-gateway/eg/http",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "http-10080",
                        "route_config": {
                            "name": "envoy-gateway/eg/http",
                            "virtual_hosts": [{"name": "www_example_com", "domains": ["*"], "routes": routes}],
                        },
                        "http_filters": filters,
                    },
                }]}],
            }],
            "clusters": [{
                "name": "backend",
                "type": "STATIC",
                "connect_timeout": "5s",
                "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
                ]}]},
            }],
        },
    })
    .to_string()
}

#[test]
#[ignore = "needs `make build` and Envoy: run by `make integration`"]
fn the_example_as_envoy_gateway_runs_it_serves_each_routes_chain() {
    use palisade_cli::envoy_gateway;
    let upstream = Upstream::start();
    let chain = example_chain(&upstream);
    for modules in [Modules::Single, Modules::PerFilter] {
        let options = envoy_gateway::Options {
            url: "oci://ghcr.io/acme/palisade/{filter}:0.1.0".into(),
            pin_from: None,
            namespace: "shop".into(),
            gateway: "eg".into(),
            modules,
        };
        let policies = envoy_gateway::resources(&chain, &options).unwrap();
        let envoy = RawEnvoy::start(&as_envoy_gateway_runs(&chain, &policies, upstream.port()));
        serves_the_example(&envoy, &upstream);
        upstream.clear_received();
    }
}

/// Every series the generated dashboard and rules use is in the real
/// Envoy's `/stats/prometheus`, with the stats tag the docs document (operations/metrics.md),
/// after traffic through all five controls in palisade.wasm.
#[test]
#[ignore = "needs `make build` and Envoy: run by `make integration`"]
fn every_series_the_dashboard_and_alerts_use_is_in_envoys_prometheus_output() {
    use palisade_cli::observability;
    let upstream = Upstream::start();
    let text = format!(
        r#"
version: 1
upstreams: {{shop: 'http://127.0.0.1:{port}'}}
filters:
  errors: {{}}
  headers: {{}}
  jwt:
    providers:
      corp:
        issuer: https://id.example.com
        local_jwks: {{keys: [{{kty: EC, crv: P-256, kid: p1, x: B-_AXQ6cTwaicYgZ4akcOIBrq0wTu3EXPbxpQbVcl1w, y: QJkvCQ1hEENYXHNeIR3-vp_FMOAJtxnpvTZes9T2PNA}}]}}
    rules: [{{match: {{prefix: /open}}}}]
    requires: {{provider: corp}}
  ratelimit:
    limits: [{{name: all, key: [], requests: 100, per_s: 1}}]
  schema:
    rules: [{{match: {{prefix: /orders, methods: [POST]}}, body: {{schema: {{type: object}}}}}}]
routes:
  - name: all
    match: {{prefix: /}}
    upstream: shop
    filters: [errors, headers, jwt, ratelimit, schema]
"#,
        port = upstream.port()
    );
    let chain = chain::load(&text).unwrap();
    let options = envoy::Options {
        listen: "127.0.0.1:0".into(),
        admin: "127.0.0.1:0".into(),
        wasm_dir: repo_root().join("dist").to_string_lossy().into_owned(),
        modules: Modules::Single,
    };
    let mut bootstrap = envoy::render(&chain, &options).unwrap();
    // The documented stats tag (docs/src/operations/metrics.md), as written there.
    let page = std::fs::read_to_string(repo_root().join("docs/src/operations/metrics.md")).unwrap();
    let regex = page
        .lines()
        .find_map(|l| l.trim().strip_prefix("regex: '^wasmcustom\\.palisade"))
        .map(|rest| format!("^wasmcustom\\.palisade{}", rest.trim_end_matches('\'')))
        .expect("the documented palisade_reason stats tag");
    bootstrap["stats_config"] =
        serde_json::json!({"stats_tags": [{"tag_name": "palisade_reason", "regex": regex}]});
    let envoy = RawEnvoy::start(&bootstrap.to_string());
    let denied = client::get(&envoy.url("/private"), &[]);
    assert_eq!(denied.status, 401, "{}", denied.text());
    assert_eq!(client::get(&envoy.url("/open"), &[]).status, 200);
    let prometheus = envoy.admin_get("/stats/prometheus");
    let g = observability::generate().unwrap();
    let mut missing = Vec::new();
    for s in &g.used {
        let found = prometheus.lines().any(|l| {
            let Some(rest) = l.strip_prefix(&s.name) else {
                return false;
            };
            match &s.reason {
                Some(r) => {
                    rest.starts_with('{') && rest.contains(&format!("palisade_reason=\"{r}\""))
                }
                None => rest.starts_with(' ') || rest.starts_with('{'),
            }
        });
        if !found {
            missing.push(format!("{s:?}"));
        }
    }
    assert!(missing.is_empty(), "not in /stats/prometheus: {missing:?}");
    // The denial counted under its reason label.
    assert!(
        prometheus
            .lines()
            .any(|l| l.starts_with("palisade_jwt_denied{")
                && l.contains("palisade_reason=\"missing\"")
                && !l.ends_with(" 0")),
        "{prometheus}"
    );
    // PalisadeStatsTagMissing: silent with the tag...
    let untagged = regex::Regex::new(&format!("^(?:{})$", g.untagged)).unwrap();
    let names = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.split(['{', ' ']).next().map(String::from))
            .collect()
    };
    let matched: Vec<String> = names(&prometheus)
        .into_iter()
        .filter(|n| untagged.is_match(n))
        .collect();
    assert!(matched.is_empty(), "tagged, yet matched: {matched:?}");
    drop(envoy);
    // ...and firing on an Envoy without it (the jwt module alone: same names).
    let text = format!(
        r#"
version: 1
upstreams: {{shop: 'http://127.0.0.1:{port}'}}
filters:
  jwt:
    providers:
      corp:
        issuer: https://id.example.com
        local_jwks: {{keys: [{{kty: EC, crv: P-256, kid: p1, x: B-_AXQ6cTwaicYgZ4akcOIBrq0wTu3EXPbxpQbVcl1w, y: QJkvCQ1hEENYXHNeIR3-vp_FMOAJtxnpvTZes9T2PNA}}]}}
    requires: {{provider: corp}}
routes:
  - name: all
    match: {{prefix: /}}
    upstream: shop
    filters: [jwt]
"#,
        port = upstream.port()
    );
    let chain = chain::load(&text).unwrap();
    let options = envoy::Options {
        modules: Modules::PerFilter,
        ..options
    };
    let mut bootstrap = envoy::render(&chain, &options).unwrap();
    if let Some(b) = bootstrap.as_object_mut() {
        b.remove("stats_config");
    }
    let envoy = RawEnvoy::start(&bootstrap.to_string());
    assert_eq!(client::get(&envoy.url("/private"), &[]).status, 401);
    let bare = envoy.admin_get("/stats/prometheus");
    let matched: Vec<String> = names(&bare)
        .into_iter()
        .filter(|n| untagged.is_match(n))
        .collect();
    assert!(
        matched.contains(&"palisade_jwt_denied_missing".to_string()),
        "untagged, yet not matched: {matched:?}\n{bare}"
    );
}
