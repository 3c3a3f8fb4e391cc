//! proxy-wasm adapter: moves headers, bodies and properties between the host
//! and a [`Plugin`], and nothing else. The SDK's `hostcalls` still panic on
//! statuses they do not expect (that traps the VM), so the glue avoids the
//! calls a host refuses: header maps and bodies are touched only in their own
//! phase ([`Phase::allows`]), and body writes always cover the whole current
//! buffer. The `Result`s left are for the statuses the SDK does return.

use crate::filter::{Flow, HttpFilter, Plugin};
use crate::headers;
use crate::host::{
    CallError, CallResponse, Headers, Host, HostKind, Level, Phase, Resource, Shared, SharedError,
};
use crate::problem::Problem;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::Duration;

/// Raw ABI calls for the hostcalls whose SDK wrappers panic on statuses a
/// host may legitimately return (a stream already gone, a full or missing
/// shared-data zone). Statuses are read as plain integers: a value outside
/// the SDK's enum must not be undefined behaviour.
mod abi {
    use std::ptr::{null, null_mut};

    const OK: u32 = 0;
    const NOT_FOUND: u32 = 1;
    const CAS_MISMATCH: u32 = 8;
    /// `proxy_continue_stream`'s stream type for the request.
    const STREAM_REQUEST: u32 = 0;

    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_get_shared_data(
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
            return_cas: *mut u32,
        ) -> u32;
        fn proxy_set_shared_data(
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
            cas: u32,
        ) -> u32;
        fn proxy_set_property(
            path_data: *const u8,
            path_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        fn proxy_continue_stream(stream_type: u32) -> u32;
        fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    }

    /// `Err(())` when the host has no usable store.
    pub fn get_shared(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), ()> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        let mut cas: u32 = 0;
        // SAFETY: the out-pointers are valid for the call; the host fills
        // `data` with memory it obtained from this module's allocator.
        let status = unsafe {
            proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas)
        };
        match status {
            OK => {
                let value = if data.is_null() {
                    None
                } else {
                    // SAFETY: allocated by the SDK's exported allocator for `size` bytes.
                    Some(unsafe { Vec::from_raw_parts(data, size, size) })
                };
                Ok((value, (cas != 0).then_some(cas)))
            }
            NOT_FOUND => Ok((None, None)),
            _ => Err(()),
        }
    }

    pub enum SetShared {
        Done,
        CasMismatch,
        Failed,
    }

    pub fn set_shared(key: &str, value: &[u8], cas: Option<u32>) -> SetShared {
        // SAFETY: pointers and lengths describe live slices.
        let status = unsafe {
            proxy_set_shared_data(
                key.as_ptr(),
                key.len(),
                value.as_ptr(),
                value.len(),
                cas.unwrap_or(0),
            )
        };
        match status {
            OK => SetShared::Done,
            CAS_MISMATCH => SetShared::CasMismatch,
            _ => SetShared::Failed,
        }
    }

    /// Property paths are NUL-separated segments.
    pub fn set_property(path: &[&str], value: &[u8]) -> bool {
        let serialized = path.join("\0");
        let ptr = if value.is_empty() {
            null()
        } else {
            value.as_ptr()
        };
        // SAFETY: pointers and lengths describe live buffers.
        unsafe { proxy_set_property(serialized.as_ptr(), serialized.len(), ptr, value.len()) == OK }
    }

    pub fn resume_request() -> bool {
        // SAFETY: no pointers involved.
        unsafe { proxy_continue_stream(STREAM_REQUEST) == OK }
    }

    pub fn now_nanos() -> u64 {
        let mut t: u64 = 0;
        // SAFETY: valid out-pointer.
        match unsafe { proxy_get_current_time_nanoseconds(&mut t) } {
            OK => t,
            _ => 0,
        }
    }
}

