//! `palisade-jwt`: rejects any request whose bearer token is not valid for
//! its route, before it reaches a service.
//!
//! Config in the words of Envoy's `jwt_authn` (`providers`, `rules`,
//! `requires`), key sets inline or fetched through the host (one fetch for
//! all workers, stale-while-revalidate, early refetch on key rotation),
//! verified tokens cached per worker, and signatures checked by the host's
//! BoringSSL where the host offers it (`verify_signature` on Envoy) or by
//! pure Rust (`jwt-compact`) elsewhere.
//!
//! Pure core, thin glue: every decision is plain Rust over [`Host`], tested
//! natively with `FakeHost`; the proxy-wasm adapter is the core's
//! `export_plugin!`. See docs/src/controls/jwt.md for the config reference.

pub mod answer;
pub mod config;
pub mod extractor;
pub mod jwks;
pub mod jwks_cache;
pub mod jwks_fetcher;
pub mod jwt_cache;
pub mod matcher;
pub mod peer;
pub mod requirement;
pub mod signature;
pub mod verifier;

use config::{
    Backend, Config, ForwardedClientCert, OnJwksUnavailable, RequirementConfig, RuleConfig,
    Unmatched,
};
use extractor::{Extraction, Source};
use jwks::{AlgSet, KeySet};
use jwks_cache::ProviderKeys;
use jwks_fetcher::{Fetched, Fetcher, Start, Trigger, NANOS};
use jwt_cache::TokenCache;
use palisade_core::audit::Facts;
use palisade_core::client_ip::{self, ClientIpConfig};
use palisade_core::config::ConfigError;
use palisade_core::host::{CallResponse, Headers};
use palisade_core::metrics::{Counter, Metrics};
use palisade_core::route::{first_match, needs_route_name, Match, Rule};
use palisade_core::{Flow, Host, HostKind, HttpFilter, Level, Plugin, RequestContext};
use peer::{Peer, XFCC};
use requirement::{Inputs, Outcome, Requirement, Verdict};
use signature::CheckedBy;
use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;
use verifier::{Failure, Verified};

palisade_core::export_plugin!(JwtPlugin);

/// The filter's name: metrics `palisade.jwt.*`, decision header `x-palisade-jwt`.
pub const NAME: &str = "jwt";

/// Property (Envoy filter state) holding the verified token's claims as a
/// JSON object, for later filters of the same request (`ratelimit` keys by
/// `sub` from it): `get_property(["palisade_jwt_claims"])`.
pub const CLAIMS_PROPERTY: &str = palisade_core::audit::CLAIMS_PROPERTY;

/// How often each VM looks at its remote key sets.
pub const TICK_MS: u64 = 500;

/// Events counted besides `denied.<reason>` / `shadow_denied.<reason>`.
pub const EVENTS: [&str; 9] = [
    "allowed",
    "verified_host",
    "verified_pure",
    "jwks_fetched",
    "jwks_fetch_failed",
    "jwks_refetch_unknown_kid",
    "jwks_unavailable_allowed",
    "forwarded_client_cert_stripped",
    "client_ip_from_xff",
];

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    allowed: Counter,
    verified_host: Counter,
    verified_pure: Counter,
    jwks_fetched: Counter,
    jwks_fetch_failed: Counter,
    jwks_refetch_unknown_kid: Counter,
    jwks_unavailable_allowed: Counter,
    forwarded_client_cert_stripped: Counter,
    client_ip_from_xff: Counter,
}

impl Counters {
    fn resolve(m: &Metrics) -> Counters {
        Counters {
            allowed: m.counter("allowed"),
            verified_host: m.counter("verified_host"),
            verified_pure: m.counter("verified_pure"),
            jwks_fetched: m.counter("jwks_fetched"),
            jwks_fetch_failed: m.counter("jwks_fetch_failed"),
            jwks_refetch_unknown_kid: m.counter("jwks_refetch_unknown_kid"),
            jwks_unavailable_allowed: m.counter("jwks_unavailable_allowed"),
            forwarded_client_cert_stripped: m.counter("forwarded_client_cert_stripped"),
            client_ip_from_xff: m.counter("client_ip_from_xff"),
        }
    }
}

/// A provider, compiled.
#[derive(Debug)]
struct Provider {
    name: String,
    policy: verifier::Policy,
    /// Indexes into the plugin's source list.
    sources: Vec<usize>,
    forward: bool,
    /// (claim path, lowercase header name).
    claim_to_headers: Vec<(String, String)>,
    on_unavailable: OnJwksUnavailable,
    min_refetch_ns: u64,
}

