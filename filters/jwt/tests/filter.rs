//! The request path: rules, requirements, answers, headers, cache, config.

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use palisade_core::fake::FakeHost;
use palisade_core::{Flow, HostKind};
use palisade_jwt::{check_config, config_schema};
use serde_json::json;

#[test]
fn answers_follow_rfc_6750_inside_problem_json() {
    let vm = vm(&config_with(provider(json!({})), default_rules()));
    let (flow, h) = vm.get("/orders", None);
    assert_eq!((flow, status(&h)), (Flow::Pause, 401));
    assert_eq!(challenge(&h), "Bearer realm=\"api\"");
    let sent = h.sent.as_ref().unwrap();
    assert_eq!(
        sent.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(sent.header("x-palisade-denied-by"), Some("jwt"));
    assert_eq!(sent.json()["type"], "urn:palisade:problem:missing-token");
    assert_eq!(
        h.req_header("x-palisade-jwt").as_deref(),
        Some("deny;reason=missing")
    );
    assert_eq!(
        vm.host
            .metric_names
            .iter()
            .filter(|n| n.contains("denied.missing"))
            .count(),
        2
    );
    assert_eq!(h.counter("palisade.jwt.denied.missing"), 1);

    // Valid token, missing scope: 403 insufficient_scope with the scope.
    let token = rs256(&claims());
    let (_, h) = vm.get("/admin/users", Some(&token));
    assert_eq!(status(&h), 403);
    assert_eq!(
        challenge(&h),
        "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"admin\""
    );
    assert_eq!(h.counter("palisade.jwt.denied.scope"), 1);
    let admin = rs256(&with(claims(), json!({"scope": "read admin"})));
    assert_eq!(status(&vm.get("/admin/users", Some(&admin)).1), 0);
    // `scp` as an array works too.
    let scp = rs256(&with(claims(), json!({"scope": null, "scp": ["admin"]})));
    assert_eq!(status(&vm.get("/admin/users", Some(&scp)).1), 0);

    // A rule without requires: unchecked, even with a garbage token.
    assert_eq!(vm.get("/health", Some("garbage")).0, Flow::Continue);
}

#[test]
fn success_sets_claim_headers_strips_forged_ones_and_the_token() {
    let vm = vm(&config_with(provider(json!({})), default_rules()));
    let token = rs256(&claims());
    let auth = format!("Bearer {token}");
    let (flow, h) = vm.run(
        "GET",
        "/orders",
        &[
            ("authorization", &auth),
            ("x-jwt-sub", "admin"),
            ("x-jwt-tenant", "forged"),
            ("x-jwt-tenant", "forged-twice"),
        ],
    );
    assert_eq!(flow, Flow::Continue);
    assert_eq!(h.req_header("x-jwt-sub").as_deref(), Some("user-1"));
    let tenants: Vec<_> = h
        .request_headers
        .iter()
        .filter(|(n, _)| n == "x-jwt-tenant")
        .collect();
    assert_eq!(tenants.len(), 1);
    assert_eq!(tenants[0].1, b"t-9");
    assert_eq!(h.req_header("authorization"), None, "token stripped");
    assert_eq!(h.req_header("x-palisade-jwt").as_deref(), Some("allow"));
    let claims_json: serde_json::Value =
        serde_json::from_slice(&h.properties[palisade_jwt::CLAIMS_PROPERTY]).unwrap();
    assert_eq!(claims_json["sub"], "user-1");
    assert_eq!(h.counter("palisade.jwt.allowed"), 1);

    // Forged identity headers are removed on unchecked routes too.
    let (_, h) = vm.run("GET", "/health", &[("x-jwt-sub", "admin")]);
    assert_eq!(h.req_header("x-jwt-sub"), None);

    // forward: true keeps the token.
    let vm = vm_of(&config_with(
        provider(json!({"forward": true})),
        default_rules(),
    ));
    let (_, h) = vm.run("GET", "/orders", &[("authorization", &auth)]);
    assert_eq!(h.req_header("authorization"), Some(auth.clone()));
}

#[test]
fn params_cookies_ambiguity_and_cors() {
    let p = provider(
        json!({"from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
                            "from_params": ["access_token"], "from_cookies": ["session"]}),
    );
    let vm = vm(&config_with(p, default_rules()));
    let token = rs256(&claims());
    let (flow, h) = vm.run("GET", &format!("/orders?a=1&access_token={token}&b=2"), &[]);
    assert_eq!(flow, Flow::Continue, "{:?}", h.sent);
    assert_eq!(h.req_header(":path").as_deref(), Some("/orders?a=1&b=2"));
    let cookie = format!("theme=dark; session={token}; lang=fr");
    let (flow, h) = vm.run("GET", "/orders", &[("cookie", &cookie)]);
    assert_eq!(flow, Flow::Continue);
    assert_eq!(
        h.req_header("cookie").as_deref(),
        Some("theme=dark; lang=fr")
    );

    let auth = format!("Bearer {token}");
    let (_, h) = vm.run(
        "GET",
        &format!("/orders?access_token={token}"),
        &[("authorization", &auth)],
    );
    assert_eq!(status(&h), 400);
    assert!(challenge(&h).contains("invalid_request"));
    assert_eq!(h.counter("palisade.jwt.denied.ambiguous"), 1);

    // CORS preflight passes unchecked; a plain OPTIONS does not.
    let preflight = [
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "POST"),
    ];
    assert_eq!(vm.run("OPTIONS", "/orders", &preflight).0, Flow::Continue);
    assert_eq!(status(&vm.run("OPTIONS", "/orders", &[]).1), 401);
    let mut cfg = config_with(provider(json!({})), default_rules());
    cfg["bypass_cors_preflight"] = json!(false);
    assert_eq!(
        status(&vm_of(&cfg).run("OPTIONS", "/orders", &preflight).1),
        401
    );
}

