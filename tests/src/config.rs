//! `EnvoyConfig`: a builder for the small bootstrap every test needs.
//!
//! One HTTP listener on 127.0.0.1, one HTTP connection manager (HCM) with a chain of
//! HTTP filters followed by the router, a list of routes, and STATIC clusters on
//! loopback. Anything unusual goes through the `*_extra` JSON merges or raw YAML
//! filters rather than more builder methods.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::paths::{dist_module, existing_artifact, repo_root};
use crate::upstream::Upstream;
use crate::yaml;

/// Name of the cluster that points at the echo upstream.
pub const ECHO_CLUSTER: &str = "echo";
/// Name of the cluster that points at a port nobody listens on.
pub const CLOSED_CLUSTER: &str = "closed";
/// Name of the cluster that points at a listener that never answers.
pub const BLACK_HOLE_CLUSTER: &str = "black_hole";

/// What a wasm filter does when its VM has failed (`PluginConfig.failure_policy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// 503 for every request through a dead VM (Envoy's default).
    #[default]
    FailClosed,
    /// Requests pass as if the filter were absent.
    FailOpen,
    /// The VM is reloaded after a failure.
    FailReload,
}

impl FailurePolicy {
    fn as_proto(self) -> &'static str {
        match self {
            FailurePolicy::FailClosed => "FAIL_CLOSED",
            FailurePolicy::FailOpen => "FAIL_OPEN",
            FailurePolicy::FailReload => "FAIL_RELOAD",
        }
    }
}

/// The five controls built as `dist/palisade_<control>.wasm`, each also linked into
/// `dist/palisade.wasm`.
pub const CONTROLS: [&str; 5] = ["errors", "headers", "jwt", "ratelimit", "schema"];

/// The environment variable choosing the modules the controls run in: unset, empty or
/// `per-filter` for each control's own module, `one` for `dist/palisade.wasm`.
pub const MODULE_ENV: &str = "PALISADE_MODULE";

/// Name of the single route of the chain a control runs in with [`ModuleMode::One`].
pub const ONE_CONTROL_ROUTE: &str = "all";

/// Which module runs a control's filter, for the whole test process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModuleMode {
    /// `dist/palisade_<control>.wasm` with the filter's own config (the default).
    #[default]
    PerFilter,
    /// `dist/palisade.wasm`, the config wrapped into a one-route, one-control chain
    /// ([`one_control_chain`]): every suite proves the chain module behaves as the
    /// control's own module does.
    One,
}

impl ModuleMode {
    /// The mode `PALISADE_MODULE` selects, read once per process; panics on a value
    /// it does not know, so a typo cannot silently test the per-filter modules again.
    pub fn current() -> ModuleMode {
        static MODE: OnceLock<ModuleMode> = OnceLock::new();
        *MODE.get_or_init(|| {
            let value = std::env::var(MODULE_ENV).unwrap_or_default();
            let mode = ModuleMode::parse(&value).unwrap_or_else(|| {
                panic!("{MODULE_ENV}={value:?}: expected `one` or `per-filter` (the default)")
            });
            if mode == ModuleMode::One {
                existing_artifact(dist_module());
            }
            mode
        })
    }

    fn parse(value: &str) -> Option<ModuleMode> {
        match value.trim() {
            "" | "per-filter" => Some(ModuleMode::PerFilter),
            "one" => Some(ModuleMode::One),
            _ => None,
        }
    }
}

/// Whether this process runs the controls through `dist/palisade.wasm`.
pub fn one_module() -> bool {
    ModuleMode::current() == ModuleMode::One
}

/// The chain file's JSON form running `control` alone with `config` on every path:
/// one upstream (unused: Envoy's routes pick the cluster), one route `all` for `/`,
/// and `publish_decisions: true`, the chain setting under which `palisade.wasm`
/// publishes decisions and claims as the per-filter modules always do (its default
/// keeps them in memory; that default is the chain tests' subject, not these suites').
/// The config text is embedded as written (an empty one is `{}`, as the filters read
/// it), so whatever the module makes of it is the module's doing.
pub fn one_control_chain(control: &str, config: &str) -> String {
    let config = match config.trim() {
        "" => "{}",
        text => text,
    };
    // The services the control calls (JWKS, RLS) are declared too, as a
    // chain file must: Envoy's clusters of the same names serve them.
    let mut upstreams = serde_json::Map::new();
    upstreams.insert("u".into(), Value::from("http://127.0.0.1:1"));
    if let Ok(parsed) = serde_json::from_str::<Value>(config) {
        for (_, name, _) in palisade::chain::service_refs(control, &parsed) {
            upstreams.insert(name, Value::from("http://127.0.0.1:1"));
        }
    }
    let upstreams = Value::Object(upstreams);
    let control = Value::String(control.to_string());
    format!(
        r#"{{"version":1,"publish_decisions":true,"upstreams":{upstreams},"routes":[{{"name":"{ONE_CONTROL_ROUTE}","match":{{"prefix":"/"}},"upstream":"u","filters":[{{{control}:{config}}}]}}]}}"#
    )
}

