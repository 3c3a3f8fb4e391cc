//! The errors filter inside a real Envoy 1.40: what reaches the client, on the wire.
//!
//! Build the module first: `cargo build --release --target wasm32-wasip1 -p
//! palisade-errors && mkdir -p dist && cp target/wasm32-wasip1/release/palisade_errors.wasm dist/`.
//!
//! Besides the filter's behaviour these tests record the Envoy facts it
//! relies on: a local reply sent from the response headers callback,
//! streaming body replacement (chunk by chunk, no buffering), Envoy's own
//! 503/504 bodies passing through the encoder chain, and
//! `allow_on_headers_stop_iteration` being required to pause response
//! headers without hanging the stream.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use palisade_tests::client::{raw_http, raw_request, request, try_request};
use palisade_tests::upstream::{gunzip, gzip, JAVA_STACK, PYTHON_STACK};
use palisade_tests::*;
use serde_json::{json, Value};

const FILTER: &str = "palisade_errors";

fn errors(config: Value) -> WasmFilter {
    WasmFilter::new(FILTER, dist_wasm("errors")).config_json(&config)
}

fn start(upstream: &Upstream, filter: WasmFilter) -> Envoy {
    Envoy::start(&EnvoyConfig::new().upstream(upstream).wasm(filter))
}

/// Headers the upstream is told to add to its response.
fn echo_headers<'a>(list: &'a [&'a str]) -> Vec<(&'a str, &'a str)> {
    list.iter().map(|h| ("x-echo-header", *h)).collect()
}

/// Asserts an `about:blank` problem with `status`; returns the request id.
fn assert_problem(r: &Response, status: u16) -> String {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{:?}",
        r.headers
    );
    let v = r.json();
    assert_eq!(v["type"], "about:blank");
    assert_eq!(v["status"], status);
    assert_eq!(v["title"], palisade_title(status));
    let id = v["request_id"]
        .as_str()
        .expect("request_id in the body")
        .to_string();
    assert_eq!(r.header("x-request-id"), Some(id.as_str()));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    id
}

fn palisade_title(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "?",
    }
}

/// Waits until Envoy's log contains every needle (logs are written asynchronously).
fn wait_for_log(envoy: &Envoy, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = envoy.log();
        if needles.iter().all(|n| log.contains(n)) || Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metric(envoy: &Envoy, event: &str, at_least: u64) -> Option<u64> {
    envoy.wait_for_counter(
        &format!("wasmcustom.palisade.errors.{event}"),
        at_least,
        Duration::from_secs(5),
    )
}

/// Sends raw bytes and reads until the peer closes or `limit` passes.
fn read_until_close(addr: SocketAddr, bytes: &[u8], limit: Duration) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    stream.write_all(bytes).expect("write");
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (out, true),
        }
        if Instant::now() > deadline {
            return (out, false);
        }
    }
}

#[test]
fn upstream_500_with_a_java_stack_becomes_a_problem() {
    let upstream = Upstream::start();
    let envoy = start(&upstream, errors(json!({})));
    let mut headers = echo_headers(&[
        "server: Apache-Coyote/1.1",
        "x-powered-by: Servlet/4.0",
        "x-debug-trace: OrderService.java:117",
        "x-backend-host: orders-7f9c.internal",
        "strict-transport-security: max-age=31536000",
        "etag: \"v1\"",
    ]);
    headers.push(("x-echo-body-kind", "java-stack"));
    let r = get(&envoy.url("/orders"), &headers);
    let id = assert_problem(&r, 500);
    assert!(!id.is_empty());
    for leaky in [
        "server",
        "x-powered-by",
        "x-debug-trace",
        "x-backend-host",
        "x-envoy-upstream-service-time",
        "etag",
    ] {
        assert_eq!(r.header(leaky), None, "{leaky} leaked: {:?}", r.headers);
    }
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=31536000")
    );

    // On the wire: nothing of the trace, whatever the framing.
    let raw = raw_http(
        envoy.listener_addr(),
        &raw_request("GET", "/orders", &[("x-echo-body-kind", "java-stack")], b""),
    );
    assert_eq!(raw.status, Some(500));
    let wire = String::from_utf8_lossy(&raw.raw);
    for secret in ["java", "NullPointer", "OrderValidator", "springframework"] {
        assert!(!wire.contains(secret), "{secret} on the wire: {wire}");
    }

    // Operators still see what happened, with the request id.
    let log = wait_for_log(
        &envoy,
        &[&format!("request_id={id} masked 500 (status); body starts: \"java.lang.NullPointerException: Cannot invoke \\\"String.length()\\\"")],
    );
    assert!(
        log.contains(&format!(
            "request_id={id} masked 500 (status); body starts: \"java.lang.NullPointerException"
        )),
        "{log}"
    );
    assert!(
        log.contains("\\n\\tat com.example.orders.OrderValidator"),
        "{log}"
    );
    assert_eq!(metric(&envoy, "masked.status", 2), Some(2));
}

