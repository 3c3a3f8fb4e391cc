//! Drives one whole exchange through a filter the way each host calls it,
//! so the hosts' callback rules, not only their host calls, are tested
//! natively. What it models, per host (see NOTES):
//!
//! - Envoy: `end_of_stream` is true on a headers callback when nothing
//!   follows; Pause from a headers callback stops iteration, and body
//!   callbacks come only with `allow_on_headers_stop_iteration` (off by
//!   default): without it the exchange hangs. Pause from a body callback
//!   buffers; the callback is called again with the cumulative size.
//! - Kong (seen on the real host): `end_of_stream` is never true in headers
//!   callbacks; Pause from request headers with no call pending hangs the
//!   request; Pause from response headers drops the filter for the rest of
//!   the request; a local reply sent from response headers keeps the
//!   upstream's `content-length` (the client hangs); a request body over
//!   `client_body_buffer_size` reads as empty; no trailers. Pause from a
//!   response body callback buffers that chunk and the later ones without
//!   calling the filter until the body ends or `wasm_response_body_buffers`
//!   are full, then calls it once with all of it; a Pause then is refused
//!   (logged, taken as Continue), so the body leaves as it is
//!   (ngx_wasm_module's `ngx_http_wasm_filter_module.c`, `ngx_http_proxy_wasm.c`).
//!
//! Every exchange also checks what the client would get: a body shorter
//! than its `content-length` hangs the client.

use super::{FakeHost, SentResponse};
use crate::filter::{Flow, HttpFilter};
use crate::headers::{find, set};
use crate::host::{Headers, Host, HostKind, Level, Phase};

/// What the client sends and the upstream answers.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Request body chunks as they arrive (none: no body).
    pub request_body: Vec<Vec<u8>>,
    /// Request trailers (Envoy only; Kong has none).
    pub request_trailers: Headers,
    pub response_status: u16,
    pub response_headers: Headers,
    pub response_body: Vec<Vec<u8>>,
    /// Envoy's Wasm filter flag; off by default, as in Envoy.
    pub allow_on_headers_stop_iteration: bool,
    /// nginx's `client_body_buffer_size` (Kong's default 8k).
    pub kong_client_body_buffer_size: usize,
    /// ngx_wasm_module's `wasm_response_body_buffers`, in bytes (default 4 4k).
    pub kong_response_body_buffers: usize,
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange {
            request_body: Vec::new(),
            request_trailers: Vec::new(),
            response_status: 200,
            response_headers: Vec::new(),
            response_body: Vec::new(),
            allow_on_headers_stop_iteration: false,
            kong_client_body_buffer_size: 8 * 1024,
            kong_response_body_buffers: 4 * 4096,
        }
    }
}

impl Exchange {
    pub fn new() -> Self {
        Exchange::default()
    }

    /// A request body in one chunk.
    pub fn body(mut self, body: &[u8]) -> Self {
        self.request_body = vec![body.to_vec()];
        self
    }

    pub fn body_chunks(mut self, chunks: &[&[u8]]) -> Self {
        self.request_body = chunks.iter().map(|c| c.to_vec()).collect();
        self
    }

    pub fn trailers(mut self, trailers: &[(&str, &str)]) -> Self {
        self.request_trailers = pairs(trailers);
        self
    }

    /// The upstream's answer, its body in `chunks`.
    pub fn response(mut self, status: u16, headers: &[(&str, &str)], chunks: &[&[u8]]) -> Self {
        self.response_status = status;
        self.response_headers = pairs(headers);
        self.response_body = chunks.iter().map(|c| c.to_vec()).collect();
        self
    }

    pub fn with_stop_iteration_flag(mut self) -> Self {
        self.allow_on_headers_stop_iteration = true;
        self
    }
}

fn pairs(list: &[(&str, &str)]) -> Headers {
    list.iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect()
}

/// What the client received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
    /// A filter's local reply rather than the upstream's answer.
    pub local: bool,
}

impl ClientResponse {
    pub fn header(&self, name: &str) -> Option<String> {
        find(&self.headers, name).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// How the exchange ended.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The request the upstream received (headers as forwarded, body), if any.
    pub upstream: Option<(Headers, Vec<u8>)>,
    /// What the client got; `None` when it hangs or the stream was reset.
    pub client: Option<ClientResponse>,
    /// Why the exchange would hang (the client waits until it gives up).
    pub hung: Option<String>,
    /// The filter paused for a call it made; answer it and go on by hand.
    pub awaiting_call: bool,
    /// Kong dropped the filter after Pause from response headers.
    pub dropped: bool,
}

impl Outcome {
    fn hang(mut self, why: impl Into<String>) -> Outcome {
        self.hung = Some(why.into());
        self
    }

