//! Request checks (method, header count and size, control characters) and
//! stripping (`remove`, `allow_only`).
//!
//! Everything works on the one header list fetched per request. Nothing a
//! client sent (names, values, the method) ever goes into a problem body or a
//! log line: only counts and the configured limits do.

use crate::policy::RequestPolicy;
use palisade_core::host::Headers;
use palisade_core::problem::Problem;
use palisade_core::Denial;
use serde_json::json;

/// Denial reasons: `palisade.headers.denied.<reason>` and `shadow_denied.<reason>`.
pub const REASONS: [&str; 4] = [
    "method_not_allowed",
    "too_many_headers",
    "headers_too_large",
    "control_character",
];

/// A control character in a header value: a byte below 0x20 other than HTAB, or DEL.
pub fn is_control_in_value(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// A control character in a header name: any byte below 0x20 (HTAB included) or DEL.
fn is_control_in_name(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// The first check the request fails, in the order 431, 400, 405: a request
/// that is malformed or oversized is refused as such before its method is
/// looked at. Pseudo-headers are neither counted nor measured.
pub fn check(policy: &RequestPolicy, method: &str, headers: &Headers) -> Option<Denial> {
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
    if let Some(allowed) = &policy.allowed_methods {
        if !allowed.iter().any(|m| m.as_str() == method) {
            let names: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
            return Some(
                Denial::new(
                    Problem::of_kind(405, "method-not-allowed", "Method not allowed")
                        .detail(format!("this resource accepts {}", policy.allow_header))
                        .extension("allowed_methods", json!(names)),
                    "method_not_allowed",
                )
                .header("allow", policy.allow_header.clone()),
            );
        }
    }
    None
}

/// Names to strip (sorted, each once, borrowed from `headers`) and how many
/// header fields they account for (a repeated header counts each time).
pub fn to_strip<'h>(policy: &RequestPolicy, headers: &'h Headers) -> (Vec<&'h str>, usize) {
    let mut names: Vec<&str> = Vec::new();
    let mut fields = 0;
    for (name, _) in headers {
        if policy.drops(name) {
            fields += 1;
            names.push(name.as_str());
        }
    }
    if names.len() > 1 {
        names.sort_unstable();
        names.dedup();
    }
    (names, fields)
}
