//! Rules derived from an inline OpenAPI 3.0 or 3.1 document.
//!
//! Each path and method becomes an operation: its path template, its path and
//! query parameters (each with its schema), and its request body's media types
//! with the `application/json` (or `+json`) schema. Schemas are not copied:
//! each is a `$ref` into the whole document, registered once under
//! [`DOCUMENT_URI`], so `#/components/...` references resolve as written.
//! 3.0 schemas are read as draft 4 (their `exclusiveMinimum` is a boolean)
//! after turning `nullable: true` into a `null` type; 3.1 schemas are 2020-12.

use crate::media::{MediaRange, MediaType};
use jsonschema::Draft;
use palisade_core::config::ConfigError;
use palisade_core::method::Method;
use palisade_core::path::PathTemplate;
use serde_json::{json, Map, Value};

/// The URI the document is registered under for `$ref` resolution.
pub const DOCUMENT_URI: &str = "urn:palisade:openapi";

const METHODS: [(&str, Method); 8] = [
    ("get", Method::Get),
    ("put", Method::Put),
    ("post", Method::Post),
    ("delete", Method::Delete),
    ("options", Method::Options),
    ("head", Method::Head),
    ("patch", Method::Patch),
    ("trace", Method::Trace),
];

/// A document ready for compilation.
#[derive(Debug)]
pub struct OpenApi {
    /// The document, 3.0 `nullable` already converted.
    pub doc: Value,
    pub draft: Draft,
    pub operations: Vec<DerivedOperation>,
}

impl OpenApi {
    /// Resolves `#/…` or `urn:palisade:openapi#/…` inside the document.
    pub fn resolve(&self, reference: &str) -> Option<Value> {
        let fragment = reference
            .strip_prefix(DOCUMENT_URI)
            .unwrap_or(reference)
            .strip_prefix('#')?;
        self.doc.pointer(&decode_fragment(fragment)).cloned()
    }
}

#[derive(Debug)]
pub struct DerivedBody {
    pub required: bool,
    pub content_types: Vec<MediaRange>,
    /// `{"$ref": …}` to the JSON media type's schema.
    pub json_schema: Option<Value>,
}

#[derive(Debug)]
pub struct DerivedOperation {
    /// The path as the document writes it (`/pets/{petId}`).
    pub path: String,
    pub method: Method,
    /// The path with placeholders `{p0}`, `{p1}`…: OpenAPI names may hold
    /// characters the core's templates refuse.
    pub template: PathTemplate,
    /// The real parameter names, by position.
    pub param_names: Vec<String>,
    pub path_schema: Option<Value>,
    pub query_schema: Option<Value>,
    pub body: Option<DerivedBody>,
}

impl DerivedOperation {
    /// `paths["/pets"].post.<what>`, relative to `openapi`.
    pub fn config_path(&self, what: &str) -> String {
        format!(
            "paths[{:?}].{}.{what}",
            self.path,
            self.method.as_str().to_ascii_lowercase()
        )
    }
}

/// Reads the document and derives its operations.
pub fn derive(doc: &Value) -> Result<OpenApi, ConfigError> {
    let version = doc.get("openapi").and_then(Value::as_str).ok_or_else(|| {
        ConfigError::new("openapi", "missing: the OpenAPI version (3.0.x or 3.1.x)")
    })?;
    let (draft, mut doc) = if version.starts_with("3.0") {
        let mut converted = doc.clone();
        convert_nullable(&mut converted);
        (Draft::Draft4, converted)
    } else if version.starts_with("3.1") {
        (Draft::Draft202012, doc.clone())
    } else {
        return Err(ConfigError::new(
            "openapi",
            format!("version {version:?} is not supported (3.0.x or 3.1.x)"),
        ));
    };
    if let Some(obj) = doc.as_object_mut() {
        // Examples and descriptions are large and never validated against.
        obj.remove("info");
    }
    let paths = doc
        .get("paths")
        .and_then(Value::as_object)
        .ok_or_else(|| ConfigError::new("paths", "must be an object of path items"))?;
    let mut operations = Vec::new();
    for (path, item) in paths {
        let item_at = format!("paths[{path:?}]");
        let item = item
            .as_object()
            .ok_or_else(|| ConfigError::new(&item_at, "must be an object"))?;
        if item.contains_key("$ref") {
            return Err(ConfigError::new(
                &item_at,
                "path item $ref is not supported: write the operations inline",
            ));
        }
        let (template, param_names) =
            template_of(path).map_err(|m| ConfigError::new(&item_at, m))?;
        let item_pointer = format!("/paths/{}", escape_token(path));
        let shared = item.get("parameters");
        for (key, method) in METHODS {
            let Some(operation) = item.get(key) else {
                continue;
            };
            let op_pointer = format!("{item_pointer}/{key}");
            let op_at = format!("{item_at}.{key}");
            let params = parameters(&doc, shared, &item_pointer, operation, &op_pointer)
                .map_err(|e| e.within(&op_at))?;
            let body = request_body(&doc, operation, &op_pointer).map_err(|e| e.within(&op_at))?;
            operations.push(DerivedOperation {
                path: path.clone(),
                method,
                template: template.clone(),
                param_names: param_names.clone(),
                path_schema: object_schema(&params, "path"),
                query_schema: object_schema(&params, "query"),
                body,
            });
        }
    }
    // A literal segment beats a parameter (`/pets/mine` before `/pets/{id}`).
    operations.sort_by_key(|op| op.param_names.len());
    Ok(OpenApi {
        doc,
        draft,
        operations,
    })
}