#[test]
fn a_bodiless_503_is_replaced_by_a_local_reply_keeping_safe_headers() {
    let upstream = Upstream::start();
    let envoy = start(&upstream, errors(json!({})));
    let mut headers = echo_headers(&[
        "server: gunicorn",
        "x-upstream-pool: blue",
        "retry-after: 7",
        "strict-transport-security: max-age=1",
    ]);
    headers.extend([("x-echo-status", "503"), ("x-echo-body-kind", "empty")]);
    let r = get(&envoy.url("/x"), &headers);
    assert_problem(&r, 503);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.header("strict-transport-security"), Some("max-age=1"));
    assert_eq!(
        (r.header("server"), r.header("x-upstream-pool")),
        (None, None)
    );
    assert_eq!(r.header_all("x-request-id").len(), 1);
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );

    // HEAD: the same local reply, without a body.
    let r = request("HEAD", &envoy.url("/x"), &[("x-echo-status", "500")], b"");
    assert_eq!(r.status, 500);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(r.body.is_empty());
}

#[test]
fn envoys_own_503_and_504_become_problems() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .wasm(errors(json!({})))
            .route(Route::prefix("down", "/down").closed_port())
            .route(
                Route::prefix("hang", "/hang")
                    .black_hole()
                    .timeout(Duration::from_millis(300)),
            )
            .route(Route::path("direct", "/direct").direct(500, "panic at /usr/src/app/x.js:1:2"))
            .route(Route::prefix("slow", "/").timeout(Duration::from_millis(300)))
            // The documented stats_tags example (operations/metrics.md): the reason becomes a label.
            .bootstrap_extra(json!({"stats_config": {"stats_tags": [{
                "tag_name": "reason",
                "regex": "^wasmcustom\\.palisade\\.errors\\.(?:shadow_)?masked(\\.(status|leak|grpc))$",
            }]}})),
    );
    let r = get(&envoy.url("/down"), &[]);
    assert_problem(&r, 503);
    assert!(!r.text().contains("upstream connect error"), "{}", r.text());

    let r = get(&envoy.url("/hang"), &[]);
    assert_problem(&r, 504);
    assert!(!r.text().contains("timeout"), "{}", r.text());

    let r = get(&envoy.url("/late"), &[("x-echo-delay-ms", "2000")]);
    assert_problem(&r, 504);

    let r = get(&envoy.url("/direct"), &[]);
    assert_problem(&r, 500);
    assert!(!r.text().contains("/usr/src"));

    // The same answers on a raw HTTP/1.1 connection: complete, not reset.
    let raw = raw_http(
        envoy.listener_addr(),
        &raw_request("GET", "/down", &[], b""),
    );
    assert_eq!(raw.status, Some(503));
    assert_eq!(
        serde_json::from_slice::<Value>(&raw.body).unwrap()["status"],
        503
    );
    assert_eq!(metric(&envoy, "masked.status", 5), Some(5));
    let prometheus = envoy.admin_get("/stats/prometheus");
    assert!(
        prometheus.contains("palisade_errors_masked{reason=\"status\"} 5"),
        "{}",
        prometheus
            .lines()
            .filter(|l| l.contains("palisade"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn a_leaky_404_is_masked_without_holding_headers_and_a_clean_404_passes() {
    let upstream = Upstream::start();
    let envoy = start(&upstream, errors(json!({})));
    let r = get(
        &envoy.url("/x"),
        &[
            ("x-echo-body-kind", "python-stack"),
            ("x-echo-status", "404"),
        ],
    );
    assert_eq!(r.status, 404);
    // Default mode: headers left before the body was seen (documented trade-off).
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let v = r.json();
    assert_eq!(
        (v["status"].as_u64(), v["title"].as_str()),
        (Some(404), Some("Not Found"))
    );
    assert!(!r.text().contains("Traceback"));

    let clean = r#"{"error":"order 42 not found"}"#;
    let r = get(
        &envoy.url("/x"),
        &[
            ("x-echo-status", "404"),
            ("x-echo-body", clean),
            ("x-echo-header", "content-type: application/json"),
        ],
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), clean);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(metric(&envoy, "masked.leak", 1), Some(1));
    assert!(metric(&envoy, "passed", 1) >= Some(1));
}

#[test]
fn hold_headers_with_allow_on_headers_stop_iteration_masks_completely() {
    let upstream = Upstream::start();
    let envoy = start(
        &upstream,
        errors(json!({"hold_headers": true})).allow_on_headers_stop_iteration(true),
    );
    let r = get(
        &envoy.url("/x"),
        &[
            ("x-echo-body-kind", "python-stack"),
            ("x-echo-status", "404"),
            ("x-echo-header", "server: gunicorn"),
        ],
    );
    assert_problem(&r, 404);
    assert_eq!(r.header("server"), None);

    // A clean 404 passes byte for byte, content-length included.
    let clean = "no such order";
    let raw = raw_http(
        envoy.listener_addr(),
        &raw_request(
            "GET",
            "/x",
            &[("x-echo-status", "404"), ("x-echo-body", clean)],
            b"",
        ),
    );
    assert_eq!(raw.status, Some(404));
    assert_eq!(raw.body, clean.as_bytes());
    assert_eq!(raw.header("content-length"), Some("13"));
    assert_eq!(raw.header("content-type"), Some("text/plain"));

    // A canned 400 leaking a traceback (no x-echo-* headers involved).
    upstream.respond(
        "/canned-leak",
        Canned::status(400).body(BodyKind::Literal(PYTHON_STACK.as_bytes().to_vec())),
    );
    let r = get(&envoy.url("/canned-leak"), &[]);
    assert_problem(&r, 400);

    // A clean candidate bigger than scan_bytes: 64 KiB held, then the rest
    // streams; headers (content-length included) and body are unchanged.
    // Below Envoy's 1 MiB buffer limit: with 3 MB about 1 request in 20 got
    // Envoy's own 500 (`rs_too_large`), the body outrunning the held headers'
    // release (noted on issue 11, not fixed).
    let len = 900_000;
    let r = get(
        &envoy.url("/big4xx"),
        &[
            ("x-echo-body-kind", &format!("huge:{len}")),
            ("x-echo-status", "409"),
        ],
    );
    assert_eq!(r.status, 409);
    assert_eq!(r.header("content-length"), Some(len.to_string().as_str()));
    assert_eq!(sha256_hex(&r.body), sha256_hex(&huge_body(len)));
    assert_eq!(metric(&envoy, "masked.leak", 2), Some(2));
}

/// Documents why `hold_headers` needs `allow_on_headers_stop_iteration`:
/// without it, Envoy turns the Pause into stop-all-iteration and the body
/// callbacks never come. The response is held; the core's watchdog then
/// answers it with a 500 and one error line naming the missing setting,
/// instead of leaving the client waiting.
#[test]
fn hold_headers_without_allow_on_headers_stop_iteration_fails_loudly() {
    let upstream = Upstream::start();
    let envoy = start(&upstream, errors(json!({"hold_headers": true})));
    let request = raw_request(
        "GET",
        "/x",
        &[("x-echo-status", "404"), ("x-echo-body", "clean")],
        b"",
    );
    let started = Instant::now();
    let (bytes, _) = read_until_close(envoy.listener_addr(), &request, Duration::from_secs(3));
    assert!(
        bytes.is_empty(),
        "held while the watchdog waits, got {:?} after {:?}",
        String::from_utf8_lossy(&bytes),
        started.elapsed()
    );
    let r = raw_http(envoy.listener_addr(), &request);
    assert_eq!(
        r.status,
        Some(500),
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
    let v: Value = serde_json::from_slice(&r.body).expect("a problem document");
    assert_eq!(v["status"], 500);
    let log = wait_for_log(&envoy, &["allow_on_headers_stop_iteration"]);
    assert!(log.contains("answered 500"), "{log}");
    // Bodiless responses and non-candidates are not held.
    assert_eq!(get(&envoy.url("/ok"), &[]).status, 200);
}

#[test]
fn big_and_chunked_2xx_bodies_pass_unchanged() {
    let upstream = Upstream::start();
    let envoy = start(&upstream, errors(json!({})));
    let len = 10 * 1024 * 1024;
    let r = get(
        &envoy.url("/big"),
        &[("x-echo-body-kind", &format!("huge:{len}"))],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(len.to_string().as_str()));
    assert_eq!(sha256_hex(&r.body), sha256_hex(&huge_body(len)));

    let raw = raw_http(
        envoy.listener_addr(),
        &raw_request(
            "GET",
            "/c",
            &[("x-echo-body-kind", "chunked:64x16384")],
            b"",
        ),
    );
    assert_eq!(raw.status, Some(200));
    assert_eq!(raw.header("transfer-encoding"), Some("chunked"));
    assert_eq!(sha256_hex(&raw.body), sha256_hex(&huge_body(64 * 16384)));

    // A clean 4xx candidate larger than scan_bytes streams on after the scan.
    let r = get(
        &envoy.url("/big4xx"),
        &[
            ("x-echo-body-kind", "huge:3000000"),
            ("x-echo-status", "409"),
        ],
    );
    assert_eq!(r.status, 409);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&huge_body(3_000_000)));
    assert!(metric(&envoy, "passed", 3) >= Some(3));
}

#[test]
fn big_and_chunked_5xx_bodies_are_masked_without_a_reset() {
    let upstream = Upstream::start();
    let envoy = start(&upstream, errors(json!({})));
    let r = get(
        &envoy.url("/big"),
        &[
            ("x-echo-body-kind", "huge:10485760"),
            ("x-echo-status", "500"),
        ],
    );
    assert_problem(&r, 500);

    let raw = raw_http(
        envoy.listener_addr(),
        &raw_request(
            "GET",
            "/c",
            &[
                ("x-echo-body-kind", "chunked:100x65536"),
                ("x-echo-status", "502"),
            ],
            b"",
        ),
    );
    assert_eq!(raw.status, Some(502));
    assert_eq!(raw.header("content-type"), Some("application/problem+json"));
    assert_eq!(
        serde_json::from_slice::<Value>(&raw.body).unwrap()["status"],
        502
    );

    let r = get(
        &envoy.url("/slow"),
        &[("x-echo-body-kind", "slow:4x100"), ("x-echo-status", "503")],
    );
    assert_problem(&r, 503);
    assert_eq!(
        envoy.counter("http.ingress.downstream_rq_rx_reset"),
        Some(0)
    );
    assert_eq!(
        envoy.counter("http.ingress.downstream_rq_tx_reset"),
        Some(0)
    );
}

#[test]
fn event_stream_500_passes() {
    let upstream = Upstream::start();
    let envoy = start(&upstream, errors(json!({})));
    let body = "data: {\"n\":1}\n\ndata: Traceback (most recent call last)\n\n";
    upstream.respond(
        "/events",
        Canned::status(500)
            .header("content-type", "text/event-stream")
            .body(BodyKind::Literal(body.as_bytes().to_vec())),
    );
    let r = get(&envoy.url("/events"), &[]);
    assert_eq!(r.status, 500);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.text(), body);
}