/// [`Host`] over the real proxy-wasm ABI.
///
/// Each host call crosses the VM boundary (and one that returns data calls
/// back into the module to allocate): that crossing, not the filters' logic,
/// is most of a wasm filter's cost. So within one callback the request or
/// response header map is fetched once, on first use, and every lookup and
/// write after that is served from (and kept in step with) that copy.
#[derive(Debug)]
pub struct ProxyWasmHost {
    kind: HostKind,
    phase: Phase,
    /// Set once a request callback let the request go on: its headers have
    /// left for the upstream, and Envoy answers a later write to them with
    /// a status the SDK turns into a trap, so such writes are dropped.
    request_headers_sent: bool,
    request: RefCell<Option<Rc<Headers>>>,
    response: RefCell<Option<Rc<Headers>>>,
}

impl ProxyWasmHost {
    /// Detects the host once; Kong answers `ngx.*` properties, Envoy does not.
    pub fn detect() -> Self {
        let ngx = hostcalls::get_property(vec!["ngx", "nginx_version"])
            .ok()
            .flatten();
        ProxyWasmHost::new(HostKind::detect(ngx.as_deref()))
    }

    fn new(kind: HostKind) -> Self {
        ProxyWasmHost {
            kind,
            phase: Phase::Root,
            request_headers_sent: false,
            request: RefCell::new(None),
            response: RefCell::new(None),
        }
    }

    /// Starts a callback: other filters may have changed the maps since.
    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.request = RefCell::new(None);
        self.response = RefCell::new(None);
    }

    /// Whether `map` may be written now (see `request_headers_sent`).
    fn writable(&self, map: MapType) -> Option<MapType> {
        if map == MapType::HttpRequestHeaders && self.request_headers_sent {
            let _ = hostcalls::log(
                LogLevel::Debug,
                "palisade: request header write after the headers were sent: dropped",
            );
            return None;
        }
        self.map(map)
    }

    fn map(&self, map: MapType) -> Option<MapType> {
        let resource = match map {
            MapType::HttpRequestHeaders => Resource::RequestHeaders,
            MapType::HttpRequestTrailers => Resource::RequestHeaders,
            MapType::HttpResponseHeaders => Resource::ResponseHeaders,
            MapType::HttpResponseTrailers => Resource::ResponseTrailers,
            _ => return None,
        };
        self.phase.allows(resource).then_some(map)
    }

    fn cache(&self, map: MapType) -> Option<&RefCell<Option<Rc<Headers>>>> {
        match map {
            MapType::HttpRequestHeaders => Some(&self.request),
            MapType::HttpResponseHeaders => Some(&self.response),
            _ => None,
        }
    }

    fn fetch(map: MapType) -> Headers {
        hostcalls::get_map_bytes(map)
            .unwrap_or_default()
            .into_iter()
            .map(|(mut n, v)| {
                n.make_ascii_lowercase();
                (n, v)
            })
            .collect()
    }

    /// The map, fetched at most once per callback.
    fn shared_map(&self, map: MapType) -> Option<Rc<Headers>> {
        let map = self.map(map)?;
        match self.cache(map) {
            Some(cell) => Some(
                cell.borrow_mut()
                    .get_or_insert_with(|| Rc::new(Self::fetch(map)))
                    .clone(),
            ),
            None => Some(Rc::new(Self::fetch(map))),
        }
    }

    /// Keeps the cached copy in step with a write; copies it only if a
    /// filter still holds the map it was given.
    fn update_cache(&self, map: MapType, change: impl FnOnce(&mut Headers)) {
        if let Some(cell) = self.cache(map) {
            if let Some(headers) = cell.borrow_mut().as_mut() {
                change(Rc::make_mut(headers));
            }
        }
    }

    fn buffer(resource: Resource) -> BufferType {
        match resource {
            Resource::RequestBody => BufferType::HttpRequestBody,
            _ => BufferType::HttpResponseBody,
        }
    }

    /// A body buffer, only in the phases that own it.
    fn get_body(&self, resource: Resource, start: usize, len: usize) -> Option<Vec<u8>> {
        if !self.phase.allows(resource) {
            return None;
        }
        hostcalls::get_buffer(Self::buffer(resource), start, len)
            .ok()
            .flatten()
    }

    fn set_body(&self, resource: Resource, start: usize, len: usize, data: &[u8]) {
        if self.phase.allows(resource) {
            let _ = hostcalls::set_buffer(Self::buffer(resource), start, len, data);
        }
    }

    fn get_headers(&self, map: MapType) -> Rc<Headers> {
        self.shared_map(map).unwrap_or_default()
    }

    fn get_header(&self, map: MapType, name: &str) -> Option<Vec<u8>> {
        let cached = self
            .shared_map(map)
            .and_then(|h| headers::find(&h, name).map(<[u8]>::to_vec));
        if cached.is_none() && name.starts_with(':') && self.kind == HostKind::Kong {
            // Kong may leave pseudo-headers out of the pairs; ask for them directly.
            return hostcalls::get_map_value_bytes(self.map(map)?, name)
                .ok()
                .flatten();
        }
        cached
    }

    fn set_header(&self, map: MapType, name: &str, value: &[u8]) {
        if let Some(m) = self.writable(map) {
            let _ = hostcalls::set_map_value_bytes(m, name, Some(value));
            self.update_cache(m, |h| headers::set(h, name, value));
        }
    }

    fn add_header(&self, map: MapType, name: &str, value: &[u8]) {
        if let Some(m) = self.writable(map) {
            let _ = hostcalls::add_map_value_bytes(m, name, value);
            self.update_cache(m, |h| headers::add(h, name, value));
        }
    }

    fn remove_header(&self, map: MapType, name: &str) {
        if let Some(m) = self.writable(map) {
            let _ = hostcalls::remove_map_value(m, name);
            self.update_cache(m, |h| headers::remove(h, name));
        }
    }
}

