//! Whole requests through the filter (query, path, body) against the pet
//! store contract: every input gets an answer, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_core::fake::FakeHost;
use palisade_core::{HttpFilter, Plugin};
use palisade_schema::SchemaPlugin;
use std::rc::Rc;
use std::sync::OnceLock;

fn config() -> &'static [u8] {
    static CONFIG: OnceLock<Vec<u8>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let doc = include_str!("../../tests/fixtures/petstore.json");
        format!(r#"{{"unmatched": "deny", "openapi": {doc}}}"#).into_bytes()
    })
}

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static PLUGIN: Rc<SchemaPlugin> = Rc::new(
            SchemaPlugin::configure(config(), &mut FakeHost::new()).expect("the pet store loads"),
        );
    }
    // First line: method and path; the rest: the body.
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let line = String::from_utf8_lossy(&data[..split]);
    let (method, path) = line.split_once(' ').unwrap_or(("POST", "/pets"));
    let body = data.get(split + 1..).unwrap_or(&[]);
    PLUGIN.with(|plugin| {
        let mut host = FakeHost::request(method, path)
            .with_request_header("content-type", "application/json");
        host.request_body = body.to_vec();
        let mut filter = SchemaPlugin::new_filter(plugin);
        filter.on_request_headers(&mut host, body.is_empty());
        if host.sent.is_none() && !body.is_empty() {
            filter.on_request_body(&mut host, body.len(), true);
        }
        if let Some(sent) = &host.sent {
            assert!(matches!(sent.status, 400 | 404 | 405 | 413 | 415));
        }
    });
});
