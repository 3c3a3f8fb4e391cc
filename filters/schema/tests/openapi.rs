//! Rules derived from OpenAPI 3.1 (the pet store fixture) and 3.0 documents.

mod common;

use common::{config_error, plugin, post_json, send};
use palisade_core::Flow;
use serde_json::{json, Value};

fn petstore() -> Value {
    serde_json::from_str(include_str!("fixtures/petstore.json")).unwrap()
}

fn store(unmatched: &str) -> std::rc::Rc<palisade_schema::SchemaPlugin> {
    plugin(&json!({"unmatched": unmatched, "hold_headers": true, "openapi": petstore()}))
}

#[test]
fn every_declared_operation_becomes_a_rule() {
    let p = store("deny");
    let labels: Vec<&str> = p
        .contract()
        .operations
        .iter()
        .map(|o| o.label.as_str())
        .collect();
    assert_eq!(labels.len(), 10, "{labels:?}");
    for op in [
        "openapi POST /pets",
        "openapi PATCH /pets/{petId}",
        "openapi POST /stores/{store-id}/orders",
    ] {
        assert!(labels.contains(&op), "{op} missing from {labels:?}");
    }
}

#[test]
fn valid_requests_pass() {
    let p = store("deny");
    assert!(send(
        &p,
        "GET",
        "/pets?limit=10&tags=a&tags=b&status=sold",
        &[],
        &[]
    )
    .sent()
    .is_none());
    assert!(send(&p, "GET", "/pets/mine", &[], &[]).sent().is_none());
    assert!(send(&p, "GET", "/pets/12", &[], &[]).sent().is_none());
    assert!(send(&p, "GET", "/health", &[], &[]).sent().is_none());
    let out = post_json(
        &p,
        "/pets",
        r#"{"name": "Rex", "tag": null, "owner": {"email": "a@example.com"}}"#,
    );
    assert_eq!(out.flows, vec![Flow::Pause, Flow::Continue]);
    assert!(out.sent().is_none(), "{}", out.problem());
    let out = send(
        &p,
        "PUT",
        "/pets/3",
        &[("content-type", "application/json")],
        &[br#"{"id": 3, "name": "Rex", "age": 4}"#],
    );
    assert!(out.sent().is_none(), "{}", out.problem());
    let out = post_json(
        &p,
        "/stores/eu-001/orders?dry_run=false",
        r#"{"items": [{"sku": "AB-1", "qty": 2}], "note": null}"#,
    );
    assert!(out.sent().is_none(), "{}", out.problem());
}

#[test]
fn component_refs_are_resolved_in_bodies() {
    let p = store("deny");
    let out = post_json(
        &p,
        "/pets",
        r#"{"name": "", "age": 51, "status": "lost", "owner": {"email": "nope"}, "extra": 1}"#,
    );
    assert_eq!(out.status(), 400);
    let mut errors = out.errors();
    errors.sort();
    let keywords: Vec<(&str, &str)> = errors
        .iter()
        .map(|(_, p, k)| (p.as_str(), k.as_str()))
        .collect();
    assert_eq!(
        keywords,
        vec![
            ("", "unevaluatedProperties"),
            ("/age", "maximum"),
            ("/name", "minLength"),
            ("/owner/email", "format"),
            ("/status", "enum")
        ]
    );
    let out = post_json(
        &p,
        "/stores/eu-001/orders",
        r#"{"items": [{"sku": "bad", "qty": 0}]}"#,
    );
    let keywords: Vec<String> = out
        .errors()
        .into_iter()
        .map(|(_, p, k)| format!("{p} {k}"))
        .collect();
    assert_eq!(keywords.len(), 2, "{keywords:?}");
    assert!(keywords.contains(&"/items/0/qty minimum".to_string()));
    assert!(keywords.contains(&"/items/0/sku pattern".to_string()));
}

#[test]
fn parameters_from_components_path_items_and_operations() {
    let p = store("deny");
    let out = send(&p, "GET", "/pets/0", &[], &[]);
    assert_eq!(
        out.errors(),
        vec![("path".into(), "/petId".into(), "minimum".into())]
    );
    let out = send(&p, "DELETE", "/pets/abc", &[], &[]);
    assert_eq!(
        out.errors(),
        vec![("path".into(), "/petId".into(), "type".into())]
    );
    let out = send(
        &p,
        "GET",
        "/pets?limit=0&status=lost&tags=a&tags=b&tags=c&tags=d&tags=e&tags=f",
        &[],
        &[],
    );
    let mut errors = out.errors();
    errors.sort();
    assert_eq!(
        errors,
        vec![
            ("query".into(), "/limit".into(), "minimum".into()),
            ("query".into(), "/status".into(), "enum".into()),
            ("query".into(), "/tags".into(), "maxItems".into()),
        ]
    );
    let out = post_json(&p, "/stores/EU-1/orders?dry_run=1", r#"{"items": []}"#);
    let mut errors = out.errors();
    errors.sort();
    assert_eq!(
        errors,
        vec![
            ("path".into(), "/store-id".into(), "pattern".into()),
            ("query".into(), "/dry_run".into(), "type".into()),
        ]
    );
}

#[test]
fn request_bodies_media_types_and_required() {
    let p = store("deny");
    let out = send(
        &p,
        "POST",
        "/pets",
        &[("content-type", "text/plain")],
        &[b"{}"],
    );
    assert_eq!(out.status(), 415);
    let out = send(
        &p,
        "POST",
        "/pets",
        &[("content-type", "application/json")],
        &[],
    );
    assert_eq!(out.status(), 400);
    assert_eq!(out.problem()["type"], "urn:palisade:problem:body-required");
    // A +json media type has its own schema.
    let out = send(
        &p,
        "PATCH",
        "/pets/1",
        &[("content-type", "application/merge-patch+json")],
        &[br#"{"name": ""}"#],
    );
    assert_eq!(
        out.errors(),
        vec![("body".into(), "/name".into(), "minLength".into())]
    );
    let out = send(
        &p,
        "PATCH",
        "/pets/1",
        &[("content-type", "application/json")],
        &[b"{}"],
    );
    assert_eq!(out.status(), 415);
    assert_eq!(
        out.sent().unwrap().header("accept-patch"),
        Some("application/merge-patch+json")
    );
    // Non-JSON bodies the operation accepts stream unbuffered.
    let out = send(
        &p,
        "POST",
        "/pets/1/photos",
        &[("content-type", "image/png")],
        &[b"\x89PNG...", b"more"],
    );
    assert_eq!(
        out.flows,
        vec![Flow::Continue, Flow::Continue, Flow::Continue]
    );
}

#[test]
fn unmatched_deny_answers_404_and_405() {
    let p = store("deny");
    let out = send(&p, "GET", "/owners", &[], &[]);
    assert_eq!(out.status(), 404);
    let out = send(&p, "POST", "/pets/7", &[], &[]);
    assert_eq!(out.status(), 405);
    assert_eq!(
        out.sent().unwrap().header("allow"),
        Some("GET, PUT, DELETE, PATCH")
    );
    let out = send(&p, "DELETE", "/pets", &[], &[]);
    assert_eq!(out.sent().unwrap().header("allow"), Some("GET, POST"));
    // allow: unknown paths go through unchecked.
    let p = store("allow");
    assert!(send(&p, "GET", "/owners", &[], &[]).sent().is_none());
}

#[test]
fn explicit_rules_win_over_the_document() {
    let config = json!({
        "unmatched": "deny",
        "openapi": petstore(),
        "rules": [{"match": {"path": "/pets", "methods": ["POST"]},
                   "body": {"schema": {"type": "object", "required": ["species"]}}}]
    });
    let p = plugin(&config);
    let out = post_json(&p, "/pets", r#"{"species": "cat"}"#);
    assert!(out.sent().is_none(), "{}", out.problem());
    let out = post_json(&p, "/pets", r#"{"name": "Rex"}"#);
    assert_eq!(
        out.errors(),
        vec![("body".into(), "".into(), "required".into())]
    );
}

fn petstore_30() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {"title": "t", "version": "1"},
        "paths": {
            "/pets": {"post": {
                "requestBody": {"required": true, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Pet"}}}},
                "responses": {"201": {"description": "ok"}}}},
            "/pets/{id}": {"get": {
                "parameters": [
                    {"name": "id", "in": "path", "required": true,
                     "schema": {"type": "integer", "minimum": 0, "exclusiveMinimum": true}},
                    {"name": "fields", "in": "query", "schema": {"type": "string", "nullable": true}}],
                "responses": {"200": {"description": "ok"}}}}
        },
        "components": {"schemas": {
            "Pet": {"type": "object", "required": ["name", "tag", "kind", "owner"],
                    "properties": {
                        "name": {"type": "string"},
                        "tag": {"type": "string", "nullable": true},
                        "kind": {"type": "string", "enum": ["cat", "dog"], "nullable": true},
                        "owner": {"allOf": [{"$ref": "#/components/schemas/Owner"}], "nullable": true},
                        "nullable": {"type": "boolean"}}},
            "Owner": {"type": "object", "required": ["email"], "properties": {"email": {"type": "string"}}}
        }}
    })
}

#[test]
fn openapi_30_nullable_and_boolean_exclusive_minimum() {
    let p = plugin(&json!({"openapi": petstore_30()}));
    let ok = post_json(
        &p,
        "/pets",
        r#"{"name": "Rex", "tag": null, "kind": null, "owner": null, "nullable": true}"#,
    );
    assert!(ok.sent().is_none(), "{}", ok.problem());
    let ok = post_json(
        &p,
        "/pets",
        r#"{"name": "Rex", "tag": "t", "kind": "cat", "owner": {"email": "e"}}"#,
    );
    assert!(ok.sent().is_none(), "{}", ok.problem());
    let out = post_json(
        &p,
        "/pets",
        r#"{"name": null, "tag": 1, "kind": "cow", "owner": {}}"#,
    );
    let mut errors: Vec<String> = out
        .errors()
        .into_iter()
        .map(|(_, p, k)| format!("{p} {k}"))
        .collect();
    errors.sort();
    assert_eq!(
        errors,
        vec!["/kind enum", "/name type", "/owner anyOf", "/tag type"]
    );
    // draft 4's boolean exclusiveMinimum: 0 is out, 1 is in.
    assert_eq!(send(&p, "GET", "/pets/0", &[], &[]).status(), 400);
    assert!(send(&p, "GET", "/pets/1?fields=", &[], &[])
        .sent()
        .is_none());
}

#[test]
fn openapi_31_type_null() {
    let p = store("allow");
    assert!(post_json(&p, "/pets", r#"{"name": "a", "tag": null}"#)
        .sent()
        .is_none());
    assert_eq!(
        post_json(&p, "/pets", r#"{"name": "a", "tag": 5}"#).status(),
        400
    );
}

#[test]
fn unsupported_documents_are_refused_at_load() {
    let e = config_error(&json!({"openapi": {"swagger": "2.0", "paths": {}}}));
    assert!(e.starts_with("openapi.openapi: missing"), "{e}");
    let e = config_error(&json!({"openapi": {"openapi": "2.0", "paths": {}}}));
    assert!(e.contains("not supported"), "{e}");
    let e = config_error(
        &json!({"openapi": {"openapi": "3.1.0", "paths": {"/files/{name}.json": {"get": {}}}}}),
    );
    assert!(e.contains("whole segment"), "{e}");
    let e = config_error(
        &json!({"openapi": {"openapi": "3.1.0", "paths": {"/a": {"post": {
        "requestBody": {"content": {"application/json": {"schema": {"$ref": "https://example.com/pet.json"}}}}}}}}}),
    );
    assert!(
        e.starts_with("openapi.paths[\"/a\"].post.requestBody: the schema does not compile"),
        "{e}"
    );
    let e = config_error(
        &json!({"openapi": {"openapi": "3.1.0", "paths": {"/a": {"get": {
        "parameters": [{"$ref": "#/components/parameters/nope"}]}}}}}),
    );
    assert!(
        e.contains("parameters[0]") && e.contains("points at nothing"),
        "{e}"
    );
}

/// Mutated bodies and queries through the whole filter (parse, limits,
/// validation, report): it answers every one, 200 or a problem, and never panics.
#[test]
fn mutated_requests_never_crash_the_filter() {
    let p = store("deny");
    let seeds = [
        r#"{"name": "Rex", "tag": null, "age": 3, "owner": {"email": "a@example.com", "phone": null}}"#,
        r#"{"items": [{"sku": "AB-1", "qty": 2}, {"sku": "CD-22", "qty": 99}], "note": "x"}"#,
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..3000 {
        let mut body = seeds[round % 2].as_bytes().to_vec();
        for _ in 0..(1 + next() % 4) {
            let at = (next() % (body.len() as u64 + 1)) as usize;
            match next() % 4 {
                0 if at < body.len() => body[at] ^= 1 << (next() % 8),
                1 => body.insert(at, b"{}[]\",:\\0-e"[(next() % 11) as usize]),
                2 if at < body.len() => {
                    body.remove(at);
                }
                _ => body.insert(at, (next() & 0xff) as u8),
            }
        }
        let path = if round % 2 == 0 {
            "/pets?limit=%FF%00&tags="
        } else {
            "/stores/eu-001/orders?dry_run=tru%65"
        };
        let out = send(
            &p,
            "POST",
            path,
            &[("content-type", "application/json")],
            &[&body],
        );
        let status = out.status();
        assert!(
            matches!(status, 200 | 400),
            "{status} for {:?}",
            String::from_utf8_lossy(&body)
        );
        if status == 400 {
            assert_eq!(out.problem()["status"], 400);
        }
    }
}
