//! `palisade-ratelimit`: per-client rate limits and quotas.
//!
//! A request takes the first rule whose `match` applies and must be admitted
//! by every limit of that rule (token buckets keyed by client address,
//! headers, route, method, path or JWT claims). In local mode the buckets
//! live in the proxy's shared data, exact across worker threads and bounded
//! in memory ([`table`]); in global mode an RLS v3 service decides
//! ([`global`]). Over the limit: 429 problem+json with `Retry-After`, or
//! gRPC `RESOURCE_EXHAUSTED` ([`answer`]).
//!
//! A limit with `count` spends its token only on the listed response
//! statuses (lockout after failed logins): the token is reserved at the
//! request, so concurrent guesses never exceed the bucket, and given back
//! when the response is not counted or the stream ends without one. A limit
//! with `max_in_flight` caps a key's concurrent requests; the place is held
//! until the stream ends, however it ends ([`HttpFilter::on_stream_done`]).
//!
//! Pure core, thin glue: every decision is plain Rust over [`Host`], tested
//! natively with `FakeHost`; the proxy-wasm adapter is the core's
//! `export_plugin!`. See docs/src/controls/ratelimit.md for the config reference.

pub mod answer;
pub mod bucket;
pub mod config;
pub mod global;
pub mod key;
pub mod table;

use answer::LimitState;
use bucket::Rate;
use config::{
    ClaimFrom, ClaimSource, ClientIpConfig, Config, GlobalConfig, KeyPart, Mode, OnError,
    OnMissingKey, ResponseHeaders,
};
use key::{Key, KeyInput};
use palisade_core::audit::Facts;
use palisade_core::config::ConfigError;
use palisade_core::context::{RouteFacts, DENIED_BY_HEADER};
use palisade_core::host::{CallResponse, Headers};
use palisade_core::metrics::{Counter, Metrics};
use palisade_core::route::{needs_route_name, Match, Rule};
use palisade_core::{Denial, Flow, Host, HostKind, HttpFilter, Level, Plugin, RequestContext};
use std::cell::Cell;
use std::rc::Rc;
use table::{Outcome, Table, Want};

palisade_core::export_plugin!(RateLimitPlugin);

/// The filter's name: metrics `palisade.ratelimit.*`, decision header `x-palisade-ratelimit`.
pub const NAME: &str = "ratelimit";

/// Events counted besides `denied.<reason>`, `shadow_denied.<reason>` and the
/// per-limit `limited.<name>` / `shadow_limited.<name>`.
pub const EVENTS: [&str; 15] = [
    "allowed",
    "refunded",
    "counted",
    "in_flight_admitted",
    "in_flight_released",
    "in_flight_refused",
    "in_flight_table_full",
    "in_flight_release_failed",
    "evicted",
    "contention",
    "store_unavailable",
    "global_error",
    "global_timeout",
    "global_fallback_local",
    CLIENT_IP_FROM_XFF,
];

/// A `client_ip` key read an address Envoy took from the client's own
/// `X-Forwarded-For` ([`key::peer_from_forwarded_for`]): the limit can be
/// bypassed by rotating the header.
pub const CLIENT_IP_FROM_XFF: &str = "client_ip_from_xff";

/// The JSON Schema of the config (Kong's `meta.json`, `palisade schema`).
pub fn config_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default()
}

/// The validation `configure` does, without a host (`palisade check`).
pub fn check_config(json: &[u8], host: HostKind) -> Result<(), ConfigError> {
    let config: Config = palisade_core::config::load(json)?;
    config.check_host(host)
}

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    allowed: Counter,
    evicted: Counter,
    contention: Counter,
    store_unavailable: Counter,
    global_error: Counter,
    global_timeout: Counter,
    global_fallback_local: Counter,
    client_ip_from_xff: Counter,
    denied_limited: Counter,
    denied_in_flight: Counter,
    /// Reserved tokens given back (response not counted, or none came).
    refunded: Counter,
    /// Reserved tokens kept: the response was one the limit counts.
    counted: Counter,
    /// Places taken and given back: their difference is in flight now.
    in_flight_admitted: Counter,
    in_flight_released: Counter,
    in_flight_refused: Counter,
    /// Refused because the key's slot was full of other keys' live counts.
    in_flight_table_full: Counter,
    /// A place could not be given back (store lost it or races never won).
    in_flight_release_failed: Counter,
}

