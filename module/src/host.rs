//! The host as each control of a chain sees it.
//!
//! Separate modules can only hand things to each other through the proxy:
//! the verified claims as a property (Envoy filter state), decisions as
//! `x-palisade-*` request headers. Inside one module they stay in memory:
//! a property a control sets under a `palisade_` name is kept for the rest
//! of the stream and read back without a host call (one not set here is
//! still asked of the proxy: a filter in front may have set it), and decision headers
//! reach the proxy only when the chain publishes them (`publish_decisions`;
//! each write costs a host call and clears Envoy's route cache). Everything
//! else goes to the proxy unchanged.

use palisade_core::audit;
use palisade_core::context::HEADER_PREFIX;
use palisade_core::host::{CallError, Headers, Shared, SharedError};
use palisade_core::{Host, HostKind, Level};
use std::cell::RefCell;
use std::rc::Rc;

/// What one stream's controls leave for each other.
#[derive(Debug, Default)]
pub struct Memory {
    properties: Vec<(String, Vec<u8>)>,
    /// The proxy's route name, once read: the chain and every control that
    /// matches on it share one host call per request.
    route_name: RefCell<Option<Option<String>>>,
    /// The audit record changed since it last reached the proxy.
    audit_dirty: bool,
}

impl Memory {
    fn get(&self, key: &str) -> Option<&[u8]> {
        self.properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The audit record, once per callback of the module however many
    /// controls added to it (Envoy's filter state, for access logs: it
    /// reaches the proxy whether or not decisions are published).
    pub fn flush_audit(&mut self, host: &mut dyn Host) {
        if std::mem::take(&mut self.audit_dirty) {
            if let Some(record) = self.get(audit::PROPERTY) {
                let record = record.to_vec();
                host.set_property(&[audit::PROPERTY], &record);
            }
        }
    }

    fn set(&mut self, key: &str, value: &[u8]) {
        match self.properties.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value.to_vec(),
            None => self.properties.push((key.to_string(), value.to_vec())),
        }
    }
}

/// A property the controls keep for each other: one segment, `palisade_*`.
fn in_memory<'p>(path: &[&'p str]) -> Option<&'p str> {
    match path {
        [name] if name.starts_with("palisade_") => Some(name),
        _ => None,
    }
}

/// The proxy's host with the chain's own memory in front.
pub struct ChainHost<'a> {
    pub inner: &'a mut dyn Host,
    pub memory: &'a mut Memory,
    /// Whether decisions and shared properties also reach the proxy.
    pub publish: bool,
}

impl Host for ChainHost<'_> {
    fn kind(&self) -> HostKind {
        self.inner.kind()
    }
    fn request_headers(&self) -> Rc<Headers> {
        self.inner.request_headers()
    }
    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        self.inner.request_header(name)
    }
    fn set_request_header(&mut self, name: &str, value: &[u8]) {
        // A decision: only when published. Unpublished, a copy the client
        // sent must still not pass for one (the headers control overwrites
        // its own decision header instead of stripping it).
        if !self.publish && name.starts_with(HEADER_PREFIX) {
            if self.inner.request_header(name).is_some() {
                self.inner.remove_request_header(name);
            }
            return;
        }
        self.inner.set_request_header(name, value);
    }
    fn remove_request_header(&mut self, name: &str) {
        self.inner.remove_request_header(name);
    }
    fn response_headers(&self) -> Rc<Headers> {
        self.inner.response_headers()
    }
    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        self.inner.response_header(name)
    }
    fn set_response_header(&mut self, name: &str, value: &[u8]) {
        self.inner.set_response_header(name, value);
    }
    fn add_response_header(&mut self, name: &str, value: &[u8]) {
        self.inner.add_response_header(name, value);
    }
    fn remove_response_header(&mut self, name: &str) {
        self.inner.remove_response_header(name);
    }
    fn response_trailer(&self, name: &str) -> Option<Vec<u8>> {
        self.inner.response_trailer(name)
    }
    fn set_response_trailer(&mut self, name: &str, value: &[u8]) {
        self.inner.set_response_trailer(name, value);
    }
    fn remove_response_trailer(&mut self, name: &str) {
        self.inner.remove_response_trailer(name);
    }
    fn response_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        self.inner.response_body(start, len)
    }
    fn set_response_body(&mut self, start: usize, len: usize, data: &[u8]) {
        self.inner.set_response_body(start, len, data);
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        // Not set by a control of this stream: another filter in front of
        // the module may have (a separate `palisade_jwt.wasm`, say).
        in_memory(path)
            .and_then(|name| self.memory.get(name).map(<[u8]>::to_vec))
            .or_else(|| self.inner.property(path))
    }
    fn route_name(&self) -> Option<String> {
        self.memory
            .route_name
            .borrow_mut()
            .get_or_insert_with(|| self.inner.route_name())
            .clone()
    }
    fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        self.inner.send_response(status, headers, body);
    }
    fn local_reply_sent(&self) -> bool {
        self.inner.local_reply_sent()
    }
    fn calls_dispatched(&self) -> u32 {
        self.inner.calls_dispatched()
    }
    fn log(&self, level: Level, message: &str) {
        self.inner.log(level, message);
    }
    fn define_counter(&mut self, name: &str) -> Option<u32> {
        self.inner.define_counter(name)
    }
    fn increment_counter(&mut self, id: u32, by: i64) {
        self.inner.increment_counter(id, by);
    }
    fn now_nanos(&self) -> u64 {
        self.inner.now_nanos()
    }
    fn shared_get(&self, key: &str) -> Shared {
        self.inner.shared_get(key)
    }
    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedError> {
        self.inner.shared_set(key, value, cas)
    }
    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        self.inner.request_body(start, len)
    }
    fn set_request_body(&mut self, start: usize, len: usize, data: &[u8]) {
        self.inner.set_request_body(start, len, data);
    }
    fn set_property(&mut self, path: &[&str], value: &[u8]) {
        if path == [audit::PROPERTY] {
            self.memory.set(audit::PROPERTY, value);
            self.memory.audit_dirty = true;
            return;
        }
        if let Some(name) = in_memory(path) {
            self.memory.set(name, value);
            if !self.publish {
                return;
            }
        }
        self.inner.set_property(path, value);
    }
    fn http_call(
        &mut self,
        upstream: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u64,
    ) -> Result<u32, CallError> {
        self.inner.http_call(upstream, headers, body, timeout_ms)
    }
    fn grpc_call(
        &mut self,
        cluster: &str,
        service: &str,
        method: &str,
        metadata: &[(&str, &[u8])],
        message: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, CallError> {
        self.inner
            .grpc_call(cluster, service, method, metadata, message, timeout_ms)
    }
    fn foreign_function(&mut self, name: &str, args: &[u8]) -> Option<Vec<u8>> {
        self.inner.foreign_function(name, args)
    }
    fn resume_request(&mut self) {
        self.inner.resume_request();
    }
}
