//! The one narrow door between a filter and its proxy.
//!
//! Filters talk to [`Host`] only; it is implemented once over proxy-wasm
//! (`glue::ProxyWasmHost`) and once in memory (`fake::FakeHost`) for tests.
//! The differences between Envoy and Kong's ngx_wasm_module (see
//! `shared/NOTES.md`) are absorbed by [`HostKind`]'s pure methods, so one
//! `.wasm` behaves the same on both and every difference has a unit test.

use std::rc::Rc;

/// Header names lowercased; values as raw bytes (they need not be UTF-8).
pub type Headers = Vec<(String, Vec<u8>)>;

/// Log levels, mapped onto the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// Which callback is running. Envoy answers a header map or buffer asked for
/// outside its phase (request headers from a response callback, say) with a
/// status the SDK turns into a panic, which traps the VM; the glue therefore
/// refuses such calls up front and the filter sees "absent".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// A root context outside the callbacks below (VM start).
    #[default]
    Root,
    /// The root context's `on_configure`: Kong traps an HTTP call made here.
    Configure,
    /// The root context's `on_tick`.
    Tick,
    /// The answer to a call, delivered to the root context.
    CallResponse,
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
    /// The stream has ended, however it ended (completed, reset by either
    /// side, timed out, refused by a later filter): held state is released
    /// here. No header map or body is reachable.
    Done,
}

/// What a host call touches, for [`Phase::allows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    RequestHeaders,
    RequestBody,
    ResponseHeaders,
    ResponseTrailers,
    ResponseBody,
}

impl Phase {
    /// Root-context phases: no stream, no request properties on Kong.
    pub fn is_root(self) -> bool {
        matches!(
            self,
            Phase::Root | Phase::Configure | Phase::Tick | Phase::CallResponse
        )
    }

    /// Where Kong lets a filter dispatch an HTTP call (seen on the real
    /// host): anywhere else the call traps and, from `on_configure`, the
    /// nginx worker exits for good.
    pub fn kong_allows_dispatch(self) -> bool {
        matches!(
            self,
            Phase::RequestHeaders | Phase::RequestBody | Phase::Tick | Phase::CallResponse
        )
    }

    pub fn allows(self, resource: Resource) -> bool {
        match resource {
            Resource::RequestHeaders => matches!(
                self,
                Phase::RequestHeaders | Phase::RequestBody | Phase::RequestTrailers
            ),
            // As on responses: a body buffered by earlier Pauses is still
            // there when the trailers end the stream.
            Resource::RequestBody => {
                matches!(self, Phase::RequestBody | Phase::RequestTrailers)
            }
            Resource::ResponseHeaders => matches!(
                self,
                Phase::ResponseHeaders | Phase::ResponseBody | Phase::ResponseTrailers
            ),
            Resource::ResponseTrailers => self == Phase::ResponseTrailers,
            // Envoy still serves a body buffered by earlier Pauses when the
            // trailers arrive: that is where a scan of it must finish.
            Resource::ResponseBody => {
                matches!(self, Phase::ResponseBody | Phase::ResponseTrailers)
            }
        }
    }
}

/// Which proxy-wasm host runs the module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKind {
    #[default]
    Envoy,
    /// Kong's WasmX (ngx_wasm_module).
    Kong,
    /// Not known yet. Kong refuses every dotted property in root contexts,
    /// so `on_configure` cannot tell Kong from Envoy without an Envoy-only
    /// answer; the first request settles it. While unknown, nothing
    /// host-specific runs: no HTTP call, no foreign function, and every
    /// method below answers what is safe on both hosts.
    Unknown,
}

/// The property only Kong answers, and only inside a request.
pub const KONG_PROBE: &[&str] = &["ngx", "nginx_version"];

impl HostKind {
    /// From a root context, where Kong answers no `ngx.*` property (and
    /// reading `plugin_name` there crashes its worker): the answer to
    /// `proxy_set_effective_context` with an id no context has. Envoy
    /// refuses it (BadArgument); ngx_wasm_module's implementation only logs
    /// and answers OK. Neither host traps or logs above debug for it.
    pub fn detect_in_root(unknown_context_accepted: bool) -> HostKind {
        match unknown_context_accepted {
            true => HostKind::Kong,
            false => HostKind::Envoy,
        }
    }

