//! The filter's JSON config, exactly as the issue words it.
//!
//! `{}` is valid and limits nothing. Every rule lists limits; a request uses
//! the first rule whose `match` applies and must be admitted by all of that
//! rule's limits. Unknown fields are errors, so a typo never silently turns a
//! limit off.

use palisade_core::config::{ConfigError, Validate};
use palisade_core::route::{validate_rules, Match, Rule};
use palisade_core::HostKind;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::borrow::Cow;

/// Largest window: a year. Longer windows are almost certainly unit mistakes.
pub const MAX_PER_S: u64 = 366 * 86_400;
/// Upper bound of `requests` and `burst`: keeps every product in the bucket
/// math far away from overflow.
pub const MAX_REQUESTS: u64 = 1_000_000_000;
/// Bounds of `local.slots`: the table's memory is fixed by this number.
pub const MAX_SLOTS: u32 = 1 << 20;
/// Bounds of `local.entries_per_slot`.
pub const MAX_ENTRIES_PER_SLOT: u32 = 16;

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Decide, count and log, but never deny (shadow mode).
    #[serde(default)]
    pub dry_run: bool,
    /// The audit trail: `denials` (default) records every decision and logs
    /// a line per denial; `all` also logs allowed requests; `off` neither.
    #[serde(default)]
    pub audit: palisade_core::audit::AuditMode,
    /// First match wins; a request matching no rule gets `limits`.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// The limits of every request no rule matches: a ratelimit control on
    /// a route limits the whole route, and `rules` only refine it.
    #[serde(default)]
    pub limits: Vec<LimitConfig>,
    /// How the `client_ip` key part finds the client.
    #[serde(default)]
    pub client_ip: ClientIpConfig,
    /// What to do when a limit's key cannot be built (header or claim absent).
    #[serde(default)]
    pub on_missing_key: OnMissingKey,
    /// Which rate-limit fields answers carry.
    #[serde(default)]
    pub response_headers: ResponseHeaders,
    /// Where counts live: this proxy's shared memory, or a rate-limit service.
    #[serde(default)]
    pub mode: Mode,
    /// The rate-limit service (required with `mode: global`).
    #[serde(default)]
    pub global: Option<GlobalConfig>,
    /// Size of the local bucket table (the memory bound).
    #[serde(default)]
    pub local: LocalConfig,
    /// Where `{ "claim": name }` key parts are read from.
    #[serde(default)]
    pub claims: ClaimSource,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(rename = "match", default)]
    pub matcher: Match,
    /// Shadow mode for this rule only.
    pub dry_run: Option<bool>,
    pub limits: Vec<LimitConfig>,
}

impl Config {
    /// `rules`, then the top-level `limits` as a last rule matching every
    /// request.
    pub fn effective_rules(&self) -> Vec<RuleConfig> {
        let mut rules = self.rules.clone();
        if !self.limits.is_empty() {
            rules.push(RuleConfig {
                limits: self.limits.clone(),
                ..RuleConfig::default()
            });
        }
        rules
    }
}

impl Rule for RuleConfig {
    fn matcher(&self) -> &Match {
        &self.matcher
    }
}

/// `requests` per `per_s` seconds for each distinct key, up to `burst` at once;
/// and/or at most `max_in_flight` requests of a key at once.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Names the limit in metrics (`limited.<name>`), headers and logs.
    pub name: String,
    /// The parts that together identify who is counted; `[]` is one bucket for all.
    pub key: Vec<KeyPart>,
    /// Tokens per window (with `per_s`); optional when `max_in_flight` is set.
    pub requests: Option<u64>,
    /// The window in seconds (with `requests`).
    pub per_s: Option<u64>,
    /// Bucket capacity; defaults to `requests`.
    pub burst: Option<u64>,
    /// Spend tokens only on these responses (lockout after failures)
    /// instead of on every request.
    pub count: Option<CountConfig>,
    /// At most this many requests of one key at once (concurrency limit).
    pub max_in_flight: Option<u64>,
}