#[test]
fn grpc_trailers_only_errors_get_a_generic_message() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .wasm(errors(json!({})))
            .route(Route::prefix("down", "/down.Svc/").closed_port())
            .route(Route::prefix("rest", "/")),
    );
    let mut headers = echo_headers(&[
        "content-type: application/grpc",
        "grpc-status: 13",
        "grpc-message: java.lang.NullPointerException%20at%20com.acme.Foo.bar(Foo.java:12)",
        "grpc-status-details-bin: CA0SBGxlYWs",
    ]);
    headers.push(("x-echo-body-kind", "empty"));
    headers.push(("content-type", "application/grpc"));
    let r = request("POST", &envoy.url("/pkg.Svc/Get"), &headers, b"\0\0\0\0\0");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), Some("13"));
    assert_eq!(r.header("grpc-message"), Some("INTERNAL"));
    assert_eq!(r.header("grpc-status-details-bin"), None);
    assert!(r.header("x-request-id").is_some());

    // Envoy's own reply to a gRPC request whose upstream is down.
    let r = request(
        "POST",
        &envoy.url("/down.Svc/Get"),
        &[("content-type", "application/grpc")],
        b"\0\0\0\0\0",
    );
    assert_eq!(r.status, 200, "{:?}", r.headers);
    assert_eq!(r.header("grpc-status"), Some("14"));
    assert_eq!(r.header("grpc-message"), Some("UNAVAILABLE"));

    // A clean NOT_FOUND keeps its message.
    let mut headers = echo_headers(&[
        "content-type: application/grpc",
        "grpc-status: 5",
        "grpc-message: order%2042%20not%20found",
    ]);
    headers.push(("x-echo-body-kind", "empty"));
    let r = request("POST", &envoy.url("/pkg.Svc/Get"), &headers, b"\0\0\0\0\0");
    assert_eq!(r.header("grpc-message"), Some("order%2042%20not%20found"));
    assert_eq!(metric(&envoy, "masked.grpc", 2), Some(2));
}