/// The log line's text a refused config of `control` produces in this process's mode:
/// `palisade.<control>: invalid configuration: <message>` from the control's own module;
/// from `palisade.wasm`, the chain's line naming where the config sits in the chain,
/// `palisade.chain: invalid configuration: routes[0] (all).filters.<control>: <message>`.
pub fn invalid_config_log(control: &str, message: &str) -> String {
    match ModuleMode::current() {
        ModuleMode::PerFilter => format!("palisade.{control}: invalid configuration: {message}"),
        ModuleMode::One => format!(
            "palisade.chain: invalid configuration: routes[0] ({ONE_CONTROL_ROUTE}).filters.{control}: {message}"
        ),
    }
}

/// One `envoy.filters.http.wasm` filter: a module, its JSON configuration string and the
/// plugin knobs the tests need.
#[derive(Clone, Debug)]
pub struct WasmFilter {
    /// Filter name in the HCM chain, also `PluginConfig.name` (the `plugin_name`
    /// property) and the key for `Route::disable_filter`.
    pub name: String,
    /// The `.wasm` file.
    pub wasm: PathBuf,
    /// The plugin configuration, delivered to `on_configure` as-is.
    pub config: String,
    /// `PluginConfig.root_id`; defaults to `name`.
    pub root_id: Option<String>,
    /// `VmConfig.vm_id` (the shared-data namespace); defaults to `name`.
    pub vm_id: Option<String>,
    /// `PluginConfig.failure_policy`.
    pub failure_policy: FailurePolicy,
    /// `PluginConfig.allow_on_headers_stop_iteration` (Envoy 1.35+); unset when `None`.
    pub allow_on_headers_stop_iteration: Option<bool>,
}

impl WasmFilter {
    /// A filter running `wasm` with an empty configuration.
    pub fn new(name: impl Into<String>, wasm: impl AsRef<Path>) -> WasmFilter {
        WasmFilter {
            name: name.into(),
            wasm: wasm.as_ref().to_path_buf(),
            config: String::new(),
            root_id: None,
            vm_id: None,
            failure_policy: FailurePolicy::default(),
            allow_on_headers_stop_iteration: None,
        }
    }

    /// Sets the configuration string (usually JSON).
    pub fn config(mut self, config: impl Into<String>) -> WasmFilter {
        self.config = config.into();
        self
    }

    /// Sets the configuration from a JSON value.
    pub fn config_json(self, config: &Value) -> WasmFilter {
        self.config(config.to_string())
    }

    /// Sets `root_id`.
    pub fn root_id(mut self, root_id: impl Into<String>) -> WasmFilter {
        self.root_id = Some(root_id.into());
        self
    }

    /// Sets `vm_id`; filters sharing one see each other's shared data.
    pub fn vm_id(mut self, vm_id: impl Into<String>) -> WasmFilter {
        self.vm_id = Some(vm_id.into());
        self
    }

    /// Sets the failure policy.
    pub fn failure_policy(mut self, policy: FailurePolicy) -> WasmFilter {
        self.failure_policy = policy;
        self
    }

    /// Sets `allow_on_headers_stop_iteration`, which keeps body callbacks coming after a
    /// headers callback paused.
    pub fn allow_on_headers_stop_iteration(mut self, allow: bool) -> WasmFilter {
        self.allow_on_headers_stop_iteration = Some(allow);
        self
    }

