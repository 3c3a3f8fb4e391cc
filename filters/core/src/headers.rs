//! Header-list operations with the hosts' semantics, shared by the in-memory
//! host and the proxy-wasm host's per-callback header cache: names compare
//! case-insensitively, `set` replaces every value, `remove` drops them all.

use crate::host::Headers;

pub fn find<'h>(headers: &'h Headers, name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

pub fn set(headers: &mut Headers, name: &str, value: &[u8]) {
    remove(headers, name);
    headers.push((name.to_ascii_lowercase(), value.to_vec()));
}

pub fn add(headers: &mut Headers, name: &str, value: &[u8]) {
    headers.push((name.to_ascii_lowercase(), value.to_vec()));
}

pub fn remove(headers: &mut Headers, name: &str) {
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
}

/// Whether a header that `strip` selects was sent more than once. On Kong
/// an overwrite reaches only the first copy; the others go upstream with
/// the client's values (seen on the real host), so a filter that must
/// strip such a header refuses the request there instead.
pub fn repeated(headers: &Headers, mut strip: impl FnMut(&str) -> bool) -> bool {
    let mut seen: Vec<&str> = Vec::new();
    for (name, _) in headers {
        if strip(name) {
            if seen.iter().any(|s| s.eq_ignore_ascii_case(name)) {
                return true;
            }
            seen.push(name);
        }
    }
    false
}
