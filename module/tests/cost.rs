//! A control costs no more host calls in `palisade.wasm` than in its own
//! module. Host calls are what a request pays for on a real proxy (each is a
//! VM crossing, 0.2 to 3 µs on Envoy), so this is the issue's "no control
//! gets slower" goal checked without a proxy; `benches/run.py` measures it
//! in Envoy.

use palisade::registry;
use palisade::ChainPlugin;
use palisade_core::fake::{run, Exchange, FakeHost};
use palisade_core::{HostKind, Plugin};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::rc::Rc;

const NOW: u64 = 1_800_000_000;

/// The bench's config for each control (what `benches/run.py` loads).
fn bench_config(name: &str) -> Value {
    let file = match name {
        "errors" | "headers" => "default.json",
        "ratelimit" => "dry-run.json",
        _ => "bench.json",
    };
    let path = format!(
        "{}/../filters/{name}/examples/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn one_control_chain(name: &str, config: &Value, publish: bool) -> Value {
    json!({
        "version": 1,
        "publish_decisions": publish,
        "upstreams": {"app": "http://127.0.0.1:8080"},
        "filters": {name: config},
        "routes": [{"name": "bench", "match": {"prefix": "/"}, "upstream": "app", "filters": [name]}]
    })
}

/// The requests each control is compared on: its allow path, its refusals,
/// a body and a masked error.
/// Method, path, request headers and the rest of the exchange.
type Case = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
    Exchange,
);

