//! The filter end to end over `FakeHost`: answers, headers, keys, dry run.

mod common;

use common::{Worker, T0};
use palisade_core::{Flow, HttpFilter};

const LOGIN: &str = r#"{
  "rules": [ { "match": { "prefix": "/login", "methods": ["POST"] },
               "limits": [ { "name": "login-per-ip", "key": ["client_ip"], "requests": 3, "per_s": 60 } ] } ]
}"#;

#[test]
fn over_the_limit_is_a_429_problem_with_retry_after_and_draft_fields() {
    let w = Worker::new(LOGIN);
    for left in (0..3).rev() {
        let (flow, h) = w.send(w.request("POST", "/login"));
        assert_eq!(flow, Flow::Continue);
        assert!(h.sent.is_none());
        assert_eq!(
            h.req_header("x-palisade-ratelimit").as_deref(),
            Some("allow")
        );
        assert_eq!(
            h.resp_header("ratelimit-policy").as_deref(),
            Some("\"login-per-ip\";q=3;w=60")
        );
        let expected = format!("\"login-per-ip\";r={left};t=20");
        assert_eq!(
            h.resp_header("ratelimit").as_deref(),
            Some(expected.as_str())
        );
    }
    let (flow, h) = w.send(
        w.request("POST", "/login")
            .with_request_header("x-request-id", "req-1"),
    );
    assert_eq!(flow, Flow::Pause);
    let sent = h.sent.as_ref().unwrap();
    assert_eq!(sent.status, 429);
    assert_eq!(sent.header("retry-after"), Some("20"));
    assert_eq!(
        sent.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(sent.header("x-palisade-denied-by"), Some("ratelimit"));
    assert_eq!(sent.header("ratelimit"), Some("\"login-per-ip\";r=0;t=20"));
    let doc = sent.json();
    assert_eq!(doc["type"], "urn:palisade:problem:rate-limited");
    assert_eq!(doc["request_id"], "req-1");
    assert_eq!(h.counter("palisade.ratelimit.limited.login-per-ip"), 1);
    assert_eq!(h.counter("palisade.ratelimit.denied.rate_limited"), 1);
    // Other methods, paths and clients are not limited by this rule.
    assert_eq!(w.status(w.request("GET", "/login")), 200);
    let mut other = w.request("POST", "/login");
    other
        .properties
        .insert("source.address".into(), b"192.0.2.11:1".to_vec());
    assert_eq!(w.status(other), 200);
    // 20 s later one token is back.
    w.advance_secs(20);
    assert_eq!(w.status(w.request("POST", "/login")), 200);
    assert_eq!(w.status(w.request("POST", "/login")), 429);
}

#[test]
fn a_denied_request_spends_nothing_in_the_rules_other_limits() {
    let w = Worker::new(
        r#"{"rules": [{"limits": [
            {"name": "wide", "key": [], "requests": 10, "per_s": 100},
            {"name": "narrow", "key": [{"header": "x-api-key"}], "requests": 1, "per_s": 100}]}],
            "response_headers": "x-ratelimit"}"#,
    );
    let k = |v: &str| w.request("GET", "/").with_request_header("x-api-key", v);
    assert_eq!(w.status(k("a")), 200);
    for _ in 0..5 {
        assert_eq!(w.status(k("a")), 429);
    }
    // "wide" spent one token only: nine left for others.
    let (_, h) = w.send(k("b"));
    assert_eq!(h.resp_header("x-ratelimit-remaining").as_deref(), Some("0"));
    let (_, h) = w.send(k("c"));
    assert_eq!(h.resp_header("x-ratelimit-limit").as_deref(), Some("1"));
    let (_, h) = w.send(w.request("GET", "/").with_request_header("x-api-key", "d"));
    assert!(h.sent.is_none());
    // wide: 10 - a, b, c, d = 6 left; narrow for "e" has 0 after it: tightest is narrow.
    let (_, h) = w.send(k("e"));
    assert_eq!(h.resp_header("x-ratelimit-remaining").as_deref(), Some("0"));
    let (_, h) = w.send(k("a"));
    assert_eq!(h.counter("palisade.ratelimit.limited.narrow"), 1);
    assert_eq!(h.counter("palisade.ratelimit.limited.wide"), 0);
}