/// Which answers spend a token: a request reserves one, and gets it back
/// when its response status is not listed.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CountConfig {
    /// Statuses that spend the token (e.g. `[401, 403]` for failed logins).
    pub response_status: Vec<u16>,
}

impl LimitConfig {
    /// `(requests, per_s)` when the limit has a rate.
    pub fn rate(&self) -> Option<(u64, u64)> {
        Some((self.requests?, self.per_s?))
    }

    pub fn capacity(&self) -> u64 {
        self.burst.or(self.requests).unwrap_or(1)
    }
}

/// Upper bound of `max_in_flight`.
pub const MAX_IN_FLIGHT: u64 = 1_000_000;

/// One part of a limit's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The client's address, optionally grouped into networks.
    ClientIp(IpGrouping),
    /// A request header's value, hashed (never stored raw).
    Header(String),
    /// The route's name (`xds.route_name`, `kong.route_name`).
    Route,
    Method,
    /// The normalised path without query.
    Path,
    /// A JWT claim recorded by the JWT filter (see [`ClaimSource`]).
    Claim(String),
}

/// Prefix lengths grouping client addresses (`/32` and `/128`: one per address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpGrouping {
    #[serde(default = "v4_full")]
    pub v4_prefix: u8,
    #[serde(default = "v6_full")]
    pub v6_prefix: u8,
}

fn v4_full() -> u8 {
    32
}

fn v6_full() -> u8 {
    128
}

impl Default for IpGrouping {
    fn default() -> Self {
        IpGrouping {
            v4_prefix: 32,
            v6_prefix: 128,
        }
    }
}

impl<'de> Deserialize<'de> for KeyPart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        KeyPart::from_value(value).map_err(serde::de::Error::custom)
    }
}

impl KeyPart {
    fn from_value(value: Value) -> Result<KeyPart, String> {
        const EXPECTED: &str = "expected \"client_ip\", \"route\", \"method\", \"path\", \
                                {\"header\": name}, {\"claim\": name} or {\"client_ip\": {\"v4_prefix\", \"v6_prefix\"}}";
        match value {
            Value::String(s) => match s.as_str() {
                "client_ip" => Ok(KeyPart::ClientIp(IpGrouping::default())),
                "route" => Ok(KeyPart::Route),
                "method" => Ok(KeyPart::Method),
                "path" => Ok(KeyPart::Path),
                "header" | "claim" => Err(format!("{s:?} needs a name: {{\"{s}\": \"...\"}}")),
                other => Err(format!("unknown key part {other:?}: {EXPECTED}")),
            },
            Value::Object(map) if map.len() == 1 => {
                let Some((kind, arg)) = map.into_iter().next() else {
                    return Err(EXPECTED.to_string());
                };
                match (kind.as_str(), arg) {
                    ("header", Value::String(name)) => Ok(KeyPart::Header(name)),
                    ("claim", Value::String(name)) => Ok(KeyPart::Claim(name)),
                    ("client_ip", v @ Value::Object(_)) => serde_json::from_value(v)
                        .map(KeyPart::ClientIp)
                        .map_err(|e| format!("client_ip: {e}")),
                    ("header" | "claim", _) => Err(format!("{kind}: expected a string")),
                    ("client_ip", _) => {
                        Err("client_ip: expected {\"v4_prefix\", \"v6_prefix\"}".into())
                    }
                    _ => Err(format!("unknown key part {kind:?}: {EXPECTED}")),
                }
            }
            _ => Err(EXPECTED.to_string()),
        }
    }

    /// Short stable label (descriptor keys, logs); never the value.
    pub fn label(&self) -> String {
        match self {
            KeyPart::ClientIp(_) => "client_ip".into(),
            KeyPart::Header(name) => format!("header.{name}"),
            KeyPart::Route => "route".into(),
            KeyPart::Method => "method".into(),
            KeyPart::Path => "path".into(),
            KeyPart::Claim(name) => format!("claim.{name}"),
        }
    }
}

