//! Query strings and path parameters as JSON objects a schema can check.
//!
//! Everything in a URL is text, so each value is coerced to the scalar type
//! its schema declares (`?limit=10` is the integer 10 when `limit` is an
//! integer) before validation; a value that does not convert stays a string
//! and fails the schema's `type`. Repeated keys become arrays.

use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;

/// The scalar types a URL value may be read as, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scalar {
    Integer,
    Number,
    Boolean,
    Null,
    String,
}

/// How to read one parameter, derived from its schema at config load.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Coercion {
    /// Scalar types the schema allows; empty means "keep the text".
    pub scalars: Vec<Scalar>,
    /// The schema is (also) an array: values always form an array, each item
    /// read with this coercion.
    pub array_items: Option<Box<Coercion>>,
}

/// Per-parameter coercions of one query or path schema.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coercions {
    pub by_name: BTreeMap<String, Coercion>,
    /// For names the schema does not list (`additionalProperties: {type}`).
    pub other: Coercion,
}

impl Coercions {
    fn of(&self, name: &str) -> &Coercion {
        self.by_name.get(name).unwrap_or(&self.other)
    }
}

impl Coercion {
    /// Reads one text value as the first scalar type it converts to.
    pub fn scalar(&self, text: &str) -> Value {
        let mut types = self.scalars.clone();
        types.sort();
        for t in types {
            let converted = match t {
                Scalar::Integer => parse_integer(text),
                Scalar::Number => text
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && looks_numeric(text))
                    .and_then(Number::from_f64)
                    .map(Value::Number),
                Scalar::Boolean => match text {
                    "true" => Some(Value::Bool(true)),
                    "false" => Some(Value::Bool(false)),
                    _ => None,
                },
                Scalar::Null => (text.is_empty() || text == "null").then_some(Value::Null),
                Scalar::String => Some(Value::String(text.to_string())),
            };
            if let Some(v) = converted {
                return v;
            }
        }
        Value::String(text.to_string())
    }

    /// Reads every value given for one name.
    pub fn values(&self, texts: &[String]) -> Value {
        match (&self.array_items, texts) {
            (Some(items), _) => Value::Array(texts.iter().map(|t| items.scalar(t)).collect()),
            (None, [one]) => self.scalar(one),
            (None, many) => Value::Array(many.iter().map(|t| self.scalar(t)).collect()),
        }
    }
}

fn parse_integer(text: &str) -> Option<Value> {
    if !looks_numeric(text) {
        return None;
    }
    if let Ok(i) = text.parse::<i64>() {
        return Some(Value::from(i));
    }
    text.parse::<u64>().ok().map(Value::from)
}

/// Rust's float parser also takes `inf`, `NaN` and `+1`: JSON numbers only.
fn looks_numeric(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    digits.starts_with(|c: char| c.is_ascii_digit())
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
}

/// The query of a raw `:path` (after `?`, before `#`), as an object: keys and
/// values percent-decoded (`+` is a space), repeated keys as arrays.
pub fn query_object(raw_path: &str, coercions: &Coercions) -> Value {
    let query = raw_path
        .split_once('?')
        .map(|(_, q)| q.split('#').next().unwrap_or(""))
        .unwrap_or("");
    let mut grouped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key.is_empty() {
            continue;
        }
        grouped
            .entry(key.into_owned())
            .or_default()
            .push(value.into_owned());
    }
    let mut object = Map::new();
    for (key, texts) in grouped {
        let value = coercions.of(&key).values(&texts);
        object.insert(key, value);
    }
    Value::Object(object)
}

/// Path parameters (already percent-decoded by path normalisation) as an object.
pub fn params_object<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
    coercions: &Coercions,
) -> Value {
    let mut object = Map::new();
    for (name, text) in params {
        let value = coercions.of(name).values(&[text.to_string()]);
        object.insert(name.to_string(), value);
    }
    Value::Object(object)
}

