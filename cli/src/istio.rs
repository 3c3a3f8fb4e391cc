//! `palisade render istio`: by default one `WasmPlugin` (or Istio 1.30
//! `TrafficExtension`) per workload target loading `palisade.wasm`, whose
//! `pluginConfig` is the chain file's JSON form for the routes of that
//! target; with [`Modules::PerFilter`], one per route and filter.
//!
//! Routes with the same target (`istio:` namespace, `selector` or
//! `targetRefs`, and `match`) share one resource: the module picks each
//! request's route by Envoy's route name when the mesh's routes carry the
//! chain's route names (VirtualService `http[].name`), else by the routes'
//! own `match`, and runs that route's controls in order. The module's
//! resource is placed in `AUTHN` with priority 1000 (ahead of Istio's own
//! authn and authz filters, as the per-filter `errors` is); its
//! `failStrategy` is `FAIL_CLOSE` when any of its controls fails closed.
//!
//! Per filter:
//! Istio attaches Wasm filters to workloads or gateways (`selector`,
//! `targetRefs`), not to routes, so a route's `istio:` section says where its
//! chain goes. The chain's order becomes `phase` + `priority` (from the
//! filter table: errors and headers, then jwt in AUTHN; ratelimit, then
//! schema in AUTHZ). Within a phase the higher priority runs first on
//! requests; Envoy runs response callbacks in the reverse order, so the
//! first filter on the way in is the last on the way out. `errors` is first
//! in, hence last out: it sees every other filter's local reply.
//!
//! `sha256` pins the module: for `oci://` URLs Istio compares it with the
//! image's manifest digest (what `palisade oci` prints), for `file://` and
//! `https://` URLs with the module file's own digest.
//!
//! WasmPlugin and TrafficExtension cannot set Envoy's
//! `allow_on_headers_stop_iteration`, which `hold_headers` needs (errors,
//! schema): such configs are refused here. [`Kind::EnvoyFilter`] renders the
//! same chain as `EnvoyFilter` patches loading the modules from a local
//! directory in the proxy, with the same Envoy filter entries as
//! `palisade render envoy` (flag included), inserted in chain order right
//! before the router.

use crate::chain::{service_refs, Chain, IstioTarget, Route, Upstream, Use};
use crate::envoy::{Modules, MODULE};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    WasmPlugin,
    TrafficExtension,
    EnvoyFilter,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub kind: Kind,
    /// Module URL; `{filter}` is replaced by the filter name (`headers`).
    pub url: String,
    /// Where to read digests from (`dist/`: `oci/<filter>/index.json` for
    /// `oci://` URLs, `palisade_<filter>.wasm` otherwise); no `sha256` without.
    pub pin_from: Option<PathBuf>,
    /// `EnvoyFilter`: directory of `palisade.wasm` / `palisade_<filter>.wasm`
    /// inside the proxy.
    pub wasm_dir: String,
    /// `palisade.wasm` per target, or one module per route and filter.
    pub modules: Modules,
}

/// Where `EnvoyFilter` expects the modules (mounted into the proxy, e.g.
/// with the `sidecar.istio.io/userVolume` and `userVolumeMount` annotations).
pub const DEFAULT_WASM_DIR: &str = "/var/local/lib/wasm";

pub const DEFAULT_URL: &str = "oci://registry.example.com/palisade/{filter}:0.1.0";

impl Default for Options {
    fn default() -> Options {
        Options {
            kind: Kind::WasmPlugin,
            url: DEFAULT_URL.into(),
            pin_from: None,
            wasm_dir: DEFAULT_WASM_DIR.into(),
            modules: Modules::Single,
        }
    }
}

