//! On Kong's real host (FakeHost's Kong mode, issue 11): nothing that can
//! trap runs in `configure`, the first request fetches the remote key set
//! from `host:port` and waits for it, signatures never go to a foreign
//! function, and what the upstream receives holds no forged identity and no
//! token. The mis-detected cases (the module believing Envoy on Kong) show
//! the failures seen on the real host.

mod common;

use common::*;
use palisade_core::fake::{run, Exchange, FakeHost, ForeignFunctions, RecordedCall};
use palisade_core::host::{CallResponse, Phase};
use palisade_core::{Flow, HostKind, HttpFilter, Plugin};
use palisade_jwt::JwtPlugin;
use serde_json::{json, Value};
use std::rc::Rc;

const AUTHORITY: &str = "idp.internal:8443";

fn remote_config() -> Value {
    let mut p = provider(json!({
        "remote_jwks": {"cluster": "idp", "path": "/jwks", "authority": AUTHORITY,
                        "cache_duration_s": 600, "timeout_ms": 1500}
    }));
    p.as_object_mut().unwrap().remove("local_jwks");
    config_with(p, default_rules())
}

/// A root context in `on_configure` on a host of `kind` that the module
/// takes for `believed`.
fn root(kind: HostKind, believed: HostKind) -> FakeHost {
    let mut h = FakeHost::configuring(kind).at_secs(NOW);
    h.believed = Some(believed);
    h
}

fn configure(cfg: &Value, host: &mut FakeHost) -> Rc<JwtPlugin> {
    Rc::new(
        JwtPlugin::configure(cfg.to_string().as_bytes(), host)
            .unwrap_or_else(|e| panic!("config refused: {e}")),
    )
}

/// A request on the real host `kind` that the module takes for `believed`,
/// sharing the root's shared data and clock.
fn request_on(
    root: &FakeHost,
    kind: HostKind,
    believed: HostKind,
    headers: &[(&str, &str)],
    path: &str,
) -> FakeHost {
    let mut h = FakeHost::request("GET", path);
    h.kind = kind;
    h.believed = Some(believed);
    h.shared = Rc::clone(&root.shared);
    h.clock.set(root.clock.get());
    h.metric_names = root.metric_names.clone();
    for (n, v) in headers {
        h = h.with_request_header(n, v);
    }
    h
}

fn http_calls(h: &FakeHost) -> Vec<(u32, String)> {
    h.calls
        .iter()
        .filter_map(|c| match c {
            RecordedCall::Http {
                token, upstream, ..
            } => Some((*token, upstream.clone())),
            _ => None,
        })
        .collect()
}

fn jwks_answer(token: u32, status: Option<u16>) -> CallResponse {
    CallResponse::Http {
        token,
        status,
        headers: vec![],
        body: jwks(&["rsa1", "ec1"]).to_string().into_bytes(),
    }
}

#[test]
fn configure_never_dispatches_whatever_the_host_is_taken_for() {
    // The old code fetched from configure: on Kong that call traps (here a
    // panic) and the nginx worker exits for good.
    for (kind, believed) in [
        (HostKind::Kong, HostKind::Kong),
        (HostKind::Kong, HostKind::Unknown),
        (HostKind::Kong, HostKind::Envoy),
        (HostKind::Envoy, HostKind::Envoy),
    ] {
        let mut host = root(kind, believed);
        let plugin = configure(&remote_config(), &mut host);
        assert!(host.calls.is_empty(), "{kind:?} taken for {believed:?}");
        assert_eq!(plugin.tick_period_ms(), Some(palisade_jwt::TICK_MS));
    }
}

