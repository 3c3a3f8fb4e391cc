//! Methods no rule should let through: TRACE and TRACK by default (issue 11,
//! failure 11) and method overrides (failure 13), on Envoy and on Kong.

mod common;

use common::{Setup, TestHost, KINDS};
use palisade_core::method::OVERRIDE_HEADERS;
use palisade_core::{Flow, HostKind};
use serde_json::json;

/// The status of the local reply, if the filter sent one.
fn refused(host: &TestHost) -> Option<u16> {
    host.sent.as_ref().map(|s| s.status)
}

/// The local reply's body, empty when none was sent.
fn body_text(host: &TestHost) -> String {
    host.sent
        .as_ref()
        .map(|s| String::from_utf8_lossy(&s.body).into_owned())
        .unwrap_or_default()
}

/// A 405 as every refusal of a method is: problem+json, `Allow`, the request
/// id, and nothing the client sent.
fn assert_405(host: &TestHost, allow: &str, secret: &str) {
    let sent = host.sent.clone().expect("a local reply");
    assert_eq!(sent.status, 405);
    assert_eq!(sent.header("allow"), Some(allow));
    assert_eq!(
        sent.header("content-type"),
        Some("application/problem+json")
    );
    let body = sent.json();
    assert_eq!(body["type"], "urn:palisade:problem:method-not-allowed");
    assert_eq!(body["request_id"], "rid-m");
    let allowed: Vec<&str> = allow.split(", ").collect();
    assert_eq!(body["allowed_methods"], json!(allowed));
    let text = String::from_utf8_lossy(&sent.body);
    assert!(!text.contains(secret), "{secret} echoed: {text}");
    assert!(!host.all_logs().contains(secret), "{secret} logged");
}

const EVERY_BUT_TRACE: &str = "GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, PATCH";

#[test]
fn the_preset_refuses_trace_and_track_with_405() {
    let setup = Setup::new("{}");
    for kind in KINDS {
        for method in ["TRACE", "TRACK", "trace", "Track"] {
            let mut host = setup
                .host(kind, method, "/orders")
                .with("x-request-id", "rid-m");
            assert_eq!(host.run(&mut setup.filter()), Flow::Pause, "{kind:?}");
            assert_405(&host, EVERY_BUT_TRACE, "TRAC");
            assert_eq!(
                host.sent
                    .as_ref()
                    .and_then(|s| s.header("x-palisade-denied-by")),
                Some("headers")
            );
        }
        for method in ["GET", "POST", "DELETE", "OPTIONS", "PROPFIND", "TRACES"] {
            let mut host = setup.host(kind, method, "/orders");
            assert_eq!(
                host.run(&mut setup.filter()),
                Flow::Continue,
                "{kind:?} {method}"
            );
        }
        let mut host = setup.host(kind, "TRACE", "/");
        host.run(&mut setup.filter());
        assert_eq!(
            host.counter("palisade.headers.denied.method_not_allowed"),
            1
        );
    }
}

