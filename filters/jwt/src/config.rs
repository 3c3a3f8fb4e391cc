//! The filter's JSON config, in the words of Envoy's `jwt_authn`
//! (`providers`, `rules`, `requires`, `from_headers`, `claim_to_headers`…),
//! so operators feel at home.
//!
//! Everything that can be checked without traffic is checked here, with the
//! field's path in the message: unknown fields, unknown providers in
//! `requires`, key sets without a usable key, HS* without a symmetric key.

use crate::jwks::{Alg, KeySet};
use palisade_core::client_ip::ClientIpConfig;
use palisade_core::config::{ConfigError, Validate};
use palisade_core::header_pattern::check_name;
use palisade_core::route::{validate_rules, Match, Rule};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identity providers by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// First match wins; a rule without `requires` lets requests through unchecked.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// The requirement of every request no rule matches: a jwt control on
    /// a route then protects the whole route, and `rules` only refine it.
    pub requires: Option<RequirementConfig>,
    /// Requests matching no rule, when there is no `requires`: `deny` (403,
    /// the default) or `allow`.
    pub unmatched: Option<Unmatched>,
    /// CORS preflights (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`) pass unchecked.
    #[serde(default = "yes")]
    pub bypass_cors_preflight: bool,
    /// Decide, log and count, but let every request through.
    #[serde(default)]
    pub dry_run: bool,
    /// The audit trail: `denials` (default) records every decision and logs
    /// a line per denial; `all` also logs allowed requests; `off` neither.
    #[serde(default)]
    pub audit: palisade_core::audit::AuditMode,
    /// `realm` of the `WWW-Authenticate` challenges.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Verified tokens kept per worker, so a repeated token costs a lookup.
    #[serde(default = "default_cache_entries")]
    pub token_cache_entries: usize,
    /// Who checks signatures: `auto` (the host's `verify_signature` on
    /// Envoy, pure Rust elsewhere), `host` or `pure`.
    #[serde(default)]
    pub signature_backend: Backend,
    /// How `client_ip` requirements find the client (the same option and
    /// logic as `ratelimit`'s).
    #[serde(default)]
    pub client_ip: ClientIpConfig,
    /// Where `peer` requirements read the workload identity: `ignore` (the
    /// default) reads the connection's verified client certificate and never
    /// trusts `x-forwarded-client-cert`; `trust` reads the header's last
    /// element, written by the trusted proxy in front.
    #[serde(default)]
    pub forwarded_client_cert: ForwardedClientCert,
}

/// Whether the `x-forwarded-client-cert` header (Envoy's XFCC) is trusted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ForwardedClientCert {
    /// The peer is the connection's client certificate; a client's XFCC is
    /// removed unless the connection has a client certificate.
    #[default]
    Ignore,
    /// The previous hop is a trusted proxy that sets XFCC (Istio's sidecar,
    /// an Envoy with `forward_client_cert_details`): its last element is
    /// the peer, and the header is forwarded untouched.
    Trust,
}

fn yes() -> bool {
    true
}

fn default_realm() -> String {
    "api".to_string()
}

fn default_cache_entries() -> usize {
    1024
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    #[default]
    Deny,
    Allow,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    #[default]
    Auto,
    Host,
    Pure,
}