#[derive(Debug)]
struct CompiledRule {
    matcher: Match,
    requires: Option<Requirement>,
    /// Sources of every provider the requirement mentions.
    sources: Vec<usize>,
    dry_run: bool,
}

impl Rule for CompiledRule {
    fn matcher(&self) -> &Match {
        &self.matcher
    }
}

/// Per-VM mutable state.
#[derive(Debug)]
struct Runtime {
    cache: TokenCache,
    keys: Vec<ProviderKeys>,
    fetchers: Vec<Option<Fetcher>>,
}

/// The configured filter, shared by all requests of one VM.
#[derive(Debug)]
pub struct JwtPlugin {
    providers: Vec<Provider>,
    sources: Vec<Source>,
    rules: Vec<CompiledRule>,
    unmatched: Unmatched,
    bypass_cors: bool,
    dry_run: bool,
    audit: palisade_core::audit::AuditMode,
    realm: String,
    /// Decided per request from the stream's host: the root cannot tell
    /// Kong from Envoy before the first request, and calling
    /// `verify_signature` on Kong traps.
    backend: Backend,
    /// (provider, authority) of every `remote_jwks`, for [`Plugin::check_host`].
    remotes: Vec<(String, String)>,
    /// Every `claim_to_headers` header: client-sent copies are always removed.
    claim_headers: Vec<String>,
    needs_route_name: bool,
    client_ip: ClientIpConfig,
    forwarded_client_cert: ForwardedClientCert,
    /// Path of the first `peer` node read from the connection (not from a
    /// trusted XFCC), for [`Plugin::check_host`]: Kong has no such property.
    connection_peer: Option<String>,
    warned_client_ip_from_xff: Cell<bool>,
    metrics: Metrics,
    counters: Counters,
    runtime: RefCell<Runtime>,
}

/// The JSON Schema of the config, for Kong's `meta.json` and `palisade schema jwt`.
pub fn config_schema() -> serde_json::Value {
    schemars::schema_for!(Config).to_value()
}

/// The validation `configure` and [`Plugin::check_host`] do, without a
/// host: for `palisade check`.
pub fn check_config(json: &[u8], host: HostKind) -> Result<(), ConfigError> {
    let config: Config = palisade_core::config::load(json)?;
    check_host(
        config.signature_backend,
        &remotes(&config),
        connection_peer(&config).as_deref(),
        host,
    )
}

/// The path of the first `peer` node that reads the connection's
/// certificate (none when XFCC is trusted: then the header is read).
fn connection_peer(config: &Config) -> Option<String> {
    fn find(req: &RequirementConfig, at: String) -> Option<String> {
        if req.peer.is_some() {
            return Some(format!("{at}.peer"));
        }
        for (field, list) in [("any", &req.any), ("all", &req.all)] {
            for (i, child) in list.iter().flatten().enumerate() {
                if let Some(found) = find(child, format!("{at}.{field}[{i}]")) {
                    return Some(found);
                }
            }
        }
        None
    }
    if config.forwarded_client_cert == ForwardedClientCert::Trust {
        return None;
    }
    let rules = config.rules.iter().enumerate().filter_map(|(i, r)| {
        r.requires
            .as_ref()
            .and_then(|req| find(req, format!("rules[{i}].requires")))
    });
    rules
        .chain(
            config
                .requires
                .as_ref()
                .and_then(|req| find(req, "requires".into())),
        )
        .next()
}

fn remotes(config: &Config) -> Vec<(String, String)> {
    config
        .providers
        .iter()
        .filter_map(|(name, p)| {
            p.remote_jwks
                .as_ref()
                .map(|r| (name.clone(), r.authority.clone()))
        })
        .collect()
}

/// Features a host lacks are refused by name. An unknown host refuses
/// nothing yet: the glue asks again once the first request reveals it.
fn check_host(
    backend: Backend,
    remotes: &[(String, String)],
    connection_peer: Option<&str>,
    host: HostKind,
) -> Result<(), ConfigError> {
    if !host.is_known() {
        return Ok(());
    }
    if let (HostKind::Kong, Some(path)) = (host, connection_peer) {
        return Err(ConfigError::new(
            path,
            "kong gives a filter no client certificate (no URI SAN property): \
             set forwarded_client_cert: \"trust\" behind a proxy that writes \
             x-forwarded-client-cert, or check the peer in front of kong",
        ));
    }
    if backend == Backend::Host && !host.has_verify_signature() {
        return Err(ConfigError::new(
            "signature_backend",
            format!(
                "\"host\" needs the verify_signature foreign function, which {} lacks",
                host.name()
            ),
        ));
    }
    if host == HostKind::Kong {
        // Kong calls `host:port` itself; there is no cluster to name.
        for (name, authority) in remotes {
            let has_port = authority
                .rsplit_once(':')
                .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
            if !has_port {
                return Err(ConfigError::new(
                    format!("providers.{name}.remote_jwks.authority"),
                    "on kong the JWKS is fetched from authority itself: give host:port",
                ));
            }
        }
    }
    Ok(())
}

