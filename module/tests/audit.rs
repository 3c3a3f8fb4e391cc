//! The audit trail inside one module: one record per request however many
//! controls add to it, sent to the proxy once per callback, and one line.

use palisade::ChainPlugin;
use palisade_core::audit::{self, Record};
use palisade_core::fake::{run, Exchange, FakeHost};
use palisade_core::{HostKind, Plugin};
use serde_json::{json, Value};
use std::rc::Rc;

fn configure(kind: HostKind, headers: Value) -> Rc<ChainPlugin> {
    let config = json!({
        "version": 1, "upstreams": {"shop": "http://127.0.0.1:8080"},
        "filters": {
            "headers": headers,
            "schema": {"rules": [{"match": {"prefix": "/orders", "methods": ["POST"]},
                                  "body": {"schema": {"type": "object", "required": ["qty"]}}}]},
            "errors": {}
        },
        "routes": [{"name": "orders", "match": {"prefix": "/"}, "upstream": "shop",
                    "filters": ["errors", "headers", "schema"]}]
    });
    let mut root = FakeHost::configuring(kind);
    let plugin = ChainPlugin::configure(config.to_string().as_bytes(), &mut root)
        .unwrap_or_else(|e| panic!("chain refused: {e}"));
    Rc::new(plugin)
}

fn host(kind: HostKind, body_claims: bool) -> FakeHost {
    let mut h = match kind {
        HostKind::Kong => FakeHost::kong(),
        _ => FakeHost::new(),
    };
    let r = FakeHost::request("POST", "/orders").with_request_header("x-request-id", "rid-9");
    h.request_headers = r.request_headers;
    h.request_headers
        .push(("content-type".into(), b"application/json".to_vec()));
    if body_claims {
        // A separate jwt module in front left its verified claims.
        h.properties.insert(
            audit::CLAIMS_PROPERTY.into(),
            br#"{"sub":"alice","azp":"shop-ui","scope":"orders.write"}"#.to_vec(),
        );
    }
    h
}

fn lines(h: &FakeHost) -> Vec<Record> {
    h.logs
        .borrow()
        .iter()
        .filter_map(|(_, l)| l.strip_prefix(audit::LOG_PREFIX))
        .map(|l| serde_json::from_str(l).expect("a JSON record"))
        .collect()
}

fn verdicts(rec: &Record) -> Vec<(String, String)> {
    rec.decisions
        .iter()
        .map(|d| (d.control.clone(), d.verdict.clone()))
        .collect()
}

#[test]
fn a_denial_mid_chain_is_one_record_with_the_callers_identity_and_one_line() {
    for kind in [HostKind::Envoy, HostKind::Kong] {
        let plugin = configure(kind, json!({"audit": "all"}));
        let mut h = host(kind, true);
        let out = run(
            &mut ChainPlugin::new_filter(&plugin),
            &mut h,
            &Exchange::new().body(br#"{"qty":"#),
        );
        assert_eq!(out.client().status, 400, "{kind:?}");
        let logged = lines(&h);
        assert_eq!(logged.len(), 1, "{kind:?}: one line, at the denial");
        let rec = &logged[0];
        assert_eq!(
            verdicts(rec),
            [
                ("headers".to_string(), "allow".to_string()),
                ("schema".to_string(), "deny".to_string())
            ],
            "{kind:?}"
        );
        assert_eq!(rec.request_id.as_deref(), Some("rid-9"));
        assert_eq!(rec.subject.as_deref(), Some("alice"));
        assert_eq!(rec.client_id.as_deref(), Some("shop-ui"));
        assert_eq!(rec.scopes, ["orders.write"]);
        // The proxy holds the same record; each callback that changed it
        // wrote it once (headers' allow, then schema's denial).
        let stored: Record = serde_json::from_slice(&h.properties[audit::PROPERTY]).unwrap();
        assert_eq!(&stored, rec);
        let writes = h.host_call_count("set_property palisade_audit");
        assert!((1..=2).contains(&writes), "{kind:?}: {writes}");
    }
}

#[test]
fn with_all_a_let_through_request_is_logged_once_when_the_stream_ends() {
    let plugin = configure(HostKind::Envoy, json!({"audit": "all"}));
    let mut h = host(HostKind::Envoy, false);
    let out = run(
        &mut ChainPlugin::new_filter(&plugin),
        &mut h,
        &Exchange::new().body(br#"{"qty":1}"#),
    );
    assert_eq!(out.client().status, 200);
    let logged = lines(&h);
    assert_eq!(logged.len(), 1);
    // schema keeps the default (`denials`): its allow costs nothing.
    assert_eq!(
        verdicts(&logged[0]),
        [("headers".to_string(), "allow".to_string())]
    );
}

#[test]
fn by_default_a_let_through_request_writes_no_record() {
    let plugin = configure(HostKind::Envoy, json!({}));
    let mut h = host(HostKind::Envoy, true);
    let out = run(
        &mut ChainPlugin::new_filter(&plugin),
        &mut h,
        &Exchange::new().body(br#"{"qty":1}"#),
    );
    assert_eq!(out.client().status, 200);
    assert!(lines(&h).is_empty());
    assert!(!h.properties.contains_key(audit::PROPERTY));
    assert_eq!(h.host_call_count("property palisade_audit"), 0);
}

#[test]
fn a_masked_error_is_recorded_by_the_errors_control() {
    let plugin = configure(HostKind::Envoy, json!({}));
    let mut h = host(HostKind::Envoy, false);
    let out = run(
        &mut ChainPlugin::new_filter(&plugin),
        &mut h,
        &Exchange::new().body(br#"{"qty":1}"#).response(
            500,
            &[("content-type", "text/plain")],
            &[b"Traceback (most recent call last):\n  File \"/srv/app.py\", line 3"],
        ),
    );
    assert_eq!(out.client().status, 500);
    let stored: Record = serde_json::from_slice(&h.properties[audit::PROPERTY]).unwrap();
    assert_eq!(
        verdicts(&stored),
        [("errors".to_string(), "masked".to_string())]
    );
}