/// What to do while a provider has no good key set at all yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnJwksUnavailable {
    /// 401, like a token that cannot be verified.
    #[default]
    Deny,
    /// 503 with `Retry-After`: the client may retry.
    Unavailable,
    /// Let the request through unchecked (counted).
    Allow,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Required value of `iss`; not checked when absent.
    pub issuer: Option<String>,
    /// `aud` (string or array) must contain one of these; not checked when empty.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Allow-list of algorithms; default: every asymmetric one the keys support.
    /// HS* must be listed explicitly and needs a symmetric (`oct`) key.
    pub algorithms: Option<Vec<Alg>>,
    /// An inline JWKS (`{"keys": [...]}`).
    #[serde(default)]
    #[schemars(with = "Option<Value>")]
    pub local_jwks: Option<Value>,
    pub remote_jwks: Option<RemoteJwks>,
    /// Default (when no `from_*` is given): `authorization: Bearer <token>`
    /// and the `access_token` query parameter, as Envoy's `jwt_authn`.
    pub from_headers: Option<Vec<HeaderSource>>,
    pub from_params: Option<Vec<String>>,
    pub from_cookies: Option<Vec<String>>,
    /// Keep the token in the request sent upstream.
    #[serde(default)]
    pub forward: bool,
    #[serde(default)]
    pub claim_to_headers: Vec<ClaimToHeader>,
    #[serde(default = "default_skew")]
    pub clock_skew_s: u64,
    #[serde(default = "default_max_token_bytes")]
    #[schemars(range(min = 16))]
    pub max_token_bytes: usize,
    /// Longest accepted `exp - iat`; `iat` becomes required.
    pub max_lifetime_s: Option<u64>,
    #[serde(default)]
    pub on_jwks_unavailable: OnJwksUnavailable,
}

fn default_skew() -> u64 {
    60
}

fn default_max_token_bytes() -> usize {
    8192
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteJwks {
    /// The Envoy cluster of the identity provider (Kong: `authority` is used).
    pub cluster: String,
    pub path: String,
    pub authority: String,
    #[serde(default = "default_cache_duration")]
    #[schemars(range(min = 1))]
    pub cache_duration_s: u64,
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1))]
    pub timeout_ms: u64,
    /// An unknown `kid` refetches the set at most this often.
    #[serde(default = "default_min_refetch")]
    pub min_refetch_interval_s: u64,
}

fn default_cache_duration() -> u64 {
    600
}

fn default_timeout() -> u64 {
    1500
}

fn default_min_refetch() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderSource {
    pub name: String,
    /// E.g. `"Bearer "` (compared case-insensitively, as auth schemes are).
    #[serde(default)]
    pub value_prefix: String,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    /// Claim name or dotted path (`tenant.id`).
    pub claim: String,
    pub header: String,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(rename = "match", default)]
    pub matcher: Match,
    pub requires: Option<RequirementConfig>,
    pub dry_run: Option<bool>,
}

impl Rule for RuleConfig {
    fn matcher(&self) -> &Match {
        &self.matcher
    }
}

/// One node of a requirement tree: exactly one of `provider`, `any`,
/// `all`, `peer`, `client_ip`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequirementConfig {
    pub provider: Option<String>,
    pub any: Option<Vec<RequirementConfig>>,
    pub all: Option<Vec<RequirementConfig>>,
    /// The calling workload's SPIFFE identity must be one of these.
    pub peer: Option<PeerConfig>,
    /// The client's address must be in one of these networks.
    pub client_ip: Option<ClientIpRequirement>,
    /// Scopes the token must carry (`scope`, space-separated, or `scp`, array).
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub claims: Vec<ClaimCheck>,
    /// Absence of a token satisfies this node; a token present must be valid.
    #[serde(default)]
    pub allow_missing: bool,
}

/// `{"spiffe_ids": [...], "trust_domains": [...]}`: met when the peer's
/// id is listed or belongs to a listed trust domain.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Exact SPIFFE ids (`spiffe://cluster.local/ns/shop/sa/frontend`).
    #[serde(default)]
    pub spiffe_ids: Vec<String>,
    /// Trust domain names (`cluster.local`): any workload of them.
    #[serde(default)]
    pub trust_domains: Vec<String>,
}

/// `{"cidrs": ["10.0.0.0/8", "2001:db8::/32"]}`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientIpRequirement {
    pub cidrs: Vec<String>,
}

