//! One correlation id across the chain, the upstream and the logs.
//!
//! `x-request-id` first (Envoy generates it at the edge and replaces a
//! client's unless `preserve_external_request_id` is set), else the trace id of
//! a W3C `traceparent`. A value that does not look like an id is ignored: the
//! id is echoed in bodies, headers and logs, so it must never carry a payload.

/// Header carrying the id, in requests and in responses.
pub const HEADER: &str = "x-request-id";
pub const TRACEPARENT: &str = "traceparent";

/// Picks the correlation id from the two headers' raw values.
pub fn correlation_id(x_request_id: Option<&[u8]>, traceparent: Option<&[u8]>) -> Option<String> {
    if let Some(id) = x_request_id.and_then(|v| std::str::from_utf8(v).ok()) {
        let id = id.trim();
        if is_safe_id(id) {
            return Some(id.to_string());
        }
    }
    traceparent
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(trace_id)
        .map(str::to_string)
}

/// Letters, digits and `-._:`, 1 to 128 characters: UUIDs, ULIDs, hex ids.
pub fn is_safe_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'))
}

/// The 32-hex trace id of `version-traceid-parentid-flags`; all-zero is invalid.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let lower_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = lower_hex(version, 2)
        && version != "ff"
        && lower_hex(trace, 32)
        && lower_hex(parent, 16)
        && lower_hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && (version != "00" || parts.next().is_none());
    ok.then_some(trace)
}