#[test]
fn listing_trace_allows_it_and_a_list_without_it_refuses_it() {
    let setup = Setup::new(r#"{"request":{"allowed_methods":["GET","TRACE"]}}"#);
    let mut host = setup.host(HostKind::Envoy, "TRACE", "/");
    assert_eq!(host.run(&mut setup.filter()), Flow::Continue);
    // TRACK is no method a config can name: refused by any list.
    let mut host = setup.host(HostKind::Envoy, "TRACK", "/");
    assert_eq!(host.run(&mut setup.filter()), Flow::Pause);

    let setup = Setup::new(
        r#"{"rules":[{"match":{"prefix":"/debug"},"request":{"allowed_methods":["TRACE"]}}]}"#,
    );
    let mut host = setup.host(HostKind::Envoy, "TRACE", "/debug/echo");
    assert_eq!(host.run(&mut setup.filter()), Flow::Continue);
    let mut host = setup.host(HostKind::Envoy, "TRACE", "/orders");
    assert_eq!(host.run(&mut setup.filter()), Flow::Pause);
}

#[test]
fn override_headers_are_stripped_by_default() {
    let setup = Setup::new("{}");
    for kind in KINDS {
        let mut host = setup
            .host(kind, "POST", "/orders/1")
            .with("X-HTTP-Method-Override", "DELETE")
            .with("x-http-method", "DELETE")
            .with("x-method-override", "DELETE")
            .with("x-http-methodx", "kept");
        assert_eq!(host.run(&mut setup.filter()), Flow::Continue, "{kind:?}");
        for name in OVERRIDE_HEADERS {
            assert!(
                host.stripped(name),
                "{kind:?}: {name} reached the upstream: {:?}",
                host.upstream(name)
            );
        }
        assert_eq!(host.upstream("x-http-methodx"), ["kept"]);
        assert_eq!(host.counter("palisade.headers.request_headers_removed"), 3);
    }
    // A repeated override: Envoy strips every copy; Kong could overwrite
    // only the first, so it refuses the request (tests/repeated.rs).
    for (kind, flow) in [
        (HostKind::Envoy, Flow::Continue),
        (HostKind::Kong, Flow::Pause),
    ] {
        let mut host = setup
            .host(kind, "POST", "/orders/1")
            .with("X-HTTP-Method-Override", "DELETE")
            .with("x-http-method-override", "PUT");
        assert_eq!(host.run(&mut setup.filter()), flow, "{kind:?}");
        assert!(host.stripped("x-http-method-override") || flow == Flow::Pause);
    }
}

#[test]
fn stripped_override_headers_never_choose_a_rule() {
    let setup = Setup::new(
        r#"{"rules":[{"match":{"prefix":"/admin","methods":["DELETE"]},"request":{"allowed_methods":["GET"]}}]}"#,
    );
    for kind in KINDS {
        let mut host = setup
            .host(kind, "POST", "/admin/users/1")
            .with("x-http-method-override", "DELETE");
        assert_eq!(host.run(&mut setup.filter()), Flow::Continue, "{kind:?}");
        assert!(host.stripped("x-http-method-override"));
    }
}

#[test]
fn a_method_parameter_naming_a_method_the_route_refuses_is_405() {
    let setup = Setup::new(r#"{"request":{"allowed_methods":["GET","POST"]}}"#);
    for kind in KINDS {
        for path in [
            "/orders/1?_method=DELETE",
            "/orders/1?a=1&_method=delete",
            "/orders/1?%5Fmethod=DELETE",
            "/orders/1?_method=%44ELETE",
            "/orders/1?_method=GET&_method=DELETE",
            "/orders/1?_method=GET,DELETE",
            "/orders/1?_method=TRACK",
            "/orders/1?_method=SECRET-VALUE",
        ] {
            let mut host = setup.host(kind, "POST", path).with("x-request-id", "rid-m");
            assert_eq!(
                host.run(&mut setup.filter()),
                Flow::Pause,
                "{kind:?} {path}"
            );
            assert_405(&host, "GET, POST", "SECRET-VALUE");
            assert!(!body_text(&host).contains("DELETE"), "{path}");
            assert_eq!(host.counter("palisade.headers.denied.method_override"), 1);
        }
        for path in [
            "/orders/1?_method=GET",
            "/orders/1?_method=post",
            "/orders/1?_method=",
            "/orders/1?_methods=DELETE",
            "/orders/1?x=_method%3DDELETE",
            "/orders/1#_method=DELETE",
        ] {
            let mut host = setup.host(kind, "POST", path);
            assert_eq!(
                host.run(&mut setup.filter()),
                Flow::Continue,
                "{kind:?} {path}"
            );
        }
    }
    // The preset refuses TRACE through `_method` too, and any value that
    // names no method.
    let setup = Setup::new("{}");
    for path in ["/?_method=TRACE", "/?_method=BOGUS"] {
        let mut host = setup.host(HostKind::Envoy, "POST", path);
        assert_eq!(host.run(&mut setup.filter()), Flow::Pause, "{path}");
    }
    let mut host = setup.host(HostKind::Envoy, "POST", "/?_method=DELETE");
    assert_eq!(host.run(&mut setup.filter()), Flow::Continue);
}

const KEEP: &str = r#"{"method_override":"keep","request":{"allowed_methods":["GET","POST"]}}"#;

#[test]
fn kept_overrides_are_judged_as_the_method_the_upstream_performs() {
    let setup = Setup::new(KEEP);
    for kind in KINDS {
        for name in OVERRIDE_HEADERS {
            let mut host = setup
                .host(kind, "POST", "/orders/1")
                .with("x-request-id", "rid-m")
                .with(name, "DELETE");
            assert_eq!(
                host.run(&mut setup.filter()),
                Flow::Pause,
                "{kind:?} {name}"
            );
            assert_405(&host, "GET, POST", "DELETE");
        }
        let mut host = setup
            .host(kind, "POST", "/orders")
            .with("x-http-method-override", "GET");
        assert_eq!(host.run(&mut setup.filter()), Flow::Continue, "{kind:?}");
        assert_eq!(host.upstream("x-http-method-override"), ["GET"]);
        assert!(host.counters.is_empty(), "{:?}", host.counters);
    }
}

#[test]
fn a_kept_override_that_names_no_single_allowed_method_never_passes() {
    for config in [KEEP, r#"{"method_override":"keep"}"#] {
        let setup = Setup::new(config);
        for kind in KINDS {
            for overrides in [
                &[("x-http-method-override", "SECRET-VALUE")][..],
                &[("x-http-method-override", "GET, DELETE")],
                &[("x-http-method-override", "GET,SECRET-VALUE")],
                &[("x-http-method-override", "TRACE")],
                &[("x-http-method-override", "TRACK")],
                &[("x-http-method-override", "GET"), ("x-http-method", "PUT")],
                &[
                    ("x-http-method-override", "GET"),
                    ("x-http-method-override", "POST"),
                ],
                &[("x-method-override", "G\u{1}ET")],
            ] {
                let mut host = setup
                    .host(kind, "POST", "/orders")
                    .with("x-request-id", "rid-m");
                for (name, value) in overrides {
                    host = host.with(name, value);
                }
                let flow = host.run(&mut setup.filter());
                assert_eq!(flow, Flow::Pause, "{config} {kind:?} {overrides:?}");
                // A control byte is refused as such (400) before the method.
                let control = overrides.iter().any(|(_, v)| v.contains('\u{1}'));
                assert_eq!(refused(&host), Some(if control { 400 } else { 405 }));
                assert!(!body_text(&host).contains("SECRET-VALUE"));
                assert!(!host.all_logs().contains("SECRET-VALUE"));
            }
            // Empty values are no override (frameworks ignore them; a header
            // stripped on Kong is left empty), and agreeing ones are one.
            for overrides in [
                &[("x-http-method-override", "")][..],
                &[("x-http-method-override", " get ")],
                &[("x-http-method-override", "GET"), ("x-http-method", "get")],
            ] {
                let mut host = setup.host(kind, "POST", "/orders");
                for (name, value) in overrides {
                    host = host.with(name, value);
                }
                let flow = host.run(&mut setup.filter());
                assert_eq!(flow, Flow::Continue, "{config} {kind:?} {overrides:?}");
            }
        }
    }
}

#[test]
fn with_overrides_kept_both_the_method_and_the_override_must_be_allowed() {
    let setup =
        Setup::new(r#"{"method_override":"keep","request":{"allowed_methods":["GET","DELETE"]}}"#);
    let mut host = setup
        .host(HostKind::Envoy, "POST", "/")
        .with("x-http-method-override", "DELETE");
    assert_eq!(host.run(&mut setup.filter()), Flow::Pause);
    assert_eq!(
        host.counter("palisade.headers.denied.method_not_allowed"),
        1
    );
}

#[test]
fn kept_overrides_choose_the_rule() {
    let setup = Setup::new(
        r#"{"method_override":"keep","rules":[{"match":{"prefix":"/admin","methods":["DELETE"]},"request":{"allowed_methods":["GET"]}}]}"#,
    );
    for kind in KINDS {
        let mut host = setup
            .host(kind, "POST", "/admin/users/1")
            .with("x-http-method-override", "DELETE");
        assert_eq!(host.run(&mut setup.filter()), Flow::Pause, "{kind:?}");
        let mut host = setup.host(kind, "POST", "/admin/users/1?_method=DELETE");
        assert_eq!(host.run(&mut setup.filter()), Flow::Pause, "{kind:?}");
        let mut host = setup.host(kind, "POST", "/admin/users/1");
        assert_eq!(host.run(&mut setup.filter()), Flow::Continue, "{kind:?}");
    }
}

#[test]
fn override_refusals_are_shadowed_in_dry_run() {
    let setup = Setup::new(
        r#"{"dry_run":true,"method_override":"keep","request":{"allowed_methods":["GET","POST"]}}"#,
    );
    let mut host = setup
        .host(HostKind::Envoy, "POST", "/?_method=DELETE")
        .with("x-http-method-override", "DELETE");
    assert_eq!(host.run(&mut setup.filter()), Flow::Continue);
    assert!(host.sent.is_none());
    assert_eq!(
        host.counter("palisade.headers.shadow_denied.method_override"),
        1
    );
    assert_eq!(host.upstream("x-http-method-override"), ["DELETE"]);
    // Dry run strips nothing, the override headers included.
    let setup = Setup::new(r#"{"dry_run":true}"#);
    let mut host = setup
        .host(HostKind::Envoy, "POST", "/")
        .with("x-http-method-override", "DELETE");
    assert_eq!(host.run(&mut setup.filter()), Flow::Continue);
    assert_eq!(host.upstream("x-http-method-override"), ["DELETE"]);
    assert_eq!(
        host.counter("palisade.headers.shadow_request_headers_removed"),
        1
    );
}
