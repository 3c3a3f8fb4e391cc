//! A tiny proxy simulator over `FakeHost`: drives one exchange through the
//! filter the way Envoy (or Kong) calls it, buffering on Pause and recording
//! what the client would receive, plus every body access the filter made.
//!
//! Kong's response path as ngx_wasm_module runs it (its
//! `ngx_http_wasm_filter_module.c` and `ngx_proxy_wasm.c`): Pause from the
//! response headers drops the filter for the rest of the request (seen on
//! the real host); Pause from a body callback buffers the chunk and every
//! later one without calling the filter, until the body ends or
//! `wasm_response_body_buffers` (4 x 4096 bytes by default) are full, then
//! calls it once with all of it and turns another Pause into Continue.
#![allow(dead_code)]

use palisade_core::fake::{FakeHost, SentResponse};
use palisade_core::host::Headers;
use palisade_core::{Flow, Host, HostKind, HttpFilter, Level, Plugin};
use palisade_errors::{ErrorsFilter, ErrorsPlugin};
use std::cell::Cell;
use std::rc::Rc;

/// Counts the filter's body reads and writes.
/// Like Envoy, refuses request-header access from response callbacks (there
/// the SDK's header call traps the VM, failing every later request).
pub struct Spy<'a> {
    pub host: &'a mut FakeHost,
    pub response_phase: bool,
    pub body_reads: Cell<usize>,
    pub body_writes: usize,
}

impl Host for Spy<'_> {
    fn kind(&self) -> HostKind {
        self.host.kind()
    }
    fn request_headers(&self) -> std::rc::Rc<Headers> {
        self.guard();
        self.host.request_headers()
    }
    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        self.guard();
        self.host.request_header(name)
    }
    fn set_request_header(&mut self, name: &str, value: &[u8]) {
        self.guard();
        self.host.set_request_header(name, value)
    }
    fn remove_request_header(&mut self, name: &str) {
        self.guard();
        self.host.remove_request_header(name)
    }
    fn response_headers(&self) -> std::rc::Rc<Headers> {
        self.host.response_headers()
    }
    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        self.host.response_header(name)
    }
    fn set_response_header(&mut self, name: &str, value: &[u8]) {
        self.host.set_response_header(name, value)
    }
    fn add_response_header(&mut self, name: &str, value: &[u8]) {
        self.host.add_response_header(name, value)
    }
    fn remove_response_header(&mut self, name: &str) {
        self.host.remove_response_header(name)
    }
    fn response_trailer(&self, name: &str) -> Option<Vec<u8>> {
        self.host.response_trailer(name)
    }
    fn set_response_trailer(&mut self, name: &str, value: &[u8]) {
        self.host.set_response_trailer(name, value)
    }
    fn remove_response_trailer(&mut self, name: &str) {
        self.host.remove_response_trailer(name)
    }
    fn response_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        self.body_reads.set(self.body_reads.get() + 1);
        self.host.response_body(start, len)
    }
    fn set_response_body(&mut self, start: usize, len: usize, data: &[u8]) {
        self.body_writes += 1;
        self.host.set_response_body(start, len, data)
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.host.property(path)
    }
    fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        self.host.send_response(status, headers, body)
    }
    fn log(&self, level: Level, message: &str) {
        self.host.log(level, message)
    }
    fn define_counter(&mut self, name: &str) -> Option<u32> {
        self.host.define_counter(name)
    }
    fn increment_counter(&mut self, id: u32, by: i64) {
        self.host.increment_counter(id, by)
    }
}

impl Spy<'_> {
    fn guard(&self) {
        assert!(
            !self.response_phase,
            "request headers read in a response callback: Envoy traps there"
        );
    }
}

/// What the client got, and how the filter got there.
#[derive(Debug, Default)]
pub struct Outcome {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    pub local_reply: Option<SentResponse>,
    /// Response headers were paused (held until the body was decided).
    pub held_headers: bool,
    /// The filter paused on the last body chunk: Envoy would hang.
    pub hung: bool,
    pub body_reads: usize,
    pub body_writes: usize,
    /// Largest body the host had to hold because the filter paused.
    pub max_buffered: usize,
    /// Kong dropped the filter after Pause from the response headers.
    pub dropped: bool,
}

