//! The rate-limit filter inside a real Envoy 1.40: answers on the wire,
//! exactness across worker threads, the memory bound under a key flood, and
//! global mode through an RLS v3 service counting in a real Redis, and what
//! a `client_ip` limit counts under each `use_remote_address` setting.
//!
//! Build the module first: `cargo build --release --target wasm32-wasip1 -p
//! palisade-ratelimit && mkdir -p dist && cp target/wasm32-wasip1/release/palisade_ratelimit.wasm dist/`.
//! Global mode needs `redis-server` (Debian package `redis-server`).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_tests::client::try_request;
use palisade_tests::ratelimit_support::{
    cluster, clusters_extra, redis_available, rss_bytes, Pipeline, Redis, RlsServer,
};
use palisade_tests::*;
use serde_json::{json, Value};

const STAT: &str = "wasmcustom.palisade.ratelimit.";
const WAIT: Duration = Duration::from_secs(5);

fn ratelimit(config: &Value) -> WasmFilter {
    WasmFilter::new("palisade.ratelimit", dist_wasm("ratelimit")).config_json(config)
}

fn stat(envoy: &Envoy, event: &str, at_least: u64) -> u64 {
    envoy
        .wait_for_counter(&format!("{STAT}{event}"), at_least, WAIT)
        .unwrap_or(0)
}

/// Sends `per_thread` requests from each of `threads` threads at once (a
/// fresh connection each, so both workers get some); statuses seen.
fn burst(
    url: &str,
    headers: &[(&str, &str)],
    threads: usize,
    per_thread: usize,
) -> BTreeMap<u16, u64> {
    let counts: Arc<std::sync::Mutex<BTreeMap<u16, u64>>> = Arc::default();
    let start = Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let url = url.to_string();
            let headers: Vec<(String, String)> = headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            let counts = Arc::clone(&counts);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                let h: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                start.wait();
                for _ in 0..per_thread {
                    let status = match try_request("GET", &url, &h, b"") {
                        Ok(r) => r.status,
                        Err(_) => 0,
                    };
                    *counts.lock().unwrap().entry(status).or_insert(0) += 1;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let out = counts.lock().unwrap().clone();
    out
}

#[test]
fn over_the_limit_the_client_gets_a_429_problem_with_retry_after_and_fields() {
    let upstream = Upstream::start();
    let config = json!({
        "rules": [
            {"match": {"prefix": "/login", "methods": ["POST"]},
             "limits": [{"name": "login-per-ip", "key": ["client_ip"], "requests": 3, "per_s": 60}]},
            {"match": {"prefix": "/shadow"}, "dry_run": true,
             "limits": [{"name": "shadow-all", "key": [], "requests": 1, "per_s": 60}]},
            {"match": {"prefix": "/grpc"},
             "limits": [{"name": "grpc-all", "key": [], "requests": 1, "per_s": 60}]}
        ]
    });
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .wasm(ratelimit(&config)),
    );
    let login = envoy.url("/login");
    for left in (0..3).rev() {
        let r = request("POST", &login, &[], b"{}");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.header("ratelimit-policy"),
            Some("\"login-per-ip\";q=3;w=60")
        );
        assert_eq!(
            r.header("ratelimit"),
            Some(format!("\"login-per-ip\";r={left};t=20").as_str())
        );
        assert_eq!(
            upstream.last().unwrap().header("x-palisade-ratelimit"),
            Some("allow")
        );
    }
    let r = request("POST", &login, &[("x-request-id", "rl-test-1")], b"{}");
    assert_eq!(r.status, 429, "{}", r.text());
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.header("x-palisade-denied-by"), Some("ratelimit"));
    assert!(r
        .header("ratelimit")
        .unwrap()
        .starts_with("\"login-per-ip\";r=0;t="));
    let doc = r.json();
    assert_eq!(doc["status"], 429);
    assert_eq!(doc["type"], "urn:palisade:problem:rate-limited");
    assert_eq!(doc["request_id"], "rl-test-1");
    // Only POST /login is limited.
    assert_eq!(get(&login, &[]).status, 200);
    assert_eq!(get(&envoy.url("/other"), &[]).status, 200);

    // Dry run: counted and published, never refused.
    for _ in 0..3 {
        assert_eq!(get(&envoy.url("/shadow"), &[]).status, 200);
    }
    assert_eq!(
        upstream.last().unwrap().header("x-palisade-ratelimit"),
        Some("shadow-deny;reason=rate_limited")
    );

    // gRPC callers get RESOURCE_EXHAUSTED in a trailers-only answer.
    let grpc = [("content-type", "application/grpc")];
    assert_eq!(
        request("POST", &envoy.url("/grpc/pkg.Svc/M"), &grpc, b"").status,
        200
    );
    let r = request("POST", &envoy.url("/grpc/pkg.Svc/M"), &grpc, b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), Some("8"), "{:?}", r.headers);
    assert_eq!(r.header("content-type"), Some("application/grpc"));

    // Metrics, in Prometheus form too.
    assert_eq!(stat(&envoy, "limited.login-per-ip", 1), 1);
    assert_eq!(stat(&envoy, "shadow_limited.shadow-all", 2), 2);
    assert_eq!(stat(&envoy, "limited.grpc-all", 1), 1);
    // 3 logins, the first /shadow, the first gRPC call.
    assert_eq!(stat(&envoy, "allowed", 5), 5);
    let prom = envoy.admin_get("/stats/prometheus");
    for name in [
        "palisade_ratelimit_limited_login_per_ip",
        "palisade_ratelimit_allowed",
        "palisade_ratelimit_evicted",
        "palisade_ratelimit_denied_rate_limited",
        "palisade_ratelimit_global_error",
    ] {
        assert!(
            prom.lines().any(|l| l.starts_with(name)),
            "{name} missing from /stats/prometheus"
        );
    }
}