fn source_index(sources: &mut Vec<Source>, source: Source) -> usize {
    match sources.iter().position(|s| *s == source) {
        Some(i) => i,
        None => {
            sources.push(source);
            sources.len() - 1
        }
    }
}

impl JwtPlugin {
    /// Nothing here depends on the host: on Kong the root does not know it
    /// yet (host-specific refusals are [`Plugin::check_host`]'s).
    pub fn new(config: &Config, host: &mut dyn Host) -> Result<JwtPlugin, ConfigError> {
        let mut sources = Vec::new();
        let mut providers = Vec::new();
        let mut keys = Vec::new();
        let mut fetchers = Vec::new();
        let mut claim_headers: Vec<String> = Vec::new();
        for (name, p) in &config.providers {
            let mut mine = Vec::new();
            let defaulted =
                p.from_headers.is_none() && p.from_params.is_none() && p.from_cookies.is_none();
            let headers: Vec<(String, String)> = if defaulted {
                vec![("authorization".into(), "Bearer ".into())]
            } else {
                p.from_headers
                    .iter()
                    .flatten()
                    .map(|h| (h.name.to_ascii_lowercase(), h.value_prefix.clone()))
                    .collect()
            };
            for (name, prefix) in headers {
                mine.push(source_index(&mut sources, Source::Header { name, prefix }));
            }
            let params: Vec<String> = if defaulted {
                vec!["access_token".into()]
            } else {
                p.from_params.clone().unwrap_or_default()
            };
            for param in params {
                mine.push(source_index(&mut sources, Source::Param(param)));
            }
            for cookie in p.from_cookies.iter().flatten() {
                mine.push(source_index(&mut sources, Source::Cookie(cookie.clone())));
            }
            let allowed = p.allowed_algorithms();
            let local = match &p.local_jwks {
                Some(v) => Some(
                    KeySet::from_value(v, &allowed)
                        .map_err(|e| ConfigError::new(format!("providers.{name}.local_jwks"), e))?,
                ),
                None => None,
            };
            keys.push(ProviderKeys::new(local, allowed.clone()));
            fetchers.push(
                p.remote_jwks
                    .as_ref()
                    .map(|r| Fetcher::new(NAME, name, r.clone())),
            );
            let claim_to_headers: Vec<(String, String)> = p
                .claim_to_headers
                .iter()
                .map(|c| (c.claim.clone(), c.header.to_ascii_lowercase()))
                .collect();
            for (_, h) in &claim_to_headers {
                if !claim_headers.contains(h) {
                    claim_headers.push(h.clone());
                }
            }
            providers.push(Provider {
                name: name.clone(),
                policy: verifier::Policy {
                    issuer: p.issuer.clone(),
                    audiences: p.audiences.clone(),
                    allowed: AlgSet::of(&allowed),
                    clock_skew_s: p.clock_skew_s,
                    max_token_bytes: p.max_token_bytes,
                    max_lifetime_s: p.max_lifetime_s,
                },
                sources: mine,
                forward: p.forward,
                claim_to_headers,
                on_unavailable: p.on_jwks_unavailable,
                min_refetch_ns: p
                    .remote_jwks
                    .as_ref()
                    .map(|r| r.min_refetch_interval_s.saturating_mul(NANOS))
                    .unwrap_or(0),
            });
        }
        let index = |name: &str| providers.iter().position(|p| p.name == name).unwrap_or(0);
        // The top-level requirement is the last rule, matching everything.
        let default_rule = config.requires.as_ref().map(|req| RuleConfig {
            matcher: Match::default(),
            requires: Some(req.clone()),
            dry_run: None,
        });
        let rules: Vec<CompiledRule> = config
            .rules
            .iter()
            .chain(default_rule.as_ref())
            .map(|r| {
                let requires = r.requires.as_ref().map(|c| Requirement::compile(c, &index));
                let mut used = Vec::new();
                if let Some(req) = &requires {
                    req.providers(&mut used);
                }
                let mut rule_sources: Vec<usize> = Vec::new();
                for p in used {
                    for s in &providers[p].sources {
                        if !rule_sources.contains(s) {
                            rule_sources.push(*s);
                        }
                    }
                }
                CompiledRule {
                    matcher: r.matcher.clone(),
                    requires,
                    sources: rule_sources,
                    dry_run: r.dry_run.unwrap_or(config.dry_run),
                }
            })
            .collect();
        let metrics = Metrics::define(host, NAME, &EVENTS, &answer::REASONS);
        if config.dry_run {
            host.log(
                Level::Warn,
                &format!("palisade.{NAME}: dry run: requests without a valid token pass"),
            );
        }
        Ok(JwtPlugin {
            needs_route_name: needs_route_name(&rules),
            client_ip: config.client_ip,
            forwarded_client_cert: config.forwarded_client_cert,
            connection_peer: connection_peer(config),
            warned_client_ip_from_xff: Cell::new(false),
            providers,
            sources,
            rules,
            unmatched: config.unmatched.unwrap_or_default(),
            bypass_cors: config.bypass_cors_preflight,
            dry_run: config.dry_run,
            audit: config.audit,
            realm: config.realm.clone(),
            backend: config.signature_backend,
            remotes: remotes(config),
            claim_headers,
            counters: Counters::resolve(&metrics),
            metrics,
            runtime: RefCell::new(Runtime {
                cache: TokenCache::new(config.token_cache_entries),
                keys,
                fetchers,
            }),
        })
    }

