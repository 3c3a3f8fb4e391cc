//! gRPC errors keep their framing; only the free text becomes generic.
mod common;

use common::*;
use palisade_core::{HostKind, Level};
use palisade_errors::grpc;

const GRPC: (&str, &str) = ("content-type", "application/grpc");

#[test]
fn trailers_only_internal_error_gets_a_generic_message() {
    for kind in [HostKind::Envoy, HostKind::Kong] {
        let mut host = request(kind, "/pkg.Svc/Method");
        let plugin = configure(&mut host, "{}");
        let headers = [
            GRPC,
            ("grpc-status", "13"),
            (
                "grpc-message",
                "NullPointerException%20at%20com.acme.Foo.bar(Foo.java:12)",
            ),
            ("grpc-status-details-bin", "CAISBGxlYWsaDGRlYnVnIGluZm8"),
            ("server", "grpc-java"),
        ];
        let out = exchange(&plugin, &mut host, 200, &headers, &[], None);
        assert!(out.local_reply.is_none());
        assert_eq!(out.status, 200);
        assert_eq!(out.header("grpc-status"), Some("13"));
        assert_eq!(out.header("grpc-message"), Some("INTERNAL"));
        assert_eq!(out.header("grpc-status-details-bin"), None);
        assert_eq!(out.header("content-type"), Some("application/grpc"));
        assert_eq!(out.header("server"), None);
        assert_eq!(out.header("x-request-id"), Some("rid-1"));
        assert_eq!(host.counter("palisade.errors.masked.grpc"), 1);
        assert!(host.logged(Level::Warn, "request_id=rid-1 masked gRPC INTERNAL (500, status); body starts: \"NullPointerException at com.acme"), "{:?}", host.logs);
    }
}

#[test]
fn trailers_are_masked_and_the_stream_is_untouched() {
    let mut host = request(HostKind::Envoy, "/pkg.Svc/Stream");
    let plugin = configure(&mut host, "{}");
    let chunks: [&[u8]; 2] = [b"\x00\x00\x00\x00\x02hi", b"\x00\x00\x00\x00\x02yo"];
    let trailers = [
        ("grpc-status", "14"),
        ("grpc-message", "connect to 10.0.3.7:5432 failed"),
        ("grpc-status-details-bin", "CA4SBGxlYWs"),
    ];
    let out = exchange(&plugin, &mut host, 200, &[GRPC], &chunks, Some(&trailers));
    assert_eq!(out.body, chunks.concat());
    assert_eq!(
        (out.body_reads, out.body_writes, out.max_buffered),
        (0, 0, 7)
    );
    assert_eq!(out.trailer("grpc-status"), Some("14"));
    assert_eq!(out.trailer("grpc-message"), Some("UNAVAILABLE"));
    assert_eq!(out.trailer("grpc-status-details-bin"), None);
    assert_eq!(host.counter("palisade.errors.masked.grpc"), 1);
}

#[test]
fn client_class_grpc_errors_are_masked_only_when_they_leak() {
    let run = |message: &str| {
        let mut host = request(HostKind::Envoy, "/pkg.Svc/Get");
        let plugin = configure(&mut host, "{}");
        let out = exchange(
            &plugin,
            &mut host,
            200,
            &[GRPC],
            &[b"x"],
            Some(&[("grpc-status", "5"), ("grpc-message", message)]),
        );
        (
            out.trailer("grpc-message").unwrap_or_default().to_string(),
            host,
        )
    };
    let (m, host) = run("order 42 not found");
    assert_eq!(m, "order 42 not found");
    assert_eq!(host.counter("palisade.errors.passed"), 1);
    let (m, host) = run("Traceback%20%28most%20recent%20call%20last%29%3A%0A%20%20File%20%22/srv/app/x.py%22%2C%20line%203%2C%20in%20f");
    assert_eq!(m, "NOT_FOUND");
    assert!(
        host.logged(
            Level::Warn,
            "masked gRPC NOT_FOUND (404, leak: python_stack,file_path)"
        ),
        "{:?}",
        host.logs
    );
}