    /// From a request: Kong answers `ngx.nginx_version` there; Envoy has
    /// no `ngx.*` properties at all.
    pub fn detect_in_request(nginx_version_property: Option<&[u8]>) -> HostKind {
        match nginx_version_property {
            Some(v) if !v.is_empty() => HostKind::Kong,
            _ => HostKind::Envoy,
        }
    }

    pub fn is_known(self) -> bool {
        self != HostKind::Unknown
    }

    pub fn name(self) -> &'static str {
        match self {
            HostKind::Envoy => "envoy",
            HostKind::Kong => "kong",
            HostKind::Unknown => "an undetected host",
        }
    }

    /// Property path of the route's name.
    pub fn route_name_property(self) -> &'static [&'static str] {
        match self {
            HostKind::Envoy | HostKind::Unknown => &["xds", "route_name"],
            HostKind::Kong => &["kong", "route_name"],
        }
    }

    /// Integers are 8-byte little-endian on Envoy and decimal strings on Kong.
    pub fn decode_u64(self, raw: &[u8]) -> Option<u64> {
        let le = || <[u8; 8]>::try_from(raw).ok().map(u64::from_le_bytes);
        let decimal = || std::str::from_utf8(raw).ok()?.trim().parse().ok();
        match self {
            HostKind::Envoy => le(),
            HostKind::Kong => decimal(),
            HostKind::Unknown => decimal().or_else(le),
        }
    }

    /// Strings are raw bytes on both; Kong's may carry a trailing NUL.
    pub fn decode_string(self, raw: &[u8]) -> Option<String> {
        let raw = match self {
            HostKind::Kong | HostKind::Unknown => raw.strip_suffix(&[0]).unwrap_or(raw),
            HostKind::Envoy => raw,
        };
        std::str::from_utf8(raw).ok().map(str::to_string)
    }

    /// On Kong a removed request header still reaches the upstream (its
    /// hash is zeroed, nginx's proxy module sends it anyway) and a later set
    /// of the same name adds a second one; overwriting the value in place is
    /// what reaches the upstream. So Kong strips by overwriting with an
    /// empty value, and never removes before a set.
    pub fn strips_request_headers_by_overwrite(self) -> bool {
        self != HostKind::Envoy
    }

    /// Envoy can replace a response with a local reply from the response
    /// headers callback; Kong drops its headers and keeps the upstream's
    /// `content-length`, hanging the client, so there bodies are rewritten.
    pub fn local_reply_from_response_headers(self) -> bool {
        self == HostKind::Envoy
    }

    /// Kong drops a filter that returns Pause from response headers for the
    /// rest of the request (its body callbacks never run: seen on the real
    /// host); Envoy honours it (and keeps calling body callbacks only with
    /// `allow_on_headers_stop_iteration`).
    pub fn honours_pause_in_response_headers(self) -> bool {
        self == HostKind::Envoy
    }

    /// Kong hangs a request whose headers callback returns Pause with no
    /// call pending (nginx never reads the body); Envoy buffers the body
    /// and calls body callbacks only with `allow_on_headers_stop_iteration`.
    pub fn can_hold_request_headers_for_body(self) -> bool {
        self == HostKind::Envoy
    }

    /// Kong's `set_http_response_body(start, size, data)` writes only the
    /// first `size` bytes of `data`: a replacement must name a size at
    /// least as long as itself.
    pub fn cuts_body_replacement_to_size(self) -> bool {
        self != HostKind::Envoy
    }

    /// Kong always reports `end_of_stream = false` in header callbacks, so a
    /// bodiless request can only be recognised on Envoy.
    pub fn trusts_end_of_stream_in_headers(self) -> bool {
        self == HostKind::Envoy
    }

    /// Kong appends `\n` to local reply bodies; lengths must be computed by the host.
    pub fn appends_newline_to_local_replies(self) -> bool {
        self == HostKind::Kong
    }

    /// Shared-data key for `key` of `filter`. Envoy shares one store between
    /// every plugin with the same `vm_id` (Istio leaves it empty), so keys are
    /// prefixed with the filter. On Kong a `/` selects the shm zone
    /// (`zone/key`), so it must not appear: keys go to the default zone, the
    /// one `nginx_wasm_shm_kv` sizes.
    /// Keys are the same on every host, so they can be computed before the
    /// host is known.
    pub fn shared_key(self, filter: &str, key: &str) -> String {
        format!("palisade.{filter}.{key}").replace('/', "_")
    }

    /// The `upstream` argument of an HTTP call: Envoy wants a configured
    /// cluster's name, Kong a `host:port` it resolves itself. `None` while
    /// the host is unknown: no call may be made then.
    pub fn http_call_upstream<'a>(self, cluster: &'a str, authority: &'a str) -> Option<&'a str> {
        match self {
            HostKind::Envoy => Some(cluster),
            HostKind::Kong => Some(authority),
            HostKind::Unknown => None,
        }
    }

    /// Kong's ngx_wasm_module implements no gRPC calls.
    pub fn supports_grpc_calls(self) -> bool {
        self == HostKind::Envoy
    }

    /// Envoy's `verify_signature` foreign function (BoringSSL in the host).
    /// Kong has none, and calling an unknown foreign function there kills the
    /// instance, so it is chosen by host, never probed.
    pub fn has_verify_signature(self) -> bool {
        self == HostKind::Envoy
    }

    /// Kong never calls the trailers callbacks.
    pub fn has_trailers(self) -> bool {
        self == HostKind::Envoy
    }

    /// Kong's shared-data zone may evict entries under memory pressure:
    /// state kept there must tolerate disappearing.
    pub fn shared_data_may_evict(self) -> bool {
        self != HostKind::Envoy
    }

    /// The client's `Host`: Kong's `:authority` is the server's own name.
    pub fn authority_header(self) -> &'static str {
        match self {
            HostKind::Envoy | HostKind::Unknown => ":authority",
            HostKind::Kong => "host",
        }
    }
}