    /// Whether signatures go to the host's `verify_signature` on `kind`:
    /// only where the host has it (`host` on any other is refused by
    /// [`Plugin::check_host`]), so an unknown host never gets the call.
    pub fn uses_host_signatures(&self, kind: HostKind) -> bool {
        self.backend != Backend::Pure && kind.has_verify_signature()
    }

    /// Adopts sets published by other VMs and starts a due fetch (from the
    /// tick, never from `configure`: Kong traps a call made there).
    pub fn refresh(&self, host: &mut dyn Host) {
        let now = host.now_nanos();
        let mut rt = self.runtime.borrow_mut();
        let Runtime { keys, fetchers, .. } = &mut *rt;
        for (fetcher, keys) in fetchers.iter_mut().zip(keys.iter_mut()) {
            if let Some(f) = fetcher {
                f.sync(host, keys);
                self.start_fetch(host, f, Trigger::Scheduled, now);
            }
        }
    }

    /// Starts a fetch if due and this VM wins the lease; a call the host
    /// refuses (an unknown cluster, say) counts and logs as a failed fetch.
    fn start_fetch(
        &self,
        host: &mut dyn Host,
        fetcher: &mut Fetcher,
        trigger: Trigger,
        now_ns: u64,
    ) -> Option<u32> {
        match fetcher.try_start(host, trigger, now_ns) {
            Start::Started(call) => Some(call),
            Start::NotNow => None,
            Start::Refused(why) => {
                self.fetch_failed(host, fetcher, &why, "");
                None
            }
        }
    }

    /// A fetch that failed, refused or answered badly: counted, and logged
    /// with the reason and when the next attempt comes.
    fn fetch_failed(&self, host: &mut dyn Host, fetcher: &Fetcher, why: &str, kept: &str) {
        self.counters.jwks_fetch_failed.add(host, 1);
        let control = fetcher.control(host);
        host.log(
            Level::Warn,
            &format!(
                "palisade.{NAME}: provider {}: JWKS fetch failed: {why}; {kept}retry in {} s",
                fetcher.provider,
                fetcher.backoff_s(control.failures.max(1))
            ),
        );
    }

    /// Applies a fetch's answer if `token` is one of this VM's fetches.
    fn finish_fetch(
        &self,
        host: &mut dyn Host,
        token: u32,
        status: Option<u16>,
        body: &[u8],
    ) -> bool {
        let now = host.now_nanos();
        let mut rt = self.runtime.borrow_mut();
        let Runtime { keys, fetchers, .. } = &mut *rt;
        for (fetcher, keys) in fetchers.iter_mut().zip(keys.iter_mut()) {
            let Some(f) = fetcher else { continue };
            if !f.owns(token) {
                continue;
            }
            match f.finish(host, keys, status, body, now) {
                Fetched::Updated { keys } => {
                    self.counters.jwks_fetched.add(host, 1);
                    host.log(
                        Level::Info,
                        &format!(
                            "palisade.{NAME}: provider {}: JWKS updated ({keys} keys)",
                            f.provider
                        ),
                    );
                }
                Fetched::Failed(why) => {
                    self.fetch_failed(host, f, &why, "keeping the last good set, ");
                }
            }
            return true;
        }
        false
    }