impl PeerConfig {
    /// The lists, parsed by the SPIFFE spec's rules.
    pub fn parse(&self) -> Result<(Vec<spiffe::SpiffeId>, Vec<spiffe::TrustDomain>), ConfigError> {
        if self.spiffe_ids.is_empty() && self.trust_domains.is_empty() {
            return Err(ConfigError::new(
                "",
                "needs spiffe_ids or trust_domains (or both)",
            ));
        }
        let mut ids = Vec::new();
        for (i, id) in self.spiffe_ids.iter().enumerate() {
            let parsed = spiffe::SpiffeId::new(id).map_err(|e| {
                ConfigError::new(
                    format!("spiffe_ids[{i}]"),
                    format!("not a SPIFFE id (spiffe://<trust domain>/<path>): {e}"),
                )
            })?;
            if parsed.path().is_empty() {
                return Err(ConfigError::new(
                    format!("spiffe_ids[{i}]"),
                    "names a whole trust domain: list it in trust_domains",
                ));
            }
            ids.push(parsed);
        }
        let mut domains = Vec::new();
        for (i, name) in self.trust_domains.iter().enumerate() {
            let parsed = (!name.contains(':'))
                .then(|| spiffe::TrustDomain::new(name).ok())
                .flatten()
                .ok_or_else(|| {
                    ConfigError::new(
                        format!("trust_domains[{i}]"),
                        "not a trust domain name (lowercase letters, digits, '.', '-', '_', \
                         without spiffe:// or a path)",
                    )
                })?;
            domains.push(parsed);
        }
        Ok((ids, domains))
    }
}

impl ClientIpRequirement {
    /// The networks; a host address with bits set past the prefix is refused
    /// (`10.1.2.3/8` is a typo more often than a wish for `10.0.0.0/8`).
    pub fn parse(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        if self.cidrs.is_empty() {
            return Err(ConfigError::new("cidrs", "must not be empty"));
        }
        let mut nets = Vec::new();
        for (i, text) in self.cidrs.iter().enumerate() {
            let at = format!("cidrs[{i}]");
            let net: ipnet::IpNet = text
                .trim()
                .parse()
                .map_err(|_| ConfigError::new(&at, "not a CIDR (10.0.0.0/8, 2001:db8::/32)"))?;
            if net.trunc() != net {
                return Err(ConfigError::new(
                    at,
                    format!("has host bits set: did you mean {}?", net.trunc()),
                ));
            }
            nets.push(net);
        }
        Ok(nets)
    }
}

/// `{"claim": "email_verified", "equals": true}` or `{"claim": "roles", "contains": "ops"}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimCheck {
    pub claim: String,
    pub equals: Option<Value>,
    pub contains: Option<Value>,
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        check_realm(&self.realm).map_err(|e| e.within("realm"))?;
        if self.token_cache_entries > 1_000_000 {
            return Err(ConfigError::new(
                "token_cache_entries",
                "must be at most 1000000",
            ));
        }
        for (name, provider) in &self.providers {
            let path = format!("providers.{name}");
            check_provider_name(name).map_err(|e| e.within(&path))?;
            provider.validate().map_err(|e| e.within(&path))?;
        }
        validate_rules(&self.rules)?;
        if let Some(req) = &self.requires {
            if self.unmatched.is_some() {
                return Err(ConfigError::new(
                    "unmatched",
                    "set either `requires` (what every request no rule matches must carry) \
                     or `unmatched`, not both",
                ));
            }
            req.validate(&self.providers)
                .map_err(|e| e.within("requires"))?;
        }
        if self.requires.is_none() {
            let checks = self.rules.iter().any(|r| r.requires.is_some());
            match (checks, self.unmatched.unwrap_or_default()) {
                (false, Unmatched::Deny) => {
                    return Err(ConfigError::new(
                        "requires",
                        "nothing is required, so every request would be refused \
                         (403 no-matching-rule): set `requires` (for example \
                         {\"provider\": \"<name>\"}) or rules with `requires`",
                    ))
                }
                (false, Unmatched::Allow) => {
                    return Err(ConfigError::new(
                        "requires",
                        "nothing is required, so every request would pass unchecked: \
                         set `requires` or rules with `requires`",
                    ))
                }
                _ => {}
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if let Some(req) = &rule.requires {
                req.validate(&self.providers)
                    .map_err(|e| e.within(&format!("rules[{i}].requires")))?;
            }
        }
        Ok(())
    }
}

