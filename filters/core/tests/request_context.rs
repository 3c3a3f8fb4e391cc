//! Denials, dry-run, published decisions and log lines.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use palisade_core::context::{RouteFacts, DENIED_BY_HEADER};
use palisade_core::fake::FakeHost;
use palisade_core::metrics::Metrics;
use palisade_core::problem::Problem;
use palisade_core::{Denial, Flow, Level, RequestContext};

fn setup(host: &mut FakeHost) -> (RequestContext, Metrics) {
    let metrics = Metrics::define(host, "demo", &["allowed"], &["too_big"]);
    (RequestContext::new("demo", host), metrics)
}

fn denial() -> Denial {
    Denial::new(Problem::of_kind(413, "too-big", "Too big"), "too_big").header("retry-after", "5")
}

#[test]
fn a_denial_answers_with_problem_json_and_the_request_id() {
    let mut host = FakeHost::request("GET", "/x").with_request_header("x-request-id", "rid-7");
    let (ctx, metrics) = setup(&mut host);
    assert_eq!(
        ctx.reject(&mut host, &metrics, denial(), false),
        Flow::Pause
    );
    let sent = host.sent.clone().unwrap();
    assert_eq!(sent.status, 413);
    assert_eq!(
        sent.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(sent.header("x-request-id"), Some("rid-7"));
    assert_eq!(sent.header("retry-after"), Some("5"));
    assert_eq!(sent.header(DENIED_BY_HEADER), Some("demo"));
    assert_eq!(sent.json()["request_id"], "rid-7");
    assert_eq!(host.counter("palisade.demo.denied.too_big"), 1);
    assert_eq!(
        host.req_header("x-palisade-demo").as_deref(),
        Some("deny;reason=too_big")
    );
    assert_eq!(
        host.req_header(DENIED_BY_HEADER),
        None,
        "the marker travels on the reply"
    );
    // The denial's line is its audit record.
    assert!(host.logged(
        Level::Info,
        r#"palisade.audit {"request_id":"rid-7","decisions":[{"control":"demo","verdict":"deny","reason":"too_big"}]}"#
    ));
}

#[test]
fn without_the_audit_trail_a_denial_logs_a_plain_line() {
    let mut host = FakeHost::request("GET", "/x").with_request_header("x-request-id", "rid-7");
    let (ctx, metrics) = setup(&mut host);
    let ctx = ctx.audited(palisade_core::audit::AuditMode::Off);
    ctx.reject(&mut host, &metrics, denial(), false);
    assert!(host.logged(
        Level::Info,
        "palisade.demo request_id=rid-7 denied with 413 (too_big)"
    ));
    assert!(!host.logged(Level::Info, "palisade.audit"));
    assert!(host.properties.is_empty(), "{:?}", host.properties);
}

#[test]
fn dry_run_decides_logs_and_counts_but_lets_the_request_through() {
    let mut host = FakeHost::request("GET", "/x").with_request_header("x-request-id", "rid-8");
    let (ctx, metrics) = setup(&mut host);
    assert_eq!(
        ctx.reject(&mut host, &metrics, denial(), true),
        Flow::Continue
    );
    assert!(host.sent.is_none());
    assert_eq!(host.counter("palisade.demo.shadow_denied.too_big"), 1);
    assert_eq!(host.counter("palisade.demo.denied.too_big"), 0);
    assert_eq!(
        host.req_header("x-palisade-demo").as_deref(),
        Some("shadow-deny;reason=too_big")
    );
    assert!(host.sent.is_none());
    assert!(host.logged(Level::Warn, "request_id=rid-8 dry_run: would deny with 413"));
}

#[test]
fn published_decisions_replace_client_sent_values() {
    let mut host = FakeHost::request("GET", "/").with_request_header("x-palisade-demo", "allow");
    let (ctx, _) = setup(&mut host);
    ctx.publish(&mut host, "shadow-deny;reason=x");
    let values: Vec<_> = host
        .request_headers
        .iter()
        .filter(|(n, _)| n == "x-palisade-demo")
        .collect();
    assert_eq!(values.len(), 1);
    assert_eq!(values[0].1, b"shadow-deny;reason=x");
}

#[test]
fn undefined_metrics_are_reported_not_counted() {
    let mut host = FakeHost::new();
    let (_, metrics) = setup(&mut host);
    metrics.inc(&mut host, "typo");
    assert!(host.counters.is_empty());
    assert!(host.logged(Level::Error, "\"typo\" was never defined"));
    assert!(metrics.defines("allowed") && metrics.defines("shadow_denied.too_big"));
    assert!(host
        .metric_names
        .contains(&"palisade.demo.denied.too_big".to_string()));
}

#[test]
fn logs_without_an_id_use_a_dash() {
    let mut host = FakeHost::request("GET", "/");
    let (ctx, _) = setup(&mut host);
    ctx.log(&host, Level::Warn, "hello");
    assert!(host.logged(Level::Warn, "palisade.demo request_id=- hello"));
}

#[test]
fn route_facts_normalise_the_path_and_read_the_route_name_only_when_asked() {
    let mut host = FakeHost::request("POST", "/a/../admin?q=1");
    host.properties
        .insert("xds.route_name".into(), b"r1".to_vec());
    let facts = RouteFacts::read(&host, false);
    assert_eq!(
        (facts.method.as_str(), facts.path.as_str()),
        ("POST", "/admin")
    );
    assert_eq!(facts.route_name, None);
    assert_eq!(
        RouteFacts::read(&host, true).route_name.as_deref(),
        Some("r1")
    );
}

#[test]
fn counter_handles_count_without_a_lookup_and_ignore_unknown_events() {
    let mut host = FakeHost::new();
    let (_, metrics) = setup(&mut host);
    metrics.counter("allowed").add(&mut host, 3);
    metrics.counter("allowed").add(&mut host, 0);
    metrics.counter("typo").add(&mut host, 1);
    assert_eq!(host.counter("palisade.demo.allowed"), 3);
    assert_eq!(host.counters.len(), 1);
}