/// An HTTP/1.1 upstream sending gRPC-style trailers (Envoy forwards HTTP/1
/// trailers with `enable_trailers`), since the echo upstream has none.
fn trailers_upstream() -> (u16, std::thread::JoinHandle<()>) {
    trailers_upstream_answering(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ntransfer-encoding: chunked\r\n\r\n\
          7\r\n\0\0\0\0\x02hi\r\n\
          0\r\ngrpc-status: 14\r\ngrpc-message: connect%20to%2010.0.3.7:5432%20failed\r\n\r\n",
    )
}

/// A one-shot HTTP/1.1 upstream answering `answer` verbatim.
fn trailers_upstream_answering(answer: &'static [u8]) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming().take(1) {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(answer);
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    (port, handle)
}

/// Envoy with HTTP/1 trailers on both sides, routing everything to `port`.
fn envoy_with_trailers(port: u16) -> Envoy {
    let trailers_on = json!({"enable_trailers": true});
    Envoy::start(
        &EnvoyConfig::new()
            .wasm(errors(json!({})))
            .route(Route::prefix("t", "/").cluster("trailers"))
            .cluster("trailers", port)
            .hcm_extra(json!({"http_protocol_options": trailers_on}))
            // The harness's clusters have no protocol options: replace the list.
            .bootstrap_extra(json!({"static_resources": {"clusters": [{
                "name": "trailers",
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "trailers", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]},
                "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http_protocol_options": trailers_on},
                }},
            }]}})),
    )
}

