//! `palisade-headers`: request header hygiene and response hardening.
//!
//! On requests it strips headers a client must never set (Palisade's own
//! decisions, the JWT filter's claim headers, method-override headers unless
//! `method_override` is `keep`), optionally everything outside an allow-list,
//! and refuses requests with a method or method override that is not allowed
//! (405; TRACE and TRACK by default), too many or too large headers (431) or
//! control characters (400). On responses it
//! drops headers that advertise the stack and adds browser security headers.
//!
//! Pure core, thin glue: all decisions are plain Rust over [`Host`], tested
//! natively with `FakeHost`; the proxy-wasm adapter is the core's
//! `export_plugin!`. See docs/src/controls/headers.md for the config reference.

pub mod config;
pub mod policy;
pub mod request;
pub mod response;

use config::{Config, MethodOverride};
use palisade_core::config::ConfigError;
use palisade_core::host::Headers;
use palisade_core::method::OVERRIDE_HEADERS;
use palisade_core::metrics::{Counter, Metrics};
use palisade_core::route::{first_match, needs_route_name, Match, RouteInput, Rule};
use palisade_core::{Flow, Host, HttpFilter, Level, Plugin, RequestContext};
use policy::{Policy, Settings};
use std::borrow::Cow;
use std::rc::Rc;

palisade_core::export_plugin!(HeadersPlugin);

/// The filter's name: metrics `palisade.headers.*`, decision header `x-palisade-headers`.
pub const NAME: &str = "headers";

/// The decision header `RequestContext::publish` sets (`x-palisade-` and
/// [`NAME`]): stripped by that set, never removed first.
const PUBLISHED: &str = "x-palisade-headers";

/// Counters besides the denials (those are counted by
/// `RequestContext::reject`). Resolved to handles at configure time so
/// counting costs one host call and no name lookup. Only events that are not
/// routine are counted: a count is a host call (a VM crossing), and "allowed"
/// or "added the security headers" would cost one on every request while
/// telling nothing Envoy's own `downstream_rq_*` stats do not.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    request_headers_removed: Counter,
    response_headers_removed: Counter,
    shadow_request_headers_removed: Counter,
    shadow_response_headers_removed: Counter,
}

/// Events counted besides `denied.<reason>` / `shadow_denied.<reason>`.
pub const EVENTS: [&str; 4] = [
    "request_headers_removed",
    "response_headers_removed",
    "shadow_request_headers_removed",
    "shadow_response_headers_removed",
];

impl Counters {
    fn resolve(metrics: &Metrics) -> Counters {
        Counters {
            request_headers_removed: metrics.counter("request_headers_removed"),
            response_headers_removed: metrics.counter("response_headers_removed"),
            shadow_request_headers_removed: metrics.counter("shadow_request_headers_removed"),
            shadow_response_headers_removed: metrics.counter("shadow_response_headers_removed"),
        }
    }
}

/// The JSON Schema of the config (schemars' draft 2020-12), for Kong's
/// `meta.json` and `palisade schema headers`.
pub fn config_schema() -> serde_json::Value {
    schemars::schema_for!(Config).to_value()
}

/// The validation `configure` does, without a host: for `palisade check`.
/// The headers filter behaves the same on every host, so `host` changes nothing.
pub fn check_config(json: &[u8], _host: palisade_core::HostKind) -> Result<(), ConfigError> {
    palisade_core::config::load::<Config>(json).map(|_| ())
}

/// A rule with its fully resolved policy.
#[derive(Debug)]
struct CompiledRule {
    matcher: Match,
    policy: Rc<Policy>,
}

impl Rule for CompiledRule {
    fn matcher(&self) -> &Match {
        &self.matcher
    }
}

/// The configured filter, shared by all requests of one VM.
#[derive(Debug)]
pub struct HeadersPlugin {
    default: Rc<Policy>,
    rules: Vec<CompiledRule>,
    needs_route_name: bool,
    method_override: MethodOverride,
    metrics: Metrics,
    counters: Counters,
    audit: palisade_core::audit::AuditMode,
}