    fn select(&self, host: &dyn Host) -> Option<usize> {
        let facts = palisade_core::context::RouteFacts::read(host, self.needs_route_name);
        let input = facts.input();
        let rule = first_match(&self.rules, &input)?;
        self.rules.iter().position(|r| std::ptr::eq(r, rule))
    }

    /// What provider `p` makes of `token` (memoized by the caller).
    fn outcome(
        &self,
        host: &mut dyn Host,
        p: usize,
        token: &[u8],
        now_ns: u64,
        allow_fetch: bool,
        pending: &mut Option<(usize, u32)>,
    ) -> Outcome {
        let provider = &self.providers[p];
        let now_s = now_ns / NANOS;
        let (keys, generation) = {
            let mut rt = self.runtime.borrow_mut();
            let Runtime {
                keys,
                fetchers,
                cache,
            } = &mut *rt;
            if keys[p].current().is_none() {
                if let Some(f) = fetchers[p].as_mut() {
                    f.sync(host, &mut keys[p]);
                    // No keys yet (no tick has fetched: on Kong none runs
                    // before the first request): this request fetches
                    // them and waits for the answer.
                    if keys[p].current().is_none() && allow_fetch && pending.is_none() {
                        if let Some(call) = self.start_fetch(host, f, Trigger::Scheduled, now_ns) {
                            host.log(
                                Level::Info,
                                &format!(
                                    "palisade.{NAME}: provider {}: no keys yet, a request fetches the JWKS",
                                    provider.name
                                ),
                            );
                            *pending = Some((p, call));
                            return Outcome::Pending;
                        }
                    }
                }
            }
            let Some(set) = keys[p].current() else {
                drop(rt);
                if provider.on_unavailable == OnJwksUnavailable::Allow {
                    self.counters.jwks_unavailable_allowed.add(host, 1);
                    return Outcome::AllowedUnchecked;
                }
                return Outcome::Unavailable;
            };
            let generation = keys[p].generation;
            if let Some(v) = cache.get(p, token, now_s, generation) {
                return Outcome::Valid(v);
            }
            (set, generation)
        };
        let parsed = match verifier::parse(token, &provider.policy) {
            Ok(parsed) => parsed,
            Err(f) => return Outcome::Invalid(f),
        };
        let mut checked = None;
        let use_host = self.uses_host_signatures(host.kind());
        let result = verifier::verify(
            parsed,
            &keys,
            &provider.policy,
            now_s,
            host,
            use_host,
            &mut checked,
        );
        match checked {
            Some(CheckedBy::Host) => self.counters.verified_host.add(host, 1),
            Some(CheckedBy::Pure) => self.counters.verified_pure.add(host, 1),
            None => {}
        }
        match result {
            Ok(v) => {
                let v = Rc::new(v);
                self.runtime
                    .borrow_mut()
                    .cache
                    .insert(p, token, v.clone(), now_s, generation);
                Outcome::Valid(v)
            }
            Err(Failure::UnknownKid(kid)) => {
                self.unknown_kid(host, p, &kid, token, now_ns, allow_fetch, pending)
            }
            Err(f) => Outcome::Invalid(f),
        }
    }

    /// A `kid` the set lacks: maybe another VM already has the new set;
    /// else refetch now (at most once per interval), unless recently refused.
    #[allow(clippy::too_many_arguments)]
    fn unknown_kid(
        &self,
        host: &mut dyn Host,
        p: usize,
        kid: &str,
        token: &[u8],
        now_ns: u64,
        allow_fetch: bool,
        pending: &mut Option<(usize, u32)>,
    ) -> Outcome {
        let unknown = Outcome::Invalid(Failure::UnknownKid(kid.to_string()));
        let started = {
            let mut rt = self.runtime.borrow_mut();
            let Runtime { keys, fetchers, .. } = &mut *rt;
            let Some(fetcher) = fetchers[p].as_mut() else {
                return unknown;
            };
            if keys[p].is_negative(kid, now_ns) {
                return unknown;
            }
            let adopted = fetcher.sync(host, &mut keys[p]);
            if adopted && keys[p].current().is_some_and(|k| k.has_kid(kid)) {
                None
            } else {
                let started = if allow_fetch && pending.is_none() {
                    self.start_fetch(host, fetcher, Trigger::UnknownKid, now_ns)
                } else {
                    None
                };
                if started.is_none() {
                    let until = now_ns.saturating_add(self.providers[p].min_refetch_ns.max(NANOS));
                    keys[p].remember_unknown(kid, until);
                    return unknown;
                }
                started
            }
        };
        match started {
            Some(call) => {
                self.counters.jwks_refetch_unknown_kid.add(host, 1);
                *pending = Some((p, call));
                Outcome::Pending
            }
            // The new set from another VM has the kid: verify against it.
            None => self.outcome(host, p, token, now_ns, false, pending),
        }
    }

