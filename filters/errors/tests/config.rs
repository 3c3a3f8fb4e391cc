//! Config loading: defaults, every accepted form, and refusals naming the field.
mod common;

use common::*;
use palisade_core::fake::FakeHost;
use palisade_core::{HostKind, Plugin};
use palisade_errors::{Config, ErrorsPlugin};

fn err(json: &str) -> String {
    match Config::load(json.as_bytes()) {
        Ok(_) => panic!("accepted: {json}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn empty_config_means_safe_defaults() {
    for raw in ["", "  ", "{}"] {
        let c = Config::load(raw.as_bytes()).unwrap();
        let p = &c.default;
        assert!(p.enabled && !p.dry_run && !p.hold_headers);
        assert!(p.statuses.contains(500) && p.statuses.contains(599) && !p.statuses.contains(404));
        assert!(p.detect_leaks_in.contains(404) && !p.detect_leaks_in.contains(500));
        assert_eq!(c.scan_bytes, 65536);
        assert_eq!(c.log_body_bytes, 256);
        assert!(c.leaks.names().iter().any(|n| n == "java_stack"));
        assert!(c.is_stream(Some(b"Text/Event-Stream; charset=utf-8")));
        assert!(!c.is_stream(Some(b"text/plain")));
        assert!(c.rules.is_empty());
    }
}

#[test]
fn statuses_accept_classes_codes_and_code_strings() {
    let c =
        Config::load(br#"{"statuses": ["4XX", 502, "503"], "detect_leaks_in": "5xx"}"#).unwrap();
    let s = &c.default.statuses;
    assert!(s.contains(404) && s.contains(502) && s.contains(503));
    assert!(!s.contains(500) && !s.contains(200));
    assert!(c.default.detect_leaks_in.contains(500));
    let c = Config::load(br#"{"statuses": [], "detect_leaks_in": []}"#).unwrap();
    assert!(c.default.statuses.is_empty() && c.default.detect_leaks_in.is_empty());
}

#[test]
fn bad_statuses_name_their_path() {
    assert!(err(r#"{"statuses": ["5xx", 200]}"#)
        .starts_with("statuses[1]: status 200 is not an error status"));
    assert!(err(r#"{"statuses": ["5xy"]}"#).starts_with("statuses[0]: invalid status \"5xy\""));
    assert!(err(r#"{"statuses": ["5000"]}"#).starts_with("statuses[0]: invalid status"));
    assert!(err(r#"{"statuses": [-1]}"#).starts_with("statuses[0]: status -1"));
    assert!(err(r#"{"statuses": [true]}"#).starts_with("statuses[0]: invalid type"));
    assert!(err(r#"{"detect_leaks_in": [600]}"#).starts_with("detect_leaks_in[0]: status 600"));
    assert!(
        err(r#"{"rules": [{}, {"match": {"prefix": "/a"}, "statuses": ["5xx", "oops"]}]}"#)
            .starts_with("rules[1].statuses[1]: invalid status \"oops\"")
    );
}

#[test]
fn bad_regexes_name_the_pattern() {
    let e = err(r#"{"leak_patterns": {"mine": "(unclosed"}}"#);
    assert!(e.starts_with("leak_patterns.mine: invalid regex"), "{e}");
    let e = err(r#"{"extra_leak_patterns": {"ok": "a+", "bad": "[z-a]"}}"#);
    assert!(
        e.starts_with("extra_leak_patterns.bad: invalid regex"),
        "{e}"
    );
    let e = err(r#"{"extra_leak_patterns": {"has space": "a"}}"#);
    assert!(
        e.starts_with("extra_leak_patterns.has space: pattern names"),
        "{e}"
    );
    let e = err(r#"{"disabled_leak_patterns": ["java_stack", "nope"]}"#);
    assert_eq!(
        e,
        "disabled_leak_patterns[1]: no leak pattern is named \"nope\""
    );
}

#[test]
fn leak_patterns_replace_extend_and_disable() {
    let c = Config::load(br#"{"leak_patterns": {"only": "SECRET"}}"#).unwrap();
    assert_eq!(c.leaks.names(), ["only"]);
    assert_eq!(c.leaks.find(b"a SECRET b"), ["only"]);
    assert!(c
        .leaks
        .find(b"Traceback (most recent call last)")
        .is_empty());

    let c = Config::load(br#"{"leak_patterns": {}}"#).unwrap();
    assert!(c
        .leaks
        .find(b"Traceback (most recent call last)")
        .is_empty());

    let c = Config::load(
        br#"{"extra_leak_patterns": {"corp": "\\.corp\\.example\\b", "file_path": "/secret/"},
             "disabled_leak_patterns": ["ruby_stack"]}"#,
    )
    .unwrap();
    assert_eq!(c.leaks.find(b"db1.corp.example"), ["corp"]);
    assert_eq!(c.leaks.find(b"see /secret/x"), ["file_path"]);
    assert!(
        c.leaks.find(b"/var/www/html").is_empty(),
        "replaced by name"
    );
    assert!(c.leaks.find(b"app.rb:12:in `x'").is_empty());
    assert!(!c
        .leaks
        .find(b"Traceback (most recent call last)")
        .is_empty());
}

#[test]
fn other_fields_are_checked() {
    assert!(err(r#"{"strip_headers": ["server", "x-*-y"]}"#).starts_with("strip_headers[1]: "));
    assert!(err(r#"{"strip_headers": ["*"]}"#)
        .starts_with("strip_headers[0]: \"*\" would strip every header"));
    assert!(err(r#"{"strip_headers": [":status"]}"#).starts_with("strip_headers[0]: "));
    assert!(err(r#"{"scan_bytes": 0}"#).starts_with("scan_bytes: must be between 1 and 1048576"));
    assert!(err(r#"{"scan_bytes": 2000000}"#).starts_with("scan_bytes: "));
    assert!(err(r#"{"scan_bytes": -5}"#).starts_with("scan_bytes: invalid value"));
    assert!(err(r#"{"log_body_bytes": 5000}"#).starts_with("log_body_bytes: must be at most 4096"));
    assert!(
        err(r#"{"stream_content_types": ["text/event-stream; x=1"]}"#)
            .starts_with("stream_content_types[0]: ")
    );
    assert!(err(r#"{"hold_header": true}"#).starts_with("hold_header: unknown field"));
    assert!(err(r#"{"rules": [{"match": {"prefix": "nope"}}]}"#)
        .starts_with("rules[0].match.prefix: must start with '/'"));
    assert!(
        err(r#"{"rules": [{"scan_bytes": 5}]}"#).starts_with("rules[0].scan_bytes: unknown field")
    );
    assert!(err(r#"{"rules": [{"dry_run": "yes"}]}"#).starts_with("rules[0].dry_run: invalid type"));
    assert_eq!(err("[]"), "the config must be a JSON object");
}

#[test]
fn strip_headers_are_case_insensitive_with_prefix_wildcards() {
    let c = Config::load(br#"{"strip_headers": ["X-Internal-*", "Server"]}"#).unwrap();
    let s = &c.default.strip_headers;
    assert!(palisade_errors::strip::strips(s, "x-internal-node"));
    assert!(palisade_errors::strip::strips(s, "server"));
    assert!(!palisade_errors::strip::strips(s, "x-internal"));
    assert!(!palisade_errors::strip::strips(s, "servers"));
}

#[test]
fn examples_load() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let bytes = std::fs::read(&path).unwrap();
            let mut host = FakeHost::new();
            if let Err(e) = ErrorsPlugin::configure(&bytes, &mut host) {
                panic!("{}: {e}", path.display());
            }
            n += 1;
        }
    }
    assert!(n >= 4, "only {n} examples");
}

#[test]
fn the_example_per_route_config_behaves_as_documented() {
    let config = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/per-route.json"),
    )
    .unwrap();
    let mut host = request(HostKind::Envoy, "/legacy/orders");
    let plugin = configure(&mut host, &config);
    let out = exchange(&plugin, &mut host, 500, &[], &[b"plain failure"], None);
    assert_eq!(out.body, b"plain failure", "legacy 5xx pass unless leaky");
    let mut host = request(HostKind::Envoy, "/legacy/orders");
    let plugin = configure(&mut host, &config);
    let out = exchange(
        &plugin,
        &mut host,
        500,
        &[],
        &[b"ORA-01017: invalid username"],
        None,
    );
    assert_eq!(out.json()["status"], 500);
}

#[test]
fn hostile_config_bytes_never_panic() {
    let inputs: [&[u8]; 8] = [
        b"\xff\xfe",
        b"{\"statuses\": [[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]}",
        b"null",
        b"{\"leak_patterns\": null, \"rules\": null}",
        b"{\"statuses\": 18446744073709551616}",
        b"{\"extra_leak_patterns\": {\"x\": \"(((((((((((((((((((((((((((((((a)))))))))))))))))))))))))))))))\"}}",
        b"{\"extra_leak_patterns\": {\"big\": \"\\\\w{1000}{1000}\"}}",
        b"\"",
    ];
    for input in inputs {
        let _ = Config::load(input);
    }
    assert!(
        Config::load(inputs[6]).is_err(),
        "a huge regex is refused, not compiled"
    );
}