/// A proxy-wasm fixture that copies `source.address` (as wasm filters read
/// it) into the request header `x-probe-source`, for the upstream to see.
fn source_probe() -> common::Fixture {
    let imports = r#"(import "env" "proxy_get_property"
    (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value"
    (func $add_header (param i32 i32 i32 i32 i32) (result i32)))
  (data (i32.const 16) "source\00address")
  (data (i32.const 48) "x-probe-source")"#;
    let handlers = r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (i32.eqz (call $get_property (i32.const 16) (i32.const 14) (i32.const 1000) (i32.const 1004)))
      (then (drop (call $add_header (i32.const 0) (i32.const 48) (i32.const 14)
        (i32.load (i32.const 1000)) (i32.load (i32.const 1004))))))
    (i32.const 0))"#;
    common::module("source_probe", imports, true, handlers)
}

const LOGIN_PER_IP: &str = r#"{"rules": [{"match": {"prefix": "/login"},
    "limits": [{"name": "login-per-ip", "key": ["client_ip"], "requests": 3, "per_s": 60}]}]}"#;

/// Six logins, each with a fresh X-Forwarded-For; the statuses and what
/// the upstream saw as the filter's `source.address`.
fn rotating_logins(envoy: &Envoy, upstream: &Upstream) -> (Vec<u16>, Vec<String>) {
    let mut statuses = Vec::new();
    let mut sources = Vec::new();
    for i in 1..=6 {
        let xff = format!("203.0.113.{i}");
        let r = request(
            "POST",
            &envoy.url("/login"),
            &[("x-forwarded-for", &xff)],
            b"{}",
        );
        statuses.push(r.status);
        if r.status == 200 {
            let seen = upstream.last().unwrap();
            sources.push(seen.header("x-probe-source").unwrap_or("").to_string());
        }
    }
    (statuses, sources)
}

/// The filter's spoofable-address warnings in Envoy's log, once `at_least`
/// are there (or WAIT passed: the log is written asynchronously).
fn warnings(envoy: &Envoy, at_least: usize) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        let n = envoy
            .log()
            .lines()
            .filter(|l| {
                l.contains("client_ip limits count the address") && l.contains("use_remote_address")
            })
            .count();
        if n >= at_least || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Envoy's own default HCM (`use_remote_address: false`,