#[test]
fn grpc_trailers_get_a_generic_message() {
    let (port, handle) = trailers_upstream();
    let envoy = envoy_with_trailers(port);
    let (bytes, _) = read_until_close(
        envoy.listener_addr(),
        &raw_request(
            "POST",
            "/pkg.Svc/Stream",
            &[("content-type", "application/grpc"), ("te", "trailers")],
            b"\0\0\0\0\0",
        ),
        Duration::from_secs(5),
    );
    let _ = handle.join();
    let wire = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
    assert!(wire.starts_with("http/1.1 200"), "{wire}");
    assert!(
        wire.contains("\0\0\0\0\u{2}hi"),
        "the message passes: {wire}"
    );
    assert!(wire.contains("grpc-status: 14"), "{wire}");
    assert!(wire.contains("grpc-message: unavailable"), "{wire}");
    assert!(!wire.contains("10.0.3.7"), "{wire}");
    assert_eq!(metric(&envoy, "masked.grpc", 1), Some(1));
}

#[test]
fn dry_run_passes_responses_unchanged_and_counts() {
    let upstream = Upstream::start();
    let envoy = start(&upstream, errors(json!({"dry_run": true})));
    let r = get(
        &envoy.url("/x"),
        &[
            ("x-echo-body-kind", "java-stack"),
            ("x-echo-header", "server: tomcat"),
            ("x-request-id", "dry-1"),
        ],
    );
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), JAVA_STACK);
    assert_eq!(r.header("server"), Some("tomcat"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let r = get(
        &envoy.url("/x"),
        &[
            ("x-echo-body-kind", "python-stack"),
            ("x-echo-status", "404"),
        ],
    );
    assert_eq!((r.status, r.text().as_str()), (404, PYTHON_STACK));
    let r = get(
        &envoy.url("/down"),
        &[("x-echo-status", "503"), ("x-echo-body-kind", "empty")],
    );
    assert_eq!((r.status, r.body.len()), (503, 0));
    assert_eq!(metric(&envoy, "shadow_masked.status", 2), Some(2));
    assert_eq!(metric(&envoy, "shadow_masked.leak", 1), Some(1));
    assert_eq!(
        envoy.counter("wasmcustom.palisade.errors.masked.status"),
        Some(0)
    );
    let log = wait_for_log(&envoy, &["dry_run: would mask 500 (status)"]);
    assert!(
        log.contains("dry_run: would mask 500 (status); body starts: \"java.lang"),
        "{log}"
    );
    assert!(
        log.contains("dry_run: would mask 404 (leak: python_stack,file_path)"),
        "{log}"
    );
}

#[test]
fn bad_configs_are_refused_with_the_field_path() {
    let upstream = Upstream::start();
    for (config, needle) in [
        (
            json!({"statuses": ["5xx", "5xy"]}),
            "statuses[1]: invalid status \"5xy\"",
        ),
        (
            json!({"leak_patterns": {"mine": "(unclosed"}}),
            "leak_patterns.mine: invalid regex",
        ),
        (
            json!({"rules": [{"match": {"prefix": "nope"}}]}),
            "rules[0].match.prefix: must start with '/'",
        ),
    ] {
        let err = Envoy::try_start(&EnvoyConfig::new().upstream(&upstream).wasm(errors(config)))
            .err()
            .expect("Envoy refuses the config");
        assert!(err.contains(&invalid_config_log("errors", needle)), "{err}");
    }
}

/// A Palisade filter after this one answering with a problem (here a Lua
/// filter standing in for the JWT filter: like `RequestContext::reject`, it
/// sets the marker as a request header and in its local reply's headers).
fn lua_denier() -> HttpFilter {
    HttpFilter::native_yaml(
        r#"
        name: envoy.filters.http.lua
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
          default_source_code:
            inline_string: |
              function envoy_on_request(handle)
                if handle:headers():get(":path") == "/deny" then
                  handle:headers():replace("x-palisade-denied-by", "jwt")
                  handle:respond(
                    {[":status"] = "401", ["content-type"] = "application/problem+json",
                     ["www-authenticate"] = "Bearer", ["x-palisade-denied-by"] = "jwt"},
                    '{"type":"urn:palisade:problem:invalid-token","title":"Invalid token","status":401}')
                end
                if handle:headers():get(":path") == "/fail" then
                  handle:respond(
                    {[":status"] = "503", ["content-type"] = "application/problem+json"},
                    '{"detail":"no marker: masked"}')
                end
              end
        "#,
    )
}

#[test]
fn palisade_problems_from_later_filters_pass_and_forged_markers_do_not() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .wasm(errors(json!({"statuses": ["4xx", "5xx"]})))
            .filter(lua_denier()),
    );
    let r = get(&envoy.url("/deny"), &[]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(r.json()["type"], "urn:palisade:problem:invalid-token");
    assert_eq!(metric(&envoy, "own_problem_passed", 1), Some(1));

    // A local reply without the marker is masked like any other.
    let r = get(&envoy.url("/fail"), &[]);
    assert_problem(&r, 503);
    assert_eq!(r.json().get("detail"), None);

    assert_eq!(r.header("x-palisade-denied-by"), None);

    // Neither the client nor the upstream can forge the marker.
    let r = get(
        &envoy.url("/x"),
        &[
            ("x-palisade-denied-by", "jwt"),
            ("x-echo-status", "500"),
            ("x-echo-header", "content-type: application/problem+json"),
            ("x-echo-header", "x-palisade-denied-by: jwt"),
            ("x-echo-body", r#"{"detail":"at Foo.bar(Foo.java:1)"}"#),
        ],
    );
    assert_problem(&r, 500);
    assert_eq!(r.json().get("detail"), None);
    assert_eq!(r.header("x-palisade-denied-by"), None);
    assert_eq!(
        upstream.last().unwrap().header("x-palisade-denied-by"),
        None
    );
    assert_eq!(
        envoy.counter("wasmcustom.palisade.errors.own_problem_passed"),
        Some(1)
    );
}

#[test]
fn unmasked_requests_and_bodies_are_untouched() {
    let upstream = Upstream::start();
    let envoy = start(&upstream, errors(json!({})));
    let body = b"\x00\xffbinary upload".repeat(1000);
    let r = request(
        "POST",
        &envoy.url("/upload"),
        &[("x-echo-status", "201")],
        &body,
    );
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["body_len"], body.len());
    assert_eq!(upstream.last().unwrap().body, body);
    // Transport errors would show here as Err.
    assert!(try_request("GET", &envoy.url("/"), &[], b"").is_ok());
}