/// The digest Istio checks `sha256` against, for `url`.
pub fn digest_for(url: &str, filter: &str, dist: &Path) -> Result<String, String> {
    if url.starts_with("oci://") {
        let index_path = dist.join("oci").join(filter).join("index.json");
        let text = std::fs::read_to_string(&index_path)
            .map_err(|e| format!("{}: {e} (run `make oci`)", index_path.display()))?;
        let index: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", index_path.display()))?;
        let digest = index["manifests"][0]["digest"]
            .as_str()
            .and_then(|d| d.strip_prefix("sha256:"))
            .ok_or_else(|| format!("{}: no sha256 manifest", index_path.display()))?;
        Ok(digest.to_string())
    } else {
        let wasm = dist.join(crate::envoy::module_file(filter));
        let bytes = std::fs::read(&wasm)
            .map_err(|e| format!("{}: {e} (run `make build`)", wasm.display()))?;
        Ok(crate::oci::sha256_hex(&bytes))
    }
}

/// WasmPlugin and TrafficExtension cannot set Envoy's
/// `allow_on_headers_stop_iteration`, which `hold_headers` needs.
fn refuse_held_headers(route: &Route, u: &Use) -> Result<(), String> {
    if crate::envoy::holds_headers(u) {
        return Err(format!(
            "route {:?}, {}: hold_headers needs Envoy's allow_on_headers_stop_iteration, \
             which WasmPlugin and TrafficExtension cannot set: set \"hold_headers\": false \
             for Istio, or render --kind envoy-filter",
            route.name, u.filter.name
        ));
    }
    Ok(())
}

/// Per filter, a resource applies to all the traffic of its workload, not
/// to a route's paths: two routes on one workload with different chains
/// would each get the other's filters. The single module matches paths
/// itself, so only this form refuses it.
fn refuse_shared_targets(chain: &Chain) -> Result<(), String> {
    let routes: Vec<&Route> = chain
        .routes
        .iter()
        .filter(|r| !r.filters.is_empty() && r.istio.is_some())
        .collect();
    for (i, a) in routes.iter().enumerate() {
        for b in &routes[i + 1..] {
            let same_target = a.istio.as_ref().map(target_key) == b.istio.as_ref().map(target_key);
            let chain_of = |r: &Route| {
                r.filters
                    .iter()
                    .map(|u| (u.filter.name, u.config.clone()))
                    .collect::<Vec<_>>()
            };
            if same_target && chain_of(a) != chain_of(b) {
                return Err(format!(
                    "routes {:?} and {:?} share one workload target with different chains: one \
                     WasmPlugin per filter applies to all of its traffic, so each route would get \
                     the other's filters; render the single module (the default), which picks \
                     the route by path, or give the routes different targets",
                    a.name, b.name
                ));
            }
        }
    }
    Ok(())
}

/// A route's `istio:` section, with a selector or targetRefs.
fn target(route: &Route) -> Result<&IstioTarget, String> {
    let istio = route.istio.as_ref().ok_or_else(|| {
        format!(
            "route {:?} has no istio section: WasmPlugins attach to workloads \
             (istio.selector) or gateways (istio.targetRefs), not to routes",
            route.name
        )
    })?;
    if istio.selector.is_none() && istio.target_refs.is_none() {
        return Err(format!(
            "route {:?}: istio needs a selector or targetRefs (without, the filters would \
             apply to every workload of the namespace)",
            route.name
        ));
    }
    Ok(istio)
}

/// What makes two routes' resources one: the namespace, where they attach,
/// the traffic they match and (EnvoyFilter) the patch context.
fn target_key(istio: &IstioTarget) -> Value {
    json!([
        istio.namespace,
        istio.selector,
        istio.target_refs,
        istio.traffic,
        istio.context
    ])
}

/// The routes with filters, grouped by target in first-appearance order.
fn by_target(chain: &Chain) -> Result<Vec<Vec<&Route>>, String> {
    let mut groups: Vec<(Value, Vec<&Route>)> = Vec::new();
    for route in chain.routes.iter().filter(|r| !r.filters.is_empty()) {
        if route.istio.is_none() {
            continue; // skipped, with a note (see `render`)
        }
        let key = target_key(target(route)?);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, routes)) => routes.push(route),
            None => groups.push((key, vec![route])),
        }
    }
    Ok(groups.into_iter().map(|(_, routes)| routes).collect())
}

