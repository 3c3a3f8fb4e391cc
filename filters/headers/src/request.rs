//! Request checks (method, header count and size, control characters) and
//! stripping (`remove`, `allow_only`).
//!
//! Everything works on the one header list fetched per request. Nothing a
//! client sent (names, values, the method) ever goes into a problem body or a
//! log line: only counts and the configured limits do.

use crate::policy::RequestPolicy;
use palisade_core::host::Headers;
use palisade_core::method::{Method, OVERRIDE_HEADERS, OVERRIDE_PARAM};
use palisade_core::path::percent_decode_bytes;
use palisade_core::problem::Problem;
use palisade_core::Denial;
use serde_json::json;

/// Denial reasons: `palisade.headers.denied.<reason>` and `shadow_denied.<reason>`.
pub const REASONS: [&str; 6] = [
    "method_not_allowed",
    "method_override",
    "too_many_headers",
    "headers_too_large",
    "control_character",
    "repeated_header",
];

/// A header that must be stripped was sent more than once, on a host that
/// strips by overwriting (Kong): only the first copy would be overwritten.
pub fn repeated_denial() -> Denial {
    Denial::new(
        Problem::of_kind(400, "repeated-header", "Repeated request header")
            .detail("a request header this proxy removes was sent more than once"),
        "repeated_header",
    )
}

/// The method override a request carries to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Override {
    /// None, or only empty values (which frameworks ignore, and which is
    /// what a header stripped on Kong is left as).
    Absent,
    /// One known method, however many places name it.
    Method(Method),
    /// A value that is not a known method, or places naming different
    /// methods (frameworks differ on which one wins): never allowed.
    Unusable,
}

impl Override {
    fn with(self, item: &[u8]) -> Override {
        let item = item.trim_ascii();
        if item.is_empty() || self == Override::Unusable {
            return self;
        }
        let named = std::str::from_utf8(item)
            .ok()
            .and_then(|s| Method::parse(&s.to_ascii_uppercase()));
        match (self, named) {
            (_, None) => Override::Unusable,
            (Override::Absent, Some(m)) => Override::Method(m),
            (Override::Method(seen), Some(m)) if seen == m => self,
            _ => Override::Unusable,
        }
    }

    /// Folds every comma-separated item of `value` in (Express reads the
    /// first item of a list, others the whole value: all must agree).
    fn with_value(self, value: &[u8]) -> Override {
        value.split(|b| *b == b',').fold(self, Override::with)
    }

    /// The method rules match on: the override if usable, else `method`.
    pub fn effective<'a>(&self, method: &'a str) -> &'a str {
        match self {
            Override::Method(m) => m.as_str(),
            _ => method,
        }
    }
}

/// The override that reaches the upstream: every `_method` query parameter
/// of `raw_path` (the filter cannot strip them), and with `keep_headers`
/// every value of every override header. Decoded as
/// `palisade_core::method::override_param` does.
pub fn override_of(headers: &Headers, raw_path: &[u8], keep_headers: bool) -> Override {
    let mut found = Override::Absent;
    if keep_headers {
        for (name, value) in headers {
            if OVERRIDE_HEADERS.contains(&name.as_str()) {
                found = found.with_value(value);
            }
        }
    }
    let raw_path = String::from_utf8_lossy(raw_path);
    let query = raw_path.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let query = query.split('#').next().unwrap_or_default();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode_bytes(name.as_bytes()) == OVERRIDE_PARAM.as_bytes() {
            found = found.with_value(&percent_decode_bytes(value.replace('+', " ").as_bytes()));
        }
    }
    found
}

/// A control character in a header value: a byte below 0x20 other than HTAB, or DEL.
pub fn is_control_in_value(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// A control character in a header name: any byte below 0x20 (HTAB included) or DEL.
fn is_control_in_name(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// The first check the request fails, in the order 431, 400, 405 (the
/// method, then its override): a request that is malformed or oversized is
/// refused as such before its method is looked at. Pseudo-headers are
/// neither counted nor measured.
pub fn check(
    policy: &RequestPolicy,
    method: &str,
    over: Override,
    headers: &Headers,
) -> Option<Denial> {
    let mut count: u64 = 0;
    let mut bytes: u64 = 0;
    let mut control = false;
    for (name, value) in headers {
        if name.starts_with(':') {
            continue;
        }
        count += 1;
        bytes = bytes.saturating_add((name.len() + value.len()) as u64);
        if policy.reject_control_characters && !control {
            control = name.bytes().any(is_control_in_name)
                || value.iter().copied().any(is_control_in_value);
        }
    }
    if count > u64::from(policy.max_headers) {
        let limit = policy.max_headers;
        return Some(Denial::new(
            Problem::of_kind(431, "too-many-headers", "Too many request headers")
                .detail(format!("at most {limit} request headers are allowed"))
                .extension("limit", json!(limit)),
            "too_many_headers",
        ));
    }
    if bytes > u64::from(policy.max_header_bytes) {
        let limit = policy.max_header_bytes;
        return Some(Denial::new(
            Problem::of_kind(431, "headers-too-large", "Request headers too large")
                .detail(format!(
                    "request header names and values may total at most {limit} bytes"
                ))
                .extension("limit", json!(limit)),
            "headers_too_large",
        ));
    }
    if control {
        return Some(Denial::new(
            Problem::of_kind(400, "control-character", "Invalid request header")
                .detail("a header name or value contains a control character"),
            "control_character",
        ));
    }
    if !policy.allows(method) {
        return Some(not_allowed(
            policy,
            format!("this resource accepts {}", policy.allow_header),
            "method_not_allowed",
        ));
    }
    let override_allowed = match over {
        Override::Absent => true,
        Override::Method(m) => policy.allows(m.as_str()),
        Override::Unusable => false,
    };
    if !override_allowed {
        return Some(not_allowed(
            policy,
            format!(
                "a method override (an x-http-method-override, x-http-method or \
                 x-method-override header, or a _method parameter) must name one \
                 method this resource accepts: {}",
                policy.allow_header
            ),
            "method_override",
        ));
    }
    None
}

/// A 405 with the `Allow` header; `detail` holds nothing the client sent.
fn not_allowed(policy: &RequestPolicy, detail: String, reason: &'static str) -> Denial {
    Denial::new(
        Problem::of_kind(405, "method-not-allowed", "Method not allowed")
            .detail(detail)
            .extension("allowed_methods", json!(policy.allow_list())),
        reason,
    )
    .header("allow", policy.allow_header.clone())
}

/// Names to remove (sorted, each once, borrowed from `headers`) and how
/// many header fields are stripped (a repeated header counts each time).
///
/// `overwritten` is stripped by being set afterwards (the filter's own
/// decision header): it is counted but not removed, since on Kong a removal
/// still reaches the upstream and the later set would add a second header.
pub fn to_strip<'h>(
    policy: &RequestPolicy,
    headers: &'h Headers,
    strip_overrides: bool,
    overwritten: &str,
) -> (Vec<&'h str>, usize) {
    let mut names: Vec<&str> = Vec::new();
    let mut fields = 0;
    for (name, _) in headers {
        let dropped =
            policy.drops(name) || (strip_overrides && OVERRIDE_HEADERS.contains(&name.as_str()));
        if dropped {
            fields += 1;
            if name != overwritten {
                names.push(name.as_str());
            }
        }
    }
    if names.len() > 1 {
        names.sort_unstable();
        names.dedup();
    }
    (names, fields)
}
