//! Fault injection against the real Envoy 1.40: the services the filters
//! call (a JWKS endpoint, a rate-limit service, Redis behind it), clients
//! and upstreams misbehave, and the filters must keep their documented
//! promises: the last good keys keep serving, `on_jwks_unavailable` and
//! `on_error` decide, failures are counted and backed off, no request
//! waits much past its deadline, and nothing stays held once a client or
//! an upstream goes away (Envoy's `downstream_rq_active` gauge returns to 0,
//! and later requests on the same Envoy are served normally).
//!
//! The misbehaving ends are small servers in this file: a raw HTTP/1.1
//! server whose answer is chosen per path prefix (good, a status, a huge
//! body, a connection dropped mid-body, a hang, raw bytes), and an HTTP/2
//! gRPC server standing for the RLS service, whose answer is chosen by the
//! limit name in the request (answer, hang, or bytes that are not a
//! `RateLimitResponse`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use palisade_tests::client::try_request;
use palisade_tests::jwt_fixtures::{jwks, token};
use palisade_tests::ratelimit_support::{
    cluster, clusters_extra, redis_available, Redis, RlsServer,
};
use palisade_tests::upstream::PYTHON_STACK;
use palisade_tests::*;
use serde_json::{json, Value};

const JWT: &str = "wasmcustom.palisade.jwt.";
const RL: &str = "wasmcustom.palisade.ratelimit.";
const ACTIVE: &str = "http.ingress.downstream_rq_active";
const WAIT: Duration = Duration::from_secs(5);
/// The bound for "never hangs": far above any deadline in these configs.
const BOUND: Duration = Duration::from_secs(8);
const ISSUER: &str = "https://id.example.com";

// ---------------------------------------------------------------------------
// A raw HTTP/1.1 server, its answer chosen per path prefix.

/// What the raw server does with a request.
#[derive(Clone, Debug)]
enum Fault {
    /// 200 `application/json` with this body.
    Good(Vec<u8>),
    /// This body after a pause (the head too waits).
    Slow(Duration, Vec<u8>),
    /// A status with this body.
    Status(u16, Vec<u8>),
    /// 200 with a body of this many bytes (not JSON).
    Huge(usize),
    /// The head promises `declared` bytes, `sent` follow, then the connection closes.
    DropMidBody { declared: usize, sent: Vec<u8> },
    /// Reads the request, then says nothing for this long, then closes.
    Hang(Duration),
    /// These bytes verbatim, then close (an upstream answer cut short, garbage).
    Raw(Vec<u8>),
}

#[derive(Default)]
struct RawState {
    /// `(prefix, fault)`, the longest matching prefix wins; `""` matches all.
    faults: Vec<(String, Fault)>,
    /// Request paths seen, with when.
    hits: Vec<(String, Instant)>,
}