#[test]
fn grpc_requests_get_resource_exhausted() {
    let w = Worker::new(
        r#"{"rules": [{"limits": [{"name": "one", "key": [], "requests": 1, "per_s": 60}]}]}"#,
    );
    let grpc = || {
        w.request("POST", "/pkg.Svc/Call")
            .with_request_header("content-type", "application/grpc")
    };
    assert_eq!(w.status(grpc()), 200);
    let (flow, h) = w.send(grpc());
    assert_eq!(flow, Flow::Pause);
    let sent = h.sent.clone().unwrap();
    assert_eq!(sent.status, 200);
    assert_eq!(sent.header("grpc-status"), Some("8"));
    assert_eq!(sent.header("content-type"), Some("application/grpc"));
    assert_eq!(sent.header("retry-after"), Some("60"));
    assert!(sent.body.is_empty());
    assert_eq!(h.counter("palisade.ratelimit.denied.rate_limited"), 1);
}

#[test]
fn dry_run_counts_and_publishes_but_lets_everything_through() {
    let w = Worker::new(
        r#"{"dry_run": true, "rules": [{"limits": [{"name": "one", "key": [], "requests": 1, "per_s": 60}]}]}"#,
    );
    assert_eq!(w.status(w.request("GET", "/")), 200);
    let (flow, h) = w.send(w.request("GET", "/"));
    assert_eq!(flow, Flow::Continue);
    assert!(h.sent.is_none());
    assert_eq!(
        h.req_header("x-palisade-ratelimit").as_deref(),
        Some("shadow-deny;reason=rate_limited")
    );
    assert_eq!(h.counter("palisade.ratelimit.shadow_limited.one"), 1);
    assert_eq!(
        h.counter("palisade.ratelimit.shadow_denied.rate_limited"),
        1
    );
    assert_eq!(h.counter("palisade.ratelimit.limited.one"), 0);
    assert_eq!(
        h.resp_header("ratelimit").as_deref(),
        Some("\"one\";r=0;t=60")
    );
}

#[test]
fn missing_keys_skip_share_or_deny() {
    let cfg = |mode: &str| {
        format!(
            r#"{{"on_missing_key": "{mode}", "rules": [{{"limits": [
                {{"name": "k", "key": [{{"header": "x-api-key"}}], "requests": 1, "per_s": 60}}]}}]}}"#
        )
    };
    let w = Worker::new(&cfg("skip"));
    for _ in 0..3 {
        assert_eq!(w.status(w.request("GET", "/")), 200);
    }
    let w = Worker::new(&cfg("shared"));
    assert_eq!(w.status(w.request("GET", "/")), 200);
    assert_eq!(w.status(w.request("GET", "/")), 429);
    let keyed = w.request("GET", "/").with_request_header("x-api-key", "z");
    assert_eq!(w.status(keyed), 200);
    let w = Worker::new(&cfg("deny"));
    let (_, h) = w.send(w.request("GET", "/"));
    let sent = h.sent.clone().unwrap();
    assert_eq!(sent.status, 400);
    assert_eq!(
        sent.json()["type"],
        "urn:palisade:problem:rate-limit-key-missing"
    );
    assert_eq!(h.counter("palisade.ratelimit.denied.missing_key"), 1);
}

#[test]
fn forwarded_for_is_used_only_past_trusted_hops() {
    let w = Worker::new(
        r#"{"client_ip": {"xff_num_trusted_hops": 1}, "rules": [{"limits": [
            {"name": "ip", "key": [{"client_ip": {"v4_prefix": 24}}], "requests": 1, "per_s": 60}]}]}"#,
    );
    let via = |xff: &str| {
        w.request("GET", "/")
            .with_request_header("x-forwarded-for", xff)
    };
    assert_eq!(w.status(via("1.1.1.1, 203.0.113.5")), 200);
    // A different spoofed left part, same real client network: limited.
    assert_eq!(w.status(via("9.9.9.9, 203.0.113.77")), 429);
    assert_eq!(w.status(via("203.0.114.1")), 200);
}

