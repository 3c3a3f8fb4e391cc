//! The HTTP response state machine on both hosts: what the client receives.
mod common;

use common::*;
use palisade_core::fake::FakeHost;
use palisade_core::{HostKind, Level};

const BOTH: [HostKind; 2] = [HostKind::Envoy, HostKind::Kong];

const LEAKY_HEADERS: &[(&str, &str)] = &[
    ("content-type", "text/plain"),
    ("content-length", "200"),
    ("server", "Apache-Coyote/1.1"),
    ("x-powered-by", "Servlet/3.0"),
    ("x-debug-trace", "OrderService:117"),
    ("x-backend-host", "orders-7f9c.internal"),
    ("x-envoy-upstream-service-time", "12"),
    ("etag", "\"abc\""),
    ("strict-transport-security", "max-age=31536000"),
    ("retry-after", "5"),
];

fn assert_problem(out: &Outcome, status: u16, title: &str) {
    assert_eq!(out.status, status, "{out:?}");
    assert_eq!(out.header("content-type"), Some("application/problem+json"));
    assert_eq!(out.header("x-request-id"), Some("rid-1"));
    assert_eq!(out.header("cache-control"), Some("no-store"));
    let v = out.json();
    assert_eq!(v["type"], "about:blank", "{}", out.text());
    assert_eq!(v["title"], title);
    assert_eq!(v["status"], status);
    assert_eq!(v["request_id"], "rid-1");
}

