//! The one narrow door between a filter and its proxy.
//!
//! Filters talk to [`Host`] only; it is implemented once over proxy-wasm
//! (`glue::ProxyWasmHost`) and once in memory (`fake::FakeHost`) for tests.
//! The differences between Envoy and Kong's ngx_wasm_module (see
//! `shared/NOTES.md`) are absorbed by [`HostKind`]'s pure methods, so one
//! `.wasm` behaves the same on both and every difference has a unit test.

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
    #[default]
    Root,
    RequestHeaders,
    RequestBody,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
}

/// What a host call touches, for [`Phase::allows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    RequestHeaders,
    ResponseHeaders,
    ResponseTrailers,
    ResponseBody,
}

impl Phase {
    pub fn allows(self, resource: Resource) -> bool {
        match resource {
            Resource::RequestHeaders => {
                matches!(self, Phase::RequestHeaders | Phase::RequestBody)
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
}

impl HostKind {
    /// Kong exposes nginx variables as `ngx.*` properties; Envoy has none.
    pub fn detect(nginx_version_property: Option<&[u8]>) -> HostKind {
        match nginx_version_property {
            Some(v) if !v.is_empty() => HostKind::Kong,
            _ => HostKind::Envoy,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HostKind::Envoy => "envoy",
            HostKind::Kong => "kong",
        }
    }

    /// Property path of the route's name.
    pub fn route_name_property(self) -> &'static [&'static str] {
        match self {
            HostKind::Envoy => &["xds", "route_name"],
            HostKind::Kong => &["kong", "route_name"],
        }
    }

    /// Integers are 8-byte little-endian on Envoy and decimal strings on Kong.
    pub fn decode_u64(self, raw: &[u8]) -> Option<u64> {
        match self {
            HostKind::Envoy => <[u8; 8]>::try_from(raw).ok().map(u64::from_le_bytes),
            HostKind::Kong => std::str::from_utf8(raw).ok()?.trim().parse().ok(),
        }
    }

    /// Strings are raw bytes on both; Kong's may carry a trailing NUL.
    pub fn decode_string(self, raw: &[u8]) -> Option<String> {
        let raw = match self {
            HostKind::Kong => raw.strip_suffix(&[0]).unwrap_or(raw),
            HostKind::Envoy => raw,
        };
        std::str::from_utf8(raw).ok().map(str::to_string)
    }

    /// On Kong a removed request header still reaches the upstream, while an
    /// overwritten one does not: strip by overwriting with an empty value.
    pub fn strips_request_headers_by_overwrite(self) -> bool {
        self == HostKind::Kong
    }

    /// Envoy can replace a response with a local reply from the response
    /// headers callback; Kong drops its headers and keeps the upstream's
    /// `content-length`, hanging the client, so there bodies are rewritten.
    pub fn local_reply_from_response_headers(self) -> bool {
        self == HostKind::Envoy
    }

    /// Kong ignores Pause from response headers; Envoy honours it (and keeps
    /// calling body callbacks only with `allow_on_headers_stop_iteration`).
    pub fn honours_pause_in_response_headers(self) -> bool {
        self == HostKind::Envoy
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

    /// The client's `Host`: Kong's `:authority` is the server's own name.
    pub fn authority_header(self) -> &'static str {
        match self {
            HostKind::Envoy => ":authority",
            HostKind::Kong => "host",
        }
    }
}

/// Everything a filter may ask of its proxy for one request.
pub trait Host {
    fn kind(&self) -> HostKind;

    fn request_headers(&self) -> Headers;
    fn request_header(&self, name: &str) -> Option<Vec<u8>>;
    fn set_request_header(&mut self, name: &str, value: &[u8]);
    /// Host-aware removal (see [`HostKind::strips_request_headers_by_overwrite`]).
    fn remove_request_header(&mut self, name: &str);

    fn response_headers(&self) -> Headers;
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

    fn log(&self, level: Level, message: &str);

    /// Defines a counter; `None` if the host refused (then counting is a no-op).
    fn define_counter(&mut self, name: &str) -> Option<u32>;
    fn increment_counter(&mut self, id: u32, by: i64);

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