    fn on_unavailable(&self, p: usize) -> OnJwksUnavailable {
        self.providers
            .get(p)
            .map(|p| p.on_unavailable)
            .unwrap_or_default()
    }
}

fn find<'h>(headers: &'h Headers, name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

impl Plugin for JwtPlugin {
    const NAME: &'static str = NAME;
    type Filter = JwtFilter;

    /// No fetch from here: Kong traps a call made from `on_configure` (and
    /// its worker exits for good). The tick or the first request fetches.
    fn configure(config: &[u8], host: &mut dyn Host) -> Result<Self, ConfigError> {
        let config: Config = palisade_core::config::load(config)?;
        JwtPlugin::new(&config, host)
    }

    fn check_host(&self, kind: HostKind) -> Result<(), ConfigError> {
        check_host(
            self.backend,
            &self.remotes,
            self.connection_peer.as_deref(),
            kind,
        )
    }

    fn audit_mode(&self) -> palisade_core::audit::AuditMode {
        self.audit
    }

    fn new_filter(plugin: &Rc<Self>) -> JwtFilter {
        JwtFilter {
            plugin: plugin.clone(),
            pending: None,
        }
    }

    fn tick_period_ms(&self) -> Option<u64> {
        self.runtime
            .borrow()
            .fetchers
            .iter()
            .any(Option::is_some)
            .then_some(TICK_MS)
    }

    fn on_tick(&self, host: &mut dyn Host) {
        self.refresh(host);
    }

    fn on_call_response(&self, host: &mut dyn Host, response: CallResponse) {
        if let CallResponse::Http {
            token,
            status,
            body,
            ..
        } = response
        {
            self.finish_fetch(host, token, status, &body);
        }
    }
}

/// A request waiting for a JWKS refetch.
#[derive(Debug)]
struct Pending {
    call: u32,
    rule: usize,
    extraction: Extraction,
    ctx: RequestContext,
}

/// One request.
#[derive(Debug)]
pub struct JwtFilter {
    plugin: Rc<JwtPlugin>,
    pending: Option<Pending>,
}

impl JwtFilter {
    fn decide(
        &mut self,
        host: &mut dyn Host,
        headers: &Headers,
        ctx: RequestContext,
        rule_index: usize,
        extraction: Extraction,
        allow_fetch: bool,
    ) -> Flow {
        let plugin = self.plugin.clone();
        let Some(rule) = plugin.rules.get(rule_index) else {
            return Flow::Continue;
        };
        let Some(requires) = &rule.requires else {
            return Flow::Continue;
        };
        let now_ns = host.now_nanos();
        let mut pending = None;
        let mut inputs = RequestInputs {
            plugin: &plugin,
            host,
            headers,
            extraction: &extraction,
            now_ns,
            allow_fetch,
            pending: &mut pending,
            memo: vec![None; plugin.providers.len()],
            peer: None,
            client_ip: None,
        };
        let verdict = requires.evaluate(&mut inputs);
        // The workload, for the audit record, when a `peer` node read it.
        let facts = Facts {
            peer: match inputs.peer.take() {
                Some(Peer::Ids(ids)) => ids.first().map(ToString::to_string),
                _ => None,
            },
            ..Facts::default()
        };
        match verdict {
            Verdict::Met(met) => {
                plugin.allow(host, headers, &ctx, &met, &extraction, rule.dry_run);
                // A verified token (its identity comes from the claims just
                // set) or the workload alone admitted the request.
                if !met.is_empty() || facts.peer.is_some() {
                    palisade_core::audit::record(host, &ctx, "allow", None, facts);
                }
                Flow::Continue
            }
            Verdict::Unmet(unmet) => {
                let denial =
                    answer::for_unmet(&unmet, &plugin.realm, &|p| plugin.on_unavailable(p));
                ctx.reject_with(host, &plugin.metrics, denial, rule.dry_run, facts)
            }
            Verdict::Pending(_) => match pending {
                Some((_, call)) => {
                    self.pending = Some(Pending {
                        call,
                        rule: rule_index,
                        extraction,
                        ctx,
                    });
                    Flow::Pause
                }
                None => Flow::Continue,
            },
        }
    }
}

