//! `palisade.wasm`: the five controls in one module, one VM per worker,
//! running the chain file's routes.
//!
//! Its configuration is the chain file's JSON form (`version`, shared
//! `filters`, `routes` with `name`, `match` and the ordered `filters`),
//! checked as `palisade check` checks it ([`chain::load_json`]). For each
//! request the route is the chain route named like the proxy's route
//! (`xds.route_name`, `kong.route_name`), else the first whose `match`
//! fits the path; its controls run in order on the request and in reverse
//! on the response ([`runner`]). A request no route matches runs no
//! control. Each distinct (control, config) pair is configured once per VM
//! and shared by every route that uses it.

pub mod chain;
pub mod host;
pub mod registry;
pub mod runner;

use palisade_core::config::ConfigError;
use palisade_core::filter::Control;
use palisade_core::host::CallResponse;
use palisade_core::route::{first_match, Match, RouteInput, Rule};
use palisade_core::{Flow, Host, HostKind, HttpFilter, Plugin};
use std::rc::Rc;

palisade_core::export_plugin!(ChainPlugin);

/// The module's name in logs and metrics of its own (`palisade.chain.*`).
pub const NAME: &str = "chain";

/// A chain route, compiled.
struct CompiledRoute {
    name: String,
    matcher: Match,
    /// Indexes into [`ChainPlugin::controls`], outermost first.
    controls: Vec<usize>,
    /// Their names, shared with every stream of the route.
    names: Rc<[&'static str]>,
    /// `prefix: "/"` and nothing else: every request, whatever its target
    /// (even one that is not a path, such as `OPTIONS *`), so the path
    /// need not be read.
    catch_all: bool,
    /// A control asks for `audit: all`: the chain logs let-through records.
    audit_all: bool,
}

impl Rule for CompiledRoute {
    fn matcher(&self) -> &Match {
        &self.matcher
    }
}

/// The configured chain, shared by every request of one VM.
pub struct ChainPlugin {
    routes: Vec<CompiledRoute>,
    controls: Vec<Rc<dyn Control>>,
    publish: bool,
}

impl ChainPlugin {
    /// The route for this request: by the proxy's route name, else by path.
    /// With one route the name can only pick that route, so it is read
    /// (a host call) only when the path does not match.
    ///
    /// `Err` when the proxy routed a path with an escaped slash to another
    /// chain route than the decoded path matches: with Envoy's default
    /// `path_with_escaped_slashes_action`, `/admin%2Fusers` skips an
    /// `/admin/` route, and an upstream that decodes `%2F` serves
    /// `/admin/users` without admin's controls.
    fn select(&self, host: &dyn Host) -> Result<Option<&CompiledRoute>, AmbiguousPath> {
        let raw = || host.request_header(":path").unwrap_or_default();
        let by_path = || {
            if let Some(first) = self.routes.first().filter(|r| r.catch_all) {
                return Some(first);
            }
            let path = palisade_core::path::normalize(&String::from_utf8_lossy(&raw()));
            let input = RouteInput {
                method: "",
                path: &path,
                route_name: None,
            };
            first_match(&self.routes, &input)
        };
        if self.routes.len() == 1 {
            if let Some(route) = by_path() {
                return Ok(Some(route));
            }
        }
        if let Some(name) = host.route_name() {
            if let Some(route) = self.routes.iter().find(|r| r.name == name) {
                if palisade_core::path::has_escaped_slash(&raw()) {
                    if let Some(other) = by_path().filter(|r| r.name != route.name) {
                        return Err(AmbiguousPath(other.name.clone()));
                    }
                }
                return Ok(Some(route));
            }
        }
        Ok(by_path())
    }