    /// The control this filter runs when its module is `dist/palisade_<control>.wasm`
    /// for one of the [`CONTROLS`]; `None` for any other module (fixtures, the bench
    /// filter).
    pub fn control(&self) -> Option<&'static str> {
        let dist = repo_root().join("dist");
        CONTROLS
            .into_iter()
            .find(|c| self.wasm == dist.join(format!("palisade_{c}.wasm")))
    }

    /// The module and configuration Envoy gets in `mode`: a control's filter runs in
    /// `dist/palisade.wasm` as a one-control chain with [`ModuleMode::One`]; anything
    /// else is rendered as given.
    pub fn module_in(&self, mode: ModuleMode) -> (PathBuf, String) {
        match (mode, self.control()) {
            (ModuleMode::One, Some(control)) => {
                (dist_module(), one_control_chain(control, &self.config))
            }
            _ => (self.wasm.clone(), self.config.clone()),
        }
    }

    /// The HCM `http_filters` entry, in this process's [`ModuleMode`].
    pub fn to_json(&self) -> Value {
        self.to_json_in(ModuleMode::current())
    }

    /// The HCM `http_filters` entry in `mode`. Only the module and the configuration
    /// depend on it: names, ids and plugin knobs are the filter's own in both.
    pub fn to_json_in(&self, mode: ModuleMode) -> Value {
        let (wasm, config) = self.module_in(mode);
        let mut plugin = json!({
            "name": self.name,
            "root_id": self.root_id.as_deref().unwrap_or(&self.name),
            "vm_config": {
                "vm_id": self.vm_id.as_deref().unwrap_or(&self.name),
                "runtime": "envoy.wasm.runtime.v8",
                "code": {"local": {"filename": wasm.to_string_lossy()}},
            },
            "configuration": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": config,
            },
            "failure_policy": self.failure_policy.as_proto(),
        });
        if let Some(allow) = self.allow_on_headers_stop_iteration {
            plugin["allow_on_headers_stop_iteration"] = Value::Bool(allow);
        }
        json!({
            "name": self.name,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": plugin,
            },
        })
    }
}

/// One entry of the HCM filter chain (the router is always appended last).
#[derive(Clone, Debug)]
pub enum HttpFilter {
    /// A Palisade (or fixture) wasm filter.
    Wasm(WasmFilter),
    /// Any filter given as its `http_filters` entry in JSON (`{"name", "typed_config"}`).
    Json(Value),
    /// Any filter given as its `http_filters` entry in YAML, e.g. copied from Envoy's
    /// docs: a single mapping with `name:` and `typed_config:` (no leading `- `).
    Yaml(String),
}

impl HttpFilter {
    /// A wasm filter.
    pub fn wasm(filter: WasmFilter) -> HttpFilter {
        HttpFilter::Wasm(filter)
    }

    /// A native filter from JSON (`{"name": ..., "typed_config": {...}}`).
    pub fn native_json(entry: Value) -> HttpFilter {
        HttpFilter::Json(entry)
    }

    /// A native filter from raw YAML (`name: ...\ntyped_config: ...`).
    pub fn native_yaml(entry: impl Into<String>) -> HttpFilter {
        HttpFilter::Yaml(entry.into())
    }
}

impl From<WasmFilter> for HttpFilter {
    fn from(filter: WasmFilter) -> HttpFilter {
        HttpFilter::Wasm(filter)
    }
}

/// Where a route sends its requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The echo upstream (cluster `echo`).
    Echo,
    /// Envoy answers itself (`direct_response`), no upstream involved.
    Direct {
        /// Response status.
        status: u16,
        /// Response body (`inline_string`).
        body: String,
    },
    /// A port nobody listens on: Envoy's own 503 ("upstream connect error").
    ClosedPort,
    /// A listener that never answers: Envoy's own 504 once the route timeout (1 s unless
    /// set) expires.
    BlackHole,
    /// A cluster added with `EnvoyConfig::cluster`.
    Cluster(String),
}

/// One route of the single virtual host (domains `*`); routes match in order.
#[derive(Clone, Debug)]
pub struct Route {
    /// Route name (`xds.route_name` in filters).
    pub name: String,
    /// `match`: prefix when true, exact path when false.
    pub is_prefix: bool,
    /// The prefix or path.
    pub pattern: String,
    /// Destination.
    pub target: Target,
    /// `route.timeout`; Envoy's default is 15 s.
    pub timeout: Option<Duration>,
    /// Filters disabled on this route (`typed_per_filter_config` `FilterConfig.disabled`).
    pub disabled_filters: Vec<String>,
    /// `metadata.filter_metadata` (read by filters through `xds.route_metadata`).
    pub metadata: Map<String, Value>,
    /// Merged into the route's JSON last, for anything else.
    pub extra: Option<Value>,
}

