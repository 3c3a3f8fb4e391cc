//! A `client_ip` taken from the client's own `X-Forwarded-For` (Envoy's
//! HTTP connection manager under its default `use_remote_address: false`)
//! is counted and warned about once per VM, and nothing else is.

mod common;

use common::Worker;
use palisade_core::fake::FakeHost;
use palisade_core::Level;
use palisade_ratelimit::EVENTS;

const LOGIN: &str = r#"{"rules": [{"match": {"prefix": "/login"},
    "limits": [{"name": "login-per-ip", "key": ["client_ip"], "requests": 3, "per_s": 60}]}]}"#;

const METRIC: &str = "palisade.ratelimit.client_ip_from_xff";

/// A request as Envoy presents it: `source.address` and the header the client sent.
fn from(w: &Worker, path: &str, source: &str, xff: &str) -> FakeHost {
    let mut h = w
        .request("POST", path)
        .with_request_header("x-forwarded-for", xff);
    h.properties
        .insert("source.address".into(), source.as_bytes().to_vec());
    h
}

fn warned(h: &FakeHost) -> bool {
    h.logged(Level::Warn, "use_remote_address") && h.logged(Level::Warn, "xff_num_trusted_hops")
}

#[test]
fn an_address_from_the_clients_own_header_is_counted_and_warned_once_per_vm() {
    let w = Worker::new(LOGIN);
    // Envoy's default HCM: source.address is the last entry, without a port.
    // Every rotated header is a fresh client, so the limit never bites.
    for i in 1..=6 {
        let xff = format!("203.0.113.{i}");
        let (_, h) = w.send(from(&w, "/login", &format!("{xff}:0"), &xff));
        assert_eq!(h.sent.as_ref().map(|s| s.status), None, "request {i}");
        assert_eq!(h.counter(METRIC), 1, "request {i}");
        assert_eq!(warned(&h), i == 1, "request {i}: {:?}", h.logs);
    }
    // Another worker's VM warns once too.
    let other = w.sibling(LOGIN);
    let (_, h) = other.send(from(&other, "/login", "198.51.100.1:0", "198.51.100.1"));
    assert!(warned(&h), "{:?}", h.logs);
}

#[test]
fn the_real_peer_trusted_hops_or_other_limits_are_not_flagged() {
    let w = Worker::new(LOGIN);
    // use_remote_address: true: Envoy appended the peer, which has a port.
    let (_, h) = w.send(from(
        &w,
        "/login",
        "203.0.113.7:40000",
        "6.6.6.6,203.0.113.7",
    ));
    assert_eq!(h.counter(METRIC), 0);
    // The HCM trusted a hop: the address is not the last entry.
    let (_, h) = w.send(from(&w, "/login", "6.6.6.6:0", "6.6.6.6,203.0.113.7"));
    assert_eq!(h.counter(METRIC), 0);
    // No header at all.
    let (_, h) = w.send(w.request("POST", "/login"));
    assert_eq!(h.counter(METRIC), 0);
    // A rule that does not key on client_ip never looks.
    let (_, h) = w.send(from(&w, "/other", "203.0.113.8:0", "203.0.113.8"));
    assert_eq!(h.counter(METRIC), 0);
    assert!(!warned(&h));

    // The filter reads X-Forwarded-For itself: the operator told it the hops.
    let trusted = Worker::new(
        r#"{"client_ip": {"xff_num_trusted_hops": 1}, "rules": [{"match": {"prefix": "/login"},
            "limits": [{"name": "l", "key": ["client_ip"], "requests": 3, "per_s": 60}]}]}"#,
    );
    let (_, h) = trusted.send(from(&trusted, "/login", "203.0.113.9:0", "203.0.113.9"));
    assert_eq!(h.counter(METRIC), 0);
    assert!(!warned(&h));

    // Kong's addresses carry no port: no proof, no flag.
    let kong = Worker::kong(LOGIN);
    let (_, h) = kong.send(from(&kong, "/login", "203.0.113.10", "203.0.113.10"));
    assert_eq!(h.counter(METRIC), 0);
}

#[test]
fn the_counter_is_declared_for_meta_and_envoy() {
    assert!(EVENTS.contains(&"client_ip_from_xff"));
    let w = Worker::new(LOGIN);
    assert!(w.root.metric_names.iter().any(|n| n == METRIC));
}