/// `/pets/{petId}` to a core template with placeholder names.
fn template_of(path: &str) -> Result<(PathTemplate, Vec<String>), String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("a path must start with '/'".into());
    };
    let mut names = Vec::new();
    let mut source = String::new();
    for segment in rest.split('/') {
        source.push('/');
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if name.is_empty() || name.contains(['{', '}']) {
                return Err(format!("invalid parameter in {path:?}"));
            }
            source.push_str(&format!("{{p{}}}", names.len()));
            names.push(name.to_string());
        } else if segment.contains(['{', '}']) {
            return Err(format!(
                "{path:?}: a parameter must be a whole segment (`/files/{{name}}.json` is not supported)"
            ));
        } else {
            source.push_str(segment);
        }
    }
    let template = PathTemplate::try_from(source).map_err(|e| format!("{path:?}: {e}"))?;
    Ok((template, names))
}

/// A parameter as declared, with where its object lives in the document.
struct Param {
    name: String,
    place: String,
    required: bool,
    /// Pointer of the parameter object (its schema is `<pointer>/schema`).
    pointer: String,
    has_schema: bool,
}

fn parameters(
    doc: &Value,
    shared: Option<&Value>,
    item_pointer: &str,
    operation: &Value,
    op_pointer: &str,
) -> Result<Vec<Param>, ConfigError> {
    let mut out: Vec<Param> = Vec::new();
    let lists = [
        (
            shared,
            format!("{item_pointer}/parameters"),
            "parameters (path item)",
        ),
        (
            operation.get("parameters"),
            format!("{op_pointer}/parameters"),
            "parameters",
        ),
    ];
    for (list, base, field) in lists {
        let Some(list) = list else { continue };
        let list = list
            .as_array()
            .ok_or_else(|| ConfigError::new(field, "must be an array"))?;
        for (i, entry) in list.iter().enumerate() {
            let at = format!("{field}[{i}]");
            let (pointer, param) = follow_ref(doc, entry, &format!("{base}/{i}"))
                .map_err(|m| ConfigError::new(&at, m))?;
            let name = param.get("name").and_then(Value::as_str);
            let place = param.get("in").and_then(Value::as_str);
            let (Some(name), Some(place)) = (name, place) else {
                return Err(ConfigError::new(&at, "a parameter needs `name` and `in`"));
            };
            let required = place == "path"
                || param
                    .get("required")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
            let has_schema = param.get("schema").is_some();
            // Operation parameters override path-item ones with the same name and place.
            out.retain(|p| !(p.name == name && p.place == place));
            out.push(Param {
                name: name.to_string(),
                place: place.to_string(),
                required,
                pointer,
                has_schema,
            });
        }
    }
    Ok(out)
}