/// A shared-data entry: the value and the version to pass back for CAS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shared {
    pub value: Option<Vec<u8>>,
    /// `None` when the key does not exist yet (a write with `None` creates it).
    pub cas: Option<u32>,
}

/// Why a shared-data write did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedError {
    /// Someone wrote the key since it was read: read again and retry.
    CasMismatch,
    /// The host has no usable store (Kong without an `shm_kv` zone, a full zone).
    Unavailable,
}

/// Why an outgoing call was not dispatched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// The host refused it (unknown cluster, bad arguments).
    Refused,
    /// The host cannot make this kind of call at all.
    Unsupported,
}

/// The answer to an outgoing call, delivered to the context that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallResponse {
    /// `status` is `None` (and `headers` empty) when the call failed without
    /// an answer: reset, timeout, no healthy upstream.
    Http {
        token: u32,
        status: Option<u16>,
        headers: Headers,
        body: Vec<u8>,
    },
    /// gRPC status code (0 = OK) and the response message.
    Grpc {
        token: u32,
        status: u32,
        message: Vec<u8>,
    },
}

impl CallResponse {
    pub fn token(&self) -> u32 {
        match self {
            CallResponse::Http { token, .. } | CallResponse::Grpc { token, .. } => *token,
        }
    }
}

/// Everything a filter may ask of its proxy for one request.
///
/// The methods after `increment_counter` have defaults meaning "this host
/// cannot": test doubles that only need headers stay small, and a filter
/// always has an answer to handle rather than a trap.
pub trait Host {
    fn kind(&self) -> HostKind;

    /// The whole map, shared with the host's per-callback copy: reading it
    /// costs no allocation (a filter that writes while holding it pays one copy).
    fn request_headers(&self) -> Rc<Headers>;
    fn request_header(&self, name: &str) -> Option<Vec<u8>>;
    fn set_request_header(&mut self, name: &str, value: &[u8]);
    /// Host-aware removal (see [`HostKind::strips_request_headers_by_overwrite`]).
    fn remove_request_header(&mut self, name: &str);

    fn response_headers(&self) -> Rc<Headers>;
    fn response_header(&self, name: &str) -> Option<Vec<u8>>;
    fn set_response_header(&mut self, name: &str, value: &[u8]);
    fn add_response_header(&mut self, name: &str, value: &[u8]);
    fn remove_response_header(&mut self, name: &str);

