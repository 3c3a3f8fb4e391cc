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

/// Parses and validates a filter config. An empty config means `{}`, which
/// every filter must accept with safe defaults.
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
        ConfigError::new(path, strip_position(&e.inner().to_string()))
    })?;
    de.end()
        .map_err(|e| ConfigError::new("", strip_position(&e.to_string())))?;
    parsed.validate()?;
    Ok(parsed)
}

/// serde_json appends " at line L column C", which means nothing to someone who
/// wrote the config as YAML in an Istio resource.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}