impl Counters {
    fn resolve(m: &Metrics) -> Counters {
        Counters {
            allowed: m.counter("allowed"),
            evicted: m.counter("evicted"),
            contention: m.counter("contention"),
            store_unavailable: m.counter("store_unavailable"),
            global_error: m.counter("global_error"),
            global_timeout: m.counter("global_timeout"),
            global_fallback_local: m.counter("global_fallback_local"),
            client_ip_from_xff: m.counter(CLIENT_IP_FROM_XFF),
            denied_limited: m.counter(&format!("denied.{}", answer::LIMITED)),
            denied_in_flight: m.counter(&format!("denied.{}", answer::IN_FLIGHT)),
            refunded: m.counter("refunded"),
            counted: m.counter("counted"),
            in_flight_admitted: m.counter("in_flight_admitted"),
            in_flight_released: m.counter("in_flight_released"),
            in_flight_refused: m.counter("in_flight_refused"),
            in_flight_table_full: m.counter("in_flight_table_full"),
            in_flight_release_failed: m.counter("in_flight_release_failed"),
        }
    }
}

#[derive(Debug)]
struct CompiledLimit {
    name: String,
    /// `<name>:<key part labels>`: what the audit record names, never a value.
    audit_label: String,
    parts: Vec<KeyPart>,
    /// `None`: the limit only caps requests in flight.
    rate: Option<Rate>,
    /// Statuses that spend the token; empty: every request does.
    count: Rc<[u16]>,
    max_in_flight: Option<u64>,
    /// `key: []`: one count for the whole route (the backend's capacity).
    route_wide: bool,
    limited: Counter,
    shadow_limited: Counter,
}

#[derive(Debug)]
struct CompiledRule {
    matcher: Match,
    dry_run: bool,
    limits: Vec<CompiledLimit>,
    /// A limit keys on `client_ip`: only then is the peer address read.
    uses_client_ip: bool,
}

impl Rule for CompiledRule {
    fn matcher(&self) -> &Match {
        &self.matcher
    }
}

/// The configured filter, shared by all requests of one VM.
#[derive(Debug)]
pub struct RateLimitPlugin {
    rules: Vec<CompiledRule>,
    client_ip: ClientIpConfig,
    claims: ClaimSource,
    on_missing_key: OnMissingKey,
    style: ResponseHeaders,
    mode: Mode,
    global: Option<GlobalConfig>,
    table: Table,
    /// Requests in flight per key (`max_in_flight`).
    flights: Table,
    needs_route_name: bool,
    needs_claims_property: bool,
    audit: palisade_core::audit::AuditMode,
    metrics: Metrics,
    counters: Counters,
    /// The spoofable-address warning was logged (once per VM).
    warned_client_ip_from_xff: Cell<bool>,
}

