//! `palisade render envoy`: a complete Envoy bootstrap for a chain.
//!
//! By default ([`Modules::Single`]) the listener loads `palisade.wasm` once:
//! one `envoy.filters.http.wasm` filter whose configuration is the chain
//! file's JSON form ([`module_config`]). Envoy's routes are named after the
//! chain's routes, so the module picks each request's route by Envoy's route
//! name (`xds.route_name`) and runs that route's controls in the route's
//! order. Different routes may order the same controls differently.
//! `allow_on_headers_stop_iteration` is set only when a control holds
//! headers back (`hold_headers` of errors or schema), the failure policy is
//! `FAIL_RELOAD` when any control of the chain fails closed.
//!
//! With [`Modules::PerFilter`], each control is its own module:
//! Envoy's wasm filter has no per-route config, and one HTTP connection
//! manager has one filter list. So every distinct (filter, config) pair of
//! the chain becomes one filter *instance* in that list, and each route
//! disables the instances that are not in its own chain
//! (`typed_per_filter_config` with `envoy.config.route.v3.FilterConfig`
//! `disabled: true`). A route therefore runs its chain and nothing else.
//! (The other way round, instances disabled by default and enabled per
//! route, is not possible: Envoy refuses a route's `FilterConfig` that
//! enables a filter without carrying a config, and the wasm filter has no
//! per-route config type.) Unless the chain ends with a catch-all route
//! (`prefix: /`), a last route `palisade-unrouted` answers Envoy's usual 404
//! with every instance disabled, so a request no route matches runs no
//! Palisade filter.
//!
//! Instances are named `palisade.<filter>` (the shared config) and
//! `palisade.<filter>.<route>` (a route's own config). Their order in the
//! list respects every route's order; when routes do not order two filters
//! between them, the default chain order decides (errors, headers, jwt,
//! ratelimit, schema). Two routes ordering the same two filters differently
//! cannot share one list and are refused.

use crate::chain::{Chain, Origin, Route, Upstream, Use};
use crate::registry::Filter;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Where the rendered bootstrap listens and finds the modules.
#[derive(Debug, Clone)]
pub struct Options {
    /// Listener address, `ip:port`.
    pub listen: String,
    /// Admin address, `ip:port`.
    pub admin: String,
    /// Directory holding `palisade.wasm` (or `palisade_<name>.wasm`).
    pub wasm_dir: String,
    /// One module for the whole chain, or one per control.
    pub modules: Modules,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            listen: "0.0.0.0:10000".into(),
            admin: "127.0.0.1:9901".into(),
            wasm_dir: "/etc/envoy".into(),
            modules: Modules::Single,
        }
    }
}

/// Which modules a rendered config loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Modules {
    /// `palisade.wasm`: every control of the chain in one module and one VM,
    /// configured with the chain file's JSON form.
    #[default]
    Single,
    /// `palisade_<name>.wasm`: one module (and VM) per control.
    PerFilter,
}

/// `palisade.wasm`'s name: its Envoy filter, root and VM id, its Kong filter
/// name (the file name), and `{filter}` in Istio URLs.
pub const MODULE: &str = "palisade";

/// The file a module is built to: `palisade.wasm` for [`MODULE`],
/// `palisade_<name>.wasm` for a control's own module.
pub fn module_file(name: &str) -> String {
    if name == MODULE {
        format!("{MODULE}.wasm")
    } else {
        format!("palisade_{name}.wasm")
    }
}

