//! `palisade-schema`: JSON Schema and OpenAPI 3 contracts enforced at the edge.
//!
//! Requests that break the API's contract never reach the service: unknown
//! paths and methods (404/405, when `unmatched` is `deny`), oversized bodies
//! (413), wrong content types (415), malformed JSON, duplicate keys and JSON
//! bombs (400), and path parameters, queries and bodies that violate their
//! schema (400 with `errors`). Only bodies that are validated are buffered;
//! everything else streams untouched.
//!
//! Pure core, thin glue: decisions live in [`check`] over values the glue
//! reads from [`Host`]; see docs/src/controls/schema.md for the config reference.

pub mod body;
pub mod check;
pub mod compile;
pub mod config;
pub mod media;
pub mod openapi;
pub mod params;
pub mod query;
pub mod report;

use check::{BodyFacts, HeadersOutcome};
use compile::Contract;
use config::Config;
use palisade_core::config::ConfigError;
use palisade_core::context::RouteFacts;
use palisade_core::metrics::Metrics;
use palisade_core::{Flow, Host, HostKind, HttpFilter, Level, Plugin, RequestContext};
use std::cell::Cell;
use std::rc::Rc;

palisade_core::export_plugin!(SchemaPlugin);

/// The filter's name: metrics `palisade.schema.*`, decision header `x-palisade-schema`.
pub const NAME: &str = "schema";

/// The JSON Schema of the config (for Kong's `meta.json` and `palisade schema`).
pub fn config_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default()
}

/// The checks `configure` runs, without a host (for `palisade check`).
pub fn check_config(json: &[u8], _host: HostKind) -> Result<(), ConfigError> {
    let config: Config = palisade_core::config::load(json)?;
    compile::compile(&config).map(|_| ())
}

/// The configured filter, shared by all requests of one VM.
#[derive(Debug)]
pub struct SchemaPlugin {
    contract: Contract,
    needs_route_name: bool,
    metrics: Metrics,
    audit: palisade_core::audit::AuditMode,
    /// `hold_headers` ignored on a host that cannot hold: said once per VM.
    hold_ignored_logged: Cell<bool>,
}

impl SchemaPlugin {
    pub fn new(config: &Config, host: &mut dyn Host) -> Result<SchemaPlugin, ConfigError> {
        let contract = compile::compile(config)?;
        if config.dry_run {
            host.log(
                Level::Warn,
                &format!(
                    "palisade.{NAME}: dry run: violations are logged and counted, never refused"
                ),
            );
        }
        host.log(
            Level::Info,
            &format!(
                "palisade.{NAME}: {} operation(s) in the contract",
                contract.operations.len()
            ),
        );
        Ok(SchemaPlugin {
            needs_route_name: contract.needs_route_name(),
            metrics: Metrics::define(host, NAME, &[], &check::REASONS),
            audit: config.audit,
            contract,
            hold_ignored_logged: Cell::new(false),
        })
    }

    /// Whether this request's headers are held while its body is buffered:
    /// only with `hold_headers` and on a host that then still delivers the
    /// body. Kong never reads the body of a request held this way (it
    /// hangs), and there nginx reads the whole body before it proxies
    /// anything, so the upstream never sees a refused request either way:
    /// the option is ignored, with one warning per VM.
    fn holds(&self, host: &dyn Host) -> bool {
        if !self.contract.hold_headers {
            return false;
        }
        let kind = host.kind();
        if kind.can_hold_request_headers_for_body() {
            return true;
        }
        if !self.hold_ignored_logged.replace(true) {
            host.log(
                Level::Warn,
                &format!(
                    "palisade.{NAME}: hold_headers is ignored on {}: the host cannot hold \
                     request headers while it reads the body (nginx buffers the whole body \
                     before proxying, so the upstream never sees a refused request anyway)",
                    kind.name()
                ),
            );
        }
        false
    }

    pub fn contract(&self) -> &Contract {
        &self.contract
    }
}

impl Plugin for SchemaPlugin {
    const NAME: &'static str = NAME;
    type Filter = SchemaFilter;

    fn configure(config: &[u8], host: &mut dyn Host) -> Result<Self, ConfigError> {
        let config: Config = palisade_core::config::load(config)?;
        SchemaPlugin::new(&config, host)
    }

    fn new_filter(plugin: &Rc<Self>) -> SchemaFilter {
        SchemaFilter {
            plugin: plugin.clone(),
            state: State::Idle,
        }
    }

    /// With `hold_headers` the headers callback pauses with no call
    /// pending: the glue's watchdog then answers a request whose body never
    /// comes (Envoy without `allow_on_headers_stop_iteration`) instead of
    /// letting it hang.
    fn holds_request_headers(&self) -> bool {
        self.contract.hold_headers
    }

    fn audit_mode(&self) -> palisade_core::audit::AuditMode {
        self.audit
    }
}

/// Where one request stands.
#[derive(Debug)]
enum State {
    Idle,
    /// Buffering the body for the operation at this index; `held`: the
    /// headers wait for the verdict (they can still be written).
    Buffering {
        op: usize,
        ctx: RequestContext,
        held: bool,
    },
    Done,
}

/// One request.
#[derive(Debug)]
pub struct SchemaFilter {
    plugin: Rc<SchemaPlugin>,
    state: State,
}

/// What the request headers say about the body. Kong always reports
/// `end_of_stream = false` in headers, so there the framing headers decide:
/// no `content-length` (or `0`) and no `transfer-encoding` is no body, and a
/// `body.required` route refuses it as on Envoy.
fn body_facts(host: &dyn Host, end_of_stream: bool) -> BodyFacts {
    let content_length = host
        .request_header_str("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    let present = if host.kind().trusts_end_of_stream_in_headers() {
        !end_of_stream
    } else {
        content_length.is_some_and(|n| n > 0) || host.request_header("transfer-encoding").is_some()
    };
    BodyFacts {
        present,
        content_length,
        content_type: host.request_header_str("content-type"),
    }
}