impl RateLimitPlugin {
    /// Compiles the config, defines the metrics and creates the table's slots.
    pub fn new(config: &Config, host: &mut dyn Host) -> Result<RateLimitPlugin, ConfigError> {
        config.check_host(host.kind())?;
        let effective = config.effective_rules();
        let limit_names: Vec<&str> = effective
            .iter()
            .flat_map(|r| r.limits.iter().map(|l| l.name.as_str()))
            .collect();
        let mut events: Vec<String> = EVENTS.iter().map(|e| e.to_string()).collect();
        for name in &limit_names {
            events.push(format!("limited.{name}"));
            events.push(format!("shadow_limited.{name}"));
        }
        let event_refs: Vec<&str> = events.iter().map(String::as_str).collect();
        let metrics = Metrics::define(host, NAME, &event_refs, &answer::REASONS);
        let rules: Vec<CompiledRule> = effective
            .iter()
            .map(|r| CompiledRule {
                matcher: r.matcher.clone(),
                dry_run: r.dry_run.unwrap_or(config.dry_run),
                limits: r
                    .limits
                    .iter()
                    .map(|l| CompiledLimit {
                        name: l.name.clone(),
                        audit_label: format!(
                            "{}:{}",
                            l.name,
                            l.key
                                .iter()
                                .map(KeyPart::label)
                                .collect::<Vec<_>>()
                                .join("+")
                        ),
                        parts: l.key.clone(),
                        rate: Rate::of(l),
                        count: l.count.as_ref().map_or_else(
                            || Rc::from(&[][..]),
                            |c| Rc::from(&c.response_status[..]),
                        ),
                        max_in_flight: l.max_in_flight,
                        route_wide: l.key.is_empty(),
                        limited: metrics.counter(&format!("limited.{}", l.name)),
                        shadow_limited: metrics.counter(&format!("shadow_limited.{}", l.name)),
                    })
                    .collect(),
                uses_client_ip: r
                    .limits
                    .iter()
                    .any(|l| l.key.iter().any(|p| matches!(p, KeyPart::ClientIp(_)))),
            })
            .collect();
        let uses = |pred: fn(&KeyPart) -> bool| {
            rules
                .iter()
                .flat_map(|r| r.limits.iter())
                .any(|l| l.parts.iter().any(pred))
        };
        let needs_route_name = needs_route_name(&rules) || uses(|p| *p == KeyPart::Route);
        let needs_claims_property =
            config.claims.from == ClaimFrom::Property && uses(|p| matches!(p, KeyPart::Claim(_)));
        let table = Table::new(
            config.local.slots,
            config.local.entries_per_slot,
            host.kind().shared_key(NAME, "slot."),
        );
        let flights = Table::new(
            config.local.slots,
            config.local.entries_per_slot,
            host.kind().shared_key(NAME, "flight."),
        );
        let local_needed = config.mode == Mode::Local
            || config.global.as_ref().map(|g| g.on_error) == Some(OnError::Local);
        let in_flight_needed = rules
            .iter()
            .flat_map(|r| r.limits.iter())
            .any(|l| l.max_in_flight.is_some());
        if local_needed && !rules.is_empty() {
            let created = table.create_slots(host);
            let created = match created {
                Ok(_) if in_flight_needed => flights.create_slots(host),
                other => other,
            };
            created.map_err(|_| {
                ConfigError::new(
                    "mode",
                    format!(
                        "local buckets need the host's shared data, which {} refused \
                         (on Kong: set nginx_wasm_shm_kv)",
                        host.kind().name()
                    ),
                )
            })?;
        }
        if config.dry_run {
            host.log(
                Level::Warn,
                &format!("palisade.{NAME}: dry run: limits are counted, never enforced"),
            );
        }
        Ok(RateLimitPlugin {
            needs_route_name,
            needs_claims_property,
            audit: config.audit,
            counters: Counters::resolve(&metrics),
            warned_client_ip_from_xff: Cell::new(false),
            metrics,
            rules,
            client_ip: config.client_ip,
            claims: config.claims.clone(),
            on_missing_key: config.on_missing_key,
            style: config.response_headers,
            mode: config.mode,
            global: config.global.clone(),
            table,
            flights,
        })
    }
}

/// Audit facts naming the limits that counted a request.
fn audited(rate_limits: Vec<String>) -> Facts {
    Facts {
        rate_limits,
        ..Facts::default()
    }
}

impl RateLimitPlugin {
    /// A limit's audit label (`<name>:<key part labels>`), by its name.
    fn audit_label(&self, name: &str) -> Option<String> {
        self.rules
            .iter()
            .flat_map(|r| r.limits.iter())
            .find(|l| l.name == name)
            .map(|l| l.audit_label.clone())
    }

