//! Shared fixtures: a configured plugin, request hosts for Envoy and Kong.
#![allow(dead_code)]

use palisade_core::fake::FakeHost;
use palisade_core::host::Headers;
use palisade_core::{Flow, Host, HostKind, HttpFilter, Level, Plugin};
use palisade_headers::{HeadersFilter, HeadersPlugin};
use std::cell::Cell;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

/// Both hosts every behaviour is checked on.
pub const KINDS: [HostKind; 2] = [HostKind::Envoy, HostKind::Kong];

/// A configured plugin and the root host its metrics were defined on.
pub struct Setup {
    pub plugin: Rc<HeadersPlugin>,
    pub root: FakeHost,
}

impl Setup {
    pub fn new(config: &str) -> Setup {
        let mut root = FakeHost::new();
        let plugin = HeadersPlugin::configure(config.as_bytes(), &mut root)
            .unwrap_or_else(|e| panic!("config {config} refused: {e}"));
        Setup {
            plugin: Rc::new(plugin),
            root,
        }
    }

    /// A request as `kind` presents it, sharing the plugin's metric ids.
    pub fn host(&self, kind: HostKind, method: &str, path: &str) -> TestHost {
        let mut fake = FakeHost::request(method, path);
        fake.kind = kind;
        fake.metric_names = self.root.metric_names.clone();
        TestHost(fake, Calls::default())
    }

    pub fn filter(&self) -> HeadersFilter {
        HeadersPlugin::new_filter(&self.plugin)
    }
}

/// `FakeHost` as the real glue behaves: on Kong the header list leaves out
/// the pseudo-headers (they are only answered one by one), as
/// ngx_wasm_module's `proxy_get_header_map_pairs` does; and request headers
/// read as absent from the response callback (the core's glue refuses
/// out-of-phase calls, Envoy would trap the SDK).
pub struct TestHost(pub FakeHost, pub Calls);

/// Host calls that cost a VM crossing each, counted for the performance checks.
#[derive(Debug, Default)]
pub struct Calls {
    pub request_headers: Cell<u32>,
    pub request_header: Cell<u32>,
    pub response_headers: Cell<u32>,
    pub property: Cell<u32>,
    /// Set while a response callback runs.
    pub in_response: Cell<bool>,
}

fn tick(c: &Cell<u32>) {
    c.set(c.get() + 1);
}

impl TestHost {
    pub fn with(mut self, name: &str, value: &str) -> TestHost {
        self.0 = self.0.with_request_header(name, value);
        self
    }

    pub fn with_bytes(mut self, name: &str, value: &[u8]) -> TestHost {
        self.0
            .request_headers
            .push((name.to_string(), value.to_vec()));
        self
    }

    /// Whether the upstream receives no client value of `name`: absent on
    /// Envoy; on Kong, blanked in place (a removal there still reaches the
    /// upstream, which `upstream_header_values` shows).
    pub fn stripped(&self, name: &str) -> bool {
        let values = self.0.upstream_header_values(name);
        match self.0.kind {
            HostKind::Envoy => values.is_empty(),
            _ => values.iter().all(|v| v.is_empty()),
        }
    }

    /// Every value of `name` the upstream receives.
    pub fn upstream(&self, name: &str) -> Vec<String> {
        self.0.upstream_header_values(name)
    }

    /// Every log line, for checks that nothing from the request leaks.
    pub fn all_logs(&self) -> String {
        self.0
            .logs
            .borrow()
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn run(&mut self, filter: &mut HeadersFilter) -> Flow {
        self.1.in_response.set(false);
        filter.on_request_headers(self, false)
    }

    /// The response callback, over whatever response headers are set.
    pub fn on_response(&mut self, filter: &mut HeadersFilter) -> Flow {
        self.1.in_response.set(true);
        let flow = filter.on_response_headers(self, false);
        self.1.in_response.set(false);
        flow
    }

    pub fn respond(
        &mut self,
        filter: &mut HeadersFilter,
        status: u16,
        headers: &[(&str, &str)],
    ) -> Flow {
        let fake = std::mem::take(&mut self.0);
        let kind = fake.kind;
        self.0 = fake.with_response(status, headers, b"");
        self.0.kind = kind;
        self.on_response(filter)
    }

    pub fn warned(&self, needle: &str) -> bool {
        self.0.logged(Level::Warn, needle)
    }
}

impl Deref for TestHost {
    type Target = FakeHost;
    fn deref(&self) -> &FakeHost {
        &self.0
    }
}

impl DerefMut for TestHost {
    fn deref_mut(&mut self) -> &mut FakeHost {
        &mut self.0
    }
}

impl Host for TestHost {
    /// What the module believes (`believed` stages a mis-detection).
    fn kind(&self) -> HostKind {
        Host::kind(&self.0)
    }
    fn request_headers(&self) -> Rc<Headers> {
        if self.1.in_response.get() {
            return Rc::default();
        }
        tick(&self.1.request_headers);
        let all = self.0.request_headers();
        match self.0.kind {
            HostKind::Envoy => all,
            _ => Rc::new(
                all.iter()
                    .filter(|(n, _)| !n.starts_with(':'))
                    .cloned()
                    .collect(),
            ),
        }
    }
    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        if self.1.in_response.get() {
            return None;
        }
        tick(&self.1.request_header);
        self.0.request_header(name)
    }
    fn set_request_header(&mut self, name: &str, value: &[u8]) {
        if !self.1.in_response.get() {
            self.0.set_request_header(name, value)
        }
    }
    fn remove_request_header(&mut self, name: &str) {
        if !self.1.in_response.get() {
            self.0.remove_request_header(name)
        }
    }
    fn response_headers(&self) -> Rc<Headers> {
        tick(&self.1.response_headers);
        self.0.response_headers()
    }
    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        self.0.response_header(name)
    }
    fn set_response_header(&mut self, name: &str, value: &[u8]) {
        self.0.set_response_header(name, value)
    }
    fn add_response_header(&mut self, name: &str, value: &[u8]) {
        self.0.add_response_header(name, value)
    }
    fn remove_response_header(&mut self, name: &str) {
        self.0.remove_response_header(name)
    }
    fn response_trailer(&self, name: &str) -> Option<Vec<u8>> {
        self.0.response_trailer(name)
    }
    fn set_response_trailer(&mut self, name: &str, value: &[u8]) {
        self.0.set_response_trailer(name, value)
    }
    fn remove_response_trailer(&mut self, name: &str) {
        self.0.remove_response_trailer(name)
    }
    fn response_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        self.0.response_body(start, len)
    }
    fn set_response_body(&mut self, start: usize, len: usize, data: &[u8]) {
        self.0.set_response_body(start, len, data)
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        tick(&self.1.property);
        self.0.property(path)
    }
    fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        self.0.send_response(status, headers, body)
    }
    fn log(&self, level: Level, message: &str) {
        self.0.log(level, message)
    }
    fn define_counter(&mut self, name: &str) -> Option<u32> {
        self.0.define_counter(name)
    }
    fn increment_counter(&mut self, id: u32, by: i64) {
        self.0.increment_counter(id, by)
    }
}