fn route_names(routes: &[&Route]) -> String {
    routes
        .iter()
        .map(|r| r.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `palisade.wasm` for the routes of one target, as a WasmPlugin or
/// TrafficExtension.
fn module_resource(chain: &Chain, routes: &[&Route], options: &Options) -> Result<Doc, String> {
    let first = routes[0];
    let istio = target(first)?;
    for route in routes {
        for u in &route.filters {
            refuse_held_headers(route, u)?;
        }
    }
    let url = options.url.replace("{filter}", MODULE);
    let sha256 = match &options.pin_from {
        Some(dist) => Some(digest_for(&url, MODULE, dist)?),
        None => None,
    };
    let fail_close = routes
        .iter()
        .flat_map(|r| r.filters.iter())
        .find(|u| u.filter.istio.fail_strategy == "FAIL_CLOSE");
    let mut wasm = serde_json::Map::new();
    wasm.insert("url".into(), json!(url));
    if let Some(d) = &sha256 {
        wasm.insert("sha256".into(), json!(d));
    }
    wasm.insert("imagePullPolicy".into(), json!("IfNotPresent"));
    wasm.insert("pluginName".into(), json!(MODULE));
    wasm.insert(
        "failStrategy".into(),
        json!(if fail_close.is_some() {
            "FAIL_CLOSE"
        } else {
            "FAIL_OPEN"
        }),
    );
    wasm.insert(
        "pluginConfig".into(),
        crate::envoy::module_config(chain, routes),
    );
    let (spec, kind) = plugin_spec(istio, "AUTHN", 1000, wasm, options.kind);
    let body = json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": kind,
        "metadata": {
            "name": format!("palisade-{}", first.name),
            "namespace": istio.namespace.clone().unwrap_or_else(|| "istio-system".into()),
            "labels": {"app.kubernetes.io/part-of": "palisade", "palisade.dev/route": first.name},
            "annotations": {"palisade.dev/routes": route_names(routes)},
        },
        "spec": spec,
    });
    let mut comment = vec![format!(
        "palisade.wasm for route(s) {}: each route's controls in its order, the route picked \
         by Envoy's route name when it is the chain route's name, else by the route's match",
        route_names(routes)
    )];
    for route in routes {
        let names: Vec<&str> = route.filters.iter().map(|u| u.filter.name).collect();
        comment.push(format!("route {}: {}", route.name, names.join(" -> ")));
    }
    comment.push(
        "phase AUTHN / priority 1000: ahead of Istio's own authn and authz filters, so the \
         response controls see their local replies too"
            .into(),
    );
    comment.push(match fail_close {
        Some(u) => format!(
            "failStrategy {} (from {})",
            u.filter.istio.why_fail, u.filter.name
        ),
        None => "failStrategy FAIL_OPEN: no control of these routes must gate traffic when \
                 the VM is dead"
            .into(),
    });
    if sha256.is_none() {
        comment.push(
            "sha256: render with --pin-from dist (after `make oci`) to pin the module".into(),
        );
    }
    Ok(Doc { comment, body })
}

/// `palisade.wasm` for the routes of one target, as one `EnvoyFilter` patch.
fn module_envoy_filter(chain: &Chain, routes: &[&Route], options: &Options) -> Result<Doc, String> {
    let first = routes[0];
    let (istio, labels, context) = envoy_filter_target(first)?;
    let patch = before_router(
        &context,
        crate::envoy::module_json(chain, routes, &options.wasm_dir),
    );
    Ok(Doc {
        comment: vec![
            format!(
                "route(s) {}: palisade.wasm from {} (a local file in the proxy), before the router",
                route_names(routes),
                options.wasm_dir
            ),
            "failure_policy FAIL_RELOAD when a control fails closed; \
             allow_on_headers_stop_iteration only when a control holds headers"
                .into(),
        ],
        body: json!({
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "EnvoyFilter",
            "metadata": {
                "name": format!("palisade-{}", first.name),
                "namespace": istio.namespace.clone().unwrap_or_else(|| "istio-system".into()),
                "labels": {"app.kubernetes.io/part-of": "palisade", "palisade.dev/route": first.name},
                "annotations": {"palisade.dev/routes": route_names(routes)},
            },
            "spec": {"workloadSelector": {"labels": labels}, "configPatches": [patch]},
        }),
    })
}

