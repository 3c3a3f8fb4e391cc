//! The soak: `palisade.wasm` running the whole chain (errors, headers, jwt,
//! ratelimit, schema) on a real Envoy at `--concurrency 2`, under a steady mix
//! of good and hostile traffic for minutes, watched for what short tests
//! cannot see: memory that creeps, a status nobody designed, a stack trace
//! that gets through after the ten-thousandth request, a VM that dies and is
//! quietly reloaded.
//!
//! [`run`] starts the upstream and Envoy, drives `clients` threads at a total
//! of `rps` requests per second, samples Envoy's RSS and counters every
//! `sample_every`, and writes `SOAK.md` and `soak.svg` into `out`. `make soak`
//! runs it for 600 s through `src/bin/soak.rs`; `tests/soak.rs` runs it for
//! 16 s so it cannot rot.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::client::{parse_response, RawResponse};
use crate::config::{EnvoyConfig, FailurePolicy, WasmFilter};
use crate::envoy::Envoy;
use crate::jwt_fixtures;
use crate::paths::{envoy_bin, repo_root};
use crate::upstream::{sha256_hex, BodyKind, Canned, Upstream};

const ISSUER: &str = "https://id.example.com";
/// Requests one minted token serves before the client mints the next.
const TOKEN_USES: u32 = 12;
/// Markers of a stack trace in a body (the upstream's Java and Python traces).
const LEAK_MARKERS: &[&str] = &[
    "Exception",
    "\tat ",
    ".java:",
    "Traceback",
    "File \"/",
    "ZeroDivisionError",
];
/// How long one request may take before the client gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How many examples of each kind of failure the report keeps.
const EXAMPLES: usize = 10;
/// Allowed RSS growth after warm-up.
const RSS_GROWTH_LIMIT: f64 = 0.10;

/// What a soak run does and where it writes.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long the traffic runs.
    pub duration: Duration,
    /// Time between two samples.
    pub sample_every: Duration,
    /// The first part of the run whose memory growth is not judged (V8 tiers
    /// code up, caches and the key table fill).
    pub warmup: Duration,
    /// Total request rate aimed at, over all clients.
    pub rps: u32,
    /// Client threads.
    pub clients: usize,
    /// Envoy worker threads.
    pub concurrency: u32,
    /// The directory holding `palisade.wasm`.
    pub dist: PathBuf,
    /// Where `SOAK.md` and `soak.svg` go.
    pub out: PathBuf,
}

impl Options {
    /// The defaults of `make soak` for a run of `duration`: warm-up is the
    /// first 20% of the run.
    pub fn new(duration: Duration) -> Options {
        Options {
            duration,
            sample_every: Duration::from_secs(10),
            warmup: duration / 5,
            rps: 300,
            clients: 4,
            concurrency: 2,
            dist: repo_root().join("dist"),
            out: repo_root().join("benches"),
        }
    }

    /// Options from the environment: `SOAK_S` (600), `SOAK_SAMPLE_S` (10),
    /// `SOAK_RPS` (300), `SOAK_CLIENTS` (4), `SOAK_DIST` (`dist`), `SOAK_OUT`
    /// (`benches`); relative paths are relative to the repository.
    pub fn from_env() -> Result<Options, String> {
        let number = |name: &str, default: u64| -> Result<u64, String> {
            match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{name}={v:?}: expected a positive whole number")),
                _ => Ok(default),
            }
        };
        let path = |name: &str, default: &str| -> PathBuf {
            let p = PathBuf::from(std::env::var(name).unwrap_or_else(|_| default.to_string()));
            if p.is_absolute() {
                p
            } else {
                repo_root().join(p)
            }
        };
        let mut options = Options::new(Duration::from_secs(number("SOAK_S", 600)?));
        options.sample_every = Duration::from_secs(number("SOAK_SAMPLE_S", 10)?);
        options.rps = u32::try_from(number("SOAK_RPS", 300)?).map_err(|e| e.to_string())?;
        options.clients = usize::try_from(number("SOAK_CLIENTS", 4)?).map_err(|e| e.to_string())?;
        options.dist = path("SOAK_DIST", "dist");
        options.out = path("SOAK_OUT", "benches");
        Ok(options)
    }
}

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    /// Every check held.
    pub passed: bool,
    /// Why not, one line per failed check.
    pub failures: Vec<String>,
    /// The report written (`<out>/SOAK.md`).
    pub report: PathBuf,
    /// The plot written (`<out>/soak.svg`).
    pub plot: PathBuf,
}

/// One kind of request in the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Valid,
    Heavy,
    NewKey,
    OrderOk,
    OrderBad,
    OrderMalformed,
    TooBig,
    BadSignature,
    Expired,
    Garbage,
    NoToken,
    NoScope,
    Method,
    Java500,
    Python503,
    AbortMidBody,
    AbortAfterHeaders,
    AbortWaiting,
}

/// The mix: each kind and its weight (out of the sum).
const MIX: &[(Kind, u32)] = &[
    (Kind::Valid, 20),
    (Kind::Heavy, 6),
    (Kind::NewKey, 14),
    (Kind::OrderOk, 10),
    (Kind::OrderBad, 6),
    (Kind::OrderMalformed, 2),
    (Kind::TooBig, 2),
    (Kind::BadSignature, 5),
    (Kind::Expired, 4),
    (Kind::Garbage, 4),
    (Kind::NoToken, 3),
    (Kind::NoScope, 4),
    (Kind::Method, 3),
    (Kind::Java500, 5),
    (Kind::Python503, 4),
    (Kind::AbortMidBody, 3),
    (Kind::AbortAfterHeaders, 3),
    (Kind::AbortWaiting, 3),
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Valid => "valid",
            Kind::Heavy => "heavy",
            Kind::NewKey => "new-key",
            Kind::OrderOk => "order-ok",
            Kind::OrderBad => "order-bad",
            Kind::OrderMalformed => "order-malformed",
            Kind::TooBig => "too-big",
            Kind::BadSignature => "bad-signature",
            Kind::Expired => "expired",
            Kind::Garbage => "garbage",
            Kind::NoToken => "no-token",
            Kind::NoScope => "no-scope",
            Kind::Method => "method",
            Kind::Java500 => "java-500",
            Kind::Python503 => "python-503",
            Kind::AbortMidBody => "abort-mid-body",
            Kind::AbortAfterHeaders => "abort-after-headers",
            Kind::AbortWaiting => "abort-waiting",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Kind::Valid => "GET /api/orders/<n>, a fresh token (new `sub` and `jti` every 12 requests of a client)",
            Kind::Heavy => "GET, the fixture token `valid` (one subject for every client) and one of 8 `x-client-id`s: both limits run dry",
            Kind::NewKey => "GET, a fresh token and an `x-client-id` never seen before: floods the key table",
            Kind::OrderOk => "POST /api/orders, a valid JSON body",
            Kind::OrderBad => "POST /api/orders, JSON the schema refuses (wrong types, out of range, extra member)",
            Kind::OrderMalformed => "POST /api/orders, truncated JSON",
            Kind::TooBig => "POST /api/orders, 8 KiB body (schema `max_body_bytes` 4096)",
            Kind::BadSignature => "a fresh token with its signature altered",
            Kind::Expired => "a freshly minted token that expired an hour ago",
            Kind::Garbage => "`Bearer` and random bytes with dots",
            Kind::NoToken => "no `authorization`",
            Kind::NoScope => "GET /api/admin/stats, a valid token without the `admin` scope",
            Kind::Method => "DELETE /api/orders/<n> (headers allows GET, HEAD, POST)",
            Kind::Java500 => "GET /api/boom/java: the upstream answers 500 with a Java stack trace",
            Kind::Python503 => "GET /api/boom/python: the upstream answers 503 with a Python traceback",
            Kind::AbortMidBody => "POST /api/orders announcing 200 bytes, 40 sent, connection closed",
            Kind::AbortAfterHeaders => "POST /api/orders announcing a body, connection closed right after the headers",
            Kind::AbortWaiting => "GET /api/slow (upstream waits 300 ms), connection closed after 50 ms",
        }
    }

    /// The statuses this kind may get; empty for aborted requests (no status).
    fn expected(self) -> &'static [u16] {
        match self {
            Kind::Valid | Kind::Heavy | Kind::NewKey | Kind::OrderOk => &[200, 429],
            Kind::OrderBad | Kind::OrderMalformed => &[400, 429],
            Kind::TooBig => &[413, 429],
            Kind::BadSignature | Kind::Expired | Kind::Garbage | Kind::NoToken => &[401],
            Kind::NoScope => &[403],
            Kind::Method => &[405],
            Kind::Java500 => &[500, 429],
            Kind::Python503 => &[503, 429],
            Kind::AbortMidBody | Kind::AbortAfterHeaders | Kind::AbortWaiting => &[],
        }
    }

    fn aborts(self) -> bool {
        self.expected().is_empty()
    }
}