/// `xff_num_trusted_hops: 0`): `source.address` is the last entry of the
/// client's X-Forwarded-For, without a port. A client rotating it is never
/// limited there (a filter cannot fix that); the filter says so, once per
/// VM, and counts every such request.
#[test]
fn under_envoys_default_hcm_a_rotated_forwarded_for_bypasses_client_ip_and_is_reported() {
    let upstream = Upstream::start();
    let probe = source_probe();
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .wasm(WasmFilter::new("probe", &probe.path))
            .wasm(ratelimit(&serde_json::from_str(LOGIN_PER_IP).unwrap())),
    );
    let (statuses, sources) = rotating_logins(&envoy, &upstream);
    assert_eq!(
        statuses, [200; 6],
        "the bypass: each header is a new client"
    );
    let expected: Vec<String> = (1..=6).map(|i| format!("203.0.113.{i}:0")).collect();
    assert_eq!(sources, expected, "source.address is the header's, port 0");
    assert_eq!(stat(&envoy, "client_ip_from_xff", 6), 6);
    assert_eq!(warnings(&envoy, 1), 1, "{}", envoy.log());
    let line = envoy
        .log()
        .lines()
        .find(|l| l.contains("client_ip limits count the address"))
        .unwrap_or_default()
        .to_string();
    assert!(line.contains("xff_num_trusted_hops"), "{line}");
    assert!(line.contains("[warning]"), "{line}");
}

/// `use_remote_address: true`, as `palisade render envoy` writes it: the
/// peer is the client, a rotated header changes nothing, nothing is reported.
#[test]
fn with_use_remote_address_a_rotated_forwarded_for_is_limited() {
    let upstream = Upstream::start();
    let probe = source_probe();
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .hcm_extra(json!({"use_remote_address": true}))
            .wasm(WasmFilter::new("probe", &probe.path))
            .wasm(ratelimit(&serde_json::from_str(LOGIN_PER_IP).unwrap())),
    );
    let (statuses, sources) = rotating_logins(&envoy, &upstream);
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    assert!(
        sources
            .iter()
            .all(|s| s.starts_with("127.0.0.1:") && !s.ends_with(":0")),
        "{sources:?}"
    );
    assert_eq!(stat(&envoy, "limited.login-per-ip", 3), 3);
    assert_eq!(envoy.counter(&format!("{STAT}client_ip_from_xff")), Some(0));
    assert_eq!(warnings(&envoy, 0), 0, "{}", envoy.log());
}

#[test]
fn x_ratelimit_style_and_a_bad_config_refused_naming_the_field() {
    let upstream = Upstream::start();
    let config = json!({
        "response_headers": "x-ratelimit",
        "rules": [{"limits": [{"name": "k", "key": [{"header": "x-api-key"}], "requests": 2, "per_s": 10}]}]
    });
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .wasm(ratelimit(&config)),
    );
    let key = [("x-api-key", "abc")];
    let r = get(&envoy.url("/"), &key);
    assert_eq!(r.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("1"));
    assert_eq!(r.header("x-ratelimit-reset"), Some("5"));
    assert!(r.header("ratelimit").is_none());
    assert_eq!(get(&envoy.url("/"), &key).status, 200);
    assert_eq!(get(&envoy.url("/"), &key).status, 429);
    // Without the header the limit is skipped (on_missing_key: skip).
    assert_eq!(get(&envoy.url("/"), &[]).status, 200);
    drop(envoy);

    let bad = json!({"rules": [{"limits": [{"name": "k", "key": [], "requests": 2, "per_s": 0}]}]});
    let err = Envoy::try_start(&EnvoyConfig::new().upstream(&upstream).wasm(ratelimit(&bad)))
        .err()
        .expect("Envoy refused the config");
    assert!(
        err.contains("rules[0].limits[0].per_s: must be > 0"),
        "{err}"
    );
}

#[test]
fn exactly_n_requests_succeed_across_two_workers_every_round() {
    exactly_n_across(2);
}

#[test]
fn exactly_n_requests_succeed_across_four_workers_every_round() {
    exactly_n_across(4);
}

