//! Request paths as the most liberal upstream would read them.
//!
//! Envoy forwards `:path` as the client sent it unless the HTTP connection
//! manager is told otherwise (`normalize_path`, `merge_slashes` and
//! `path_with_escaped_slashes_action` are all off by default). A rule for
//! `/admin` must not be dodged by `/public/../admin`, `//admin`, `/%61dmin`,
//! `/public/..%2fadmin` or `/admin?x`, so matching always runs on the path
//! normalised here, whatever Envoy did before us: query and fragment cut,
//! percent-escapes decoded once (including `%2F` and `%5C`, which some
//! upstreams treat as separators), backslashes read as slashes, empty and `.`
//! segments dropped and `..` resolved without climbing above the root.

use serde::Deserialize;

/// Whether a raw `:path` (before its query) holds an escaped slash, `%2F`
/// or `%5C`: a proxy that keeps them (Envoy's default) routes on another
/// path than [`normalize`] and a decoding upstream see.
pub fn has_escaped_slash(raw: &[u8]) -> bool {
    let path = raw.split(|b| *b == b'?').next().unwrap_or_default();
    path.windows(3).any(|w| {
        w[0] == b'%' && (w[1..].eq_ignore_ascii_case(b"2f") || w[1..].eq_ignore_ascii_case(b"5c"))
    })
}

/// Normalises a raw `:path` for rule matching (never for forwarding).
pub fn normalize(raw: &str) -> String {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let decoded = percent_decode(&raw[..end]);
    let trailing = decoded.ends_with('/') || decoded.ends_with('\\');
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split(['/', '\\']) {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    out
}

/// Decodes each valid `%XX` once; invalid escapes stay literal. Bytes that do
/// not form UTF-8 are replaced, so a path is always a `String`.
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    String::from_utf8_lossy(&percent_decode_bytes(s.as_bytes())).into_owned()
}

/// Decodes each valid `%XX` once, leaving invalid escapes literal. Shared by
/// path matching and by anything else percent-encoded (e.g. `grpc-message`).
pub fn percent_decode_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let high = bytes.get(i + 1).copied().and_then(hex);
            let low = bytes.get(i + 2).copied().and_then(hex);
            if let (Some(h), Some(l)) = (high, low) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `/users/{id}/orders`: literal segments and `{name}` placeholders that match
/// exactly one non-empty segment. Parsed once at config load.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PathTemplate {
    source: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

impl TryFrom<String> for PathTemplate {
    type Error = String;

    fn try_from(source: String) -> Result<Self, String> {
        let Some(rest) = source.strip_prefix('/') else {
            return Err(format!("path template {source:?} must start with '/'"));
        };
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for part in rest.split('/') {
            if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let valid = !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !valid {
                    return Err(format!("invalid parameter name {name:?} in {source:?}"));
                }
                if names.contains(&name) {
                    return Err(format!("duplicate parameter {name:?} in {source:?}"));
                }
                names.push(name);
                segments.push(Segment::Param(name.to_string()));
            } else if part.contains(['{', '}']) {
                return Err(format!(
                    "a parameter must be a whole segment ({{name}}) in {source:?}"
                ));
            } else if part == "." || part == ".." {
                return Err(format!("dot segments are not allowed in {source:?}"));
            } else {
                segments.push(Segment::Literal(part.to_string()));
            }
        }
        Ok(PathTemplate { source, segments })
    }
}

impl PathTemplate {
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Matches a normalised path; returns the captured parameters in order.
    pub fn captures<'p>(&self, path: &'p str) -> Option<Vec<(&str, &'p str)>> {
        let rest = path.strip_prefix('/')?;
        let mut parts = rest.split('/');
        let mut captured = Vec::new();
        for segment in &self.segments {
            let part = parts.next()?;
            match segment {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(_) if part.is_empty() => return None,
                Segment::Param(name) => captured.push((name.as_str(), part)),
            }
        }
        if parts.next().is_some() {
            return None;
        }
        Some(captured)
    }

    pub fn matches(&self, path: &str) -> bool {
        self.captures(path).is_some()
    }
}
