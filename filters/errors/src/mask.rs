//! One response's way through the filter: decide in the response headers,
//! then pass, replace, scan or observe the body.
//!
//! The decision is taken in `on_response_headers`, because that is the last
//! moment a response can still be replaced cleanly (see shared/NOTES.md):
//!
//! * **pass**: Continue everywhere, never touching the body, so unmasked
//!   responses stream byte for byte and are never buffered;
//! * **local reply** (Envoy, no body): `send_response` with the problem;
//! * **replace**: headers rewritten in place, then the first body chunk
//!   becomes the problem and every later chunk becomes empty, so a 10 MB
//!   error body is dropped as it streams instead of being held in memory;
//! * **scan** (leak candidates): the body is buffered up to `scan_bytes`,
//!   inflated first if compressed (see [`crate::decode`]), then replaced by
//!   the problem or released unchanged;
//! * **shadow** (`dry_run`): the body is only read, to log and to scan;
//! * **gRPC**: `grpc-message` is made generic in the headers (trailers-only
//!   responses) or the trailers; the body is never touched.

use crate::config::{Policy, Undecodable};
use crate::decode::{self, Coding, Framing};
use crate::excerpt::printable;
use crate::grpc;
use crate::strip::strips;
use crate::ErrorsPlugin;
use palisade_core::context::{RouteFacts, DENIED_BY_HEADER};
use palisade_core::problem::{Problem, CONTENT_TYPE};
use palisade_core::{Flow, Host, HostKind, HttpFilter, Level, RequestContext};
use std::rc::Rc;

/// Headers that describe the body being replaced; a problem must not inherit them.
const BODY_HEADERS: &[&str] = &[
    "content-length",
    "content-encoding",
    "content-type",
    "content-range",
    "content-md5",
    "content-disposition",
    "content-language",
    "content-location",
    "content-digest",
    "repr-digest",
    "digest",
    "etag",
    "last-modified",
    "accept-ranges",
    "expires",
    "cache-control",
    "x-request-id",
    DENIED_BY_HEADER,
];

/// Not carried into a local reply: the proxy writes these itself.
const PROXY_HEADERS: &[&str] = &[
    "date",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Every counter the filter increments (`palisade.errors.<event>`).
pub const EVENTS: &[&str] = &[
    "masked.status",
    "masked.leak",
    "masked.grpc",
    "masked.undecodable",
    "shadow_masked.status",
    "shadow_masked.leak",
    "shadow_masked.grpc",
    "shadow_masked.undecodable",
    "passed",
    "own_problem_passed",
    "leak_scan_skipped",
];

#[derive(Debug)]
enum State {
    /// No response decision yet.
    Idle,
    /// Untouched from here on.
    Pass,
    /// A local reply replaced the response.
    Replied,
    /// Headers rewritten; the body becomes the problem as it streams.
    Replace { status: u16, emitted: bool },
    /// A leak candidate's body is being buffered (`held`: headers paused
    /// too; `paused`: a body callback already returned Pause).
    Scan {
        status: u16,
        held: bool,
        paused: bool,
        coding: Coding,
    },
    /// The problem was written: every later chunk is dropped.
    Drain,
    /// `dry_run`: the body is read, never changed.
    Shadow {
        status: u16,
        leak_candidate: bool,
        coding: Coding,
        seen: Vec<u8>,
    },
    /// A gRPC response whose status comes in the trailers.
    GrpcTrailers,
}

/// Why a response is masked whatever its body says.
#[derive(Debug, Clone)]
enum Cause {
    Status,
    /// A leak candidate in a coding the filter cannot inflate.
    Undecodable(String),
}

impl Cause {
    fn event(&self) -> &'static str {
        match self {
            Cause::Status => "status",
            Cause::Undecodable(_) => "undecodable",
        }
    }

    fn describe(&self) -> String {
        match self {
            Cause::Status => "status".to_string(),
            Cause::Undecodable(why) => format!("undecodable: {why}"),
        }
    }
}

/// What a leak candidate's buffered body says.
enum Verdict {
    Leak(Vec<String>),
    Clean,
    /// Compressed, and not inflated completely within `scan_bytes`.
    Undecodable(String),
}

