//! Rate-limit test fixtures: a real `redis-server`, an RLS v3 gRPC service
//! counting in it, the HTTP/2 cluster Envoy needs to reach that service, a
//! pipelining HTTP/1.1 load client, and Envoy's resident memory.
//!
//! The RLS service is `envoy-types`' generated `RateLimitService` server over
//! tonic. Each descriptor carrying a `limit` override is counted with one Lua
//! script (INCRBY, EXPIRE on the first hit, TTL), which Redis runs atomically:
//! the same fixed-window counting envoyproxy/ratelimit does, so two Envoys
//! asking it share one exact count.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, DescriptorStatus};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use serde_json::{json, Value};

use crate::ports::free_port;

/// Whether `redis-server` is installed (Debian package `redis-server`).
pub fn redis_available() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A `redis-server` on a free loopback port, without persistence; killed by
/// pid when stopped or dropped.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Starts it and waits until it answers PING (panics after 10 s).
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let mut redis = Redis {
            child: None,
            port: free_port(),
            _dir: dir,
        };
        redis.spawn();
        redis
    }

    /// Runs `redis-server` on this port and waits until it answers PING.
    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self._dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (apt-get install -y redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ok = redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok();
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it if running, then starts a fresh one (empty: no persistence)
    /// on the same port, as a restarted Redis would come back.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills it (SIGKILL by pid) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

const COUNT_SCRIPT: &str = r"
local c = redis.call('INCRBY', KEYS[1], ARGV[1])
if c == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return {c, redis.call('TTL', KEYS[1])}
";

/// Seconds of an `envoy.type.v3.RateLimitUnit`.
fn unit_seconds(unit: i32) -> Option<i64> {
    match unit {
        1 => Some(1),
        2 => Some(60),
        3 => Some(3600),
        4 => Some(86_400),
        7 => Some(7 * 86_400),
        _ => None,
    }
}

struct Counter {
    url: String,
    conn: Mutex<Option<redis::Connection>>,
    script: redis::Script,
}

impl Counter {
    /// Counts every descriptor with a limit; `Err` when Redis failed.
    fn decide(&self, req: &RateLimitRequest) -> Result<RateLimitResponse, String> {
        let mut guard = self.conn.lock().map_err(|_| "poisoned".to_string())?;
        if guard.is_none() {
            let client = redis::Client::open(self.url.as_str()).map_err(|e| e.to_string())?;
            let conn = client
                .get_connection_with_timeout(Duration::from_millis(300))
                .map_err(|e| e.to_string())?;
            conn.set_read_timeout(Some(Duration::from_millis(300)))
                .map_err(|e| e.to_string())?;
            conn.set_write_timeout(Some(Duration::from_millis(300)))
                .map_err(|e| e.to_string())?;
            *guard = Some(conn);
        }
        let hits = i64::from(req.hits_addend.max(1));
        let mut statuses = Vec::new();
        let mut over = false;
        for d in &req.descriptors {
            let Some((limit, seconds)) = d
                .limit
                .as_ref()
                .and_then(|l| Some((i64::from(l.requests_per_unit), unit_seconds(l.unit)?)))
            else {
                statuses.push(DescriptorStatus {
                    code: Code::Ok as i32,
                    ..Default::default()
                });
                continue;
            };
            let key = std::iter::once(req.domain.as_str())
                .chain(
                    d.entries
                        .iter()
                        .flat_map(|e| [e.key.as_str(), e.value.as_str()]),
                )
                .collect::<Vec<_>>()
                .join("\u{1f}");
            let Some(conn) = guard.as_mut() else {
                return Err("no connection".into());
            };
            let counted: Result<(i64, i64), _> = self
                .script
                .key(format!("rl:{key}"))
                .arg(hits)
                .arg(seconds)
                .invoke(conn);
            let (count, ttl) = match counted {
                Ok(v) => v,
                Err(e) => {
                    *guard = None;
                    return Err(e.to_string());
                }
            };
            let is_over = count > limit;
            over |= is_over;
            statuses.push(DescriptorStatus {
                code: if is_over { Code::OverLimit } else { Code::Ok } as i32,
                limit_remaining: u32::try_from((limit - count).max(0)).unwrap_or(0),
                duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
                    seconds: ttl.max(1),
                    nanos: 0,
                }),
                ..Default::default()
            });
        }
        Ok(RateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
            statuses,
            ..Default::default()
        })
    }
}