/// 16 client threads send 128 requests at once, limit 40, 4 rounds:
/// exactly 40 succeed each time, and every worker served connections.
fn exactly_n_across(workers: u32) {
    let config = json!({
        "rules": [{"limits": [{"name": "round", "key": [{"header": "x-round"}], "requests": 40, "per_s": 3600}]}]
    });
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .concurrency(workers)
            .route(Route::prefix("direct", "/").direct(200, "ok"))
            .wasm(ratelimit(&config)),
    );
    for round in 0..4 {
        let value = format!("round-{round}");
        let counts = burst(&envoy.url("/"), &[("x-round", &value)], 16, 8);
        assert_eq!(counts.get(&200), Some(&40), "round {round}: {counts:?}");
        assert_eq!(counts.get(&429), Some(&88), "round {round}: {counts:?}");
    }
    // Every worker served connections: the count really was shared.
    let stats = envoy.stats();
    for worker in (0..workers).map(|w| format!("worker_{w}")) {
        let served: u64 = stats
            .lines()
            .filter(|l| l.contains(&format!("{worker}.downstream_cx_total")))
            .filter_map(|l| l.split(": ").nth(1)?.trim().parse::<u64>().ok())
            .sum();
        assert!(served > 0, "{worker} served nothing");
    }
}

#[test]
fn a_million_keys_keep_memory_bounded_and_the_honest_clients_limit_working() {
    const KEYS: u64 = 1_000_000;
    const THREADS: u64 = 8;
    // Envoy closes a connection that pipelines past a direct response:
    // one request in flight per keep-alive connection.
    const BATCH: u64 = 1;
    let config = json!({
        "rules": [{"limits": [{"name": "per-key", "key": [{"header": "x-api-key"}], "requests": 5, "per_s": 3600}]}]
    });
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .concurrency(2)
            .route(Route::prefix("direct", "/").direct(200, "ok"))
            .wasm(ratelimit(&config)),
    );
    let addr = envoy.listener_addr();
    let pid = envoy.pid().expect("a local Envoy process");
    let honest = [("x-api-key", "honest-client")];
    for _ in 0..5 {
        assert_eq!(get(&envoy.url("/"), &honest).status, 200);
    }
    assert_eq!(get(&envoy.url("/"), &honest).status, 429);
    // Warm both workers' VMs and allocators before the baseline.
    let mut warm = Pipeline::connect(addr).unwrap();
    let warmup: Vec<Vec<(String, String)>> = (0..2000)
        .map(|i| vec![("x-api-key".to_string(), format!("warm-{i}"))])
        .collect();
    for chunk in warmup.chunks(1) {
        warm.send("/", chunk).unwrap();
    }
    let before = rss_bytes(pid).unwrap();

    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let honest_checks = Arc::new(AtomicU64::new(0));
    let checker = {
        let done = Arc::clone(&done);
        let checks = Arc::clone(&honest_checks);
        let url = envoy.url("/");
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let r = try_request("GET", &url, &[("x-api-key", "honest-client")], b"");
                let status = r.map(|r| r.status).unwrap_or(0);
                assert_eq!(
                    status, 429,
                    "the honest client's limit stopped working mid-flood"
                );
                checks.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let flooders: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let mut conn = Pipeline::connect(addr).unwrap();
                let mut ok = 0u64;
                let mut i = t;
                while i < KEYS {
                    let batch: Vec<Vec<(String, String)>> = (0..BATCH)
                        .map(|j| i + j * THREADS)
                        .take_while(|k| *k < KEYS)
                        .map(|k| vec![("x-api-key".to_string(), format!("flood-{k}"))])
                        .collect();
                    let n = batch.len() as u64;
                    let statuses = conn.send("/", &batch).unwrap();
                    ok += statuses.iter().filter(|s| **s == 200).count() as u64;
                    i += n * THREADS;
                }
                ok
            })
        })
        .collect();
    let admitted: u64 = flooders.into_iter().map(|h| h.join().unwrap()).sum();
    done.store(true, Ordering::SeqCst);
    checker.join().unwrap();
    let elapsed = started.elapsed();
    let after = rss_bytes(pid).unwrap();
    let growth = after.saturating_sub(before);
    eprintln!(
        "ratelimit flood: {KEYS} keys in {:.1} s, RSS {} MiB -> {} MiB (+{:.1} MiB), {} honest checks",
        elapsed.as_secs_f64(),
        before >> 20,
        after >> 20,
        growth as f64 / 1048576.0,
        honest_checks.load(Ordering::SeqCst)
    );
    // Every flooding key was new: each one's first request is admitted.
    assert_eq!(admitted, KEYS);
    assert!(growth <= 64 << 20, "RSS grew by {growth} bytes");
    assert!(honest_checks.load(Ordering::SeqCst) > 0);
    assert_eq!(get(&envoy.url("/"), &honest).status, 429);
    let fresh = [("x-api-key", "after-the-flood")];
    assert_eq!(get(&envoy.url("/"), &fresh).status, 200);
    assert!(
        stat(&envoy, "evicted", 1) > 0,
        "the flood must have evicted buckets"
    );
}

