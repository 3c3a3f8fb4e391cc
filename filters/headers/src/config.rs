//! The filter's JSON config, as operators write it.
//!
//! `{}` is a complete config: every field is optional and falls back to the
//! safe API preset ([`crate::policy::Settings::preset`]). The top-level
//! `request`/`response`/`dry_run` override the preset; each rule overrides the
//! top level for the requests it matches (first match wins). Unknown fields are
//! errors, so a typo can never silently turn a protection off.

use palisade_core::config::{ConfigError, Validate};
use palisade_core::header_pattern::{check_name, HeaderPattern};
use palisade_core::method::Method;
use palisade_core::route::{validate_rules, Match, Rule};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Decide, log and count, but change nothing and let every request through.
    #[serde(default)]
    pub dry_run: bool,
    /// The audit trail: `denials` (default) records every decision and logs
    /// a line per denial; `all` also logs allowed requests; `off` neither.
    #[serde(default)]
    pub audit: palisade_core::audit::AuditMode,
    /// Method overrides (`x-http-method-override`, `x-http-method`,
    /// `x-method-override` headers, `_method` query parameter): `strip` (the
    /// default) removes the headers; `keep` forwards them for upstreams that
    /// rely on them, and then both the request's method and the override must
    /// be allowed. Either way a `_method` parameter (which cannot be stripped)
    /// must name an allowed method. Filter-wide: it decides the method every
    /// rule matches on.
    #[serde(default)]
    pub method_override: MethodOverride,
    #[serde(default)]
    pub request: RequestSettings,
    #[serde(default)]
    pub response: ResponseSettings,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// What the filter does with method overrides. An upstream that honours
/// them performs the overridden method, so a method rule judged on
/// `:method` alone would be bypassed by them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MethodOverride {
    /// Remove the override headers before the upstream sees them.
    #[default]
    Strip,
    /// Forward them; rules match on the overridden method and
    /// `allowed_methods` is enforced against it (and against `:method`).
    Keep,
}

/// Request overrides; `None` keeps the value of the layer below.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestSettings {
    /// Names and `prefix-*` wildcards dropped before the upstream sees them.
    #[serde(default)]
    pub remove: Option<Vec<HeaderPattern>>,
    /// Allow-list mode; `null` turns it off in a rule.
    #[serde(default, deserialize_with = "double_option")]
    #[schemars(schema_with = "schema::nullable_header_patterns")]
    pub allow_only: Option<Option<Vec<HeaderPattern>>>,
    /// Else 405; `null` (the preset) allows every method but TRACE and TRACK,
    /// also in a rule. List TRACE to allow it.
    #[serde(default, deserialize_with = "double_option")]
    #[schemars(schema_with = "schema::nullable_methods")]
    pub allowed_methods: Option<Option<Vec<Method>>>,
    #[schemars(range(min = 1))]
    pub max_headers: Option<u32>,
    #[schemars(range(min = 1))]
    pub max_header_bytes: Option<u32>,
    pub reject_control_characters: Option<bool>,
}

/// Response overrides; `None` keeps the value of the layer below.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseSettings {
    #[serde(default)]
    pub remove: Option<Vec<HeaderPattern>>,
    /// Merged into the layer below: a string adds or replaces, `null` removes.
    pub add_if_absent: Option<BTreeMap<String, Option<String>>>,
    pub expose_request_id: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(rename = "match", default)]
    pub matcher: Match,
    pub dry_run: Option<bool>,
    #[serde(default)]
    pub request: RequestSettings,
    #[serde(default)]
    pub response: ResponseSettings,
}

impl Rule for RuleConfig {
    fn matcher(&self) -> &Match {
        &self.matcher
    }
}

/// Tells "absent" (inherit) from `null` (turn off) for optional features.
fn double_option<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Request headers the proxy needs to route and frame the request: never
/// removed, not even by allow-list mode, whatever the config says. Envoy's
/// router finds no route (404) for a request without `x-forwarded-proto`
/// once a filter has changed the headers (which clears the route cache).
pub const PROTECTED_REQUEST_HEADERS: [&str; 4] = [
    "host",
    "content-length",
    "transfer-encoding",
    "x-forwarded-proto",
];