impl JsonSchema for KeyPart {
    fn schema_name() -> Cow<'static, str> {
        "KeyPart".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "oneOf": [
                { "type": "string", "enum": ["client_ip", "route", "method", "path"] },
                { "type": "object", "additionalProperties": false, "required": ["header"],
                  "properties": { "header": { "type": "string" } } },
                { "type": "object", "additionalProperties": false, "required": ["claim"],
                  "properties": { "claim": { "type": "string" } } },
                { "type": "object", "additionalProperties": false, "required": ["client_ip"],
                  "properties": { "client_ip": { "type": "object", "additionalProperties": false,
                    "properties": { "v4_prefix": { "type": "integer", "minimum": 0, "maximum": 32 },
                                    "v6_prefix": { "type": "integer", "minimum": 0, "maximum": 128 } } } } }
            ]
        })
    }
}

/// Shared with `jwt`: one client-address logic for every control.
pub use palisade_core::client_ip::ClientIpConfig;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnMissingKey {
    /// The limit does not apply to this request.
    #[default]
    Skip,
    /// All requests without the key share one anonymous bucket.
    Shared,
    /// Refused with 400: the request cannot be attributed.
    Deny,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum ResponseHeaders {
    /// IETF `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10).
    #[default]
    #[serde(rename = "draft")]
    Draft,
    /// `x-ratelimit-limit`, `x-ratelimit-remaining`, `x-ratelimit-reset`, as Envoy's native filter.
    #[serde(rename = "x-ratelimit")]
    XRateLimit,
    #[serde(rename = "none")]
    None,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Buckets in the proxy's shared data: exact across one proxy's workers.
    #[default]
    Local,
    /// Counts kept by an RLS v3 service (envoyproxy/ratelimit, Limitador).
    Global,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GlobalConfig {
    /// Envoy cluster of the rate-limit service (HTTP/2).
    pub cluster: String,
    /// RLS domain.
    pub domain: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub on_error: OnError,
}

fn default_timeout_ms() -> u64 {
    100
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Let the request through (availability first).
    #[default]
    Allow,
    /// Refuse with 503.
    Deny,
    /// Decide with this proxy's local buckets instead.
    Local,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// Shared-data keys used (`slot.0` … `slot.<slots-1>`), fixed at startup.
    #[serde(default = "default_slots")]
    pub slots: u32,
    /// Buckets one slot holds before the least valuable is evicted.
    #[serde(default = "default_entries")]
    pub entries_per_slot: u32,
}

fn default_slots() -> u32 {
    16_384
}

fn default_entries() -> u32 {
    8
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            slots: default_slots(),
            entries_per_slot: default_entries(),
        }
    }
}

/// Where claims come from. The JWT filter records the claims it verified as
/// the property `palisade_jwt_claims` (a JSON object; Envoy keeps it as filter
/// state readable by later wasm filters), and can also copy chosen claims to
/// request headers (`claim_to_headers`, e.g. `sub` → `x-jwt-sub`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimSource {
    /// `property` (default) or `headers`.
    #[serde(default)]
    pub from: ClaimFrom,
    /// The property path holding the JSON object of claims.
    #[serde(default = "default_claim_property")]
    pub property: Vec<String>,
    /// With `from: headers`, claim `a.b` is read from `<header_prefix>a-b`.
    #[serde(default = "default_claim_prefix")]
    pub header_prefix: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClaimFrom {
    /// Only what the JWT filter verified for this request: absent when it did not run.
    #[default]
    Property,
    /// Claim headers: trustworthy only when the `headers` filter strips
    /// client-sent `x-jwt-*` (its default) before the JWT filter sets them.
    Headers,
}

fn default_claim_property() -> Vec<String> {
    vec!["palisade_jwt_claims".to_string()]
}

fn default_claim_prefix() -> String {
    "x-jwt-".to_string()
}