/// Every status the mix is designed to produce.
fn designed_statuses() -> Vec<u16> {
    let mut all: Vec<u16> = MIX
        .iter()
        .flat_map(|(k, _)| k.expected().iter().copied())
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// The chain file `palisade.wasm` runs: one route, all five controls.
pub fn chain() -> Value {
    json!({
        "version": 1,
        "upstreams": {"shop": "http://127.0.0.1:8080"},
        "filters": {
            "errors": {},
            "headers": {"request": {"allowed_methods": ["GET", "HEAD", "POST"]}},
            "jwt": {
                "providers": {"corp": {
                    "issuer": ISSUER,
                    "audiences": ["orders-api"],
                    "local_jwks": jwt_fixtures::jwks(&["rsa1"]),
                    "claim_to_headers": [{"claim": "sub", "header": "x-jwt-sub"}]
                }},
                "rules": [{"match": {"prefix": "/api/admin/"},
                           "requires": {"provider": "corp", "scopes": ["admin"]}}],
                "requires": {"provider": "corp"},
                "token_cache_entries": 256
            },
            "ratelimit": {
                "limits": [
                    {"name": "per-subject", "key": [{"claim": "sub"}], "requests": 20, "per_s": 60},
                    {"name": "per-client", "key": [{"header": "x-client-id"}], "requests": 5, "per_s": 600}
                ],
                "local": {"slots": 128, "entries_per_slot": 4}
            },
            "schema": {
                "hold_headers": true,
                "rules": [{
                    "match": {"path": "/api/orders", "methods": ["POST"]},
                    "max_body_bytes": 4096,
                    "body": {"schema": {
                        "type": "object", "required": ["sku", "qty"], "additionalProperties": false,
                        "properties": {"sku": {"type": "string", "maxLength": 32},
                                       "qty": {"type": "integer", "minimum": 1, "maximum": 100}}
                    }}
                }]
            }
        },
        "routes": [{"name": "api", "match": {"prefix": "/"}, "upstream": "shop",
                    "filters": ["errors", "headers", "jwt", "ratelimit", "schema"]}]
    })
}

/// What the clients saw so far.
#[derive(Clone, Debug, Default)]
struct Tally {
    /// Answered requests.
    answered: u64,
    /// Aborted on purpose.
    aborted: u64,
    by_status: BTreeMap<u16, u64>,
    by_kind: BTreeMap<Kind, (u64, BTreeMap<u16, u64>)>,
    unexpected: u64,
    unexpected_examples: Vec<String>,
    leaks: u64,
    leak_examples: Vec<String>,
    /// 5xx bodies scanned for stack traces.
    scanned_5xx: u64,
    transport_errors: u64,
    transport_examples: Vec<String>,
    /// Requests sent again on a new connection because Envoy had closed the
    /// kept-alive one.
    resent: u64,
}

impl Tally {
    fn record(&mut self, kind: Kind, result: Result<RawResponse, String>) {
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                self.transport_errors += 1;
                push_example(
                    &mut self.transport_examples,
                    format!("{}: {e}", kind.name()),
                );
                return;
            }
        };
        let Some(status) = response.status else {
            self.transport_errors += 1;
            push_example(
                &mut self.transport_examples,
                format!("{}: no status", kind.name()),
            );
            return;
        };
        self.answered += 1;
        *self.by_status.entry(status).or_default() += 1;
        let entry = self.by_kind.entry(kind).or_default();
        entry.0 += 1;
        *entry.1.entry(status).or_default() += 1;
        if !kind.expected().contains(&status) {
            self.unexpected += 1;
            push_example(
                &mut self.unexpected_examples,
                format!(
                    "{} got {status}: {}",
                    kind.name(),
                    truncate(&response.text(), 200)
                ),
            );
        }
        if status >= 500 {
            self.scanned_5xx += 1;
            let text = response.text();
            if let Some(marker) = LEAK_MARKERS.iter().find(|m| text.contains(*m)) {
                self.leaks += 1;
                push_example(
                    &mut self.leak_examples,
                    format!(
                        "{} {status} body contains {marker:?}: {}",
                        kind.name(),
                        truncate(&text, 200)
                    ),
                );
            }
        }
    }
}

fn push_example(list: &mut Vec<String>, example: String) {
    if list.len() < EXAMPLES {
        list.push(example);
    }
}

fn truncate(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out.replace('\n', "\\n").replace('\t', "\\t")
}

/// One sample of Envoy and the clients.
#[derive(Clone, Debug)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    tally: Tally,
    stats: BTreeMap<String, u64>,
}

/// A small xorshift generator: the mix needs variety, not quality.
struct Rng(u64);

impl Rng {
    fn seeded(thread: usize) -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng(nanos ^ ((thread as u64 + 1) << 32) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn kind(&mut self) -> Kind {
        let total: u32 = MIX.iter().map(|(_, w)| w).sum();
        let mut pick = self.below(u64::from(total)) as u32;
        for (kind, weight) in MIX {
            if pick < *weight {
                return *kind;
            }
            pick -= weight;
        }
        Kind::Valid
    }
}

/// Mints tokens with the fixture key `rsa1`.
struct Minter {
    key: EncodingKey,
    thread: usize,
    minted: u64,
}

impl Minter {
    fn new(thread: usize) -> Result<Minter, String> {
        let path = repo_root().join("filters/jwt/tests/fixtures/rsa1.pem");
        let pem = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let key = EncodingKey::from_rsa_pem(&pem).map_err(|e| format!("rsa1.pem: {e}"))?;
        Ok(Minter {
            key,
            thread,
            minted: 0,
        })
    }

