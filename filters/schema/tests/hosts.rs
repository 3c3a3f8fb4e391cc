//! Whole exchanges under each host's own rules and defaults (`fake::run`):
//! Envoy without `allow_on_headers_stop_iteration` (its default, and all
//! Istio's WasmPlugin can do) and Kong's real host (`end_of_stream` never
//! true on headers, a request held with no call pending hangs, bodies over
//! `client_body_buffer_size` unreadable). No default may hang.

mod common;

use common::{metric_names, plugin};
use palisade_core::fake::{run, Exchange, FakeHost, Outcome};
use palisade_core::{HostKind, Level, Plugin};
use palisade_schema::SchemaPlugin;
use serde_json::{json, Value};
use std::rc::Rc;

/// No `hold_headers`: the filter's default.
fn orders() -> Value {
    json!({
        "max_body_bytes": 65536,
        "rules": [
            {"match": {"path": "/orders", "methods": ["POST"]},
             "body": {"schema": {
                 "type": "object", "required": ["sku", "qty"],
                 "properties": {
                     "sku": {"type": "string"},
                     "qty": {"type": "integer", "minimum": 1},
                     "note": {"type": "string"}},
                 "additionalProperties": false}}},
            {"match": {"path": "/notes", "methods": ["POST"]},
             "body": {"required": false, "schema": {"type": "object"}}}
        ]
    })
}

fn held(mut config: Value) -> Value {
    config["hold_headers"] = json!(true);
    config
}

const VALID: &[u8] = br#"{"sku": "AB-1", "qty": 2}"#;
const INVALID: &[u8] = br#"{"sku": "AB-1", "qty": 0}"#;

/// A request on `kind`'s host with the framing a client sends for `body`.
fn host(kind: HostKind, method: &str, path: &str, body: Option<&[u8]>) -> FakeHost {
    let mut host = FakeHost::request(method, path);
    host.kind = kind;
    host.metric_names = metric_names();
    if let Some(body) = body {
        host = host
            .with_request_header("content-type", "application/json")
            .with_request_header("content-length", &body.len().to_string());
    }
    host
}

fn exchange(
    p: &Rc<SchemaPlugin>,
    host: &mut FakeHost,
    body: Option<&[u8]>,
    ex: Exchange,
) -> Outcome {
    let ex = match body {
        Some(b) => ex.body(b),
        None => ex,
    };
    let mut filter = SchemaPlugin::new_filter(p);
    run(&mut filter, host, &ex)
}

fn post(p: &Rc<SchemaPlugin>, kind: HostKind, path: &str, body: &[u8]) -> (FakeHost, Outcome) {
    let mut h = host(kind, "POST", path, Some(body));
    let out = exchange(p, &mut h, Some(body), Exchange::new());
    (h, out)
}

