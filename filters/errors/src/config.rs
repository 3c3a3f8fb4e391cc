//! The errors filter's JSON config, validated and compiled once per VM.
//!
//! Every field has a safe default, so `{}` (or an empty config) masks every
//! 5xx and every 4xx whose body looks like a leak. Mistakes are refused with
//! the field's path (`rules[1].statuses[0]`, `leak_patterns.mine`), never
//! silently ignored: a masking filter that quietly masks nothing is worse
//! than one that refuses to start.

use crate::leaks::{self, LeakDetector};
use crate::status::StatusSet;
use crate::strip::{self, StripPattern};
use palisade_core::config::{self, Validate};
use palisade_core::route::{self, Match, Rule};
use palisade_core::ConfigError;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Largest `scan_bytes`: Envoy's default per-connection buffer limit is 1 MiB,
/// and a buffered body above it turns into Envoy's own 500.
pub const MAX_SCAN_BYTES: usize = 1 << 20;
/// Largest `log_body_bytes`: one log line, not a body dump.
pub const MAX_LOG_BODY_BYTES: usize = 4096;

fn default_statuses() -> StatusSet {
    StatusSet::server_errors()
}
fn default_detect() -> StatusSet {
    StatusSet::client_errors()
}
fn default_strip() -> Vec<StripPattern> {
    strip::default_patterns()
}
fn default_scan_bytes() -> usize {
    64 * 1024
}
fn default_log_body_bytes() -> usize {
    256
}
fn default_stream_types() -> Vec<String> {
    vec!["text/event-stream".to_string()]
}

/// The config as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Always masked.
    #[serde(default = "default_statuses")]
    #[schemars(schema_with = "schema::statuses")]
    pub statuses: StatusSet,
    /// Masked only when the body looks like a leak.
    #[serde(default = "default_detect")]
    #[schemars(schema_with = "schema::statuses")]
    pub detect_leaks_in: StatusSet,
    /// Dropped from masked responses.
    #[serde(default = "default_strip")]
    #[schemars(schema_with = "schema::strip_patterns")]
    pub strip_headers: Vec<StripPattern>,
    /// Replaces the default leak patterns (name → regex).
    #[serde(default)]
    pub leak_patterns: Option<BTreeMap<String, String>>,
    /// Added to (or replacing by name) the leak patterns.
    #[serde(default)]
    pub extra_leak_patterns: BTreeMap<String, String>,
    /// Default patterns to turn off, by name.
    #[serde(default)]
    pub disabled_leak_patterns: Vec<String>,
    /// How much of a leak candidate's body is buffered and scanned.
    #[serde(default = "default_scan_bytes")]
    #[schemars(range(min = 1, max = MAX_SCAN_BYTES))]
    pub scan_bytes: usize,
    /// How much of a masked body is logged (0: none).
    #[serde(default = "default_log_body_bytes")]
    #[schemars(range(max = MAX_LOG_BODY_BYTES))]
    pub log_body_bytes: usize,
    /// Hold leak candidates' headers until the body is scanned (Envoy with
    /// `allow_on_headers_stop_iteration: true` only).
    #[serde(default)]
    pub hold_headers: bool,
    /// Decide, log and count, but change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The audit trail: `denials` (default) records every decision and logs
    /// a line per denial; `all` also logs allowed requests; `off` neither.
    #[serde(default)]
    pub audit: palisade_core::audit::AuditMode,
    /// A compressed leak candidate that cannot be inflated completely within
    /// `scan_bytes` (unknown or stacked coding, corrupt, bigger): `mask` it
    /// or let it `pass` unscanned.
    #[serde(default)]
    pub undecodable: Undecodable,
    /// Response media types that are never touched (streams).
    #[serde(default = "default_stream_types")]
    pub stream_content_types: Vec<String>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// What happens to a compressed leak candidate whose body gives no verdict:
/// a leak could hide in what was not inflated, so masking is the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Undecodable {
    #[default]
    Mask,
    Pass,
}

/// `{ "match": {...}, ...overrides }`: unset fields keep the top-level value.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(rename = "match", default)]
    pub matcher: Match,
    /// `false`: responses of matching requests pass untouched.
    pub enabled: Option<bool>,
    #[serde(default)]
    #[schemars(schema_with = "schema::optional_statuses")]
    pub statuses: Option<StatusSet>,
    #[serde(default)]
    #[schemars(schema_with = "schema::optional_statuses")]
    pub detect_leaks_in: Option<StatusSet>,
    #[serde(default)]
    #[schemars(schema_with = "schema::optional_strip_patterns")]
    pub strip_headers: Option<Vec<StripPattern>>,
    pub hold_headers: Option<bool>,
    pub dry_run: Option<bool>,
    pub undecodable: Option<Undecodable>,
}

impl Rule for RuleConfig {
    fn matcher(&self) -> &Match {
        &self.matcher
    }
}

impl Validate for RawConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        route::validate_rules(&self.rules)?;
        if !(1..=MAX_SCAN_BYTES).contains(&self.scan_bytes) {
            return Err(ConfigError::new(
                "scan_bytes",
                format!("must be between 1 and {MAX_SCAN_BYTES} (keep it under Envoy's per_connection_buffer_limit_bytes)"),
            ));
        }
        if self.log_body_bytes > MAX_LOG_BODY_BYTES {
            return Err(ConfigError::new(
                "log_body_bytes",
                format!("must be at most {MAX_LOG_BODY_BYTES}"),
            ));
        }
        for (i, t) in self.stream_content_types.iter().enumerate() {
            let t = t.trim();
            if t.is_empty() || t.contains(';') || t.contains(char::is_whitespace) {
                return Err(ConfigError::new(
                    format!("stream_content_types[{i}]"),
                    "must be a media type like \"text/event-stream\" (no parameters)",
                ));
            }
        }
        Ok(())
    }
}