impl Route {
    /// A route for every path starting with `prefix`, to the echo upstream.
    pub fn prefix(name: impl Into<String>, prefix: impl Into<String>) -> Route {
        Route::new(name.into(), true, prefix.into())
    }

    /// A route for exactly `path`, to the echo upstream.
    pub fn path(name: impl Into<String>, path: impl Into<String>) -> Route {
        Route::new(name.into(), false, path.into())
    }

    fn new(name: String, is_prefix: bool, pattern: String) -> Route {
        Route {
            name,
            is_prefix,
            pattern,
            target: Target::Echo,
            timeout: None,
            disabled_filters: Vec::new(),
            metadata: Map::new(),
            extra: None,
        }
    }

    /// Sends to the echo upstream (the default).
    pub fn echo(mut self) -> Route {
        self.target = Target::Echo;
        self
    }

    /// Envoy answers `status` with `body` itself.
    pub fn direct(mut self, status: u16, body: impl Into<String>) -> Route {
        self.target = Target::Direct {
            status,
            body: body.into(),
        };
        self
    }

    /// Sends to a closed port (Envoy's own 503).
    pub fn closed_port(mut self) -> Route {
        self.target = Target::ClosedPort;
        self
    }

    /// Sends to an upstream that never answers (Envoy's own 504 after the timeout).
    pub fn black_hole(mut self) -> Route {
        self.target = Target::BlackHole;
        self
    }

    /// Sends to a cluster added with `EnvoyConfig::cluster`.
    pub fn cluster(mut self, cluster: impl Into<String>) -> Route {
        self.target = Target::Cluster(cluster.into());
        self
    }

    /// Sets the route timeout.
    pub fn timeout(mut self, timeout: Duration) -> Route {
        self.timeout = Some(timeout);
        self
    }

    /// Disables the HTTP filter named `filter` on this route.
    pub fn disable_filter(mut self, filter: impl Into<String>) -> Route {
        self.disabled_filters.push(filter.into());
        self
    }

    /// Adds `filter_metadata[namespace] = value`.
    pub fn metadata(mut self, namespace: impl Into<String>, value: Value) -> Route {
        self.metadata.insert(namespace.into(), value);
        self
    }

    /// Merges `extra` into the route's JSON (objects merge, other values replace).
    pub fn extra(mut self, extra: Value) -> Route {
        self.extra = Some(extra);
        self
    }

    fn to_json(&self, timeout_default: Option<Duration>) -> Value {
        let key = if self.is_prefix { "prefix" } else { "path" };
        let mut route = json!({"name": self.name, "match": {key: self.pattern}});
        let cluster = match &self.target {
            Target::Direct { status, body } => {
                route["direct_response"] =
                    json!({"status": status, "body": {"inline_string": body}});
                None
            }
            Target::Echo => Some(ECHO_CLUSTER.to_string()),
            Target::ClosedPort => Some(CLOSED_CLUSTER.to_string()),
            Target::BlackHole => Some(BLACK_HOLE_CLUSTER.to_string()),
            Target::Cluster(name) => Some(name.clone()),
        };
        if let Some(cluster) = cluster {
            let mut action = json!({"cluster": cluster});
            if let Some(timeout) = self.timeout.or(timeout_default) {
                action["timeout"] = Value::String(duration(timeout));
            }
            route["route"] = action;
        }
        if !self.disabled_filters.is_empty() {
            let per_filter: Map<String, Value> = self
                .disabled_filters
                .iter()
                .map(|f| {
                    let cfg = json!({
                        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                        "disabled": true,
                    });
                    (f.clone(), cfg)
                })
                .collect();
            route["typed_per_filter_config"] = Value::Object(per_filter);
        }
        if !self.metadata.is_empty() {
            route["metadata"] = json!({"filter_metadata": self.metadata});
        }
        if let Some(extra) = &self.extra {
            merge(&mut route, extra);
        }
        route
    }
}

/// Ports the bootstrap needs that only exist once Envoy is being started.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RuntimePorts {
    pub closed: Option<u16>,
    pub black_hole: Option<u16>,
}