    /// Counts a `client_ip` read from the client's own `X-Forwarded-For`
    /// and warns once per VM. Not refused: the proxy's setting is at fault,
    /// and its operator must see it rather than their clients.
    fn check_client_ip_source(&self, host: &mut dyn Host, source: &str, headers: &Headers) {
        if self.client_ip.xff_num_trusted_hops != 0
            || !key::peer_from_forwarded_for(source, headers)
        {
            return;
        }
        self.counters.client_ip_from_xff.add(host, 1);
        if !self.warned_client_ip_from_xff.replace(true) {
            host.log(
                Level::Warn,
                &format!(
                    "palisade.{NAME}: client_ip limits count the address Envoy took from the \
                     client's own X-Forwarded-For (the HTTP connection manager's default \
                     use_remote_address: false with xff_num_trusted_hops: 0), so a client \
                     that rotates the header is never limited: set use_remote_address: true \
                     on the connection manager (behind N trusted proxies, also its \
                     xff_num_trusted_hops: N); \
                     counted as palisade.{NAME}.{CLIENT_IP_FROM_XFF}, warned once per VM"
                ),
            );
        }
    }
}

impl Plugin for RateLimitPlugin {
    const NAME: &'static str = NAME;
    type Filter = RateLimitFilter;

    fn configure(config: &[u8], host: &mut dyn Host) -> Result<Self, ConfigError> {
        let config: Config = palisade_core::config::load(config)?;
        RateLimitPlugin::new(&config, host)
    }

    fn audit_mode(&self) -> palisade_core::audit::AuditMode {
        self.audit
    }

    fn new_filter(plugin: &Rc<Self>) -> RateLimitFilter {
        RateLimitFilter {
            plugin: plugin.clone(),
            fields: Vec::new(),
            pending: None,
            reserved: Vec::new(),
            in_flight: Vec::new(),
        }
    }
}

/// A decision in flight at the rate-limit service.
#[derive(Debug)]
struct Pending {
    token: u32,
    rule: usize,
    keys: Vec<(usize, Key)>,
    ctx: RequestContext,
    grpc: bool,
    /// When the call was dispatched (host clock), to tell a deadline from
    /// a connection that failed: Envoy reports both as UNAVAILABLE.
    started_ns: u64,
}