fn check_realm(realm: &str) -> Result<(), ConfigError> {
    if realm.is_empty()
        || realm.len() > 128
        || !realm
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        return Err(ConfigError::new(
            "",
            "must be 1-128 printable ASCII characters without quotes or backslashes",
        ));
    }
    Ok(())
}

/// Provider names appear in metrics, shared-data keys and headers.
fn check_provider_name(name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ConfigError::new(
            "",
            "provider names are 1-64 of A-Z a-z 0-9 _ -",
        ));
    }
    Ok(())
}

impl ProviderConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.local_jwks.is_none() && self.remote_jwks.is_none() {
            return Err(ConfigError::new("", "needs local_jwks or remote_jwks"));
        }
        if let Some(algs) = &self.algorithms {
            if algs.is_empty() {
                return Err(ConfigError::new("algorithms", "must not be empty"));
            }
        }
        if let Some(jwks) = &self.local_jwks {
            let set = KeySet::from_value(jwks, &self.allowed_algorithms())
                .map_err(|e| ConfigError::new("local_jwks", e))?;
            if self.remote_jwks.is_none() {
                self.check_symmetric(&set)?;
            }
        }
        if let Some(remote) = &self.remote_jwks {
            remote.validate().map_err(|e| e.within("remote_jwks"))?;
            if self.allowed_algorithms().iter().any(|a| a.is_symmetric()) {
                return Err(ConfigError::new(
                    "algorithms",
                    "HS* keys are secrets: configure them in local_jwks only, never fetched",
                ));
            }
        }
        if self.max_token_bytes < 16 {
            return Err(ConfigError::new("max_token_bytes", "must be at least 16"));
        }
        if self.max_lifetime_s == Some(0) {
            return Err(ConfigError::new("max_lifetime_s", "must be > 0"));
        }
        for (i, h) in self.from_headers.iter().flatten().enumerate() {
            check_name(&h.name)
                .map_err(|e| ConfigError::new(format!("from_headers[{i}].name"), e))?;
            if h.name.starts_with(':') {
                return Err(ConfigError::new(
                    format!("from_headers[{i}].name"),
                    "pseudo-headers cannot carry tokens",
                ));
            }
        }
        for (field, list) in [
            ("from_params", &self.from_params),
            ("from_cookies", &self.from_cookies),
        ] {
            for (i, name) in list.iter().flatten().enumerate() {
                if name.is_empty() || name.bytes().any(|b| b <= b' ' || b"=;&".contains(&b)) {
                    return Err(ConfigError::new(
                        format!("{field}[{i}]"),
                        "must be a non-empty name without spaces, '=', ';' or '&'",
                    ));
                }
            }
        }
        if self.sources_are_empty() {
            return Err(ConfigError::new(
                "",
                "from_headers, from_params and from_cookies are all empty: no token could ever be found",
            ));
        }
        for (i, c) in self.claim_to_headers.iter().enumerate() {
            let path = format!("claim_to_headers[{i}]");
            if c.claim.is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.claim"),
                    "must not be empty",
                ));
            }
            check_name(&c.header).map_err(|e| ConfigError::new(format!("{path}.header"), e))?;
            if c.header.starts_with(':') || c.header.eq_ignore_ascii_case("host") {
                return Err(ConfigError::new(
                    format!("{path}.header"),
                    "cannot be a pseudo-header or host",
                ));
            }
        }
        Ok(())
    }

    fn sources_are_empty(&self) -> bool {
        let given = [
            self.from_headers.as_ref().map(Vec::len),
            self.from_params.as_ref().map(Vec::len),
            self.from_cookies.as_ref().map(Vec::len),
        ];
        given.iter().any(Option::is_some) && given.iter().all(|n| n.unwrap_or(0) == 0)
    }

    /// HS* needs an `oct` key; an `oct` key without HS* allowed is useless.
    fn check_symmetric(&self, set: &KeySet) -> Result<(), ConfigError> {
        let wants_hs = self.allowed_algorithms().iter().any(|a| a.is_symmetric());
        if wants_hs && !set.has_symmetric() {
            return Err(ConfigError::new(
                "algorithms",
                "HS* is allowed but local_jwks has no symmetric (oct) key",
            ));
        }
        Ok(())
    }

    /// The allow-list, defaulted.
    pub fn allowed_algorithms(&self) -> Vec<Alg> {
        match &self.algorithms {
            Some(list) => list.clone(),
            None => Alg::ALL
                .iter()
                .copied()
                .filter(|a| !a.is_symmetric())
                .collect(),
        }
    }
}

