//! An in-memory [`Host`]: every filter decision is tested natively against it.

pub mod exchange;
pub use exchange::{end_stream, run, ClientResponse, Exchange, Outcome};

use crate::headers::{add, find, remove, set};
use crate::host::{CallError, Headers, Host, HostKind, Level, Phase, Shared, SharedError};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;

/// Properties ngx_wasm_module names but does not implement (its
/// `ngx_proxy_wasm_properties.c`: "NYI"): Kong answers nothing for them,
/// so no client certificate's SANs reach a filter there. (`connection.mtls`
/// it does answer, as the string `true` or `false`.)
pub const KONG_NYI_PROPERTIES: &[&str] = &[
    "connection.uri_san_peer_certificate",
    "connection.uri_san_local_certificate",
    "connection.dns_san_peer_certificate",
    "connection.subject_peer_certificate",
    "connection.sha256_peer_certificate_digest",
];

/// A process-wide shared-data store with Envoy's semantics: every write
/// bumps the entry's version, and a write carrying a stale version fails.
/// Several [`FakeHost`]s holding the same store stand for worker VMs.
#[derive(Debug, Default)]
pub struct SharedStore {
    entries: BTreeMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    /// When set, every write fails as on a host without a usable zone.
    pub unavailable: bool,
}

impl SharedStore {
    pub fn new() -> Rc<RefCell<SharedStore>> {
        Rc::new(RefCell::new(SharedStore::default()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn keys(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// Total bytes of keys and values held, for memory-bound tests.
    pub fn bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|(k, (v, _))| k.len() + v.len())
            .sum()
    }

    fn get(&self, key: &str) -> Shared {
        match self.entries.get(key) {
            Some((v, cas)) => Shared {
                value: Some(v.clone()),
                cas: Some(*cas),
            },
            None => Shared::default(),
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedError> {
        if self.unavailable {
            return Err(SharedError::Unavailable);
        }
        if let (Some((_, current)), Some(expected)) = (self.entries.get(key), cas) {
            if *current != expected {
                return Err(SharedError::CasMismatch);
            }
        }
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        self.entries
            .insert(key.to_string(), (value.to_vec(), self.next_cas));
        Ok(())
    }
}

/// An outgoing call the filter made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordedCall {
    Http {
        token: u32,
        upstream: String,
        headers: Vec<(String, String)>,
        body: Option<Vec<u8>>,
        timeout_ms: u64,
    },
    Grpc {
        token: u32,
        cluster: String,
        service: String,
        method: String,
        message: Vec<u8>,
        timeout_ms: u64,
    },
}

impl RecordedCall {
    pub fn token(&self) -> u32 {
        match self {
            RecordedCall::Http { token, .. } | RecordedCall::Grpc { token, .. } => *token,
        }
    }
}

/// Answers foreign-function calls in tests (Envoy's `verify_signature`, say).
#[derive(Clone, Default)]
pub struct ForeignFunctions(Option<Rc<ForeignFn>>);

/// A foreign function's behaviour: name and arguments in, result out.
pub type ForeignFn = dyn Fn(&str, &[u8]) -> Option<Vec<u8>>;

impl ForeignFunctions {
    pub fn new(f: impl Fn(&str, &[u8]) -> Option<Vec<u8>> + 'static) -> Self {
        ForeignFunctions(Some(Rc::new(f)))
    }
}

impl fmt::Debug for ForeignFunctions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "ForeignFunctions(..)"
        } else {
            "ForeignFunctions(none)"
        })
    }
}

/// A local reply the filter asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl SentResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A request/response as the host would hold it, plus what the filter did.
///
/// `kind` is the host it stands for, and its behaviour follows that host,
/// including every fact of NOTES' "Seen on the real host" for Kong: root
/// contexts read no property; an HTTP call outside the phases Kong allows,
/// or any foreign function, traps (here: panics, failing the test); a
/// removed request header still reaches the upstream and a later set
/// duplicates it; a body replacement is cut to the size given. What a
/// filter *believes* the host is comes from [`FakeHost::believed`] (the
/// glue's detection), so a mis-detection can be staged.
#[derive(Debug)]
pub struct FakeHost {
    pub kind: HostKind,
    /// What `kind()` answers, if not `kind`: the module's view of its host
    /// (`Unknown` in a Kong root context before any request).
    pub believed: Option<HostKind>,
    /// The callback running; root phases refuse Kong's properties and
    /// Kong traps calls outside [`Phase::kong_allows_dispatch`].
    pub phase: Phase,
    /// Request headers Kong still forwards after a filter removed them
    /// (their hash zeroed): the upstream gets them, the filter no longer
    /// sees them.
    pub removed_but_forwarded: Headers,
    pub request_headers: Headers,
    pub response_headers: Headers,
    pub response_trailers: Headers,
    /// The current response body buffer.
    pub response_body: Vec<u8>,
    pub properties: BTreeMap<String, Vec<u8>>,
    pub sent: Option<SentResponse>,
    pub logs: RefCell<Vec<(Level, String)>>,
    pub metric_names: Vec<String>,
    pub counters: BTreeMap<String, i64>,
    /// Host clock, nanoseconds since the epoch.
    pub clock: Cell<u64>,
    pub shared: Rc<RefCell<SharedStore>>,
    /// The buffered request body.
    pub request_body: Vec<u8>,
    pub calls: Vec<RecordedCall>,
    /// When set, outgoing calls are refused as the host would (unknown cluster).
    pub refuse_calls: bool,
    pub foreign: ForeignFunctions,
    pub foreign_calls: Vec<(String, Vec<u8>)>,
    /// How many times the filter resumed a paused request.
    pub resumed: u32,
    /// Every host call a filter made that costs a crossing on a real host,
    /// by kind (`property xds.route_name`, `set_request_header`, ...):
    /// what a filter costs, compared without a proxy. Header reads are left
    /// out: the glue serves them from one map fetch per callback.
    pub host_calls: RefCell<BTreeMap<String, u32>>,
    next_token: u32,
}