/// A proxy-wasm fixture standing for the JWT filter: it records the claims
/// `{"sub": "fixture-user"}` as the property `palisade_jwt_claims` on every
/// request, as the JWT filter does after verifying a token.
fn claims_fixture() -> common::Fixture {
    let claims = r#"{"sub":"fixture-user"}"#;
    let imports = format!(
        r#"(import "env" "proxy_set_property"
    (func $set_property (param i32 i32 i32 i32) (result i32)))
  (data (i32.const 16) "palisade_jwt_claims")
  (data (i32.const 64) "{escaped}")"#,
        escaped = claims.replace('"', "\\22"),
    );
    let handlers = format!(
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $set_property (i32.const 16) (i32.const 19) (i32.const 64) (i32.const {len})))
    (i32.const 0))"#,
        len = claims.len()
    );
    common::module("claims_fixture", &imports, true, &handlers)
}

#[test]
fn limits_by_subject_read_the_claims_another_wasm_filter_recorded() {
    let fixture = claims_fixture();
    let config = json!({
        "rules": [{"limits": [{"name": "per-subject", "key": [{"claim": "sub"}], "requests": 2, "per_s": 60}]}]
    });
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .route(Route::prefix("direct", "/").direct(200, "ok"))
            .wasm(WasmFilter::new("fixture.jwt", &fixture.path))
            .wasm(ratelimit(&config)),
    );
    // A forged claim header is not a verified claim: the fixture's subject counts.
    let forged = [("x-jwt-sub", "someone-else")];
    assert_eq!(get(&envoy.url("/"), &forged).status, 200);
    assert_eq!(get(&envoy.url("/"), &[]).status, 200);
    let r = get(&envoy.url("/"), &forged);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(stat(&envoy, "limited.per-subject", 1), 1);
}

/// An Envoy asking the RLS service at `rls_port`, with `on_error`.
fn global_envoy(rls_port: u16, on_error: &str, upstream: &Upstream) -> Envoy {
    let config = json!({
        "mode": "global",
        "global": {"cluster": "rls", "domain": "palisade-test", "timeout_ms": 300, "on_error": on_error},
        "rules": [{"limits": [{"name": "shared", "key": [{"header": "x-round"}], "requests": 30, "per_s": 3600}]}]
    });
    Envoy::start(
        &EnvoyConfig::new()
            .upstream(upstream)
            .concurrency(2)
            .bootstrap_extra(clusters_extra(vec![
                cluster("echo", upstream.port(), false),
                cluster("rls", rls_port, true),
            ]))
            .wasm(ratelimit(&config)),
    )
}