fn vm_of(cfg: &serde_json::Value) -> Vm {
    vm(cfg)
}

#[test]
fn unmatched_any_all_allow_missing_claims_and_dry_run() {
    let rules = json!([
        {"match": {"prefix": "/any"}, "requires": {"any": [{"provider": "corp"}, {"provider": "partners"}]}},
        {"match": {"prefix": "/all"}, "requires": {"all": [{"provider": "corp"}, {"provider": "partners"}]}},
        {"match": {"prefix": "/optional"}, "requires": {"provider": "corp", "allow_missing": true}},
        {"match": {"prefix": "/ops"}, "requires": {"provider": "corp", "claims": [
            {"claim": "roles", "contains": "ops"}, {"claim": "email_verified", "equals": true}]}},
        {"match": {"prefix": "/shadow"}, "requires": {"provider": "corp"}, "dry_run": true}
    ]);
    let partners = json!({"issuer": "https://partners.example.com",
                          "local_jwks": jwks(&["ec1"]),
                          "from_headers": [{"name": "x-partner-token"}]});
    let cfg =
        json!({"providers": {"corp": provider(json!({})), "partners": partners}, "rules": rules});
    let vm = vm(&cfg);
    let corp = rs256(&claims());
    let partner = mint(
        Algorithm::ES256,
        "ec1",
        &with(claims(), json!({"iss": "https://partners.example.com"})),
    );

    assert_eq!(
        status(&vm.get("/unknown", Some(&corp)).1),
        403,
        "unmatched is denied"
    );
    assert_eq!(status(&vm.get("/any", Some(&corp)).1), 0);
    assert_eq!(
        status(&vm.run("GET", "/any", &[("x-partner-token", &partner)]).1),
        0
    );
    // A corp-signed token presented as a partner token is refused.
    assert_eq!(
        status(&vm.run("GET", "/any", &[("x-partner-token", &corp)]).1),
        401
    );
    // all: two places in one request are ambiguous by the RFC's rule.
    let auth = format!("Bearer {corp}");
    let (_, h) = vm.run(
        "GET",
        "/all",
        &[("authorization", &auth), ("x-partner-token", &partner)],
    );
    assert_eq!(status(&h), 400);
    assert_eq!(
        status(&vm.get("/all", Some(&corp)).1),
        401,
        "one of two is missing"
    );

    assert_eq!(status(&vm.get("/optional", None).1), 0);
    assert_eq!(status(&vm.get("/optional", Some("bad.token.here")).1), 401);

    assert_eq!(status(&vm.get("/ops", Some(&corp)).1), 403);
    let ops = rs256(&with(
        claims(),
        json!({"roles": ["dev", "ops"], "email_verified": true}),
    ));
    assert_eq!(status(&vm.get("/ops", Some(&ops)).1), 0);
    let (_, h) = vm.get(
        "/ops",
        Some(&rs256(&with(claims(), json!({"roles": ["ops"]})))),
    );
    assert_eq!(status(&h), 403);
    assert_eq!(h.counter("palisade.jwt.denied.claim"), 1);

    let (flow, h) = vm.get("/shadow", None);
    assert_eq!((flow, status(&h)), (Flow::Continue, 0));
    assert_eq!(
        h.req_header("x-palisade-jwt").as_deref(),
        Some("shadow-deny;reason=missing")
    );
    assert_eq!(h.counter("palisade.jwt.shadow_denied.missing"), 1);

    let mut open = cfg.clone();
    open["unmatched"] = json!("allow");
    assert_eq!(vm_of(&open).get("/unknown", None).0, Flow::Continue);
}