impl Default for ClaimSource {
    fn default() -> Self {
        ClaimSource {
            from: ClaimFrom::Property,
            property: default_claim_property(),
            header_prefix: default_claim_prefix(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        validate_rules(&self.rules)?;
        let mut names: Vec<&str> = Vec::new();
        let top = (String::new(), &self.limits);
        let listed = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("rules[{i}]."), &r.limits))
            .chain((!self.limits.is_empty()).then_some(top));
        for (at, limits) in listed {
            if limits.is_empty() {
                return Err(ConfigError::new(format!("{at}limits"), "must not be empty"));
            }
            for (j, limit) in limits.iter().enumerate() {
                let at = format!("{at}limits[{j}]");
                limit.check().map_err(|e| e.within(&at))?;
                if self.mode == Mode::Global {
                    if limit.count.is_some() {
                        return Err(ConfigError::new(
                            format!("{at}.count"),
                            "not available with \"mode\": \"global\": a rate-limit service \
                             cannot give a token back when the response is not counted; \
                             use \"mode\": \"local\"",
                        ));
                    }
                    if limit.max_in_flight.is_some() {
                        return Err(ConfigError::new(
                            format!("{at}.max_in_flight"),
                            "not available with \"mode\": \"global\": requests in flight \
                             are counted in this proxy's shared data; use \"mode\": \"local\"",
                        ));
                    }
                }
                if names.contains(&limit.name.as_str()) {
                    return Err(ConfigError::new(
                        format!("{at}.name"),
                        format!(
                            "{:?} is used twice: names identify buckets and metrics",
                            limit.name
                        ),
                    ));
                }
                names.push(&limit.name);
            }
        }
        if let Some(global) = &self.global {
            global.check().map_err(|e| e.within("global"))?;
        }
        if self.mode == Mode::Global && self.global.is_none() {
            return Err(ConfigError::new(
                "global",
                "required with \"mode\": \"global\"",
            ));
        }
        self.local.check().map_err(|e| e.within("local"))?;
        if !valid_header_name(&self.claims.header_prefix) {
            return Err(ConfigError::new(
                "claims.header_prefix",
                "must be a lowercase header name prefix",
            ));
        }
        if self.rules.is_empty() && self.limits.is_empty() {
            return Err(ConfigError::new(
                "limits",
                "nothing is limited, so every request would pass: set `limits` \
                 (applied to every request no rule matches) or `rules`",
            ));
        }
        let path = &self.claims.property;
        if path.is_empty() || path.iter().any(String::is_empty) {
            return Err(ConfigError::new(
                "claims.property",
                "must be a non-empty path",
            ));
        }
        Ok(())
    }
}

impl Config {
    /// What the host cannot do, named by host and field (checked in `configure`).
    pub fn check_host(&self, host: HostKind) -> Result<(), ConfigError> {
        if self.mode == Mode::Global && !host.supports_grpc_calls() {
            return Err(ConfigError::new(
                "mode",
                format!(
                    "\"global\" needs gRPC calls, which {} does not offer; use \"local\"",
                    host.name()
                ),
            ));
        }
        Ok(())
    }
}