/// `palisade.wasm`'s configuration for `routes` of `chain`: the chain file's
/// JSON form (`version`, every upstream, the shared configs these routes use,
/// the routes with `name`, `match`, `upstream` and their ordered `filters`;
/// a filter with the shared config by name, a route's own as `{name: config}`).
/// The routes' `istio` sections stay out: only renderers read them.
pub fn module_config(chain: &Chain, routes: &[&Route]) -> Value {
    // Every upstream: the routes' and the services their controls call,
    // which the module checks are declared.
    let mut upstreams = serde_json::Map::new();
    for (name, u) in &chain.upstreams {
        upstreams.insert(name.clone(), json!(u.url));
    }
    let mut shared = serde_json::Map::new();
    for (f, config) in &chain.shared {
        let used = routes.iter().any(|r| {
            r.filters
                .iter()
                .any(|u| u.filter.name == f.name && u.origin == Origin::Shared)
        });
        if used {
            shared.insert(f.name.to_string(), config.clone());
        }
    }
    let routes: Vec<Value> = routes
        .iter()
        .map(|r| {
            let matcher = match (&r.prefix, &r.path) {
                (Some(p), _) => json!({"prefix": p}),
                (None, Some(p)) => json!({"path": p}),
                (None, None) => json!({"prefix": "/"}),
            };
            let filters: Vec<Value> = r
                .filters
                .iter()
                .map(|u| match u.origin {
                    Origin::Shared => json!(u.filter.name),
                    Origin::Route(_) => json!({ u.filter.name: u.config }),
                })
                .collect();
            json!({"name": r.name, "match": matcher, "upstream": r.upstream, "filters": filters})
        })
        .collect();
    let mut config = json!({"version": 1, "upstreams": upstreams});
    if !shared.is_empty() {
        config["filters"] = Value::Object(shared);
    }
    if chain.publish_decisions {
        config["publish_decisions"] = Value::Bool(true);
    }
    config["routes"] = Value::Array(routes);
    config
}

/// Whether a control's config holds headers back while it reads a body
/// (`hold_headers`, at the top or in a rule), which needs Envoy's
/// `allow_on_headers_stop_iteration`.
pub fn holds_headers(u: &Use) -> bool {
    let Some(default) = u.filter.hold_headers_default else {
        return false;
    };
    let top = u
        .config
        .get("hold_headers")
        .and_then(Value::as_bool)
        .unwrap_or(default);
    let in_rule = u
        .config
        .get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|r| r.get("hold_headers").and_then(Value::as_bool) == Some(true));
    top || in_rule
}

/// `palisade.wasm`'s Envoy filter for `routes`: `FAIL_RELOAD` when any of
/// their controls fails closed (jwt, schema), and
/// `allow_on_headers_stop_iteration` only when a control holds headers.
pub fn module_json(chain: &Chain, routes: &[&Route], wasm_dir: &str) -> Value {
    let uses = || routes.iter().flat_map(|r| r.filters.iter());
    let policy = if uses().any(|u| u.filter.envoy_failure_policy() == "FAIL_RELOAD") {
        "FAIL_RELOAD"
    } else {
        "FAIL_OPEN"
    };
    let dir = wasm_dir.trim_end_matches('/');
    let mut plugin = json!({
        "name": MODULE,
        "root_id": MODULE,
        "vm_config": {
            "vm_id": MODULE,
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": format!("{dir}/{}", module_file(MODULE))}},
        },
        "configuration": {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": module_config(chain, routes).to_string(),
        },
        "failure_policy": policy,
    });
    if uses().any(holds_headers) {
        plugin["allow_on_headers_stop_iteration"] = Value::Bool(true);
    }
    json!({
        "name": MODULE,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": plugin,
        },
    })
}

/// One filter instance of the listener.
#[derive(Debug, Clone)]
pub struct Instance {
    pub name: String,
    pub filter: &'static Filter,
    pub config: Value,
}

/// The instances in list order, and for each route the instances it enables.
pub fn plan(chain: &Chain) -> Result<(Vec<Instance>, Vec<Vec<usize>>), String> {
    let mut instances: Vec<Instance> = Vec::new();
    let mut per_route: Vec<Vec<usize>> = Vec::new();
    for route in &chain.routes {
        let mut ids = Vec::new();
        for u in &route.filters {
            let found = instances
                .iter()
                .position(|i| i.filter.name == u.filter.name && i.config == u.config);
            let id = match found {
                Some(id) => id,
                None => {
                    let name = match &u.origin {
                        Origin::Shared => format!("palisade.{}", u.filter.name),
                        Origin::Route(_) => format!("palisade.{}.{}", u.filter.name, route.name),
                    };
                    instances.push(Instance {
                        name,
                        filter: u.filter,
                        config: u.config.clone(),
                    });
                    instances.len() - 1
                }
            };
            ids.push(id);
        }
        per_route.push(ids);
    }
    let order = order(&instances, &per_route, chain)?;
    let position = |id: usize| order.iter().position(|o| *o == id).unwrap_or(id);
    let ordered: Vec<Instance> = order.iter().map(|&id| instances[id].clone()).collect();
    let per_route = per_route
        .iter()
        .map(|ids| ids.iter().map(|&id| position(id)).collect())
        .collect();
    Ok((ordered, per_route))
}