impl Host for ProxyWasmHost {
    fn kind(&self) -> HostKind {
        self.kind
    }

    fn request_headers(&self) -> Rc<Headers> {
        self.get_headers(MapType::HttpRequestHeaders)
    }

    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        self.get_header(MapType::HttpRequestHeaders, name)
    }

    fn set_request_header(&mut self, name: &str, value: &[u8]) {
        self.set_header(MapType::HttpRequestHeaders, name, value);
    }

    fn remove_request_header(&mut self, name: &str) {
        if self.kind.strips_request_headers_by_overwrite() {
            if self.request_header(name).is_some() {
                self.set_header(MapType::HttpRequestHeaders, name, b"");
            }
        } else {
            self.remove_header(MapType::HttpRequestHeaders, name);
        }
    }

    fn response_headers(&self) -> Rc<Headers> {
        self.get_headers(MapType::HttpResponseHeaders)
    }

    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        self.get_header(MapType::HttpResponseHeaders, name)
    }

    fn set_response_header(&mut self, name: &str, value: &[u8]) {
        self.set_header(MapType::HttpResponseHeaders, name, value);
    }

    fn add_response_header(&mut self, name: &str, value: &[u8]) {
        self.add_header(MapType::HttpResponseHeaders, name, value);
    }

    fn remove_response_header(&mut self, name: &str) {
        self.remove_header(MapType::HttpResponseHeaders, name);
    }

    fn response_trailer(&self, name: &str) -> Option<Vec<u8>> {
        self.get_header(MapType::HttpResponseTrailers, name)
    }

    fn set_response_trailer(&mut self, name: &str, value: &[u8]) {
        self.set_header(MapType::HttpResponseTrailers, name, value);
    }

    fn remove_response_trailer(&mut self, name: &str) {
        self.remove_header(MapType::HttpResponseTrailers, name);
    }

    fn response_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        self.get_body(Resource::ResponseBody, start, len)
    }

    fn set_response_body(&mut self, start: usize, len: usize, data: &[u8]) {
        self.set_body(Resource::ResponseBody, start, len, data);
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }

    fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        let _ = hostcalls::send_http_response(u32::from(status), headers.to_vec(), Some(body));
    }

    fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        let _ = hostcalls::log(level, message);
    }

    fn define_counter(&mut self, name: &str) -> Option<u32> {
        hostcalls::define_metric(MetricType::Counter, name).ok()
    }

    fn increment_counter(&mut self, id: u32, by: i64) {
        let _ = hostcalls::increment_metric(id, by);
    }

    fn now_nanos(&self) -> u64 {
        abi::now_nanos()
    }

    fn shared_get(&self, key: &str) -> Shared {
        match abi::get_shared(key) {
            Ok((value, cas)) => Shared { value, cas },
            Err(()) => Shared::default(),
        }
    }

    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedError> {
        match abi::set_shared(key, value, cas) {
            abi::SetShared::Done => Ok(()),
            abi::SetShared::CasMismatch => Err(SharedError::CasMismatch),
            abi::SetShared::Failed => Err(SharedError::Unavailable),
        }
    }

    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        self.get_body(Resource::RequestBody, start, len)
    }

    fn set_request_body(&mut self, start: usize, len: usize, data: &[u8]) {
        self.set_body(Resource::RequestBody, start, len, data);
    }

    fn set_property(&mut self, path: &[&str], value: &[u8]) {
        if !abi::set_property(path, value) {
            self.log(
                Level::Debug,
                &format!("set_property {} refused", path.join(".")),
            );
        }
    }

    fn http_call(
        &mut self,
        upstream: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u64,
    ) -> Result<u32, CallError> {
        hostcalls::dispatch_http_call(
            upstream,
            headers.to_vec(),
            body,
            Vec::new(),
            Duration::from_millis(timeout_ms),
        )
        .map_err(|_| CallError::Refused)
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
        if !self.kind.supports_grpc_calls() {
            return Err(CallError::Unsupported);
        }
        hostcalls::dispatch_grpc_call(
            cluster,
            service,
            method,
            metadata.to_vec(),
            Some(message),
            Duration::from_millis(timeout_ms),
        )
        .map_err(|_| CallError::Refused)
    }

    fn foreign_function(&mut self, name: &str, args: &[u8]) -> Option<Vec<u8>> {
        // Kong kills the instance on an unknown foreign function: never try there.
        if self.kind != HostKind::Envoy {
            return None;
        }
        hostcalls::call_foreign_function(name, Some(args))
            .ok()
            .flatten()
    }

    fn resume_request(&mut self) {
        if !abi::resume_request() {
            self.log(Level::Debug, "resume_request refused: stream gone");
        }
    }
}

