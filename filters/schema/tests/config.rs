//! Config loading: defaults, errors naming the field, schemas compiled once
//! per draft, references never fetched.

mod common;

use common::{config_error, plugin, post_json};
use palisade_core::HostKind;
use palisade_schema::{check_config, config_schema};
use serde_json::json;

#[test]
fn a_config_that_validates_nothing_is_refused() {
    // It would let every request through (or refuse all with unmatched: deny).
    for empty in [
        "",
        "{}",
        r#"{"unmatched": "deny"}"#,
        r#"{"max_body_bytes": 10}"#,
    ] {
        let e = check_config(empty.as_bytes(), HostKind::Envoy).expect_err(empty);
        assert_eq!(e.path, "rules", "{empty:?}: {e}");
    }
    // A contract for one path: others pass (unmatched: allow).
    let p = plugin(&json!({"rules": [{"match": {"path": "/orders"}}]}));
    assert!(post_json(&p, "/anything", "not json").sent().is_none());
}

#[test]
fn errors_name_the_field() {
    let cases = [
        (json!({"max_body_bytes": 0}), "max_body_bytes: must be > 0"),
        (
            json!({"limits": {"max_depth": 0}}),
            "limits.max_depth: must be between 1 and 100",
        ),
        (
            json!({"limits": {"max_depth": 500}}),
            "limits.max_depth: must be between 1 and 100",
        ),
        (
            json!({"limits": {"max_items": 0}}),
            "limits.max_items: must be > 0",
        ),
        (
            json!({"limits": {"max_strings": 1}}),
            "limits.max_strings: unknown field",
        ),
        (json!({"unmatched": "reject"}), "unmatched: unknown variant"),
        (
            json!({"rules": [{"match": {"methods": ["GTE"]}}]}),
            "rules[0].match.methods[0]: unknown method",
        ),
        (
            json!({"rules": [{}, {"content_types": ["json"]}]}),
            "rules[1].content_types[0]: \"json\" is not a media type",
        ),
        (
            json!({"rules": [{"path_params": {}}]}),
            "rules[0].path_params: needs match.path_template",
        ),
        (
            json!({"rules": [{"body": {"schema": {"type": "objekt"}}}]}),
            "rules[0].body.schema: the schema does not compile",
        ),
        (
            json!({"rules": [{}, {"query": {"minimum": "ten"}}]}),
            "rules[1].query: the schema does not compile",
        ),
        (
            json!({"rules": [{"match": {"path_template": "/a/{id}"}, "path_params": {"type": 1}}]}),
            "rules[0].path_params: the schema does not compile",
        ),
        (json!({"openapi": []}), "openapi: must be a JSON object"),
        (json!({"rulez": []}), "rulez: unknown field"),
    ];
    for (config, expected) in cases {
        let e = config_error(&config);
        assert!(e.starts_with(expected), "{config}: {e}");
        let offline = check_config(config.to_string().as_bytes(), HostKind::Kong).unwrap_err();
        assert_eq!(offline.to_string(), e);
    }
}

#[test]
fn external_references_are_refused_never_fetched() {
    for reference in [
        "https://json-schema.org/draft/2020-12/schema-that-does-not-exist",
        "http://127.0.0.1:9/schema.json",
        "file:///etc/passwd",
        "other.json#/defs/a",
    ] {
        let config = json!({"rules": [{"body": {"schema": {"$ref": reference}}}]});
        let e = config_error(&config);
        assert!(
            e.starts_with("rules[0].body.schema: the schema does not compile"),
            "{e}"
        );
    }
}