fn problem_type(out: &Outcome) -> String {
    out.client().json()["type"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn hold_headers_is_off_by_default_and_the_watchdog_only_runs_when_it_is_on() {
    assert!(!plugin(&orders()).holds_request_headers());
    assert!(plugin(&held(orders())).holds_request_headers());
}

/// Before: `hold_headers` defaulted to true and every validated POST hung
/// under Envoy's defaults (no body callback after Pause from headers).
#[test]
fn envoy_defaults_validate_a_post_without_the_stop_iteration_flag() {
    let p = plugin(&orders());
    let (_, out) = post(&p, HostKind::Envoy, "/orders", VALID);
    assert_eq!(out.hung, None);
    assert_eq!(out.client().status, 200);
    assert_eq!(out.upstream.as_ref().map(|u| u.1.as_slice()), Some(VALID));

    let (h, out) = post(&p, HostKind::Envoy, "/orders", INVALID);
    assert_eq!(out.hung, None);
    assert_eq!(out.client().status, 400);
    assert_eq!(problem_type(&out), "urn:palisade:problem:schema-violation");
    assert!(out.upstream.is_none(), "the refused body went upstream");
    assert_eq!(h.counter("palisade.schema.denied.invalid_body"), 1);

    // A body in pieces is buffered by the body callbacks, then judged.
    let mut h = host(HostKind::Envoy, "POST", "/orders", None)
        .with_request_header("content-type", "application/json")
        .with_request_header("transfer-encoding", "chunked");
    let ex = Exchange::new().body_chunks(&[b"{\"sku\": \"AB-1\",", b" \"qty\": 0}"]);
    let mut filter = SchemaPlugin::new_filter(&p);
    let out = run(&mut filter, &mut h, &ex);
    assert_eq!(out.client().status, 400);
    assert!(out.upstream.is_none());
}

/// `hold_headers: true` needs the flag: without it Envoy never calls the
/// body callbacks (the glue's watchdog then answers 500, tested on the
/// real Envoy); with it the verdict is published to the upstream.
#[test]
fn held_headers_on_envoy_need_the_flag() {
    let p = plugin(&held(orders()));
    let (_, out) = post(&p, HostKind::Envoy, "/orders", VALID);
    assert!(
        out.hung
            .as_deref()
            .is_some_and(|h| h.contains("allow_on_headers_stop_iteration")),
        "{:?}",
        out.hung
    );
    let mut h = host(HostKind::Envoy, "POST", "/orders", Some(VALID));
    let out = exchange(
        &p,
        &mut h,
        Some(VALID),
        Exchange::new().with_stop_iteration_flag(),
    );
    assert_eq!(out.client().status, 200);
    assert_eq!(out.upstream_values("x-palisade-schema"), ["allow"]);
}

/// Before: on Kong the default held the headers, and nginx never read the
/// body of such a request: every validated POST hung, nothing logged.
#[test]
fn kong_validates_a_post_with_the_defaults() {
    let p = plugin(&orders());
    let (_, out) = post(&p, HostKind::Kong, "/orders", VALID);
    assert_eq!(out.hung, None);
    assert_eq!(out.client().status, 200);
    assert_eq!(out.upstream.as_ref().map(|u| u.1.as_slice()), Some(VALID));
    let (h, out) = post(&p, HostKind::Kong, "/orders", INVALID);
    assert_eq!(out.client().status, 400);
    assert!(out.upstream.is_none());
    assert_eq!(h.counter("palisade.schema.denied.invalid_body"), 1);
}

/// Kong cannot hold request headers for a body: `hold_headers` is ignored
/// there (nginx reads the whole body before proxying, so the upstream never
/// sees a refused request anyway), with one warning per VM.
#[test]
fn kong_ignores_hold_headers_with_one_warning_per_vm() {
    let p = plugin(&held(orders()));
    let mut warnings = 0;
    for body in [VALID, INVALID, VALID] {
        let (h, out) = post(&p, HostKind::Kong, "/orders", body);
        assert_eq!(out.hung, None);
        let expected = if body == VALID { 200 } else { 400 };
        assert_eq!(out.client().status, expected);
        warnings += h
            .logs
            .borrow()
            .iter()
            .filter(|(l, m)| *l == Level::Warn && m.contains("hold_headers is ignored on kong"))
            .count();
    }
    assert_eq!(warnings, 1);
    // Envoy holds as configured and says nothing.
    let (h, _) = post(&p, HostKind::Envoy, "/orders", VALID);
    assert!(!h.logged(Level::Warn, "hold_headers"));
}

/// Kong never says `end_of_stream` on headers: presence of a body comes
/// from `content-length` / `transfer-encoding`. Before host detection held
/// on Kong the filter believed it ran on Envoy, trusted `end_of_stream`,
/// and a body-less POST on a `body.required` route reached the upstream.
#[test]
fn kong_refuses_a_post_without_a_body_where_one_is_required() {
    let p = plugin(&orders());
    // A client that names the body's type but sends none.
    let bodiless = || {
        host(HostKind::Kong, "POST", "/orders", None)
            .with_request_header("content-type", "application/json")
    };
    let mut h = bodiless();
    let out = exchange(&p, &mut h, None, Exchange::new());
    assert_eq!(out.client().status, 400);
    assert_eq!(problem_type(&out), "urn:palisade:problem:body-required");
    assert!(out.upstream.is_none());
    assert_eq!(h.counter("palisade.schema.denied.body_required"), 1);

    let mut h = bodiless().with_request_header("content-length", "0");
    let out = exchange(&p, &mut h, None, Exchange::new());
    assert_eq!(out.client().status, 400);

    // The old view of the host: Envoy believed on Kong lets it through.
    let mut h = bodiless();
    h.believed = Some(HostKind::Envoy);
    let out = exchange(&p, &mut h, None, Exchange::new());
    assert!(out.upstream.is_some(), "{out:?}");

    // Where a body is optional, its absence passes.
    let mut h = host(HostKind::Kong, "POST", "/notes", None);
    let out = exchange(&p, &mut h, None, Exchange::new());
    assert_eq!(out.client().status, 200);
    assert!(out.upstream.is_some());
}

/// nginx spills a body over `client_body_buffer_size` (Kong's 8k) to a
/// file the filter cannot read: refused (413), never passed unchecked;
/// `client_body_buffer_size 1m` makes it readable.
#[test]
fn kong_refuses_a_body_it_cannot_read_and_validates_it_with_a_larger_buffer() {
    let p = plugin(&orders());
    let note = "x".repeat(20_000);
    let body = format!(r#"{{"sku": "AB-1", "qty": 2, "note": "{note}"}}"#).into_bytes();
    let (h, out) = post(&p, HostKind::Kong, "/orders", &body);
    assert_eq!(out.client().status, 413);
    assert!(out.upstream.is_none());
    assert_eq!(h.counter("palisade.schema.denied.body_unreadable"), 1);

    let mut h = host(HostKind::Kong, "POST", "/orders", Some(&body));
    let ex = Exchange {
        kong_client_body_buffer_size: 1024 * 1024,
        ..Exchange::new()
    };
    let out = exchange(&p, &mut h, Some(&body), ex);
    assert_eq!(out.client().status, 200);
    assert_eq!(out.upstream.map(|u| u.1.len()), Some(body.len()));
}
