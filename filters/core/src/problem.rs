//! `application/problem+json` (RFC 9457): the one shape of every denial.
//!
//! Bodies are built only from constants and values the filter computed, never
//! from request values, so nothing a client sends is reflected back.

use crate::host::Host;
use serde_json::{Map, Value};

pub const CONTENT_TYPE: &str = "application/problem+json";

/// A problem document under construction.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub status: u16,
    /// Short machine-readable kind, e.g. `too-many-headers`; `None` means `about:blank`.
    pub kind: Option<&'static str>,
    pub title: String,
    pub detail: Option<String>,
    pub request_id: Option<String>,
    extensions: Map<String, Value>,
}

impl Problem {
    /// A problem whose title is the status's reason phrase (`about:blank` style).
    pub fn new(status: u16) -> Self {
        Problem {
            status,
            kind: None,
            title: reason_phrase(status).to_string(),
            detail: None,
            request_id: None,
            extensions: Map::new(),
        }
    }

    /// A specific problem kind, documented on its control's page (docs/src/controls), with its own title.
    pub fn of_kind(status: u16, kind: &'static str, title: &str) -> Self {
        Problem {
            kind: Some(kind),
            title: title.to_string(),
            ..Problem::new(status)
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn request_id(mut self, id: Option<&str>) -> Self {
        self.request_id = id.map(str::to_string);
        self
    }

    /// Extra members (RFC 9457 §3.2), e.g. `errors` or `allowed_methods`.
    pub fn extension(mut self, key: &str, value: Value) -> Self {
        self.extensions.insert(key.to_string(), value);
        self
    }

    /// The `type` URI: a stable URN per kind, so clients can branch on it.
    pub fn type_uri(&self) -> String {
        match self.kind {
            Some(kind) => format!("urn:palisade:problem:{kind}"),
            None => "about:blank".to_string(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut doc = Map::new();
        doc.insert("type".into(), Value::String(self.type_uri()));
        doc.insert("title".into(), Value::String(self.title.clone()));
        doc.insert("status".into(), Value::from(self.status));
        if let Some(detail) = &self.detail {
            doc.insert("detail".into(), Value::String(detail.clone()));
        }
        if let Some(id) = &self.request_id {
            doc.insert("request_id".into(), Value::String(id.clone()));
        }
        for (k, v) in &self.extensions {
            doc.entry(k.clone()).or_insert_with(|| v.clone());
        }
        serde_json::to_vec(&Value::Object(doc)).unwrap_or_default()
    }

    /// Answers with this problem as a local reply: its headers, then `extra`.
    /// The caller must return [`crate::Flow::Pause`] afterwards.
    pub fn send(&self, host: &mut dyn Host, extra: &[(&str, &str)]) {
        let own = self.headers();
        let headers: Vec<(&str, &str)> = own
            .iter()
            .map(|(n, v)| (*n, v.as_str()))
            .chain(extra.iter().copied())
            .collect();
        host.send_response(self.status, &headers, &self.to_json());
    }

    /// Headers every problem response carries.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("content-type", CONTENT_TYPE.to_string()),
            ("cache-control", "no-store".to_string()),
        ];
        if let Some(id) = &self.request_id {
            h.push((crate::request_id::HEADER, id.clone()));
        }
        h
    }
}

/// Reason phrases for the statuses a filter may send or mask.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        511 => "Network Authentication Required",
        s if (400..500).contains(&s) => "Client Error",
        s if (500..600).contains(&s) => "Server Error",
        _ => "Error",
    }
}