#[test]
fn the_tick_fetches_from_host_port_on_kong_and_from_the_cluster_on_envoy() {
    for (kind, upstream) in [(HostKind::Kong, AUTHORITY), (HostKind::Envoy, "idp")] {
        let mut host = FakeHost::configuring(kind).at_secs(NOW);
        let plugin = configure(&remote_config(), &mut host);
        host.phase = Phase::Tick;
        plugin.on_tick(&mut host);
        let calls = http_calls(&host);
        assert_eq!(calls.len(), 1, "{kind:?}");
        assert_eq!(calls[0].1, upstream, "{kind:?}");
    }
}

#[test]
fn the_first_kong_request_fetches_the_keys_from_host_port_and_waits_for_them() {
    let mut host = FakeHost::configuring(HostKind::Kong).at_secs(NOW);
    let plugin = configure(&remote_config(), &mut host);
    // No tick has run (the glue skips them while the host is unknown).
    let auth = format!("Bearer {}", rs256(&claims()));
    let mut req = request_on(
        &host,
        HostKind::Kong,
        HostKind::Kong,
        &[("authorization", &auth), ("x-jwt-sub", "mallory")],
        "/orders",
    );
    let mut filter = JwtPlugin::new_filter(&plugin);
    // Kong: end_of_stream is never true in a headers callback.
    assert_eq!(filter.on_request_headers(&mut req, false), Flow::Pause);
    assert_eq!(req.sent, None, "held, not answered");
    let calls = http_calls(&req);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1, AUTHORITY, "Kong calls host:port, not a cluster");
    assert!(req.logged(palisade_core::Level::Info, "a request fetches the JWKS"));

    // The answer resumes the request, which is then decided.
    let flow = filter.on_call_response(&mut req, jwks_answer(calls[0].0, Some(200)));
    assert_eq!(flow, Flow::Continue, "{:?}", req.sent);
    assert_eq!(req.counter("palisade.jwt.jwks_fetched"), 1);
    assert_eq!(req.upstream_header_values("x-jwt-sub"), vec!["user-1"]);
    assert_eq!(req.upstream_header_values("authorization"), vec![""]);

    // The next request (another worker: shared data) needs no fetch.
    let (flow, next) = {
        let mut h = request_on(
            &host,
            HostKind::Kong,
            HostKind::Kong,
            &[("authorization", &auth)],
            "/orders",
        );
        let mut f = JwtPlugin::new_filter(&configure(
            &remote_config(),
            &mut FakeHost::configuring(HostKind::Kong),
        ));
        (f.on_request_headers(&mut h, false), h)
    };
    assert_eq!((flow, status(&next)), (Flow::Continue, 0));
    assert!(next.calls.is_empty());
}

#[test]
fn a_request_fetch_that_fails_is_decided_by_on_jwks_unavailable() {
    let mut cfg = remote_config();
    cfg["providers"]["corp"]["on_jwks_unavailable"] = json!("unavailable");
    let mut host = FakeHost::configuring(HostKind::Kong).at_secs(NOW);
    let plugin = configure(&cfg, &mut host);
    let auth = format!("Bearer {}", rs256(&claims()));
    let mut req = request_on(
        &host,
        HostKind::Kong,
        HostKind::Kong,
        &[("authorization", &auth)],
        "/orders",
    );
    let mut filter = JwtPlugin::new_filter(&plugin);
    assert_eq!(filter.on_request_headers(&mut req, false), Flow::Pause);
    let call = http_calls(&req)[0].0;
    // Timed out (the host answers with no status after timeout_ms).
    assert_eq!(
        filter.on_call_response(&mut req, jwks_answer(call, None)),
        Flow::Pause
    );
    assert_eq!(status(&req), 503);
    assert!(req.logged(palisade_core::Level::Warn, "JWKS fetch failed"));
}

