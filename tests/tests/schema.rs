//! The schema filter inside a real Envoy 1.40: an OpenAPI pet store enforced
//! on the wire, what reaches the upstream and what the client gets back.
//!
//! Build first: `cargo build --release --target wasm32-wasip1 -p palisade-schema`
//! and copy `palisade_schema.wasm` into `dist/` (`make build` does both).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use palisade_tests::client::raw_http;
use palisade_tests::*;
use serde_json::{json, Value};

const STAT: &str = "wasmcustom.palisade.schema.";
const WAIT: Duration = Duration::from_secs(5);

fn petstore() -> Value {
    let text =
        std::fs::read_to_string(repo_root().join("filters/schema/tests/fixtures/petstore.json"))
            .expect("read the pet store fixture");
    serde_json::from_str(&text).expect("the pet store fixture is JSON")
}

/// The two ways the filter is deployed on Envoy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `hold_headers: true` with the Wasm filter's
    /// `allow_on_headers_stop_iteration`: the headers wait for the body's
    /// verdict, which is published to the upstream.
    Held,
    /// The filter's defaults under Envoy's defaults (no flag, as Istio's
    /// WasmPlugin deploys it): the headers go on, the body is buffered and
    /// judged before the upstream gets it.
    Defaults,
}

const MODES: [Mode; 2] = [Mode::Held, Mode::Defaults];

/// The filter deployed in `mode`.
fn filter_in(mode: Mode, config: &Value) -> WasmFilter {
    match mode {
        Mode::Held => {
            let mut config = config.clone();
            config["hold_headers"] = json!(true);
            WasmFilter::new("schema", dist_wasm("schema"))
                .config_json(&config)
                .allow_on_headers_stop_iteration(true)
        }
        Mode::Defaults => WasmFilter::new("schema", dist_wasm("schema")).config_json(config),
    }
}

/// The held deployment (`hold_headers: true` and Envoy's flag).
fn schema_filter(config: &Value) -> WasmFilter {
    filter_in(Mode::Held, config)
}

fn start_in(mode: Mode, upstream: &Upstream, config: &Value) -> Envoy {
    Envoy::start(
        &EnvoyConfig::new()
            .upstream(upstream)
            .wasm(filter_in(mode, config)),
    )
}

fn start(upstream: &Upstream, config: &Value) -> Envoy {
    start_in(Mode::Held, upstream, config)
}

fn store_config() -> Value {
    json!({
        "unmatched": "deny",
        "max_body_bytes": 65536,
        "openapi": petstore(),
        // A declared route with no checks: its bodies stream untouched.
        "rules": [{"match": {"prefix": "/bulk/"}}]
    })
}

fn post(envoy: &Envoy, path: &str, content_type: &str, body: &[u8]) -> Response {
    request(
        "POST",
        &envoy.url(path),
        &[("content-type", content_type)],
        body,
    )
}

fn stat(envoy: &Envoy, event: &str, at_least: u64) -> u64 {
    envoy
        .wait_for_counter(&format!("{STAT}{event}"), at_least, WAIT)
        .unwrap_or(0)
}

fn problem_type(r: &Response) -> String {
    r.json()["type"].as_str().unwrap_or("").to_string()
}

