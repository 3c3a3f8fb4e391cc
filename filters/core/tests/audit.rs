//! The audit trail: one record per request, shared by separate filters
//! through the proxy's filter state, clean of anything the client wrote.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use palisade_core::audit::{self, AuditMode, Facts, Identity, Record};
use palisade_core::fake::FakeHost;
use palisade_core::metrics::Metrics;
use palisade_core::problem::Problem;
use palisade_core::{Denial, HostKind, Level, RequestContext};

fn ctx(name: &'static str, host: &FakeHost, mode: AuditMode) -> RequestContext {
    RequestContext::new(name, host).audited(mode)
}

fn record(host: &FakeHost) -> Record {
    let raw = host
        .properties
        .get(audit::PROPERTY)
        .expect("the record is filter state");
    serde_json::from_slice(raw).expect("a JSON record")
}

fn audit_lines(host: &FakeHost) -> Vec<String> {
    host.logs
        .borrow()
        .iter()
        .filter_map(|(_, l)| l.strip_prefix(audit::LOG_PREFIX).map(str::to_string))
        .collect()
}

#[test]
fn controls_in_separate_modules_add_to_one_record_in_order() {
    let mut host =
        FakeHost::request("GET", "/orders/7").with_request_header("x-request-id", "rid-1");
    host.properties
        .insert("xds.route_name".into(), b"orders".to_vec());
    let jwt = ctx("jwt", &host, AuditMode::All);
    jwt.allow_with(
        &mut host,
        Facts {
            identity: Some(Identity {
                subject: Some("alice".into()),
                client_id: Some("web-app".into()),
                scopes: vec!["orders.read".into()],
            }),
            rate_limits: Vec::new(),
            peer: None,
        },
    );
    let metrics = Metrics::define(&mut host, "ratelimit", &[], &["limited"]);
    let rl = ctx("ratelimit", &host, AuditMode::Denials);
    let denial = Denial::new(Problem::of_kind(429, "rate-limited", "Too many"), "limited");
    rl.reject(&mut host, &metrics, denial, false);
    let rec = record(&host);
    assert_eq!(rec.request_id.as_deref(), Some("rid-1"));
    assert_eq!(rec.route.as_deref(), Some("orders"));
    let verdicts: Vec<(&str, &str)> = rec
        .decisions
        .iter()
        .map(|d| (d.control.as_str(), d.verdict.as_str()))
        .collect();
    assert_eq!(verdicts, [("jwt", "allow"), ("ratelimit", "deny")]);
    assert_eq!(rec.decisions[1].reason.as_deref(), Some("limited"));
    assert_eq!(rec.subject.as_deref(), Some("alice"));
    assert_eq!(rec.client_id.as_deref(), Some("web-app"));
    assert_eq!(rec.scopes, ["orders.read"]);
    // One line, at the denial, with the whole record so far.
    let lines = audit_lines(&host);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let logged: Record = serde_json::from_str(&lines[0]).expect("the line is JSON");
    assert_eq!(logged, rec);
}

#[test]
fn by_default_allowed_requests_cost_nothing_and_a_denial_names_the_verified_caller() {
    let mut host = FakeHost::request("GET", "/orders/7");
    host.properties.insert(
        audit::CLAIMS_PROPERTY.into(),
        br#"{"sub":"bob","client_id":"cli","scp":["orders.write","orders.read"],"email":"b@x"}"#
            .to_vec(),
    );
    ctx("jwt", &host, AuditMode::Denials).allow(&mut host);
    assert!(!host.properties.contains_key(audit::PROPERTY));
    assert_eq!(host.host_call_count("property palisade_audit"), 0);
    let metrics = Metrics::define(&mut host, "schema", &[], &["invalid_body"]);
    let denial = Denial::new(Problem::of_kind(400, "invalid-body", "Bad"), "invalid_body");
    ctx("schema", &host, AuditMode::Denials).reject(&mut host, &metrics, denial, false);
    let rec = record(&host);
    assert_eq!(rec.decisions.len(), 1);
    assert_eq!(rec.subject.as_deref(), Some("bob"));
    assert_eq!(rec.client_id.as_deref(), Some("cli"));
    assert_eq!(rec.scopes, ["orders.write", "orders.read"]);
    assert!(!String::from_utf8_lossy(&host.properties[audit::PROPERTY]).contains("b@x"));
}

#[test]
fn identities_come_from_the_usual_claims() {
    let id = Identity::from_claims(&serde_json::json!({
        "sub": "s", "azp": "a", "client_id": "c", "scope": "x  y"
    }));
    assert_eq!(id.subject.as_deref(), Some("s"));
    assert_eq!(id.client_id.as_deref(), Some("a"), "azp first");
    assert_eq!(id.scopes, ["x", "y"]);
    let id = Identity::from_claims(&serde_json::json!({"sub": 7, "scp": "z"}));
    assert_eq!(id.subject, None, "only strings");
    assert_eq!(id.scopes, ["z"]);
}