#[test]
fn a_kong_request_never_calls_a_foreign_function() {
    // Configured from a root that took Kong for Envoy (the old detection):
    // the old code chose verify_signature there, which traps on Kong.
    for believed_at_configure in [HostKind::Envoy, HostKind::Kong, HostKind::Unknown] {
        let mut host = root(HostKind::Kong, believed_at_configure);
        let plugin = configure(
            &config_with(provider(json!({})), default_rules()),
            &mut host,
        );
        for token in [
            rs256(&claims()),
            mint(jsonwebtoken::Algorithm::ES256, "ec1", &claims()),
        ] {
            let auth = format!("Bearer {token}");
            let mut req = request_on(
                &host,
                HostKind::Kong,
                HostKind::Kong,
                &[("authorization", &auth)],
                "/orders",
            );
            let mut filter = JwtPlugin::new_filter(&plugin);
            let out = run(&mut filter, &mut req, &Exchange::new());
            assert_eq!(out.client().status, 200, "{believed_at_configure:?}");
            assert!(req.foreign_calls.is_empty());
            assert_eq!(req.counter("palisade.jwt.verified_pure"), 1);
        }
    }
}

#[test]
fn envoy_still_checks_signatures_with_verify_signature() {
    let mut host = FakeHost::configuring(HostKind::Envoy).at_secs(NOW);
    let plugin = configure(
        &config_with(provider(json!({})), default_rules()),
        &mut host,
    );
    let auth = format!("Bearer {}", rs256(&claims()));
    let mut req = request_on(
        &host,
        HostKind::Envoy,
        HostKind::Envoy,
        &[("authorization", &auth)],
        "/orders",
    );
    // Stands in for BoringSSL: says valid (the verdict's check is host_signature.rs's).
    req.foreign =
        ForeignFunctions::new(|name, _| (name == "verify_signature").then(|| vec![0x08, 0x01]));
    let mut filter = JwtPlugin::new_filter(&plugin);
    assert_eq!(filter.on_request_headers(&mut req, true), Flow::Continue);
    assert_eq!(req.foreign_calls.len(), 1);
    assert_eq!(req.counter("palisade.jwt.verified_host"), 1);
    assert!(plugin.uses_host_signatures(HostKind::Envoy));
    assert!(!plugin.uses_host_signatures(HostKind::Kong));
    assert!(!plugin.uses_host_signatures(HostKind::Unknown));
}

#[test]
fn host_refusals_wait_for_the_host_and_still_name_the_field() {
    let mut host_backend = config_with(provider(json!({})), default_rules());
    host_backend["signature_backend"] = json!("host");
    let mut no_port = remote_config();
    no_port["providers"]["corp"]["remote_jwks"]["authority"] = json!("idp.internal");
    for (cfg, field) in [
        (&host_backend, "signature_backend"),
        (&no_port, "providers.corp.remote_jwks.authority"),
    ] {
        // Accepted while the host is unknown, refused once it shows Kong.
        let plugin = configure(cfg, &mut root(HostKind::Kong, HostKind::Unknown));
        assert!(plugin.check_host(HostKind::Unknown).is_ok());
        assert_eq!(plugin.check_host(HostKind::Kong).unwrap_err().path, field);
        assert!(plugin.check_host(HostKind::Envoy).is_ok());
        assert_eq!(
            palisade_jwt::check_config(cfg.to_string().as_bytes(), HostKind::Kong)
                .unwrap_err()
                .path,
            field
        );
    }
}

/// (x-jwt-sub, authorization) values the upstream receives for a request
/// with a valid token and a forged identity, on Kong taken for `believed`.
fn upstream_identity(believed: HostKind, forward: bool) -> (Vec<String>, Vec<String>) {
    let mut cfg = config_with(provider(json!({"forward": forward})), default_rules());
    cfg["signature_backend"] = json!("pure");
    let mut host = root(HostKind::Kong, believed);
    let plugin = configure(&cfg, &mut host);
    let auth = format!("Bearer {}", rs256(&claims()));
    let mut req = request_on(
        &host,
        HostKind::Kong,
        believed,
        &[("x-jwt-sub", "mallory"), ("authorization", &auth)],
        "/orders",
    );
    let mut filter = JwtPlugin::new_filter(&plugin);
    let out = run(&mut filter, &mut req, &Exchange::new());
    assert_eq!(out.client().status, 200);
    (
        out.upstream_values("x-jwt-sub"),
        out.upstream_values("authorization"),
    )
}

