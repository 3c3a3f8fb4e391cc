//! Request checks and stripping, on Envoy and on Kong.

mod common;

use common::{Setup, KINDS};
use palisade_core::{Flow, Host, HostKind, Level};

#[test]
fn defaults_strip_spoofed_palisade_and_jwt_headers() {
    let setup = Setup::new("{}");
    for kind in KINDS {
        let mut host = setup
            .host(kind, "GET", "/orders")
            .with("X-Palisade-Jwt", "allow")
            .with("x-palisade-denied-by", "jwt")
            .with("x-palisade-headers", "deny;reason=forged")
            .with("x-jwt-sub", "admin")
            .with("X-JWT-Claims", "{\"role\":\"admin\"}")
            .with("accept", "application/json")
            .with("x-palisadex", "not ours");
        let mut filter = setup.filter();
        assert_eq!(host.run(&mut filter), Flow::Continue, "{kind:?}");
        for name in [
            "x-palisade-jwt",
            "x-palisade-denied-by",
            "x-jwt-sub",
            "x-jwt-claims",
        ] {
            assert!(host.stripped(name), "{kind:?}: {name} reached the upstream");
        }
        // Published over the client's value: the upstream gets ours only.
        assert_eq!(host.upstream("x-palisade-headers"), ["allow"], "{kind:?}");
        assert_eq!(
            host.req_header("accept").as_deref(),
            Some("application/json")
        );
        assert_eq!(host.req_header("x-palisadex").as_deref(), Some("not ours"));
        assert_eq!(host.counter("palisade.headers.request_headers_removed"), 5);
        assert!(host.sent.is_none());
    }
    // A repeated one: Envoy strips every copy; Kong refuses (repeated.rs).
}

#[test]
fn kong_blanks_stripped_headers_instead_of_removing_them() {
    let setup = Setup::new("{}");
    let mut host = setup
        .host(HostKind::Kong, "GET", "/")
        .with("x-jwt-sub", "admin");
    host.run(&mut setup.filter());
    assert_eq!(host.upstream("x-jwt-sub"), [""]);
    let mut host = setup
        .host(HostKind::Envoy, "GET", "/")
        .with("x-jwt-sub", "admin");
    host.run(&mut setup.filter());
    assert!(host.upstream("x-jwt-sub").is_empty());
}

/// Issue 11, failure 4: on Kong a removed request header still reaches the
/// upstream (nginx's proxy module sends it with its hash zeroed) and a later
/// set adds a second one. A module that believed it ran on Envoy (the old
/// detection, from a root context) removed, and the client's spoofed
/// headers reached the upstream; detected as Kong, it overwrites in place.
#[test]
fn kong_upstream_never_sees_the_clients_spoofed_headers_once_detected() {
    let config = r#"{"request":{"remove":["x-palisade-*","x-jwt-*","x-internal-*"]}}"#;
    let setup = Setup::new(config);
    let spoofed = |believed: Option<HostKind>| {
        let mut host = setup
            .host(HostKind::Kong, "GET", "/orders")
            .with("x-jwt-sub", "mallory")
            .with("x-palisade-jwt", "allow")
            .with("x-palisade-headers", "forged")
            .with("x-internal-role", "admin")
            .with("accept", "*/*");
        host.believed = believed;
        assert_eq!(host.run(&mut setup.filter()), Flow::Continue);
        // What a later jwt filter does once it verified a token.
        host.set_request_header("x-jwt-sub", b"alice");
        host
    };

    let misdetected = spoofed(Some(HostKind::Envoy));
    assert_eq!(misdetected.upstream("x-jwt-sub"), ["mallory", "alice"]);
    assert_eq!(misdetected.upstream("x-palisade-jwt"), ["allow"]);
    assert_eq!(misdetected.upstream("x-internal-role"), ["admin"]);

    let detected = spoofed(None);
    assert_eq!(detected.upstream("x-jwt-sub"), ["alice"]);
    for name in ["x-palisade-jwt", "x-internal-role"] {
        assert!(
            detected.stripped(name),
            "{name}: {:?}",
            detected.upstream(name)
        );
    }
    // The decision header is overwritten, never removed then set: one value
    // even under the mis-detection.
    for host in [&misdetected, &detected] {
        assert_eq!(host.upstream("x-palisade-headers"), ["allow"]);
        assert_eq!(host.upstream("accept"), ["*/*"]);
    }
}