/// An EnvoyFilter's target: the route's istio section, its matchLabels and
/// the patch context.
fn envoy_filter_target(route: &Route) -> Result<(&IstioTarget, &Value, String), String> {
    let istio = route.istio.as_ref().ok_or_else(|| {
        format!(
            "route {:?} has no istio section (EnvoyFilter needs istio.selector)",
            route.name
        )
    })?;
    let labels = istio
        .selector
        .as_ref()
        .and_then(|s| s.get("matchLabels"))
        .ok_or_else(|| {
            format!(
                "route {:?}: EnvoyFilter needs istio.selector.matchLabels (workloadSelector)",
                route.name
            )
        })?;
    let context = istio
        .context
        .clone()
        .unwrap_or_else(|| "SIDECAR_INBOUND".into());
    Ok((istio, labels, context))
}

struct Doc {
    comment: Vec<String>,
    body: Value,
}

fn resource(route: &Route, u: &Use, options: &Options) -> Result<Doc, String> {
    let f = u.filter;
    let istio = target(route)?;
    refuse_held_headers(route, u)?;
    let url = options.url.replace("{filter}", f.name);
    let sha256 = match &options.pin_from {
        Some(dist) => Some(digest_for(&url, f.name, dist)?),
        None => None,
    };
    let mut wasm = serde_json::Map::new();
    wasm.insert("url".into(), json!(url));
    if let Some(d) = &sha256 {
        wasm.insert("sha256".into(), json!(d));
    }
    wasm.insert("imagePullPolicy".into(), json!("IfNotPresent"));
    wasm.insert("pluginName".into(), json!(format!("palisade.{}", f.name)));
    wasm.insert("failStrategy".into(), json!(f.istio.fail_strategy));
    wasm.insert("pluginConfig".into(), u.config.clone());

    let (spec, kind) = plugin_spec(istio, f.istio.phase, f.istio.priority, wasm, options.kind);
    let body = json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": kind,
        "metadata": {
            "name": format!("palisade-{}-{}", route.name, f.name),
            "namespace": istio.namespace.clone().unwrap_or_else(|| "istio-system".into()),
            "labels": {"app.kubernetes.io/part-of": "palisade", "palisade.dev/route": route.name},
        },
        "spec": spec,
    });
    let mut comment = vec![
        format!("{} on route {}: {}", f.name, route.name, f.summary),
        format!(
            "phase {} / priority {}: {}",
            f.istio.phase, f.istio.priority, f.istio.why_placed
        ),
        format!("failStrategy {}", f.istio.why_fail),
    ];
    if sha256.is_none() {
        comment.push(
            "sha256: render with --pin-from dist (after `make oci`) to pin the module".into(),
        );
    }
    Ok(Doc { comment, body })
}

/// One `EnvoyFilter` per route: its chain as HTTP filter patches, each
/// inserted right before the router (so they end up in chain order).
fn envoy_filter(route: &Route, options: &Options) -> Result<Doc, String> {
    let (istio, labels, context) = envoy_filter_target(route)?;
    let patches: Vec<Value> = route
        .filters
        .iter()
        .map(|u| {
            let instance = crate::envoy::Instance {
                name: format!("palisade.{}", u.filter.name),
                filter: u.filter,
                config: u.config.clone(),
            };
            before_router(
                &context,
                crate::envoy::instance_json(&instance, &options.wasm_dir),
            )
        })
        .collect();
    let names: Vec<&str> = route.filters.iter().map(|u| u.filter.name).collect();
    Ok(Doc {
        comment: vec![
            format!(
                "route {}: {} from {} (local files in the proxy), in this order before the router",
                route.name,
                names.join(", "),
                options.wasm_dir
            ),
            "each failure_policy follows the filter's failStrategy choice".into(),
        ],
        body: json!({
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "EnvoyFilter",
            "metadata": {
                "name": format!("palisade-{}", route.name),
                "namespace": istio.namespace.clone().unwrap_or_else(|| "istio-system".into()),
                "labels": {"app.kubernetes.io/part-of": "palisade", "palisade.dev/route": route.name},
            },
            "spec": {"workloadSelector": {"labels": labels}, "configPatches": patches},
        }),
    })
}