    /// A token for a new subject, valid for an hour, or expired an hour ago.
    fn mint(&mut self, expired: bool) -> String {
        self.minted += 1;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (iat, exp) = if expired {
            (now - 7200, now - 3600)
        } else {
            (now, now + 3600)
        };
        let claims = json!({
            "iss": ISSUER, "aud": "orders-api", "scope": "read",
            "sub": format!("soak-{}-{}", self.thread, self.minted),
            "jti": format!("{}-{}-{now}", self.thread, self.minted),
            "iat": iat, "exp": exp
        });
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("rsa1".into());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap_or_default()
    }
}

/// A keep-alive HTTP/1.1 connection to Envoy, reopened when Envoy closes it.
struct Connection {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    /// Requests sent again on a new connection.
    resent: u64,
}

impl Connection {
    fn send(&mut self, request: &[u8]) -> Result<RawResponse, String> {
        let reused = self.stream.is_some();
        match self.exchange(request) {
            // A kept-alive connection Envoy closed meanwhile: once more on a new one.
            Err((e, true)) if reused => {
                self.resent += 1;
                self.exchange(request)
                    .map_err(|(e2, _)| format!("{e}; again on a new connection: {e2}"))
            }
            other => other.map_err(|(e, _)| e),
        }
    }

    /// `Err((reason, nothing_read))`.
    fn exchange(&mut self, request: &[u8]) -> Result<RawResponse, (String, bool)> {
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, REQUEST_TIMEOUT)
                .map_err(|e| (format!("connect: {e}"), false))?;
            let _ = stream.set_nodelay(true);
            stream
                .set_read_timeout(Some(REQUEST_TIMEOUT))
                .map_err(|e| (e.to_string(), false))?;
            self.stream = Some(stream);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(("no connection".into(), false));
        };
        if let Err(e) = stream.write_all(request) {
            self.stream = None;
            return Err((format!("write: {e}"), true));
        }
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        let started = Instant::now();
        loop {
            match stream.read(&mut buf) {
                Ok(0) => {
                    self.stream = None;
                    return match parse_response(&raw, false, true) {
                        Some(r) if r.status.is_some() => Ok(r),
                        _ => Err(("closed without an answer".into(), raw.is_empty())),
                    };
                }
                Ok(n) => {
                    raw.extend_from_slice(&buf[..n]);
                    if let Some(r) = parse_response(&raw, false, false) {
                        if r.header("connection") == Some("close") {
                            self.stream = None;
                        }
                        return Ok(r);
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.stream = None;
                    let timed_out = started.elapsed() >= REQUEST_TIMEOUT;
                    return Err((format!("read: {e}"), raw.is_empty() && !timed_out));
                }
            }
        }
    }
}

/// A request's bytes, keep-alive.
fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nhost: shop.test\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !body.is_empty() || method == "POST" {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Sends `head` (and `partial` body) on a new connection and closes it
/// without reading: the client walked away.
fn abort(addr: SocketAddr, head: &[u8], partial: &[u8], linger: Duration) -> Result<(), String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    stream.write_all(head).map_err(|e| format!("write: {e}"))?;
    if !partial.is_empty() {
        stream
            .write_all(partial)
            .map_err(|e| format!("write: {e}"))?;
    }
    std::thread::sleep(linger);
    drop(stream);
    Ok(())
}

/// One client thread's state.
struct Client {
    rng: Rng,
    minter: Minter,
    token: String,
    uses: u32,
    new_keys: u64,
    thread: usize,
    fixture: String,
    connection: Connection,
}

impl Client {
    fn fresh_token(&mut self) -> String {
        if self.uses >= TOKEN_USES || self.token.is_empty() {
            self.token = self.minter.mint(false);
            self.uses = 0;
        }
        self.uses += 1;
        format!("Bearer {}", self.token)
    }