/// `(in, pointer, keyword)` of each reported violation, sorted.
fn violations(r: &Response) -> Vec<(String, String, String)> {
    let mut out: Vec<_> = r.json()["errors"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e["in"].as_str().unwrap_or("").to_string(),
                e["pointer"].as_str().unwrap_or("").to_string(),
                e["keyword"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn v(place: &str, pointer: &str, keyword: &str) -> (String, String, String) {
    (place.into(), pointer.into(), keyword.into())
}

fn assert_problem(r: &Response, status: u16, kind: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(
        problem_type(r),
        format!("urn:palisade:problem:{kind}"),
        "{}",
        r.text()
    );
    assert_eq!(r.header("x-palisade-denied-by"), Some("schema"));
    let id = r.json()["request_id"].as_str().unwrap_or("").to_string();
    assert!(!id.is_empty(), "problem without request id: {}", r.text());
    assert_eq!(r.header("x-request-id"), Some(id.as_str()));
}

#[test]
fn valid_requests_reach_the_upstream_with_their_body_intact() {
    for mode in MODES {
        valid_requests_reach_the_upstream(mode);
    }
}

fn valid_requests_reach_the_upstream(mode: Mode) {
    let upstream = Upstream::start();
    let envoy = start_in(mode, &upstream, &store_config());
    let body = br#"{"name": "Rex", "tag": null, "age": 3, "owner": {"email": "a@example.com"}}"#;
    let r = post(&envoy, "/pets", "application/json", body);
    assert_eq!(r.status, 200, "{}", r.text());
    let got = upstream.last().expect("the upstream got the request");
    assert_eq!(got.body, body.to_vec(), "{mode:?}");
    // Only held headers can still carry the body's verdict.
    let published = (mode == Mode::Held).then_some("allow");
    assert_eq!(got.header("x-palisade-schema"), published, "{mode:?}");
    assert_eq!(
        got.header("content-length"),
        Some(body.len().to_string().as_str())
    );

    // Query values coerced to the schema's types: limit is an integer, tags an array.
    let r = get(&envoy.url("/pets?limit=10&tags=a&tags=b&status=sold"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        upstream.last().unwrap().path,
        "/pets?limit=10&tags=a&tags=b&status=sold"
    );
    let r = get(&envoy.url("/pets/mine"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request(
        "PUT",
        &envoy.url("/pets/3"),
        &[("content-type", "application/json; charset=utf-8")],
        br#"{"id": 3, "name": "Rex"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn contract_violations_are_refused_before_the_upstream() {
    for mode in MODES {
        contract_violations_are_refused(mode);
    }
}

fn contract_violations_are_refused(mode: Mode) {
    let upstream = Upstream::start();
    let envoy = start_in(mode, &upstream, &store_config());

    // Body against the schema: pointers and keywords, never the values sent.
    let r = post(
        &envoy,
        "/stores/eu-001/orders",
        "application/json",
        br#"{"items": [{"sku": "<script>alert(1)</script>", "qty": 1000}], "note": "s3cr3t"}"#,
    );
    assert_problem(&r, 400, "schema-violation");
    assert_eq!(
        violations(&r),
        vec![
            v("body", "/items/0/qty", "maximum"),
            v("body", "/items/0/sku", "pattern")
        ]
    );
    for echoed in ["<script>", "alert", "1000", "s3cr3t"] {
        assert!(!r.text().contains(echoed), "{echoed} echoed: {}", r.text());
    }

    // Query and path parameters, coerced then validated.
    let r = get(&envoy.url("/pets?limit=ten&status=lost"), &[]);
    assert_problem(&r, 400, "schema-violation");
    assert_eq!(
        violations(&r),
        vec![v("query", "/limit", "type"), v("query", "/status", "enum")]
    );
    let r = get(&envoy.url("/pets?limit=101"), &[]);
    assert_eq!(violations(&r), vec![v("query", "/limit", "maximum")]);
    let r = get(&envoy.url("/pets/0"), &[]);
    assert_eq!(violations(&r), vec![v("path", "/petId", "minimum")]);

    // Not JSON, duplicate keys, a JSON bomb, a missing body.
    let r = post(&envoy, "/pets", "application/json", b"{\"name\": \"Rex\"");
    assert_problem(&r, 400, "malformed-json");
    let r = post(
        &envoy,
        "/pets",
        "application/json",
        br#"{"name": "Rex", "name": 1}"#,
    );
    assert_problem(&r, 400, "malformed-json");
    assert!(r.json()["detail"]
        .as_str()
        .unwrap_or("")
        .contains("repeats a key"));
    let bomb = format!("{}1{}", "[".repeat(65), "]".repeat(65));
    let r = post(&envoy, "/pets", "application/json", bomb.as_bytes());
    assert_problem(&r, 400, "json-limit-exceeded");
    let r = request(
        "POST",
        &envoy.url("/pets"),
        &[("content-type", "application/json")],
        b"",
    );
    assert_problem(&r, 400, "body-required");

    // Content types.
    let r = post(&envoy, "/pets", "text/plain", b"{}");
    assert_problem(&r, 415, "unsupported-media-type");
    assert_eq!(r.header("accept-post"), Some("application/json"));

    // Paths and methods the document does not declare.
    let r = get(&envoy.url("/owners"), &[]);
    assert_problem(&r, 404, "unknown-path");
    let r = request("POST", &envoy.url("/pets/7"), &[], b"");
    assert_problem(&r, 405, "method-not-allowed");
    assert_eq!(r.header("allow"), Some("GET, PUT, DELETE, PATCH"));

    assert!(
        upstream.received().is_empty(),
        "{mode:?}: refused requests reached the upstream"
    );
    assert_eq!(stat(&envoy, "denied.invalid_query", 2), 2);
    assert_eq!(stat(&envoy, "denied.invalid_body", 1), 1);
    assert_eq!(stat(&envoy, "denied.duplicate_key", 1), 1);
    assert_eq!(stat(&envoy, "denied.too_deep", 1), 1);
    assert_eq!(stat(&envoy, "denied.method_not_allowed", 1), 1);
}

/// Sends a chunked request (no content-length) in pieces and reads the answer.
fn chunked_post(
    envoy: &Envoy,
    path: &str,
    content_type: &str,
    chunks: usize,
    chunk: &[u8],
) -> RawResponse {
    let mut stream = TcpStream::connect(envoy.listener_addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: {content_type}\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    let _ = stream.write_all(head.as_bytes());
    for _ in 0..chunks {
        let mut piece = format!("{:x}\r\n", chunk.len()).into_bytes();
        piece.extend_from_slice(chunk);
        piece.extend_from_slice(b"\r\n");
        // Envoy may answer (and close) before everything was sent.
        if stream.write_all(&piece).is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .as_bytes()
        .to_vec();
    RawResponse {
        raw,
        status,
        body,
        ..RawResponse::default()
    }
}

#[test]
fn oversized_bodies_get_413_by_content_length_and_while_streaming() {
    for mode in MODES {
        oversized_bodies_get_413(mode);
    }
}

fn oversized_bodies_get_413(mode: Mode) {
    let upstream = Upstream::start();
    let envoy = start_in(mode, &upstream, &store_config());
    let pad = "x".repeat(70_000);
    let big = format!(r#"{{"name": "Rex", "tag": "{pad}"}}"#);
    let r = post(&envoy, "/pets", "application/json", big.as_bytes());
    assert_problem(&r, 413, "body-too-large");
    assert_eq!(r.json()["limit"], 65536);

    // Chunked: no content-length, the limit is hit while buffering.
    let r = chunked_post(&envoy, "/pets", "application/json", 40, &[b' '; 4096]);
    assert_eq!(r.status, Some(413), "{}", String::from_utf8_lossy(&r.raw));
    assert!(String::from_utf8_lossy(&r.body).contains("body-too-large"));
    // Chunked and small enough: validated as usual.
    let r = chunked_post(
        &envoy,
        "/pets",
        "application/json",
        1,
        br#"{"name": "Rex"}"#,
    );
    assert_eq!(r.status, Some(200), "{}", String::from_utf8_lossy(&r.raw));
    assert_eq!(
        upstream.last().map(|g| g.body),
        Some(br#"{"name": "Rex"}"#.to_vec())
    );
    assert_eq!(stat(&envoy, "denied.body_too_large", 2), 2);
}

#[test]
fn bodies_not_validated_stream_through_untouched() {
    let upstream = Upstream::start();
    let envoy = start(&upstream, &store_config());
    // 3 MB: more than the filter's max_body_bytes and Envoy's 1 MiB buffer
    // limit, so it only arrives whole if nothing buffered it.
    let len = 3_000_000;
    let body = huge_body(len);
    for (path, content_type) in [
        ("/bulk/import", "application/octet-stream"),
        ("/pets/4/photos", "image/png"),
    ] {
        upstream.clear_received();
        let r = post(&envoy, path, content_type, &body);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let got = upstream.last().expect("the upstream got the body");
        assert_eq!(got.body.len(), len, "{path}");
        assert_eq!(sha256_hex(&got.body), sha256_hex(&body), "{path}");
    }
    // Chunked as well.
    upstream.clear_received();
    let r = chunked_post(
        &envoy,
        "/bulk/stream",
        "application/json",
        64,
        &huge_body(16384),
    );
    assert_eq!(r.status, Some(200), "{}", String::from_utf8_lossy(&r.raw));
    let expected: Vec<u8> = (0..64).flat_map(|_| huge_body(16384)).collect();
    assert_eq!(
        sha256_hex(&upstream.last().unwrap().body),
        sha256_hex(&expected)
    );
}

#[test]
fn dry_run_lets_violations_through_and_counts_them() {
    let upstream = Upstream::start();
    let mut config = store_config();
    config["dry_run"] = json!(true);
    let envoy = start(&upstream, &config);
    let r = post(&envoy, "/pets", "application/json", br#"{"name": 42}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let got = upstream.last().expect("forwarded in dry run");
    assert_eq!(got.body, br#"{"name": 42}"#.to_vec());
    assert_eq!(
        got.header("x-palisade-schema"),
        Some("shadow-deny;reason=invalid_body")
    );
    let r = get(&envoy.url("/owners"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(stat(&envoy, "shadow_denied.invalid_body", 1), 1);
    assert_eq!(stat(&envoy, "shadow_denied.unknown_path", 1), 1);
    assert_eq!(
        envoy
            .counter(&format!("{STAT}denied.invalid_body"))
            .unwrap_or(0),
        0
    );
    assert!(envoy
        .log()
        .contains("dry_run: would deny with 400 (invalid_body)"));
}

#[test]
fn explicit_rules_with_json_schema_and_hostile_bodies() {
    for mode in MODES {
        explicit_rules_with_hostile_bodies(mode);
    }
}

fn explicit_rules_with_hostile_bodies(mode: Mode) {
    let upstream = Upstream::start();
    let config = json!({
        "limits": {"max_members": 3, "max_string_bytes": 16},
        "rules": [{
            "match": {"path_template": "/orders/{id}", "methods": ["PUT"]},
            "path_params": {"type": "object", "properties": {"id": {"type": "integer"}}},
            "query": {"type": "object", "properties": {"dry_run": {"type": "boolean"}}, "additionalProperties": false},
            "body": {"schema": {"$schema": "http://json-schema.org/draft-07/schema#",
                                "type": "object", "required": ["qty"],
                                "properties": {"qty": {"type": "integer", "minimum": 1}}}}
        }]
    });
    let envoy = start_in(mode, &upstream, &config);
    let put = |path: &str, body: &[u8]| {
        request(
            "PUT",
            &envoy.url(path),
            &[("content-type", "application/json")],
            body,
        )
    };
    assert_eq!(put("/orders/7?dry_run=true", br#"{"qty": 1}"#).status, 200);
    assert_eq!(
        violations(&put("/orders/x", br#"{"qty": 1}"#)),
        vec![v("path", "/id", "type")]
    );
    assert_eq!(
        violations(&put("/orders/7?debug=1", br#"{"qty": 1}"#)),
        vec![v("query", "", "additionalProperties")]
    );
    assert_eq!(
        violations(&put("/orders/7", br#"{"qty": 0}"#)),
        vec![v("body", "/qty", "minimum")]
    );
    let r = put("/orders/7", br#"{"qty": 1, "a": 1, "b": 2, "c": 3}"#);
    assert_problem(&r, 400, "json-limit-exceeded");
    let r = put(
        "/orders/7",
        br#"{"qty": 1, "note": "a string that is far too long"}"#,
    );
    assert_problem(&r, 400, "json-limit-exceeded");
    let r = put("/orders/7", b"{\"qty\": 1, \"q\\u0074y\": 2}");
    assert_problem(&r, 400, "malformed-json");
    // Not covered by a rule (unmatched: allow): anything goes.
    assert_eq!(
        request(
            "PUT",
            &envoy.url("/other"),
            &[("content-type", "application/json")],
            b"{{"
        )
        .status,
        200
    );
    // A raw request with invalid UTF-8 in the body.
    let raw = raw_http(
        envoy.listener_addr(),
        &palisade_tests::client::raw_request(
            "PUT",
            "/orders/7",
            &[("content-type", "application/json")],
            b"{\"qty\": \"\xff\"}",
        ),
    );
    assert_eq!(raw.status, Some(400));
    assert_eq!(
        upstream.received().len(),
        2,
        "{mode:?}: only the two valid requests went through"
    );
}

#[test]
fn a_schema_that_does_not_compile_refuses_the_config_naming_the_rule() {
    let upstream = Upstream::start();
    let config = json!({"rules": [
        {"match": {"path": "/a"}, "body": {"schema": {"type": "object"}}},
        {"match": {"path": "/b"}, "body": {"schema": {"$ref": "http://127.0.0.1:9/remote.json"}}}
    ]});
    let err = match Envoy::try_start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .wasm(schema_filter(&config)),
    ) {
        Ok(_) => panic!("Envoy accepted a schema with an external $ref"),
        Err(e) => e,
    };
    assert!(
        err.contains(&invalid_config_log(
            "schema",
            "rules[1].body.schema: the schema does not compile"
        )),
        "{err}"
    );
}

/// Envoy's docs leave `allow_on_headers_stop_iteration` off and Istio's
/// WasmPlugin cannot set it: the defaults forward the headers at once and
/// still refuse the body (the upstream request is reset, the client gets
/// the problem). Before `hold_headers` defaulted to false, every validated
/// POST here hung until the client gave up.
#[test]
fn the_defaults_work_without_allow_on_headers_stop_iteration() {
    let upstream = Upstream::start();
    let config = store_config();
    assert!(config.get("hold_headers").is_none(), "the filter's default");
    let filter = WasmFilter::new("schema", dist_wasm("schema")).config_json(&config);
    let envoy = Envoy::start(&EnvoyConfig::new().upstream(&upstream).wasm(filter));
    let started = Instant::now();
    let r = post(&envoy, "/pets", "application/json", br#"{"name": "Rex"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post(&envoy, "/pets", "application/json", br#"{"name": 1}"#);
    assert_problem(&r, 400, "schema-violation");
    assert!(
        violations(&r).contains(&v("body", "/name", "type")),
        "{}",
        r.text()
    );
    let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(200_000));
    let r = post(&envoy, "/pets", "application/json", big.as_bytes());
    assert_problem(&r, 413, "body-too-large");
    let r = chunked_post(&envoy, "/pets", "application/json", 40, &[b' '; 4096]);
    assert_eq!(r.status, Some(413), "{}", String::from_utf8_lossy(&r.raw));
    let got: Vec<Vec<u8>> = upstream.received().into_iter().map(|g| g.body).collect();
    assert_eq!(
        got,
        vec![br#"{"name": "Rex"}"#.to_vec()],
        "only the valid body was delivered"
    );
    assert_eq!(stat(&envoy, "denied.invalid_body", 1), 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "nothing waited: {:?}",
        started.elapsed()
    );
    assert!(!envoy.log().contains("panicked"), "{}", envoy.log());
    assert!(
        !envoy.log().contains("allow_on_headers_stop_iteration"),
        "no request was held: {}",
        envoy.log()
    );
}

/// `hold_headers: true` without Envoy's flag: Envoy delivers no body
/// callback to a filter that paused in the request headers. The glue's
/// watchdog answers such a request with a 500 within ~6 s (5 s bound, 1 s
/// tick) and logs one line naming the missing flag, instead of a hang.
#[test]
fn hold_headers_without_the_envoy_flag_fails_loudly_not_silently() {
    let upstream = Upstream::start();
    let mut config = store_config();
    config["hold_headers"] = json!(true);
    let filter = WasmFilter::new("schema", dist_wasm("schema")).config_json(&config);
    let envoy = Envoy::start(&EnvoyConfig::new().upstream(&upstream).wasm(filter));
    let started = Instant::now();
    let r = post(&envoy, "/pets", "application/json", br#"{"name": "Rex"}"#);
    let waited = started.elapsed();
    eprintln!("held request answered {} after {waited:?}", r.status);
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(8),
        "answered after {waited:?}"
    );
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.header("x-palisade-denied-by"), Some("schema"));
    assert!(upstream.received().is_empty(), "{:?}", upstream.received());
    let log = envoy.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("allow_on_headers_stop_iteration"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("palisade.schema"), "{}", lines[0]);
    // Requests the filter does not hold are untouched meanwhile.
    let r = get(&envoy.url("/pets/mine"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!log.contains("panicked"), "{log}");
}

/// What the upstream sees of a body refused under the defaults. The headers
/// go on at once: when the body comes later than the headers, the upstream
/// gets the request line and headers (`content-length` included), never a
/// byte of the body, then Envoy closes the connection (the upstream request
/// is reset). When the body comes with the headers, it is judged before
/// Envoy has written anything upstream.
#[test]
fn with_the_defaults_a_refused_body_never_completes_at_the_upstream() {
    let raw = RawUpstream::start();
    let config = store_config();
    let filter = WasmFilter::new("schema", dist_wasm("schema")).config_json(&config);
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .cluster("raw", raw.port)
            .route(Route::prefix("all", "/").cluster("raw"))
            .wasm(filter),
    );
    let body = br#"{"name": 4242, "secret": "do-not-forward"}"#;

    // The body well after the headers, as a slow client or a large body sends it.
    let mut client = TcpStream::connect(envoy.listener_addr()).expect("connect");
    let head = format!(
        "POST /pets HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).expect("send the headers");
    std::thread::sleep(Duration::from_millis(500));
    client.write_all(body).expect("send the body");
    let mut answer = Vec::new();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = client.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("schema-violation"), "{answer}");

    let seen = raw.connection(Duration::from_secs(10));
    let text = String::from_utf8_lossy(&seen.bytes).into_owned();
    eprintln!(
        "delayed body: accepted {}, closed {}: {text:?}",
        seen.accepted, seen.closed
    );
    assert!(seen.accepted, "Envoy opened the upstream connection");
    assert!(text.starts_with("POST /pets HTTP/1.1\r\n"), "{text:?}");
    assert!(
        text.to_ascii_lowercase()
            .contains(&format!("content-length: {}\r\n", body.len())),
        "{text:?}"
    );
    assert!(text.ends_with("\r\n\r\n"), "only the headers: {text:?}");
    assert!(!text.contains("do-not-forward"), "{text:?}");
    assert!(seen.closed, "Envoy closes the upstream connection");

    // The body in the same write as the headers.
    let r = post(&envoy, "/pets", "application/json", body);
    assert_problem(&r, 400, "schema-violation");
    let seen = raw.connection(Duration::from_secs(3));
    let text = String::from_utf8_lossy(&seen.bytes).into_owned();
    eprintln!(
        "body with the headers: accepted {}, closed {}: {text:?}",
        seen.accepted, seen.closed
    );
    assert!(!text.contains("do-not-forward"), "{text:?}");
}

/// What one connection to a [`RawUpstream`] carried.
#[derive(Debug, Default)]
struct Seen {
    accepted: bool,
    bytes: Vec<u8>,
    /// Closed by the peer (or reset), not merely quiet.
    closed: bool,
}

/// A TCP server that records what each connection sends, and never answers.
struct RawUpstream {
    port: u16,
    rx: std::sync::mpsc::Receiver<Seen>,
}

impl RawUpstream {
    fn start() -> RawUpstream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else {
                    return;
                };
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
                    let deadline = Instant::now() + Duration::from_secs(8);
                    let mut seen = Seen {
                        accepted: true,
                        ..Seen::default()
                    };
                    let mut buf = [0u8; 4096];
                    while Instant::now() < deadline {
                        match stream.read(&mut buf) {
                            Ok(0) => {
                                seen.closed = true;
                                break;
                            }
                            Ok(n) => seen.bytes.extend_from_slice(&buf[..n]),
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => {
                                seen.closed = true;
                                break;
                            }
                        }
                    }
                    let _ = tx.send(seen);
                });
            }
        });
        RawUpstream { port, rx }
    }

    /// The next connection's record once it closes (or goes quiet for 8 s);
    /// not accepted if none came within `wait`.
    fn connection(&self, wait: Duration) -> Seen {
        self.rx
            .recv_timeout(wait + Duration::from_secs(8))
            .unwrap_or_default()
    }
}

/// An HTTP/1.1 chunked POST whose body is `chunks` and that ends with a
/// trailer section, as raw bytes.
fn chunked_with_trailer(path: &str, chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in chunks {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\nx-trailer: 1\r\n\r\n");
    out
}

fn as_response(raw: &RawResponse) -> Response {
    Response {
        status: raw.status.unwrap_or(0),
        headers: raw.headers.clone(),
        body: raw.body.clone(),
    }
}

/// Envoy only passes HTTP/1 trailers to the filters with the HCM's
/// `enable_trailers`; then no body callback says `end_of_stream` and the
/// filter must judge the buffered body when the trailers arrive, or the body
/// would reach the upstream unvalidated.
#[test]
fn a_body_followed_by_trailers_is_validated_before_the_upstream() {
    let upstream = Upstream::start();
    let trailers = json!({"http_protocol_options": {"enable_trailers": true}});
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .wasm(schema_filter(&store_config()))
            .hcm_extra(trailers.clone()),
    );
    let upstream_requests = "cluster.echo.upstream_rq_total";

    let raw = raw_http(
        envoy.listener_addr(),
        &chunked_with_trailer("/pets", &[b"{\"name\": ", b"4242}"]),
    );
    let r = as_response(&raw);
    assert_problem(&r, 400, "schema-violation");
    assert!(
        violations(&r).contains(&v("body", "/name", "type")),
        "{}",
        r.text()
    );
    assert!(!r.text().contains("4242"), "{}", r.text());
    assert_eq!(stat(&envoy, "denied.invalid_body", 1), 1);
    assert!(
        upstream.received().is_empty(),
        "the refused body reached the upstream: {:?}",
        upstream.received()
    );
    assert_eq!(envoy.counter(upstream_requests), Some(0));

    // A valid body with trailers goes through, validated and published.
    let body: &[&[u8]] = &[b"{\"name\": ", b"\"Rex\", \"tag\": null}"];
    let raw = raw_http(envoy.listener_addr(), &chunked_with_trailer("/pets", body));
    assert_eq!(
        raw.status,
        Some(200),
        "{}",
        String::from_utf8_lossy(&raw.raw)
    );
    let got = upstream.last().expect("the upstream got the valid request");
    assert_eq!(got.body, body.concat());
    assert_eq!(got.header("x-palisade-schema"), Some("allow"));
    assert_eq!(
        envoy.wait_for_counter(upstream_requests, 1, WAIT),
        Some(1),
        "only the valid request went upstream"
    );

    // Without held headers (the Istio deployment) the body is still refused
    // at the trailers: the headers went on, but the upstream never gets a
    // complete request (the echo server records one only with its body).
    let envoy = Envoy::start(
        &EnvoyConfig::new()
            .upstream(&upstream)
            .wasm(filter_in(Mode::Defaults, &store_config()))
            .hcm_extra(trailers),
    );
    upstream.clear_received();
    let raw = raw_http(
        envoy.listener_addr(),
        &chunked_with_trailer("/pets", &[b"{\"name\": 42}"]),
    );
    assert_problem(&as_response(&raw), 400, "schema-violation");
    let raw = raw_http(
        envoy.listener_addr(),
        &chunked_with_trailer("/pets", &[b"{\"name\": \"Rex\"}"]),
    );
    assert_eq!(
        raw.status,
        Some(200),
        "{}",
        String::from_utf8_lossy(&raw.raw)
    );
    let got: Vec<Vec<u8>> = upstream.received().into_iter().map(|g| g.body).collect();
    assert_eq!(
        got,
        vec![br#"{"name": "Rex"}"#.to_vec()],
        "only the valid body was delivered"
    );
    assert!(!envoy.log().contains("panicked"), "{}", envoy.log());
}
