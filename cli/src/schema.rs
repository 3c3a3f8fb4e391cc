//! JSON Schema for editors and for Kong, from the filters' Rust config types.
//!
//! schemars writes draft 2020-12; Kong validates filter configs with a
//! draft 4 validator. [`draft4`] rewrites the keywords whose meaning changed
//! and refuses any keyword draft 4 does not have, so a schema never silently
//! accepts what the filter refuses because a validator ignored a keyword.

use crate::registry;
use serde_json::{json, Map, Value};

pub const DRAFT4: &str = "http://json-schema.org/draft-04/schema#";

/// Keywords draft 4 validates, kept as they are (after their subschemas are
/// converted).
const VALIDATION: &[&str] = &[
    "type",
    "enum",
    "minimum",
    "maximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "items",
    "additionalItems",
    "minItems",
    "maxItems",
    "uniqueItems",
    "properties",
    "patternProperties",
    "additionalProperties",
    "required",
    "minProperties",
    "maxProperties",
    "dependencies",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "$ref",
    "definitions",
];

/// Annotations draft 4 has.
const ANNOTATIONS: &[&str] = &["title", "description", "default"];

/// Annotations of later drafts, dropped (they never change validation).
const DROPPED: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "examples",
    "readOnly",
    "writeOnly",
    "deprecated",
];

/// Formats draft 4 defines; schemars' numeric formats (`uint32`...) are not
/// formats a validator knows, and the range keywords carry their meaning.
const DRAFT4_FORMATS: &[&str] = &["date-time", "email", "hostname", "ipv4", "ipv6", "uri"];

/// The chain file's schema (`palisade.wasm`'s config), draft 2020-12, with
/// every control's config schema where the chain names it: under `filters`
/// (shared configs) and in a route's `{name: config}`. Each control's
/// definitions are kept under `$defs/<control>.<name>` (the control's own
/// schema is `$defs/<control>`), so two controls' `Match` never clash.
pub fn chain_schema() -> Value {
    let mut root = schemars::schema_for!(crate::chain::ChainFile).to_value();
    let mut defs = root
        .get_mut("$defs")
        .and_then(Value::as_object_mut)
        .map(std::mem::take)
        .unwrap_or_default();
    let names: Vec<&str> = registry::FILTERS.iter().map(|f| f.name).collect();
    for f in registry::FILTERS {
        let mut schema = (f.schema)();
        let inner = schema
            .as_object_mut()
            .and_then(|m| {
                m.remove("$schema");
                m.remove("$defs").or_else(|| m.remove("definitions"))
            })
            .and_then(|d| d.as_object().cloned())
            .unwrap_or_default();
        prefix_refs(&mut schema, f.name);
        defs.insert(f.name.to_string(), schema);
        for (k, mut v) in inner {
            prefix_refs(&mut v, f.name);
            defs.insert(format!("{}.{k}", f.name), v);
        }
    }
    let by_name = |names: &[&str]| -> Map<String, Value> {
        names
            .iter()
            .map(|n| (n.to_string(), json!({"$ref": format!("#/$defs/{n}")})))
            .collect()
    };
    root["properties"]["filters"] = json!({
        "description": "Shared configs, by control: what a route gets when it names the control.",
        "type": "object",
        "properties": by_name(&names),
        "additionalProperties": false,
    });
    defs.insert(
        "FilterRef".into(),
        json!({
            "description": "A control with the shared config (`headers`), or with this route's own (`{headers: {...}}`).",
            "anyOf": [
                {"type": "string", "enum": names},
                {
                    "type": "object",
                    "properties": by_name(&names),
                    "additionalProperties": false,
                    "minProperties": 1,
                    "maxProperties": 1,
                },
            ],
        }),
    );
    root["$defs"] = Value::Object(defs);
    root
}

/// Rewrites a control's `#/$defs/X` (and `#`) references to where
/// [`chain_schema`] keeps them.
fn prefix_refs(schema: &mut Value, control: &str) {
    match schema {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if k == "$ref" {
                    if let Some(r) = v.as_str() {
                        let r = if r == "#" {
                            format!("#/$defs/{control}")
                        } else if let Some(name) = r
                            .strip_prefix("#/$defs/")
                            .or_else(|| r.strip_prefix("#/definitions/"))
                        {
                            format!("#/$defs/{control}.{name}")
                        } else {
                            r.to_string()
                        };
                        *v = Value::String(r);
                    }
                } else {
                    prefix_refs(v, control);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| prefix_refs(v, control)),
        _ => {}
    }
}

/// Converts a schemars (draft 2020-12 / 07) schema to draft 4.
pub fn draft4(schema: &Value) -> Result<Value, String> {
    let mut out = convert(schema, "#")?;
    if let Value::Object(m) = &mut out {
        let mut root = Map::new();
        root.insert("$schema".into(), Value::String(DRAFT4.into()));
        root.extend(std::mem::take(m));
        *m = root;
    }
    Ok(out)
}

