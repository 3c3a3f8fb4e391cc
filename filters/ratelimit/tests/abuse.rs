//! Lockout after repeated failures (`count`) and concurrency limits
//! (`max_in_flight`), through whole exchanges on both hosts' fakes.

mod common;

use common::Worker;
use palisade_core::fake::{end_stream, run, Exchange, FakeHost, Outcome};
use palisade_core::{Flow, Host, HttpFilter};
use palisade_ratelimit::RateLimitFilter;

const LOCKOUT: &str = r#"{"rules": [{"match": {"prefix": "/login", "methods": ["POST"]},
  "limits": [{"name": "login-failures", "key": [{"header": "x-client"}], "requests": 3, "per_s": 900,
              "count": {"response_status": [401, 403]}}]}]}"#;

const CONCURRENCY: &str = r#"{"rules": [
  {"match": {"prefix": "/report"}, "limits": [{"name": "reports", "key": [{"header": "x-client"}], "max_in_flight": 2}]},
  {"match": {"prefix": "/export"}, "limits": [{"name": "exports", "key": [], "max_in_flight": 3}]},
  {"match": {"prefix": "/mixed"}, "limits": [{"name": "mixed", "key": [{"header": "x-client"}], "max_in_flight": 2,
                                              "requests": 2, "per_s": 3600}]}]}"#;

