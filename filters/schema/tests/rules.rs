//! Explicit rules: statuses, problem documents, buffering, dry run.

mod common;

use common::{plugin, post_json, send};
use palisade_core::Flow;
use serde_json::json;

/// Held headers (Envoy with `allow_on_headers_stop_iteration`): a verdict
/// on the body is published to the upstream. The defaults are in `defaults.rs`.
fn orders() -> serde_json::Value {
    json!({
        "hold_headers": true,
        "max_body_bytes": 2048,
        "rules": [
            {"match": {"path_template": "/orders", "methods": ["POST"]},
             "content_types": ["application/json"],
             "body": {"required": true, "schema": {
                 "type": "object", "required": ["sku", "qty"],
                 "properties": {
                     "sku": {"type": "string", "pattern": "^[A-Z]+-[0-9]+$"},
                     "qty": {"type": "integer", "minimum": 1, "maximum": 100},
                     "items": {"type": "array", "items": {"type": "object",
                         "properties": {"qty": {"type": "integer", "minimum": 1}}}}},
                 "additionalProperties": false}},
             "query": {"type": "object", "properties": {"dry_run": {"type": "boolean"}},
                       "additionalProperties": false}},
            {"match": {"path_template": "/users/{id}", "methods": ["GET"]},
             "path_params": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1}}},
             "query": {"type": "object", "properties": {
                 "limit": {"type": "integer", "maximum": 50},
                 "tag": {"type": "array", "items": {"type": "string"}, "maxItems": 2}}}},
            {"match": {"prefix": "/upload"}, "content_types": ["application/octet-stream"]}
        ]
    })
}

