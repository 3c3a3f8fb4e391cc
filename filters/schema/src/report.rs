//! Schema violations as problem+json `errors` entries.
//!
//! Messages are written here from the keyword and the schema's own
//! constraints (`must be at most 100`), never from the validator's default
//! texts, which quote the offending value. Pointers are kept only as far as
//! they are made of array indexes and property names the schema declares;
//! any other segment (a key the client invented) becomes `*`.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use jsonschema::ValidationError;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// At most this many entries are reported per request.
pub const MAX_ERRORS: usize = 10;
/// Schema values quoted in messages (`enum`, `const`) are cut to this length.
const MAX_QUOTE: usize = 120;

/// Where in the request a violation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Body,
    Query,
    Path,
}

impl Place {
    pub fn as_str(self) -> &'static str {
        match self {
            Place::Body => "body",
            Place::Query => "query",
            Place::Path => "path",
        }
    }
}

/// One `errors` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub place: Place,
    pub pointer: String,
    pub keyword: String,
    pub message: String,
}

impl Violation {
    pub fn from_error(place: Place, error: &ValidationError<'_>, names: &BTreeSet<String>) -> Self {
        Violation {
            place,
            pointer: safe_pointer(error, names),
            keyword: error.kind().keyword().to_string(),
            message: message(error.kind()),
        }
    }

    /// A violation found before any schema ran (a missing body).
    pub fn new(place: Place, keyword: &str, message: &str) -> Self {
        Violation {
            place,
            pointer: String::new(),
            keyword: keyword.to_string(),
            message: message.to_string(),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({"in": self.place.as_str(), "pointer": self.pointer,
               "keyword": self.keyword, "message": self.message})
    }
}

/// Every property name a schema declares (`properties`, `required`,
/// `dependentRequired`…), collected once at config load: the only names a
/// pointer may show.
pub fn declared_names(schema: &Value, names: &mut BTreeSet<String>) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    (
                        "properties" | "dependentSchemas" | "dependentRequired" | "dependencies",
                        Value::Object(props),
                    ) => {
                        names.extend(props.keys().cloned());
                    }
                    ("required", Value::Array(items)) => {
                        names.extend(items.iter().filter_map(Value::as_str).map(str::to_string));
                    }
                    _ => {}
                }
                declared_names(value, names);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| declared_names(v, names)),
        _ => {}
    }
}

fn safe_pointer(error: &ValidationError<'_>, names: &BTreeSet<String>) -> String {
    let mut out = String::new();
    for segment in error.instance_path().segments() {
        out.push('/');
        match segment {
            LocationSegment::Index(i) => out.push_str(&i.to_string()),
            LocationSegment::Property(p) if names.contains(p.as_ref()) => {
                out.push_str(&p.replace('~', "~0").replace('/', "~1"));
            }
            LocationSegment::Property(_) => out.push('*'),
        }
    }
    out
}

/// A schema value, quoted briefly.
fn quote(value: &Value) -> String {
    let text = value.to_string();
    if text.len() <= MAX_QUOTE {
        return text;
    }
    let mut end = MAX_QUOTE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn type_names(kind: &TypeKind) -> String {
    match kind {
        TypeKind::Single(t) => t.as_str().to_string(),
        TypeKind::Multiple(set) => set
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

/// The message for a violation: the constraint, never the value.
pub fn message(kind: &ValidationErrorKind) -> String {
    use ValidationErrorKind as K;
    match kind {
        K::AdditionalItems { limit } => format!("must have at most {limit} items"),
        K::AdditionalProperties { unexpected } => {
            format!(
                "has {} propert{} the schema does not allow",
                unexpected.len(),
                plural_y(unexpected.len())
            )
        }
        K::AnyOf { .. } => "must match at least one of the schemas in anyOf".into(),
        K::BacktrackLimitExceeded { .. } | K::RegexEngineFailure { .. } => {
            "could not be checked against the pattern".into()
        }
        K::Constant { expected_value } => format!("must be {}", quote(expected_value)),
        K::Contains => "must contain an item matching the contains schema".into(),
        K::ContentEncoding { content_encoding } => {
            format!(
                "must be {} encoded",
                quote(&Value::from(content_encoding.as_str()))
            )
        }
        K::ContentMediaType { content_media_type } => {
            format!(
                "must be {}",
                quote(&Value::from(content_media_type.as_str()))
            )
        }
        K::Custom { .. } => "is invalid".into(),
        K::Enum { options } => format!("must be one of {}", quote(options)),
        K::ExclusiveMaximum { limit } => format!("must be less than {}", quote(limit)),
        K::ExclusiveMinimum { limit } => format!("must be greater than {}", quote(limit)),
        K::FalseSchema => "is not allowed here".into(),
        K::Format { format } => format!("must be a valid {}", quote(&Value::from(format.as_str()))),
        K::FromUtf8 { .. } => "must decode to UTF-8".into(),
        K::MaxItems { limit } => format!("must have at most {limit} items"),
        K::Maximum { limit } => format!("must be at most {}", quote(limit)),
        K::MaxLength { limit } => format!("must be at most {limit} characters long"),
        K::MaxProperties { limit } => format!("must have at most {limit} properties"),
        K::MinItems { limit } => format!("must have at least {limit} items"),
        K::Minimum { limit } => format!("must be at least {}", quote(limit)),
        K::MinLength { limit } => format!("must be at least {limit} characters long"),
        K::MinProperties { limit } => format!("must have at least {limit} properties"),
        K::MultipleOf { multiple_of } => format!("must be a multiple of {multiple_of}"),
        K::Not { .. } => "must not match the schema in not".into(),
        K::OneOfMultipleValid { .. } => {
            "must match exactly one schema in oneOf, matches several".into()
        }
        K::OneOfNotValid { .. } => "must match exactly one schema in oneOf, matches none".into(),
        K::Pattern { pattern } => format!(
            "must match the pattern {}",
            quote(&Value::from(pattern.as_str()))
        ),
        K::PropertyNames { .. } => "has a property name the schema does not allow".into(),
        K::Required { property } => format!("must have the property {}", quote(property)),
        K::Type { kind } => format!("must be of type {}", type_names(kind)),
        K::UnevaluatedItems { unexpected } => {
            format!("has {} item(s) the schema does not allow", unexpected.len())
        }
        K::UnevaluatedProperties { unexpected } => {
            format!(
                "has {} propert{} the schema does not allow",
                unexpected.len(),
                plural_y(unexpected.len())
            )
        }
        K::UniqueItems => "must not contain duplicate items".into(),
        K::Referencing(_) => "could not be checked (unresolvable reference)".into(),
    }
}

fn plural_y(n: usize) -> &'static str {
    if n == 1 {
        "y"
    } else {
        "ies"
    }
}
