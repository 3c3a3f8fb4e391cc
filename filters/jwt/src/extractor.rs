//! Where tokens are found (`from_headers`, `from_params`, `from_cookies`)
//! and how they are removed before the request goes upstream.
//!
//! RFC 6750 §2: a client must use one method per request. A request carrying
//! tokens in two places (two `authorization` headers, a header and a query
//! parameter…) is ambiguous and refused, so that no two parts of the stack
//! can disagree on which token authenticated it.

use palisade_core::host::Headers;
use palisade_core::path::percent_decode_bytes;
use palisade_core::Host;

/// One place a token can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Header name (lowercase) and value prefix (`"Bearer "`, matched case-insensitively).
    Header {
        name: String,
        prefix: String,
    },
    Param(String),
    Cookie(String),
}

/// What a request carries in the places a rule looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extraction {
    None,
    /// Index into the plugin's source list, and the raw token.
    One {
        source: usize,
        token: Vec<u8>,
    },
    Ambiguous,
}

/// Looks for tokens in `wanted` (indexes into `sources`).
pub fn extract(headers: &Headers, sources: &[Source], wanted: &[usize]) -> Extraction {
    let mut found: Option<(usize, Vec<u8>)> = None;
    let mut count = 0usize;
    let mut note = |source: usize, token: Vec<u8>| {
        count += 1;
        if found.is_none() {
            found = Some((source, token));
        }
    };
    for &i in wanted {
        let Some(source) = sources.get(i) else {
            continue;
        };
        match source {
            Source::Header { name, prefix } => {
                for (n, v) in headers {
                    if n == name {
                        if let Some(token) = strip_prefix(v, prefix) {
                            note(i, token);
                        }
                    }
                }
            }
            Source::Param(name) => {
                let path = find(headers, ":path").unwrap_or_default();
                for value in query_values(path, name) {
                    note(i, value);
                }
            }
            Source::Cookie(name) => {
                for (n, v) in headers {
                    if n == "cookie" {
                        for value in cookie_values(v, name) {
                            note(i, value);
                        }
                    }
                }
            }
        }
    }
    match (count, found) {
        (0, _) | (_, None) => Extraction::None,
        (1, Some((source, token))) => Extraction::One { source, token },
        _ => Extraction::Ambiguous,
    }
}

fn find<'h>(headers: &'h Headers, name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// The token after a case-insensitive prefix, trimmed; `None` when the
/// header is for another scheme (`Basic …`).
fn strip_prefix(value: &[u8], prefix: &str) -> Option<Vec<u8>> {
    let p = prefix.as_bytes();
    if value.len() < p.len() || !value[..p.len()].eq_ignore_ascii_case(p) {
        // "Bearer" alone, without the space, is a missing token, not another scheme.
        let bare = p.trim_ascii_end();
        if !bare.is_empty() && value.trim_ascii().eq_ignore_ascii_case(bare) {
            return Some(Vec::new());
        }
        return None;
    }
    Some(value[p.len()..].trim_ascii().to_vec())
}

/// The query of a raw `:path` (before any fragment).
fn query(path: &[u8]) -> &[u8] {
    let Some(start) = path.iter().position(|b| *b == b'?') else {
        return &[];
    };
    let rest = &path[start + 1..];
    match rest.iter().position(|b| *b == b'#') {
        Some(end) => &rest[..end],
        None => rest,
    }
}

fn query_values(path: &[u8], name: &str) -> Vec<Vec<u8>> {
    query(path)
        .split(|b| *b == b'&')
        .filter_map(|pair| {
            let (k, v) = match pair.iter().position(|b| *b == b'=') {
                Some(eq) => (&pair[..eq], &pair[eq + 1..]),
                None => (pair, &[][..]),
            };
            (percent_decode_bytes(k) == name.as_bytes()).then(|| percent_decode_bytes(v))
        })
        .collect()
}

fn cookie_values(header: &[u8], name: &str) -> Vec<Vec<u8>> {
    header
        .split(|b| *b == b';')
        .filter_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            let (k, v) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
            let v = v
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(v);
            (k == name.as_bytes()).then(|| v.to_vec())
        })
        .collect()
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
/// Browsers never attach credentials to it, so checking it would only break CORS.
pub fn is_cors_preflight(headers: &Headers) -> bool {
    find(headers, ":method") == Some(b"OPTIONS")
        && find(headers, "origin").is_some()
        && find(headers, "access-control-request-method").is_some()
}