fn assert_stripped(out: &Outcome) {
    for h in [
        "server",
        "x-powered-by",
        "x-debug-trace",
        "x-backend-host",
        "x-envoy-upstream-service-time",
        "etag",
        "content-length",
    ] {
        assert_eq!(out.header(h), None, "{h} leaked: {:?}", out.headers);
    }
    assert_eq!(
        out.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    assert_eq!(out.header("retry-after"), Some("5"));
}

#[test]
fn upstream_500_with_a_java_stack_becomes_a_problem_on_both_hosts() {
    for kind in BOTH {
        let mut host = request(kind, "/orders");
        let plugin = configure(&mut host, "{}");
        let body = JAVA_STACK.as_bytes();
        let out = exchange(&plugin, &mut host, 500, LEAKY_HEADERS, &[body], None);
        assert!(out.local_reply.is_none());
        assert_problem(&out, 500, "Internal Server Error");
        assert_stripped(&out);
        assert!(!out.text().contains("java"), "{}", out.text());
        assert_eq!(host.counter("palisade.errors.masked.status"), 1);
        assert!(
            host.logged(Level::Warn, "palisade.errors request_id=rid-1 masked 500 (status); body starts: \"java.lang.NullPointerException: Cannot invoke \\\"String.length()\\\""),
            "{:?}",
            host.logs
        );
    }
}

#[test]
fn a_big_chunked_5xx_body_is_dropped_as_it_streams() {
    for kind in BOTH {
        let mut host = request(kind, "/big");
        let plugin = configure(&mut host, "{}");
        let chunk = vec![b'x'; 1 << 20];
        let chunks: Vec<&[u8]> = (0..10).map(|_| chunk.as_slice()).collect();
        let out = exchange(
            &plugin,
            &mut host,
            502,
            &[("content-length", "10485760")],
            &chunks,
            None,
        );
        assert_problem(&out, 502, "Bad Gateway");
        assert_eq!(out.max_buffered, 1 << 20, "never more than one chunk held");
        assert!(out.body.len() < 200);
        assert!(!out.hung);
    }
}

#[test]
fn the_log_excerpt_spans_chunks_and_is_escaped() {
    let mut host = request(HostKind::Envoy, "/x");
    let plugin = configure(&mut host, r#"{"log_body_bytes": 12}"#);
    let out = exchange(
        &plugin,
        &mut host,
        500,
        &[],
        &[b"ab\x00\xff\n", b"\x1b[31mred", b"never logged"],
        None,
    );
    assert_problem(&out, 500, "Internal Server Error");
    assert!(
        host.logged(Level::Warn, r#"body starts: "ab\x00\xff\n\x1b[31mre""#),
        "{:?}",
        host.logs
    );
    assert_eq!(
        host.logs
            .borrow()
            .iter()
            .filter(|(l, _)| *l == Level::Warn)
            .count(),
        1
    );
}

#[test]
fn a_bodiless_5xx_is_a_local_reply_on_envoy_keeping_safe_headers() {
    let mut host = request(HostKind::Envoy, "/x");
    let plugin = configure(&mut host, "{}");
    let mut headers = LEAKY_HEADERS.to_vec();
    headers.push(("date", "Mon, 01 Jan 2024 00:00:00 GMT"));
    headers.push(("x-request-id", "upstream-id"));
    let out = exchange(&plugin, &mut host, 503, &headers, &[], None);
    let sent = out.local_reply.clone().expect("local reply");
    assert_eq!(sent.status, 503);
    assert_problem(&out, 503, "Service Unavailable");
    assert_stripped(&out);
    assert_eq!(sent.header("date"), None, "the proxy writes its own date");
    let ids: Vec<_> = sent
        .headers
        .iter()
        .filter(|(n, _)| n == "x-request-id")
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(host.counter("palisade.errors.masked.status"), 1);
    assert!(host.logged(Level::Warn, "masked 503 (status); body starts: \"\""));
}

#[test]
fn a_bodiless_5xx_on_kong_is_rewritten_not_replied() {
    let mut host = request(HostKind::Kong, "/x");
    let plugin = configure(&mut host, "{}");
    let out = exchange(&plugin, &mut host, 503, LEAKY_HEADERS, &[], None);
    assert!(out.local_reply.is_none());
    assert_problem(&out, 503, "Service Unavailable");
    assert_stripped(&out);
}

#[test]
fn unmasked_responses_pass_byte_for_byte_without_body_access() {
    for kind in BOTH {
        for (status, ct) in [
            (200, "application/json"),
            (302, "text/html"),
            (404, "text/html"),
            (201, "text/plain"),
        ] {
            let mut host = request(kind, "/ok");
            let plugin = configure(&mut host, r#"{"detect_leaks_in": []}"#);
            let headers = [
                ("content-type", ct),
                ("content-length", "10"),
                ("server", "nginx"),
                ("x-powered-by", "PHP"),
            ];
            let chunks: [&[u8]; 2] = [b"hello", b"world"];
            let out = exchange(&plugin, &mut host, status, &headers, &chunks, None);
            assert_eq!(out.status, status);
            let mut want = vec![(":status".to_string(), status.to_string())];
            want.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
            assert_eq!(out.headers, want);
            assert_eq!(out.body, b"helloworld");
            assert_eq!(
                (out.body_reads, out.body_writes, out.max_buffered),
                (0, 0, 5)
            );
            assert_eq!(host.counter("palisade.errors.passed"), 1);
        }
    }
}

#[test]
fn a_4xx_with_a_python_traceback_is_masked_without_holding_headers() {
    for kind in BOTH {
        let mut host = request(kind, "/x");
        let plugin = configure(&mut host, "{}");
        let body = PYTHON_STACK.as_bytes();
        let (a, b) = body.split_at(20);
        let out = exchange(
            &plugin,
            &mut host,
            404,
            &[
                ("content-type", "text/plain"),
                ("content-length", "150"),
                ("server", "gunicorn"),
            ],
            &[a, b],
            None,
        );
        assert!(!out.held_headers);
        assert_eq!(out.status, 404);
        // Headers left before the body was seen: only the length could be dropped.
        assert_eq!(out.header("content-type"), Some("text/plain"));
        assert_eq!(out.header("content-length"), None);
        assert_eq!(out.json()["status"], 404);
        assert_eq!(out.json()["title"], "Not Found");
        assert_eq!(out.json()["request_id"], "rid-1");
        assert!(!out.text().contains("Traceback"));
        assert_eq!(host.counter("palisade.errors.masked.leak"), 1);
        assert!(
            host.logged(
                Level::Warn,
                "masked 404 (leak: python_stack,file_path); body starts: \"Traceback"
            ),
            "{:?}",
            host.logs
        );
    }
}

#[test]
fn hold_headers_masks_a_leaky_4xx_completely_on_envoy() {
    let mut host = request(HostKind::Envoy, "/x");
    let plugin = configure(&mut host, r#"{"hold_headers": true}"#);
    let body = PYTHON_STACK.as_bytes();
    let (a, b) = body.split_at(30);
    let out = exchange(
        &plugin,
        &mut host,
        404,
        &[
            ("content-type", "text/plain"),
            ("content-length", "150"),
            ("server", "gunicorn"),
        ],
        &[a, b],
        None,
    );
    assert!(out.held_headers);
    assert_problem(&out, 404, "Not Found");
    assert_eq!(out.header("server"), None);
    assert_eq!(out.header("content-length"), None);
    assert!(!out.hung);
}

#[test]
fn hold_headers_is_ignored_on_kong() {
    let mut host = request(HostKind::Kong, "/x");
    let plugin = configure(&mut host, r#"{"hold_headers": true}"#);
    let out = exchange(
        &plugin,
        &mut host,
        404,
        &[("content-type", "text/plain")],
        &[PYTHON_STACK.as_bytes()],
        None,
    );
    assert!(!out.held_headers);
    assert_eq!(out.header("content-type"), Some("text/plain"));
    assert_eq!(out.json()["status"], 404);
}

#[test]
fn a_clean_4xx_passes_unchanged_in_both_modes() {
    let body = br#"{"error":"order 42 not found"}"#;
    let headers = [
        ("content-type", "application/json"),
        ("content-length", "30"),
    ];
    for hold in [false, true] {
        for kind in BOTH {
            let mut host = request(kind, "/x");
            let plugin = configure(&mut host, &format!(r#"{{"hold_headers": {hold}}}"#));
            let (a, b) = body.split_at(10);
            let out = exchange(&plugin, &mut host, 404, &headers, &[a, b], None);
            assert_eq!(out.body, body);
            assert_eq!(out.header("content-type"), Some("application/json"));
            let held = hold && kind == HostKind::Envoy;
            assert_eq!(out.held_headers, held);
            // Held headers leave untouched; without holding, the length had to go.
            assert_eq!(out.header("content-length"), held.then_some("30"));
            assert_eq!(host.counter("palisade.errors.passed"), 1);
            assert_eq!(host.counter("palisade.errors.masked.leak"), 0);
        }
    }
}

#[test]
fn leak_scanning_buffers_at_most_scan_bytes() {
    let mut host = request(HostKind::Envoy, "/x");
    let plugin = configure(&mut host, r#"{"scan_bytes": 1000}"#);
    let chunk = vec![b'a'; 400];
    let leak = b"... ORA-00942: table or view does not exist";
    let chunks: Vec<&[u8]> = vec![&chunk, &chunk, &chunk, leak, &chunk];
    let out = exchange(
        &plugin,
        &mut host,
        400,
        &[("content-type", "text/plain")],
        &chunks,
        None,
    );
    // The leak came after the scanned window: it passes (a documented limit).
    assert_eq!(out.body.len(), 4 * 400 + leak.len());
    assert_eq!(out.max_buffered, 1200);
    assert_eq!(host.counter("palisade.errors.passed"), 1);

    let mut host = request(HostKind::Envoy, "/x");
    let plugin = configure(&mut host, r#"{"scan_bytes": 1000}"#);
    let chunks: Vec<&[u8]> = vec![&chunk, leak, &chunk, &chunk];
    let out = exchange(
        &plugin,
        &mut host,
        400,
        &[("content-type", "text/plain")],
        &chunks,
        None,
    );
    assert_eq!(out.json()["status"], 400);
    assert_eq!(host.counter("palisade.errors.masked.leak"), 1);
}

#[test]
fn a_compressed_leak_candidate_that_cannot_be_inflated_is_masked_by_default() {
    // It used to pass unscanned (`leak_scan_skipped`): a bypass any client
    // could switch on with `accept-encoding: gzip`.
    let mut host = request(HostKind::Envoy, "/x");
    let plugin = configure(&mut host, "{}");
    let out = exchange(
        &plugin,
        &mut host,
        404,
        &[("content-encoding", "gzip")],
        &[b"\x1f\x8b..."],
        None,
    );
    assert_ne!(out.body, b"\x1f\x8b...");
    assert_eq!(host.counter("palisade.errors.masked.undecodable"), 1);
    assert_eq!(host.counter("palisade.errors.leak_scan_skipped"), 0);

    let mut host = request(HostKind::Envoy, "/x");
    let plugin = configure(&mut host, r#"{"undecodable": "pass"}"#);
    let out = exchange(
        &plugin,
        &mut host,
        404,
        &[("content-encoding", "gzip")],
        &[b"\x1f\x8b..."],
        None,
    );
    assert_eq!(out.body, b"\x1f\x8b...");
    assert_eq!(host.counter("palisade.errors.leak_scan_skipped"), 1);
}

#[test]
fn event_streams_pass_even_as_500() {
    for kind in BOTH {
        let mut host = request(kind, "/events");
        let plugin = configure(&mut host, "{}");
        let chunks: [&[u8]; 2] = [
            b"data: a\n\n",
            b"data: Traceback (most recent call last)\n\n",
        ];
        let out = exchange(
            &plugin,
            &mut host,
            500,
            &[
                ("content-type", "text/event-stream; charset=utf-8"),
                ("server", "x"),
            ],
            &chunks,
            None,
        );
        assert_eq!(out.status, 500);
        assert_eq!(out.body, chunks.concat());
        assert_eq!(out.header("server"), Some("x"));
        assert_eq!((out.body_reads, out.body_writes), (0, 0));
    }
}

#[test]
fn dry_run_changes_nothing_but_logs_and_counts() {
    for kind in BOTH {
        let mut host = request(kind, "/x");
        let plugin = configure(&mut host, r#"{"dry_run": true}"#);
        let out = exchange(
            &plugin,
            &mut host,
            500,
            LEAKY_HEADERS,
            &[JAVA_STACK.as_bytes()],
            None,
        );
        assert_eq!(out.body, JAVA_STACK.as_bytes());
        assert_eq!(out.header("server"), Some("Apache-Coyote/1.1"));
        assert_eq!(out.header("content-length"), Some("200"));
        assert_eq!(out.body_writes, 0);
        assert_eq!(host.counter("palisade.errors.shadow_masked.status"), 1);
        assert_eq!(host.counter("palisade.errors.masked.status"), 0);
        assert!(
            host.logged(
                Level::Warn,
                "request_id=rid-1 dry_run: would mask 500 (status); body starts: \"java.lang"
            ),
            "{:?}",
            host.logs
        );

        let mut host = request(kind, "/x");
        let plugin = configure(&mut host, r#"{"dry_run": true, "hold_headers": true}"#);
        let (a, b) = PYTHON_STACK.as_bytes().split_at(10);
        let out = exchange(
            &plugin,
            &mut host,
            404,
            &[("content-length", "150")],
            &[a, b],
            None,
        );
        assert_eq!(out.body, PYTHON_STACK.as_bytes());
        assert!(!out.held_headers);
        assert_eq!(out.header("content-length"), Some("150"));
        assert_eq!(out.max_buffered, b.len(), "dry_run never buffers");
        assert_eq!(out.body_writes, 0);
        assert_eq!(host.counter("palisade.errors.shadow_masked.leak"), 1);
        assert!(host.logged(
            Level::Warn,
            "dry_run: would mask 404 (leak: python_stack,file_path)"
        ));
    }
}

#[test]
fn dry_run_on_a_bodiless_5xx_sends_no_local_reply() {
    let mut host = request(HostKind::Envoy, "/x");
    let plugin = configure(&mut host, r#"{"dry_run": true}"#);
    let out = exchange(&plugin, &mut host, 504, &[("server", "x")], &[], None);
    assert!(out.local_reply.is_none());
    assert_eq!((out.status, out.header("server")), (504, Some("x")));
    assert_eq!(host.counter("palisade.errors.shadow_masked.status"), 1);
}

#[test]
fn statuses_and_rules_choose_what_is_masked() {
    let config = r#"{
        "statuses": ["5xx", 429],
        "rules": [
            {"match": {"prefix": "/legacy/"}, "statuses": ["502"], "detect_leaks_in": []},
            {"match": {"path": "/raw"}, "enabled": false},
            {"match": {"route_name": "internal"}, "dry_run": true},
            {"match": {"prefix": "/strict/"}, "statuses": ["4xx", "5xx"], "strip_headers": ["x-trace-*"]}
        ]}"#;
    let case = |path: &str, route: Option<&str>, status: u16| {
        let mut host = request(HostKind::Envoy, path);
        if let Some(r) = route {
            host.properties
                .insert("xds.route_name".into(), r.as_bytes().to_vec());
        }
        let plugin = configure(&mut host, config);
        let out = exchange(
            &plugin,
            &mut host,
            status,
            &[("x-trace-id", "t"), ("server", "s")],
            &[b"oops /var/www/x"],
            None,
        );
        let masked = out.json()["type"] == "about:blank";
        (masked, out, host)
    };
    assert!(case("/a", None, 500).0);
    assert!(case("/a", None, 429).0);
    assert!(
        case("/a", None, 409).0,
        "409 is a leak candidate and the body leaks a path"
    );
    assert!(!case("/a", None, 302).0);
    assert!(!case("/legacy/x", None, 500).0);
    assert!(case("/legacy/x", None, 502).0);
    assert!(
        !case("/legacy/x", None, 404).0,
        "detect_leaks_in [] on this rule"
    );
    assert!(case("/a", None, 404).0, "top-level leak detection");
    assert!(!case("/raw", None, 500).0);
    assert!(!case("/raw?q=1", None, 500).0);
    assert!(case("/raw/more", None, 500).0);
    let (masked, _, host) = case("/a", Some("internal"), 500);
    assert!(!masked);
    assert_eq!(host.counter("palisade.errors.shadow_masked.status"), 1);
    let (masked, out, _) = case("/strict/x", None, 409);
    assert!(masked);
    assert_eq!(
        (out.header("x-trace-id"), out.header("server")),
        (None, Some("s"))
    );
    // Path normalisation defeats rule dodging.
    assert!(!case("/public/..%2flegacy/x", None, 500).0);
}

#[test]
fn palisade_problems_pass_only_when_a_palisade_filter_answered() {
    let problem = [
        ("content-type", "application/problem+json"),
        ("www-authenticate", "Bearer"),
        ("x-palisade-denied-by", "jwt"),
    ];
    let body: &[u8] = br#"{"type":"about:blank","title":"Unauthorized","status":401}"#;
    // A later filter (JWT) answered with a local reply carrying the marker.
    for kind in BOTH {
        let mut host = request(kind, "/x");
        if kind == HostKind::Envoy {
            host.properties
                .insert("response.code_details".into(), b"wasm_local_reply".to_vec());
        }
        let plugin = configure(&mut host, r#"{"statuses": ["4xx", "5xx"]}"#);
        let out = exchange(&plugin, &mut host, 401, &problem, &[body], None);
        assert_eq!(out.body, body);
        assert_eq!(out.header("www-authenticate"), Some("Bearer"));
        assert_eq!(out.header("content-type"), Some("application/problem+json"));
        assert_eq!(
            out.header("x-palisade-denied-by"),
            None,
            "internal marker stops here"
        );
        assert_eq!((out.body_reads, out.body_writes), (0, 0));
        assert_eq!(host.counter("palisade.errors.own_problem_passed"), 1);
    }
    // An upstream cannot forge it: Envoy says `via_upstream`, Kong has an upstream status.
    for kind in BOTH {
        let mut host = request(kind, "/x");
        match kind {
            HostKind::Envoy => host
                .properties
                .insert("response.code_details".into(), b"via_upstream".to_vec()),
            _ => host
                .properties
                .insert("ngx.upstream_status".into(), b"500".to_vec()),
        };
        let plugin = configure(&mut host, "{}");
        let out = exchange(
            &plugin,
            &mut host,
            500,
            &[
                ("content-type", "application/problem+json"),
                ("x-palisade-denied-by", "jwt"),
            ],
            &[b"{\"detail\":\"at Foo.bar(Foo.java:1)\"}"],
            None,
        );
        assert_eq!(out.json()["title"], "Internal Server Error");
        assert_eq!(out.json().get("detail"), None);
        assert_eq!(out.header("x-palisade-denied-by"), None);
        assert_eq!(host.counter("palisade.errors.own_problem_passed"), 0);
    }
    // Envoy without code details: the router sets `via_upstream` on every
    // upstream answer, and a wasm local reply (seen in Envoy 1.40) has none.
    let mut host = request(HostKind::Envoy, "/x");
    let plugin = configure(&mut host, "{}");
    let out = exchange(&plugin, &mut host, 503, &problem, &[b"{}"], None);
    assert_eq!(out.json(), serde_json::json!({}));
    assert_eq!(out.header("x-palisade-denied-by"), None);
    assert_eq!(host.counter("palisade.errors.own_problem_passed"), 1);
    // The marker alone, on something that is not a problem, is not enough.
    let mut host = request(HostKind::Kong, "/x");
    let plugin = configure(&mut host, "{}");
    let out = exchange(
        &plugin,
        &mut host,
        503,
        &[
            ("content-type", "text/html"),
            ("x-palisade-denied-by", "jwt"),
        ],
        &[b"<h1>boom</h1>"],
        None,
    );
    assert_eq!(out.json()["status"], 503);
}

#[test]
fn a_client_sent_marker_never_reaches_the_upstream() {
    for kind in BOTH {
        let mut host = request(kind, "/x").with_request_header("X-Palisade-Denied-By", "jwt");
        let plugin = configure(&mut host, "{}");
        let mut filter = palisade_errors::ErrorsFilter::new(plugin.clone());
        use palisade_core::HttpFilter;
        filter.on_request_headers(&mut host, true);
        let left = host.req_header("x-palisade-denied-by");
        assert!(
            left.is_none() || left.as_deref() == Some(""),
            "{kind:?}: {left:?}"
        );
    }
}

#[test]
fn without_our_request_phase_the_defaults_and_the_response_id_apply() {
    // An earlier filter answered: no request-phase facts, and Envoy does not
    // let us read request headers from the response path.
    let mut host = request(HostKind::Envoy, "/x");
    host.properties
        .insert("response.code_details".into(), b"lua_response".to_vec());
    let plugin = configure(
        &mut host,
        r#"{"rules": [{"match": {"prefix": "/x"}, "enabled": false}]}"#,
    );
    let mut filter = palisade_errors::ErrorsFilter::new(plugin.clone());
    let out = run(
        &mut filter,
        &mut host,
        503,
        &[("x-request-id", "resp-9"), ("content-type", "text/plain")],
        &[b"no healthy upstream"],
        None,
        false,
    );
    assert_eq!(out.json()["request_id"], "resp-9");
    let mut filter = palisade_errors::ErrorsFilter::new(plugin.clone());
    let out = run(
        &mut filter,
        &mut host,
        429,
        &[
            ("content-type", "application/problem+json"),
            ("x-palisade-denied-by", "ratelimit"),
        ],
        &[b"{}"],
        None,
        false,
    );
    assert_eq!(out.body, b"{}");
}

#[test]
fn every_counted_event_is_defined() {
    let mut host = FakeHost::new();
    let plugin = configure(&mut host, "{}");
    for e in palisade_errors::EVENTS {
        assert!(plugin.metrics.defines(e), "{e}");
        assert!(host.metric_names.contains(&format!("palisade.errors.{e}")));
    }
}

#[test]
fn a_5xx_without_request_id_still_masks() {
    let mut host = FakeHost::request("GET", "/x");
    let plugin = configure(&mut host, "{}");
    let out = exchange(&plugin, &mut host, 500, &[], &[b"boom"], None);
    assert_eq!(out.json()["status"], 500);
    assert_eq!(out.json().get("request_id"), None);
    assert_eq!(out.header("x-request-id"), None);
    assert!(host.logged(Level::Warn, "request_id=- masked 500"));
}

#[test]
fn trailers_after_a_masked_body_flush_the_log() {
    let mut host = request(HostKind::Envoy, "/x");
    let plugin = configure(&mut host, "{}");
    let out = exchange(
        &plugin,
        &mut host,
        500,
        &[],
        &[b"short"],
        Some(&[("x-checksum", "1")]),
    );
    assert_eq!(out.json()["status"], 500);
    assert!(host.logged(Level::Warn, "masked 500 (status); body starts: \"short\""));
}