/// What one request's requirement reads, each at most once and only when
/// a node asks: tokens per provider, the peer, the client address.
struct RequestInputs<'a> {
    plugin: &'a JwtPlugin,
    host: &'a mut dyn Host,
    headers: &'a Headers,
    extraction: &'a Extraction,
    now_ns: u64,
    allow_fetch: bool,
    pending: &'a mut Option<(usize, u32)>,
    memo: Vec<Option<Outcome>>,
    peer: Option<Peer>,
    client_ip: Option<Option<IpAddr>>,
}

impl Inputs for RequestInputs<'_> {
    fn token(&mut self, p: usize) -> Outcome {
        if let Some(Some(o)) = self.memo.get(p) {
            return o.clone();
        }
        let outcome = match self.extraction {
            Extraction::One { source, token }
                if self.plugin.providers[p].sources.contains(source) =>
            {
                self.plugin.outcome(
                    self.host,
                    p,
                    token,
                    self.now_ns,
                    self.allow_fetch,
                    self.pending,
                )
            }
            _ => Outcome::Missing,
        };
        if let Some(slot) = self.memo.get_mut(p) {
            *slot = Some(outcome.clone());
        }
        outcome
    }

    fn peer(&mut self) -> Peer {
        if self.peer.is_none() {
            self.peer = Some(self.plugin.read_peer(self.host, self.headers));
        }
        self.peer.clone().unwrap_or(Peer::Missing)
    }

    fn client_ip(&mut self) -> Option<IpAddr> {
        if self.client_ip.is_none() {
            self.client_ip = Some(self.plugin.read_client_ip(self.host, self.headers));
        }
        self.client_ip.flatten()
    }
}

/// Envoy's `connection.mtls`: a bool (one byte) saying the client presented
/// a certificate, which the listener verified unless it is configured with
/// `trust_chain_verification: ACCEPT_UNTRUSTED`.
fn connection_mtls(host: &dyn Host) -> bool {
    host.property(&["connection", "mtls"])
        .is_some_and(|v| matches!(v.as_slice(), [1] | b"true"))
}

impl JwtPlugin {
    /// The peer: from a trusted XFCC, or from the connection's certificate
    /// (its URI SAN first; `connection.mtls` only to tell a certificate
    /// without one from no certificate at all).
    fn read_peer(&self, host: &dyn Host, headers: &Headers) -> Peer {
        if self.forwarded_client_cert == ForwardedClientCert::Trust {
            return peer::from_xfcc(headers);
        }
        let kind = host.kind();
        if kind == HostKind::Kong {
            // Refused by check_host; never read a property Kong lacks.
            return Peer::Missing;
        }
        let uri = host
            .property(&["connection", "uri_san_peer_certificate"])
            .and_then(|raw| kind.decode_string(&raw));
        if let Some(found) = peer::from_uri_san(uri.as_deref()) {
            return found;
        }
        match connection_mtls(host) {
            true => Peer::Ids(Vec::new()),
            false => Peer::Missing,
        }
    }

    /// The client address, as `ratelimit` finds it.
    fn read_client_ip(&self, host: &mut dyn Host, headers: &Headers) -> Option<IpAddr> {
        let kind = host.kind();
        let source = host
            .property(&["source", "address"])
            .and_then(|raw| kind.decode_string(&raw));
        if let Some(source) = &source {
            if self.client_wrote_address(host, source, headers) {
                return None;
            }
        }
        client_ip::client_address(source.as_deref(), headers, &self.client_ip)
    }

    /// An address Envoy took from the client's own `X-Forwarded-For`
    /// (`use_remote_address: false`) would let a client write its way into
    /// an allow-list: it counts as unknown (refused), counted and warned
    /// once per VM. Unlike `ratelimit`, which only warns, this is an access
    /// decision. Behind a trusted proxy, `xff_num_trusted_hops` reads its entry.
    fn client_wrote_address(&self, host: &mut dyn Host, source: &str, headers: &Headers) -> bool {
        if self.client_ip.xff_num_trusted_hops != 0
            || !client_ip::peer_from_forwarded_for(source, headers)
        {
            return false;
        }
        self.counters.client_ip_from_xff.add(host, 1);
        if !self.warned_client_ip_from_xff.replace(true) {
            host.log(
                Level::Warn,
                &format!(
                    "palisade.{NAME}: a client_ip requirement refused the address Envoy took \
                     from the client's own X-Forwarded-For (use_remote_address: false on the HTTP \
                     connection manager), which any client can write: set use_remote_address: \
                     true (behind N trusted proxies, also xff_num_trusted_hops: N); counted as \
                     palisade.{NAME}.client_ip_from_xff, warned once per VM"
                ),
            );
        }
        true
    }

