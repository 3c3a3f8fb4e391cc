//! Shared helpers: a configured plugin and requests sent through it on a FakeHost.
#![allow(dead_code)]

use palisade_core::fake::{FakeHost, SentResponse};
use palisade_core::{Flow, HttpFilter, Plugin};
use palisade_schema::SchemaPlugin;
use serde_json::Value;
use std::rc::Rc;

pub fn plugin(config: &Value) -> Rc<SchemaPlugin> {
    let mut host = FakeHost::new();
    Rc::new(
        SchemaPlugin::configure(config.to_string().as_bytes(), &mut host)
            .unwrap_or_else(|e| panic!("config refused: {e}")),
    )
}

pub fn config_error(config: &Value) -> String {
    let mut host = FakeHost::new();
    match SchemaPlugin::configure(config.to_string().as_bytes(), &mut host) {
        Ok(_) => panic!("config accepted: {config}"),
        Err(e) => e.to_string(),
    }
}

/// The counters every plugin defines, in definition order, so a request's
/// host counts under the ids the configure host handed out.
pub fn metric_names() -> Vec<String> {
    let mut host = FakeHost::new();
    let _ = SchemaPlugin::configure(br#"{"rules": [{"match": {"path": "/"}}]}"#, &mut host);
    host.metric_names
}

/// What happened to one request.
#[derive(Debug)]
pub struct Outcome {
    pub host: FakeHost,
    /// Flow of the headers callback, then of the body callbacks.
    pub flows: Vec<Flow>,
}

impl Outcome {
    pub fn sent(&self) -> Option<&SentResponse> {
        self.host.sent.as_ref()
    }

    pub fn status(&self) -> u16 {
        self.host.sent.as_ref().map_or(200, |s| s.status)
    }

    pub fn problem(&self) -> Value {
        self.host
            .sent
            .as_ref()
            .map(|s| s.json())
            .unwrap_or(Value::Null)
    }

    /// The `errors` entries as (in, pointer, keyword).
    pub fn errors(&self) -> Vec<(String, String, String)> {
        self.problem()["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (
                            e["in"].as_str().unwrap_or("").to_string(),
                            e["pointer"].as_str().unwrap_or("").to_string(),
                            e["keyword"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn published(&self) -> Option<String> {
        self.host.req_header("x-palisade-schema")
    }

    /// Whether the filter held back or refused the request at some point.
    pub fn paused_headers(&self) -> bool {
        self.flows.first() == Some(&Flow::Pause)
    }
}

/// A request as Envoy delivers it: headers, then the body in `chunks`.
pub fn send(
    plugin: &Rc<SchemaPlugin>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    chunks: &[&[u8]],
) -> Outcome {
    let mut host = FakeHost::request(method, path);
    host.metric_names = metric_names();
    for (n, v) in headers {
        host = host.with_request_header(n, v);
    }
    let mut filter = SchemaPlugin::new_filter(plugin);
    let mut flows = vec![filter.on_request_headers(&mut host, chunks.is_empty())];
    if host.sent.is_some() {
        return Outcome { host, flows };
    }
    for (i, chunk) in chunks.iter().enumerate() {
        host.request_body.extend_from_slice(chunk);
        let size = host.request_body.len();
        let flow = filter.on_request_body(&mut host, size, i + 1 == chunks.len());
        flows.push(flow);
        if host.sent.is_some() {
            break;
        }
    }
    Outcome { host, flows }
}

/// A JSON POST with content-length, in one chunk.
pub fn post_json(plugin: &Rc<SchemaPlugin>, path: &str, body: &str) -> Outcome {
    let len = body.len().to_string();
    send(
        plugin,
        "POST",
        path,
        &[
            ("content-type", "application/json"),
            ("content-length", &len),
        ],
        &[body.as_bytes()],
    )
}