/// One request.
#[derive(Debug)]
pub struct RateLimitFilter {
    plugin: Rc<RateLimitPlugin>,
    /// Rate-limit fields for the response of an admitted request.
    fields: Vec<(&'static str, String)>,
    pending: Option<Pending>,
    /// Tokens of `count` limits reserved by this request, until its
    /// response status says whether they are spent: (statuses, bucket).
    reserved: Vec<(Rc<[u16]>, Want)>,
    /// Keys this request holds a place in flight for, until the stream ends.
    in_flight: Vec<[u8; 32]>,
}

impl HttpFilter for RateLimitFilter {
    fn on_request_headers(&mut self, host: &mut dyn Host, _end_of_stream: bool) -> Flow {
        let plugin = self.plugin.clone();
        if plugin.rules.is_empty() {
            return Flow::Continue;
        }
        let facts = RouteFacts::read(host, plugin.needs_route_name);
        let Some(rule_index) = plugin
            .rules
            .iter()
            .position(|r| r.matcher.matches(&facts.input()))
        else {
            return Flow::Continue;
        };
        let rule = &plugin.rules[rule_index];
        let ctx = RequestContext::new(NAME, host).audited(plugin.audit);
        let grpc = answer::is_grpc(host.request_header("content-type").as_deref());
        let headers = host.request_headers();
        let kind = host.kind();
        let source = if rule.uses_client_ip {
            host.property(&["source", "address"])
                .and_then(|raw| kind.decode_string(&raw))
        } else {
            None
        };
        if let Some(source) = &source {
            plugin.check_client_ip_source(host, source, &headers);
        }
        let claims = if plugin.needs_claims_property {
            let path: Vec<&str> = plugin.claims.property.iter().map(String::as_str).collect();
            host.property(&path)
                .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok())
        } else {
            None
        };
        let input = KeyInput {
            source_address: source.as_deref(),
            headers: &headers,
            method: &facts.method,
            path: &facts.path,
            route_name: facts.route_name.as_deref(),
            claims: claims.as_ref(),
        };
        let mut keys: Vec<(usize, Key)> = Vec::with_capacity(rule.limits.len());
        for (i, limit) in rule.limits.iter().enumerate() {
            match key::build(
                &limit.name,
                &limit.parts,
                &input,
                &plugin.client_ip,
                &plugin.claims,
            ) {
                Some(k) => keys.push((i, k)),
                None => match plugin.on_missing_key {
                    OnMissingKey::Skip => {}
                    OnMissingKey::Shared => keys.push((i, Key::anonymous(&limit.name))),
                    OnMissingKey::Deny => {
                        let denial = answer::missing_key(&limit.name);
                        return self.deny(host, &ctx, denial, rule.dry_run, grpc);
                    }
                },
            }
        }
        if keys.is_empty() {
            return Flow::Continue;
        }
        match (&plugin.mode, &plugin.global) {
            (Mode::Global, Some(global)) => {
                // Global mode refuses limits without a rate at config time.
                let keys: Vec<(usize, Key)> = keys
                    .into_iter()
                    .filter(|(i, _)| rule.limits[*i].rate.is_some())
                    .collect();
                let asks: Vec<global::LimitAsk<'_>> = keys
                    .iter()
                    .filter_map(|(i, k)| {
                        let rate = rule.limits[*i].rate?;
                        Some(global::LimitAsk {
                            name: &rule.limits[*i].name,
                            key: k,
                            requests: rate.requests,
                            per_s: rate.per_s,
                        })
                    })
                    .collect();
                let message = global::request(&global.domain, &asks);
                let started_ns = host.now_nanos();
                match host.grpc_call(
                    &global.cluster,
                    global::SERVICE,
                    global::METHOD,
                    &[],
                    &message,
                    global.timeout_ms,
                ) {
                    Ok(token) => {
                        self.pending = Some(Pending {
                            token,
                            rule: rule_index,
                            keys,
                            ctx,
                            grpc,
                            started_ns,
                        });
                        Flow::Pause
                    }
                    Err(_) => {
                        plugin.counters.global_error.add(host, 1);
                        ctx.log(
                            host,
                            Level::Warn,
                            &format!(
                                "rate-limit service call to {:?} not dispatched: does the \
                                 cluster exist?",
                                global.cluster
                            ),
                        );
                        self.on_global_error(host, rule_index, &keys, &ctx, grpc)
                    }
                }
            }
            _ => self.decide_locally(host, rule_index, &keys, &ctx, grpc),
        }
    }

    fn on_call_response(&mut self, host: &mut dyn Host, response: CallResponse) -> Flow {
        let Some(p) = self.pending.take() else {
            return Flow::Continue;
        };
        let plugin = self.plugin.clone();
        let rule = &plugin.rules[p.rule];
        if response.token() != p.token {
            // Not the answer this request waits for: keep waiting.
            self.pending = Some(p);
            return Flow::Pause;
        }
        let mut why = "answered something that is not a RateLimitResponse".to_string();
        let answer = match response {
            CallResponse::Grpc {
                status: 0, message, ..
            } => global::decode(&message, p.keys.len()),
            CallResponse::Grpc { status, .. } => {
                let timeout_ms = plugin.global.as_ref().map_or(0, |g| g.timeout_ms);
                let elapsed_ms = host.now_nanos().saturating_sub(p.started_ns) / 1_000_000;
                if global::is_deadline(status, elapsed_ms, timeout_ms) {
                    plugin.counters.global_timeout.add(host, 1);
                    why = global::deadline_failure(status, elapsed_ms);
                } else {
                    why = global::grpc_failure(status);
                }
                None
            }
            CallResponse::Http { .. } => None,
        };
        match answer {
            Some(global::Answer::Ok(states)) => {
                let limits: Vec<LimitState> = p
                    .keys
                    .iter()
                    .zip(states)
                    .filter_map(|((i, _), s)| {
                        let l = &rule.limits[*i];
                        let rate = l.rate?;
                        s.map(|(remaining, reset_ns)| {
                            LimitState::new(&l.name, rate.requests, rate.per_s, remaining, reset_ns)
                        })
                    })
                    .collect();
                self.admit(host, &p.ctx, &limits)
            }
            Some(global::Answer::OverLimit { index, reset_ns }) => {
                let limit = p.keys.get(index).map(|(i, _)| *i).unwrap_or(0);
                self.limited(host, p.rule, limit, reset_ns, &p.ctx, p.grpc)
            }
            None => {
                plugin.counters.global_error.add(host, 1);
                p.ctx
                    .log(host, Level::Warn, &format!("rate-limit service: {why}"));
                self.on_global_error(host, p.rule, &p.keys, &p.ctx, p.grpc)
            }
        }
    }

