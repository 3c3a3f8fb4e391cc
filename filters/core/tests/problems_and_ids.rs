//! problem+json shape and the correlation id.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use palisade_core::problem::{reason_phrase, Problem, CONTENT_TYPE};
use palisade_core::request_id::{correlation_id, is_safe_id, trace_id};
use serde_json::{json, Value};

#[test]
fn problem_has_rfc9457_members() {
    let p = Problem::of_kind(431, "too-many-headers", "Too many request headers")
        .detail("at most 64 headers are allowed")
        .request_id(Some("abc-1"))
        .extension("limit", json!(64));
    let v: Value = serde_json::from_slice(&p.to_json()).unwrap();
    assert_eq!(
        v,
        json!({"type":"urn:palisade:problem:too-many-headers","title":"Too many request headers",
               "status":431,"detail":"at most 64 headers are allowed","request_id":"abc-1","limit":64})
    );
    let headers = p.headers();
    assert!(headers.contains(&("content-type", CONTENT_TYPE.to_string())));
    assert!(headers.contains(&("x-request-id", "abc-1".to_string())));
}

#[test]
fn blank_problems_use_the_reason_phrase_and_extensions_cannot_override_core_members() {
    let p = Problem::new(503)
        .extension("status", json!(200))
        .extension("type", json!("x"));
    let v: Value = serde_json::from_slice(&p.to_json()).unwrap();
    assert_eq!(v["type"], "about:blank");
    assert_eq!(v["title"], "Service Unavailable");
    assert_eq!(v["status"], 503);
    assert!(v.get("request_id").is_none());
    assert_eq!(reason_phrase(599), "Server Error");
    assert_eq!(reason_phrase(499), "Client Error");
}

#[test]
fn request_id_prefers_x_request_id_then_traceparent() {
    let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert_eq!(
        correlation_id(Some(b"req-1"), Some(tp)).as_deref(),
        Some("req-1")
    );
    assert_eq!(
        correlation_id(None, Some(tp)).as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(correlation_id(None, None), None);
}

#[test]
fn unsafe_ids_are_never_echoed() {
    let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for bad in [
        &b"<script>"[..],
        b"a b",
        b"",
        b"\xff",
        b"x\"y",
        &[b'a'; 129][..],
    ] {
        assert_eq!(
            correlation_id(Some(bad), Some(tp)).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            "{bad:?}"
        );
    }
    assert!(is_safe_id("6f1c2a4e-1b2c-4d5e-8f90-a1b2c3d4e5f6"));
}

#[test]
fn malformed_traceparents_are_ignored() {
    for bad in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e4736",
        "",
    ] {
        assert_eq!(trace_id(bad), None, "{bad}");
    }
    assert!(trace_id("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future").is_some());
}
