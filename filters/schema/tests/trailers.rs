//! Requests that end with trailers (HTTP/2, gRPC, HTTP/1.1 chunked with a
//! trailer section): no body callback says `end_of_stream`, so the buffered
//! body must be judged in `on_request_trailers`, never let through unchecked.

mod common;

use common::{metric_names, plugin, Outcome};
use palisade_core::fake::FakeHost;
use palisade_core::{Flow, HttpFilter, Plugin};
use palisade_schema::SchemaPlugin;
use serde_json::{json, Value};
use std::rc::Rc;

/// Held headers (Envoy with `allow_on_headers_stop_iteration`).
fn orders() -> Value {
    json!({
        "hold_headers": true,
        "max_body_bytes": 2048,
        "rules": [
            {"match": {"path": "/orders", "methods": ["POST"]},
             "body": {"schema": {
                 "type": "object", "required": ["sku", "qty"],
                 "properties": {
                     "sku": {"type": "string"},
                     "qty": {"type": "integer", "minimum": 1, "maximum": 100}},
                 "additionalProperties": false}}},
            {"match": {"prefix": "/bulk/"}}
        ]
    })
}

/// A JSON POST as Envoy delivers one that ends with trailers: headers (more
/// to come), every chunk with `end_of_stream = false`, then the trailers
/// callback. The trailers flow is the last entry of `flows`.
fn post_with_trailers(plugin: &Rc<SchemaPlugin>, path: &str, chunks: &[&[u8]]) -> Outcome {
    let mut host = FakeHost::request("POST", path)
        .with_request_header("content-type", "application/json")
        .with_request_header("transfer-encoding", "chunked");
    host.metric_names = metric_names();
    let mut filter = SchemaPlugin::new_filter(plugin);
    let mut flows = vec![filter.on_request_headers(&mut host, false)];
    for chunk in chunks {
        assert!(host.sent.is_none(), "refused before the trailers");
        host.request_body.extend_from_slice(chunk);
        let size = host.request_body.len();
        flows.push(filter.on_request_body(&mut host, size, false));
    }
    flows.push(filter.on_request_trailers(&mut host));
    Outcome { host, flows }
}

#[test]
fn an_invalid_body_ending_with_trailers_is_refused_in_the_trailers_callback() {
    let p = plugin(&orders());
    let out = post_with_trailers(
        &p,
        "/orders",
        &[
            b"{\"sku\": \"AB-1\",",
            b" \"qty\": 1000, \"evil\": \"<script>\"}",
        ],
    );
    // Headers held, body buffered, and the verdict comes with the trailers.
    assert_eq!(
        out.flows,
        vec![Flow::Pause, Flow::Pause, Flow::Pause, Flow::Pause]
    );
    let sent = out
        .sent()
        .expect("a local reply from the trailers callback");
    assert_eq!(sent.status, 400);
    assert_eq!(
        sent.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(sent.header("x-palisade-denied-by"), Some("schema"));
    assert_eq!(
        out.problem()["type"],
        "urn:palisade:problem:schema-violation"
    );
    let mut errors = out.errors();
    errors.sort();
    assert_eq!(
        errors,
        vec![
            ("body".into(), "".into(), "additionalProperties".into()),
            ("body".into(), "/qty".into(), "maximum".into()),
        ]
    );
    let text = String::from_utf8_lossy(&sent.body).into_owned();
    for echoed in ["<script>", "1000", "evil"] {
        assert!(!text.contains(echoed), "{echoed} echoed in {text}");
    }
    assert_eq!(out.host.counter("palisade.schema.denied.invalid_body"), 1);
    assert_eq!(out.published().as_deref(), Some("deny;reason=invalid_body"));
    assert_eq!(out.host.resumed, 0);
}

#[test]
fn a_valid_body_ending_with_trailers_continues_and_is_published() {
    let p = plugin(&orders());
    let out = post_with_trailers(&p, "/orders", &[b"{\"sku\": \"AB-1\",", b" \"qty\": 3}"]);
    assert_eq!(
        out.flows,
        vec![Flow::Pause, Flow::Pause, Flow::Pause, Flow::Continue]
    );
    assert!(out.sent().is_none(), "{:?}", out.sent());
    assert_eq!(out.published().as_deref(), Some("allow"));
}

#[test]
fn every_body_check_applies_when_trailers_end_the_request() {
    let p = plugin(&orders());
    for (chunks, status, kind) in [
        (&[&b"{\"sku\": \"AB-1\""[..]][..], 400, "malformed-json"),
        (
            &[&b"{\"sku\": \"A\", \"qty\": 1, "[..], b"\"qty\": 1}"][..],
            400,
            "malformed-json",
        ),
        (&[][..], 400, "body-required"),
    ] {
        let out = post_with_trailers(&p, "/orders", chunks);
        assert_eq!(out.flows.last(), Some(&Flow::Pause), "{kind}");
        assert_eq!(out.status(), status, "{kind}: {:?}", out.problem());
        assert_eq!(
            out.problem()["type"],
            format!("urn:palisade:problem:{kind}"),
            "{:?}",
            out.problem()
        );
    }
}

#[test]
fn dry_run_lets_a_violation_ending_with_trailers_through_and_counts_it() {
    let mut config = orders();
    config["dry_run"] = json!(true);
    let p = plugin(&config);
    let out = post_with_trailers(&p, "/orders", &[b"{\"sku\": 1, \"qty\": 1}"]);
    assert_eq!(out.flows.last(), Some(&Flow::Continue));
    assert!(out.sent().is_none());
    assert_eq!(
        out.host
            .counter("palisade.schema.shadow_denied.invalid_body"),
        1
    );
    assert_eq!(
        out.published().as_deref(),
        Some("shadow-deny;reason=invalid_body")
    );
}

#[test]
fn with_hold_headers_false_a_violation_ending_with_trailers_is_still_refused() {
    let mut config = orders();
    config["hold_headers"] = json!(false);
    let p = plugin(&config);
    let out = post_with_trailers(&p, "/orders", &[b"{\"sku\": \"AB-1\", \"qty\": 0}"]);
    // The headers went on at once; the body is held and refused at the end.
    assert_eq!(out.flows, vec![Flow::Continue, Flow::Pause, Flow::Pause]);
    assert_eq!(out.status(), 400);
    assert_eq!(
        out.errors(),
        vec![("body".into(), "/qty".into(), "minimum".into())]
    );
    let out = post_with_trailers(&p, "/orders", &[b"{\"sku\": \"AB-1\", \"qty\": 1}"]);
    assert_eq!(out.flows.last(), Some(&Flow::Continue));
    assert!(out.sent().is_none());
}

#[test]
fn requests_that_are_not_buffered_pass_their_trailers_untouched() {
    let p = plugin(&orders());
    // A declared route without checks streams its body, trailers included.
    let out = post_with_trailers(&p, "/bulk/import", &[b"not json", b" at all"]);
    assert_eq!(
        out.flows,
        vec![
            Flow::Continue,
            Flow::Continue,
            Flow::Continue,
            Flow::Continue
        ]
    );
    assert!(out.sent().is_none());
    // A request no rule covers (unmatched: allow) as well.
    let out = post_with_trailers(&p, "/elsewhere", &[b"{{"]);
    assert_eq!(out.flows.last(), Some(&Flow::Continue));
    assert!(out.sent().is_none());
}