    /// How many controls each route runs, by route name (for tests and logs).
    pub fn route_controls(&self) -> Vec<(String, Vec<&'static str>)> {
        self.routes
            .iter()
            .map(|r| {
                let names = r
                    .controls
                    .iter()
                    .map(|&c| self.controls[c].name())
                    .collect();
                (r.name.clone(), names)
            })
            .collect()
    }
}

/// The chain's problems as one config error: every one, each with its place.
fn chain_error(problems: Vec<chain::Problem>) -> ConfigError {
    match problems.as_slice() {
        [one] => ConfigError::new(one.at.clone(), one.message.clone()),
        _ => ConfigError::new(
            "",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

impl Plugin for ChainPlugin {
    const NAME: &'static str = NAME;
    type Filter = ChainFilter;

    fn configure(config: &[u8], host: &mut dyn Host) -> Result<Self, ConfigError> {
        let chain = chain::load_json(config).map_err(chain_error)?;
        // Shared configs no route uses are checked all the same, as
        // `palisade check` does.
        for (filter, value) in &chain.shared {
            let used = chain
                .routes
                .iter()
                .any(|r| r.filters.iter().any(|u| u.filter.name == filter.name));
            if !used {
                let bytes = serde_json::to_vec(value).unwrap_or_default();
                (filter.check)(&bytes, HostKind::Unknown).map_err(|e| {
                    ConfigError::new(format!("filters.{}", filter.name), e.to_string())
                })?;
            }
        }
        let mut keys: Vec<(&'static str, String)> = Vec::new();
        let mut controls: Vec<Rc<dyn Control>> = Vec::new();
        let mut routes = Vec::new();
        for route in &chain.routes {
            let mut indexes = Vec::new();
            for u in &route.filters {
                let text = serde_json::to_string(&u.config).unwrap_or_default();
                let key = (u.filter.name, text);
                let index = match keys.iter().position(|k| *k == key) {
                    Some(i) => i,
                    None => {
                        let control =
                            (u.filter.configure)(key.1.as_bytes(), host).map_err(|e| {
                                ConfigError::new(
                                    chain.origin_label(u.filter, &u.origin),
                                    e.to_string(),
                                )
                            })?;
                        keys.push(key);
                        controls.push(control);
                        controls.len() - 1
                    }
                };
                indexes.push(index);
            }
            let matcher = Match {
                prefix: route.prefix.clone(),
                path: route.path.clone(),
                ..Match::default()
            };
            let catch_all = matcher.path.is_none()
                && matches!(matcher.prefix.as_deref(), None | Some("" | "/"));
            let names = indexes.iter().map(|&c| controls[c].name()).collect();
            let audit_all = indexes
                .iter()
                .any(|&c| controls[c].audit_mode() == palisade_core::audit::AuditMode::All);
            routes.push(CompiledRoute {
                name: route.name.clone(),
                matcher,
                controls: indexes,
                names,
                catch_all,
                audit_all,
            });
        }
        Ok(ChainPlugin {
            routes,
            controls,
            publish: chain.publish_decisions,
        })
    }

    fn new_filter(plugin: &Rc<Self>) -> ChainFilter {
        ChainFilter {
            plugin: Rc::clone(plugin),
            stream: None,
        }
    }

    fn check_host(&self, kind: HostKind) -> Result<(), ConfigError> {
        self.controls.iter().try_for_each(|c| c.check_host(kind))
    }

    fn tick_period_ms(&self) -> Option<u64> {
        self.controls
            .iter()
            .filter_map(|c| c.tick_period_ms())
            .min()
    }

    fn on_tick(&self, host: &mut dyn Host) {
        for c in &self.controls {
            c.on_tick(host);
        }
    }

    fn on_call_response(&self, host: &mut dyn Host, response: CallResponse) {
        for c in &self.controls {
            c.on_call_response(host, response.clone());
        }
    }

    fn holds_request_headers(&self) -> bool {
        self.controls.iter().any(|c| c.holds_request_headers())
    }

    fn holds_response_headers(&self) -> bool {
        self.controls.iter().any(|c| c.holds_response_headers())
    }
}

/// A path whose escaped slashes made the proxy pick another route than the
/// decoded path matches (the chain route the decoded path matches).
struct AmbiguousPath(String);

impl AmbiguousPath {
    /// Refuses the request with 400 and says, once per request, which
    /// proxy setting avoids it.
    fn refuse(self, host: &mut dyn Host) -> Flow {
        let ctx = palisade_core::RequestContext::new(NAME, host);
        ctx.log(
            host,
            palisade_core::Level::Warn,
            &format!(
                "denied with 400 (ambiguous_path): the proxy routed a path with an escaped \
                 slash (%2F, %5C) to another route than its decoded form matches (route {:?}); \
                 set Envoy's path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD",
                self.0
            ),
        );
        palisade_core::problem::Problem::of_kind(
            400,
            "ambiguous-path",
            "The path's escaped slashes make its route ambiguous",
        )
        .request_id(ctx.request_id.as_deref())
        .send(host, &[]);
        Flow::Pause
    }
}

/// One request: the route's controls, chosen at the request headers.
pub struct ChainFilter {
    plugin: Rc<ChainPlugin>,
    stream: Option<runner::Stream>,
}

impl ChainFilter {
    /// Runs a callback through the stream, then sends the audit record on
    /// if a control added to it.
    fn with(
        &mut self,
        host: &mut dyn Host,
        f: impl FnOnce(&mut runner::Stream, &mut dyn Host) -> Flow,
    ) -> Flow {
        match self.stream.as_mut() {
            Some(s) => {
                let flow = f(s, host);
                s.flush_audit(host);
                flow
            }
            None => Flow::Continue,
        }
    }
}

impl HttpFilter for ChainFilter {
    fn on_request_headers(&mut self, host: &mut dyn Host, eos: bool) -> Flow {
        let plugin = Rc::clone(&self.plugin);
        let mut memory = host::Memory::default();
        let view = host::ChainHost {
            inner: host,
            memory: &mut memory,
            publish: plugin.publish,
        };
        let route = match plugin.select(&view) {
            Ok(Some(route)) => route,
            Ok(None) => return Flow::Continue,
            Err(ambiguous) => return ambiguous.refuse(host),
        };
        let filters = route
            .controls
            .iter()
            .map(|&c| plugin.controls[c].new_filter())
            .collect();
        let stream = self.stream.insert(runner::Stream::new(
            filters,
            Rc::clone(&route.names),
            plugin.publish,
            memory,
            route.audit_all,
        ));
        let flow = stream.on_request_headers(host, eos);
        stream.flush_audit(host);
        flow
    }

    fn on_request_body(&mut self, host: &mut dyn Host, size: usize, eos: bool) -> Flow {
        self.with(host, |s, host| s.on_request_body(host, size, eos))
    }

    fn on_request_trailers(&mut self, host: &mut dyn Host) -> Flow {
        self.with(host, |s, host| s.on_request_trailers(host))
    }

    fn on_response_headers(&mut self, host: &mut dyn Host, eos: bool) -> Flow {
        self.with(host, |s, host| s.on_response_headers(host, eos))
    }

    fn on_response_body(&mut self, host: &mut dyn Host, size: usize, eos: bool) -> Flow {
        self.with(host, |s, host| s.on_response_body(host, size, eos))
    }

    fn on_response_trailers(&mut self, host: &mut dyn Host) -> Flow {
        self.with(host, |s, host| s.on_response_trailers(host))
    }

    fn on_call_response(&mut self, host: &mut dyn Host, response: CallResponse) -> Flow {
        self.with(host, |s, host| s.on_call_response(host, response))
    }

    fn on_stream_done(&mut self, host: &mut dyn Host) {
        if let Some(s) = self.stream.as_mut() {
            s.on_stream_done(host);
        }
    }

    fn holder(&self) -> Option<&'static str> {
        self.stream.as_ref().and_then(runner::Stream::holder)
    }
}