/// A topological order of the instances under every route's order, ties
/// broken by the default chain order (then first appearance).
fn order(
    instances: &[Instance],
    per_route: &[Vec<usize>],
    chain: &Chain,
) -> Result<Vec<usize>, String> {
    let n = instances.len();
    let mut before: BTreeSet<(usize, usize)> = BTreeSet::new();
    for ids in per_route {
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                before.insert((*a, *b));
            }
        }
    }
    for (a, b) in &before {
        if before.contains(&(*b, *a)) {
            let routes: Vec<&str> = chain
                .routes
                .iter()
                .zip(per_route)
                .filter(|(_, ids)| ids.contains(a) && ids.contains(b))
                .map(|(r, _)| r.name.as_str())
                .collect();
            return Err(format!(
                "routes {} order {} and {} differently: Envoy runs one filter list per listener",
                routes.join(", "),
                instances[*a].name,
                instances[*b].name
            ));
        }
    }
    let mut placed: Vec<usize> = Vec::with_capacity(n);
    while placed.len() < n {
        let next = (0..n)
            .filter(|c| !placed.contains(c))
            .filter(|c| (0..n).all(|p| placed.contains(&p) || !before.contains(&(p, *c))))
            .min_by_key(|c| (instances[*c].filter.rank, *c));
        match next {
            Some(c) => placed.push(c),
            // Transitive cycles (a<b in one route, b<c, c<a in others).
            None => {
                return Err(
                    "the routes' filter orders contradict each other: Envoy runs one \
                            filter list per listener"
                        .into(),
                )
            }
        }
    }
    Ok(placed)
}

fn socket(addr: &str) -> Result<Value, String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("{addr:?}: expected ip:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{addr:?}: invalid port"))?;
    Ok(json!({"socket_address": {"address": host, "port_value": port}}))
}

/// An upstream as an Envoy cluster: TLS with the server name checked
/// against the certificate for `https://`, HTTP/2 for gRPC services.
pub fn cluster(name: &str, u: &Upstream) -> Value {
    let mut c = json!({
        "name": name,
        "type": if is_ip(&u.host) { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": "5s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address":
                {"socket_address": {"address": u.host, "port_value": u.port}}}}]}],
        },
    });
    if let Some(tls) = &u.tls {
        c["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": tls.sni,
                "common_tls_context": {"validation_context": {
                    "trusted_ca": {"filename": tls.ca},
                    // Without it Envoy checks the chain, not whose certificate it is.
                    "match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": tls.sni}}
                    ],
                }},
            },
        });
    }
    if u.http2 {
        c["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        });
    }
    c
}

fn is_ip(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
}

/// The `http_filters` entry of an instance (also an Istio `EnvoyFilter` patch).
pub fn instance_json(i: &Instance, wasm_dir: &str) -> Value {
    let dir = wasm_dir.trim_end_matches('/');
    let mut plugin = json!({
        "name": i.name,
        "root_id": i.name,
        "vm_config": {
            "vm_id": i.name,
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": format!("{dir}/{}.wasm", i.filter.module())}},
        },
        "configuration": {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": i.config.to_string(),
        },
        "failure_policy": i.filter.envoy_failure_policy(),
    });
    if i.filter.envoy_allow_on_headers_stop_iteration {
        plugin["allow_on_headers_stop_iteration"] = Value::Bool(true);
    }
    json!({
        "name": i.name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": plugin,
        },
    })
}