/// Builder for a test Envoy's bootstrap. See the module docs for the shape.
#[derive(Clone, Debug)]
pub struct EnvoyConfig {
    /// Port of the echo upstream (cluster `echo`).
    pub upstream_port: Option<u16>,
    /// HTTP filters, in order, before the router.
    pub filters: Vec<HttpFilter>,
    /// Routes; when empty, one route `default` for `/` to the echo upstream.
    pub routes: Vec<Route>,
    /// Extra STATIC loopback clusters `(name, port)` (e.g. for `dispatch_http_call`).
    pub clusters: Vec<(String, u16)>,
    /// HCM `normalize_path` and `merge_slashes` (both on by default).
    pub normalize_path: bool,
    /// `--concurrency` (worker threads; 1 by default).
    pub concurrency: u32,
    /// `--log-level` (`info` by default).
    pub log_level: String,
    /// `--component-log-level`, e.g. `wasm:debug`.
    pub component_log_level: Option<String>,
    /// Time allowed for Envoy to become ready (30 s, 120 s with Docker).
    pub startup_timeout: Option<Duration>,
    /// Merged into the HCM's `typed_config`.
    pub hcm_extra: Option<Value>,
    /// Merged into the listener.
    pub listener_extra: Option<Value>,
    /// The filter chain's `transport_socket` (TLS, see `tls::downstream_mtls`).
    pub transport_socket: Option<Value>,
    /// Merged into the bootstrap's root.
    pub bootstrap_extra: Option<Value>,
    /// `--file-flush-interval-msec` (Envoy's default: 10 s), for tests that
    /// read an access-log file.
    pub file_flush_interval_ms: Option<u64>,
}

impl Default for EnvoyConfig {
    fn default() -> EnvoyConfig {
        EnvoyConfig {
            upstream_port: None,
            filters: Vec::new(),
            routes: Vec::new(),
            clusters: Vec::new(),
            normalize_path: true,
            concurrency: 1,
            log_level: "info".to_string(),
            component_log_level: None,
            startup_timeout: None,
            hcm_extra: None,
            listener_extra: None,
            transport_socket: None,
            bootstrap_extra: None,
            file_flush_interval_ms: None,
        }
    }
}

impl EnvoyConfig {
    /// A router-only config (add an upstream, filters and routes).
    pub fn new() -> EnvoyConfig {
        EnvoyConfig::default()
    }

    /// Points cluster `echo` at `upstream`.
    pub fn upstream(mut self, upstream: &Upstream) -> EnvoyConfig {
        self.upstream_port = Some(upstream.port());
        self
    }

    /// Appends a filter (before the router).
    pub fn filter(mut self, filter: impl Into<HttpFilter>) -> EnvoyConfig {
        self.filters.push(filter.into());
        self
    }

    /// Appends a wasm filter (shorthand for `filter(HttpFilter::Wasm(..))`).
    pub fn wasm(self, filter: WasmFilter) -> EnvoyConfig {
        self.filter(filter)
    }

    /// Appends a route.
    pub fn route(mut self, route: Route) -> EnvoyConfig {
        self.routes.push(route);
        self
    }

    /// Adds a STATIC cluster `name` for `127.0.0.1:port`.
    pub fn cluster(mut self, name: impl Into<String>, port: u16) -> EnvoyConfig {
        self.clusters.push((name.into(), port));
        self
    }

    /// Turns HCM path normalisation (`normalize_path`, `merge_slashes`) on or off.
    pub fn normalize_path(mut self, on: bool) -> EnvoyConfig {
        self.normalize_path = on;
        self
    }

    /// Sets the number of worker threads.
    pub fn concurrency(mut self, workers: u32) -> EnvoyConfig {
        self.concurrency = workers;
        self
    }

    /// Sets `--log-level`.
    pub fn log_level(mut self, level: impl Into<String>) -> EnvoyConfig {
        self.log_level = level.into();
        self
    }

    /// Sets `--component-log-level` (e.g. `wasm:debug` to see filters' debug logs).
    pub fn component_log_level(mut self, levels: impl Into<String>) -> EnvoyConfig {
        self.component_log_level = Some(levels.into());
        self
    }

    /// Sets how long to wait for Envoy to become ready.
    pub fn startup_timeout(mut self, timeout: Duration) -> EnvoyConfig {
        self.startup_timeout = Some(timeout);
        self
    }

    /// Merges `extra` into the HCM config (e.g. `{"max_request_headers_kb": 96}`).
    pub fn hcm_extra(mut self, extra: Value) -> EnvoyConfig {
        self.hcm_extra = Some(extra);
        self
    }

