//! Kong overwrites only the first copy of a repeated request header; the
//! others reach the upstream with the client's values (seen on the real
//! host). A header this filter must strip that arrives more than once is
//! therefore refused there. Envoy removes every copy.

use palisade_core::fake::{run, Exchange, FakeHost};
use palisade_core::{HostKind, Plugin};
use palisade_headers::HeadersPlugin;
use std::rc::Rc;

fn exchange(kind: HostKind, headers: &[(&str, &str)]) -> (palisade_core::fake::Outcome, FakeHost) {
    let mut root = FakeHost::configuring(kind);
    let plugin = Rc::new(HeadersPlugin::configure(b"{}", &mut root).unwrap());
    let mut host = FakeHost::request("GET", "/orders");
    host.kind = kind;
    host.metric_names = root.metric_names.clone();
    for (n, v) in headers {
        host = host.with_request_header(n, v);
    }
    let out = run(
        &mut HeadersPlugin::new_filter(&plugin),
        &mut host,
        &Exchange::new(),
    );
    (out, host)
}

#[test]
fn on_kong_a_repeated_header_to_strip_is_refused() {
    for forged in [
        [("x-palisade-jwt", "allow"), ("X-Palisade-Jwt", "allow")],
        [("x-jwt-sub", "mallory"), ("x-jwt-sub", "mallory2")],
        [
            ("x-http-method-override", "DELETE"),
            ("x-http-method-override", "DELETE"),
        ],
    ] {
        let (out, host) = exchange(HostKind::Kong, &forged);
        let client = out.client();
        assert_eq!(client.status, 400, "{forged:?}");
        assert_eq!(
            client.json()["type"],
            "urn:palisade:problem:repeated-header"
        );
        assert!(!String::from_utf8_lossy(&client.body).contains("mallory"));
        assert!(out.upstream.is_none());
        assert_eq!(host.counter("palisade.headers.denied.repeated_header"), 1);

        // Envoy strips every copy and lets the request through.
        let (out, _) = exchange(HostKind::Envoy, &forged);
        assert_eq!(out.client().status, 200);
        let name = forged[0].0;
        assert!(out.upstream_values(name).is_empty(), "{name}");
    }
}

#[test]
fn on_kong_a_single_copy_is_stripped_by_overwriting() {
    let (out, _) = exchange(
        HostKind::Kong,
        &[("x-jwt-sub", "mallory"), ("accept", "a"), ("accept", "b")],
    );
    assert_eq!(out.client().status, 200);
    assert_eq!(out.upstream_values("x-jwt-sub"), [""]);
    // Repeated headers nobody strips are fine.
    assert_eq!(out.upstream_values("accept"), ["a", "b"]);
}
