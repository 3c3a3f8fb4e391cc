//! Header names and `prefix-*` wildcards in filter configs (headers to
//! remove, to keep, to strip from masked responses), checked and lowercased
//! at load.
//!
//! Header names are case-insensitive and both hosts hand them to the filter
//! lowercased (the core's `Host` guarantees it), so every pattern is lowercased
//! once here and matching at request time is a plain byte comparison.

use serde::Deserialize;
use std::fmt;

/// An exact header name (`x-api-key`) or a trailing wildcard (`x-internal-*`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum HeaderPattern {
    Exact(String),
    /// The part before the `*`, lowercase, never empty.
    Prefix(String),
}

impl HeaderPattern {
    pub fn matches(&self, lowercase_name: &str) -> bool {
        match self {
            HeaderPattern::Exact(n) => n == lowercase_name,
            HeaderPattern::Prefix(p) => lowercase_name.starts_with(p.as_str()),
        }
    }
}

impl fmt::Display for HeaderPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderPattern::Exact(n) => f.write_str(n),
            HeaderPattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

impl TryFrom<String> for HeaderPattern {
    type Error = String;

    fn try_from(source: String) -> Result<Self, String> {
        HeaderPattern::parse(&source)
    }
}

impl HeaderPattern {
    pub fn parse(source: &str) -> Result<Self, String> {
        match source.find('*') {
            None => {
                check_name(source)?;
                Ok(HeaderPattern::Exact(source.to_ascii_lowercase()))
            }
            Some(i) if i + 1 != source.len() => Err(format!(
                "invalid header pattern {source:?}: only a trailing '*' is supported, as in \"x-internal-*\""
            )),
            Some(_) => {
                let prefix = &source[..source.len() - 1];
                if prefix.is_empty() {
                    return Err(
                        "a lone '*' matches every header: give a prefix (\"x-internal-*\"), \
                         or use allow_only to drop everything not listed"
                            .to_string(),
                    );
                }
                check_name(prefix).map_err(|_| {
                    format!(
                        "invalid header pattern {source:?}: the part before '*' must be a header name prefix"
                    )
                })?;
                Ok(HeaderPattern::Prefix(prefix.to_ascii_lowercase()))
            }
        }
    }
}

/// RFC 9110 `token`: what a header name may be made of.
pub fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A valid header name (any case); the error says why not.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a header name must not be empty".to_string());
    }
    if name.starts_with(':') {
        return Err(format!(
            "{name:?} is a pseudo-header: it is not a header the filter can add or remove"
        ));
    }
    if name.contains('*') || !name.bytes().all(is_token_char) {
        return Err(format!("invalid header name {name:?}"));
    }
    Ok(())
}

/// A compiled list of patterns: exact names and prefixes, deduplicated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameSet {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl NameSet {
    pub fn new(patterns: &[HeaderPattern]) -> NameSet {
        let mut set = NameSet::default();
        for p in patterns {
            let (list, value) = match p {
                HeaderPattern::Exact(n) => (&mut set.exact, n),
                HeaderPattern::Prefix(p) => (&mut set.prefixes, p),
            };
            if !list.contains(value) {
                list.push(value.clone());
            }
        }
        // A prefix covered by a shorter one is never needed.
        let prefixes = set.prefixes.clone();
        set.prefixes.retain(|p| {
            !prefixes
                .iter()
                .any(|q| q.len() < p.len() && p.starts_with(q.as_str()))
        });
        set.exact
            .retain(|n| !prefixes.iter().any(|q| n.starts_with(q.as_str())));
        set
    }

    /// `name` must already be lowercase (hosts deliver it so).
    pub fn matches(&self, name: &str) -> bool {
        self.exact.iter().any(|n| n == name)
            || self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }
}

/// A header name or a `prefix-*` wildcard (RFC 9110 token characters).
impl schemars::JsonSchema for HeaderPattern {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "HeaderPattern".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": "^[!#$%&'+.^_`|~0-9A-Za-z-]+[*]?$"})
    }
}
