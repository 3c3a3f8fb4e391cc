//! Tests of the harness itself against the real Envoy 1.40: the launcher, the config
//! builder, the echo upstream and the clients. They double as the record of Envoy
//! behaviour the filter tests rely on (path normalisation, Envoy's own error replies).

mod common;

use std::time::{Duration, Instant};

use palisade_tests::client::{raw_http, raw_request, try_request};
use palisade_tests::upstream::{JAVA_STACK, PYTHON_STACK};
use palisade_tests::*;

fn router_only(upstream: &Upstream) -> Envoy {
    Envoy::start(&EnvoyConfig::new().upstream(upstream))
}

#[test]
fn router_only_envoy_proxies_to_the_echo_upstream() {
    let upstream = Upstream::start();
    let envoy = router_only(&upstream);
    let r = request(
        "POST",
        &envoy.url("/some/path?q=1"),
        &[("x-test", "a"), ("x-multi", "1"), ("x-multi", "2")],
        b"hello",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    // Envoy adds this only when an upstream answered.
    assert!(r.header("x-envoy-upstream-service-time").is_some());
    let echo = r.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/some/path?q=1");
    assert_eq!(echo["headers"]["x-test"], serde_json::json!(["a"]));
    assert_eq!(echo["headers"]["x-multi"], serde_json::json!(["1", "2"]));
    assert_eq!(
        echo["headers"]["x-forwarded-proto"],
        serde_json::json!(["http"])
    );
    assert_eq!(echo["body"], "hello");
    assert_eq!(echo["body_len"], 5);

    let received = upstream.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].method, "POST");
    assert_eq!(received[0].path, "/some/path?q=1");
    assert_eq!(received[0].header("X-Test"), Some("a"));
    assert_eq!(received[0].header_all("x-multi"), ["1", "2"]);
    assert_eq!(received[0].body, b"hello");

    assert_eq!(
        envoy.wait_for_counter("http.ingress.downstream_rq_2xx", 1, Duration::from_secs(5)),
        Some(1)
    );
    assert_eq!(envoy.counter("no.such.stat"), None);
    assert!(envoy.stats().contains("cluster.echo."));
    assert!(envoy.log().contains("starting main dispatch loop"));
}

#[test]
fn closed_port_route_gets_envoys_own_503() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .route(Route::prefix("down", "/").closed_port()),
    );
    let r = get(&envoy.url("/x"), &[]);
    assert_eq!(r.status, 503);
    assert!(
        r.text().starts_with("upstream connect error"),
        "{}",
        r.text()
    );
    assert!(upstream.received().is_empty());
    assert!(envoy.counter("cluster.closed.upstream_cx_connect_fail") >= Some(1));
}

#[test]
fn route_timeout_gets_envoys_own_504() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .route(
                Route::prefix("hang", "/hang")
                    .black_hole()
                    .timeout(Duration::from_millis(300)),
            )
            .route(Route::prefix("slow", "/").timeout(Duration::from_millis(300))),
    );
    let started = Instant::now();
    let r = get(&envoy.url("/hang"), &[]);
    assert_eq!(
        (r.status, r.text().as_str()),
        (504, "upstream request timeout")
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // The echo upstream too, when told to wait longer than the route allows.
    let r = get(&envoy.url("/late"), &[("x-echo-delay-ms", "2000")]);
    assert_eq!(r.status, 504);
}

#[test]
fn direct_response_route_answers_without_the_upstream() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .route(Route::path("teapot", "/tea").direct(418, "teapot"))
            .route(Route::prefix("rest", "/")),
    );
    let r = get(&envoy.url("/tea"), &[]);
    assert_eq!((r.status, r.text().as_str()), (418, "teapot"));
    // An exact path match: /tea/pot goes on to the next route.
    assert_eq!(get(&envoy.url("/tea/pot"), &[]).status, 200);
    assert_eq!(upstream.received().len(), 1);
}

/// Paths whose treatment the filters depend on: (sent, seen upstream with normalisation).
const PATHS: &[(&str, &str)] = &[
    ("/a/./x/../b", "/a/b"),
    ("//a//b", "/a/b"),
    ("/a/../../b", "/b"),
    ("/..", "/"),
    // Percent-encoded unreserved characters are decoded, so encoded dots are resolved...
    ("/%2e%2e/x", "/x"),
    ("/a/%2E/b", "/a/b"),
    ("/a/%7e/b", "/a/~/b"),
    // ...but an encoded slash is kept (path_with_escaped_slashes_action unset).
    ("/a/%2F/b", "/a/%2F/b"),
    ("/a/..%2Fb", "/a/..%2Fb"),
    // A backslash becomes a slash.
    ("/a\\b", "/a/b"),
    // The query is never touched.
    ("/a/b?x=/../y", "/a/b?x=/../y"),
];