#[test]
fn ok_and_unknown_statuses() {
    let mut host = request(HostKind::Envoy, "/pkg.Svc/Get");
    let plugin = configure(&mut host, "{}");
    let out = exchange(
        &plugin,
        &mut host,
        200,
        &[GRPC],
        &[b"x"],
        Some(&[("grpc-status", "0"), ("grpc-message", "fine")]),
    );
    assert_eq!(out.trailer("grpc-message"), Some("fine"));
    let mut host = request(HostKind::Envoy, "/pkg.Svc/Get");
    let plugin = configure(&mut host, "{}");
    let out = exchange(
        &plugin,
        &mut host,
        200,
        &[GRPC, ("grpc-status", "99"), ("grpc-message", "weird")],
        &[],
        None,
    );
    assert_eq!(
        out.header("grpc-message"),
        Some("UNKNOWN"),
        "unknown codes map to 500"
    );
    let mut host = request(HostKind::Envoy, "/pkg.Svc/Get");
    let plugin = configure(&mut host, "{}");
    let out = exchange(
        &plugin,
        &mut host,
        200,
        &[GRPC, ("grpc-status", "x13"), ("grpc-message", "m")],
        &[],
        None,
    );
    assert_eq!(
        out.header("grpc-message"),
        Some("m"),
        "malformed status: untouched"
    );
}

#[test]
fn envoys_own_grpc_local_reply_is_masked_for_grpc_requests() {
    let mut host = request(HostKind::Envoy, "/pkg.Svc/Get")
        .with_request_header("content-type", "application/grpc");
    let plugin = configure(&mut host, "{}");
    let headers = [GRPC, ("grpc-status", "14"), ("grpc-message", "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: delayed connect error: 111")];
    let out = exchange(&plugin, &mut host, 200, &headers, &[], None);
    assert_eq!(out.header("grpc-message"), Some("UNAVAILABLE"));
}

#[test]
fn grpc_requests_are_never_buffered_for_leak_scanning() {
    let mut host = request(HostKind::Envoy, "/pkg.Svc/Get")
        .with_request_header("content-type", "application/grpc+proto");
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
    assert_eq!(out.body, PYTHON_STACK.as_bytes());
    assert_eq!(out.body_reads, 0);
}

#[test]
fn grpc_dry_run_only_counts() {
    let mut host = request(HostKind::Envoy, "/pkg.Svc/Get");
    let plugin = configure(&mut host, r#"{"dry_run": true}"#);
    let out = exchange(
        &plugin,
        &mut host,
        200,
        &[GRPC, ("grpc-status", "13"), ("grpc-message", "secret")],
        &[],
        None,
    );
    assert_eq!(out.header("grpc-message"), Some("secret"));
    assert_eq!(host.counter("palisade.errors.shadow_masked.grpc"), 1);
    assert!(host.logged(
        Level::Warn,
        "dry_run: would mask gRPC INTERNAL (500, status); body starts: \"secret\""
    ));
}

#[test]
fn grpc_helpers() {
    assert_eq!(
        (0..=17).map(grpc::http_status).collect::<Vec<_>>(),
        [
            200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401,
            500
        ]
    );
    assert_eq!(grpc::canonical_name(4), "DEADLINE_EXCEEDED");
    assert_eq!(grpc::canonical_name(u32::MAX), "UNKNOWN");
    assert_eq!(grpc::decode_message(b"a%20b%2"), b"a b%2");
    assert!(grpc::is_grpc_content_type(Some(
        b"Application/gRPC-web+proto"
    )));
    assert!(!grpc::is_grpc_content_type(Some(b"application/json")));
    assert!(!grpc::is_grpc_content_type(Some(b"app")));
}

#[test]
fn a_grpc_typed_500_without_a_grpc_status_is_masked_like_any_response() {
    let mut host = request(HostKind::Envoy, "/page");
    let plugin = configure(&mut host, "{}");
    let trace: &[u8] = b"java.lang.IllegalStateException\n\tat com.acme.X.y(X.java:1)\n";
    let out = exchange(&plugin, &mut host, 500, &[GRPC], &[trace], None);
    let text = String::from_utf8_lossy(&out.body);
    assert!(!text.contains("IllegalStateException"), "{text}");
    assert!(text.contains("\"status\":500"), "{text}");
    assert_eq!(host.counter("palisade.errors.masked.status"), 1);
}