#[test]
fn on_kong_the_upstream_sees_only_the_verified_identity_and_no_token() {
    let token = format!("Bearer {}", rs256(&claims()));
    let (sub, auth) = upstream_identity(HostKind::Kong, false);
    assert_eq!(sub, vec!["user-1"]);
    // Stripped by overwriting: an empty header reaches the upstream.
    assert_eq!(auth, vec![""]);
    let (_, auth) = upstream_identity(HostKind::Kong, true);
    assert_eq!(auth, vec![token.clone()], "forward: true keeps it");

    // What the real host showed when the module took Kong for Envoy: the
    // client's identity first, the verified one second, and the token.
    let (sub, auth) = upstream_identity(HostKind::Envoy, false);
    assert_eq!(sub, vec!["mallory", "user-1"]);
    assert_eq!(auth, vec![token]);
}

#[test]
fn on_kong_a_forged_identity_never_reaches_the_upstream_without_a_token() {
    let mut host = FakeHost::configuring(HostKind::Kong).at_secs(NOW);
    let plugin = configure(
        &config_with(provider(json!({})), default_rules()),
        &mut host,
    );
    for (path, want) in [("/health", 200), ("/orders", 401)] {
        let mut req = request_on(
            &host,
            HostKind::Kong,
            HostKind::Kong,
            &[("x-jwt-sub", "mallory"), ("x-jwt-tenant", "t-0")],
            path,
        );
        let mut filter = JwtPlugin::new_filter(&plugin);
        let out = run(&mut filter, &mut req, &Exchange::new());
        assert_eq!(out.client().status, want, "{path}");
        if want == 200 {
            assert_eq!(out.upstream_values("x-jwt-sub"), vec![""]);
            assert_eq!(out.upstream_values("x-jwt-tenant"), vec![""]);
        }
    }
}

#[test]
fn on_kong_a_repeated_identity_header_is_refused() {
    // Seen on the real host: an overwrite reaches only the first copy of a
    // repeated header; the second went upstream as `X-Jwt-Sub: mallory2`.
    let mut host = FakeHost::configuring(HostKind::Kong).at_secs(NOW);
    let plugin = configure(
        &config_with(provider(json!({})), default_rules()),
        &mut host,
    );
    let auth = format!("Bearer {}", rs256(&claims()));
    let forged = [
        ("x-jwt-sub", "mallory"),
        ("X-Jwt-Sub", "mallory2"),
        ("authorization", auth.as_str()),
    ];
    let mut req = request_on(&host, HostKind::Kong, HostKind::Kong, &forged, "/orders");
    let out = run(
        &mut JwtPlugin::new_filter(&plugin),
        &mut req,
        &Exchange::new(),
    );
    let client = out.client();
    assert_eq!(client.status, 400);
    assert_eq!(
        client.json()["type"],
        "urn:palisade:problem:repeated-header"
    );
    assert!(!String::from_utf8_lossy(&client.body).contains("mallory"));
    assert_eq!(req.counter("palisade.jwt.denied.repeated_header"), 1);
    assert!(out.upstream.is_none());
    // Envoy removes every copy: no refusal there.
    let mut envoy = FakeHost::configuring(HostKind::Envoy).at_secs(NOW);
    let plugin = configure(
        &config_with(provider(json!({})), default_rules()),
        &mut envoy,
    );
    let mut req = request_on(&envoy, HostKind::Envoy, HostKind::Envoy, &forged, "/orders");
    let out = run(
        &mut JwtPlugin::new_filter(&plugin),
        &mut req,
        &Exchange::new(),
    );
    assert_eq!(out.client().status, 200);
    assert_eq!(out.upstream_values("x-jwt-sub"), vec!["user-1"]);
}