    fn on_response_headers(&mut self, host: &mut dyn Host, _end_of_stream: bool) -> Flow {
        // Only admitted (or shadow-limited) requests have fields: a 429 of
        // ours already carries them.
        for (name, value) in std::mem::take(&mut self.fields) {
            host.set_response_header(name, value.as_bytes());
        }
        if !self.reserved.is_empty() {
            let status = host.response_status();
            let (counted, back): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reserved)
                .into_iter()
                .partition(|(statuses, _)| statuses.contains(&status));
            self.plugin.counters.counted.add(host, counted.len());
            self.give_back(host, back);
        }
        Flow::Continue
    }

    fn on_stream_done(&mut self, host: &mut dyn Host) {
        // No response headers reached this filter (reset, timeout): the
        // request was not answered, so nothing it reserved is spent.
        let reserved = std::mem::take(&mut self.reserved);
        self.give_back(host, reserved);
        let held = std::mem::take(&mut self.in_flight);
        self.plugin.leave_all(host, &held);
    }
}

impl RateLimitPlugin {
    /// Gives back the places `held` in flight, counting each.
    fn leave_all(&self, host: &mut dyn Host, held: &[[u8; 32]]) {
        for digest in held {
            if self.flights.leave(host, digest) {
                self.counters.in_flight_released.add(host, 1);
            } else {
                self.counters.in_flight_release_failed.add(host, 1);
            }
        }
    }
}

impl RateLimitFilter {
    fn decide_locally(
        &mut self,
        host: &mut dyn Host,
        rule_index: usize,
        keys: &[(usize, Key)],
        ctx: &RequestContext,
        grpc: bool,
    ) -> Flow {
        let plugin = self.plugin.clone();
        let rule = &plugin.rules[rule_index];
        // Places in flight first: giving one back when a rate then refuses
        // is one CAS, and a request refused here spends no token.
        let mut held: Vec<[u8; 32]> = Vec::new();
        for (i, k) in keys {
            let Some(max) = rule.limits[*i].max_in_flight else {
                continue;
            };
            let refused = match plugin.flights.enter(host, &k.digest, max) {
                table::Entered::Held => {
                    held.push(k.digest);
                    false
                }
                table::Entered::AtLimit => true,
                table::Entered::SlotFull => {
                    plugin.counters.in_flight_table_full.add(host, 1);
                    ctx.log(
                        host,
                        Level::Warn,
                        "in-flight table slot full of other keys: refused (raise local.slots)",
                    );
                    true
                }
                table::Entered::Contended => {
                    plugin.counters.contention.add(host, 1);
                    true
                }
                table::Entered::Unavailable => {
                    plugin.counters.store_unavailable.add(host, 1);
                    false
                }
            };
            if refused {
                plugin.leave_all(host, &held);
                return self.in_flight_limited(host, rule_index, *i, ctx, grpc);
            }
        }
        plugin.counters.in_flight_admitted.add(host, held.len());
        let rated: Vec<(usize, Want)> = keys
            .iter()
            .filter_map(|(i, k)| {
                rule.limits[*i].rate.map(|rate| {
                    (
                        *i,
                        Want {
                            digest: k.digest,
                            rate,
                        },
                    )
                })
            })
            .collect();
        if rated.is_empty() {
            self.in_flight = held;
            return self.admit(host, ctx, &[]);
        }
        let wants: Vec<Want> = rated.iter().map(|(_, w)| *w).collect();
        let now = host.now_nanos();
        match plugin.table.admit(host, &wants, now) {
            Outcome::Admitted { state, evicted } => {
                plugin.counters.evicted.add(host, evicted as usize);
                self.in_flight = held;
                self.reserved = rated
                    .iter()
                    .filter(|(i, _)| !rule.limits[*i].count.is_empty())
                    .map(|(i, w)| (Rc::clone(&rule.limits[*i].count), *w))
                    .collect();
                let limits: Vec<LimitState> = rated
                    .iter()
                    .zip(state)
                    .map(|((i, w), (remaining, next_ns))| {
                        let l = &rule.limits[*i];
                        LimitState::new(&l.name, w.rate.requests, w.rate.per_s, remaining, next_ns)
                    })
                    .collect();
                self.admit(host, ctx, &limits)
            }
            Outcome::Denied {
                index,
                retry_after_ns,
            } => {
                plugin.leave_all(host, &held);
                let limit = rated.get(index).map(|(i, _)| *i).unwrap_or(0);
                self.limited(host, rule_index, limit, retry_after_ns, ctx, grpc)
            }
            Outcome::Contended => {
                plugin.leave_all(host, &held);
                plugin.counters.contention.add(host, 1);
                ctx.log(host, Level::Warn, "lost every shared-data race: refused");
                let limit = rated.first().map(|(i, _)| *i).unwrap_or(0);
                self.limited(host, rule_index, limit, 1_000_000_000, ctx, grpc)
            }
            Outcome::Unavailable => {
                self.in_flight = held;
                plugin.counters.store_unavailable.add(host, 1);
                ctx.log(
                    host,
                    Level::Warn,
                    "shared data unavailable: request let through",
                );
                self.admit(host, ctx, &[])
            }
        }
    }

