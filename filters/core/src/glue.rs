//! proxy-wasm adapter: moves headers, bodies and properties between the host
//! and a [`Plugin`], and nothing else. The SDK's `hostcalls` still panic on
//! statuses they do not expect (that traps the VM), so the glue avoids the
//! calls a host refuses: header maps and bodies are touched only in their own
//! phase ([`Phase::allows`]), and body writes always cover the whole current
//! buffer. The `Result`s left are for the statuses the SDK does return.

use crate::filter::{Flow, HttpFilter, Plugin};
use crate::headers;
use crate::host::{Headers, Host, HostKind, Level, Phase, Resource};
use crate::problem::Problem;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;

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
    request: RefCell<Option<Headers>>,
    response: RefCell<Option<Headers>>,
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

    fn map(&self, map: MapType) -> Option<MapType> {
        let resource = match map {
            MapType::HttpRequestHeaders => Resource::RequestHeaders,
            MapType::HttpResponseHeaders => Resource::ResponseHeaders,
            MapType::HttpResponseTrailers => Resource::ResponseTrailers,
            _ => return None,
        };
        self.phase.allows(resource).then_some(map)
    }

    fn cache(&self, map: MapType) -> Option<&RefCell<Option<Headers>>> {
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
            .map(|(n, v)| (n.to_ascii_lowercase(), v))
            .collect()
    }

    /// Runs `f` over the map, fetching it at most once per callback.
    fn with_map<R>(&self, map: MapType, f: impl FnOnce(&Headers) -> R) -> Option<R> {
        let map = self.map(map)?;
        match self.cache(map) {
            Some(cell) => {
                let mut slot = cell.borrow_mut();
                Some(f(slot.get_or_insert_with(|| Self::fetch(map))))
            }
            None => Some(f(&Self::fetch(map))),
        }
    }

    fn update_cache(&self, map: MapType, change: impl FnOnce(&mut Headers)) {
        if let Some(cell) = self.cache(map) {
            if let Some(headers) = cell.borrow_mut().as_mut() {
                change(headers);
            }
        }
    }

    fn get_headers(&self, map: MapType) -> Headers {
        self.with_map(map, Clone::clone).unwrap_or_default()
    }

    fn get_header(&self, map: MapType, name: &str) -> Option<Vec<u8>> {
        let cached = self
            .with_map(map, |h| headers::find(h, name).map(<[u8]>::to_vec))
            .flatten();
        if cached.is_none() && name.starts_with(':') && self.kind == HostKind::Kong {
            // Kong may leave pseudo-headers out of the pairs; ask for them directly.
            return hostcalls::get_map_value_bytes(self.map(map)?, name)
                .ok()
                .flatten();
        }
        cached
    }

    fn set_header(&self, map: MapType, name: &str, value: &[u8]) {
        if let Some(m) = self.map(map) {
            let _ = hostcalls::set_map_value_bytes(m, name, Some(value));
            self.update_cache(m, |h| headers::set(h, name, value));
        }
    }

    fn add_header(&self, map: MapType, name: &str, value: &[u8]) {
        if let Some(m) = self.map(map) {
            let _ = hostcalls::add_map_value_bytes(m, name, value);
            self.update_cache(m, |h| headers::add(h, name, value));
        }
    }

    fn remove_header(&self, map: MapType, name: &str) {
        if let Some(m) = self.map(map) {
            let _ = hostcalls::remove_map_value(m, name);
            self.update_cache(m, |h| headers::remove(h, name));
        }
    }
}

impl Host for ProxyWasmHost {
    fn kind(&self) -> HostKind {
        self.kind
    }

    fn request_headers(&self) -> Headers {
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

    fn response_headers(&self) -> Headers {
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
        if !self.phase.allows(Resource::ResponseBody) {
            return None;
        }
        hostcalls::get_buffer(BufferType::HttpResponseBody, start, len)
            .ok()
            .flatten()
    }

    fn set_response_body(&mut self, start: usize, len: usize, data: &[u8]) {
        if self.phase.allows(Resource::ResponseBody) {
            let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, start, len, data);
        }
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

impl<P: Plugin> Context for PluginRoot<P> {}

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

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let host = match self.kind {
            Some(kind) => ProxyWasmHost::new(kind),
            None => ProxyWasmHost::detect(),
        };
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

impl<F: HttpFilter> Context for PluginHttp<F> {}

impl<F: HttpFilter> HttpContext for PluginHttp<F> {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        self.host.enter(Phase::RequestHeaders);
        action(
            self.filter
                .on_request_headers(&mut self.host, end_of_stream),
        )
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.host.enter(Phase::RequestBody);
        action(
            self.filter
                .on_request_body(&mut self.host, size, end_of_stream),
        )
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