impl HeadersPlugin {
    /// Resolves every layer once and defines the metrics.
    pub fn new(config: &Config, host: &mut dyn Host) -> HeadersPlugin {
        let base = Settings::preset().with(Some(config.dry_run), &config.request, &config.response);
        let default = Rc::new(base.compile());
        let rules: Vec<CompiledRule> = config
            .rules
            .iter()
            .map(|r| CompiledRule {
                matcher: r.matcher.clone(),
                policy: Rc::new(base.with(r.dry_run, &r.request, &r.response).compile()),
            })
            .collect();
        for (place, policy) in std::iter::once(("the defaults".to_string(), &default)).chain(
            rules
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("rules[{i}]"), &r.policy)),
        ) {
            let spoofable: Vec<&str> = ["x-palisade-denied-by", "x-jwt-sub"]
                .into_iter()
                .filter(|n| !policy.request.drops(n))
                .collect();
            if policy.dry_run {
                host.log(
                    Level::Warn,
                    &format!(
                        "palisade.{NAME}: {place} in dry run: nothing is refused, stripped or \
                         added there, spoofed x-palisade-* and x-jwt-* headers included"
                    ),
                );
            } else if !spoofable.is_empty() {
                host.log(
                    Level::Warn,
                    &format!(
                        "palisade.{NAME}: {place} let clients send {}: they can spoof \
                         Palisade decisions or identities (keep \"x-palisade-*\" and \
                         \"x-jwt-*\" in request.remove)",
                        spoofable.join(" and ")
                    ),
                );
            }
        }
        let metrics = Metrics::define(host, NAME, &EVENTS, &request::REASONS);
        HeadersPlugin {
            needs_route_name: needs_route_name(&rules),
            method_override: config.method_override,
            default,
            rules,
            counters: Counters::resolve(&metrics),
            audit: config.audit,
            metrics,
        }
    }

    /// The default policy (requests matching no rule).
    pub fn default_policy(&self) -> &Policy {
        &self.default
    }

    /// The policy for a request: the first rule matching its path and the
    /// method the upstream will act on.
    fn select(&self, host: &dyn Host, method: &str, raw_path: &[u8]) -> Rc<Policy> {
        if self.rules.is_empty() {
            return self.default.clone();
        }
        let path = palisade_core::path::normalize(&String::from_utf8_lossy(raw_path));
        let route_name = if self.needs_route_name {
            host.route_name()
        } else {
            None
        };
        let input = RouteInput {
            method,
            path: &path,
            route_name: route_name.as_deref(),
        };
        match first_match(&self.rules, &input) {
            Some(rule) => rule.policy.clone(),
            None => self.default.clone(),
        }
    }
}

/// A header's value from the fetched list (names there are lowercase).
fn find<'h>(headers: &'h Headers, name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// A pseudo-header from the list, else from the host (Kong leaves them out).
fn pseudo<'h>(host: &dyn Host, headers: &'h Headers, name: &str) -> Cow<'h, [u8]> {
    match find(headers, name) {
        Some(v) => Cow::Borrowed(v),
        None => Cow::Owned(host.request_header(name).unwrap_or_default()),
    }
}

impl Plugin for HeadersPlugin {
    const NAME: &'static str = NAME;
    type Filter = HeadersFilter;

    fn configure(config: &[u8], host: &mut dyn Host) -> Result<Self, ConfigError> {
        let config: Config = palisade_core::config::load(config)?;
        Ok(HeadersPlugin::new(&config, host))
    }

    fn new_filter(plugin: &Rc<Self>) -> HeadersFilter {
        HeadersFilter {
            plugin: plugin.clone(),
            state: None,
        }
    }

    fn audit_mode(&self) -> palisade_core::audit::AuditMode {
        self.audit
    }
}

/// What the request phase decided, for the response phase.
#[derive(Debug)]
struct Chosen {
    policy: Rc<Policy>,
    request_id: Option<String>,
}