#[test]
fn requests_matching_no_rule_are_untouched() {
    let w = Worker::new(LOGIN);
    let (_, h) = w.send(w.request("GET", "/other"));
    assert!(h.req_header("x-palisade-ratelimit").is_none());
    assert!(h.resp_header("ratelimit").is_none());
}

#[test]
fn response_fields_can_be_turned_off() {
    let w = Worker::new(
        r#"{"response_headers": "none", "rules": [{"limits": [{"name": "one", "key": [], "requests": 1, "per_s": 60}]}]}"#,
    );
    let (_, h) = w.send(w.request("GET", "/"));
    assert!(h.resp_header("ratelimit").is_none());
    assert!(h.resp_header("x-ratelimit-limit").is_none());
    let (_, h) = w.send(w.request("GET", "/"));
    let sent = h.sent.clone().unwrap();
    assert_eq!(sent.header("retry-after"), Some("60"));
    assert!(sent.header("ratelimit").is_none());
}

#[test]
fn the_response_callback_never_fails_without_a_request() {
    let w = Worker::new(LOGIN);
    let mut f = w.filter();
    let mut h = w.request("GET", "/");
    assert_eq!(f.on_response_headers(&mut h, true), Flow::Continue);
    let _ = T0;
}

#[test]
fn subjects_are_limited_by_the_claims_the_jwt_filter_verified() {
    let cfg = r#"{"rules": [{"limits": [{"name": "sub", "key": [{"claim": "sub"}], "requests": 1, "per_s": 60}]}]}"#;
    let w = Worker::new(cfg);
    let as_user = |sub: &str| {
        let mut h = w.request("GET", "/");
        h.properties.insert(
            "palisade_jwt_claims".into(),
            format!(r#"{{"sub": "{sub}", "scope": "read"}}"#).into_bytes(),
        );
        h
    };
    assert_eq!(w.status(as_user("alice")), 200);
    assert_eq!(w.status(as_user("alice")), 429);
    assert_eq!(w.status(as_user("bob")), 200);
    // A claim header without a verified token counts for nothing.
    let forged = w
        .request("GET", "/")
        .with_request_header("x-jwt-sub", "carol");
    let (_, h) = w.send(forged);
    assert!(h.req_header("x-palisade-ratelimit").is_none());

    let w = Worker::new(
        r#"{"claims": {"from": "headers"}, "rules": [{"limits": [{"name": "sub", "key": [{"claim": "sub"}], "requests": 1, "per_s": 60}]}]}"#,
    );
    let by_header = || {
        w.request("GET", "/")
            .with_request_header("x-jwt-sub", "dave")
    };
    assert_eq!(w.status(by_header()), 200);
    assert_eq!(w.status(by_header()), 429);
}

#[test]
fn kong_addresses_without_a_port_and_its_shared_keys_work() {
    let cfg = r#"{"rules": [{"limits": [{"name": "ip", "key": ["client_ip"], "requests": 2, "per_s": 60}]}]}"#;
    let w = Worker::kong(cfg);
    let from = |addr: &str| {
        let mut h = w.request("GET", "/");
        h.properties
            .insert("source.address".into(), addr.as_bytes().to_vec());
        h
    };
    assert_eq!(w.status(from("198.51.100.4")), 200);
    assert_eq!(w.status(from("198.51.100.4")), 200);
    assert_eq!(w.status(from("198.51.100.4")), 429);
    assert_eq!(w.status(from("198.51.100.5")), 200);
    let keys = w.root.shared.borrow().keys();
    assert!(keys
        .iter()
        .all(|k| k.starts_with("palisade.ratelimit.slot.")));
    assert!(keys.iter().all(|k| !k.contains('/')));
}