#[test]
fn one_header_fetch_per_request_and_no_property_reads_by_default() {
    let setup = Setup::new("{}");
    for kind in KINDS {
        let mut host = setup
            .host(kind, "GET", "/")
            .with("x-request-id", "rid-1")
            .with("x-jwt-sub", "x");
        let mut filter = setup.filter();
        host.run(&mut filter);
        assert_eq!(host.1.request_headers.get(), 1, "{kind:?}");
        // Kong lists no pseudo-headers: `:method` (TRACE is refused) and
        // `:path` (`_method` is checked) are asked for one by one.
        let one_by_one = if kind == HostKind::Kong { 2 } else { 0 };
        assert_eq!(host.1.request_header.get(), one_by_one, "{kind:?}");
        assert_eq!(host.1.property.get(), 0, "{kind:?}");
        host.respond(&mut filter, 200, &[("server", "nginx")]);
        assert_eq!(host.1.response_headers.get(), 1, "{kind:?}");
        assert_eq!(host.1.request_headers.get(), 1, "{kind:?}");
        assert_eq!(host.resp_header("x-request-id").as_deref(), Some("rid-1"));
    }
}

/// The hot path is what a clean request costs: every host call is a VM
/// crossing, so nothing routine is counted or logged.
#[test]
fn a_clean_exchange_makes_no_metric_or_log_calls() {
    let setup = Setup::new("{}");
    for kind in KINDS {
        let mut host = setup
            .host(kind, "GET", "/")
            .with("x-request-id", "rid-1")
            .with("accept", "*/*");
        let mut filter = setup.filter();
        assert_eq!(host.run(&mut filter), Flow::Continue);
        host.respond(&mut filter, 200, &[("content-type", "application/json")]);
        assert!(host.counters.is_empty(), "{kind:?}: {:?}", host.counters);
        assert!(host.logs.borrow().is_empty(), "{kind:?}: {:?}", host.logs);
    }
}

#[test]
fn kong_pseudo_headers_are_read_one_by_one_once_each() {
    let setup = Setup::new(
        r#"{"rules":[{"match":{"prefix":"/admin"},"request":{"allowed_methods":["GET"]}}]}"#,
    );
    let mut envoy = setup.host(HostKind::Envoy, "POST", "/admin/x");
    assert_eq!(envoy.run(&mut setup.filter()), Flow::Pause);
    assert_eq!(envoy.1.request_header.get(), 0);
    let mut kong = setup.host(HostKind::Kong, "POST", "/admin/x");
    assert_eq!(kong.run(&mut setup.filter()), Flow::Pause);
    assert_eq!(
        kong.1.request_header.get(),
        2,
        ":path to match and for _method, :method to check, each once"
    );
    assert_eq!(kong.sent.as_ref().map(|s| s.status), Some(405));
    let mut kong = setup.host(HostKind::Kong, "POST", "/other");
    assert_eq!(kong.run(&mut setup.filter()), Flow::Continue);
    assert_eq!(kong.1.request_header.get(), 2);
}