    /// Terminates TLS on the listener with this `transport_socket`.
    pub fn transport_socket(mut self, socket: Value) -> EnvoyConfig {
        self.transport_socket = Some(socket);
        self
    }

    /// Merges `extra` into the listener (e.g. `{"per_connection_buffer_limit_bytes": 4096}`).
    pub fn listener_extra(mut self, extra: Value) -> EnvoyConfig {
        self.listener_extra = Some(extra);
        self
    }

    /// Merges `extra` into the bootstrap root (e.g. `stats_config`).
    pub fn bootstrap_extra(mut self, extra: Value) -> EnvoyConfig {
        self.bootstrap_extra = Some(extra);
        self
    }

    /// Sets `--file-flush-interval-msec`.
    pub fn file_flush_interval(mut self, interval: Duration) -> EnvoyConfig {
        self.file_flush_interval_ms = Some(interval.as_millis() as u64);
        self
    }

    /// The routes Envoy will get (the default route when none were added).
    pub fn effective_routes(&self) -> Vec<Route> {
        if self.routes.is_empty() {
            vec![Route::prefix("default", "/")]
        } else {
            self.routes.clone()
        }
    }

    /// Whether some route sends to `target`.
    pub(crate) fn uses(&self, target: &Target) -> bool {
        self.effective_routes().iter().any(|r| &r.target == target)
    }

    /// Wasm files the config references (Docker mounts their directories).
    pub fn wasm_files(&self) -> Vec<PathBuf> {
        self.filters
            .iter()
            .filter_map(|f| match f {
                HttpFilter::Wasm(w) => Some(w.module_in(ModuleMode::current()).0),
                _ => None,
            })
            .collect()
    }

    /// The bootstrap as YAML. `ports` fills in the closed-port / black-hole clusters.
    pub(crate) fn render(&self, ports: RuntimePorts) -> String {
        let mut raws = Vec::new();
        let mut filters: Vec<Value> = self
            .filters
            .iter()
            .map(|f| match f {
                HttpFilter::Wasm(w) => w.to_json(),
                HttpFilter::Json(v) => v.clone(),
                HttpFilter::Yaml(y) => {
                    raws.push(y.clone());
                    Value::String(format!("{}{}", yaml::RAW_MARKER, raws.len() - 1))
                }
            })
            .collect();
        filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }));

        let routes: Vec<Value> = self
            .effective_routes()
            .iter()
            .map(|r| {
                let default_timeout =
                    (r.target == Target::BlackHole).then_some(Duration::from_secs(1));
                r.to_json(default_timeout)
            })
            .collect();

        let mut hcm = json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "ingress",
            "codec_type": "AUTO",
            "server_header_transformation": "PASS_THROUGH",
            "normalize_path": self.normalize_path,
            "merge_slashes": self.normalize_path,
            "route_config": {
                "name": "local_route",
                "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
            },
            "http_filters": filters,
        });
        if let Some(extra) = &self.hcm_extra {
            merge(&mut hcm, extra);
        }

        let mut listener = json!({
            "name": "main",
            "address": loopback(0),
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": hcm,
            }]}],
        });
        if let Some(socket) = &self.transport_socket {
            listener["filter_chains"][0]["transport_socket"] = socket.clone();
        }
        if let Some(extra) = &self.listener_extra {
            merge(&mut listener, extra);
        }

        let mut clusters = Vec::new();
        if self.uses(&Target::Echo) {
            let port = self
                .upstream_port
                .expect("a route goes to the echo upstream: call EnvoyConfig::upstream(&upstream)");
            clusters.push(cluster(ECHO_CLUSTER, port));
        }
        if let Some(port) = ports.closed {
            clusters.push(cluster(CLOSED_CLUSTER, port));
        }
        if let Some(port) = ports.black_hole {
            clusters.push(cluster(BLACK_HOLE_CLUSTER, port));
        }
        for (name, port) in &self.clusters {
            clusters.push(cluster(name, *port));
        }

        let mut bootstrap = json!({
            "admin": {"address": loopback(0)},
            "static_resources": {"listeners": [listener], "clusters": clusters},
        });
        if let Some(extra) = &self.bootstrap_extra {
            merge(&mut bootstrap, extra);
        }
        yaml::to_yaml(&bootstrap, &raws)
    }
}