/// Multi-document YAML with a comment above each resource.
/// Istio's name for the sidecar cluster of `host:port`.
pub fn mesh_cluster(u: &Upstream) -> String {
    format!("outbound|{}||{}", u.port, u.host)
}

/// Whether a host is a Kubernetes service the mesh already knows.
fn in_mesh(host: &str) -> bool {
    host.ends_with(".svc.cluster.local") || host.ends_with(".svc")
}

/// The chain as a sidecar runs it: every service a control calls is named
/// by Istio's cluster for it (`outbound|443||idp.example.com`), in the
/// configs and in `upstreams`; and those services.
pub fn for_mesh(chain: &Chain) -> (Chain, Vec<(String, Upstream)>) {
    let mut mesh = chain.clone();
    let mut called: Vec<(String, Upstream)> = Vec::new();
    let configs = mesh.shared.iter_mut().map(|(f, c)| (f.name, c)).chain(
        mesh.routes
            .iter_mut()
            .flat_map(|r| r.filters.iter_mut().map(|u| (u.filter.name, &mut u.config))),
    );
    for (filter, config) in configs {
        for (field, name, _) in service_refs(filter, config) {
            let Some(u) = chain.upstreams.get(&name) else {
                continue;
            };
            let cluster = mesh_cluster(u);
            // Only where the field is (a provider name with a dot, which
            // jwt refuses anyway, leaves the config untouched).
            if let Some(at) = field
                .split('.')
                .try_fold(&mut *config, |v, key| v.get_mut(key))
            {
                *at = json!(cluster);
            }
            if !called.iter().any(|(n, _)| *n == name) {
                called.push((name, u.clone()));
            }
        }
    }
    for (name, u) in &called {
        if let Some(up) = mesh.upstreams.remove(name) {
            mesh.upstreams.insert(mesh_cluster(u), up);
        }
        for r in &mut mesh.routes {
            if r.upstream == *name {
                r.upstream = mesh_cluster(u);
            }
        }
    }
    (mesh, called)
}

/// What a sidecar needs to call a service outside the mesh: a
/// ServiceEntry, and for `https://` a DestinationRule that originates TLS
/// (the module speaks plain HTTP to the sidecar's cluster).
fn egress(name: &str, u: &Upstream) -> Vec<Doc> {
    if in_mesh(&u.host) {
        return Vec::new();
    }
    let meta = json!({"name": format!("palisade-{name}"), "namespace": "istio-system"});
    let mut docs = vec![Doc {
        comment: vec![format!(
            "Lets every sidecar reach {name} ({}), which a Palisade control calls as \
             cluster {}.",
            u.url,
            mesh_cluster(u)
        )],
        body: json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": meta,
            "spec": {
                "hosts": [u.host],
                "location": "MESH_EXTERNAL",
                "resolution": "DNS",
                // gRPC (the rate-limit service) needs HTTP/2 from the sidecar.
                "ports": [if u.http2 {
                    json!({"number": u.port, "name": format!("grpc-{name}"), "protocol": "GRPC"})
                } else {
                    json!({"number": u.port, "name": format!("http-{name}"), "protocol": "HTTP"})
                }],
            },
        }),
    }];
    if let Some(tls) = &u.tls {
        docs.push(Doc {
            comment: vec![format!(
                "TLS to {name}: the sidecar originates it, checks the certificate against \
                 {} and sends SNI {}.",
                tls.ca, tls.sni
            )],
            body: json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": meta,
                "spec": {
                    "host": u.host,
                    "trafficPolicy": {"portLevelSettings": [{
                        "port": {"number": u.port},
                        "tls": {"mode": "SIMPLE", "sni": tls.sni, "caCertificates": tls.ca,
                                "subjectAltNames": [tls.sni]},
                    }]},
                },
            }),
        });
    }
    docs
}