#[test]
fn path_normalisation_on_resolves_dots_and_merges_slashes() {
    let upstream = Upstream::start();
    let envoy = router_only(&upstream);
    for (sent, expected) in PATHS {
        upstream.clear_received();
        let r = raw_http(envoy.listener_addr(), &raw_request("GET", sent, &[], b""));
        assert_eq!(r.status, Some(200), "{sent}: {}", r.text());
        assert_eq!(upstream.last().unwrap().path, *expected, "sent {sent}");
    }
}

#[test]
fn path_normalisation_off_passes_raw_paths() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(&EnvoyConfig::new().upstream(&upstream).normalize_path(false));
    for (sent, _) in PATHS {
        upstream.clear_received();
        let r = raw_http(envoy.listener_addr(), &raw_request("GET", sent, &[], b""));
        assert_eq!(r.status, Some(200), "{sent}: {}", r.text());
        assert_eq!(upstream.last().unwrap().path, *sent);
    }
    // A relative request target is refused either way.
    let r = raw_http(envoy.listener_addr(), &raw_request("GET", "a/b", &[], b""));
    assert_eq!(r.status, Some(400));
}

#[test]
fn hostile_raw_requests_get_envoys_own_answers() {
    let upstream = Upstream::start();
    let envoy = router_only(&upstream);
    let addr = envoy.listener_addr();

    let r = raw_http(
        addr,
        b"GET /x HTTP/1.1\r\nhost: t\r\nx-a: a\x01b\r\nconnection: close\r\n\r\n",
    );
    assert_eq!(r.status, Some(400), "control character in a header value");

    let names: Vec<String> = (0..101).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let r = raw_http(addr, &raw_request("GET", "/x", &many, b""));
    assert_eq!(r.status, Some(431), "more than 100 headers");

    // Non-UTF-8 bytes in a header value pass through (the upstream reads them lossily).
    let r = raw_http(
        addr,
        b"GET /x HTTP/1.1\r\nhost: t\r\nx-a: a\xffb\r\nconnection: close\r\n\r\n",
    );
    assert_eq!(r.status, Some(200));
    assert_eq!(upstream.last().unwrap().header("x-a"), Some("a\u{fffd}b"));
    assert!(upstream.received().len() == 1);
}

#[test]
fn echo_upstream_answers_as_told_by_headers() {
    let upstream = Upstream::start();
    let envoy = router_only(&upstream);
    let r = get(
        &envoy.url("/"),
        &[
            ("x-echo-status", "503"),
            ("x-echo-header", "x-one: 1"),
            ("x-echo-header", "x-one: 2"),
            ("x-echo-header", "content-type: text/html"),
            ("x-echo-body", "custom body"),
        ],
    );
    assert_eq!(r.status, 503);
    assert_eq!(r.header_all("x-one"), ["1", "2"]);
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert_eq!(r.text(), "custom body");

    let r = get(&envoy.url("/"), &[("x-echo-body-kind", "java-stack")]);
    assert_eq!((r.status, r.text().as_str()), (500, JAVA_STACK));
    let r = get(
        &envoy.url("/"),
        &[
            ("x-echo-body-kind", "python-stack"),
            ("x-echo-status", "502"),
        ],
    );
    assert_eq!((r.status, r.text().as_str()), (502, PYTHON_STACK));

    let r = get(&envoy.url("/"), &[("x-echo-body-kind", "nonsense")]);
    assert_eq!(r.status, 400, "a bad instruction is the upstream's 400");
}

#[test]
fn huge_body_arrives_intact() {
    let upstream = Upstream::start();
    let envoy = router_only(&upstream);
    let len = 3 * 1024 * 1024;
    let r = get(
        &envoy.url("/big"),
        &[("x-echo-body-kind", &format!("huge:{len}"))],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(len.to_string().as_str()));
    assert_eq!(sha256_hex(&r.body), sha256_hex(&huge_body(len)));
}

#[test]
fn chunked_and_slow_bodies_stream_through() {
    let upstream = Upstream::start();
    let envoy = router_only(&upstream);
    let r = raw_http(
        envoy.listener_addr(),
        &raw_request("GET", "/c", &[("x-echo-body-kind", "chunked:16x4096")], b""),
    );
    assert_eq!(r.status, Some(200));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.header("content-length"), None);
    assert!(r.body == huge_body(16 * 4096), "chunked body differs");

    let started = Instant::now();
    let r = get(&envoy.url("/s"), &[("x-echo-body-kind", "slow:3x150")]);
    assert_eq!(r.text(), "chunk 0\nchunk 1\nchunk 2\n");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