    /// Response trailers (gRPC status lives there). Kong has none.
    fn response_trailer(&self, name: &str) -> Option<Vec<u8>>;
    fn set_response_trailer(&mut self, name: &str, value: &[u8]);
    fn remove_response_trailer(&mut self, name: &str);

    /// Bytes of the current response body buffer.
    fn response_body(&self, start: usize, len: usize) -> Option<Vec<u8>>;
    /// Replaces `len` bytes at `start` of the current response body buffer.
    fn set_response_body(&mut self, start: usize, len: usize, data: &[u8]);

    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;

    /// A local reply. The caller must return [`crate::Flow::Pause`] afterwards.
    fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]);

    /// Whether a local reply was sent in the current callback: a chain
    /// stops its controls there. (The reply then comes back through the
    /// response callbacks, where this starts false again.)
    fn local_reply_sent(&self) -> bool {
        false
    }

    /// HTTP and gRPC calls this stream dispatched so far: a Pause after a
    /// new call waits for its answer, one without waits for the body.
    fn calls_dispatched(&self) -> u32 {
        0
    }

    fn log(&self, level: Level, message: &str);

    /// Defines a counter; `None` if the host refused (then counting is a no-op).
    fn define_counter(&mut self, name: &str) -> Option<u32>;
    fn increment_counter(&mut self, id: u32, by: i64);

    /// The host's clock, nanoseconds since the Unix epoch (0 if unknown).
    fn now_nanos(&self) -> u64 {
        0
    }

    fn shared_get(&self, _key: &str) -> Shared {
        Shared::default()
    }

    /// Writes `key`; with `cas`, only if nobody wrote it since that read.
    fn shared_set(
        &mut self,
        _key: &str,
        _value: &[u8],
        _cas: Option<u32>,
    ) -> Result<(), SharedError> {
        Err(SharedError::Unavailable)
    }

    /// Bytes of the buffered request body (request body callback only).
    fn request_body(&self, _start: usize, _len: usize) -> Option<Vec<u8>> {
        None
    }

    fn set_request_body(&mut self, _start: usize, _len: usize, _data: &[u8]) {}

    /// Envoy keeps it as filter state, readable by later wasm filters of the
    /// same request through [`Host::property`] with the same path.
    fn set_property(&mut self, _path: &[&str], _value: &[u8]) {}

    /// An HTTP call; the answer comes to `on_call_response` with the token.
    /// `upstream` from [`HostKind::http_call_upstream`].
    fn http_call(
        &mut self,
        _upstream: &str,
        _headers: &[(&str, &str)],
        _body: Option<&[u8]>,
        _timeout_ms: u64,
    ) -> Result<u32, CallError> {
        Err(CallError::Unsupported)
    }

    /// A unary gRPC call (Envoy only, see [`HostKind::supports_grpc_calls`]).
    fn grpc_call(
        &mut self,
        _cluster: &str,
        _service: &str,
        _method: &str,
        _metadata: &[(&str, &[u8])],
        _message: &[u8],
        _timeout_ms: u64,
    ) -> Result<u32, CallError> {
        Err(CallError::Unsupported)
    }

    /// A host foreign function; `None` if the host has none or it failed.
    fn foreign_function(&mut self, _name: &str, _args: &[u8]) -> Option<Vec<u8>> {
        None
    }

    /// Lets a request paused for an outgoing call go on.
    fn resume_request(&mut self) {}

    /// A header's value as text, if it is UTF-8.
    fn request_header_str(&self, name: &str) -> Option<String> {
        self.request_header(name)
            .and_then(|v| String::from_utf8(v).ok())
    }

    fn response_header_str(&self, name: &str) -> Option<String> {
        self.response_header(name)
            .and_then(|v| String::from_utf8(v).ok())
    }

    /// The route's name on either host.
    fn route_name(&self) -> Option<String> {
        let kind = self.kind();
        self.property(kind.route_name_property())
            .and_then(|raw| kind.decode_string(&raw))
    }

    /// Response status from `:status`; 0 when missing or malformed.
    fn response_status(&self) -> u16 {
        self.response_header(":status")
            .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse().ok())
            .unwrap_or(0)
    }
}