#[test]
fn two_envoys_share_one_global_limit_through_redis_and_failures_follow_on_error() {
    assert!(
        redis_available(),
        "redis-server is not installed: apt-get install -y redis-server"
    );
    let mut redis = Redis::start();
    let mut rls = RlsServer::start(&redis.url());
    let upstream = Upstream::start();
    let deny = global_envoy(rls.port(), "deny", &upstream);
    let local = global_envoy(rls.port(), "local", &upstream);

    for round in 0..2 {
        let value = format!("global-{round}");
        let h = [("x-round", value.as_str())];
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| burst(&deny.url("/"), &h, 8, 6));
            let b = s.spawn(|| burst(&local.url("/"), &h, 8, 6));
            (a.join().unwrap(), b.join().unwrap())
        });
        let ok = a.get(&200).unwrap_or(&0) + b.get(&200).unwrap_or(&0);
        let limited = a.get(&429).unwrap_or(&0) + b.get(&429).unwrap_or(&0);
        assert_eq!((ok, limited), (30, 66), "round {round}: {a:?} {b:?}");
    }
    assert!(rls.calls() >= 192);
    let r = get(&deny.url("/"), &[("x-round", "global-0")]);
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());

    // Redis goes down: the service answers UNAVAILABLE.
    redis.stop();
    let fresh = [("x-round", "after-redis")];
    let t = Instant::now();
    assert_eq!(get(&deny.url("/"), &fresh).status, 503);
    let statuses: Vec<u16> = (0..32)
        .map(|_| get(&local.url("/"), &fresh).status)
        .collect();
    assert!(t.elapsed() < Duration::from_secs(20), "requests got stuck");
    // Local fallback: 30 per worker bucket table, shared by both workers.
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        30,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
    assert!(stat(&deny, "global_error", 1) >= 1);
    assert!(stat(&local, "global_fallback_local", 32) >= 32);

    // The service itself goes down: connection refused, same policy.
    rls.stop();
    let t = Instant::now();
    let r = get(&deny.url("/"), &[("x-round", "after-rls")]);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(
        get(&local.url("/"), &[("x-round", "after-rls")]).status,
        200
    );
    assert!(t.elapsed() < Duration::from_secs(10), "requests got stuck");
    let prom = deny.admin_get("/stats/prometheus");
    assert!(prom.contains("palisade_ratelimit_global_error"));
}

/// Lockout after failures: `count` spends a token only on 401/403 answers.
#[test]
fn failed_logins_lock_the_client_out_until_the_window_refills() {
    let upstream = Upstream::start();
    // Three failures per 9 s: a token comes back every 3 s.
    let config = json!({"rules": [{"match": {"prefix": "/login", "methods": ["POST"]},
        "limits": [{"name": "login-failures", "key": [{"header": "x-api-key"}],
                    "requests": 3, "per_s": 9, "count": {"response_status": [401, 403]}}]}]});
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .wasm(ratelimit(&config)),
    );
    let login = envoy.url("/login");
    let right = |client: &'static str| [("x-api-key", client)];
    // The upstream answers 401 to a wrong password.
    let wrong = |client: &'static str| [("x-api-key", client), ("x-echo-status", "401")];
    for _ in 0..8 {
        let r = request("POST", &login, &right("alice"), b"{}");
        assert_eq!(r.status, 200, "successes spend nothing: {}", r.text());
    }
    for _ in 0..3 {
        assert_eq!(request("POST", &login, &wrong("alice"), b"{}").status, 401);
    }
    upstream.clear_received();
    let r = request("POST", &login, &right("alice"), b"{}");
    assert_eq!(
        r.status,
        429,
        "locked out despite the right password: {}",
        r.text()
    );
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry), "{retry}");
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(r
        .header("ratelimit")
        .unwrap()
        .starts_with("\"login-failures\";r=0;t="));
    assert!(
        upstream.received().is_empty(),
        "a locked-out request reached the upstream"
    );
    // Another client is not affected.
    assert_eq!(request("POST", &login, &right("bob"), b"{}").status, 200);
    assert_eq!(request("POST", &login, &wrong("bob"), b"{}").status, 401);
    // When a token is back: one more attempt, and only one failure.
    std::thread::sleep(Duration::from_secs(retry));
    assert_eq!(request("POST", &login, &right("alice"), b"{}").status, 200);
    assert_eq!(request("POST", &login, &wrong("alice"), b"{}").status, 401);
    assert_eq!(request("POST", &login, &right("alice"), b"{}").status, 429);
    assert_eq!(stat(&envoy, "counted", 5), 5);
    assert_eq!(stat(&envoy, "refunded", 10), 10);
    assert_eq!(stat(&envoy, "limited.login-failures", 2), 2);
}

/// Sends `n` requests at once to `path` (a fresh connection each); statuses seen.
fn concurrent(envoy: &Envoy, path: &str, headers: &[(&str, &str)], n: usize) -> BTreeMap<u16, u64> {
    burst(&envoy.url(path), headers, n, 1)
}