fn exchanges() -> Vec<Case> {
    vec![
        ("GET", "/bench/resource", vec![], Exchange::new()),
        (
            "GET",
            "/bench/resource?page=2",
            vec![("authorization", "Bearer not.a.token")],
            Exchange::new(),
        ),
        ("TRACE", "/bench/resource", vec![], Exchange::new()),
        (
            "POST",
            "/bench/resource",
            vec![("content-type", "application/json")],
            Exchange::new().body(br#"{"a": 1}"#),
        ),
        (
            "GET",
            "/bench/resource",
            vec![("x-forwarded-for", "203.0.113.7")],
            Exchange::new().response(
                500,
                &[("content-type", "text/plain")],
                &[b"Traceback (most recent call last):\n  File \"app.py\", line 3"],
            ),
        ),
    ]
}

fn host_for(kind: HostKind, method: &str, path: &str, headers: &[(&str, &str)]) -> FakeHost {
    let mut host = match kind {
        HostKind::Kong => FakeHost::kong(),
        _ => FakeHost::new(),
    };
    let request = FakeHost::request(method, path);
    host.request_headers = request.request_headers;
    host.properties
        .insert("xds.route_name".into(), b"bench".to_vec());
    host.properties
        .insert("source.address".into(), b"192.0.2.10:40000".to_vec());
    let mut host = host.at_secs(NOW);
    for (n, v) in headers {
        host = host.with_request_header(n, v);
    }
    host
}

/// Every host call one exchange made, by kind.
fn calls_alone(name: &str, config: &Value, kind: HostKind, i: usize) -> BTreeMap<String, u32> {
    let filter = registry::find(name).unwrap_or_else(|| panic!("no filter {name}"));
    let mut root = FakeHost::configuring(kind).at_secs(NOW);
    let control = (filter.configure)(config.to_string().as_bytes(), &mut root)
        .unwrap_or_else(|e| panic!("{name} refused its bench config: {e}"));
    let (method, path, headers, ex) = &exchanges()[i];
    let mut host = host_for(kind, method, path, headers);
    let mut f = control.new_filter();
    run(f.as_mut(), &mut host, ex);
    host.host_calls.take()
}

fn calls_in_chain(
    name: &str,
    config: &Value,
    kind: HostKind,
    i: usize,
    publish: bool,
) -> BTreeMap<String, u32> {
    let mut root = FakeHost::configuring(kind).at_secs(NOW);
    let chain = one_control_chain(name, config, publish);
    let plugin = ChainPlugin::configure(chain.to_string().as_bytes(), &mut root)
        .unwrap_or_else(|e| panic!("chain refused: {e}"));
    let plugin = Rc::new(plugin);
    let (method, path, headers, ex) = &exchanges()[i];
    let mut host = host_for(kind, method, path, headers);
    let mut f = ChainPlugin::new_filter(&plugin);
    run(&mut f, &mut host, ex);
    host.host_calls.take()
}

#[test]
fn no_control_makes_more_host_calls_in_the_chain_than_alone() {
    for kind in [HostKind::Envoy, HostKind::Kong] {
        for name in registry::FILTERS.iter().map(|f| f.name) {
            let config = bench_config(name);
            for i in 0..exchanges().len() {
                let alone = calls_alone(name, &config, kind, i);
                let chained = calls_in_chain(name, &config, kind, i, false);
                for (call, n) in &chained {
                    let before = alone.get(call).copied().unwrap_or(0);
                    assert!(
                        *n <= before,
                        "{name} on {kind:?}, exchange {i}: `{call}` {n} times in the chain, \
                         {before} alone\n chain: {chained:?}\n alone: {alone:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn published_decisions_cost_what_the_control_alone_pays() {
    for name in registry::FILTERS.iter().map(|f| f.name) {
        let config = bench_config(name);
        for i in 0..exchanges().len() {
            let alone = calls_alone(name, &config, HostKind::Envoy, i);
            let chained = calls_in_chain(name, &config, HostKind::Envoy, i, true);
            assert_eq!(chained, alone, "{name}, exchange {i}");
        }
    }
}

#[test]
fn the_proxy_route_name_is_read_only_when_the_path_leaves_the_route_open() {
    let config = bench_config("headers");
    let one = calls_in_chain("headers", &config, HostKind::Envoy, 0, false);
    assert_eq!(one.get("property xds.route_name"), None, "{one:?}");

    // Two routes: the name decides, read once however many controls match on it.
    let chain = json!({
        "version": 1,
        "upstreams": {"app": "http://127.0.0.1:8080"},
        "filters": {"headers": {"rules": [{"match": {"route_name": "bench"}, "request": {"allowed_methods": ["GET"]}}]}},
        "routes": [
            {"name": "bench", "match": {"prefix": "/"}, "upstream": "app", "filters": ["headers", "errors"]},
            {"name": "other", "match": {"prefix": "/other/"}, "upstream": "app", "filters": ["errors"]}
        ]
    });
    let mut root = FakeHost::configuring(HostKind::Envoy).at_secs(NOW);
    let plugin = Rc::new(
        ChainPlugin::configure(chain.to_string().as_bytes(), &mut root)
            .unwrap_or_else(|e| panic!("chain refused: {e}")),
    );
    let mut host = host_for(HostKind::Envoy, "POST", "/other/x", &[]);
    let mut f = ChainPlugin::new_filter(&plugin);
    let out = run(&mut f, &mut host, &Exchange::new());
    assert_eq!(
        out.client().status,
        405,
        "the route named bench ran its headers rule"
    );
    assert_eq!(host.host_call_count("property xds.route_name"), 1);
}

#[test]
fn a_catch_all_route_runs_its_controls_on_every_request_target() {
    // A target that is not a path (`*`, empty) still gets the route's
    // controls, never a free pass.
    let chain = one_control_chain("headers", &json!({}), false);
    let mut root = FakeHost::configuring(HostKind::Envoy).at_secs(NOW);
    let plugin = Rc::new(
        ChainPlugin::configure(chain.to_string().as_bytes(), &mut root)
            .unwrap_or_else(|e| panic!("chain refused: {e}")),
    );
    for target in ["/x", "*", ""] {
        let mut host = host_for(HostKind::Envoy, "TRACE", target, &[]);
        let mut f = ChainPlugin::new_filter(&plugin);
        let out = run(&mut f, &mut host, &Exchange::new());
        assert_eq!(out.client().status, 405, "TRACE {target:?}");
    }
}
