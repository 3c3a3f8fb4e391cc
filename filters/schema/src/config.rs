//! The filter's JSON config, as operators write it.
//!
//! `{}` is a valid config that validates nothing. A contract comes from
//! explicit `rules` (JSON Schemas per route), from an inline `openapi`
//! document, or both; explicit rules are tried first. Unknown fields are
//! errors, so a typo can never silently turn a check off. Schemas are only
//! parsed here; [`crate::compile`] turns them into validators.

use palisade_core::config::{ConfigError, Validate};
use palisade_core::route::{validate_rules, Match, Rule};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

/// Default cap on a validated body: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// JSON-bomb defaults.
pub const DEFAULT_MAX_DEPTH: u32 = 64;
pub const DEFAULT_MAX_MEMBERS: u32 = 10_000;
pub const DEFAULT_MAX_ITEMS: u32 = 10_000;
pub const DEFAULT_MAX_STRING_BYTES: u64 = 1024 * 1024;
/// serde_json refuses deeper documents itself (its recursion limit is 128).
pub const DEPTH_CEILING: u32 = 100;
/// Off: holding needs an Envoy flag that is off by default (and that
/// Istio's WasmPlugin cannot set), and Kong hangs a held request.
pub const DEFAULT_HOLD_HEADERS: bool = false;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Decide, log and count, but let every request through (shadow mode).
    #[serde(default)]
    pub dry_run: bool,
    /// The audit trail: `denials` (default) records every decision and logs
    /// a line per denial; `all` also logs allowed requests; `off` neither.
    #[serde(default)]
    pub audit: palisade_core::audit::AuditMode,
    /// Largest body the filter buffers and validates; larger ones get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// What happens to requests no rule or OpenAPI operation covers.
    #[serde(default)]
    pub unmatched: Unmatched,
    /// Limits checked while a body is parsed (JSON bombs).
    #[serde(default)]
    pub limits: Limits,
    /// Whether `format` (email, uuid, date-time…) is asserted, not only annotated.
    #[serde(default = "yes")]
    pub validate_formats: bool,
    /// Hold the request headers back while a body is buffered, so the upstream
    /// never sees the start of a refused request and the verdict is published
    /// to it. Envoy only, and only with the Wasm filter's
    /// `allow_on_headers_stop_iteration: true`: without it such requests get a
    /// 500 after 5 s and an error log naming the flag. Ignored on Kong, where
    /// nginx reads the whole body before proxying anyway. Default `false`:
    /// the headers go on at once, the body is buffered and judged before the
    /// upstream gets it, and a refused body resets the upstream request.
    #[serde(default = "default_hold_headers")]
    pub hold_headers: bool,
    /// Explicit contracts, first match wins; tried before the OpenAPI operations.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// An inline OpenAPI 3.0 or 3.1 document (JSON) from which rules are derived.
    #[serde(default)]
    pub openapi: Option<Value>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dry_run: false,
            audit: Default::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            unmatched: Unmatched::default(),
            limits: Limits::default(),
            validate_formats: true,
            hold_headers: DEFAULT_HOLD_HEADERS,
            rules: Vec::new(),
            openapi: None,
        }
    }
}

fn default_max_body_bytes() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

fn default_hold_headers() -> bool {
    DEFAULT_HOLD_HEADERS
}

fn yes() -> bool {
    true
}

/// Requests outside the contract: let them through, or answer 404/405.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Unmatched {
    #[default]
    Allow,
    /// 404 for an unknown path, 405 with `Allow` for a known path and another method.
    Deny,
}

/// JSON-bomb limits, enforced while parsing, before any schema runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Deepest nesting of objects and arrays (1..=100).
    pub max_depth: u32,
    /// Most members in one object.
    pub max_members: u32,
    /// Most items in one array.
    pub max_items: u32,
    /// Longest string (and object key), in bytes once unescaped.
    pub max_string_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: DEFAULT_MAX_DEPTH,
            max_members: DEFAULT_MAX_MEMBERS,
            max_items: DEFAULT_MAX_ITEMS,
            max_string_bytes: DEFAULT_MAX_STRING_BYTES,
        }
    }
}

/// One route's contract.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(rename = "match", default)]
    pub matcher: Match,
    /// Overrides the top-level `dry_run` for this route.
    pub dry_run: Option<bool>,
    /// Accepted media types of a body (`type/subtype`, `type/*`, `*/*`);
    /// others get 415. Default with a `body`: `["application/json"]`.
    pub content_types: Option<Vec<String>>,
    /// Overrides the top-level `max_body_bytes` for this route.
    pub max_body_bytes: Option<u64>,
    /// The body's contract; without it the body streams unchecked.
    pub body: Option<BodyConfig>,
    /// JSON Schema of the query string read as an object.
    pub query: Option<Value>,
    /// JSON Schema of the `match.path_template` parameters read as an object.
    pub path_params: Option<Value>,
}

impl Rule for RuleConfig {
    fn matcher(&self) -> &Match {
        &self.matcher
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BodyConfig {
    /// Whether a request without a body is refused (400).
    #[serde(default = "yes")]
    pub required: bool,
    /// JSON Schema of the body; absent: any well-formed JSON within the limits.
    pub schema: Option<Value>,
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes == 0 {
            return Err(ConfigError::new("max_body_bytes", "must be > 0"));
        }
        self.limits.validate().map_err(|e| e.within("limits"))?;
        validate_rules(&self.rules)?;
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate()
                .map_err(|e| e.within(&format!("rules[{i}]")))?;
        }
        if let Some(doc) = &self.openapi {
            if !doc.is_object() {
                return Err(ConfigError::new("openapi", "must be a JSON object"));
            }
        }
        if self.rules.is_empty() && self.openapi.is_none() {
            return Err(ConfigError::new(
                "rules",
                "nothing is validated, so every request would pass (or, with \
                 \"unmatched\": \"deny\", be refused): give `openapi` or `rules`",
            ));
        }
        Ok(())
    }
}

impl Validate for Limits {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=DEPTH_CEILING).contains(&self.max_depth) {
            return Err(ConfigError::new(
                "max_depth",
                format!("must be between 1 and {DEPTH_CEILING}"),
            ));
        }
        for (field, value) in [
            ("max_members", u64::from(self.max_members)),
            ("max_items", u64::from(self.max_items)),
            ("max_string_bytes", self.max_string_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::new(field, "must be > 0"));
            }
        }
        Ok(())
    }
}

impl Validate for RuleConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes == Some(0) {
            return Err(ConfigError::new("max_body_bytes", "must be > 0"));
        }
        if let Some(types) = &self.content_types {
            if types.is_empty() {
                return Err(ConfigError::new("content_types", "must not be empty"));
            }
            for (i, t) in types.iter().enumerate() {
                if crate::media::MediaRange::parse(t).is_none() {
                    return Err(ConfigError::new(
                        format!("content_types[{i}]"),
                        format!("{t:?} is not a media type (type/subtype, type/* or */*)"),
                    ));
                }
            }
        }
        if self.path_params.is_some() && self.matcher.path_template.is_none() {
            return Err(ConfigError::new(
                "path_params",
                "needs match.path_template to name the parameters",
            ));
        }
        Ok(())
    }
}