/// Waits until every place taken in flight was given back.
fn all_released(envoy: &Envoy) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let admitted = envoy
            .counter(&format!("{STAT}in_flight_admitted"))
            .unwrap_or(0);
        let released = envoy
            .counter(&format!("{STAT}in_flight_released"))
            .unwrap_or(0);
        if admitted == released || Instant::now() > deadline {
            assert_eq!(admitted, released, "places still held");
            return admitted;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Concurrency limits: at most 4 requests in flight, however they end.
#[test]
fn max_in_flight_admits_four_at_once_and_client_resets_never_leak_a_place() {
    let upstream = Upstream::start();
    let config = json!({"rules": [
        {"match": {"prefix": "/backend"}, "limits": [{"name": "backend", "key": [], "max_in_flight": 4}]},
        {"match": {"prefix": "/per-client"},
         "limits": [{"name": "per-client", "key": [{"header": "x-api-key"}], "max_in_flight": 4}]}]});
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .concurrency(2)
            .upstream(&upstream)
            .route(Route::prefix("timeout", "/backend/timeout").timeout(Duration::from_millis(300)))
            .route(Route::prefix("default", "/"))
            .wasm(ratelimit(&config)),
    );
    let slow = [("x-echo-delay-ms", "1500")];
    // Upstream timeouts (Envoy's own 504) give their places back too.
    let hung = [("x-echo-delay-ms", "3000")];
    let counts = concurrent(&envoy, "/backend/timeout", &hung, 4);
    assert_eq!(counts.get(&504), Some(&4), "{counts:?}");
    assert_eq!(all_released(&envoy), 4);
    for round in 0..2 {
        let counts = concurrent(&envoy, "/backend", &slow, 12);
        assert_eq!(counts.get(&200), Some(&4), "round {round}: {counts:?}");
        assert_eq!(counts.get(&503), Some(&8), "round {round}: {counts:?}");
        all_released(&envoy);
    }
    let keyed = [("x-echo-delay-ms", "1500"), ("x-api-key", "k1")];
    let counts = concurrent(&envoy, "/per-client", &keyed, 12);
    assert_eq!(counts.get(&200), Some(&4), "{counts:?}");
    assert_eq!(counts.get(&429), Some(&8), "{counts:?}");
    let r = get(&envoy.url("/per-client"), &[("x-api-key", "k2")]);
    assert_eq!(r.status, 200, "another client has its own places");
    let admitted_before = all_released(&envoy);

    // 200 requests admitted, then abandoned by their clients while the
    // upstream still works on them: 50 waves of 4.
    let addr = envoy.listener_addr();
    let raw = b"GET /backend HTTP/1.1\r\nhost: test\r\nx-echo-delay-ms: 3000\r\n\r\n";
    for wave in 0..50 {
        let conns: Vec<std::net::TcpStream> = (0..4)
            .map(|_| {
                let mut c = std::net::TcpStream::connect(addr).unwrap();
                std::io::Write::write_all(&mut c, raw).unwrap();
                c
            })
            .collect();
        // Each one holds a place once the filter has seen it.
        let deadline = Instant::now() + WAIT;
        let want = admitted_before + 4 * (wave + 1);
        while envoy
            .counter(&format!("{STAT}in_flight_admitted"))
            .unwrap_or(0)
            < want
        {
            assert!(Instant::now() < deadline, "wave {wave}: not admitted");
            std::thread::sleep(Duration::from_millis(5));
        }
        for c in conns {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        assert_eq!(all_released(&envoy), want, "wave {wave}");
    }
    let counts = concurrent(&envoy, "/backend", &slow, 12);
    assert_eq!(counts.get(&200), Some(&4), "after 200 resets: {counts:?}");
    assert_eq!(counts.get(&503), Some(&8), "after 200 resets: {counts:?}");
    all_released(&envoy);
    assert_eq!(
        envoy.counter(&format!("{STAT}in_flight_release_failed")),
        Some(0)
    );
    assert!(stat(&envoy, "in_flight_refused", 24) >= 24);
}
