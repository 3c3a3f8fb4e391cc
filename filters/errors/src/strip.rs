//! Response headers that reveal the stack behind the proxy (`server`,
//! `x-powered-by`, `x-aspnet-version`, debug and backend headers). They are
//! dropped from masked responses only: an unmasked response passes untouched
//! (general response-header hygiene is the headers filter's job).

use palisade_core::header_pattern::HeaderPattern;
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

/// A header name, or a prefix when it ends with `*` (`x-debug-*`): the core's
/// [`HeaderPattern`], read with surrounding blanks ignored and a strip-specific
/// refusal of patterns that would strip everything.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct StripPattern(HeaderPattern);

impl TryFrom<String> for StripPattern {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed == "*" {
            return Err(format!(
                "{raw:?} would strip every header: give a name or a prefix like \"x-debug-*\""
            ));
        }
        HeaderPattern::parse(trimmed).map(StripPattern)
    }
}

impl StripPattern {
    /// `name` must already be lowercase (hosts' header lists are, via the core).
    pub fn matches(&self, name: &str) -> bool {
        self.0.matches(name)
    }
}

pub fn default_patterns() -> Vec<StripPattern> {
    DEFAULT_STRIP_HEADERS
        .iter()
        .filter_map(|h| StripPattern::try_from((*h).to_string()).ok())
        .collect()
}

pub fn strips(patterns: &[StripPattern], name: &str) -> bool {
    patterns.iter().any(|p| p.matches(name))
}