/// A buffered body judged: the verdict, the decoded bytes (for the log) and
/// the framing a replacement must be encoded in when headers already left.
struct Judged {
    verdict: Verdict,
    decoded: Vec<u8>,
    framing: Option<Framing>,
}

/// Replaces the whole current body buffer (`size` bytes) with `data`.
/// Kong writes only the first `size` bytes of `data` but clears the buffer
/// from `start` whatever the size (ngx_wasm_module's
/// `ngx_http_wasm_set_resp_body`), so there the size must cover `data`;
/// Envoy drains exactly `size` bytes before prepending `data`.
fn replace_body(host: &mut dyn Host, size: usize, data: &[u8]) {
    let len = if host.kind().cuts_body_replacement_to_size() {
        size.max(data.len())
    } else {
        size
    };
    host.set_response_body(0, len, data);
}

/// Kong, after a Pause in a body callback, buffers the body until its end
/// or until `wasm_response_body_buffers` are full, then calls the filter
/// once more and turns another Pause into Continue ("response body
/// buffering already requested"): that call must decide. Envoy calls again
/// with every chunk, the buffer growing.
fn decides_after_one_pause(kind: HostKind) -> bool {
    kind != HostKind::Envoy
}

/// Where a gRPC status was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Headers,
    Trailers,
}

/// Per-request state of the errors filter.
pub struct ErrorsFilter {
    plugin: Rc<ErrorsPlugin>,
    ctx: Option<RequestContext>,
    rule: Option<usize>,
    grpc_request: bool,
    state: State,
    /// First bytes of a masked body, for the warn log.
    capture: Vec<u8>,
    /// A decided mask whose log line waits for `capture` to fill.
    pending_log: Option<String>,
}

impl ErrorsFilter {
    pub fn new(plugin: Rc<ErrorsPlugin>) -> Self {
        ErrorsFilter {
            plugin,
            ctx: None,
            rule: None,
            grpc_request: false,
            state: State::Idle,
            capture: Vec::new(),
            pending_log: None,
        }
    }

    /// Request-phase facts: the route rule, the request id and whether the
    /// request is gRPC. Only readable here: Envoy hides request headers from
    /// response callbacks (reading one there traps the VM).
    fn begin(&mut self, host: &dyn Host) {
        let config = &self.plugin.config;
        let facts = RouteFacts::read(host, config.needs_route_name);
        self.rule = config.pick(&facts.input());
        self.grpc_request =
            grpc::is_grpc_content_type(host.request_header("content-type").as_deref());
        self.ctx = Some(RequestContext::new(crate::NAME, host).audited(config.audit));
    }

    /// When an earlier filter answered, our request phase never ran: the
    /// top-level policy applies and the id comes from the response, if any.
    fn begin_without_request(&mut self, host: &dyn Host) {
        let id = host
            .response_header(palisade_core::request_id::HEADER)
            .and_then(|v| String::from_utf8(v).ok())
            .map(|v| v.trim().to_string())
            .filter(|v| palisade_core::request_id::is_safe_id(v));
        self.ctx = Some(RequestContext {
            filter: crate::NAME,
            request_id: id,
            audit: self.plugin.config.audit,
        });
    }

    fn request_id(&self) -> Option<&str> {
        self.ctx.as_ref().and_then(|c| c.request_id.as_deref())
    }

    /// Counts an event; a masking also goes to the audit record.
    fn count(&self, host: &mut dyn Host, event: &str) {
        self.plugin.metrics.inc(host, event);
        let verdict = match event.split_once('.') {
            Some(("masked", cause)) => Some(("masked", cause)),
            Some(("shadow_masked", cause)) => Some(("shadow-masked", cause)),
            _ => None,
        };
        if let (Some((verdict, cause)), Some(ctx)) = (verdict, &self.ctx) {
            palisade_core::audit::record(host, ctx, verdict, Some(cause), Default::default());
        }
    }

    fn log(&self, host: &dyn Host, level: Level, message: &str) {
        match &self.ctx {
            Some(ctx) => ctx.log(host, level, message),
            None => host.log(level, &format!("palisade.{} {message}", crate::NAME)),
        }
    }