pub fn render(chain: &Chain, options: &Options) -> Result<String, String> {
    let (mesh, called) = for_mesh(chain);
    let chain = &mesh;
    if options.modules == Modules::PerFilter
        && options.kind != Kind::EnvoyFilter
        && !options.url.contains("{filter}")
    {
        return Err(format!(
            "--url {:?} has no {{filter}}: every control would load the same image; \
             write where each one is, for example oci://<registry>/palisade/{{filter}}:<tag>",
            options.url
        ));
    }
    let mut docs = Vec::new();
    if options.modules == Modules::Single {
        for routes in by_target(chain)? {
            docs.push(match options.kind {
                Kind::EnvoyFilter => module_envoy_filter(chain, &routes, options)?,
                _ => module_resource(chain, &routes, options)?,
            });
        }
    }
    let per_filter = if options.modules == Modules::PerFilter {
        refuse_shared_targets(chain)?;
        chain.routes.as_slice()
    } else {
        &[]
    };
    for route in per_filter.iter().filter(|r| r.istio.is_some()) {
        if options.kind == Kind::EnvoyFilter {
            if !route.filters.is_empty() {
                docs.push(envoy_filter(route, options)?);
            }
            continue;
        }
        for u in &route.filters {
            docs.push(resource(route, u, options)?);
        }
    }
    let skipped: Vec<&str> = chain
        .routes
        .iter()
        .filter(|r| !r.filters.is_empty() && r.istio.is_none())
        .map(|r| r.name.as_str())
        .collect();
    if docs.is_empty() && !skipped.is_empty() {
        return Err(format!(
            "no route has an istio section (routes {}): WasmPlugins attach to workloads \
             (istio.selector) or gateways (istio.targetRefs), not to routes",
            skipped.join(", ")
        ));
    }
    for (name, u) in &called {
        docs.extend(egress(name, u));
    }
    let mut out = String::from(
        "# Palisade for Istio, rendered by `palisade render istio` from a chain file.\n\
         # Let the filters' counters through the proxy's stats matcher (mesh-wide in\n\
         # meshConfig.defaultConfig, or per workload in the proxy.istio.io/config\n\
         # annotation): proxyStatsMatcher: {inclusionPrefixes: [wasmcustom.palisade]}\n",
    );
    if !skipped.is_empty() {
        out.push_str(&wrap_comment(&format!(
            "Not rendered: route(s) {} have no istio section (no workload to attach to); \
             they are for the other platforms of the chain file.",
            skipped.join(", ")
        )));
    }
    for doc in docs {
        out.push_str("---\n");
        for line in &doc.comment {
            out.push_str(&wrap_comment(line));
        }
        let yaml = serde_norway::to_string(&doc.body).map_err(|e| e.to_string())?;
        out.push_str(&yaml);
    }
    Ok(out)
}