/// Both hosts: Envoy's fake and Kong's.
fn workers(config: &str) -> [(&'static str, Worker); 2] {
    [
        ("envoy", Worker::new(config)),
        ("kong", Worker::kong(config)),
    ]
}

fn login(w: &Worker, client: &str) -> FakeHost {
    w.request("POST", "/login")
        .with_request_header("x-client", client)
}

/// One whole exchange; the upstream answers `status`. The stream ends.
fn exchange(w: &Worker, mut host: FakeHost, status: u16) -> (Outcome, FakeHost) {
    let mut f = w.filter();
    let out = run(
        &mut f,
        &mut host,
        &Exchange::new().response(status, &[], &[b"{}"]),
    );
    (out, host)
}

fn status(w: &Worker, host: FakeHost, upstream: u16) -> u16 {
    exchange(w, host, upstream).0.client().status
}

/// A request that got past the request headers and is still in flight.
fn start(w: &Worker, mut host: FakeHost) -> (RateLimitFilter, FakeHost, Flow) {
    let mut f = w.filter();
    let flow = f.on_request_headers(&mut host, true);
    (f, host, flow)
}

#[test]
fn failures_lock_a_client_out_even_with_the_right_password_and_successes_spend_nothing() {
    for (host, w) in workers(LOCKOUT) {
        // Successes are free, however many.
        for _ in 0..10 {
            let (out, h) = exchange(&w, login(&w, "alice"), 200);
            assert_eq!(out.client().status, 200, "{host}");
            assert_eq!(h.counter("palisade.ratelimit.refunded"), 1, "{host}");
        }
        for _ in 0..3 {
            let (out, h) = exchange(&w, login(&w, "alice"), 401);
            assert_eq!(out.client().status, 401, "{host}");
            assert_eq!(h.counter("palisade.ratelimit.counted"), 1, "{host}");
            assert_eq!(h.counter("palisade.ratelimit.refunded"), 0, "{host}");
        }
        // Locked out: refused up front, the right password never reaches the upstream.
        let (out, h) = exchange(&w, login(&w, "alice"), 200);
        assert!(out.upstream.is_none(), "{host}");
        let c = out.client();
        assert_eq!(c.status, 429, "{host}");
        assert_eq!(c.header("retry-after").as_deref(), Some("300"), "{host}");
        assert_eq!(
            c.header("content-type").as_deref(),
            Some("application/problem+json")
        );
        assert!(c
            .header("ratelimit")
            .is_some_and(|v| v.starts_with("\"login-failures\";r=0;t=")));
        assert_eq!(h.counter("palisade.ratelimit.limited.login-failures"), 1);
        assert_eq!(h.counter("palisade.ratelimit.refunded"), 0, "{host}");
        // Another client is not affected, nor are other paths.
        assert_eq!(status(&w, login(&w, "bob"), 200), 200, "{host}");
        assert_eq!(status(&w, w.request("GET", "/login"), 200), 200);
        // A window's share later one failure is allowed again, and only one.
        w.advance_secs(300);
        assert_eq!(status(&w, login(&w, "alice"), 403), 403, "{host}");
        assert_eq!(status(&w, login(&w, "alice"), 200), 429, "{host}");
    }
}

#[test]
fn a_denied_request_gets_nothing_back_and_a_refund_happens_once() {
    for (host, w) in workers(LOCKOUT) {
        // One failure spends one of three tokens.
        assert_eq!(status(&w, login(&w, "c"), 401), 401);
        // A success reserves and gives back in the response, and its end
        // of stream must not give back a second token.
        assert_eq!(status(&w, login(&w, "c"), 200), 200);
        assert_eq!(status(&w, login(&w, "c"), 401), 401);
        assert_eq!(status(&w, login(&w, "c"), 401), 401);
        assert_eq!(
            status(&w, login(&w, "c"), 200),
            429,
            "{host}: refunded twice"
        );
        // Our own 429s pass through the response callbacks: they give
        // nothing back either.
        for _ in 0..5 {
            assert_eq!(status(&w, login(&w, "c"), 200), 429, "{host}");
        }
        let (_, h) = exchange(&w, login(&w, "c"), 200);
        assert_eq!(h.counter("palisade.ratelimit.refunded"), 0, "{host}");
    }
}

#[test]
fn a_stream_reset_before_the_response_gives_the_token_back() {
    for (host, w) in workers(LOCKOUT) {
        for _ in 0..5 {
            let (mut f, mut h, flow) = start(&w, login(&w, "d"));
            assert_eq!(flow, Flow::Continue, "{host}");
            end_stream(&mut f, &mut h);
        }
        // All three tokens are still there.
        for _ in 0..3 {
            assert_eq!(status(&w, login(&w, "d"), 401), 401, "{host}");
        }
        assert_eq!(status(&w, login(&w, "d"), 401), 429, "{host}");
    }
}

#[test]
fn concurrent_guesses_on_two_workers_never_exceed_the_bucket() {
    let w1 = Worker::new(LOCKOUT);
    let w2 = w1.sibling(LOCKOUT);
    // Twelve guesses arrive before any answer, alternating workers.
    let mut open = Vec::new();
    for i in 0..12 {
        let w = if i % 2 == 0 { &w1 } else { &w2 };
        let (f, h, flow) = start(w, login(w, "eve"));
        if flow == Flow::Continue {
            open.push((f, h));
        } else {
            assert_eq!(h.sent.as_ref().map(|s| s.status), Some(429));
        }
    }
    assert_eq!(open.len(), 3);
    for (mut f, mut h) in open {
        h.response_headers = vec![(":status".into(), b"401".to_vec())];
        f.on_response_headers(&mut h, true);
        end_stream(&mut f, &mut h);
    }
    assert_eq!(w1.status(login(&w1, "eve")), 429);
    assert_eq!(w2.status(login(&w2, "eve")), 429);
}

#[test]
fn a_refusal_by_a_later_filter_is_counted_by_its_status() {
    for (host, w) in workers(LOCKOUT) {
        for _ in 0..3 {
            let (mut f, mut h, flow) = start(&w, login(&w, "f"));
            assert_eq!(flow, Flow::Continue);
            // A later filter answers 403 itself: the response passes back here.
            h.response_headers = vec![(":status".into(), b"403".to_vec())];
            f.on_response_headers(&mut h, true);
            end_stream(&mut f, &mut h);
        }
        assert_eq!(status(&w, login(&w, "f"), 200), 429, "{host}");
    }
}

fn report(w: &Worker, client: &str) -> FakeHost {
    w.request("GET", "/report")
        .with_request_header("x-client", client)
}

/// Every in-flight slot of the worker's store is empty.
fn no_place_held(w: &Worker) -> bool {
    let keys = w.root.shared.borrow().keys();
    let flights: Vec<String> = keys.into_iter().filter(|k| k.contains("flight.")).collect();
    assert!(!flights.is_empty(), "no in-flight slots were created");
    flights
        .iter()
        .all(|k| w.root.shared_get(k).value.is_none_or(|v| v.is_empty()))
}

#[test]
fn at_most_max_in_flight_per_key_and_a_429_for_the_rest() {
    for (host, w) in workers(CONCURRENCY) {
        let (mut a, mut ha, fa) = start(&w, report(&w, "k1"));
        let (mut b, mut hb, fb) = start(&w, report(&w, "k1"));
        assert_eq!((fa, fb), (Flow::Continue, Flow::Continue), "{host}");
        let (out, h) = exchange(
            &w,
            report(&w, "k1").with_request_header("x-request-id", "r-9"),
            200,
        );
        assert!(out.upstream.is_none(), "{host}");
        let c = out.client();
        assert_eq!(c.status, 429, "{host}");
        assert_eq!(c.header("retry-after").as_deref(), Some("1"));
        let doc = c.json();
        assert_eq!(doc["type"], "urn:palisade:problem:concurrency-limited");
        assert_eq!(doc["request_id"], "r-9");
        assert_eq!(h.counter("palisade.ratelimit.in_flight_refused"), 1);
        assert_eq!(h.counter("palisade.ratelimit.limited.reports"), 1);
        assert_eq!(h.counter("palisade.ratelimit.denied.in_flight_limited"), 1);
        // Another key has its own two places.
        assert_eq!(status(&w, report(&w, "k2"), 200), 200, "{host}");
        // One ends: one place is free again, and only one.
        end_stream(&mut a, &mut ha);
        let (mut c2, mut hc, fc) = start(&w, report(&w, "k1"));
        assert_eq!(fc, Flow::Continue, "{host}");
        assert_eq!(status(&w, report(&w, "k1"), 200), 429, "{host}");
        end_stream(&mut b, &mut hb);
        end_stream(&mut c2, &mut hc);
        assert!(no_place_held(&w), "{host}");
    }
}

#[test]
fn a_route_wide_limit_answers_503_the_backends_capacity() {
    for (host, w) in workers(CONCURRENCY) {
        let mut open = Vec::new();
        for i in 0..3 {
            let (f, h, flow) = start(
                &w,
                w.request("GET", "/export")
                    .with_request_header("x-client", &i.to_string()),
            );
            assert_eq!(flow, Flow::Continue);
            open.push((f, h));
        }
        let (out, _) = exchange(&w, w.request("GET", "/export"), 200);
        let c = out.client();
        assert_eq!(c.status, 503, "{host}");
        assert_eq!(c.header("retry-after").as_deref(), Some("1"));
        assert_eq!(c.json()["status"], 503);
        for (mut f, mut h) in open {
            end_stream(&mut f, &mut h);
        }
        assert!(no_place_held(&w), "{host}");
        assert_eq!(status(&w, w.request("GET", "/export"), 200), 200);
    }
}

#[test]
fn the_count_returns_to_zero_however_the_stream_ends() {
    for (host, w) in workers(CONCURRENCY) {
        // Completed, with an upstream error, and an upstream timeout's 504.
        for upstream in [200, 500, 504] {
            assert_eq!(status(&w, report(&w, "z"), upstream), upstream, "{host}");
            assert!(no_place_held(&w), "{host} after {upstream}");
        }
        // Reset by the client before any response.
        let (mut f, mut h, _) = start(&w, report(&w, "z"));
        assert!(!no_place_held(&w));
        end_stream(&mut f, &mut h);
        assert!(no_place_held(&w), "{host} after a reset");
        // Refused by a later filter (its local reply comes back through here).
        let (mut f, mut h, _) = start(&w, report(&w, "z"));
        h.response_headers = vec![(":status".into(), b"403".to_vec())];
        f.on_response_headers(&mut h, true);
        end_stream(&mut f, &mut h);
        assert!(no_place_held(&w), "{host} after a later refusal");
        // Refused by this limit: holds nothing, and its end releases nothing.
        let held: Vec<_> = (0..2).map(|_| start(&w, report(&w, "z"))).collect();
        let (out, _) = exchange(&w, report(&w, "z"), 200);
        assert_eq!(out.client().status, 429);
        for (mut f, mut h, _) in held {
            end_stream(&mut f, &mut h);
        }
        assert!(no_place_held(&w), "{host} after a refusal");
        // Refused by the rule's rate after taking its place: released at once.
        assert_eq!(
            status(
                &w,
                w.request("GET", "/mixed")
                    .with_request_header("x-client", "m"),
                200
            ),
            200
        );
        assert_eq!(
            status(
                &w,
                w.request("GET", "/mixed")
                    .with_request_header("x-client", "m"),
                200
            ),
            200
        );
        let (out, h) = exchange(
            &w,
            w.request("GET", "/mixed")
                .with_request_header("x-client", "m"),
            200,
        );
        assert_eq!(out.client().status, 429);
        assert!(
            out.client().header("ratelimit").is_some(),
            "{host}: the rate refused"
        );
        assert!(no_place_held(&w), "{host} after a rate refusal");
        assert_eq!(h.counter("palisade.ratelimit.in_flight_release_failed"), 0);
        // It took its place, then gave it back when the rate refused:
        // admitted - released is what is in flight.
        assert_eq!(
            h.counter("palisade.ratelimit.in_flight_admitted"),
            1,
            "{host}"
        );
        assert_eq!(
            h.counter("palisade.ratelimit.in_flight_released"),
            1,
            "{host}"
        );
    }
}

#[test]
fn two_workers_share_one_in_flight_count() {
    let w1 = Worker::new(CONCURRENCY);
    let w2 = w1.sibling(CONCURRENCY);
    let mut open = Vec::new();
    let mut refused = 0;
    for i in 0..10 {
        let w = if i % 2 == 0 { &w1 } else { &w2 };
        let (f, h, flow) = start(w, report(w, "shared"));
        match flow {
            Flow::Continue => open.push((f, h)),
            _ => refused += 1,
        }
    }
    assert_eq!((open.len(), refused), (2, 8));
    for (mut f, mut h) in open {
        end_stream(&mut f, &mut h);
    }
    assert!(no_place_held(&w1));
}

#[test]
fn a_full_slot_refuses_the_newcomer_and_keeps_the_live_counts() {
    let cfg = r#"{"local": {"slots": 1, "entries_per_slot": 2},
        "rules": [{"limits": [{"name": "c", "key": [{"header": "x-client"}], "max_in_flight": 1}]}]}"#;
    let w = Worker::new(cfg);
    let req = |c: &str| w.request("GET", "/").with_request_header("x-client", c);
    let (mut a, mut ha, fa) = start(&w, req("a"));
    let (mut b, mut hb, fb) = start(&w, req("b"));
    assert_eq!((fa, fb), (Flow::Continue, Flow::Continue));
    let (out, h) = exchange(&w, req("c"), 200);
    assert_eq!(out.client().status, 429);
    assert_eq!(h.counter("palisade.ratelimit.in_flight_table_full"), 1);
    // "a" is still counted: its second request is refused.
    assert_eq!(status(&w, req("a"), 200), 429);
    end_stream(&mut a, &mut ha);
    assert_eq!(status(&w, req("c"), 200), 200);
    end_stream(&mut b, &mut hb);
    assert!(no_place_held(&w));
}

#[test]
fn dry_run_in_flight_refusals_let_the_request_through_holding_nothing() {
    let cfg = r#"{"dry_run": true, "rules": [{"limits": [{"name": "c", "key": [], "max_in_flight": 1}]}]}"#;
    let w = Worker::new(cfg);
    let (mut a, mut ha, _) = start(&w, w.request("GET", "/"));
    let (out, h) = exchange(&w, w.request("GET", "/"), 200);
    assert_eq!(out.client().status, 200);
    assert_eq!(h.counter("palisade.ratelimit.shadow_limited.c"), 1);
    end_stream(&mut a, &mut ha);
    assert!(no_place_held(&w));
}
