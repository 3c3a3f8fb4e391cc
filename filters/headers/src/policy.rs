//! What the filter does for one request, resolved and compiled at load.
//!
//! Layers: the built-in preset, then the top-level overrides, then a rule's
//! overrides. Each rule gets its own fully resolved [`Policy`], so at request
//! time choosing a policy is the only work and nothing is merged or lowercased
//! per request.

use crate::config::{RequestSettings, ResponseSettings};
use palisade_core::header_pattern::{HeaderPattern, NameSet};
use palisade_core::method::Method;

/// The settings of one layer, fully resolved (before compiling).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub dry_run: bool,
    pub request_remove: Vec<HeaderPattern>,
    pub allow_only: Option<Vec<HeaderPattern>>,
    pub allowed_methods: Option<Vec<Method>>,
    pub max_headers: u32,
    pub max_header_bytes: u32,
    pub reject_control_characters: bool,
    pub response_remove: Vec<HeaderPattern>,
    /// Ordered (name lowercase, value).
    pub add_if_absent: Vec<(String, String)>,
    pub expose_request_id: bool,
}

/// Default number of request headers (Envoy's own limit is 100).
pub const DEFAULT_MAX_HEADERS: u32 = 64;
/// Default total of name + value bytes (Envoy's own limit is 60 KiB).
pub const DEFAULT_MAX_HEADER_BYTES: u32 = 16 * 1024;

/// Methods refused when no `allowed_methods` list is set: TRACE echoes the
/// request (cookies and credentials included) back to the client (cross-site
/// tracing) and TRACK is IIS's alias of it; no API needs either.
pub const REFUSED_BY_DEFAULT: [&str; 2] = ["TRACE", "TRACK"];

/// Request headers only the proxy or Palisade may set: a client sending them
/// is spoofing a decision or an identity.
pub const PRESET_REQUEST_REMOVE: [&str; 2] = ["x-palisade-*", "x-jwt-*"];
/// Response headers that advertise the stack to attackers.
pub const PRESET_RESPONSE_REMOVE: [&str; 5] = [
    "server",
    "x-powered-by",
    "x-aspnet-version",
    "x-aspnetmvc-version",
    "x-runtime",
];
/// Browser hardening for an API: nothing of it should ever render or be framed.
pub const PRESET_ADD_IF_ABSENT: [(&str, &str); 5] = [
    ("x-content-type-options", "nosniff"),
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
];

fn patterns(list: &[&str]) -> Vec<HeaderPattern> {
    list.iter()
        .filter_map(|p| HeaderPattern::parse(p).ok())
        .collect()
}

impl Settings {
    /// What `{}` means: the safe API preset.
    pub fn preset() -> Settings {
        Settings {
            dry_run: false,
            request_remove: patterns(&PRESET_REQUEST_REMOVE),
            allow_only: None,
            allowed_methods: None,
            max_headers: DEFAULT_MAX_HEADERS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            reject_control_characters: true,
            response_remove: patterns(&PRESET_RESPONSE_REMOVE),
            add_if_absent: PRESET_ADD_IF_ABSENT
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            expose_request_id: true,
        }
    }

    /// This layer with `dry_run`, `request` and `response` overrides applied.
    pub fn with(
        &self,
        dry_run: Option<bool>,
        request: &RequestSettings,
        response: &ResponseSettings,
    ) -> Settings {
        let mut s = self.clone();
        if let Some(d) = dry_run {
            s.dry_run = d;
        }
        if let Some(remove) = &request.remove {
            s.request_remove = remove.clone();
        }
        if let Some(allow) = &request.allow_only {
            s.allow_only = allow.clone();
        }
        if let Some(methods) = &request.allowed_methods {
            s.allowed_methods = methods.clone();
        }
        if let Some(n) = request.max_headers {
            s.max_headers = n;
        }
        if let Some(n) = request.max_header_bytes {
            s.max_header_bytes = n;
        }
        if let Some(b) = request.reject_control_characters {
            s.reject_control_characters = b;
        }
        if let Some(remove) = &response.remove {
            s.response_remove = remove.clone();
        }
        if let Some(add) = &response.add_if_absent {
            for (name, value) in add {
                let name = name.to_ascii_lowercase();
                let existing = s.add_if_absent.iter().position(|(n, _)| *n == name);
                match (value, existing) {
                    (Some(v), Some(i)) => {
                        if let Some(slot) = s.add_if_absent.get_mut(i) {
                            slot.1 = v.clone();
                        }
                    }
                    (Some(v), None) => s.add_if_absent.push((name, v.clone())),
                    (None, Some(i)) => {
                        s.add_if_absent.remove(i);
                    }
                    (None, None) => {}
                }
            }
        }
        if let Some(b) = response.expose_request_id {
            s.expose_request_id = b;
        }
        s
    }