/// `{"type":"object","properties":{name: {"$ref": …}},"required":[…]}` of the
/// parameters in one place; `None` when there are none.
fn object_schema(params: &[Param], place: &str) -> Option<Value> {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for p in params.iter().filter(|p| p.place == place) {
        let schema = if p.has_schema {
            json!({"$ref": reference(&format!("{}/schema", p.pointer))})
        } else {
            json!({})
        };
        properties.insert(p.name.clone(), schema);
        if p.required {
            required.push(Value::String(p.name.clone()));
        }
    }
    if properties.is_empty() {
        return None;
    }
    let mut schema = json!({"type": "object", "properties": properties});
    // Draft 4 (OpenAPI 3.0) refuses an empty `required`.
    if !required.is_empty() {
        schema["required"] = Value::Array(required);
    }
    Some(schema)
}

fn request_body(
    doc: &Value,
    operation: &Value,
    op_pointer: &str,
) -> Result<Option<DerivedBody>, ConfigError> {
    let Some(entry) = operation.get("requestBody") else {
        return Ok(None);
    };
    let (pointer, body) = follow_ref(doc, entry, &format!("{op_pointer}/requestBody"))
        .map_err(|m| ConfigError::new("requestBody", m))?;
    let required = body
        .get("required")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let content = body
        .get("content")
        .and_then(Value::as_object)
        .ok_or_else(|| ConfigError::new("requestBody.content", "must be an object"))?;
    let mut content_types = Vec::new();
    let mut json_schema = None;
    for (media, value) in content {
        let range = MediaRange::parse(media).ok_or_else(|| {
            ConfigError::new(
                format!("requestBody.content[{media:?}]"),
                "is not a media type",
            )
        })?;
        content_types.push(range);
        let is_json = MediaType::parse(media).is_some_and(|m| m.is_json());
        if is_json && json_schema.is_none() && value.get("schema").is_some() {
            let at = format!("{pointer}/content/{}/schema", escape_token(media));
            json_schema = Some(json!({"$ref": reference(&at)}));
        }
    }
    Ok(Some(DerivedBody {
        required,
        content_types,
        json_schema,
    }))
}

/// Follows a `$ref` (to the document only) to the object it names, returning
/// the object and its pointer.
fn follow_ref(doc: &Value, entry: &Value, pointer: &str) -> Result<(String, Value), String> {
    let mut pointer = pointer.to_string();
    let mut current = entry.clone();
    for _ in 0..16 {
        let Some(r) = current.get("$ref").and_then(Value::as_str) else {
            return Ok((pointer, current));
        };
        let fragment = r.strip_prefix('#').ok_or_else(|| {
            format!("$ref {r:?}: only references inside the document are supported")
        })?;
        pointer = decode_fragment(fragment);
        current = doc
            .pointer(&pointer)
            .cloned()
            .ok_or_else(|| format!("$ref {r:?} points at nothing"))?;
    }
    Err("$ref chain too long (a cycle?)".into())
}

/// A JSON pointer as a `$ref` into the registered document. The fragment is
/// percent-encoded: paths hold `{` and `}`, which URIs do not allow.
fn reference(pointer: &str) -> String {
    let mut out = format!("{DOCUMENT_URI}#");
    for b in pointer.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A JSON pointer token (`/pets/{id}` -> `~1pets~1{id}`).
fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// A URI fragment's JSON pointer, percent-decoded.
pub fn decode_fragment(fragment: &str) -> String {
    let bytes = palisade_core::path::percent_decode_bytes(fragment.as_bytes());
    String::from_utf8_lossy(&bytes).into_owned()
}

/// OpenAPI 3.0's `nullable: true` as JSON Schema: `null` added to `type`
/// (and to `enum`), or the schema wrapped in `anyOf [schema, null]` when it
/// has no single type (a `$ref`, a composition).
pub fn convert_nullable(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(convert_nullable),
        Value::Object(map) => {
            map.values_mut().for_each(convert_nullable);
            let nullable = matches!(map.get("nullable"), Some(Value::Bool(_)));
            if !nullable {
                return;
            }
            let on = map.remove("nullable") == Some(Value::Bool(true));
            if !on {
                return;
            }
            if let Some(Value::Array(options)) = map.get_mut("enum") {
                if !options.contains(&Value::Null) {
                    options.push(Value::Null);
                }
            }
            match map.get("type").cloned() {
                Some(Value::String(t)) if !map.contains_key("$ref") => {
                    map.insert("type".into(), json!([t, "null"]));
                }
                _ => {
                    let inner = Value::Object(std::mem::take(map));
                    *value = json!({"anyOf": [inner, {"type": "null"}]});
                }
            }
        }
        _ => {}
    }
}