/// Removes the token from the request before it goes upstream.
pub fn strip(host: &mut dyn Host, headers: &Headers, source: &Source) {
    match source {
        Source::Header { name, prefix } => {
            let others: Vec<Vec<u8>> = headers
                .iter()
                .filter(|(n, v)| n == name && strip_prefix(v, prefix).is_none())
                .map(|(_, v)| v.clone())
                .collect();
            host.remove_request_header(name);
            // Values for other schemes under the same name are kept.
            for v in others {
                host.set_request_header(name, &v);
            }
        }
        Source::Param(name) => {
            let path = find(headers, ":path").unwrap_or_default();
            if let Some(new_path) = without_param(path, name) {
                host.set_request_header(":path", &new_path);
            }
        }
        Source::Cookie(name) => {
            let mut kept: Vec<Vec<u8>> = Vec::new();
            for (n, v) in headers {
                if n == "cookie" {
                    kept.extend(
                        v.split(|b| *b == b';')
                            .map(<[u8]>::trim_ascii)
                            .filter(|pair| {
                                !pair.is_empty()
                                    && pair.split(|b| *b == b'=').next().map(<[u8]>::trim_ascii)
                                        != Some(name.as_bytes())
                            })
                            .map(<[u8]>::to_vec),
                    );
                }
            }
            if kept.is_empty() {
                host.remove_request_header("cookie");
            } else {
                host.set_request_header("cookie", &kept.join(&b"; "[..]));
            }
        }
    }
}

/// `:path` without parameter `name`; `None` if it has none.
fn without_param(path: &[u8], name: &str) -> Option<Vec<u8>> {
    let q = path.iter().position(|b| *b == b'?')?;
    let (base, rest) = (&path[..q], &path[q + 1..]);
    let (query, fragment) = match rest.iter().position(|b| *b == b'#') {
        Some(f) => (&rest[..f], &rest[f..]),
        None => (rest, &[][..]),
    };
    let kept: Vec<&[u8]> = query
        .split(|b| *b == b'&')
        .filter(|pair| {
            let key = pair.split(|b| *b == b'=').next().unwrap_or_default();
            percent_decode_bytes(key) != name.as_bytes()
        })
        .collect();
    let mut out = base.to_vec();
    if !kept.iter().all(|p| p.is_empty()) {
        out.push(b'?');
        out.extend_from_slice(&kept.join(&b'&'));
    }
    out.extend_from_slice(fragment);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn bearer() -> Source {
        Source::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        }
    }

    #[test]
    fn finds_one_token_or_calls_two_ambiguous() {
        let sources = vec![
            bearer(),
            Source::Param("access_token".into()),
            Source::Cookie("session".into()),
        ];
        let all = [0, 1, 2];
        let one = h(&[(":path", "/a"), ("authorization", "bearer abc")]);
        assert_eq!(
            extract(&one, &sources, &all),
            Extraction::One {
                source: 0,
                token: b"abc".to_vec()
            }
        );
        let basic = h(&[(":path", "/a"), ("authorization", "Basic abc")]);
        assert_eq!(extract(&basic, &sources, &all), Extraction::None);
        let two = h(&[
            (":path", "/a?access_token=x"),
            ("authorization", "Bearer abc"),
        ]);
        assert_eq!(extract(&two, &sources, &all), Extraction::Ambiguous);
        let twice = h(&[
            (":path", "/a"),
            ("authorization", "Bearer a"),
            ("authorization", "Bearer a"),
        ]);
        assert_eq!(extract(&twice, &sources, &all), Extraction::Ambiguous);
        let cookie = h(&[(":path", "/a"), ("cookie", "a=1; session=\"tok\"; b=2")]);
        assert_eq!(
            extract(&cookie, &sources, &all),
            Extraction::One {
                source: 2,
                token: b"tok".to_vec()
            }
        );
        let param = h(&[(":path", "/a?x=1&access%5Ftoken=t%2Dk#frag")]);
        assert_eq!(
            extract(&param, &sources, &all),
            Extraction::One {
                source: 1,
                token: b"t-k".to_vec()
            }
        );
        // Only the places the rule's providers use count.
        assert_eq!(
            extract(&two, &sources, &[0]),
            Extraction::One {
                source: 0,
                token: b"abc".to_vec()
            }
        );
    }

    #[test]
    fn removes_params_keeping_the_rest() {
        assert_eq!(
            without_param(b"/a?x=1&access_token=t&y=2", "access_token").unwrap(),
            b"/a?x=1&y=2"
        );
        assert_eq!(
            without_param(b"/a?access_token=t", "access_token").unwrap(),
            b"/a"
        );
        assert_eq!(without_param(b"/a", "access_token"), None);
    }

    #[test]
    fn preflight_needs_all_three() {
        assert!(is_cors_preflight(&h(&[
            (":method", "OPTIONS"),
            ("origin", "https://a"),
            ("access-control-request-method", "GET")
        ])));
        assert!(!is_cors_preflight(&h(&[
            (":method", "OPTIONS"),
            ("origin", "https://a")
        ])));
    }
}
