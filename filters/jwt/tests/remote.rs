//! Remote key sets across worker VMs (FakeHosts sharing one shared-data
//! store): one fetcher elected, the others adopting its result, failures
//! keeping the last good set with backoff, rotation by unknown `kid`.

mod common;

use common::*;
use palisade_core::fake::{FakeHost, RecordedCall};
use palisade_core::host::CallResponse;
use palisade_core::host::Phase;
use palisade_core::{Flow, HttpFilter, Plugin};
use palisade_jwt::JwtPlugin;
use serde_json::{json, Value};

fn remote_config(extra: Value) -> Value {
    let p = provider(with(
        json!({"local_jwks": null,
               "remote_jwks": {"cluster": "idp", "path": "/.well-known/jwks.json", "authority": "id.example.com",
                               "cache_duration_s": 600, "timeout_ms": 1500, "min_refetch_interval_s": 30}}),
        extra,
    ));
    let mut p = p;
    p.as_object_mut().unwrap().remove("local_jwks");
    config_with(p, default_rules())
}

/// (token, upstream, headers) of each HTTP call made.
type Call = (u32, String, Vec<(String, String)>);

fn http_calls(h: &FakeHost) -> Vec<Call> {
    h.calls
        .iter()
        .filter_map(|c| match c {
            RecordedCall::Http {
                token,
                upstream,
                headers,
                ..
            } => Some((*token, upstream.clone(), headers.clone())),
            _ => None,
        })
        .collect()
}

fn answer(token: u32, status: Option<u16>, body: &[u8]) -> CallResponse {
    CallResponse::Http {
        token,
        status,
        headers: vec![],
        body: body.to_vec(),
    }
}

fn jwks_body(kids: &[&str]) -> Vec<u8> {
    jwks(kids).to_string().into_bytes()
}

/// A VM configured on `host` that has run its first tick (where a
/// fetch starts; configure never fetches).
fn ticked(cfg: &Value, host: FakeHost) -> Vm {
    let mut vm = vm_on(cfg, host);
    assert!(http_calls(&vm.host).is_empty(), "configure never fetches");
    vm.host.phase = Phase::Tick;
    vm.plugin.on_tick(&mut vm.host);
    vm
}

#[test]
fn one_vm_fetches_and_the_others_adopt_its_set() {
    let cfg = remote_config(json!({}));
    let a = ticked(&cfg, FakeHost::new().at_secs(NOW));
    let b = ticked(&cfg, a.host.sibling());
    let calls = http_calls(&a.host);
    assert_eq!(calls.len(), 1, "the first VM is elected");
    assert!(http_calls(&b.host).is_empty(), "the second sees the lease");
    let (token, upstream, headers) = &calls[0];
    assert_eq!(upstream, "idp");
    assert!(headers.contains(&(":path".into(), "/.well-known/jwks.json".into())));
    assert!(headers.contains(&(":authority".into(), "id.example.com".into())));

    // Before the set arrives, with the fetch in flight on another VM:
    // on_jwks_unavailable (deny by default: 401).
    let (_, h) = b.get("/orders", Some(&rs256(&claims())));
    assert!(http_calls(&h).is_empty(), "the lease is taken");
    assert_eq!(status(&h), 401);
    assert_eq!(h.counter("palisade.jwt.denied.jwks_unavailable"), 1);

    let mut ha = a.host.sibling();
    ha.metric_names = a.host.metric_names.clone();
    a.plugin
        .on_call_response(&mut ha, answer(*token, Some(200), &jwks_body(&["rsa1"])));
    assert_eq!(ha.counter("palisade.jwt.jwks_fetched"), 1);
    assert_eq!(status(&a.get("/orders", Some(&rs256(&claims()))).1), 0);
    // VM b reads the shared result without fetching.
    assert_eq!(status(&b.get("/orders", Some(&rs256(&claims()))).1), 0);
    assert!(http_calls(&b.host).is_empty());
    let mut hb = b.host.sibling();
    b.plugin.on_tick(&mut hb);
    assert!(http_calls(&hb).is_empty(), "not due for 600 s");
}

