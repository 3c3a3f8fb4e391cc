//! Shared fixtures: a configured plugin per worker, requests on a shared store.
#![allow(dead_code)]

use palisade_core::fake::FakeHost;
use palisade_core::{Flow, HostKind, HttpFilter, Plugin};
use palisade_ratelimit::{RateLimitFilter, RateLimitPlugin};
use std::rc::Rc;

pub const T0: u64 = 1_700_000_000;

/// One worker VM: its plugin, configured on a root host sharing the store.
pub struct Worker {
    pub plugin: Rc<RateLimitPlugin>,
    pub root: FakeHost,
}

impl Worker {
    pub fn new(config: &str) -> Worker {
        Worker::on(FakeHost::new().at_secs(T0), config)
    }

    pub fn kong(config: &str) -> Worker {
        let mut root = FakeHost::kong().at_secs(T0);
        root.kind = HostKind::Kong;
        Worker::on(root, config)
    }

    pub fn on(mut root: FakeHost, config: &str) -> Worker {
        let plugin = RateLimitPlugin::configure(config.as_bytes(), &mut root)
            .unwrap_or_else(|e| panic!("config {config} refused: {e}"));
        Worker {
            plugin: Rc::new(plugin),
            root,
        }
    }

    /// Another worker of the same proxy (same shared data and clock).
    pub fn sibling(&self, config: &str) -> Worker {
        Worker::on(self.root.sibling(), config)
    }

    /// A request host on this worker: shared store, clock and metric ids.
    pub fn request(&self, method: &str, path: &str) -> FakeHost {
        let mut h = FakeHost::request(method, path);
        h.kind = self.root.kind;
        h.shared = Rc::clone(&self.root.shared);
        h.clock.set(self.root.clock.get());
        h.metric_names = self.root.metric_names.clone();
        h.properties
            .insert("source.address".into(), b"192.0.2.10:40000".to_vec());
        h
    }

    pub fn filter(&self) -> RateLimitFilter {
        RateLimitPlugin::new_filter(&self.plugin)
    }

    pub fn advance_secs(&self, secs: u64) {
        self.root.advance_ms(secs * 1000);
    }

    /// Runs one request through request and response headers; the host after.
    pub fn send(&self, mut host: FakeHost) -> (Flow, FakeHost) {
        let mut f = self.filter();
        let flow = f.on_request_headers(&mut host, true);
        if flow == Flow::Continue {
            host.response_headers = vec![(":status".into(), b"200".to_vec())];
            f.on_response_headers(&mut host, false);
        }
        (flow, host)
    }

    /// Status the client sees: the local reply's, else 200.
    pub fn status(&self, host: FakeHost) -> u16 {
        let (_, h) = self.send(host);
        h.sent.as_ref().map(|s| s.status).unwrap_or(200)
    }
}
