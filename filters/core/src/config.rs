//! JSON config in, typed config out, with errors that name the field.
//!
//! Operators see these messages in Envoy's log when a filter refuses to start,
//! so they must point at the exact field (`rules[2].match.methods[0]`), never at
//! a byte offset in a JSON string they did not write by hand.

use serde::de::DeserializeOwned;
use std::fmt;

/// A config that cannot be used, with the path of the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path with `[i]` indexes; empty for the document as a whole.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Prefixes the path, so nested validators can report relative paths.
    pub fn within(mut self, parent: &str) -> Self {
        self.path = join_path(parent, &self.path);
        self
    }
}

/// Joins a parent path and a child path the way `serde_path_to_error` prints them.
pub fn join_path(parent: &str, child: &str) -> String {
    match (parent.is_empty(), child.is_empty()) {
        (true, _) => child.to_string(),
        (false, true) => parent.to_string(),
        (false, false) if child.starts_with('[') => format!("{parent}{child}"),
        (false, false) => format!("{parent}.{child}"),
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Semantic checks that serde cannot express (ranges, regexes, exclusive fields).
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Parses and validates a filter config. An empty config means `{}`; a
/// filter whose defaults would protect nothing refuses it in `validate`.
pub fn load<T: DeserializeOwned + Validate>(bytes: &[u8]) -> Result<T, ConfigError> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ConfigError::new("", "the config must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    let parsed: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConfigError::new(
            path,
            operator_words(&strip_position(&e.inner().to_string())),
        )
    })?;
    de.end()
        .map_err(|e| ConfigError::new("", strip_position(&e.to_string())))?;
    parsed.validate()?;
    Ok(parsed)
}

/// serde's messages name Rust types (`expected u64`, `struct RuleConfig`,
/// `a sequence`); operators wrote JSON or YAML, so they read JSON words.
pub fn operator_words(message: &str) -> String {
    const TYPES: [(&str, &str); 12] = [
        ("u8", "a whole number from 0 to 255"),
        ("u16", "a whole number from 0 to 65535"),
        ("u32", "a whole number from 0 to 4294967295"),
        ("u64", "a whole number of 0 or more"),
        ("usize", "a whole number of 0 or more"),
        ("i32", "a whole number"),
        ("i64", "a whole number"),
        ("f32", "a number"),
        ("f64", "a number"),
        ("a sequence", "a list"),
        ("a map", "an object"),
        ("a boolean", "true or false"),
    ];
    if message.starts_with("data did not match any variant of untagged enum") {
        return "not one of the accepted forms (see the reference)".to_string();
    }
    let mut out = message.to_string();
    for (rust, words) in TYPES {
        for lead in ["expected ", "expected one of "] {
            let from = format!("{lead}{rust}");
            let mut at = 0;
            while let Some(i) = out[at..].find(&from).map(|i| i + at) {
                let end = i + from.len();
                let boundary = out[end..]
                    .chars()
                    .next()
                    .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_');
                if boundary {
                    out.replace_range(i..end, &format!("{lead}{words}"));
                    at = i + lead.len() + words.len();
                } else {
                    at = end;
                }
            }
        }
    }
    // `struct RuleConfig`, `enum Unmatched`: the shape, not the Rust name.
    for (rust, words) in [
        ("struct ", "an object"),
        ("enum ", "one of the listed values"),
    ] {
        while let Some(i) = out.find(rust) {
            let name_end = out[i + rust.len()..]
                .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .map_or(out.len(), |n| i + rust.len() + n);
            out.replace_range(i..name_end, words);
        }
    }
    out.replace("invalid type: sequence", "invalid type: list")
        .replace("invalid type: map", "invalid type: object")
}

/// serde_json appends " at line L column C", which means nothing to someone who
/// wrote the config as YAML in an Istio resource.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        #[serde(default)]
        count: u64,
        #[serde(default)]
        port: u16,
        #[serde(default)]
        names: Vec<String>,
        #[serde(default)]
        inner: Option<Inner>,
        #[serde(default)]
        on: bool,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        a: u32,
    }

    impl Validate for Sample {
        fn validate(&self) -> Result<(), ConfigError> {
            Ok(())
        }
    }

    fn error(json: &str) -> String {
        load::<Sample>(json.as_bytes()).expect_err(json).to_string()
    }

    #[test]
    fn messages_use_json_words_not_rust_types() {
        for (json, want) in [
            (
                r#"{"count": "x"}"#,
                "count: invalid type: string \"x\", expected a whole number of 0 or more",
            ),
            (
                r#"{"count": -1}"#,
                "count: invalid value: integer `-1`, expected a whole number of 0 or more",
            ),
            (
                r#"{"port": 70000}"#,
                "port: invalid value: integer `70000`, expected a whole number from 0 to 65535",
            ),
            (
                r#"{"names": "a"}"#,
                "names: invalid type: string \"a\", expected a list",
            ),
            (
                r#"{"inner": "s"}"#,
                "inner: invalid type: string \"s\", expected an object",
            ),
            (
                r#"{"names": {}}"#,
                "names: invalid type: object, expected a list",
            ),
            (
                r#"{"on": 1}"#,
                "on: invalid type: integer `1`, expected true or false",
            ),
        ] {
            assert_eq!(error(json), want, "{json}");
        }
        for json in [
            r#"{"count": "x"}"#,
            r#"{"inner": 1}"#,
            r#"{"inner": {"a": 1.5}}"#,
        ] {
            let e = error(json);
            for rust in ["u64", "u32", "struct", "Inner", "sequence"] {
                assert!(!e.contains(rust), "{json}: {e}");
            }
        }
    }
}