#[test]
fn a_failed_fetch_keeps_the_last_good_set_and_backs_off() {
    let cfg = remote_config(
        json!({"remote_jwks": {"cluster": "idp", "path": "/jwks", "authority": "id",
                                                  "cache_duration_s": 10, "timeout_ms": 500}}),
    );
    let a = ticked(&cfg, FakeHost::new().at_secs(NOW));
    let first = http_calls(&a.host)[0].0;
    let mut h = a.host.sibling();
    h.metric_names = a.host.metric_names.clone();
    a.plugin
        .on_call_response(&mut h, answer(first, Some(200), &jwks_body(&["rsa1"])));

    // Due after 10 s; the endpoint fails in every way, the set stays.
    let failures: [(Option<u16>, &[u8]); 4] = [
        (Some(500), b"oops"),
        (None, b""),
        (Some(200), b"<html>not json</html>"),
        (Some(200), br#"{"keys": []}"#),
    ];
    let mut waited = 10_000;
    for (i, (code, body)) in failures.into_iter().enumerate() {
        h.advance_ms(waited);
        a.host.clock.set(h.clock.get());
        let before = h.calls.len();
        a.plugin.on_tick(&mut h);
        assert_eq!(h.calls.len(), before + 1, "attempt {i} is due");
        let token = h.calls.last().unwrap().token();
        a.plugin.on_call_response(&mut h, answer(token, code, body));
        assert_eq!(h.counter("palisade.jwt.jwks_fetch_failed"), i as i64 + 1);
        assert_eq!(
            status(
                &a.get(
                    "/orders",
                    Some(&rs256(&with(
                        claims(),
                        json!({"exp": h.clock.get() / 1_000_000_000 + 60})
                    )))
                )
                .1
            ),
            0,
            "attempt {i}: the last good set still verifies"
        );
        // Backoff 1, 2, 4, 8 s (capped by the cache duration): not earlier.
        let backoff = 1u64 << i;
        h.advance_ms(backoff * 1000 - 100);
        let before = h.calls.len();
        a.plugin.on_tick(&mut h);
        assert_eq!(
            h.calls.len(),
            before,
            "attempt {i}: backing off {backoff} s"
        );
        waited = 100;
    }
    assert!(h.logged(palisade_core::Level::Warn, "keeping the last good set"));
}

#[test]
fn an_unknown_kid_refetches_once_then_is_remembered() {
    let cfg = remote_config(json!({}));
    let a = ticked(&cfg, FakeHost::new().at_secs(NOW));
    let first = http_calls(&a.host)[0].0;
    let mut h = a.host.sibling();
    a.plugin
        .on_call_response(&mut h, answer(first, Some(200), &jwks_body(&["rsa1"])));
    a.host.advance_ms(60_000);

    // The IdP rotated to rsa2: the request waits for an early refetch.
    let rotated = mint(
        jsonwebtoken::Algorithm::RS256,
        "rsa2",
        &with(claims(), json!({"exp": NOW + 600})),
    );
    let auth = format!("Bearer {rotated}");
    let mut req = a.request("GET", "/orders", &[("authorization", &auth)]);
    let mut filter = JwtPlugin::new_filter(&a.plugin);
    assert_eq!(filter.on_request_headers(&mut req, true), Flow::Pause);
    assert_eq!(req.counter("palisade.jwt.jwks_refetch_unknown_kid"), 1);
    let token = http_calls(&req)[0].0;
    let flow = filter.on_call_response(
        &mut req,
        answer(token, Some(200), &jwks_body(&["rsa1", "rsa2"])),
    );
    assert_eq!(flow, Flow::Continue, "{:?}", req.sent);
    assert_eq!(req.req_header("x-jwt-sub").as_deref(), Some("user-1"));

    // Random kids: one refetch per interval at most, then remembered.
    let mut fetches = 0;
    for i in 0..50 {
        let forged = mint_with(
            jsonwebtoken::Algorithm::RS256,
            Some(&format!("kid-{i}")),
            "rsa1",
            &claims(),
        );
        let auth = format!("Bearer {forged}");
        let mut req = a.request("GET", "/orders", &[("authorization", &auth)]);
        let mut filter = JwtPlugin::new_filter(&a.plugin);
        let flow = filter.on_request_headers(&mut req, true);
        if flow == Flow::Pause && req.sent.is_none() {
            fetches += 1;
            let token = http_calls(&req)[0].0;
            let flow = filter.on_call_response(
                &mut req,
                answer(token, Some(200), &jwks_body(&["rsa1", "rsa2"])),
            );
            assert_eq!((flow, status(&req)), (Flow::Pause, 401));
        } else {
            assert_eq!(status(&req), 401);
            assert_eq!(detail(&req), "the token's key id is unknown");
        }
    }
    assert_eq!(
        fetches, 0,
        "the rotation refetch above started the interval"
    );
    a.host.advance_ms(31_000);
    let forged = mint_with(
        jsonwebtoken::Algorithm::RS256,
        Some("kid-x"),
        "rsa1",
        &claims(),
    );
    let (flow, h) = a.get("/orders", Some(&forged));
    assert_eq!(
        (flow, status(&h)),
        (Flow::Pause, 0),
        "a new interval allows one more refetch"
    );
    assert_eq!(http_calls(&h).len(), 1);
}

#[test]
fn on_jwks_unavailable_deny_unavailable_or_allow() {
    for (policy, want) in [("deny", 401), ("unavailable", 503), ("allow", 0)] {
        let a = vm(&remote_config(json!({"on_jwks_unavailable": policy})));
        // No keys yet: the request fetches them; the fetch fails (timeout,
        // reset), so the policy decides.
        let auth = format!("Bearer {}", rs256(&claims()));
        let mut h = a.request("GET", "/orders", &[("authorization", &auth)]);
        let mut filter = JwtPlugin::new_filter(&a.plugin);
        assert_eq!(filter.on_request_headers(&mut h, true), Flow::Pause);
        let token = http_calls(&h)[0].0;
        let flow = filter.on_call_response(&mut h, answer(token, None, b""));
        assert_eq!(
            flow,
            if want == 0 {
                Flow::Continue
            } else {
                Flow::Pause
            }
        );
        assert_eq!(status(&h), want, "{policy}");
        assert_eq!(h.counter("palisade.jwt.jwks_fetch_failed"), 1);
        assert!(h.logged(
            palisade_core::Level::Warn,
            "JWKS fetch failed: the connection failed after 0 ms"
        ));
        // Within the backoff, the next request does not fetch again.
        let (_, again) = a.get("/orders", Some(&rs256(&claims())));
        assert!(http_calls(&again).is_empty(), "{policy}: backing off");
        assert_eq!(status(&again), want, "{policy}");
        if policy == "unavailable" {
            assert_eq!(h.sent.as_ref().unwrap().header("retry-after"), Some("5"));
        }
        if policy == "allow" {
            assert_eq!(h.counter("palisade.jwt.jwks_unavailable_allowed"), 1);
        }
    }
}

#[test]
fn without_shared_data_each_vm_fetches_for_itself() {
    let cfg = remote_config(json!({}));
    let host = FakeHost::new().at_secs(NOW);
    host.shared.borrow_mut().unavailable = true;
    let a = ticked(&cfg, host);
    let b = ticked(&cfg, a.host.sibling());
    assert_eq!(http_calls(&a.host).len(), 1);
    assert_eq!(http_calls(&b.host).len(), 1);
}

#[test]
fn a_call_the_host_refuses_is_logged_counted_and_backed_off() {
    // An unknown cluster: Envoy refuses the dispatch itself, no answer comes.
    let cfg = remote_config(json!({}));
    let mut host = FakeHost::new().at_secs(NOW);
    host.refuse_calls = true;
    let a = ticked(&cfg, host);
    assert!(a.host.logged(
        palisade_core::Level::Warn,
        "the host refused the call to \"idp\""
    ));
    assert_eq!(a.host.counter("palisade.jwt.jwks_fetch_failed"), 1);
    let mut h = a.host.sibling();
    h.metric_names = a.host.metric_names.clone();
    h.phase = Phase::Tick;
    a.plugin.on_tick(&mut h);
    assert_eq!(
        h.counter("palisade.jwt.jwks_fetch_failed"),
        0,
        "backing off"
    );
}

#[test]
fn a_call_without_an_answer_says_whether_it_timed_out_or_failed_at_once() {
    // Envoy gives the module no reason; the time since the call does.
    let cfg = remote_config(
        json!({"remote_jwks": {"cluster": "idp", "path": "/jwks", "authority": "id",
                               "cache_duration_s": 10, "timeout_ms": 500}}),
    );
    for (after_ms, says) in [
        (
            3,
            "the connection failed after 3 ms (refused, reset, or a TLS handshake failed",
        ),
        (500, "no answer within timeout_ms (500 ms)"),
    ] {
        let a = ticked(&cfg, FakeHost::new().at_secs(NOW));
        let token = http_calls(&a.host)[0].0;
        let mut h = a.host.sibling();
        h.metric_names = a.host.metric_names.clone();
        h.advance_ms(after_ms);
        a.plugin.on_call_response(&mut h, answer(token, None, b""));
        assert_eq!(h.counter("palisade.jwt.jwks_fetch_failed"), 1);
        assert!(
            h.logged(palisade_core::Level::Warn, says),
            "{:?}",
            h.logs.borrow()
        );
    }
}