#[test]
fn allowed_requests_are_logged_at_the_end_only_by_the_last_control_and_only_with_all() {
    let mut host = FakeHost::request("GET", "/");
    ctx("headers", &host, AuditMode::All).allow(&mut host);
    ctx("jwt", &host, AuditMode::All).allow(&mut host);
    assert!(
        audit_lines(&host).is_empty(),
        "no line before the stream ends"
    );
    // Each module's glue runs `finish` when the stream ends.
    audit::finish(&host, &["headers"]);
    assert!(audit_lines(&host).is_empty(), "headers did not decide last");
    audit::finish(&host, &["jwt"]);
    assert_eq!(audit_lines(&host).len(), 1);
}

#[test]
fn a_denied_request_is_not_logged_again_when_it_ends() {
    let mut host = FakeHost::request("GET", "/");
    let metrics = Metrics::define(&mut host, "schema", &[], &["invalid_body"]);
    let c = ctx("schema", &host, AuditMode::All);
    let denial = Denial::new(Problem::of_kind(400, "invalid-body", "Bad"), "invalid_body");
    c.reject(&mut host, &metrics, denial, false);
    audit::finish(&host, &["schema"]);
    assert_eq!(audit_lines(&host).len(), 1);
}

#[test]
fn dry_run_denials_are_recorded_as_shadow_denials() {
    let mut host = FakeHost::request("GET", "/");
    let metrics = Metrics::define(&mut host, "schema", &[], &["invalid_body"]);
    let c = ctx("schema", &host, AuditMode::Denials);
    let denial = Denial::new(Problem::of_kind(400, "invalid-body", "Bad"), "invalid_body");
    c.reject(&mut host, &metrics, denial, true);
    assert_eq!(record(&host).decisions[0].verdict, "shadow-deny");
    assert!(audit_lines(&host).is_empty(), "the request went on");
}

#[test]
fn the_record_never_carries_what_the_client_wrote() {
    let secret = "Bearer eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXBhc3N3b3Jk.sig";
    let mut host = FakeHost::request("POST", "/login?password=hunter2-secret")
        .with_request_header("authorization", secret)
        .with_request_header("cookie", "session=s3cr3t-cookie-value")
        .with_request_header("x-request-id", "rid-\u{7}\n{\"forged\":1}");
    let metrics = Metrics::define(&mut host, "jwt", &[], &["token_invalid"]);
    let c = ctx("jwt", &host, AuditMode::All);
    // A hostile subject: newlines and JSON cannot break the line.
    c.allow_with(
        &mut host,
        Facts {
            identity: Some(Identity {
                subject: Some("eve\n\"}, {\"control\":\"forged\"".into()),
                client_id: Some("x".repeat(10_000)),
                scopes: vec!["a\u{0}b".into()],
            }),
            rate_limits: vec!["per-ip:client_ip".into()],
            peer: None,
        },
    );
    let denial = Denial::new(
        Problem::of_kind(401, "token-invalid", "Bad"),
        "token_invalid",
    );
    c.reject(&mut host, &metrics, denial, false);
    let text = String::from_utf8(host.properties[audit::PROPERTY].clone()).unwrap();
    for needle in [
        "hunter2",
        "s3cr3t",
        "eyJhbGci",
        "c2VjcmV0",
        "forged\":1",
        "\n",
    ] {
        assert!(!text.contains(needle), "{needle:?} leaked into {text}");
    }
    let rec = record(&host);
    assert!(rec.client_id.unwrap().len() <= audit::MAX_VALUE_LEN);
    assert_eq!(rec.decisions.len(), 2, "a forged subject adds no decision");
    assert_eq!(rec.scopes, ["ab"]);
    for line in audit_lines(&host) {
        assert!(!line.contains('\n'));
        let parsed: Record = serde_json::from_str(&line).expect("still one JSON record");
        assert_eq!(parsed.decisions.len(), 2);
    }
}

#[test]
fn off_writes_nothing_and_kong_keeps_its_own_record() {
    let mut host = FakeHost::request("GET", "/");
    ctx("jwt", &host, AuditMode::Off).allow(&mut host);
    assert!(!host.properties.contains_key(audit::PROPERTY));
    let mut kong = FakeHost::kong();
    kong.request_headers = FakeHost::request("GET", "/").request_headers;
    ctx("headers", &kong, AuditMode::All).allow(&mut kong);
    assert_eq!(kong.kind, HostKind::Kong);
    assert_eq!(record(&kong).decisions.len(), 1);
    assert!(!kong.logged(Level::Info, "palisade.audit"));
}