/// `# line`, wrapped at 100 columns.
pub(crate) fn wrap_comment(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + word.len() + 1 > 100 && line.len() > 1 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#  ");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// An EnvoyFilter patch inserting the HTTP filter `value` before the router
/// of every connection manager in `context`.
fn before_router(context: &str, value: Value) -> Value {
    json!({
        "applyTo": "HTTP_FILTER",
        "match": {
            "context": context,
            "listener": {"filterChain": {"filter": {
                "name": "envoy.filters.network.http_connection_manager",
                "subFilter": {"name": "envoy.filters.http.router"},
            }}},
        },
        "patch": {"operation": "INSERT_BEFORE", "value": value},
    })
}

/// A WasmPlugin's spec (a TrafficExtension's, with the module under `wasm`)
/// for one target, and the resource's kind.
fn plugin_spec(
    istio: &IstioTarget,
    phase: &str,
    priority: i32,
    wasm: serde_json::Map<String, Value>,
    kind: Kind,
) -> (serde_json::Map<String, Value>, &'static str) {
    let mut spec = serde_json::Map::new();
    if let Some(s) = &istio.selector {
        spec.insert("selector".into(), s.clone());
    }
    if let Some(t) = &istio.target_refs {
        spec.insert("targetRefs".into(), t.clone());
    }
    spec.insert("phase".into(), json!(phase));
    spec.insert("priority".into(), json!(priority));
    if let Some(m) = &istio.traffic {
        spec.insert("match".into(), m.clone());
    }
    let kind = match kind {
        Kind::TrafficExtension => {
            spec.insert("wasm".into(), Value::Object(wasm));
            "TrafficExtension"
        }
        // EnvoyFilters have their own renderers; a WasmPlugin otherwise.
        Kind::WasmPlugin | Kind::EnvoyFilter => {
            spec.extend(wasm);
            "WasmPlugin"
        }
    };
    (spec, kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain;

    const CHAIN: &str = "
version: 1
upstreams: {b: 'http://127.0.0.1:9'}
routes:
  - name: api
    match: {prefix: /}
    upstream: b
    filters: [errors, {headers: {dry_run: true}}]
    istio: {selector: {matchLabels: {istio: ingressgateway}}}
";

    fn docs(text: &str) -> Vec<Value> {
        text.split("\n---\n")
            .skip(1)
            .map(|d| serde_norway::from_str(d).unwrap())
            .collect()
    }

    fn per_filter(kind: Kind) -> Options {
        Options {
            kind,
            modules: Modules::PerFilter,
            ..Options::default()
        }
    }

    #[test]
    fn one_palisade_wasm_per_target_with_the_chain_as_plugin_config() {
        let c = chain::load(CHAIN).unwrap();
        let d = docs(&render(&c, &Options::default()).unwrap());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0]["kind"], "WasmPlugin");
        assert_eq!(d[0]["metadata"]["name"], "palisade-api");
        assert_eq!(d[0]["spec"]["pluginName"], "palisade");
        assert_eq!(d[0]["spec"]["failStrategy"], "FAIL_OPEN");
        assert_eq!(
            d[0]["spec"]["pluginConfig"]["routes"][0]["filters"],
            json!(["errors", {"headers": {"dry_run": true}}])
        );
        let ef = docs(&render(&c, &per_filter(Kind::EnvoyFilter)).unwrap());
        let one = docs(
            &render(
                &c,
                &Options {
                    kind: Kind::EnvoyFilter,
                    ..Options::default()
                },
            )
            .unwrap(),
        );
        assert_eq!(ef[0]["spec"]["configPatches"].as_array().unwrap().len(), 2);
        let patches = one[0]["spec"]["configPatches"].as_array().unwrap();
        assert_eq!(patches.len(), 1);
        assert_eq!(patches[0]["patch"]["value"]["name"], "palisade");
    }

    #[test]
    fn one_wasmplugin_per_route_and_filter_in_chain_order() {
        let c = chain::load(CHAIN).unwrap();
        let text = render(&c, &per_filter(Kind::WasmPlugin)).unwrap();
        let d = docs(&text);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0]["kind"], "WasmPlugin");
        assert_eq!(d[0]["metadata"]["name"], "palisade-api-errors");
        assert_eq!(
            d[0]["spec"]["url"],
            "oci://registry.example.com/palisade/errors:0.1.0"
        );
        assert_eq!(d[1]["spec"]["pluginConfig"], json!({"dry_run": true}));
        // Same phase: errors must run first in, so its priority is higher.
        assert_eq!(d[0]["spec"]["phase"], d[1]["spec"]["phase"]);
        assert!(d[0]["spec"]["priority"].as_i64() > d[1]["spec"]["priority"].as_i64());
        assert!(text.contains("# failStrategy FAIL_OPEN"));
    }

    #[test]
    fn traffic_extensions_nest_the_module_under_wasm() {
        let c = chain::load(CHAIN).unwrap();
        let d = docs(&render(&c, &per_filter(Kind::TrafficExtension)).unwrap());
        assert_eq!(d[0]["kind"], "TrafficExtension");
        assert_eq!(d[0]["spec"]["wasm"]["failStrategy"], "FAIL_OPEN");
        assert_eq!(d[0]["spec"]["phase"], "AUTHN");
        assert!(d[0]["spec"].get("url").is_none());
    }

    #[test]
    fn per_filter_routes_sharing_a_workload_with_different_chains_are_refused() {
        let two = format!(
            "{CHAIN}  - name: admin\n    match: {{prefix: /admin/}}\n    upstream: b\n    filters: [errors]\n    istio: {{selector: {{matchLabels: {{istio: ingressgateway}}}}}}\n"
        );
        let c = chain::load(&two).unwrap();
        let err = render(&c, &per_filter(Kind::WasmPlugin)).unwrap_err();
        assert!(
            err.contains("share one workload target with different chains"),
            "{err}"
        );
        // One module, one resource: it picks the route by path itself.
        let docs = docs(&render(&c, &Options::default()).unwrap());
        assert_eq!(docs.len(), 1);
        assert_eq!(
            docs[0]["spec"]["pluginConfig"]["routes"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        // The same chain on both routes is fine per filter too.
        let same = two.replace(
            "    filters: [errors]\n",
            "    filters: [errors, {headers: {dry_run: true}}]\n",
        );
        assert!(render(&chain::load(&same).unwrap(), &per_filter(Kind::WasmPlugin)).is_ok());
    }

    #[test]
    fn called_services_become_the_sidecar_s_clusters_with_their_protocol() {
        let text = CHAIN
            .replace(
                "upstreams: {b: 'http://127.0.0.1:9'}",
                "upstreams: {b: 'http://127.0.0.1:9', rls: 'http://rls.example.net:8081',\n  \
             local: 'http://rls.ratelimit.svc.cluster.local:8081'}",
            )
            .replace(
                "filters: [errors, {headers: {dry_run: true}}]",
                "filters: [{ratelimit: {mode: global, global: {cluster: rls, domain: d}, \
             limits: [{name: a, key: [], requests: 1, per_s: 1}]}}]",
            );
        let c = chain::load(&text).unwrap();
        let d = docs(&render(&c, &Options::default()).unwrap());
        let kinds: Vec<&str> = d.iter().filter_map(|x| x["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            ["WasmPlugin", "ServiceEntry"],
            "plain http: no DestinationRule"
        );
        assert_eq!(
            d[0]["spec"]["pluginConfig"]["routes"][0]["filters"][0]["ratelimit"]["global"]
                ["cluster"],
            "outbound|8081||rls.example.net"
        );
        assert_eq!(
            d[1]["spec"]["ports"][0]["protocol"], "GRPC",
            "gRPC needs HTTP/2"
        );
        // A service of the cluster gets its cluster name, and no ServiceEntry.
        let inside = chain::load(&text.replace("cluster: rls", "cluster: local")).unwrap();
        let d = docs(&render(&inside, &Options::default()).unwrap());
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0]["spec"]["pluginConfig"]["routes"][0]["filters"][0]["ratelimit"]["global"]
                ["cluster"],
            "outbound|8081||rls.ratelimit.svc.cluster.local"
        );
    }

    #[test]
    fn routes_without_a_target_are_skipped_with_a_note_and_none_at_all_is_refused() {
        let edge_only =
            "  - name: edge\n    match: {prefix: /edge/}\n    upstream: b\n    filters: [errors]\n";
        let mixed =
            chain::load(&CHAIN.replace("routes:\n", &format!("routes:\n{edge_only}"))).unwrap();
        for options in [Options::default(), per_filter(Kind::WasmPlugin)] {
            let text = render(&mixed, &options).unwrap();
            assert!(
                text.contains("Not rendered: route(s) edge have no istio section"),
                "{text}"
            );
            assert!(!docs(&text).is_empty());
            assert!(docs(&text)
                .iter()
                .all(|d| !d.to_string().contains("/edge/")));
        }
        let c = chain::load(&CHAIN.replace(
            "    istio: {selector: {matchLabels: {istio: ingressgateway}}}\n",
            "",
        ))
        .unwrap();
        assert!(render(&c, &Options::default())
            .unwrap_err()
            .contains("no route has an istio section"));
    }
}