    /// The client's response, or a panic saying why there is none.
    pub fn client(&self) -> &ClientResponse {
        match &self.client {
            Some(c) => c,
            None => panic!("no response reached the client: {:?}", self.hung),
        }
    }

    /// Every value of `name` the upstream received.
    pub fn upstream_values(&self, name: &str) -> Vec<String> {
        self.upstream
            .iter()
            .flat_map(|(h, _)| h.iter())
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
}

/// Runs the request through `filter`, then the upstream's answer (or the
/// filter's local reply) back through it, as `host.kind` would. The stream
/// then ends ([`end_stream`]), unless the filter waits for a call's answer:
/// a hung exchange ends too, as the client or a timeout resets it.
pub fn run(filter: &mut dyn HttpFilter, host: &mut FakeHost, ex: &Exchange) -> Outcome {
    let out = exchange(filter, host, ex);
    if !out.awaiting_call {
        end_stream(filter, host);
    }
    out
}

/// The stream ends, however it ended: what both hosts' `proxy_on_done`
/// tells the filter. Call it by hand after answering a call, or to stage a
/// reset at any point of an exchange.
pub fn end_stream(filter: &mut dyn HttpFilter, host: &mut FakeHost) {
    host.phase = Phase::Done;
    filter.on_stream_done(host);
}

fn exchange(filter: &mut dyn HttpFilter, host: &mut FakeHost, ex: &Exchange) -> Outcome {
    let kong = host.kind == HostKind::Kong;
    let mut out = Outcome::default();
    let body_len: usize = ex.request_body.iter().map(Vec::len).sum();
    let has_body = body_len > 0;
    let has_trailers = !kong && !ex.request_trailers.is_empty();

    host.phase = Phase::RequestHeaders;
    let calls = host.calls.len();
    let eos = !kong && !has_body && !has_trailers;
    let flow = filter.on_request_headers(host, eos);
    if let Some(sent) = host.sent.take() {
        return respond_local(filter, host, out, sent);
    }
    if flow == Flow::Pause {
        if host.calls.len() > calls {
            out.awaiting_call = true;
            return out;
        }
        if kong {
            return out.hang(
                "kong: Pause from request headers with no call pending: nginx never reads the body",
            );
        }
        if !has_body && !has_trailers {
            return out.hang("envoy: Pause at the end of the stream with nothing pending");
        }
        if !ex.allow_on_headers_stop_iteration {
            return out.hang(
                "envoy: a filter held the request headers and, without allow_on_headers_stop_iteration, gets no body callback",
            );
        }
    }

    let mut forwarded = Vec::new();
    // Kong reads the whole body first and calls the filter once, never for
    // an empty body; a body nginx spilled to a file cannot be read.
    let spilled = kong && body_len > ex.kong_client_body_buffer_size;
    let chunks: Vec<Vec<u8>> = if spilled {
        vec![Vec::new()]
    } else if kong && has_body {
        vec![ex.request_body.concat()]
    } else {
        ex.request_body.clone()
    };
    host.request_body.clear();
    let last = chunks.len().saturating_sub(1);
    for (i, chunk) in chunks.iter().enumerate() {
        host.phase = Phase::RequestBody;
        host.request_body.extend_from_slice(chunk);
        let eos = i == last && !has_trailers;
        let calls = host.calls.len();
        let size = if spilled {
            body_len
        } else {
            host.request_body.len()
        };
        let flow = filter.on_request_body(host, size, eos);
        if let Some(sent) = host.sent.take() {
            return respond_local(filter, host, out, sent);
        }
        match flow {
            Flow::Continue => forwarded.append(&mut host.request_body),
            Flow::Pause if host.calls.len() > calls => {
                out.awaiting_call = true;
                return out;
            }
            Flow::Pause if eos => {
                return out.hang("Pause at the end of the request body with nothing pending")
            }
            Flow::Pause => {}
        }
    }
    if has_trailers {
        host.phase = Phase::RequestTrailers;
        let flow = filter.on_request_trailers(host);
        if let Some(sent) = host.sent.take() {
            return respond_local(filter, host, out, sent);
        }
        if flow == Flow::Pause {
            return out.hang("Pause from request trailers with nothing pending");
        }
    }
    forwarded.append(&mut host.request_body);
    out.upstream = Some((host.upstream_request_headers(), forwarded));

    let mut headers = vec![(
        ":status".to_string(),
        ex.response_status.to_string().into_bytes(),
    )];
    headers.extend(ex.response_headers.iter().cloned());
    respond(filter, host, out, headers, &ex.response_body, false, ex)
}

/// A local reply goes back through the filter's response callbacks.
fn respond_local(
    filter: &mut dyn HttpFilter,
    host: &mut FakeHost,
    out: Outcome,
    sent: SentResponse,
) -> Outcome {
    let mut headers = vec![(":status".to_string(), sent.status.to_string().into_bytes())];
    for (n, v) in &sent.headers {
        set(&mut headers, n, v.as_bytes());
    }
    set(
        &mut headers,
        "content-length",
        sent.body.len().to_string().as_bytes(),
    );
    let chunks = if sent.body.is_empty() {
        Vec::new()
    } else {
        vec![sent.body.clone()]
    };
    respond(filter, host, out, headers, &chunks, true, &Exchange::new())
}

fn respond(
    filter: &mut dyn HttpFilter,
    host: &mut FakeHost,
    mut out: Outcome,
    headers: Headers,
    chunks: &[Vec<u8>],
    local: bool,
    ex: &Exchange,
) -> Outcome {
    let kong = host.kind == HostKind::Kong;
    host.response_headers = headers;
    host.response_body.clear();
    let has_body = chunks.iter().any(|c| !c.is_empty());

    host.phase = Phase::ResponseHeaders;
    let flow = filter.on_response_headers(host, !kong && !has_body);
    let mut held = false;
    if let Some(sent) = host.sent.take() {
        if kong {
            // Its headers dropped, the upstream's content-length kept.
            return out.hang(
                "kong: local reply from response headers keeps the upstream's content-length",
            );
        }
        return finish(out, sent_as_client(sent), true);
    }
    let mut active = true;
    if flow == Flow::Pause {
        if kong {
            host.log(
                Level::Error,
                "[wasm] local response expected but none produced",
            );
            out.dropped = true;
            active = false;
        } else if !has_body {
            return out.hang("envoy: Pause from response headers at the end of the stream");
        } else if !ex.allow_on_headers_stop_iteration {
            return out.hang(
                "envoy: a filter held the response headers and, without allow_on_headers_stop_iteration, gets no body callback",
            );
        } else {
            held = true;
        }
    }

    let mut body = Vec::new();
    let last = chunks.len().saturating_sub(1);
    // Kong: `Some(false)` while buffering after a Pause, `Some(true)` after
    // the filter's one call that ends it.
    let mut kong_buffering: Option<bool> = None;
    for (i, chunk) in chunks.iter().enumerate() {
        if !active {
            body.extend_from_slice(chunk);
            continue;
        }
        host.phase = Phase::ResponseBody;
        host.response_body.extend_from_slice(chunk);
        let eos = i == last;
        let size = host.response_body.len();
        let full = size >= ex.kong_response_body_buffers;
        if kong_buffering == Some(false) && !eos && !full {
            continue;
        }
        let mut flow = filter.on_response_body(host, size, eos);
        if kong && flow == Flow::Pause && kong_buffering.is_none() {
            kong_buffering = Some(false);
            if !eos && !full {
                continue;
            }
            flow = filter.on_response_body(host, size, eos);
        }
        if kong && kong_buffering.is_some() {
            if flow == Flow::Pause {
                host.log(
                    Level::Error,
                    "[wasm] invalid \"on_response_body\" return action (PAUSE): response body buffering already requested",
                );
                flow = Flow::Continue;
            }
            kong_buffering = Some(true);
        }
        if let Some(sent) = host.sent.take() {
            if held || body.is_empty() && !kong {
                return finish(out, sent_as_client(sent), true);
            }
            return out.hang("a local reply after the response headers left: the stream is reset");
        }
        match flow {
            Flow::Continue => {
                body.append(&mut host.response_body);
                held = false;
            }
            Flow::Pause if eos => {
                return out.hang("Pause at the end of the response body");
            }
            Flow::Pause => {}
        }
    }
    let client = ClientResponse {
        status: status_of(&host.response_headers),
        headers: host.response_headers.clone(),
        body,
        local,
    };
    finish(out, client, local)
}

fn status_of(headers: &Headers) -> u16 {
    find(headers, ":status")
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}

fn sent_as_client(sent: SentResponse) -> ClientResponse {
    ClientResponse {
        status: sent.status,
        headers: sent
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
            .collect(),
        body: sent.body,
        local: true,
    }
}

/// The client's view: a body shorter than the `content-length` it was
/// promised leaves it waiting; a longer one is cut.
fn finish(mut out: Outcome, mut client: ClientResponse, local: bool) -> Outcome {
    client.local = local;
    let promised = find(&client.headers, "content-length")
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok());
    match promised {
        Some(n) if n > client.body.len() => {
            return out.hang(format!(
                "content-length {n} but only {} body bytes: the client waits",
                client.body.len()
            ));
        }
        Some(n) => client.body.truncate(n),
        None => {}
    }
    out.client = Some(client);
    out
}