    /// Gives back reserved tokens whose response was not counted.
    fn give_back(&mut self, host: &mut dyn Host, reserved: Vec<(Rc<[u16]>, Want)>) {
        if reserved.is_empty() {
            return;
        }
        let wants: Vec<Want> = reserved.into_iter().map(|(_, w)| w).collect();
        let now = host.now_nanos();
        self.plugin.table.give_back(host, &wants, now);
        self.plugin.counters.refunded.add(host, wants.len());
    }

    /// Limit `limit` of rule `rule_index` has `max_in_flight` requests of
    /// this key in flight (or could not count this one).
    fn in_flight_limited(
        &mut self,
        host: &mut dyn Host,
        rule_index: usize,
        limit: usize,
        ctx: &RequestContext,
        grpc: bool,
    ) -> Flow {
        let plugin = self.plugin.clone();
        let rule = &plugin.rules[rule_index];
        let Some(l) = rule.limits.get(limit) else {
            return Flow::Continue;
        };
        if rule.dry_run {
            l.shadow_limited.add(host, 1);
        } else {
            l.limited.add(host, 1);
            plugin.counters.in_flight_refused.add(host, 1);
        }
        let denial = answer::in_flight(&l.name, l.max_in_flight.unwrap_or(0), l.route_wide);
        let facts = audited(vec![l.audit_label.clone()]);
        self.deny_with(host, ctx, denial, rule.dry_run, grpc, facts)
    }

    fn on_global_error(
        &mut self,
        host: &mut dyn Host,
        rule_index: usize,
        keys: &[(usize, Key)],
        ctx: &RequestContext,
        grpc: bool,
    ) -> Flow {
        let plugin = self.plugin.clone();
        let on_error = plugin
            .global
            .as_ref()
            .map(|g| g.on_error)
            .unwrap_or_default();
        match on_error {
            OnError::Allow => self.admit(host, ctx, &[]),
            OnError::Deny => {
                let dry_run = plugin.rules[rule_index].dry_run;
                self.deny(host, ctx, answer::unavailable(), dry_run, grpc)
            }
            OnError::Local => {
                plugin.counters.global_fallback_local.add(host, 1);
                self.decide_locally(host, rule_index, keys, ctx, grpc)
            }
        }
    }