impl Default for FakeHost {
    fn default() -> Self {
        FakeHost {
            kind: HostKind::Envoy,
            believed: None,
            phase: Phase::RequestHeaders,
            removed_but_forwarded: Vec::new(),
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            response_trailers: Vec::new(),
            response_body: Vec::new(),
            properties: BTreeMap::new(),
            sent: None,
            logs: RefCell::new(Vec::new()),
            metric_names: Vec::new(),
            counters: BTreeMap::new(),
            clock: Cell::new(0),
            shared: SharedStore::new(),
            request_body: Vec::new(),
            calls: Vec::new(),
            refuse_calls: false,
            foreign: ForeignFunctions::default(),
            foreign_calls: Vec::new(),
            resumed: 0,
            host_calls: RefCell::new(BTreeMap::new()),
            next_token: 0,
        }
    }
}

impl FakeHost {
    pub fn new() -> Self {
        FakeHost::default()
    }

    fn tally(&self, call: impl Into<String>) {
        *self.host_calls.borrow_mut().entry(call.into()).or_insert(0) += 1;
    }

    /// How many times the filters made host call `call` (see [`FakeHost::host_calls`]).
    pub fn host_call_count(&self, call: &str) -> u32 {
        self.host_calls.borrow().get(call).copied().unwrap_or(0)
    }

    pub fn kong() -> Self {
        FakeHost {
            kind: HostKind::Kong,
            ..FakeHost::default()
        }
    }

    /// A root context in `on_configure`, as the glue presents it: the
    /// host detected there by [`HostKind::detect_in_root`].
    pub fn configuring(kind: HostKind) -> Self {
        let mut host = FakeHost {
            kind,
            phase: Phase::Configure,
            ..FakeHost::default()
        };
        host.believed = Some(HostKind::detect_in_root(
            host.accepts_unknown_effective_context(),
        ));
        host
    }

    /// `proxy_set_effective_context` with an id no context has: Envoy
    /// refuses it; ngx_wasm_module only logs and answers OK (its source).
    pub fn accepts_unknown_effective_context(&self) -> bool {
        self.kind == HostKind::Kong
    }

    /// What the upstream receives: the headers as the filter left them,
    /// plus, on Kong, every header a filter removed instead of overwriting.
    pub fn upstream_request_headers(&self) -> Headers {
        let mut all = self.removed_but_forwarded.clone();
        all.extend(self.request_headers.iter().cloned());
        all
    }