    fn problem(&self, status: u16) -> Problem {
        Problem::new(status).request_id(self.request_id())
    }

    fn pass(&mut self, host: &mut dyn Host) -> Flow {
        self.count(host, "passed");
        self.state = State::Pass;
        Flow::Continue
    }

    /// A Palisade filter's own problem (JWT 401, ratelimit 429…) on its way
    /// out: a problem+json carrying the `x-palisade-denied-by` *response*
    /// header that `RequestContext::reject` adds, and not from the upstream
    /// (which could otherwise forge it). The request header of the same name
    /// cannot be used: Envoy hides request headers from response callbacks.
    fn is_own_problem(&self, host: &dyn Host) -> bool {
        let marked = host
            .response_header(DENIED_BY_HEADER)
            .is_some_and(|v| !v.trim_ascii().is_empty());
        if !marked || media_type(host.response_header("content-type").as_deref()) != CONTENT_TYPE {
            return false;
        }
        let from_upstream = match host.kind() {
            // Envoy's response code details: the router sets `via_upstream`
            // on every upstream answer; a wasm local reply has none at all.
            HostKind::Envoy => host
                .property(&["response", "code_details"])
                .is_some_and(|d| d == b"via_upstream"),
            // nginx's `$upstream_status` is empty for responses Kong made itself.
            HostKind::Kong => host
                .property(&["ngx", "upstream_status"])
                .and_then(|s| HostKind::Kong.decode_string(&s))
                .is_some_and(|s| !s.trim().is_empty()),
            // Streams always know their host; treat the impossible as upstream.
            HostKind::Unknown => true,
        };
        !from_upstream
    }

    /// Logs `message` with the captured body, now or once enough body arrived.
    fn defer_log(&mut self, host: &dyn Host, message: String) {
        self.pending_log = Some(message);
        if self.plugin.config.log_body_bytes == 0 {
            self.flush_log(host);
        }
    }

    fn flush_log(&mut self, host: &dyn Host) {
        if let Some(message) = self.pending_log.take() {
            let line = format!("{message}; body starts: \"{}\"", printable(&self.capture));
            self.log(host, Level::Warn, &line);
        }
    }

    /// Keeps the first `log_body_bytes` of the current chunk.
    fn capture_chunk(&mut self, host: &dyn Host, size: usize) {
        let want = self
            .plugin
            .config
            .log_body_bytes
            .saturating_sub(self.capture.len())
            .min(size);
        if want > 0 {
            if let Some(bytes) = host.response_body(0, want) {
                let take = bytes.len().min(want);
                self.capture
                    .extend_from_slice(bytes.get(..take).unwrap_or(&[]));
            }
        }
    }

    fn capture_full(&self) -> bool {
        self.capture.len() >= self.plugin.config.log_body_bytes
    }

    /// Rewrites the response headers into a problem's, in place.
    /// `body_follows`: whether a body callback will carry the problem
    /// document. A response that ends with its headers gets no problem
    /// content type: an empty body is no problem document.
    fn rewrite_headers(
        &self,
        host: &mut dyn Host,
        policy: &Policy,
        status: u16,
        body_follows: bool,
    ) {
        let mut doomed: Vec<String> = Vec::new();
        for (name, _) in host.response_headers().iter() {
            if name.starts_with(':') || doomed.contains(name) {
                continue;
            }
            if BODY_HEADERS.contains(&name.as_str()) || strips(&policy.strip_headers, name) {
                doomed.push(name.clone());
            }
        }
        for name in &doomed {
            host.remove_response_header(name);
        }
        for (name, value) in self.problem(status).headers() {
            if body_follows || name != "content-type" {
                host.set_response_header(name, value.as_bytes());
            }
        }
    }