    pub fn compile(&self) -> Policy {
        let mut methods = self.allowed_methods.clone();
        if let Some(m) = methods.as_mut() {
            let mut unique: Vec<Method> = Vec::with_capacity(m.len());
            for method in m.iter() {
                if !unique.contains(method) {
                    unique.push(*method);
                }
            }
            *m = unique;
        }
        let allowed_names: Vec<&str> = match &methods {
            Some(m) => m.iter().map(|m| m.as_str()).collect(),
            None => Method::ALL
                .iter()
                .map(|m| m.as_str())
                .filter(|m| !REFUSED_BY_DEFAULT.contains(m))
                .collect(),
        };
        let allow_header = allowed_names.join(", ");
        Policy {
            dry_run: self.dry_run,
            request: RequestPolicy {
                remove: NameSet::new(&self.request_remove),
                allow_only: self.allow_only.as_deref().map(NameSet::new),
                allowed_methods: methods,
                allow_header,
                max_headers: self.max_headers,
                max_header_bytes: self.max_header_bytes,
                reject_control_characters: self.reject_control_characters,
            },
            response: ResponsePolicy {
                remove: NameSet::new(&self.response_remove),
                add_if_absent: self.add_if_absent.clone(),
                expose_request_id: self.expose_request_id,
            },
        }
    }
}

/// A compiled policy: everything the per-request code reads.
#[derive(Debug, Clone)]
pub struct Policy {
    pub dry_run: bool,
    pub request: RequestPolicy,
    pub response: ResponsePolicy,
}

#[derive(Debug, Clone)]
pub struct RequestPolicy {
    pub remove: NameSet,
    pub allow_only: Option<NameSet>,
    /// `None`: every method but [`REFUSED_BY_DEFAULT`].
    pub allowed_methods: Option<Vec<Method>>,
    /// The `Allow` header of a 405, built once (for `None`: the known
    /// methods but TRACE).
    pub allow_header: String,
    pub max_headers: u32,
    pub max_header_bytes: u32,
    pub reject_control_characters: bool,
}

#[derive(Debug, Clone)]
pub struct ResponsePolicy {
    pub remove: NameSet,
    pub add_if_absent: Vec<(String, String)>,
    pub expose_request_id: bool,
}

impl RequestPolicy {
    /// Whether a request with this method passes.
    pub fn allows(&self, method: &str) -> bool {
        match &self.allowed_methods {
            Some(allowed) => allowed.iter().any(|m| m.as_str() == method),
            // Any case: some servers match method names case-insensitively.
            None => !REFUSED_BY_DEFAULT
                .iter()
                .any(|m| m.eq_ignore_ascii_case(method)),
        }
    }

    /// The methods a 405 lists (the `Allow` header, split).
    pub fn allow_list(&self) -> Vec<&str> {
        self.allow_header.split(", ").collect()
    }

    /// Whether a request header of this (lowercase) name is dropped.
    pub fn drops(&self, name: &str) -> bool {
        if is_protected_request_header(name) {
            return false;
        }
        if self.remove.matches(name) {
            return true;
        }
        match &self.allow_only {
            Some(allowed) => !is_always_allowed(name) && !allowed.matches(name),
            None => false,
        }
    }
}

/// Pseudo-headers and the headers the proxy routes and frames by: never removed.
pub fn is_protected_request_header(name: &str) -> bool {
    name.starts_with(':') || crate::config::PROTECTED_REQUEST_HEADERS.contains(&name)
}

/// Pseudo-headers and framing headers: never removed from a response.
pub fn is_protected_response_header(name: &str) -> bool {
    name.starts_with(':') || crate::config::FRAMING_HEADERS.contains(&name)
}

/// Kept by allow-list mode even when not listed: the correlation headers, so
/// logs and traces still join up (an explicit `remove` still drops them).
pub fn is_always_allowed(name: &str) -> bool {
    name == "x-request-id" || name == "traceparent"
}