/// Response headers that frame the body: never removed or added.
pub const FRAMING_HEADERS: [&str; 2] = ["content-length", "transfer-encoding"];

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        validate_rules(&self.rules)?;
        self.request.check().map_err(|e| e.within("request"))?;
        self.response.check().map_err(|e| e.within("response"))?;
        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            rule.request
                .check()
                .map_err(|e| e.within(&format!("{at}.request")))?;
            rule.response
                .check()
                .map_err(|e| e.within(&format!("{at}.response")))?;
        }
        Ok(())
    }
}

impl RequestSettings {
    fn check(&self) -> Result<(), ConfigError> {
        if let Some(remove) = &self.remove {
            for (i, p) in remove.iter().enumerate() {
                if let HeaderPattern::Exact(name) = p {
                    if PROTECTED_REQUEST_HEADERS.contains(&name.as_str()) {
                        return Err(ConfigError::new(
                            format!("remove[{i}]"),
                            format!("{name:?} routes or frames the request and is never removed"),
                        ));
                    }
                }
            }
        }
        if let Some(Some(methods)) = &self.allowed_methods {
            if methods.is_empty() {
                return Err(ConfigError::new(
                    "allowed_methods",
                    "must not be empty (use null to allow every method)",
                ));
            }
        }
        for (field, value) in [
            ("max_headers", self.max_headers),
            ("max_header_bytes", self.max_header_bytes),
        ] {
            if value == Some(0) {
                return Err(ConfigError::new(field, "must be at least 1"));
            }
        }
        Ok(())
    }
}

impl ResponseSettings {
    fn check(&self) -> Result<(), ConfigError> {
        if let Some(remove) = &self.remove {
            for (i, p) in remove.iter().enumerate() {
                if let HeaderPattern::Exact(name) = p {
                    if FRAMING_HEADERS.contains(&name.as_str()) {
                        return Err(ConfigError::new(
                            format!("remove[{i}]"),
                            format!("{name:?} frames the response and is never removed"),
                        ));
                    }
                }
            }
        }
        if let Some(add) = &self.add_if_absent {
            let mut seen: Vec<String> = Vec::new();
            for (name, value) in add {
                let at = format!("add_if_absent[{name:?}]");
                check_name(name).map_err(|m| ConfigError::new(at.clone(), m))?;
                let lower = name.to_ascii_lowercase();
                if FRAMING_HEADERS.contains(&lower.as_str()) {
                    return Err(ConfigError::new(
                        at,
                        "framing headers are set by the proxy, never by this filter",
                    ));
                }
                if seen.contains(&lower) {
                    return Err(ConfigError::new(
                        at,
                        "listed twice (header names are case-insensitive)",
                    ));
                }
                seen.push(lower);
                if let Some(v) = value {
                    check_value(v).map_err(|m| ConfigError::new(at, m))?;
                }
            }
        }
        Ok(())
    }
}

/// A header value the filter may send: visible ASCII, spaces and tabs inside.
fn check_value(v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        return Err("the value must not be empty (use null to remove a default)".to_string());
    }
    if v.trim() != v {
        return Err("the value must not start or end with whitespace".to_string());
    }
    if !v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        return Err("the value must be printable ASCII (no control characters)".to_string());
    }
    Ok(())
}

/// Schemas of the fields whose `null` means "off in this rule" (a double
/// option, which schemars cannot see through).
mod schema {
    use palisade_core::header_pattern::HeaderPattern;
    use palisade_core::method::Method;
    use schemars::{json_schema, Schema, SchemaGenerator};

    pub fn nullable_header_patterns(generator: &mut SchemaGenerator) -> Schema {
        let item = generator.subschema_for::<HeaderPattern>();
        json_schema!({"type": ["array", "null"], "items": item})
    }

    pub fn nullable_methods(generator: &mut SchemaGenerator) -> Schema {
        let item = generator.subschema_for::<Method>();
        json_schema!({"type": ["array", "null"], "items": item, "minItems": 1})
    }
}
