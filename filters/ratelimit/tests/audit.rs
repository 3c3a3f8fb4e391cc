//! The rate limiter's part of the audit record: which limits counted the
//! request, named by their key's kind, never its value.

mod common;

use common::Worker;
use palisade_core::audit::{self, Record};
use palisade_core::fake::FakeHost;
use palisade_core::Level;

const CONFIG: &str = r#"{ "audit": "all",
  "limits": [ { "name": "per-key", "key": [{"header": "x-api-key"}, "method"], "requests": 1, "per_s": 60 } ] }"#;

fn record(h: &FakeHost) -> Record {
    serde_json::from_slice(&h.properties[audit::PROPERTY]).expect("a record")
}

#[test]
fn the_record_names_the_limit_and_its_key_kind_never_the_key() {
    for w in [Worker::new(CONFIG), Worker::kong(CONFIG)] {
        let req = || {
            w.request("GET", "/orders")
                .with_request_header("x-api-key", "sk_live_very-secret-key")
        };
        let (_, h) = w.send(req());
        let rec = record(&h);
        assert_eq!(rec.decisions[0].verdict, "allow");
        assert_eq!(rec.rate_limits, ["per-key:header.x-api-key+method"]);
        let (_, h) = w.send(req());
        let rec = record(&h);
        assert_eq!(rec.decisions[0].verdict, "deny");
        assert_eq!(rec.decisions[0].reason.as_deref(), Some("rate_limited"));
        assert_eq!(rec.rate_limits, ["per-key:header.x-api-key+method"]);
        // The 429's line is its record, and nothing in it is the key.
        assert!(h.logged(Level::Info, r#""verdict":"deny","reason":"rate_limited""#));
        let logs = format!("{:?}", h.logs.borrow());
        assert!(!logs.contains("sk_live"), "{logs}");
        assert!(!String::from_utf8_lossy(&h.properties[audit::PROPERTY]).contains("sk_live"));
    }
}

#[test]
fn with_audit_off_a_429_logs_at_debug_only() {
    let w = Worker::new(&CONFIG.replace(r#""audit": "all""#, r#""audit": "off""#));
    let req = || w.request("GET", "/").with_request_header("x-api-key", "k");
    w.send(req());
    let (_, h) = w.send(req());
    assert_eq!(h.sent.as_ref().map(|s| s.status), Some(429));
    assert!(!h.logged(Level::Info, "palisade"));
    assert!(h.logged(Level::Debug, "denied with 429 (rate_limited)"));
    assert!(!h.properties.contains_key(audit::PROPERTY));
}