#[test]
fn a_repeated_token_is_verified_once_and_never_past_exp() {
    let vm = vm(&config_with(
        provider(json!({"clock_skew_s": 0})),
        default_rules(),
    ));
    let token = rs256(&with(claims(), json!({"exp": NOW + 5})));
    let mut verified = 0;
    for _ in 0..3 {
        let (_, h) = vm.get("/orders", Some(&token));
        assert_eq!(status(&h), 0);
        verified += h.counter("palisade.jwt.verified_pure");
    }
    assert_eq!(verified, 1, "one signature check for three requests");
    // Past exp the cache does not answer: the verifier does, and refuses.
    vm.host.advance_ms(6_000);
    let (_, h) = vm.get("/orders", Some(&token));
    assert_eq!(status(&h), 401);
    assert_eq!(detail(&h), "the token has expired");
}

#[test]
fn kong_uses_the_pure_path_and_refuses_the_host_backend() {
    let cfg = config_with(provider(json!({})), default_rules());
    let vm = vm_on(&cfg, FakeHost::kong().at_secs(NOW));
    assert!(!vm.plugin.uses_host_signatures(HostKind::Kong));
    let (_, h) = vm.get("/orders", Some(&rs256(&claims())));
    assert_eq!(status(&h), 0);
    assert!(
        h.foreign_calls.is_empty(),
        "never probe a foreign function on Kong"
    );
    // Kong strips by overwriting with an empty value.
    assert_eq!(h.req_header("authorization").as_deref(), Some(""));

    let mut host_backend = cfg.clone();
    host_backend["signature_backend"] = json!("host");
    let err = check_config(host_backend.to_string().as_bytes(), HostKind::Kong).unwrap_err();
    assert_eq!(err.path, "signature_backend");
    assert!(check_config(host_backend.to_string().as_bytes(), HostKind::Envoy).is_ok());
    let remote = config_with(
        provider(
            json!({"local_jwks": null, "remote_jwks": {"cluster": "idp", "path": "/jwks", "authority": "idp.internal"}}),
        ),
        default_rules(),
    );
    let remote = remote.to_string();
    let err = check_config(remote.as_bytes(), HostKind::Kong).unwrap_err();
    assert_eq!(err.path, "providers.corp.remote_jwks.authority");
    assert!(check_config(remote.as_bytes(), HostKind::Envoy).is_ok());
    let with_port = remote.replace("idp.internal", "idp.internal:8443");
    assert!(check_config(with_port.as_bytes(), HostKind::Kong).is_ok());
}

