//! Global mode over `FakeHost`: the RLS call, its answers, and `on_error`.

mod common;

use common::Worker;
use envoy_types::pb::envoy::service::ratelimit::v3 as rls;
use palisade_core::fake::RecordedCall;
use palisade_core::host::CallResponse;
use palisade_core::{Flow, HttpFilter};
use prost::Message;

fn config(on_error: &str) -> String {
    format!(
        r#"{{"mode": "global",
            "global": {{"cluster": "rls", "domain": "palisade", "timeout_ms": 250, "on_error": "{on_error}"}},
            "rules": [{{"limits": [{{"name": "per-key", "key": [{{"header": "x-api-key"}}], "requests": 2, "per_s": 60}}]}}]}}"#
    )
}

fn ok_response(remaining: u32) -> Vec<u8> {
    rls::RateLimitResponse {
        overall_code: rls::rate_limit_response::Code::Ok as i32,
        statuses: vec![rls::rate_limit_response::DescriptorStatus {
            code: rls::rate_limit_response::Code::Ok as i32,
            limit_remaining: remaining,
            duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: 42,
                nanos: 0,
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode_to_vec()
}

fn over_limit() -> Vec<u8> {
    rls::RateLimitResponse {
        overall_code: rls::rate_limit_response::Code::OverLimit as i32,
        statuses: vec![rls::rate_limit_response::DescriptorStatus {
            code: rls::rate_limit_response::Code::OverLimit as i32,
            duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: 17,
                nanos: 1,
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode_to_vec()
}

/// Sends the request, checks the call, answers it; the host after.
fn exchange(w: &Worker, status: u32, message: Vec<u8>) -> (Flow, palisade_core::fake::FakeHost) {
    exchange_after(w, status, message, 0)
}

/// [`exchange`], the answer coming `elapsed_ms` after the call.
fn exchange_after(
    w: &Worker,
    status: u32,
    message: Vec<u8>,
    elapsed_ms: u64,
) -> (Flow, palisade_core::fake::FakeHost) {
    let mut f = w.filter();
    let mut h = w
        .request("GET", "/")
        .with_request_header("x-api-key", "sekret");
    assert_eq!(f.on_request_headers(&mut h, true), Flow::Pause);
    let (token, request) = match h.calls.last() {
        Some(RecordedCall::Grpc {
            token,
            cluster,
            service,
            method,
            message,
            timeout_ms,
        }) => {
            assert_eq!(cluster, "rls");
            assert_eq!(service, "envoy.service.ratelimit.v3.RateLimitService");
            assert_eq!(method, "ShouldRateLimit");
            assert_eq!(*timeout_ms, 250);
            (*token, message.clone())
        }
        other => panic!("no gRPC call: {other:?}"),
    };
    let req = rls::RateLimitRequest::decode(request.as_slice()).unwrap();
    assert_eq!(req.domain, "palisade");
    let entries = &req.descriptors[0].entries;
    assert_eq!(entries[0].key, "limit");
    assert_eq!(entries[0].value, "per-key");
    assert_eq!(entries[1].key, "header.x-api-key");
    assert!(!entries[1].value.contains("sekret"));
    h.advance_ms(elapsed_ms);
    let flow = f.on_call_response(
        &mut h,
        CallResponse::Grpc {
            token,
            status,
            message,
        },
    );
    if flow == Flow::Continue {
        h.response_headers = vec![(":status".into(), b"200".to_vec())];
        f.on_response_headers(&mut h, false);
    }
    (flow, h)
}

#[test]
fn the_service_admits_and_its_counts_become_response_fields() {
    let w = Worker::new(&config("allow"));
    let (flow, h) = exchange(&w, 0, ok_response(1));
    assert_eq!(flow, Flow::Continue);
    assert!(h.sent.is_none());
    assert_eq!(
        h.resp_header("ratelimit").as_deref(),
        Some("\"per-key\";r=1;t=42")
    );
    assert_eq!(h.counter("palisade.ratelimit.allowed"), 1);
}

#[test]
fn over_limit_is_a_429_with_the_services_reset() {
    let w = Worker::new(&config("allow"));
    let (flow, h) = exchange(&w, 0, over_limit());
    assert_eq!(flow, Flow::Pause);
    let sent = h.sent.clone().unwrap();
    assert_eq!(sent.status, 429);
    assert_eq!(sent.header("retry-after"), Some("18"));
    assert_eq!(h.counter("palisade.ratelimit.limited.per-key"), 1);
}

/// Envoy answers a call that hit its deadline with UNAVAILABLE (its async
/// client's 504 mapped to gRPC), not DEADLINE_EXCEEDED: found by
/// `tests/tests/faults.rs` against a hanging service. The time tells the
/// two apart.
#[test]
fn unavailable_at_the_deadline_counts_as_a_timeout_and_sooner_as_a_failed_connection() {
    let w = Worker::new(&config("deny"));
    let (flow, h) = exchange_after(&w, 14, Vec::new(), 250);
    assert_eq!(flow, Flow::Pause);
    assert_eq!(h.sent.as_ref().unwrap().status, 503);
    assert_eq!(h.counter("palisade.ratelimit.global_timeout"), 1);
    assert_eq!(h.counter("palisade.ratelimit.global_error"), 1);
    assert!(h.logged(
        palisade_core::Level::Warn,
        "gRPC status 14 after 250 ms (deadline exceeded: no answer within global.timeout_ms)"
    ));
    let (_, h) = exchange_after(&w, 14, Vec::new(), 3);
    assert_eq!(h.counter("palisade.ratelimit.global_timeout"), 0);
    assert!(h.logged(
        palisade_core::Level::Warn,
        "gRPC status 14 (unavailable: the connection failed"
    ));
}

#[test]
fn failures_follow_on_error() {
    // allow
    let w = Worker::new(&config("allow"));
    let (flow, h) = exchange(&w, 14, Vec::new());
    assert_eq!(flow, Flow::Continue);
    assert!(h.sent.is_none());
    assert_eq!(h.counter("palisade.ratelimit.global_error"), 1);
    assert!(h.logged(
        palisade_core::Level::Warn,
        "gRPC status 14 (unavailable: the connection failed"
    ));
    let (_, h) = exchange(&w, 4, Vec::new());
    assert_eq!(h.counter("palisade.ratelimit.global_timeout"), 1);
    assert!(h.logged(
        palisade_core::Level::Warn,
        "no answer within global.timeout_ms"
    ));
    let (flow, h) = exchange(&w, 0, b"\x08\x07garbage".to_vec());
    assert_eq!(flow, Flow::Continue);
    assert!(h.logged(palisade_core::Level::Warn, "not a RateLimitResponse"));
    // deny
    let w = Worker::new(&config("deny"));
    let (flow, h) = exchange(&w, 14, Vec::new());
    assert_eq!(flow, Flow::Pause);
    assert_eq!(h.sent.as_ref().unwrap().status, 503);
    assert_eq!(
        h.counter("palisade.ratelimit.denied.limiter_unavailable"),
        1
    );
    // local: the local buckets (2 per minute) decide.
    let w = Worker::new(&config("local"));
    let statuses: Vec<u16> = (0..3)
        .map(|_| {
            let (_, h) = exchange(&w, 14, Vec::new());
            h.sent.map(|s| s.status).unwrap_or(200)
        })
        .collect();
    assert_eq!(statuses, vec![200, 200, 429]);
}

#[test]
fn a_call_that_cannot_be_dispatched_follows_on_error_at_once() {
    let w = Worker::new(&config("deny"));
    let mut f = w.filter();
    let mut h = w.request("GET", "/").with_request_header("x-api-key", "k");
    h.refuse_calls = true;
    assert_eq!(f.on_request_headers(&mut h, true), Flow::Pause);
    assert!(h.logged(palisade_core::Level::Warn, "does the cluster exist?"));
    assert_eq!(h.sent.unwrap().status, 503);
}

#[test]
fn a_stale_answer_is_ignored() {
    let w = Worker::new(&config("allow"));
    let mut f = w.filter();
    let mut h = w.request("GET", "/");
    h.request_headers.push(("x-api-key".into(), b"k".to_vec()));
    assert_eq!(f.on_request_headers(&mut h, true), Flow::Pause);
    let flow = f.on_call_response(
        &mut h,
        CallResponse::Grpc {
            token: 999,
            status: 0,
            message: over_limit(),
        },
    );
    assert_eq!(flow, Flow::Pause, "still waiting for its own answer");
    assert!(h.sent.is_none());
    let token = h.calls[0].token();
    let flow = f.on_call_response(
        &mut h,
        CallResponse::Grpc {
            token,
            status: 0,
            message: over_limit(),
        },
    );
    assert_eq!(flow, Flow::Pause);
    assert_eq!(h.sent.unwrap().status, 429);
}