fn convert(schema: &Value, at: &str) -> Result<Value, String> {
    let map = match schema {
        Value::Bool(true) => return Ok(json!({})),
        Value::Bool(false) => return Ok(json!({"not": {}})),
        Value::Object(m) => m,
        other => return Err(format!("{at}: not a schema: {other}")),
    };
    let mut out = Map::new();
    for (key, value) in map {
        let here = format!("{at}/{key}");
        match key.as_str() {
            "$defs" | "definitions" => {
                out.insert("definitions".into(), convert_map(value, &here)?);
            }
            "properties" | "patternProperties" => {
                out.insert(key.clone(), convert_map(value, &here)?);
            }
            "items" => {
                out.insert(key.clone(), convert(value, &here)?);
            }
            "prefixItems" => {
                let list = value.as_array().ok_or(format!("{here}: expected a list"))?;
                let items = list
                    .iter()
                    .enumerate()
                    .map(|(i, s)| convert(s, &format!("{here}/{i}")))
                    .collect::<Result<Vec<_>, _>>()?;
                out.insert("items".into(), Value::Array(items));
            }
            "additionalProperties" | "additionalItems" => {
                // Draft 4 allows a boolean here.
                let v = match value {
                    Value::Bool(_) => value.clone(),
                    _ => convert(value, &here)?,
                };
                out.insert(key.clone(), v);
            }
            "not" => {
                out.insert(key.clone(), convert(value, &here)?);
            }
            "allOf" | "anyOf" | "oneOf" => {
                let list = value.as_array().ok_or(format!("{here}: expected a list"))?;
                let items = list
                    .iter()
                    .enumerate()
                    .map(|(i, s)| convert(s, &format!("{here}/{i}")))
                    .collect::<Result<Vec<_>, _>>()?;
                out.insert(key.clone(), Value::Array(items));
            }
            "$ref" => {
                let r = value.as_str().ok_or(format!("{here}: expected a string"))?;
                let r = match r.strip_prefix("#/$defs/") {
                    Some(name) => format!("#/definitions/{name}"),
                    None => r.to_string(),
                };
                out.insert(key.clone(), Value::String(r));
            }
            "const" => {
                out.insert("enum".into(), json!([value]));
            }
            "exclusiveMinimum" | "exclusiveMaximum" => match value {
                // 2020-12: the bound itself; draft 4: a flag on minimum/maximum.
                Value::Number(_) => {
                    let bound = if key == "exclusiveMinimum" {
                        "minimum"
                    } else {
                        "maximum"
                    };
                    out.insert(bound.into(), value.clone());
                    out.insert(key.clone(), Value::Bool(true));
                }
                Value::Bool(_) => {
                    out.insert(key.clone(), value.clone());
                }
                _ => return Err(format!("{here}: expected a number")),
            },
            "format" => {
                if value.as_str().is_some_and(|f| DRAFT4_FORMATS.contains(&f)) {
                    out.insert(key.clone(), value.clone());
                }
            }
            k if VALIDATION.contains(&k) || ANNOTATIONS.contains(&k) => {
                out.insert(key.clone(), value.clone());
            }
            k if DROPPED.contains(&k) => {}
            k => {
                return Err(format!(
                    "{here}: draft 4 has no {k:?}; the schema would accept what the filter refuses"
                ))
            }
        }
    }
    // Draft 4 ignores every keyword beside `$ref`: keep them in an allOf.
    if out.contains_key("$ref") && out.len() > 1 {
        let reference = out.remove("$ref").unwrap_or_default();
        let validation: Vec<String> = out
            .keys()
            .filter(|k| !ANNOTATIONS.contains(&k.as_str()))
            .cloned()
            .collect();
        let mut rest = Map::new();
        for k in validation {
            if let Some(v) = out.remove(&k) {
                rest.insert(k, v);
            }
        }
        let mut all = vec![json!({"$ref": reference})];
        if !rest.is_empty() {
            all.push(Value::Object(rest));
        }
        out.insert("allOf".into(), Value::Array(all));
    }
    Ok(Value::Object(out))
}

fn convert_map(value: &Value, at: &str) -> Result<Value, String> {
    let map = value
        .as_object()
        .ok_or(format!("{at}: expected an object"))?;
    let mut out = Map::new();
    for (k, v) in map {
        out.insert(k.clone(), convert(v, &format!("{at}/{k}"))?);
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_keywords_whose_meaning_changed() {
        let s = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Config",
            "type": "object",
            "properties": {
                "n": {"type": "integer", "format": "uint32", "exclusiveMinimum": 0, "maximum": 9},
                "k": {"const": "x"},
                "r": {"$ref": "#/$defs/R", "description": "a ref", "minItems": 1},
                "any": true,
                "t": {"prefixItems": [{"type": "string"}]}
            },
            "additionalProperties": false,
            "$defs": {"R": {"type": "array"}}
        });
        let d = draft4(&s).unwrap();
        assert_eq!(
            d,
            json!({
                "$schema": DRAFT4,
                "title": "Config",
                "type": "object",
                "properties": {
                    "n": {"type": "integer", "minimum": 0, "exclusiveMinimum": true, "maximum": 9},
                    "k": {"enum": ["x"]},
                    "r": {"description": "a ref", "allOf": [{"$ref": "#/definitions/R"}, {"minItems": 1}]},
                    "any": {},
                    "t": {"items": [{"type": "string"}]}
                },
                "additionalProperties": false,
                "definitions": {"R": {"type": "array"}}
            })
        );
    }

    #[test]
    fn refuses_keywords_draft4_cannot_express() {
        let err = draft4(&json!({"type": "object", "properties": {"a": {"if": {}}}})).unwrap_err();
        assert!(err.contains("#/properties/a/if"), "{err}");
    }
}
