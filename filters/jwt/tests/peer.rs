//! Workload identity and client address in the requirement tree: `peer`
//! (the connection's certificate on Envoy, or a trusted XFCC), `client_ip`
//! (the rate limiter's trusted-address logic), their combinations with
//! providers, XFCC stripping, and the Kong differences.

mod common;

use common::*;
use palisade_core::fake::FakeHost;
use palisade_core::{Flow, HostKind, HttpFilter, Plugin};
use palisade_jwt::{check_config, JwtPlugin};
use serde_json::{json, Value};

const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const OTHER: &str = "spiffe://cluster.local/ns/shop/sa/other";

/// How the connection looks on Envoy: `None` no client certificate.
#[derive(Clone, Copy)]
enum Conn<'a> {
    Plain,
    Cert(Option<&'a str>),
}

fn config(requires: Value, extra: Value) -> Value {
    let mut cfg = json!({
        "providers": {"corp": provider(json!({}))},
        "rules": [
            {"match": {"prefix": "/east"}, "requires": {"all": [
                {"peer": {"spiffe_ids": [FRONTEND]}}, {"provider": "corp"}]}},
            {"match": {"prefix": "/admin"}, "requires": {"client_ip": {"cidrs": ["10.0.0.0/8", "2001:db8::/32"]}}},
            {"match": {"prefix": "/open"}}
        ],
        "requires": requires
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        cfg[k] = v;
    }
    cfg
}

fn default_config() -> Value {
    config(json!({"provider": "corp"}), json!({}))
}

/// A request on `vm` with `conn` (Envoy's properties) and `headers`.
fn on(vm: &Vm, conn: Conn, path: &str, headers: &[(&str, &str)]) -> (Flow, FakeHost) {
    let mut h = vm.request("GET", path, headers);
    if let Conn::Cert(uri) = conn {
        h.properties.insert("connection.mtls".into(), vec![1]);
        if let Some(uri) = uri {
            h.properties
                .insert("connection.uri_san_peer_certificate".into(), uri.into());
        }
    } else if h.kind == HostKind::Envoy {
        h.properties.insert("connection.mtls".into(), vec![0]);
    }
    let mut filter = JwtPlugin::new_filter(&vm.plugin);
    let flow = filter.on_request_headers(&mut h, true);
    (flow, h)
}

fn bearer() -> String {
    format!("Bearer {}", rs256(&claims()))
}

fn reason(h: &FakeHost) -> String {
    h.req_header("x-palisade-jwt").unwrap_or_default()
}

#[test]
fn all_peer_and_provider_admits_only_both_together() {
    let vm = vm(&default_config());
    let auth = bearer();
    let token = [("authorization", auth.as_str())];
    // Both: through.
    let (flow, h) = on(&vm, Conn::Cert(Some(FRONTEND)), "/east/1", &token);
    assert_eq!((flow, status(&h)), (Flow::Continue, 0));
    // Right peer, no token: 401 asking for one.
    let (_, h) = on(&vm, Conn::Cert(Some(FRONTEND)), "/east/1", &[]);
    assert_eq!(status(&h), 401);
    assert_eq!(challenge(&h), "Bearer realm=\"api\"");
    // Wrong peer: 403 with or without a token (never a 401 asking for one),
    // and no token is verified for it.
    for headers in [&token[..], &[], &[("authorization", "Bearer garbage")]] {
        let (_, h) = on(&vm, Conn::Cert(Some(OTHER)), "/east/1", headers);
        assert_eq!(status(&h), 403, "{headers:?}");
        assert_eq!(reason(&h), "deny;reason=peer_mismatch");
        assert_eq!(h.counter("palisade.jwt.verified_pure"), 0);
    }
    // No certificate at all: 403 too, told apart only in counters and logs.
    let (_, missing) = on(&vm, Conn::Plain, "/east/1", &token);
    let (_, wrong) = on(&vm, Conn::Cert(Some(OTHER)), "/east/1", &token);
    assert_eq!(status(&missing), 403);
    assert_eq!(reason(&missing), "deny;reason=peer_missing");
    assert_eq!(missing.counter("palisade.jwt.denied.peer_missing"), 1);
    assert_eq!(wrong.counter("palisade.jwt.denied.peer_mismatch"), 1);
    let body = |h: &FakeHost| {
        let mut v = h.sent.as_ref().unwrap().json();
        v.as_object_mut().unwrap().remove("request_id");
        v
    };
    assert_eq!(body(&missing), body(&wrong));
    assert_eq!(
        body(&wrong)["type"],
        "urn:palisade:problem:peer-not-allowed"
    );
    assert!(!wrong
        .sent
        .as_ref()
        .unwrap()
        .body
        .windows(6)
        .any(|w| w == b"spiffe"));
    assert!(wrong
        .sent
        .as_ref()
        .unwrap()
        .header("www-authenticate")
        .is_none());
    // A certificate without a URI SAN, or a non-SPIFFE one: a wrong peer.
    for uri in [None, Some("https://frontend.example/")] {
        let (_, h) = on(&vm, Conn::Cert(uri), "/east/1", &token);
        assert_eq!(reason(&h), "deny;reason=peer_mismatch");
    }
}

#[test]
fn trust_domains_and_nesting_in_any() {
    let requires = json!({"any": [
        {"peer": {"trust_domains": ["partner.example"]}},
        {"all": [{"client_ip": {"cidrs": ["192.0.2.0/24"]}}, {"provider": "corp"}]}
    ]});
    let vm = vm(&config(requires, json!({})));
    let (flow, _) = on(
        &vm,
        Conn::Cert(Some("spiffe://partner.example/billing")),
        "/x",
        &[],
    );
    assert_eq!(flow, Flow::Continue);
    // Not a partner, nor from the network: no token would help, a 403.
    let (_, h) = on(&vm, Conn::Cert(Some(FRONTEND)), "/x", &[]);
    assert_eq!(status(&h), 403);
    // From the network: a token would satisfy the other branch, so its
    // 401 answers; with one, through.
    let from_net = |headers: &[(&str, &str)]| {
        let mut req = vm.request("GET", "/x", headers);
        req.properties
            .insert("source.address".into(), b"192.0.2.9:4444".to_vec());
        let mut filter = JwtPlugin::new_filter(&vm.plugin);
        let flow = filter.on_request_headers(&mut req, true);
        (flow, status(&req))
    };
    assert_eq!(from_net(&[]), (Flow::Pause, 401));
    let auth = bearer();
    assert_eq!(from_net(&[("authorization", &auth)]), (Flow::Continue, 0));
}

/// A request to `/admin` from `source` with `xff`, on `kind`: its status.
fn admin_from(vm: &Vm, kind: HostKind, source: &str, xff: Option<&str>) -> u16 {
    let headers: Vec<(&str, &str)> = xff.map(|x| ("x-forwarded-for", x)).into_iter().collect();
    let mut h = vm.request("GET", "/admin/x", &headers);
    h.kind = kind;
    h.properties
        .insert("source.address".into(), source.as_bytes().to_vec());
    let mut filter = JwtPlugin::new_filter(&vm.plugin);
    filter.on_request_headers(&mut h, true);
    if status(&h) == 403 {
        assert_eq!(reason(&h), "deny;reason=client_ip_not_allowed");
        assert_eq!(h.counter("palisade.jwt.denied.client_ip_not_allowed"), 1);
        let body = h.sent.as_ref().unwrap().json();
        assert_eq!(body["type"], "urn:palisade:problem:client-ip-not-allowed");
    }
    status(&h)
}

#[test]
fn client_ip_v4_v6_with_and_without_trusted_hops() {
    let direct = vm(&default_config());
    assert_eq!(
        admin_from(&direct, HostKind::Envoy, "10.1.2.3:5000", None),
        0
    );
    assert_eq!(
        admin_from(&direct, HostKind::Envoy, "192.0.2.1:5000", None),
        403
    );
    assert_eq!(
        admin_from(&direct, HostKind::Envoy, "[2001:db8::7]:443", None),
        0
    );
    assert_eq!(
        admin_from(&direct, HostKind::Envoy, "[2001:db9::7]:443", None),
        403
    );
    assert_eq!(
        admin_from(&direct, HostKind::Envoy, "[::ffff:10.0.0.1]:1", None),
        0
    );
    // Without trusted hops the header is the client's own words.
    assert_eq!(
        admin_from(&direct, HostKind::Envoy, "192.0.2.1:5000", Some("10.0.0.1")),
        403
    );
    // Kong's addresses carry no port.
    assert_eq!(admin_from(&direct, HostKind::Kong, "10.9.9.9", None), 0);
    assert_eq!(admin_from(&direct, HostKind::Kong, "192.0.2.1", None), 403);
    // Unknown address: refused.
    assert_eq!(
        admin_from(&direct, HostKind::Envoy, "unix:/sock", None),
        403
    );

    let hops = vm(&config(
        json!({"provider": "corp"}),
        json!({"client_ip": {"xff_num_trusted_hops": 1}}),
    ));
    // The entry the trusted proxy wrote, not the client's spoofed one.
    assert_eq!(
        admin_from(
            &hops,
            HostKind::Envoy,
            "192.0.2.50:1",
            Some("10.0.0.1, 203.0.113.5")
        ),
        403
    );
    assert_eq!(
        admin_from(
            &hops,
            HostKind::Envoy,
            "192.0.2.50:1",
            Some("203.0.113.5, 10.2.3.4")
        ),
        0
    );
    assert_eq!(
        admin_from(&hops, HostKind::Envoy, "192.0.2.50:1", Some("2001:db8::1")),
        0
    );
    assert_eq!(
        admin_from(
            &hops,
            HostKind::Kong,
            "192.0.2.50",
            Some("1.1.1.1, 10.2.3.4")
        ),
        0
    );
}

#[test]
fn an_address_envoy_took_from_the_clients_header_is_refused_counted_and_warned() {
    let vm = vm(&default_config());
    let mut h = vm.request("GET", "/admin/x", &[("x-forwarded-for", "10.0.0.1")]);
    h.properties
        .insert("source.address".into(), b"10.0.0.1:0".to_vec());
    let mut filter = JwtPlugin::new_filter(&vm.plugin);
    filter.on_request_headers(&mut h, true);
    // The client wrote it: refused, though 10.0.0.1 is in the network.
    assert_eq!(status(&h), 403);
    assert_eq!(h.counter("palisade.jwt.client_ip_from_xff"), 1);
    assert!(h.logged(palisade_core::Level::Warn, "use_remote_address"));
}

#[test]
fn the_connection_is_read_only_when_a_matched_requirement_asks() {
    let vm = vm(&default_config());
    let auth = bearer();
    for path in ["/orders", "/open"] {
        let (_, h) = on(
            &vm,
            Conn::Cert(Some(FRONTEND)),
            path,
            &[("authorization", &auth)],
        );
        assert_eq!(status(&h), 0);
        for p in [
            "property connection.mtls",
            "property connection.uri_san_peer_certificate",
            "property source.address",
        ] {
            assert_eq!(h.host_call_count(p), 0, "{path}: {p}");
        }
    }
    // The peer: the URI SAN only; connection.mtls only when there is none.
    let (_, h) = on(
        &vm,
        Conn::Cert(Some(FRONTEND)),
        "/east",
        &[("authorization", &auth)],
    );
    assert_eq!(
        h.host_call_count("property connection.uri_san_peer_certificate"),
        1
    );
    assert_eq!(h.host_call_count("property connection.mtls"), 0);
    assert_eq!(h.host_call_count("property source.address"), 0);
    let (_, h) = on(&vm, Conn::Plain, "/east", &[]);
    assert_eq!(h.host_call_count("property connection.mtls"), 1);
}

#[test]
fn untrusted_xfcc_is_stripped_unless_the_connection_has_a_certificate() {
    let vm = vm(&default_config());
    let auth = bearer();
    let forged = format!("By=spiffe://x/y;URI={FRONTEND}");
    let headers = [
        ("authorization", auth.as_str()),
        ("x-forwarded-client-cert", &forged),
    ];
    // Plain connection: removed (on every route) and counted; never read as the peer.
    for path in ["/orders", "/open", "/east"] {
        let (_, h) = on(&vm, Conn::Plain, path, &headers);
        assert_eq!(
            h.upstream_header_values("x-forwarded-client-cert"),
            Vec::<String>::new(),
            "{path}"
        );
        assert_eq!(h.counter("palisade.jwt.forwarded_client_cert_stripped"), 1);
        if path == "/east" {
            assert_eq!(reason(&h), "deny;reason=peer_missing");
        }
    }
    // A client certificate: Envoy's connection manager owns the header.
    let (_, h) = on(&vm, Conn::Cert(Some(OTHER)), "/orders", &headers);
    assert_eq!(
        h.upstream_header_values("x-forwarded-client-cert"),
        vec![forged.clone()]
    );
    // The peer is still the certificate, whatever the header says.
    let (_, h) = on(&vm, Conn::Cert(Some(OTHER)), "/east", &headers);
    assert_eq!(reason(&h), "deny;reason=peer_mismatch");
}

#[test]
fn trusted_xfcc_is_the_peer_and_is_forwarded() {
    let vm = vm(&config(
        json!({"provider": "corp"}),
        json!({"forwarded_client_cert": "trust"}),
    ));
    let auth = bearer();
    let chain = format!("By=spiffe://cluster.local/ns/shop/sa/api;URI={OTHER},By=spiffe://cluster.local/ns/shop/sa/api;Hash=ab;Subject=\"CN=a,O=b\";URI={FRONTEND}");
    let (flow, h) = on(
        &vm,
        Conn::Plain,
        "/east/1",
        &[
            ("authorization", &auth),
            ("x-forwarded-client-cert", &chain),
        ],
    );
    assert_eq!((flow, status(&h)), (Flow::Continue, 0));
    assert_eq!(
        h.upstream_header_values("x-forwarded-client-cert"),
        vec![chain]
    );
    assert_eq!(
        h.host_call_count("property connection.uri_san_peer_certificate"),
        0
    );
    // Only the nearest hop's element counts.
    let spoof = format!("URI={FRONTEND},URI={OTHER}");
    let (_, h) = on(
        &vm,
        Conn::Plain,
        "/east/1",
        &[
            ("authorization", &auth),
            ("x-forwarded-client-cert", &spoof),
        ],
    );
    assert_eq!(reason(&h), "deny;reason=peer_mismatch");
    // No header: missing, whatever the connection.
    let (_, h) = on(
        &vm,
        Conn::Cert(Some(FRONTEND)),
        "/east/1",
        &[("authorization", &auth)],
    );
    assert_eq!(reason(&h), "deny;reason=peer_missing");
}

#[test]
fn hostile_xfcc_values_never_panic_and_are_never_echoed() {
    let trusted = vm(&config(
        json!({"provider": "corp"}),
        json!({"forwarded_client_cert": "trust"}),
    ));
    let auth = bearer();
    let long = "URI=".to_string() + &"\"\\".repeat(20_000);
    for value in [
        "",
        ",,,",
        "URI=\"",
        "\"\"\"",
        ";=;=",
        "URI=spiffe://cluster.local/ns/shop/sa/frontend\"x",
        "URI=<script>alert(1)</script>",
        long.as_str(),
        "URI=spiffe://cluster.local/ns/shop/sa/frontend/../frontend",
    ] {
        let (_, h) = on(
            &trusted,
            Conn::Plain,
            "/east/1",
            &[("authorization", &auth), ("x-forwarded-client-cert", value)],
        );
        assert_eq!(status(&h), 403, "{value:?}");
        let body = String::from_utf8_lossy(&h.sent.as_ref().unwrap().body).into_owned();
        assert!(!body.contains("script") && !body.contains("URI"), "{body}");
        assert!(h.logs.borrow().iter().all(|(_, l)| !l.contains("script")));
    }
}

/// A request on Kong with `headers` to `path`.
fn kong_request(vm: &Vm, path: &str, headers: &[(&str, &str)]) -> FakeHost {
    let mut h = vm.request("GET", path, headers);
    h.kind = HostKind::Kong;
    let mut filter = JwtPlugin::new_filter(&vm.plugin);
    filter.on_request_headers(&mut h, true);
    h
}

#[test]
fn kong_refuses_a_connection_peer_but_runs_trusted_xfcc() {
    // Why: ngx_wasm_module does not implement the URI SAN property (NYI),
    // whatever the connection; it answers connection.mtls as a string.
    let mut kong = FakeHost::kong();
    kong.properties.insert(
        "connection.uri_san_peer_certificate".into(),
        FRONTEND.into(),
    );
    assert_eq!(
        palisade_core::Host::property(&kong, &["connection", "uri_san_peer_certificate"]),
        None
    );
    assert!(kong.logged(palisade_core::Level::Error, "NYI"));
    let cfg = default_config();
    let err = check_config(cfg.to_string().as_bytes(), HostKind::Kong).unwrap_err();
    assert_eq!(err.path, "rules[0].requires.all[0].peer");
    assert!(err.message.contains("kong"), "{}", err.message);
    assert!(check_config(cfg.to_string().as_bytes(), HostKind::Envoy).is_ok());
    let plugin = vm(&cfg).plugin;
    assert!(plugin.check_host(HostKind::Unknown).is_ok());
    assert!(plugin.check_host(HostKind::Kong).is_err());
    // The top-level requirement's path.
    let top = config(
        json!({"any": [{"provider": "corp"}, {"peer": {"trust_domains": ["td"]}}]}),
        json!({}),
    );
    let mut top = top;
    top["rules"] = json!([]);
    let err = check_config(top.to_string().as_bytes(), HostKind::Kong).unwrap_err();
    assert_eq!(err.path, "requires.any[1].peer");

    let mut trusted = default_config();
    trusted["forwarded_client_cert"] = json!("trust");
    trusted["signature_backend"] = json!("pure");
    assert!(check_config(trusted.to_string().as_bytes(), HostKind::Kong).is_ok());
    let vm = vm(&trusted);
    let auth = bearer();
    let xfcc = format!("Hash=1;URI={FRONTEND}");
    let h = kong_request(
        &vm,
        "/east/1",
        &[("authorization", &auth), ("x-forwarded-client-cert", &xfcc)],
    );
    assert_eq!(status(&h), 0);
    assert_eq!(
        h.upstream_header_values("x-forwarded-client-cert"),
        vec![xfcc]
    );
    assert_eq!(h.host_call_count("property connection.mtls"), 0);
    let h = kong_request(&vm, "/east/1", &[("authorization", &auth)]);
    assert_eq!(reason(&h), "deny;reason=peer_missing");
}

#[test]
fn kong_strips_an_untrusted_xfcc_by_overwriting_and_refuses_repeats() {
    let mut cfg = config(json!({"provider": "corp"}), json!({}));
    cfg["rules"] = json!([]);
    cfg["signature_backend"] = json!("pure");
    let vm = vm(&cfg);
    let auth = bearer();
    let h = kong_request(
        &vm,
        "/orders",
        &[
            ("authorization", &auth),
            ("x-forwarded-client-cert", "URI=spiffe://td/x"),
        ],
    );
    assert_eq!(status(&h), 0);
    // What reaches the upstream: the value overwritten, not the forgery.
    assert_eq!(
        h.upstream_header_values("x-forwarded-client-cert"),
        vec![String::new()]
    );
    assert_eq!(h.host_call_count("property connection.mtls"), 0);
    let h = kong_request(
        &vm,
        "/orders",
        &[
            ("authorization", &auth),
            ("x-forwarded-client-cert", "URI=a"),
            ("x-forwarded-client-cert", "URI=b"),
        ],
    );
    assert_eq!(status(&h), 400);
}

#[test]
fn config_errors_name_the_field() {
    let cases = [
        (json!({"peer": {}}), "requires.peer"),
        (
            json!({"peer": {"spiffe_ids": ["http://x/y"]}}),
            "requires.peer.spiffe_ids[0]",
        ),
        (
            json!({"peer": {"spiffe_ids": [FRONTEND, "spiffe://td"]}}),
            "requires.peer.spiffe_ids[1]",
        ),
        (
            json!({"peer": {"spiffe_ids": ["spiffe://td/a/../b"]}}),
            "requires.peer.spiffe_ids[0]",
        ),
        (
            json!({"peer": {"trust_domains": ["spiffe://td"]}}),
            "requires.peer.trust_domains[0]",
        ),
        (
            json!({"peer": {"trust_domains": ["Bad Domain"]}}),
            "requires.peer.trust_domains[0]",
        ),
        (
            json!({"peer": {"spiffe_id": [FRONTEND]}}),
            "requires.peer.spiffe_id",
        ),
        (
            json!({"client_ip": {"cidrs": []}}),
            "requires.client_ip.cidrs",
        ),
        (
            json!({"client_ip": {"cidrs": ["10.0.0.0/8", "10.0.0.0/33"]}}),
            "requires.client_ip.cidrs[1]",
        ),
        (
            json!({"client_ip": {"cidrs": ["10.1.2.3/8"]}}),
            "requires.client_ip.cidrs[0]",
        ),
        (
            json!({"client_ip": {"cidrs": ["2001:db8::1/32"]}}),
            "requires.client_ip.cidrs[0]",
        ),
        (
            json!({"client_ip": {"cidrs": ["nope"]}}),
            "requires.client_ip.cidrs[0]",
        ),
        (
            json!({"all": [{"provider": "corp"}, {"peer": {"spiffe_ids": ["x"]}}]}),
            "requires.all[1].peer.spiffe_ids[0]",
        ),
        (
            json!({"peer": {"trust_domains": ["td"]}, "provider": "corp"}),
            "requires",
        ),
        (
            json!({"peer": {"trust_domains": ["td"]}, "allow_missing": true}),
            "requires.allow_missing",
        ),
        (
            json!({"client_ip": {"cidrs": ["10.0.0.0/8"]}, "scopes": ["a"]}),
            "requires",
        ),
    ];
    for (requires, path) in cases {
        let mut cfg = config(requires.clone(), json!({}));
        cfg["rules"] = json!([]);
        let err = check_config(cfg.to_string().as_bytes(), HostKind::Envoy)
            .expect_err(&requires.to_string());
        assert_eq!(err.path, path, "{requires}: {}", err.message);
    }
    let mut bad = default_config();
    bad["forwarded_client_cert"] = json!("always");
    assert_eq!(
        check_config(bad.to_string().as_bytes(), HostKind::Envoy)
            .unwrap_err()
            .path,
        "forwarded_client_cert"
    );
    bad = default_config();
    bad["client_ip"] = json!({"xff_num_trusted_hops": 300});
    assert!(check_config(bad.to_string().as_bytes(), HostKind::Envoy)
        .unwrap_err()
        .path
        .starts_with("client_ip"));
    // The new fields are in the schema.
    let schema = palisade_jwt::config_schema().to_string();
    for field in [
        "forwarded_client_cert",
        "spiffe_ids",
        "trust_domains",
        "cidrs",
        "xff_num_trusted_hops",
    ] {
        assert!(schema.contains(field), "{field}");
    }
}

#[test]
fn the_audit_record_names_the_workload_with_the_caller() {
    let record = |h: &FakeHost| -> Value {
        serde_json::from_slice(&h.properties[palisade_core::audit::PROPERTY]).expect("a record")
    };
    let vm = vm(&config(
        json!({"provider": "corp"}),
        json!({"audit": "all"}),
    ));
    let auth = bearer();
    let token = [("authorization", auth.as_str())];
    let (_, h) = on(&vm, Conn::Cert(Some(FRONTEND)), "/east/1", &token);
    let rec = record(&h);
    assert_eq!(rec["peer"], FRONTEND);
    assert_eq!(rec["decisions"][0]["verdict"], "allow");
    assert!(rec["subject"].is_string(), "{rec}");
    // A wrong workload: denied, and the record says which one called.
    let (_, h) = on(&vm, Conn::Cert(Some(OTHER)), "/east/1", &token);
    let rec = record(&h);
    assert_eq!(rec["peer"], OTHER);
    assert_eq!(rec["decisions"][0]["verdict"], "deny");
    // No certificate: no peer in the record, and the reason tells.
    let (_, h) = on(&vm, Conn::Plain, "/east/1", &token);
    let rec = record(&h);
    assert!(rec.get("peer").is_none(), "{rec}");
    assert_eq!(rec["decisions"][0]["reason"], "peer_missing");
}