/// One request.
#[derive(Debug)]
pub struct HeadersFilter {
    plugin: Rc<HeadersPlugin>,
    state: Option<Chosen>,
}

impl HttpFilter for HeadersFilter {
    fn on_request_headers(&mut self, host: &mut dyn Host, _end_of_stream: bool) -> Flow {
        let headers = host.request_headers();
        let plugin = self.plugin.clone();
        let counters = plugin.counters;
        let ctx = RequestContext::from_headers(NAME, &headers).audited(plugin.audit);
        // Every request needs both (TRACE is refused by default, `_method`
        // is read from the query): free on Envoy, one host call each on Kong.
        let raw_method = pseudo(host, &headers, ":method");
        let method = std::str::from_utf8(&raw_method).unwrap_or("");
        let raw_path = pseudo(host, &headers, ":path");
        let keep = plugin.method_override == MethodOverride::Keep;
        let over = request::override_of(&headers, &raw_path, keep);
        let policy = plugin.select(host, over.effective(method), &raw_path);

        let mut shadowed = false;
        if let Some(denial) = request::check(&policy.request, method, over, &headers) {
            let flow = ctx.reject(host, &plugin.metrics, denial, policy.dry_run);
            if flow == Flow::Pause {
                self.state = Some(Chosen {
                    policy,
                    request_id: ctx.request_id,
                });
                return Flow::Pause;
            }
            shadowed = true;
        }

        let (names, fields) = request::to_strip(&policy.request, &headers, !keep, PUBLISHED);
        let strips_by_overwrite = host.kind().strips_request_headers_by_overwrite();
        if fields > 0
            && strips_by_overwrite
            && palisade_core::headers::repeated(&headers, |n| {
                n == PUBLISHED
                    || policy.request.drops(n)
                    || (!keep && OVERRIDE_HEADERS.contains(&n))
            })
        {
            let flow = ctx.reject(
                host,
                &plugin.metrics,
                request::repeated_denial(),
                policy.dry_run,
            );
            if flow == Flow::Pause {
                self.state = Some(Chosen {
                    policy,
                    request_id: ctx.request_id,
                });
                return Flow::Pause;
            }
        }
        if fields > 0 {
            if policy.dry_run {
                counters.shadow_request_headers_removed.add(host, fields);
                ctx.log(
                    host,
                    Level::Info,
                    &format!("dry_run: would remove {fields} request header(s)"),
                );
            } else {
                for name in names {
                    host.remove_request_header(name);
                }
                counters.request_headers_removed.add(host, fields);
            }
        }

        // After stripping: a client-sent `x-palisade-headers` is gone by now.
        if !shadowed {
            ctx.allow(host);
        }
        self.state = Some(Chosen {
            policy,
            request_id: ctx.request_id,
        });
        Flow::Continue
    }

    fn on_response_headers(&mut self, host: &mut dyn Host, _end_of_stream: bool) -> Flow {
        let chosen = match self.state.take() {
            Some(c) => c,
            // A reply sent before this filter saw the request (an earlier
            // filter's local reply). Request headers cannot be read from a
            // response callback, so the defaults apply and no id is known.
            None => Chosen {
                policy: self.plugin.default.clone(),
                request_id: None,
            },
        };
        let counters = self.plugin.counters;
        let headers = host.response_headers();
        let plan = response::plan(
            &chosen.policy.response,
            &headers,
            chosen.request_id.as_deref(),
        );
        if chosen.policy.dry_run {
            counters
                .shadow_response_headers_removed
                .add(host, plan.removed_fields);
        } else {
            for name in &plan.remove {
                host.remove_response_header(name);
            }
            for (name, value) in &plan.add {
                host.add_response_header(name, value.as_bytes());
            }
            counters
                .response_headers_removed
                .add(host, plan.removed_fields);
        }
        self.state = Some(chosen);
        Flow::Continue
    }
}
