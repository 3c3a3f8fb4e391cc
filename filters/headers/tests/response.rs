//! Response hardening, on Envoy and on Kong.

mod common;

use common::{Setup, TestHost, KINDS};
use palisade_core::{Flow, Host, HostKind};

fn values(host: &TestHost, name: &str) -> Vec<String> {
    host.response_headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect()
}

const SECURITY: [(&str, &str); 5] = [
    ("x-content-type-options", "nosniff"),
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
];

#[test]
fn defaults_drop_stack_headers_and_add_security_headers() {
    let setup = Setup::new("{}");
    for kind in KINDS {
        let mut host = setup.host(kind, "GET", "/").with("x-request-id", "rid-r");
        let mut filter = setup.filter();
        host.run(&mut filter);
        let flow = host.respond(
            &mut filter,
            200,
            &[
                ("Server", "Apache/2.4.1"),
                ("server", "twice"),
                ("X-Powered-By", "PHP/8.1"),
                ("x-aspnet-version", "4.0"),
                ("x-aspnetmvc-version", "5.2"),
                ("x-runtime", "0.01"),
                ("content-type", "application/json"),
            ],
        );
        assert_eq!(flow, Flow::Continue);
        for gone in [
            "server",
            "x-powered-by",
            "x-aspnet-version",
            "x-aspnetmvc-version",
            "x-runtime",
        ] {
            assert!(values(&host, gone).is_empty(), "{kind:?}: {gone} kept");
        }
        for (name, value) in SECURITY {
            assert_eq!(values(&host, name), [value], "{kind:?}: {name}");
        }
        assert_eq!(values(&host, "x-request-id"), ["rid-r"]);
        assert_eq!(values(&host, "content-type"), ["application/json"]);
        assert_eq!(values(&host, ":status"), ["200"]);
        assert_eq!(host.counter("palisade.headers.response_headers_removed"), 6);
    }
}

#[test]
fn headers_the_upstream_set_are_kept() {
    let setup = Setup::new("{}");
    let mut host = setup
        .host(HostKind::Envoy, "GET", "/")
        .with("x-request-id", "mine");
    let mut filter = setup.filter();
    host.run(&mut filter);
    host.respond(
        &mut filter,
        200,
        &[
            ("X-Frame-Options", "SAMEORIGIN"),
            ("x-request-id", "upstream's"),
        ],
    );
    assert_eq!(values(&host, "x-frame-options"), ["SAMEORIGIN"]);
    assert_eq!(values(&host, "x-request-id"), ["upstream's"]);
    assert_eq!(values(&host, "x-content-type-options"), ["nosniff"]);
}

#[test]
fn the_request_id_comes_from_traceparent_or_is_left_out() {
    let setup = Setup::new("{}");
    let mut host = setup.host(HostKind::Envoy, "GET", "/").with(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    );
    let mut filter = setup.filter();
    host.run(&mut filter);
    host.respond(&mut filter, 200, &[]);
    assert_eq!(
        values(&host, "x-request-id"),
        ["0af7651916cd43dd8448eb211c80319c"]
    );

    for bad in ["", "<script>", "a b"] {
        let mut host = setup
            .host(HostKind::Envoy, "GET", "/")
            .with("x-request-id", bad);
        let mut filter = setup.filter();
        host.run(&mut filter);
        host.respond(&mut filter, 200, &[]);
        assert!(values(&host, "x-request-id").is_empty(), "{bad:?} echoed");
    }
}

#[test]
fn expose_request_id_can_be_turned_off() {
    let setup = Setup::new(r#"{"response":{"expose_request_id":false}}"#);
    let mut host = setup
        .host(HostKind::Envoy, "GET", "/")
        .with("x-request-id", "r");
    let mut filter = setup.filter();
    host.run(&mut filter);
    host.respond(&mut filter, 200, &[]);
    assert!(values(&host, "x-request-id").is_empty());
}

#[test]
fn overrides_merge_into_the_map_and_null_removes_a_default() {
    let setup = Setup::new(
        r#"{
            "response": {
                "add_if_absent": {"Referrer-Policy": "strict-origin", "x-api": "v1"},
                "remove": ["server", "x-debug-*"]
            },
            "rules": [{
                "match": {"prefix": "/ui"},
                "response": {
                    "add_if_absent": {"x-frame-options": null, "content-security-policy": "default-src 'self'"},
                    "remove": []
                }
            }]
        }"#,
    );
    for kind in KINDS {
        let mut host = setup.host(kind, "GET", "/api");
        let mut filter = setup.filter();
        host.run(&mut filter);
        host.respond(
            &mut filter,
            200,
            &[
                ("x-debug-sql", "select"),
                ("x-debug-time", "3"),
                ("server", "s"),
                ("x-powered-by", "p"),
            ],
        );
        assert_eq!(values(&host, "referrer-policy"), ["strict-origin"]);
        assert_eq!(values(&host, "x-api"), ["v1"]);
        assert_eq!(values(&host, "x-frame-options"), ["DENY"]);
        assert!(
            values(&host, "x-debug-sql").is_empty() && values(&host, "x-debug-time").is_empty()
        );
        assert!(values(&host, "server").is_empty());
        // The top-level list replaced the preset's.
        assert_eq!(values(&host, "x-powered-by"), ["p"]);

        let mut host = setup.host(kind, "GET", "/ui/index.html");
        let mut filter = setup.filter();
        host.run(&mut filter);
        host.respond(&mut filter, 200, &[("server", "s")]);
        assert!(values(&host, "x-frame-options").is_empty());
        assert_eq!(
            values(&host, "content-security-policy"),
            ["default-src 'self'"]
        );
        // Inherited from the top level, not from the preset.
        assert_eq!(values(&host, "referrer-policy"), ["strict-origin"]);
        assert_eq!(values(&host, "server"), ["s"]);
    }
}

