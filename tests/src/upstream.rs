//! The echo upstream: a real HTTP/1.1 server (hyper) behind the test Envoy.
//!
//! By default it answers 200 `application/json` describing the request it received
//! (`{"method","path","headers":{name:[values]},"body","body_len"}`), so a test sees what
//! Envoy and the filters forwarded. A test changes the answer either with request
//! headers (which the filters under test may strip) or programmatically with
//! `Upstream::respond`:
//!
//! | request header | effect |
//! |---|---|
//! | `x-echo-status: 503` | response status |
//! | `x-echo-header: name: value` (repeatable) | adds a response header (replaces defaults of that name) |
//! | `x-echo-body: text` | literal body |
//! | `x-echo-body-kind: java-stack \| python-stack \| huge:<bytes> \| chunked:<n>x<bytes> \| slow:<n>x<ms> \| empty \| echo` | generated body, see `BodyKind` |
//! | `x-echo-delay-ms: 2000` | waits before sending the response head |
//! | `x-echo-gzip: if-accepted` | gzips a complete body when the request's `accept-encoding` allows gzip, as real servers do |
//!
//! Headers win over a canned response for the same request. Compression runs
//! the system's `gzip` (Debian's essential set), so the harness needs no
//! compression crate and the bytes are what a real server tool writes.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

/// How many received requests are kept for `Upstream::received`.
const KEEP_RECEIVED: usize = 256;

/// A Java exception as an application server would leak it in a 500 body.
pub const JAVA_STACK: &str = "java.lang.NullPointerException: Cannot invoke \"String.length()\" because \"name\" is null
\tat com.example.orders.OrderValidator.validate(OrderValidator.java:42)
\tat com.example.orders.OrderService.create(OrderService.java:117)
\tat com.example.orders.OrderController.post(OrderController.java:58)
\tat java.base/jdk.internal.reflect.DirectMethodHandleAccessor.invoke(DirectMethodHandleAccessor.java:103)
\tat org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:885)
\tat org.apache.catalina.core.ApplicationFilterChain.doFilter(ApplicationFilterChain.java:166)
\tat java.base/java.lang.Thread.run(Thread.java:1583)
";

/// A Python traceback as a web framework in debug mode would leak it in a 500 body.
pub const PYTHON_STACK: &str = "Traceback (most recent call last):
  File \"/srv/app/views.py\", line 42, in create_order
    total = compute_total(order)
  File \"/srv/app/billing.py\", line 17, in compute_total
    return sum(item.price for item in order.items) / order.count
ZeroDivisionError: division by zero
";

/// What body the echo upstream sends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BodyKind {
    /// The JSON description of the request (`application/json`).
    #[default]
    Echo,
    /// No body.
    Empty,
    /// These bytes.
    Literal(Vec<u8>),
    /// `JAVA_STACK` (`text/plain`, status 500 unless set).
    JavaStack,
    /// `PYTHON_STACK` (`text/plain`, status 500 unless set).
    PythonStack,
    /// `huge_body(n)` with a content-length.
    Huge(usize),
    /// `huge_body(chunks * size)` sent with chunked transfer encoding, `chunks` frames.
    Chunked {
        /// Number of chunks.
        chunks: usize,
        /// Bytes per chunk.
        size: usize,
    },
    /// `chunks` chunks `"chunk <i>\n"`, chunked, with `delay` before each one after the first.
    Slow {
        /// Number of chunks.
        chunks: usize,
        /// Pause between chunks.
        delay: Duration,
    },
}

impl FromStr for BodyKind {
    type Err = String;

    /// Parses the `x-echo-body-kind` syntax.
    fn from_str(s: &str) -> Result<BodyKind, String> {
        let s = s.trim();
        let (kind, arg) = s.split_once(':').unwrap_or((s, ""));
        let pair = |arg: &str| -> Result<(usize, usize), String> {
            let (a, b) = arg
                .split_once('x')
                .ok_or_else(|| format!("expected <n>x<m> in {s:?}"))?;
            let a = a.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
            let b = b.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
            Ok((a, b))
        };
        match kind.trim() {
            "echo" => Ok(BodyKind::Echo),
            "empty" => Ok(BodyKind::Empty),
            "java-stack" => Ok(BodyKind::JavaStack),
            "python-stack" => Ok(BodyKind::PythonStack),
            "huge" => arg
                .trim()
                .parse()
                .map(BodyKind::Huge)
                .map_err(|e| format!("{s:?}: {e}")),
            "chunked" => pair(arg).map(|(chunks, size)| BodyKind::Chunked { chunks, size }),
            "slow" => pair(arg).map(|(chunks, ms)| BodyKind::Slow {
                chunks,
                delay: Duration::from_millis(ms as u64),
            }),
            other => Err(format!("unknown x-echo-body-kind {other:?}")),
        }
    }
}

