//! proxy-wasm adapter: moves headers, bodies and properties between the host
//! and a [`Plugin`], and nothing else. The SDK's `hostcalls` still panic on
//! statuses they do not expect (that traps the VM), so the glue avoids the
//! calls a host refuses: header maps and bodies are touched only in their own
//! phase ([`Phase::allows`]), and body writes always cover the whole current
//! buffer. The `Result`s left are for the statuses the SDK does return.

use crate::audit::AuditMode;
use crate::filter::{Flow, HttpFilter, Plugin};
use crate::headers;
use crate::host::{
    CallError, CallResponse, Headers, Host, HostKind, Level, Phase, Resource, Shared, SharedError,
};
use crate::problem::Problem;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
use std::cell::{Cell, RefCell};
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
        fn proxy_get_property(
            path_data: *const u8,
            path_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        fn proxy_set_effective_context(context_id: u32) -> u32;
    }

    /// A property, or `None` for any status but OK: Kong answers root
    /// contexts' property reads with statuses the SDK's wrapper panics on.
    pub fn get_property(path: &[&str]) -> Option<Vec<u8>> {
        let serialized = path.join("\0");
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: valid out-pointers; the host fills `data` from this
        // module's allocator.
        let status = unsafe {
            proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut size)
        };
        if status != OK || data.is_null() {
            return None;
        }
        // SAFETY: allocated by the SDK's exported allocator for `size` bytes.
        Some(unsafe { Vec::from_raw_parts(data, size, size) })
    }

    /// Makes later host calls act on stream `context_id` (from a root
    /// context's tick, say).
    pub fn set_effective_context(context_id: u32) -> bool {
        // SAFETY: no pointers involved.
        unsafe { proxy_set_effective_context(context_id) == OK }
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
    /// HTTP/gRPC calls dispatched by this stream so far.
    calls_dispatched: u32,
    /// A local reply was sent in the current callback.
    replied: bool,
    request: RefCell<Option<Rc<Headers>>>,
    response: RefCell<Option<Rc<Headers>>>,
    /// This stream's audit record as last written: Kong keeps no filter
    /// state between filters (it declines unknown properties), so there the
    /// record lives here, holding this module's own verdicts.
    audit: Option<Vec<u8>>,
}

impl ProxyWasmHost {
    /// What a root context can tell (see [`HostKind::detect_in_root`]).
    fn detect_in_root() -> HostKind {
        HostKind::detect_in_root(abi::set_effective_context(u32::MAX))
    }

    /// Inside a request both hosts answer: Kong has `ngx.*`, Envoy not.
    fn detect_in_request() -> HostKind {
        HostKind::detect_in_request(abi::get_property(crate::host::KONG_PROBE).as_deref())
    }

    fn new(kind: HostKind) -> Self {
        ProxyWasmHost {
            kind,
            phase: Phase::Root,
            request_headers_sent: false,
            calls_dispatched: 0,
            replied: false,
            request: RefCell::new(None),
            response: RefCell::new(None),
            audit: None,
        }
    }

    /// Starts a callback: other filters may have changed the maps since.
    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.replied = false;
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
        if self.kind != HostKind::Envoy && path == [crate::audit::PROPERTY] {
            return self.audit.clone();
        }
        abi::get_property(path)
    }

    fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        self.replied = true;
        let _ = hostcalls::send_http_response(u32::from(status), headers.to_vec(), Some(body));
    }

    fn local_reply_sent(&self) -> bool {
        self.replied
    }

    fn calls_dispatched(&self) -> u32 {
        self.calls_dispatched
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
        if path == [crate::audit::PROPERTY] {
            self.audit = Some(value.to_vec());
            if self.kind != HostKind::Envoy {
                return;
            }
        }
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
        // Nothing host-specific before the host is known; Kong traps a
        // call made outside the phases it allows (and kills the worker
        // from `on_configure`).
        let allowed = match self.kind {
            HostKind::Envoy => true,
            HostKind::Kong => self.phase.kong_allows_dispatch(),
            HostKind::Unknown => false,
        };
        if !allowed {
            return Err(CallError::Unsupported);
        }
        let token = hostcalls::dispatch_http_call(
            upstream,
            headers.to_vec(),
            body,
            Vec::new(),
            Duration::from_millis(timeout_ms),
        )
        .map_err(|_| CallError::Refused)?;
        self.calls_dispatched += 1;
        Ok(token)
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
        let token = hostcalls::dispatch_grpc_call(
            cluster,
            service,
            method,
            metadata.to_vec(),
            Some(message),
            Duration::from_millis(timeout_ms),
        )
        .map_err(|_| CallError::Refused)?;
        self.calls_dispatched += 1;
        Ok(token)
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
    proxy_wasm::set_root_context(|root_id| {
        Box::new(PluginRoot::<P> {
            root_id,
            plugin: None,
            vm: Rc::new(Vm::default()),
        })
    });
}