fn canned_responses_work_without_headers() {
    let upstream = Upstream::start();
    let envoy = router_only(&upstream);
    upstream.respond(
        "/canned",
        Canned::status(502)
            .header("x-from", "canned")
            .body(BodyKind::Literal(b"nope".to_vec())),
    );
    upstream.respond(
        "/canned/stack",
        Canned {
            body_kind: BodyKind::JavaStack,
            ..Canned::default()
        },
    );
    let r = get(&envoy.url("/canned/x"), &[]);
    assert_eq!(
        (r.status, r.header("x-from"), r.text().as_str()),
        (502, Some("canned"), "nope")
    );
    let r = get(&envoy.url("/canned/stack/1"), &[]);
    assert_eq!((r.status, r.text().as_str()), (500, JAVA_STACK));
    // Headers still win over a canned answer.
    assert_eq!(
        get(&envoy.url("/canned/x"), &[("x-echo-status", "201")]).status,
        201
    );
    assert_eq!(get(&envoy.url("/other"), &[]).status, 200);
    upstream.clear_responses();
    assert_eq!(get(&envoy.url("/canned/x"), &[]).status, 200);
}

#[test]
fn wasm_filter_runs_and_can_be_disabled_per_route() {
    let fixture = common::fixture_wasm(true);
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .wasm(
                WasmFilter::new("fixture", &fixture.path)
                    .config(r#"{"any": "json"}"#)
                    .allow_on_headers_stop_iteration(true),
            )
            .route(Route::prefix("plain", "/off").disable_filter("fixture"))
            .route(Route::prefix("filtered", "/"))
            .concurrency(2),
    );
    let r = get(&envoy.url("/on"), &[]);
    assert_eq!((r.status, r.header("x-fixture")), (200, Some("ran")));
    let r = get(&envoy.url("/off"), &[]);
    assert_eq!((r.status, r.header("x-fixture")), (200, None));
}

#[test]
fn envoy_refuses_a_wasm_filter_whose_configure_fails() {
    let fixture = common::fixture_wasm(false);
    let upstream = Upstream::start();
    for policy in [FailurePolicy::FailClosed, FailurePolicy::FailOpen] {
        let err = Envoy::try_start(
            &EnvoyConfig::new()
                .upstream(&upstream)
                .wasm(WasmFilter::new("refuser", &fixture.path).failure_policy(policy)),
        )
        .err()
        .unwrap_or_else(|| {
            panic!("Envoy accepted a filter whose on_configure failed ({policy:?})")
        });
        assert!(err.contains("exited"), "{err}");
        assert!(
            err.contains("Unable to create Wasm plugin refuser"),
            "{err}"
        );
    }
}

#[test]
fn try_start_reports_invalid_configs_with_the_log() {
    let err = Envoy::try_start(&EnvoyConfig::new().route(Route::prefix("r", "/").cluster("nope")))
        .err()
        .expect("a route to an unknown cluster is refused");
    assert!(err.contains("unknown cluster 'nope'"), "{err}");

    let upstream = Upstream::start();
    let err = Envoy::try_start(
        &EnvoyConfig::new().upstream(&upstream).wasm(WasmFilter::new(
            "missing",
            "/nonexistent/palisade_missing.wasm",
        )),
    )
    .err()
    .expect("a missing wasm file is refused");
    assert!(err.contains("/nonexistent/palisade_missing.wasm"), "{err}");
}

#[test]
fn native_filters_can_be_given_as_raw_yaml() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .filter(HttpFilter::native_yaml(
                r#"
                name: envoy.filters.http.local_ratelimit
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
                  stat_prefix: rl
                  token_bucket: {max_tokens: 1, tokens_per_fill: 1, fill_interval: 3600s}
                  filter_enabled:
                    default_value: {numerator: 100, denominator: HUNDRED}
                  filter_enforced:
                    default_value: {numerator: 100, denominator: HUNDRED}
                "#,
            )),
    );
    assert_eq!(get(&envoy.url("/"), &[]).status, 200);
    assert_eq!(get(&envoy.url("/"), &[]).status, 429);
}

#[test]
fn dropping_envoy_stops_the_process() {
    let upstream = Upstream::start();
    let envoy = router_only(&upstream);
    let url = envoy.url("/");
    let pid = envoy.pid().unwrap();
    let dir = envoy.dir().to_path_buf();
    assert!(dir.join("envoy.yaml").is_file());
    drop(envoy);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(!dir.exists());
    assert!(try_request("GET", &url, &[], b"").is_err());
}

#[test]
fn envoys_in_parallel_do_not_collide() {
    let upstream = Upstream::start();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..3).map(|_| s.spawn(|| router_only(&upstream))).collect();
        let envoys: Vec<Envoy> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for envoy in &envoys {
            assert_eq!(get(&envoy.url("/p"), &[]).status, 200);
        }
    });
    assert_eq!(upstream.received().len(), 3);
}