    /// The response headers a local reply keeps: a local reply sent from the
    /// response path starts from fresh headers, so security headers added by
    /// inner filters (or the upstream) would otherwise be lost.
    fn carried_headers(&self, host: &dyn Host, policy: &Policy) -> Vec<(String, String)> {
        host.response_headers()
            .iter()
            .filter(|(name, _)| {
                !name.starts_with(':')
                    && !BODY_HEADERS.contains(&name.as_str())
                    && !PROXY_HEADERS.contains(&name.as_str())
                    && !strips(&policy.strip_headers, name)
            })
            .filter_map(|(name, value)| {
                std::str::from_utf8(value)
                    .ok()
                    .map(|v| (name.clone(), v.to_owned()))
            })
            .collect()
    }

    fn mask_status(
        &mut self,
        host: &mut dyn Host,
        policy: &Policy,
        status: u16,
        eos: bool,
        cause: Cause,
    ) -> Flow {
        let kind = host.kind();
        // Kong never says end_of_stream in headers, and calls no body
        // callback for an empty body: there `content-length: 0` tells.
        let bodiless = if kind.trusts_end_of_stream_in_headers() {
            eos
        } else {
            eos || declares_no_body(host)
        };
        let reason = cause.describe();
        if policy.dry_run {
            self.count(host, &format!("shadow_masked.{}", cause.event()));
            let message = format!("dry_run: would mask {status} ({reason})");
            if bodiless {
                self.defer_log(host, message);
                self.flush_log(host);
                self.state = State::Pass;
            } else {
                self.defer_log(host, message);
                self.state = State::Shadow {
                    status,
                    leak_candidate: false,
                    coding: Coding::Identity,
                    seen: Vec::new(),
                };
            }
            return Flow::Continue;
        }
        self.count(host, &format!("masked.{}", cause.event()));
        if bodiless && kind.local_reply_from_response_headers() {
            self.defer_log(host, format!("masked {status} ({reason})"));
            self.flush_log(host);
            let carried = self.carried_headers(host, policy);
            let extra: Vec<(&str, &str)> = carried
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            self.problem(status).send(host, &extra);
            self.state = State::Replied;
            return Flow::Pause;
        }
        self.rewrite_headers(host, policy, status, !bodiless);
        self.defer_log(host, format!("masked {status} ({reason})"));
        if bodiless {
            // No body will come and no local reply is possible: headers only.
            self.flush_log(host);
            self.state = State::Pass;
        } else {
            self.state = State::Replace {
                status,
                emitted: false,
            };
        }
        Flow::Continue
    }

    fn leak_candidate(
        &mut self,
        host: &mut dyn Host,
        policy: &Policy,
        status: u16,
        eos: bool,
    ) -> Flow {
        let kind = host.kind();
        if eos && kind.trusts_end_of_stream_in_headers() {
            return self.pass(host);
        }
        let coding = Coding::parse(host.response_header("content-encoding").as_deref());
        if let Coding::Other(name) = &coding {
            // Nothing to scan: the rule decides before any body arrives.
            return match policy.undecodable {
                Undecodable::Mask => {
                    let cause = Cause::Undecodable(format!("content-encoding {name}"));
                    self.mask_status(host, policy, status, eos, cause)
                }
                Undecodable::Pass => {
                    self.count(host, "leak_scan_skipped");
                    self.pass(host)
                }
            };
        }
        if policy.dry_run {
            self.state = State::Shadow {
                status,
                leak_candidate: true,
                coding,
                seen: Vec::new(),
            };
            return Flow::Continue;
        }
        // Kong drops a filter that pauses here for the rest of the request
        // (its body would leave unscanned): there the body is buffered and
        // replaced in the body callbacks instead.
        if policy.hold_headers && kind.honours_pause_in_response_headers() {
            self.state = State::Scan {
                status,
                held: true,
                paused: false,
                coding,
            };
            return Flow::Pause;
        }
        // Headers leave now: the body may change length. A compressed body
        // keeps its `content-encoding`: a mask is encoded the same way.
        host.remove_response_header("content-length");
        self.state = State::Scan {
            status,
            held: false,
            paused: false,
            coding,
        };
        Flow::Continue
    }