    /// Sends one request of `kind`; aborted ones return `None`.
    fn send(&mut self, kind: Kind) -> Option<Result<RawResponse, String>> {
        let addr = self.connection.addr;
        let json = [("content-type", "application/json")];
        let n = self.rng.below(1000);
        let bytes = match kind {
            Kind::Valid => {
                let auth = self.fresh_token();
                request(
                    "GET",
                    &format!("/api/orders/{n}"),
                    &[("authorization", &auth)],
                    b"",
                )
            }
            Kind::Heavy => {
                let auth = format!("Bearer {}", self.fixture);
                let client = format!("heavy-{}", self.rng.below(8));
                request(
                    "GET",
                    "/api/orders",
                    &[("authorization", &auth), ("x-client-id", &client)],
                    b"",
                )
            }
            Kind::NewKey => {
                let auth = self.fresh_token();
                self.new_keys += 1;
                let client = format!(
                    "new-{}-{}-{:x}",
                    self.thread,
                    self.new_keys,
                    self.rng.next()
                );
                request(
                    "GET",
                    "/api/orders",
                    &[("authorization", &auth), ("x-client-id", &client)],
                    b"",
                )
            }
            Kind::OrderOk | Kind::OrderBad | Kind::OrderMalformed | Kind::TooBig => {
                let auth = self.fresh_token();
                let body = match kind {
                    Kind::OrderOk => format!(r#"{{"sku": "A-{n}", "qty": {}}}"#, 1 + n % 100),
                    Kind::OrderBad => match n % 3 {
                        0 => r#"{"sku": 7, "qty": 1}"#.to_string(),
                        1 => format!(r#"{{"sku": "A-1", "qty": {}}}"#, 101 + n),
                        _ => r#"{"sku": "A-1", "qty": 1, "admin": true}"#.to_string(),
                    },
                    Kind::OrderMalformed => r#"{"sku": "A-1", "qty": "#.to_string(),
                    _ => format!(r#"{{"sku": "{}", "qty": 1}}"#, "x".repeat(8192)),
                };
                let headers = [json[0], ("authorization", &auth)];
                request("POST", "/api/orders", &headers, body.as_bytes())
            }
            Kind::BadSignature => {
                let auth = self.fresh_token();
                let mut forged = auth.into_bytes();
                // The signature's last-but-one character: still base64url, never valid.
                let at = forged.len() - 2;
                forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
                let auth = String::from_utf8_lossy(&forged).into_owned();
                request("GET", "/api/orders", &[("authorization", &auth)], b"")
            }
            Kind::Expired => {
                let auth = format!("Bearer {}", self.minter.mint(true));
                request("GET", "/api/orders", &[("authorization", &auth)], b"")
            }
            Kind::Garbage => {
                let auth = format!(
                    "Bearer {:x}.{:x}.{:x}",
                    self.rng.next(),
                    self.rng.next(),
                    self.rng.next()
                );
                request("GET", "/api/orders", &[("authorization", &auth)], b"")
            }
            Kind::NoToken => request("GET", "/api/orders", &[], b""),
            Kind::NoScope => {
                let auth = self.fresh_token();
                request("GET", "/api/admin/stats", &[("authorization", &auth)], b"")
            }
            Kind::Method => {
                let auth = self.fresh_token();
                request(
                    "DELETE",
                    &format!("/api/orders/{n}"),
                    &[("authorization", &auth)],
                    b"",
                )
            }
            Kind::Java500 | Kind::Python503 => {
                let auth = self.fresh_token();
                let path = if kind == Kind::Java500 {
                    "/api/boom/java"
                } else {
                    "/api/boom/python"
                };
                request("GET", path, &[("authorization", &auth)], b"")
            }
            Kind::AbortMidBody | Kind::AbortAfterHeaders | Kind::AbortWaiting => {
                let auth = self.fresh_token();
                let result = match kind {
                    Kind::AbortMidBody => {
                        let head = format!(
                            "POST /api/orders HTTP/1.1\r\nhost: shop.test\r\nauthorization: {auth}\r\n\
                             content-type: application/json\r\ncontent-length: 200\r\n\r\n"
                        );
                        abort(
                            addr,
                            head.as_bytes(),
                            br#"{"sku": "A-1", "qty": 1, "note": ""#,
                            Duration::ZERO,
                        )
                    }
                    Kind::AbortAfterHeaders => {
                        let head = format!(
                            "POST /api/orders HTTP/1.1\r\nhost: shop.test\r\nauthorization: {auth}\r\n\
                             content-type: application/json\r\ncontent-length: 30\r\n\r\n"
                        );
                        abort(addr, head.as_bytes(), b"", Duration::ZERO)
                    }
                    _ => {
                        let head = request("GET", "/api/slow", &[("authorization", &auth)], b"");
                        abort(addr, &head, b"", Duration::from_millis(50))
                    }
                };
                return match result {
                    Ok(()) => None,
                    Err(e) => Some(Err(e)),
                };
            }
        };
        Some(self.connection.send(&bytes))
    }
}

/// Drives one client until `stop`, at `rps` requests per second.
fn client_loop(
    thread: usize,
    addr: SocketAddr,
    rps: f64,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) -> Result<(), String> {
    let mut client = Client {
        rng: Rng::seeded(thread),
        minter: Minter::new(thread)?,
        token: String::new(),
        uses: 0,
        new_keys: 0,
        thread,
        fixture: jwt_fixtures::token("valid"),
        connection: Connection {
            addr,
            stream: None,
            resent: 0,
        },
    };
    let interval = Duration::from_secs_f64(1.0 / rps.max(0.1));
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let kind = client.rng.kind();
        let result = client.send(kind);
        {
            let mut tally = tally.lock().map_err(|_| "tally lock poisoned")?;
            match result {
                None => tally.aborted += 1,
                Some(r) => tally.record(kind, r),
            }
            tally.resent += std::mem::take(&mut client.connection.resent);
        }
        next += interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > Duration::from_secs(1) {
            // Far behind (Envoy or this machine is slower than the aim): no burst to catch up.
            next = now;
        }
    }
    Ok(())
}

/// Envoy's resident set, from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// Counters and gauges of `/stats` (histograms skipped).
fn parse_stats(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(": ")?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Whether a stat is one of the VM's life: Envoy's wasm runtime, the wasm
/// filter's own stats, or a plugin failure.
fn is_vm_stat(name: &str) -> bool {
    (name.starts_with("wasm.") || name.starts_with("wasm_filter.") || name.contains(".wasm."))
        && !name.starts_with("wasmcustom.")
}

/// The palisade counters each sample shows, and their column titles.
const KEY_COUNTERS: &[(&str, &str)] = &[
    ("wasmcustom.palisade.jwt.allowed", "jwt ok"),
    ("wasmcustom.palisade.ratelimit.limited", "limited"),
    ("wasmcustom.palisade.ratelimit.evicted", "evicted"),
    ("wasmcustom.palisade.schema.denied", "schema denied"),
    ("wasmcustom.palisade.errors.masked.status", "masked"),
];

/// Sums every stat whose name starts with `prefix` (a counter family such
/// as `wasmcustom.palisade.jwt.denied.`), or is `prefix`.
fn family(stats: &BTreeMap<String, u64>, prefix: &str) -> u64 {
    stats
        .iter()
        .filter(|(k, _)| *k == prefix || k.starts_with(&format!("{prefix}.")))
        .map(|(_, v)| v)
        .sum()
}

/// Runs the soak and writes the report; `Err` when it could not run at all.
pub fn run(options: &Options) -> Result<Outcome, String> {
    let module = options.dist.join("palisade.wasm");
    if !module.is_file() {
        return Err(format!(
            "{} does not exist: run `make build`",
            module.display()
        ));
    }
    let upstream = Upstream::start();
    upstream.respond(
        "/api/boom/java",
        Canned::status(500).body(BodyKind::JavaStack),
    );
    upstream.respond(
        "/api/boom/python",
        Canned::status(503).body(BodyKind::PythonStack),
    );
    upstream.respond(
        "/api/slow",
        Canned::status(200).delay(Duration::from_millis(300)),
    );
    let chain = chain();
    let filter = WasmFilter::new("palisade", &module)
        .config_json(&chain)
        .failure_policy(FailurePolicy::FailReload)
        .allow_on_headers_stop_iteration(true);
    let envoy = Envoy::try_start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .wasm(filter)
            .concurrency(options.concurrency)
            .log_level("warning")
            .startup_timeout(Duration::from_secs(180)),
    )?;
    let pid = envoy.pid().ok_or("Envoy has no pid")?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("<{e}>"));
    let version = envoy_version(&envoy);
    let addr = envoy.listener_addr();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let per_client = f64::from(options.rps) / options.clients.max(1) as f64;
    let started = Instant::now();
    let mut samples = vec![take_sample(&envoy, pid, Duration::ZERO, &tally)?];
    let mut handles: Vec<_> = (0..options.clients.max(1))
        .map(|i| {
            let (stop, tally) = (stop.clone(), tally.clone());
            std::thread::Builder::new()
                .name(format!("soak-client-{i}"))
                .spawn(move || client_loop(i, addr, per_client, stop, tally))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| format!("spawning a client: {e}"))?;
    let mut client_errors = Vec::new();
    let mut stop_clients = |handles: &mut Vec<std::thread::JoinHandle<Result<(), String>>>| {
        stop.store(true, Ordering::Relaxed);
        for handle in handles.drain(..) {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => client_errors.push(e),
                Err(_) => client_errors.push("a client thread panicked".into()),
            }
        }
    };

    let mut next_sample = options.sample_every;
    let mut sampling_error = None;
    loop {
        let last = next_sample >= options.duration;
        let wait = next_sample
            .min(options.duration)
            .saturating_sub(started.elapsed());
        std::thread::sleep(wait);
        let at = started.elapsed();
        if last {
            // The last sample comes once the clients stopped (Envoy updates
            // stats after the response), so its counters and the clients'
            // tally describe the same requests.
            stop_clients(&mut handles);
            std::thread::sleep(Duration::from_millis(500));
        }
        match take_sample(&envoy, pid, at, &tally) {
            Ok(sample) => {
                let s = &sample;
                eprintln!(
                    "soak: {:>5.0} s  rss {:>6.1} MiB  answered {:>8}  aborted {:>6}  unexpected {}  leaks {}",
                    s.at.as_secs_f64(),
                    s.rss_kib as f64 / 1024.0,
                    s.tally.answered,
                    s.tally.aborted,
                    s.tally.unexpected,
                    s.tally.leaks
                );
                samples.push(sample);
            }
            Err(e) => {
                sampling_error = Some(e);
                break;
            }
        }
        if last {
            break;
        }
        next_sample += options.sample_every;
    }
    stop_clients(&mut handles);
    let final_tally = tally.lock().map_err(|_| "tally lock poisoned")?.clone();
    let log = envoy.log();
    drop(envoy);
    drop(upstream);

    let mut verdict = judge(options, &samples, &final_tally);
    if let Some(e) = sampling_error {
        verdict.push(format!("sampling stopped: {e}"));
    }
    verdict.extend(client_errors.into_iter().map(|e| format!("client: {e}")));
    let setup = Setup {
        version,
        exe,
        module,
        chain,
    };
    std::fs::create_dir_all(&options.out).map_err(|e| format!("{}: {e}", options.out.display()))?;
    let report = options.out.join("SOAK.md");
    let plot = options.out.join("soak.svg");
    std::fs::write(&plot, svg(&samples, options))
        .map_err(|e| format!("{}: {e}", plot.display()))?;
    let markdown = markdown(options, &setup, &samples, &final_tally, &verdict, &log);
    std::fs::write(&report, markdown).map_err(|e| format!("{}: {e}", report.display()))?;
    Ok(Outcome {
        passed: verdict.is_empty(),
        failures: verdict,
        report,
        plot,
    })
}

fn envoy_version(envoy: &Envoy) -> String {
    envoy
        .admin_request("GET", "/server_info")
        .ok()
        .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
        .and_then(|v| v["version"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{} (version unknown)", envoy_bin().display()))
}

fn take_sample(
    envoy: &Envoy,
    pid: u32,
    at: Duration,
    tally: &Mutex<Tally>,
) -> Result<Sample, String> {
    let rss_kib = rss_kib(pid)?;
    let stats = match envoy.admin_request("GET", "/stats") {
        Ok((200, body)) => parse_stats(&body),
        other => return Err(format!("admin /stats: {other:?}")),
    };
    let tally = tally.lock().map_err(|_| "tally lock poisoned")?.clone();
    Ok(Sample {
        at,
        rss_kib,
        tally,
        stats,
    })
}

/// RSS growth in KiB per answered request, fitted over `samples` by least
/// squares: finer than the 10% rule, which a slow leak takes long to cross.
fn rss_slope(samples: &[Sample]) -> Option<f64> {
    let n = samples.len() as f64;
    if samples.len() < 3 {
        return None;
    }
    let xs: Vec<f64> = samples.iter().map(|s| s.tally.answered as f64).collect();
    let ys: Vec<f64> = samples.iter().map(|s| s.rss_kib as f64).collect();
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// The first sample at or after the warm-up: the RSS baseline.
fn baseline(options: &Options, samples: &[Sample]) -> Option<usize> {
    samples.iter().position(|s| s.at >= options.warmup)
}

/// The failed checks, empty when the soak passed.
fn judge(options: &Options, samples: &[Sample], tally: &Tally) -> Vec<String> {
    let mut failures = Vec::new();
    match baseline(options, samples) {
        Some(b) => {
            let base = samples[b].rss_kib as f64;
            if let Some(peak) = samples[b..].iter().max_by_key(|s| s.rss_kib) {
                let growth = peak.rss_kib as f64 / base - 1.0;
                if growth > RSS_GROWTH_LIMIT {
                    failures.push(format!(
                        "RSS grew {:.1}% after warm-up ({:.1} MiB at {:.0} s to {:.1} MiB at {:.0} s; limit {:.0}%)",
                        growth * 100.0,
                        base / 1024.0,
                        samples[b].at.as_secs_f64(),
                        peak.rss_kib as f64 / 1024.0,
                        peak.at.as_secs_f64(),
                        RSS_GROWTH_LIMIT * 100.0
                    ));
                }
            }
            // The VM's life after warm-up: no VM created, failed or reloaded,
            // at any sample (a reload between two samples still moves `created`).
            let warm = &samples[b].stats;
            let mut changed = BTreeMap::new();
            for s in &samples[b + 1..] {
                for (name, value) in s.stats.iter().filter(|(n, _)| is_vm_stat(n)) {
                    let before = warm.get(name).copied().unwrap_or(0);
                    if *value != before {
                        changed
                            .entry(name.clone())
                            .or_insert((before, *value, s.at));
                    }
                }
            }
            for (name, (before, value, at)) in changed {
                failures.push(format!(
                    "{name} went from {before} to {value} at {:.0} s, after warm-up (a VM created, failed or reloaded)",
                    at.as_secs_f64()
                ));
            }
        }
        None => failures.push(format!(
            "no sample after the warm-up ({:.0} s): the run was too short",
            options.warmup.as_secs_f64()
        )),
    }
    if let Some(last) = samples.last() {
        for (name, value) in &last.stats {
            let failure = name.contains("wasm")
                && !name.starts_with("wasmcustom.")
                && (name.contains("fail") || name.contains("crash") || name.contains("reload"));
            if failure && *value > 0 {
                failures.push(format!("{name} = {value}"));
            }
        }
        if family(&last.stats, "wasmcustom.palisade.ratelimit.evicted") == 0 {
            failures
                .push("the key table never evicted: the flood of new keys did not reach it".into());
        }
    }
    if tally.unexpected > 0 {
        failures.push(format!(
            "{} answers outside their kind's designed statuses: {}",
            tally.unexpected,
            tally.unexpected_examples.join(" | ")
        ));
    }
    if tally.leaks > 0 {
        failures.push(format!(
            "{} 5xx bodies leaked a stack trace: {}",
            tally.leaks,
            tally.leak_examples.join(" | ")
        ));
    }
    if tally.transport_errors > 0 {
        failures.push(format!(
            "{} requests got no answer: {}",
            tally.transport_errors,
            tally.transport_examples.join(" | ")
        ));
    }
    for (kind, _) in MIX.iter().filter(|(k, _)| !k.aborts()) {
        if tally.by_kind.get(kind).is_none_or(|(n, _)| *n == 0) {
            failures.push(format!("no `{}` request was answered", kind.name()));
        }
    }
    if tally.scanned_5xx == 0 {
        failures.push("no 5xx answer was scanned for leaks".into());
    }
    failures
}

/// What the report says about the setup.
struct Setup {
    version: String,
    exe: String,
    module: PathBuf,
    chain: Value,
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn markdown(
    options: &Options,
    setup: &Setup,
    samples: &[Sample],
    tally: &Tally,
    failures: &[String],
    log: &str,
) -> String {
    let mut md = String::new();
    let secs = options.duration.as_secs_f64();
    let verdict = if failures.is_empty() { "PASS" } else { "FAIL" };
    let _ = writeln!(md, "# Soak: the whole chain in `palisade.wasm` on Envoy\n");
    let _ = writeln!(
        md,
        "**Verdict: {verdict}** ({secs:.0} s, {} requests answered, {} aborted on purpose).\n",
        tally.answered, tally.aborted
    );
    let _ = writeln!(
        md,
        "Written by `make soak` (tests/src/soak.rs); do not edit by hand.\n"
    );
    md.push_str(HOW);
    let _ = writeln!(md, "\n## Setup\n");
    let module = std::fs::read(&setup.module).unwrap_or_default();
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| Envoy | {} |", setup.version);
    let _ = writeln!(
        md,
        "| process sampled | `{}` (the binary itself, not a wrapper) |",
        setup.exe
    );
    let _ = writeln!(
        md,
        "| module | `{}` (Palisade {}), {} bytes, sha256 `{}`; `FAIL_RELOAD`, `allow_on_headers_stop_iteration` |",
        display_path(&setup.module),
        env!("CARGO_PKG_VERSION"),
        module.len(),
        sha256_hex(&module)
    );
    let _ = writeln!(md, "| `--concurrency` | {} |", options.concurrency);
    let _ = writeln!(
        md,
        "| duration | {secs:.0} s, a sample every {} s |",
        options.sample_every.as_secs()
    );
    let _ = writeln!(
        md,
        "| warm-up | the first {:.0} s ({:.0}% of the run) |",
        options.warmup.as_secs_f64(),
        options.warmup.as_secs_f64() * 100.0 / secs.max(1.0)
    );
    let _ = writeln!(
        md,
        "| clients | {} threads, keep-alive HTTP/1.1, aiming at {} requests/s in total |",
        options.clients, options.rps
    );
    let achieved = (tally.answered + tally.aborted) as f64 / secs.max(1.0);
    let _ = writeln!(
        md,
        "| achieved | {achieved:.0} requests/s (answered and aborted) |"
    );
    let _ = writeln!(
        md,
        "| resent | {} requests sent again on a new connection: Envoy had closed the kept-alive one |",
        tally.resent
    );
    let _ = writeln!(
        md,
        "| machine | {} CPUs, shared with other jobs |",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );

    let _ = writeln!(md, "\n### The mix\n");
    let total_weight: u32 = MIX.iter().map(|(_, w)| w).sum();
    let _ = writeln!(md, "| kind | share | request | designed | answered | statuses seen |\n|---|---|---|---|---|---|");
    for (kind, weight) in MIX {
        let designed = if kind.aborts() {
            "no status (aborted)".to_string()
        } else {
            kind.expected()
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (answered, seen) = match tally.by_kind.get(kind) {
            Some((n, statuses)) => (
                n.to_string(),
                statuses
                    .iter()
                    .map(|(s, n)| format!("{s}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            None if kind.aborts() => ("–".into(), "–".into()),
            None => ("0".into(), String::new()),
        };
        let _ = writeln!(
            md,
            "| `{}` | {:.0}% | {} | {designed} | {answered} | {seen} |",
            kind.name(),
            f64::from(*weight) * 100.0 / f64::from(total_weight),
            kind.what()
        );
    }
    let _ = writeln!(
        md,
        "\nDesigned statuses, all kinds: {}; an aborted request has none.",
        designed_statuses()
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        md,
        "\n### The chain\n\nOne route, all five controls, outermost first (JWKS shortened):\n"
    );
    let mut chain = setup.chain.clone();
    chain["filters"]["jwt"]["providers"]["corp"]["local_jwks"] =
        json!({"keys": ["<rsa1 of filters/jwt/tests/fixtures>"]});
    let _ = writeln!(
        md,
        "```json\n{}\n```",
        serde_json::to_string_pretty(&chain).unwrap_or_default()
    );

    let _ = writeln!(md, "\n## Samples\n");
    let _ = writeln!(md, "RSS is `VmRSS` of the Envoy process; requests and statuses are what the clients saw so far; the counters are Envoy's (`wasmcustom.palisade.*`, summed over their labels) and its wasm runtime's.\n");
    let mut header = "| time s | RSS MiB | answered | req/s | aborted | statuses |".to_string();
    let mut rule = "|---|---|---|---|---|---|".to_string();
    for (_, title) in KEY_COUNTERS {
        header.push_str(&format!(" {title} |"));
        rule.push_str("---|");
    }
    header.push_str(" VMs active | VMs created | VM reloads |");
    rule.push_str("---|---|---|");
    let _ = writeln!(md, "{header}\n{rule}");
    let runtime = |s: &Sample, suffix: &str| {
        s.stats
            .iter()
            .filter(|(k, _)| k.starts_with("wasm.envoy.wasm.runtime.") && k.ends_with(suffix))
            .map(|(_, v)| v)
            .sum::<u64>()
    };
    for (i, s) in samples.iter().enumerate() {
        let rate = match i.checked_sub(1).map(|p| &samples[p]) {
            Some(p) => {
                let dt = (s.at - p.at).as_secs_f64().max(0.001);
                format!("{:.0}", (s.tally.answered - p.tally.answered) as f64 / dt)
            }
            None => "–".into(),
        };
        let statuses = s
            .tally
            .by_status
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut row = format!(
            "| {:.0} | {} | {} | {rate} | {} | {statuses} |",
            s.at.as_secs_f64(),
            mib(s.rss_kib),
            s.tally.answered,
            s.tally.aborted
        );
        for (name, _) in KEY_COUNTERS {
            row.push_str(&format!(" {} |", family(&s.stats, name)));
        }
        let reloads: u64 = s
            .stats
            .iter()
            .filter(|(k, _)| k.starts_with("wasm.") && k.ends_with(".vm_reload_success"))
            .map(|(_, v)| v)
            .sum();
        row.push_str(&format!(
            " {} | {} | {reloads} |",
            runtime(s, ".active"),
            runtime(s, ".created")
        ));
        let _ = writeln!(md, "{row}");
    }
    if let (Some(first), Some(b), Some(last)) =
        (samples.first(), baseline(options, samples), samples.last())
    {
        let base = &samples[b];
        let peak = samples[b..]
            .iter()
            .map(|s| s.rss_kib)
            .max()
            .unwrap_or(base.rss_kib);
        let _ = writeln!(
            md,
            "\nRSS: {} MiB at start (before traffic), {} MiB after warm-up ({:.0} s, the baseline), {} MiB at the end; peak after warm-up {} MiB ({:+.1}% of the baseline; the limit is +{:.0}%).",
            mib(first.rss_kib),
            mib(base.rss_kib),
            base.at.as_secs_f64(),
            mib(last.rss_kib),
            mib(peak),
            (peak as f64 / base.rss_kib.max(1) as f64 - 1.0) * 100.0,
            RSS_GROWTH_LIMIT * 100.0
        );
        if let Some(slope) = rss_slope(&samples[b..]) {
            let _ = writeln!(
                md,
                "The least-squares slope of RSS over requests answered after warm-up: {:+.1} KiB per 10,000 requests (a leak of 100 bytes a request would be about +977).",
                slope * 10_000.0
            );
        }
    }
    let _ = writeln!(md, "\n![RSS and request rate over time](soak.svg)\n");

    if let Some(last) = samples.last() {
        let _ = writeln!(
            md,
            "## Counters at the end\n\nRead once the clients had stopped, so they count the same requests as the mix table.\n"
        );
        let _ = writeln!(md, "| counter | value |\n|---|---|");
        for (name, value) in last
            .stats
            .iter()
            .filter(|(n, _)| n.starts_with("wasmcustom.palisade.") || is_vm_stat(n))
        {
            if *value > 0 || is_vm_stat(name) {
                let _ = writeln!(md, "| `{name}` | {value} |");
            }
        }
        let _ = writeln!(
            md,
            "\nZero-valued palisade counters are left out. Envoy's HTTP view of the same run: {}; the clients counted {} answers, {} of them 413, and {} aborts.",
            [
                "http.ingress.downstream_rq_completed",
                "http.ingress.downstream_cx_destroy_remote_active_rq",
                "http.ingress.downstream_rq_rx_reset",
                "cluster.echo.upstream_rq_completed",
                "cluster.echo.upstream_cx_destroy_local_with_active_rq",
            ]
            .iter()
            .filter_map(|n| last.stats.get(*n).map(|v| format!("`{n}` {v}")))
            .collect::<Vec<_>>()
            .join(", "),
            tally.answered,
            tally.by_status.get(&413).copied().unwrap_or(0),
            tally.aborted
        );
    }

    let _ = writeln!(md, "\n## Verdict: {verdict}\n");
    if failures.is_empty() {
        let _ = writeln!(md, "Every check held: RSS within +{:.0}% of the baseline after warm-up, every answer within its kind's designed statuses, no stack trace in {} scanned 5xx bodies, every request answered, the wasm runtime's VM stats unchanged after warm-up and no wasm failure counter, and the key table evicted under the flood.", RSS_GROWTH_LIMIT * 100.0, tally.scanned_5xx);
    } else {
        for f in failures {
            let _ = writeln!(md, "- {f}");
        }
    }
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[error]") || l.contains("[critical]"))
        .take(EXAMPLES)
        .collect();
    if !warnings.is_empty() {
        let _ = writeln!(
            md,
            "\nEnvoy logged errors (first {}):\n\n```text\n{}\n```",
            warnings.len(),
            warnings.join("\n")
        );
    }
    md
}

fn display_path(p: &Path) -> String {
    p.strip_prefix(repo_root())
        .map(|r| r.display().to_string())
        .unwrap_or_else(|_| p.display().to_string())
}

/// How to run the soak and what it checks (the report's fixed part).
const HOW: &str = "## How to run, what it checks

```sh
make soak                  # 600 s; builds dist/ and installs Envoy first
make soak SOAK_S=120       # shorter
ENVOY_BIN=/path/to/envoy SOAK_DIST=/path/to/dist SOAK_OUT=/tmp/soak \\
  cargo run -p palisade-tests --bin soak   # what `make soak` runs, without the build
```

Knobs (environment or make variables): `SOAK_S` (600), `SOAK_SAMPLE_S` (10),
`SOAK_RPS` (300, total), `SOAK_CLIENTS` (4), `SOAK_DIST` (`dist`), `SOAK_OUT`
(`benches`). `cargo test -p palisade-tests --test soak` runs a 16 s version
(part of `make test`) so the soak cannot rot.

Envoy runs `palisade.wasm` with the chain below on 127.0.0.1 (free ports),
an echo upstream behind it; client threads send the mix below over
keep-alive connections for the whole run. Every sample reads `VmRSS` of the
Envoy process and its admin `/stats`. It fails (exit status 1, reasons
below) when:

- **memory**: RSS rises more than 10% above the baseline, the first sample
  after the warm-up (the first 20% of the run: V8 compiles and tiers up the
  module, the token cache and the rate-limit table fill);
- **statuses**: an answer falls outside its kind's designed statuses (table
  below), or a request that was not aborted gets no answer;
- **leaks**: a 5xx body contains a stack-trace marker (`Exception`,
  `\\tat `, `.java:`, `Traceback`, `File \"/`, `ZeroDivisionError`);
- **VMs**: a wasm VM stat changes after the warm-up
  (`wasm.envoy.wasm.runtime.v8.created` and `.active`, `wasm.wasm_vm_count`,
  `wasm.palisade.vm_reload`, `_success`, `_failure`, `_backoff`), or a wasm
  stat naming a failure, crash or reload is non-zero. Under `FAIL_RELOAD` a
  VM that trapped is replaced when the next request comes after the backoff:
  `v8.created` and `wasm.<plugin>.vm_reload_success` go up by one while
  `v8.active` stays where it was (seen on Envoy 1.40 with the trap fixture of
  `make test-fixtures`), so `active` alone would not show a reload;
- **coverage**: a kind of request never got an answer, no 5xx was scanned,
  or the rate-limit key table never evicted (the flood missed it).
";

/// RSS and request rate over time, two panels sharing the time axis.
fn svg(samples: &[Sample], options: &Options) -> String {
    let (w, h) = (800.0, 460.0);
    let (left, right) = (70.0, 20.0);
    let panels = [(30.0, 180.0), (260.0, 180.0)];
    let t_max = options.duration.as_secs_f64().max(1.0);
    let x = |t: f64| left + (w - left - right) * t / t_max;
    let rss: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| (s.at.as_secs_f64(), s.rss_kib as f64 / 1024.0))
        .collect();
    let rate: Vec<(f64, f64)> = samples
        .windows(2)
        .map(|p| {
            let dt = (p[1].at - p[0].at).as_secs_f64().max(0.001);
            (
                p[1].at.as_secs_f64(),
                (p[1].tally.answered - p[0].tally.answered) as f64 / dt,
            )
        })
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let series = [
        ("Envoy RSS (MiB)", &rss, "#c0392b", true),
        ("answered requests/s", &rate, "#2471a3", false),
    ];
    for ((title, points, color, show_warmup), (top, height)) in series.iter().zip(panels) {
        let max = points.iter().map(|p| p.1).fold(0.0f64, f64::max);
        let y_max = nice_ceiling(max * 1.1);
        let y = |v: f64| top + height - height * v / y_max;
        let bottom = top + height;
        let _ = writeln!(
            out,
            r##"<text x="{left}" y="{}" font-weight="bold">{title}</text>"##,
            top - 8.0
        );
        let _ = writeln!(
            out,
            r##"<polyline points="{left},{top} {left},{bottom} {},{bottom}" fill="none" stroke="#333"/>"##,
            w - right
        );
        for i in 0..=5 {
            let v = y_max * f64::from(i) / 5.0;
            let _ = writeln!(
                out,
                r##"<line x1="{left}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{v:.0}</text>"##,
                y(v),
                w - right,
                left - 6.0,
                y(v) + 4.0
            );
        }
        for i in 0..=6 {
            let t = t_max * f64::from(i) / 6.0;
            let _ = writeln!(
                out,
                r##"<line x1="{0:.1}" y1="{bottom}" x2="{0:.1}" y2="{1}" stroke="#333"/><text x="{0:.1}" y="{2}" text-anchor="middle">{t:.0} s</text>"##,
                x(t),
                bottom + 4.0,
                bottom + 16.0
            );
        }
        if *show_warmup {
            let end = x(options.warmup.as_secs_f64());
            let _ = writeln!(
                out,
                r##"<rect x="{left}" y="{top}" width="{:.1}" height="{height}" fill="#eee" opacity="0.6"/><text x="{:.1}" y="{:.1}">warm-up</text>"##,
                end - left,
                left + 4.0,
                top + 14.0
            );
            if let Some(b) = baseline(options, samples) {
                let limit = samples[b].rss_kib as f64 / 1024.0 * (1.0 + RSS_GROWTH_LIMIT);
                let _ = writeln!(
                    out,
                    r##"<line x1="{end:.1}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#c0392b" stroke-dasharray="4 3"/><text x="{1}" y="{2:.1}" text-anchor="end" fill="#c0392b">+10% limit</text>"##,
                    y(limit.min(y_max)),
                    w - right,
                    y(limit.min(y_max)) - 4.0
                );
            }
        }
        let points: Vec<String> = points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        let _ = writeln!(
            out,
            r##"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"##,
            points.join(" ")
        );
    }
    out.push_str("</svg>\n");
    out
}

/// A round number at or above `v` for an axis's top.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= v {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_draws_every_kind() {
        let mut rng = Rng::seeded(0);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..10_000 {
            seen.insert(rng.kind());
        }
        assert_eq!(seen.len(), MIX.len());
    }

    #[test]
    fn stats_parse_skips_histograms() {
        let stats =
            parse_stats("a.b: 3\nwasm.envoy.wasm.runtime.v8.active: 2\nh: P0(nan,1) P25(nan,2)\n");
        assert_eq!(stats.get("a.b"), Some(&3));
        assert_eq!(stats.get("h"), None);
        assert!(is_vm_stat("wasm.envoy.wasm.runtime.v8.active"));
        assert!(!is_vm_stat("wasmcustom.palisade.jwt.allowed"));
    }

    /// A clean run: every kind answered, evictions, stable memory and VMs.
    fn clean_run() -> (Options, Vec<Sample>, Tally) {
        let mut options = Options::new(Duration::from_secs(100));
        options.sample_every = Duration::from_secs(10);
        let mut tally = Tally::default();
        for (kind, _) in MIX.iter().filter(|(k, _)| !k.aborts()) {
            let status = kind.expected()[0];
            let body = if status >= 500 {
                "{\"status\": 500}"
            } else {
                "{}"
            };
            let raw = format!(
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            tally.record(
                *kind,
                Ok(parse_response(raw.as_bytes(), false, true).unwrap()),
            );
        }
        let stats = parse_stats(
            "wasm.envoy.wasm.runtime.v8.active: 4\nwasm.envoy.wasm.runtime.v8.created: 5\n\
             wasm.palisade.vm_reload: 0\nwasmcustom.palisade.ratelimit.evicted: 9\n",
        );
        let samples = (0..=10)
            .map(|i| Sample {
                at: Duration::from_secs(i * 10),
                rss_kib: 200 * 1024 + i,
                tally: tally.clone(),
                stats: stats.clone(),
            })
            .collect();
        (options, samples, tally)
    }

    #[test]
    fn a_clean_run_passes() {
        let (options, samples, tally) = clean_run();
        assert_eq!(judge(&options, &samples, &tally), Vec::<String>::new());
    }

    #[test]
    fn growth_after_warm_up_fails_but_growth_during_it_does_not() {
        let (options, mut samples, tally) = clean_run();
        // Warm-up is the first 20 s: growth up to the baseline is not judged.
        samples[0].rss_kib = 100 * 1024;
        assert!(judge(&options, &samples, &tally).is_empty());
        samples[7].rss_kib = 221 * 1024;
        let failures = judge(&options, &samples, &tally);
        assert!(
            failures[0].starts_with("RSS grew 10.5% after warm-up"),
            "{failures:?}"
        );
    }

    #[test]
    fn a_vm_created_or_reloaded_after_warm_up_fails() {
        let (options, mut samples, tally) = clean_run();
        samples[1]
            .stats
            .insert("wasm.envoy.wasm.runtime.v8.created".into(), 6);
        assert!(
            judge(&options, &samples, &tally).is_empty(),
            "during warm-up"
        );
        samples[5]
            .stats
            .insert("wasm.envoy.wasm.runtime.v8.created".into(), 7);
        let failures = judge(&options, &samples, &tally);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains("v8.created went from 5 to 7 at 50 s"));

        let (options, mut samples, tally) = clean_run();
        samples[10]
            .stats
            .insert("wasm.palisade.vm_reload".into(), 1);
        let failures = judge(&options, &samples, &tally);
        assert!(
            failures.iter().any(|f| f == "wasm.palisade.vm_reload = 1"),
            "{failures:?}"
        );
    }

    #[test]
    fn undesigned_statuses_leaks_and_silence_fail() {
        let (options, samples, mut tally) = clean_run();
        let answer = |raw: &str| Ok(parse_response(raw.as_bytes(), false, true).unwrap());
        tally.record(
            Kind::Valid,
            answer("HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n"),
        );
        tally.record(
            Kind::Java500,
            answer("HTTP/1.1 500 X\r\ncontent-length: 20\r\n\r\n\tat com.example.A.b("),
        );
        tally.record(Kind::Valid, Err("read: connection reset".into()));
        let failures = judge(&options, &samples, &tally);
        assert_eq!(failures.len(), 3, "{failures:?}");
        assert!(
            failures[0].starts_with("1 answers outside") && failures[0].contains("valid got 502")
        );
        assert!(
            failures[1].starts_with("1 5xx bodies leaked") && failures[1].contains("\"\\tat \"")
        );
        assert!(failures[2].starts_with("1 requests got no answer"));
    }

    #[test]
    fn the_slope_is_kib_per_request() {
        let (_, mut samples, _) = clean_run();
        for (i, s) in samples.iter_mut().enumerate() {
            s.tally.answered = i as u64 * 1000;
            s.rss_kib = 1000 + i as u64 * 50;
        }
        let slope = rss_slope(&samples).unwrap();
        assert!((slope - 0.05).abs() < 1e-9, "{slope}");
        assert_eq!(rss_slope(&samples[..2]), None);
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(87.0), 100.0);
        assert_eq!(nice_ceiling(130.0), 200.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
    }
}