#[test]
fn a_valid_body_passes_after_buffering_and_is_published() {
    let p = plugin(&orders());
    let out = post_json(&p, "/orders?dry_run=true", r#"{"sku": "AB-1", "qty": 3}"#);
    assert_eq!(out.flows, vec![Flow::Pause, Flow::Continue]);
    assert!(out.sent().is_none());
    assert_eq!(out.published().as_deref(), Some("allow"));
}

#[test]
fn bodies_arriving_in_chunks_are_buffered_until_the_end() {
    let p = plugin(&orders());
    let out = send(
        &p,
        "POST",
        "/orders",
        &[
            ("content-type", "application/json"),
            ("transfer-encoding", "chunked"),
        ],
        &[b"{\"sku\": \"AB-1\",", b" \"qty\"", b": 3}"],
    );
    assert_eq!(
        out.flows,
        vec![Flow::Pause, Flow::Pause, Flow::Pause, Flow::Continue]
    );
    assert!(out.sent().is_none());
}

#[test]
fn schema_violations_are_400_with_pointers_keywords_and_no_request_values() {
    let p = plugin(&orders());
    let body = r#"{"sku": "<script>secret", "qty": 1000, "items": [{"qty": 0}], "evil<b>": 1}"#;
    let out = post_json(&p, "/orders", body);
    assert_eq!(out.status(), 400);
    let problem = out.problem();
    assert_eq!(problem["type"], "urn:palisade:problem:schema-violation");
    let mut errors = out.errors();
    errors.sort();
    assert_eq!(
        errors,
        vec![
            ("body".into(), "".into(), "additionalProperties".into()),
            ("body".into(), "/items/0/qty".into(), "minimum".into()),
            ("body".into(), "/qty".into(), "maximum".into()),
            ("body".into(), "/sku".into(), "pattern".into()),
        ]
    );
    let text = String::from_utf8_lossy(&out.sent().unwrap().body).into_owned();
    for echoed in ["<script>", "secret", "1000", "evil"] {
        assert!(!text.contains(echoed), "{echoed} echoed in {text}");
    }
    assert!(text.contains("must be at most 100"), "{text}");
    let sent = out.sent().unwrap();
    assert_eq!(
        sent.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(sent.header("x-palisade-denied-by"), Some("schema"));
    assert_eq!(out.host.counter("palisade.schema.denied.invalid_body"), 1);
    assert_eq!(out.published().as_deref(), Some("deny;reason=invalid_body"));
}

#[test]
fn unknown_keys_in_pointers_are_masked() {
    let p = plugin(
        &json!({"rules": [{"match": {"path": "/m"}, "body": {"schema": {
        "type": "object", "additionalProperties": {"type": "integer"}}}}]}),
    );
    let out = post_json(&p, "/m", r#"{"<img src=x>": "a"}"#);
    assert_eq!(
        out.errors(),
        vec![("body".into(), "/*".into(), "type".into())]
    );
}

#[test]
fn at_most_ten_errors_are_reported() {
    let p = plugin(
        &json!({"rules": [{"match": {"path": "/many"}, "body": {"schema": {
        "type": "array", "items": {"type": "string"}}}}]}),
    );
    let body = serde_json::to_string(&(0..50).collect::<Vec<_>>()).unwrap();
    let out = post_json(&p, "/many", &body);
    assert_eq!(out.status(), 400);
    assert_eq!(out.errors().len(), 10);
}

#[test]
fn oversized_bodies_get_413_by_content_length_and_while_streaming() {
    let p = plugin(&orders());
    let big = format!(
        r#"{{"sku": "A-1", "qty": 1, "pad": "{}"}}"#,
        "x".repeat(4000)
    );
    let out = post_json(&p, "/orders", &big);
    assert_eq!(out.status(), 413);
    assert_eq!(out.flows.len(), 1, "refused from the headers");
    assert_eq!(out.problem()["limit"], 2048);
    let chunk = vec![b' '; 1000];
    let out = send(
        &p,
        "POST",
        "/orders",
        &[
            ("content-type", "application/json"),
            ("transfer-encoding", "chunked"),
        ],
        &[&chunk, &chunk, &chunk, b"{}"],
    );
    assert_eq!(out.status(), 413);
    assert_eq!(
        out.flows,
        vec![Flow::Pause, Flow::Pause, Flow::Pause, Flow::Pause]
    );
    assert_eq!(out.host.counter("palisade.schema.denied.body_too_large"), 1);
}

#[test]
fn wrong_or_missing_content_types_get_415() {
    let p = plugin(&orders());
    for headers in [
        vec![("content-type", "text/plain"), ("content-length", "2")],
        vec![("content-length", "2")],
        vec![
            ("content-type", "application/json-seq"),
            ("content-length", "2"),
        ],
    ] {
        let out = send(&p, "POST", "/orders", &headers, &[b"{}"]);
        assert_eq!(out.status(), 415, "{headers:?}");
        assert_eq!(out.problem()["accepted"], json!(["application/json"]));
        assert_eq!(
            out.sent().unwrap().header("accept-post"),
            Some("application/json")
        );
    }
    let out = send(
        &p,
        "POST",
        "/orders",
        &[("content-type", "Application/JSON; charset=utf-8")],
        &[br#"{"sku":"A-1","qty":1}"#],
    );
    assert!(out.sent().is_none());
}

#[test]
fn malformed_duplicate_and_missing_bodies_get_400() {
    let p = plugin(&orders());
    for (body, reason) in [
        (r#"{"sku": "A-1", "qty": 1"#, "invalid_json"),
        (r#"{"sku": "A-1", "qty": 1, "qty": 99}"#, "duplicate_key"),
        ("", "body_required"),
    ] {
        let chunks: Vec<&[u8]> = vec![body.as_bytes()];
        let out = send(
            &p,
            "POST",
            "/orders",
            &[("content-type", "application/json")],
            &chunks,
        );
        assert_eq!(out.status(), 400, "{body}");
        assert_eq!(out.published(), Some(format!("deny;reason={reason}")));
    }
    // No body at all (end of stream with the headers).
    let out = send(
        &p,
        "POST",
        "/orders",
        &[("content-type", "application/json")],
        &[],
    );
    assert_eq!(out.status(), 400);
    assert_eq!(out.problem()["type"], "urn:palisade:problem:body-required");
}

#[test]
fn json_limits_are_configurable_and_answer_400() {
    let mut config = orders();
    config["limits"] = json!({"max_depth": 3, "max_items": 5});
    let p = plugin(&config);
    let out = post_json(
        &p,
        "/orders",
        r#"{"sku": "A-1", "qty": 1, "items": [[[[1]]]]}"#,
    );
    assert_eq!(out.status(), 400);
    assert_eq!(
        out.problem()["type"],
        "urn:palisade:problem:json-limit-exceeded"
    );
    assert_eq!(out.problem()["detail"], "the body nests deeper than 3");
    let out = post_json(
        &p,
        "/orders",
        r#"{"sku": "A-1", "qty": 1, "items": [1,2,3,4,5,6]}"#,
    );
    assert_eq!(
        out.published().as_deref(),
        Some("deny;reason=too_many_items")
    );
}

#[test]
fn query_values_are_coerced_and_validated() {
    let p = plugin(&orders());
    let ok = send(&p, "GET", "/users/42?limit=10&tag=a&tag=b", &[], &[]);
    assert!(ok.sent().is_none(), "{:?}", ok.problem());
    assert_eq!(ok.flows, vec![Flow::Continue]);
    let single = send(&p, "GET", "/users/42?tag=a", &[], &[]);
    assert!(
        single.sent().is_none(),
        "a single value of an array parameter is an array"
    );
    let out = send(&p, "GET", "/users/42?limit=ten&tag=a&tag=b&tag=c", &[], &[]);
    assert_eq!(out.status(), 400);
    let mut errors = out.errors();
    errors.sort();
    assert_eq!(
        errors,
        vec![
            ("query".into(), "/limit".into(), "type".into()),
            ("query".into(), "/tag".into(), "maxItems".into()),
        ]
    );
    assert_eq!(
        out.published().as_deref(),
        Some("deny;reason=invalid_query")
    );
    let out = send(&p, "GET", "/users/42?limit=51", &[], &[]);
    assert_eq!(
        out.errors(),
        vec![("query".into(), "/limit".into(), "maximum".into())]
    );
    let out = send(
        &p,
        "POST",
        "/orders?dry_run=maybe&x=1",
        &[("content-type", "application/json")],
        &[b"{}"],
    );
    assert_eq!(out.status(), 400);
    assert_eq!(out.flows, vec![Flow::Pause], "refused before the body");
}

#[test]
fn path_parameters_are_coerced_and_validated() {
    let p = plugin(&orders());
    let out = send(&p, "GET", "/users/0", &[], &[]);
    assert_eq!(
        out.errors(),
        vec![("path".into(), "/id".into(), "minimum".into())]
    );
    assert_eq!(
        out.published().as_deref(),
        Some("deny;reason=invalid_path_params")
    );
    let out = send(&p, "GET", "/users/abc", &[], &[]);
    assert_eq!(
        out.errors(),
        vec![("path".into(), "/id".into(), "type".into())]
    );
    assert!(send(&p, "GET", "/users/7/", &[], &[]).sent().is_none());
}

#[test]
fn bodies_that_are_not_validated_stream_untouched() {
    let p = plugin(&orders());
    // A rule without a body contract: no buffering, whatever the size.
    let big = vec![7u8; 100_000];
    let out = send(
        &p,
        "POST",
        "/upload/x",
        &[
            ("content-type", "application/octet-stream"),
            ("content-length", "100000"),
        ],
        &[&big[..50_000], &big[50_000..]],
    );
    assert_eq!(
        out.flows,
        vec![Flow::Continue, Flow::Continue, Flow::Continue]
    );
    assert!(out.sent().is_none());
    // No rule at all.
    let out = send(
        &p,
        "PUT",
        "/elsewhere",
        &[("content-type", "application/json")],
        &[b"{{{"],
    );
    assert_eq!(out.flows, vec![Flow::Continue, Flow::Continue]);
    assert!(out.published().is_none());
}

#[test]
fn unmatched_deny_answers_404_and_405_with_allow() {
    let mut config = orders();
    config["unmatched"] = json!("deny");
    let p = plugin(&config);
    let out = send(&p, "GET", "/nowhere", &[], &[]);
    assert_eq!(out.status(), 404);
    assert_eq!(out.problem()["type"], "urn:palisade:problem:unknown-path");
    let out = send(&p, "DELETE", "/orders", &[], &[]);
    assert_eq!(out.status(), 405);
    assert_eq!(out.sent().unwrap().header("allow"), Some("POST"));
    assert_eq!(out.problem()["allowed_methods"], json!(["POST"]));
    // Normalised before matching: /x/../orders is /orders.
    let out = send(&p, "GET", "/x/../orders", &[], &[]);
    assert_eq!(out.status(), 405);
}

#[test]
fn dry_run_reports_without_blocking() {
    let mut config = orders();
    config["dry_run"] = json!(true);
    let p = plugin(&config);
    let out = post_json(&p, "/orders", r#"{"sku": 1}"#);
    assert!(out.sent().is_none());
    assert_eq!(out.flows, vec![Flow::Pause, Flow::Continue]);
    assert_eq!(
        out.published().as_deref(),
        Some("shadow-deny;reason=invalid_body")
    );
    assert_eq!(
        out.host
            .counter("palisade.schema.shadow_denied.invalid_body"),
        1
    );
    assert_eq!(out.host.counter("palisade.schema.denied.invalid_body"), 0);
    assert!(out.host.logged(
        palisade_core::Level::Warn,
        "dry_run: would deny with 400 (invalid_body)"
    ));
    // Streaming past the limit in dry run: the body goes on unbuffered.
    let chunk = vec![b' '; 3000];
    let out = send(
        &p,
        "POST",
        "/orders",
        &[("content-type", "application/json")],
        &[&chunk, b"{}"],
    );
    assert_eq!(out.flows, vec![Flow::Pause, Flow::Continue, Flow::Continue]);
    assert_eq!(
        out.host
            .counter("palisade.schema.shadow_denied.body_too_large"),
        1
    );
}

#[test]
fn a_rule_can_enforce_while_the_rest_is_in_dry_run() {
    let mut config = orders();
    config["dry_run"] = json!(true);
    config["rules"][1]["dry_run"] = json!(false);
    let p = plugin(&config);
    assert_eq!(send(&p, "GET", "/users/0", &[], &[]).status(), 400);
    assert_eq!(post_json(&p, "/orders", "{}").status(), 200);
}

#[test]
fn hold_headers_false_forwards_headers_and_never_writes_them_afterwards() {
    let mut config = orders();
    config["hold_headers"] = json!(false);
    let p = plugin(&config);
    let out = post_json(&p, "/orders", r#"{"sku": "AB-1", "qty": 3}"#);
    assert_eq!(out.flows, vec![Flow::Continue, Flow::Continue]);
    assert!(out.published().is_none());
    let out = post_json(&p, "/orders", r#"{"sku": 1}"#);
    assert_eq!(out.status(), 400);
    assert!(
        out.published().is_none(),
        "no header write after the headers went on"
    );
    assert_eq!(out.host.counter("palisade.schema.denied.invalid_body"), 1);
    // Query violations are still refused from the headers, and published there.
    let out = send(&p, "GET", "/users/0", &[], &[]);
    assert_eq!(
        out.published().as_deref(),
        Some("deny;reason=invalid_path_params")
    );
}