fn loopback(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

fn cluster(name: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": loopback(port)}}]}],
        },
    })
}

/// A protobuf JSON duration ("1.5s").
fn duration(d: Duration) -> String {
    format!("{}.{:09}s", d.as_secs(), d.subsec_nanos())
}

/// Deep merge: objects merge key by key, anything else replaces.
pub(crate) fn merge(base: &mut Value, extra: &Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasm_filter_json_has_plugin_fields_in_plugin_config() {
        let v = WasmFilter::new("f", "/x.wasm")
            .config("{}")
            .allow_on_headers_stop_iteration(true)
            .to_json();
        let plugin = &v["typed_config"]["config"];
        assert_eq!(plugin["allow_on_headers_stop_iteration"], true);
        assert_eq!(plugin["failure_policy"], "FAIL_CLOSED");
        assert_eq!(plugin["vm_config"]["code"]["local"]["filename"], "/x.wasm");
        assert_eq!(plugin["configuration"]["value"], "{}");
    }

    #[test]
    fn one_module_mode_wraps_only_the_controls_modules() {
        let dist = repo_root().join("dist");
        let jwt = WasmFilter::new("jwt", dist.join("palisade_jwt.wasm"))
            .config(r#"{"b": 1, "a": [2.50]}"#)
            .vm_id("shared")
            .failure_policy(FailurePolicy::FailOpen)
            .allow_on_headers_stop_iteration(true);
        let per_filter = jwt.to_json_in(ModuleMode::PerFilter);
        let one = jwt.to_json_in(ModuleMode::One);
        let plugin = &one["typed_config"]["config"];
        assert_eq!(
            plugin["vm_config"]["code"]["local"]["filename"],
            dist.join("palisade.wasm").to_string_lossy().as_ref()
        );
        let chain = plugin["configuration"]["value"].as_str().unwrap();
        assert!(
            chain.contains(r#"{"jwt":{"b": 1, "a": [2.50]}}"#),
            "{chain}"
        );
        let chain: Value = serde_json::from_str(chain).unwrap();
        assert_eq!(chain["routes"][0]["name"], ONE_CONTROL_ROUTE);
        assert_eq!(chain["routes"][0]["match"], json!({"prefix": "/"}));
        assert_eq!(
            chain["publish_decisions"], true,
            "as the per-filter modules"
        );
        // Everything but the module and its config is the filter's own.
        let mut same = one.clone();
        same["typed_config"]["config"]["vm_config"]["code"] =
            per_filter["typed_config"]["config"]["vm_config"]["code"].clone();
        same["typed_config"]["config"]["configuration"] =
            per_filter["typed_config"]["config"]["configuration"].clone();
        assert_eq!(same, per_filter);

        // Fixtures, the bench filter, other directories: as given.
        for wasm in [
            dist.join("bench/palisade_empty.wasm"),
            dist.join("palisade_other.wasm"),
            PathBuf::from("/elsewhere/palisade_jwt.wasm"),
        ] {
            let f = WasmFilter::new("f", &wasm).config("{}");
            assert_eq!(
                f.to_json_in(ModuleMode::One),
                f.to_json_in(ModuleMode::PerFilter)
            );
        }
    }

    #[test]
    fn an_empty_config_is_an_empty_object_in_the_chain() {
        let chain: Value = serde_json::from_str(&one_control_chain("headers", " ")).unwrap();
        assert_eq!(chain["routes"][0]["filters"], json!([{"headers": {}}]));
    }

    #[test]
    fn module_modes_are_parsed_strictly() {
        assert_eq!(ModuleMode::parse(""), Some(ModuleMode::PerFilter));
        assert_eq!(ModuleMode::parse("per-filter"), Some(ModuleMode::PerFilter));
        assert_eq!(ModuleMode::parse("one"), Some(ModuleMode::One));
        assert_eq!(ModuleMode::parse("One"), None);
    }

    #[test]
    fn merge_is_deep() {
        let mut a = json!({"a": {"b": 1, "c": 2}});
        merge(&mut a, &json!({"a": {"c": 3, "d": [1]}}));
        assert_eq!(a, json!({"a": {"b": 1, "c": 3, "d": [1]}}));
    }

    #[test]
    fn durations_are_protobuf_json() {
        assert_eq!(duration(Duration::from_millis(1500)), "1.500000000s");
    }
}