#[test]
fn references_inside_the_document_resolve() {
    let p = plugin(&json!({"rules": [{"body": {"schema": {
        "$defs": {"qty": {"type": "integer", "minimum": 1}},
        "definitions": {"sku": {"type": "string"}},
        "type": "object",
        "properties": {"qty": {"$ref": "#/$defs/qty"}, "sku": {"$ref": "#/definitions/sku"}}}}}]}));
    assert!(post_json(&p, "/", r#"{"qty": 1, "sku": "a"}"#)
        .sent()
        .is_none());
    assert_eq!(post_json(&p, "/", r#"{"qty": 0}"#).status(), 400);
    assert_eq!(post_json(&p, "/", r#"{"sku": 1}"#).status(), 400);
}

/// The same schema text means different things in different drafts: each
/// draft is picked by `$schema`, 2020-12 by default.
#[test]
fn every_draft_is_selected_by_dollar_schema() {
    let cases = [
        // draft 4: boolean exclusiveMaximum.
        (
            "http://json-schema.org/draft-04/schema#",
            json!({"type": "integer", "maximum": 10, "exclusiveMaximum": true}),
            "10",
            false,
        ),
        (
            "http://json-schema.org/draft-04/schema#",
            json!({"type": "integer", "maximum": 10, "exclusiveMaximum": true}),
            "9",
            true,
        ),
        // draft 6: numeric exclusiveMaximum, `const`.
        (
            "http://json-schema.org/draft-06/schema#",
            json!({"exclusiveMaximum": 10, "const": 10}),
            "10",
            false,
        ),
        (
            "http://json-schema.org/draft-06/schema#",
            json!({"const": 3}),
            "3",
            true,
        ),
        // draft 7: if/then/else.
        (
            "http://json-schema.org/draft-07/schema#",
            json!({"if": {"minimum": 5}, "then": {"multipleOf": 5}}),
            "6",
            false,
        ),
        (
            "http://json-schema.org/draft-07/schema#",
            json!({"if": {"minimum": 5}, "then": {"multipleOf": 5}}),
            "10",
            true,
        ),
        // 2019-09: items as an array is a tuple.
        (
            "https://json-schema.org/draft/2019-09/schema",
            json!({"items": [{"type": "string"}], "additionalItems": false}),
            "[\"a\", 1]",
            false,
        ),
        (
            "https://json-schema.org/draft/2019-09/schema",
            json!({"items": [{"type": "string"}]}),
            "[\"a\", 1]",
            true,
        ),
        // 2020-12: prefixItems.
        (
            "https://json-schema.org/draft/2020-12/schema",
            json!({"prefixItems": [{"type": "string"}], "items": false}),
            "[\"a\", 1]",
            false,
        ),
    ];
    for (draft, mut schema, body, valid) in cases {
        schema["$schema"] = json!(draft);
        let p = plugin(&json!({"rules": [{"body": {"schema": schema}}]}));
        let out = post_json(&p, "/", body);
        assert_eq!(
            out.sent().is_none(),
            valid,
            "{draft} {schema} {body}: {}",
            out.problem()
        );
    }
    // No $schema: 2020-12, where `prefixItems` applies.
    let p =
        plugin(&json!({"rules": [{"body": {"schema": {"prefixItems": [{"type": "string"}]}}}]}));
    assert_eq!(post_json(&p, "/", "[1]").status(), 400);
}

#[test]
fn formats_are_asserted_unless_turned_off() {
    let rules = json!([{"body": {"schema": {"type": "string", "format": "uuid"}}}]);
    let p = plugin(&json!({"rules": rules}));
    assert_eq!(post_json(&p, "/", "\"nope\"").status(), 400);
    assert!(
        post_json(&p, "/", "\"6f1c2a4e-1b2c-4d5e-8f90-a1b2c3d4e5f6\"")
            .sent()
            .is_none()
    );
    let p = plugin(&json!({"validate_formats": false, "rules": rules}));
    assert!(post_json(&p, "/", "\"nope\"").sent().is_none());
}

#[test]
fn the_config_schema_describes_the_fields() {
    let schema = config_schema();
    let props = &schema["properties"];
    for field in [
        "dry_run",
        "max_body_bytes",
        "unmatched",
        "limits",
        "rules",
        "openapi",
        "validate_formats",
    ] {
        assert!(props.get(field).is_some(), "{field} missing from {schema}");
    }
    let text = schema.to_string();
    assert!(
        text.contains("path_template") && text.contains("max_string_bytes"),
        "{text}"
    );
}

#[test]
fn the_demo_config_loads() {
    let demo = include_str!("../../../envoy/demo/schema.json");
    assert_eq!(check_config(demo.as_bytes(), HostKind::Envoy), Ok(()));
    let p = plugin(&serde_json::from_str(demo).unwrap());
    assert_eq!(
        post_json(&p, "/orders", r#"{"sku": "AB-1", "qty": 2}"#).status(),
        200
    );
    assert_eq!(
        post_json(&p, "/orders", r#"{"sku": "AB-1", "qty": 1000}"#).status(),
        400
    );
}

#[test]
fn the_examples_load() {
    for (name, text) in [
        (
            "orders-rules.json",
            include_str!("../examples/orders-rules.json"),
        ),
        (
            "shadow-rollout.json",
            include_str!("../examples/shadow-rollout.json"),
        ),
        (
            "petstore.json",
            &*format!(
                r#"{{"openapi": {}}}"#,
                include_str!("fixtures/petstore.json")
            ),
        ),
    ] {
        assert_eq!(
            check_config(text.as_bytes(), HostKind::Envoy),
            Ok(()),
            "{name}"
        );
    }
}