    /// Scans a leak candidate's buffered body: `raw` is its first
    /// `scan_bytes`, `whole` when nothing follows them.
    fn judge(&self, coding: &Coding, raw: Vec<u8>, whole: bool) -> Judged {
        let config = &self.plugin.config;
        let found = |bytes: &[u8]| -> Vec<String> {
            config
                .leaks
                .find(bytes)
                .into_iter()
                .map(str::to_string)
                .collect()
        };
        let Some(inflated) = decode::inflate(coding, &raw, whole, config.scan_bytes) else {
            let leaks = found(&raw);
            let verdict = if leaks.is_empty() {
                Verdict::Clean
            } else {
                Verdict::Leak(leaks)
            };
            return Judged {
                verdict,
                decoded: raw,
                framing: None,
            };
        };
        let leaks = found(&inflated.bytes);
        let verdict = if !leaks.is_empty() {
            Verdict::Leak(leaks)
        } else if let Some(why) = inflated.incomplete {
            Verdict::Undecodable(format!("{} body {why}", coding.name()))
        } else {
            Verdict::Clean
        };
        Judged {
            verdict,
            decoded: inflated.bytes,
            framing: Some(inflated.framing),
        }
    }

    /// gRPC: mask `grpc-message` when the status maps to a masked HTTP class.
    fn grpc_status(&mut self, host: &mut dyn Host, policy: &Policy, place: Place) {
        let get = |host: &dyn Host, name: &str| match place {
            Place::Headers => host.response_header(name),
            Place::Trailers => host.response_trailer(name),
        };
        let Some(code) = get(host, grpc::STATUS).and_then(|raw| grpc::parse_status(&raw)) else {
            self.count(host, "passed");
            return;
        };
        let http = grpc::http_status(code);
        let message = get(host, grpc::MESSAGE)
            .map(|m| grpc::decode_message(&m))
            .unwrap_or_default();
        let reason = if code == 0 {
            None
        } else if policy.statuses.contains(http) {
            Some("status".to_string())
        } else if policy.detect_leaks_in.contains(http) {
            let found = self.plugin.config.leaks.find(&message);
            (!found.is_empty()).then(|| format!("leak: {}", found.join(",")))
        } else {
            None
        };
        let Some(reason) = reason else {
            self.count(host, "passed");
            return;
        };
        let name = grpc::canonical_name(code);
        let limit = self.plugin.config.log_body_bytes.min(message.len());
        self.capture = message.get(..limit).unwrap_or(&[]).to_vec();
        if policy.dry_run {
            self.count(host, "shadow_masked.grpc");
            self.defer_log(
                host,
                format!("dry_run: would mask gRPC {name} ({http}, {reason})"),
            );
            self.flush_log(host);
            return;
        }
        self.count(host, "masked.grpc");
        self.defer_log(host, format!("masked gRPC {name} ({http}, {reason})"));
        self.flush_log(host);
        match place {
            Place::Headers => {
                host.set_response_header(grpc::MESSAGE, name.as_bytes());
                host.remove_response_header(grpc::DETAILS);
                let doomed: Vec<String> = host
                    .response_headers()
                    .iter()
                    .map(|(n, _)| n)
                    .filter(|n| !n.starts_with(':') && strips(&policy.strip_headers, n))
                    .cloned()
                    .collect();
                for n in &doomed {
                    host.remove_response_header(n);
                }
                if let Some(id) = self.request_id() {
                    let id = id.to_string();
                    host.set_response_header(palisade_core::request_id::HEADER, id.as_bytes());
                }
            }
            Place::Trailers => {
                host.set_response_trailer(grpc::MESSAGE, name.as_bytes());
                host.remove_response_trailer(grpc::DETAILS);
            }
        }
    }