/// A programmed answer for requests whose path starts with a prefix.
#[derive(Clone, Debug, Default)]
pub struct Canned {
    /// Status; 0 means "the default" (200, or 500 for stack traces).
    pub status: u16,
    /// Response headers, in order (replacing defaults of the same name).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body_kind: BodyKind,
    /// Wait before sending the response head.
    pub delay: Option<Duration>,
    /// Gzip the body when the client accepts gzip (`content-encoding: gzip`).
    pub gzip_if_accepted: bool,
}

impl Canned {
    /// A canned answer with `status` and an echo body.
    pub fn status(status: u16) -> Canned {
        Canned {
            status,
            ..Canned::default()
        }
    }

    /// Adds a response header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Canned {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, kind: BodyKind) -> Canned {
        self.body_kind = kind;
        self
    }

    /// Sets a delay before the response head.
    pub fn delay(mut self, delay: Duration) -> Canned {
        self.delay = Some(delay);
        self
    }

    /// Gzips the body when the request's `accept-encoding` allows it.
    pub fn gzip_if_accepted(mut self) -> Canned {
        self.gzip_if_accepted = true;
        self
    }
}

/// A request as the upstream received it (after Envoy and the filters).
#[derive(Clone, Debug)]
pub struct Received {
    /// Method.
    pub method: String,
    /// Path and query exactly as on the request line.
    pub path: String,
    /// Headers in order, names lowercase, values decoded lossily as UTF-8.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Received {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All values of header `name` (case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The echo JSON for this request.
    pub fn to_json(&self) -> Value {
        let mut headers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (n, v) in &self.headers {
            headers.entry(n).or_default().push(v);
        }
        json!({
            "method": self.method,
            "path": self.path,
            "headers": headers,
            "body": String::from_utf8_lossy(&self.body),
            "body_len": self.body.len(),
        })
    }
}

#[derive(Default)]
struct State {
    received: Mutex<VecDeque<Received>>,
    canned: Mutex<Vec<(String, Canned)>>,
}