struct RawServer {
    port: u16,
    state: Arc<Mutex<RawState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RawServer {
    fn start() -> RawServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let state: Arc<Mutex<RawState>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let state = Arc::clone(&state);
                            let stop = Arc::clone(&stop);
                            std::thread::spawn(move || serve_raw(stream, &state, &stop));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        RawServer {
            port,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn port(&self) -> u16 {
        self.port
    }

    fn set(&self, prefix: &str, fault: Fault) {
        let mut s = self.state.lock().unwrap();
        s.faults.retain(|(p, _)| p != prefix);
        s.faults.push((prefix.to_string(), fault));
    }

    /// Requests whose path starts with `prefix` since `since`.
    fn hits(&self, prefix: &str, since: Instant) -> usize {
        let s = self.state.lock().unwrap();
        s.hits
            .iter()
            .filter(|(p, t)| p.starts_with(prefix) && *t >= since)
            .count()
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_raw(mut stream: TcpStream, state: &Mutex<RawState>, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 65536 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&seen)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let fault = {
        let mut s = state.lock().unwrap();
        s.hits.push((path.clone(), Instant::now()));
        s.faults
            .iter()
            .filter(|(p, _)| path.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, f)| f.clone())
    };
    let head = |status: u16, len: usize, kind: &str| {
        format!(
            "HTTP/1.1 {status} X\r\ncontent-type: {kind}\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
        )
        .into_bytes()
    };
    match fault {
        None => {
            let _ = stream.write_all(&head(404, 0, "text/plain"));
        }
        Some(Fault::Good(body)) => {
            let _ = stream.write_all(&[head(200, body.len(), "application/json"), body].concat());
        }
        Some(Fault::Slow(delay, body)) => {
            std::thread::sleep(delay);
            let _ = stream.write_all(&[head(200, body.len(), "application/json"), body].concat());
        }
        Some(Fault::Status(status, body)) => {
            let _ = stream.write_all(&[head(status, body.len(), "text/plain"), body].concat());
        }
        Some(Fault::Huge(len)) => {
            if stream
                .write_all(&head(200, len, "application/json"))
                .is_ok()
            {
                let chunk = vec![b'x'; 64 * 1024];
                let mut left = len;
                while left > 0 && !stop.load(Ordering::SeqCst) {
                    let n = left.min(chunk.len());
                    if stream.write_all(&chunk[..n]).is_err() {
                        break;
                    }
                    left -= n;
                }
            }
        }
        Some(Fault::DropMidBody { declared, sent }) => {
            let _ = stream.write_all(&[head(200, declared, "application/json"), sent].concat());
            let _ = stream.flush();
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Fault::Hang(d)) => {
            let deadline = Instant::now() + d;
            while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Some(Fault::Raw(bytes)) => {
            let _ = stream.write_all(&bytes);
            let _ = stream.flush();
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Dropping the stream closes the connection (FIN).
}

// ---------------------------------------------------------------------------
// Shared helpers.

/// A bootstrap with room to start: palisade.wasm (`PALISADE_MODULE=one`)
/// compiles slowly on a busy machine, once per VM id.
fn envoy_config() -> EnvoyConfig {
    EnvoyConfig::new().startup_timeout(Duration::from_secs(120))
}

/// Waits until `f` holds, for at most `timeout`.
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn counter(envoy: &Envoy, name: &str) -> u64 {
    envoy.counter(name).unwrap_or(0)
}

/// A request that must be answered within [`BOUND`]: `(status, elapsed)`.
fn timed(url: &str, headers: &[(&str, &str)]) -> (Response, Duration) {
    let started = Instant::now();
    let r = try_request("GET", url, headers, b"")
        .unwrap_or_else(|e| panic!("GET {url}: no answer ({e}) after {:?}", started.elapsed()));
    let elapsed = started.elapsed();
    assert!(elapsed < BOUND, "GET {url} took {elapsed:?}");
    (r, elapsed)
}

/// Envoy's count of requests in flight drops back to 0.
fn nothing_held(envoy: &Envoy) {
    assert!(
        eventually(BOUND, || envoy.counter(ACTIVE) == Some(0)),
        "{ACTIVE} stays at {:?}",
        envoy.counter(ACTIVE)
    );
}

/// Opens a connection, sends `bytes`, waits `hold`, checks nothing came
/// back yet (the request is held), and closes the socket.
fn send_and_abandon(addr: SocketAddr, bytes: &[u8], hold: Duration) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.write_all(bytes).expect("write");
    c.set_read_timeout(Some(hold)).expect("timeout");
    let mut buf = [0u8; 4096];
    let got = match c.read(&mut buf) {
        Ok(n) => buf[..n].to_vec(),
        Err(_) => Vec::new(),
    };
    let _ = c.shutdown(std::net::Shutdown::Both);
    got
}

/// Sends raw bytes and reads until the peer closes or `limit` passes:
/// `(bytes, closed)`.
fn read_until_close(addr: SocketAddr, bytes: &[u8], limit: Duration) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    stream.write_all(bytes).expect("write");
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (out, true),
        }
        if Instant::now() > deadline {
            return (out, false);
        }
    }
}

// ---------------------------------------------------------------------------
// 1. JWKS endpoint faults.

fn provider(path: &str, remote: Value, extra: Value) -> Value {
    let mut p = json!({
        "issuer": ISSUER,
        "audiences": ["orders-api"],
        "algorithms": ["RS256", "ES256"],
        "remote_jwks": remote,
        "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
    });
    p["remote_jwks"]["cluster"] = json!("idp");
    p["remote_jwks"]["authority"] = json!("idp.test");
    p["remote_jwks"]["path"] = json!(path);
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        p[k] = v;
    }
    p
}

fn bearer(name: &str) -> String {
    format!("Bearer {}", token(name))
}

fn jwks_bytes(kids: &[&str]) -> Vec<u8> {
    jwks(kids).to_string().into_bytes()
}