impl RemoteJwks {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.cluster.is_empty() {
            return Err(ConfigError::new("cluster", "must not be empty"));
        }
        if !self.path.starts_with('/') || self.path.bytes().any(|b| b <= b' ') {
            return Err(ConfigError::new(
                "path",
                "must start with '/' and have no spaces",
            ));
        }
        if self.authority.is_empty() || self.authority.bytes().any(|b| b <= b' ' || b == b'/') {
            return Err(ConfigError::new("authority", "must be a host[:port]"));
        }
        if self.cache_duration_s == 0 {
            return Err(ConfigError::new("cache_duration_s", "must be > 0"));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 60_000 {
            return Err(ConfigError::new("timeout_ms", "must be 1..=60000"));
        }
        Ok(())
    }
}

impl RequirementConfig {
    fn validate(&self, providers: &BTreeMap<String, ProviderConfig>) -> Result<(), ConfigError> {
        let kinds = [
            self.provider.is_some(),
            self.any.is_some(),
            self.all.is_some(),
            self.peer.is_some(),
            self.client_ip.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(ConfigError::new(
                "",
                "needs exactly one of provider, any, all, peer, client_ip",
            ));
        }
        if let Some(peer) = &self.peer {
            peer.parse().map_err(|e| e.within("peer"))?;
        }
        if let Some(ip) = &self.client_ip {
            ip.parse().map_err(|e| e.within("client_ip"))?;
        }
        if (self.peer.is_some() || self.client_ip.is_some()) && self.allow_missing {
            return Err(ConfigError::new(
                "allow_missing",
                "is about tokens: it belongs on a provider, any or all node",
            ));
        }
        if let Some(name) = &self.provider {
            if !providers.contains_key(name) {
                return Err(ConfigError::new(
                    "provider",
                    format!("unknown provider {name:?}"),
                ));
            }
        } else if !self.scopes.is_empty() || !self.claims.is_empty() {
            return Err(ConfigError::new(
                "",
                "scopes and claims belong on a provider node",
            ));
        }
        for (field, list) in [("any", &self.any), ("all", &self.all)] {
            if let Some(list) = list {
                if list.is_empty() {
                    return Err(ConfigError::new(field, "must not be empty"));
                }
                for (i, child) in list.iter().enumerate() {
                    child
                        .validate(providers)
                        .map_err(|e| e.within(&format!("{field}[{i}]")))?;
                }
            }
        }
        for (i, scope) in self.scopes.iter().enumerate() {
            if scope.is_empty()
                || !scope
                    .bytes()
                    .all(|b| b > b' ' && b < 0x7f && b != b'"' && b != b'\\')
            {
                return Err(ConfigError::new(
                    format!("scopes[{i}]"),
                    "a scope is printable ASCII without spaces, quotes or backslashes (RFC 6749)",
                ));
            }
        }
        for (i, check) in self.claims.iter().enumerate() {
            let path = format!("claims[{i}]");
            if check.claim.is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.claim"),
                    "must not be empty",
                ));
            }
            if check.equals.is_some() == check.contains.is_some() {
                return Err(ConfigError::new(
                    path,
                    "needs exactly one of equals, contains",
                ));
            }
        }
        Ok(())
    }
}