/// A leak scan that ends in the trailers callback (no end_of_stream on the
/// last body chunk) still sees the buffered body and masks it.
#[test]
fn a_leaky_404_followed_by_trailers_is_masked() {
    let (port, handle) = trailers_upstream_answering(
        b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n\
          4f\r\nTraceback (most recent call last):\n  File \"/srv/app/views.py\", line 12, in get\n\r\n\
          0\r\nx-checksum: 1\r\n\r\n",
    );
    let envoy = envoy_with_trailers(port);
    let (bytes, _) = read_until_close(
        envoy.listener_addr(),
        &raw_request("GET", "/orders/1", &[], b""),
        Duration::from_secs(5),
    );
    let _ = handle.join();
    let wire = String::from_utf8_lossy(&bytes);
    assert!(wire.starts_with("HTTP/1.1 404"), "{wire}");
    assert!(!wire.contains("Traceback"), "{wire}");
    assert!(!wire.contains("/srv/app"), "{wire}");
    assert!(wire.contains("\"status\":404"), "{wire}");
    assert_eq!(metric(&envoy, "masked.leak", 1), Some(1));
}

/// An upstream that gzips its error pages for clients that accept gzip (most
/// do): the 404's Java stack trace must not reach the client. It used to
/// pass unscanned, so any client could switch leak detection off.
#[test]
fn a_gzipped_leaky_404_is_masked_for_a_client_that_accepts_gzip() {
    let upstream = Upstream::start();
    upstream.respond(
        "/orders",
        Canned::status(404)
            .body(BodyKind::JavaStack)
            .gzip_if_accepted(),
    );
    let clean = r#"{"error":"order 42 not found"}"#;
    upstream.respond(
        "/clean",
        Canned::status(404)
            .header("content-type", "application/json")
            .body(BodyKind::Literal(clean.as_bytes().to_vec()))
            .gzip_if_accepted(),
    );
    let envoy = start(&upstream, errors(json!({})));
    let accept = [("accept-encoding", "gzip, deflate, br")];

    let r = get(&envoy.url("/orders/7"), &accept);
    assert_eq!(r.status, 404);
    // The headers left saying gzip before the body was seen: the problem is gzipped too.
    assert_eq!(
        r.header("content-encoding"),
        Some("gzip"),
        "{:?}",
        r.headers
    );
    let body = gunzip(&r.body).expect("the client can gunzip the answer");
    assert!(
        !String::from_utf8_lossy(&body).contains("java."),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let v: Value = serde_json::from_slice(&body).expect("a problem document");
    assert_eq!(
        (v["status"].as_u64(), v["title"].as_str()),
        (Some(404), Some("Not Found"))
    );
    assert_eq!(metric(&envoy, "masked.leak", 1), Some(1));
    let log = wait_for_log(&envoy, &["masked 404 (leak: java_stack)"]);
    assert!(
        log.contains("body starts: \"java.lang.NullPointerException"),
        "{log}"
    );

    // A clean gzipped 404 passes byte for byte.
    let r = get(&envoy.url("/clean"), &accept);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.body, gzip(clean.as_bytes()).expect("gzip"));
    assert!(metric(&envoy, "passed", 1) >= Some(1));

    // Without accept-encoding the same upstream answers plain: masked as before.
    let r = get(&envoy.url("/orders/8"), &[]);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.json()["status"], 404);
    assert_eq!(metric(&envoy, "masked.leak", 2), Some(2));
}

