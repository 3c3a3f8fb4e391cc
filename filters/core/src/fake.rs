//! An in-memory [`Host`]: every filter decision is tested natively against it.

use crate::headers::{add, find, remove, set};
use crate::host::{Headers, Host, HostKind, Level};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// A local reply the filter asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl SentResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A request/response as the host would hold it, plus what the filter did.
#[derive(Debug, Default)]
pub struct FakeHost {
    pub kind: HostKind,
    pub request_headers: Headers,
    pub response_headers: Headers,
    pub response_trailers: Headers,
    /// The current response body buffer.
    pub response_body: Vec<u8>,
    pub properties: BTreeMap<String, Vec<u8>>,
    pub sent: Option<SentResponse>,
    pub logs: RefCell<Vec<(Level, String)>>,
    pub metric_names: Vec<String>,
    pub counters: BTreeMap<String, i64>,
}

impl FakeHost {
    pub fn new() -> Self {
        FakeHost::default()
    }

    pub fn kong() -> Self {
        FakeHost {
            kind: HostKind::Kong,
            ..FakeHost::default()
        }
    }

    /// A request with `:method` and `:path` set, as hosts present them.
    pub fn request(method: &str, path: &str) -> Self {
        let mut h = FakeHost::new();
        h.request_headers = vec![
            (":method".into(), method.as_bytes().to_vec()),
            (":path".into(), path.as_bytes().to_vec()),
            (":authority".into(), b"api.example.com".to_vec()),
        ];
        h
    }

    pub fn with_request_header(mut self, name: &str, value: &str) -> Self {
        self.request_headers
            .push((name.to_string(), value.as_bytes().to_vec()));
        self
    }

    pub fn with_response(mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> Self {
        self.response_headers = vec![(":status".into(), status.to_string().into_bytes())];
        for (n, v) in headers {
            self.response_headers
                .push((n.to_string(), v.as_bytes().to_vec()));
        }
        self.response_body = body.to_vec();
        self
    }

    pub fn counter(&self, name: &str) -> i64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    pub fn logged(&self, level: Level, needle: &str) -> bool {
        self.logs
            .borrow()
            .iter()
            .any(|(l, m)| *l == level && m.contains(needle))
    }

    pub fn req_header(&self, name: &str) -> Option<String> {
        find(&self.request_headers, name).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn resp_header(&self, name: &str) -> Option<String> {
        find(&self.response_headers, name).map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

impl Host for FakeHost {
    fn kind(&self) -> HostKind {
        self.kind
    }

    fn request_headers(&self) -> Headers {
        self.request_headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .collect()
    }

    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        find(&self.request_headers, name).map(<[u8]>::to_vec)
    }

    fn set_request_header(&mut self, name: &str, value: &[u8]) {
        set(&mut self.request_headers, name, value);
    }

    fn remove_request_header(&mut self, name: &str) {
        if self.kind.strips_request_headers_by_overwrite() {
            if find(&self.request_headers, name).is_some() {
                set(&mut self.request_headers, name, b"");
            }
        } else {
            remove(&mut self.request_headers, name);
        }
    }

    fn response_headers(&self) -> Headers {
        self.response_headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .collect()
    }

    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        find(&self.response_headers, name).map(<[u8]>::to_vec)
    }

    fn set_response_header(&mut self, name: &str, value: &[u8]) {
        set(&mut self.response_headers, name, value);
    }

    fn add_response_header(&mut self, name: &str, value: &[u8]) {
        add(&mut self.response_headers, name, value);
    }

    fn remove_response_header(&mut self, name: &str) {
        remove(&mut self.response_headers, name);
    }

    fn response_trailer(&self, name: &str) -> Option<Vec<u8>> {
        find(&self.response_trailers, name).map(<[u8]>::to_vec)
    }

    fn set_response_trailer(&mut self, name: &str, value: &[u8]) {
        set(&mut self.response_trailers, name, value);
    }

    fn remove_response_trailer(&mut self, name: &str) {
        remove(&mut self.response_trailers, name);
    }

    fn response_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        let end = start.saturating_add(len).min(self.response_body.len());
        self.response_body
            .get(start.min(end)..end)
            .map(<[u8]>::to_vec)
    }

    fn set_response_body(&mut self, start: usize, len: usize, data: &[u8]) {
        let start = start.min(self.response_body.len());
        let end = start.saturating_add(len).min(self.response_body.len());
        self.response_body.splice(start..end, data.iter().copied());
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.properties.get(&path.join(".")).cloned()
    }

    fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        let mut body = body.to_vec();
        if self.kind.appends_newline_to_local_replies() {
            body.push(b'\n');
        }
        self.sent = Some(SentResponse {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body,
        });
    }

    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push((level, message.to_string()));
    }

    fn define_counter(&mut self, name: &str) -> Option<u32> {
        let id = match self.metric_names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                self.metric_names.push(name.to_string());
                self.metric_names.len() - 1
            }
        };
        u32::try_from(id).ok()
    }

    fn increment_counter(&mut self, id: u32, by: i64) {
        if let Some(name) = self.metric_names.get(id as usize) {
            *self.counters.entry(name.clone()).or_insert(0) += by;
        }
    }
}