    /// Every value of `name` the upstream receives, in order.
    pub fn upstream_header_values(&self, name: &str) -> Vec<String> {
        self.upstream_request_headers()
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// A trap: the host kills the instance (and on Kong, from
    /// `on_configure`, the nginx worker). A test that reaches it fails.
    fn trap(&self, what: &str) -> ! {
        panic!("trap on {}: {what}", self.kind.name())
    }

    /// A request with `:method` and `:path` set, as hosts present them.
    pub fn request(method: &str, path: &str) -> Self {
        let mut h = FakeHost::new();
        h.request_headers = vec![
            (":method".into(), method.as_bytes().to_vec()),
            (":path".into(), path.as_bytes().to_vec()),
            (":authority".into(), b"api.example.com".to_vec()),
        ];
        h
    }

    pub fn with_request_header(mut self, name: &str, value: &str) -> Self {
        self.request_headers
            .push((name.to_string(), value.as_bytes().to_vec()));
        self
    }

    pub fn with_response(mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> Self {
        self.response_headers = vec![(":status".into(), status.to_string().into_bytes())];
        for (n, v) in headers {
            self.response_headers
                .push((n.to_string(), v.as_bytes().to_vec()));
        }
        self.response_body = body.to_vec();
        self
    }

    /// Another worker VM of the same proxy: same shared data and clock, fresh stream.
    pub fn sibling(&self) -> FakeHost {
        FakeHost {
            kind: self.kind,
            shared: Rc::clone(&self.shared),
            clock: Cell::new(self.clock.get()),
            believed: self.believed,
            ..FakeHost::default()
        }
    }

    /// Sets the clock, in seconds since the epoch.
    pub fn at_secs(self, secs: u64) -> Self {
        self.clock.set(secs.saturating_mul(1_000_000_000));
        self
    }

    pub fn advance_ms(&self, ms: u64) {
        self.clock.set(
            self.clock
                .get()
                .saturating_add(ms.saturating_mul(1_000_000)),
        );
    }

    pub fn counter(&self, name: &str) -> i64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    pub fn logged(&self, level: Level, needle: &str) -> bool {
        self.logs
            .borrow()
            .iter()
            .any(|(l, m)| *l == level && m.contains(needle))
    }

    pub fn req_header(&self, name: &str) -> Option<String> {
        find(&self.request_headers, name).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn resp_header(&self, name: &str) -> Option<String> {
        find(&self.response_headers, name).map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

impl Host for FakeHost {
    fn kind(&self) -> HostKind {
        self.believed.unwrap_or(self.kind)
    }

    fn request_headers(&self) -> Rc<Headers> {
        Rc::new(
            self.request_headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                .collect(),
        )
    }

    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        // Kong's single-header get does not skip removed entries.
        find(&self.request_headers, name)
            .or_else(|| find(&self.removed_but_forwarded, name))
            .map(<[u8]>::to_vec)
    }

    fn set_request_header(&mut self, name: &str, value: &[u8]) {
        self.tally("set_request_header");
        if find(&self.request_headers, name).is_none() {
            // Kong: a set after a removal adds a second header beside the
            // removed one, which is still forwarded.
            add(&mut self.request_headers, name, value);
            return;
        }
        if self.kind == HostKind::Kong {
            // Kong overwrites the first copy in place; the others lose
            // their hash and still reach the upstream, unchanged.
            let mut first = true;
            let mut kept = Vec::new();
            for (n, v) in std::mem::take(&mut self.request_headers) {
                if !n.eq_ignore_ascii_case(name) {
                    kept.push((n, v));
                } else if first {
                    first = false;
                    kept.push((n, value.to_vec()));
                } else {
                    self.removed_but_forwarded.push((n, v));
                }
            }
            self.request_headers = kept;
            return;
        }
        set(&mut self.request_headers, name, value);
    }

    fn remove_request_header(&mut self, name: &str) {
        self.tally("remove_request_header");
        if self.kind().strips_request_headers_by_overwrite() {
            if find(&self.request_headers, name).is_some() {
                self.set_request_header(name, b"");
            }
            return;
        }
        if self.kind == HostKind::Kong {
            // A real removal on Kong zeroes the hash; nginx still sends it.
            for (n, v) in &self.request_headers {
                if n.eq_ignore_ascii_case(name) {
                    self.removed_but_forwarded.push((n.clone(), v.clone()));
                }
            }
        }
        remove(&mut self.request_headers, name);
    }

    fn response_headers(&self) -> Rc<Headers> {
        Rc::new(
            self.response_headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                .collect(),
        )
    }

    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        find(&self.response_headers, name).map(<[u8]>::to_vec)
    }

    fn set_response_header(&mut self, name: &str, value: &[u8]) {
        self.tally("set_response_header");
        set(&mut self.response_headers, name, value);
    }

    fn add_response_header(&mut self, name: &str, value: &[u8]) {
        self.tally("add_response_header");
        add(&mut self.response_headers, name, value);
    }

    fn remove_response_header(&mut self, name: &str) {
        self.tally("remove_response_header");
        remove(&mut self.response_headers, name);
    }

    fn response_trailer(&self, name: &str) -> Option<Vec<u8>> {
        find(&self.response_trailers, name).map(<[u8]>::to_vec)
    }

    fn set_response_trailer(&mut self, name: &str, value: &[u8]) {
        set(&mut self.response_trailers, name, value);
    }

    fn remove_response_trailer(&mut self, name: &str) {
        remove(&mut self.response_trailers, name);
    }

    fn response_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        self.tally("response_body");
        let end = start.saturating_add(len).min(self.response_body.len());
        self.response_body
            .get(start.min(end)..end)
            .map(<[u8]>::to_vec)
    }

    fn set_response_body(&mut self, start: usize, len: usize, data: &[u8]) {
        self.tally("set_response_body");
        let start = start.min(self.response_body.len());
        let end = start.saturating_add(len).min(self.response_body.len());
        // Kong writes only the first `len` bytes of the replacement.
        let data = match self.kind.cuts_body_replacement_to_size() {
            true => &data[..len.min(data.len())],
            false => data,
        };
        self.response_body.splice(start..end, data.iter().copied());
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.tally(format!("property {}", path.join(".")));
        if self.kind == HostKind::Kong && self.phase.is_root() {
            self.log(
                Level::Error,
                "[wasm] cannot get ngx properties outside of a request",
            );
            return None;
        }
        let key = path.join(".");
        if self.kind == HostKind::Kong && KONG_NYI_PROPERTIES.contains(&key.as_str()) {
            self.log(Level::Error, &format!("[wasm] NYI - \"{key}\" property"));
            return None;
        }
        self.properties.get(&key).cloned()
    }

    fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        self.tally("send_response");
        let mut body = body.to_vec();
        if self.kind.appends_newline_to_local_replies() {
            body.push(b'\n');
        }
        self.sent = Some(SentResponse {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body,
        });
    }

    fn local_reply_sent(&self) -> bool {
        self.sent.is_some()
    }

    fn calls_dispatched(&self) -> u32 {
        u32::try_from(self.calls.len()).unwrap_or(u32::MAX)
    }

    fn log(&self, level: Level, message: &str) {
        self.tally("log");
        self.logs.borrow_mut().push((level, message.to_string()));
    }

    fn define_counter(&mut self, name: &str) -> Option<u32> {
        let id = match self.metric_names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                self.metric_names.push(name.to_string());
                self.metric_names.len() - 1
            }
        };
        u32::try_from(id).ok()
    }

    fn increment_counter(&mut self, id: u32, by: i64) {
        self.tally("increment_counter");
        if let Some(name) = self.metric_names.get(id as usize) {
            *self.counters.entry(name.clone()).or_insert(0) += by;
        }
    }

    fn now_nanos(&self) -> u64 {
        self.tally("now_nanos");
        self.clock.get()
    }

    fn shared_get(&self, key: &str) -> Shared {
        self.tally("shared_get");
        self.shared.borrow().get(key)
    }

    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedError> {
        self.tally("shared_set");
        self.shared.borrow_mut().set(key, value, cas)
    }

    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        self.tally("request_body");
        let end = start.saturating_add(len).min(self.request_body.len());
        self.request_body
            .get(start.min(end)..end)
            .map(<[u8]>::to_vec)
    }

    fn set_request_body(&mut self, start: usize, len: usize, data: &[u8]) {
        self.tally("set_request_body");
        let start = start.min(self.request_body.len());
        let end = start.saturating_add(len).min(self.request_body.len());
        self.request_body.splice(start..end, data.iter().copied());
    }

    fn set_property(&mut self, path: &[&str], value: &[u8]) {
        self.tally(format!("set_property {}", path.join(".")));
        self.properties.insert(path.join("."), value.to_vec());
    }

    fn http_call(
        &mut self,
        upstream: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u64,
    ) -> Result<u32, CallError> {
        // The glue makes no call before the host is known.
        if !self.kind().is_known() {
            return Err(CallError::Unsupported);
        }
        if self.kind == HostKind::Kong && !self.phase.kong_allows_dispatch() {
            self.trap(&format!("dispatch_http_call from {:?}", self.phase));
        }
        if self.refuse_calls {
            return Err(CallError::Refused);
        }
        self.next_token += 1;
        self.calls.push(RecordedCall::Http {
            token: self.next_token,
            upstream: upstream.to_string(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.map(<[u8]>::to_vec),
            timeout_ms,
        });
        Ok(self.next_token)
    }

    fn grpc_call(
        &mut self,
        cluster: &str,
        service: &str,
        method: &str,
        _metadata: &[(&str, &[u8])],
        message: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, CallError> {
        if !self.kind.supports_grpc_calls() {
            return Err(CallError::Unsupported);
        }
        if self.refuse_calls {
            return Err(CallError::Refused);
        }
        self.next_token += 1;
        self.calls.push(RecordedCall::Grpc {
            token: self.next_token,
            cluster: cluster.to_string(),
            service: service.to_string(),
            method: method.to_string(),
            message: message.to_vec(),
            timeout_ms,
        });
        Ok(self.next_token)
    }

    fn foreign_function(&mut self, name: &str, args: &[u8]) -> Option<Vec<u8>> {
        if self.kind == HostKind::Kong {
            self.trap(&format!(
                "proxy_call_foreign_function({name}) is not implemented"
            ));
        }
        self.foreign_calls.push((name.to_string(), args.to_vec()));
        self.foreign.0.as_ref().and_then(|f| f(name, args))
    }

    fn resume_request(&mut self) {
        self.resumed += 1;
    }
}
