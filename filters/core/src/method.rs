//! HTTP methods as config values: a typo like `GTE` is a config error, not a
//! rule that silently never matches.

use crate::headers::find;
use crate::host::Headers;
use serde::{Deserialize, Deserializer};
use std::fmt;

/// Headers by which Express, Symfony, Google-style APIs and others let a
/// `POST` stand for another method. An upstream that honours them performs
/// the overridden method, so a method rule judged on `:method` alone is
/// bypassed by them.
pub const OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The query parameter Laravel, Rails and Symfony read for the same purpose.
pub const OVERRIDE_PARAM: &str = "_method";

/// A method override the request carries: the first non-empty override
/// header, else the `_method` query parameter of `raw_path`, uppercased as
/// the frameworks do. Empty values are no override: frameworks ignore them,
/// and on Kong a header the headers filter stripped is left empty.
pub fn override_in(headers: &Headers, raw_path: &str) -> Option<String> {
    OVERRIDE_HEADERS
        .iter()
        .filter_map(|h| find(headers, h))
        .map(|v| String::from_utf8_lossy(v).trim().to_ascii_uppercase())
        .find(|v| !v.is_empty())
        .or_else(|| override_param(raw_path))
}

/// The `_method` query parameter of a raw `:path`, decoded and uppercased.
pub fn override_param(raw_path: &str) -> Option<String> {
    let query = raw_path.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = crate::path::percent_decode_bytes(name.as_bytes());
        if name != OVERRIDE_PARAM.as_bytes() {
            return None;
        }
        let value = crate::path::percent_decode_bytes(value.replace('+', " ").as_bytes());
        let value = String::from_utf8_lossy(&value).trim().to_ascii_uppercase();
        (!value.is_empty()).then_some(value)
    })
}

/// The method the upstream will act on: an override when the request
/// carries one (it reaches the upstream unless the headers filter strips
/// it, which it does by default), else `method` (the `:method`). Every
/// control matches its rules on this.
pub fn effective(method: &str, headers: &Headers, raw_path: &str) -> String {
    override_in(headers, raw_path).unwrap_or_else(|| method.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
}

impl Method {
    pub const ALL: [Method; 9] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Connect,
        Method::Options,
        Method::Trace,
        Method::Patch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
        }
    }

    /// Exact, case-sensitive: HTTP methods are case-sensitive tokens.
    pub fn parse(s: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Method::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown method {s:?}")))
    }
}

/// The method names a config may use; anything else is refused at load.
impl schemars::JsonSchema for Method {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Method".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = Method::ALL.iter().map(|m| m.as_str()).collect();
        schemars::json_schema!({"type": "string", "enum": names})
    }
}