#[test]
fn bad_configs_are_refused_naming_the_field() {
    let cases = [
        (
            json!({"providers": {"corp": {"issuer": "x"}}}),
            "providers.corp",
        ),
        (
            json!({"providers": {"corp": provider(json!({"algorithms": ["HS256"]}))}}),
            "providers.corp.local_jwks",
        ),
        (
            json!({"providers": {"corp": provider(json!({"algorithms": ["XS1"]}))}}),
            "providers.corp.algorithms[0]",
        ),
        (
            json!({"providers": {"corp": provider(json!({"local_jwks": {"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}}))}}),
            "providers.corp.local_jwks",
        ),
        (
            json!({"providers": {"corp": provider(json!({"local_jwks": {"keys": []}}))}}),
            "providers.corp.local_jwks",
        ),
        (
            json!({"providers": {"corp": provider(json!({"remote_jwks": {"cluster": "idp", "path": "jwks", "authority": "id"}}))}}),
            "providers.corp.remote_jwks.path",
        ),
        (
            json!({"providers": {"corp": provider(json!({"claim_to_headers": [{"claim": "sub", "header": "bad header"}]}))}}),
            "providers.corp.claim_to_headers[0].header",
        ),
        (
            json!({"providers": {"corp": provider(json!({"typo": 1}))}}),
            "providers.corp",
        ),
        (
            config_with(
                provider(json!({})),
                json!([{"requires": {"provider": "nobody"}}]),
            ),
            "rules[0].requires.provider",
        ),
        (
            config_with(
                provider(json!({})),
                json!([{"requires": {"any": [{"provider": "corp"}, {"all": []}]}}]),
            ),
            "rules[0].requires.any[1].all",
        ),
        (
            config_with(
                provider(json!({})),
                json!([{"requires": {"provider": "corp", "claims": [{"claim": "a"}]}}]),
            ),
            "rules[0].requires.claims[0]",
        ),
        (
            config_with(
                provider(json!({})),
                json!([{"requires": {"provider": "corp", "scopes": ["a b"]}}]),
            ),
            "rules[0].requires.scopes[0]",
        ),
        (json!({"realm": "a\"b"}), "realm"),
    ];
    for (cfg, path) in cases {
        let err = check_config(cfg.to_string().as_bytes(), HostKind::Envoy)
            .expect_err(&format!("accepted: {cfg}"));
        assert!(err.path.starts_with(path), "{cfg}: got {err}");
    }
    assert_eq!(
        check_config(b"{}", HostKind::Envoy).map_err(|e| e.path),
        Err("requires".to_string()),
        "an empty config would refuse every request"
    );
    let schema = config_schema();
    assert!(schema["properties"]["providers"].is_object(), "{schema}");
}

#[test]
fn a_top_level_requires_protects_every_request_no_rule_matches() {
    let config = json!({
        "providers": {"corp": provider(json!({}))},
        "rules": [{"match": {"prefix": "/health"}},
                  {"match": {"prefix": "/admin"}, "requires": {"provider": "corp", "scopes": ["admin"]}}],
        "requires": {"provider": "corp"}
    });
    let vm = vm(&config);
    let token = rs256(&claims());
    for path in ["/", "/orders/1", "/anything/else"] {
        assert_eq!(status(&vm.get(path, None).1), 401, "{path} without a token");
        let (flow, h) = vm.get(path, Some(&token));
        assert_eq!(
            (flow, status(&h)),
            (Flow::Continue, 0),
            "{path} with a token"
        );
    }
    assert_eq!(
        status(&vm.get("/health", None).1),
        0,
        "a rule refines the route"
    );
    assert_eq!(
        status(&vm.get("/admin/x", Some(&token)).1),
        403,
        "the admin rule still asks for its scope"
    );
}

#[test]
fn a_config_that_requires_nothing_is_refused_instead_of_refusing_everyone() {
    for (config, at) in [
        (
            json!({"providers": {"corp": provider(json!({}))}}),
            "requires",
        ),
        (
            config_with(provider(json!({})), json!([{"match": {"prefix": "/"}}])),
            "requires",
        ),
        (
            json!({"providers": {"corp": provider(json!({}))}, "unmatched": "allow"}),
            "requires",
        ),
        (
            json!({"providers": {"corp": provider(json!({}))}, "requires": {"provider": "corp"},
                   "unmatched": "deny"}),
            "unmatched",
        ),
        (
            json!({"providers": {"corp": provider(json!({}))}, "requires": {"provider": "nobody"}}),
            "requires.provider",
        ),
    ] {
        let err = check_config(config.to_string().as_bytes(), HostKind::Envoy)
            .expect_err(&format!("{config} accepted"));
        assert_eq!(err.path, at, "{config}: {err}");
    }
    // A rule that requires something still makes `unmatched` meaningful.
    let ok = json!({"providers": {"corp": provider(json!({}))}, "unmatched": "allow",
                    "rules": [{"match": {"prefix": "/api"}, "requires": {"provider": "corp"}}]});
    assert!(check_config(ok.to_string().as_bytes(), HostKind::Envoy).is_ok());
}