/// Collects an HTTP call's answer; a failed call has no headers and no status.
fn http_call_response(token: u32, body_size: usize) -> CallResponse {
    let headers: Headers = hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders)
        .unwrap_or_default()
        .into_iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v))
        .collect();
    let status = headers::find(&headers, ":status")
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok());
    let body = if body_size == 0 {
        Vec::new()
    } else {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    CallResponse::Http {
        token,
        status,
        headers,
        body,
    }
}

fn grpc_call_response(token: u32, status: u32, size: usize) -> CallResponse {
    let message = if size == 0 {
        Vec::new()
    } else {
        hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    CallResponse::Grpc {
        token,
        status,
        message,
    }
}

/// Registers `P` as the module's root context. Called from [`crate::export_plugin!`].
pub fn start<P: Plugin>() {
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| {
        Box::new(PluginRoot::<P> {
            plugin: None,
            kind: None,
        })
    });
}

/// Per-VM state: the validated config, shared by every request.
pub struct PluginRoot<P: Plugin> {
    plugin: Option<Rc<P>>,
    kind: Option<HostKind>,
}

impl<P: Plugin> PluginRoot<P> {
    fn root_host(&self) -> ProxyWasmHost {
        match self.kind {
            Some(kind) => ProxyWasmHost::new(kind),
            None => ProxyWasmHost::detect(),
        }
    }

    fn deliver(&self, response: CallResponse) {
        if let Some(plugin) = &self.plugin {
            let mut host = self.root_host();
            plugin.on_call_response(&mut host, response);
        }
    }
}

impl<P: Plugin> Context for PluginRoot<P> {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body: usize,
        _trailers: usize,
    ) {
        self.deliver(http_call_response(token, body));
    }

    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        self.deliver(grpc_call_response(token, status, size));
    }
}