#[derive(Clone)]
struct Service {
    counter: Arc<Counter>,
    calls: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl RateLimitService for Service {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let counter = Arc::clone(&self.counter);
        let req = request.into_inner();
        let decided = tokio::task::spawn_blocking(move || counter.decide(&req))
            .await
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        decided
            .map(tonic::Response::new)
            .map_err(tonic::Status::unavailable)
    }
}

/// The RLS v3 service on a free loopback port, in its own thread and runtime.
pub struct RlsServer {
    port: u16,
    calls: Arc<AtomicU64>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RlsServer {
    /// Serves `ShouldRateLimit` counting in the Redis at `redis_url`.
    pub fn start(redis_url: &str) -> RlsServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the RLS port");
        let port = listener.local_addr().expect("RLS address").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let calls = Arc::new(AtomicU64::new(0));
        let service = Service {
            counter: Arc::new(Counter {
                url: redis_url.to_string(),
                conn: Mutex::new(None),
                script: redis::Script::new(COUNT_SCRIPT),
            }),
            calls: Arc::clone(&calls),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("RLS runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let incoming = tonic::transport::server::TcpIncoming::from(listener);
                let _ = tonic::transport::Server::builder()
                    .add_service(RateLimitServiceServer::new(service))
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "RLS server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        RlsServer {
            port,
            calls,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ShouldRateLimit` calls received so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Stops serving and closes the port.
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RlsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A STATIC loopback cluster; with `http2`, explicitly HTTP/2 (gRPC).
pub fn cluster(name: &str, port: u16, http2: bool) -> Value {
    let mut c = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "0.25s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address":
                {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}],
        },
    });
    if http2 {
        c["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        });
    }
    c
}

/// `bootstrap_extra` replacing the bootstrap's clusters with these (arrays
/// are replaced, not merged: list every cluster the routes use).
pub fn clusters_extra(clusters: Vec<Value>) -> Value {
    json!({"static_resources": {"clusters": clusters}})
}

/// Resident memory of a process in bytes (`VmRSS` of /proc/<pid>/status).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A keep-alive HTTP/1.1 connection sending pipelined GETs and counting
/// the statuses of the answers.
pub struct Pipeline {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Pipeline {
    /// Connects to `addr` (10 s read timeout).
    pub fn connect(addr: SocketAddr) -> std::io::Result<Pipeline> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Pipeline {
            stream,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Sends one GET per header list, then reads as many answers; their statuses.
    pub fn send(
        &mut self,
        path: &str,
        requests: &[Vec<(String, String)>],
    ) -> std::io::Result<Vec<u16>> {
        let mut out = Vec::with_capacity(requests.len() * 96);
        for headers in requests {
            out.extend_from_slice(format!("GET {path} HTTP/1.1\r\nhost: test\r\n").as_bytes());
            for (n, v) in headers {
                out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&out)?;
        let mut statuses = Vec::with_capacity(requests.len());
        while statuses.len() < requests.len() {
            match self.parse_one() {
                Some(status) => statuses.push(status),
                None => {
                    let mut chunk = [0u8; 32 * 1024];
                    let n = self.stream.read(&mut chunk)?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
        Ok(statuses)
    }

    /// One complete response from the buffer (content-length framed).
    fn parse_one(&mut self) -> Option<u16> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let head = match resp.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => return None,
        };
        let len: usize = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
            .unwrap_or(0);
        let status = resp.code?;
        if self.buf.len() < head + len {
            return None;
        }
        self.buf.drain(..head + len);
        Some(status)
    }
}