impl Outcome {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn snapshot(h: &Headers) -> Vec<(String, String)> {
    h.iter()
        .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

/// Configures the plugin on `host` (so its counters land there).
pub fn configure(host: &mut FakeHost, config: &str) -> Rc<ErrorsPlugin> {
    match ErrorsPlugin::configure(config.as_bytes(), host) {
        Ok(p) => Rc::new(p),
        Err(e) => panic!("config refused: {e}"),
    }
}

/// A GET `path` with an `x-request-id`.
pub fn request(kind: HostKind, path: &str) -> FakeHost {
    let mut h = FakeHost::request("GET", path).with_request_header("x-request-id", "rid-1");
    h.kind = kind;
    h
}

/// Kong's default `wasm_response_body_buffers 4 4k`, in bytes.
pub const KONG_RESPONSE_BUFFERS: usize = 4 * 4096;

/// Runs one exchange: request headers, then the response `status`/`headers`
/// with `chunks` of body and optional `trailers`.
pub fn exchange(
    plugin: &Rc<ErrorsPlugin>,
    host: &mut FakeHost,
    status: u16,
    headers: &[(&str, &str)],
    chunks: &[&[u8]],
    trailers: Option<&[(&str, &str)]>,
) -> Outcome {
    let mut filter = ErrorsFilter::new(plugin.clone());
    run(&mut filter, host, status, headers, chunks, trailers, true)
}

/// Like `exchange`, optionally skipping the request phase (an earlier filter answered).
pub fn run(
    filter: &mut ErrorsFilter,
    host: &mut FakeHost,
    status: u16,
    headers: &[(&str, &str)],
    chunks: &[&[u8]],
    trailers: Option<&[(&str, &str)]>,
    request_phase: bool,
) -> Outcome {
    let kind = host.kind;
    let mut out = Outcome::default();
    let mut spy = Spy {
        host,
        response_phase: false,
        body_reads: Cell::new(0),
        body_writes: 0,
    };
    if request_phase {
        assert_eq!(filter.on_request_headers(&mut spy, true), Flow::Continue);
    }
    spy.response_phase = true;
    let fresh = std::mem::take(&mut spy.host.request_headers);
    let with_resp = FakeHost::new().with_response(status, headers, b"");
    spy.host.request_headers = fresh;
    spy.host.response_headers = with_resp.response_headers;
    spy.host.response_body.clear();
    let bodiless = chunks.is_empty() && trailers.is_none();
    let eos_headers = bodiless && kind.trusts_end_of_stream_in_headers();
    let flow = filter.on_response_headers(&mut spy, eos_headers);
    if let Some(sent) = spy.host.sent.take() {
        assert_eq!(flow, Flow::Pause, "a local reply must pause");
        out.status = sent.status;
        out.headers = sent.headers.clone();
        out.body = sent.body.clone();
        out.local_reply = Some(sent);
        out.body_reads = spy.body_reads.get();
        out.body_writes = spy.body_writes;
        return out;
    }
    let kong = kind == HostKind::Kong;
    let mut headers_sent = false;
    if flow == Flow::Pause && kong {
        spy.host.log(
            Level::Warn,
            "[wasm] \"ResponseHeaders\" returned \"PAUSE\": local response expected but none produced",
        );
        out.dropped = true;
        out.headers = snapshot(&spy.host.response_headers);
        out.body = chunks.concat();
        out.status = status;
        return out;
    }
    if flow == Flow::Continue {
        out.headers = snapshot(&spy.host.response_headers);
        headers_sent = true;
    } else {
        out.held_headers = true;
    }
    let mut calls: Vec<(&[u8], bool)> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| (*c, i + 1 == chunks.len() && trailers.is_none()))
        .collect();
    if bodiless && !eos_headers {
        // Kong: a body callback with end_of_stream even for an empty body.
        calls.push((b"", true));
    }
    // Kong: buffering after a Pause; `Some(true)` once the filter had its
    // one call after it.
    let mut kong_buffering: Option<bool> = None;
    for (chunk, eos) in calls {
        spy.host.response_body.extend_from_slice(chunk);
        let size = spy.host.response_body.len();
        out.max_buffered = out.max_buffered.max(size);
        if kong_buffering == Some(false) && !eos && size < KONG_RESPONSE_BUFFERS {
            continue;
        }
        let mut flow = filter.on_response_body(&mut spy, size, eos);
        if kong && flow == Flow::Pause && kong_buffering.is_none() {
            kong_buffering = Some(false);
            if !eos && size < KONG_RESPONSE_BUFFERS {
                continue;
            }
            // This chunk already ends the buffering: the filter's one call.
            flow = filter.on_response_body(&mut spy, size, eos);
        }
        if kong && kong_buffering.is_some() {
            if flow == Flow::Pause {
                spy.host.log(
                    Level::Error,
                    "[wasm] invalid \"on_response_body\" return action (PAUSE): response body buffering already requested",
                );
                flow = Flow::Continue;
            }
            kong_buffering = Some(true);
        }
        if flow == Flow::Continue {
            if !headers_sent {
                out.headers = snapshot(&spy.host.response_headers);
                headers_sent = true;
            }
            out.body.extend_from_slice(&spy.host.response_body);
            spy.host.response_body.clear();
        } else if eos {
            out.hung = true;
        }
    }
    if let Some(t) = trailers {
        spy.host.response_trailers = t
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        let _ = filter.on_response_trailers(&mut spy);
        if !headers_sent {
            out.headers = snapshot(&spy.host.response_headers);
        }
        out.body.extend_from_slice(&spy.host.response_body);
        spy.host.response_body.clear();
        out.trailers = snapshot(&spy.host.response_trailers);
    }
    out.status = out
        .headers
        .iter()
        .find(|(n, _)| n == ":status")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    out.body_reads = spy.body_reads.get();
    out.body_writes = spy.body_writes;
    out
}

pub const JAVA_STACK: &str = "java.lang.NullPointerException: Cannot invoke \"String.length()\" because \"name\" is null\n\tat com.example.orders.OrderValidator.validate(OrderValidator.java:42)\n\tat java.base/java.lang.Thread.run(Thread.java:1583)\n";

pub const PYTHON_STACK: &str = "Traceback (most recent call last):\n  File \"/srv/app/views.py\", line 42, in create_order\n    total = compute_total(order)\nZeroDivisionError: division by zero\n";

/// Deterministic pseudo-random bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