/// One Envoy, one misbehaving identity provider, four providers:
/// - `warm` (refresh every 2 s) has good keys, then its endpoint times
///   out, answers 10 MB, drops the connection mid-body, answers 500,
///   garbage or no usable key: the last good keys keep serving, each
///   failure is counted, no request waits past the bound;
/// - `deny` and `allow` start with the endpoint down (cold): their
///   `on_jwks_unavailable` decides (401 / unchecked), the retries back
///   off (1, 2, 4 s, capped by `cache_duration_s`), and once the
///   endpoint is back they recover within one backoff period;
/// - `rot` holds a request for a rotation refetch from a slow endpoint;
///   the client goes away meanwhile, and the provider still learns the
///   new key and nothing stays held.
#[test]
fn jwks_endpoint_faults_keep_the_last_good_keys_count_back_off_and_recover() {
    let upstream = Upstream::start();
    let idp = RawServer::start();
    idp.set("/warm", Fault::Good(jwks_bytes(&["rsa1"])));
    idp.set("/rot", Fault::Good(jwks_bytes(&["rsa1"])));
    idp.set("/deny", Fault::Status(500, b"down".to_vec()));
    idp.set(
        "/allow",
        Fault::DropMidBody {
            declared: 4000,
            sent: b"{\"keys\":[".to_vec(),
        },
    );
    let warm = json!({"cache_duration_s": 2, "timeout_ms": 800, "min_refetch_interval_s": 1});
    let cold = json!({"cache_duration_s": 4, "timeout_ms": 800});
    let rot = json!({"cache_duration_s": 600, "timeout_ms": 2500, "min_refetch_interval_s": 1});
    let config = json!({
        "providers": {
            "warm": provider("/warm/jwks", warm, json!({})),
            "deny": provider("/deny/jwks", cold.clone(), json!({"on_jwks_unavailable": "deny"})),
            "allow": provider("/allow/jwks", cold, json!({"on_jwks_unavailable": "allow"})),
            "rot": provider("/rot/jwks", rot, json!({}))
        },
        "rules": [
            {"match": {"prefix": "/deny"}, "requires": {"provider": "deny"}},
            {"match": {"prefix": "/allow"}, "requires": {"provider": "allow"}},
            {"match": {"prefix": "/rot"}, "requires": {"provider": "rot"}},
            {"match": {"prefix": "/"}, "requires": {"provider": "warm"}}
        ]
    });
    let envoy = Envoy::start(
        &envoy_config()
            .upstream(&upstream)
            .cluster("idp", idp.port())
            .concurrency(2)
            .wasm(WasmFilter::new("jwt", dist_wasm("jwt")).config_json(&config)),
    );
    let valid = bearer("valid");
    let auth = [("authorization", valid.as_str())];
    assert!(
        eventually(BOUND, || timed(&envoy.url("/a"), &auth).0.status == 200
            && timed(&envoy.url("/rot"), &auth).0.status == 200),
        "the first fetches never made the token valid"
    );

    // Cold, endpoint down: on_jwks_unavailable decides.
    let (r, _) = timed(&envoy.url("/deny"), &auth);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        r.header("www-authenticate")
            .unwrap_or_default()
            .contains("invalid_token"),
        "{:?}",
        r.headers
    );
    let allowed_before = counter(&envoy, &format!("{JWT}jwks_unavailable_allowed"));
    let (r, _) = timed(&envoy.url("/allow"), &auth);
    assert_eq!(r.status, 200, "allow: unchecked: {}", r.text());
    // Unchecked means unchecked: a token that would never verify passes too.
    let (r, _) = timed(&envoy.url("/allow"), &[("authorization", "Bearer abc")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let allowed = envoy
        .wait_for_counter(
            &format!("{JWT}jwks_unavailable_allowed"),
            allowed_before + 2,
            WAIT,
        )
        .unwrap_or(0);
    assert!(
        allowed >= allowed_before + 2,
        "{allowed_before} -> {allowed}"
    );

    // While the cold providers keep failing, `warm`'s endpoint fails in
    // every way; its last good set serves throughout.
    let window = Instant::now();
    let mut reasons = Vec::new();
    for (name, fault) in [
        ("timeout", Fault::Hang(Duration::from_millis(2500))),
        ("10 MB body", Fault::Huge(10 * 1024 * 1024)),
        (
            "dropped mid-body",
            Fault::DropMidBody {
                declared: 100_000,
                sent: jwks_bytes(&["rsa1"])[..40].to_vec(),
            },
        ),
        ("500", Fault::Status(500, b"oops".to_vec())),
        ("garbage", Fault::Good(b"<html>garbage</html>".to_vec())),
        (
            "no usable key",
            Fault::Good(br#"{"keys":[{"kty":"oct","k":"AAAA"}]}"#.to_vec()),
        ),
    ] {
        let failed_before = counter(&envoy, &format!("{JWT}jwks_fetch_failed"));
        let since = Instant::now();
        idp.set("/warm", fault);
        // Until an attempt met the fault and its failure was counted.
        let deadline = since + Duration::from_secs(12);
        let mut requests = 0;
        loop {
            let (r, _) = timed(&envoy.url("/a"), &auth);
            assert_eq!(r.status, 200, "{name}: {}", r.text());
            requests += 1;
            let met = idp.hits("/warm", since) > 0
                && counter(&envoy, &format!("{JWT}jwks_fetch_failed")) > failed_before;
            if met && since.elapsed() > Duration::from_millis(500) {
                break;
            }
            assert!(Instant::now() < deadline, "{name}: no failed fetch counted");
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = envoy.log();
        let reason = log
            .lines()
            .rev()
            .find(|l| l.contains("provider warm: JWKS fetch failed"))
            .unwrap_or_default()
            .to_string();
        reasons.push(format!("{name} ({requests} requests): {reason}"));
    }
    eprintln!("jwks faults:\n{}", reasons.join("\n"));
    assert!(envoy.log().contains("keeping the last good set"));

    // Backoff: over the whole window the cold providers' endpoints were
    // tried a few times, not on every 500 ms tick of three VMs.
    let secs = window.elapsed().as_secs_f64();
    for path in ["/deny", "/allow"] {
        let tries = idp.hits(path, window);
        // 1, 2, 4, 4… s apart (capped by cache_duration_s: 4).
        let most = (secs / 4.0).ceil() as usize + 3;
        assert!(
            (1..=most).contains(&tries),
            "{path}: {tries} fetches in {secs:.1} s (at most {most} with backoff)"
        );
    }

    // The endpoints come back: recovery within one backoff period (≤ 4 s).
    idp.set("/deny", Fault::Good(jwks_bytes(&["rsa1"])));
    idp.set("/allow", Fault::Good(jwks_bytes(&["rsa1"])));
    idp.set("/warm", Fault::Good(jwks_bytes(&["rsa1"])));
    let back = Instant::now();
    assert!(
        eventually(BOUND, || timed(&envoy.url("/deny"), &auth).0.status == 200),
        "deny never recovered"
    );
    assert!(
        eventually(BOUND, || timed(
            &envoy.url("/allow"),
            &[("authorization", "Bearer abc")]
        )
        .0
        .status
            == 401),
        "allow never started checking"
    );
    let recovered = back.elapsed();
    assert!(recovered < Duration::from_secs(8), "{recovered:?}");
    assert_eq!(timed(&envoy.url("/allow"), &auth).0.status, 200);
    assert_eq!(timed(&envoy.url("/a"), &auth).0.status, 200);

    // A request held for a rotation refetch; its client goes away.
    idp.set(
        "/rot",
        Fault::Slow(Duration::from_millis(1500), jwks_bytes(&["rsa1", "rsa2"])),
    );
    let rotated = bearer("rotated");
    let request = client::raw_request("GET", "/rot/x", &[("authorization", &rotated)], b"");
    let refetches = counter(&envoy, &format!("{JWT}jwks_refetch_unknown_kid"));
    let got = send_and_abandon(envoy.listener_addr(), &request, Duration::from_millis(400));
    assert!(
        got.is_empty(),
        "the request was answered at once, not held: {}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        counter(&envoy, &format!("{JWT}jwks_refetch_unknown_kid")) > refetches,
        "no refetch started"
    );
    nothing_held(&envoy);
    // The provider still learns the new key (the abandoned fetch, or the
    // next one once its lease ends), and keeps serving meanwhile.
    let auth_rot = [("authorization", rotated.as_str())];
    let mut statuses = BTreeMap::new();
    let learned = eventually(Duration::from_secs(15), || {
        let s = timed(&envoy.url("/rot/y"), &auth_rot).0.status;
        *statuses.entry(s).or_insert(0) += 1;
        s == 200
    });
    assert!(learned, "the rotated key never arrived: {statuses:?}");
    assert_eq!(timed(&envoy.url("/rot/z"), &auth).0.status, 200);
    assert_eq!(timed(&envoy.url("/a"), &auth).0.status, 200);
    nothing_held(&envoy);
}

/// The first request on a cold Envoy starts the JWKS fetch itself and is
/// held for the slow endpoint's answer; its client leaves meanwhile. The
/// fetch belonged to that request's stream: the provider must still get
/// its keys (once the abandoned fetch's lease ends, the tick fetches
/// again), requests meanwhile follow `on_jwks_unavailable` at once, and
/// nothing stays held.
#[test]
fn a_client_leaving_the_cold_start_fetch_it_started_does_not_strand_the_provider() {
    let upstream = Upstream::start();
    let idp = RawServer::start();
    idp.set(
        "/jwks",
        Fault::Slow(Duration::from_millis(1500), jwks_bytes(&["rsa1"])),
    );
    let remote = json!({"cache_duration_s": 600, "timeout_ms": 2500});
    let config = json!({
        "providers": {"corp": provider("/jwks", remote, json!({}))},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider": "corp"}}]
    });
    let envoy = Envoy::start(
        &envoy_config()
            .upstream(&upstream)
            .cluster("idp", idp.port())
            .wasm(WasmFilter::new("jwt", dist_wasm("jwt")).config_json(&config)),
    );
    let valid = bearer("valid");
    let request = client::raw_request("GET", "/a", &[("authorization", &valid)], b"");
    let left = Instant::now();
    let got = send_and_abandon(envoy.listener_addr(), &request, Duration::from_millis(400));
    assert!(
        got.is_empty(),
        "the first request was not held: {}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        eventually(WAIT, || envoy
            .log()
            .contains("no keys yet, a request fetches the JWKS")),
        "the request did not start the fetch:\n{}",
        envoy.log()
    );
    nothing_held(&envoy);
    let auth = [("authorization", valid.as_str())];
    let mut statuses = BTreeMap::new();
    let recovered = eventually(Duration::from_secs(15), || {
        let s = timed(&envoy.url("/a"), &auth).0.status;
        *statuses.entry(s).or_insert(0) += 1;
        s == 200
    });
    assert!(recovered, "the provider never got its keys: {statuses:?}");
    // Meanwhile: on_jwks_unavailable (deny: 401) at once, nothing else.
    assert!(
        statuses.keys().all(|s| [200, 401].contains(s)),
        "{statuses:?}"
    );
    eprintln!(
        "cold fetch abandoned: keys after {:?}, {} fetches, answers meanwhile {statuses:?}",
        left.elapsed(),
        idp.hits("/jwks", left)
    );
    assert_eq!(timed(&envoy.url("/a"), &auth).0.status, 200);
    nothing_held(&envoy);
}

// ---------------------------------------------------------------------------
// 2. The global rate-limit service.

/// A gRPC message's body: data then trailers.
struct GrpcBody {
    data: Option<Bytes>,
    trailers: Option<hyper::HeaderMap>,
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        if let Some(t) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

/// An HTTP/2 gRPC server standing for the RLS service. The limit name in
/// the request chooses the answer: `hang` never answers, `garbage` answers
/// gRPC OK with bytes that are not a `RateLimitResponse`, anything else OK.
struct FakeRls {
    port: u16,
    calls: Arc<AtomicU64>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeRls {
    fn start() -> FakeRls {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let calls = Arc::new(AtomicU64::new(0));
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let counted = Arc::clone(&calls);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    tokio::select! {
                        _ = &mut rx => return,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let calls = Arc::clone(&counted);
                            tokio::spawn(async move {
                                let service = hyper::service::service_fn(move |req| {
                                    calls.fetch_add(1, Ordering::SeqCst);
                                    rls_answer(req)
                                });
                                let _ = hyper::server::conn::http2::Builder::new(
                                    hyper_util::rt::TokioExecutor::new(),
                                )
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await;
                            });
                        }
                    }
                }
            });
        });
        FakeRls {
            port,
            calls,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for FakeRls {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn rls_answer(
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<GrpcBody>, Infallible> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let has = |s: &str| body.windows(s.len()).any(|w| w == s.as_bytes());
    if has("hang") {
        tokio::time::sleep(Duration::from_secs(120)).await;
    }
    // overall_code (field 1, varint) = OK; or a truncated varint.
    let message: &[u8] = if has("garbage") {
        b"\xff\xff\xff\xff\xff"
    } else {
        b"\x08\x01"
    };
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
    let response = hyper::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(GrpcBody {
            data: Some(Bytes::from(framed)),
            trailers: Some(trailers),
        })
        .expect("response");
    Ok(response)
}

const RLS_TIMEOUT_MS: u64 = 500;

/// A global-mode filter named `name` asking `cluster`, deciding failures by
/// `on_error`, with one rule per behaviour under `/<name>/<behaviour>`
/// (limit name = behaviour, 2 per hour, for the local fallback).
fn global_filter(name: &str, cluster: &str, on_error: &str, behaviours: &[&str]) -> WasmFilter {
    let rules: Vec<Value> = behaviours
        .iter()
        .map(|b| {
            json!({"match": {"prefix": format!("/{name}/{b}")},
                   "limits": [{"name": b, "key": [], "requests": 2, "per_s": 3600}]})
        })
        .collect();
    let config = json!({
        "mode": "global",
        "global": {"cluster": cluster, "domain": "faults", "timeout_ms": RLS_TIMEOUT_MS,
                   "on_error": on_error},
        "rules": rules
    });
    WasmFilter::new(name, dist_wasm("ratelimit")).config_json(&config)
}

/// The RLS service hangs (HTTP/2 alive, never answers the call), answers
/// gRPC OK with bytes that are not a `RateLimitResponse`, or is not HTTP/2
/// at all (answers garbage bytes): each request is decided by `on_error`
/// (`allow` 200, `deny` 503 + `Retry-After: 1`, `local` the local buckets)
/// no later than `timeout_ms` plus a margin; a client that goes away while
/// the call is pending leaves nothing held.
#[test]
fn a_hanging_or_garbage_rate_limit_service_follows_on_error_within_the_timeout() {
    let upstream = Upstream::start();
    let rls = FakeRls::start();
    let garbage = RawServer::start();
    garbage.set(
        "",
        Fault::Raw(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello\x00\xff\xfe garbage".to_vec(),
        ),
    );
    let behaviours = ["ok", "hang", "garbage"];
    let envoy = Envoy::start(
        &envoy_config()
            .upstream(&upstream)
            .bootstrap_extra(clusters_extra(vec![
                cluster("echo", upstream.port(), false),
                cluster("rls", rls.port, true),
                cluster("rls_garbage", garbage.port(), true),
            ]))
            .wasm(global_filter("allow", "rls", "allow", &behaviours))
            .wasm(global_filter("deny", "rls", "deny", &behaviours))
            .wasm(global_filter("local", "rls", "local", &behaviours))
            .wasm(global_filter("h2", "rls_garbage", "deny", &["garbage"])),
    );
    let deadline = Duration::from_millis(RLS_TIMEOUT_MS);
    let bound = deadline + Duration::from_secs(3);
    let status_of = |path: &str| timed(&envoy.url(path), &[]);

    // The service works: every on_error admits.
    for mode in ["allow", "deny", "local"] {
        let (r, _) = status_of(&format!("/{mode}/ok"));
        assert_eq!(r.status, 200, "{mode}/ok: {}", r.text());
    }
    assert!(rls.calls.load(Ordering::SeqCst) >= 3);

    let timeouts_before = counter(&envoy, &format!("{RL}global_timeout"));
    let errors_before = counter(&envoy, &format!("{RL}global_error"));
    for behaviour in ["hang", "garbage"] {
        let (r, elapsed) = status_of(&format!("/allow/{behaviour}"));
        assert_eq!(r.status, 200, "allow/{behaviour}: {}", r.text());
        assert!(elapsed < bound, "allow/{behaviour}: {elapsed:?}");

        let (r, elapsed) = status_of(&format!("/deny/{behaviour}"));
        assert_eq!(r.status, 503, "deny/{behaviour}: {}", r.text());
        assert!(elapsed < bound, "deny/{behaviour}: {elapsed:?}");
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(
            r.json()["type"],
            "urn:palisade:problem:rate-limit-unavailable"
        );

        // Local buckets: 2 per hour for this limit.
        let statuses: Vec<u16> = (0..3)
            .map(|_| {
                let (r, elapsed) = status_of(&format!("/local/{behaviour}"));
                assert!(elapsed < bound, "local/{behaviour}: {elapsed:?}");
                r.status
            })
            .collect();
        assert_eq!(statuses, [200, 200, 429], "local/{behaviour}");
        if behaviour == "hang" {
            // The call really waited for its deadline (5 calls).
            assert!(elapsed >= deadline.mul_f64(0.9), "{elapsed:?}");
        }
    }
    // Not HTTP/2 at all: the connection fails at once.
    let (r, elapsed) = status_of("/h2/garbage");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(elapsed < bound, "{elapsed:?}");

    let timeouts = envoy
        .wait_for_counter(&format!("{RL}global_timeout"), timeouts_before + 5, WAIT)
        .unwrap_or(0);
    assert_eq!(timeouts, timeouts_before + 5, "one per hanging call");
    let errors = envoy
        .wait_for_counter(&format!("{RL}global_error"), errors_before + 11, WAIT)
        .unwrap_or(0);
    assert_eq!(errors, errors_before + 11, "every failed call");
    assert!(counter(&envoy, &format!("{RL}global_fallback_local")) >= 6);
    assert!(envoy
        .log()
        .contains("answered something that is not a RateLimitResponse"));

    // Clients that go away while the call is pending.
    let addr = envoy.listener_addr();
    for mode in ["allow", "deny", "local"] {
        for _ in 0..5 {
            let request = client::raw_request("GET", &format!("/{mode}/hang"), &[], b"");
            let got = send_and_abandon(addr, &request, Duration::from_millis(150));
            assert!(got.is_empty(), "answered before the deadline");
        }
    }
    nothing_held(&envoy);
    let (r, _) = status_of("/deny/ok");
    assert_eq!(r.status, 200);
    let (r, elapsed) = status_of("/deny/hang");
    assert_eq!(r.status, 503);
    assert!(elapsed < bound, "{elapsed:?}");
    nothing_held(&envoy);
}

/// Redis restarts under traffic behind the real RLS service: requests
/// during the outage follow `on_error: deny` (503) and none hangs; after
/// the restart the shared count is exact again.
#[test]
fn a_redis_restart_under_traffic_is_a_503_window_then_exact_counting() {
    assert!(
        redis_available(),
        "redis-server is not installed: apt-get install -y redis-server"
    );
    let mut redis = Redis::start();
    let rls = RlsServer::start(&redis.url());
    let upstream = Upstream::start();
    let config = json!({
        "mode": "global",
        "global": {"cluster": "rls", "domain": "faults-redis", "timeout_ms": 300, "on_error": "deny"},
        "rules": [{"limits": [{"name": "shared", "key": [{"header": "x-round"}], "requests": 20, "per_s": 3600}]}]
    });
    let envoy = Envoy::start(
        &envoy_config()
            .upstream(&upstream)
            .concurrency(2)
            .bootstrap_extra(clusters_extra(vec![
                cluster("echo", upstream.port(), false),
                cluster("rls", rls.port(), true),
            ]))
            .wasm(
                WasmFilter::new("palisade.ratelimit", dist_wasm("ratelimit")).config_json(&config),
            ),
    );
    let exact = |round: &str| {
        let h = [("x-round", round)];
        let statuses: Vec<u16> = (0..25)
            .map(|_| timed(&envoy.url("/"), &h).0.status)
            .collect();
        let ok = statuses.iter().filter(|s| **s == 200).count();
        let limited = statuses.iter().filter(|s| **s == 429).count();
        assert_eq!((ok, limited), (20, 5), "{round}: {statuses:?}");
    };
    exact("before");

    // Traffic from two threads, throughout.
    let done = Arc::new(AtomicBool::new(false));
    let traffic: Vec<_> = (0..2)
        .map(|t| {
            let done = Arc::clone(&done);
            let url = envoy.url("/");
            std::thread::spawn(move || {
                let mut seen: BTreeMap<u16, u64> = BTreeMap::new();
                let mut slowest = Duration::ZERO;
                let mut i = 0u64;
                while !done.load(Ordering::SeqCst) {
                    let key = format!("traffic-{t}-{}", i / 10);
                    i += 1;
                    let started = Instant::now();
                    let status = try_request("GET", &url, &[("x-round", &key)], b"")
                        .map(|r| r.status)
                        .unwrap_or(0);
                    slowest = slowest.max(started.elapsed());
                    *seen.entry(status).or_insert(0) += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                (seen, slowest)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    redis.stop();
    let down = Instant::now();
    assert!(
        eventually(BOUND, || timed(&envoy.url("/"), &[("x-round", "outage")])
            .0
            .status
            == 503),
        "Redis down but no 503"
    );
    std::thread::sleep(Duration::from_millis(1000).saturating_sub(down.elapsed()));
    redis.restart();
    assert!(
        eventually(BOUND, || timed(&envoy.url("/"), &[("x-round", "probe")])
            .0
            .status
            == 200),
        "never recovered after the restart"
    );
    std::thread::sleep(Duration::from_millis(500));
    done.store(true, Ordering::SeqCst);
    let mut seen: BTreeMap<u16, u64> = BTreeMap::new();
    for t in traffic {
        let (s, slowest) = t.join().unwrap();
        assert!(slowest < BOUND, "a request took {slowest:?}");
        for (k, v) in s {
            *seen.entry(k).or_insert(0) += v;
        }
    }
    assert!(
        seen.keys().all(|s| [200, 429, 503].contains(s)),
        "unexpected answers under traffic: {seen:?}"
    );
    assert!(
        seen.get(&503).is_some_and(|n| *n > 0),
        "outage unseen: {seen:?}"
    );
    assert!(seen.get(&200).is_some_and(|n| *n > 0), "{seen:?}");
    // Counting is exact again on the restarted (empty) Redis.
    exact("after");
    nothing_held(&envoy);
}

// ---------------------------------------------------------------------------
// 3. Clients and upstreams going away mid-stream.

fn petstore() -> Value {
    let text =
        std::fs::read_to_string(repo_root().join("filters/schema/tests/fixtures/petstore.json"))
            .expect("read the pet store fixture");
    serde_json::from_str(&text).expect("the pet store fixture is JSON")
}

/// `errors` (headers held while a leak candidate is scanned) and `schema`
/// (body held until validated), both with `allow_on_headers_stop_iteration`:
/// clients that send half a body and leave, and an upstream that sends a
/// 500 or a leaky 404 head, part of a stack trace, and closes. The client
/// never sees the trace, every such request ends, nothing stays held, and
/// later requests are served (and masked) normally.
#[test]
fn aborted_bodies_and_upstream_resets_mid_response_leave_nothing_held_and_leak_nothing() {
    let upstream = Upstream::start();
    let resetter = RawServer::start();
    let cut = |status: &str| {
        let mut head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: 4000\r\n\r\n"
        )
        .into_bytes();
        head.extend_from_slice(PYTHON_STACK.as_bytes());
        head
    };
    resetter.set("/reset/500", Fault::Raw(cut("500 Internal Server Error")));
    resetter.set("/reset/404", Fault::Raw(cut("404 Not Found")));
    let schema = json!({"hold_headers": true, "max_body_bytes": 65536, "openapi": petstore()});
    let envoy = Envoy::start(
        &envoy_config()
            .upstream(&upstream)
            .cluster("resetter", resetter.port())
            .route(Route::prefix("reset", "/reset").cluster("resetter"))
            .route(Route::prefix("all", "/"))
            .wasm(
                WasmFilter::new("errors", dist_wasm("errors"))
                    .config_json(&json!({"hold_headers": true}))
                    .allow_on_headers_stop_iteration(true),
            )
            .wasm(
                WasmFilter::new("schema", dist_wasm("schema"))
                    .config_json(&schema)
                    .allow_on_headers_stop_iteration(true),
            ),
    );
    let addr = envoy.listener_addr();

    // Half a body, then the client leaves: schema held the request, the
    // upstream never sees it.
    let body = br#"{"name": "Rex", "tag": null, "age": 3, "owner": {"email": "a@example.com"}}"#;
    let mut half = format!(
        "POST /pets HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    half.extend_from_slice(&body[..body.len() / 2]);
    for _ in 0..10 {
        let got = send_and_abandon(addr, &half, Duration::from_millis(100));
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    }
    nothing_held(&envoy);
    assert!(
        upstream.received().iter().all(|r| r.method != "POST"),
        "a truncated body reached the upstream"
    );

    // The upstream sends a head and part of a stack trace, then closes.
    for path in ["/reset/500", "/reset/404"] {
        for _ in 0..5 {
            let (bytes, closed) =
                read_until_close(addr, &client::raw_request("GET", path, &[], b""), BOUND);
            assert!(closed, "{path}: the client was left waiting");
            let wire = String::from_utf8_lossy(&bytes);
            for secret in ["Traceback", "ZeroDivisionError", "/srv/app"] {
                assert!(!wire.contains(secret), "{path} leaked {secret}: {wire}");
            }
            if let Some(status) = wire.split_whitespace().nth(1) {
                assert!(status.starts_with('5') || status.starts_with('4'), "{wire}");
            }
        }
        eprintln!(
            "{path}: {:?}",
            String::from_utf8_lossy(
                &read_until_close(addr, &client::raw_request("GET", path, &[], b""), BOUND).0
            )
        );
    }
    nothing_held(&envoy);

    // Later requests: served, validated and masked as usual.
    let r = request(
        "POST",
        &envoy.url("/pets"),
        &[("content-type", "application/json")],
        body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.last().unwrap().body, body.to_vec());
    let r = request(
        "POST",
        &envoy.url("/pets"),
        &[("content-type", "application/json")],
        br#"{"name": 3}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = get(
        &envoy.url("/leak"),
        &[
            ("x-echo-body-kind", "python-stack"),
            ("x-echo-status", "404"),
        ],
    );
    assert_eq!(r.status, 404);
    assert!(!r.text().contains("Traceback"), "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    nothing_held(&envoy);
}

/// The trapping fixture (`make test-fixtures`) in front of the headers
/// control, under `policy`.
fn trap_then_headers(upstream: &Upstream, policy: FailurePolicy) -> Envoy {
    let trap =
        WasmFilter::new("trap", repo_root().join("dist/test/trap.wasm")).failure_policy(policy);
    let headers = WasmFilter::new("headers", dist_wasm("headers")).config_json(&json!({}));
    Envoy::start(&envoy_config().upstream(upstream).wasm(trap).wasm(headers))
}

/// A VM failure (a filter bug: a Rust panic is a wasm trap). Under
/// `FAIL_RELOAD` the request it trapped on is refused, and a fresh VM
/// serves the next ones, with the controls behind it still at work. Under
/// `FAIL_CLOSED` the dead VM refuses every later request: why the docs
/// recommends `FAIL_RELOAD`.
#[test]
fn a_trapping_vm_under_fail_reload_fails_its_request_and_a_fresh_vm_serves_the_next() {
    let upstream = Upstream::start();
    let trap = [("x-palisade-test-trap", "1")];
    let envoy = trap_then_headers(&upstream, FailurePolicy::FailReload);
    let url = envoy.url("/orders");
    let (ok, _) = timed(&url, &[]);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-content-type-options"), Some("nosniff"));
    for round in 0..3 {
        let (trapped, _) = timed(&url, &trap);
        assert!(trapped.status >= 500, "round {round}: {}", trapped.status);
        // Envoy reloads the VM after its backoff (1 s by default).
        let served = eventually(Duration::from_secs(10), || {
            let (r, _) = timed(&url, &[]);
            r.status == 200 && r.header("x-content-type-options") == Some("nosniff")
        });
        assert!(served, "round {round}: no fresh VM served\n{}", envoy.log());
    }
    assert!(envoy.log().contains("fixture-trap"), "{}", envoy.log());

    let envoy = trap_then_headers(&upstream, FailurePolicy::FailClosed);
    let url = envoy.url("/orders");
    assert_eq!(timed(&url, &[]).0.status, 200);
    assert!(timed(&url, &trap).0.status >= 500);
    std::thread::sleep(Duration::from_secs(2));
    for _ in 0..3 {
        let (r, _) = timed(&url, &[]);
        assert!(
            r.status >= 500,
            "FAIL_CLOSED served {} after its VM died",
            r.status
        );
    }
}