impl HttpFilter for SchemaFilter {
    fn on_request_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Flow {
        let plugin = self.plugin.clone();
        let facts = RouteFacts::read(host, plugin.needs_route_name);
        let raw_path = host.request_header_str(":path").unwrap_or_default();
        let body = body_facts(host, end_of_stream);
        let ctx = RequestContext::new(NAME, host).audited(self.plugin.audit);
        self.state = State::Done;
        match check::on_headers(&plugin.contract, &facts.input(), &raw_path, &body) {
            HeadersOutcome::Pass(op) => {
                if op.is_some() {
                    ctx.allow(host);
                }
                Flow::Continue
            }
            HeadersOutcome::Deny(denial, dry_run) => {
                ctx.reject(host, &plugin.metrics, *denial, dry_run)
            }
            HeadersOutcome::Buffer(op) => {
                let index = plugin
                    .contract
                    .operations
                    .iter()
                    .position(|o| std::ptr::eq(o, op))
                    .unwrap_or(0);
                // Holding the headers back until the body is judged keeps
                // the upstream from ever seeing the start of a refused
                // request (Envoy needs `allow_on_headers_stop_iteration`).
                // Without it the headers go on and the body callbacks
                // buffer the body (Pause) until it is judged.
                let held = plugin.holds(host);
                self.state = State::Buffering {
                    op: index,
                    ctx,
                    held,
                };
                if held {
                    Flow::Pause
                } else {
                    Flow::Continue
                }
            }
        }
    }

    fn on_request_body(&mut self, host: &mut dyn Host, size: usize, end_of_stream: bool) -> Flow {
        let State::Buffering { op, .. } = &self.state else {
            return Flow::Continue;
        };
        let over = self
            .plugin
            .contract
            .operations
            .get(*op)
            .is_some_and(|op| size as u64 > op.max_body_bytes);
        if !end_of_stream && !over {
            return Flow::Pause;
        }
        // Over the limit: judged (413) without reading the body.
        let bytes = if over {
            Vec::new()
        } else {
            host.request_body(0, size).unwrap_or_default()
        };
        self.judge(host, &bytes, size)
    }

    /// Trailers end the request without an `end_of_stream` body callback
    /// (HTTP/2, gRPC): the buffered body is judged here, never let through
    /// unchecked.
    fn on_request_trailers(&mut self, host: &mut dyn Host) -> Flow {
        if !matches!(self.state, State::Buffering { .. }) {
            return Flow::Continue;
        }
        let bytes = host.request_body(0, usize::MAX).unwrap_or_default();
        let size = bytes.len();
        self.judge(host, &bytes, size)
    }
}

impl SchemaFilter {
    /// Validates a complete buffered body of `size` bytes.
    fn judge(&mut self, host: &mut dyn Host, bytes: &[u8], size: usize) -> Flow {
        let State::Buffering { op, ctx, held } = &self.state else {
            return Flow::Continue;
        };
        let plugin = self.plugin.clone();
        let Some(op) = plugin.contract.operations.get(*op) else {
            return Flow::Continue;
        };
        let ctx = ctx.clone();
        let hold = *held;
        self.state = State::Done;
        if size as u64 > op.max_body_bytes {
            let denial = check::body_too_large(op.max_body_bytes);
            return reject(host, &plugin.metrics, &ctx, denial, op.dry_run, hold);
        }
        // Kong reads a body nginx spilled to a file as empty: what cannot be
        // read cannot be validated, so it is refused, never passed unchecked.
        if bytes.len() != size {
            let denial = check::body_unreadable();
            return reject(host, &plugin.metrics, &ctx, denial, op.dry_run, hold);
        }
        match check::on_body(op, bytes, &plugin.contract.limits) {
            None => {
                // Forwarded headers cannot change any more.
                if hold {
                    ctx.allow(host);
                }
                Flow::Continue
            }
            Some(denial) => reject(host, &plugin.metrics, &ctx, denial, op.dry_run, hold),
        }
    }
}

/// Refuses from the body phase. Once the headers went on (`hold_headers:
/// false`) Envoy refuses header writes with a status the SDK turns into a
/// trap, so the decision is then logged and counted but not published.
fn reject(
    host: &mut dyn Host,
    metrics: &Metrics,
    ctx: &RequestContext,
    denial: palisade_core::Denial,
    dry_run: bool,
    headers_held: bool,
) -> Flow {
    if headers_held {
        return ctx.reject(host, metrics, denial, dry_run);
    }
    let status = denial.problem.status;
    if dry_run {
        metrics.inc(host, &format!("shadow_denied.{}", denial.reason));
        let message = format!("dry_run: would deny with {status} ({})", denial.reason);
        ctx.log(host, Level::Warn, &message);
        palisade_core::audit::record(
            host,
            ctx,
            "shadow-deny",
            Some(denial.reason),
            Default::default(),
        );
        return Flow::Continue;
    }
    metrics.inc(host, &format!("denied.{}", denial.reason));
    ctx.record_denial(host, status, denial.reason, Level::Info, Default::default());
    let extra: Vec<(&str, &str)> = denial
        .headers
        .iter()
        .map(|(n, v)| (*n, v.as_str()))
        .chain([(palisade_core::context::DENIED_BY_HEADER, NAME)])
        .collect();
    denial
        .problem
        .request_id(ctx.request_id.as_deref())
        .send(host, &extra);
    Flow::Pause
}