impl LimitConfig {
    fn check(&self) -> Result<(), ConfigError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(ConfigError::new(
                "name",
                "must be 1-64 characters of A-Z a-z 0-9 - _ (it becomes a metric name)",
            ));
        }
        match (self.requests, self.per_s, self.max_in_flight) {
            (None, None, None) => {
                return Err(ConfigError::new(
                    "",
                    "a limit needs a rate (`requests` and `per_s`), `max_in_flight`, or both",
                ))
            }
            (Some(_), None, _) => {
                return Err(ConfigError::new("per_s", "required with `requests`"))
            }
            (None, Some(_), _) => {
                return Err(ConfigError::new("requests", "required with `per_s`"))
            }
            _ => {}
        }
        if self.requests.is_none() {
            for (field, set) in [
                ("burst", self.burst.is_some()),
                ("count", self.count.is_some()),
            ] {
                if set {
                    return Err(ConfigError::new(
                        field,
                        "needs a rate: set `requests` and `per_s`",
                    ));
                }
            }
        }
        if let Some(max) = self.max_in_flight {
            if !(1..=MAX_IN_FLIGHT).contains(&max) {
                return Err(ConfigError::new(
                    "max_in_flight",
                    format!("must be between 1 and {MAX_IN_FLIGHT}"),
                ));
            }
        }
        if let Some(count) = &self.count {
            count.check().map_err(|e| e.within("count"))?;
        }
        for (field, value) in [("requests", self.requests), ("burst", self.burst)] {
            match value {
                Some(0) => return Err(ConfigError::new(field, "must be > 0")),
                Some(v) if v > MAX_REQUESTS => {
                    return Err(ConfigError::new(
                        field,
                        format!("must be <= {MAX_REQUESTS}"),
                    ))
                }
                _ => {}
            }
        }
        if self.per_s == Some(0) {
            return Err(ConfigError::new("per_s", "must be > 0"));
        }
        if self.per_s.is_some_and(|p| p > MAX_PER_S) {
            return Err(ConfigError::new(
                "per_s",
                format!("must be <= {MAX_PER_S} (a year)"),
            ));
        }
        let mut seen: Vec<&KeyPart> = Vec::new();
        for (k, part) in self.key.iter().enumerate() {
            let at = format!("key[{k}]");
            match part {
                KeyPart::Header(name) if !valid_header_name(name) || name.starts_with(':') => {
                    return Err(ConfigError::new(
                        format!("{at}.header"),
                        "must be a lowercase header name",
                    ));
                }
                KeyPart::Claim(name)
                    if name.is_empty()
                        || !name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
                {
                    return Err(ConfigError::new(
                        format!("{at}.claim"),
                        "must be a claim name or dotted path of A-Z a-z 0-9 . _ -",
                    ));
                }
                KeyPart::ClientIp(g) if g.v4_prefix > 32 => {
                    return Err(ConfigError::new(
                        format!("{at}.client_ip.v4_prefix"),
                        "must be <= 32",
                    ));
                }
                KeyPart::ClientIp(g) if g.v6_prefix > 128 => {
                    return Err(ConfigError::new(
                        format!("{at}.client_ip.v6_prefix"),
                        "must be <= 128",
                    ));
                }
                _ => {}
            }
            if seen.iter().any(|p| {
                std::mem::discriminant(*p) == std::mem::discriminant(part)
                    && p.label() == part.label()
            }) {
                return Err(ConfigError::new(at, "listed twice"));
            }
            seen.push(part);
        }
        Ok(())
    }
}

impl CountConfig {
    fn check(&self) -> Result<(), ConfigError> {
        if self.response_status.is_empty() {
            return Err(ConfigError::new(
                "response_status",
                "must not be empty: list the statuses that spend a token",
            ));
        }
        for (i, status) in self.response_status.iter().enumerate() {
            let at = format!("response_status[{i}]");
            if !(100..=599).contains(status) {
                return Err(ConfigError::new(at, "must be an HTTP status (100-599)"));
            }
            if self.response_status[..i].contains(status) {
                return Err(ConfigError::new(at, "listed twice"));
            }
        }
        Ok(())
    }
}

impl GlobalConfig {
    fn check(&self) -> Result<(), ConfigError> {
        if self.cluster.trim().is_empty() {
            return Err(ConfigError::new("cluster", "must not be empty"));
        }
        if self.domain.trim().is_empty() {
            return Err(ConfigError::new("domain", "must not be empty"));
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            return Err(ConfigError::new(
                "timeout_ms",
                "must be between 1 and 60000",
            ));
        }
        Ok(())
    }
}

impl LocalConfig {
    fn check(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_SLOTS).contains(&self.slots) {
            return Err(ConfigError::new(
                "slots",
                format!("must be between 1 and {MAX_SLOTS}"),
            ));
        }
        if !(1..=MAX_ENTRIES_PER_SLOT).contains(&self.entries_per_slot) {
            return Err(ConfigError::new(
                "entries_per_slot",
                format!("must be between 1 and {MAX_ENTRIES_PER_SLOT}"),
            ));
        }
        Ok(())
    }
}

/// RFC 9110 token characters, lowercase (hosts hand filters lowercase names).
fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}
