//! Per-request plumbing shared by every filter: correlation id, logs,
//! denials (enforced or shadowed by `dry_run`) and published decisions.
//!
//! ## The decision contract
//! Each filter writes its outcome to the request header `x-palisade-<filter>`
//! (`allow`, `deny;reason=<r>`, `shadow-deny;reason=<r>`), replacing any value a
//! client sent, so later filters and the upstream can read it. A filter that
//! answers a request itself marks its local reply with the *response* header
//! `x-palisade-denied-by: <filter>`, which the errors filter uses to leave
//! Palisade's own problem responses alone. It is a response header because
//! Envoy does not let a filter read request headers from its response
//! callbacks (the errors filter sees the reply only on its way out).
//! Filters may publish more under `x-palisade-<filter>-<key>`. The headers
//! filter strips every client-sent `x-palisade-*` header by default.

use crate::audit::{self, AuditMode, Facts};
use crate::filter::Flow;
use crate::host::{Host, Level};
use crate::metrics::Metrics;
use crate::problem::Problem;
use crate::request_id;
use crate::route::RouteInput;

/// Response header naming the Palisade filter that answered with a local reply.
pub const DENIED_BY_HEADER: &str = "x-palisade-denied-by";
/// Prefix of every header Palisade writes.
pub const HEADER_PREFIX: &str = "x-palisade-";

/// A request refused by a filter, before `dry_run` is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    pub problem: Problem,
    /// Metric and log reason, `[a-z_]+`.
    pub reason: &'static str,
    /// The protocol's own signal (`Allow`, `WWW-Authenticate`, `Retry-After`…).
    pub headers: Vec<(&'static str, String)>,
}

impl Denial {
    pub fn new(problem: Problem, reason: &'static str) -> Self {
        Denial {
            problem,
            reason,
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// Request-scoped facts every filter needs, read once.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub filter: &'static str,
    pub request_id: Option<String>,
    /// What this control writes to the audit trail ([`crate::audit`]).
    pub audit: AuditMode,
}

/// The request's method, normalised path and route name, owned.
#[derive(Debug, Clone, Default)]
pub struct RouteFacts {
    pub method: String,
    pub path: String,
    pub route_name: Option<String>,
}

impl RouteFacts {
    /// Reads the facts rules match on; the route name only when some rule uses it.
    pub fn read(host: &dyn Host, with_route_name: bool) -> RouteFacts {
        let headers = host.request_headers();
        // Kong may leave pseudo-headers out of the map.
        let pseudo = |name: &str| match crate::headers::find(&headers, name) {
            Some(v) => v.to_vec(),
            None => host.request_header(name).unwrap_or_default(),
        };
        let raw_path = pseudo(":path");
        let method = crate::method::effective(
            &String::from_utf8_lossy(&pseudo(":method")),
            &headers,
            &String::from_utf8_lossy(&raw_path),
        );
        RouteFacts {
            method,
            path: crate::path::normalize(&String::from_utf8_lossy(&raw_path)),
            route_name: if with_route_name {
                host.route_name()
            } else {
                None
            },
        }
    }

    pub fn input(&self) -> RouteInput<'_> {
        RouteInput {
            method: &self.method,
            path: &self.path,
            route_name: self.route_name.as_deref(),
        }
    }
}

impl RequestContext {
    pub fn new(filter: &'static str, host: &dyn Host) -> Self {
        let id = request_id::correlation_id(
            host.request_header(request_id::HEADER).as_deref(),
            host.request_header(request_id::TRACEPARENT).as_deref(),
        );
        RequestContext {
            filter,
            request_id: id,
            audit: AuditMode::default(),
        }
    }

    /// The same context with the control's audit setting.
    pub fn audited(mut self, audit: AuditMode) -> Self {
        self.audit = audit;
        self
    }

    /// The same, from a header list the filter already fetched: saves the
    /// two host calls `new` makes.
    pub fn from_headers(filter: &'static str, headers: &crate::host::Headers) -> Self {
        RequestContext {
            filter,
            request_id: request_id::correlation_id(
                crate::headers::find(headers, request_id::HEADER),
                crate::headers::find(headers, request_id::TRACEPARENT),
            ),
            audit: AuditMode::default(),
        }
    }

    /// Every log line names the filter and the request id.
    pub fn log(&self, host: &dyn Host, level: Level, message: &str) {
        let id = self.request_id.as_deref().unwrap_or("-");
        host.log(
            level,
            &format!("palisade.{} request_id={id} {message}", self.filter),
        );
    }

    /// Publishes this filter's outcome for later filters and the upstream.
    pub fn publish(&self, host: &mut dyn Host, outcome: &str) {
        host.set_request_header(
            &format!("{HEADER_PREFIX}{}", self.filter),
            outcome.as_bytes(),
        );
    }

    /// The request passed this control: published, and added to the audit
    /// record.
    pub fn allow(&self, host: &mut dyn Host) {
        self.allow_with(host, Facts::default());
    }

    /// The same, with what the control learnt (a verified identity, the
    /// rate-limit keys that counted the request).
    pub fn allow_with(&self, host: &mut dyn Host, facts: Facts) {
        self.publish(host, "allow");
        audit::record(host, self, "allow", None, facts);
    }

    /// An enforced denial's audit record and its log line (the line
    /// `denied with <status> (<reason>)` when auditing is off). `level` is
    /// the line's level without the audit trail: a flood of 429s must not
    /// flood the log unless the operator asked for their records.
    pub fn record_denial(
        &self,
        host: &mut dyn Host,
        status: u16,
        reason: &str,
        level: Level,
        facts: Facts,
    ) {
        match audit::record(host, self, "deny", Some(reason), facts) {
            Some(rec) => rec.log(host),
            None => self.log(host, level, &format!("denied with {status} ({reason})")),
        }
    }

    /// Denies the request, or in `dry_run` only logs, counts and publishes it.
    pub fn reject(
        &self,
        host: &mut dyn Host,
        metrics: &Metrics,
        denial: Denial,
        dry_run: bool,
    ) -> Flow {
        self.reject_with(host, metrics, denial, dry_run, Facts::default())
    }

    /// The same, with what the control learnt for the audit record.
    pub fn reject_with(
        &self,
        host: &mut dyn Host,
        metrics: &Metrics,
        denial: Denial,
        dry_run: bool,
        facts: Facts,
    ) -> Flow {
        let status = denial.problem.status;
        if dry_run {
            metrics.inc(host, &format!("shadow_denied.{}", denial.reason));
            self.log(
                host,
                Level::Warn,
                &format!("dry_run: would deny with {status} ({})", denial.reason),
            );
            self.publish(host, &format!("shadow-deny;reason={}", denial.reason));
            audit::record(host, self, "shadow-deny", Some(denial.reason), facts);
            return Flow::Continue;
        }
        metrics.inc(host, &format!("denied.{}", denial.reason));
        self.record_denial(host, status, denial.reason, Level::Info, facts);
        self.publish(host, &format!("deny;reason={}", denial.reason));
        let extra: Vec<(&str, &str)> = denial
            .headers
            .iter()
            .map(|(n, v)| (*n, v.as_str()))
            .chain([(DENIED_BY_HEADER, self.filter)])
            .collect();
        denial
            .problem
            .request_id(self.request_id.as_deref())
            .send(host, &extra);
        Flow::Pause
    }
}