    fn admit(&mut self, host: &mut dyn Host, ctx: &RequestContext, limits: &[LimitState]) -> Flow {
        self.plugin.counters.allowed.add(host, 1);
        self.fields = answer::fields(self.plugin.style, limits);
        let labels = limits
            .iter()
            .filter_map(|s| self.plugin.audit_label(&s.name))
            .collect();
        ctx.allow_with(host, audited(labels));
        Flow::Continue
    }

    /// Limit `limit` of rule `rule_index` refused the request.
    fn limited(
        &mut self,
        host: &mut dyn Host,
        rule_index: usize,
        limit: usize,
        retry_after_ns: u64,
        ctx: &RequestContext,
        grpc: bool,
    ) -> Flow {
        let plugin = self.plugin.clone();
        let rule = &plugin.rules[rule_index];
        let Some(l) = rule.limits.get(limit) else {
            return Flow::Continue;
        };
        let Some(rate) = l.rate else {
            return Flow::Continue;
        };
        if rule.dry_run {
            l.shadow_limited.add(host, 1);
        } else {
            l.limited.add(host, 1);
        }
        let state = LimitState::new(&l.name, rate.requests, rate.per_s, 0, retry_after_ns);
        let retry_after_s = bucket::ceil_secs(retry_after_ns);
        let denial = answer::limited(
            &state,
            retry_after_s,
            plugin.style,
            std::slice::from_ref(&state),
        );
        if rule.dry_run {
            self.fields = answer::fields(plugin.style, std::slice::from_ref(&state));
        }
        let facts = audited(vec![l.audit_label.clone()]);
        self.deny_with(host, ctx, denial, rule.dry_run, grpc, facts)
    }

    /// Enforces (or in dry run, records) a denial; gRPC callers get theirs
    /// in their own protocol.
    fn deny(
        &mut self,
        host: &mut dyn Host,
        ctx: &RequestContext,
        denial: Denial,
        dry_run: bool,
        grpc: bool,
    ) -> Flow {
        self.deny_with(host, ctx, denial, dry_run, grpc, Facts::default())
    }

    /// The same, with the limits the audit record names.
    fn deny_with(
        &mut self,
        host: &mut dyn Host,
        ctx: &RequestContext,
        denial: Denial,
        dry_run: bool,
        grpc: bool,
        facts: Facts,
    ) -> Flow {
        let routine = denial.reason == answer::LIMITED || denial.reason == answer::IN_FLIGHT;
        if dry_run || (!grpc && !routine) {
            return ctx.reject_with(host, &self.plugin.metrics, denial, dry_run, facts);
        }
        // 429s are this filter's routine answer, and under attack they are
        // most answers: counted through a resolved counter and not published
        // (no later filter or upstream sees the request). Each is logged as
        // its audit record, which is what auditing denials asks for; with
        // `audit: off` the line drops to debug, so a flood cannot fill the
        // proxy's log.
        if denial.reason == answer::LIMITED {
            self.plugin.counters.denied_limited.add(host, 1);
        } else if denial.reason == answer::IN_FLIGHT {
            self.plugin.counters.denied_in_flight.add(host, 1);
        } else {
            self.plugin
                .metrics
                .inc(host, &format!("denied.{}", denial.reason));
        }
        ctx.record_denial(
            host,
            denial.problem.status,
            denial.reason,
            Level::Debug,
            facts,
        );
        if !grpc {
            let extra: Vec<(&str, &str)> = denial
                .headers
                .iter()
                .map(|(n, v)| (*n, v.as_str()))
                .chain([(DENIED_BY_HEADER, NAME)])
                .collect();
            denial
                .problem
                .request_id(ctx.request_id.as_deref())
                .send(host, &extra);
            return Flow::Pause;
        }
        let (status, mut headers) = answer::grpc_reply(&denial);
        headers.push((DENIED_BY_HEADER, NAME.to_string()));
        if let Some(id) = &ctx.request_id {
            headers.push((palisade_core::request_id::HEADER, id.clone()));
        }
        let refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        host.send_response(status, &refs, b"");
        Flow::Pause
    }
}