/// `typed_per_filter_config` disabling every instance not in `enabled`.
fn disable_others(instances: &[Instance], enabled: &[usize]) -> Option<Value> {
    let per_filter: serde_json::Map<String, Value> = instances
        .iter()
        .enumerate()
        .filter(|(id, _)| !enabled.contains(id))
        .map(|(_, i)| {
            (
                i.name.clone(),
                json!({
                    "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                    "disabled": true,
                }),
            )
        })
        .collect();
    (!per_filter.is_empty()).then_some(Value::Object(per_filter))
}

fn route_json(route: &Route, instances: &[Instance], enabled: &[usize]) -> Value {
    let matcher = match (&route.prefix, &route.path) {
        (Some(p), _) => json!({"prefix": p}),
        (None, Some(p)) => json!({"path": p}),
        (None, None) => json!({"prefix": "/"}),
    };
    let mut r = json!({
        "name": route.name,
        "match": matcher,
        "route": {"cluster": route.upstream},
    });
    if let Some(per_filter) = disable_others(instances, enabled) {
        r["typed_per_filter_config"] = per_filter;
    }
    r
}

/// Name of the catch-all route added when the chain has none.
pub const UNROUTED: &str = "palisade-unrouted";

/// The bootstrap as YAML, with a header saying how routes get their chains.
pub fn render_text(chain: &Chain, options: &Options) -> Result<String, String> {
    let v = render(chain, options)?;
    let mut out = String::from(match options.modules {
        Modules::Single => {
            "# Envoy bootstrap rendered by `palisade render envoy` from a chain file.\n\
             # One wasm filter, palisade.wasm, runs every route's controls: its configuration\n\
             # is the chain file as JSON, and Envoy's routes carry the chain's route names,\n\
             # by which the module picks each request's controls. The module is read from\n\
             # the wasm dir given at render time.\n"
        }
        Modules::PerFilter => {
            "# Envoy bootstrap rendered by `palisade render envoy` from a chain file.\n\
             # Each distinct filter config is one wasm filter in http_filters; every route\n\
             # disables (typed_per_filter_config, FilterConfig.disabled) the ones outside\n\
             # its own chain. Modules are read from the wasm dir given at render time.\n"
        }
    });
    out.push_str(&crate::to_yaml(&v)?);
    Ok(out)
}