/// What applies to one request: the top level, or a rule merged over it.
#[derive(Debug, Clone)]
pub struct Policy {
    pub enabled: bool,
    pub statuses: StatusSet,
    pub detect_leaks_in: StatusSet,
    pub strip_headers: Vec<StripPattern>,
    pub hold_headers: bool,
    pub dry_run: bool,
    pub undecodable: Undecodable,
}

/// The compiled config shared by every request of a VM.
#[derive(Debug, Clone)]
pub struct Config {
    pub default: Policy,
    /// `(match, policy)` in order; the first match wins.
    pub rules: Vec<(Match, Policy)>,
    pub needs_route_name: bool,
    pub leaks: LeakDetector,
    pub scan_bytes: usize,
    pub log_body_bytes: usize,
    pub stream_content_types: Vec<String>,
    pub audit: palisade_core::audit::AuditMode,
}

impl Config {
    /// Parses, validates and compiles (regexes included) a config.
    pub fn load(bytes: &[u8]) -> Result<Config, ConfigError> {
        let raw: RawConfig = config::load(bytes)?;
        Config::compile(raw)
    }

    pub fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
        let patterns = leaks::resolve(
            raw.leak_patterns.as_ref(),
            &raw.extra_leak_patterns,
            &raw.disabled_leak_patterns,
        )?;
        let leaks = LeakDetector::compile(&patterns)?;
        let default = Policy {
            enabled: true,
            statuses: raw.statuses,
            detect_leaks_in: raw.detect_leaks_in,
            strip_headers: raw.strip_headers,
            hold_headers: raw.hold_headers,
            dry_run: raw.dry_run,
            undecodable: raw.undecodable,
        };
        let needs_route_name = route::needs_route_name(&raw.rules);
        let rules = raw
            .rules
            .into_iter()
            .map(|r| {
                let policy = Policy {
                    enabled: r.enabled.unwrap_or(default.enabled),
                    statuses: r.statuses.unwrap_or_else(|| default.statuses.clone()),
                    detect_leaks_in: r
                        .detect_leaks_in
                        .unwrap_or_else(|| default.detect_leaks_in.clone()),
                    strip_headers: r
                        .strip_headers
                        .unwrap_or_else(|| default.strip_headers.clone()),
                    hold_headers: r.hold_headers.unwrap_or(default.hold_headers),
                    dry_run: r.dry_run.unwrap_or(default.dry_run),
                    undecodable: r.undecodable.unwrap_or(default.undecodable),
                };
                (r.matcher, policy)
            })
            .collect();
        Ok(Config {
            default,
            rules,
            needs_route_name,
            leaks,
            scan_bytes: raw.scan_bytes,
            log_body_bytes: raw.log_body_bytes,
            audit: raw.audit,
            stream_content_types: raw
                .stream_content_types
                .iter()
                .map(|t| t.trim().to_ascii_lowercase())
                .collect(),
        })
    }

    /// Index of the first matching rule (`None`: the top-level policy).
    pub fn pick(&self, input: &route::RouteInput<'_>) -> Option<usize> {
        self.rules.iter().position(|(m, _)| m.matches(input))
    }

    pub fn policy(&self, rule: Option<usize>) -> &Policy {
        rule.and_then(|i| self.rules.get(i))
            .map(|(_, p)| p)
            .unwrap_or(&self.default)
    }

    /// Whether a response media type is a stream that must never be touched.
    pub fn is_stream(&self, content_type: Option<&[u8]>) -> bool {
        let Some(ct) = content_type else {
            return false;
        };
        let media = String::from_utf8_lossy(ct);
        let media = media
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        self.stream_content_types.contains(&media)
    }
}

/// JSON Schemas of the types this config borrows (the core's `Match`, the
/// status and strip-pattern parsers), which do not derive `JsonSchema`:
/// `palisade schema errors` and Kong's `meta.json` are generated from these
/// and the derives above.
mod schema {
    use schemars::{json_schema, Schema, SchemaGenerator};

    /// `"4xx"`, `"5xx"` (any case), or an error status 400-599 as a number
    /// or three digits.
    fn status() -> serde_json::Value {
        serde_json::json!({"anyOf": [
            {"type": "integer", "minimum": 400, "maximum": 599},
            {"type": "string", "pattern": "^\\s*([45][xX][xX]|[45][0-9][0-9])\\s*$"}
        ]})
    }

    /// A list of statuses, or one alone.
    pub fn statuses(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"anyOf": [{"type": "array", "items": status()}, status()]})
    }

    /// `null` keeps the top-level value (in rules).
    pub fn optional_statuses(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"anyOf": [{"type": "array", "items": status()}, status(), {"type": "null"}]})
    }

    fn strip_pattern() -> serde_json::Value {
        serde_json::json!({
            "type": "string",
            "pattern": "^\\s*[!#$%&'+.^_`|~0-9A-Za-z-]+[*]?\\s*$"
        })
    }

    /// A header name or a `prefix-*` wildcard, surrounding blanks ignored.
    pub fn strip_patterns(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "array", "items": strip_pattern()})
    }

    /// `null` keeps the top-level value (in rules).
    pub fn optional_strip_patterns(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": ["array", "null"], "items": strip_pattern()})
    }
}