/// The echo server; it stops when dropped.
pub struct Upstream {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Starts the server on a fresh 127.0.0.1 port, on its own thread and tokio runtime
    /// (so tests stay plain blocking `#[test]`s).
    pub fn start() -> Upstream {
        let listener =
            std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("listener address");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let state = Arc::new(State::default());
        let (shutdown, shutdown_rx) = oneshot::channel();
        let thread_state = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("echo-upstream-{}", addr.port()))
            .spawn(move || serve(listener, thread_state, shutdown_rx))
            .expect("spawn upstream thread");
        Upstream {
            addr,
            state,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:<port><path>`, to talk to it without Envoy.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Answers requests whose path starts with `path_prefix` with `canned` (the most
    /// recently added matching prefix wins). For tests whose filters strip `x-echo-*`.
    pub fn respond(&self, path_prefix: impl Into<String>, canned: Canned) {
        self.state
            .canned
            .lock()
            .expect("canned lock")
            .push((path_prefix.into(), canned));
    }

    /// Forgets all canned answers.
    pub fn clear_responses(&self) {
        self.state.canned.lock().expect("canned lock").clear();
    }

    /// The requests received so far (the last 256), oldest first.
    pub fn received(&self) -> Vec<Received> {
        let received = self.state.received.lock().expect("received lock");
        received.iter().cloned().collect()
    }

    /// The most recent request, if any.
    pub fn last(&self) -> Option<Received> {
        let received = self.state.received.lock().expect("received lock");
        received.back().cloned()
    }

    /// Forgets the received requests.
    pub fn clear_received(&self) {
        self.state.received.lock().expect("received lock").clear();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: std::net::TcpListener, state: Arc<State>, mut shutdown: oneshot::Receiver<()>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("echo upstream: no tokio runtime: {e}");
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("echo upstream: cannot use listener: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let state = state.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| handle(req, state.clone()));
                        // Envoy forwards up to 100 client headers plus its own.
                        let _ = http1::Builder::new()
                            .max_headers(1000)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        }
    });
    // Dropping the runtime cancels connections still open.
}

/// What the response will be, resolved from canned answers and `x-echo-*` headers.
#[derive(Default)]
struct Plan {
    status: u16,
    headers: Vec<(String, String)>,
    body_kind: BodyKind,
    literal: Option<Vec<u8>>,
    delay: Option<Duration>,
    /// Gzip the body: asked for, and the client accepts gzip.
    gzip: bool,
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    state: Arc<State>,
) -> Result<Response<EchoBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(e) => return Ok(plain(400, &format!("echo upstream: reading body: {e}"))),
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| parts.uri.to_string());
    let received = Received {
        method: parts.method.as_str().to_string(),
        path: path.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    let echo = received.to_json();
    {
        let mut log = state.received.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() == KEEP_RECEIVED {
            log.pop_front();
        }
        log.push_back(received.clone());
    }

    let plan = match plan(&received, &state) {
        Ok(p) => p,
        Err(e) => return Ok(plain(400, &format!("echo upstream: {e}"))),
    };
    if let Some(delay) = plan.delay {
        tokio::time::sleep(delay).await;
    }
    Ok(build(plan, &echo))
}

fn plan(req: &Received, state: &State) -> Result<Plan, String> {
    let mut plan = Plan::default();
    {
        let canned = state.canned.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = canned
            .iter()
            .rev()
            .find(|(prefix, _)| req.path.starts_with(prefix.as_str()))
        {
            plan.status = c.status;
            plan.headers = c.headers.clone();
            plan.body_kind = c.body_kind.clone();
            plan.delay = c.delay;
            plan.gzip = c.gzip_if_accepted;
        }
    }
    if let Some(v) = req.header("x-echo-gzip") {
        if v.trim() != "if-accepted" {
            return Err(format!("bad x-echo-gzip {v:?}: expected `if-accepted`"));
        }
        plan.gzip = true;
    }
    plan.gzip = plan.gzip && accepts_gzip(req.header_all("accept-encoding"));
    if let Some(s) = req.header("x-echo-status") {
        plan.status = s
            .trim()
            .parse()
            .map_err(|e| format!("bad x-echo-status {s:?}: {e}"))?;
    }
    let extra: Vec<(String, String)> = req
        .header_all("x-echo-header")
        .into_iter()
        .map(|h| {
            h.split_once(':')
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("bad x-echo-header {h:?}: expected `name: value`"))
        })
        .collect::<Result<_, _>>()?;
    plan.headers.extend(extra);
    if let Some(kind) = req.header("x-echo-body-kind") {
        plan.body_kind = kind.parse()?;
    }
    if let Some(body) = req.header("x-echo-body") {
        plan.literal = Some(body.as_bytes().to_vec());
    }
    if let Some(ms) = req.header("x-echo-delay-ms") {
        let ms: u64 = ms
            .trim()
            .parse()
            .map_err(|e| format!("bad x-echo-delay-ms {ms:?}: {e}"))?;
        plan.delay = Some(Duration::from_millis(ms));
    }
    Ok(plan)
}

/// Whether `accept-encoding` allows gzip (a `gzip` or `*` coding without `q=0`).
fn accepts_gzip(values: Vec<&str>) -> bool {
    values.iter().flat_map(|v| v.split(',')).any(|coding| {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or("").to_ascii_lowercase();
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        (name == "gzip" || name == "x-gzip" || name == "*") && !refused
    })
}

/// `bytes` through the system's `gzip -c -n`.
pub fn gzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    run_gzip(&["-c", "-n"], bytes)
}

/// `bytes` through the system's `gzip -d -c`: what a client would read.
pub fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    run_gzip(&["-d", "-c"], bytes)
}

fn run_gzip(args: &[&str], bytes: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("gzip")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run gzip: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("gzip has no stdin")?;
    let input = bytes.to_vec();
    // Written from another thread: a body bigger than the pipe would block.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child
        .wait_with_output()
        .map_err(|e| format!("gzip failed: {e}"))?;
    match writer.join() {
        Ok(Ok(())) if output.status.success() => Ok(output.stdout),
        _ => Err(format!("gzip failed: {}", output.status)),
    }
}

fn build(plan: Plan, echo: &Value) -> Response<EchoBody> {
    let kind = match plan.literal {
        Some(bytes) => BodyKind::Literal(bytes),
        None => plan.body_kind,
    };
    let (default_status, content_type, body) = match kind {
        BodyKind::Echo => (200, "application/json", EchoBody::full(echo.to_string())),
        BodyKind::Empty => (200, "text/plain", EchoBody::full(Vec::new())),
        BodyKind::Literal(b) => (200, "text/plain", EchoBody::full(b)),
        BodyKind::JavaStack => (500, "text/plain", EchoBody::full(JAVA_STACK)),
        BodyKind::PythonStack => (500, "text/plain", EchoBody::full(PYTHON_STACK)),
        BodyKind::Huge(n) => (
            200,
            "application/octet-stream",
            EchoBody::full(huge_body(n)),
        ),
        BodyKind::Chunked { chunks, size } => {
            let data = Bytes::from(huge_body(chunks * size));
            let parts = (0..chunks).map(|i| data.slice(i * size..(i + 1) * size));
            (
                200,
                "application/octet-stream",
                EchoBody::stream(parts.collect(), Duration::ZERO),
            )
        }
        BodyKind::Slow { chunks, delay } => {
            let parts = (0..chunks).map(|i| Bytes::from(format!("chunk {i}\n")));
            (200, "text/plain", EchoBody::stream(parts.collect(), delay))
        }
    };
    let status = if plan.status == 0 {
        default_status
    } else {
        plan.status
    };
    let mut response = Response::new(body);
    *response.status_mut() = match StatusCode::from_u16(status) {
        Ok(s) => s,
        Err(_) => return plain(400, &format!("echo upstream: bad status {status}")),
    };
    if plan.gzip {
        if let EchoBody::Full(Some(bytes)) = response.body_mut() {
            match gzip(bytes) {
                Ok(zipped) => *bytes = Bytes::from(zipped),
                Err(e) => return plain(500, &format!("echo upstream: {e}")),
            }
            response.headers_mut().insert(
                hyper::header::CONTENT_ENCODING,
                HeaderValue::from_static("gzip"),
            );
        }
        response.headers_mut().insert(
            hyper::header::VARY,
            HeaderValue::from_static("accept-encoding"),
        );
    }
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    let mut replaced: Vec<HeaderName> = Vec::new();
    for (name, value) in &plan.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            return plain(
                400,
                &format!("echo upstream: bad header {name:?}: {value:?}"),
            );
        };
        if !replaced.contains(&name) {
            headers.remove(&name);
            replaced.push(name.clone());
        }
        headers.append(name, value);
    }
    response
}

fn plain(status: u16, message: &str) -> Response<EchoBody> {
    let mut response = Response::new(EchoBody::full(message.to_string()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Deterministic pseudo-random bytes (xorshift64*), the content of `huge:` and
/// `chunked:` bodies, so tests can compare or hash what came through.
pub fn huge_body(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Lowercase hex SHA-256, to compare large bodies in assertion messages cheaply.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Response body: either complete (sent with content-length) or a stream of chunks fed
/// by a task (sent chunked, since its size is unknown).
enum EchoBody {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl EchoBody {
    fn full(bytes: impl Into<Bytes>) -> EchoBody {
        EchoBody::Full(Some(bytes.into()))
    }

    fn stream(chunks: Vec<Bytes>, delay: Duration) -> EchoBody {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            for (i, chunk) in chunks.into_iter().enumerate() {
                if i > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if tx.send(chunk).await.is_err() {
                    break; // the client went away
                }
            }
        });
        EchoBody::Stream(rx)
    }
}

impl Body for EchoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            EchoBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            EchoBody::Stream(rx) => rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, EchoBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            EchoBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            EchoBody::Full(None) => SizeHint::with_exact(0),
            EchoBody::Stream(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_kinds_parse() {
        assert_eq!("huge:10".parse(), Ok(BodyKind::Huge(10)));
        assert_eq!(
            "chunked:3x5".parse(),
            Ok(BodyKind::Chunked { chunks: 3, size: 5 })
        );
        assert_eq!(
            "slow:2x100".parse(),
            Ok(BodyKind::Slow {
                chunks: 2,
                delay: Duration::from_millis(100)
            })
        );
        assert!("huge:x".parse::<BodyKind>().is_err());
        assert!("nope".parse::<BodyKind>().is_err());
    }

    #[test]
    fn gzip_is_offered_only_where_accepted() {
        assert!(accepts_gzip(vec!["gzip, deflate, br"]));
        assert!(accepts_gzip(vec!["br;q=1.0, GZIP;q=0.5"]));
        assert!(accepts_gzip(vec!["*"]));
        assert!(!accepts_gzip(vec!["gzip;q=0", "br"]));
        assert!(!accepts_gzip(vec![]));
        let zipped = gzip(b"hello").expect("gzip");
        assert_eq!(&zipped[..2], &[0x1f, 0x8b]);
        assert_eq!(gunzip(&zipped).expect("gunzip"), b"hello");
        assert!(gunzip(b"not gzip").is_err());
    }

    #[test]
    fn huge_body_is_deterministic() {
        assert_eq!(huge_body(1000), huge_body(1000));
        assert_eq!(&huge_body(1000)[..10], &huge_body(10)[..]);
        assert_eq!(huge_body(3).len(), 3);
    }
}