/// Derives the coercions of an object schema's properties, following local
/// `$ref`s through `resolve`.
pub fn coercions_for(schema: &Value, resolve: &dyn Fn(&str) -> Option<Value>) -> Coercions {
    let schema = follow(schema, resolve, 0);
    let mut by_name = BTreeMap::new();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            by_name.insert(name.clone(), coercion_for(prop, resolve, 0));
        }
    }
    let other = schema
        .get("additionalProperties")
        .map(|s| coercion_for(s, resolve, 0))
        .unwrap_or_default();
    Coercions { by_name, other }
}

const MAX_REF_HOPS: u32 = 16;

/// Follows `$ref` chains (bounded: a cycle must not hang configure).
fn follow(schema: &Value, resolve: &dyn Fn(&str) -> Option<Value>, hops: u32) -> Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) if hops < MAX_REF_HOPS => match resolve(r) {
            Some(target) => follow(&target, resolve, hops + 1),
            None => schema.clone(),
        },
        _ => schema.clone(),
    }
}

fn coercion_for(schema: &Value, resolve: &dyn Fn(&str) -> Option<Value>, depth: u32) -> Coercion {
    let schema = follow(schema, resolve, 0);
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let mut scalars: Vec<Scalar> = types
        .iter()
        .filter_map(|t| match *t {
            "integer" => Some(Scalar::Integer),
            "number" => Some(Scalar::Number),
            "boolean" => Some(Scalar::Boolean),
            "null" => Some(Scalar::Null),
            "string" => Some(Scalar::String),
            _ => None,
        })
        .collect();
    // A nullable string must stay "" rather than become null.
    if scalars.contains(&Scalar::String) {
        scalars.retain(|s| *s != Scalar::Null);
    }
    let array_items = (types.contains(&"array") && depth < 2).then(|| {
        let items = schema.get("items").cloned().unwrap_or(Value::Bool(true));
        Box::new(coercion_for(&items, resolve, depth + 1))
    });
    Coercion {
        scalars,
        array_items,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_refs(_: &str) -> Option<Value> {
        None
    }

    #[test]
    fn values_are_decoded_coerced_and_grouped() {
        let schema = json!({"type": "object", "properties": {
            "limit": {"type": "integer"}, "ratio": {"type": "number"},
            "dry_run": {"type": "boolean"}, "tag": {"type": "array", "items": {"type": "integer"}},
            "name": {"type": "string"}}});
        let c = coercions_for(&schema, &no_refs);
        let q = query_object(
            "/x?limit=10&ratio=0.5&dry_run=true&tag=1&tag=2&name=a%20b+c&name2=%E2%9C%93&x=1&x=2",
            &c,
        );
        assert_eq!(
            q,
            json!({"limit": 10, "ratio": 0.5, "dry_run": true, "tag": [1, 2],
                   "name": "a b c", "name2": "✓", "x": ["1", "2"]})
        );
    }

    #[test]
    fn unconvertible_values_stay_text() {
        let schema = json!({"properties": {"n": {"type": "integer"}, "b": {"type": "boolean"},
            "f": {"type": "number"}}});
        let c = coercions_for(&schema, &no_refs);
        let q = query_object("/x?n=ten&b=yes&f=inf", &c);
        assert_eq!(q, json!({"n": "ten", "b": "yes", "f": "inf"}));
        let q = query_object("/x?n=1.5&f=NaN", &c);
        assert_eq!(q, json!({"n": "1.5", "f": "NaN"}));
    }

    #[test]
    fn refs_are_followed_and_cycles_stop() {
        let doc = json!({"a": {"$ref": "#/b"}, "b": {"type": "integer"},
                         "loop": {"$ref": "#/loop"}});
        let resolve = |r: &str| doc.pointer(r.strip_prefix('#')?).cloned();
        let schema = json!({"properties": {"n": {"$ref": "#/a"}, "m": {"$ref": "#/loop"}}});
        let c = coercions_for(&schema, &resolve);
        assert_eq!(query_object("/?n=3&m=3", &c), json!({"n": 3, "m": "3"}));
    }

    #[test]
    fn empty_query_and_empty_keys() {
        let c = Coercions::default();
        assert_eq!(query_object("/x", &c), json!({}));
        assert_eq!(query_object("/x?", &c), json!({}));
        assert_eq!(query_object("/x?=1&&a", &c), json!({"a": ""}));
    }
}