/// The bootstrap, as a JSON value.
pub fn render(chain: &Chain, options: &Options) -> Result<Value, String> {
    let (instances, per_route, mut http_filters) = match options.modules {
        Modules::PerFilter => {
            let (instances, per_route) = plan(chain)?;
            let filters: Vec<Value> = instances
                .iter()
                .map(|i| instance_json(i, &options.wasm_dir))
                .collect();
            (instances, per_route, filters)
        }
        Modules::Single => {
            // The module picks the route's controls itself: no route
            // disables anything but the unrouted one (see below).
            let all: Vec<&Route> = chain.routes.iter().collect();
            let filters = if all.iter().any(|r| !r.filters.is_empty()) {
                vec![module_json(chain, &all, &options.wasm_dir)]
            } else {
                Vec::new()
            };
            (Vec::new(), vec![Vec::new(); chain.routes.len()], filters)
        }
    };
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }));
    let mut routes: Vec<Value> = chain
        .routes
        .iter()
        .zip(&per_route)
        .map(|(r, ids)| route_json(r, &instances, ids))
        .collect();
    if !chain
        .routes
        .iter()
        .any(|r| r.prefix.as_deref() == Some("/"))
    {
        let mut unrouted = json!({
            "name": UNROUTED,
            "match": {"prefix": "/"},
            "direct_response": {"status": 404},
        });
        if let Some(per_filter) = disable_others(&instances, &[]) {
            unrouted["typed_per_filter_config"] = per_filter;
        }
        if options.modules == Modules::Single && !http_filters.is_empty() {
            // The module would fall back to the chain's matches; Envoy found
            // none, so the module does not run at all.
            unrouted["typed_per_filter_config"] = json!({MODULE: {
                "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                "disabled": true,
            }});
        }
        routes.push(unrouted);
    }
    // Every upstream, whether a route or a control (JWKS, RLS) uses it.
    let clusters: Vec<Value> = chain.upstreams.iter().map(|(n, u)| cluster(n, u)).collect();
    Ok(json!({
        "admin": {"address": socket(&options.admin)?},
        // V8 compiles the whole module when it loads and frees most of what
        // compiling took; tcmalloc keeps those pages unless told to give
        // them back (measured: palisade.wasm's chain +143 MiB → +121 MiB over
        // a router-only Envoy at --concurrency 2, benches/RESULTS.md).
        "memory_allocator_manager": {
            "bytes_to_release": 64u64 << 20,
            "memory_release_interval": "0.5s",
        },
        "stats_config": {"stats_tags": [{
            "tag_name": "palisade_reason",
            "regex": "^wasmcustom\\.palisade\\.\\w+\\.(?:shadow_)?denied(\\.(\\w+))$",
        }]},
        "static_resources": {
            "listeners": [{
                "name": "palisade",
                "address": socket(&options.listen)?,
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "ingress",
                        "codec_type": "AUTO",
                        // Otherwise Envoy rewrites `server` after the filters ran.
                        "server_header_transformation": "PASS_THROUGH",
                        // The client is the connection's peer. Envoy's default
                        // (false) takes `source.address` from the last
                        // X-Forwarded-For entry the client wrote itself, so a
                        // client rotating that header escapes every `client_ip`
                        // rate limit. Behind trusted proxies, add their count as
                        // `xff_num_trusted_hops` here.
                        "use_remote_address": true,
                        "normalize_path": true,
                        "merge_slashes": true,
                        // Envoy's default keeps `%2F` in the path it routes
                        // on: `/admin%2Fusers` then takes a route other than
                        // admin's and its controls, while an upstream that
                        // decodes it serves /admin/users. Unescaped, the
                        // route that matches is the one the upstream serves.
                        "path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD",
                        "route_config": {
                            "name": "palisade",
                            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
                        },
                        "http_filters": http_filters,
                    },
                }]}],
            }],
            "clusters": clusters,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain;

    fn chain(text: &str) -> Chain {
        chain::load(text).unwrap()
    }

    #[test]
    fn every_upstream_is_a_cluster_with_tls_checked_and_http2_for_grpc() {
        let c = chain(
            "
version: 1
upstreams:
  b: 'http://127.0.0.1:8080'
  idp: {url: 'https://127.0.0.1:9443', sni: idp.test, ca: /etc/idp/ca.pem}
  rls: 'http://rls.internal:8081'
  spare: https://spare.example.com
routes:
  - name: api
    match: {prefix: /}
    upstream: b
    filters:
      - ratelimit: {mode: global, global: {cluster: rls, domain: d}, limits: [{name: a, key: [], requests: 1, per_s: 1}]}
      - jwt: {providers: {corp: {remote_jwks: {cluster: idp, path: /jwks, authority: idp.test}}}, requires: {provider: corp}}
",
        );
        let boot = render(&c, &Options::default()).unwrap();
        let clusters = boot["static_resources"]["clusters"].as_array().unwrap();
        let names: Vec<&str> = clusters.iter().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(
            names,
            ["b", "idp", "rls", "spare"],
            "every upstream, used or not"
        );
        let by = |n: &str| clusters.iter().find(|c| c["name"] == n).unwrap();
        let tls = &by("idp")["transport_socket"]["typed_config"];
        assert_eq!(tls["sni"], "idp.test");
        let v = &tls["common_tls_context"]["validation_context"];
        assert_eq!(v["trusted_ca"]["filename"], "/etc/idp/ca.pem");
        assert_eq!(
            v["match_typed_subject_alt_names"][0]["matcher"]["exact"],
            "idp.test"
        );
        assert_eq!(by("idp")["type"], "STATIC");
        let spare = &by("spare")["transport_socket"]["typed_config"];
        assert_eq!(spare["sni"], "spare.example.com");
        assert_eq!(
            spare["common_tls_context"]["validation_context"]["trusted_ca"]["filename"],
            chain::SYSTEM_CA
        );
        assert_eq!(by("spare")["type"], "STRICT_DNS");
        assert!(by("b").get("transport_socket").is_none());
        assert!(
            by("rls")["typed_extension_protocol_options"].is_object(),
            "gRPC: HTTP/2"
        );
        assert!(by("idp").get("typed_extension_protocol_options").is_none());
    }

    fn per_filter() -> Options {
        Options {
            modules: Modules::PerFilter,
            ..Options::default()
        }
    }

    const HEAD: &str = "version: 1\nupstreams: {b: 'http://127.0.0.1:9'}\nroutes:\n";

    #[test]
    fn freed_memory_goes_back_to_the_system() {
        let c = chain(&format!(
            "{HEAD}  - {{name: a, match: {{prefix: /a}}, upstream: b, filters: [errors]}}\n"
        ));
        let v = render(&c, &per_filter()).unwrap();
        assert_eq!(
            v["memory_allocator_manager"]["bytes_to_release"],
            64u64 << 20
        );
        assert_eq!(
            v["memory_allocator_manager"]["memory_release_interval"],
            "0.5s"
        );
    }

    #[test]
    fn each_route_disables_every_instance_outside_its_chain() {
        let c = chain(&format!(
            "{HEAD}  - {{name: a, match: {{prefix: /a}}, upstream: b, filters: [errors, headers]}}
  - {{name: c, match: {{prefix: /c}}, upstream: b, filters: [errors, {{headers: {{dry_run: true}}}}]}}
  - {{name: d, match: {{prefix: /}}, upstream: b, filters: []}}
"
        ));
        let v = render(&c, &per_filter()).unwrap();
        let hcm = &v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"];
        let names: Vec<&str> = hcm["http_filters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "palisade.errors",
                "palisade.headers",
                "palisade.headers.c",
                "envoy.filters.http.router"
            ]
        );
        let routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
            .as_array()
            .unwrap();
        let disabled = |i: usize| -> Vec<String> {
            routes[i]["typed_per_filter_config"]
                .as_object()
                .map(|m| {
                    assert!(m.values().all(|v| v["disabled"] == true));
                    m.keys().cloned().collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(disabled(0), ["palisade.headers.c"]);
        assert_eq!(disabled(1), ["palisade.headers"]);
        assert_eq!(
            disabled(2),
            ["palisade.errors", "palisade.headers", "palisade.headers.c"]
        );
        assert_eq!(routes.len(), 3, "d is a catch-all: no unrouted route");
        assert_eq!(
            hcm["http_filters"][2]["typed_config"]["config"]["configuration"]["value"],
            "{\"dry_run\":true}"
        );
    }

    #[test]
    fn the_connection_manager_trusts_the_peer_not_the_clients_forwarded_for() {
        let c = chain(&format!(
            "{HEAD}  - {{name: a, match: {{prefix: /}}, upstream: b, filters: [ratelimit]}}\n"
        ));
        let v = render(&c, &per_filter()).unwrap();
        let hcm = &v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"];
        assert_eq!(hcm["use_remote_address"], true);
        assert!(hcm.get("xff_num_trusted_hops").is_none());
        let text = render_text(&c, &per_filter()).unwrap();
        assert!(text.contains("use_remote_address: true"), "{text}");
    }

    #[test]
    fn without_a_catch_all_unrouted_requests_run_no_filter() {
        let c = chain(&format!(
            "{HEAD}  - {{name: a, match: {{path: /a}}, upstream: b, filters: [errors]}}\n"
        ));
        let v = render(&c, &per_filter()).unwrap();
        let routes = &v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["route_config"]["virtual_hosts"][0]["routes"];
        assert_eq!(routes[1]["name"], UNROUTED);
        assert_eq!(routes[1]["direct_response"]["status"], 404);
        assert_eq!(
            routes[1]["typed_per_filter_config"]["palisade.errors"]["disabled"],
            true
        );
        assert!(routes[0].get("typed_per_filter_config").is_none());
    }

    #[test]
    fn contradicting_orders_are_refused() {
        let c = chain(&format!(
            "{HEAD}  - {{name: a, match: {{prefix: /a}}, upstream: b, filters: [errors, headers]}}
  - {{name: c, match: {{prefix: /c}}, upstream: b, filters: [headers, errors]}}
"
        ));
        let err = render(&c, &per_filter()).unwrap_err();
        assert!(
            err.contains("routes a, c order palisade.errors and palisade.headers differently"),
            "{err}"
        );
    }

    #[test]
    fn unordered_filters_follow_the_default_chain_order() {
        let c = chain(&format!(
            "{HEAD}  - {{name: a, match: {{prefix: /a}}, upstream: b, filters: [headers]}}
  - {{name: c, match: {{prefix: /c}}, upstream: b, filters: [errors]}}
"
        ));
        let (instances, per_route) = plan(&c).unwrap();
        let names: Vec<&str> = instances.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["palisade.errors", "palisade.headers"]);
        assert_eq!(per_route, vec![vec![1], vec![0]]);
    }

    fn hcm(v: &Value) -> &Value {
        &v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    }

    #[test]
    fn one_module_runs_every_route_picked_by_envoys_route_name() {
        let c = chain(&format!(
            "{HEAD}  - {{name: a, match: {{prefix: /a}}, upstream: b, filters: [errors, headers]}}
  - {{name: c, match: {{path: /c}}, upstream: b, filters: [{{headers: {{dry_run: true}}}}, errors]}}
"
        ));
        let v = render(&c, &Options::default()).unwrap();
        let hcm = hcm(&v);
        let filters = hcm["http_filters"].as_array().unwrap();
        assert_eq!(filters.len(), 2, "palisade.wasm and the router");
        let plugin = &filters[0]["typed_config"]["config"];
        assert_eq!(filters[0]["name"], MODULE);
        assert_eq!(
            plugin["vm_config"]["code"]["local"]["filename"],
            "/etc/envoy/palisade.wasm"
        );
        assert_eq!(plugin["failure_policy"], "FAIL_OPEN");
        // errors' hold_headers is off by default: no flag.
        assert!(plugin.get("allow_on_headers_stop_iteration").is_none());
        let config: Value =
            serde_json::from_str(plugin["configuration"]["value"].as_str().unwrap()).unwrap();
        assert_eq!(
            config,
            json!({"version": 1, "upstreams": {"b": "http://127.0.0.1:9"}, "routes": [
                {"name": "a", "match": {"prefix": "/a"}, "upstream": "b", "filters": ["errors", "headers"]},
                {"name": "c", "match": {"path": "/c"}, "upstream": "b",
                 "filters": [{"headers": {"dry_run": true}}, "errors"]},
            ]})
        );
        // What the module loads is the chain itself.
        let again = crate::chain::load_json(config.to_string().as_bytes()).unwrap();
        assert_eq!(again.routes.len(), 2);
        let routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
            .as_array()
            .unwrap();
        let names: Vec<&str> = routes.iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["a", "c", UNROUTED]);
        assert!(routes[0].get("typed_per_filter_config").is_none());
        assert_eq!(
            routes[2]["typed_per_filter_config"][MODULE]["disabled"],
            true
        );
        assert_eq!(hcm["use_remote_address"], true);
    }

    #[test]
    fn the_module_holds_headers_and_fails_closed_only_when_a_control_needs_it() {
        let c = chain(&format!(
            "{HEAD}  - {{name: a, match: {{prefix: /}}, upstream: b, filters: [{{errors: {{rules: [{{hold_headers: true}}]}}}}, jwt]}}
"
        ));
        let v = render(&c, &Options::default()).unwrap();
        let plugin = &hcm(&v)["http_filters"][0]["typed_config"]["config"];
        assert_eq!(plugin["allow_on_headers_stop_iteration"], true);
        assert_eq!(plugin["failure_policy"], "FAIL_RELOAD");
        let routes = &hcm(&v)["route_config"]["virtual_hosts"][0]["routes"];
        assert_eq!(routes.as_array().unwrap().len(), 1, "a catch-all route");
    }

    #[test]
    fn the_module_allows_routes_ordering_controls_differently() {
        let c = chain(&format!(
            "{HEAD}  - {{name: a, match: {{prefix: /a}}, upstream: b, filters: [errors, headers]}}
  - {{name: c, match: {{prefix: /c}}, upstream: b, filters: [headers, errors]}}
"
        ));
        assert!(render(&c, &Options::default()).is_ok());
        assert!(render(&c, &per_filter()).is_err());
    }
}