#[test]
fn allow_only_keeps_listed_and_essential_headers() {
    let setup = Setup::new(
        r#"{"request":{"allow_only":["Accept","content-type","x-api-*","x-palisade-*"]}}"#,
    );
    for kind in KINDS {
        let mut host = setup
            .host(kind, "POST", "/v1/items")
            .with("host", "api.example.com")
            .with("content-length", "2")
            .with("transfer-encoding", "chunked")
            .with("x-request-id", "rid-2")
            .with(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .with("accept", "*/*")
            .with("content-type", "application/json")
            .with("x-api-key", "k")
            .with("x-api-version", "2")
            .with("cookie", "session=1")
            .with("user-agent", "curl")
            .with("x-forwarded-for", "1.2.3.4")
            .with("x-forwarded-proto", "https")
            .with("x-palisade-jwt", "allow");
        assert_eq!(host.run(&mut setup.filter()), Flow::Continue);
        for kept in [
            ":method",
            ":path",
            ":authority",
            "host",
            "content-length",
            "transfer-encoding",
            "x-forwarded-proto",
            "x-request-id",
            "traceparent",
            "accept",
            "content-type",
            "x-api-key",
            "x-api-version",
        ] {
            assert!(
                host.req_header(kept).is_some_and(|v| !v.is_empty()),
                "{kind:?}: {kept} was dropped"
            );
        }
        for dropped in ["cookie", "user-agent", "x-forwarded-for", "x-palisade-jwt"] {
            assert!(host.stripped(dropped), "{kind:?}: {dropped} was kept");
        }
        assert_eq!(host.counter("palisade.headers.request_headers_removed"), 4);
    }
}

#[test]
fn an_empty_allow_list_keeps_only_the_essentials() {
    let setup = Setup::new(r#"{"request":{"allow_only":[]}}"#);
    let mut host = setup
        .host(HostKind::Envoy, "GET", "/")
        .with("accept", "*/*")
        .with("x-request-id", "r");
    host.run(&mut setup.filter());
    assert!(host.stripped("accept"));
    assert_eq!(host.req_header("x-request-id").as_deref(), Some("r"));
}

#[test]
fn explicit_remove_beats_the_allow_list_and_may_drop_correlation_headers() {
    let setup = Setup::new(
        r#"{"request":{"allow_only":["x-debug"],"remove":["x-debug","traceparent","x-palisade-*"]}}"#,
    );
    let mut host = setup
        .host(HostKind::Envoy, "GET", "/")
        .with("x-debug", "1")
        .with(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .with("x-request-id", "r");
    host.run(&mut setup.filter());
    assert!(host.stripped("x-debug"));
    assert!(host.stripped("traceparent"));
    assert_eq!(host.req_header("x-request-id").as_deref(), Some("r"));
}

#[test]
fn framing_headers_are_never_removed_even_by_wildcards() {
    let setup = Setup::new(
        r#"{"request":{"remove":["content-*","transfer-*","hos*","x-forwarded-*","x-palisade-*"]}}"#,
    );
    for kind in KINDS {
        let mut host = setup
            .host(kind, "POST", "/")
            .with("host", "h")
            .with("content-length", "1")
            .with("transfer-encoding", "chunked")
            .with("x-forwarded-proto", "http")
            .with("x-forwarded-for", "1.2.3.4")
            .with("content-type", "text/plain");
        host.run(&mut setup.filter());
        assert_eq!(host.req_header("host").as_deref(), Some("h"));
        assert_eq!(host.req_header("content-length").as_deref(), Some("1"));
        assert_eq!(
            host.req_header("transfer-encoding").as_deref(),
            Some("chunked")
        );
        assert_eq!(
            host.req_header("x-forwarded-proto").as_deref(),
            Some("http")
        );
        assert!(host.stripped("content-type"));
        assert!(host.stripped("x-forwarded-for"));
    }
}

#[test]
fn a_disallowed_method_is_405_with_allow_and_problem_json() {
    let setup = Setup::new(r#"{"request":{"allowed_methods":["GET","HEAD","GET"]}}"#);
    for kind in KINDS {
        let mut host = setup
            .host(kind, "DELETE", "/orders/1")
            .with("x-request-id", "rid-405");
        assert_eq!(host.run(&mut setup.filter()), Flow::Pause);
        let sent = host.sent.clone().expect("a local reply");
        assert_eq!(sent.status, 405);
        assert_eq!(sent.header("allow"), Some("GET, HEAD"));
        assert_eq!(
            sent.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(sent.header("x-request-id"), Some("rid-405"));
        let body = sent.json();
        assert_eq!(body["type"], "urn:palisade:problem:method-not-allowed");
        assert_eq!(body["status"], 405);
        assert_eq!(body["request_id"], "rid-405");
        assert_eq!(body["allowed_methods"], serde_json::json!(["GET", "HEAD"]));
        assert!(!String::from_utf8_lossy(&sent.body).contains("DELETE"));
        assert_eq!(
            host.counter("palisade.headers.denied.method_not_allowed"),
            1
        );
        assert_eq!(
            host.req_header("x-palisade-headers").as_deref(),
            Some("deny;reason=method_not_allowed")
        );
        assert_eq!(sent.header("x-palisade-denied-by"), Some("headers"));

        for ok in ["GET", "HEAD"] {
            let mut host = setup.host(kind, ok, "/");
            assert_eq!(host.run(&mut setup.filter()), Flow::Continue, "{ok}");
        }
        for odd in ["get", "PROPFIND", "", "G\u{0}T"] {
            let mut host = setup.host(kind, odd, "/");
            assert_eq!(host.run(&mut setup.filter()), Flow::Pause, "{odd:?}");
            let body = host.sent.clone().unwrap().body;
            assert!(odd.is_empty() || !String::from_utf8_lossy(&body).contains(odd));
        }
    }
}

#[test]
fn too_many_headers_is_431_and_pseudo_headers_do_not_count() {
    let setup = Setup::new(r#"{"request":{"max_headers":3}}"#);
    for kind in KINDS {
        let three = setup
            .host(kind, "GET", "/")
            .with("a", "1")
            .with("b", "1")
            .with("c", "1");
        let mut host = three;
        assert_eq!(host.run(&mut setup.filter()), Flow::Continue, "{kind:?}");
        let mut host = setup
            .host(kind, "GET", "/")
            .with("a", "1")
            .with("b", "1")
            .with("c", "1")
            .with("c", "2");
        assert_eq!(host.run(&mut setup.filter()), Flow::Pause);
        let sent = host.sent.clone().unwrap();
        assert_eq!(sent.status, 431);
        assert_eq!(sent.json()["type"], "urn:palisade:problem:too-many-headers");
        assert_eq!(sent.json()["limit"], 3);
        assert_eq!(host.counter("palisade.headers.denied.too_many_headers"), 1);
    }
}

#[test]
fn too_large_headers_is_431() {
    // "abc" + "1234567" = 10 bytes.
    let setup = Setup::new(r#"{"request":{"max_header_bytes":10}}"#);
    for kind in KINDS {
        let mut host = setup.host(kind, "GET", "/").with("abc", "1234567");
        assert_eq!(host.run(&mut setup.filter()), Flow::Continue);
        let mut host = setup.host(kind, "GET", "/").with("abc", "12345678");
        assert_eq!(host.run(&mut setup.filter()), Flow::Pause);
        let sent = host.sent.clone().unwrap();
        assert_eq!(sent.status, 431);
        assert_eq!(
            sent.json()["type"],
            "urn:palisade:problem:headers-too-large"
        );
        assert_eq!(host.counter("palisade.headers.denied.headers_too_large"), 1);
    }
}

#[test]
fn default_limits_are_64_headers_and_16_kib() {
    let setup = Setup::new("{}");
    let names: Vec<String> = (0..65).map(|i| format!("x-h{i:02}")).collect();
    for kind in KINDS {
        let mut host = setup.host(kind, "GET", "/");
        for n in names.iter().take(64) {
            host = host.with(n, "v");
        }
        assert_eq!(host.run(&mut setup.filter()), Flow::Continue, "64 headers");
        let mut host = setup.host(kind, "GET", "/");
        for n in &names {
            host = host.with(n, "v");
        }
        assert_eq!(host.run(&mut setup.filter()), Flow::Pause, "65 headers");

        let value = "v".repeat(16 * 1024 - 5);
        let mut host = setup.host(kind, "GET", "/").with("x-big", &value);
        assert_eq!(host.run(&mut setup.filter()), Flow::Continue, "16 KiB");
        let value = "v".repeat(16 * 1024 - 4);
        let mut host = setup.host(kind, "GET", "/").with("x-big", &value);
        assert_eq!(host.run(&mut setup.filter()), Flow::Pause, "16 KiB + 1");
        assert_eq!(host.sent.clone().unwrap().status, 431);
    }
}

#[test]
fn control_characters_are_400_and_never_echoed() {
    let setup = Setup::new("{}");
    let controls: Vec<u8> = (0u8..0x20).filter(|b| *b != b'\t').chain([0x7f]).collect();
    for kind in KINDS {
        for b in &controls {
            let value = [b"secret-value-".as_slice(), &[*b], b"-tail"].concat();
            let mut host = setup
                .host(kind, "GET", "/")
                .with("x-request-id", "rid-ctl")
                .with_bytes("x-secret-name", &value);
            assert_eq!(host.run(&mut setup.filter()), Flow::Pause, "byte {b:#04x}");
            let sent = host.sent.clone().unwrap();
            assert_eq!(sent.status, 400);
            let body = sent.json();
            assert_eq!(body["type"], "urn:palisade:problem:control-character");
            assert_eq!(
                body["detail"],
                "a header name or value contains a control character"
            );
            assert_eq!(body["request_id"], "rid-ctl");
            assert_eq!(host.counter("palisade.headers.denied.control_character"), 1);
            let text = String::from_utf8_lossy(&sent.body).into_owned() + &host.all_logs();
            assert!(!text.contains("secret"), "request data leaked: {text}");
        }
        // A control character in a name, too.
        let mut host = setup.host(kind, "GET", "/").with("x-\u{1}name", "v");
        assert_eq!(host.run(&mut setup.filter()), Flow::Pause);
        // HTAB, obs-text and non-UTF-8 bytes are not control characters.
        let mut host = setup
            .host(kind, "GET", "/")
            .with("x-tab", "a\tb")
            .with_bytes("x-latin1", b"caf\xe9 \xff\x80");
        assert_eq!(host.run(&mut setup.filter()), Flow::Continue);
    }
}

#[test]
fn control_characters_can_be_allowed() {
    let setup = Setup::new(r#"{"request":{"reject_control_characters":false}}"#);
    let mut host = setup
        .host(HostKind::Envoy, "GET", "/")
        .with_bytes("x-a", b"a\x01b");
    assert_eq!(host.run(&mut setup.filter()), Flow::Continue);
}

#[test]
fn checks_run_in_order_431_then_400_then_405() {
    let setup = Setup::new(
        r#"{"request":{"max_headers":2,"max_header_bytes":8,"allowed_methods":["GET"]}}"#,
    );
    let status = |host: &mut common::TestHost| {
        host.run(&mut setup.filter());
        host.sent
            .as_ref()
            .map(|s| (s.status, s.json()["type"].clone()))
    };
    let mut h = setup
        .host(HostKind::Envoy, "POST", "/")
        .with("a", "1\u{1}")
        .with("b", "12345678")
        .with("c", "1");
    assert_eq!(
        status(&mut h).unwrap().1,
        "urn:palisade:problem:too-many-headers"
    );
    let mut h = setup
        .host(HostKind::Envoy, "POST", "/")
        .with("a", "1\u{1}")
        .with("b", "12345678");
    assert_eq!(
        status(&mut h).unwrap().1,
        "urn:palisade:problem:headers-too-large"
    );
    let mut h = setup.host(HostKind::Envoy, "POST", "/").with("a", "1\u{1}");
    assert_eq!(
        status(&mut h).unwrap().1,
        "urn:palisade:problem:control-character"
    );
    let mut h = setup.host(HostKind::Envoy, "POST", "/").with("a", "1");
    assert_eq!(
        status(&mut h).unwrap().1,
        "urn:palisade:problem:method-not-allowed"
    );
}

#[test]
fn dry_run_decides_logs_and_counts_but_changes_nothing() {
    let setup = Setup::new(
        r#"{"dry_run":true,"request":{"allowed_methods":["GET"],"allow_only":["accept"]}}"#,
    );
    for kind in KINDS {
        let mut host = setup
            .host(kind, "POST", "/")
            .with("x-request-id", "rid-dry")
            .with("x-palisade-jwt", "allow")
            .with("cookie", "c")
            .with("accept", "*/*");
        let mut filter = setup.filter();
        assert_eq!(host.run(&mut filter), Flow::Continue, "{kind:?}");
        assert!(host.sent.is_none());
        assert_eq!(host.req_header("x-palisade-jwt").as_deref(), Some("allow"));
        assert_eq!(host.req_header("cookie").as_deref(), Some("c"));
        assert_eq!(
            host.req_header("x-palisade-headers").as_deref(),
            Some("shadow-deny;reason=method_not_allowed")
        );
        assert_eq!(host.req_header("x-palisade-denied-by"), None);
        assert_eq!(
            host.counter("palisade.headers.shadow_denied.method_not_allowed"),
            1
        );
        assert_eq!(
            host.counter("palisade.headers.denied.method_not_allowed"),
            0
        );
        assert_eq!(
            host.counter("palisade.headers.shadow_request_headers_removed"),
            2
        );
        assert_eq!(host.counter("palisade.headers.request_headers_removed"), 0);
        assert!(host.0.logged(
            Level::Info,
            "request_id=rid-dry dry_run: would remove 2 request header(s)"
        ));
        assert!(host.0.logged(Level::Warn, "dry_run: would deny with 405"));
        assert!(!host.all_logs().contains("cookie"));

        // An allowed request in dry-run is published as allowed.
        let mut host = setup.host(kind, "GET", "/").with("accept", "*/*");
        assert_eq!(host.run(&mut setup.filter()), Flow::Continue);
        assert_eq!(
            host.req_header("x-palisade-headers").as_deref(),
            Some("allow")
        );
    }
}

#[test]
fn rules_override_the_defaults_first_match_wins() {
    let setup = Setup::new(
        r#"{
            "request": {"allowed_methods": ["GET"], "max_headers": 10},
            "rules": [
                {"match": {"prefix": "/admin"}, "request": {"allowed_methods": ["GET", "POST"], "max_headers": 2}},
                {"match": {"prefix": "/admin/open"}, "request": {"allowed_methods": null}},
                {"match": {"prefix": "/uploads", "methods": ["PUT"]}, "request": {"allowed_methods": ["PUT"], "allow_only": ["content-type"]}},
                {"match": {"path_template": "/legacy/{id}"}, "request": {"allowed_methods": null, "remove": ["x-palisade-*", "x-jwt-*", "cookie"]}}
            ]
        }"#,
    );
    let run = |method: &str, path: &str, extra: &[(&str, &str)]| {
        let mut host = setup.host(HostKind::Envoy, method, path);
        for (n, v) in extra {
            host = host.with(n, v);
        }
        let flow = host.run(&mut setup.filter());
        (flow, host.sent.as_ref().map(|s| s.status), host)
    };
    // Defaults.
    assert_eq!(run("POST", "/orders", &[]).1, Some(405));
    assert_eq!(run("GET", "/orders", &[]).1, None);
    // Rule 0 (also for /admin/open: first match wins over rule 1).
    assert_eq!(run("POST", "/admin/x", &[]).1, None);
    assert_eq!(run("DELETE", "/admin/open", &[]).1, Some(405));
    assert_eq!(
        run("GET", "/admin/x", &[("a", "1"), ("b", "1"), ("c", "1")]).1,
        Some(431)
    );
    // Rule 0 inherited nothing it did not override: the default remove list still applies.
    assert!(run("GET", "/admin/x", &[("x-jwt-sub", "a")])
        .2
        .stripped("x-jwt-sub"));
    // A path normalised before matching cannot dodge a rule.
    assert_eq!(run("POST", "/public/..%2fadmin/x", &[]).1, None);
    assert_eq!(run("DELETE", "/public/..%2fadmin/x", &[]).1, Some(405));
    // Rule 2 matches on method; other methods fall to the defaults.
    let (_, status, host) = run(
        "PUT",
        "/uploads/1",
        &[("content-type", "a"), ("accept", "b")],
    );
    assert_eq!(status, None);
    assert!(host.stripped("accept"));
    assert_eq!(run("POST", "/uploads/1", &[]).1, Some(405));
    // Rule 3.
    let (_, status, host) = run("PATCH", "/legacy/7", &[("cookie", "c"), ("x-jwt-sub", "a")]);
    assert_eq!(status, None);
    assert!(host.stripped("cookie") && host.stripped("x-jwt-sub"));
    assert_eq!(run("PATCH", "/legacy/7/x", &[]).1, Some(405));
}

#[test]
fn dry_run_can_be_set_per_rule() {
    let setup = Setup::new(
        r#"{"dry_run":true,"request":{"allowed_methods":["GET"]},
            "rules":[{"match":{"prefix":"/strict"},"dry_run":false}]}"#,
    );
    let mut host = setup.host(HostKind::Envoy, "POST", "/strict/a");
    assert_eq!(host.run(&mut setup.filter()), Flow::Pause);
    let mut host = setup.host(HostKind::Envoy, "POST", "/other");
    assert_eq!(host.run(&mut setup.filter()), Flow::Continue);

    let setup = Setup::new(
        r#"{"request":{"allowed_methods":["GET"]},
            "rules":[{"match":{"prefix":"/new"},"dry_run":true}]}"#,
    );
    let mut host = setup.host(HostKind::Envoy, "POST", "/new/a");
    assert_eq!(host.run(&mut setup.filter()), Flow::Continue);
    assert_eq!(
        host.counter("palisade.headers.shadow_denied.method_not_allowed"),
        1
    );
    let mut host = setup.host(HostKind::Envoy, "POST", "/old");
    assert_eq!(host.run(&mut setup.filter()), Flow::Pause);
}

#[test]
fn route_names_are_read_only_when_a_rule_uses_them() {
    let by_name = Setup::new(
        // Without the audit trail: a denial's record reads the name again.
        r#"{"audit":"off","rules":[{"match":{"route_name":"internal"},"request":{"allowed_methods":["GET"]}}]}"#,
    );
    for (kind, property) in [
        (HostKind::Envoy, "xds.route_name"),
        (HostKind::Kong, "kong.route_name"),
    ] {
        let mut host = by_name.host(kind, "POST", "/x");
        host.properties
            .insert(property.into(), b"internal".to_vec());
        assert_eq!(host.run(&mut by_name.filter()), Flow::Pause, "{kind:?}");
        assert_eq!(host.1.property.get(), 1);
        let mut host = by_name.host(kind, "POST", "/x");
        host.properties.insert(property.into(), b"public".to_vec());
        assert_eq!(host.run(&mut by_name.filter()), Flow::Continue, "{kind:?}");
    }
    let by_prefix =
        Setup::new(r#"{"rules":[{"match":{"prefix":"/a"},"request":{"max_headers":5}}]}"#);
    let mut host = by_prefix.host(HostKind::Envoy, "GET", "/a");
    host.run(&mut by_prefix.filter());
    assert_eq!(host.1.property.get(), 0);
}

#[test]
fn repeated_headers_are_removed_with_one_host_call_per_name() {
    let setup = Setup::new(r#"{"request":{"max_headers":100000,"max_header_bytes":10000000}}"#);
    let mut host = setup.host(HostKind::Envoy, "GET", "/");
    for i in 0..5000 {
        host = host.with("x-jwt-sub", &i.to_string());
    }
    assert_eq!(host.run(&mut setup.filter()), Flow::Continue);
    assert!(host.stripped("x-jwt-sub"));
    assert_eq!(
        host.counter("palisade.headers.request_headers_removed"),
        5000
    );
}