    /// The buffered leak candidate is complete enough: mask it or let it go.
    /// `size` is the buffered body's length, `eos` whether it ended there.
    fn finish_scan(
        &mut self,
        host: &mut dyn Host,
        size: usize,
        eos: bool,
        status: u16,
        held: bool,
        coding: &Coding,
    ) -> Flow {
        let config = &self.plugin.config;
        let raw = host
            .response_body(0, size.min(config.scan_bytes))
            .unwrap_or_default();
        let whole = eos && raw.len() >= size;
        let judged = self.judge(coding, raw, whole);
        let reason = match judged.verdict {
            Verdict::Clean => return self.pass(host),
            Verdict::Leak(found) => ("leak", format!("leak: {}", found.join(","))),
            Verdict::Undecodable(why) => {
                if self.plugin.config.policy(self.rule).undecodable == Undecodable::Pass {
                    self.count(host, "leak_scan_skipped");
                    return self.pass(host);
                }
                ("undecodable", format!("undecodable: {why}"))
            }
        };
        let limit = config.log_body_bytes.min(judged.decoded.len());
        self.capture = judged.decoded.get(..limit).unwrap_or(&[]).to_vec();
        let plugin = self.plugin.clone();
        let policy = plugin.config.policy(self.rule);
        self.count(host, &format!("masked.{}", reason.0));
        let problem = self.problem(status).to_json();
        let body = if held {
            self.rewrite_headers(host, policy, status, true);
            problem
        } else {
            match judged.framing {
                // The headers left saying how the body is encoded: so is the problem.
                Some(framing) => decode::encode(framing, &problem),
                None => problem,
            }
        };
        replace_body(host, size, &body);
        self.defer_log(host, format!("masked {status} ({})", reason.1));
        self.flush_log(host);
        self.state = State::Drain;
        Flow::Continue
    }

    /// `dry_run`: reads the chunk (never changes it) until enough was seen.
    fn observe(&mut self, host: &mut dyn Host, size: usize, eos: bool) -> Flow {
        let State::Shadow {
            status,
            leak_candidate,
            coding,
            seen,
        } = &mut self.state
        else {
            return Flow::Continue;
        };
        let (status, leak_candidate, coding) = (*status, *leak_candidate, coding.clone());
        let config = &self.plugin.config;
        let limit = if leak_candidate {
            config.scan_bytes
        } else {
            config.log_body_bytes
        };
        let want = limit.saturating_sub(seen.len()).min(size);
        if want > 0 {
            if let Some(bytes) = host.response_body(0, want) {
                seen.extend_from_slice(bytes.get(..want.min(bytes.len())).unwrap_or(&[]));
            }
        }
        if seen.len() < limit && !eos {
            return Flow::Continue;
        }
        // Every chunk was taken whole until this one: nothing was cut.
        let whole = eos && want == size;
        let seen = std::mem::take(seen);
        self.state = State::Pass;
        let decoded = if leak_candidate {
            let judged = self.judge(&coding, seen, whole);
            let undecodable_rule = self.plugin.config.policy(self.rule).undecodable;
            match judged.verdict {
                Verdict::Clean => self.count(host, "passed"),
                Verdict::Undecodable(_) if undecodable_rule == Undecodable::Pass => {
                    self.count(host, "leak_scan_skipped")
                }
                Verdict::Leak(found) => {
                    self.count(host, "shadow_masked.leak");
                    let found = found.join(",");
                    self.defer_log(
                        host,
                        format!("dry_run: would mask {status} (leak: {found})"),
                    );
                }
                Verdict::Undecodable(why) => {
                    self.count(host, "shadow_masked.undecodable");
                    self.defer_log(
                        host,
                        format!("dry_run: would mask {status} (undecodable: {why})"),
                    );
                }
            }
            judged.decoded
        } else {
            seen
        };
        let log_limit = self.plugin.config.log_body_bytes.min(decoded.len());
        self.capture = decoded.get(..log_limit).unwrap_or(&[]).to_vec();
        self.flush_log(host);
        Flow::Continue
    }
}