/// What a VM's root context and its streams share.
#[derive(Default)]
struct Vm {
    kind: Cell<HostKind>,
    /// The first request checked the root's detection.
    confirmed: Cell<bool>,
    /// Set when the config proved unusable on the host the first request
    /// revealed: every request is then refused, as a refused config would be.
    refused: Cell<bool>,
    /// The plugin may hold response headers: requests then note their id
    /// for the watchdog's answer (read once at configure, not per request).
    holds_response: Cell<bool>,
    held: RefCell<HeldRequests>,
}

/// Per-VM state: the validated config, shared by every request.
pub struct PluginRoot<P: Plugin> {
    /// To hand the effective context back after acting on a stream.
    root_id: u32,
    plugin: Option<Rc<P>>,
    vm: Rc<Vm>,
}

impl<P: Plugin> PluginRoot<P> {
    fn root_host(&self, phase: Phase) -> ProxyWasmHost {
        let mut host = ProxyWasmHost::new(self.vm.kind.get());
        host.enter(phase);
        host
    }

    fn deliver(&self, response: CallResponse) {
        if let Some(plugin) = &self.plugin {
            let mut host = self.root_host(Phase::CallResponse);
            plugin.on_call_response(&mut host, response);
        }
    }

    /// Answers every request held longer than [`HOLD_TIMEOUT_NS`] without
    /// a body callback, naming the proxy setting that is missing.
    fn expire_held(&self, host: &mut ProxyWasmHost) {
        let now = host.now_nanos();
        let expired = self.vm.held.borrow_mut().expire(now);
        for held in expired {
            let first = !self.vm.held.borrow().reported;
            self.vm.held.borrow_mut().reported = true;
            host.log(
                if first { Level::Error } else { Level::Debug },
                &format!(
                    "palisade.{}: request_id={} headers held {} s for the body and no body callback came: \
                     Envoy delivers bodies to a filter that holds the headers only with \
                     `allow_on_headers_stop_iteration: true` in the Wasm filter's config \
                     (Istio's WasmPlugin cannot set it: use hold_headers: false); answered 500",
                    held.filter,
                    held.request_id.as_deref().unwrap_or("-"),
                    HOLD_TIMEOUT_NS / 1_000_000_000,
                ),
            );
            if abi::set_effective_context(held.context_id) {
                Problem::new(500)
                    .detail("The proxy is not configured to pass request bodies to this check.")
                    .request_id(held.request_id.as_deref())
                    .send(host, &[(crate::context::DENIED_BY_HEADER, held.filter)]);
            }
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
        // Kong answers no property in a root context: the probe is a call
        // both hosts answer there, differently. The first request confirms.
        self.vm.kind.set(ProxyWasmHost::detect_in_root());
        let mut host = self.root_host(Phase::Configure);
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let checked = P::configure(&config, &mut host).and_then(|plugin| {
            match host.kind() {
                HostKind::Unknown => {}
                kind => plugin.check_host(kind)?,
            }
            Ok(plugin)
        });
        match checked {
            Ok(plugin) => {
                let on = match host.kind() {
                    HostKind::Unknown => "host known at the first request".to_string(),
                    kind => format!("on {}", kind.name()),
                };
                host.log(
                    Level::Info,
                    &format!("palisade.{}: configured ({on})", P::NAME),
                );
                self.vm.holds_response.set(plugin.holds_response_headers());
                let holds = plugin.holds_request_headers() || plugin.holds_response_headers();
                let tick = match (plugin.tick_period_ms(), holds) {
                    (Some(ms), true) => Some(ms.min(WATCHDOG_TICK_MS)),
                    (Some(ms), false) => Some(ms),
                    (None, true) => Some(WATCHDOG_TICK_MS),
                    (None, false) => None,
                };
                if let Some(ms) = tick {
                    let _ = hostcalls::set_tick_period(Duration::from_millis(ms.max(1)));
                }
                self.plugin = Some(Rc::new(plugin));
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
        let mut host = self.root_host(Phase::Tick);
        // Kong: a root context acting on a stream crashes the worker (and
        // no filter holds request headers there).
        if host.kind() == HostKind::Envoy && !self.vm.held.borrow().is_empty() {
            self.expire_held(&mut host);
            // Later host calls of this tick are the root's own again.
            let _ = abi::set_effective_context(self.root_id);
        }
        // Background work is host-specific (calls): it waits for the host.
        if let (Some(plugin), true) = (&self.plugin, self.vm.kind.get().is_known()) {
            if !self.vm.refused.get() {
                plugin.on_tick(&mut host);
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(PluginHttp::<P> {
            context_id,
            request_id: None,
            filter: self.plugin.as_ref().map(P::new_filter),
            plugin: self.plugin.clone(),
            vm: Rc::clone(&self.vm),
            host: self.root_host(Phase::RequestHeaders),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// How often a plugin that may hold request headers looks for held requests.
const WATCHDOG_TICK_MS: u64 = 1_000;

/// How long a request may wait, with its headers held, for a first body
/// callback. Envoy without `allow_on_headers_stop_iteration` never makes
/// one, and Kong never reads the body of such a request: the client would
/// hang until its own timeout, with nothing logged.
pub const HOLD_TIMEOUT_NS: u64 = 5_000_000_000;

/// Streams whose headers a filter holds while it waits for the body.
#[derive(Default)]
struct HeldRequests {
    streams: Vec<Held>,
    /// The first expiry is logged as an error, later ones at debug.
    reported: bool,
}

struct Held {
    context_id: u32,
    since: u64,
    request_id: Option<String>,
    /// The control holding it, for the log line and `x-palisade-denied-by`.
    filter: &'static str,
}

impl HeldRequests {
    fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    fn hold(&mut self, held: Held) {
        self.release(held.context_id);
        self.streams.push(held);
    }

    fn release(&mut self, context_id: u32) {
        self.streams.retain(|h| h.context_id != context_id);
    }

    fn expire(&mut self, now: u64) -> Vec<Held> {
        let (expired, kept) = std::mem::take(&mut self.streams)
            .into_iter()
            .partition(|h| now.saturating_sub(h.since) >= HOLD_TIMEOUT_NS);
        self.streams = kept;
        expired
    }
}

/// One stream: forwards each callback to the filter, or fails closed when
/// the VM has no usable config.
struct PluginHttp<P: Plugin> {
    context_id: u32,
    /// Read from the request headers, for the watchdog's reply and log.
    request_id: Option<String>,
    filter: Option<P::Filter>,
    plugin: Option<Rc<P>>,
    vm: Rc<Vm>,
    host: ProxyWasmHost,
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

impl<P: Plugin> PluginHttp<P> {
    /// Learns the host from the first request of the VM and checks the
    /// config against it; `false` when the config cannot run there.
    fn settle_host(&mut self) -> bool {
        if !self.vm.confirmed.get() {
            self.vm.confirmed.set(true);
            let kind = ProxyWasmHost::detect_in_request();
            let root = self.vm.kind.replace(kind);
            if root == kind {
                self.host.kind = kind;
                return !self.vm.refused.get();
            }
            if root.is_known() {
                self.host.log(
                    Level::Warn,
                    &format!(
                        "palisade.{}: the root context took this host for {}; requests show {}",
                        P::NAME,
                        root.name(),
                        kind.name()
                    ),
                );
            }
            if let Some(plugin) = &self.plugin {
                if let Err(e) = plugin.check_host(kind) {
                    self.vm.refused.set(true);
                    self.host.log(
                        Level::Error,
                        &format!(
                            "palisade.{}: invalid configuration on {}: {e}; every request is refused",
                            P::NAME,
                            kind.name()
                        ),
                    );
                } else {
                    self.host.log(
                        Level::Info,
                        &format!("palisade.{}: running on {}", P::NAME, kind.name()),
                    );
                }
            }
        }
        self.host.kind = self.vm.kind.get();
        !self.vm.refused.get()
    }

    /// A refused or missing config: 503, as a VM that failed to start would.
    fn fail_closed(&mut self) -> Action {
        self.filter = None;
        let ctx = crate::RequestContext::new(P::NAME, &self.host);
        Problem::new(503)
            .request_id(ctx.request_id.as_deref())
            .send(
                &mut self.host,
                &[(crate::context::DENIED_BY_HEADER, P::NAME)],
            );
        Action::Pause
    }

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
        let Some(filter) = self.filter.as_mut() else {
            return;
        };
        if filter.on_call_response(&mut self.host, response) == Flow::Continue {
            self.host.resume_request();
            self.host.request_headers_sent = true;
        }
    }

    /// Registers the stream with the watchdog (see [`HOLD_TIMEOUT_NS`]).
    fn hold(&self) {
        let filter = self
            .filter
            .as_ref()
            .and_then(|f| f.holder())
            .unwrap_or(P::NAME);
        self.vm.held.borrow_mut().hold(Held {
            context_id: self.context_id,
            since: self.host.now_nanos(),
            request_id: self.request_id.clone(),
            filter,
        });
    }

    fn release(&self) {
        if !self.vm.held.borrow().is_empty() {
            self.vm.held.borrow_mut().release(self.context_id);
        }
    }
}

impl<P: Plugin> Context for PluginHttp<P> {
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

    fn on_done(&mut self) -> bool {
        self.release();
        self.host.enter(Phase::Done);
        if let Some(filter) = self.filter.as_mut() {
            filter.on_stream_done(&mut self.host);
        }
        if self.plugin.as_ref().map(|p| p.audit_mode()) == Some(AuditMode::All) {
            crate::audit::finish(&self.host, &[P::NAME]);
        }
        true
    }
}

impl<P: Plugin> HttpContext for PluginHttp<P> {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        self.host.enter(Phase::RequestHeaders);
        if !self.settle_host() {
            return self.fail_closed();
        }
        let Some(filter) = self.filter.as_mut() else {
            return self.fail_closed();
        };
        let calls = self.host.calls_dispatched;
        let flow = filter.on_request_headers(&mut self.host, end_of_stream);
        // For the watchdog's answer to a held response (request headers
        // cannot be read from response callbacks).
        if self.host.kind == HostKind::Envoy && self.vm.holds_response.get() {
            self.request_id = crate::RequestContext::new(P::NAME, &self.host).request_id;
        }
        // Held for the body, with no call whose answer would resume it.
        if flow == Flow::Pause
            && self.host.kind == HostKind::Envoy
            && !end_of_stream
            && !self.host.replied
            && self.host.calls_dispatched == calls
        {
            self.request_id = crate::RequestContext::new(P::NAME, &self.host).request_id;
            self.hold();
        }
        self.request_flow(flow)
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.release();
        self.host.enter(Phase::RequestBody);
        let Some(filter) = self.filter.as_mut() else {
            return Action::Continue;
        };
        let flow = filter.on_request_body(&mut self.host, size, end_of_stream);
        self.request_flow(flow)
    }

    fn on_http_request_trailers(&mut self, _n: usize) -> Action {
        self.release();
        self.host.enter(Phase::RequestTrailers);
        let Some(filter) = self.filter.as_mut() else {
            return Action::Continue;
        };
        let flow = filter.on_request_trailers(&mut self.host);
        self.request_flow(flow)
    }

    fn on_http_response_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        self.release();
        self.host.enter(Phase::ResponseHeaders);
        let Some(filter) = self.filter.as_mut() else {
            return Action::Continue;
        };
        let replied = self.host.replied;
        let flow = filter.on_response_headers(&mut self.host, end_of_stream);
        if flow == Flow::Pause
            && self.host.kind == HostKind::Envoy
            && !end_of_stream
            && self.host.replied == replied
        {
            self.hold();
        }
        action(flow)
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.release();
        self.host.enter(Phase::ResponseBody);
        match self.filter.as_mut() {
            Some(f) => action(f.on_response_body(&mut self.host, size, end_of_stream)),
            None => Action::Continue,
        }
    }

    fn on_http_response_trailers(&mut self, _n: usize) -> Action {
        self.host.enter(Phase::ResponseTrailers);
        match self.filter.as_mut() {
            Some(f) => action(f.on_response_trailers(&mut self.host)),
            None => Action::Continue,
        }
    }
}