    /// Whether a client-sent XFCC must go: unless trusted, it is only left
    /// on a connection with a client certificate (where Envoy's connection
    /// manager sanitizes, sets or appends it per `forward_client_cert_details`).
    /// Kong writes no XFCC and has no certificate property: always removed.
    fn strips_xfcc(&self, host: &dyn Host, headers: &Headers) -> bool {
        self.forwarded_client_cert == ForwardedClientCert::Ignore
            && find(headers, XFCC).is_some()
            && (host.kind() == HostKind::Kong || !connection_mtls(host))
    }

    /// The success path: claim headers (client copies already gone), the
    /// token stripped unless `forward`, the decision published.
    fn allow(
        &self,
        host: &mut dyn Host,
        headers: &Headers,
        ctx: &RequestContext,
        met: &[(usize, Rc<Verified>)],
        extraction: &Extraction,
        dry_run: bool,
    ) {
        for (p, verified) in met {
            for (claim, header) in &self.providers[*p].claim_to_headers {
                if let Some(value) =
                    matcher::claim(&verified.claims, claim).and_then(matcher::header_value)
                {
                    host.set_request_header(header, value.as_bytes());
                }
            }
        }
        if let (Extraction::One { source, .. }, false) = (extraction, met.is_empty() || dry_run) {
            let forward = met.iter().any(|(p, _)| self.providers[*p].forward);
            if let (false, Some(s)) = (forward, self.sources.get(*source)) {
                extractor::strip(host, headers, s);
            }
        }
        if let Some((_, verified)) = met.first() {
            host.set_property(&[CLAIMS_PROPERTY], &verified.claims_json);
            ctx.publish(host, "allow");
            self.counters.allowed.add(host, 1);
        }
    }
}

impl HttpFilter for JwtFilter {
    fn on_request_headers(&mut self, host: &mut dyn Host, _end_of_stream: bool) -> Flow {
        let headers = host.request_headers();
        let plugin = self.plugin.clone();
        let ctx = RequestContext::from_headers(NAME, &headers).audited(plugin.audit);
        let strip_xfcc = plugin.strips_xfcc(host, &headers);
        // A client must never forge an identity header, whatever the route.
        if host.kind().strips_request_headers_by_overwrite()
            && palisade_core::headers::repeated(&headers, |n| {
                plugin.claim_headers.iter().any(|c| c == n) || (strip_xfcc && n == XFCC)
            })
        {
            return ctx.reject(
                host,
                &plugin.metrics,
                answer::repeated_header(),
                plugin.dry_run,
            );
        }
        for name in &plugin.claim_headers {
            if find(&headers, name).is_some() {
                host.remove_request_header(name);
            }
        }
        if strip_xfcc {
            host.remove_request_header(XFCC);
            plugin.counters.forwarded_client_cert_stripped.add(host, 1);
        }
        if plugin.bypass_cors && extractor::is_cors_preflight(&headers) {
            return Flow::Continue;
        }
        let Some(rule_index) = plugin.select(host) else {
            return match plugin.unmatched {
                Unmatched::Allow => Flow::Continue,
                Unmatched::Deny => {
                    ctx.reject(host, &plugin.metrics, answer::unmatched(), plugin.dry_run)
                }
            };
        };
        let rule = &plugin.rules[rule_index];
        if rule.requires.is_none() {
            return Flow::Continue;
        }
        let extraction = extractor::extract(&headers, &plugin.sources, &rule.sources);
        if extraction == Extraction::Ambiguous {
            return ctx.reject(
                host,
                &plugin.metrics,
                answer::ambiguous(&plugin.realm),
                rule.dry_run,
            );
        }
        self.decide(host, &headers, ctx, rule_index, extraction, true)
    }

    fn on_call_response(&mut self, host: &mut dyn Host, response: CallResponse) -> Flow {
        let CallResponse::Http {
            token,
            status,
            body,
            ..
        } = response
        else {
            return Flow::Continue;
        };
        let plugin = self.plugin.clone();
        plugin.finish_fetch(host, token, status, &body);
        let Some(pending) = self.pending.take() else {
            return Flow::Continue;
        };
        if pending.call != token {
            self.pending = Some(pending);
            return Flow::Pause;
        }
        let headers = host.request_headers();
        self.decide(
            host,
            &headers,
            pending.ctx,
            pending.rule,
            pending.extraction,
            false,
        )
    }
}