impl<P: Plugin> RootContext for PluginRoot<P> {
    fn on_configure(&mut self, _size: usize) -> bool {
        let mut host = ProxyWasmHost::detect();
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        match P::configure(&config, &mut host) {
            Ok(plugin) => {
                host.log(
                    Level::Info,
                    &format!("palisade.{}: configured on {}", P::NAME, host.kind().name()),
                );
                if let Some(ms) = plugin.tick_period_ms() {
                    let _ = hostcalls::set_tick_period(Duration::from_millis(ms.max(1)));
                }
                self.plugin = Some(Rc::new(plugin));
                self.kind = Some(host.kind());
                true
            }
            Err(e) => {
                host.log(
                    Level::Error,
                    &format!("palisade.{}: invalid configuration: {e}", P::NAME),
                );
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(plugin) = &self.plugin {
            let mut host = self.root_host();
            plugin.on_tick(&mut host);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let host = self.root_host();
        Some(match &self.plugin {
            Some(plugin) => Box::new(PluginHttp {
                filter: P::new_filter(plugin),
                host,
            }),
            None => Box::new(PluginHttp {
                filter: Unconfigured::<P>(PhantomData),
                host,
            }),
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Fails closed if a host ever creates streams for a filter whose config was refused.
struct Unconfigured<P>(PhantomData<P>);

impl<P: Plugin> HttpFilter for Unconfigured<P> {
    fn on_request_headers(&mut self, host: &mut dyn Host, _eos: bool) -> Flow {
        let ctx = crate::RequestContext::new(P::NAME, host);
        Problem::new(503)
            .request_id(ctx.request_id.as_deref())
            .send(host, &[]);
        Flow::Pause
    }
}

/// One stream: forwards each callback to the filter.
struct PluginHttp<F: HttpFilter> {
    filter: F,
    host: ProxyWasmHost,
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

impl<F: HttpFilter> PluginHttp<F> {
    /// A request callback's verdict; `Continue` sends the headers upstream.
    fn request_flow(&mut self, flow: Flow) -> Action {
        if flow == Flow::Continue {
            self.host.request_headers_sent = true;
        }
        action(flow)
    }

    /// A call's answer arrives outside any stream callback: the stream stays
    /// in the phase it paused in (so its headers remain reachable), with
    /// fresh caches.
    fn deliver(&mut self, response: CallResponse) {
        let phase = self.host.phase;
        self.host.enter(phase);
        if self.filter.on_call_response(&mut self.host, response) == Flow::Continue {
            self.host.resume_request();
            self.host.request_headers_sent = true;
        }
    }
}

impl<F: HttpFilter> Context for PluginHttp<F> {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body: usize,
        _trailers: usize,
    ) {
        self.deliver(http_call_response(token, body));
    }

    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        self.deliver(grpc_call_response(token, status, size));
    }
}

impl<F: HttpFilter> HttpContext for PluginHttp<F> {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        self.host.enter(Phase::RequestHeaders);
        let flow = self
            .filter
            .on_request_headers(&mut self.host, end_of_stream);
        self.request_flow(flow)
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.host.enter(Phase::RequestBody);
        let flow = self
            .filter
            .on_request_body(&mut self.host, size, end_of_stream);
        self.request_flow(flow)
    }

    fn on_http_request_trailers(&mut self, _n: usize) -> Action {
        self.host.enter(Phase::RequestTrailers);
        let flow = self.filter.on_request_trailers(&mut self.host);
        self.request_flow(flow)
    }

    fn on_http_response_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        self.host.enter(Phase::ResponseHeaders);
        action(
            self.filter
                .on_response_headers(&mut self.host, end_of_stream),
        )
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.host.enter(Phase::ResponseBody);
        action(
            self.filter
                .on_response_body(&mut self.host, size, end_of_stream),
        )
    }

    fn on_http_response_trailers(&mut self, _n: usize) -> Action {
        self.host.enter(Phase::ResponseTrailers);
        action(self.filter.on_response_trailers(&mut self.host))
    }
}
