//! Response headers that reveal the stack behind the proxy (`server`,
//! `x-powered-by`, `x-aspnet-version`, debug and backend headers). They are
//! dropped from masked responses only: an unmasked response passes untouched
//! (general response-header hygiene is the headers filter's job).

use serde::Deserialize;

/// Stripped from masked responses unless `strip_headers` says otherwise.
pub const DEFAULT_STRIP_HEADERS: &[&str] = &[
    "server",
    "x-powered-by",
    "x-aspnet-version",
    "x-aspnetmvc-version",
    "x-runtime",
    "x-version",
    "x-generator",
    "x-sourcefiles",
    "x-debug-*",
    "x-backend-*",
    "x-upstream-*",
    "x-envoy-upstream-service-time",
];

/// A header name, or a prefix when it ends with `*` (`x-debug-*`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HeaderPattern {
    name: String,
    prefix: bool,
}

impl TryFrom<String> for HeaderPattern {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        let lower = raw.trim().to_ascii_lowercase();
        let (name, prefix) = match lower.strip_suffix('*') {
            Some(p) => (p.to_string(), true),
            None => (lower.clone(), false),
        };
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'+-.^_`|~".contains(&b);
        if name.is_empty() {
            return Err(format!(
                "{raw:?} would strip every header: give a name or a prefix like \"x-debug-*\""
            ));
        }
        if !name.bytes().all(token) {
            return Err(format!(
                "{raw:?} is not a header name (only a trailing '*' wildcard is allowed, no pseudo-headers)"
            ));
        }
        Ok(HeaderPattern { name, prefix })
    }
}

impl HeaderPattern {
    /// `name` must already be lowercase (hosts' header lists are, via the core).
    pub fn matches(&self, name: &str) -> bool {
        if self.prefix {
            name.starts_with(self.name.as_str())
        } else {
            name == self.name
        }
    }
}

pub fn default_patterns() -> Vec<HeaderPattern> {
    DEFAULT_STRIP_HEADERS
        .iter()
        .filter_map(|h| HeaderPattern::try_from((*h).to_string()).ok())
        .collect()
}

pub fn strips(patterns: &[HeaderPattern], name: &str) -> bool {
    patterns.iter().any(|p| p.matches(name))
}
