//! The audit trail in a real Envoy 1.40: the access log the docs show
//! writes one JSON decision record per request, shared by the controls
//! (separate modules through Envoy's filter state; with
//! `PALISADE_MODULE=one`, each control in its own `palisade.wasm`), with
//! the verified caller and never a secret the client sent.
//!
//! Build first: `make build`.

use std::path::Path;
use std::time::{Duration, Instant};

use palisade_tests::jwt_fixtures::{self, jwks};
use palisade_tests::readme;
use palisade_tests::*;
use serde_json::{json, Value};

/// The documented audit access log (the YAML block naming
/// `wasm.palisade_audit`, on docs/src/operations/audit.md), with its path
/// moved to `path`.
fn readme_access_log(path: &Path) -> Value {
    let block = readme::doc_blocks(&repo_root())
        .into_iter()
        .find(|b| b.lang == "yaml" && b.text.contains("wasm.palisade_audit"))
        .expect("the docs show the audit access log");
    let docs = readme::yaml_documents(&block.text).expect("the block is YAML");
    let mut hcm = docs.into_iter().next().expect("one document");
    hcm["access_log"][0]["typed_config"]["path"] = json!(path.to_string_lossy());
    hcm
}

fn filters(upstream: &Upstream) -> Vec<WasmFilter> {
    let _ = upstream;
    vec![
        WasmFilter::new("errors", dist_wasm("errors")).config_json(&json!({"audit": "all"})),
        WasmFilter::new("headers", dist_wasm("headers")).config_json(&json!({"audit": "all"})),
        WasmFilter::new("jwt", dist_wasm("jwt")).config_json(&json!({
            "audit": "all",
            "providers": {"corp": {"issuer": "https://id.example.com", "audiences": ["orders-api"],
                                   "local_jwks": jwks(&["rsa1"])}},
            "requires": {"provider": "corp"}
        })),
        WasmFilter::new("ratelimit", dist_wasm("ratelimit")).config_json(&json!({
            "audit": "all",
            "limits": [{"name": "per-user", "key": [{"claim": "sub"}], "requests": 100, "per_s": 60}]
        })),
        WasmFilter::new("schema", dist_wasm("schema")).config_json(&json!({
            "rules": [{"match": {"prefix": "/orders", "methods": ["POST"]},
                       "body": {"schema": {"type": "object", "required": ["qty"],
                                           "properties": {"qty": {"type": "integer"}}}}}]
        })),
    ]
}

/// The access log's lines, once `n` are there (Envoy writes the file
/// every `--file-flush-interval-msec`).
fn lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn verdicts(record: &Value) -> Vec<String> {
    record["decisions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            format!(
                "{}:{}",
                d["control"].as_str().unwrap_or("?"),
                d["verdict"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

#[test]
fn the_readme_access_log_writes_one_clean_record_per_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("palisade-audit.log");
    let upstream = Upstream::start();
    let mut config = EnvoyConfig::new()
        .upstream(&upstream)
        .file_flush_interval(Duration::from_millis(100))
        // Five modules (five palisade.wasm with PALISADE_MODULE=one) to compile.
        .startup_timeout(Duration::from_secs(120))
        .hcm_extra(readme_access_log(&log));
    for f in filters(&upstream) {
        config = config.wasm(f);
    }
    let envoy = Envoy::start(&config);
    let bearer = format!("Bearer {}", jwt_fixtures::token("valid"));

    let ok = get(
        &envoy.url("/orders/7"),
        &[("authorization", &bearer), ("x-request-id", "rid-ok")],
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    let bad_body = request(
        "POST",
        &envoy.url("/orders"),
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
            ("x-request-id", "rid-body"),
        ],
        br#"{"qty":"lots","card":"4111111111111111"}"#,
    );
    assert_eq!(bad_body.status, 400, "{}", bad_body.text());
    let hostile = get(
        &envoy.url("/orders/7?password=hunter2-in-query"),
        &[
            (
                "authorization",
                "Bearer eyJhbGciOiJSUzI1NiJ9.aHVudGVyMi1pbi10b2tlbg.c2ln",
            ),
            ("cookie", "session=hunter2-in-cookie"),
            ("x-request-id", "rid-hostile"),
        ],
    );
    assert_eq!(hostile.status, 401);
    let masked = get(
        &envoy.url("/orders/9"),
        &[
            ("authorization", &bearer),
            ("x-request-id", "rid-masked"),
            ("x-echo-status", "500"),
            ("x-echo-body-kind", "python-stack"),
        ],
    );
    assert_eq!(masked.status, 500);
    assert!(!masked.text().contains("Traceback"));

    let lines = lines(&log, 4);
    assert_eq!(lines.len(), 4, "{lines:?}");
    let records: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let by_id = |id: &str| {
        records
            .iter()
            .find(|r| r["request_id"] == id)
            .unwrap_or_else(|| panic!("no record for {id}: {records:?}"))
    };

    let ok = by_id("rid-ok");
    assert_eq!(
        verdicts(ok),
        ["headers:allow", "jwt:allow", "ratelimit:allow"],
        "{ok}"
    );
    assert_eq!(ok["subject"], "user-1");
    assert_eq!(ok["scopes"], json!(["read"]));
    assert_eq!(ok["rate_limits"], json!(["per-user:claim.sub"]));
    assert_eq!(ok["route"], "default");

    let body = by_id("rid-body");
    assert_eq!(
        verdicts(body),
        [
            "headers:allow",
            "jwt:allow",
            "ratelimit:allow",
            "schema:deny"
        ],
        "{body}"
    );
    assert_eq!(body["subject"], "user-1");

    let hostile = by_id("rid-hostile");
    assert_eq!(
        verdicts(hostile),
        ["headers:allow", "jwt:deny"],
        "{hostile}"
    );
    assert!(hostile.get("subject").is_none());

    let masked = by_id("rid-masked");
    assert_eq!(
        verdicts(masked).last().map(String::as_str),
        Some("errors:masked"),
        "{masked}"
    );

    // Nothing the client sent as a secret, in the records or in Envoy's
    // log; no response body in the records (errors logs the start of a
    // masked body on purpose, for its operator).
    let all = format!("{}\n{}", lines.join("\n"), envoy.log());
    for secret in ["hunter2", "aHVudGVy", "4111111111111111"] {
        assert!(!all.contains(secret), "{secret} leaked");
    }
    assert!(!lines.join("\n").contains("Traceback"));
    // One palisade.audit line per request: the denials at their denial,
    // the others when they end.
    let audit_lines = envoy.log().matches("palisade.audit {").count();
    assert_eq!(audit_lines, 4, "{}", envoy.log());
}