#[test]
fn hold_headers_masks_a_gzipped_leak_with_a_plain_problem() {
    let upstream = Upstream::start();
    upstream.respond(
        "/orders",
        Canned::status(404)
            .header("server", "Apache-Coyote/1.1")
            .body(BodyKind::JavaStack)
            .gzip_if_accepted(),
    );
    let envoy = start(
        &upstream,
        errors(json!({"hold_headers": true})).allow_on_headers_stop_iteration(true),
    );
    let r = get(&envoy.url("/orders/7"), &[("accept-encoding", "gzip")]);
    assert_problem(&r, 404);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("server"), None);
}

#[test]
fn undecodable_compressed_404s_are_masked_by_default_and_pass_when_configured() {
    let upstream = Upstream::start();
    upstream.respond(
        "/zstd",
        Canned::status(404)
            .header("content-encoding", "zstd")
            .body(BodyKind::Literal(b"\x28\xb5\x2f\xfdnot really".to_vec())),
    );
    upstream.respond(
        "/corrupt",
        Canned::status(404)
            .header("content-encoding", "gzip")
            .body(BodyKind::Literal(b"\x1f\x8b\x08\x00garbage".to_vec())),
    );
    let envoy = start(&upstream, errors(json!({})));
    // An unknown coding is decided from the headers: a full problem.
    let r = get(&envoy.url("/zstd"), &[]);
    assert_problem(&r, 404);
    assert_eq!(r.header("content-encoding"), None);
    // A corrupt gzip body: masked, gzipped as its headers said.
    let r = get(&envoy.url("/corrupt"), &[]);
    assert_eq!(r.status, 404);
    let v: Value = serde_json::from_slice(&gunzip(&r.body).expect("gunzip")).expect("problem");
    assert_eq!(v["status"], 404);
    assert_eq!(metric(&envoy, "masked.undecodable", 2), Some(2));
    drop(envoy);

    let envoy = start(&upstream, errors(json!({"undecodable": "pass"})));
    let r = get(&envoy.url("/corrupt"), &[]);
    assert_eq!(r.body, b"\x1f\x8b\x08\x00garbage");
    assert_eq!(metric(&envoy, "leak_scan_skipped", 1), Some(1));
}