#[test]
fn removing_and_adding_the_same_header_forces_its_value() {
    let setup = Setup::new(
        r#"{"response":{"remove":["cache-control"],"add_if_absent":{"cache-control":"no-store"}}}"#,
    );
    let mut host = setup.host(HostKind::Envoy, "GET", "/");
    let mut filter = setup.filter();
    host.run(&mut filter);
    host.respond(
        &mut filter,
        200,
        &[("cache-control", "public, max-age=600")],
    );
    assert_eq!(values(&host, "cache-control"), ["no-store"]);
}

#[test]
fn framing_headers_are_never_removed_from_responses() {
    let setup = Setup::new(r#"{"response":{"remove":["content-*","transfer-*"]}}"#);
    let mut host = setup.host(HostKind::Envoy, "GET", "/");
    let mut filter = setup.filter();
    host.run(&mut filter);
    host.respond(
        &mut filter,
        200,
        &[
            ("content-length", "2"),
            ("transfer-encoding", "chunked"),
            ("content-type", "a"),
        ],
    );
    assert_eq!(values(&host, "content-length"), ["2"]);
    assert_eq!(values(&host, "transfer-encoding"), ["chunked"]);
    assert!(values(&host, "content-type").is_empty());
}

#[test]
fn dry_run_counts_but_leaves_responses_alone() {
    let setup = Setup::new(r#"{"dry_run":true}"#);
    for kind in KINDS {
        let mut host = setup.host(kind, "GET", "/").with("x-request-id", "r");
        let mut filter = setup.filter();
        host.run(&mut filter);
        host.respond(&mut filter, 200, &[("server", "s"), ("x-powered-by", "p")]);
        assert_eq!(values(&host, "server"), ["s"]);
        assert!(values(&host, "x-frame-options").is_empty());
        assert!(values(&host, "x-request-id").is_empty());
        assert_eq!(
            host.counter("palisade.headers.shadow_response_headers_removed"),
            2
        );
        assert_eq!(host.counter("palisade.headers.response_headers_removed"), 0);
    }
}

#[test]
fn rules_apply_to_the_response_of_the_request_they_matched() {
    let setup = Setup::new(
        r#"{"rules":[{"match":{"prefix":"/raw"},"response":{"remove":[],"add_if_absent":{
            "x-content-type-options":null,"strict-transport-security":null,"referrer-policy":null,
            "x-frame-options":null,"content-security-policy":null},"expose_request_id":false}}]}"#,
    );
    let mut host = setup
        .host(HostKind::Envoy, "GET", "/raw/file")
        .with("x-request-id", "r");
    let mut filter = setup.filter();
    host.run(&mut filter);
    // The request path may have been rewritten by now: the choice was made on the request.
    host.set_request_header(":path", b"/elsewhere");
    host.respond(&mut filter, 200, &[("server", "s")]);
    assert_eq!(
        host.response_headers.len(),
        2,
        "{:?}",
        host.response_headers
    );
}

#[test]
fn a_response_without_a_request_phase_gets_the_default_policy() {
    let setup = Setup::new(r#"{"rules":[{"match":{"prefix":"/quiet"},"response":{"remove":[]}}]}"#);
    for kind in KINDS {
        // An earlier filter answered: this filter never saw the request, and
        // request headers cannot be read from a response callback.
        let mut host = setup
            .host(kind, "GET", "/quiet")
            .with("x-request-id", "rid-early");
        let mut filter = setup.filter();
        assert_eq!(
            host.respond(&mut filter, 401, &[("server", "s")]),
            Flow::Continue
        );
        assert_eq!(values(&host, "x-frame-options"), ["DENY"]);
        assert!(
            values(&host, "server").is_empty(),
            "{kind:?}: defaults apply"
        );
        assert!(values(&host, "x-request-id").is_empty(), "no id known");
        assert_eq!(host.1.request_headers.get(), 0);
    }
}

#[test]
fn the_filters_own_problem_responses_are_hardened_without_duplicates() {
    let setup = Setup::new(r#"{"request":{"allowed_methods":["GET"]}}"#);
    let mut host = setup
        .host(HostKind::Envoy, "POST", "/")
        .with("x-request-id", "rid-p");
    let mut filter = setup.filter();
    assert_eq!(host.run(&mut filter), Flow::Pause);
    // Envoy runs the local reply through the encoder chain, this filter included.
    let sent = host.sent.clone().unwrap();
    host.response_headers = vec![(":status".into(), b"405".to_vec())];
    for (n, v) in &sent.headers {
        host.response_headers
            .push((n.clone(), v.clone().into_bytes()));
    }
    host.on_response(&mut filter);
    assert_eq!(values(&host, "x-request-id"), ["rid-p"]);
    assert_eq!(values(&host, "allow"), ["GET"]);
    assert_eq!(values(&host, "x-content-type-options"), ["nosniff"]);
}