/// `application/json; charset=utf-8` → `application/json`.
fn media_type(value: Option<&[u8]>) -> String {
    let Some(v) = value else {
        return String::new();
    };
    String::from_utf8_lossy(v)
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

impl HttpFilter for ErrorsFilter {
    fn on_request_headers(&mut self, host: &mut dyn Host, _end_of_stream: bool) -> Flow {
        self.begin(host);
        // The upstream must not see a client-forged marker.
        if host.request_header(DENIED_BY_HEADER).is_some() {
            host.remove_request_header(DENIED_BY_HEADER);
        }
        Flow::Continue
    }

    fn on_response_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Flow {
        if self.ctx.is_none() {
            self.begin_without_request(host);
        }
        let plugin = self.plugin.clone();
        let config = &plugin.config;
        let policy = config.policy(self.rule);
        if !policy.enabled {
            return self.pass(host);
        }
        if self.is_own_problem(host) {
            // The marker is Palisade-internal: it stops here.
            host.remove_response_header(DENIED_BY_HEADER);
            self.count(host, "own_problem_passed");
            self.state = State::Pass;
            return Flow::Continue;
        }
        let content_type = host.response_header("content-type");
        let has_grpc_status = host.response_header(grpc::STATUS).is_some();
        let grpc_type = grpc::is_grpc_content_type(content_type.as_deref());
        // The gRPC path keeps the response as it is, so it is taken only for
        // what a gRPC client can receive: a `grpc-status`, or HTTP 200 with
        // the status to come in trailers. A gRPC-typed 500 without one is
        // masked like any other response.
        let grpc_response =
            (grpc_type || self.grpc_request) && (has_grpc_status || host.response_status() == 200);
        if grpc_response {
            if has_grpc_status {
                self.grpc_status(host, policy, Place::Headers);
                self.state = State::Pass;
            } else {
                self.state = State::GrpcTrailers;
            }
            return Flow::Continue;
        }
        if config.is_stream(content_type.as_deref()) {
            return self.pass(host);
        }
        let status = host.response_status();
        if policy.statuses.contains(status) {
            return self.mask_status(host, policy, status, end_of_stream, Cause::Status);
        }
        if policy.detect_leaks_in.contains(status) && !self.grpc_request {
            return self.leak_candidate(host, policy, status, end_of_stream);
        }
        self.pass(host)
    }

    fn on_response_body(&mut self, host: &mut dyn Host, size: usize, end_of_stream: bool) -> Flow {
        match self.state {
            State::Idle | State::Pass | State::GrpcTrailers => Flow::Continue,
            State::Replied | State::Drain => {
                if size > 0 {
                    host.set_response_body(0, size, b"");
                }
                Flow::Continue
            }
            State::Replace { status, emitted } => {
                self.capture_chunk(host, size);
                if emitted {
                    if size > 0 {
                        host.set_response_body(0, size, b"");
                    }
                } else {
                    replace_body(host, size, &self.problem(status).to_json());
                    self.state = State::Replace {
                        status,
                        emitted: true,
                    };
                }
                if end_of_stream || self.capture_full() {
                    self.flush_log(host);
                }
                Flow::Continue
            }
            State::Scan {
                status,
                held,
                paused,
                ref coding,
            } => {
                let coding = coding.clone();
                let last_call = paused && decides_after_one_pause(host.kind());
                if !end_of_stream && size < self.plugin.config.scan_bytes && !last_call {
                    self.state = State::Scan {
                        status,
                        held,
                        paused: true,
                        coding,
                    };
                    return Flow::Pause;
                }
                self.finish_scan(host, size, end_of_stream, status, held, &coding)
            }
            State::Shadow { .. } => self.observe(host, size, end_of_stream),
        }
    }

    fn on_response_trailers(&mut self, host: &mut dyn Host) -> Flow {
        match self.state {
            State::GrpcTrailers => {
                let plugin = self.plugin.clone();
                let policy = plugin.config.policy(self.rule);
                self.grpc_status(host, policy, Place::Trailers);
                self.state = State::Pass;
            }
            State::Scan {
                status,
                held,
                ref coding,
                ..
            } => {
                // Trailers end the body: decide on all that was buffered
                // (less than `scan_bytes`, or the scan would be over).
                let coding = coding.clone();
                let size = host
                    .response_body(0, self.plugin.config.scan_bytes)
                    .map_or(0, |b| b.len());
                return self.finish_scan(host, size, true, status, held, &coding);
            }
            _ => self.flush_log(host),
        }
        Flow::Continue
    }
}

/// Whether the response headers say no body follows (`content-length: 0`).
fn declares_no_body(host: &dyn Host) -> bool {
    host.response_header("content-length")
        .is_some_and(|v| v.trim_ascii() == b"0")
}
